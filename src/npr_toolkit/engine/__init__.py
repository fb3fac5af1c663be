"""Engines (DESIGN §4): one protocol, several backends.

``torch`` is the exact reference (KV fork/join semantics of the training view); ``sglang`` drives an
SGLang server (or ``npr serve``) over its native ``/generate`` API, ``openai`` any OpenAI-compatible
server's ``/v1/completions`` (vLLM, ``npr serve``); both re-prefill at joins (DESIGN §3b).
"""

from collections.abc import Sequence

from .params import FinishReason, Generation, GenerationStats, SamplingParams
from .torch_engine import TorchEngine

__all__ = ["FinishReason", "Generation", "GenerationStats", "SamplingParams", "TorchEngine", "load_engine"]


def load_engine(
    model: str,
    *,
    backend: str = "torch",
    server_url: str | Sequence[str] | None = None,
    device: str | None = None,
):
    """An engine for ``model`` (hub id or directory): ``torch`` in-process, ``sglang`` or ``openai`` over HTTP.

    ``server_url`` may list several servers of the same model (data-parallel rollouts): the samples
    are spread over them, each sample's requests kept on one server (``fork_join``).

    Start a real SGLang server with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` when its log-probabilities
    feed training or evaluation: by default SGLang reports them at the sampling temperature, while
    this project's engines report the model's own (temperature 1).
    """
    if backend == "torch":
        return TorchEngine.from_pretrained(model, device=device)
    if backend == "sglang":
        from .sglang_engine import SGLangEngine

        return SGLangEngine(model, server_url=server_url)
    if backend == "openai":
        from .openai_engine import OpenAIEngine

        if server_url is None:
            raise ValueError("the openai backend needs --server URL (an OpenAI-compatible server's base URL)")
        return OpenAIEngine(model, server_url=server_url)
    raise ValueError(f"unknown engine backend {backend!r}; choose torch, sglang or openai")
