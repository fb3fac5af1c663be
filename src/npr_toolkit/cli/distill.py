"""``npr-data distill``: self-distil NPR-Zero trajectories into the NPR-Beta SFT corpus.

Usage: ``npr-data distill --problems P.jsonl --rollouts R.jsonl --out beta.jsonl`` (existing samples) or
``npr-data distill --problems P.jsonl --model runs/zero --samples 8 --out beta.jsonl`` (sample them).
The options are ``DistillConfig``'s fields; the job is ``npr_toolkit.data.distill.run_distill``; rerun
the same command to resume it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from npr_toolkit.data.distill_config import DistillConfig
from npr_toolkit.data.io import check_outputs
from npr_toolkit.display import percent

from .command import config_options, finish, parse_config, with_options
from .console import console, print_paths, print_table
from .options import OutputFormat
from .progress import Bar

if TYPE_CHECKING:  # the job's module (grading, sampling) loads when the command runs, not with every npr-data command
    from npr_toolkit.data.distill import DistillResult

app = typer.Typer()
SHOWN_ERRORS = 10


@app.command("distill")
@with_options(config_options(DistillConfig))
def distill(output_format: OutputFormat = "text", **options: Any) -> None:
    """Grade, filter and select NPR-Zero samples into the NPR-Beta SFT corpus (resumable: rerun to continue)."""
    from npr_toolkit.data.distill import run_distill

    config = parse_config(DistillConfig, options)

    def job() -> DistillResult:
        check_outputs(
            inputs={
                "--problems": config.problems,
                "--rollouts": config.rollouts,
                "--prompt-file": config.prompt_file,
                "--model": config.model,
            },
            files={
                "--out": config.out,
                "the report of --out": config.report_path,
                "the rollouts of --out": config.rollouts_path if config.model else None,
            },
            folders={"--save-to-disk": config.save_to_disk},
        )
        with Bar("distill", "samples") as bar:
            return run_distill(config, progress=bar)

    finish(job, output_format, text=_print_report, data=lambda result: result.report)


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in counts.items()) or "-"


def _print_report(result: DistillResult) -> None:
    report = result.report
    rows = [
        ("problems (with a selected sample)", f"{report['problems']} ({report['problems_solved']})"),
        ("samples", report["samples"]),
        ("accepted (correct and valid)", f"{report['accepted']} ({percent(report['acceptance_rate'])})"),
        ("selected (written)", report["selected"]),
        ("bad input records", report["bad_input"]["count"]),
    ]
    for key in ("samples", "selected"):
        totals = report["totals"][key]
        tokens = f", {totals['tokens']} tokens" if totals["tokens"] is not None else ""
        rows.append((f"chars of {key}", f"{totals['chars']} (critical path {totals['critical_path_chars']}){tokens}"))
        rows.append((f"widths of {key} (blocks)", _histogram(report["width_histogram"][key])))
        rows.append((f"depths of {key}", _histogram(report["depth_histogram"][key])))
    print_table(f"distill ({report['mode']})", rows)
    columns = ("problems", "solved", "samples", "accepted")
    sources = [
        (name, *(row[k] for k in columns), percent(row["acceptance_rate"])) for name, row in report["by_source"].items()
    ]
    print_table("by problem source", sources, header=("source", *columns, "acceptance"))
    if report["rejections"]:
        title = f"rejections ({report['rejected']} samples; one sample may have several reasons)"
        print_table(title, report["rejections"].items(), header=("reason", "samples"))
    errors = report["bad_input"]["errors"]
    for line in errors[:SHOWN_ERRORS]:
        console.print(f"[yellow]bad input:[/] {escape(line)}", soft_wrap=True)
    if len(errors) > SHOWN_ERRORS:
        console.print(f"[yellow]... and {len(errors) - SHOWN_ERRORS} more bad records, all listed in the report[/]")
    if result.restarted:
        console.print("[yellow]inputs or options changed since the interrupted run: started over[/]")
    if result.resumed_samples:
        console.print(f"resumed: {result.resumed_samples} samples were judged by an earlier run")
    print_paths(report["outputs"])
    console.print(f"done in {result.elapsed:.1f} s")
