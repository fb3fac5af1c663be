"""Profiles and the rules they switch (docs/design.md §2), worded once for both checkers.

A profile is data: which rules apply and their limits. ``Findings`` holds the rules themselves:
each method is told the facts of one node (offsets, counts, whether it is blank) and reports the
diagnostic, if any. Two checkers gather those facts: the reference walk over Lark's typed tree
(``validate.validate_tree``) and the fast tag scan (``scan.scan``). Because both report through
the same rules, they can only differ in the facts they gather, which is what the equivalence tests
compare.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .diagnostics import Code, Diagnostic, SourceIndex


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


MAX_NESTING = 64  # deeper trees are reported as such, not checked (the reference walk recurses per level)

NUMBERS = [re.compile(rf"\s*{index}\s*:") for index in range(65)]  # "i:" after optional whitespace

# Diagnostics sharing an offset are listed in this order (the order a reader meets the rules in).
_TRUNK, _FREE_TEXT, _ANSWER, _DEPTH, _NO_PLANS, _WIDTH, _STEP_COUNT, _CONTENT, _TAKEAWAY, _LENGTH = range(10)


def _number(index: int) -> re.Pattern[str]:
    return NUMBERS[index] if index < len(NUMBERS) else re.compile(rf"\s*{index}\s*:")


def blank(text: str) -> bool:
    """Empty or only whitespace (what ``str.strip`` removes), without copying the text."""
    return not text or text.isspace()


class Findings:
    """The diagnostics of one text under one profile, reported rule by rule from gathered facts.

    A checker passes offsets into ``text`` and the pieces of text a rule reads (a gap, a content).
    """

    def __init__(self, text: str, profile: Profile):
        self.text = text
        self.profile = profile
        self._found: list[tuple[int, int, Code, str]] = []
        # Which text-level rules can fire: a checker need not gather facts no rule reads.
        self.reads_contents = profile.numbering or not profile.allow_empty
        self.reads_gaps = not profile.allow_text_between_steps
        self.reads_guideline_text = not profile.allow_text_between_plans
        self.reads_free_text = not profile.allow_free_text
        self._numbering, self._allow_empty = profile.numbering, profile.allow_empty

    def _report(self, rank: int, code: Code, message: str, offset: int) -> None:
        self._found.append((offset, rank, code, message))

    def diagnostics(self) -> list[Diagnostic]:
        source = SourceIndex(self.text)
        return [source.diagnostic(code, message, offset) for offset, _, code, message in sorted(self._found)]

    # --- the trunk ---

    def trunk(self, blocks: int, has_answer: bool, last_block_end: int) -> None:
        p = self.profile
        if p.require_block and not blocks:
            self._report(_TRUNK, Code.NO_BLOCK, "no <guideline> block: the trajectory never goes parallel", 0)
        if p.require_answer and not has_answer:
            self._report(_ANSWER, Code.MISSING_ANSWER, "no balanced \\boxed{...} after the last block", last_block_end)

    def free_text(self, start: int, text: str, before_first: bool) -> None:
        """Trunk text followed by a block."""
        if self.reads_free_text and not blank(text):
            where = "before the first block" if before_first else "between blocks"
            self._report(_FREE_TEXT, Code.TEXT_OUTSIDE_BLOCKS, f"free text {where}", start)

    def length(self, total: int, unit: str) -> None:
        limit = self.profile.max_tokens
        if limit is not None and total > limit:
            self._report(_LENGTH, Code.TOO_LONG, f"{total} {unit} > max_tokens {limit}", 0)

    # --- a block ---

    def block(self, start: int, depth: int, width: int, steps: int, steps_at: int) -> None:
        """``steps_at``: the first ``<step>``, else the ``<takeaway>``."""
        p = self.profile
        if depth > p.max_depth:
            self._report(_DEPTH, Code.DEPTH_EXCEEDED, f"block at depth {depth} > max_depth {p.max_depth}", start)
        if not width:
            self._report(_NO_PLANS, Code.NO_PLANS, "<guideline> has no <plan>", start)
        if p.max_width is not None and width > p.max_width:
            self._report(_WIDTH, Code.WIDTH_EXCEEDED, f"{width} plans > max_width {p.max_width}", start)
        if steps != width:
            self._report(_STEP_COUNT, Code.STEP_COUNT, f"{steps} <step>s for {width} <plan>s", steps_at)

    def between_plans(self, start: int, text: str) -> None:
        """Text inside ``<guideline>`` outside any plan."""
        if self.reads_guideline_text and not blank(text):
            self._report(_CONTENT, Code.TEXT_BETWEEN_PLANS, "text inside <guideline> outside any <plan>", start)

    def gap(self, start: int, text: str) -> None:
        """Text between ``</guideline>``, the steps and ``<takeaway>``."""
        if self.reads_gaps and not blank(text):
            self._report(_CONTENT, Code.TEXT_BETWEEN_STEPS, "text between steps (only whitespace allowed)", start)

    def content(self, kind: str, index: int, start: int, first: str, is_blank: bool) -> None:
        """Plan or step ``index`` (1-based) opened at ``start``; ``first``: the text its content opens
        with ("" when a step opens with a nested block)."""
        if is_blank:
            if not self._allow_empty:
                self._report(_CONTENT, Code.EMPTY_CONTENT, f"empty <{kind}> {index}", start)
        elif self._numbering and _number(index).match(first) is None:
            code = Code.PLAN_NUMBERING if kind == "plan" else Code.STEP_NUMBERING
            self._report(_CONTENT, code, f"<{kind}> {index} should start with '{index}:'", start)

    def takeaway(self, start: int, text: str) -> None:
        if not self._allow_empty and blank(text):
            self._report(_TAKEAWAY, Code.EMPTY_CONTENT, "empty <takeaway>", start)
