"""The exact parallel engine on transformers (reference backend, CPU or GPU).

All requests and all their active branches decode together: each step feeds one token per active
lane. Each request is one row of a ``DynamicCache``; the tokens of its sibling branches sit side by
side in that row, and a 4D mask built from the per-slot branch path (``view.masks.visible``) keeps
siblings apart. This is the "no fork copy" scheme of ``notes/kv-fork-join.md`` §5: the prefix KV is
never copied, a fork costs nothing and a join is free (the branch KV is already in the row, with
the positions it was computed at). Positions and visibility are those of ``view.build_view``, so
the log-probabilities recorded here equal the training view's recomputation (tested to 1e-4).

Usage: ``TorchEngine.from_pretrained(path).generate(prompts, SamplingParams(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from ..view.masks import additive, visible
from ..view.tokens import tag_vocab
from .lanes import Lane, Request
from .params import Generation, SamplingParams

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


class TorchEngine:
    """Exact fork/join decoding with a transformers causal LM."""

    def __init__(self, model, tokenizer, max_batch: int = 64):
        self.model = model
        self.tokenizer = tokenizer
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

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

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
        prompt_ids = [self._encode(p) for p in prompts]
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

    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt")
        return ids

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
                index=first_index + u * params.n + s, prompt_ids=p, params=params, vocab=self.vocab, stop_ids=stop_ids
            )
            for u, p in enumerate(prompts)
            for s in range(params.n)
        ]
        if seeds is None:
            generators = [self._generator(params.seed, r.index) for r in requests]
        else:
            generators = [self._generator(seeds[u], s) for u in range(len(prompts)) for s in range(params.n)]
        cache, meta, logits = self._prefill(prompts, params)
        first = [(r, r.root, generators[i]) for i, r in enumerate(requests)]
        self._choose(first, logits.repeat_interleave(params.n, 0), params, processor)
        if on_step is not None:
            on_step(requests)
        rows = list(range(len(requests)))  # rows[k]: the request held in cache row k
        while True:
            keep = [k for k, i in enumerate(rows) if not requests[i].finished]
            if not keep:
                break
            if len(keep) < len(rows):  # drop finished requests from the cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                meta = {name: value[index] for name, value in meta.items()}
                rows = [rows[k] for k in keep]
            lanes = [requests[i].active() for i in rows]
            cache, meta, out = self._step(lanes, cache, meta, params)
            chosen, where = [], []
            for k, i in enumerate(rows):
                request = requests[i]
                request.steps += 1
                for q, lane in enumerate(lanes[k]):
                    if request.fed(lane) and not request.enforce_budget(lane) and not request.finished:
                        chosen.append((request, lane, generators[i]))
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

    @staticmethod
    def _generator(seed: int | None, index: int) -> torch.Generator:
        """The generator of one request: a function of (seed, request index) only.

        Taken modulo 2**64 (what ``manual_seed`` accepts, and how it already reads a negative seed), so
        any integer seed is valid: a client's 2**70 is a seed, not an overflow that fails its batch.
        """
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed((seed * 1_000_003 + index) % 2**64)
        return generator

    def _prefill(self, prompts: list[list[int]], params: SamplingParams):
        """Run the distinct prompts once, then repeat each cache row ``n`` times (shared prefix).

        Prompts are left-padded so the last column holds every prompt's last token: only that
        column's logits are computed (``logits_to_keep=1``), never (prompts, length, vocab).
        """
        device, depth = self.device, params.max_depth
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
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        meta = {
            "block": torch.full((len(prompts), depth, length), -1, dtype=torch.long, device=device),
            "branch": torch.full((len(prompts), depth, length), -1, dtype=torch.long, device=device),
            "valid": valid.to(device),
        }
        if params.n > 1:
            cache.batch_repeat_interleave(params.n)
            meta = {name: value.repeat_interleave(params.n, 0) for name, value in meta.items()}
        return cache, meta, out.logits[:, -1].float()

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """(R, q, S) bool -> (R, 1, q, S) additive mask in the model's dtype (on the mask's device)."""
        return additive(allowed, self.model.dtype)[:, None]

    def _step(self, lanes: list[list[Lane]], cache: DynamicCache, meta: dict, params: SamplingParams):
        """Feed every active lane's pending token in one forward; return (R, q, V) logits on the device.

        Per-slot branch paths and validity (``meta``) live on the model's device, so the tree mask
        is built there; only the (R, q) inputs of the step are assembled on the CPU.
        """
        rows, depth, device = len(lanes), params.max_depth, self.device
        width = max(len(x) for x in lanes)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((rows, width), dtype=torch.long)
        q_block = torch.full((rows, depth, width), -1, dtype=torch.long)
        q_branch = torch.full((rows, depth, width), -1, dtype=torch.long)
        q_valid = torch.zeros((rows, width), dtype=torch.bool)
        for k, row in enumerate(lanes):
            for q, lane in enumerate(row):
                ids[k, q], pos[k, q], q_valid[k, q] = lane.pending, lane.pos, True
                for d, (uid, branch) in enumerate(lane.path):
                    q_block[k, d, q], q_branch[k, d, q] = uid, branch
        q_block, q_branch = q_block.to(device), q_branch.to(device)
        meta = {
            "block": torch.cat([meta["block"], q_block], -1),
            "branch": torch.cat([meta["branch"], q_branch], -1),
            "valid": torch.cat([meta["valid"], q_valid.to(device)], -1),
        }
        allowed = meta["valid"][:, None, :] & visible(
            q_block.transpose(0, 1)[..., None],
            q_branch.transpose(0, 1)[..., None],
            meta["block"].transpose(0, 1)[:, :, None, :],
            meta["branch"].transpose(0, 1)[:, :, None, :],
        )
        # Every query sees its own new slot (padding queries only that one): no empty rows.
        total = meta["valid"].shape[-1]
        own = torch.eye(width, dtype=torch.bool, device=device)
        allowed[:, :, total - width :] &= own
        allowed[:, :, total - width :] |= own
        out = self.model(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=self._mask(allowed),
            past_key_values=cache,
            use_cache=True,
        )
        return out.past_key_values, meta, out.logits

    def _choose(
        self,
        chosen: list[tuple[Request, Lane, torch.Generator]],
        logits: torch.Tensor,
        params: SamplingParams,
        processor: LogitsProcessor | None,
    ) -> None:
        """Sample one token per chosen lane from its row of (Q, V) logits.

        Each request draws from its own generator, in lane order, so a request's output does not
        depend on what else is in the batch.
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
