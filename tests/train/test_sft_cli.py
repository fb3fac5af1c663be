"""``npr train sft`` through the CLI: a tiny real run, usage errors that exit 2, every stage's output lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.data.io import exclusive
from npr_toolkit.toy import save_toy_model

runner = CliRunner()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, beta_file: Path) -> tuple[Path, Path]:
    model = save_toy_model(
        tmp_path_factory.mktemp("cli") / "toy", hidden_size=64, num_heads=2, num_kv_heads=1, intermediate_size=128
    )
    return model, beta_file


def sft(*args: str | Path):
    return runner.invoke(app, ["train", "sft", *map(str, args)])


def test_sft_cli_trains_and_reports(paths: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = paths
    out = tmp_path / "run"
    result = sft(
        "--model", model, "--data", data, "--out", out, "--max-steps", 2, "--learning-rate", 1e-3,
        "--per-device-train-batch-size", 4, "--seed", 1, "--set", "use_cpu=true", "--set", "save_strategy=no",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["records"], report["trained"], report["steps"]) == (8, 8, 2)
    assert report["view_mode"] == "canonical" and report["attn_implementation"] == "sdpa"
    assert report["semantics"] == "canonical"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert json.loads((out / "config.json").read_text())["npr_semantics"] == "canonical"


def test_sft_cli_semantics_reprefill(paths: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = paths
    out = tmp_path / "run"
    result = sft("--model", model, "--data", data, "--out", out, "--max-steps", 1, "--semantics", "reprefill",
                 "--set", "save_strategy=no", "--set", "disable_tqdm=true")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reprefill" in result.stdout
    assert json.loads((out / "config.json").read_text())["npr_semantics"] == "reprefill"


def test_sft_cli_text_output(paths: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = paths
    result = sft("--model", model, "--data", data, "--out", tmp_path / "run", "--max-steps", 1,
                 "--view-mode", "npr-compat", "--set", "save_strategy=no", "--set", "disable_tqdm=true")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "records read / trained" in result.stdout and "8 / 8" in result.stdout
    assert "npr-compat" in result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "missing.jsonl"], "no such file"),
        (["--set", "no_such_field=1"], "unknown config field"),
        (["--set", "oops"], "FIELD=VALUE"),
        (["--view-mode", "sideways"], "view_mode"),
        (["--semantics", "sideways"], "semantics"),
        (["--semantics", "reprefill", "--view-mode", "npr-compat"], "disagree"),
        (["--config", "missing.yaml"], "no such config file"),
        (["--format", "xml"], "--format"),
        (["--max-steps", "0"], "--max-steps"),  # the Trainer would read 0 as "train by epochs"
        (["--per-device-train-batch-size", "0"], "--per-device-train-batch-size"),
    ],
)
def test_sft_cli_usage_errors(paths: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str) -> None:
    model, data = paths
    args = ["--model", model, "--data", data, "--out", tmp_path / "run", *extra]
    result = sft(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_sft_cli_missing_model(paths: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, data = paths
    result = sft("--model", tmp_path / "nothing-here", "--data", data, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "cannot load model" in result.output


@pytest.mark.parametrize("stage", ["sft", "papo"])
def test_a_second_run_into_the_same_out_is_refused(paths, tmp_path: Path, stage: str, rl_inputs) -> None:
    """While a run holds --out (its lock), another one is an input error before any model loads,
    instead of writing its checkpoints over the first one's."""
    model, data = paths
    out = tmp_path / "run"
    source = ["--data", data] if stage == "sft" else ["--problems", rl_inputs(64)[0]]
    with exclusive(out, "--out"):
        args = ["train", stage, "--model", model, *source, "--out", out]
        result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 2, result.output
    assert f"--out {out}: another run is writing it now" in " ".join(result.output.split())
    assert not out.exists()
