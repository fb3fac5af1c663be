"""``npr train``: the training stages: ``zero`` (NPR-Zero GRPO), ``sft`` (NPR-Beta), ``papo`` (PAPO).

Usage: ``npr train sft --model Qwen/Qwen3-4B-Instruct-2507 --data runs/beta.jsonl --out runs/sft
--config configs/sft.yaml``.
Options shared by the stages are defined once below; any config field can also be set with
``--set FIELD=VALUE`` (YAML value syntax).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from npr_toolkit.cli.common import check_format, console, fail, print_json

if TYPE_CHECKING:
    from npr_toolkit.train.sft import SFTReport

train_app = typer.Typer(
    name="train",
    help="Training stages on TRL: zero (NPR-Zero, GRPO), sft (NPR-Beta, parallel view), papo (PAPO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# --- options shared by the stages
ModelOpt = Annotated[str, typer.Option("--model", help="Base model: hub id or local path (tags are added).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder: checkpoint (model + tokenizer) and report.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of config fields (see configs/).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.", min=1)]
LearningRateOpt = Annotated[float | None, typer.Option("--learning-rate", help="Peak learning rate.", min=0.0)]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--per-device-train-batch-size", help="Sequences per device per micro-batch.", min=1)
]
GradAccumOpt = Annotated[
    int | None, typer.Option("--gradient-accumulation-steps", help="Micro-batches per optimizer step.", min=1)
]
EpochsOpt = Annotated[float | None, typer.Option("--num-train-epochs", help="Epochs over the data.", min=0.0)]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Training seed (data order, init of new rows).")]
LoggingStepsOpt = Annotated[int | None, typer.Option("--logging-steps", help="Log every N steps.", min=1)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any config field as FIELD=VALUE (YAML value), repeatable; wins over --config."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="Output: text or json.")]


def _overrides(sets: list[str] | None, **flags: Any) -> dict[str, Any]:
    """Config overrides from ``--set`` pairs and the explicit flags that were given (flags win)."""
    import yaml

    values: dict[str, Any] = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            fail(f"--set {key}: invalid value: {exc}")
    return values | {key: value for key, value in flags.items() if value is not None}


@train_app.command("sft")
def sft(
    model: ModelOpt,
    data: Annotated[Path, typer.Option("--data", help="NPR-Beta corpus (JSONL from `npr-data distill`).")],
    out: OutOpt,
    config: ConfigOpt = None,
    max_steps: MaxStepsOpt = None,
    learning_rate: LearningRateOpt = None,
    per_device_train_batch_size: BatchSizeOpt = None,
    gradient_accumulation_steps: GradAccumOpt = None,
    num_train_epochs: EpochsOpt = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Longest record in tokens; longer ones are dropped.", min=1)
    ] = None,
    semantics: Annotated[
        str | None,
        typer.Option(
            "--semantics",
            help="canonical (torch engine), reprefill (exact on stock SGLang/vLLM servers) or npr-compat (official "
            "NPR code); recorded in the checkpoint.",
        ),
    ] = None,
    view_mode: Annotated[
        str | None, typer.Option("--view-mode", help="Former name of --semantics (canonical or npr-compat).")
    ] = None,
    attn_implementation: Annotated[
        str | None, typer.Option("--attn-implementation", help="flex_attention (GPU), sdpa or eager.")
    ] = None,
    seed: SeedOpt = None,
    logging_steps: LoggingStepsOpt = None,
    sets: SetOpt = None,
    output_format: FormatOpt = "text",
) -> None:
    """Fine-tune on the Beta corpus with the parallel attention view; save model + tokenizer to --out."""
    check_format(output_format)
    overrides = _overrides(
        sets,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_train_epochs=num_train_epochs,
        max_length=max_length,
        semantics=semantics,
        view_mode=view_mode,
        attn_implementation=attn_implementation,
        seed=seed,
        logging_steps=logging_steps,
    )

    from npr_toolkit.data.io import InputError
    from npr_toolkit.train.sft import REPORT_NAME, SFTReport, run_sft

    # The trainer prints its logs to stdout; with --format json stdout carries only the report.
    logs = contextlib.redirect_stdout(sys.stderr) if output_format == "json" else contextlib.nullcontext()
    try:
        with logs:
            path = run_sft(model, data, out, config=config, **overrides)
    except InputError as exc:
        fail(str(exc))
    report = SFTReport.model_validate_json((path / REPORT_NAME).read_text(encoding="utf-8"))
    if output_format == "json":
        print_json(report.model_dump(mode="json"))
        return
    _print_report(report)


def _print_report(report: SFTReport) -> None:
    from rich.table import Table

    table = Table(title=f"npr train sft: {report.out}")
    table.add_column("item")
    table.add_column("value", justify="right")
    dropped = ", ".join(f"{n} {kind}" for kind, n in sorted(report.dropped.items())) or "none"
    loss = "-" if report.first_loss is None else f"{report.first_loss:.4f} -> {report.last_loss:.4f}"
    view = report.view_mode if report.view_mode == report.semantics else f"{report.view_mode} (as {report.semantics})"
    for name, value in (
        ("records read / trained", f"{report.records} / {report.trained}"),
        ("dropped", dropped),
        ("semantics / attention", f"{view} / {report.attn_implementation}"),
        ("optimizer steps", str(report.steps)),
        ("logged loss (first -> last)", loss),
        ("mean train loss", f"{report.train_loss:.4f}"),
        ("runtime (s)", f"{report.runtime_s:.1f}"),
    ):
        table.add_row(name, value)
    console.print(table)
    for item in report.dropped_records[:20]:
        console.print(f"[yellow]dropped[/] {item.where}: {item.kind}: {item.reason}")
    if len(report.dropped_records) > 20:
        console.print(f"... {len(report.dropped_records) - 20} more in {report.out}/sft_report.json")
    console.print(f"checkpoint: {report.out}")


# --- the RL stages
ProblemsOpt = Annotated[Path, typer.Option("--problems", help="Problem set: JSONL of {id, problem, answer}.")]
GenerationsOpt = Annotated[int | None, typer.Option("--num-generations", help="Samples per prompt.", min=2)]
CompletionOpt = Annotated[
    int | None, typer.Option("--max-completion-length", help="Token budget per rollout (critical path).", min=1)
]
PromptFileOpt = Annotated[
    Path | None, typer.Option("--prompt-file", help="Prompt template with {problem} (default: the NPR instruction).")
]
RL_METRICS = (
    "reward",
    "npr/accuracy",
    "npr/format_valid_rate",
    "npr/parallel_rate",
    "npr/mean_width",
    "npr/total_tokens",
    "npr/critical_path_tokens",
    "npr/filtered",
    "rewards/format_reward/mean",
    "rewards/correctness_reward/mean",
    "loss",
)


def _run_rl(
    stage: str,
    run: Any,
    model: str,
    problems: Path,
    out: Path,
    config: Path | None,
    output_format: str,
    overrides: dict[str, Any],
) -> None:
    """Run an RL stage, then print the first and last logged values of its key metrics."""
    import json

    from npr_toolkit.data.io import InputError

    check_format(output_format)
    logs = contextlib.redirect_stdout(sys.stderr) if output_format == "json" else contextlib.nullcontext()
    try:
        with logs:
            path = run(model, problems, out, config=config, **overrides)
    except InputError as exc:
        fail(str(exc))
    history = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    steps = [entry for entry in history if "reward" in entry or "loss" in entry]
    summary = {
        "stage": stage,
        "out": str(path),
        "steps": len(steps),
        # TRL logs None for a mean over no values (e.g. the reward of a step whose rollouts were all filtered)
        "first": {k: steps[0][k] for k in RL_METRICS if steps and steps[0].get(k) is not None},
        "last": {k: steps[-1][k] for k in RL_METRICS if steps and steps[-1].get(k) is not None},
    }
    if output_format == "json":
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"npr train {stage}: {path} ({len(steps)} logged steps)")
    for column in ("metric", "first step", "last step"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in summary["last"]:
        table.add_row(key, f"{summary['first'].get(key, float('nan')):.4g}", f"{summary['last'][key]:.4g}")
    console.print(table)


@train_app.command("zero")
def zero(
    model: ModelOpt,
    problems: ProblemsOpt,
    out: OutOpt,
    config: ConfigOpt = None,
    max_steps: MaxStepsOpt = None,
    learning_rate: LearningRateOpt = None,
    per_device_train_batch_size: BatchSizeOpt = None,
    num_generations: GenerationsOpt = None,
    max_completion_length: CompletionOpt = None,
    prompt_file: PromptFileOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    output_format: FormatOpt = "text",
) -> None:
    """NPR-Zero: DAPO-style GRPO with the format + correctness rewards, ordinary sequential sampling."""
    from npr_toolkit.train.zero import run_zero

    overrides = _overrides(
        sets,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=per_device_train_batch_size,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        prompt_file=str(prompt_file) if prompt_file else None,
        seed=seed,
    )
    _run_rl("zero", run_zero, model, problems, out, config, output_format, overrides)


@train_app.command("papo")
def papo(
    model: ModelOpt,
    problems: ProblemsOpt,
    out: OutOpt,
    config: ConfigOpt = None,
    max_steps: MaxStepsOpt = None,
    learning_rate: LearningRateOpt = None,
    per_device_train_batch_size: BatchSizeOpt = None,
    num_generations: GenerationsOpt = None,
    max_completion_length: CompletionOpt = None,
    filter_profile: Annotated[
        str | None, typer.Option("--filter-profile", help="Structural filter: strict, lenient or npr-compat.")
    ] = None,
    prompt_file: PromptFileOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    output_format: FormatOpt = "text",
) -> None:
    """PAPO: on-policy RL with rollouts from the parallel engine and log π through the training view."""
    from npr_toolkit.train.papo import run_papo

    overrides = _overrides(
        sets,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=per_device_train_batch_size,
        num_generations=num_generations,
        max_completion_length=max_completion_length,
        filter_profile=filter_profile,
        prompt_file=str(prompt_file) if prompt_file else None,
        seed=seed,
    )
    _run_rl("papo", run_papo, model, problems, out, config, output_format, overrides)
