"""NPR-Zero: the format-gated reward table, DAPO settings and dynamic sampling, and `npr train zero` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.model import save_toy_model
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory
from npr_toolkit.train.rewards import correctness_reward, format_reward, papo_reward
from npr_toolkit.train.zero import ZeroConfig, ZeroTrainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

STRICT = reference_trajectory("(1+2)+(3+4)")  # valid strict, answer 10
WRONG = STRICT.replace("\\boxed{10}", "\\boxed{11}")
LENIENT = STRICT.replace("<plan>1: 1+2</plan>", "<plan>first</plan>")  # numbering broken: lenient only
MALFORMED = STRICT.replace("</takeaway>", "")
PLAIN = "1+2+3+4 = \\boxed{10}"


def test_zero_reward_table_gates_correctness_on_the_format():
    texts = [STRICT, WRONG, LENIENT, MALFORMED, PLAIN]
    answers = ["10"] * len(texts)
    form = format_reward(texts)
    correct = correctness_reward(texts, answer=answers)
    assert form == [0.0, 0.0, -1.5, -2.0, -2.0]
    assert correct == [1.0, -1.0, 0.0, 0.0, 0.0]  # the near miss and the malformed ones are right, but ungated
    total = [f + c for f, c in zip(form, correct, strict=True)]
    assert total == [1.0, -1.0, -1.5, -2.0, -2.0]
    assert total[1] > max(total[2:])  # a valid wrong answer outscores any malformed correct one


def test_correctness_reward_reads_the_last_box_and_a_missing_box_fails_the_format():
    no_box = STRICT.replace("\\boxed{10}", "10")
    texts = [STRICT, WRONG, STRICT.replace("\\boxed{10}", "\\boxed{3} \\boxed{10}"), no_box]
    assert correctness_reward(texts, answer=["10"] * 4) == [1.0, -1.0, 1.0, 0.0]
    assert format_reward([no_box]) == [-1.5]  # strict demands the final answer: a near miss


def test_papo_reward_leaves_filtered_rollouts_unscored_even_when_correct():
    logged = {}
    rewards = papo_reward(
        [STRICT, WRONG, STRICT],
        answer=["10"] * 3,
        npr_valid=[True, True, False],
        npr_text=[STRICT, WRONG, STRICT],
        log_metric=logged.__setitem__,
    )
    assert rewards == [1.0, -1.0, None]
    assert logged == {"npr/accuracy": pytest.approx(1 / 3)}


def test_zero_config_has_dapo_settings():
    config = ZeroConfig(output_dir="unused", use_cpu=True)
    assert (config.loss_type, config.epsilon, config.epsilon_high, config.beta) == ("dapo", 0.2, 0.28, 0.0)
    assert config.mask_truncated_completions and not config.dynamic_sampling
    assert config.bf16 is False  # no GPU: float32, not TRL's bf16 default


@pytest.mark.parametrize("stage", ["zero", "papo"])
def test_the_shipped_configs_load(stage):
    from pathlib import Path

    from npr_toolkit.train.config import load_config
    from npr_toolkit.train.papo_config import PAPOConfig

    path = Path(__file__).parents[2] / "configs" / f"{stage}.yaml"
    config = load_config({"zero": ZeroConfig, "papo": PAPOConfig}[stage], path, output_dir="unused", use_cpu=True)
    assert config.num_iterations == 1 and config.steps_per_generation == config.gradient_accumulation_steps


def test_dynamic_sampling_needs_group_scaled_advantages():
    with pytest.raises(ValueError, match="scale_rewards"):
        ZeroConfig(output_dir="unused", use_cpu=True, dynamic_sampling=True, scale_rewards="batch")


def _zero_trainer(tmp_path, reward, dynamic: bool) -> ZeroTrainer:
    tokenizer = build_tokenizer()
    rows = [
        {"prompt": [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=p["problem"])}], "answer": p["answer"]}
        for p in make_problems(8, seed=4)
    ]
    for index, row in enumerate(rows):
        row["problem_id"] = index
    config = ZeroConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=1,
        save_strategy="no",
        seed=0,
        dynamic_sampling=dynamic,
    )
    return ZeroTrainer(
        model=build_model(tokenizer, seed=0),
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def _even_problems_all_equal(completions, problem_id, **kwargs):
    """Every sample of an even problem scores 1 (no advantage); odd problems' groups get 1 and -1."""
    return [1.0 if pid % 2 == 0 else (1.0 if i % 2 else -1.0) for i, pid in enumerate(problem_id)]


@pytest.mark.parametrize("dynamic", [False, True])
def test_dynamic_sampling_drops_all_equal_groups_and_refills(tmp_path, dynamic):
    trainer = _zero_trainer(tmp_path, _even_problems_all_equal, dynamic)
    trainer.model.train()
    inputs = [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(2)]  # one even, one odd problem
    output = trainer._generate_and_score_completions(inputs)
    groups = output["advantages"].view(-1, 2)
    assert groups.shape == (2, 2)  # the batch keeps its size
    informative = (groups.abs().amax(1) > 0).tolist()
    assert informative == ([True, True] if dynamic else [False, True])
    mask = output["completion_mask"]
    assert output["num_items_in_batch"].item() == mask.sum().item()
    assert output["prompt_ids"].shape[0] == output["completion_ids"].shape[0] == 4


def test_zero_keeps_float32_master_weights_under_bf16_compute(tmp_path, monkeypatch, rl_inputs, float32_share_moved):
    """The GPU set-up (bf16 autocast) on CPU: weights must stay float32, so a 1e-6 step moves all of them."""
    import sys

    for name, module in list(sys.modules.items()):  # every "on a GPU?" decision of the stages takes the GPU branch
        if name.startswith("npr_toolkit.train") and hasattr(module, "on_gpu"):
            monkeypatch.setattr(module, "on_gpu", lambda use_cpu: True)
    base = save_toy_model(tmp_path / "base", seed=0)
    problems, _ = rl_inputs(4)
    from npr_toolkit.train.rl import run_rl

    def trainer(**parts):
        return ZeroTrainer(
            reward_funcs=[lambda completions, **kw: [float(i % 2) for i in range(len(completions))]], **parts
        )

    out = run_rl(
        ZeroConfig, trainer, base, problems, tmp_path / "zero", template=PROMPT_TEMPLATE,
        use_cpu=True, max_steps=1, per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
        learning_rate=1e-6, save_strategy="no", seed=0, mask_truncated_completions=False,  # random model: all cut
    )  # fmt: skip
    assert torch.load(out / "training_args.bin", weights_only=False).bf16  # the run computed under bf16 autocast
    moved = float32_share_moved(base, out)
    assert moved > 0.95, moved


def test_zero_with_too_few_problems_for_one_step_exits_2(tmp_path, rl_inputs):
    problems, _ = rl_inputs(3)
    result = CliRunner().invoke(
        app,
        ["train", "zero", "--model", str(tmp_path / "never-loaded"), "--problems", str(problems),
         "--out", str(tmp_path / "out"), "--per-device-train-batch-size", "8", "--num-generations", "2"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "3 problems cannot fill one step" in message
    assert "per_device_train_batch_size to 6" in message
    assert not (tmp_path / "out").exists()


def zero_command(tmp_path: Path, problems: Path, *options: str) -> list[str]:
    """``npr train zero`` on a fresh random toy model, into ``tmp_path / "zero"``, 4 prompts x 2 samples a step."""
    base = save_toy_model(tmp_path / "base", seed=0)
    args = ["train", "zero", "--model", str(base), "--problems", str(problems), "--out", str(tmp_path / "zero")]
    return [*args, "--per-device-train-batch-size", "4", "--num-generations", "2", *options]


def test_a_run_that_takes_no_step_exits_2_and_saves_nothing(tmp_path, rl_inputs):
    problems, _ = rl_inputs(4)
    out = tmp_path / "zero"
    result = CliRunner().invoke(app, zero_command(tmp_path, problems, "--set", "num_train_epochs=0"))
    assert result.exit_code == 2, result.output
    assert "no optimizer step" in " ".join(result.output.split())
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_zero_cli_trains_one_step_and_saves(tmp_path, rl_inputs):
    problems, template = rl_inputs(4)
    out = tmp_path / "zero"
    args = zero_command(tmp_path, problems, "--max-steps", "1", "--max-completion-length", "16")
    args += ["--prompt-file", str(template), "--set", "save_strategy=no"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["stage"] == "zero" and summary["steps"] == 1
    assert "rewards/format_reward/mean" in summary["last"]
    assert (out / "model.safetensors").is_file()

    bad_template = tmp_path / "bad.txt"
    bad_template.write_text("no placeholder")
    bad = CliRunner().invoke(app, [*args[:8], "--prompt-file", str(bad_template)])
    assert bad.exit_code == 2 and "{problem}" in bad.output
