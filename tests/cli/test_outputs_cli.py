"""No command writes over one of its inputs, and an output that cannot be written fails before any work.

Each case runs the real command on real files; the input must come out byte for byte unchanged.
Paths are compared as files: a relative path, ``..`` or a symlink to an input is that input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.data import app as data_app
from npr_toolkit.cli.main import app as npr_app
from npr_toolkit.toy.task import make_problems, reference_trajectory

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Problems, rollouts, a Beta corpus and a (config-only) model folder, in the working directory."""
    monkeypatch.chdir(tmp_path)
    problems = make_problems(3, seed=1)
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("problems", "rollouts", "beta")}
    rows = {
        "problems": problems,
        "rollouts": [
            {
                "id": f"r{i}",
                "problem_id": p["id"],
                "prompt": p["problem"],
                "completion": reference_trajectory(p["problem"]),
            }
            for i, p in enumerate(problems)
        ],
        "beta": [{"id": "b", "messages": [{"role": "assistant", "content": reference_trajectory("(1+2)+(3+4)")}]}],
    }
    for name, path in paths.items():
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[name]), encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    return {**paths, "model": model}


def snapshot(files: dict[str, Path]) -> dict[str, object]:
    """Each input's bytes (a folder: its files' names and bytes)."""
    return {
        name: sorted((p.name, p.read_bytes()) for p in path.iterdir()) if path.is_dir() else path.read_bytes()
        for name, path in files.items()
    }


CASES = [
    ("validate --keep", data_app, ["validate", "{rollouts}", "--keep", "./rollouts.jsonl"], "--keep"),
    ("validate --reject", data_app, ["validate", "{rollouts}", "--reject", "{rollouts}"], "--reject"),
    ("validate --keep = --reject", data_app, ["validate", "{rollouts}", "--keep", "k", "--reject", "k"], "same file"),
    ("distill --out rollouts", data_app, ["distill", "--problems", "{problems}", "--rollouts", "{rollouts}", "--out",
                                          "sub/../rollouts.jsonl"], "is also --rollouts"),
    ("distill --out problems", data_app, ["distill", "--problems", "{problems}", "--rollouts", "{rollouts}", "--out",
                                          "{problems}"], "is also --problems"),
    ("eval --out bench", npr_app, ["eval", "--bench", "{problems}", "--model", "{model}", "--out", "{problems}"],
     "is also --bench"),
    ("eval --out model", npr_app, ["eval", "--bench", "{problems}", "--model", "{model}", "--out", "model"],
     "is also --model"),
    ("train sft --out model", npr_app, ["train", "sft", "--model", "{model}", "--data", "{beta}", "--out", "./model"],
     "is also --model"),
    ("train sft --out data", npr_app, ["train", "sft", "--model", "{model}", "--data", "{beta}", "--out", "{beta}"],
     "is also --data"),
    ("train zero --out model", npr_app, ["train", "zero", "--model", "{model}", "--problems", "{problems}", "--out",
                                         "model"], "is also --model"),
    ("train papo --out problems", npr_app, ["train", "papo", "--model", "{model}", "--problems", "{problems}", "--out",
                                            "{problems}"], "is also --problems"),
    ("show --mask", data_app, ["show", "{beta}", "--mask", "{beta}"], "is also FILE"),
]  # fmt: skip


@pytest.mark.parametrize(("app", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_no_command_writes_over_an_input(files: dict[str, Path], app, args: list[str], message: str):
    before = snapshot(files)
    result = runner.invoke(app, [a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.startswith("error: ") and "Traceback" not in result.output
    assert snapshot(files) == before


def test_a_symlink_to_an_input_is_that_input(files: dict[str, Path]):
    os.symlink(files["rollouts"], "alias.jsonl")
    before = files["rollouts"].read_bytes()
    result = runner.invoke(data_app, ["validate", str(files["rollouts"]), "--keep", "alias.jsonl"])
    assert result.exit_code == 2 and "is also input" in result.stderr
    assert files["rollouts"].read_bytes() == before


UNWRITABLE = [
    ("eval --out /proc", npr_app, ["eval", "--bench", "{problems}", "--model", "{model}", "--out", "/proc/npr-x"],
     "--out /proc/npr-x: cannot write there"),
    ("eval --out a file", npr_app, ["eval", "--bench", "{problems}", "--model", "{model}", "--out", "{beta}"],
     "exists and is not a folder"),
    ("validate --keep in /proc", data_app, ["validate", "{rollouts}", "--keep", "/proc/npr-x/keep.jsonl"],
     "--keep /proc/npr-x/keep.jsonl: cannot write there"),
    ("train sft --out /proc", npr_app, ["train", "sft", "--model", "{model}", "--data", "{beta}", "--out", "/proc/t"],
     "--out /proc/t: cannot write there"),
    ("distill --out a folder", data_app, ["distill", "--problems", "{problems}", "--rollouts", "{rollouts}", "--out",
                                          "{model}"], "is a folder"),
    ("demo --out a file", npr_app, ["demo", "--out", "{beta}"], "exists and is not a folder"),
]  # fmt: skip


@pytest.mark.parametrize(("app", "args", "message"), [c[1:] for c in UNWRITABLE], ids=[c[0] for c in UNWRITABLE])
def test_an_output_that_cannot_be_written_fails_first_in_one_line(files: dict[str, Path], app, args, message: str):
    result = runner.invoke(app, [a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_command_that_fails_leaves_no_empty_output_folder(files: dict[str, Path]):
    result = runner.invoke(npr_app, ["eval", "--bench", "gsm8k", "--model", "m"])  # default --out runs/eval/...
    assert result.exit_code == 2 and "unknown benchmark" in result.stderr
    assert not Path("runs").exists()
