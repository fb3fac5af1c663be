"""The eval path without an engine: grading edge cases, format checks, seeds, resume guards."""

from __future__ import annotations

import hashlib
import json

import pytest

from npr_toolkit.data.grading import Grader
from npr_toolkit.data.io import InputError
from npr_toolkit.data.prompts import load_template
from npr_toolkit.eval.benchmarks import BenchmarkError
from npr_toolkit.eval.run import (
    JOURNAL_FILE,
    JOURNAL_VERSION,
    PINNED_SETTINGS,
    SETTINGS_FILE,
    EvalConfig,
    assess,
    run_eval,
    sample_seed,
)

BLOCK = (
    "<guideline>\n<plan>1: add</plan>\n<plan>2: multiply</plan>\n</guideline>\n"
    "<step>\n1: 2+2=4\n</step>\n<step>\n2: 2*2=4\n</step>\n<takeaway>\nboth give 4\n</takeaway>\n"
)


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=0) as g:  # in-process: these cases are known not to hang
        yield g


@pytest.mark.parametrize(
    ("text", "gold", "status", "predicted"),
    [
        (BLOCK + "So \\boxed{4}.", "4", "correct", "4"),
        (BLOCK + "So \\boxed{5}.", "4", "wrong", "5"),
        (BLOCK + "no box at all", "4", "no_answer", None),
        (BLOCK + "\\boxed{}", "4", "no_answer", ""),
        ("\\boxed{\\frac{1}{2}}", "0.5", "correct", "\\frac{1}{2}"),  # equivalent forms
        ("first \\boxed{3}, finally \\boxed{4}", "4", "correct", "4"),  # the last box counts
        ("first \\boxed{4}, finally \\boxed{3}", "4", "wrong", "3"),
        ("\\boxed{7} then a truncated \\boxed{12", "7", "correct", "7"),  # unbalanced box ignored
        ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", "correct", "\\text{Evelyn}"),
        ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", "correct", "(3, \\pi/2)"),
        ("\\boxed{x^{2}+1}", "1+x^2", "correct", "x^{2}+1"),
        ("\\boxed{Mr. Smith}", "mr. smith", "wrong", "Mr. Smith"),  # text answers keep their case
        ("\\boxed{Mr.  Smith}", "Mr. Smith", "correct", "Mr.  Smith"),
        # math-verify's own parser lowercases every symbol (documented in data/grading.py and README):
        ("\\boxed{X^2+1}", "x^2+1", "correct", "X^2+1"),
    ],
)
def test_grading_edge_cases_through_the_eval_path(grader, text, gold, status, predicted):
    found = assess(text, gold, grader)
    assert (found.grade.status, found.predicted) == (status, predicted)


def test_format_checks_per_profile(grader):
    good = assess(BLOCK + "\\boxed{4}", "4", grader)
    assert good.valid == {"strict": True, "lenient": True, "npr-compat": True}
    assert good.diagnostics == {} and good.depth == 1

    unnumbered = assess(BLOCK.replace("1: add", "add") + "\\boxed{4}", "4", grader)
    assert unnumbered.valid == {"strict": False, "lenient": True, "npr-compat": True}
    assert any("E203" in d for d in unnumbered.diagnostics["strict"])

    miscounted = BLOCK.replace("<step>\n2: 2*2=4\n</step>\n", "")
    bad = assess(miscounted + "\\boxed{4}", "4", grader)
    assert not any(bad.valid.values())
    assert all(any("E101" in d for d in ds) for ds in bad.diagnostics.values())
    assert bad.grade.status == "correct"  # format and correctness are counted apart

    plain = assess("just text \\boxed{4}", "4", grader)
    assert plain.valid["lenient"] and not plain.valid["strict"] and plain.depth == 0


def test_sample_seeds_are_stable_and_distinct():
    seeds = {sample_seed(0, f"p{i}", s) for i in range(50) for s in range(8)}
    assert len(seeds) == 400
    assert sample_seed(0, "p1", 3) == sample_seed(0, "p1", 3)
    assert sample_seed(0, "p1", 3) != sample_seed(1, "p1", 3)
    assert all(0 <= s < 2**31 for s in seeds)


def bench_file(tmp_path):
    path = tmp_path / "mini.jsonl"
    path.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    return path


def test_errors_before_any_decoding(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BenchmarkError, match="no such benchmark file"):
        run_eval(EvalConfig(bench=str(tmp_path / "missing.jsonl"), model="m", out=out))
    bench = bench_file(tmp_path)
    with pytest.raises(InputError, match="no such prompt file"):
        run_eval(EvalConfig(bench=str(bench), model="m", out=out, prompt_file=tmp_path / "none.txt"))
    template = tmp_path / "t.txt"
    template.write_text("no placeholder here")
    with pytest.raises(InputError, match="placeholder"):
        run_eval(EvalConfig(bench=str(bench), model="m", out=out, prompt_file=template))
    assert not out.exists()  # nothing written for a run that cannot start


def test_resuming_with_other_sampling_settings_is_refused(tmp_path, record):
    out = tmp_path / "out"
    out.mkdir()
    bench = bench_file(tmp_path)
    pinned = {"bench": str(bench), "model": "m", "temperature": 0.6}
    (out / SETTINGS_FILE).write_text(json.dumps(pinned))
    (out / JOURNAL_FILE).write_text(record(0, 0).model_dump_json() + "\n")
    with pytest.raises(InputError, match="different settings") as info:
        run_eval(EvalConfig(bench=str(bench), model="m", out=out, temperature=1.0))
    assert "temperature" in str(info.value) and "another --out" in str(info.value)


def started_run(tmp_path, journal: str) -> EvalConfig:
    """An output folder as an interrupted run leaves it: its pinned settings and this journal text."""
    config = EvalConfig(bench=str(bench_file(tmp_path)), model="m", out=tmp_path / "out")
    config.out.mkdir()
    pinned = {key: getattr(config, key) for key in PINNED_SETTINGS}
    pinned |= {"prompt_sha256": hashlib.sha256(load_template(None).encode()).hexdigest()}
    pinned |= {"journal_version": JOURNAL_VERSION}
    (config.out / SETTINGS_FILE).write_text(json.dumps(pinned))
    (config.out / JOURNAL_FILE).write_text(journal)
    return config


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"problem_id": "a", "sampl', "invalid JSON"),
        ("[1, 2]", "expected an object, got list"),
        ('{"problem_id": "a", "sample": "first"}', "not an `npr eval` sample (field 'problem_index': field required"),
    ],
)
def test_a_bad_journal_line_is_one_error_naming_file_and_line(tmp_path, record, second_line, message):
    good = record(0, 0, answer="2", problem_id="a").model_dump_json()
    config = started_run(tmp_path, f"{good}\n{second_line}\n{good}\n")
    with pytest.raises(InputError) as info:
        run_eval(config)
    assert str(info.value).startswith(f"{config.out / JOURNAL_FILE}:2: ")
    assert message in str(info.value) and "remove that line" in str(info.value)


def test_a_journal_of_another_version_is_not_resumed(tmp_path, record):
    config = started_run(tmp_path, record(0, 0, answer="2", problem_id="a").model_dump_json() + "\n")
    settings = json.loads((config.out / SETTINGS_FILE).read_text())
    del settings["journal_version"]  # written before the timing fields existed
    (config.out / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(InputError, match=r"different settings \(journal_version\)"):
        run_eval(config)
