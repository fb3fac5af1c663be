"""The OpenAI-compatible API of ``npr serve``: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Here the server runs the *parallel* engine itself (``TorchEngine``, ``parallel=True``, docs/design.md §3): a
client that speaks OpenAI's API gets NPR's fork/join decoding without writing any. ``max_tokens`` is
the critical-path budget (what a user waits for); all branches together may use up to ``max_width``
(8) times that. ``usage`` carries OpenAI's fields plus ``parallel``: every branch's tokens, the
critical path, blocks and widths.

``stream: true`` sends server-sent events with each choice's text in document order as it becomes
final (``text.ChoiceText``): the plans, then each step once the ones before it have closed, then the
takeaway. Wire schema and error shape: ``engine/openai_wire.py``. Requests may name any model: the
server has one (``/v1/models`` reports its name). Every answer and chunk carries ``weight_version``
(an extension, SGLang's ``meta_info`` name): the weights that sampled it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.openai_wire import (
    TOKEN_ID_PREFIX,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    ModelCard,
    ModelList,
    OpenAISampling,
    ParallelUsage,
    TokenLogprob,
    Usage,
    error_body,
)
from ..engine.params import SamplingParams
from .scheduler import Job
from .service import InputError, Service
from .text import ChoiceText, Piece

router = APIRouter(prefix="/v1")
MAX_STOPS = 16


def _error(error: InputError) -> JSONResponse:
    return JSONResponse(error_body(error.status, str(error), error.param), status_code=error.status)


@router.get("/models")
def models(request: Request) -> ModelList:
    service: Service = request.app.state.service
    return ModelList(data=[ModelCard(id=service.config.model_name, created=service.created)])


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    service: Service = request.app.state.service
    try:
        prompts = [service.encode(p, "prompt") if isinstance(p, str) else _checked(service, p) for p in body.prompts]
        job = _job(service, body, prompts, body.max_tokens)
    except InputError as error:
        return _error(error)
    return await _answer(service, job, body, request, _completion_chunk, _completion)


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    service: Service = request.app.state.service
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in body.messages]
    try:
        text = service.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        job = _job(service, body, [service.encode(text, "messages")], body.budget)
    except InputError as error:
        return _error(error)
    return await _answer(service, job, body, request, _chat_chunk, _chat)


def _checked(service: Service, ids: list[int]) -> list[int]:
    service.check_ids(ids, "prompt")
    return ids


def _job(service: Service, body: OpenAISampling, prompts: list[list[int]], max_tokens: int | None) -> Job:
    """Check what the ids cannot tell (refusals, counts, budgets) and build the engine job."""
    refused = body.refused()
    if refused:
        raise InputError(f"npr serve does not support: {', '.join(refused)}.", param=refused[0])
    if not prompts:
        raise InputError("The prompt is empty.", param="prompt")
    if len(body.stops) > MAX_STOPS:
        raise InputError(f"At most {MAX_STOPS} stop strings.", param="stop")
    service.check_outputs(len(prompts) * body.n)
    longest = max(prompts, key=len)
    budget = service.budget(longest, max_tokens, "max_tokens")
    params = SamplingParams(
        max_new_tokens=budget,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=max(body.top_k, 0) if body.top_k < service.vocab_size else 0,
        n=body.n,
        parallel=True,
        stop_token_ids=sorted(set(body.stop_token_ids or [])),
    )
    texts = [ChoiceText(service.tokenizer, body.stops, body.skip_special_tokens) for _ in range(len(prompts) * body.n)]
    return Job(
        prompts=prompts,
        seeds=service.seeds(body.seed, len(prompts)),
        params=params,
        loop=asyncio.get_running_loop(),
        texts=texts,
        stream=body.stream,
    )


# --- running and answering -------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """What every chunk of one answer repeats: its id, and the weights that sampled it."""

    id: str
    weight_version: str


ChunkMaker = Callable[[Service, OpenAISampling, Reply, int, Piece], dict[str, Any]]
AnswerMaker = Callable[[Service, OpenAISampling, Reply, Job], dict[str, Any]]


async def _answer(
    service: Service, job: Job, body: OpenAISampling, request: Request, chunk: ChunkMaker, whole: AnswerMaker
) -> Response:
    try:
        admission = await service.submit([job])
    except InputError as error:
        return _error(error)
    kind = "chatcmpl" if isinstance(body, ChatCompletionRequest) else "cmpl"
    reply = Reply(f"{kind}-{uuid.uuid4().hex}", admission.weight_version)
    if body.stream:
        return _Stream(_events(service, job, body, reply, chunk), on_close=lambda: service.release(admission))
    try:
        if not await service.wait([job], request):
            return Response(status_code=499)  # the client is gone; nobody reads this
    finally:
        service.release(admission)
    if job.error is not None:
        return JSONResponse(error_body(*job.error), status_code=job.error[0])
    return JSONResponse(whole(service, body, reply, job))


class _Stream(StreamingResponse):
    """Server-sent events whose job is released however the stream ends (done, failed, client gone)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(
    service: Service, job: Job, body: OpenAISampling, reply: Reply, chunk: ChunkMaker
) -> AsyncIterator[str]:
    assert job.texts is not None
    if isinstance(body, ChatCompletionRequest):  # OpenAI opens each choice with the role
        for index in range(job.choices):
            opening = ChunkChoice(index=index, delta=Delta(role="assistant"))
            yield _sse(_envelope(ChatCompletionChunk, service, reply, [opening]))
    while True:
        event = await job.events.get()
        for index, text in enumerate(job.texts):
            piece = text.take()
            if piece.text or piece.tokens or piece.finish_reason:
                yield _sse(chunk(service, body, reply, index, piece))
        if event is None:
            break
    if job.error is not None:
        yield _sse(error_body(*job.error))
    elif body.stream_options is not None and body.stream_options.include_usage:
        kind = ChatCompletionChunk if isinstance(body, ChatCompletionRequest) else Completion
        yield _sse({**_envelope(kind, service, reply, []), "usage": _usage(job).model_dump()})
    yield _sse("[DONE]")


def _envelope(
    kind: type[Completion | ChatCompletion | ChatCompletionChunk],
    service: Service,
    reply: Reply,
    choices: list[Any],
    usage: Usage | None = None,
) -> dict[str, Any]:
    """An answer (with ``usage``) or a streamed chunk (without the key) around ``choices``: what every
    OpenAI response repeats (id, time, model) and the weights that sampled it."""
    answer = kind(
        id=reply.id,
        created=int(time.time()),
        model=service.config.model_name,
        choices=choices,
        usage=usage,
        weight_version=reply.weight_version,
    )
    return answer.model_dump(exclude=None if usage else {"usage"})


def _usage(job: Job) -> Usage:
    gens = job.results
    completion = sum(g.stats.total_tokens for g in gens)
    prompt = sum(len(p) for p in job.prompts)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        parallel=ParallelUsage(
            total_tokens=completion,
            critical_path_tokens=sum(g.stats.critical_path_tokens for g in gens),
            blocks=sum(g.stats.blocks for g in gens),
            widths=[g.stats.widths for g in gens],
        ),
    )


# --- completions ----------------------------------------------------------------------------------
def _completion_logprobs(service: Service, body: CompletionRequest, piece: Piece, offset: int) -> CompletionLogprobs:
    if body.return_tokens_as_token_ids:
        names = [f"{TOKEN_ID_PREFIX}{i}" for i, _ in piece.tokens]
    else:
        names = [service.tokenizer.decode([i]) for i, _ in piece.tokens]
    offsets = []
    for name in names:
        offsets.append(offset)
        offset += len(name)
    return CompletionLogprobs(tokens=names, token_logprobs=[lp for _, lp in piece.tokens], text_offset=offsets)


def _completion_choice(service: Service, body: CompletionRequest, index: int, piece: Piece) -> CompletionChoice:
    logprobs = _completion_logprobs(service, body, piece, 0) if body.logprobs is not None else None
    return CompletionChoice(
        index=index,
        text=piece.text,
        logprobs=logprobs,
        finish_reason=piece.finish_reason,
        finish_detail=piece.finish_detail,
    )


def _completion_chunk(service: Service, body: OpenAISampling, reply: Reply, index: int, piece: Piece) -> dict[str, Any]:
    assert isinstance(body, CompletionRequest)
    return _envelope(Completion, service, reply, [_completion_choice(service, body, index, piece)])


def _completion(service: Service, body: OpenAISampling, reply: Reply, job: Job) -> dict[str, Any]:
    assert isinstance(body, CompletionRequest) and job.texts is not None
    choices = [_completion_choice(service, body, i, text.take()) for i, text in enumerate(job.texts)]
    return _envelope(Completion, service, reply, choices, _usage(job))


# --- chat -----------------------------------------------------------------------------------------
def _chat_logprobs(service: Service, piece: Piece) -> ChoiceLogprobs:
    content = []
    for token_id, logprob in piece.tokens:
        token = service.tokenizer.decode([token_id])
        content.append(TokenLogprob(token=token, logprob=logprob, bytes=list(token.encode())))
    return ChoiceLogprobs(content=content)


def _chat_chunk(service: Service, body: OpenAISampling, reply: Reply, index: int, piece: Piece) -> dict[str, Any]:
    assert isinstance(body, ChatCompletionRequest)
    choice = ChunkChoice(
        index=index,
        delta=Delta(content=piece.text),
        logprobs=_chat_logprobs(service, piece) if body.logprobs else None,
        finish_reason=piece.finish_reason,
        finish_detail=piece.finish_detail,
    )
    return _envelope(ChatCompletionChunk, service, reply, [choice])


def _chat(service: Service, body: OpenAISampling, reply: Reply, job: Job) -> dict[str, Any]:
    assert isinstance(body, ChatCompletionRequest) and job.texts is not None
    choices = []
    for index, text in enumerate(job.texts):
        piece = text.take()
        choices.append(
            ChatChoice(
                index=index,
                message=AssistantMessage(content=piece.text),
                logprobs=_chat_logprobs(service, piece) if body.logprobs else None,
                finish_reason=piece.finish_reason or "length",
                finish_detail=piece.finish_detail,
            )
        )
    return _envelope(ChatCompletion, service, reply, choices, _usage(job))
