"""`npr demo --quick`: the whole recipe on the toy task, and each stage doing what holds for every seed.

One seeded run (several minutes on 2 CPU cores) through the CLI. Asserted: distill keeps only correct
and valid trajectories, SFT teaches the format, PAPO trains (its checkpoint moves) and keeps the format,
and the parallel engine needs fewer decoding steps than the same trees decoded branch after branch.
Not asserted, because they are not repeatable: that PAPO raises held-out accuracy (at the quick scale it
does in every one of three seeds, but no seed by more than two standard errors: bench/demo_seeds.py,
bench/RESULTS.md) and wall-clock speed-ups (the machine's load
moves them more than the effect; they are reported in the table, never a test's condition).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from npr_toolkit.cli.main import app
from npr_toolkit.data.grading import grade_one
from npr_toolkit.demo import QUICK
from npr_toolkit.format import StructuralFilter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    return out, summary, {row["stage"]: row for row in summary["rows"]}


def test_every_stage_ran_and_wrote_its_outputs(demo):
    out, summary, rows = demo
    assert list(rows) == ["base model", "NPR-Zero (stand-in)", "distill", "SFT (NPR-Beta)", "PAPO (NPR)"]
    for name in ("base", "sft", "papo"):
        assert (out / name / "model.safetensors").is_file()
        assert (out / f"eval-{name}" / "results.json").is_file() and (out / f"eval-{name}" / "report.md").is_file()
        assert list((out / f"eval-{name}").glob("*.png"))
    for name in ("sft", "papo"):
        assert (out / f"speed-{name}" / "results.json").is_file()
    assert json.loads((out / "demo.json").read_text())["rows"]
    assert summary["seconds"] >= sum(row["seconds"] for row in rows.values())  # the total covers every stage


def test_distill_keeps_only_correct_and_valid_trajectories(demo):
    out, _, rows = demo
    strict = StructuralFilter("strict")
    examples = [json.loads(line) for line in (out / "beta.jsonl").read_text().splitlines()]
    assert examples
    for example in examples:
        completion = example["messages"][-1]["content"]
        verdict = strict(completion)
        assert verdict.ok, verdict.codes
        assert grade_one(verdict.answer, example["answer"]).correct
    assert 0 < rows["distill"]["acceptance"] < 1  # the stand-in's noise was filtered out
    assert rows["distill"]["format_valid"] is None  # the filter's own output is not a measurement


def test_sft_teaches_the_format_and_papo_keeps_it(demo):
    out, _, rows = demo
    base, sft, papo = rows["base model"], rows["SFT (NPR-Beta)"], rows["PAPO (NPR)"]
    assert base["format_valid"] == 0 and base["parallel_rate"] == 0  # a random model never writes the format
    assert sft["format_valid"] > 0.5 and sft["parallel_rate"] > 0.9  # sampled at temperature 1, held out
    assert papo["format_valid"] > 0.5 and papo["parallel_rate"] > 0.9
    assert sft["accuracy"] > 0.1 and papo["accuracy"] > 0.1  # both solve held-out problems the base never does
    before, after = load_file(out / "sft" / "model.safetensors"), load_file(out / "papo" / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)  # PAPO took optimizer steps


def test_parallel_decoding_takes_fewer_steps_than_serial_branches(demo):
    out, _, rows = demo
    for stage, folder in (("SFT (NPR-Beta)", "speed-sft"), ("PAPO (NPR)", "speed-papo")):
        assert rows[stage]["ideal_speedup"] > 1
        speedup = json.loads((out / folder / "results.json").read_text())["speedup"]
        assert speedup["steps"] > 1  # counted in forward passes, not seconds: the same on any machine


# --- npr demo --semantics reprefill: the path a GPU user takes with a real SGLang server -----------------
# The quick demo with every stage cut to a few steps and problems (SFT still long enough to teach the format).
TINY = QUICK.model_copy(
    update=dict(
        train_problems=300, heldout_problems=8, sft_steps=60, papo_steps=2, papo_prompts=2, papo_samples=4,
        eval_samples=1, speed_problems=2,
    )
)  # fmt: skip


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory):
    """The quick demo's stages at a tiny scale (what is checked here is the route, not the numbers)."""
    from npr_toolkit import demo as demo_module

    out = tmp_path_factory.mktemp("demo-reprefill")
    patch = pytest.MonkeyPatch()
    patch.setattr(demo_module, "QUICK", TINY)
    try:
        args = ["demo", "--quick", "--semantics", "reprefill", "--out", str(out), "--format", "json"]
        result = CliRunner().invoke(app, args)
    finally:
        patch.undo()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    return out, summary, {row["stage"]: row for row in summary["rows"]}


def test_reprefill_demo_trains_reprefill_and_decodes_through_npr_serve(served_demo):
    out, summary, rows = served_demo
    assert summary["semantics"] == "reprefill"
    for name in ("sft", "papo"):  # both checkpoints record what they were trained to compute
        assert json.loads((out / name / "config.json").read_text())["npr_semantics"] == "reprefill"
    assert rows["base model"]["engine"] == "torch"
    assert rows["SFT (NPR-Beta)"]["engine"] == rows["PAPO (NPR)"]["engine"] == "sglang"
    for folder in ("eval-sft", "eval-papo", "speed-papo"):
        assert json.loads((out / folder / "settings.json").read_text())["engine"] == "sglang"
    assert list((out / "weights").iterdir()), "PAPO pushed no weights to the server"
    steps = [e for e in json.loads((out / "papo" / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(steps) == TINY.papo_steps
    # Rollouts sampled by the server, log π recomputed by the trainer's reprefill view: the same numbers.
    assert all(step["npr/onpolicy_max_abs_diff"] < 1e-4 for step in steps), steps
