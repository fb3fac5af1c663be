"""``accelerate launch --num_processes 2`` (CPU, gloo) runs the stages unchanged and trains what one process
with the same global batch trains.

``multiprocess_driver.py`` runs one optimizer step of SFT and of PAPO through the library, once as one
process and once as two with half the per-device batch, and dumps the step: its loss and every gradient
agree within 1e-5 (float32); PAPO's rollouts are the same samples (each prompt is seeded by its global
position in the batch), and its advantages are normalised over the global batch with the filtered
rollouts (reward None) left out, which per-process statistics would not give. Then a plain
``accelerate launch ... npr train papo`` finishes, prints one report and writes one checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from npr_toolkit.toy import save_toy_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("multiprocess_driver.py")
BIN = Path(sys.executable).parent
TOL = 1e-5


def launch(*command: str | Path, processes: int) -> subprocess.CompletedProcess:
    """Run ``command`` as ``processes`` processes on CPU (accelerate's DDP config over gloo), or plainly."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "ACCELERATE_USE_CPU": "true"}
    prefix: list[str | Path] = []
    if processes > 1:
        with socket.socket() as sock:  # a free rendezvous port: other runs may use accelerate's 29500
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        prefix = [BIN / "accelerate", "launch", "--config_file", REPO / "configs/accelerate/ddp.yaml"]
        prefix += ["--num_processes", str(processes), "--main_process_port", str(port)]
    else:
        prefix = [sys.executable]
    result = subprocess.run([*map(str, prefix), *map(str, command)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def first_step(stage: str, model: Path, data: Path, tmp_path: Path, processes: int, batch: int) -> tuple[dict, dict]:
    dump = tmp_path / f"{stage}-{processes}"
    args = [stage, "--model", model, "--data", data, "--out", dump / "out", "--dump", dump, "--batch", batch]
    launch(DRIVER, *args, processes=processes)
    return json.loads((dump / "first_step.json").read_text()), torch.load(dump / "grads.pt")


def assert_same_step(one: tuple[dict, dict], two: tuple[dict, dict]) -> None:
    (record_1, grads_1), (record_2, grads_2) = one, two
    assert abs(record_1["loss"] - record_2["loss"]) < TOL, (record_1["loss"], record_2["loss"])
    assert grads_1.keys() == grads_2.keys() and grads_1
    worst = max((grads_1[name] - grads_2[name]).abs().max().item() for name in grads_1)
    assert worst < TOL, worst
    assert max(g.abs().max().item() for g in grads_1.values()) > 1e-3  # a real gradient, not zeros


def test_two_process_sft_step_equals_one_process(tmp_path, beta_file):
    model = save_toy_model(tmp_path / "toy", hidden_size=64, num_heads=2, num_kv_heads=1, intermediate_size=128)
    one = first_step("sft", model, beta_file, tmp_path, processes=1, batch=4)
    two = first_step("sft", model, beta_file, tmp_path, processes=2, batch=2)
    assert_same_step(one, two)
    assert json.loads((tmp_path / "sft-2" / "out" / "sft_report.json").read_text())["steps"] == 1


def batch_normalised(rewards: list[float | None], group: int) -> list[float]:
    """TRL's advantages for ``rewards``: group mean subtracted, divided by the batch std (+1e-4), over the
    rollouts that have a reward; 0 for the others."""
    values = torch.tensor([float("nan") if r is None else r for r in rewards]).view(-1, group)
    kept = values[~values.isnan()]
    advantages = (values - values.nanmean(dim=1, keepdim=True)) / (kept.std() + 1e-4)
    return advantages.nan_to_num(0.0).flatten().tolist()


def test_two_process_papo_step_equals_one_process(format_model_dir, tmp_path, rl_inputs):
    problems, _ = rl_inputs(8, seed=7)
    one = first_step("papo", format_model_dir, problems, tmp_path, processes=1, batch=16)
    two = first_step("papo", format_model_dir, problems, tmp_path, processes=2, batch=8)
    (batch_1, _), (batch_2, _) = one, two
    assert batch_1["completions"] == batch_2["completions"]  # the same samples, however many processes
    assert batch_1["rewards"] == batch_2["rewards"]
    assert None in batch_1["rewards"]  # filtered rollouts are in this batch
    for observed in (batch_1["advantages"], batch_2["advantages"]):
        assert max(abs(a - b) for a, b in zip(observed, batch_normalised(batch_1["rewards"], 4), strict=True)) < 1e-5
    # Each process normalising its own half would give other advantages: the statistics are global.
    halves = [batch_normalised(batch_1["rewards"][:8], 4), batch_normalised(batch_1["rewards"][8:], 4)]
    local = halves[0] + halves[1]
    assert max(abs(a - b) for a, b in zip(batch_2["advantages"], local, strict=True)) > 1e-2
    assert_same_step(one, two)


def test_npr_train_papo_runs_unchanged_under_accelerate_launch(tmp_path, rl_inputs):
    model = save_toy_model(tmp_path / "toy", seed=0)
    problems, template = rl_inputs()
    out = tmp_path / "papo"
    result = launch(
        BIN / "npr", "train", "papo", "--model", model, "--problems", problems, "--out", out, "--max-steps", "2",
        "--per-device-train-batch-size", "4", "--num-generations", "2", "--max-completion-length", "24",
        "--prompt-file", template, "--set", "save_strategy=no", "--format", "json", processes=2,
    )  # fmt: skip
    summary = json.loads(result.stdout)  # one document: only the main process reports
    assert summary["steps"] == 2
    assert (out / "model.safetensors").is_file() and (out / "trainer_state.json").is_file()
