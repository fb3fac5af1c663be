"""What ``npr eval`` and ``npr eval compare`` print: rich tables built from a summary or a comparison.

Built here, not in the CLI, so the terminal shows the same numbers, names and notes as report.md.
Cells fold instead of being cut with an ellipsis: a model path is only useful whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .report import above_ideal, batch_sizes, pct, times

if TYPE_CHECKING:
    from rich.table import Table

    from .compare import Comparison
    from .run import EvalSummary


def summary_table(summary: EvalSummary) -> Table:
    """One column per decoding mode: accuracy, format, parallelism, then speed as report.md has it."""
    from rich.table import Table

    table = Table(title=f"{summary.benchmark.name}: {summary.benchmark.problems} problems")
    table.add_column("metric", min_width=16)  # wraps between words only when the terminal is narrow
    for mode in summary.metrics:
        table.add_column(mode, justify="right", overflow="fold", min_width=_longest_word(mode))
    ms = list(summary.metrics.values())
    k = ms[0].k
    rows = [
        (f"avg@{k} (%)", [pct(m.avg_at_k) for m in ms]),
        (f"pass@{k} (%)", [pct(m.pass_at_k) for m in ms]),
        (f"maj@{k} (%)", [pct(m.maj_at_k) for m in ms]),
        *((f"valid {p} (%)", [pct(m.format_valid[p]) for m in ms]) for p in ms[0].format_valid),
        ("parallel rate (%)", [pct(m.parallel_trigger_rate) for m in ms]),
        ("mean width / depth", [f"{m.mean_width:.2f} / {m.mean_depth:.2f}" for m in ms]),
        ("tokens / critical path", [f"{m.mean_total_tokens:.1f} / {m.mean_critical_path_tokens:.1f}" for m in ms]),
        ("ideal speed-up", [times(m.ideal_speedup) for m in ms]),
        ("batch size", [batch_sizes(m) for m in ms]),
        ("elapsed (s)", [f"{m.elapsed:.2f}" for m in ms]),
        ("throughput (tokens/s)", [f"{m.tokens_per_second:.1f}" for m in ms]),
        ("latency (s, mean)", [f"{m.mean_latency:.3f}" for m in ms]),
    ]
    for name, values in rows:
        table.add_row(name, *values)
    return table


def speedup_lines(summary: EvalSummary) -> list[str]:
    """The measured speed-up over the baseline beside the ideal, and why it is above the ideal if it is."""
    if summary.speedup is None:
        return []
    s = summary.speedup
    baseline = next(m for m in summary.metrics if m != "parallel")
    line = (
        f"measured speed-up over {baseline}: elapsed {times(s.elapsed)}, latency {times(s.latency)}, "
        f"decode steps {times(s.steps)} (ideal {times(s.ideal)})"
    )
    note = above_ideal(summary.metrics, s)
    return [line, note] if note else [line]


def comparison_table(comparison: Comparison) -> Table:
    """Runs side by side, then each later column's difference from the first ("Δ NAME" = NAME − first)."""
    from rich.table import Table

    reference = comparison.columns[0] if comparison.columns else ""
    table = Table(caption=f"Δ X = X − {reference}" if len(comparison.columns) > 1 else None)
    table.add_column("metric", min_width=16)  # wraps between words only when the terminal is narrow
    for header in [*comparison.columns, *(f"Δ {column}" for column in comparison.columns[1:])]:
        table.add_column(header, justify="right", overflow="fold", min_width=_longest_word(header))
    for row in comparison.rows:
        table.add_row(row.metric, *row.values, *row.differences)
    return table


def _longest_word(header: str) -> int:
    """A column never narrower than its header's longest word, so headers wrap between words only."""
    return max(map(len, header.split()), default=1)
