"""Training shows one progress bar (steps, ETA, loss) instead of raw log dicts; the logs stay in trainer_state.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.data.prompts import user_message
from npr_toolkit.toy import save_toy_model
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("progress")
    model = save_toy_model(root / "toy", hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    data = root / "beta.jsonl"
    rows = []
    for p in make_problems(4, seed=0):
        messages = [*user_message(p["problem"], PROMPT_TEMPLATE)]
        messages.append({"role": "assistant", "content": reference_trajectory(p["problem"])})
        rows.append(json.dumps({"id": p["id"], "messages": messages, "answer": p["answer"]}))
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model, data


@pytest.mark.slow
def test_sft_shows_a_bar_with_the_loss_not_log_dicts(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """A real ``npr`` process: the libraries are imported after the CLI quietened them, as for a user."""
    model, data = inputs
    command = [str(Path(sys.executable).parent / "npr"), "train", "sft", "--model", str(model), "--data", str(data)]
    command += ["--out", str(tmp_path / "run"), "--max-steps", "2", "--per-device-train-batch-size", "2"]
    command += ["--logging-steps", "1", "--set", "use_cpu=true"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "sft: 100%" in result.stderr and "2/2" in result.stderr and "loss=" in result.stderr
    assert "{'loss'" not in output and "'grad_norm'" not in output  # no raw log dicts anywhere
    assert "Loading weights" not in output and "Writing model shards" not in output and "Warning" not in output
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]  # the logs are all kept


def test_disable_tqdm_means_no_progress_output(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = inputs
    args = ["train", "sft", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "run")]
    args += ["--max-steps", "1", "--logging-steps", "1", "--set", "disable_tqdm=true", "--set", "save_strategy=no"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 1
    assert "sft:" not in result.stderr and "{'loss'" not in result.output
