"""The SGLang backend (docs/design.md §4): NPR's fork/join decoding over vanilla SGLang's native ``/generate``.

Used by ``load_engine(model, backend="sglang", server_url=...)`` (``npr generate --engine sglang``,
``npr eval --engine sglang``). It talks to a real SGLang server, to ``npr serve`` (tests, CPU), to
several of either (``server_url=[url1, url2]``: data-parallel rollouts, samples spread over them), or,
with no URL and ``sglang`` importable, to an in-process ``sglang.Engine``.

The decoding itself (trunk, one call per branch, join = re-prefill of the concatenated branches,
replay through ``lanes.Request``) is ``fork_join.ForkJoinEngine``'s, shared with the OpenAI-compatible
backend; the wire format is ``sglang_wire.py``'s, shared with ``npr serve``. What is here: the two
transports and the stop ids SGLang applies on its own.

**Exact for reprefill checkpoints, approximate for canonical ones.** Vanilla SGLang cannot splice
KV, so the join *re-prefills* the concatenated branches causally: branch 2 is read again seeing
branch 1, at positions after it. That is exactly the ``reprefill`` semantics (docs/design.md §3b),
which a checkpoint trained on it records (``npr_semantics`` in its config.json). A ``canonical``
checkpoint (§3) is decoded exactly up to its first join only; after a join it samples from a
different distribution (``bench/sglang_divergence.py`` measures how far apart), so the constructor
refuses it unless ``allow_approximate`` accepts the approximation (``exactness.py``).
Log-probabilities are what the server reports in ``output_token_logprobs``: SGLang reports
``log_softmax(logits / temperature)`` unless it runs with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1``
(``npr serve`` always reports temperature 1).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..checkpoints import load_tokenizer
from .exactness import client_semantics
from .fork_join import ForkJoinEngine, LaneAnswer, LaneCall, generation_eos
from .http_client import JSONClient
from .sglang_wire import SGLangError, lane_answer, payload

__all__ = ["HTTPTransport", "InProcessTransport", "SGLangEngine", "SGLangError"]


class HTTPTransport:
    """SGLang's native HTTP API (``npr serve`` speaks the same subset)."""

    def __init__(self, url: str, timeout: float = 600.0, busy_retries: int = 8):
        self.client = JSONClient(
            url, what="SGLang server", timeout=timeout, busy_retries=busy_retries, error=SGLangError
        )

    def check(self) -> None:
        """Fail early, with a clear message, when nothing healthy listens at the URL."""
        self.client.get("/health")

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.post("/generate", body)


class InProcessTransport:
    """An in-process ``sglang.Engine`` (GPU). Its ``generate`` is not re-entrant, so calls are serialised."""

    def __init__(self, model: str):
        import sglang

        self.engine = sglang.Engine(model_path=model)
        self.lock = threading.Lock()

    def check(self) -> None:
        return None

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self.engine.generate(
                input_ids=body["input_ids"], sampling_params=body["sampling_params"], return_logprob=True
            )


class SGLangEngine(ForkJoinEngine):
    """``generate(prompts, params) -> list[Generation]`` over SGLang's ``/generate`` (see module doc).

    ``model`` (hub id or directory) gives the tokenizer and the semantics the checkpoint records; a
    canonical checkpoint is refused (``SemanticsError``) unless ``allow_approximate``.
    """

    def __init__(
        self,
        model: str,
        *,
        server_url: str | Sequence[str] | None = None,
        max_concurrency: int = 64,
        timeout: float = 600.0,
        allow_approximate: bool = False,
    ):
        self.semantics = client_semantics(model, engine="sglang", allow_approximate=allow_approximate)
        urls = [server_url] if isinstance(server_url, str) else list(server_url or [])
        self.transports: list[HTTPTransport | InProcessTransport]
        if urls:
            self.transports = [HTTPTransport(url, timeout) for url in urls]
        else:
            try:
                self.transports = [InProcessTransport(model)]
            except ImportError:
                raise ValueError(
                    "the sglang backend needs --server URL (an SGLang server or `npr serve`) "
                    "or the sglang package (pip install 'npr-toolkit[sglang]')"
                ) from None
        for transport in self.transports:
            transport.check()
        tokenizer = load_tokenizer(model)
        super().__init__(tokenizer, set(generation_eos(model)), max_concurrency, servers=len(self.transports))

    def _complete(self, call: LaneCall, server: int) -> LaneAnswer:
        return lane_answer(self.transports[server].generate(payload(call)))
