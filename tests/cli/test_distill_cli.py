"""``npr-data distill`` end to end: outputs, report, usage errors, and ``kill -9`` + rerun."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from npr_toolkit.cli.data import app
from npr_toolkit.toy.task import make_problems, noisy_trajectory, reference_trajectory

runner = CliRunner()

NPR_DATA = Path(sys.executable).parent / "npr-data"


def write_lines(path: Path, items: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items), encoding="utf-8")
    return path


def toy_inputs(folder: Path, problems: int, per_problem: int, bad: bool = False) -> tuple[Path, Path]:
    """Toy problems and NPR-Zero-like rollouts (the last rollout of each problem is the reference one)."""
    rng = random.Random(0)
    records = make_problems(problems, seed=7)
    rows: list[Any] = []
    for p in records:
        for k in range(per_problem):
            text = reference_trajectory(p["problem"]) if k == per_problem - 1 else noisy_trajectory(p["problem"], rng)
            rows.append({"id": f"{p['id']}-{k}", "problem_id": p["id"], "prompt": p["problem"], "completion": text})
    if bad:
        records.append({"id": "empty", "problem": "no answer given", "answer": ""})
        rows[3:3] = ["{oops", {"id": "x", "problem_id": "unknown", "prompt": "p", "completion": "c"}, {"id": "y"}]
    return write_lines(folder / "problems.jsonl", records), write_lines(folder / "rollouts.jsonl", rows)


def wait_for_two_chunks(process: subprocess.Popen, journal: Path, seconds: float) -> None:
    """Poll until the running job has journalled two finished chunks (a generous deadline, not a timing test)."""
    deadline = time.monotonic() + seconds
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 2):
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def assert_same_as_uninterrupted(resumed: Path, command: Callable[[Path], list[str]], clean: Path) -> None:
    """The same job run without a stop into ``clean`` writes the same bytes as the resumed one, and the same
    report but for where it wrote (``command(out)``: the job's ``npr-data`` command line)."""
    uninterrupted = runner.invoke(app, command(clean)[1:])
    assert uninterrupted.exit_code == 0, uninterrupted.output
    assert resumed.read_bytes() == clean.read_bytes()
    reports = [json.loads(Path(f"{out}.report.json").read_text()) for out in (resumed, clean)]
    for report in reports:
        report.pop("outputs")
        report["options"].pop("out")
    assert reports[0] == reports[1]


def test_distill_writes_corpus_report_and_dataset(tmp_path: Path) -> None:
    problems, rollouts = toy_inputs(tmp_path, problems=12, per_problem=4, bad=True)
    out = tmp_path / "beta.jsonl"
    saved = tmp_path / "beta-ds"
    args = ["distill", "--problems", str(problems), "--rollouts", str(rollouts), "--out", str(out)]
    result = runner.invoke(app, [*args, "--workers", "1", "--per-problem", "2", "--save-to-disk", str(saved)])
    assert result.exit_code == 0, result.output
    for text in ("by problem source", "toy-train", "rejections", "wrong-answer", "bad input:", f"{rollouts}:4"):
        assert text in result.output

    report = json.loads(Path(f"{out}.report.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report["problems"] == 12 and report["samples"] == 48 and report["selected"] == len(rows)
    assert 12 <= len(rows) <= 24  # each problem has its reference rollout, so each gets one or two
    assert report["bad_input"]["count"] == 4
    assert sorted(e.split(": ")[0] for e in report["bad_input"]["errors"]) == sorted(
        [f"{problems}:13", f"{rollouts}:4", f"{rollouts}:5", f"{rollouts}:6"]
    )
    assert sum(report["rejections"].values()) >= report["rejected"] > 0
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]

    import datasets

    dataset = datasets.load_from_disk(str(saved))
    assert dataset.num_rows == len(rows) and dataset[0]["messages"] == rows[0]["messages"]

    as_json = runner.invoke(app, [*args, "--workers", "0", "--per-problem", "2", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {**report, "outputs": {"out": str(out), "report": f"{out}.report.json"}} | {
        "options": {**report["options"], "save_to_disk": None}
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --rollouts or --model"),
        (["--rollouts", "R", "--model", "m", "--samples", "2"], "exactly one of --rollouts or --model"),
        (["--model", "m"], "--model needs --samples"),
        (["--rollouts", "R", "--select", "best"], "--select"),
        (["--rollouts", "R", "--profile", "loose"], "'--profile': 'loose' is not one of"),
        (["--rollouts", "R", "--per-problem", "0"], "--per-problem"),
        (["--rollouts", "R", "--prompt-file", "x.txt"], "--prompt-file applies to --model only"),
        (["--rollouts", "missing.jsonl"], "no such file"),
        (["--rollouts", "R", "--format", "yaml"], "--format"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    problems, rollouts = toy_inputs(tmp_path, problems=2, per_problem=1)
    extra = [str(rollouts) if x == "R" else x for x in extra]
    result = runner.invoke(app, ["distill", "--problems", str(problems), "--out", str(tmp_path / "o.jsonl"), *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_no_valid_problem_is_a_usage_error(tmp_path: Path) -> None:
    problems = write_lines(tmp_path / "p.jsonl", ["nope", {"id": "a", "problem": "q", "answer": ""}])
    rollouts = write_lines(tmp_path / "r.jsonl", [])
    args = ["distill", "--problems", str(problems), "--rollouts", str(rollouts), "--out", str(tmp_path / "o.jsonl")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "no valid problem" in output and f"{problems}:1" in output


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_uninterrupted_output(tmp_path: Path) -> None:
    problems, rollouts = toy_inputs(tmp_path, problems=260, per_problem=5, bad=True)  # 1300 rollouts, 6 chunks

    def command(out: Path) -> list[str]:
        return [
            *(str(NPR_DATA), "distill", "--problems", str(problems), "--rollouts", str(rollouts)),
            *("--out", str(out), "--workers", "1", "--select", "shortest", "--per-problem", "2"),
        ]

    killed = tmp_path / "killed" / "beta.jsonl"
    journal = Path(f"{killed}.work") / "journal.jsonl"
    process = subprocess.Popen(
        command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_two_chunks(process, journal, seconds=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the job and its grading workers
        process.wait()
    assert not killed.exists()
    done_before = journal.read_bytes().count(b"\n")
    assert 2 <= done_before < 6

    rerun = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {256 * done_before} samples" in " ".join(rerun.stdout.split())
    assert_same_as_uninterrupted(killed, command, tmp_path / "clean" / "beta.jsonl")
    assert not Path(f"{killed}.work").exists()


def test_validate_and_stats_read_distills_output_without_naming_the_field(tmp_path: Path) -> None:
    problems, rollouts = toy_inputs(tmp_path, problems=4, per_problem=2)
    out = tmp_path / "beta.jsonl"
    args = ["distill", "--problems", str(problems), "--rollouts", str(rollouts), "--out", str(out), "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 0
    checked = runner.invoke(app, ["validate", str(out), "--format", "json"])
    assert checked.exit_code == 0, checked.output
    doc = json.loads(checked.stdout)
    assert doc["total"] == doc["valid"] == len(out.read_text().splitlines()) > 0  # the messages field, found
    stats = json.loads(runner.invoke(app, ["stats", str(out), "--format", "json"]).stdout)
    assert stats["parsed"] == doc["total"] and not stats["input_errors"]


@pytest.mark.parametrize("content", ["", "\n\n", '{"id": "x"}\n'], ids=["empty", "blank lines", "only bad records"])
def test_rollouts_with_nothing_to_distil_are_an_input_error(tmp_path: Path, content: str) -> None:
    problems, _ = toy_inputs(tmp_path, problems=2, per_problem=1)
    rollouts = tmp_path / "empty.jsonl"
    rollouts.write_text(content, encoding="utf-8")
    out = tmp_path / "beta.jsonl"
    result = runner.invoke(
        app, ["distill", "--problems", str(problems), "--rollouts", str(rollouts), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert f"error: {rollouts}: no valid rollout" in " ".join(result.stderr.split())
    assert not out.exists() and not Path(f"{out}.work").exists()


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Two runs into one --out would interleave one journal (both crashed, nothing written): the second
    is an input error, and the first one's work folder is left as it was."""
    problems, rollouts = toy_inputs(tmp_path, problems=4, per_problem=2)
    out = tmp_path / "beta.jsonl"
    work = Path(f"{out}.work")
    work.mkdir()
    (work / "fingerprint.json").write_text('{"fingerprint": "the first run"}', encoding="utf-8")
    holder = subprocess.Popen(  # the first run, as far as the lock goes: another process holding it
        [
            sys.executable,
            "-c",
            f"from npr_toolkit.data.io import exclusive\nwith exclusive({str(out)!r}, '--out'):"
            " print('held', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        args = ["distill", "--problems", str(problems), "--rollouts", str(rollouts), "--out", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"--out {out}: another run is writing it now" in " ".join(result.stderr.split())
        assert sorted(p.name for p in work.iterdir()) == ["fingerprint.json"] and not out.exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert runner.invoke(app, args).exit_code == 0 and out.is_file()  # the lock went with its holder


@pytest.mark.slow
def test_ctrl_c_saves_what_was_judged_and_a_rerun_resumes(tmp_path: Path) -> None:
    """SIGINT to the whole process group (what Ctrl-C sends): exit 130 with what was saved, no worker
    left behind, nothing half-judged recorded; the rerun writes what an uninterrupted run writes."""
    problems, rollouts = toy_inputs(tmp_path, problems=260, per_problem=5)  # 1300 rollouts, 6 chunks

    def command(out: Path) -> list[str]:
        return [
            *(str(NPR_DATA), "distill", "--problems", str(problems), "--rollouts", str(rollouts)),
            *("--out", str(out), "--workers", "2", "--per-problem", "2"),
        ]

    stopped = tmp_path / "stopped" / "beta.jsonl"
    journal = Path(f"{stopped}.work") / "journal.jsonl"
    process = subprocess.Popen(
        command(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_two_chunks(process, journal, seconds=120)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    saved = sum(len(json.loads(line)["results"]) for line in journal.read_text().splitlines())
    assert 512 <= saved < 1300
    assert f"interrupted: {saved} saved; rerun to resume" in " ".join(stderr.split())
    assert "Traceback" not in stderr and not stopped.exists()
    with pytest.raises(ProcessLookupError):  # the grading workers are gone too
        os.killpg(process.pid, 0)

    rerun = subprocess.run(command(stopped), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {saved} samples" in " ".join(rerun.stdout.split())
    assert_same_as_uninterrupted(stopped, command, tmp_path / "clean" / "beta.jsonl")
