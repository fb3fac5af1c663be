"""``npr demo``: the whole NPR recipe end to end on a laptop CPU, on the toy world, with no downloads.

Stages (each one the same library code the real commands run):
1. base: a tiny Qwen3-shaped model and the offline char-level tokenizer (``npr_toolkit.toy``);
2. NPR-Zero, **stand-in**: real ``npr train zero`` (GRPO from a random 0.5M-parameter model) cannot
   learn the format in minutes on a CPU, so this stage writes what an NPR-Zero model might sample —
   the toy task's trajectories with hand-set noise rates (wrong steps, wrong answers, broken structure:
   ``toy.task.noisy_trajectory``) — as rollout records; the row reports what that noise came to;
3. ``npr-data distill``: grade (math-verify) and filter (strict) the rollouts into the Beta corpus;
4. ``npr train sft``: fine-tune the base model on it with the parallel training view;
5. ``npr train papo``: on-policy RL with rollouts from the parallel engine;
6. ``npr eval``: the held-out split, SFT and PAPO checkpoints, parallel engine vs the same trees
   decoded branch after branch (the fair sequential baseline).
Each row's time includes the stage's evaluation; the last row is the whole run. The numbers are
printed, not tuned: ``tests/test_demo.py`` asserts what holds for every seed (each stage's effect),
and ``bench/demo_seeds.py`` measures the SFT -> PAPO change over several seeds.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from .data.io import write_json_atomic, write_jsonl_atomic
from .toy import save_toy_model
from .toy.task import PROMPT_TEMPLATE, make_problems, noisy_trajectory

if TYPE_CHECKING:
    from rich.table import Table


class DemoScale(BaseModel):
    """How much of each stage to run: ``quick`` is the CI-sized smoke run."""

    train_problems: int
    heldout_problems: int
    rollouts_per_problem: int
    sft_steps: int
    sft_batch: int
    papo_steps: int
    papo_prompts: int
    papo_samples: int
    eval_samples: int
    speed_problems: int


QUICK = DemoScale(
    train_problems=1500, heldout_problems=64, rollouts_per_problem=2, sft_steps=320, sft_batch=32, papo_steps=24,
    papo_prompts=8, papo_samples=8, eval_samples=2, speed_problems=16,
)  # fmt: skip
# The full demo: more problems, a longer SFT and PAPO, more held-out samples.
FULL = QUICK.model_copy(
    update=dict(
        train_problems=6000, heldout_problems=200, sft_steps=700, sft_batch=64, papo_steps=100, eval_samples=4,
        speed_problems=48,
    )
)  # fmt: skip

MAX_NEW_TOKENS = 160  # the longest toy trajectory is ~120 tokens


class StageRow(BaseModel):
    """One line of the final table."""

    stage: str
    accuracy: float | None = None
    format_valid: float | None = None
    parallel_rate: float | None = None
    ideal_speedup: float | None = None
    measured_speedup: float | None = None
    acceptance: float | None = None
    engine: str = ""  # what decoded the row's samples: torch, or the SGLang backend against npr serve
    seconds: float = 0.0  # the stage and its evaluation


class DemoResult(BaseModel):
    out: str
    quick: bool
    seed: int
    semantics: str = "canonical"
    rows: list[StageRow]
    seconds: float  # the whole run, end to end
    paths: dict[str, str]


Log = Callable[[str], None]


def _zero_stand_in(problems: list[dict[str, str]], per_problem: int, seed: int, out: Path) -> StageRow:
    """Write NPR-Zero-like rollouts (docs/design.md §6 records) and measure their structure (distill grades them)."""
    from .format import StructuralFilter

    rng = random.Random(seed)
    check = StructuralFilter("strict")
    rollouts, valid, parallel = [], 0, 0
    for problem in problems:
        for sample in range(per_problem):
            completion = noisy_trajectory(problem["problem"], rng)
            verdict = check(completion)
            valid += verdict.ok
            parallel += bool(verdict.stats and verdict.stats.parallel)
            rollouts.append(
                {
                    "id": f"{problem['id']}-s{sample}",
                    "problem_id": problem["id"],
                    "prompt": PROMPT_TEMPLATE.replace("{problem}", problem["problem"]),
                    "completion": completion,
                    "meta": {"source": "npr-zero-stand-in", "seed": seed},
                }
            )
    write_jsonl_atomic(out, rollouts)
    n = len(rollouts)
    return StageRow(stage="NPR-Zero (stand-in)", format_valid=valid / n, parallel_rate=parallel / n)


def _evaluate(
    stage: str,
    model: Path,
    out: Path,
    scale: DemoScale,
    heldout: Path,
    template: Path,
    seed: int,
    speed: bool = True,
    server: str | None = None,
) -> StageRow:
    """Held-out accuracy/format/parallelism (batched, temperature 1), then latency: one prompt at a
    time, parallel engine vs the same trees decoded branch after branch (the fair baseline). With
    ``server``, decoded by the SGLang backend against it (as on a stock SGLang server), else in process."""
    from .eval.run import EvalConfig, run_eval

    via = {"engine": "sglang", "server": server} if server else {}
    common = dict(
        **via,
        bench=str(heldout),
        model=str(model),
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=1.0,
        seed=seed,
        prompt_file=template,
        grade_workers=0,
        device="cpu",
        progress=False,
    )
    quality = run_eval(EvalConfig(out=out / f"eval-{model.name}", k=scale.eval_samples, batch_size=32, **common))
    metrics = quality.metrics["parallel"]
    row = StageRow(
        stage=stage,
        accuracy=metrics.avg_at_k,
        format_valid=metrics.format_valid.get("strict"),
        parallel_rate=metrics.parallel_trigger_rate,
        engine="sglang" if server else "torch",
    )
    if speed:
        timing = run_eval(
            EvalConfig(out=out / f"speed-{model.name}", k=1, limit=scale.speed_problems, baseline="serial", **common)
        )
        assert timing.speedup is not None  # a baseline was asked for
        row.ideal_speedup = timing.speedup.ideal
        row.measured_speedup = timing.speedup.latency
    return row


@contextlib.contextmanager
def _serving(model: Path, served: bool) -> Iterator[str | None]:
    """``npr serve`` over ``model`` in a thread (its URL), when the stage decodes as on a stock server."""
    if not served:
        yield None
        return
    from .engine import TorchEngine
    from .serve import ServeConfig, Server

    engine = TorchEngine.from_pretrained(str(model), device="cpu", dtype="float32")
    with Server(engine, ServeConfig(port=0, max_queue=4096, max_outputs=4096)) as url:
        yield url


def run_demo(
    out: str | Path = "demo-out",
    quick: bool = False,
    seed: int = 0,
    log: Log = print,
    semantics: Literal["canonical", "reprefill"] = "canonical",
) -> DemoResult:
    """Run every stage into ``out`` and return the final table's rows.

    ``semantics`` is what SFT trains (docs/design.md §3, §3b). With ``reprefill`` the model is then decoded
    as on a stock SGLang server: PAPO's rollouts and the evaluations of SFT and PAPO go through the SGLang
    backend against ``npr serve`` (its ``/generate``, in a thread), with PAPO pushing its weights to the
    server before every rollout; with ``canonical`` everything decodes in process with the torch engine.

    On one torch thread: the toy model's matrices are too small to gain from a second one, which only
    spin-waits when the machine is busy, and the numbers then do not depend on the machine's core count
    (``npr demo``, its test and ``bench/demo_seeds.py`` print the same table for a seed). Model-loading
    bars and library warnings are muted (``eval.run.quiet_libraries``).
    """
    import torch

    from .eval.run import quiet_libraries

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with quiet_libraries():
            return _run_stages(Path(out), QUICK if quick else FULL, quick, seed, log, semantics)
    finally:
        torch.set_num_threads(threads)


def _run_stages(out: Path, scale: DemoScale, quick: bool, seed: int, log: Log, semantics: str) -> DemoResult:
    import torch

    from .data.distill import DistillConfig, run_distill
    from .train.papo import run_papo
    from .train.sft import run_sft

    began = time.perf_counter()
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[StageRow] = []
    paths: dict[str, str] = {}

    def stage(title: str) -> float:
        log(f"[bold]▶ {title}[/]")
        return time.perf_counter()

    # 1. base model
    started = stage("base: tiny Qwen3 model + offline tokenizer, held-out eval")
    base = save_toy_model(out / "base", seed=seed)
    paths["base"] = str(base)
    train_problems = make_problems(scale.train_problems, split="train", seed=seed)
    train, heldout = out / "train.jsonl", out / "heldout.jsonl"
    write_jsonl_atomic(train, train_problems)
    write_jsonl_atomic(heldout, make_problems(scale.heldout_problems, split="heldout", seed=seed))
    template = out / "prompt.txt"
    template.write_text(PROMPT_TEMPLATE, encoding="utf-8")

    def evaluated(name: str, model: Path, started: float, speed: bool = True, served: bool = False) -> None:
        """The held-out row of a stage's model; its time includes the stage's training. ``served``: decoded
        through ``npr serve`` and the SGLang backend, as on a stock server (``--semantics reprefill``)."""
        with _serving(model, served) as url:
            row = _evaluate(name, model, out, scale, heldout, template, seed, speed, server=url)
        row.seconds = time.perf_counter() - started
        rows.append(row)

    evaluated("base model", base, started, speed=False)

    # 2. NPR-Zero stand-in
    started = stage("NPR-Zero stand-in: noisy format trajectories")
    rollouts = out / "zero_rollouts.jsonl"
    zero = _zero_stand_in(train_problems, scale.rollouts_per_problem, seed, rollouts)
    zero.seconds = time.perf_counter() - started
    rows.append(zero)
    paths["rollouts"] = str(rollouts)

    # 3. distill (its share kept is the row's number; the Zero row above shows validity before filtering)
    started = stage("npr-data distill: grade + strict filter -> Beta corpus")
    beta = out / "beta.jsonl"
    distilled = run_distill(
        DistillConfig(problems=train, rollouts=rollouts, out=beta, profile="strict", seed=seed, workers=1)
    )
    report = distilled.report
    zero.accuracy = report["grades"].get("correct", 0) / report["samples"]
    rows.append(
        StageRow(stage="distill", acceptance=report.get("acceptance_rate"), seconds=time.perf_counter() - started)
    )
    paths["beta"] = str(beta)

    # 4. SFT on the parallel view (both trainings: CPU, constant rate, no mid-run checkpoint, no bars)
    on_cpu = dict(use_cpu=True, lr_scheduler_type="constant", save_strategy="no", seed=seed, disable_tqdm=True)
    started = stage("npr train sft: parallel view on TRL's SFTTrainer, then held-out eval")
    sft = run_sft(
        base,
        beta,
        out / "sft",
        max_steps=scale.sft_steps,
        per_device_train_batch_size=scale.sft_batch,
        learning_rate=2e-3,
        warmup_steps=0,
        weight_decay=0.0,
        logging_steps=50,
        semantics=semantics,
        **on_cpu,
    )
    served = semantics == "reprefill"  # decoded as on a stock server: through npr serve, as a GPU user would
    evaluated("SFT (NPR-Beta)", sft, started, served=served)
    paths["sft"] = str(sft)

    # 5. PAPO
    started = stage("npr train papo: parallel-engine rollouts, on-policy PG, then held-out eval")
    with _serving(sft, served) as url:
        # On a server, the trainer pushes its weights there (a shared folder) before every rollout.
        rollouts = {"rollout_engine": "sglang", "rollout_servers": [url], "weight_sync_dir": str(out / "weights")}
        papo = run_papo(
            sft,
            train,
            out / "papo",
            template=PROMPT_TEMPLATE,
            **(rollouts if url else {}),
            max_steps=scale.papo_steps,
            per_device_train_batch_size=scale.papo_prompts * scale.papo_samples,
            num_generations=scale.papo_samples,
            learning_rate=1e-4,
            max_completion_length=MAX_NEW_TOKENS,
            **on_cpu,
        )
    evaluated("PAPO (NPR)", papo, started, served=served)
    paths["papo"] = str(papo)
    paths |= {f"eval_{name}": str(out / f"eval-{name}") for name in ("base", "sft", "papo")}

    result = DemoResult(
        out=str(out),
        quick=quick,
        seed=seed,
        semantics=semantics,
        rows=rows,
        seconds=time.perf_counter() - began,
        paths=paths,
    )
    write_json_atomic(out / "demo.json", result.model_dump(mode="json"))
    return result


def demo_table(result: DemoResult) -> Table:
    """The final table ``npr demo`` prints (the README shows one): a row per stage, then the total."""
    from rich import box
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.1f}%"

    def times(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        title=f"npr demo ({'quick' if result.quick else 'full'}, {result.semantics}, seed {result.seed}): {result.out}",
    )
    columns = ("stage", "engine", "accuracy", "valid", "parallel", "ideal", "measured", "kept", "time")
    for column in columns:
        table.add_column(column, justify="left" if column in ("stage", "engine") else "right", no_wrap=True)
    for row in result.rows:
        table.add_row(
            row.stage,
            row.engine,
            pct(row.accuracy),
            pct(row.format_valid),
            pct(row.parallel_rate),
            times(row.ideal_speedup),
            times(row.measured_speedup),
            pct(row.acceptance),
            f"{row.seconds:.0f}s",
        )
    table.add_section()
    table.add_row("total", *[""] * 7, f"{result.seconds:.0f}s")
    return table


LEGEND = (
    "accuracy: held-out avg@k at temperature 1 (NPR-Zero: its rollouts, graded); valid: strict format profile "
    "(NPR-Zero: before distill filters); parallel: samples with a block of width >= 2; ideal/measured: speed-up "
    "of the parallel engine over the same prompts decoded branch after branch (tokens / critical path; latency, "
    "one prompt at a time); kept: the share of rollouts distill keeps; engine: what decoded the row's samples "
    "(torch: in process; sglang: the SGLang backend against npr serve, as on a stock SGLang server); time: the "
    "stage with its evaluation."
)
