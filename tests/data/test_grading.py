"""Grading (``npr_toolkit.data.grading``): math-verify equivalence, box extraction, hard timeouts, and the
worker pool (checks in the workers, order, workers that die, SIGINT)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from npr_toolkit.data.grading import Grader, grade_one
from npr_toolkit.format import extract_boxed

# A power tower sympy evaluates in C: the SIGALRM cannot interrupt it, only killing the worker can.
PATHOLOGICAL = "9^{9^{9^{9}}}"


@pytest.fixture(scope="module", autouse=True)
def _math_verify_loaded():
    """Import math-verify outside any timed item (the first import takes seconds on a busy machine)."""
    assert grade_one("1", "1", timeout=120.0).correct


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "0.5"),
    ("070", "70"),
    ("70", "70.0"),
    ("(1,2]", "(1, 2]"),
    ("(-\\infty, 3)", "(-\\infty,3)"),
    ("\\{1,2,3\\}", "\\{3,2,1\\}"),
    ("30^\\circ", "30"),
    ("30^{\\circ}", "30"),
    ("\\text{east}", "East"),
    ("\\text{(B)}", "(B)"),
    ("x^2+1", "1+x^2"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
]

DIFFERENT = [
    ("\\frac{1}{3}", "0.5"),
    ("71", "70"),
    ("[1,2]", "(1,2]"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("\\text{west}", "East"),
    ("31^\\circ", "30"),
]


@pytest.mark.parametrize(("predicted", "gold"), EQUIVALENT)
def test_equivalent_forms_are_correct(predicted: str, gold: str) -> None:
    assert grade_one(predicted, gold).status == "correct"


@pytest.mark.parametrize(("predicted", "gold"), DIFFERENT)
def test_different_values_are_wrong(predicted: str, gold: str) -> None:
    assert grade_one(predicted, gold).status == "wrong"


@pytest.mark.parametrize("predicted", [None, "", "  "])
def test_missing_answer_is_no_answer(predicted: str | None) -> None:
    assert grade_one(predicted, "1").status == "no_answer"


def test_nested_braces_in_the_box_are_kept_whole() -> None:
    text = "so the result is \\boxed{\\frac{\\sqrt{2}}{2}} and we stop"
    assert extract_boxed(text) == "\\frac{\\sqrt{2}}{2}"
    assert grade_one(extract_boxed(text), "\\frac{1}{\\sqrt 2}").correct


def test_the_last_of_several_boxes_wins() -> None:
    text = "first guess \\boxed{3}, then checking again: \\boxed{\\frac{1}{2}}"
    assert extract_boxed(text) == "\\frac{1}{2}"
    assert grade_one(extract_boxed(text), "0.5").correct
    assert grade_one(extract_boxed(text), "3").status == "wrong"


def test_an_unbalanced_last_box_is_skipped() -> None:
    assert extract_boxed("\\boxed{12} and then \\boxed{\\frac{1}{2}") == "12"


def test_grader_keeps_order_across_processes() -> None:
    pairs = [("\\frac{1}{2}", "0.5"), ("070", "70"), ("1", "2"), (None, "3"), ("\\{1,2\\}", "\\{2,1\\}")]
    with Grader(workers=2, timeout=5.0) as grader:
        statuses = [g.status for g in grader.grade_many(pairs, chunk=2)]
    assert statuses == ["correct", "correct", "wrong", "no_answer", "correct"]


def test_pathological_answer_times_out_alone_and_quickly() -> None:
    pairs = [("070", "70"), (PATHOLOGICAL, "1"), ("\\frac{1}{2}", "0.5"), ("5", "6")]
    started = time.perf_counter()
    with Grader(workers=1, timeout=0.5, grace=1.0) as grader:
        grades = list(grader.grade_many(pairs))
    elapsed = time.perf_counter() - started
    assert [g.status for g in grades] == ["correct", "timeout", "correct", "wrong"]
    assert grades[1].predicted == PATHOLOGICAL
    assert elapsed < 10.0  # killed after timeout + grace, not after sympy finishes (never)


# --- the worker pool: checks in the workers, deaths, interrupts ---


class PidCheck:
    """A check reporting the process it ran in (as its one code); the answer is the text itself."""

    def __call__(self, text: str) -> SimpleNamespace:
        return SimpleNamespace(answer=text, codes=[str(os.getpid())], stats=None)


class CrashCheck:
    """Kills its own process on ``die-always``, and on ``die-once`` the first time only (a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, text: str) -> SimpleNamespace:
        if text == "die-always" or (text == "die-once" and not self.marker.exists()):
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return SimpleNamespace(answer="1", codes=[], stats=None)


def test_judge_many_checks_in_the_workers_and_keeps_order() -> None:
    items = [(str(i), str(i % 3)) for i in range(40)]
    with Grader(workers=2, check=PidCheck()) as grader:
        judged = list(grader.judge_many(items, chunk=4))
    assert [j.grade.status for j in judged] == ["correct" if i % 3 == i else "wrong" for i in range(40)]
    pids = {j.codes[0] for j in judged}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2


def test_the_structural_filter_gives_the_same_judgements_in_workers() -> None:
    from npr_toolkit.format import StructuralFilter
    from npr_toolkit.toy.task import make_problems, noisy_trajectory

    rng = random.Random(0)
    problems = make_problems(30, seed=1)
    items = [(noisy_trajectory(p["problem"], rng), p["answer"]) for p in problems]
    check = StructuralFilter("strict", require_parallel=True)
    with Grader(workers=0, check=check) as here, Grader(workers=2, check=check) as there:
        assert list(there.judge_many(items, chunk=7)) == list(here.judge_many(items))


def test_a_worker_that_dies_is_never_a_timeout(tmp_path: Path) -> None:
    """A killed worker's items are judged again, alone; only an item that kills its worker again is an error."""
    items = [("ok", "1"), ("die-once", "1"), ("ok", "1"), ("die-always", "1"), ("ok", "1")]
    with Grader(workers=1, timeout=5.0, check=CrashCheck(tmp_path / "died")) as grader:
        statuses = [j.grade.status for j in grader.judge_many(items)]
    assert statuses == ["correct", "correct", "correct", "error", "correct"]


def test_workers_ignore_sigint() -> None:
    """Ctrl-C reaches the whole process group: the workers carry on, stopping is the main process's call."""
    with Grader(workers=2) as grader:
        grader.start()
        workers = multiprocessing.active_children()
        assert len(workers) == 2
        time.sleep(0.5)  # past start-up: the workers are waiting for items
        for worker in workers:
            os.kill(worker.pid, signal.SIGINT)
        assert [g.status for g in grader.grade_many([("1", "1"), ("2", "3")])] == ["correct", "wrong"]
        assert all(worker.is_alive() for worker in workers)


SLOW = (
    "(x+1)^{12}",
    "x^12 + 12*x^11 + 66*x^10 + 220*x^9 + 495*x^8 + 792*x^7 + 924*x^6 + 792*x^5 + 495*x^4"
    " + 220*x^3 + 66*x^2 + 12*x + 1",
)  # ~1 s of sympy: the first batch finishes last


@pytest.mark.timeout(120)
def test_many_items_stream_through_a_bounded_window() -> None:
    """More items than the pool holds at once, finishing out of order: every one comes back, in order."""
    pairs = [SLOW] + [(str(i % 7), str(i % 5)) for i in range(1, 60)]
    with Grader(workers=2, timeout=30.0) as grader:
        statuses = [g.status for g in grader.grade_many(pairs, chunk=2)]
    assert statuses == ["correct"] + ["correct" if i % 7 == i % 5 else "wrong" for i in range(1, 60)]
