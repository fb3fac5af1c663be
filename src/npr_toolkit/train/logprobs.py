"""log π of every completion token through a training view, for TRL's ``(prompt | completion)`` rows.

PAPO's ``_get_per_token_logps_and_entropies`` is two steps, kept apart so another view can slot in:

1. ``score_rows`` turns each TRL row into a ``ScoredRow``: the view of its tokens plus ``targets``,
   the view position whose output scores completion token j (``TreeView.predicted_at``: prompt
   length - 1 + j in the canonical view; wherever the sampling request had it in the trie-packed
   reprefill view);
2. ``completion_logprobs`` batches the views in chunks of ``batch_size`` rows, runs the model once
   per chunk through TRL's fused LM head, and gathers the log-probs at ``targets`` into TRL's
   ``(B, C)`` layout.

The attention mask follows the model's kernel as in SFT: a FlexAttention ``BlockMask`` (O(L)) for
``flex_attention``; a dense 4D mask (bool for sdpa, additive for eager) otherwise, allowed only up
to ``dense_max_length`` tokens, so no ``(rows, 1, L, L)`` tensor is ever built for long sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from ..view import ViewError, build_view, causal_view, collate
from ..view.batch import Attention
from ..view.build import TreeView, ViewMode


@dataclass
class ScoredRow:
    """One TRL row as a view: ``targets[j]`` is the view position whose output scores completion token j."""

    view: TreeView
    targets: torch.Tensor  # (C_b,) long


def score_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, tokenizer, mode: ViewMode
) -> list[ScoredRow]:
    """TRL's rows (left-padded prompt of width P, right-padded completion of width C) -> views.

    A row whose tokens are not a well-formed tree (a filtered rollout, masked out of the loss) is
    scored causally, so every row still gets finite log-probs.
    """
    prompt_width = input_ids.size(1) - logits_to_keep
    rows = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        first = next((i for i, m in enumerate(mask) if m), prompt_width)
        end = max((i for i, m in enumerate(mask) if m), default=prompt_width - 1) + 1
        tokens, prompt_length = ids[first:end], prompt_width - first
        try:
            view = build_view(tokens, tokenizer, mode=mode, prompt_length=prompt_length)
        except ViewError:
            view = causal_view(tokens, prompt_length=prompt_length)
        completion = max(end - prompt_width, 0)
        targets = view.predicted_at[prompt_length : prompt_length + completion]
        # A token that is no target (an inserted header) is masked out of the loss: any finite slot will do.
        rows.append(ScoredRow(view, targets.clamp(min=0)))
    return rows


def attention_for(attn_implementation: str, length: int, dense_max_length: int) -> Attention:
    """The mask a chunk of ``length`` tokens gets under the model's attention kernel.

    Raises:
        ValueError: a dense mask would be needed above ``dense_max_length``.
    """
    if attn_implementation == "flex_attention":
        return "flex"
    if length > dense_max_length:
        raise ValueError(
            f"a {length}-token sequence needs a dense {length}x{length} mask per row under {attn_implementation}; "
            f"set attn_implementation flex_attention (CUDA) or raise dense_mask_max_length ({dense_max_length})"
        )
    return "bool" if attn_implementation == "sdpa" else "additive"


def completion_logprobs(
    model,
    rows: Sequence[ScoredRow],
    logits_to_keep: int,
    *,
    pad_id: int,
    attn_implementation: str,
    dense_max_length: int,
    batch_size: int | None = None,
    compute_entropy: bool = False,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs, entropies) of shape (B, C): slot j of row b is completion token j; 0 past its end.

    ``model`` may be wrapped (DDP): the kernel name comes from ``attn_implementation``. ``batch_size``
    rows go through the model at a time (TRL's chunking argument; all rows when None).
    """
    weight = next(model.parameters())
    device = weight.device
    batch_size = batch_size or len(rows)
    logps_chunks, entropy_chunks = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(len(r.view) for r in chunk)
        attention = attention_for(attn_implementation, length, dense_max_length)
        batch = collate([r.view for r in chunk], pad_id, weight.dtype, attention, device)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with autocast():
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                shift_labels=batch["shift_labels"],
                fused_lm_head=True,
                use_cache=False,
            )
        logps_chunks.append(_gather(out.log_probs, chunk, logits_to_keep))
        if compute_entropy:
            entropy_chunks.append(_gather(out.entropy, chunk, logits_to_keep))
    logps = torch.cat(logps_chunks)
    return logps, torch.cat(entropy_chunks) if compute_entropy else None


def _gather(values: torch.Tensor, rows: Sequence[ScoredRow], width: int) -> torch.Tensor:
    """(b, L) per-position values -> (b, width) per-completion-token values, zero-padded."""
    out = values.new_zeros(len(rows), width)
    for b, row in enumerate(rows):
        n = row.targets.numel()
        out[b, :n] = values[b, row.targets.to(values.device)]
    return out
