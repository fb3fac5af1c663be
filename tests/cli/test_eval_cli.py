"""``npr eval`` and ``npr eval compare`` through the CLI: usage errors exit 2; the tiny-model run end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.data.io import exclusive, write_json_atomic
from npr_toolkit.eval.metrics import SampleRecord, compute_metrics, compute_speedup
from npr_toolkit.eval.report import RESULTS_FILE, BenchmarkInfo, Results

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


def flat(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_help_lists_the_options_and_compare():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--bench", "--model", "--baseline", "--data-dir", "compare"):
        assert option in result.output
    assert invoke().exit_code == 0  # bare `npr eval` shows the help


def test_missing_benchmark_file_exits_2(tmp_path):
    result = invoke("--bench", str(tmp_path / "nope.jsonl"), "--model", "m", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "no such benchmark file" in flat(result)
    assert "Traceback" not in result.output


def test_malformed_benchmark_file_exits_2_with_file_and_line(tmp_path):
    bench = tmp_path / "bad.jsonl"
    bench.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n{"id": "b", "problem": "x"}\n')
    result = invoke("--bench", str(bench), "--model", "m", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert f"{bench}:2" in flat(result) and "answer" in flat(result)


def test_unknown_benchmark_and_bad_options_exit_2(tmp_path):
    assert "unknown benchmark" in flat(invoke("--bench", "gsm8k", "--model", "m"))
    for args in (
        ("--bench", "aime25"),
        ("--bench", "aime25", "--model", "m", "--engine", "vllm"),
        ("--bench", "aime25", "--model", "m", "--baseline", "parallel"),
        ("--bench", "aime25", "--model", "m", "--format", "yaml"),
        ("--bench", "aime25", "--model", "m", "-k", "0"),
    ):
        assert invoke(*args).exit_code == 2, args


def small_results(model: str, baseline: bool) -> Results:
    modes = ["parallel", "sequential"] if baseline else ["parallel"]
    samples = [
        SampleRecord(
            problem_id="p0",
            problem_index=0,
            sample=s,
            mode=mode,
            answer="4",
            text="\\boxed{4}",
            predicted="4",
            grade="correct" if s == 0 else "wrong",
            widths=[2] if mode == "parallel" else [],
            total_tokens=10,
            critical_path_tokens=6 if mode == "parallel" else 10,
            vote=0 if s == 0 else 1,
            latency=1.0,
            elapsed_share=1.0,
        )
        for mode in modes
        for s in range(2)
    ]
    metrics = {mode: compute_metrics(samples, mode) for mode in modes}
    speedup = compute_speedup(metrics["parallel"], metrics["sequential"]) if baseline else None
    info = BenchmarkInfo(name="toy", source="toy.jsonl", problems=1)
    return Results(settings={"model": model}, benchmark=info, metrics=metrics, speedup=speedup, samples=samples)


def test_compare_prints_a_side_by_side_table(tmp_path):
    for name, baseline in (("base", True), ("npr", False)):  # results.json is all compare reads
        write_json_atomic(tmp_path / name / RESULTS_FILE, small_results(name, baseline).model_dump(mode="json"))
    result = invoke("compare", str(tmp_path / "base"), str(tmp_path / "npr"))
    assert result.exit_code == 0, result.output
    assert "avg@k (%)" in result.output and "(sequential)" in result.output

    result = invoke("compare", str(tmp_path / "base"), str(tmp_path / "npr"), "--format", "json")
    table = json.loads(result.stdout)
    assert table["columns"] == ["base", "base (sequential)", "npr"]

    missing = invoke("compare", str(tmp_path / "base"), str(tmp_path / "nothing"))
    assert missing.exit_code == 2 and "no results.json" in flat(missing)


# --- end to end on the tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run_inputs(tmp_path_factory, toy_tokenizer, toy_model):
    """A saved toy model, four toy problems (runs take the first three) and a short prompt template."""
    from npr_toolkit.toy.task import make_problems

    root = tmp_path_factory.mktemp("toy-eval")
    toy_tokenizer.save_pretrained(root / "model")
    toy_model.save_pretrained(root / "model")
    bench = root / "toy.jsonl"
    bench.write_text("".join(json.dumps(p) + "\n" for p in make_problems(4, split="heldout")))
    template = root / "prompt.txt"
    template.write_text("Solve {problem}")
    return root


@pytest.mark.slow
def test_eval_on_the_tiny_model_writes_all_outputs_and_resumes(toy_run_inputs):
    root = toy_run_inputs
    out = root / "out"
    model = [
        "--bench",
        str(root / "toy.jsonl"),
        "--model",
        str(root / "model"),
        "--prompt-file",
        str(root / "prompt.txt"),
    ]
    args = [*model, "--max-new-tokens", "16", "--out", str(out), "--format", "json"]

    # A start that fails (no such model) pins nothing: the next start in the same folder runs.
    wrong = invoke(*model[:2], "--model", str(root / "no-model"), *model[4:], "--out", str(out), "-k", "1")
    assert wrong.exit_code == 2 and "cannot load model" in flat(wrong)

    result = invoke(*args, "--limit", "3", "-k", "2", "--baseline", "sequential")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["generated"], summary["resumed"]) == (12, 0)
    for name in (
        "results.json",
        "report.md",
        "accuracy_vs_k.png",
        "width_histogram.png",
        "tokens_vs_critical_path.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "accuracy_vs_k.png").read_bytes()[:4] == b"\x89PNG"

    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {"parallel", "sequential"}
    assert results["benchmark"]["problems"] == 3 and len(results["samples"]) == 12
    for mode in ("parallel", "sequential"):
        metrics = results["metrics"][mode]
        assert (metrics["problems"], metrics["k"]) == (3, 2)
        assert metrics["samples"] == 6 and sum(metrics["grades"].values()) == 6
        assert set(metrics["format_valid"]) == {"strict", "lenient", "npr-compat"}
        assert metrics["elapsed"] > 0 and metrics["tokens_per_second"] > 0
    assert results["speedup"]["elapsed"] > 0
    for sample in results["samples"]:
        assert sample["grade"] in {"correct", "wrong", "no_answer", "timeout", "error"}
        assert 0 < sample["total_tokens"] <= 16 * 8 and sample["critical_path_tokens"] <= sample["total_tokens"]
        assert set(sample["valid"]) == {"strict", "lenient", "npr-compat"}
    # The baseline decodes the same prompt with the same seed: same seeds in both modes.
    seeds = {(s["problem_id"], s["sample"], s["mode"]): s["seed"] for s in results["samples"]}
    assert all(seeds[(p, i, "parallel")] == seeds[(p, i, "sequential")] for p, i, _ in seeds)
    report = (out / "report.md").read_text()
    assert "| toy | parallel |" in report and "| toy | sequential |" in report

    again = invoke(*args, "--limit", "3", "-k", "2", "--baseline", "sequential")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["generated"] == 0  # everything came from the journal
    assert json.loads((out / "results.json").read_text())["samples"] == results["samples"]

    more = invoke(*args, "--limit", "1", "-k", "3")  # one more sample of problem 1, parallel only
    assert more.exit_code == 0, more.output
    assert (json.loads(more.stdout)["generated"], json.loads(more.stdout)["resumed"]) == (1, 2)

    changed = invoke(*model, "--max-new-tokens", "32", "--out", str(out), "--limit", "1", "-k", "1")
    assert changed.exit_code == 2 and "different settings" in flat(changed)

    text = invoke(*model, "--max-new-tokens", "16", "--out", str(out), "--limit", "3", "-k", "2")  # text output
    assert text.exit_code == 0 and "avg@2" in text.output and "report.md" in text.output

    journal = (out / "samples.jsonl").read_bytes()
    with exclusive(out, "--out"):  # another run of this evaluation is writing the folder
        busy = invoke(*args, "--limit", "3", "-k", "4")
    assert busy.exit_code == 2 and "another run is writing it now" in flat(busy), busy.output
    assert (out / "samples.jsonl").read_bytes() == journal


@pytest.mark.slow
def test_ctrl_c_keeps_the_decoded_samples_and_a_rerun_resumes_them(toy_run_inputs):
    """SIGINT to the process group (what Ctrl-C sends): exit 130 naming what was saved, the lock released;
    the rerun decodes only the rest and loses nothing."""
    root = toy_run_inputs
    out = root / "interrupted"
    journal = out / "samples.jsonl"
    args = [
        "eval", "--bench", root / "toy.jsonl", "--model", root / "model", "--prompt-file", root / "prompt.txt",
        "-k", "64", "--max-new-tokens", "96", "--out", out, "--format", "json",
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "npr"), *map(str, args)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A suite started in the background (`cmd &`, nohup) ignores SIGINT, and a child inherits that; a terminal's
        # Ctrl-C reaches a command whose SIGINT is the default, so the test restores it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (journal.is_file() and journal.read_text().count("\n") >= 1):  # interrupted at its first samples
            assert process.poll() is None and time.monotonic() < deadline, "no sample decoded"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    saved = journal.read_text().count("\n")
    assert process.returncode == 130, stderr
    assert f"interrupted: {saved} saved in {journal}; rerun to resume" in " ".join(stderr.split())
    assert not Path(f"{out}.lock").exists()

    rerun = invoke(*map(str, args[1:]))
    assert rerun.exit_code == 0, rerun.output
    summary = json.loads(rerun.stdout)
    assert (summary["resumed"], summary["generated"]) == (saved, 4 * 64 - saved)
