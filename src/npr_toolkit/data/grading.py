"""Answer grading with math-verify, in worker processes with a hard per-item timeout.

math-verify's own timeout uses ``signal.alarm``, which only works in a main thread; a pathological
expression can also hang sympy. So each item is graded in a worker process's main thread under our
own ``setitimer`` alarm, and a worker that still does not answer is killed and replaced: one bad
item fails with status ``timeout``, never the run. ``workers=0`` grades in-process (main thread).
"""

from __future__ import annotations

import concurrent.futures as cf
import re
import signal
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["correct", "wrong", "no_answer", "timeout", "error"]


class Grade(BaseModel):
    model_config = ConfigDict(frozen=True)
    status: Status
    predicted: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class _Timeout(Exception):
    pass


_fired = [False]


def _on_alarm(signum: int, frame: object) -> None:
    _fired[0] = True  # math-verify swallows exceptions, so the flag is what we trust
    raise _Timeout


def _normalise(text: str) -> str:
    """Text-answer form for answers math-verify cannot parse: layout removed, case kept (``Mr. Smith`` is not
    ``mr. smith``)."""
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    return re.sub(r"[\s$]|\\[,;!]|\\left|\\right", "", text).rstrip(".")


def _verify(predicted: str, gold: str) -> bool:
    """math-verify equivalence, then the case-sensitive text fallback.

    math-verify itself is case-insensitive for letters: its LaTeX parser (latex2sympy2_extended's
    ``ConversionConfig.lowercase_symbols``, on by default and not exposed by ``math_verify.parse``)
    lowercases every symbol, so ``X^2+1`` equals ``x^2+1`` and ``\\text{Yes}`` equals ``yes``.
    """
    from math_verify import grader, parse, parser, verify

    grader.TIMEOUT_WARNING_SHOWN = parser.TIMEOUT_WARNING_SHOWN = True  # we time out ourselves

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{predicted}}}", parsing_timeout=None)
    if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True
    return _normalise(predicted) == _normalise(gold)  # text answers math-verify cannot parse


def grade_one(predicted: str | None, gold: str, timeout: float = 5.0) -> Grade:
    """Grade one extracted answer against the gold one. Must run in a main thread (uses SIGALRM)."""
    if predicted is None or not predicted.strip():
        return Grade(status="no_answer", predicted=predicted)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _fired[0] = False
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        ok = _verify(predicted, gold)
    except _Timeout:
        ok = False
    except Exception:  # a parser bug on odd input is that item's problem only
        return Grade(status="error", predicted=predicted)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if _fired[0]:
        return Grade(status="timeout", predicted=predicted)
    return Grade(status="correct" if ok else "wrong", predicted=predicted)


def _start_worker() -> None:
    """Worker set-up: die with the parent, and import math-verify before any item's alarm runs.

    An import cut short by the timeout would leave the worker grading every later item wrong.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # elsewhere, orphaned workers exit when their next task read fails
    _verify("1", "1")


class Grader:
    """Grades many (predicted, gold) pairs in order, in ``workers`` processes.

    Use as a context manager. A worker that overruns ``timeout`` by ``grace`` seconds (a hang the
    alarm could not break) is killed with its pool, and the pool is rebuilt.
    """

    def __init__(self, workers: int = 1, timeout: float = 5.0, grace: float = 10.0):
        self.workers = workers
        self.timeout = timeout
        self.grace = grace
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, initializer=_start_worker)
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def grade_many(self, pairs: Iterable[tuple[str | None, str]], chunk: int = 256) -> Iterator[Grade]:
        if self.workers <= 0:
            for predicted, gold in pairs:
                yield grade_one(predicted, gold, self.timeout)
            return
        batch: list[tuple[str | None, str]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= chunk:
                yield from self._grade_batch(batch)
                batch = []
        if batch:
            yield from self._grade_batch(batch)

    def _grade_batch(self, batch: list[tuple[str | None, str]]) -> list[Grade]:
        futures = [self._executor().submit(grade_one, p, g, self.timeout) for p, g in batch]
        grades: list[Grade] = []
        for (predicted, _), future in zip(batch, futures, strict=True):
            try:
                grades.append(future.result(timeout=self.timeout + self.grace))
            except (cf.TimeoutError, cf.process.BrokenProcessPool):
                grades.append(Grade(status="timeout", predicted=predicted))
                self._kill_pool()
                return grades + self._grade_batch(batch[len(grades) :]) if len(grades) < len(batch) else grades
        return grades

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
