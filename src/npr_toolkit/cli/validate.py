"""``npr-data validate`` and ``npr-data stats``: check trajectories like a compiler, summarise structure.

Both run ``npr_toolkit.data.corpus.CorpusRun`` over the inputs and print per-record diagnostics
(``file.jsonl:6: 5:1: E101 ...``: the record's line, then line:column inside its completion) and
summary tables, or one JSON document. Registered on the ``npr-data`` app in ``cli/data.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from npr_toolkit.data.corpus import CheckOptions, CorpusRun, CorpusSummary, RecordReport, estimate_records
from npr_toolkit.data.io import InputError, check_outputs
from npr_toolkit.display import percent, times
from npr_toolkit.format import CODE_TABLE, Code

from .command import config_options, parse_config, with_options
from .console import console, error, fail, print_json, print_table
from .options import OutputFormat
from .progress import Bar

app = typer.Typer()

Paths = Annotated[
    list[str],
    typer.Argument(
        help="Inputs: .jsonl, JSON array, .parquet, a plain-text trajectory, a saved HF dataset dir, or - for stdin.",
        show_default=False,
    ),
]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes (records are checked in chunks).")]
PROGRESS_EVERY = 256  # records between progress bar updates


@app.command()
@with_options(config_options(CheckOptions))
def validate(
    paths: Paths,
    keep: Annotated[Path | None, typer.Option("--keep", help="Write the valid records here (JSONL).")] = None,
    reject: Annotated[Path | None, typer.Option("--reject", help="Write the invalid records here (JSONL).")] = None,
    jobs: Jobs = 1,
    output_format: OutputFormat = "text",
    **options: Any,
) -> None:
    """Check NPR trajectories against a profile; exit 0 all valid, 1 some invalid, 2 input errors."""
    check = parse_config(CheckOptions, options)
    try:
        check_outputs(inputs={f"input {p}": p for p in paths}, files={"--keep": keep, "--reject": reject})
    except InputError as exc:
        fail(str(exc))
    run = _start(paths, check, jobs=jobs, keep=keep, reject=reject)
    records = []
    for report in _with_progress(run, paths, "validate"):
        if output_format == "json":
            records.append(report.to_json())
        else:
            _print_report(report)
    summary = run.summary
    if output_format == "json":
        print_json({**summary.to_json(), "records": records})
    else:
        _print_failed_inputs(summary)
        if summary.total:
            _print_validation(summary, paths)
    raise typer.Exit(summary.exit_code)


@app.command()
@with_options(config_options(CheckOptions, only=("field", "tokenizer")))
def stats(paths: Paths, jobs: Jobs = 1, output_format: OutputFormat = "text", **options: Any) -> None:
    """Structure statistics of a corpus: blocks, widths, depth, total vs critical path, speed-up, parallel rate."""
    run = _start(paths, parse_config(CheckOptions, {**options, "profile": "lenient"}), jobs=jobs)
    for report in _with_progress(run, paths, "stats"):
        if report.error is not None and output_format == "text":
            error(f"{report.where}: {report.error}")
    summary = run.summary
    if output_format == "json":
        print_json(
            {**summary.stats_json(), "input_errors": summary.input_errors, "failed_inputs": summary.failed_inputs}
        )
    else:
        _print_failed_inputs(summary)
        if summary.total:
            _print_stats(summary)
    raise typer.Exit(2 if summary.failed_inputs or summary.input_errors else 0)


def _start(paths: list[str], options: CheckOptions, **kwargs: Any) -> CorpusRun:
    try:
        return CorpusRun(paths, options, **kwargs)
    except InputError as exc:
        fail(str(exc))


def _with_progress(run: CorpusRun, paths: list[str], label: str):
    """The run's reports, with a progress bar on the terminal."""
    with Bar(label, "records") as bar:
        total = estimate_records(paths) if bar.shown else None  # a pass over the files: only for a bar
        for done, report in enumerate(run, 1):
            if done % PROGRESS_EVERY == 0:
                bar(done, total)
            yield report


# --- printing ---


def _print_report(report: RecordReport) -> None:
    if report.error is not None:
        error(f"{report.where}: {report.error}")
        return
    for d in report.diagnostics:
        code = typer.style(d.code.value, fg="red")
        typer.echo(f"{report.where}: {d.line}:{d.column}: {code} {d.message} [{d.name}]")
        typer.echo(typer.style(f"    | {d.excerpt}", dim=True))


def _print_failed_inputs(summary: CorpusSummary) -> None:
    for message in summary.failed_inputs:
        error(message)


def _share(part: int, whole: int) -> str:
    return percent(part / whole if whole else None)


def _histogram(title: str, counts: dict[int, int], unit: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1))
    table.add_column(unit, justify="right")
    table.add_column("count", justify="right")
    table.add_column("", style="cyan")
    top = max(counts.values(), default=0)
    for key in sorted(counts):
        table.add_row(str(key), str(counts[key]), "█" * max(1, round(24 * counts[key] / top)))
    return table


def _print_validation(summary: CorpusSummary, paths: list[str]) -> None:
    total = summary.total
    console.print()
    sources = escape(", ".join(paths))
    noun = "record" if total == 1 else "records"
    title = f"[bold]Validated {total} {noun}[/] from {sources} (profile [bold]{summary.profile}[/])"
    console.print(title, soft_wrap=True)
    overview = Table(box=None, padding=(0, 1), show_header=False)
    overview.add_column(justify="left")
    overview.add_column(justify="right")
    overview.add_column(justify="right")
    overview.add_row("[green]valid[/]", str(summary.valid), _share(summary.valid, total))
    overview.add_row("[red]invalid[/]", str(summary.invalid), _share(summary.invalid, total))
    if summary.input_errors:
        overview.add_row("[red]input errors[/]", str(summary.input_errors), _share(summary.input_errors, total))
    console.print(overview)
    if summary.by_code:
        rows = [(code, *CODE_TABLE[Code(code)], count) for code, count in sorted(summary.by_code.items())]
        print_table("Diagnostics by code", rows, header=("code", "name", "meaning", "count"))
    _print_shape(summary)


def _print_shape(summary: CorpusSummary) -> None:
    if summary.widths:
        console.print(_histogram("Block widths (blocks)", summary.widths, "width"))
    if summary.depths:
        console.print(_histogram(f"Depth ({summary.parsed} parsed records)", summary.depths, "depth"))


def _print_stats(summary: CorpusSummary) -> None:
    s = summary.stats_json()
    unit = s["unit"]
    rows = [
        ("records", s["records"]),
        ("parsed (well-formed)", f"{s['parsed']} ({_share(s['parsed'], s['records'])})"),
        ("blocks", s["blocks"]),
        ("blocks per parsed record", f"{s['blocks'] / s['parsed']:.2f}" if s["parsed"] else "-"),
        ("mean block width", f"{s['mean_width']:.2f}"),
        ("parallel trigger rate", f"{s['parallel']} ({_share(s['parallel'], s['parsed'])})"),
        (f"mean length ({unit})", f"{s['mean_length']:.1f}"),
        (f"mean critical path ({unit})", f"{s['mean_critical_path']:.1f}"),
        (f"total / critical path ({unit})", f"{s['length']} / {s['critical_path']}"),
        ("mean ideal speed-up", times(s["mean_speedup"])),
        ("max ideal speed-up", times(s["max_speedup"])),
        ("corpus ideal speed-up", times(s["corpus_speedup"])),
    ]
    print_table("Structure statistics", rows)
    if summary.blocks:
        console.print(_histogram("Blocks per record", summary.blocks, "blocks"))
    _print_shape(summary)
