"""Profiles and the validator: profile rules applied to the typed tree (DESIGN §2).

``validate(text, profile)`` reports every violation of a record as a diagnostic; syntax errors come
from the parser in the same shape. Profiles are data: ``PROFILES`` holds the three named ones, and
``Profile.model_copy(update=...)`` makes variants (e.g. another ``max_width``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .diagnostics import Code, Diagnostic, SourceIndex
from .parse import parse
from .stats import Length, TreeStats, tree_stats
from .tree import Block, Plan, Step, Text, Trajectory


class Profile(BaseModel):
    """Which rules apply. Field docs are the user-facing definition of each profile switch."""

    model_config = ConfigDict(frozen=True)
    name: str
    numbering: bool = False  # plans and steps must start with "i:" (E203/E204)
    require_block: bool = False  # at least one block (E205)
    require_answer: bool = False  # a \boxed{} after the last block (E206)
    allow_free_text: bool = True  # non-whitespace text before/between blocks (E207)
    allow_text_between_plans: bool = True  # (E201)
    allow_text_between_steps: bool = False  # (E103): the view and engine need whitespace here
    allow_empty: bool = True  # empty plan/step/takeaway (E202)
    max_width: int | None = 8  # (E105)
    max_depth: int = 1  # (E104)
    max_tokens: int | None = None  # (E106), in the unit of the length function


ProfileName = Literal["strict", "lenient", "npr-compat"]  # the keys of PROFILES

PROFILES: dict[ProfileName, Profile] = {
    "strict": Profile(
        name="strict",
        numbering=True,
        require_block=True,
        require_answer=True,
        allow_free_text=False,
        allow_text_between_plans=False,
        allow_empty=False,
    ),
    "lenient": Profile(name="lenient", max_depth=5),
    "npr-compat": Profile(name="npr-compat", require_block=True, require_answer=True, allow_text_between_steps=True),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


class Validation(BaseModel):
    model_config = ConfigDict(frozen=True)
    valid: bool
    diagnostics: list[Diagnostic]
    tree: Trajectory | None
    stats: TreeStats | None


def _is_blank(text: str) -> bool:
    return not text.strip()


def _numbered(text: str, index: int) -> bool:
    return re.match(rf"\s*{index}\s*:", text) is not None


class _Checker:
    def __init__(self, text: str, profile: Profile):
        self.profile = profile
        self.source = SourceIndex(text)
        self.found: list[Diagnostic] = []

    def report(self, code: Code, message: str, offset: int) -> None:
        self.found.append(self.source.diagnostic(code, message, offset))

    def trunk(self, tree: Trajectory) -> None:
        p = self.profile
        blocks = tree.blocks
        if p.require_block and not blocks:
            self.report(Code.NO_BLOCK, "no <guideline> block: the trajectory never goes parallel", 0)
        if not p.allow_free_text and blocks:
            last = max(i for i, item in enumerate(tree.items) if isinstance(item, Block))
            for item in tree.items[:last]:
                if isinstance(item, Text) and not _is_blank(item.text):
                    where = "before the first block" if item.span[0] < blocks[0].span[0] else "between blocks"
                    self.report(Code.TEXT_OUTSIDE_BLOCKS, f"free text {where}", item.span[0])
        if p.require_answer and tree.answer is None:
            end = blocks[-1].span[1] if blocks else 0
            self.report(Code.MISSING_ANSWER, "no balanced \\boxed{...} after the last block", end)
        self.items(tree.items, depth=0)

    def items(self, items: list, depth: int) -> None:
        for item in items:
            if isinstance(item, Block):
                self.block(item, depth + 1)

    def block(self, block: Block, depth: int) -> None:
        p = self.profile
        start = block.span[0]
        if depth > p.max_depth:
            self.report(Code.DEPTH_EXCEEDED, f"block at depth {depth} > max_depth {p.max_depth}", start)
        plans, steps = block.guideline.plans, block.steps
        if not plans:
            self.report(Code.NO_PLANS, "<guideline> has no <plan>", start)
        if p.max_width is not None and len(plans) > p.max_width:
            self.report(Code.WIDTH_EXCEEDED, f"{len(plans)} plans > max_width {p.max_width}", start)
        if len(steps) != len(plans):
            offset = steps[0].span[0] if steps else block.takeaway.span[0]
            self.report(Code.STEP_COUNT, f"{len(steps)} <step>s for {len(plans)} <plan>s", offset)
        for item in block.guideline.items:
            if isinstance(item, Text) and not _is_blank(item.text) and not p.allow_text_between_plans:
                self.report(Code.TEXT_BETWEEN_PLANS, "text inside <guideline> outside any <plan>", item.span[0])
        for item in block.gaps:
            if not _is_blank(item.text) and not p.allow_text_between_steps:
                self.report(Code.TEXT_BETWEEN_STEPS, "text between steps (only whitespace allowed)", item.span[0])
        for i, plan in enumerate(plans, 1):
            self.content(plan, plan.text, i, Code.PLAN_NUMBERING)
        for i, step in enumerate(steps, 1):
            first = step.items[0].render() if step.items else ""
            self.content(step, first if step.items else "", i, Code.STEP_NUMBERING)
            self.items(step.items, depth)
        if not p.allow_empty and _is_blank(block.takeaway.text):
            self.report(Code.EMPTY_CONTENT, "empty <takeaway>", block.takeaway.span[0])

    def content(self, node: Plan | Step, text: str, index: int, code: Code) -> None:
        kind = "plan" if isinstance(node, Plan) else "step"
        # A step is blank when it holds only blank text; never render it (that walks every nested block).
        items = node.items if isinstance(node, Step) else [Text(span=node.span, text=node.text)]
        if all(isinstance(i, Text) and _is_blank(i.text) for i in items):
            if not self.profile.allow_empty:
                self.report(Code.EMPTY_CONTENT, f"empty <{kind}> {index}", node.span[0])
        elif self.profile.numbering and not _numbered(text, index):
            self.report(code, f"<{kind}> {index} should start with '{index}:'", node.span[0])


MAX_NESTING = 64  # deeper trees are reported, not walked (the walk recurses once per level)


def _nesting(tree: Trajectory) -> int:
    """Depth of the deepest block, computed without recursion."""
    deepest, todo = 0, [(item, 1) for item in tree.items if isinstance(item, Block)]
    while todo:
        block, depth = todo.pop()
        deepest = max(deepest, depth)
        todo += [(item, depth + 1) for step in block.steps for item in step.items if isinstance(item, Block)]
    return deepest


def validate(text: str, profile: Profile | str = "strict", length: Length | None = None) -> Validation:
    """Parse and check one completion; ``length`` counts tokens for stats and ``max_tokens``."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    parsed = parse(text)
    if parsed.tree is None:
        return Validation(valid=False, diagnostics=parsed.diagnostics, tree=None, stats=None)
    depth = _nesting(parsed.tree)
    if depth > MAX_NESTING:  # the checks and stats recurse per level: report instead of walking
        too_deep = SourceIndex(text).diagnostic(Code.DEPTH_EXCEEDED, f"blocks nested {depth} deep", 0)
        return Validation(valid=False, diagnostics=[too_deep], tree=parsed.tree, stats=None)
    checker = _Checker(text, profile)
    checker.trunk(parsed.tree)
    stats = tree_stats(parsed.tree, length)
    if profile.max_tokens is not None and stats.total > profile.max_tokens:
        checker.report(Code.TOO_LONG, f"{stats.total} {stats.unit} > max_tokens {profile.max_tokens}", 0)
    found = sorted(checker.found, key=lambda d: d.offset)
    return Validation(valid=not found, diagnostics=found, tree=parsed.tree, stats=stats)
