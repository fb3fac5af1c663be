"""PAPO stays strictly on-policy: off-policy settings exit 2 naming the field, every step logs the largest
|rollout log-prob - trainer log-prob| (< 1e-4 in float32, and large when a step trains on stale rollouts),
and the policy keeps float32 master weights under bf16 compute."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.toy.task import PROMPT_TEMPLATE
from npr_toolkit.train.papo import ONPOLICY_METRIC, PAPOTrainer
from npr_toolkit.train.papo_config import PAPOConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (["steps_per_generation=2"], "steps_per_generation"),
        (["generation_batch_size=8"], "generation_batch_size"),
        (["gradient_accumulation_steps=2", "steps_per_generation=1"], "steps_per_generation"),
        (["num_iterations=2"], "num_iterations"),
        (["use_vllm=true"], "use_vllm"),
        (["off_policy_mask_threshold=0.5"], "off_policy_mask_threshold"),
        (["temperature=0.7"], "temperature"),
        (["top_p=0.9"], "top_p"),
        (["top_k=20"], "top_k"),
        (["mask_truncated_completions=true"], "drop_truncated"),
    ],
)
def test_off_policy_settings_exit_2_naming_the_field(tmp_path, settings, field, rl_inputs):
    problems, _ = rl_inputs()
    args = ["train", "papo", "--model", str(tmp_path / "never-loaded"), "--problems", str(problems)]
    args += ["--out", str(tmp_path / "out"), "--per-device-train-batch-size", "4", "--num-generations", "2"]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert field in message and "Traceback" not in message, message


@pytest.mark.slow
@pytest.mark.parametrize("semantics", ["canonical", "reprefill"])
def test_three_step_papo_run_logs_an_onpolicy_difference_below_1e4(format_model_dir, tmp_path, semantics, small_papo):
    """In either semantics the engine decodes the rollouts as the view recomputes them (docs/design.md §3, §3b)."""
    # seed 1: the canonical-trained format policy writes few valid trees when decoded reprefill; with this seed
    # the kept rollouts of both semantics still split some group, so the policy moves between the steps
    trainer = small_papo(format_model_dir, tmp_path, max_steps=3, semantics=semantics, seed=1)
    assert trainer._engine.semantics == semantics
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    steps = [entry for entry in trainer.state.log_history if ONPOLICY_METRIC in entry]
    assert len(steps) == 3
    assert all(entry["npr/format_valid_rate"] > 0 for entry in steps), steps  # trained tokens exist every step
    assert all(entry[ONPOLICY_METRIC] < 1e-4 for entry in steps), [entry[ONPOLICY_METRIC] for entry in steps]
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in trainer.model.named_parameters())
    assert moved > 1e-4  # the policy really changed between the steps (Adam: about lr per step)


@pytest.mark.slow
def test_the_onpolicy_metric_exposes_a_step_on_stale_rollouts(format_model_dir, tmp_path, small_papo):
    """What PAPOConfig rejects, forced past the check: TRL then trains step 2 on step 1's rollouts."""
    trainer = small_papo(format_model_dir, tmp_path, max_steps=2)
    trainer.args.steps_per_generation = 2
    trainer.args.generation_batch_size = 16
    trainer.train()
    gaps = [entry[ONPOLICY_METRIC] for entry in trainer.state.log_history if ONPOLICY_METRIC in entry]
    assert gaps[0] < 1e-4 and gaps[1] > 1e-2, gaps


@pytest.mark.slow
def test_papo_keeps_float32_master_weights_under_bf16_compute(
    format_model_dir, tmp_path, monkeypatch, rl_inputs, parity_reward, float32_share_moved
):
    """The GPU set-up (bf16 autocast) on CPU at PAPO's own lr 1e-7: float32 weights, and the step moves them."""
    for name, module in list(sys.modules.items()):  # every "on a GPU?" decision of the stages takes the GPU branch
        if name.startswith("npr_toolkit.train") and hasattr(module, "on_gpu"):
            monkeypatch.setattr(module, "on_gpu", lambda use_cpu: True)
    problems, _ = rl_inputs(4, seed=7)
    from npr_toolkit.train.rl import run_rl

    def trainer(**parts):
        return PAPOTrainer(reward_funcs=[parity_reward], **parts)

    out = run_rl(
        PAPOConfig, trainer, format_model_dir, problems, tmp_path / "papo", template=PROMPT_TEMPLATE,
        use_cpu=True, attn_implementation="sdpa", max_steps=1, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=160, save_strategy="no", seed=0,
    )  # fmt: skip
    assert torch.load(out / "training_args.bin", weights_only=False).bf16
    assert json.loads((out / "config.json").read_text())["npr_semantics"] == "canonical"  # the checkpoint's, kept
    moved = float32_share_moved(format_model_dir, out)
    assert moved > 0.95, moved
