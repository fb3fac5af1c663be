"""A model that cannot be loaded is one error line and exit 2 in every command that loads one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory, toy_model, toy_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    good = root / "good"
    toy_model.save_pretrained(good)
    toy_tokenizer.save_pretrained(good)
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    not_a_model = root / "notes"
    not_a_model.mkdir()
    (not_a_model / "README.md").write_text("just notes", encoding="utf-8")
    bench = root / "bench.jsonl"
    bench.write_text('{"id": "a", "problem": "1+1", "answer": "2"}\n', encoding="utf-8")
    return {"truncated": truncated, "not_a_model": not_a_model, "missing": root / "missing", "bench": bench}


COMMANDS = {
    "generate": lambda m, paths: ["generate", "--model", m, "--prompt", "hi", "--max-new-tokens", "2"],
    "eval": lambda m, paths: [
        "eval",
        "--bench",
        str(paths["bench"]),
        "--model",
        m,
        "--out",
        str(paths["bench"].parent / "o"),
    ],
    "serve": lambda m, paths: ["serve", "--model", m, "--port", "0", "--device", "cpu"],
}
BROKEN = {
    "missing": "cannot load model: no such directory",
    "not_a_model": "cannot load model: not a model folder (no config.json)",
    "truncated": "cannot load model: the weights are truncated or corrupt",
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_model_is_one_line(models: dict[str, Path], command: str, kind: str):
    result = runner.invoke(app, COMMANDS[command](str(models[kind]), models))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {models[kind]}: {BROKEN[kind]}")
    assert "Traceback" not in result.output and "sentencepiece" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
