"""NPR's fork/join decoding over a server that only continues token sequences (docs/design.md §3b, §4).

The client-side driver shared by the SGLang backend (``sglang_engine.py``, native ``/generate``) and
the OpenAI-compatible backend (``openai_engine.py``, ``/v1/completions``). Both give the same answer to
one question: "continue these token ids, at most N tokens, stop at these ids, with this seed; which
tokens and log-probabilities came out?" (a ``LaneCall``). Everything else is here, once:

- **trunk**: one call on ``prompt + completion so far`` that stops at ``</guideline>`` or EOS;
- **fork**: when the guideline's plans allow it (the torch engine's checks: width, depth, budget), one
  call per branch, all in flight at once, on ``prompt + completion so far + branch header i``,
  stopping at ``</step>``, with the branch budget as its limit. A server's prefix cache reuses the
  shared prefix;
- **join**: a new trunk call on ``prompt + ... + branch 1 + ... + branch n + join header``: the
  re-prefill. This is exact for ``reprefill`` checkpoints (§3b) and approximate for canonical (§3)
  ones (``bench/sglang_divergence.py`` measures by how much).

Each answer is replayed token by token through the torch engine's state machine (``lanes.Request``),
so limits, forced closes, finish reasons, positions (critical path) and stats mean the same thing in
every backend. The branches of a block are replayed in lockstep, as the torch engine decodes them,
so a shared total budget runs out the same way. ``stats.steps`` counts the calls of a sample.

**Several servers** (data-parallel rollouts): the samples are spread over them in contiguous runs
(sample i of N goes to server ``i * S // N``), and every call of one sample goes to the same server,
so its radix cache serves the sample's shared prefixes. The seeds do not depend on the server, so
servers with equal weights give the same samples however many there are.

**Weight versions.** Every answer carries the server's ``weight_version``; all the calls of a sample
must agree (else the weights changed under it: ``WeightVersionError``), the sample's ``Generation``
records it, and ``generate(..., weight_version=V)`` refuses any answer from other weights (an
on-policy trainer passes the version it just pushed).

A backend subclasses ``ForkJoinEngine`` and implements ``_complete`` (one call over its wire).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..seeds import derive_seed
from ..view.tokens import tag_vocab
from .http_client import ServerError
from .lanes import Lane, Request, Token
from .params import Generation, SamplingParams
from .protocol import PromptEncoding


@dataclass(frozen=True)
class LaneCall:
    """One server call: continue ``input_ids`` (prompt and visible context of a lane)."""

    input_ids: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int  # 0: no top-k
    stop_token_ids: list[int]  # the matched stop id must come back as the last output token
    seed: int | None  # < 2**31: every server takes it


@dataclass(frozen=True)
class LaneAnswer:
    """What the server sampled for one ``LaneCall``."""

    tokens: list[tuple[int, float]]  # (token id, log-probability), the matched stop id last
    weight_version: str | None  # the server's weights they were sampled with (None: not reported)


class WeightVersionError(ServerError):
    """A sample was answered by other weights than the caller expects, or by more than one version."""


def generation_eos(model: str) -> list[int]:
    """The end-of-sequence ids of the model's generation config (SGLang and vLLM stop at every one)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except OSError:  # no generation_config.json
        return []
    return [eos] if isinstance(eos, int) else list(eos or [])


class ForkJoinEngine(PromptEncoding):
    """``generate(prompts, params) -> list[Generation]`` by fork/join over ``_complete`` (module doc)."""

    def __init__(self, tokenizer, stop_ids: set[int], max_concurrency: int = 64, servers: int = 1):
        self.tokenizer = tokenizer
        self.vocab = tag_vocab(tokenizer)
        self.max_concurrency = max_concurrency
        self.servers = servers
        self.stop_ids = frozenset(i for i in stop_ids | {tokenizer.eos_token_id, self.vocab.im_end} if i is not None)
        v = self.vocab
        # Tags after which a lane must be looked at: a fork, a branch's end, or tags the state machine rejects
        # anywhere they can be sampled (the engine inserts <step> and <takeaway>).
        self.tag_stops = frozenset({v.guideline_close, v.step_close, v.step_open, v.takeaway_open})

    def _complete(self, call: LaneCall, server: int) -> LaneAnswer:
        """What server number ``server`` (of ``self.servers``) sampled for ``call``."""
        raise NotImplementedError

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        *,
        weight_version: str | None = None,
    ) -> list[Generation]:
        """Sample ``params.n`` completions per prompt, grouped by prompt, all samples concurrently.

        ``seeds`` gives each prompt its own seed (instead of ``params.seed``), so a prompt's samples
        are the same whatever else shares the call. ``weight_version``: every answer must come from
        these weights (else ``WeightVersionError``, raised at the first answer that does not).
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        requests = [
            Request(index=u * params.n + s, prompt_ids=ids, params=params, vocab=self.vocab, stop_ids=stop_ids)
            for u, ids in enumerate(self.encode_prompt(p) for p in prompts)
            for s in range(params.n)
        ]

        def seed_key(index: int) -> str | None:
            """Each call's seed derives from (seed, sample) and its lane, as the torch engine seeds a request
            from (seed, index): reproducible, and distinct for every sample and branch."""
            seed, sample = (params.seed, index) if seeds is None else (seeds[index // params.n], index % params.n)
            return None if seed is None else f"{seed}:{sample}"

        versions: dict[int, str | None] = {}  # sample index -> the weight version of its first answer

        def check(request: Request, answer: LaneAnswer) -> None:
            got = answer.weight_version
            if weight_version is not None and got != weight_version:
                raise WeightVersionError(
                    f"sample {request.index} was answered with weight_version {got!r}, not the expected "
                    f"{weight_version!r}: the server does not hold the weights the rollout is for"
                )
            first = versions.setdefault(request.index, got)
            if got != first:
                raise WeightVersionError(
                    f"sample {request.index} was answered with weight_version {first!r}, then {got!r}: "
                    "the weights changed in the middle of the sample"
                )

        inflight: dict[Future, tuple[Request, int]] = {}
        rounds: dict[int, list[tuple[Lane, list[tuple[int, float]] | None]]] = {}
        with ThreadPoolExecutor(self.max_concurrency) as pool:

            def launch(request: Request) -> None:
                lanes = _ready(request)
                if not lanes:
                    if not request.finished:
                        request.finish("malformed", "decoding stalled")  # defensive: never loop forever
                    return
                rounds[request.index] = [(lane, None) for lane in lanes]
                server = request.index * self.servers // len(requests)
                for slot, lane in enumerate(lanes):
                    call = self._call(request, lane, seed_key(request.index))
                    inflight[pool.submit(self._complete, call, server)] = (request, slot)

            try:
                for request in requests:
                    launch(request)
                while inflight:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for future in done:
                        request, slot = inflight.pop(future)
                        answer = future.result()
                        check(request, answer)
                        round_ = rounds[request.index]
                        round_[slot] = (round_[slot][0], answer.tokens)
                        if all(tokens is not None for _, tokens in round_):
                            self._replay(request, round_)
                            launch(request)
            finally:
                for future in inflight:
                    future.cancel()
        generations = [r.generation(self.tokenizer) for r in requests]
        for gen, request in zip(generations, requests, strict=True):
            gen.weight_version = versions.get(request.index)
        return generations

    # --- one call ---------------------------------------------------------------------------------
    def _call(self, request: Request, lane: Lane, seed_key: str | None) -> LaneCall:
        """The call for ``lane``: its whole visible context, its budget, the stops that end its turn."""
        params = request.params
        budget = min(
            params.max_new_tokens - (lane.pos - len(request.prompt_ids)),  # critical path
            params.total_budget - request.total,
        )
        if lane.budget is not None:  # a branch: room for its own </step>
            budget = min(budget, lane.budget - lane.length - 1)
        stops = request.stop_ids | self.tag_stops if params.parallel else request.stop_ids
        seed = None
        if seed_key is not None:
            seed = derive_seed(seed_key, lane.path, lane.length)
        return LaneCall(
            input_ids=request.prompt_ids + _context(lane),
            max_new_tokens=budget,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            stop_token_ids=sorted(stops),
            seed=seed,
        )

    def _replay(self, request: Request, round_: list[tuple[Lane, list[tuple[int, float]] | None]]) -> None:
        """Feed the server's tokens through the state machine, the lanes of a round in lockstep.

        As in the torch engine, each step checks every lane's budget before any lane's token is
        recorded. Tokens after the point where the state machine ends a lane (a fork, a close, a
        malformed tag, a limit) are dropped.
        """
        streams: list[tuple[Lane, list[tuple[int, float]]]] = []
        for lane, tokens in round_:
            assert tokens is not None
            streams.append((lane, tokens))
            request.steps += 1
            if not tokens and not request.finished:
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
        lanes = [lane for lane in request.decoding() if lane.pending is None]
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
