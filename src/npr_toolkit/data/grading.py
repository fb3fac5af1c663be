"""Answer grading with math-verify, in worker processes with a hard per-item timeout.

math-verify's own timeout uses ``signal.alarm``, which only works in a main thread; a pathological
expression can also hang sympy. So each item is graded in a worker process's main thread under our
own ``setitimer`` alarm, and a worker that still does not answer is killed and replaced: one bad
item fails with status ``timeout``, never the run. ``workers=0`` grades in-process (main thread).

``Grader.judge_many`` also runs a check on each item's text in the workers first (distill's
structural filter), so the whole judgement of a sample scales with workers and the main process
only moves records. Workers ignore SIGINT: Ctrl-C reaches the whole process group, and stopping is
the main process's call (nothing a worker was doing is recorded). A worker that dies for another
reason is replaced; its unfinished items are judged again one at a time, and an item whose worker
dies again is graded ``error``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, NamedTuple

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


class Judged(NamedTuple):
    """The judgement of one item: its grade and, with a check, the check's codes and statistics."""

    grade: Grade
    codes: list[str] | None = None  # None: no check ran (no check given, or its worker died)
    stats: dict[str, Any] | None = None  # the check's ``TreeStats`` as a dict, when it has one


Check = Callable[[str], Any]  # text -> a format.Verdict (``answer``, ``codes``, ``stats``)
_Item = tuple[str | None, str]  # (text to check, or the answer itself without a check; gold answer)
_Checked = tuple[str | None, list[str] | None, dict[str, Any] | None]  # (answer to grade, codes, stats)


def _check(check: Check | None, text: str | None) -> _Checked:
    if check is None:
        return text, None, None
    verdict = check(text)
    return verdict.answer, verdict.codes, verdict.stats.model_dump() if verdict.stats is not None else None


def _unchecked(check: Check | None, text: str | None) -> _Checked:
    """What is known of an item whose check never finished: its answer only when it is one."""
    return (text if check is None else None), None, None


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass  # elsewhere, orphaned workers exit when their next read fails


def _serve(conn: Connection, check: Check | None, timeout: float) -> None:
    """A worker: for each batch, check every item (one message), then grade each (one message each).

    math-verify is imported before any item's alarm runs: an import cut short by the timeout would
    leave the worker grading every later item wrong.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _verify("1", "1")
    conn.send("ready")  # grading deadlines start now, not during start-up
    while True:
        try:
            batch: list[_Item] | None = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        checked = [_check(check, text) for text, _ in batch]
        if check is not None:
            conn.send(checked)
        for (answer, _, _), (_, gold) in zip(checked, batch, strict=True):
            grade = grade_one(answer, gold, timeout)
            conn.send((grade.status, grade.predicted))


class _Worker:
    """One worker process and the batch it holds: (sequence number, item, isolated) each."""

    def __init__(self, check: Check | None, timeout: float):
        context = multiprocessing.get_context()
        self.conn, child = context.Pipe()
        # Ignored from birth: a Ctrl-C during start-up must not kill it either (the setting is inherited).
        main = threading.current_thread() is threading.main_thread()  # only it may set handlers
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            self.process = context.Process(target=_serve, args=(child, check, timeout), daemon=True)
            self.process.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        child.close()
        self.ready = False
        self.batch: list[tuple[int, _Item, bool]] = []
        self.checked: list[_Checked] | None = None  # the batch's checks, once they arrive
        self.graded = 0  # items of the batch graded so far
        self.since = 0.0  # when the item being graded started

    def give(self, batch: list[tuple[int, _Item, bool]], checking: bool) -> None:
        self.batch, self.graded = batch, 0
        self.checked = None if checking else [(item[0], None, None) for _, item, _ in batch]
        self.since = time.monotonic()
        with contextlib.suppress(OSError):  # it died while idle: its pipe then reads as closed, a death
            self.conn.send([item for _, item, _ in batch])

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                kill = True
            else:
                self.process.join(timeout=5)
        if kill or self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class Grader:
    """Grades (and optionally checks) many items in order, in ``workers`` processes.

    Use as a context manager. A worker that overruns ``timeout`` by ``grace`` seconds on one grade (a
    hang the alarm could not break) is killed and replaced; that item is graded ``timeout``.
    """

    def __init__(self, workers: int = 1, timeout: float = 5.0, grace: float = 10.0, check: Check | None = None):
        self.workers = workers
        self.timeout = timeout
        self.grace = grace
        self.check = check
        self._idle: list[_Worker] = []  # started workers waiting for a batch

    def grade_many(self, pairs: Iterable[tuple[str | None, str]], chunk: int = 16) -> Iterator[Grade]:
        """Grades of (predicted answer, gold answer) pairs, in order; ``chunk`` items go to a worker at once."""
        if self.check is not None:
            raise ValueError("grade_many takes answers: this Grader checks texts (judge_many)")
        return (judged.grade for judged in self._judge(pairs, chunk))

    def judge_many(self, items: Iterable[tuple[str, str]], chunk: int = 16) -> Iterator[Judged]:
        """The check's verdict on each (text, gold answer) and the grade of the answer it found, in order."""
        if self.check is None:
            raise ValueError("judge_many needs a Grader built with a check")
        return self._judge(items, chunk)

    def _judge(self, items: Iterable[_Item], chunk: int) -> Iterator[Judged]:
        if self.workers <= 0:
            for text, gold in items:
                answer, codes, stats = _check(self.check, text)
                yield Judged(grade_one(answer, gold, self.timeout), codes, stats)
            return
        yield from _Run(self, chunk).results(items)

    def start(self) -> None:
        """Start the workers now (they start with the first items otherwise): fork before loading a model."""
        while len(self._idle) < self.workers:
            self._idle.append(_Worker(self.check, self.timeout))

    def _worker(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.is_alive():
                return worker
            worker.stop(kill=True)
        return _Worker(self.check, self.timeout)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().stop()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Run:
    """One ordered pass over items: batches out to workers, messages in, deadlines, retries."""

    def __init__(self, grader: Grader, chunk: int):
        self.grader, self.check, self.chunk = grader, grader.check, max(1, chunk)
        self.busy: list[_Worker] = []
        self.queue: deque[tuple[int, _Item, bool]] = deque()  # (sequence, item, isolated) waiting
        self.done: dict[int, Judged] = {}

    def results(self, items: Iterable[_Item]) -> Iterator[Judged]:
        source = enumerate(items)
        held_limit = 2 * self.grader.workers * self.chunk  # items read but not yet yielded: bounded
        pulled = emitted = 0
        exhausted = False
        try:
            while True:
                while not exhausted and pulled - emitted < held_limit:
                    try:
                        seq, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    self.queue.append((seq, item, False))
                    pulled += 1
                self._dispatch()
                while emitted in self.done:
                    yield self.done.pop(emitted)
                    emitted += 1
                if exhausted and emitted == pulled:
                    break
                if self.busy:  # else everything read is out: read more first
                    self._receive()
            for worker in self.busy:
                self.grader._idle.append(worker)
            self.busy = []
        finally:  # interrupted (or the consumer stopped early): nothing in flight is recorded
            for worker in self.busy:
                worker.stop(kill=True)

    def _dispatch(self) -> None:
        while self.queue and len(self.busy) < self.grader.workers:
            if self.queue[0][2]:  # an item whose worker died: alone, so another death names it
                batch = [self.queue.popleft()]
            else:
                batch = []
                while self.queue and not self.queue[0][2] and len(batch) < self.chunk:
                    batch.append(self.queue.popleft())
            worker = self.grader._worker()
            worker.give(batch, checking=self.check is not None)
            self.busy.append(worker)

    def _receive(self) -> None:
        """Wait for messages (at most until the nearest grading deadline) and act on them."""
        allowed = self.grader.timeout + self.grader.grace
        grading = [w for w in self.busy if w.ready and w.checked is not None]
        now = time.monotonic()
        timeout = max(0.0, min(w.since + allowed for w in grading) - now) if grading else None
        for conn in wait([w.conn for w in self.busy], timeout):
            worker = next(w for w in self.busy if w.conn is conn)
            while True:  # every message already there: one wake-up per burst, not per item
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._died(worker)
                    break
                self._take(worker, message)
                if worker not in self.busy or not conn.poll():
                    break
        now = time.monotonic()
        for worker in [w for w in self.busy if w.ready and w.checked is not None and now - w.since > allowed]:
            self._overran(worker)

    def _take(self, worker: _Worker, message: Any) -> None:
        worker.since = time.monotonic()
        if not worker.ready:
            worker.ready = True
            return
        if worker.checked is None:
            worker.checked = message
            return
        status, predicted = message
        seq = worker.batch[worker.graded][0]
        _, codes, stats = worker.checked[worker.graded]
        self.done[seq] = Judged(Grade(status=status, predicted=predicted), codes, stats)
        worker.graded += 1
        if worker.graded == len(worker.batch):
            self.busy.remove(worker)
            self.grader._idle.append(worker)

    def _overran(self, worker: _Worker) -> None:
        """A grade hung past the alarm: kill the worker; that item times out, the rest go again."""
        answer, codes, stats = worker.checked[worker.graded]  # type: ignore[index]
        self.done[worker.batch[worker.graded][0]] = Judged(Grade(status="timeout", predicted=answer), codes, stats)
        self._replace(worker, worker.batch[worker.graded + 1 :], isolate=False)

    def _died(self, worker: _Worker) -> None:
        """The worker died on its own: what it had not finished is judged again, one item at a time."""
        rest = worker.batch[worker.graded :]
        if len(rest) == 1 and rest[0][2]:  # it was already alone: this item kills its worker
            seq, (text, _), _ = rest[0]
            answer, codes, stats = worker.checked[worker.graded] if worker.checked else _unchecked(self.check, text)
            self.done[seq] = Judged(Grade(status="error", predicted=answer), codes, stats)
            rest = []
        self._replace(worker, rest, isolate=True)

    def _replace(self, worker: _Worker, rest: list[tuple[int, _Item, bool]], isolate: bool) -> None:
        worker.stop(kill=True)
        self.busy.remove(worker)
        self.queue.extendleft((seq, item, isolate) for seq, item, _ in reversed(rest))
