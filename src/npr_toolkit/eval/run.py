"""The evaluation job behind ``npr eval --bench NAME --model M``: sample, grade, check, time, report.

Every (problem, sample) gets a seed derived from (``--seed``, problem id, sample index), so a
sample's text does not depend on k, --limit, the batch it shares or what ran before it. Samples are
decoded ``--batch-size`` at a time (1, the default, times each sample alone: latency, as the paper's
Table 3); each record keeps its latency and its share of its call's wall time, so the metrics give the
real elapsed time and throughput at any batch size, not a sum of overlapping latencies. A baseline
decodes the same prompts with the same seeds, interleaved batch by batch with the parallel run so both
see the same machine conditions: ``serial`` decodes the same tree with the branches one after another
(same tokens and semantics: the fair baseline of docs/design.md §3), ``sequential`` decodes plain
autoregressively (what a model not trained on the view uses). Each finished sample is graded
(math-verify on the last ``\\boxed{}``), validated under every format profile, and appended to
``OUT/samples.jsonl``; a killed run restarts where it stopped. The settings that change what is
sampled are pinned in ``OUT/settings.json``: resuming with different ones is refused, not mixed.
At the end the answers of each problem are clustered by math equivalence for maj@k (``voting.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from npr_toolkit.data.grading import Grade, Grader
from npr_toolkit.data.io import InputError, ResumableJsonl, exclusive, write_json_atomic
from npr_toolkit.data.prompts import load_template, user_message
from npr_toolkit.data.records import Problem, describe_error
from npr_toolkit.errors import Interrupted
from npr_toolkit.format import PROFILES, extract_boxed, validate
from npr_toolkit.seeds import derive_seed

from .benchmarks import load_benchmark
from .metrics import Metrics, Mode, SampleRecord, Speedup, compute_metrics, compute_speedup
from .report import BenchmarkInfo, Results, write_outputs
from .voting import assign_votes

JOURNAL_FILE = "samples.jsonl"
SETTINGS_FILE = "settings.json"
WARMUP_TOKENS = 8
# What a journal line holds; a journal of another version is not resumed (its timings would read as 0).
JOURNAL_VERSION = 2
# Settings that change which text is sampled: a journal written under other values cannot be reused.
PINNED_SETTINGS = (
    "bench",
    "model",
    "engine",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "max_width",
    "max_depth",
)


class EvalConfig(BaseModel):
    """Options of one ``npr eval`` run: each field is a flag (``--batch-size``), its description the help."""

    model_config = ConfigDict(frozen=True)
    bench: str = Field(description="aime25, amc23, hmmt25, math500, or a PATH.jsonl of problems.")
    model: str
    out: Path = Field(description="Output folder (default runs/eval/BENCH-MODEL); a rerun resumes there.")
    engine: Literal["torch", "sglang", "openai"] = "torch"
    server: str | None = None
    allow_approximate: bool = False
    device: str | None = None
    k: int = Field(8, ge=1, description="Samples per problem.")
    limit: int | None = Field(None, ge=1, description="Only the first N problems.")
    max_new_tokens: int = Field(4096, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    max_width: int = Field(8, ge=1, description="Most branches per block.")
    max_depth: int = Field(1, ge=1, description="Deepest block nesting.")
    data_dir: Path | None = Field(None, description="Folder with NAME.jsonl benchmarks (before $NPR_DATA_DIR).")
    baseline: Literal["serial", "sequential"] | None = Field(
        None,
        description="Also decode and time a baseline: serial (the same trees, branches one after another: the "
        "fair speed baseline) or sequential (plain autoregressive decoding).",
    )
    batch_size: int = Field(1, ge=1, description="Samples decoded together (1: per-sample latency).")
    prompt_file: Path | None = None
    grade_workers: int = Field(1, ge=0, description="Grading processes (0: in-process).")
    grade_timeout: float = Field(5.0, gt=0.0, description="Seconds to grade one answer before it is a timeout.")
    progress: bool = True


class EvalSummary(BaseModel):
    """What ``run_eval`` returns to the CLI: the headline numbers and where the outputs are."""

    outputs: dict[str, str]
    benchmark: BenchmarkInfo
    metrics: dict[str, Metrics]
    speedup: Speedup | None
    generated: int  # samples decoded by this call
    resumed: int  # samples taken from an earlier, interrupted run


# --- one sample ----------------------------------------------------------------------------------


def sample_seed(seed: int, problem_id: str, sample: int) -> int:
    """A seed per (run seed, problem, sample), stable under changes of k, --limit and order."""
    return derive_seed(seed, problem_id, sample)


class Assessment(BaseModel):
    """What the eval path derives from a completion's text: answer, grade, format checks, depth."""

    predicted: str | None
    grade: Grade
    valid: dict[str, bool]
    diagnostics: dict[str, list[str]]
    depth: int


def assess(text: str, answer: str, grader: Grader) -> Assessment:
    """Grade the last balanced ``\\boxed{}`` of ``text`` and validate it under every profile."""
    predicted = extract_boxed(text)
    grade = next(grader.grade_many([(predicted, answer)]))
    valid: dict[str, bool] = {}
    diagnostics: dict[str, list[str]] = {}
    depth = 0
    for name, profile in PROFILES.items():
        result = validate(text, profile)
        valid[name] = result.valid
        if result.diagnostics:
            diagnostics[name] = [d.format() for d in result.diagnostics]
        if result.stats is not None:
            depth = max(depth, result.stats.depth)
    return Assessment(predicted=predicted, grade=grade, valid=valid, diagnostics=diagnostics, depth=depth)


def make_record(
    problem: Problem,
    index: int,
    sample: int,
    mode: Mode,
    seed: int,
    generation: Any,
    timing: tuple[float, float, int],
    grader: Grader,
) -> SampleRecord:
    """A journal record from one engine ``Generation`` and its ``(latency, elapsed_share, batch_size)``."""
    found = assess(generation.text, problem.answer, grader)
    stats = generation.stats
    latency, elapsed_share, batch_size = timing
    return SampleRecord(
        problem_id=problem.id,
        problem_index=index,
        sample=sample,
        mode=mode,
        seed=seed,
        answer=problem.answer,
        text=generation.text,
        finish_reason=generation.finish_reason,
        predicted=found.predicted,
        grade=found.grade.status,
        valid=found.valid,
        diagnostics=found.diagnostics,
        widths=list(stats.widths),
        depth=found.depth,
        total_tokens=stats.total_tokens,
        critical_path_tokens=stats.critical_path_tokens,
        steps=stats.steps,
        batch_size=batch_size,
        latency=latency,
        elapsed_share=elapsed_share,
    )


# --- the run -------------------------------------------------------------------------------------


def _pin_settings(config: EvalConfig, template: str, journal: ResumableJsonl) -> None:
    """Record the sampling-relevant settings; refuse if the folder holds samples made with other ones."""
    pinned: dict[str, Any] = {key: getattr(config, key) for key in PINNED_SETTINGS}
    pinned["prompt_sha256"] = hashlib.sha256(template.encode()).hexdigest()
    pinned["journal_version"] = JOURNAL_VERSION
    path = config.out / SETTINGS_FILE
    if path.is_file() and journal.done():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in pinned if before.get(key) != pinned[key])
        if changed:
            raise InputError(
                f"{config.out} holds samples made with different settings ({', '.join(changed)}); "
                "use another --out or remove that folder"
            )
        return
    write_json_atomic(path, pinned)  # no samples yet: an earlier failed start must not pin anything


def _journal_records(journal: ResumableJsonl, problems: dict[str, Problem], k: int) -> list[SampleRecord]:
    """Earlier samples that belong to this run's problems and k.

    A line that is not a sample record stops the run with its file:line (exit 2) rather than being
    skipped: the journal is this tool's own output, so such a line means something else wrote to it,
    and a run that silently re-decodes around it would report on a folder nobody can vouch for.

    Raises:
        InputError: a line is not a sample record, or a problem's gold answer changed since.
    """
    kept = []
    for line, data in journal.done_with_lines():
        try:
            record = SampleRecord.model_validate(data)
        except ValidationError as exc:
            raise InputError(
                f"{journal.path}:{line}: not an `npr eval` sample ({describe_error(exc)}); "
                "remove that line to decode the sample again, or use another --out"
            ) from None
        problem = problems.get(record.problem_id)
        if problem is None or record.sample >= k:
            continue
        if record.answer != problem.answer:
            raise InputError(
                f"{journal.path}: problem {record.problem_id!r} has another answer in the benchmark now; "
                "use another --out"
            )
        kept.append(record)
    return kept


def run_eval(config: EvalConfig) -> EvalSummary:
    """Run (or resume) one evaluation and write results.json, report.md and the plots.

    Raises:
        InputError: benchmark, prompt file, output folder or model that cannot be used (usage errors).
        Interrupted: Ctrl-C; the samples decoded so far are in the journal, and rerunning resumes.
    """
    benchmark = load_benchmark(config.bench, data_dir=config.data_dir)
    problems = benchmark.problems[: config.limit] if config.limit else benchmark.problems
    template = load_template(config.prompt_file)
    modes: list[Mode] = ["parallel", config.baseline] if config.baseline else ["parallel"]

    grader = Grader(workers=config.grade_workers, timeout=config.grade_timeout)
    # The lock: a second `npr eval --out` on this folder would append to this run's journal.
    with exclusive(config.out, "--out"), grader, ResumableJsonl(config.out / JOURNAL_FILE) as journal:
        _pin_settings(config, template, journal)
        records = _journal_records(journal, {p.id: p for p in problems}, config.k)
        done = {(r.mode, r.problem_id, r.sample) for r in records}
        resumed = sum(1 for r in records if r.mode in modes)
        tasks = [
            (index, problem, sample, mode)
            for index, problem in enumerate(problems)
            for sample in range(config.k)
            for mode in modes
            if (mode, problem.id, sample) not in done
        ]
        if tasks:
            try:
                records += _generate(config, template, tasks, journal, grader)
            except KeyboardInterrupt:
                raise Interrupted(len(journal.done()), str(journal.path)) from None
        records = assign_votes([r for r in records if r.mode in modes], grader)

    metrics = {mode: compute_metrics(records, mode) for mode in modes}
    speedup = compute_speedup(metrics["parallel"], metrics[config.baseline]) if config.baseline else None
    info = BenchmarkInfo(name=benchmark.name, source=benchmark.source, problems=len(problems))
    results = Results(
        settings=config.model_dump(mode="json", exclude={"progress"}),
        benchmark=info,
        metrics=metrics,
        speedup=speedup,
        samples=sorted(records, key=lambda r: (r.problem_index, r.sample, r.mode)),
    )
    paths = write_outputs(results, config.out)
    return EvalSummary(
        outputs={key: str(path) for key, path in paths.items()} | {"journal": str(config.out / JOURNAL_FILE)},
        benchmark=info,
        metrics=metrics,
        speedup=speedup,
        generated=len(tasks),
        resumed=resumed,
    )


def _generate(
    config: EvalConfig,
    template: str,
    tasks: list[tuple[int, Problem, int, Mode]],
    journal: ResumableJsonl,
    grader: Grader,
) -> list[SampleRecord]:
    """Decode, grade and journal every pending sample; returns their records."""
    from tqdm import tqdm

    from npr_toolkit.engine import SamplingParams, SemanticsError, load_engine

    with quiet_libraries():
        try:
            engine = load_engine(
                config.model,
                backend=config.engine,
                server_url=config.server,
                device=config.device,
                allow_approximate=config.allow_approximate,
            )
        except OSError as exc:  # transformers reports a missing or unreachable model as OSError
            raise InputError(f"cannot load model {config.model!r}: {exc}") from None
        except SemanticsError as exc:  # a server engine that cannot decode this checkpoint exactly
            raise InputError(str(exc)) from None

    def params(mode: Mode, seed: int | None, max_new_tokens: int) -> Any:
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=seed,
            n=1,
            parallel=mode != "sequential",
            serial_branches=mode == "serial",
            max_width=config.max_width,
            max_depth=config.max_depth,
        )

    prompts: dict[str, str] = {}
    for _, problem, _, _ in tasks:
        if problem.id not in prompts:
            prompts[problem.id] = engine.format_chat(user_message(problem.problem, template))
    records: list[SampleRecord] = []
    bar = tqdm(total=len(tasks), desc=f"eval {config.bench}", unit="sample", disable=not config.progress)
    with quiet_libraries(), bar:
        # One short decode per mode first, so one-time costs (kernels, caches) are not billed to sample 1.
        first = next(iter(prompts.values()))
        for mode in dict.fromkeys(task[3] for task in tasks):
            engine.generate([first], params(mode, config.seed, WARMUP_TOKENS))
        correct = 0
        for mode, batch in _batches(tasks, config.batch_size):
            seeds = [sample_seed(config.seed, problem.id, sample) for _, problem, sample, _ in batch]
            start = time.perf_counter()
            generations = engine.generate(
                [prompts[problem.id] for _, problem, _, _ in batch],
                params(mode, None, config.max_new_tokens),
                seeds=seeds,
            )
            wall = time.perf_counter() - start
            for (index, problem, sample, _), seed, generation in zip(batch, seeds, generations, strict=True):
                # Alone, a sample's latency is the call's; in a batch, when its own request finished.
                latency = wall if len(batch) == 1 else generation.stats.wall_time
                timing = (latency, wall / len(batch), config.batch_size)
                record = make_record(problem, index, sample, mode, seed, generation, timing, grader)
                journal.append(record)
                records.append(record)
                correct += record.correct
            bar.set_postfix_str(f"correct {100 * correct / len(records):.0f}%", refresh=False)
            bar.update(len(batch))
    return records


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep model-loading bars and library warnings (deprecations, generation hints) out of eval's output.

    Errors still raise; only transformers' info/warning logs, its progress bars and Python warnings
    raised while loading and decoding are muted, and restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    from npr_toolkit.engine import SemanticsWarning

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", SemanticsWarning)  # ours, for the user: a checkpoint records none
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _batches(
    tasks: list[tuple[int, Problem, int, Mode]], size: int
) -> list[tuple[Mode, list[tuple[int, Problem, int, Mode]]]]:
    """Tasks cut into same-mode batches of ``size``, modes interleaved batch by batch."""
    by_mode: dict[Mode, list[tuple[int, Problem, int, Mode]]] = {}
    for task in tasks:
        by_mode.setdefault(task[3], []).append(task)
    chunks = {mode: [items[i : i + size] for i in range(0, len(items), size)] for mode, items in by_mode.items()}
    return [
        (mode, chunk[i])
        for i in range(max(len(c) for c in chunks.values()))
        for mode, chunk in chunks.items()
        if i < len(chunk)
    ]
