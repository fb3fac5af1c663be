"""``npr eval``: accuracy, format validity, parallelism and speed on a benchmark; ``npr eval compare``.

Usage: ``npr eval --bench aime25 --model runs/papo -k 8 --baseline sequential --out runs/eval/aime25``,
then ``npr eval compare runs/eval/base runs/eval/papo``. The options are ``EvalConfig``'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from npr_toolkit.data.io import check_outputs
from npr_toolkit.eval.run import EvalConfig

from .command import config_options, finish, parse_config, with_options
from .console import console, print_paths
from .options import OutputFormat

if TYPE_CHECKING:
    from npr_toolkit.eval.compare import Comparison
    from npr_toolkit.eval.run import EvalSummary

app = typer.Typer(
    name="eval",
    help="Evaluate a model on a benchmark (accuracy, format validity, parallelism, speed-up); compare runs.",
    pretty_exceptions_enable=False,
)


def _default_out(bench: str, model: str) -> Path:
    return Path("runs") / "eval" / f"{Path(bench).stem}-{Path(model.rstrip('/')).name}"


@app.callback(invoke_without_command=True)
@with_options(
    config_options(EvalConfig, exclude=("progress",), optional=("bench", "model", "out"), aliases={"k": "-k"})
)
def run(ctx: typer.Context, output_format: OutputFormat = "text", **options: Any) -> None:
    """Sample k completions per problem, grade them, check their format and time the decoding."""
    from npr_toolkit.eval.run import run_eval

    if ctx.invoked_subcommand is not None:
        return
    bench, model = options["bench"], options["model"]
    if bench is None and model is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    out = options["out"] or _default_out(bench or "", model or "")
    config = parse_config(EvalConfig, {**options, "out": out, "progress": output_format == "text"})

    def job() -> EvalSummary:
        inputs = {"--bench": config.bench, "--model": config.model, "--prompt-file": config.prompt_file}
        check_outputs(inputs=inputs, folders={"--out": config.out})
        return run_eval(config)

    finish(job, output_format, text=_print_summary, data=lambda summary: summary.model_dump(mode="json"))


def _print_summary(summary: EvalSummary) -> None:
    from npr_toolkit.eval.tables import speedup_lines, summary_table

    console.print(summary_table(summary))
    for line in speedup_lines(summary):
        console.print(line)
    console.print(f"{summary.generated} samples decoded, {summary.resumed} resumed")
    print_paths(summary.outputs)


@app.command("compare")
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Output folders of `npr eval` runs.")],
    output_format: OutputFormat = "text",
) -> None:
    """Print the metrics of several runs side by side."""
    from npr_toolkit.eval.compare import compare_runs

    finish(
        lambda: compare_runs(run_dirs), output_format, text=_print_comparison, data=lambda c: c.model_dump(mode="json")
    )


def _print_comparison(comparison: Comparison) -> None:
    from npr_toolkit.eval.tables import comparison_table

    console.print(comparison_table(comparison))
