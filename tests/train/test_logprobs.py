"""PAPO's log π recomputation builds what it should: chunks of TRL's ``batch_size`` rows, a dense mask only
for short sequences under sdpa/eager, and a FlexAttention BlockMask (never an L x L tensor) under flex_attention."""

from __future__ import annotations

import os

import pytest
import torch
from datasets import Dataset
from torch.nn.attention.flex_attention import BlockMask

from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, noisy_trajectory, reference_trajectory
from npr_toolkit.train.logprobs import attention_for, completion_logprobs, score_rows
from npr_toolkit.train.papo import PAPOTrainer
from npr_toolkit.train.papo_config import PAPOConfig
from npr_toolkit.view import tokenize_completion

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trl_rows(tokenizer, count: int = 5):
    """``count`` (prompt | completion) rows in TRL's layout: left-padded prompts, right-padded completions."""
    import random

    rng = random.Random(0)
    rows = []
    for i, problem in enumerate(make_problems(count, seed=3)):
        messages = [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=problem["problem"])}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text = reference_trajectory(problem["problem"]) if i % 2 else noisy_trajectory(problem["problem"], rng)
        ids, p = tokenize_completion(tokenizer, prompt, text + tokenizer.eos_token)
        rows.append((ids[:p], ids[p:]))
    pad = tokenizer.pad_token_id
    width_p, width_c = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
    input_ids = torch.tensor([[pad] * (width_p - len(p)) + p + c + [pad] * (width_c - len(c)) for p, c in rows])
    mask = torch.tensor(
        [[0] * (width_p - len(p)) + [1] * (len(p) + len(c)) + [0] * (width_c - len(c)) for p, c in rows]
    )
    return input_ids, mask, width_c


def _masks_seen(model) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    seen: list = []

    def hook(module, args, kwargs):
        seen.append(kwargs["attention_mask"])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def _papo_trainer(tmp_path, model, tokenizer, **settings) -> PAPOTrainer:
    problems = make_problems(2, seed=1)
    dataset = Dataset.from_list(
        [{"prompt": PROMPT_TEMPLATE.format(problem=p["problem"]), "answer": p["answer"]} for p in problems]
    )
    config = PAPOConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=40, max_steps=1, save_strategy="no", seed=0, **settings,
    )  # fmt: skip
    return PAPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)


def test_attention_follows_the_kernel_and_refuses_long_dense_masks():
    assert attention_for("flex_attention", 100_000, dense_max_length=8192) == "flex"
    assert attention_for("sdpa", 8192, dense_max_length=8192) == "bool"
    assert attention_for("eager", 100, dense_max_length=8192) == "additive"
    with pytest.raises(ValueError, match=r"flex_attention.*dense_mask_max_length"):
        attention_for("sdpa", 8193, dense_max_length=8192)


def test_recomputation_honours_trl_chunks_with_one_short_dense_mask_per_chunk(tmp_path):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    trainer = _papo_trainer(tmp_path, model, tokenizer)
    input_ids, mask, width_c = _trl_rows(tokenizer)
    seen, handle = _masks_seen(model)
    with torch.no_grad():
        chunked, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, mask, width_c, batch_size=2)
        whole, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, mask, width_c)
    handle.remove()
    assert [m.shape[0] for m in seen] == [2, 2, 1, 5]  # three chunks of at most 2 rows, then all rows at once
    assert all(m.dtype == torch.bool and m.dim() == 4 and m.shape[1] == 1 for m in seen)  # 1 byte per entry
    assert all(m.shape[-1] <= input_ids.shape[1] for m in seen)  # each chunk as long as its own longest row
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_recomputation_refuses_a_dense_mask_above_the_threshold(tmp_path):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    trainer = _papo_trainer(tmp_path, model, tokenizer, dense_mask_max_length=32)
    input_ids, mask, width_c = _trl_rows(tokenizer, count=2)
    seen, handle = _masks_seen(model)
    with pytest.raises(ValueError, match="attn_implementation flex_attention"):
        trainer._get_per_token_logps_and_entropies(model, input_ids, mask, width_c)
    handle.remove()
    assert seen == []  # refused before any mask reached the model


@pytest.mark.slow
def test_flex_attention_gets_a_block_mask_with_the_same_logprobs(tmp_path):
    """CPU FlexAttention has a forward (no backward): enough to check what is built and that it is exact."""
    tokenizer = build_tokenizer()
    dense_model = build_model(tokenizer, seed=0)
    flex_model = build_model(tokenizer, seed=0, attn_implementation="flex_attention")
    trainer = _papo_trainer(tmp_path / "flex", flex_model, tokenizer)  # the trainers add TRL's fused LM head
    _papo_trainer(tmp_path / "dense", dense_model, tokenizer)
    input_ids, mask, width_c = _trl_rows(tokenizer, count=3)
    rows = score_rows(input_ids, mask, width_c, tokenizer, "canonical")
    seen, handle = _masks_seen(flex_model)
    with torch.no_grad():
        flex, _ = completion_logprobs(
            flex_model, rows, width_c, pad_id=tokenizer.pad_token_id, attn_implementation="flex_attention",
            dense_max_length=16,  # far below these rows: a dense mask would be refused
        )  # fmt: skip
        dense, _ = completion_logprobs(
            dense_model, rows, width_c, pad_id=tokenizer.pad_token_id, attn_implementation="sdpa", dense_max_length=4096
        )
    handle.remove()
    assert len(seen) == 1 and isinstance(seen[0], BlockMask)
    assert torch.allclose(flex, dense, atol=1e-5), (flex - dense).abs().max()

    # Rollouts decode with dense masks: the engine runs under sdpa, and the policy gets its kernel back.
    prompt = [{"role": "user", "content": "Compute: (1+2)+(3+4)"}]
    out = trainer._rollout([prompt, prompt], trainer)
    assert len(out["completion_ids"]) == 2
    assert flex_model.config._attn_implementation == "flex_attention"
