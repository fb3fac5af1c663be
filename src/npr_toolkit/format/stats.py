"""Structure statistics of a tree (docs/design.md §2): widths, depth, total and critical-path length.

Lengths are characters by default, or tokens when given a ``length`` function built from a
tokenizer (each tag and text piece is measured on its own, as the engine emits them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from . import tags
from .tree import Block, Step, Text, Trajectory

Length = Callable[[str], int]


class TreeStats(BaseModel):
    model_config = ConfigDict(frozen=True)
    unit: Literal["chars", "tokens"] = "chars"
    blocks: int
    widths: list[int]
    depth: int
    total: int
    critical_path: int
    ideal_speedup: float
    parallel: bool


def token_length(tokenizer) -> Length:
    """A length function counting ``tokenizer`` tokens (no special tokens added)."""
    return lambda s: len(tokenizer.encode(s, add_special_tokens=False)) if s else 0


class _Measure:
    def __init__(self, length: Length):
        self.length = length
        self.widths: list[int] = []
        self.depth = 0

    def sequence(self, items: list, depth: int) -> tuple[int, int]:
        """(total, critical path) of trunk-like items at nesting ``depth``."""
        total = critical = 0
        for item in items:
            if isinstance(item, Block):
                t, c = self.block(item, depth + 1)
            else:
                t = c = self.length(item.text)
            total, critical = total + t, critical + c
        return total, critical

    def block(self, block: Block, depth: int) -> tuple[int, int]:
        self.widths.append(block.width)
        self.depth = max(self.depth, depth)
        n = self.length
        guide = n(tags.GUIDELINE_OPEN) + n(tags.GUIDELINE_CLOSE)
        guide += sum(
            n(i.text) if isinstance(i, Text) else n(tags.PLAN_OPEN) + n(i.text) + n(tags.PLAN_CLOSE)
            for i in block.guideline.items
        )
        join = n(tags.TAKEAWAY_OPEN) + n(block.takeaway.text) + n(tags.TAKEAWAY_CLOSE)
        total, branches, gap = guide + join, [], 0
        for item in block.body:
            if isinstance(item, Step):
                t, c = self.sequence(item.items, depth)
                tag_len = n(tags.STEP_OPEN) + n(tags.STEP_CLOSE)
                total += gap + t + tag_len
                branches.append(gap + c + tag_len)  # the whitespace before <step> belongs to its branch
                gap = 0
            else:
                gap += n(item.text)
        total += gap  # after the last step: part of the join
        return total, guide + max(branches, default=0) + gap + join


def tree_stats(tree: Trajectory, length: Length | None = None) -> TreeStats:
    measure = _Measure(length or len)
    total, critical = measure.sequence(tree.items, 0)
    return TreeStats(
        unit="chars" if length is None else "tokens",
        blocks=len(measure.widths),
        widths=measure.widths,
        depth=measure.depth,
        total=total,
        critical_path=critical,
        ideal_speedup=total / critical if critical else 1.0,
        parallel=any(w >= 2 for w in measure.widths),
    )
