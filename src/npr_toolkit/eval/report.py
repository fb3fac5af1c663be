"""Outputs of ``npr eval``: results.json, report.md and PNG plots, all rebuilt from per-sample records.

``results.json`` holds the run settings, the metrics of each decoding mode, the measured speed-up
and every sample (text, grade, diagnostics, statistics), so any number in the report can be traced
to the samples behind it, and ``npr eval compare`` reads runs back with ``load_results``.
``report.md`` carries two tables shaped like the paper's Table 2 (accuracy and parallelism) and
Table 3 (speed). Plots use matplotlib's Agg canvas directly (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from npr_toolkit.data.io import InputError, write_json_atomic
from npr_toolkit.display import percent, times
from npr_toolkit.format import PROFILES

from .metrics import Metrics, SampleRecord, Speedup

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILES = {
    "accuracy": "accuracy_vs_k.png",
    "widths": "width_histogram.png",
    "tokens": "tokens_vs_critical_path.png",
}


class BenchmarkInfo(BaseModel):
    name: str
    source: str
    problems: int


class Results(BaseModel):
    """The content of results.json."""

    settings: dict[str, Any]
    benchmark: BenchmarkInfo
    metrics: dict[str, Metrics]  # mode -> metrics ("parallel", and "sequential" with --baseline)
    speedup: Speedup | None = None
    samples: list[SampleRecord]


def load_results(run_dir: str | Path) -> Results:
    """Read one run's results.json.

    Raises:
        InputError: the folder has no results.json or it is not a results file of this tool.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise InputError(f"{run_dir}: no {RESULTS_FILE} (not an `npr eval` output folder?)")
    try:
        return Results.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InputError(f"{path}: not a valid results file: {str(exc).splitlines()[0]}") from None


# --- report.md ---------------------------------------------------------------------------------


def pct(value: float) -> str:
    return percent(value, sign=False)  # the headers carry the unit


def _accuracy_table(results: Results) -> list[str]:
    name = results.benchmark.name
    profiles = list(PROFILES)
    any_k = next(iter(results.metrics.values())).k
    head = [
        "Benchmark",
        "Decoding",
        f"avg@{any_k}",
        f"pass@{any_k}",
        f"maj@{any_k}",
        *(f"valid {p}" for p in profiles),
        "parallel rate",
        "mean width",
        "mean depth",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, m in results.metrics.items():
        row = [
            name,
            mode,
            pct(m.avg_at_k),
            pct(m.pass_at_k),
            pct(m.maj_at_k),
            *(pct(m.format_valid.get(p, 0.0)) for p in profiles),
            pct(m.parallel_trigger_rate),
            f"{m.mean_width:.2f}",
            f"{m.mean_depth:.2f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _speed_table(results: Results) -> list[str]:
    head = [
        "Benchmark",
        "Decoding",
        "tokens (mean)",
        "critical path (mean)",
        "ideal speed-up",
        "wall time (s)",
        "tokens/s",
        "measured speed-up (wall · tokens/s)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, m in results.metrics.items():
        if results.speedup is None:
            measured = "n/a (run with --baseline serial or sequential)"
        elif mode == "parallel":
            measured = f"{times(results.speedup.wall_time)} · {times(results.speedup.tokens_per_second)}"
        else:
            measured = "1.00x (baseline)"
        row = [
            results.benchmark.name,
            mode,
            f"{m.mean_total_tokens:.1f}",
            f"{m.mean_critical_path_tokens:.1f}",
            times(m.ideal_speedup),
            f"{m.wall_time:.2f}",
            f"{m.tokens_per_second:.1f}",
            measured,
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(values.items())) or "none"


def render_report(results: Results) -> str:
    """The markdown report: settings, the two tables, outcome counts and the plots."""
    s = results.settings
    b = results.benchmark
    lines = [
        f"# npr eval: {b.name} · {s.get('model', '?')}",
        "",
        f"{b.problems} problems from `{b.source}`, k = {s.get('k')} samples each; engine {s.get('engine')}, "
        f"temperature {s.get('temperature')}, top-p {s.get('top_p')}, max new tokens {s.get('max_new_tokens')}, "
        f"seed {s.get('seed')}.",
        "",
        "## Accuracy and parallelism",
        "",
        "Percentages. avg@k is the mean correctness over all k samples (the paper's headline number); pass@k is the "
        "unbiased estimator; maj@k is a majority vote over the k answers. *valid P* is the share of samples that pass "
        "format profile P; *parallel rate* is the share of samples with at least one block of width >= 2.",
        "",
        *_accuracy_table(results),
        "",
        "## Speed",
        "",
        "Tokens as decoded by the engine; the critical path counts, per block, only its longest branch. The ideal "
        "speed-up is total / critical-path tokens; the measured one compares parallel with sequential decoding of "
        "the same prompts in the same run.",
        "",
        *_speed_table(results),
        "",
        "## Outcomes",
        "",
    ]
    for mode, m in results.metrics.items():
        lines.append(f"- {mode}: grades: {_counts(m.grades)}; finish: {_counts(m.finish_reasons)}")
    lines += ["", "## Plots", ""]
    lines += [f"![{key}]({file})" for key, file in PLOT_FILES.items()]
    return "\n".join(lines) + "\n"


# --- plots -------------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_accuracy(results: Results, path: Path) -> None:
    """pass@j and maj@j for j = 1..k, per mode, with avg@k as a dotted line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colours = {
        "parallel": ("tab:blue", "tab:cyan"),
        "serial": ("tab:green", "tab:olive"),
        "sequential": ("tab:orange", "tab:red"),
    }
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for mode, m in results.metrics.items():
        style = "-" if mode == "parallel" else "--"
        first, second = colours[mode]
        ks = sorted(m.pass_at)
        ax.plot(ks, [100 * m.pass_at[j] for j in ks], style, color=first, marker="o", label=f"pass@k ({mode})")
        ax.plot(ks, [100 * m.maj_at[j] for j in ks], style, color=second, marker="s", label=f"maj@k ({mode})")
        ax.axhline(100 * m.avg_at_k, linestyle=":", color=first, label=f"avg@{m.k} ({mode})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{results.benchmark.name}: accuracy vs k")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_widths(results: Results, path: Path) -> None:
    """How many blocks had each width, over all samples of each mode that decoded blocks."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    per_mode: dict[str, Counter[int]] = {}
    for mode in results.metrics:
        counts = Counter(w for r in results.samples if r.mode == mode for w in r.widths)
        if counts:
            per_mode[mode] = counts
    bar = 0.8 / max(len(per_mode), 1)
    for offset, (mode, counts) in enumerate(per_mode.items()):
        xs = sorted(counts)
        shift = (offset - (len(per_mode) - 1) / 2) * bar
        ax.bar([x + shift for x in xs], [counts[x] for x in xs], width=bar, label=mode)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("block width (branches)")
    ax.set_ylabel("blocks")
    ax.set_title(f"{results.benchmark.name}: width of parallel blocks")
    if per_mode:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no blocks decoded", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)


def plot_tokens(results: Results, path: Path) -> None:
    """Total vs critical-path tokens per sample; the gap under the diagonal is the ideal saving."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.2))
    ax = fig.add_subplot()
    samples = [r for r in results.samples if r.mode == "parallel"]
    for correct, colour, label in ((True, "tab:green", "correct"), (False, "tab:red", "not correct")):
        chosen = [r for r in samples if r.correct == correct]
        ax.scatter(
            [r.total_tokens for r in chosen],
            [r.critical_path_tokens for r in chosen],
            s=14,
            alpha=0.7,
            color=colour,
            label=label,
        )
    top = max([r.total_tokens for r in samples] + [1])
    ax.plot([0, top], [0, top], ":", color="grey", label="no parallelism")
    ax.set_xlabel("total tokens")
    ax.set_ylabel("critical-path tokens")
    ax.set_title(f"{results.benchmark.name}: tokens vs critical path")
    ax.legend(fontsize=8)
    _save(fig, path)


def write_outputs(results: Results, out: str | Path) -> dict[str, Path]:
    """Write results.json, report.md and the plots into ``out``; returns their paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / RESULTS_FILE, "report": out / REPORT_FILE}
    write_json_atomic(paths["results"], results.model_dump(mode="json"))
    paths["report"].write_text(render_report(results), encoding="utf-8")
    for key, plot in (("accuracy", plot_accuracy), ("widths", plot_widths), ("tokens", plot_tokens)):
        paths[key] = out / PLOT_FILES[key]
        plot(results, paths[key])
    return paths
