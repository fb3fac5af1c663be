"""SGLang's native API on ``npr serve``: ``/generate``, ``/health``, ``/get_model_info`` (docs/design.md §4).

A plain LM server, like vanilla SGLang: it decodes with the torch engine in *sequential* mode
(``parallel=False``) and stops at EOS or ``stop_token_ids``. That makes it a stand-in for SGLang: the
SGLang backend (``engine/sglang_engine.py``) does its fork/join over it, and is tested against it on
CPU. Wire format and error shapes: ``engine/sglang_wire.py`` (SGLang 0.5.23).

- ``POST|PUT /generate``: ``text`` or ``input_ids`` (one prompt or a batch), ``sampling_params`` (a
  dict or one per prompt), ``return_logprob``, ``rid``. The answer is one dict, or a list for a batch
  or ``n > 1`` (grouped by prompt). ``output_ids`` keep the matched stop token, ``text`` drops it.
- ``GET /health`` (empty 200; 503 while shutting down), ``GET /get_model_info`` (and ``/model_info``),
  ``GET /get_load``. Every answer's ``meta_info.weight_version`` names the weights that sampled it
  (weight updates: ``weight_routes.py``).

Differences from SGLang, on purpose: log-probabilities are the model's own (temperature 1, before
top-p/top-k), as SGLang gives with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1``; no prefix cache across
requests (``cached_tokens`` is 0); no streaming, stop strings, penalties, grammars or images (a request
that sets them gets a 400 saying so, never a silent ignore).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..engine.params import Generation, SamplingParams
from ..engine.sglang_wire import (
    REFUSED_INPUTS,
    SAMPLING_EPS,
    GenerateRequest,
    SamplingSchema,
    SchemaError,
    error_body,
    parse_sampling,
)
from .scheduler import Job
from .service import InputError, Service

router = APIRouter()


@dataclass
class _Item:
    """One output of a request, in response order."""

    rid: str
    prompt_ids: list[int]
    sampling: SamplingSchema
    max_new_tokens: int
    return_logprob: bool
    job: Job | None = None  # None: nothing to decode (max_new_tokens 0)
    choice: int = 0  # its index among the job's outputs


def _per_item(value: Any, count: int, name: str) -> list[Any]:
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"The length of {name} ({len(value)}) should be equal to the batch size ({count}).")
        return value
    return [value] * count


# --- planning: one request -> items and jobs ------------------------------------------------------
def _plan(service: Service, req: GenerateRequest) -> tuple[list[_Item], list[Job], bool]:
    refused = [name for name in REFUSED_INPUTS if getattr(req, name)]
    if refused:
        raise ValueError(f"npr serve does not support: {', '.join(refused)}.")
    if req.stream:
        raise ValueError("npr serve does not stream on /generate; send stream=false (or use /v1).")
    if req.top_logprobs_num or req.token_ids_logprob:
        raise ValueError("npr serve returns output_token_logprobs only (no top_logprobs_num, token_ids_logprob).")
    if req.text is None and req.input_ids is None:
        raise ValueError("Either text, input_ids or input_embeds should be provided.")
    prompts, single = _prompts(service, req)
    raw = req.sampling_params if req.sampling_params is not None else {}
    samplings = [parse_sampling(r) for r in _per_item(raw, len(prompts), "sampling_params")]
    ns = {sp.n or 1 for sp in samplings}
    if len(ns) > 1:
        raise ValueError("The parallel_sample_num should be the same for all samples in sample params.")
    n = ns.pop()
    service.check_outputs(len(prompts) * n)
    if n > 1 and any(isinstance(v, list) for v in (req.return_logprob, req.logprob_start_len)):
        raise ValueError("List-valued logprob parameters are not supported with n > 1.")
    logprob = _per_item(req.return_logprob or False, len(prompts), "return_logprob")
    starts = _per_item(req.logprob_start_len, len(prompts), "logprob_start_len")
    if any(s not in (None, -1) for s in starts):
        raise ValueError("npr serve supports only logprob_start_len=-1 (no input token logprobs).")
    rids = _rids(req.rid, len(prompts), n, single)
    items: list[_Item] = []
    for b, (ids, sp, lp) in enumerate(zip(prompts, samplings, logprob, strict=True)):
        budget = 0 if sp.max_new_tokens == 0 else service.budget(ids, sp.max_new_tokens, "max_new_tokens")
        items += [_Item(rids[b * n + s], ids, sp, budget, bool(lp)) for s in range(n)]
    return items, _jobs(service, items, n), single and n == 1


def _prompts(service: Service, req: GenerateRequest) -> tuple[list[list[int]], bool]:
    if req.text is not None:  # text decides whether it is a batch (SGLang)
        texts = [req.text] if isinstance(req.text, str) else req.text
        if req.input_ids is not None:
            prompts = [req.input_ids] if isinstance(req.text, str) else req.input_ids
            if len(prompts) != len(texts) or not all(isinstance(i, int) for p in prompts for i in p):
                raise ValueError("text and input_ids must describe the same batch.")
        else:
            prompts = [service.encode(t, "text", add_special_tokens=True) for t in texts]
        single = isinstance(req.text, str)
    else:
        ids = req.input_ids
        if not ids:
            raise ValueError("input_ids cannot be empty.")
        single = isinstance(ids[0], int)
        prompts = [ids] if single else ids
    if not prompts:
        raise ValueError("The batch is empty.")
    for p in prompts:
        if not p:
            raise ValueError("input_ids cannot be empty.")
        service.check_ids(p, "input_ids")
    return [list(p) for p in prompts], single


def _rids(rid: str | list[str] | None, count: int, n: int, single: bool) -> list[str]:
    if n > 1 or rid is None:  # SGLang gives every parallel sample a fresh rid
        return [uuid.uuid4().hex for _ in range(count * n)]
    if single:
        return [rid if isinstance(rid, str) else rid[0]]
    if isinstance(rid, str):
        return [f"{rid}_{i}" for i in range(count)]
    if len(rid) != count:
        raise ValueError("The specified rids length mismatch with the batch_size for batch processing.")
    if len(set(rid)) != len(rid):
        raise ValueError(f"Duplicate request IDs detected within the request: {sorted(set(rid))}")
    return list(rid)


def _jobs(service: Service, items: list[_Item], n: int) -> list[Job]:
    """Group the prompts by engine parameters; each group is one job with ``n`` samples per prompt."""
    jobs: dict[str, Job] = {}
    loop = asyncio.get_running_loop()
    for first in range(0, len(items), n):
        item = items[first]
        if item.max_new_tokens == 0:  # SGLang allows prefill-only requests: nothing to decode
            continue
        sp = item.sampling
        temperature = 1.0 if sp.temperature is None else sp.temperature
        top_k = sp.top_k if sp.top_k not in (None, -1) and sp.top_k < service.vocab_size else 0
        params = SamplingParams(
            max_new_tokens=item.max_new_tokens,
            temperature=0.0 if temperature < SAMPLING_EPS or top_k == 1 else temperature,
            top_p=1.0 if sp.top_p is None else sp.top_p,
            top_k=top_k,
            n=n,
            parallel=False,
            stop_token_ids=sorted(set(sp.stop_token_ids or [])),
        )
        job = jobs.setdefault(params.model_dump_json(), Job(prompts=[], seeds=[], params=params, loop=loop))
        for s in range(n):
            items[first + s].job, items[first + s].choice = job, len(job.prompts) * n + s
        job.prompts.append(item.prompt_ids)
        job.seeds += service.seeds(sp.sampling_seed, 1)
    return list(jobs.values())


# --- answers --------------------------------------------------------------------------------------
def _finish_reason(gen: Generation | None, item: _Item) -> dict[str, Any]:
    if gen is None or gen.finish_reason == "length":
        return {"type": "length", "length": item.max_new_tokens}
    if gen.finish_reason == "stop":
        return {"type": "stop", "matched": gen.completion_ids[-1]}
    return {"type": "abort", "message": gen.finish_detail or gen.finish_reason, "status_code": None, "err_type": None}


def _output(
    tokenizer, item: _Item, gen: Generation | None, started: float, with_text: bool, version: str
) -> dict[str, Any]:
    ids = gen.completion_ids if gen is not None else []
    finish = _finish_reason(gen, item)
    shown = ids[:-1] if finish["type"] == "stop" and not item.sampling.no_stop_trim else ids
    skip = item.sampling.skip_special_tokens is not False
    meta: dict[str, Any] = {
        "id": item.rid,
        "finish_reason": finish,
        "prompt_tokens": len(item.prompt_ids),
        "weight_version": version,
        "completion_tokens": len(ids),
        "cached_tokens": 0,
        "e2e_latency": time.perf_counter() - started,
    }
    if item.return_logprob:
        logprobs = gen.logprobs if gen is not None else []
        meta["input_token_logprobs"] = []
        meta["output_token_logprobs"] = [
            [lp if lp is not None and math.isfinite(lp) else None, i, tokenizer.decode([i]) if with_text else None]
            for lp, i in zip(logprobs, ids, strict=True)
        ]
    return {"text": tokenizer.decode(shown, skip_special_tokens=skip), "output_ids": ids, "meta_info": meta}


# --- routes ---------------------------------------------------------------------------------------
@router.get("/health")
@router.get("/health_generate")
def health(request: Request) -> Response:
    service: Service = request.app.state.service
    return Response(status_code=503 if service.scheduler.stopping.is_set() else 200)


@router.get("/get_load")
def load(request: Request) -> dict[str, int]:
    """How busy the server is: requests accepted and not answered, outputs decoding in the running batch,
    and requests waiting for a weight update to finish."""
    service: Service = request.app.state.service
    scheduler = service.scheduler
    return {
        "inflight": scheduler.inflight,
        "decoding": scheduler.decoding,
        "waiting_for_weights": service.weights.lock.waiting,
    }


@router.get("/get_model_info")
@router.get("/model_info")
def model_info(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    config = service.engine.model.config
    name = service.config.model_name
    return {
        "model_path": name,
        "tokenizer_path": name,
        "served_model_name": name,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": service.weights.version,
        "model_type": getattr(config, "model_type", None),
        "architectures": getattr(config, "architectures", None) or [type(service.engine.model).__name__],
    }


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(req: GenerateRequest, request: Request) -> Response:
    """SGLang's ``/generate`` (sequential decoding; see the module doc)."""
    service: Service = request.app.state.service
    started = time.perf_counter()
    try:
        items, jobs, single = _plan(service, req)
    except SchemaError as error:
        return JSONResponse(error_body("schema", 400, str(error)), status_code=400)
    except InputError as error:
        kind = "value" if error.status == 400 else "request"
        return JSONResponse(error_body(kind, error.status, str(error)), status_code=error.status)
    except ValueError as error:
        return JSONResponse(error_body("value", 400, str(error)), status_code=400)
    try:
        admission = await service.submit(jobs)
    except InputError as error:
        return JSONResponse(error_body("request", error.status, str(error)), status_code=error.status)
    try:
        if not await service.wait(jobs, request):
            return Response(status_code=499)  # the client is gone; nobody reads this
    finally:
        service.release(admission)
    failed = next((job.error for job in jobs if job.error), None)
    if failed is not None:
        return JSONResponse(error_body("request", failed[0], failed[1]), status_code=failed[0])
    tokenizer = service.tokenizer
    outputs = [
        _output(
            tokenizer,
            item,
            item.job.results[item.choice] if item.job else None,
            started,
            req.return_text_in_logprobs,
            admission.weight_version,
        )
        for item in items
    ]
    return JSONResponse(outputs[0] if single else outputs)
