"""``npr eval``: accuracy, format validity, parallelism and speed on a benchmark; ``npr eval compare``.

Usage: ``npr eval --bench aime25 --model runs/papo -k 8 --baseline sequential --out runs/eval/aime25``,
then ``npr eval compare runs/eval/base runs/eval/papo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from npr_toolkit.cli.common import check_format, console, fail, print_json

if TYPE_CHECKING:
    from npr_toolkit.eval.run import EvalSummary

app = typer.Typer(
    name="eval",
    help="Evaluate a model on a benchmark (accuracy, format validity, parallelism, speed-up); compare runs.",
    pretty_exceptions_enable=False,
)


def _default_out(bench: str, model: str) -> Path:
    return Path("runs") / "eval" / f"{Path(bench).stem}-{Path(model.rstrip('/')).name}"


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    bench: Annotated[
        str | None, typer.Option("--bench", help="aime25, amc23, hmmt25, math500, or a PATH.jsonl of problems.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model path or hub id the engine loads.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="Decoding backend: torch or sglang.")] = "torch",
    server: Annotated[str | None, typer.Option("--server", help="URL of a running SGLang / npr serve.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: cuda if available).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Samples per problem.", min=1)] = 8,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N problems.", min=1)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Token budget per sample.", min=1)] = 4096,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.", min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass.", min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Run seed; each sample derives its own from it.")] = 0,
    max_width: Annotated[int, typer.Option("--max-width", help="Most branches per block.", min=1)] = 8,
    max_depth: Annotated[int, typer.Option("--max-depth", help="Deepest block nesting.", min=1)] = 1,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default runs/eval/BENCH-MODEL); resumes there.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder with NAME.jsonl benchmarks (before $NPR_DATA_DIR).")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Also decode and time a baseline: 'serial' (same trees, branches one after another: the fair "
            "speed baseline) or 'sequential' (plain autoregressive decoding).",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples decoded together (1 = per-sample latency).", min=1)
    ] = 1,
    prompt_file: Annotated[
        Path | None, typer.Option("--prompt-file", help="Prompt template with {problem} (default: NPR instruction).")
    ] = None,
    grade_workers: Annotated[int, typer.Option("--grade-workers", help="Grading processes (0: in-process).")] = 1,
    output_format: Annotated[str, typer.Option("--format", help="Output: text or json.")] = "text",
) -> None:
    """Sample k completions per problem, grade them, check their format and time the decoding."""
    if ctx.invoked_subcommand is not None:
        return
    if bench is None and model is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if bench is None or model is None:
        fail("both --bench and --model are required")
    if engine not in ("torch", "sglang"):
        fail(f"--engine must be torch or sglang, not {engine!r}")
    if baseline not in (None, "serial", "sequential"):
        fail(f"--baseline must be 'serial' or 'sequential', not {baseline!r}")
    check_format(output_format)

    from npr_toolkit.data.io import InputError
    from npr_toolkit.eval.run import EvalConfig, run_eval

    config = EvalConfig(
        bench=bench,
        model=model,
        out=out or _default_out(bench, model),
        engine=engine,
        server=server,
        device=device,
        k=k,
        limit=limit,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        max_width=max_width,
        max_depth=max_depth,
        data_dir=data_dir,
        baseline=baseline,
        batch_size=batch_size,
        prompt_file=prompt_file,
        grade_workers=grade_workers,
        progress=output_format == "text",
    )
    try:
        summary = run_eval(config)
    except InputError as exc:
        fail(str(exc))
    if output_format == "json":
        print_json(summary.model_dump(mode="json"))
        return
    _print_summary(summary)


def _print_summary(summary: EvalSummary) -> None:
    from npr_toolkit.eval.tables import speedup_lines, summary_table

    console.print(summary_table(summary))
    for line in speedup_lines(summary):
        console.print(line)
    console.print(f"{summary.generated} samples decoded, {summary.resumed} resumed")
    for key, path in summary.outputs.items():
        console.print(f"{key}: {path}")


@app.command("compare")
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Output folders of `npr eval` runs.")],
    output_format: Annotated[str, typer.Option("--format", help="Output: text or json.")] = "text",
) -> None:
    """Print the metrics of several runs side by side."""
    from npr_toolkit.data.io import InputError
    from npr_toolkit.eval.compare import compare_runs

    check_format(output_format)
    try:
        comparison = compare_runs(run_dirs)
    except InputError as exc:
        fail(str(exc))
    if output_format == "json":
        print_json(comparison.model_dump(mode="json"))
        return
    from npr_toolkit.eval.tables import comparison_table

    console.print(comparison_table(comparison))
