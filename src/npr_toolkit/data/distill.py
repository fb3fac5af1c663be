"""The NPR-Beta distillation job behind ``npr-data distill`` (recipe stage 2, DESIGN §1 and §6).

Reads problems and NPR-Zero rollouts (``--rollouts``), or samples them with the engine (``--model``,
see ``sampling``); grades each final ``\\boxed{}`` in the Grader's process pool while the structural
filter runs here; keeps up to ``per_problem`` accepted trajectories per problem by a selection
policy; writes Beta SFT records (TRL's conversational format) and a report.

Resumable: the work is cut into fixed chunks and each finished chunk is one line of a
``ResumableJsonl`` journal in ``OUT.work/`` (a line is all or nothing, so ``kill -9`` loses at most
the chunk in flight). A rerun with the same inputs and options (checked by a fingerprint) skips the
finished chunks; the corpus and the report are computed from the journal alone and written
atomically at the end in a fixed order, so a killed-and-resumed run writes the same bytes as an
uninterrupted one. Bad input never stops the job: each bad record is counted and reported with its
file:line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from npr_toolkit.format import CODE_TABLE, Code, StructuralFilter, Verdict, extract_boxed, get_profile

from .grading import Grade, Grader
from .io import InputError, ResumableJsonl, read_checked, read_records, write_json_atomic, write_jsonl_atomic
from .problems import load_problems
from .prompts import load_template
from .records import BetaExample, Message, Problem, Rollout

Policy = Literal["first", "shortest", "most-parallel"]
Progress = Callable[[int, int], None]  # (samples judged, samples expected so far)

CHUNK = 256  # rollouts per journal line (--rollouts); part of the fingerprint
_FORMAT_VERSION = 1  # bump when the journal layout changes, so old work dirs are not reused


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class DistillConfig(BaseModel):
    """Options of one ``npr-data distill`` run: each field is a flag (``--per-problem``), its description the help."""

    model_config = ConfigDict(frozen=True)
    problems: Path = Field(description="Problems JSONL: {id, problem, answer[, source]}.")
    out: Path = Field(description="Output Beta SFT JSONL (also OUT.report.json, OUT.work/).")
    rollouts: Path | None = Field(None, description="NPR-Zero rollouts: {id, problem_id, prompt, completion}.")
    model: str | None = Field(None, description="Sample the rollouts with this model (folder or hub id) instead.")
    samples: int | None = Field(None, ge=1, description="With --model: samples per problem and round.")
    profile: str = Field("strict", description="Format profile the samples must pass: strict, lenient, npr-compat.")
    select: Policy = Field("first", description="Which accepted samples to keep: first, shortest or most-parallel.")
    per_problem: int = Field(1, ge=1, description="Accepted samples kept per problem.")
    max_tries: int = Field(8, ge=1, description="With --model: sampling rounds per problem at most.")
    workers: int = Field(
        default_factory=_default_workers,
        ge=0,
        description="Grading processes (0: in-process; default: cores - 1, max 4).",
    )
    grade_timeout: float = Field(5.0, gt=0.0, description="Seconds to grade one answer before it is a timeout.")
    min_width: int = Field(1, ge=1, description="Reject a sample with a block narrower than N.")
    require_parallel: bool = Field(False, description="Reject a sample with no block of width >= 2.")
    seed: int = Field(0, description="With --model: sampling seed (each problem and round derives its own).")
    prompt_file: Path | None = Field(None, description="With --model: prompt template with {problem}.")
    save_to_disk: Path | None = Field(None, description="Also save the corpus as a `datasets` folder here.")
    engine: Literal["torch", "sglang"] = "torch"
    server: str | None = None
    device: str | None = None
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _one_source(self) -> DistillConfig:
        if (self.rollouts is None) == (self.model is None):
            raise ValueError("give exactly one of --rollouts or --model")
        if self.model is not None and self.samples is None:
            raise ValueError("--model needs --samples K (samples per problem and round)")
        if self.rollouts is not None:
            for flag, value in (("--samples", self.samples), ("--prompt-file", self.prompt_file)):
                if value is not None:
                    raise ValueError(f"{flag} applies to --model only (rollouts carry their own prompts)")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        get_profile(value)  # unknown: a ValueError naming the choices
        return value

    @property
    def report_path(self) -> Path:
        return Path(f"{self.out}.report.json")

    @property
    def work_dir(self) -> Path:
        return Path(f"{self.out}.work")

    @property
    def rollouts_path(self) -> Path:
        """Where ``--model`` runs write every sample they drew, as DESIGN §6 rollout records."""
        return Path(f"{self.out}.rollouts.jsonl")


class DistillResult(BaseModel):
    """What ``run_distill`` returns: the report (also in ``OUT.report.json``) and how this call ran."""

    report: dict[str, Any]
    resumed_samples: int  # judged by an earlier, interrupted run and taken from the journal
    restarted: bool  # a work dir from a run with other inputs/options was discarded
    elapsed: float


# --- inputs --------------------------------------------------------------------------------------


class _Entry(BaseModel):
    """A valid rollout of the input, without its text (re-read when needed, to keep memory flat)."""

    model_config = ConfigDict(frozen=True)
    record: int  # SourceRecord.index in the rollouts input
    id: str
    problem_id: str


def _check_rollout(data: dict[str, Any], problems: dict[str, Problem]) -> Rollout:
    rollout = Rollout.model_validate(data)
    if rollout.problem_id not in problems:
        raise ValueError(f"unknown problem id {rollout.problem_id!r} (not a valid problem of --problems)")
    if not rollout.prompt.strip():
        raise ValueError("field 'prompt': must not be empty (the SFT example needs the prompt it was sampled with)")
    return rollout


def index_rollouts(path: Path, problems: dict[str, Problem]) -> tuple[list[_Entry], list[str]]:
    """Valid rollouts in input order, and a ``file:line: message`` per bad record."""
    kept, bad = read_checked(path, lambda data: _check_rollout(data, problems), kind="rollout")
    entries = [_Entry(record=item.index, id=r.id, problem_id=r.problem_id) for item, r in kept]
    return entries, bad


def _read_rollouts(path: Path, wanted: set[int]) -> Iterator[tuple[int, Rollout]]:
    """The rollouts at the given record indices (all already validated by ``index_rollouts``)."""
    for item in read_records(path):
        if item.index in wanted:
            yield item.index, Rollout.model_validate(item.data)


_CHAT_TURN = re.compile(r"<\|im_start\|>(system|user)\n(.*?)<\|im_end\|>", re.S)


def prompt_messages(prompt: str) -> list[Message]:
    """The conversation a rollout was sampled with.

    ``prompt`` is the user message; a prompt that was already put through a ChatML chat template
    (``<|im_start|>user ... <|im_end|>``, Qwen's) is split back into its system/user turns, so the SFT
    example is not templated twice.
    """
    turns = _CHAT_TURN.findall(prompt)
    if turns:
        return [Message(role=role, content=content) for role, content in turns]
    return [Message(role="user", content=prompt)]


def _digest(path: Path, hasher: Any) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        hasher.update(str(file.relative_to(path) if path.is_dir() else "").encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)


def fingerprint(config: DistillConfig, template: str | None) -> str:
    """What the results depend on: input bytes, prompt template and the options that change them."""
    hasher = hashlib.sha256()
    # Selection runs at the end, and a (round, problem) draw does not depend on --per-problem or
    # --max-tries (its seed does not), so changing those reuses the journal instead of redoing it.
    ignored = {"out", "workers", "save_to_disk", "server", "device", "select", "per_problem", "max_tries"}
    kept = config.model_dump(mode="json", exclude=ignored)
    hasher.update(json.dumps({"options": kept, "chunk": CHUNK, "v": _FORMAT_VERSION}, sort_keys=True).encode())
    hasher.update((template or "").encode())
    _digest(config.problems, hasher)
    if config.rollouts is not None:
        _digest(config.rollouts, hasher)
    return hasher.hexdigest()


# --- judging -------------------------------------------------------------------------------------


class Judge:
    """Grades answers in the Grader's pool while the structural filter runs in this process."""

    def __init__(self, structural: StructuralFilter, grader: Grader):
        self.structural = structural
        self.grader = grader
        # grade_many blocks on its batch; a helper thread lets the filter run meanwhile. With
        # workers=0 grading needs the main thread (SIGALRM), so it runs inline instead.
        self._thread = ThreadPoolExecutor(max_workers=1) if grader.workers > 0 else None

    def __call__(self, items: list[tuple[str, str]]) -> list[tuple[Grade, Verdict]]:
        """(grade, verdict) for each (completion, gold answer), in order."""
        pairs = [(extract_boxed(text), gold) for text, gold in items]
        if self._thread is None:
            grades = list(self.grader.grade_many(pairs))
            verdicts = [self.structural(text) for text, _ in items]
        else:
            pending = self._thread.submit(lambda: list(self.grader.grade_many(pairs)))
            verdicts = [self.structural(text) for text, _ in items]
            grades = pending.result()
        return list(zip(grades, verdicts, strict=True))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()


def sample_result(
    index: int, rollout_id: str, problem_id: str, text: str, judged: tuple[Grade, Verdict], tokens: int | None = None
) -> dict[str, Any]:
    """The journal record of one judged sample (everything the report and selection need)."""
    grade, verdict = judged
    return {
        "index": index,
        "id": rollout_id,
        "problem_id": problem_id,
        "grade": grade.status,
        "predicted": grade.predicted,
        "codes": verdict.codes,
        "stats": verdict.stats.model_dump() if verdict.stats is not None else None,
        "chars": len(text),
        "tokens": tokens,
    }


def accepted(result: dict[str, Any]) -> bool:
    return result["grade"] == "correct" and not result["codes"]


def rejection_reasons(result: dict[str, Any]) -> list[str]:
    """Why a sample was rejected: its grade (unless correct) and each distinct diagnostic code."""
    reasons = [] if result["grade"] == "correct" else [_GRADE_REASON[result["grade"]]]
    for code in dict.fromkeys(result["codes"]):
        reasons.append(f"{code} {CODE_TABLE[Code(code)][0]}")
    return reasons


_GRADE_REASON = {
    "wrong": "wrong-answer",
    "no_answer": "no-answer",
    "timeout": "grade-timeout",
    "error": "grade-error",
}


# --- selection -----------------------------------------------------------------------------------


def _policy_key(policy: Policy) -> Callable[[dict[str, Any]], tuple]:
    if policy == "first":
        return lambda r: (r["index"],)
    if policy == "shortest":
        return lambda r: (r["stats"]["total"], r["index"])
    return lambda r: (-r["stats"]["ideal_speedup"], -sum(r["stats"]["widths"]), r["index"])


def select(results: list[dict[str, Any]], policy: Policy, per_problem: int) -> dict[str, list[dict[str, Any]]]:
    """Up to ``per_problem`` accepted results per problem id, best first by ``policy``.

    ``first``: input (or sampling) order; ``shortest``: fewest characters; ``most-parallel``: highest
    ideal speed-up, then most branches. Ties fall back to order, so the choice is deterministic.
    """
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        if accepted(result):
            by_problem[result["problem_id"]].append(result)
    key = _policy_key(policy)
    return {pid: sorted(found, key=key)[:per_problem] for pid, found in by_problem.items()}


# --- report --------------------------------------------------------------------------------------


def problem_source(problem: Problem) -> str:
    """The source a problem is counted under: its ``source`` field, else its id up to the last separator."""
    source = (problem.model_extra or {}).get("source")
    if isinstance(source, str) and source.strip():
        return source
    cut = max(problem.id.rfind(sep) for sep in "-_/:.")
    return problem.id[:cut] if cut > 0 else "default"


def _histograms(results: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    widths: Counter[int] = Counter()
    depths: Counter[int] = Counter()
    for result in results:
        if result["stats"] is not None:
            widths.update(result["stats"]["widths"])
            depths[result["stats"]["depth"]] += 1
    return {str(k): widths[k] for k in sorted(widths)}, {str(k): depths[k] for k in sorted(depths)}


def _totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    with_stats = [r["stats"] for r in results if r["stats"] is not None]
    tokens = [r["tokens"] for r in results if r["tokens"] is not None]
    return {
        "samples": len(results),
        "chars": sum(r["chars"] for r in results),
        "critical_path_chars": sum(s["critical_path"] for s in with_stats),
        "tokens": sum(tokens) if tokens else None,
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def build_report(
    config: DistillConfig,
    problems: list[Problem],
    results: list[dict[str, Any]],
    chosen: dict[str, list[dict[str, Any]]],
    bad: dict[str, list[str]],
) -> dict[str, Any]:
    """The job's report (``OUT.report.json``): a pure function of inputs and journal, so reruns agree."""
    selected = [r for problem in problems for r in chosen.get(problem.id, [])]
    source_of = {problem.id: problem_source(problem) for problem in problems}
    by_source: dict[str, dict[str, Any]] = {}
    for problem in problems:
        row = by_source.setdefault(source_of[problem.id], {"problems": 0, "samples": 0, "accepted": 0, "solved": 0})
        row["problems"] += 1
        row["solved"] += problem.id in chosen
    for result in results:
        row = by_source[source_of[result["problem_id"]]]
        row["samples"] += 1
        row["accepted"] += accepted(result)
    for row in by_source.values():
        row["acceptance_rate"] = _rate(row["accepted"], row["samples"])
    reasons: Counter[str] = Counter()
    for result in results:
        reasons.update(rejection_reasons(result))
    n_accepted = sum(accepted(r) for r in results)
    sample_widths, sample_depths = _histograms(results)
    selected_widths, selected_depths = _histograms(selected)
    bad_count = sum(len(v) for v in bad.values())
    return {
        "mode": "model" if config.model is not None else "rollouts",
        "options": config.model_dump(mode="json", exclude={"workers"}),
        "problems": len(problems),
        "problems_solved": len(chosen),
        "samples": len(results),
        "accepted": n_accepted,
        "rejected": len(results) - n_accepted,
        "selected": len(selected),
        "acceptance_rate": _rate(n_accepted, len(results)),
        "grades": dict(sorted(Counter(r["grade"] for r in results).items())),
        "rejections": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_source": dict(sorted(by_source.items())),
        "width_histogram": {"samples": sample_widths, "selected": selected_widths},
        "depth_histogram": {"samples": sample_depths, "selected": selected_depths},
        "totals": {
            "samples": _totals(results),
            "accepted": _totals([r for r in results if accepted(r)]),
            "selected": _totals(selected),
        },
        "bad_input": {
            "count": bad_count,
            "by_file": {k: len(v) for k, v in bad.items()},
            "errors": [error for errors in bad.values() for error in errors],
        },
        "outputs": {
            "out": str(config.out),
            "report": str(config.report_path),
            **({"rollouts": str(config.rollouts_path)} if config.model is not None else {}),
            **({"dataset": str(config.save_to_disk)} if config.save_to_disk is not None else {}),
        },
    }


# --- outputs -------------------------------------------------------------------------------------


def beta_example(rollout: Rollout, answer: str, result: dict[str, Any]) -> BetaExample:
    """The SFT record of one selected rollout: its own prompt, its completion, the gold answer, stats."""
    stats = {**result["stats"], "chars": result["chars"], "problem_id": rollout.problem_id}
    if result["tokens"] is not None:
        stats["tokens"] = result["tokens"]
    return BetaExample(
        id=rollout.id,
        messages=[*prompt_messages(rollout.prompt), Message(role="assistant", content=rollout.completion)],
        answer=answer,
        stats=stats,
    )


def _save_dataset(examples: list[BetaExample], folder: Path) -> None:
    """Also write the corpus as a saved ``datasets`` folder (swapped in whole, like the JSONL)."""
    import datasets

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    datasets.Dataset.from_list([e.model_dump() for e in examples]).save_to_disk(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


# --- the job -------------------------------------------------------------------------------------


def _open_work_dir(config: DistillConfig, fingerprint_id: str) -> tuple[ResumableJsonl, bool]:
    """The journal of this run; a work dir left by a run with other inputs/options is discarded."""
    work = config.work_dir
    marker = work / "fingerprint.json"
    restarted = False
    if work.exists():
        if not work.is_dir() or (not marker.exists() and any(work.iterdir())):
            raise InputError(f"{work}: exists and is not a distill work folder; move it away")
        found = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
        if found.get("fingerprint") != fingerprint_id:
            shutil.rmtree(work)
            restarted = bool(found)
    if not marker.exists():
        work.mkdir(parents=True, exist_ok=True)
        (work / "journal.jsonl").unlink(missing_ok=True)
        write_json_atomic(marker, {"fingerprint": fingerprint_id})
    return ResumableJsonl(work / "journal.jsonl"), restarted


def _judge_rollouts(
    config: DistillConfig,
    problems: dict[str, Problem],
    entries: list[_Entry],
    journal: ResumableJsonl,
    judge_factory: Callable[[], Judge],
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], int]:
    """Judge every valid rollout in chunks of ``CHUNK``; finished chunks come from the journal."""
    done = {line["key"]: line["results"] for line in journal.done()}
    chunks = [entries[start : start + CHUNK] for start in range(0, len(entries), CHUNK)]
    resumed = sum(len(done[f"c{i}"]) for i in range(len(chunks)) if f"c{i}" in done)
    if progress:
        progress(resumed, len(entries))
    pending = [i for i in range(len(chunks)) if f"c{i}" not in done]
    if pending:
        wanted = {entry.record for i in pending for entry in chunks[i]}
        texts = _read_rollouts(config.rollouts, wanted)  # type: ignore[arg-type]
        judge = judge_factory()
        try:
            completed = resumed
            for i in pending:
                chunk = chunks[i]
                rollouts = [next(texts)[1] for _ in chunk]
                items = [(r.completion, problems[r.problem_id].answer) for r in rollouts]
                start = i * CHUNK
                results = [
                    sample_result(start + j, r.id, r.problem_id, r.completion, judged)
                    for j, (r, judged) in enumerate(zip(rollouts, judge(items), strict=True))
                ]
                journal.append({"key": f"c{i}", "results": results})
                done[f"c{i}"] = results
                completed += len(chunk)
                if progress:
                    progress(completed, len(entries))
        finally:
            judge.close()
    return [r for i in range(len(chunks)) for r in done[f"c{i}"]], resumed


def _finish(
    config: DistillConfig,
    problems: list[Problem],
    results: list[dict[str, Any]],
    fetch: Callable[[set[int]], dict[int, Rollout]],
    bad: dict[str, list[str]],
) -> dict[str, Any]:
    """Select, then write the corpus, the optional dataset folder and the report, each atomically."""
    chosen = select(results, config.select, config.per_problem)
    rollouts = fetch({r["index"] for found in chosen.values() for r in found})
    examples = [
        beta_example(rollouts[r["index"]], problem.answer, r)
        for problem in problems
        for r in chosen.get(problem.id, [])
    ]
    write_jsonl_atomic(config.out, examples)
    if config.save_to_disk is not None:
        _save_dataset(examples, config.save_to_disk)
    report = build_report(config, problems, results, chosen, bad)
    write_json_atomic(config.report_path, report)
    return report


def run_distill(config: DistillConfig, progress: Progress | None = None) -> DistillResult:
    """Run (or resume) the job described by ``config``; returns the report.

    Raises:
        InputError: an input cannot be read, has no valid problem, or the work dir is not ours.
    """
    started = time.perf_counter()
    if config.out.is_dir():
        raise InputError(f"--out {config.out}: is a directory; give the path of the JSONL file to write")
    for path in (config.problems, config.rollouts):
        if path is not None and str(path) == "-":
            raise InputError("distill reads its inputs more than once (and resumes): give a file, not stdin")
        if path is not None and not path.exists():
            raise InputError(f"{path}: no such file")
    try:
        template = load_template(config.prompt_file) if config.model is not None else None
    except (OSError, ValueError) as exc:
        raise InputError(str(exc)) from None
    problems, bad_problems = load_problems(config.problems)
    if not problems:
        shown = "; ".join(bad_problems[:3])
        raise InputError(f"{config.problems}: no valid problem" + (f" ({shown})" if shown else ""))
    by_id = {problem.id: problem for problem in problems}
    bad = {str(config.problems): bad_problems}
    if config.rollouts is not None:
        entries, bad[str(config.rollouts)] = index_rollouts(config.rollouts, by_id)
        if not entries:  # nothing to distil: an empty corpus would only hide the mistake
            why = "; ".join(bad[str(config.rollouts)][:3]) or "the file has no records"
            raise InputError(f"{config.rollouts}: no valid rollout ({why})")
    journal, restarted = _open_work_dir(config, fingerprint(config, template))
    structural = StructuralFilter(config.profile, min_width=config.min_width, require_parallel=config.require_parallel)
    grader = Grader(workers=config.workers, timeout=config.grade_timeout, grace=max(2.0, config.grade_timeout))

    def make_judge() -> Judge:
        return Judge(structural, grader)

    with journal, grader:
        if config.rollouts is not None:
            results, resumed = _judge_rollouts(config, by_id, entries, journal, make_judge, progress)

            def fetch(wanted: set[int]) -> dict[int, Rollout]:
                records = {entries[i].record: i for i in wanted}
                return {records[n]: r for n, r in _read_rollouts(config.rollouts, set(records))}  # type: ignore[arg-type]

        else:
            from .sampling import sample_rounds

            results, samples, resumed = sample_rounds(config, problems, template or "", journal, make_judge, progress)
            write_jsonl_atomic(config.rollouts_path, (samples[i] for i in sorted(samples)))

            def fetch(wanted: set[int]) -> dict[int, Rollout]:
                return {i: Rollout.model_validate(samples[i]) for i in wanted}

    report = _finish(config, problems, results, fetch, bad)
    shutil.rmtree(config.work_dir, ignore_errors=True)
    return DistillResult(
        report=report, resumed_samples=resumed, restarted=restarted, elapsed=time.perf_counter() - started
    )
