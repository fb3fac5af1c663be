"""The view computes what the engine computes (docs/design.md §3's key invariant), on a tiny real model in float32.

Three independent references for the logits the view gives every token of random trees:
- a branch whose context is a plain chain (prefix + that branch alone, no earlier block) run as an
  ordinary causal sequence;
- the fork/join engine replayed with a ``DynamicCache``: run the prefix, run each branch on a copy
  of the prefix cache from position g + 1, concatenate the branch K/V after the prefix, continue
  from max + 1 (docs/design.md §3), recursively for nested blocks;
- and the SFT loss from ``collate``'s ``labels``/``shift_labels`` against a per-token computation.
Both attention implementations that take the additive mask are checked: sdpa and eager.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from npr_toolkit.toy import build_model
from npr_toolkit.view import IGNORE, build_view, collate, tokenize_completion

from .trees import Case, Fork, RandomDraw, expected_mask, make_case, random_tree

TOLERANCE = 1e-4
SEEDS = range(5)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, toy_tokenizer):
    return build_model(toy_tokenizer, seed=1, attn_implementation=request.param)


def _case(seed: int, tokenizer) -> tuple[Case, object]:
    case = make_case(random_tree(RandomDraw(seed), max_width=4, max_blocks=3, nest=True), tokenizer)
    ids, prompt_length = tokenize_completion(tokenizer, case.prompt_text, case.text)
    assert ids == case.ids
    return case, build_view(ids, tokenizer, prompt_length=prompt_length)


@torch.no_grad()
def _view_logits(model, view, pad_id: int) -> torch.Tensor:
    batch = collate([view], pad_id)
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    return out.logits[0]  # (L, V)


@torch.no_grad()
def _engine_logits(model, case: Case) -> torch.Tensor:
    """Replay ``case.schedule`` like the exact engine: shared prefix cache, forks, joins by concatenation."""
    ids = torch.tensor(case.ids)
    logits = torch.full((len(ids), model.config.vocab_size), float("nan"))

    def run(schedule: list, cache: DynamicCache, pos: int) -> tuple[DynamicCache, int]:
        for step in schedule:
            if isinstance(step, range):
                index = torch.tensor(step)
                out = model(
                    input_ids=ids[index][None],
                    position_ids=torch.arange(pos, pos + len(index))[None],
                    cache=cache,  # updated in place
                    use_cache=True,
                )
                logits[index] = out.logits[0]
                pos += len(index)
            else:
                cache, pos = fork_join(step, cache, pos)
        return cache, pos

    def fork_join(fork: Fork, cache: DynamicCache, pos: int) -> tuple[DynamicCache, int]:
        prefix = cache.get_seq_length()
        ends, branch_kv = [], []
        for branch in fork.branches:
            copy = DynamicCache(ddp_cache_data=[(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])
            copy, end = run(branch, copy, pos)  # every branch starts at g + 1
            ends.append(end)
            branch_kv.append([(layer.keys[:, :, prefix:], layer.values[:, :, prefix:]) for layer in copy.layers])
        joined = [
            (
                torch.cat([layer.keys] + [kv[i][0] for kv in branch_kv], dim=-2),
                torch.cat([layer.values] + [kv[i][1] for kv in branch_kv], dim=-2),
            )
            for i, layer in enumerate(cache.layers)
        ]
        return DynamicCache(ddp_cache_data=joined), max(ends)  # next position: max branch end + 1

    run(case.schedule, DynamicCache(), 0)
    assert not logits.isnan().any()
    return logits


@pytest.mark.parametrize("seed", SEEDS)
def test_every_token_matches_fork_join_engine(model, toy_tokenizer, seed):
    case, view = _case(seed, toy_tokenizer)
    view_logits = _view_logits(model, view, toy_tokenizer.pad_token_id)
    engine = _engine_logits(model, case)
    assert (view_logits - engine).abs().max() < TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_branch_tokens_match_prefix_plus_branch_alone(model, toy_tokenizer, seed):
    """Tokens whose visible context is a plain chain (no earlier block) equal a causal run of that chain."""
    case, view = _case(seed, toy_tokenizer)
    view_logits = _view_logits(model, view, toy_tokenizer.pad_token_id)
    mask = expected_mask(case)
    positions = case.positions
    checked = set()
    for t in reversed(range(len(case.toks))):
        context = mask[t].nonzero().flatten()
        if t in checked or not case.toks[t].path or not torch.equal(positions[context], torch.arange(len(context))):
            continue
        with torch.no_grad():
            out = model(
                input_ids=torch.tensor(case.ids)[context][None],
                attention_mask=torch.ones(1, len(context), dtype=torch.long),
                position_ids=positions[context][None],
            )
        assert (out.logits[0] - view_logits[context]).abs().max() < TOLERANCE
        checked.update(context.tolist())
    branch_tokens = [t for t, tok in enumerate(case.toks) if tok.path]
    assert checked & set(branch_tokens), "no branch with a plain-chain context in this tree"


def test_wrong_masks_are_detected(model, toy_tokenizer):
    """The tolerance is meaningful: plain causal attention, or tree positions without the mask, differ a lot."""
    _, view = _case(0, toy_tokenizer)
    good = _view_logits(model, view, toy_tokenizer.pad_token_id)
    ids = view.input_ids[None]
    with torch.no_grad():
        causal = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=view.position_ids[None]).logits[
            0
        ]
        flat = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    assert (causal - good).abs().max() > 100 * TOLERANCE
    assert (flat - good).abs().max() > 100 * TOLERANCE


def test_sft_loss_equals_per_token_cross_entropy(model, toy_tokenizer):
    """CE over collate's labels (shifted inside transformers) and over shift_labels = a per-view token mean."""
    views = [_case(seed, toy_tokenizer)[1] for seed in (7, 8, 9)]
    batch = collate(views, toy_tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        from_labels = model(**inputs, labels=batch["labels"]).loss
        from_shift = model(**inputs, labels=batch["labels"], shift_labels=batch["shift_labels"]).loss
    nll, count = 0.0, 0
    for view in views:
        logits = _view_logits(model, view, toy_tokenizer.pad_token_id)
        logp = logits.log_softmax(-1)
        for t, target in enumerate(view.labels.tolist()):
            if target != IGNORE:
                nll -= logp[t, target].item()
                count += 1
    assert count == int((batch["labels"] != IGNORE).sum()) == int((batch["shift_labels"] != IGNORE).sum())
    assert abs(from_labels.item() - nll / count) < 1e-5
    assert abs(from_shift.item() - nll / count) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["canonical", "reprefill"])
def test_flex_block_mask_matches_additive_mask(toy_tokenizer, mode):
    """The GPU path (FlexAttention + BlockMask from collate) gives the same logits, checked on CPU (forward only).

    One compile per mode (~10 s). Static shapes: with automatic dynamic shapes, torch 2.13's CPU inductor fails
    to compile flex attention for a second sequence length (C++ error ``cur_kvSplitSize5 was not declared``).
    """
    import torch._dynamo

    case, _ = _case(3, toy_tokenizer)
    view = build_view(case.ids, toy_tokenizer, mode=mode, prompt_length=case.prompt_length)
    flex_model = build_model(toy_tokenizer, seed=1, attn_implementation="flex_attention")
    batch = collate([view], toy_tokenizer.pad_token_id, attention="flex", device="cpu")
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False), torch.no_grad():
        flex = flex_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits[0]
    reference = _view_logits(build_model(toy_tokenizer, seed=1), view, toy_tokenizer.pad_token_id)
    assert (flex - reference).abs().max() < TOLERANCE
