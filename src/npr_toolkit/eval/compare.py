"""Side-by-side table of several ``npr eval`` runs, for ``npr eval compare DIR1 DIR2 ...``.

Each run contributes one column per decoding mode it has ("DIR" for parallel, "DIR (serial)" for its
baseline), and each row is one metric, formatted as in report.md. Every other column is also given as
a difference against the first one (the reference), since the change is what a comparison is for.
Raw numbers travel beside the formatted ones so ``--format json`` loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel

from npr_toolkit.format import PROFILES

from .metrics import Metrics
from .report import Results, batch_sizes, load_results, pct, times


class Row(BaseModel):
    metric: str
    values: list[str]  # formatted, one per column
    raw: list[float | str | None]
    differences: list[str]  # formatted, column i minus the first column, for each column after the first
    raw_differences: list[float | None]


class Comparison(BaseModel):
    columns: list[str]
    rows: list[Row]


_Cell = Callable[[Results, Metrics], float | str | None]
_Format = Callable[[float], str]


class _Metric(NamedTuple):
    """One row: its name, how to read it from a run, how to show a value and a difference (text rows: None)."""

    name: str
    get: _Cell
    show: _Format | None = None
    show_difference: _Format | None = None


def _decimals(places: int) -> tuple[_Format, _Format]:
    return (lambda v: f"{v:.{places}f}"), (lambda v: f"{v:+.{places}f}")


PERCENT: tuple[_Format, _Format] = (pct, lambda v: f"{100 * v:+.1f}")
RATIO: tuple[_Format, _Format] = (times, lambda v: f"{v:+.2f}x")


def _speedup(field: str) -> _Cell:
    return lambda r, m: getattr(r.speedup, field) if r.speedup and m.mode == "parallel" else None


def _metrics() -> list[_Metric]:
    rows = [
        _Metric("benchmark", lambda r, m: r.benchmark.name),
        _Metric("model", lambda r, m: str(r.settings.get("model"))),
        _Metric("problems x k", lambda r, m: f"{m.problems} x {m.k}"),
        _Metric("batch size", lambda r, m: batch_sizes(m)),
        _Metric("avg@k (%)", lambda r, m: m.avg_at_k, *PERCENT),
        _Metric("pass@k (%)", lambda r, m: m.pass_at_k, *PERCENT),
        _Metric("maj@k (%)", lambda r, m: m.maj_at_k, *PERCENT),
    ]
    rows += [_Metric(f"valid {p} (%)", (lambda r, m, p=p: m.format_valid.get(p, 0.0)), *PERCENT) for p in PROFILES]
    rows += [
        _Metric("parallel rate (%)", lambda r, m: m.parallel_trigger_rate, *PERCENT),
        _Metric("mean width", lambda r, m: m.mean_width, *_decimals(2)),
        _Metric("mean depth", lambda r, m: m.mean_depth, *_decimals(2)),
        _Metric("tokens (mean)", lambda r, m: m.mean_total_tokens, *_decimals(1)),
        _Metric("critical path (mean)", lambda r, m: m.mean_critical_path_tokens, *_decimals(1)),
        _Metric("ideal speed-up", lambda r, m: m.ideal_speedup, *RATIO),
        _Metric("decode steps (mean)", lambda r, m: m.mean_steps, *_decimals(1)),
        _Metric("elapsed (s)", lambda r, m: m.elapsed, *_decimals(2)),
        _Metric("tokens/s", lambda r, m: m.tokens_per_second, *_decimals(1)),
        _Metric("latency (s, mean)", lambda r, m: m.mean_latency, *_decimals(3)),
        _Metric("decode-step ratio", _speedup("steps"), *RATIO),
        _Metric("measured speed-up (elapsed)", _speedup("elapsed"), *RATIO),
        _Metric("measured speed-up (latency)", _speedup("latency"), *RATIO),
    ]
    return rows


def compare_runs(run_dirs: Sequence[str | Path]) -> Comparison:
    """Load each run's results.json and lay their metrics side by side.

    Raises:
        InputError: a folder has no readable results.json.
    """
    columns: list[str] = []
    cells: list[tuple[Results, Metrics]] = []
    for run_dir in run_dirs:
        results = load_results(run_dir)
        label = Path(run_dir).name or str(run_dir)
        for mode, metrics in results.metrics.items():
            columns.append(label if mode == "parallel" else f"{label} ({mode})")
            cells.append((results, metrics))
    rows = []
    for metric in _metrics():
        raw = [metric.get(results, metrics) for results, metrics in cells]
        values = ["—" if v is None else metric.show(v) if metric.show else str(v) for v in raw]
        differences: list[float | None] = [
            v - raw[0] if metric.show_difference and isinstance(v, float) and isinstance(raw[0], float) else None
            for v in raw[1:]
        ]
        shown = ["" if d is None or metric.show_difference is None else metric.show_difference(d) for d in differences]
        rows.append(Row(metric=metric.name, values=values, raw=raw, differences=shown, raw_differences=differences))
    return Comparison(columns=columns, rows=rows)
