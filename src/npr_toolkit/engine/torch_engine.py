"""The exact parallel engine on transformers (reference backend, CPU or GPU), for both semantics.

All requests and all their active branches decode together: each step feeds one token per active
lane. Each request is one row of a ``DynamicCache``; the tokens of its sibling branches sit side by
side in that row, and a 4D mask built from each slot's segment (``lanes.Request.sees``) keeps apart
what the semantics keeps apart. The prefix KV is never copied and a fork costs nothing:
- ``canonical`` (docs/design.md §3): a join is free, the branch KV is already in the row with the positions
  it was computed at;
- ``reprefill`` (§3b): a join re-reads branches 2..W after branch 1 at contiguous positions, as one
  multi-token chunk fed in the same forward as the join header's first token and the other lanes'
  steps; later tokens see the re-read copies, never the sibling-blind originals.
Either way the log-probabilities recorded here equal a recomputation of the same semantics (tested
to 1e-4 in float32). Each lane samples from its own random stream, so a tree does not depend on
the schedule (batched or serial branches) nor on what else shares the batch.

Usage: ``TorchEngine.from_pretrained(path).generate(prompts, SamplingParams(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from ..seeds import derive_seed
from ..view.masks import additive
from ..view.semantics import Semantics, read_semantics
from ..view.tokens import tag_vocab
from .lanes import Lane, Request
from .params import Generation, SamplingParams
from .protocol import PromptEncoding

# (histories of the lanes being sampled, their logits (Q, V)) -> logits used for sampling only.
LogitsProcessor = Callable[[list[list[int]], torch.Tensor], torch.Tensor]
# Called after every decoding step with the live requests of the batch (see ``TorchEngine.generate``).
StepHook = Callable[[list[Request]], None]


def _filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k and top-p applied to (Q, V) logits (sampling distribution only)."""
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > params.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def step_mask(
    segments: torch.Tensor, sees: torch.Tensor, q_segment: torch.Tensor, q_lane: torch.Tensor, q_order: torch.Tensor
) -> torch.Tensor:
    """(R, q, S + q) bool: which cached and new slots each query of a step attends to.

    ``segments`` (R, S): the segment of each cached slot (-1: padding); ``sees`` (R, G, G): segment g
    sees segment h; ``q_segment``, ``q_lane``, ``q_order`` (R, q): each query's segment (-1: padding),
    lane and place in its lane's chunk. A query sees the cached slots of the segments its segment
    sees, and its own lane's new slots up to itself; a padding query only itself (no empty rows).
    """
    size = q_segment.shape[-1]
    real = q_segment >= 0  # (R, q)
    seen = sees.gather(1, q_segment.clamp(min=0)[:, :, None].expand(-1, -1, sees.shape[-1]))  # (R, q, G)
    cached = seen.gather(2, segments.clamp(min=0)[:, None, :].expand(-1, size, -1))  # (R, q, S)
    cached &= (segments >= 0)[:, None, :] & real[:, :, None]
    fresh = (q_lane[:, :, None] == q_lane[:, None, :]) & (q_order[:, None, :] <= q_order[:, :, None])  # (R, q, q)
    fresh &= real[:, :, None] & real[:, None, :]
    fresh |= torch.eye(size, dtype=torch.bool, device=q_segment.device)
    return torch.cat([cached, fresh], -1)


class _Streams:
    """One random stream per lane: a function of (seed, request, the lane's place in the tree) only.

    The trunk's stream is the request's (``seed * 1_000_003 + number``); a branch's is derived from
    it and ``Lane.stream``, which does not depend on the order lanes are decoded in.
    """

    def __init__(self, keys: dict[int, tuple[int | None, int]]):
        self.keys = keys  # request index -> (seed or None for a fresh random one, number)
        self.made: dict[tuple[int, tuple[int, ...]], torch.Generator] = {}

    def __call__(self, request: Request, lane: Lane) -> torch.Generator:
        key = (request.index, lane.stream)
        if key not in self.made:
            generator = self.made[key] = torch.Generator(device="cpu")
            seed, number = self.keys[request.index]
            if seed is None:
                generator.seed()
                return generator
            # Modulo 2**64 (what manual_seed takes; how it already reads a negative seed), so any integer
            # seed is valid: a client's 2**70 is a seed, not an overflow that fails its whole batch.
            seed = (seed * 1_000_003 + number) % 2**64
            generator.manual_seed(derive_seed(seed, lane.stream) if lane.stream else seed)
        return self.made[key]


class TorchEngine(PromptEncoding):
    """Exact fork/join decoding with a transformers causal LM.

    ``semantics`` is how joins are decoded; by default the one the model's config records
    (``view.semantics``), canonical when it records none.
    """

    EXACT: frozenset[Semantics] = frozenset({"canonical", "reprefill"})

    def __init__(self, model, tokenizer, max_batch: int = 64, *, semantics: Semantics | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.semantics: Semantics = semantics or read_semantics(model.config)[0]
        self.vocab = tag_vocab(tokenizer)
        self.max_batch = max_batch
        stop = {tokenizer.eos_token_id, self.vocab.im_end}
        self.stop_ids = frozenset(i for i in stop if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None, dtype: str | None = None) -> TorchEngine:
        """Load a model and tokenizer (hub id or directory); float32 on CPU, bf16 on GPU by default.

        Raises:
            InputError: the checkpoint cannot be loaded (``checkpoints.load_checkpoint`` says why).
        """
        from ..checkpoints import load_checkpoint

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = (
            getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        model, tokenizer = load_checkpoint(path, dtype=torch_dtype, device=device)
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- public -------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        params: SamplingParams,
        logits_processor: LogitsProcessor | None = None,
        seeds: Sequence[int] | None = None,
        on_step: StepHook | None = None,
    ) -> list[Generation]:
        """Sample ``params.n`` completions per prompt, grouped by prompt.

        ``logits_processor`` may reshape the sampling distribution (e.g. constrained decoding);
        the recorded log-probabilities are always the model's own (temperature 1, unfiltered).
        ``seeds`` gives each prompt its own seed (instead of ``params.seed``), so a prompt's samples
        are the same whatever else shares the batch.
        ``on_step`` sees the requests of the running batch after each step's tokens are chosen
        (``Request.index`` is the output's index): a server streams ``request.final_tokens()`` from
        it, and ends one request with ``request.finish("abort", ...)`` (a client that left) without
        touching the others; a finished request leaves the batch before the next forward.
        """
        prompt_ids = [self.encode_prompt(p) for p in prompts]
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        per_chunk = max(1, self.max_batch // params.n)
        results: list[Generation] = []
        training = self.model.training  # PAPO samples from the policy in the middle of training
        self.model.eval()
        try:
            for start in range(0, len(prompt_ids), per_chunk):
                chunk = prompt_ids[start : start + per_chunk]
                chunk_seeds = list(seeds[start : start + per_chunk]) if seeds is not None else None
                results += self._run(chunk, params, start * params.n, logits_processor, chunk_seeds, on_step)
        finally:
            self.model.train(training)
        return results

    # --- decoding loop ------------------------------------------------------------------------
    def _run(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        first_index: int,
        processor: LogitsProcessor | None,
        seeds: list[int] | None,
        on_step: StepHook | None = None,
    ) -> list[Generation]:
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        requests = [
            Request(
                index=first_index + u * params.n + s,
                prompt_ids=p,
                params=params,
                vocab=self.vocab,
                stop_ids=stop_ids,
                semantics=self.semantics,
            )
            for u, p in enumerate(prompts)
            for s in range(params.n)
        ]
        if seeds is None:  # a request's seed: (seed, its index), or (its prompt's seed, its sample)
            keys = {r.index: (params.seed, r.index) for r in requests}
        else:
            keys = {r.index: (seeds[k // params.n], k % params.n) for k, r in enumerate(requests)}
        streams = _Streams(keys)
        cache, segments, logits = self._prefill(prompts, params)
        first = [(r, r.root, streams(r, r.root)) for r in requests]
        self._choose(first, logits.repeat_interleave(params.n, 0), params, processor)
        if on_step is not None:
            on_step(requests)
        rows = list(range(len(requests)))  # rows[k]: the request held in cache row k
        sees, shape = torch.ones(len(rows), 1, 1, dtype=torch.bool, device=self.device), [1] * len(rows)
        while True:
            keep = [k for k, i in enumerate(rows) if not requests[i].finished]
            if not keep:
                break
            if len(keep) < len(rows):  # drop finished requests from the cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                segments, sees = segments[index], sees[index]
                rows, shape = [rows[k] for k in keep], [shape[k] for k in keep]
            if shape != [len(requests[i].sees) for i in rows]:  # a fork or a join made segments
                sees, shape = self._sees([requests[i] for i in rows]), [len(requests[i].sees) for i in rows]
            lanes = [requests[i].active() for i in rows]
            segments, out = self._step(lanes, cache, segments, sees)
            chosen, where = [], []
            for k, i in enumerate(rows):
                request = requests[i]
                request.steps += 1
                for q, lane in enumerate(lanes[k]):
                    if request.fed(lane) and not request.enforce_budget(lane) and not request.finished:
                        chosen.append((request, lane, streams(request, lane)))
                        where.append((k, q))
            if chosen:
                index = torch.tensor(where, device=self.device)
                self._choose(chosen, out[index[:, 0], index[:, 1]].float(), params, processor)
            if on_step is not None:
                on_step(requests)
            for i in rows:
                if not requests[i].finished and not requests[i].active():
                    requests[i].finish("malformed", "decoding stalled")  # defensive: never loop forever
        return [r.generation(self.tokenizer) for r in requests]

    def _prefill(self, prompts: list[list[int]], params: SamplingParams):
        """Run the distinct prompts once, then repeat each cache row ``n`` times (shared prefix).

        Prompts are left-padded so the last column holds every prompt's last token: only that
        column's logits are computed (``logits_to_keep=1``), never (prompts, length, vocab).
        Returns the cache, each slot's segment (0: the prompt, -1: padding) and the last logits.
        """
        device = self.device
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(prompts), length), dtype=torch.long)
        valid = torch.zeros(len(prompts), length, dtype=torch.bool)
        for u, p in enumerate(prompts):
            ids[u, length - len(p) :] = torch.tensor(p)
            pos[u, length - len(p) :] = torch.arange(len(p))
            valid[u, length - len(p) :] = True
        causal = torch.ones(length, length, dtype=torch.bool).tril_()
        mask = (causal & valid[:, None, :] & valid[:, :, None]) | torch.eye(length, dtype=torch.bool)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=self._mask(mask.to(device)),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        segments = torch.where(valid, 0, -1).to(device)  # (P, length)
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            segments = segments.repeat_interleave(params.n, 0)
        return cache, segments, out.logits[:, -1].float()

    def _sees(self, requests: list[Request]) -> torch.Tensor:
        """(R, G, G) bool on the device: segment g of row r sees segment h (``Request.sees``)."""
        size = max(len(r.sees) for r in requests)
        sees = torch.zeros(len(requests), size, size, dtype=torch.bool)
        for k, request in enumerate(requests):
            for g, seen in enumerate(request.sees):
                sees[k, g, list(seen)] = True
        return sees.to(self.device)

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """(R, q, S) bool -> (R, 1, q, S) additive mask in the model's dtype (on the mask's device)."""
        return additive(allowed, self.model.dtype)[:, None]

    def _step(self, lanes: list[list[Lane]], cache: DynamicCache, segments: torch.Tensor, sees: torch.Tensor):
        """Feed every active lane's pending token (after its re-read tokens, if a join left any) in one
        forward; return the slots' segments and the (R, lanes, V) logits of the pending tokens.

        A row's queries are its lanes' re-read tokens, then one pending token per lane (last, so
        ``logits_to_keep`` computes only theirs); ``step_mask`` says what each sees. Segments live
        on the model's device, so the mask is built there; only the (R, q) inputs are assembled on
        the CPU.
        """
        rows, device = len(lanes), self.device
        width = max(len(row) for row in lanes)
        extra = max(sum(len(lane.reread) for lane in row) for row in lanes)
        size = extra + width
        ids = torch.full((rows, size), self.pad_id, dtype=torch.long)
        pos = torch.zeros((rows, size), dtype=torch.long)
        q_segment = torch.full((rows, size), -1, dtype=torch.long)  # -1: padding
        q_lane = torch.full((rows, size), -1, dtype=torch.long)
        q_order = torch.zeros((rows, size), dtype=torch.long)  # place in its lane's chunk
        for k, row in enumerate(lanes):
            column = 0
            for q, lane in enumerate(row):
                at, n = lane.pos + lane.offset, len(lane.reread)
                if n:
                    chunk = slice(column, column + n)
                    ids[k, chunk], pos[k, chunk] = torch.tensor(lane.reread), torch.arange(at - n, at)
                    q_segment[k, chunk], q_lane[k, chunk], q_order[k, chunk] = lane.segment, q, torch.arange(n)
                    column += n
                last = extra + q
                ids[k, last], pos[k, last] = lane.pending, at
                q_segment[k, last], q_lane[k, last], q_order[k, last] = lane.segment, q, n
        q_segment = q_segment.to(device)
        allowed = step_mask(segments, sees, q_segment, q_lane.to(device), q_order.to(device))
        out = self.model(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=self._mask(allowed),
            cache=cache,
            use_cache=True,
            logits_to_keep=width,
        )
        return torch.cat([segments, q_segment], -1), out.logits

    def _choose(
        self,
        chosen: list[tuple[Request, Lane, torch.Generator]],
        logits: torch.Tensor,
        params: SamplingParams,
        processor: LogitsProcessor | None,
    ) -> None:
        """Sample one token per chosen lane from its row of (Q, V) logits.

        Each lane draws from its own stream (``_Streams``), so a lane's tokens depend neither on
        what else is in the batch nor on whether its siblings decode beside it or before it.
        """
        logprobs = torch.log_softmax(logits, dim=-1)
        scores = processor([lane.own for _, lane, _ in chosen], logits.clone()) if processor else logits
        if params.temperature == 0:
            tokens = scores.argmax(-1)
        else:
            probs = _filter_logits(scores, params).softmax(-1)
            draws = torch.cat([torch.rand(1, generator=g) for _, _, g in chosen])[:, None].to(probs.device)
            tokens = torch.searchsorted(probs.cumsum(-1), draws).clamp_(max=probs.shape[-1] - 1).flatten()
            tokens = torch.where(probs.gather(-1, tokens[:, None]).flatten() > 0, tokens, probs.argmax(-1))
        picked = logprobs.gather(-1, tokens[:, None]).flatten().tolist()  # only (Q,) leaves the device
        for (request, lane, _), token, logprob in zip(chosen, tokens.tolist(), picked, strict=True):
            if not request.finished:
                request.sampled(lane, token, logprob)
