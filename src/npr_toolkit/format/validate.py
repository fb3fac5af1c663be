"""The validator: profile rules and statistics of one completion (docs/design.md §2).

``validate(text, profile)`` reports every violation of a record as a diagnostic. It runs the fast
tag scan (``scan.py``), which never needs Lark; ``validate_tree`` is the reference: the same rules
(``rules.py``) checked on Lark's typed tree. Both agree on everything (tests/format/test_scan.py),
and ``Validation.tree`` is Lark's tree, parsed only when asked for. Profiles are data: ``PROFILES``
holds the three named ones, and ``Profile.model_copy(update=...)`` makes variants.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field

from .diagnostics import Code, Diagnostic, SourceIndex
from .parse import parse
from .rules import MAX_NESTING, PROFILES, Findings, Profile, ProfileName, blank, get_profile
from .scan import scan
from .stats import Length, TreeStats, tree_stats
from .tree import Block, Plan, Step, Text, Trajectory

__all__ = ["PROFILES", "Profile", "ProfileName", "Validation", "get_profile", "validate", "validate_tree"]


class Validation(BaseModel):
    """The verdict on one text. ``tree`` is parsed (by Lark) the first time it is asked for."""

    model_config = ConfigDict(frozen=True)
    valid: bool
    diagnostics: list[Diagnostic]
    stats: TreeStats | None
    source: str | None = Field(None, exclude=True, repr=False)  # the text, kept when it is well formed

    @cached_property
    def tree(self) -> Trajectory | None:
        return None if self.source is None else parse(self.source).tree


def _verdict(diagnostics: list[Diagnostic], stats: TreeStats | None, source: str | None) -> Validation:
    return Validation(valid=not diagnostics, diagnostics=diagnostics, stats=stats, source=source)


def _resolve(profile: Profile | str) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def validate(text: str, profile: Profile | str = "strict", length: Length | None = None) -> Validation:
    """Check one completion; ``length`` counts tokens for stats and ``max_tokens`` (characters without)."""
    found = scan(text, _resolve(profile), length)
    return _verdict(found.diagnostics, found.stats, text if found.well_formed else None)


def validate_tree(tree: Trajectory, profile: Profile | str = "strict", length: Length | None = None) -> Validation:
    """The reference checker: the profile's rules walked over a typed tree, its stats from ``tree_stats``."""
    text = tree.render()
    depth = _nesting(tree)
    if depth > MAX_NESTING:  # the walk below recurses per level: report instead of walking
        too_deep = SourceIndex(text).diagnostic(Code.DEPTH_EXCEEDED, f"blocks nested {depth} deep", 0)
        return _verdict([too_deep], None, text)
    checker = _TreeChecker(Findings(text, _resolve(profile)))
    checker.trunk(tree)
    stats = tree_stats(tree, length)
    checker.findings.length(stats.total, stats.unit)
    return _verdict(checker.findings.diagnostics(), stats, text)


def _nesting(tree: Trajectory) -> int:
    """Depth of the deepest block, computed without recursion."""
    deepest, todo = 0, [(item, 1) for item in tree.items if isinstance(item, Block)]
    while todo:
        block, depth = todo.pop()
        deepest = max(deepest, depth)
        todo += [(item, depth + 1) for step in block.steps for item in step.items if isinstance(item, Block)]
    return deepest


class _TreeChecker:
    """Gathers the rules' facts from the typed tree, node by node."""

    def __init__(self, findings: Findings):
        self.findings = findings

    def trunk(self, tree: Trajectory) -> None:
        blocks = tree.blocks
        if blocks:
            last = max(i for i, item in enumerate(tree.items) if isinstance(item, Block))
            for item in tree.items[:last]:
                if isinstance(item, Text):
                    self.findings.free_text(item.span[0], item.text, before_first=item.span[0] < blocks[0].span[0])
        self.findings.trunk(len(blocks), tree.answer is not None, blocks[-1].span[1] if blocks else 0)
        self.items(tree.items, depth=0)

    def items(self, items: list, depth: int) -> None:
        for item in items:
            if isinstance(item, Block):
                self.block(item, depth + 1)

    def block(self, block: Block, depth: int) -> None:
        found = self.findings
        plans, steps = block.guideline.plans, block.steps
        steps_at = steps[0].span[0] if steps else block.takeaway.span[0]
        found.block(block.span[0], depth, len(plans), len(steps), steps_at)
        for item in block.guideline.items:
            if isinstance(item, Text):
                found.between_plans(item.span[0], item.text)
        for item in block.gaps:
            found.gap(item.span[0], item.text)
        for i, plan in enumerate(plans, 1):
            self.content(plan, i)
        for i, step in enumerate(steps, 1):
            self.content(step, i)
            self.items(step.items, depth)
        found.takeaway(block.takeaway.span[0], block.takeaway.text)

    def content(self, node: Plan | Step, index: int) -> None:
        if isinstance(node, Plan):
            self.findings.content("plan", index, node.span[0], node.text, blank(node.text))
            return
        # A step is blank when it holds only blank text; never render it (that walks every nested block).
        first = node.items[0] if node.items else None
        is_blank = all(isinstance(i, Text) and blank(i.text) for i in node.items)
        self.findings.content("step", index, node.span[0], first.text if isinstance(first, Text) else "", is_blank)
