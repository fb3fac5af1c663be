"""``npr demo``: the whole recipe on the toy task (see ``npr_toolkit.demo``), with a final table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from npr_toolkit.cli.common import check_format, console, fail, print_json


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for every stage's outputs (models, corpus, reports).")
    ] = Path("demo-out"),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Smaller stages: ~9 min instead of 11-22 min (measured on a busy 2-core VM)."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every stage.")] = 0,
    output_format: Annotated[str, typer.Option("--format", help="Output: text or json.")] = "text",
) -> None:
    """Run NPR end to end on a toy task: base model, NPR-Zero stand-in, distill, SFT, PAPO, eval.

    Everything runs on the CPU with a 0.5M-parameter model and no downloads, through the same library
    code as the real commands; the final table shows what each stage did.
    """
    import contextlib
    import logging
    import os
    import sys

    from npr_toolkit.data.io import InputError
    from npr_toolkit.demo import run_demo

    check_format(output_format)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    log = console.print if output_format == "text" else (lambda message: print(message, file=sys.stderr))
    quiet = contextlib.redirect_stdout(sys.stderr) if output_format == "json" else contextlib.nullcontext()
    try:
        with quiet:
            result = run_demo(out, quick=quick, seed=seed, log=log)
    except InputError as exc:
        fail(str(exc))
    if output_format == "json":
        print_json(result.model_dump(mode="json"))
        return
    from npr_toolkit.demo import LEGEND, demo_table

    console.print(demo_table(result))
    console.print(LEGEND)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}")
