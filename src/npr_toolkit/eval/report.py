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
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not a valid results file: invalid JSON: {exc.msg}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(
            f"{path}: not a valid results file of this version ({exc.error_count()} problems, first: "
            f"{where}: {first['msg'].lower()}); rerun `npr eval` into a new --out to rebuild it"
        ) from None


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
        "batch size",
        "tokens (mean)",
        "critical path (mean)",
        "ideal speed-up",
        "decode steps (mean)",
        "elapsed (s)",
        "tokens/s",
        "latency (s, mean)",
        "speed-up: steps · elapsed · latency",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, m in results.metrics.items():
        s = results.speedup
        if s is None:
            measured = "n/a (run with --baseline serial or sequential)"
        elif mode == "parallel":
            measured = f"{times(s.steps)} · {times(s.elapsed)} · {times(s.latency)}"
        else:
            measured = "1.00x (baseline)"
        row = [
            results.benchmark.name,
            mode,
            batch_sizes(m),
            f"{m.mean_total_tokens:.1f}",
            f"{m.mean_critical_path_tokens:.1f}",
            times(m.ideal_speedup),
            f"{m.mean_steps:.1f}",
            f"{m.elapsed:.2f}",
            f"{m.tokens_per_second:.1f}",
            f"{m.mean_latency:.3f}",
            measured,
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def batch_sizes(metrics: Metrics) -> str:
    """The batch size, or every one used when a resumed run mixed them."""
    return ", ".join(map(str, metrics.batch_sizes)) or "?"


def above_ideal(metrics: dict[str, Metrics], s: Speedup | None) -> str | None:
    """Why the measured speed-up exceeds the ideal one, in numbers from this run; None when it does not."""
    if s is None or max(s.elapsed, s.latency) <= s.ideal:
        return None
    parallel = metrics["parallel"]
    mode, baseline = next((mode, m) for mode, m in metrics.items() if mode != "parallel")
    measured = max(s.elapsed, s.latency)
    return (
        f"The measured speed-up ({times(measured)}) is above the ideal ({times(s.ideal)}), which assumes the "
        f"baseline decodes the same trees and a decoding step costs the same whatever number of branches it "
        f"feeds. The {mode} baseline decoded its own samples: {baseline.mean_total_tokens:.1f} tokens and "
        f"{baseline.mean_steps:.1f} decode steps per sample against the parallel run's "
        f"{parallel.mean_total_tokens:.1f} and {parallel.mean_steps:.1f}, so the steps really decoded account for "
        f"{times(s.steps)}; the rest ({times(measured / s.steps if s.steps > 0 else measured)}) is a step costing "
        f"more in the baseline's run than in the parallel one: per-step overheads, or the machine (other "
        f"processes, clock speed) during its batches, which with few samples on a shared machine is mostly noise."
    )


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
        f"batch size {s.get('batch_size')}, temperature {s.get('temperature')}, top-p {s.get('top_p')}, "
        f"max new tokens {s.get('max_new_tokens')}, seed {s.get('seed')}.",
        "",
        "## Accuracy and parallelism",
        "",
        "Percentages. avg@k is the mean correctness of each problem's first k samples (the paper's headline "
        "number); pass@k is the unbiased estimator; maj@k is a majority vote over the k answers, answers equivalent "
        "under math-verify voting together (a tie goes to the answer voted first). *valid P* is the share of "
        "samples that pass format profile P; *parallel rate* is the share of samples with at least one block of "
        "width >= 2.",
        "",
        *_accuracy_table(results),
        "",
        "## Speed",
        "",
        "Tokens as decoded by the engine; the critical path counts, per block, only its longest branch. *elapsed* "
        "is the wall time of the engine calls (batches of *batch size* samples, end to end), *tokens/s* all tokens "
        "over it, *latency* the time from a call's start until a sample finished. The ideal speed-up, total / "
        "critical-path tokens, assumes the baseline decodes the same trees and that a decoding step costs the same "
        "whatever number of branches it feeds; the measured ones compare the baseline's decode steps, elapsed time "
        "and latency with the parallel run's, on the same prompts and seeds, batches interleaved in the same run.",
        "",
        *_speed_table(results),
        "",
        *([note, ""] if (note := above_ideal(results.metrics, results.speedup)) else []),
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
    ax.set_title(f"{plot_title(results)}: accuracy vs k")
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
    ax.set_title(f"{plot_title(results)}: width of parallel blocks")
    if per_mode:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no blocks decoded", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)


def token_points(results: Results) -> Counter[tuple[int, int, bool]]:
    """How many parallel samples share each (total tokens, critical-path tokens, correct) point."""
    return Counter((r.total_tokens, r.critical_path_tokens, r.correct) for r in results.samples if r.mode == "parallel")


def plot_tokens(results: Results, path: Path) -> None:
    """Total vs critical-path tokens of the parallel samples: hexagonal bins, correct and not side by side.

    Samples of one task often share a point or land a token apart, so a scatter hides most of them;
    each hexagon here is coloured and labelled with the number of samples in it, so every sample is
    counted where it lies. The gap under the diagonal is the ideal saving.
    """
    from matplotlib.figure import Figure

    points = token_points(results)
    xs = [x for x, _, _ in points] or [0, 1]
    ys = [y for _, y, _ in points] or [0, 1]
    pad_x, pad_y = max(2.0, (max(xs) - min(xs)) * 0.06), max(2.0, (max(ys) - min(ys)) * 0.06)
    extent = (min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y)
    fig = Figure(figsize=(9.0, 4.4))
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = ((True, "Greens", "correct"), (False, "Reds", "not correct"))
    for ax, (correct, colours, name) in zip(axes, panels, strict=True):
        mine = [(x, y, n) for (x, y, c), n in points.items() if c == correct]
        if mine:
            bins = ax.hexbin(
                [x for x, _, _ in mine],
                [y for _, y, _ in mine],
                C=[n for _, _, n in mine],
                reduce_C_function=sum,
                gridsize=18,
                extent=extent,
                mincnt=1,
                cmap=colours,
                vmin=0,
                edgecolors="grey",
                linewidths=0.3,
            )
            counts = bins.get_array()
            for (x, y), count in zip(bins.get_offsets(), counts, strict=True):
                ink = "white" if count > counts.max() / 2 else "black"  # readable on dark and light hexagons
                ax.annotate(f"{count:.0f}", (x, y), fontsize=6.5, ha="center", va="center", color=ink)
        top = max(extent)
        ax.plot([0, top], [0, top], ":", color="grey", label="no parallelism (critical path = total)")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_title(f"{name}: {sum(n for *_, n in mine)} samples", fontsize=9)
        ax.set_xlabel("total tokens")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("critical-path tokens")
    fig.suptitle(f"{plot_title(results)}: tokens vs critical path, parallel samples per hexagon", fontsize=10)
    _save(fig, path)


def plot_title(results: Results) -> str:
    """Plot titles name the benchmark and the model evaluated on it (the model's folder or hub name)."""
    model = str(results.settings.get("model") or "?")
    return f"{results.benchmark.name} · {Path(model.rstrip('/')).name or model}"


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
