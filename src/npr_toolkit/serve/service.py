"""What both APIs of ``npr serve`` share: the model's limits, input checks, and running a job.

The checks run in the request's coroutine, before anything is queued, and in an order that keeps a
hostile request cheap: a text's length is bounded by its characters before it is tokenized (a
token covers at most ``max_token_chars`` characters, so a longer text cannot fit), ids are range
checked, budgets fit the context. A request that passes cannot fail a batch it joins.

Running: ``submit`` waits while a weight update runs, then queues the request's jobs and returns an
``Admission`` that names the weight version they run on; ``release`` ends it (``weights.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from .config import ServeConfig
from .scheduler import Job, Scheduler
from .weights import Weights


class InputError(ValueError):
    """A request the server refuses: ``status`` (400, 413, 503 ...) and the ``param`` at fault."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class Admission:
    """One HTTP request's jobs, queued; they hold the weights (shared) until ``Service.release``."""

    jobs: list[Job]
    weight_version: str
    released: bool = False


class Service:
    """The engine, its scheduler and the limits of one ``npr serve`` (``app.state.service``)."""

    def __init__(self, engine, config: ServeConfig):
        self.engine = engine
        self.config = config
        self.tokenizer = engine.tokenizer
        model_config = engine.model.config
        self.context_length: int | None = getattr(model_config, "max_position_embeddings", None)
        self.vocab_size: int = engine.model.get_input_embeddings().num_embeddings
        longest = (self.context_length - 1) if self.context_length else None
        self.max_prompt_tokens = min(x for x in (config.max_prompt_tokens, longest, 2**31) if x is not None)
        self.max_token_chars = max(len(token) for token in self.tokenizer.get_vocab())
        self.scheduler = Scheduler(engine, config.max_queue, config.shutdown_grace_s)
        self.weights = Weights(engine, self.scheduler, config)
        self.created = int(time.time())

    # --- checks (before any work) -------------------------------------------------------------------
    def encode(self, text: str, param: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; a text too long to fit is refused before it is tokenized."""
        if len(text) > self.max_prompt_tokens * self.max_token_chars:
            raise InputError(
                f"The {param} ({len(text)} characters) is longer than this server's limit of "
                f"{self.max_prompt_tokens} tokens.",
                param=param,
            )
        ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        self.check_ids(ids, param)
        return ids

    def check_ids(self, ids: Sequence[int], param: str) -> None:
        if not ids:
            raise InputError(f"The {param} is empty.", param=param)
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise InputError(f"Token id {bad} is out of the vocabulary range [0, {self.vocab_size}).", param=param)
        if len(ids) > self.max_prompt_tokens:
            raise InputError(
                f"The input ({len(ids)} tokens) is longer than the model's context length "
                f"({self.context_length} tokens)."
                if self.context_length and len(ids) >= self.context_length
                else f"The input ({len(ids)} tokens) is longer than this server's limit of {self.max_prompt_tokens}.",
                param=param,
            )

    def budget(self, ids: Sequence[int], requested: int | None, param: str) -> int:
        """The critical-path budget of a prompt: ``requested``, or all the room left when None."""
        room = self.context_length - len(ids) if self.context_length else None
        cap = min(x for x in (room, self.config.max_new_tokens, 2**31) if x is not None)
        if requested is None:
            return cap
        if room is not None and requested > room:
            raise InputError(
                f"Requested token count exceeds the model's maximum context length of {self.context_length} "
                f"tokens. You requested a total of {len(ids) + requested} tokens: {len(ids)} tokens from the input "
                f"messages and {requested} tokens for the completion.",
                param=param,
            )
        if requested > cap:
            raise InputError(f"{param} {requested} is above this server's limit of {cap}.", param=param)
        return requested

    def check_outputs(self, count: int, param: str = "n") -> None:
        """Bound the outputs of one request (prompts x samples): each is a row of the engine's batch."""
        if count > self.config.max_outputs:
            raise InputError(
                f"{count} outputs (prompts x n) are more than this server's limit of {self.config.max_outputs} "
                "per request.",
                param=param,
            )

    @staticmethod
    def seeds(seed: int | None, count: int) -> list[int]:
        """One seed per prompt: the request's, or a fresh random one (so a batch never decides a sample)."""
        return [secrets.randbits(31) if seed is None else seed for _ in range(count)]

    # --- running ------------------------------------------------------------------------------------
    async def submit(self, jobs: list[Job]) -> Admission:
        """Queue the jobs of one HTTP request once no weight update runs, or refuse with 503 (full, or
        shutting down). The caller must ``release`` the admission, whatever happens next.
        """
        await self.weights.lock.acquire_shared()
        if not self.scheduler.submit(jobs):
            self.weights.lock.release_shared()
            busy = "The server is shutting down." if self.scheduler.stopping.is_set() else "The request queue is full."
            raise InputError(busy, status=503)
        return Admission(jobs, self.weights.version)

    async def wait(self, jobs: list[Job], request: Request) -> bool:
        """Wait until every job is done (True), or the client disconnects (False: the jobs are aborted)."""
        left = asyncio.ensure_future(_disconnected(request))
        try:
            for job in jobs:
                while True:
                    event = asyncio.ensure_future(job.events.get())
                    done, _ = await asyncio.wait({event, left}, return_when=asyncio.FIRST_COMPLETED)
                    if event not in done:
                        event.cancel()
                        return False
                    if event.result() is None:
                        break
            return True
        finally:
            left.cancel()

    def release(self, admission: Admission) -> None:
        """The route is done with a request (once; later calls do nothing): unfinished jobs are aborted."""
        if admission.released:
            return
        admission.released = True
        for job in admission.jobs:
            job.cancelled = True  # a no-op once a job is done
        self.scheduler.release()
        self.weights.lock.release_shared()


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
