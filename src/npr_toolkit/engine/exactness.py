"""Which semantics each backend decodes exactly, and the check a checkpoint passes before decoding.

The torch engine decodes both semantics exactly (it splices KV for ``canonical`` and re-reads the
branches for ``reprefill``). A client of a stock server (the SGLang backend) can only re-read at a
join, so it is exact for ``reprefill`` checkpoints and an approximation for ``canonical`` ones.
Decoding a checkpoint with an engine that cannot decode it exactly is refused unless the caller
accepts the approximation explicitly (``load_engine(..., allow_approximate=True)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from typing import Any

from ..view.semantics import SEMANTICS_KEY, Semantics, read_semantics

CLIENT_EXACT: frozenset[Semantics] = frozenset({"reprefill"})  # a stock server can only re-read at a join


class SemanticsError(ValueError):
    """The checkpoint's semantics is one the engine decodes only approximately (an input error)."""


class SemanticsWarning(UserWarning):
    """The checkpoint does not record its semantics: it is decoded as canonical."""


def checkpoint_semantics(
    config: Any, *, where: str, engine: str, exact: Collection[Semantics], allow_approximate: bool
) -> Semantics:
    """The semantics ``config`` records (canonical, with a warning, when it records none).

    Raises ``SemanticsError`` (one line: both semantics and the way out) when ``engine`` cannot
    decode it exactly and ``allow_approximate`` is false.
    """
    semantics, recorded = read_semantics(config)
    if not recorded:
        warnings.warn(
            f"{where} records no {SEMANTICS_KEY} in its config.json: decoded as canonical", SemanticsWarning, 2
        )
    if semantics not in exact and not allow_approximate:
        raise SemanticsError(
            f"{where} was trained with {semantics} semantics, but the {engine} engine decodes only "
            f"{' and '.join(sorted(exact))} exactly (its joins re-read the branches causally): decode it with "
            "the torch engine, or accept the approximation explicitly (allow_approximate=True, --allow-approximate)"
        )
    return semantics


def client_semantics(model: str, *, engine: str, allow_approximate: bool) -> Semantics:
    """The semantics of checkpoint ``model`` for a client of a stock server (``sglang``, ``openai``):
    ``checkpoint_semantics`` over its config.json (an empty one when there is none), before any
    server is contacted."""
    from transformers import PretrainedConfig

    try:
        config = PretrainedConfig.get_config_dict(model)[0]
    except OSError:
        config = {}
    return checkpoint_semantics(
        config, where=model, engine=engine, exact=CLIENT_EXACT, allow_approximate=allow_approximate
    )
