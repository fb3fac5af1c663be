"""The engine worker of ``npr serve``: one thread runs the torch engine, one batch at a time.

Requests (``Job``) are validated and tokenized by the routes *before* they get here, so nothing that
reaches a batch can fail because of another request's input. Jobs that arrive while the worker is
busy wait in the queue; when it is free, every waiting job joins the next round, and jobs whose
engine parameters are equal (seeds aside: each prompt keeps its own) share one ``engine.generate``.
The queue is bounded (``max_queue`` HTTP requests accepted and not yet answered): beyond it ``submit`` says no
and the route answers 503 at once.

``run_exclusive(fn)`` queues a function instead of a job: the worker runs it between two rounds, with
no batch running (a weight update copies into the model there, ``weights.py``).

The worker talks to the asyncio side only through ``Job.notify`` (thread-safe). The engine's per-step
hook (``TorchEngine.generate(on_step=...)``) is where a job's choices are followed as they become
final (``ChoiceText``: streaming, stop strings) and where a job whose client left is aborted, so it
stops costing decoding steps while the rest of its batch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..engine.lanes import Request
from ..engine.params import Generation, SamplingParams
from .text import ChoiceText

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One HTTP request's work: prompts (token ids), one seed per prompt, the engine parameters.

    ``texts`` (one ``ChoiceText`` per choice) are set for OpenAI jobs: the worker follows their text
    step by step, ends a choice at a stop string, and ``notify``s the route when ``stream`` is on.
    """

    prompts: list[list[int]]
    seeds: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    texts: list[ChoiceText] | None = None
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    results: list[Generation] = field(default_factory=list)
    error: tuple[int, str] | None = None  # (status, message) when the job could not run
    cancelled: bool = False  # set by the route when its client left

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.params.n

    def notify(self, event: Any) -> None:
        """Hand ``event`` to the route's coroutine (from the worker thread); ``None`` means done."""
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is listening any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def finish(self) -> None:
        self.notify(None)


@dataclass
class _Task:
    """A function the worker runs between rounds (``Scheduler.run_exclusive``)."""

    fn: Callable[[], Any]
    future: Future


@dataclass
class _Slot:
    """Where an engine output belongs: its job and its choice index there."""

    job: Job
    choice: int


class Scheduler:
    """The worker thread and its bounded queue (see the module doc)."""

    def __init__(self, engine, max_queue: int, grace_s: float = 30.0):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.engine = engine
        self.max_queue = max_queue
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self.inflight = 0  # accepted, not yet released by the route
        self.decoding = 0  # outputs of the running batch still decoding (as of its last step)
        self._lock = threading.Lock()
        self._jobs: queue.Queue[Job | _Task | None] = queue.Queue()
        self._held: _Task | None = None  # taken from the queue while a round was gathered: runs next
        self._running: list[Job] = []
        self._worker = threading.Thread(target=self._work, name="npr-serve-engine", daemon=True)
        self._worker.start()

    # --- admission (event-loop side) ----------------------------------------------------------------
    def submit(self, jobs: list[Job]) -> bool:
        """Queue the jobs of one HTTP request (one place in the queue); False when the server is full or
        stopping (the route answers 503)."""
        with self._lock:  # the same lock orders jobs before the shutdown sentinel
            if self.stopping.is_set() or self.inflight >= self.max_queue:
                return False
            self.inflight += 1
            for job in jobs:
                self._jobs.put(job)
        return True

    def run_exclusive(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the worker thread once the batch running now (if any) is done; its result or
        exception comes back through the future. The caller makes sure no job is queued meanwhile
        (``weights.VersionLock``), else it would wait for them too."""
        task = _Task(fn, Future())
        with self._lock:
            if self.stopping.is_set():
                task.future.set_exception(RuntimeError("The server is shutting down."))
            else:
                self._jobs.put(task)
        return task.future

    def release(self) -> None:
        """The route is done with a request's jobs (answered, failed or its client left)."""
        with self._lock:
            self.inflight -= 1

    def begin_shutdown(self) -> None:
        """Stop admitting; the worker finishes the batch it runs, and queued jobs get 503."""
        with self._lock:
            if not self.stopping.is_set():
                self.stopping.set()
                self._jobs.put(None)

    def close(self) -> None:
        """Shut down and wait for the worker; jobs still running are aborted after the grace period."""
        self.begin_shutdown()
        self._worker.join(self.grace_s)
        if self._worker.is_alive():
            for job in list(self._running):
                job.cancelled = True
            self._worker.join(self.grace_s)

    # --- the worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._held if self._held is not None else self._jobs.get()
            self._held = None
            if item is None:
                break
            if isinstance(item, _Task):
                _run_task(item)
                continue
            batch = [item]
            while True:  # the jobs waiting behind it join this round; a task or the sentinel waits for the next
                try:
                    extra = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    self._jobs.put(None)
                    break
                if isinstance(extra, _Task):
                    self._held = extra
                    break
                batch.append(extra)
            self._run(batch)
        while True:  # answer whatever is still queued
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Job):
                item.error = (503, "The server is shutting down.")
                item.finish()
            elif isinstance(item, _Task):
                item.future.set_exception(RuntimeError("The server is shutting down."))

    def _run(self, jobs: list[Job]) -> None:
        """Run the jobs of one round; jobs with equal engine parameters share one ``generate`` call."""
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            if job.cancelled:  # its client left while it waited
                job.finish()
            else:
                groups.setdefault(job.params.model_dump_json(), []).append(job)
        for group in groups.values():
            self._running = group
            try:
                self._generate(group)
            except Exception as error:  # never let a bad batch kill the worker
                log.exception("engine call failed")
                for job in group:
                    job.error = (500, f"generation failed: {type(error).__name__}: {error}")
            finally:
                self._running = []
                for job in group:
                    job.finish()

    def _generate(self, group: list[Job]) -> None:
        params = group[0].params
        slots = [_Slot(job, c) for job in group for c in range(job.choices)]
        prompts = [p for job in group for p in job.prompts]
        seeds = [s for job in group for s in job.seeds]
        results = self.engine.generate(prompts, params, seeds=seeds, on_step=self._hook(slots))
        self.decoding = 0
        aborted = sum(gen.finish_reason == "abort" for gen in results)
        if aborted:
            log.info("stopped %d of %d output(s) early: their client went away", aborted, len(results))
        offset = 0
        for job in group:
            job.results = results[offset : offset + job.choices]
            offset += job.choices
            if job.texts is not None:
                for text, gen in zip(job.texts, job.results, strict=True):
                    text.close(gen)
                if job.stream:
                    job.notify("progress")

    def _hook(self, slots: list[_Slot]) -> Callable[[list[Request]], None]:
        """The per-step hook: abort the requests of jobs whose client left; follow the texts."""

        def on_step(requests: list[Request]) -> None:
            touched: set[int] = set()
            for request in requests:
                slot = slots[request.index]
                job = slot.job
                if job.cancelled:
                    request.finish("abort", "the client went away")
                    continue
                if job.texts is None:
                    continue
                text = job.texts[slot.choice]
                if text.closed:
                    continue
                if text.follow(request) and job.stream:
                    touched.add(id(job))
                if text.stopped and not request.finished:
                    request.finish("stop", f"stop string {text.stopped!r}")
            for slot in {id(s.job): s for s in slots if id(s.job) in touched}.values():
                slot.job.notify("progress")
            self.decoding = sum(not request.finished for request in requests)

        return on_step


def _run_task(task: _Task) -> None:
    if not task.future.set_running_or_notify_cancel():
        return
    try:
        task.future.set_result(task.fn())
    except Exception as error:  # the caller reads it from the future; the worker goes on
        task.future.set_exception(error)
