"""The engine protocol (docs/design.md §4): what every backend offers the code that samples.

``Engine`` is the type eval, distillation, PAPO and ``npr generate`` hold, whatever the backend (the
torch engine in this process, or a client of SGLang / OpenAI-compatible servers). ``PromptEncoding``
is the part every backend shares: prompts given as text or as token ids, and the chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..view.semantics import Semantics
from .params import Generation, SamplingParams

Prompt = str | Sequence[int]


class Engine(Protocol):
    tokenizer: Any
    semantics: Semantics  # how joins are decoded: the checkpoint's, unless the caller chose

    def format_chat(self, messages: list[dict[str, str]]) -> str: ...

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        """``params.n`` completions per prompt, grouped by prompt; ``seeds``: one per prompt."""
        ...


class PromptEncoding:
    """Prompts as text or ids, and the chat template: the same for every backend (mixin)."""

    tokenizer: Any

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template with the generation prompt: the text a completion continues."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt given as text (no special tokens added) or as ids.

        Raises:
            ValueError: the prompt is empty.
        """
        ids = self.tokenizer.encode(prompt, add_special_tokens=False) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("empty prompt")
        return ids
