"""SGLang's native ``/generate`` wire format: what ``npr serve`` reads and the SGLang backend writes.

One module for both ends, so the server (``serve/sglang_routes.py``) and the client
(``sglang_engine.py``) cannot drift apart. Field names, defaults and error shapes follow SGLang
0.5.23 (docs/design.md §8):

- ``GenerateRequest``: the top-level fields ``npr serve`` reads or refuses (unknown keys are ignored,
  as SGLang does); ``SamplingSchema``: ``sampling_params``, where unknown keys and floats for ints are
  schema errors;
- ``error_body``: SGLang's three error shapes (schema -> plain string, value -> nested message,
  request -> OpenAI-style object);
- ``payload``/``lane_answer``: one ``LaneCall`` as a ``/generate`` body, and its answer as tokens (with
  the ``weight_version`` they were sampled with).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from .fork_join import LaneAnswer, LaneCall
from .http_client import ServerError

DEFAULT_MAX_NEW_TOKENS = 128  # SGLang's default
SAMPLING_EPS = 1e-6  # SGLang: a temperature below this is greedy


class SGLangError(ServerError):
    """The SGLang server (or ``npr serve``) cannot be reached, or it refused or aborted a request."""


# --- requests -------------------------------------------------------------------------------------
class GenerateRequest(BaseModel):
    """The top-level fields of SGLang's ``GenerateReqInput`` that ``npr serve`` reads or refuses."""

    model_config = ConfigDict(extra="ignore")  # SGLang ignores unknown top-level keys
    text: str | list[str] | None = None
    input_ids: list[StrictInt] | list[list[StrictInt]] | None = None
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    rid: str | list[str] | None = None
    return_logprob: StrictBool | list[StrictBool] | None = None
    logprob_start_len: StrictInt | list[StrictInt] | None = None
    top_logprobs_num: StrictInt | list[StrictInt] | None = None
    token_ids_logprob: list[StrictInt] | list[list[StrictInt]] | None = None
    return_text_in_logprobs: StrictBool = False
    stream: StrictBool = False
    # Known to SGLang, not served here: any non-empty value gets a clear 400 (REFUSED_INPUTS).
    input_embeds: Any = None
    image_data: Any = None
    video_data: Any = None
    audio_data: Any = None
    lora_path: Any = None
    custom_logit_processor: Any = None
    session_params: Any = None
    return_hidden_states: Any = None


REFUSED_INPUTS = ("input_embeds", "image_data", "video_data", "audio_data", "lora_path")
REFUSED_INPUTS += ("custom_logit_processor", "session_params", "return_hidden_states")


class SamplingSchema(BaseModel):
    """SGLang 0.5.23's ``sampling_params`` schema: unknown keys and floats for ints are rejected."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: StrictInt | None = DEFAULT_MAX_NEW_TOKENS  # explicit null: up to the context length
    stop: str | list[str] | None = None
    stop_token_ids: list[StrictInt] | None = None
    stop_regex: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: StrictInt | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    min_new_tokens: StrictInt | None = None
    n: StrictInt | None = None
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    ignore_eos: StrictBool | None = None
    skip_special_tokens: StrictBool | None = None
    spaces_between_special_tokens: StrictBool | None = None
    no_stop_trim: StrictBool | None = None
    custom_params: dict[str, Any] | None = None
    stream_interval: StrictInt | None = None
    logit_bias: dict[str, float] | None = None
    sampling_seed: StrictInt | None = None
    beam_width: StrictInt | None = None
    watermark: Any = None
    choice: Any = None


# What the engine honours; any other sampling key must keep a neutral value (or get a 400).
SERVED_SAMPLING = frozenset(
    {"max_new_tokens", "stop_token_ids", "temperature", "top_p", "top_k", "n", "sampling_seed"}
    | {"skip_special_tokens", "no_stop_trim", "spaces_between_special_tokens", "stream_interval"}
)
NEUTRAL_SAMPLING = {"repetition_penalty": 1.0, "beam_width": 1}


class SchemaError(ValueError):
    """A ``sampling_params`` schema violation (SGLang answers these as ``{"error": "<str>"}``)."""


def _schema_message(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        known = ", ".join(f"`{key}`" for key in SamplingSchema.model_fields)
        return f"unknown field `{name}`, expected one of {known}"
    return f"invalid value for `{name}`: {first['msg']} (got {first.get('input')!r})"


def parse_sampling(raw: dict[str, Any]) -> SamplingSchema:
    """Schema check, then SGLang's value checks (``SamplingParams.verify``) and our refusals.

    Raises:
        SchemaError: unknown key or wrong type.
        ValueError: a value out of range, or a feature this server does not implement.
    """
    try:
        sp = SamplingSchema.model_validate(raw)
    except ValidationError as error:
        raise SchemaError(_schema_message(error)) from None
    temperature = 1.0 if sp.temperature is None else sp.temperature
    top_p = 1.0 if sp.top_p is None else sp.top_p
    top_k = -1 if sp.top_k is None else sp.top_k
    if not temperature >= 0.0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a non-negative finite number, got {temperature}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k < 1 and top_k != -1:
        raise ValueError(f"top_k must be -1 (disable) or at least 1, got {top_k}.")
    if sp.max_new_tokens is not None and sp.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be at least 0, got {sp.max_new_tokens}.")
    if sp.n is not None and sp.n < 1:
        raise ValueError(f"n must be at least 1, got {sp.n}.")
    refused = [
        name
        for name, value in sp
        if name not in SERVED_SAMPLING and value not in (None, False, 0, "", [], {}, NEUTRAL_SAMPLING.get(name))
    ]
    if refused:
        raise ValueError(f"npr serve does not support the sampling parameter(s): {', '.join(refused)}.")
    return sp


# --- errors ---------------------------------------------------------------------------------------
def error_body(kind: Literal["schema", "value", "request"], status: int, message: str) -> dict[str, Any]:
    """SGLang's error shapes: ``schema`` -> plain string, ``value`` -> nested message, else OpenAI-style."""
    if kind == "schema":
        return {"error": message}
    if kind == "value":
        return {"error": {"message": message}}
    phrase = HTTPStatus(status).phrase
    return {"object": "error", "message": message, "type": phrase, "param": None, "code": status}


# --- the client's side ----------------------------------------------------------------------------
def payload(call: LaneCall) -> dict[str, Any]:
    """``call`` as a ``/generate`` body (token ids in, log-probabilities out, stop ids kept)."""
    sampling: dict[str, Any] = {
        "max_new_tokens": call.max_new_tokens,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "top_k": call.top_k or -1,
        "stop_token_ids": call.stop_token_ids,
        "skip_special_tokens": False,
    }
    if call.seed is not None:
        sampling["sampling_seed"] = call.seed
    return {"input_ids": call.input_ids, "sampling_params": sampling, "return_logprob": True}


def lane_answer(output: dict[str, Any]) -> LaneAnswer:
    """The (id, logprob) pairs and ``meta_info.weight_version`` of one ``/generate`` answer; an abort
    becomes ``SGLangError``."""
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
    tokens = [(token_id, float(entry[0])) for entry, token_id in zip(logprobs, ids, strict=True)]
    version = meta.get("weight_version")
    return LaneAnswer(tokens, None if version is None else str(version))
