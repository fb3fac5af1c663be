"""The validator's fast path: one regex pass over the tags, the tag machine, the profile's rules.

Lark (``parse.py``) is the grammar of record, but feeding it token by token costs Python time per
token. Here one compiled regex splits the text at the eight tags (C speed); ``machine.TagMachine``
steps through them, so the order of tags is not spelled again, and each event's action gathers what
the rules (``rules.Findings``) and the statistics need: widths, depths, step counts, contents and
gaps, total and critical-path length. No tree is built. A text whose tags the machine rejects gets
its syntax diagnostics from ``recovery.py``, Lark's recovery replayed on the same machine.

Everything ``scan`` returns equals the reference path (Lark's parse, its tree checked by
``validate.validate_tree`` and measured by ``stats.tree_stats``): tests/format/test_scan.py and the
generators of tests/format/test_properties.py compare every diagnostic and statistic.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from . import tags
from .answer import find_boxed
from .diagnostics import Code, Diagnostic, SourceIndex
from .machine import Event, TagError, TagMachine
from .recovery import syntax_errors
from .rules import MAX_NESTING, NUMBERS, Findings, Profile
from .stats import Length, TreeStats

_SPLIT = re.compile(tags.TAG_SPLIT)  # text, tag, text, tag, ..., text
_TAG_CHARS = {tag: len(tag) for tag in tags.TAGS}
# Event members as plain names: reading one off its Enum class costs ~100 ns, per tag.
_OPEN_BLOCK, _OPEN_PLAN, _CLOSE_PLAN, _FORK = Event.OPEN_BLOCK, Event.OPEN_PLAN, Event.CLOSE_PLAN, Event.FORK
_OPEN_STEP, _CLOSE_STEP, _JOIN = Event.OPEN_STEP, Event.CLOSE_STEP, Event.JOIN


class Scan(NamedTuple):
    diagnostics: list[Diagnostic]
    stats: TreeStats | None  # None for syntax errors and for blocks nested deeper than MAX_NESTING
    well_formed: bool  # the tags are in order: Lark builds a tree of this text


class _Block:
    """An open block: its facts so far, and its lengths as ``stats.tree_stats`` adds them up."""

    __slots__ = ("branch", "depth", "gap", "guide", "slot", "start", "steps", "steps_at", "takeaway_at", "width")

    def __init__(self, start: int, depth: int, slot: int, guide: int):
        self.start, self.depth, self.slot = start, depth, slot  # slot: its place in the widths list
        self.width = self.steps = 0
        self.steps_at = -1  # offset of its first <step>
        self.guide = guide  # guideline: tags, plans and the text between them
        self.gap = 0  # whitespace since </guideline> or the last </step>
        self.branch = 0  # longest branch so far (its leading gap and tags); from <takeaway> on, plus the join
        self.takeaway_at = 0  # offset of its <takeaway>


def scan(text: str, profile: Profile, length: Length | None = None) -> Scan:
    """Diagnostics and statistics of one text under ``profile`` (lengths in ``length`` units, else chars)."""
    pieces = _SPLIT.split(text)
    counted = 0  # with ``length``: the text pieces measured so far (each exactly once)
    if length is None:
        measure: Length = len
        tag_len = _TAG_CHARS
    else:
        tag_len = {tag: length(tag) for tag in tags.TAGS}

        def measure(piece: str) -> int:
            nonlocal counted
            size = length(piece)
            counted += size
            return size

    findings = Findings(text, profile)
    content = findings.content
    reads_contents, reads_gaps = findings.reads_contents, findings.reads_gaps
    reads_guideline_text, allow_empty, numbering = findings.reads_guideline_text, profile.allow_empty, profile.numbering
    numbers, known = NUMBERS, len(NUMBERS)
    open_plan, close_plan, open_step, close_step = _OPEN_PLAN, _CLOSE_PLAN, _OPEN_STEP, _CLOSE_STEP
    open_block, fork, join, step_close = _OPEN_BLOCK, _FORK, _JOIN, tags.STEP_CLOSE
    machine = TagMachine()
    step_tag = machine.step
    blocks: list[_Block] = []
    steps: list[int] = []  # the critical path of each open step so far
    widths: list[int] = []
    depth = top_blocks = last_block_end = 0
    trunk = pieces[0]  # the trunk text read last (a block after it makes it free text)
    trunk_at = 0
    critical = measure(trunk) if trunk else 0  # the trunk's critical path
    pos = len(trunk)
    # Each tag's action also takes the text after it, which lies in the state the tag leads to.
    for i in range(1, len(pieces), 2):
        tag, after = pieces[i], pieces[i + 1]
        start = pos
        pos += len(tag)
        try:
            event = step_tag(tag)
        except TagError:
            return Scan(syntax_errors(text, pieces), None, False)
        size = tag_len[tag]
        text_size = measure(after) if after else 0
        if event is open_plan:  # after: the plan's content (measured even when empty, as tree_stats does)
            block = blocks[-1]
            block.width += 1
            if not after and length is not None:
                text_size = measure(after)
            block.guide += size + text_size
            if reads_contents:  # the rule is asked only when it may report (a number read in place)
                index = block.width
                if not after or after.isspace():
                    if not allow_empty:
                        content("plan", index, start, after, True)
                elif numbering and (index >= known or numbers[index].match(after) is None):
                    content("plan", index, start, after, False)
        elif event is close_plan:  # after: text inside the guideline
            block = blocks[-1]
            block.guide += size + text_size
            if reads_guideline_text and after and not after.isspace():
                findings.between_plans(pos, after)
        elif event is open_step:  # after: the step's first text; all of it unless a block is next
            block = blocks[-1]
            block.steps += 1
            if block.steps_at < 0:
                block.steps_at = start
            steps.append(size + text_size)
            if reads_contents:
                index = block.steps
                alone = i + 2 < len(pieces) and pieces[i + 2] == step_close  # no nested block
                if alone and (not after or after.isspace()):
                    if not allow_empty:
                        content("step", index, start, after, True)
                elif numbering and (index >= known or numbers[index].match(after) is None):
                    content("step", index, start, after, False)
        elif event is close_step:  # after: a gap
            block = blocks[-1]
            branch = block.gap + steps.pop() + size
            if branch > block.branch:
                block.branch = branch
            block.gap = text_size
            if reads_gaps and after and not after.isspace():
                findings.gap(pos, after)
        elif event is open_block:  # after: text inside the guideline
            if not steps:  # a block of the trunk: the trunk text before it is free text
                if trunk and findings.reads_free_text:
                    findings.free_text(trunk_at, trunk, before_first=not top_blocks)
                top_blocks += 1
            level = len(blocks) + 1
            if level > depth:
                depth = level
            blocks.append(_Block(start, level, len(widths), size + text_size))
            widths.append(0)
            if reads_guideline_text and after and not after.isspace():
                findings.between_plans(pos, after)
        elif event is fork:  # after: the gap before the first step
            block = blocks[-1]
            block.guide += size
            block.gap = text_size
            widths[block.slot] = block.width
            if reads_gaps and after and not after.isspace():
                findings.gap(pos, after)
        elif event is join:  # after: the takeaway's content
            block = blocks[-1]
            block.takeaway_at = start
            findings.takeaway(start, after)
            if not after and length is not None:
                text_size = measure(after)
            block.branch += block.gap + size + text_size  # from here on: the branch plus the join
        else:  # CLOSE_BLOCK; after: text of the enclosing step, or of the trunk
            block = blocks.pop()
            steps_at = block.steps_at if block.steps else block.takeaway_at
            findings.block(block.start, block.depth, block.width, block.steps, steps_at)
            block_length = block.guide + block.branch + size + text_size
            if steps:
                steps[-1] += block_length
            else:
                critical += block_length
                last_block_end, trunk, trunk_at = pos, after, pos
        pos += len(after)
    if not machine.closed:
        return Scan(syntax_errors(text, pieces), None, False)
    if depth > MAX_NESTING:
        too_deep = SourceIndex(text).diagnostic(Code.DEPTH_EXCEEDED, f"blocks nested {depth} deep", 0)
        return Scan([too_deep], None, True)
    findings.trunk(top_blocks, bool(find_boxed(trunk)), last_block_end)
    total = len(text) if length is None else counted + sum(tag_len[tag] for tag in pieces[1::2])
    unit = "chars" if length is None else "tokens"
    findings.length(total, unit)
    stats = TreeStats(
        unit=unit,
        blocks=len(widths),
        widths=widths,
        depth=depth,
        total=total,
        critical_path=critical,
        ideal_speedup=total / critical if critical else 1.0,
        parallel=any(w >= 2 for w in widths),
    )
    return Scan(findings.diagnostics(), stats, True)
