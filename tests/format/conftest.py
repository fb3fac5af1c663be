"""The fast path's oracle: Lark's parse, then the reference checker on its typed tree."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from npr_toolkit.format import Profile, Validation, parse, validate, validate_tree
from npr_toolkit.format.stats import Length


def reference(text: str, profile: Profile | str, length: Length | None = None) -> Validation:
    """What ``validate`` returned before the fast path: every text through Lark and the tree walk."""
    parsed = parse(text)
    if parsed.tree is None:
        return Validation(valid=False, diagnostics=parsed.diagnostics, stats=None)
    return validate_tree(parsed.tree, profile, length)


def matches_reference(text: str, profile: Profile | str, length: Length | None = None) -> Validation:
    """``validate`` (fast path) and ``reference`` agree: verdict, every diagnostic (code, offset,
    message, in order) and the statistics."""
    fast, slow = validate(text, profile, length), reference(text, profile, length)
    assert fast.valid == slow.valid, text
    assert fast.diagnostics == slow.diagnostics, text
    assert fast.stats == slow.stats, text
    return fast


@pytest.fixture(scope="session")
def same_as_reference() -> Callable[..., Validation]:
    return matches_reference
