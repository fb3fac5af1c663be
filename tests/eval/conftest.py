"""Hand-made per-sample records and result folders for the eval tests (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from npr_toolkit.eval.metrics import SampleRecord, compute_metrics, compute_speedup
from npr_toolkit.eval.report import BenchmarkInfo, Results, write_outputs

VALID = {"strict": True, "lenient": True, "npr-compat": True}
INVALID = {"strict": False, "lenient": True, "npr-compat": False}


def _record(problem: int, sample: int, grade: str = "correct", **fields) -> SampleRecord:
    """A record whose vote cluster follows its grade (0 correct, 1 the one wrong answer "5") unless given."""
    base = {
        "problem_id": f"p{problem}",
        "problem_index": problem,
        "sample": sample,
        "answer": "4",
        "text": "<guideline>...</guideline> \\boxed{4}",
        "predicted": "4" if grade == "correct" else "5",
        "grade": grade,
        "valid": VALID,
        "widths": [2],
        "depth": 1,
        "total_tokens": 100,
        "critical_path_tokens": 60,
        "steps": 60,
        "latency": 1.0,
        "elapsed_share": 1.0,
    }
    data = base | fields
    if "vote" not in fields:
        answered = data["predicted"] is not None and data["predicted"].strip()
        data["vote"] = None if not answered else 0 if grade == "correct" else 1
    return SampleRecord(**data)


def _make_results(name: str = "toy", with_baseline: bool = True, model: str = "m") -> Results:
    """Two problems x k=2, parallel (and sequential) samples with known metrics."""
    samples = [
        _record(0, 0, "correct", widths=[2, 3], depth=1, total_tokens=120, critical_path_tokens=60),
        _record(0, 1, "wrong", widths=[1], depth=1, total_tokens=80, critical_path_tokens=80, valid=INVALID),
        _record(1, 0, "no_answer", predicted=None, widths=[], depth=0, total_tokens=50, critical_path_tokens=50),
        _record(1, 1, "correct", widths=[4], depth=2, total_tokens=150, critical_path_tokens=50),
    ]
    if with_baseline:
        samples += [
            _record(
                p,
                s,
                "correct" if p == 0 else "wrong",
                mode="sequential",
                widths=[],
                depth=1,
                total_tokens=100,
                critical_path_tokens=100,
                steps=100,
                latency=2.0,
                elapsed_share=2.0,
            )
            for p in range(2)
            for s in range(2)
        ]
    metrics = {"parallel": compute_metrics(samples, "parallel")}
    speedup = None
    if with_baseline:
        metrics["sequential"] = compute_metrics(samples, "sequential")
        speedup = compute_speedup(metrics["parallel"], metrics["sequential"])
    settings = {
        "model": model,
        "k": 2,
        "engine": "torch",
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 64,
        "seed": 0,
        "batch_size": 1,
    }
    return Results(
        settings=settings,
        benchmark=BenchmarkInfo(name=name, source=f"{name}.jsonl", problems=2),
        metrics=metrics,
        speedup=speedup,
        samples=samples,
    )


@pytest.fixture
def record():
    """Factory for one SampleRecord: ``record(problem, sample, grade, **overrides)``."""
    return _record


@pytest.fixture
def make_results():
    """Factory for a small Results with known metrics: ``make_results(name, with_baseline, model)``."""
    return _make_results


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run-a"
    write_outputs(_make_results(), out)
    return out
