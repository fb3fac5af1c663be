"""``npr demo``: the whole recipe on the toy task (see ``npr_toolkit.demo``), with a final table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from npr_toolkit.data.io import check_outputs

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
        bool,
        typer.Option("--quick", help="Smaller stages: ~3 min instead of ~12 min (measured on a shared 2-core VM)."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every stage.")] = 0,
    semantics: Annotated[
        Literal["canonical", "reprefill"],
        typer.Option(
            "--semantics",
            help="What SFT trains. reprefill: PAPO's rollouts and the evaluations then go through `npr serve` and "
            "the SGLang backend, the path a GPU user takes with a real SGLang server (the table's engine column).",
        ),
    ] = "canonical",
    output_format: OutputFormat = "text",
) -> None:
    """Run NPR end to end on a toy task: base model, NPR-Zero stand-in, distill, SFT, PAPO, eval.

    Everything runs on the CPU with a 0.5M-parameter model and no downloads, through the same library
    code as the real commands; the final table shows what each stage did.
    """
    from npr_toolkit.demo import run_demo

    def job() -> DemoResult:
        check_outputs(inputs={}, folders={"--out": out})
        return run_demo(
            out, quick=quick, seed=seed, log=console.print, semantics=semantics
        )  # on stderr with --format json

    finish(job, output_format, text=_print_table, data=lambda r: r.model_dump(mode="json"))


def _print_table(result: DemoResult) -> None:
    from npr_toolkit.demo import LEGEND, demo_table

    console.print(demo_table(result))
    console.print(LEGEND)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", soft_wrap=True)
