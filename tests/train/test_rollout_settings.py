"""Where the RL stages sample: a server set-up that cannot work exits 2 naming the flag, before any model loads.

(The trainings against real servers are tests/engine/test_training_on_servers.py.)
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.toy import save_toy_model


@pytest.mark.parametrize(
    ("stage", "flags", "message"),
    [
        ("papo", ["--engine", "sglang"], "needs at least one server URL (--server URL)"),
        ("zero", ["--engine", "openai"], "needs at least one server URL (--server URL)"),
        (
            "papo",
            ["--server", "http://127.0.0.1:9"],
            "rollout_servers are only used by rollout_engine sglang or openai",
        ),
        ("papo", ["--engine", "sglang", "--server", "http://127.0.0.1:9"], "weight_sync disk needs weight_sync_dir"),
        (
            "zero",
            ["--engine", "sglang", "--server", "http://h:1", "--weight-sync", "nccl"],
            "weight_sync 'nccl': choose one of disk, distributed",
        ),
        (
            "zero",
            [
                "--engine",
                "sglang",
                "--server",
                "http://h:1",
                "--weight-sync-dir",
                "w",
                "--set",
                "repetition_penalty=1.1",
            ],
            "repetition_penalty: rollout_engine sglang samples with temperature, top_p and top_k only",
        ),
    ],
)
def test_server_settings_that_cannot_work_exit_2_naming_the_flag(tmp_path, stage, flags, message, rl_inputs):
    problems, _ = rl_inputs()
    args = ["train", stage, "--model", str(tmp_path / "never-loaded"), "--problems", str(problems)]
    args += ["--out", str(tmp_path / "out"), "--per-device-train-batch-size", "4", "--num-generations", "2", *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_an_unreachable_rollout_server_is_one_line_and_exit_2(tmp_path, rl_inputs):
    model = save_toy_model(tmp_path / "toy", hidden_size=64, num_heads=2, num_kv_heads=1, intermediate_size=128)
    problems, _ = rl_inputs()
    args = ["train", "zero", "--model", str(model), "--problems", str(problems), "--out", str(tmp_path / "o")]
    args += ["--per-device-train-batch-size", "4", "--num-generations", "2", "--engine", "sglang"]
    args += ["--server", "http://127.0.0.1:9", "--weight-sync-dir", str(tmp_path / "w")]  # port 9: nobody listens
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "cannot reach the SGLang server at http://127.0.0.1:9" in message and "Traceback" not in message
