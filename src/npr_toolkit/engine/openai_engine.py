"""The OpenAI-compatible backend: NPR's fork/join decoding over any server's ``/v1/completions``.

For servers that accept token-id prompts and return the sampled tokens' log-probabilities with their
ids (vLLM with ``return_tokens_as_token_ids``, ``npr serve``): fork = one request per branch, join =
a request on the concatenated ids, exactly as the SGLang backend does over ``/generate``; the driver
(``fork_join.ForkJoinEngine``) is the same. That is the ``reprefill`` semantics (docs/design.md §3b):
exact for checkpoints trained with it; a canonical (§3) one is refused unless the approximation is accepted.

Used by ``load_engine(model, backend="openai", server_url="http://host:port/v1")`` (or a list of
URLs: data-parallel rollouts, as in the SGLang backend). The server must
report the model's own log-probabilities (temperature 1), as ``npr serve`` does; a server that
reports them at the sampling temperature gives different numbers whenever temperature != 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..checkpoints import load_tokenizer
from .exactness import client_semantics
from .fork_join import ForkJoinEngine, LaneAnswer, LaneCall, generation_eos
from .http_client import JSONClient, ServerError
from .openai_wire import completion_answer, completion_payload


class OpenAIEngine(ForkJoinEngine):
    """``generate(prompts, params) -> list[Generation]`` over ``/v1/completions`` (see module doc).

    ``model`` is the local checkpoint (its tokenizer encodes the prompts and names the tags);
    ``served_model`` is the name the server knows it by (default: ``model``). A canonical checkpoint
    is refused (``SemanticsError``) unless ``allow_approximate``.
    """

    def __init__(
        self,
        model: str,
        *,
        server_url: str | Sequence[str],
        served_model: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 64,
        timeout: float = 600.0,
        allow_approximate: bool = False,
    ):
        self.semantics = client_semantics(model, engine="openai", allow_approximate=allow_approximate)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.clients = []
        for url in [server_url] if isinstance(server_url, str) else server_url:
            url = url.rstrip("/")
            url = url if url.endswith("/v1") else f"{url}/v1"
            client = JSONClient(url, what="OpenAI-compatible server", timeout=timeout, headers=headers)
            client.get("/models")  # fail early, with a clear message, when nothing answers there
            self.clients.append(client)
        if not self.clients:
            raise ValueError("the openai backend needs at least one server URL")
        self.served_model = served_model or model
        tokenizer = load_tokenizer(model)
        super().__init__(tokenizer, set(generation_eos(model)), max_concurrency, servers=len(self.clients))

    def _complete(self, call: LaneCall, server: int) -> LaneAnswer:
        client = self.clients[server]
        answer = client.post("/completions", completion_payload(call, self.served_model))
        if not isinstance(answer, dict):
            raise ServerError(f"{client.url}/completions answered {type(answer).__name__}, not an object")
        return completion_answer(answer)
