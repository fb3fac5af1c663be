"""Attention masks from the compact per-token structure of a view (docs/design.md §3, §3b).

One rule covers every mode: query t may attend key s iff ``s <= t < subtree_end[s]`` and, at every
nesting depth where both sit inside the same block, they sit in the same branch. The canonical and
npr-compat views use the branch paths ((D, N) block uids and branch indices) with ``subtree_end = N``;
the re-prefill view is a prefix tree in pre-order, where ``[s, subtree_end[s])`` is s's subtree, and has
no paths (D = 0). So a mask is made in O(D·N) memory as a FlexAttention ``mask_mod``/``BlockMask``, or
densely for short sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .build import TreeView


def visible(
    q_block: torch.Tensor, q_branch: torch.Tensor, k_block: torch.Tensor, k_branch: torch.Tensor
) -> torch.Tensor:
    """Branch compatibility (no causality) for broadcastable (D, ...) path tensors -> (...) bool."""
    conflict = (q_block == k_block) & (q_block >= 0) & (q_branch != k_branch)
    return ~conflict.any(0)


def dense(block_ids: torch.Tensor, branch_ids: torch.Tensor, subtree_end: torch.Tensor) -> torch.Tensor:
    """(N, N) bool mask of one view: s <= t < subtree_end[s], and branch-compatible."""
    n = subtree_end.numel()
    query = torch.arange(n)[:, None]
    key = torch.arange(n)[None, :]
    return (
        (key <= query)
        & (query < subtree_end[None, :])
        & visible(block_ids[:, :, None], branch_ids[:, :, None], block_ids[:, None, :], branch_ids[:, None, :])
    )


def additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool mask -> additive float mask: 0 where allowed, the dtype's minimum elsewhere.

    Eager attention adds the mask to the scores, so a bool mask there is silently wrong; finfo.min
    (not -inf) keeps fully masked padding rows finite.
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def mask_mod(
    block_ids: torch.Tensor, branch_ids: torch.Tensor, subtree_end: torch.Tensor, valid: torch.Tensor
) -> Callable:
    """FlexAttention mask_mod over a batch: (B, D, L) paths, (B, L) subtree ends and (B, L) valid (non-pad) flags."""

    def mod(b, h, q, kv):
        ok = (kv <= q) & (q < subtree_end[b, kv]) & valid[b, kv] & valid[b, q]
        for d in range(block_ids.shape[1]):
            qb, kb = block_ids[b, d, q], block_ids[b, d, kv]
            ok = ok & ~((qb == kb) & (qb >= 0) & (branch_ids[b, d, q] != branch_ids[b, d, kv]))
        return ok | (q == kv)  # padding rows attend to themselves only

    return mod


def stack(views: Sequence[TreeView], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad the views' structure to ``length``.

    Returns (B, D, L) block ids, (B, D, L) branch ids, (B, L) subtree ends and (B, L) valid flags; D is
    the deepest view's (a re-prefill view has none, so a batch of them has D = 0).
    """
    depth = max(v.block_ids.shape[0] for v in views)
    blocks = torch.full((len(views), depth, length), -1, dtype=torch.long)
    branches = torch.full_like(blocks, -1)
    ends = torch.zeros(len(views), length, dtype=torch.long)
    valid = torch.zeros(len(views), length, dtype=torch.bool)
    for i, v in enumerate(views):
        d, n = v.block_ids.shape
        blocks[i, :d, :n] = v.block_ids
        branches[i, :d, :n] = v.branch_ids
        ends[i, : len(v)] = v.subtree_end
        valid[i, : len(v)] = True
    return blocks, branches, ends, valid


def block_mask(views: Sequence[TreeView], device: str | torch.device, length: int | None = None):
    """A FlexAttention ``BlockMask`` for a right-padded batch of views (never materialises L²)."""
    from torch.nn.attention.flex_attention import create_block_mask

    length = length or max(len(v) for v in views)
    mod = mask_mod(*(t.to(device) for t in stack(views, length)))
    # Eager create_block_mask materialises (B, L, L) while building; compiled it stays O(L) (CUDA).
    compiled = torch.device(device).type == "cuda"
    return create_block_mask(mod, len(views), None, length, length, device=device, _compile=compiled)
