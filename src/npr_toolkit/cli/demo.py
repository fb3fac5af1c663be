"""``npr demo``: the whole recipe on the toy task (see ``npr_toolkit.demo``), with a final table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from npr_toolkit.data.io import check_outputs
from npr_toolkit.display import percent, times

from .command import finish
from .console import console
from .options import OutputFormat

if TYPE_CHECKING:
    from npr_toolkit.demo import DemoResult


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for every stage's outputs (models, corpus, reports).")
    ] = Path("demo-out"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller stages (~3 min on 2 CPU cores) instead of ~15 min.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every stage.")] = 0,
    output_format: OutputFormat = "text",
) -> None:
    """Run NPR end to end on a toy task: base model, NPR-Zero stand-in, distill, SFT, PAPO, eval.

    Everything runs on the CPU with a 0.5M-parameter model and no downloads, through the same library
    code as the real commands; the final table shows what each stage did.
    """
    from npr_toolkit.demo import run_demo

    def job() -> DemoResult:
        check_outputs(inputs={}, folders={"--out": out})
        return run_demo(out, quick=quick, seed=seed, log=console.print)  # on stderr with --format json

    finish(job, output_format, text=lambda r: _print_table(r, out, quick), data=lambda r: r.model_dump(mode="json"))


def _print_table(result: DemoResult, out: Path, quick: bool) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"npr demo ({'quick' if quick else 'full'}): {out}",
    )
    for column in ("stage", "accuracy", "valid", "parallel", "ideal", "measured", "kept", "time"):
        table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=True)
    for row in result.rows:
        table.add_row(
            row.stage,
            percent(row.accuracy, missing=""),
            percent(row.format_valid, missing=""),
            percent(row.parallel_rate, missing=""),
            times(row.ideal_speedup, missing=""),
            times(row.measured_speedup, missing=""),
            percent(row.acceptance, missing=""),
            f"{row.seconds:.0f}s",
        )
    console.print(table)
    console.print(
        "accuracy: held-out avg@k at temperature 1 (NPR-Zero: its samples); valid: strict format profile; "
        "parallel: samples with a block of width >= 2; ideal/measured: speed-up of the parallel engine over "
        "the same trees decoded branch after branch; kept: distill acceptance."
    )
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", soft_wrap=True)
