"""Batching views for TRL/transformers: right padding, 4D masks, ``labels`` and ``shift_labels``.

The SFT collator and PAPO's log-prob recomputation both call ``collate``; views of any mode mix in
one batch (one visibility rule, ``masks.py``). Per-position results of a row go back to the original
tokens with ``TreeView.gather``. ``labels`` follows the
TRL convention (``labels[:, t+1] = target of t``) so every code path that shifts internally scores
the tree targets, and ``num_items_in_batch`` counts exactly the targets (see the TRL note).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from . import masks
from .build import IGNORE, TreeView

Attention = Literal["additive", "bool", "flex"]


def collate(
    views: Sequence[TreeView],
    pad_id: int,
    dtype: torch.dtype = torch.float32,
    attention: Attention = "additive",
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Right-pad ``views`` into model inputs.

    ``attention`` picks the mask: ``additive`` (float, works with eager and SDPA), ``bool`` (SDPA
    only) or ``flex`` (a FlexAttention BlockMask on ``device``, O(L) memory).
    """
    length = max(len(v) for v in views)
    batch = len(views)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, length), dtype=torch.long)
    shift_labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    for i, v in enumerate(views):
        n = len(v)
        input_ids[i, :n] = v.input_ids
        position_ids[i, :n] = v.position_ids
        shift_labels[i, :n] = v.labels
    labels = torch.full_like(shift_labels, IGNORE)
    labels[:, 1:] = shift_labels[:, :-1]
    if attention == "flex":
        mask = masks.block_mask(views, device, length)
    else:
        blocks, branches, ends, valid = masks.stack(views, length)
        query = torch.arange(length)[:, None]
        key = torch.arange(length)[None, :]
        allowed = (
            (key <= query)
            & (query < ends[:, None, :])
            & valid[:, None, :]
            & valid[:, :, None]
            & masks.visible(
                blocks.transpose(0, 1)[:, :, :, None],
                branches.transpose(0, 1)[:, :, :, None],
                blocks.transpose(0, 1)[:, :, None, :],
                branches.transpose(0, 1)[:, :, None, :],
            )
        )  # (B, L, L)
        allowed |= torch.eye(length, dtype=torch.bool)  # padding rows see only themselves: no NaN rows
        mask = allowed[:, None] if attention == "bool" else masks.additive(allowed, dtype)[:, None]
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": position_ids,
        "labels": labels,
        "shift_labels": shift_labels,
    }


def completion_values(views: Sequence[TreeView], values: torch.Tensor, fill: float = 0.0) -> list[torch.Tensor]:
    """Per-position results of a collated batch -> one value per completion token of each view's sequence.

    ``values`` is (B, L) and aligned with ``shift_labels`` (e.g. TRL's fused ``log_probs``: log π of each
    position's target). Row b becomes (L_b - prompt_length_b,), in the order of the original completion,
    whatever the view's layout; ``fill`` where a token is no target (an inserted header, a forced tag).
    """
    return [view.gather(values[b, : len(view)], fill)[view.prompt_length :] for b, view in enumerate(views)]
