"""What distillation records per sample, how it selects, and the report it folds from the journal.

Each judged sample becomes one compact journal record (``sample_result``). Selection and the report
are folds over those records in journal order (``Selection``, ``Tally``), so a corpus of any size
is summarised in memory proportional to the number of problems, never to the number of samples.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from typing import Any

from npr_toolkit.format import CODE_TABLE, Code

from .distill_config import DistillConfig, Policy
from .grading import Judged
from .records import Problem

Result = dict[str, Any]  # one journal record of a judged sample (``sample_result``)


def sample_result(
    index: int, rollout_id: str, problem_id: str, chars: int, judged: Judged, tokens: int | None = None
) -> Result:
    """The journal record of one judged sample (everything the report and selection need)."""
    return {
        "index": index,
        "id": rollout_id,
        "problem_id": problem_id,
        "grade": judged.grade.status,
        "predicted": judged.grade.predicted,
        "codes": judged.codes or [],
        "stats": judged.stats,
        "chars": chars,
        "tokens": tokens,
    }


def accepted(result: Result) -> bool:
    return result["grade"] == "correct" and not result["codes"]


_GRADE_REASON = {
    "wrong": "wrong-answer",
    "no_answer": "no-answer",
    "timeout": "grade-timeout",
    "error": "grade-error",
}


def rejection_reasons(result: Result) -> list[str]:
    """Why a sample was rejected: its grade (unless correct) and each distinct diagnostic code."""
    reasons = [] if result["grade"] == "correct" else [_GRADE_REASON[result["grade"]]]
    for code in dict.fromkeys(result["codes"]):
        reasons.append(f"{code} {CODE_TABLE[Code(code)][0]}")
    return reasons


def problem_source(problem: Problem) -> str:
    """The source a problem is counted under: its ``source`` field, else its id up to the last separator."""
    source = (problem.model_extra or {}).get("source")
    if isinstance(source, str) and source.strip():
        return source
    cut = max(problem.id.rfind(sep) for sep in "-_/:.")
    return problem.id[:cut] if cut > 0 else "default"


# --- selection -----------------------------------------------------------------------------------


def _policy_key(policy: Policy) -> Callable[[Result], tuple]:
    if policy == "first":
        return lambda r: (r["index"],)
    if policy == "shortest":
        return lambda r: (r["stats"]["total"], r["index"])
    return lambda r: (-r["stats"]["ideal_speedup"], -sum(r["stats"]["widths"]), r["index"])


class Selection:
    """Up to ``per_problem`` accepted samples per problem, best first by ``policy``, folded one at a time.

    ``first``: input (or sampling) order; ``shortest``: fewest characters; ``most-parallel``: highest
    ideal speed-up, then most branches. Ties fall back to order, so the choice is deterministic. Only
    (key, index) pairs are kept: memory grows with problems, not samples.
    """

    def __init__(self, policy: Policy, per_problem: int):
        self.key = _policy_key(policy)
        self.per_problem = per_problem
        self.best: dict[str, list[tuple[tuple, int]]] = {}

    def add(self, result: Result) -> None:
        if not accepted(result):
            return
        found = self.best.setdefault(result["problem_id"], [])
        bisect.insort(found, (self.key(result), result["index"]))
        del found[self.per_problem :]

    def chosen(self) -> dict[str, list[int]]:
        """The selected sample indices of each problem that has any, best first."""
        return {pid: [index for _, index in found] for pid, found in self.best.items()}


# --- report --------------------------------------------------------------------------------------


class _Totals:
    def __init__(self) -> None:
        self.samples = self.chars = self.critical_path = self.tokens = 0
        self.counted_tokens = False

    def add(self, result: Result) -> None:
        self.samples += 1
        self.chars += result["chars"]
        if result["stats"] is not None:
            self.critical_path += result["stats"]["critical_path"]
        if result["tokens"] is not None:
            self.tokens += result["tokens"]
            self.counted_tokens = True

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "chars": self.chars,
            "critical_path_chars": self.critical_path,
            "tokens": self.tokens if self.counted_tokens else None,
        }


class _Shapes:
    """Width and depth histograms of the samples that have statistics."""

    def __init__(self) -> None:
        self.widths: Counter[int] = Counter()
        self.depths: Counter[int] = Counter()

    def add(self, result: Result) -> None:
        if result["stats"] is not None:
            self.widths.update(result["stats"]["widths"])
            self.depths[result["stats"]["depth"]] += 1


def _histogram(counts: Counter[int]) -> dict[str, int]:
    return {str(k): counts[k] for k in sorted(counts)}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


class Tally:
    """The report's counts, folded over every sample (``add``) and then every selected one (``add_selected``)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        self.source_of = {problem.id: problem_source(problem) for problem in problems}
        self.samples = self.accepted = 0
        self.grades: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.by_source: dict[str, Counter[str]] = {source: Counter() for source in self.source_of.values()}
        self.shapes, self.selected_shapes = _Shapes(), _Shapes()
        self.totals = {"samples": _Totals(), "accepted": _Totals(), "selected": _Totals()}

    def add(self, result: Result) -> None:
        ok = accepted(result)
        self.samples += 1
        self.accepted += ok
        self.grades[result["grade"]] += 1
        self.reasons.update(rejection_reasons(result))
        row = self.by_source[self.source_of[result["problem_id"]]]
        row["samples"] += 1
        row["accepted"] += ok
        self.shapes.add(result)
        self.totals["samples"].add(result)
        if ok:
            self.totals["accepted"].add(result)

    def add_selected(self, result: Result) -> None:
        self.selected_shapes.add(result)
        self.totals["selected"].add(result)

    def report(self, config: DistillConfig, chosen: dict[str, list[int]], bad: dict[str, list[str]]) -> dict[str, Any]:
        """The job's report (``OUT.report.json``): a pure function of inputs and journal, so reruns agree."""
        by_source: dict[str, dict[str, Any]] = {}
        for problem in self.problems:
            source = self.source_of[problem.id]
            row = by_source.setdefault(source, {"problems": 0, "samples": 0, "accepted": 0, "solved": 0})
            row["problems"] += 1
            row["solved"] += problem.id in chosen
        for source, row in by_source.items():
            row["samples"], row["accepted"] = self.by_source[source]["samples"], self.by_source[source]["accepted"]
            row["acceptance_rate"] = _rate(row["accepted"], row["samples"])
        bad_count = sum(len(v) for v in bad.values())
        return {
            "mode": "model" if config.model is not None else "rollouts",
            "options": config.model_dump(mode="json", exclude={"workers"}),
            "problems": len(self.problems),
            "problems_solved": len(chosen),
            "samples": self.samples,
            "accepted": self.accepted,
            "rejected": self.samples - self.accepted,
            "selected": self.totals["selected"].samples,
            "acceptance_rate": _rate(self.accepted, self.samples),
            "grades": dict(sorted(self.grades.items())),
            "rejections": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_source": dict(sorted(by_source.items())),
            "width_histogram": {
                "samples": _histogram(self.shapes.widths),
                "selected": _histogram(self.selected_shapes.widths),
            },
            "depth_histogram": {
                "samples": _histogram(self.shapes.depths),
                "selected": _histogram(self.selected_shapes.depths),
            },
            "totals": {name: totals.to_json() for name, totals in self.totals.items()},
            "bad_input": {
                "count": bad_count,
                "by_file": {k: len(v) for k, v in bad.items()},
                "errors": [error for errors in bad.values() for error in errors],
            },
            "outputs": {
                "out": str(config.out),
                "report": str(config.report_path),
                **({"rollouts": str(config.rollouts_path)} if config.model is not None else {}),
                **({"dataset": str(config.save_to_disk)} if config.save_to_disk is not None else {}),
            },
        }
