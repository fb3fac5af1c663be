"""The SGLang backend (DESIGN §4): NPR's fork/join decoding over vanilla SGLang's native ``/generate``.

Used by ``load_engine(model, backend="sglang", server_url=...)`` (``npr generate --engine sglang``,
``npr eval --engine sglang``). It talks to a real SGLang server, to ``npr serve`` (tests, CPU), or,
with no URL and ``sglang`` importable, to an in-process ``sglang.Engine``.

How a sample is decoded, as NPR's official engine does it on vanilla SGLang:
- **trunk**: one request on ``prompt + completion so far`` that stops at ``</guideline>`` or EOS;
- **fork**: when the guideline's plans allow it (the same checks as the torch engine: width, depth,
  budget), one request per branch, all in flight at once, on ``prompt + completion so far + branch
  header i``, stopping at ``</step>``, with the branch budget as ``max_new_tokens``. The branches
  share the prefix, which SGLang's radix cache reuses;
- **join**: a new trunk request on the concatenation ``prompt + ... + branch 1 + ... + branch n +
  join header``.

**Exact for reprefill checkpoints, approximate for canonical ones.** Vanilla SGLang cannot splice
KV, so the join *re-prefills* the concatenated branches causally: branch 2 is read again seeing
branch 1, at positions after it. That is exactly the ``reprefill`` semantics (DESIGN §3b), which a
checkpoint trained on it records (``npr_semantics`` in its config.json). A ``canonical`` checkpoint
(§3: siblings kept apart, every branch at the positions right after ``</guideline>``) is decoded
exactly up to its first join only; after a join it samples from a different distribution
(``bench/sglang_divergence.py`` measures how far apart), so the constructor refuses it unless
``allow_approximate`` accepts the approximation (``exactness.py``).

Each server answer is replayed token by token through the same state machine as the torch engine
(``lanes.Request``), so limits, forced closes, finish reasons, positions (critical path) and stats
mean the same thing in both backends. Branches of a block are replayed in lockstep, as the torch
engine decodes them, so a shared total budget runs out the same way. ``stats.steps`` counts the
``/generate`` calls of a sample. Log-probabilities are what the server reports in
``output_token_logprobs``; note that SGLang reports ``log_softmax(logits / temperature)`` unless the
server runs with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (``npr serve`` always reports temperature 1).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from ..view.semantics import Semantics
from ..view.tokens import tag_vocab
from .exactness import checkpoint_semantics
from .lanes import Lane, Request, Token
from .params import Generation, SamplingParams


class SGLangError(RuntimeError):
    """The server cannot be reached, or it refused or aborted a request."""


# --- transports -----------------------------------------------------------------------------------
class HTTPTransport:
    """SGLang's native HTTP API (``npr serve`` speaks the same subset)."""

    def __init__(self, url: str, timeout: float = 600.0, busy_retries: int = 8):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.busy_retries = busy_retries

    def _open(self, request: urllib.request.Request, timeout: float) -> bytes:
        """The response body. A busy server (503, or a connection dropped under load) is retried with
        backoff (a /generate call is safe to repeat); other failures raise ``SGLangError``."""
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as error:
                message = _error_message(error.read())
                if error.code != 503 or attempt == self.busy_retries:
                    raise SGLangError(f"{self.url} answered {error.code}: {message}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)
                dropped = isinstance(reason, ConnectionResetError | http.client.RemoteDisconnected)
                if not dropped or attempt == self.busy_retries:
                    raise SGLangError(f"cannot reach the SGLang server at {self.url}: {reason}") from None
            time.sleep(min(0.05 * 2**attempt, 5.0))
            attempt += 1

    def check(self) -> None:
        """Fail early, with a clear message, when nothing healthy listens at the URL."""
        self._open(urllib.request.Request(f"{self.url}/health"), timeout=60.0)

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/generate", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        return json.loads(self._open(request, self.timeout))


def _generation_eos(model: str) -> list[int]:
    """The end-of-sequence ids of the model's generation config (SGLang stops at every one of them)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        return []
    return [eos] if isinstance(eos, int) else list(eos or [])


def _config(model: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (empty when there is none: nothing is recorded)."""
    from transformers import PretrainedConfig

    try:
        return PretrainedConfig.get_config_dict(model)[0]
    except OSError:
        return {}


def _error_message(body: bytes) -> str:
    """The message of any of SGLang's error shapes (or the raw body)."""
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    if isinstance(value, dict):
        error = value.get("error", value)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error if "error" in value else value.get("message", value))
    return str(value)


class InProcessTransport:
    """An in-process ``sglang.Engine`` (GPU). Its ``generate`` is not re-entrant, so calls are serialised."""

    def __init__(self, model: str):
        import sglang

        self.engine = sglang.Engine(model_path=model)
        self.lock = threading.Lock()

    def check(self) -> None:
        return None

    def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return self.engine.generate(
                input_ids=payload["input_ids"], sampling_params=payload["sampling_params"], return_logprob=True
            )


# --- the engine -----------------------------------------------------------------------------------
class SGLangEngine:
    """``generate(prompts, params) -> list[Generation]`` over SGLang's ``/generate`` (see module doc).

    ``model`` (hub id or directory) gives the tokenizer and the semantics the checkpoint records; a
    canonical checkpoint is refused (``SemanticsError``) unless ``allow_approximate``.
    """

    EXACT: frozenset[Semantics] = frozenset({"reprefill"})

    def __init__(
        self,
        model: str,
        *,
        server_url: str | None = None,
        max_concurrency: int = 64,
        timeout: float = 600.0,
        allow_approximate: bool = False,
    ):
        from transformers import AutoTokenizer

        self.semantics = checkpoint_semantics(
            _config(model), where=model, engine="sglang", exact=self.EXACT, allow_approximate=allow_approximate
        )
        if server_url is not None:
            self.transport: HTTPTransport | InProcessTransport = HTTPTransport(server_url, timeout)
        else:
            try:
                self.transport = InProcessTransport(model)
            except ImportError:
                raise ValueError(
                    "the sglang backend needs --server URL (an SGLang server or `npr serve`) "
                    "or the sglang package (pip install 'npr-toolkit[sglang]')"
                ) from None
        self.transport.check()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.vocab = tag_vocab(self.tokenizer)
        self.max_concurrency = max_concurrency
        stop = {self.tokenizer.eos_token_id, self.vocab.im_end, *_generation_eos(model)}  # SGLang stops at all
        self.stop_ids = frozenset(i for i in stop if i is not None)
        v = self.vocab
        # Tags after which a lane must be looked at: a fork, a branch's end, or tags the state machine rejects
        # anywhere they can be sampled (the engine inserts <step> and <takeaway>).
        self.tag_stops = frozenset({v.guideline_close, v.step_close, v.step_open, v.takeaway_open})

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        """Sample ``params.n`` completions per prompt, grouped by prompt, all samples concurrently.

        ``seeds`` gives each prompt its own seed (instead of ``params.seed``), so a prompt's samples
        are the same whatever else shares the call.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        requests = [
            Request(index=u * params.n + s, prompt_ids=ids, params=params, vocab=self.vocab, stop_ids=stop_ids)
            for u, ids in enumerate(self._encode(p) for p in prompts)
            for s in range(params.n)
        ]

        def seed_key(index: int) -> str | None:
            """Each /generate call's seed derives from (seed, sample) and its lane, as the torch engine seeds
            a request from (seed, index): reproducible, and distinct for every sample and branch."""
            seed, sample = (params.seed, index) if seeds is None else (seeds[index // params.n], index % params.n)
            return None if seed is None else f"{seed}:{sample}"

        inflight: dict[Future, tuple[Request, int]] = {}
        rounds: dict[int, list[tuple[Lane, dict[str, Any] | None]]] = {}
        with ThreadPoolExecutor(self.max_concurrency) as pool:

            def launch(request: Request) -> None:
                lanes = _ready(request)
                if not lanes:
                    if not request.finished:
                        request.finish("malformed", "decoding stalled")  # defensive: never loop forever
                    return
                rounds[request.index] = [(lane, None) for lane in lanes]
                for slot, lane in enumerate(lanes):
                    payload = self._payload(request, lane, seed_key(request.index))
                    future = pool.submit(self.transport.generate, payload)
                    inflight[future] = (request, slot)

            try:
                for request in requests:
                    launch(request)
                while inflight:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for future in done:
                        request, slot = inflight.pop(future)
                        round_ = rounds[request.index]
                        round_[slot] = (round_[slot][0], future.result())
                        if all(output is not None for _, output in round_):
                            self._replay(request, round_)
                            launch(request)
            finally:
                for future in inflight:
                    future.cancel()
        return [r.generation(self.tokenizer) for r in requests]

    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt")
        return ids

    # --- one /generate call ----------------------------------------------------------------------
    def _payload(self, request: Request, lane: Lane, seed_key: str | None) -> dict[str, Any]:
        """The request for ``lane``: its whole visible context, its budget, the stops that end its turn."""
        params = request.params
        budget = min(
            params.max_new_tokens - (lane.pos - len(request.prompt_ids)),  # critical path
            params.total_budget - request.total,
        )
        if lane.budget is not None:  # a branch: room for its own </step>
            budget = min(budget, lane.budget - lane.length - 1)
        stops = request.stop_ids | self.tag_stops if params.parallel else request.stop_ids
        sampling: dict[str, Any] = {
            "max_new_tokens": budget,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or -1,
            "stop_token_ids": sorted(stops),
            "skip_special_tokens": False,
        }
        if seed_key is not None:
            key = f"{seed_key}:{lane.path}:{lane.length}".encode()
            sampling["sampling_seed"] = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") >> 1
        return {
            "input_ids": request.prompt_ids + _context(lane),
            "sampling_params": sampling,
            "return_logprob": True,
        }

    def _replay(self, request: Request, round_: list[tuple[Lane, dict[str, Any] | None]]) -> None:
        """Feed the server's tokens through the state machine, the lanes of a round in lockstep.

        As in the torch engine, each step checks every lane's budget before any lane's token is
        recorded. Tokens after the point where the state machine ends a lane (a fork, a close, a
        malformed tag, a limit) are dropped.
        """
        streams: list[tuple[Lane, list[tuple[int, float]]]] = []
        for lane, output in round_:
            assert output is not None
            streams.append((lane, _tokens(output)))
            request.steps += 1
            if not streams[-1][1] and not request.finished:
                request.finish("malformed", "the server returned no tokens")
        step = 0
        while not request.finished:
            live = [(lane, tokens) for lane, tokens in streams if step < len(tokens) and _needs_token(lane)]
            if not live:
                return
            if step > 0:  # step 0 was checked before the call was made
                checked = []
                for lane, tokens in live:
                    if request.finished:
                        return
                    if request.enforce_budget(lane):
                        _settle(request, lane)
                    else:
                        checked.append((lane, tokens))
                live = checked
            for lane, tokens in live:
                token_id, logprob = tokens[step]
                request.sampled(lane, token_id, logprob)
                if request.finished:
                    return
            for lane, _ in live:
                _settle(request, lane)
            step += 1


# --- lane helpers (the state machine lives in lanes.py) -------------------------------------------
def _needs_token(lane: Lane) -> bool:
    return not lane.done and not lane.waiting and lane.pending is None


def _waiting_lanes(lane: Lane, serial: bool) -> list[Lane]:
    """Lanes that wait for a sampled token, depth first in branch order (``serial``: one branch at a time)."""
    if lane.done:
        return []
    if lane.waiting:
        children = [child for child in lane.children if not child.done]
        return [found for child in (children[:1] if serial else children) for found in _waiting_lanes(child, serial)]
    return [lane] if lane.pending is None else []


def _settle(request: Request, lane: Lane) -> None:
    """Feed ``lane``'s chosen and inserted tokens until it waits for a sampled token, forks or closes."""
    while lane.pending is not None and not request.finished:
        if request.fed(lane):
            return
        if lane.waiting:  # forked: feed the children's inserted headers
            for child in lane.children:
                _settle(request, child)
            return
        if lane.done:  # closed: the last sibling to close joins the parent
            if lane.parent is not None and not lane.parent.waiting:
                _settle(request, lane.parent)
            return


def _ready(request: Request) -> list[Lane]:
    """The lanes to request next, after the limits had their say (forced closes may join a block)."""
    while not request.finished:
        lanes = _waiting_lanes(request.root, request.params.serial_branches)
        decided = False
        for lane in lanes:
            if request.finished:
                return []
            if request.enforce_budget(lane):
                decided = True
                _settle(request, lane)
        if not decided:
            return lanes
    return []


def _ids(items: list[Token | list[Lane]]) -> list[int]:
    ids: list[int] = []
    for item in items:
        if isinstance(item, Token):
            ids.append(item.id)
        else:
            for child in item:
                ids += [t.id for t in child.flat()]
    return ids


def _context(lane: Lane, upto_fork: bool = False) -> list[int]:
    """The completion ids ``lane`` continues: its ancestors up to its fork, then its own tokens.

    For the trunk after a join this is every branch, concatenated in order: the re-prefill. A
    waiting lane's last item is its block's children (``upto_fork`` leaves them out).
    """
    head = _context(lane.parent, upto_fork=True) if lane.parent is not None else []
    return head + _ids(lane.out[:-1] if upto_fork else lane.out)


def _tokens(output: dict[str, Any]) -> list[tuple[int, float]]:
    """(id, logprob) pairs of one ``/generate`` answer; an abort becomes ``SGLangError``."""
    meta = output.get("meta_info", {})
    finish = meta.get("finish_reason") or {}
    if finish.get("type") == "abort":
        raise SGLangError(f"the server aborted a request: {finish.get('message')}")
    ids = output["output_ids"]
    logprobs = meta.get("output_token_logprobs")
    if logprobs is None or len(logprobs) != len(ids):
        raise SGLangError("the server's answer lacks output_token_logprobs for every output id")
    for entry, token_id in zip(logprobs, ids, strict=True):
        if entry[1] != token_id or entry[0] is None:
            raise SGLangError(f"output_token_logprobs entry {entry} does not fit output id {token_id}")
    return [(token_id, float(entry[0])) for entry, token_id in zip(logprobs, ids, strict=True)]
