"""``npr-data distill``: self-distil NPR-Zero trajectories into the NPR-Beta SFT corpus.

Usage: ``npr-data distill --problems P.jsonl --rollouts R.jsonl --out beta.jsonl`` (existing samples) or
``npr-data distill --problems P.jsonl --model runs/zero --samples 8 --out beta.jsonl`` (sample them).
The job itself is ``npr_toolkit.data.distill.run_distill``; rerun the same command to resume it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from npr_toolkit.cli.common import check_format, console, err_console, fail, print_json

if TYPE_CHECKING:
    from pydantic import ValidationError

    from npr_toolkit.data.distill import DistillResult


class _RateColumn(ProgressColumn):
    """Samples judged per second (rich has only a bytes-per-second column)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} samples/s" if task.speed else "- samples/s", style="progress.data.speed")


app = typer.Typer(pretty_exceptions_enable=False)


def _usage_message(error: ValidationError) -> str:
    """Pydantic errors on ``DistillConfig`` phrased with the CLI's flag names."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"--{str(item['loc'][0]).replace('_', '-')}: {message}" if item["loc"] else message)
    return "; ".join(parts)


@app.command("distill")
def distill(
    problems: Annotated[Path, typer.Option("--problems", help="Problems JSONL: {id, problem, answer[, source]}.")],
    out: Annotated[Path, typer.Option("--out", help="Output Beta SFT JSONL (also OUT.report.json, OUT.work/).")],
    rollouts: Annotated[
        Path | None,
        typer.Option("--rollouts", help="NPR-Zero rollouts: {id, problem_id, prompt, completion}."),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Sample rollouts with this model instead.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="With --model: samples per problem, round.")] = None,
    profile: Annotated[str, typer.Option("--profile", help="Format profile: strict, lenient, npr-compat.")] = "strict",
    select: Annotated[
        str, typer.Option("--select", help="Which accepted samples to keep: first, shortest or most-parallel.")
    ] = "first",
    per_problem: Annotated[int, typer.Option("--per-problem", help="Accepted samples kept per problem.")] = 1,
    max_tries: Annotated[int, typer.Option("--max-tries", help="With --model: sampling rounds per problem.")] = 8,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Grading processes (0: in-process; default: cores - 1, max 4).")
    ] = None,
    grade_timeout: Annotated[float, typer.Option("--grade-timeout", help="Seconds per answer before timeout.")] = 5.0,
    min_width: Annotated[int, typer.Option("--min-width", help="Reject a sample with a block narrower than N.")] = 1,
    require_parallel: Annotated[
        bool, typer.Option("--require-parallel", help="Reject a sample with no block of width >= 2.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (--model); per problem and round.")] = 0,
    prompt_file: Annotated[
        Path | None, typer.Option("--prompt-file", help="With --model: prompt template with {problem}.")
    ] = None,
    save_to_disk: Annotated[
        Path | None, typer.Option("--save-to-disk", help="Also save the corpus as a `datasets` folder here.")
    ] = None,
    engine: Annotated[str, typer.Option("--engine", help="With --model: torch or sglang.")] = "torch",
    server: Annotated[str | None, typer.Option("--server", help="With --engine sglang: server URL.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="With --model: torch device.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="With --model: token budget.")] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", help="With --model: sampling temperature.")] = 1.0,
    output_format: Annotated[str, typer.Option("--format", help="Output: text or json.")] = "text",
) -> None:
    """Grade, filter and select NPR-Zero samples into the NPR-Beta SFT corpus (resumable: rerun to continue)."""
    from pydantic import ValidationError

    from npr_toolkit.data.distill import DistillConfig, Interrupted, run_distill
    from npr_toolkit.data.io import InputError

    check_format(output_format)
    options: dict[str, Any] = {
        "problems": problems,
        "out": out,
        "rollouts": rollouts,
        "model": model,
        "samples": samples,
        "profile": profile,
        "select": select,
        "per_problem": per_problem,
        "max_tries": max_tries,
        "grade_timeout": grade_timeout,
        "min_width": min_width,
        "require_parallel": require_parallel,
        "seed": seed,
        "prompt_file": prompt_file,
        "save_to_disk": save_to_disk,
        "engine": engine,
        "server": server,
        "device": device,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
    }
    if workers is not None:
        options["workers"] = workers
    try:
        config = DistillConfig(**options)
    except ValidationError as exc:
        fail(_usage_message(exc))
    columns = (
        TextColumn("[bold]distill"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console)
    task = bar.add_task("distill", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # shown once the work starts; what an earlier run did is not this run's speed
            bar.start()
            bar.reset(task, completed=done, total=total)
        bar.update(task, completed=done, total=total)

    try:
        result = run_distill(config, progress=progress)
    except InputError as exc:
        bar.stop()
        fail(str(exc))
    except Interrupted as stop:
        bar.stop()
        err_console.print(str(stop))
        raise typer.Exit(130) from None
    bar.stop()
    if output_format == "json":
        print_json(result.report)
        return
    _print_report(result)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "-"


def _print_report(result: DistillResult) -> None:
    report = result.report
    summary = Table(title=f"distill ({report['mode']})", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    rows = [
        ("problems (with a selected sample)", f"{report['problems']} ({report['problems_solved']})"),
        ("samples", str(report["samples"])),
        ("accepted (correct and valid)", f"{report['accepted']} ({_pct(report['acceptance_rate'])})"),
        ("selected (written)", str(report["selected"])),
        ("bad input records", str(report["bad_input"]["count"])),
    ]
    for name, key in (("samples", "samples"), ("selected", "selected")):
        totals = report["totals"][key]
        tokens = f", {totals['tokens']} tokens" if totals["tokens"] is not None else ""
        rows.append((f"chars of {name}", f"{totals['chars']} (critical path {totals['critical_path_chars']}){tokens}"))
    for key in ("samples", "selected"):
        rows.append((f"widths of {key} (blocks)", _histogram(report["width_histogram"][key])))
        rows.append((f"depths of {key}", _histogram(report["depth_histogram"][key])))
    for name, value in rows:
        summary.add_row(name, value)
    console.print(summary)

    sources = Table(title="by problem source")
    for column in ("source", "problems", "solved", "samples", "accepted", "acceptance"):
        sources.add_column(column, justify="left" if column == "source" else "right")
    for source, row in report["by_source"].items():
        sources.add_row(
            source,
            *(str(row[k]) for k in ("problems", "solved", "samples", "accepted")),
            _pct(row["acceptance_rate"]),
        )
    console.print(sources)

    if report["rejections"]:
        reasons = Table(title=f"rejections ({report['rejected']} samples; one sample may have several reasons)")
        reasons.add_column("reason")
        reasons.add_column("samples", justify="right")
        for reason, count in report["rejections"].items():
            reasons.add_row(reason, str(count))
        console.print(reasons)

    errors = report["bad_input"]["errors"]
    for line in errors[:10]:
        console.print(f"[yellow]bad input:[/] {line}")
    if len(errors) > 10:
        console.print(f"[yellow]... and {len(errors) - 10} more bad records, all listed in the report[/]")
    if result.restarted:
        console.print("[yellow]inputs or options changed since the interrupted run: started over[/]")
    if result.resumed_samples:
        console.print(f"resumed: {result.resumed_samples} samples were judged by an earlier run")
    for key, path in report["outputs"].items():
        console.print(f"{key}: {path}")
    console.print(f"done in {result.elapsed:.1f} s")
