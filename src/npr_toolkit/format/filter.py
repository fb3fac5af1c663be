"""The structural filter: the validator plus the trajectory-level checks distill and PAPO apply.

``StructuralFilter(profile, require_parallel=True)(completion) -> Verdict``. A verdict carries the
reasons as diagnostics, so rejections are counted per code in reports.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .answer import extract_boxed
from .diagnostics import Code, Diagnostic, SourceIndex
from .scan import scan
from .stats import Length, TreeStats
from .validate import Profile, get_profile


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)
    ok: bool
    diagnostics: list[Diagnostic]
    stats: TreeStats | None
    answer: str | None  # the last balanced \boxed{} of the whole text, for grading

    @property
    def codes(self) -> list[str]:
        return [d.code.value for d in self.diagnostics]


class StructuralFilter:
    """Callable filter: profile rules + optional ``min_width`` / ``require_parallel``."""

    def __init__(
        self,
        profile: Profile | str = "strict",
        *,
        min_width: int = 1,
        require_parallel: bool = False,
        length: Length | None = None,
    ):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.min_width = min_width
        self.require_parallel = require_parallel
        self.length = length

    def __call__(self, completion: str) -> Verdict:
        scanned = scan(completion, self.profile, self.length)  # what ``validate`` checks, without its result object
        found, stats = scanned.diagnostics, scanned.stats
        if stats is not None:
            source = SourceIndex(completion)
            if self.require_parallel and not stats.parallel:
                found.append(source.diagnostic(Code.NOT_PARALLEL, "no block of width >= 2", 0))
            narrow = [w for w in stats.widths if 0 < w < self.min_width]  # width 0 is E102 already
            if narrow:
                found.append(
                    source.diagnostic(Code.TOO_NARROW, f"block width {min(narrow)} < min_width {self.min_width}", 0)
                )
        return Verdict(ok=not found, diagnostics=found, stats=stats, answer=extract_boxed(completion))
