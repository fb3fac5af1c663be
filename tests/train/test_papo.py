"""PAPO on TRL: the loss is exactly -A·log π (token mean) through the tree view, advantages are
normalised over the kept rollouts of the batch, filtered rollouts carry no gradient and no statistics,
the filter demands the engine's structure, groups are whole per process and seeds follow a prompt's
global position, and the CLI runs end to end."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from datasets import Dataset

from npr_toolkit.engine import Generation, GenerationStats
from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, noisy_trajectory, reference_trajectory
from npr_toolkit.train.papo import PAPOTrainer, papo_filter, passes, split_groups
from npr_toolkit.train.papo_config import PAPOConfig
from npr_toolkit.train.rewards import papo_reward
from npr_toolkit.train.rollouts import rollout_seeds
from npr_toolkit.view import build_view, causal_view, collate, tokenize_completion

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trainer(tmp_path, reward_funcs=None, batch: int = 4, groups: int = 2):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    problems = make_problems(batch // groups, seed=1)
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=p["problem"])}],
                "answer": p["answer"],
            }
            for p in problems
        ]
    )
    config = PAPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        num_generations=groups,
        max_completion_length=40,
        max_steps=1,
        save_strategy="no",
        seed=0,
    )
    trainer = PAPOTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, reward_funcs=reward_funcs
    )
    return trainer, tokenizer, model


def _hand_batch(tokenizer, completions: list[str], keep: list[bool], advantages: list[float]):
    """TRL's batch layout: left-padded prompts, right-padded completions, tool_mask = trainable tokens."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Compute: (1+2)+(3+4)"}], tokenize=False, add_generation_prompt=True
    )
    rows = []
    for text, ok in zip(completions, keep, strict=True):
        ids, p = tokenize_completion(tokenizer, prompt, text + tokenizer.eos_token)
        view = build_view(ids, tokenizer, prompt_length=p) if ok else causal_view(ids, prompt_length=p)
        trainable = [int(ok and bool(g)) for g in view.generated[p:].tolist()]
        rows.append((ids[:p], ids[p:], trainable))
    width_p = max(len(r[0]) for r in rows)
    width_c = max(len(r[1]) for r in rows)
    pad = tokenizer.pad_token_id
    batch = {
        "prompt_ids": torch.tensor([[pad] * (width_p - len(r[0])) + r[0] for r in rows]),
        "prompt_mask": torch.tensor([[0] * (width_p - len(r[0])) + [1] * len(r[0]) for r in rows]),
        "completion_ids": torch.tensor([r[1] + [pad] * (width_c - len(r[1])) for r in rows]),
        "completion_mask": torch.tensor([[1] * len(r[1]) + [0] * (width_c - len(r[1])) for r in rows]),
        "tool_mask": torch.tensor([r[2] + [0] * (width_c - len(r[2])) for r in rows]),
        "advantages": torch.tensor(advantages),
    }
    batch["num_items_in_batch"] = (batch["completion_mask"] * batch["tool_mask"]).sum()
    return batch, rows


def _manual_loss(model, tokenizer, rows, advantages):
    """-Σ A_b · log π(token) · m / Σ m with log π from a plain full-logits forward under the view."""
    views = [
        build_view(p + c, tokenizer, prompt_length=len(p)) if any(m) else causal_view(p + c, prompt_length=len(p))
        for p, c, m in rows
    ]
    batch = collate(views, tokenizer.pad_token_id)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    ).logits
    logp = torch.log_softmax(logits.float(), -1)
    total, count = 0.0, 0
    for b, (p, c, trainable) in enumerate(rows):
        for j, token in enumerate(c):
            if trainable[j]:
                total = total - advantages[b] * logp[b, len(p) - 1 + j, token]
                count += 1
    return total / count


def test_papo_loss_is_minus_advantage_logprob_token_mean_with_matching_gradient(tmp_path):
    trainer, tokenizer, model = _trainer(tmp_path)
    rng = random.Random(0)
    problems = make_problems(3, seed=2)
    completions = [
        reference_trajectory(problems[0]["problem"]),
        reference_trajectory(problems[1]["problem"]),
        noisy_trajectory(problems[2]["problem"], rng),
        "not a tree <step> at all",  # filtered: no loss
    ]
    keep = [True, True, True, False]
    advantages = [1.5, -0.5, 0.25, 3.0]
    batch, rows = _hand_batch(tokenizer, completions, keep, advantages)
    model.eval()  # eval mode: TRL normalises by num_items_in_batch only (no accumulation window)

    loss = trainer._compute_loss(model, batch)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    manual = _manual_loss(model, tokenizer, rows, advantages)
    manual_grads = torch.autograd.grad(manual, [p for p in model.parameters() if p.requires_grad])

    assert abs(loss.item() - manual.item()) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(grads, manual_grads, strict=True)) < 1e-5

    # The filtered rollout contributes nothing: its advantage does not move loss or gradient.
    batch["advantages"] = torch.tensor([1.5, -0.5, 0.25, -7.0])
    again = trainer._compute_loss(model, batch)
    assert abs(again.item() - loss.item()) < 1e-7


def test_engine_inserted_tokens_carry_no_loss():
    """Header tokens are inputs only: their slots are masked out of the loss by the rollout."""
    tokenizer = build_tokenizer()
    problem = make_problems(1, seed=3)[0]["problem"]
    _, rows = _hand_batch(tokenizer, [reference_trajectory(problem)], [True], [1.0])
    vocab_step = tokenizer.convert_tokens_to_ids("<step>")
    _, completion, trainable = rows[0]
    headers = [j for j, t in enumerate(completion) if t == vocab_step]
    assert headers and all(trainable[j] == 0 for j in headers)
    assert sum(trainable) < len(completion)


def test_advantages_subtract_group_mean_and_divide_by_batch_std(tmp_path):
    known = [1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0]

    def fixed_reward(completions, **kwargs):
        return known[: len(completions)]

    trainer, _, model = _trainer(tmp_path, reward_funcs=[fixed_reward], batch=8, groups=4)
    inputs = [row for row in trainer.train_dataset for _ in range(4)]  # each prompt num_generations times
    model.train()
    output = trainer._generate_and_score_completions(inputs)
    rewards = torch.tensor(known)
    groups = rewards.view(-1, 4)
    expected = (groups - groups.mean(1, keepdim=True)).flatten() / (rewards.std() + 1e-4)
    assert torch.allclose(output["advantages"].flatten(), expected, atol=1e-5)
    # the per-step NPR metrics are logged
    logged = trainer._metrics["train"]
    for name in ("npr/format_valid_rate", "npr/parallel_rate", "npr/filtered", "npr/critical_path_tokens"):
        assert logged[name], name


STRICT = reference_trajectory("(1+2)+(3+4)")  # answer 10
WRONG = STRICT.replace("\\boxed{10}", "\\boxed{11}")


def _paper_group(completions, **kwargs):
    """Every group of four is the paper's example: correct, wrong, filtered, filtered (whatever was sampled)."""
    n = len(completions)
    texts = [STRICT if i % 4 in (0, 2) else WRONG for i in range(n)]
    return papo_reward(completions, answer=["10"] * n, npr_valid=[i % 4 < 2 for i in range(n)], npr_text=texts)


def test_filtered_rollouts_are_left_out_of_the_statistics_and_get_advantage_zero(tmp_path):
    trainer, _, model = _trainer(tmp_path, reward_funcs=[_paper_group], batch=8, groups=4)
    inputs = [row for row in trainer.train_dataset for _ in range(4)]
    model.train()
    advantages = trainer._generate_and_score_completions(inputs)["advantages"]
    # kept rewards [1, -1] per group: group mean 0, batch std over the kept four only (Bessel): sqrt(4/3)
    expected = torch.tensor([1.0, -1.0, 0.0, 0.0] * 2) / ((4 / 3) ** 0.5 + 1e-4)
    assert torch.allclose(advantages, expected, atol=1e-5), advantages


def _generation(text: str, finish_reason: str = "stop") -> Generation:
    return Generation(
        prompt_ids=[1],
        completion_ids=[2],
        text=text,
        logprobs=[-0.1],
        inserted=[False],
        finish_reason=finish_reason,
        stats=GenerationStats(),
    )


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (STRICT, True),
        (STRICT.replace("<plan>1: 1+2</plan>", "<plan>first</plan>"), True),  # lenient: numbering is style
        ("1+2+3+4 = \\boxed{10}", False),  # no block: not a parallel answer
        (STRICT.replace("\\boxed{10}", "10"), False),  # a tree without a final \boxed{}
        (STRICT.replace("</takeaway>", ""), False),  # malformed
    ],
)
def test_papo_filter_demands_a_block_and_a_final_answer(text, kept):
    assert passes(_generation(text), papo_filter("lenient")(text), drop_truncated=True) is kept


def test_truncated_rollouts_are_dropped_unless_configured():
    cut = _generation(STRICT, finish_reason="length")
    verdict = papo_filter("lenient")(STRICT)
    assert PAPOConfig(output_dir="unused", use_cpu=True).drop_truncated
    assert not passes(cut, verdict, drop_truncated=True)
    assert passes(cut, verdict, drop_truncated=False)
    assert not passes(_generation(STRICT, finish_reason="malformed"), verdict, drop_truncated=False)


def test_groups_must_be_whole_on_each_process():
    # 2 processes x 8 entries with num_generations 16: each process would hold half of one group
    entries = ["p0"] * 16
    for local in (entries[:8], entries[8:]):
        with pytest.raises(ValueError, match="not whole groups of num_generations"):
            split_groups(local, 16)
    assert split_groups(["a", "a", "b", "b"], 2) == ["a", "b"]
    with pytest.raises(ValueError, match="copies of one prompt"):
        split_groups(["a", "a", "a", "b"], 2)


def test_rollout_seeds_follow_the_global_position_and_the_step():
    # 2 processes x 2 prompts sample what 1 process x 4 prompts samples: a prompt's seed is its position
    one = rollout_seeds(42, 3, first=0, count=4)
    assert rollout_seeds(42, 3, first=0, count=2) + rollout_seeds(42, 3, first=2, count=2) == one
    assert rollout_seeds(42, 3, first=0, count=4) == one  # reproducible
    seeds = [s for step in (0, 1) for s in rollout_seeds(42, step, first=0, count=12)]
    assert len(set(seeds)) == len(seeds)  # no two positions or steps share a sampling stream
    assert rollout_seeds(43, 0, first=0, count=12) != seeds[:12]  # the run seed matters
    assert all(0 <= s < 2**31 for s in seeds)


def test_papo_with_too_few_problems_for_one_step_exits_2(tmp_path, rl_inputs):
    from typer.testing import CliRunner

    from npr_toolkit.cli.main import app

    problems, _ = rl_inputs()
    out = tmp_path / "out"
    args = ["train", "papo", "--model", str(tmp_path / "never-loaded"), "--problems", str(problems), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "8 problems cannot fill one step, which takes 16 distinct prompts" in message
    assert "lower per_device_train_batch_size to 128" in message
    assert not out.exists()


@pytest.mark.slow
def test_papo_cli_runs_and_reports(tmp_path, rl_inputs):
    from typer.testing import CliRunner

    from npr_toolkit.cli.main import app
    from npr_toolkit.toy.model import save_toy_model

    base = save_toy_model(tmp_path / "base", seed=0)
    problems, template = rl_inputs(4)
    out = tmp_path / "papo"
    result_args = [
        "train", "papo", "--model", str(base), "--problems", str(problems), "--out", str(out),
        "--max-steps", "1", "--per-device-train-batch-size", "4", "--num-generations", "2",
        "--max-completion-length", "24", "--prompt-file", str(template), "--set", "save_strategy=no",
        "--format", "json",
    ]  # fmt: skip
    result = CliRunner().invoke(app, result_args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["stage"] == "papo" and summary["steps"] == 1
    assert "npr/format_valid_rate" in summary["last"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    # The random model's rollouts are all filtered: TRL logs their mean reward as None; the table skips it.
    text = CliRunner().invoke(app, [arg for arg in result_args if arg not in ("--format", "json")])
    assert text.exit_code == 0, text.output
    assert "│ npr/filtered" in text.output and "│ reward" not in text.output

    bad = CliRunner().invoke(
        app, ["train", "papo", "--model", str(base), "--problems", str(tmp_path / "missing.jsonl"), "--out", str(out)]
    )
    assert bad.exit_code == 2 and "missing.jsonl" in bad.output
