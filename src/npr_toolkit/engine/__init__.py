"""Engines (docs/design.md §4): one protocol, several backends.

``torch`` is the exact reference for both semantics (KV fork/join for ``canonical``, a re-read of the
branches at each join for ``reprefill``); ``sglang`` drives an SGLang server (or ``npr serve``) over
its native ``/generate`` API, ``openai`` any OpenAI-compatible server's ``/v1/completions`` (vLLM,
``npr serve``); both re-prefill at joins, so they are exact for ``reprefill`` checkpoints only
(``exactness.py``).
"""

from collections.abc import Sequence

from .exactness import SemanticsError, SemanticsWarning, checkpoint_semantics
from .params import FinishReason, Generation, GenerationStats, SamplingParams
from .protocol import Engine
from .torch_engine import TorchEngine

__all__ = [
    "Engine",
    "FinishReason",
    "Generation",
    "GenerationStats",
    "SamplingParams",
    "SemanticsError",
    "SemanticsWarning",
    "TorchEngine",
    "load_engine",
]


def load_engine(
    model: str,
    *,
    backend: str = "torch",
    server_url: str | Sequence[str] | None = None,
    device: str | None = None,
    allow_approximate: bool = False,
) -> Engine:
    """An engine for ``model`` (hub id or directory): ``torch`` in-process, ``sglang`` or ``openai`` over HTTP.

    ``server_url`` may list several servers of the same model (data-parallel rollouts): the samples
    are spread over them, each sample's requests kept on one server (``fork_join``).

    The engine decodes the semantics the checkpoint records (``npr_semantics`` in its config.json;
    canonical, with a ``SemanticsWarning``, when it records none). A backend that cannot decode it
    exactly raises ``SemanticsError`` unless ``allow_approximate`` accepts the approximation.

    Start a real SGLang server with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` when its log-probabilities
    feed training or evaluation: by default SGLang reports them at the sampling temperature, while
    this project's engines report the model's own (temperature 1).
    """
    if backend == "torch":
        engine = TorchEngine.from_pretrained(model, device=device)  # decodes what engine.model.config records
        checkpoint_semantics(
            engine.model.config, where=model, engine="torch", exact=engine.EXACT, allow_approximate=allow_approximate
        )
        return engine
    if backend == "sglang":
        from .sglang_engine import SGLangEngine

        return SGLangEngine(model, server_url=server_url, allow_approximate=allow_approximate)
    if backend == "openai":
        from .openai_engine import OpenAIEngine

        if server_url is None:
            raise ValueError("the openai backend needs --server URL (an OpenAI-compatible server's base URL)")
        return OpenAIEngine(model, server_url=server_url, allow_approximate=allow_approximate)
    raise ValueError(f"unknown engine backend {backend!r}; choose torch, sglang or openai")
