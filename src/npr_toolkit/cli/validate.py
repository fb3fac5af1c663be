"""``npr-data validate`` and ``npr-data stats``: check trajectories like a compiler, summarise structure.

Both commands run ``npr_toolkit.format.report.CorpusRun`` over the inputs and print: per-record
diagnostics (``file:record:line:col: CODE message``) and rich summary tables, or one JSON document.
Registered on the ``npr-data`` app in ``cli/data.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from ..data.corpus import CheckOptions, CorpusRun, CorpusSummary, RecordReport
from ..data.io import InputError
from ..format import CODE_TABLE, Code
from .common import console, err_console, fail, print_json

app = typer.Typer()

Paths = Annotated[
    list[str],
    typer.Argument(
        help="Inputs: .jsonl, JSON array, .parquet, a plain-text trajectory, a saved HF dataset dir, or - for stdin.",
        show_default=False,
    ),
]
Field = Annotated[
    str | None,
    typer.Option(
        "--field", help="Record field with the completion (a list of chat messages: the last assistant turn)."
    ),
]
Format = Annotated[Literal["text", "json"], typer.Option("--format", help="Output format.")]
ProfileName = Literal["strict", "lenient", "npr-compat"]  # the keys of npr_toolkit.format.PROFILES
Tokenizer = Annotated[
    str | None,
    typer.Option(
        "--tokenizer", help="Measure lengths in tokens of this tokenizer (path or name) instead of characters."
    ),
]
Jobs = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes (records are checked in chunks).")]


@app.command()
def validate(
    paths: Paths,
    field: Field = None,
    profile: Annotated[ProfileName, typer.Option("--profile", help="Which rules apply (see README).")] = "strict",
    output: Format = "text",
    keep: Annotated[Path | None, typer.Option("--keep", help="Write the valid records here (JSONL).")] = None,
    reject: Annotated[Path | None, typer.Option("--reject", help="Write the invalid records here (JSONL).")] = None,
    jobs: Jobs = 1,
    max_width: Annotated[
        int | None, typer.Option("--max-width", min=1, help="Override the profile's max width.")
    ] = None,
    max_depth: Annotated[
        int | None, typer.Option("--max-depth", min=1, help="Override the profile's max depth.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Longest allowed trajectory (tokens, or characters).")
    ] = None,
    min_width: Annotated[int, typer.Option("--min-width", min=1, help="Filter: every block at least this wide.")] = 1,
    require_parallel: Annotated[
        bool, typer.Option("--require-parallel", help="Filter: some block must have width >= 2.")
    ] = False,
    tokenizer: Tokenizer = None,
) -> None:
    """Check NPR trajectories against a profile; exit 0 all valid, 1 some invalid, 2 input errors."""
    options = CheckOptions(
        profile=profile,
        field=field,
        max_width=max_width,
        max_depth=max_depth,
        max_tokens=max_tokens,
        min_width=min_width,
        require_parallel=require_parallel,
        tokenizer=tokenizer,
    )
    run = _start(paths, options, jobs=jobs, keep=keep, reject=reject)
    records = []
    for report in run:
        if output == "json":
            records.append(report.to_json())
        else:
            _print_report(report)
    summary = run.summary
    if output == "json":
        print_json({**summary.to_json(), "records": records})
    else:
        _print_failed_inputs(summary)
        _print_validation(summary, paths)
    raise typer.Exit(summary.exit_code)


@app.command()
def stats(
    paths: Paths,
    field: Field = None,
    output: Format = "text",
    tokenizer: Tokenizer = None,
    jobs: Jobs = 1,
) -> None:
    """Structure statistics of a corpus: blocks, widths, depth, total vs critical path, speed-up, parallel rate."""
    run = _start(paths, CheckOptions(profile="lenient", field=field, tokenizer=tokenizer), jobs=jobs)
    for report in run:
        if report.error is not None and output == "text":
            _print_input_error(report)
    summary = run.summary
    if output == "json":
        print_json(
            {**summary.stats_json(), "input_errors": summary.input_errors, "failed_inputs": summary.failed_inputs}
        )
    else:
        _print_failed_inputs(summary)
        _print_stats(summary)
    raise typer.Exit(2 if summary.failed_inputs or summary.input_errors else 0)


def _start(paths: list[str], options: CheckOptions, **kwargs) -> CorpusRun:
    try:
        return CorpusRun(paths, options, **kwargs)
    except InputError as exc:
        fail(str(exc))


# --- printing ---


def _print_input_error(report: RecordReport) -> None:
    err_console.print(f"{escape(report.where)}: [bold red]error:[/] {escape(report.error or '')}", soft_wrap=True)


def _print_report(report: RecordReport) -> None:
    if report.error is not None:
        _print_input_error(report)
        return
    for d in report.diagnostics:
        typer.echo(f"{report.where}:{d.line}:{d.column}: {typer.style(d.code.value, fg='red')} {d.message} [{d.name}]")
        typer.echo(typer.style(f"    | {d.excerpt}", dim=True))


def _print_failed_inputs(summary: CorpusSummary) -> None:
    for message in summary.failed_inputs:
        err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


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
    overview.add_row("[green]valid[/]", str(summary.valid), _percent(summary.valid, total))
    overview.add_row("[red]invalid[/]", str(summary.invalid), _percent(summary.invalid, total))
    if summary.input_errors:
        overview.add_row("[red]input errors[/]", str(summary.input_errors), _percent(summary.input_errors, total))
    console.print(overview)
    if summary.by_code:
        codes = Table(title="Diagnostics by code", title_justify="left", padding=(0, 1))
        codes.add_column("code")
        codes.add_column("name")
        codes.add_column("count", justify="right")
        codes.add_column("meaning")
        for code, count in sorted(summary.by_code.items()):
            name, meaning = CODE_TABLE[Code(code)]
            codes.add_row(code, name, str(count), meaning)
        console.print(codes)
    _print_shape(summary)


def _print_shape(summary: CorpusSummary) -> None:
    if summary.widths:
        console.print(_histogram("Block widths (blocks)", summary.widths, "width"))
    if summary.depths:
        console.print(_histogram(f"Depth ({summary.parsed} parsed records)", summary.depths, "depth"))


def _print_stats(summary: CorpusSummary) -> None:
    s = summary.stats_json()
    unit = s["unit"]
    table = Table(title="Structure statistics", title_justify="left", show_header=False, padding=(0, 1))
    table.add_column()
    table.add_column(justify="right")
    rows = [
        ("records", f"{s['records']}"),
        ("parsed (well-formed)", f"{s['parsed']} ({_percent(s['parsed'], s['records'])})"),
        ("blocks", f"{s['blocks']}"),
        ("blocks per parsed record", f"{s['blocks'] / s['parsed']:.2f}" if s["parsed"] else "-"),
        ("mean block width", f"{s['mean_width']:.2f}"),
        ("parallel trigger rate", f"{s['parallel']} ({_percent(s['parallel'], s['parsed'])})"),
        (f"mean length ({unit})", f"{s['mean_length']:.1f}"),
        (f"mean critical path ({unit})", f"{s['mean_critical_path']:.1f}"),
        (f"total / critical path ({unit})", f"{s['length']} / {s['critical_path']}"),
        ("mean ideal speed-up", f"{s['mean_speedup']:.2f}x"),
        ("max ideal speed-up", f"{s['max_speedup']:.2f}x"),
        ("corpus ideal speed-up", f"{s['corpus_speedup']:.2f}x"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if summary.blocks:
        console.print(_histogram("Blocks per record", summary.blocks, "blocks"))
    _print_shape(summary)
