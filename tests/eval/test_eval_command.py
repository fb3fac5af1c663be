"""``npr eval`` as a user runs it (a real process on the tiny model): batched timing, clean output, resume errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NPR = Path(sys.executable).parent / "npr"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, toy_tokenizer, toy_model) -> Path:
    """A saved toy model, six held-out toy problems and the toy's short prompt template."""
    from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems

    root = tmp_path_factory.mktemp("eval-command")
    toy_tokenizer.save_pretrained(root / "model")
    toy_model.save_pretrained(root / "model")
    (root / "toy.jsonl").write_text("".join(json.dumps(p) + "\n" for p in make_problems(6, split="heldout")))
    (root / "prompt.txt").write_text(PROMPT_TEMPLATE)
    return root


def npr_eval(root: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(str(NPR), "eval", "--bench", str(root / "toy.jsonl"), "--model", str(root / "model")),
        *("--prompt-file", str(root / "prompt.txt"), "--max-new-tokens", "12", "--out", str(out), *args),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_batched_eval_reports_elapsed_time_and_shows_only_its_own_progress(inputs):
    out = inputs / "batched"
    run = npr_eval(inputs, out, "-k", "2", "--batch-size", "4", "--device", "cpu")
    assert run.returncode == 0, run.stderr

    results = json.loads((out / "results.json").read_text())
    samples, metrics = results["samples"], results["metrics"]["parallel"]
    assert [s["batch_size"] for s in samples] == [4] * 12 and metrics["batch_sizes"] == [4]
    # Samples of one engine call share its wall time: 12 samples in batches of 4, 4, 4.
    shares = sorted({round(s["elapsed_share"], 12) for s in samples})
    assert len(shares) <= 3
    assert metrics["elapsed"] == pytest.approx(sum(s["elapsed_share"] for s in samples))
    assert metrics["mean_latency"] == pytest.approx(sum(s["latency"] for s in samples) / 12)
    total = sum(s["total_tokens"] for s in samples)
    assert metrics["tokens_per_second"] == pytest.approx(total / metrics["elapsed"])
    assert "batch size 4" in (out / "report.md").read_text()
    assert "batch size" in run.stdout and "elapsed (s)" in run.stdout and "latency (s, mean)" in run.stdout

    # stderr holds eval's own progress bar (with its ETA), no model-loading bars or library warnings.
    assert "eval " in run.stderr and "12/12" in run.stderr and "<" in run.stderr
    for noise in ("Loading weights", "Warning", "deprecated", "Traceback"):
        assert noise not in run.stderr, run.stderr


def test_a_bad_journal_line_when_resuming_exits_2_naming_the_line(inputs):
    out = inputs / "resumed"
    assert npr_eval(inputs, out, "-k", "1", "--limit", "2", "--format", "json").returncode == 0
    journal = out / "samples.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text(lines[0] + "\n" + lines[1][:40] + "\n")  # line 2 cut by something else

    run = npr_eval(inputs, out, "-k", "2", "--limit", "2")
    assert run.returncode == 2
    assert f"{journal}:2: invalid JSON" in " ".join(run.stderr.split())
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) <= 3
