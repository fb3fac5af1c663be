"""``npr train``: the training stages: ``zero`` (NPR-Zero GRPO), ``sft`` (NPR-Beta), ``papo`` (PAPO).

Usage: ``npr train sft --model Qwen/Qwen3-4B-Instruct-2507 --data runs/beta.jsonl --out runs/sft
--config configs/sft.yaml``. Each stage's config is a TRL dataclass (``NPRSFTConfig``, ``ZeroConfig``,
``PAPOConfig``): it holds every default and checks every value. The flags below set its most used
fields (declared once, for every stage that has them); ``--set FIELD=VALUE`` (YAML value syntax) sets
any other field. The trainers' modules are imported only when a stage runs, so ``--help`` is fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from rich.markup import escape

from npr_toolkit.data.io import check_outputs

from .command import REQUIRED, Options, finish, flag, with_options
from .console import console, fail, print_table
from .options import Model, OutputFormat, PromptFile

if TYPE_CHECKING:
    from npr_toolkit.train.sft import SFTReport

train_app = typer.Typer(
    name="train",
    help="Training stages on TRL: zero (NPR-Zero, GRPO), sft (NPR-Beta, parallel view), papo (PAPO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SHOWN_DROPPED = 20
T = TypeVar("T")

Out = Annotated[Path, typer.Option("--out", help="Output folder: checkpoint (model + tokenizer) and report.")]
Data = Annotated[Path, typer.Option("--data", help="NPR-Beta corpus (JSONL from `npr-data distill`).")]
Problems = Annotated[Path, typer.Option("--problems", help="Problem set: JSONL of {id, problem, answer}.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file of config fields (see configs/).")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any config field as FIELD=VALUE (YAML value), repeatable; wins over --config."),
]


ALL, RL = ("sft", "zero", "papo"), ("zero", "papo")
HELP = {
    "sft": "Fine-tune on the Beta corpus with the parallel attention view; save model + tokenizer to --out.",
    "zero": "NPR-Zero: DAPO-style GRPO with the format + correctness rewards, ordinary sequential sampling.",
    "papo": "PAPO: on-policy RL with rollouts from the parallel engine and log π through the training view.",
}
RolloutEngine = Literal["torch", "sglang", "openai"]


def _option(
    stages: tuple[str, ...], kind: Any, flag: str, help: str, *, min: int | None = None
) -> tuple[tuple[str, ...], tuple[Any, None]]:
    """A config field's flag for ``stages``; None (not given) leaves the field to --config, --set or its default.

    ``min`` is the smallest value the flag accepts. Counts start at 1 there: the Trainer reads ``max_steps``
    0 as "train by epochs", which a user typing ``--max-steps 0`` does not mean (``--set`` still passes it).
    """
    return stages, (Annotated[kind | None, typer.Option(flag, help=help, min=min)], None)


FLAGS = {  # config field -> (the stages that have it, its option); one line adds a flag
    "max_steps": _option(ALL, int, "--max-steps", "Stop after N optimizer steps.", min=1),
    "learning_rate": _option(ALL, float, "--learning-rate", "Peak learning rate."),
    "per_device_train_batch_size": _option(
        ALL, int, "--per-device-train-batch-size", "Sequences per device per micro-batch.", min=1
    ),
    "gradient_accumulation_steps": _option(
        ("sft",), int, "--gradient-accumulation-steps", "Micro-batches per optimizer step.", min=1
    ),
    "num_train_epochs": _option(("sft",), float, "--num-train-epochs", "Epochs over the data."),
    "max_length": _option(("sft",), int, "--max-length", "Longest record in tokens; longer ones are dropped.", min=1),
    "semantics": _option(
        ALL,
        str,
        "--semantics",
        "canonical (torch engine), reprefill (exact on stock SGLang/vLLM servers) or npr-compat (official NPR "
        "code); recorded in the checkpoint. Unset: sft trains canonical, zero and papo keep the checkpoint's.",
    ),
    "view_mode": _option(ALL, str, "--view-mode", "Former name of --semantics (canonical or npr-compat)."),
    "attn_implementation": _option(("sft",), str, "--attn-implementation", "flex_attention (GPU), sdpa or eager."),
    "num_generations": _option(RL, int, "--num-generations", "Samples per prompt.", min=1),
    "max_completion_length": _option(
        RL, int, "--max-completion-length", "Token budget per rollout (critical path).", min=1
    ),
    "filter_profile": _option(("papo",), str, "--filter-profile", "Structural filter: strict, lenient or npr-compat."),
    "prompt_file": (RL, (PromptFile, None)),
    "rollout_engine": _option(RL, RolloutEngine, "--engine", "Rollouts: torch (in process), sglang or openai."),
    "rollout_servers": _option(RL, list[str], "--server", "Rollout server URL; repeat it to spread samples."),
    "weight_sync": _option(RL, str, "--weight-sync", "How new weights reach the servers: disk or distributed."),
    "weight_sync_dir": _option(RL, str, "--weight-sync-dir", "--weight-sync disk: a folder every server reads."),
    "weight_sync_address": _option(RL, str, "--weight-sync-address", "distributed: this host as servers see it."),
    "allow_approximate": _option(RL, bool, "--allow-approximate", "PAPO: server rollouts of a canonical model."),
    "seed": _option(ALL, int, "--seed", "Training seed (data order, init of new rows)."),
    "logging_steps": _option(("sft",), int, "--logging-steps", "Log every N steps.", min=1),
}


def _main_process() -> bool:
    """Under ``accelerate launch`` only the main process prints the result (every process prints its errors)."""
    from npr_toolkit.train.processes import main_process

    return main_process()


def _flags(stage: str) -> Options:
    return {name: option for name, (stages, option) in FLAGS.items() if stage in stages}


def _overrides(sets: list[str] | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Config overrides from ``--set`` pairs and the flags that were given (flags win)."""
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
    given = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items() if value is not None}
    return values | given


def _run_sft(model: str, data: Path, out: Path, config: Path | None, overrides: dict[str, Any]) -> SFTReport:
    from npr_toolkit.train.sft import REPORT_NAME, SFTReport, run_sft

    path = run_sft(model, data, out, config=config, **overrides)
    return SFTReport.model_validate_json((path / REPORT_NAME).read_text(encoding="utf-8"))


def _print_sft(report: SFTReport) -> None:
    loss = "-" if report.first_loss is None else f"{report.first_loss:.4f} -> {report.last_loss:.4f}"
    view = report.view_mode if report.view_mode == report.semantics else f"{report.view_mode} (as {report.semantics})"
    rows = [
        ("records read / trained", f"{report.records} / {report.trained}"),
        ("dropped", ", ".join(f"{n} {kind}" for kind, n in sorted(report.dropped.items())) or "none"),
        ("semantics / attention", f"{view} / {report.attn_implementation}"),
        ("optimizer steps", report.steps),
        ("logged loss (first -> last)", loss),
        ("mean train loss", f"{report.train_loss:.4f}"),
        ("runtime (s)", f"{report.runtime_s:.1f}"),
    ]
    print_table(f"npr train sft: {report.out}", rows, header=("item", "value"))
    for item in report.dropped_records[:SHOWN_DROPPED]:
        console.print(f"[yellow]dropped[/] {escape(item.where)}: {item.kind}: {escape(item.reason)}", soft_wrap=True)
    if len(report.dropped_records) > SHOWN_DROPPED:
        console.print(f"... {len(report.dropped_records) - SHOWN_DROPPED} more in {report.out}/sft_report.json")
    console.print(f"checkpoint: {report.out}")


# --- the RL stages: a summary of the logged metrics
RL_METRICS = (
    "reward",
    "npr/accuracy",
    "npr/format_valid_rate",
    "npr/parallel_rate",
    "npr/mean_width",
    "npr/total_tokens",
    "npr/critical_path_tokens",
    "npr/filtered",
    "npr/onpolicy_max_abs_diff",
    "rewards/format_reward/mean",
    "rewards/correctness_reward/mean",
    "loss",
)


def _rl_summary(stage: str, path: Path) -> dict[str, Any]:
    """The first and last logged values of the stage's key metrics (from ``trainer_state.json``)."""
    history = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    steps = [entry for entry in history if "reward" in entry or "loss" in entry]
    return {
        "stage": stage,
        "out": str(path),
        "steps": len(steps),
        # TRL logs None for a mean over no values (e.g. the reward of a step whose rollouts were all filtered)
        "first": {k: steps[0][k] for k in RL_METRICS if steps and steps[0].get(k) is not None},
        "last": {k: steps[-1][k] for k in RL_METRICS if steps and steps[-1].get(k) is not None},
    }


def _print_rl(summary: dict[str, Any]) -> None:
    first, last = summary["first"], summary["last"]
    rows = [(key, f"{first.get(key, float('nan')):.4g}", f"{last[key]:.4g}") for key in last]
    title = f"npr train {summary['stage']}: {summary['out']} ({summary['steps']} logged steps)"
    print_table(title, rows, header=("metric", "first step", "last step"))


def _run_rl(stage: Literal["zero", "papo"]) -> Callable[..., dict[str, Any]]:
    def run(model: str, problems: Path, out: Path, config: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
        if stage == "zero":
            from npr_toolkit.train.zero import run_zero as train
        else:
            from npr_toolkit.train.papo import run_papo as train

        return _rl_summary(stage, train(model, problems, out, config=config, **overrides))

    return run


# --- the commands: one body for the three stages; their input file, training call and printing differ
def _stage_command(
    stage: str,
    source: tuple[str, Any],
    run: Callable[[str, Path, Path, Path | None, dict[str, Any]], T],
    *,
    text: Callable[[T], None],
    data: Callable[[T], Any],
) -> Callable[..., None]:
    """``npr train <stage>``: ``source`` is its input file's (parameter name, option); ``run(model, input, out,
    config, overrides)`` trains and returns what ``text`` prints as tables and ``data`` as the JSON document."""
    name, option = source

    def command(
        model: Model,
        config: ConfigFile = None,
        sets: Sets = None,
        output_format: OutputFormat = "text",
        **flags: Any,
    ) -> None:
        path, out = flags.pop(name), flags.pop("out")
        overrides = _overrides(sets, flags)

        def job() -> T:
            inputs = {"--model": model, flag(name): path, "--config": config, "--prompt-file": flags.get("prompt_file")}
            check_outputs(inputs=inputs, folders={"--out": out})
            from npr_toolkit.engine.http_client import ServerError  # here: the engine imports torch

            try:
                return run(model, path, out, config, overrides)
            except ServerError as error:  # a rollout server unreachable, refusing weights, or on other weights
                fail(str(error))

        finish(job, output_format, text=text, data=data, show=_main_process())

    command.__doc__ = HELP[stage]
    return with_options({name: (option, REQUIRED), "out": (Out, REQUIRED), **_flags(stage)})(command)


def _sft_json(report: SFTReport) -> dict[str, Any]:
    return report.model_dump(mode="json")


def _rl_json(summary: dict[str, Any]) -> dict[str, Any]:
    return summary


train_app.command("sft")(_stage_command("sft", ("data", Data), _run_sft, text=_print_sft, data=_sft_json))
train_app.command("zero")(
    _stage_command("zero", ("problems", Problems), _run_rl("zero"), text=_print_rl, data=_rl_json)
)
train_app.command("papo")(
    _stage_command("papo", ("problems", Problems), _run_rl("papo"), text=_print_rl, data=_rl_json)
)
