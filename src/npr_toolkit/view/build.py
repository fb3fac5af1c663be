"""The training view (DESIGN §3): positions, tree targets and visibility for one token sequence.

``build_view(ids, tokenizer, mode=...)`` makes one pass over the tag positions (a Python loop over
tags, never over L or L²), records linear position runs and branch intervals, and fills the
per-token arrays with vectorised slices. Masks are derived from the compact per-token branch path
(``masks.py``), so nothing of size L² exists unless a dense mask is asked for.

Modes:
- ``canonical``: DESIGN §3 exactly (what the exact engine computes).
- ``npr-compat``: the official NPR-Beta training code's masks and positions, token for token
  (step spans from ``<step>`` to ``</step>`` block each other; gaps stay causal; positions shift at
  ``<step>`` and ``<takeaway>``), with plain next-token targets over the completion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from . import masks
from .tokens import TagVocab, tag_vocab

ViewMode = Literal["canonical", "npr-compat"]
IGNORE = -100


class ViewError(ValueError):
    """The token sequence is not a well-formed tree (message names the token index)."""


@dataclass
class TreeView:
    """Per-token arrays of one sequence. ``labels`` are already shifted (``shift_labels``)."""

    input_ids: torch.Tensor  # (L,)
    position_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,) target of position t, or -100
    block_ids: torch.Tensor  # (D, L) block uid per nesting depth, -1 outside
    branch_ids: torch.Tensor  # (D, L) branch index inside that block
    generated: torch.Tensor  # (L,) bool: a token the model produced (not prompt, not inserted)
    prompt_length: int
    mode: ViewMode = "canonical"
    widths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.numel()

    def dense_mask(self) -> torch.Tensor:
        """(L, L) bool, True where query t may attend key s. For inspection and short sequences."""
        return masks.dense(self.block_ids, self.branch_ids)

    def additive_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(1, L, L) additive mask (0 allowed, finfo.min blocked) for SDPA and eager attention."""
        return masks.additive(self.dense_mask(), dtype)[None]

    def block_mask(self, device: str | torch.device = "cuda"):
        """FlexAttention ``BlockMask`` built from ``mask_mod``: O(L) memory, for long sequences."""
        return masks.block_mask([self], device)


@dataclass
class _Frame:
    kind: Literal["guideline", "block", "takeaway"]
    opened_at: int
    depth: int
    uid: int = -1
    gpos: int = 0  # position of </guideline>
    max_end: int = 0  # canonical: max last position of a branch; compat: m
    branches: int = 0
    in_step: bool = False
    step_at: int = -1  # index of the open <step>
    branch_begin: int = 0  # canonical: first token of the next branch (just after </guideline> or </step>)


class _Scan:
    """One pass over the tag events, producing position runs, branch intervals and header spans."""

    def __init__(self, ids: list[int], vocab: TagVocab, start: int, mode: ViewMode):
        self.ids, self.vocab, self.start, self.mode = ids, vocab, start, mode
        self.runs: list[tuple[int, int]] = [(0, 0)]  # (first index, its position); later runs override
        self.branches: list[tuple[int, int, int, int, int]] = []  # (depth, uid, index, first, last)
        self.inserted: list[tuple[int, int]] = []  # [first, last] spans of engine headers
        self.widths: list[int] = []
        self.stack: list[_Frame] = []
        self.uids = 0

    def pos(self, t: int) -> int:
        first, position = self.runs[-1]
        return position + (t - first)

    def fail(self, t: int, message: str) -> ViewError:
        name = self.vocab.tokenizer.convert_ids_to_tokens(self.ids[t]) if t < len(self.ids) else "end"
        return ViewError(f"token {t} ({name!r}): {message}")

    def top(self, t: int, *kinds: str) -> _Frame:
        if not self.stack or self.stack[-1].kind not in kinds:
            where = self.stack[-1].kind if self.stack else "trunk"
            raise self.fail(t, f"tag not allowed here (inside {where})")
        return self.stack[-1]

    def blank_between(self, first: int, last: int) -> None:
        for j in range(first, last):
            if not self.vocab.is_blank(self.ids[j]):
                raise self.fail(j, "only whitespace may stand between </guideline>, steps and <takeaway>")

    def depth(self) -> int:
        return sum(1 for f in self.stack if f.kind == "block")

    def run(self) -> None:
        v = self.vocab
        handlers = {
            v.guideline_open: self.guideline_open,
            v.guideline_close: self.guideline_close,
            v.plan_open: self.plan,
            v.plan_close: self.plan,
            v.step_open: self.step_open,
            v.step_close: self.step_close,
            v.takeaway_open: self.takeaway_open,
            v.takeaway_close: self.takeaway_close,
        }
        ids = self.ids
        for t in range(self.start, len(ids)):
            handler = handlers.get(ids[t])
            if handler is not None:
                handler(t)
        if self.stack:
            frame = self.stack[-1]
            if frame.kind == "block" and frame.in_step:
                raise self.fail(frame.step_at, "<step> opened here is never closed")
            if frame.kind == "block":
                raise self.fail(frame.opened_at, "the block opened by <guideline> here never reaches <takeaway>")
            raise self.fail(frame.opened_at, f"<{frame.kind}> opened here is never closed")

    def guideline_open(self, t: int) -> None:
        if self.stack and not (self.stack[-1].kind == "block" and self.stack[-1].in_step):
            raise self.fail(t, "<guideline> may only open in the trunk or inside a step")
        if self.mode == "npr-compat" and self.stack:
            raise self.fail(t, "nested <guideline> inside an open block (npr-compat has no nesting)")
        self.stack.append(_Frame(kind="guideline", opened_at=t, depth=self.depth() + 1))

    def plan(self, t: int) -> None:
        self.top(t, "guideline").branches += 1 if self.ids[t] == self.vocab.plan_open else 0

    def guideline_close(self, t: int) -> None:
        frame = self.top(t, "guideline")
        self.widths.append(frame.branches)
        frame.kind, frame.uid, frame.gpos = "block", self.uids, self.pos(t)
        frame.branches, frame.branch_begin, frame.max_end = 0, t + 1, 0 if self.mode == "npr-compat" else -1
        self.uids += 1

    def step_open(self, t: int) -> None:
        frame = self.top(t, "block")
        if frame.in_step:
            raise self.fail(t, "<step> inside an open <step>")
        frame.in_step, frame.step_at = True, t
        frame.branches += 1
        if self.mode == "npr-compat":
            frame.branch_begin = t
            self.runs.append((t, frame.gpos + 1))
            return
        self.blank_between(frame.branch_begin, t)
        self.runs.append((frame.branch_begin, frame.gpos + 1))
        header_end = t
        number = self.vocab.step_number_ids(frame.branches)
        if tuple(self.ids[t + 1 : t + 1 + len(number)]) == number:
            header_end += len(number)
        self.inserted.append((frame.branch_begin, header_end))

    def step_close(self, t: int) -> None:
        frame = self.top(t, "block")
        if not frame.in_step:
            raise self.fail(t, "</step> without an open <step>")
        frame.in_step = False
        self.branches.append((frame.depth - 1, frame.uid, frame.branches, frame.branch_begin, t))
        if self.mode == "npr-compat":
            frame.max_end = max(frame.max_end, self.pos(t) - frame.gpos)
        else:
            frame.max_end = max(frame.max_end, self.pos(t))
            frame.branch_begin = t + 1

    def takeaway_open(self, t: int) -> None:
        frame = self.top(t, "block")
        if frame.in_step or frame.branches == 0:
            raise self.fail(t, "<takeaway> must follow the block's closed steps")
        if self.mode == "npr-compat":
            self.runs.append((t, frame.gpos + frame.max_end + 1))
        else:
            self.blank_between(frame.branch_begin, t)
            self.runs.append((frame.branch_begin, frame.max_end + 1))
            self.inserted.append((frame.branch_begin, t))
        frame.kind = "takeaway"

    def takeaway_close(self, t: int) -> None:
        self.top(t, "takeaway")
        self.stack.pop()


def _default_start(ids: list[int], vocab: TagVocab) -> int:
    """Without a prompt length: just after the first ``<|im_end|>`` (the official code's rule), else 0."""
    if vocab.im_end is not None and vocab.im_end in ids:
        return ids.index(vocab.im_end) + 1
    return 0


def build_view(
    input_ids: torch.Tensor | list[int],
    tokenizer,
    *,
    mode: ViewMode = "canonical",
    prompt_length: int | None = None,
    inserted: torch.Tensor | list[bool] | None = None,
) -> TreeView:
    """Build the view of ``prompt + completion`` ids.

    Args:
        input_ids: the whole sequence, prompt first.
        tokenizer: a tokenizer with the tag tokens (see ``add_tag_tokens``).
        mode: ``canonical`` (DESIGN §3) or ``npr-compat`` (official NPR-Beta training code).
        prompt_length: number of prompt tokens; tags inside the prompt are ignored. Default: up to
            and including the first ``<|im_end|>`` if there is one, else 0.
        inserted: optional per-token flags of other engine-inserted tokens (e.g. a forced
            ``</step>``); they never become targets.

    Raises:
        ViewError: the completion is not a well-formed tree; the message names the token index.
    """
    if mode not in ("canonical", "npr-compat"):
        raise ValueError(f"unknown view mode {mode!r}; choose canonical or npr-compat")
    ids_t = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    ids = ids_t.tolist()
    vocab = tag_vocab(tokenizer)
    start = _default_start(ids, vocab) if prompt_length is None else prompt_length
    if not 0 <= start <= len(ids):
        raise ValueError(f"prompt_length {start} outside the sequence of {len(ids)} tokens")
    scan = _Scan(ids, vocab, start, mode)
    scan.run()
    n = len(ids)

    # Positions: piecewise-linear runs, filled with one repeat_interleave.
    firsts = torch.tensor([r[0] for r in scan.runs], dtype=torch.long)
    bases = torch.tensor([r[1] for r in scan.runs], dtype=torch.long)
    lengths = torch.diff(firsts, append=torch.tensor([n]))
    run_of = torch.repeat_interleave(torch.arange(len(scan.runs)), lengths)
    position_ids = bases[run_of] + torch.arange(n) - firsts[run_of]

    depth = max([b[0] for b in scan.branches], default=0) + 1
    block_ids = torch.full((depth, n), -1, dtype=torch.long)
    branch_ids = torch.full((depth, n), -1, dtype=torch.long)
    for d, uid, index, first, last in scan.branches:
        block_ids[d, first : last + 1] = uid
        branch_ids[d, first : last + 1] = index

    generated = torch.zeros(n, dtype=torch.bool)
    generated[start:] = True
    if mode == "canonical":
        for first, last in scan.inserted:
            generated[first : last + 1] = False
    if inserted is not None:
        generated &= ~torch.as_tensor(inserted, dtype=torch.bool)
    labels = torch.full((n,), IGNORE, dtype=torch.long)
    # Every target is the next token in the flat order: a branch's last token (</step>) and
    # </guideline> are followed by inserted headers, so "next on my own path" needs no lookup.
    labels[:-1] = torch.where(generated[1:], ids_t[1:], IGNORE)
    return TreeView(
        input_ids=ids_t,
        position_ids=position_ids,
        labels=labels,
        block_ids=block_ids,
        branch_ids=branch_ids,
        generated=generated,
        prompt_length=start,
        mode=mode,
        widths=scan.widths,
    )


def causal_view(input_ids: torch.Tensor | list[int], prompt_length: int = 0) -> TreeView:
    """The plain causal view (positions 0..L-1, next-token targets over the completion).

    For sequences that are not trees, e.g. PAPO rollouts the structural filter rejected, which
    are masked out of the loss but still need finite log-probs.
    """
    ids_t = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    n = ids_t.numel()
    generated = torch.zeros(n, dtype=torch.bool)
    generated[prompt_length:] = True
    labels = torch.full((n,), IGNORE, dtype=torch.long)
    labels[:-1] = torch.where(generated[1:], ids_t[1:], IGNORE)
    none = torch.full((1, n), -1, dtype=torch.long)
    return TreeView(
        input_ids=ids_t,
        position_ids=torch.arange(n),
        labels=labels,
        block_ids=none,
        branch_ids=none.clone(),
        generated=generated,
        prompt_length=prompt_length,
    )
