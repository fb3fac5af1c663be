"""Two independent recomputations of the reprefill semantics (docs/design.md §3b), for the engines' tests.

``reprefill_reference`` splits a generation into §3b's linear requests and runs each one alone through
the model, plainly causally (positions 0, 1, 2, ...): the brute force. ``view_reference`` scores it
through the trie-packed ``reprefill`` training view in one forward: what SFT and PAPO train. Every
engine that claims §3b must record log-probabilities equal to both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from npr_toolkit.engine import Generation
from npr_toolkit.view import build_view, collate, tag_vocab

RequestTokens = list[tuple[int, int | None]]  # (token id, its index in prompt + completion; None for a re-read copy)


def split_requests(ids: list[int], start: int, tokenizer) -> list[RequestTokens]:
    """The leaf requests of §3b for the well-formed tree ``ids[start:]`` after the prompt ``ids[:start]``.

    Every other request is a prefix of a leaf (a branch 1 is the start of its join request).
    """
    v = tag_vocab(tokenizer)
    leaves: list[RequestTokens] = []

    def lane(i: int, request: RequestTokens, closing: int | None) -> tuple[int, RequestTokens]:
        """Read one lane from ``i`` until its ``closing`` tag (a branch's ``</step>``) or the end."""
        plans = 0
        while i < len(ids):
            token = ids[i]
            request.append((token, i))
            i += 1
            if token == closing:
                break
            if token == v.guideline_open:
                plans = 0
            elif token == v.plan_open:
                plans += 1
            elif token == v.guideline_close:  # fork: each branch continues this request on its own
                finals, texts = [], []
                for _ in range(plans):
                    begin = i
                    i, final = lane(i, list(request), v.step_close)
                    finals.append(final)
                    texts.append(ids[begin:i])
                leaves.extend(finals[1:])  # the sibling-blind requests end at their </step>
                request = finals[0] + [(t, None) for text in texts[1:] for t in text]  # join: re-read 2..W
        return i, request

    _, trunk = lane(start, [(t, None) for t in ids[:start]], None)
    return [*leaves, trunk]


def reprefill_reference(model, tokenizer, gen: Generation) -> list[float | None]:
    """Per completion token: its log-probability in the request that sampled it, each request run alone."""
    start = len(gen.prompt_ids)
    found: dict[int, float] = {}
    for request in split_requests(gen.prompt_ids + gen.completion_ids, start, tokenizer):
        ids = torch.tensor([[t for t, _ in request]])
        with torch.no_grad():
            logprobs = model(ids).logits[0].float().log_softmax(-1)  # (L, V) plain causal, positions 0..L-1
        for t, (token, index) in enumerate(request):
            if index is not None and index >= start and index not in found:
                found[index] = float(logprobs[t - 1, token])
    return [found[start + j] if lp is not None else None for j, lp in enumerate(gen.logprobs)]


def view_reference(model, tokenizer, gen: Generation) -> list[float | None]:
    """Per completion token: its log-probability as the reprefill training view recomputes it (what SFT and
    PAPO train), the packed positions gathered back to the completion with ``TreeView.gather``."""
    start = len(gen.prompt_ids)
    view = build_view(
        gen.prompt_ids + gen.completion_ids,
        tokenizer,
        mode="reprefill",
        prompt_length=start,
        inserted=[False] * start + gen.inserted,
    )
    batch = collate([view], pad_id=0)
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        )
    logprobs = out.logits[0].float().log_softmax(-1)  # (N, V)
    scored = logprobs.gather(-1, view.labels.clamp(min=0)[:, None])[:, 0]  # log π of each position's target
    values = view.gather(scored)
    return [float(values[start + j]) if lp is not None else None for j, lp in enumerate(gen.logprobs)]


Reference = Callable[[object, object, Generation], list[float | None]]
REFERENCES: dict[str, Reference] = {"per-request": reprefill_reference, "view": view_reference}
