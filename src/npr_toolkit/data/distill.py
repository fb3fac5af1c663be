"""The NPR-Beta distillation job behind ``npr-data distill`` (recipe stage 2, docs/design.md §1 and §6).

Reads problems and NPR-Zero rollouts (``--rollouts``), or samples them with the engine (``--model``,
see ``sampling``); judges every sample in the Grader's worker processes (the structural filter, then
math-verify on its final ``\\boxed{}``), so the job scales with workers and this process only moves
records; keeps up to ``per_problem`` accepted samples per problem by a selection policy; writes Beta
SFT records (TRL's conversational format) in input order, and a report.

Resumable: the work is cut into fixed chunks and each finished chunk is one line of a
``ResumableJsonl`` journal in ``OUT.work/`` (a line is all or nothing, so ``kill -9`` loses at most
the chunks in flight). A rerun with the same inputs and options (checked by a fingerprint) skips the
finished chunks; the corpus and the report are folded from the journal alone and written atomically
at the end, so a killed-and-resumed run writes the same bytes as an uninterrupted one. Ctrl-C stops
the job cleanly (``Interrupted``: nothing in flight is recorded). Memory does not grow with the
corpus: inputs, journal and outputs are streamed; what is held is per problem (the problems, the
selection) plus the ids seen, to report repeats. Bad input never stops the job: each bad record is
counted and reported with its file:line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from npr_toolkit.errors import Interrupted
from npr_toolkit.format import StructuralFilter

from .distill_config import DistillConfig
from .distill_report import Result, Selection, Tally, sample_result
from .grading import Grader
from .headers import engine_step_numbers
from .io import (
    InputError,
    ResumableJsonl,
    check_records,
    exclusive,
    read_records,
    write_json_atomic,
    write_jsonl_atomic,
)
from .problems import load_problems
from .prompts import load_template
from .records import BetaExample, Message, Problem, Rollout
from .sampling import sample_rounds

Progress = Callable[[int, int], None]  # (samples judged, samples expected so far)

CHUNK = 256  # rollouts per journal line (--rollouts); part of the fingerprint
_FORMAT_VERSION = 2  # bump when the journal or judging changes, so old work dirs are not reused


class DistillResult(BaseModel):
    """What ``run_distill`` returns: the report (also in ``OUT.report.json``) and how this call ran."""

    report: dict[str, Any]
    resumed_samples: int  # judged by an earlier, interrupted run and taken from the journal
    restarted: bool  # a work dir from a run with other inputs/options was discarded
    elapsed: float


# --- inputs --------------------------------------------------------------------------------------


def _check_rollout(data: dict[str, Any], problems: dict[str, Problem]) -> Rollout:
    rollout = Rollout.model_validate(data)
    if rollout.problem_id not in problems:
        raise ValueError(f"unknown problem id {rollout.problem_id!r} (not a valid problem of --problems)")
    if not rollout.prompt.strip():
        raise ValueError("field 'prompt': must not be empty (the SFT example needs the prompt it was sampled with)")
    return rollout


def index_rollouts(path: Path, problems: dict[str, Problem]) -> tuple[array, list[str]]:
    """The record indices of the valid rollouts in input order, and a ``file:line: message`` per bad record."""
    valid: array = array("q")
    bad: list[str] = []
    for item, _, error in check_records(path, lambda data: _check_rollout(data, problems), kind="rollout"):
        if error is None:
            valid.append(item.index)
        else:
            bad.append(error)
    return valid, bad


def _read_rollouts(path: Path, valid: array) -> Iterator[dict[str, Any]]:
    """The records of the valid rollouts (``index_rollouts``), in input order: the n-th is sample n.

    Raw data, already checked: ``Rollout.model_validate`` gives the rollout where one is needed.
    """
    wanted = iter(valid)
    following = next(wanted, None)
    for item in read_records(path):
        if item.index == following:
            yield item.data  # type: ignore[misc]
            following = next(wanted, None)


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


class _Stop:
    """SIGINT during the job: it raises ``KeyboardInterrupt`` as usual and is also remembered, so an
    interrupt swallowed on its way (``Exception ignored in ...`` from a finaliser) still stops the job
    before its next journal line."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _journal_keys(journal: ResumableJsonl) -> dict[str, int]:
    """Samples per finished journal line, by key."""
    return {line["key"]: len(line["results"]) for line in journal.records()}


def _judge_rollouts(
    config: DistillConfig,
    problems: dict[str, Problem],
    valid: array,
    journal: ResumableJsonl,
    grader: Grader,
    stop: _Stop,
    progress: Progress | None,
) -> int:
    """Judge every valid rollout in chunks of ``CHUNK``; finished chunks come from the journal.

    Returns the samples taken from the journal (judged by an earlier run).
    """
    done = _journal_keys(journal)
    resumed = completed = sum(done.values())
    total = len(valid)
    if progress:
        progress(resumed, total)
    if resumed == total:
        return resumed
    pending: deque[tuple[int, str, str, int]] = deque()  # (sample, id, problem id, chars) of each item in flight

    def items() -> Iterator[tuple[str, str]]:
        for n, data in enumerate(_read_rollouts(config.rollouts, valid)):  # type: ignore[arg-type]
            if f"c{n // CHUNK}" not in done:
                rollout = Rollout.model_validate(data)
                text = engine_step_numbers(rollout.completion)
                pending.append((n, rollout.id, rollout.problem_id, len(text)))
                yield text, problems[rollout.problem_id].answer

    results: list[Result] = []
    for judged in grader.judge_many(items()):
        n, rollout_id, problem_id, chars = pending.popleft()
        results.append(sample_result(n, rollout_id, problem_id, chars, judged))
        if len(results) == CHUNK or n == total - 1:
            stop.check()
            journal.append({"key": f"c{n // CHUNK}", "results": results})
            completed += len(results)
            results = []
            if progress:
                progress(completed, total)
    return resumed


# --- outputs -------------------------------------------------------------------------------------


def beta_example(prompt: str, completion: str, answer: str, result: Result) -> BetaExample:
    """The SFT record of one selected sample: its own prompt, its completion (step numbers in the
    engine's form), the gold answer, stats."""
    stats = {**result["stats"], "chars": result["chars"], "problem_id": result["problem_id"]}
    if result["tokens"] is not None:
        stats["tokens"] = result["tokens"]
    return BetaExample(
        id=result["id"],
        messages=[*prompt_messages(prompt), Message(role="assistant", content=engine_step_numbers(completion))],
        answer=answer,
        stats=stats,
    )


def _save_dataset(corpus: Path, folder: Path) -> None:
    """Also write the corpus as a saved ``datasets`` folder, converted from the JSONL on disk (so
    never held in memory) and swapped in whole, like the JSONL."""
    import datasets

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.cache") as cache:
        datasets.Dataset.from_json(str(corpus), cache_dir=cache).save_to_disk(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)


Samples = Callable[[], Iterator[tuple[Result, str, str]]]  # (result, prompt, completion) of every sample in order


def _finish(
    config: DistillConfig,
    problems: list[Problem],
    results: Callable[[], Iterator[Result]],
    samples: Samples,
    bad: dict[str, list[str]],
) -> dict[str, Any]:
    """Select, then write the corpus, the optional dataset folder and the report, each atomically."""
    tally, selection = Tally(problems), Selection(config.select, config.per_problem)
    for result in results():
        tally.add(result)
        selection.add(result)
    chosen = selection.chosen()
    wanted = {index for found in chosen.values() for index in found}
    answers = {problem.id: problem.answer for problem in problems}

    def examples() -> Iterator[BetaExample]:
        for result, prompt, completion in samples():
            if result["index"] in wanted:
                tally.add_selected(result)
                yield beta_example(prompt, completion, answers[result["problem_id"]], result)

    write_jsonl_atomic(config.out, examples())
    if config.save_to_disk is not None:
        _save_dataset(config.out, config.save_to_disk)
    report = tally.report(config, chosen, bad)
    write_json_atomic(config.report_path, report)
    return report


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


def _saved(config: DistillConfig) -> int:
    """Samples in the journal (what a rerun resumes from)."""
    path = config.work_dir / "journal.jsonl"
    if not path.exists():
        return 0
    with ResumableJsonl(path) as journal:
        return sum(_journal_keys(journal).values())


def run_distill(config: DistillConfig, progress: Progress | None = None) -> DistillResult:
    """Run (or resume) the job described by ``config``; returns the report.

    Raises:
        InputError: an input cannot be read, has no valid problem, or the work dir is not ours.
        Interrupted: Ctrl-C (SIGINT); what was judged is saved, and rerunning resumes.
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
    valid: array = array("q")  # with --rollouts: the record indices to judge
    if config.rollouts is not None:
        valid, bad[str(config.rollouts)] = index_rollouts(config.rollouts, by_id)
        if not len(valid):  # nothing to distil: an empty corpus would only hide the mistake
            why = "; ".join(bad[str(config.rollouts)][:3]) or "the file has no records"
            raise InputError(f"{config.rollouts}: no valid rollout ({why})")
    with exclusive(config.out, "--out"):  # a second run of this job would write into this one's journal
        report, resumed, restarted = _judge_and_write(config, template, problems, by_id, valid, bad, progress)
    return DistillResult(
        report=report, resumed_samples=resumed, restarted=restarted, elapsed=time.perf_counter() - started
    )


def _judge_and_write(
    config: DistillConfig,
    template: str | None,
    problems: list[Problem],
    by_id: dict[str, Problem],
    valid: array,
    bad: dict[str, list[str]],
    progress: Progress | None,
) -> tuple[dict[str, Any], int, bool]:
    """Judge every sample into the journal (resuming it), then write the corpus and report; the work
    folder is removed once they are written. Returns (report, samples resumed, restarted)."""
    journal, restarted = _open_work_dir(config, fingerprint(config, template))
    structural = StructuralFilter(config.profile, min_width=config.min_width, require_parallel=config.require_parallel)
    grader = Grader(
        workers=config.workers, timeout=config.grade_timeout, grace=max(2.0, config.grade_timeout), check=structural
    )
    try:
        with journal, _Stop() as stop:
            with grader:
                if config.rollouts is not None:
                    resumed = _judge_rollouts(config, by_id, valid, journal, grader, stop, progress)
                else:
                    resumed = sample_rounds(config, problems, template or "", journal, grader, stop.check, progress)
            stop.check()
            if config.rollouts is not None:
                rollouts = config.rollouts

                def samples() -> Iterator[tuple[Result, str, str]]:
                    for result, data in zip(_results(journal), _read_rollouts(rollouts, valid), strict=True):
                        yield result, data["prompt"], data["completion"]

            else:
                write_jsonl_atomic(config.rollouts_path, (s for line in journal.records() for s in line["samples"]))

                def samples() -> Iterator[tuple[Result, str, str]]:
                    for line in journal.records():
                        for sample, result in zip(line["samples"], line["results"], strict=True):
                            yield result, sample["prompt"], sample["completion"]

            report = _finish(config, problems, lambda: _results(journal), samples, bad)
    except KeyboardInterrupt:
        raise Interrupted(_saved(config)) from None
    shutil.rmtree(config.work_dir, ignore_errors=True)
    return report, resumed, restarted


def _results(journal: ResumableJsonl) -> Iterator[Result]:
    """Every judged sample in the journal, in sample order (lines are appended in that order)."""
    for n, result in enumerate(result for line in journal.records() for result in line["results"]):
        if result["index"] != n:
            raise RuntimeError(f"{journal.path}: sample {result['index']} where {n} was expected")
        yield result
