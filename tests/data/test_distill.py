"""The distillation job (``npr_toolkit.data.distill``): inputs, judging, selection, outputs, resume.

The engine path (``--model``) runs the real torch engine on the toy checkpoint (marked slow).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from npr_toolkit.data import distill
from npr_toolkit.data.distill import DistillConfig, index_rollouts, prompt_messages, run_distill
from npr_toolkit.data.distill_report import Selection, problem_source
from npr_toolkit.data.problems import load_problems
from npr_toolkit.data.records import BetaExample, Problem
from npr_toolkit.toy.task import make_problems, noisy_trajectory, reference_trajectory

# --- fixtures ------------------------------------------------------------------------------------

VALID = """<guideline>
<plan>1: add the first pair</plan>
<plan>2: add the second pair</plan>
</guideline>
<step>
1: 1+2=3
</step>
<step>
2: 3+4=7
</step>
<takeaway>
3+7=10
</takeaway>
so the answer is \\boxed{ANSWER}"""

ONE_BRANCH = """<guideline>
<plan>1: add everything</plan>
</guideline>
<step>
1: 1+2+3+4=10
</step>
<takeaway>
done
</takeaway>
\\boxed{10}"""

UNNUMBERED = VALID.replace("<plan>1: ", "<plan>").replace("ANSWER", "10")


def write_lines(path: Path, items: list[Any]) -> Path:
    """JSON lines; a str item is written raw (to make broken lines)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items), encoding="utf-8")
    return path


def rollout(rid: str, pid: str, completion: str, prompt: str = "Compute: (1+2)+(3+4)") -> dict[str, str]:
    return {"id": rid, "problem_id": pid, "prompt": prompt, "completion": completion}


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """Two problems; known outcomes for each rollout; three bad rollout lines."""
    problems = write_lines(
        tmp_path / "problems.jsonl",
        [
            {"id": "toy-1", "problem": "(1+2)+(3+4)", "answer": "10"},
            {"id": "gsm-7", "problem": "half of one", "answer": "0.5", "source": "gsm"},
        ],
    )
    rollouts = write_lines(
        tmp_path / "rollouts.jsonl",
        [
            rollout("a", "toy-1", VALID.replace("ANSWER", "11")),  # wrong answer
            rollout("b", "toy-1", UNNUMBERED),  # correct, E203
            rollout("c", "toy-1", VALID.replace("ANSWER", "10") + " and that is all of it"),  # correct, longer
            rollout("d", "toy-1", ONE_BRANCH),  # correct, width 1
            rollout("e", "toy-1", VALID.replace("ANSWER", "10")),  # correct, shorter than c
            rollout("f", "gsm-7", VALID.replace("ANSWER", "\\frac{1}{2}"), prompt="Half of one?"),
            rollout("g", "gsm-7", VALID.replace("\\boxed{ANSWER}", "no box")),  # no answer, E206
            "{not json",
            rollout("h", "nope", VALID),
            {"id": "i", "problem_id": "toy-1", "prompt": "x"},
            rollout("a", "toy-1", VALID),  # duplicate id
        ],
    )
    return problems, rollouts


def config(tmp_path: Path, problems: Path, rollouts: Path, **options: Any) -> DistillConfig:
    return DistillConfig(problems=problems, rollouts=rollouts, out=tmp_path / "out" / "beta.jsonl", **options)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- inputs --------------------------------------------------------------------------------------


def test_bad_problems_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            {"id": "p1", "problem": "q", "answer": "1"},
            "not json",
            {"id": "p2", "problem": "q"},
            {"id": "p3", "problem": "q", "answer": "  "},
            {"id": "p1", "problem": "again", "answer": "2"},
            {"id": 4, "problem": "numeric id", "answer": 5},
        ],
    )
    problems, bad = load_problems(path)
    assert [p.id for p in problems] == ["p1", "4"]
    assert [b.split(": ", 1)[0] for b in bad] == [f"{path}:2", f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "invalid JSON" in bad[0]
    assert "'answer'" in bad[1] and "required" in bad[1]
    assert "must not be empty" in bad[2]
    assert f"duplicate problem id 'p1' (first at {path}:1)" in bad[3]


def test_bad_rollouts_are_reported_with_file_and_line(small: tuple[Path, Path]) -> None:
    problems_path, rollouts_path = small
    problems, _ = load_problems(problems_path)
    valid, bad = index_rollouts(rollouts_path, {p.id: p for p in problems})
    assert list(valid) == list(range(7))  # records a..g
    assert [b.split(": ", 1)[0] for b in bad] == [f"{rollouts_path}:{n}" for n in (8, 9, 10, 11)]
    assert "unknown problem id 'nope'" in bad[1]
    assert "'completion'" in bad[2]
    assert f"duplicate rollout id 'a' (first at {rollouts_path}:1)" in bad[3]


def test_problem_source_from_field_or_id_prefix() -> None:
    assert problem_source(Problem(id="aime25-3", problem="q", answer="1")) == "aime25"
    assert problem_source(Problem(id="toy-train-00001", problem="q", answer="1")) == "toy-train"
    assert problem_source(Problem(id="17", problem="q", answer="1")) == "default"
    assert problem_source(Problem(id="x-1", problem="q", answer="1", source="math500")) == "math500"


def test_prompt_messages_undo_a_chat_template() -> None:
    assert [m.model_dump() for m in prompt_messages("Compute: 1+1")] == [{"role": "user", "content": "Compute: 1+1"}]
    templated = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCompute: 1+1<|im_end|>\n<|im_start|>assistant\n"
    )
    assert [m.model_dump() for m in prompt_messages(templated)] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Compute: 1+1"},
    ]


# --- selection -----------------------------------------------------------------------------------


def _result(index: int, pid: str, total: int, widths: list[int], grade: str = "correct", codes=()) -> dict[str, Any]:
    speedup = total / (total - 10 * (max(widths) - 1))
    stats = {"total": total, "widths": widths, "ideal_speedup": speedup}
    return {"index": index, "problem_id": pid, "grade": grade, "codes": list(codes), "stats": stats}


def test_selection_policies_and_per_problem() -> None:
    results = [
        _result(0, "p", 100, [2]),
        _result(1, "p", 80, [2], grade="wrong"),
        _result(2, "p", 90, [3]),
        _result(3, "p", 50, [2], codes=["E203"]),
        _result(4, "p", 70, [2]),
        _result(5, "q", 60, [2]),
    ]
    ids = {}
    for policy in ("first", "shortest", "most-parallel"):
        selection = Selection(policy, 2)
        for result in results:
            selection.add(result)
        ids[policy] = selection.chosen()
    assert ids["first"] == {"p": [0, 2], "q": [5]}
    assert ids["shortest"] == {"p": [4, 2], "q": [5]}
    assert ids["most-parallel"] == {"p": [2, 4], "q": [5]}


# --- the job -------------------------------------------------------------------------------------


def test_end_to_end_on_a_rollouts_file(tmp_path: Path, small: tuple[Path, Path]) -> None:
    problems, rollouts = small
    cfg = config(tmp_path, problems, rollouts, workers=0, select="shortest")
    result = run_distill(cfg)
    report = result.report

    beta = [BetaExample.model_validate(r) for r in read_jsonl(cfg.out)]
    assert [b.id for b in beta] == ["d", "f"]  # shortest accepted of each problem
    assert beta[0].messages[0].model_dump() == {"role": "user", "content": "Compute: (1+2)+(3+4)"}
    assert beta[0].messages[1].model_dump() == {"role": "assistant", "content": ONE_BRANCH}
    assert beta[1].messages[0].content == "Half of one?"
    assert beta[1].answer == "0.5"
    assert beta[0].stats["widths"] == [1] and beta[0].stats["problem_id"] == "toy-1"

    assert (report["problems"], report["samples"], report["accepted"], report["selected"]) == (2, 7, 4, 2)
    assert report["grades"] == {"correct": 5, "no_answer": 1, "wrong": 1}
    assert report["rejections"] == {
        "E203 plan-numbering": 1,
        "E206 missing-answer": 1,
        "no-answer": 1,
        "wrong-answer": 1,
    }
    assert report["by_source"]["toy"] == {
        "problems": 1,
        "solved": 1,
        "samples": 5,
        "accepted": 3,
        "acceptance_rate": 0.6,
    }
    assert report["by_source"]["gsm"]["accepted"] == 1
    assert report["width_histogram"] == {"samples": {"1": 1, "2": 6}, "selected": {"1": 1, "2": 1}}
    assert report["depth_histogram"]["samples"] == {"1": 7}
    assert report["bad_input"]["count"] == 4
    assert report["bad_input"]["by_file"] == {str(problems): 0, str(rollouts): 4}
    assert report["totals"]["selected"]["chars"] == sum(len(b.messages[1].content) for b in beta)
    assert json.loads(cfg.report_path.read_text()) == report
    assert not cfg.work_dir.exists()


def test_filter_options_require_parallel_and_min_width(tmp_path: Path, small: tuple[Path, Path]) -> None:
    problems, rollouts = small
    loose = run_distill(config(tmp_path, problems, rollouts, workers=0, per_problem=5)).report
    assert loose["accepted"] == 4
    strict = run_distill(config(tmp_path, problems, rollouts, workers=0, per_problem=5, require_parallel=True)).report
    assert strict["accepted"] == 3 and strict["rejections"]["F301 not-parallel"] == 1
    wide = run_distill(config(tmp_path, problems, rollouts, workers=0, per_problem=5, min_width=3)).report
    assert wide["accepted"] == 0 and wide["rejections"]["F302 too-narrow"] == 7


def _toy_inputs(tmp_path: Path, problems: int, per_problem: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    records = make_problems(problems, seed=3)
    rows = []
    for p in records:
        for k in range(per_problem):
            text = reference_trajectory(p["problem"]) if k == per_problem - 1 else noisy_trajectory(p["problem"], rng)
            rows.append(rollout(f"{p['id']}-{k}", p["id"], text, prompt=f"Compute: {p['problem']}"))
    return write_lines(tmp_path / "problems.jsonl", records), write_lines(tmp_path / "rollouts.jsonl", rows)


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distill, "CHUNK", 16)
    problems, rollouts = _toy_inputs(tmp_path, problems=20, per_problem=5)  # 100 rollouts, 7 chunks
    reference = config(tmp_path / "a", problems, rollouts, workers=0, select="most-parallel", per_problem=2)
    run_distill(reference)

    cfg = config(tmp_path / "b", problems, rollouts, workers=0, select="most-parallel", per_problem=2)

    def stop_after_three_chunks(done: int, total: int) -> None:
        if done >= 48:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_distill(cfg, progress=stop_after_three_chunks)
    assert not cfg.out.exists() and len((cfg.work_dir / "journal.jsonl").read_text().splitlines()) == 3

    seen: list[tuple[int, int]] = []
    resumed = run_distill(cfg, progress=lambda done, total: seen.append((done, total)))
    assert resumed.resumed_samples == 48 and seen[0] == (48, 100) and seen[-1] == (100, 100)
    assert cfg.out.read_bytes() == reference.out.read_bytes()
    strip = lambda r: {k: v for k, v in r.items() if k not in ("options", "outputs")}  # noqa: E731 (paths differ)
    assert strip(resumed.report) == strip(json.loads(reference.report_path.read_text()))


def test_changed_judging_options_discard_the_work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distill, "CHUNK", 16)
    problems, rollouts = _toy_inputs(tmp_path, problems=8, per_problem=4)
    cfg = config(tmp_path, problems, rollouts, workers=0)

    def interrupt(done: int, total: int) -> None:
        if done:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_distill(cfg, progress=interrupt)
    # Selection options act at the end: the judged chunks are reused.
    with pytest.raises(_Interrupt):
        run_distill(cfg.model_copy(update={"select": "shortest", "per_problem": 3}), progress=interrupt)
    reused = run_distill(cfg.model_copy(update={"select": "shortest", "per_problem": 3}))
    assert not reused.restarted and reused.resumed_samples == 16

    with pytest.raises(_Interrupt):
        run_distill(cfg, progress=interrupt)
    other = run_distill(cfg.model_copy(update={"profile": "lenient"}))
    assert other.restarted and other.resumed_samples == 0 and other.report["samples"] == 32


def test_a_foreign_work_dir_is_not_deleted(tmp_path: Path, small: tuple[Path, Path]) -> None:
    problems, rollouts = small
    cfg = config(tmp_path, problems, rollouts, workers=0)
    cfg.work_dir.mkdir(parents=True)
    (cfg.work_dir / "precious.txt").write_text("keep me")
    with pytest.raises(distill.InputError, match="not a distill work folder"):
        run_distill(cfg)
    assert (cfg.work_dir / "precious.txt").exists()


def test_option_conflicts_are_rejected(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    with pytest.raises(ValueError, match="exactly one of --rollouts or --model"):
        DistillConfig(problems=p, out=p)
    with pytest.raises(ValueError, match="--model needs --samples"):
        DistillConfig(problems=p, out=p, model="m")
    with pytest.raises(ValueError, match="--samples applies to --model only"):
        DistillConfig(problems=p, out=p, rollouts=p, samples=2)
    with pytest.raises(ValueError, match="unknown profile"):
        DistillConfig(problems=p, out=p, rollouts=p, profile="loose")


# --- the engine path -----------------------------------------------------------------------------


@pytest.mark.slow
def test_model_path_samples_rounds_and_resumes(tmp_path: Path) -> None:
    from npr_toolkit.toy.model import save_toy_model
    from npr_toolkit.toy.task import PROMPT_TEMPLATE

    model = save_toy_model(tmp_path / "toy")
    problems = write_lines(tmp_path / "p.jsonl", make_problems(1, seed=5))
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(PROMPT_TEMPLATE)
    options = {"model": str(model), "samples": 2, "max_tries": 2, "max_new_tokens": 8, "workers": 0, "seed": 1}
    options.update(device="cpu", prompt_file=prompt_file, problems=problems)
    reference = DistillConfig(out=tmp_path / "a" / "beta.jsonl", **options)
    report = run_distill(reference).report
    # An untrained model never gets an answer right: the problem uses every round.
    assert (report["mode"], report["samples"], report["accepted"], report["selected"]) == ("model", 4, 0, 0)
    assert report["totals"]["samples"]["tokens"] > 0
    drawn = read_jsonl(reference.rollouts_path)
    pid = drawn[0]["problem_id"]
    assert [r["id"] for r in drawn] == [f"{pid}/r0/s0", f"{pid}/r0/s1", f"{pid}/r1/s0", f"{pid}/r1/s1"]
    assert drawn[0]["prompt"] == PROMPT_TEMPLATE.replace("{problem}", make_problems(1, seed=5)[0]["problem"])
    assert drawn[2]["meta"]["round"] == 1 and drawn[0]["meta"]["seed"] != drawn[2]["meta"]["seed"]

    cfg = DistillConfig(out=tmp_path / "b" / "beta.jsonl", **options)

    def interrupt(done: int, total: int) -> None:
        if done >= 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run_distill(cfg, progress=interrupt)
    resumed = run_distill(cfg)
    assert resumed.resumed_samples == 2
    assert cfg.rollouts_path.read_bytes() == reference.rollouts_path.read_bytes()
    assert cfg.out.read_bytes() == reference.out.read_bytes()


def test_step_numbers_are_written_in_the_engine_form(tmp_path: Path, toy_tokenizer) -> None:
    """``<step>1: x`` would leave '1' and ':' as targets the engine inserts itself at inference."""
    from npr_toolkit.format import tags
    from npr_toolkit.view import build_view

    written = VALID.replace("<step>\n1:", "<step>1:").replace("<step>\n2:", "<step> 2 :").replace("ANSWER", "10")
    problems = write_lines(tmp_path / "p.jsonl", [{"id": "toy-1", "problem": "(1+2)+(3+4)", "answer": "10"}])
    rollouts = write_lines(tmp_path / "r.jsonl", [rollout("a", "toy-1", written)])
    cfg = config(tmp_path, problems, rollouts, workers=0)
    assert run_distill(cfg).report["accepted"] == 1  # strict accepts both forms
    (example,) = read_jsonl(cfg.out)
    completion = example["messages"][-1]["content"]
    assert completion == VALID.replace("ANSWER", "10")
    assert tags.branch_header(1) in completion and tags.branch_header(2) in completion

    def targets(text: str) -> str:
        view = build_view(toy_tokenizer.encode(text), toy_tokenizer, prompt_length=0)
        pairs = zip(view.input_ids.tolist(), view.generated.tolist(), strict=True)
        return "".join(toy_tokenizer.decode([i]) for i, generated in pairs if generated)

    assert "1:" in targets(written).split("</plan>")[-1]  # the raw form: the number is a target
    after_plans = targets(completion).split("</plan>")[-1]
    assert "1:" not in after_plans and "2:" not in after_plans
