"""The OpenAI-compatible wire format: what ``npr serve``'s ``/v1`` reads and writes, and what the
OpenAI client backend (``openai_engine.py``) sends to any such server.

Requests follow OpenAI's ``/v1/completions`` and ``/v1/chat/completions`` fields, plus the extensions
vLLM and SGLang share (``top_k``, ``stop_token_ids``, ``skip_special_tokens``, and vLLM's
``return_tokens_as_token_ids``, which names each log-prob token ``token_id:N`` so a client gets ids
back). Unknown fields are refused (400), as OpenAI does; known ones this server cannot honour are
accepted only at their neutral value (a penalty of 0, ``echo`` false, ...), never ignored.

Log-probabilities: only the sampled token's (the model's own, temperature 1, as the torch engine
records it). Completions accept ``logprobs`` 0 or 1 (clients ask for 1 to get the sampled token's;
``top_logprobs`` is then null: alternatives are not computed); chat accepts ``top_logprobs`` 0.
Tokens the engine inserted (branch and join headers) were not sampled: their log-prob is null.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from .fork_join import LaneAnswer, LaneCall
from .http_client import ServerError

TOKEN_ID_PREFIX = "token_id:"  # vLLM's return_tokens_as_token_ids spelling
NEUTRAL = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "best_of": 1, "echo": False}


# --- requests -------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class OpenAISampling(BaseModel):
    """The fields completions and chat share."""

    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: StrictInt | None = Field(None, ge=1, description="critical-path token budget (parallel decoding)")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: StrictInt = Field(-1, ge=-1, description="-1 or 0: no top-k (vLLM/SGLang extension)")
    n: StrictInt = Field(1, ge=1)
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[StrictInt] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    skip_special_tokens: bool = True
    return_tokens_as_token_ids: bool = False
    user: str | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def refused(self) -> list[str]:
        """The fields set to a value this server cannot honour (the route answers 400 naming them)."""
        names = [
            name
            for name, neutral in NEUTRAL.items()
            if name in type(self).model_fields and getattr(self, name) not in (None, neutral)
        ]
        if self.logit_bias:
            names.append("logit_bias")
        return names + (["stop (an empty string)"] if "" in self.stops else [])


class CompletionRequest(OpenAISampling):
    """``POST /v1/completions``: ``prompt`` is a text, or token ids (what the client backend sends)."""

    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]]
    max_tokens: StrictInt | None = Field(16, ge=1, description="critical-path token budget (OpenAI's default 16)")
    logprobs: StrictInt | None = Field(None, ge=0, le=1, description="0 or 1: the sampled token's log-prob")
    echo: bool = False
    best_of: StrictInt | None = 1
    suffix: None = None

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """One entry per prompt (a batch of texts or of token-id lists)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [p]  # type: ignore[list-item]
        return p  # type: ignore[return-value]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionRequest(OpenAISampling):
    """``POST /v1/chat/completions``: the messages go through the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=0, description="alternatives are not computed")
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def refused(self) -> list[str]:
        names = super().refused()
        if self.response_format not in (None, {"type": "text"}):
            names.append("response_format")
        return names + (["tools"] if self.tools else [])


# --- responses ------------------------------------------------------------------------------------
class ParallelUsage(BaseModel):
    """The parallel figures of all choices: every branch's tokens, and the path a user waits for."""

    total_tokens: int  # all tokens of all branches (= completion_tokens)
    critical_path_tokens: int
    blocks: int
    widths: list[list[int]]  # per choice, the width of each block


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    parallel: ParallelUsage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    finish_detail: str | None = None  # why the engine ended it (e.g. malformed: ...)


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    weight_version: str | None = None  # npr serve: the weights that sampled it (SGLang's meta_info name)


class TokenLogprob(BaseModel):
    token: str
    logprob: float | None
    bytes: list[int]
    top_logprobs: list[Any] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]
    finish_detail: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    weight_version: str | None = None  # as in ``Completion``


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    finish_detail: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    weight_version: str | None = None  # as in ``Completion``


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "npr-toolkit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape (the ``openai`` client turns it into its typed exceptions by status)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": HTTPStatus(status).phrase}}


# --- the client's side ----------------------------------------------------------------------------
def completion_payload(call: LaneCall, model: str) -> dict[str, Any]:
    """``call`` as a ``/v1/completions`` body: token-id prompt, stop ids kept, ids back in the log-probs."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": call.input_ids,
        "max_tokens": call.max_new_tokens,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "top_k": call.top_k or -1,
        "stop_token_ids": call.stop_token_ids,
        "skip_special_tokens": False,
        "logprobs": 1,
        "return_tokens_as_token_ids": True,
    }
    if call.seed is not None:
        body["seed"] = call.seed
    return body


def completion_answer(answer: dict[str, Any]) -> LaneAnswer:
    """(id, logprob) pairs of one ``/v1/completions`` answer (its first choice), and the answer's
    ``weight_version`` (an ``npr serve`` extension; None from servers that do not report one)."""
    try:
        logprobs = answer["choices"][0]["logprobs"]
        pairs = list(zip(logprobs["tokens"], logprobs["token_logprobs"], strict=True))
    except (KeyError, IndexError, TypeError, ValueError):
        raise ServerError("the server's answer has no choices[0].logprobs with tokens and token_logprobs") from None
    tokens = []
    for token, logprob in pairs:
        if not isinstance(token, str) or not token.startswith(TOKEN_ID_PREFIX) or logprob is None:
            raise ServerError(f"log-prob entry ({token!r}, {logprob}) is not a sampled token's id and log-prob")
        tokens.append((int(token[len(TOKEN_ID_PREFIX) :]), float(logprob)))
    version = answer.get("weight_version")
    return LaneAnswer(tokens, None if version is None else str(version))
