"""The training view (docs/design.md §3, §3b): positions, targets and visibility for one token sequence.

``build_view(ids, tokenizer, mode=..., prompt_length=...)`` makes one pass over the tag positions (a
Python loop over tags, never over L or L²), records linear position runs, branch intervals and blocks,
and fills the per-token arrays with vectorised slices. Nothing of size L² exists unless a dense mask is
asked for.

Modes:
- ``canonical``: §3 exactly (what an engine that splices KV at the join computes).
- ``reprefill``: §3b exactly (what a stock server computes: a join re-reads the branches). The view
  is the trie-packed sequence of the requests (``trie.py``), longer than the original.
- ``npr-compat``: the official NPR-Beta training code's masks and positions, token for token
  (step spans from ``<step>`` to ``</step>`` block each other; gaps stay causal; positions shift at
  ``<step>`` and ``<takeaway>``), with plain next-token targets over the completion.

Every mode yields the same ``TreeView``, so callers (the SFT collator, PAPO's recomputation, mask
pictures) never ask which mode they hold: one visibility rule covers all (``masks.py``), and
``gather`` maps per-position results back to the original tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from ..format.machine import Event, State, TagError, TagMachine
from . import masks
from .tokens import TagVocab, tag_vocab
from .trie import Fork, pack

ViewMode = Literal["canonical", "reprefill", "npr-compat"]
MODES: tuple[ViewMode, ...] = get_args(ViewMode)
IGNORE = -100


class ViewError(ValueError):
    """The token sequence is not a well-formed tree (message names the token index)."""


@dataclass
class TreeView:
    """One sequence as the model reads it in training. ``labels`` are already shifted (``shift_labels``).

    The N view tokens are the sequence itself (canonical, npr-compat, causal) or its trie packing
    (reprefill, N >= L). Query t sees key s iff ``s <= t < subtree_end[s]`` and their branch paths
    agree (``masks.py``): the path modes keep ``subtree_end = N``, reprefill has no paths (D = 0).
    """

    input_ids: torch.Tensor  # (N,)
    position_ids: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) target of position t, or -100
    block_ids: torch.Tensor  # (D, N) block uid per nesting depth, -1 outside
    branch_ids: torch.Tensor  # (D, N) branch index inside that block
    subtree_end: torch.Tensor  # (N,) t sees s only while t < subtree_end[s]
    generated: torch.Tensor  # (N,) bool: the model produced this token here (not prompt, header, re-read copy)
    origin: torch.Tensor  # (N,) index of each view token in the original sequence
    predicted_at: torch.Tensor  # (L,) view position whose label is original token o, -1 if o is no target
    prompt_length: int  # the prompt is the first prompt_length tokens of the sequence and of the view
    mode: ViewMode = "canonical"
    widths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.numel()

    @property
    def original_length(self) -> int:
        return self.predicted_at.numel()

    def gather(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Per view position (..., N), aligned with ``labels`` -> per original token (..., L).

        Entry o is the value at the position that predicts original token o (e.g. TRL's fused
        ``log_probs`` of this row give log π of every sampled token), ``fill`` where o is no target.
        """
        index = self.predicted_at.to(values.device)
        picked = values[..., index.clamp(min=0)]
        return torch.where(index >= 0, picked, torch.full_like(picked, fill))

    def dense_mask(self) -> torch.Tensor:
        """(N, N) bool, True where query t may attend key s. For inspection and short sequences."""
        return masks.dense(self.block_ids, self.branch_ids, self.subtree_end)

    def additive_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(1, L, L) additive mask (0 allowed, finfo.min blocked) for SDPA and eager attention."""
        return masks.additive(self.dense_mask(), dtype)[None]

    def block_mask(self, device: str | torch.device = "cuda"):
        """FlexAttention ``BlockMask`` built from ``mask_mod``: O(L) memory, for long sequences."""
        return masks.block_mask([self], device)


@dataclass
class _Block:
    """Bookkeeping of one open block while scanning (its states live in the tag machine)."""

    opened_at: int  # index of its <guideline>
    depth: int  # 1 for a block in the trunk
    uid: int = -1
    plans: int = 0
    gpos: int = 0  # position of </guideline>
    max_end: int = 0  # canonical: max last position of a branch; compat: m
    branches: int = 0
    step_at: int = -1  # index of the open <step>
    branch_begin: int = 0  # canonical: first token of the next branch (just after </guideline> or </step>)
    fork_at: int = -1  # index of its </guideline>
    ranges: list[tuple[int, int]] = field(default_factory=list)  # canonical: [first, stop) of each branch


class _Scan:
    """One pass over the tags, stepping the format's tag machine; records position runs, branch
    intervals, the blocks' forks and the spans of the headers the engine inserts. ``mode`` is
    ``canonical`` (branches and headers as the engine writes them) or ``npr-compat``."""

    def __init__(self, ids: list[int], vocab: TagVocab, start: int, mode: ViewMode):
        self.ids, self.vocab, self.start, self.mode = ids, vocab, start, mode
        self.runs: list[tuple[int, int]] = [(0, 0)]  # (first index, its position); later runs override
        self.branches: list[tuple[int, int, int, int, int]] = []  # (depth, uid, index, first, last)
        self.forks: list[Fork] = []  # canonical: every closed block, for the re-prefill layout
        self.inserted: list[tuple[int, int]] = []  # [first, last] spans of engine headers
        self.widths: list[int] = []
        self.machine = TagMachine()
        self.blocks: list[_Block] = []
        self.uids = 0

    def pos(self, t: int) -> int:
        first, position = self.runs[-1]
        return position + (t - first)

    def fail(self, t: int, message: str) -> ViewError:
        name = self.vocab.tokenizer.convert_ids_to_tokens(self.ids[t]) if t < len(self.ids) else "end"
        return ViewError(f"token {t} ({name!r}): {message}")

    def blank_between(self, first: int, last: int) -> None:
        for j in range(first, last):
            if not self.vocab.is_blank(self.ids[j]):
                raise self.fail(j, "only whitespace may stand between </guideline>, steps and <takeaway>")

    def run(self) -> None:
        actions = {
            Event.OPEN_BLOCK: self.open_block,
            Event.OPEN_PLAN: self.open_plan,
            Event.FORK: self.fork,
            Event.OPEN_STEP: self.open_step,
            Event.CLOSE_STEP: self.close_step,
            Event.JOIN: self.join,
            Event.CLOSE_BLOCK: self.close_block,
        }
        tag_of = self.vocab.tag_of
        for t in range(self.start, len(self.ids)):
            tag = tag_of.get(self.ids[t])
            if tag is None:
                continue
            try:
                event = self.machine.step(tag)
            except TagError as error:
                raise self.fail(t, str(error)) from None
            action = actions.get(event)
            if action is not None:
                action(t)
        if self.blocks:
            block, state = self.blocks[-1], self.machine.state
            if state == State.STEP:
                raise self.fail(block.step_at, "<step> opened here is never closed")
            if state == State.BODY:
                raise self.fail(block.opened_at, "the block opened by <guideline> here never reaches <takeaway>")
            raise self.fail(block.opened_at, f"<{state.value}> of the block opened here is never closed")

    def open_block(self, t: int) -> None:
        if self.mode == "npr-compat" and self.blocks:
            raise self.fail(t, "nested <guideline> inside an open block (npr-compat has no nesting)")
        self.blocks.append(_Block(opened_at=t, depth=self.machine.depth))

    def open_plan(self, t: int) -> None:
        self.blocks[-1].plans += 1

    def fork(self, t: int) -> None:
        block = self.blocks[-1]
        self.widths.append(block.plans)
        block.uid, block.gpos, block.branch_begin, block.fork_at = self.uids, self.pos(t), t + 1, t
        block.max_end = 0 if self.mode == "npr-compat" else -1
        self.uids += 1

    def open_step(self, t: int) -> None:
        block = self.blocks[-1]
        block.step_at = t
        block.branches += 1
        if self.mode == "npr-compat":
            block.branch_begin = t
            self.runs.append((t, block.gpos + 1))
            return
        self.blank_between(block.branch_begin, t)
        self.runs.append((block.branch_begin, block.gpos + 1))
        header_end = t
        number = self.vocab.step_number_ids(block.branches)
        if tuple(self.ids[t + 1 : t + 1 + len(number)]) == number:
            header_end += len(number)
        self.inserted.append((block.branch_begin, header_end))

    def close_step(self, t: int) -> None:
        block = self.blocks[-1]
        self.branches.append((block.depth - 1, block.uid, block.branches, block.branch_begin, t))
        if self.mode == "npr-compat":
            block.max_end = max(block.max_end, self.pos(t) - block.gpos)
        else:
            block.max_end = max(block.max_end, self.pos(t))
            block.ranges.append((block.branch_begin, t + 1))
            block.branch_begin = t + 1

    def join(self, t: int) -> None:
        block = self.blocks[-1]
        if block.branches == 0:
            raise self.fail(t, "<takeaway> must follow the block's closed steps")
        if self.mode == "npr-compat":
            self.runs.append((t, block.gpos + block.max_end + 1))
        else:
            self.blank_between(block.branch_begin, t)
            self.runs.append((block.branch_begin, block.max_end + 1))
            self.inserted.append((block.branch_begin, t))
            self.forks.append(Fork(block.fork_at, tuple(block.ranges)))

    def close_block(self, t: int) -> None:
        self.blocks.pop()


def build_view(
    input_ids: torch.Tensor | list[int],
    tokenizer,
    *,
    mode: ViewMode = "canonical",
    prompt_length: int,
    inserted: torch.Tensor | list[bool] | None = None,
) -> TreeView:
    """Build the view of ``prompt + completion`` ids.

    Args:
        input_ids: the whole sequence, prompt first.
        tokenizer: a tokenizer with the tag tokens (see ``add_tag_tokens``).
        mode: ``canonical`` (§3), ``reprefill`` (§3b, trie-packed) or ``npr-compat`` (official NPR-Beta code).
        prompt_length: number of prompt tokens: never targets, and tags inside them are text. Required:
            guessing it (e.g. "after the first ``<|im_end|>``") made a system turn and the user's
            instruction targets.
        inserted: optional per-token flags of other engine-inserted tokens (e.g. a forced
            ``</step>``); they never become targets.

    Raises:
        ViewError: the completion is not a well-formed tree; the message names the token index.
        ValueError: an unknown mode, or no valid ``prompt_length``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown view mode {mode!r}; choose one of {', '.join(MODES)}")
    ids_t = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    ids = ids_t.tolist()
    n = len(ids)
    if prompt_length is None:
        raise ValueError("build_view needs prompt_length (the prompt's tokens must never be targets)")
    if not 0 <= prompt_length <= n:
        raise ValueError(f"prompt_length {prompt_length} outside the sequence of {n} tokens")
    scan = _Scan(ids, tag_vocab(tokenizer), prompt_length, "npr-compat" if mode == "npr-compat" else "canonical")
    scan.run()

    generated = torch.zeros(n, dtype=torch.bool)
    generated[prompt_length:] = True
    if mode != "npr-compat":
        for first, last in scan.inserted:
            generated[first : last + 1] = False
    if inserted is not None:
        generated &= ~torch.as_tensor(inserted, dtype=torch.bool)
    if mode == "reprefill":
        return _trie_view(ids_t, generated, scan, prompt_length)

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
    # Every target is the next token in the flat order: a branch's last token (</step>) and
    # </guideline> are followed by inserted headers, so "next on my own path" needs no lookup.
    return _assemble(
        ids_t, position_ids, generated, torch.arange(n) - 1, block_ids, branch_ids, prompt_length, mode, scan.widths
    )


def _trie_view(ids: torch.Tensor, generated: torch.Tensor, scan: _Scan, prompt_length: int) -> TreeView:
    """§3b: the requests packed as a prefix tree; a token is a target where it was sampled, never re-read."""
    packing = pack(len(ids), scan.forks)
    none = torch.empty((0, packing.origin.numel()), dtype=torch.long)
    return _assemble(
        ids[packing.origin],
        packing.position_ids,
        generated[packing.origin] & ~packing.reread,
        packing.parent,
        none,
        none,
        prompt_length,
        "reprefill",
        scan.widths,
        origin=packing.origin,
        subtree_end=packing.subtree_end,
        original_length=len(ids),
    )


def _assemble(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    generated: torch.Tensor,
    parent: torch.Tensor,
    block_ids: torch.Tensor,
    branch_ids: torch.Tensor,
    prompt_length: int,
    mode: ViewMode,
    widths: list[int],
    *,
    origin: torch.Tensor | None = None,
    subtree_end: torch.Tensor | None = None,
    original_length: int | None = None,
) -> TreeView:
    """The view from its per-token arrays: a target t is the label of the token before it in its
    request (``parent``); without ``origin`` the view is the sequence itself."""
    n = input_ids.numel()
    origin = torch.arange(n) if origin is None else origin
    targets = (generated & (parent >= 0)).nonzero().flatten()  # the very first token has nothing before it
    labels = torch.full((n,), IGNORE, dtype=torch.long)
    labels[parent[targets]] = input_ids[targets]
    predicted_at = torch.full((original_length or n,), -1, dtype=torch.long)
    predicted_at[origin[targets]] = parent[targets]
    return TreeView(
        input_ids=input_ids,
        position_ids=position_ids,
        labels=labels,
        block_ids=block_ids,
        branch_ids=branch_ids,
        subtree_end=torch.full((n,), n, dtype=torch.long) if subtree_end is None else subtree_end,
        generated=generated,
        origin=origin,
        predicted_at=predicted_at,
        prompt_length=prompt_length,
        mode=mode,
        widths=widths,
    )


def causal_view(input_ids: torch.Tensor | list[int], prompt_length: int) -> TreeView:
    """The plain causal view (positions 0..L-1, next-token targets over the completion).

    For sequences that are not trees, e.g. PAPO rollouts the structural filter rejected, which
    are masked out of the loss but still need finite log-probs.
    """
    ids_t = torch.as_tensor(input_ids, dtype=torch.long).flatten()
    n = ids_t.numel()
    generated = torch.zeros(n, dtype=torch.bool)
    generated[prompt_length:] = True
    none = torch.full((1, n), -1, dtype=torch.long)
    parent = torch.arange(n) - 1
    return _assemble(ids_t, torch.arange(n), generated, parent, none, none.clone(), prompt_length, "canonical", [])
