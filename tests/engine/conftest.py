"""Fixtures of the engine tests, one copy per test module (module scope: a module may steer or push to its own).

Two kinds of model: ``models`` are random toy models that scripted logits processors steer into the
format (``scripted.py``); ``model`` writes the format by itself (``format_model.py``), what a server
backend needs, and ``model_dir`` / ``reprefill_model_dir`` are it saved as a checkpoint. ``prompts``
are the chat prompts of the requesting module's ``QUESTIONS``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from npr_toolkit.engine import Generation, SamplingParams
from npr_toolkit.toy import build_model, build_tokenizer

from .format_model import format_model, record_reprefill


@pytest.fixture(scope="module")
def tok():
    """The toy tokenizer, the module's own."""
    return build_tokenizer()


@pytest.fixture(scope="module")
def models(tok):
    """Two random toy models, one per attention kernel (different seeds: they must not agree by chance)."""
    return {"sdpa": build_model(tok, seed=0), "eager": build_model(tok, seed=1, attn_implementation="eager")}


@pytest.fixture(scope="module")
def prompts(request, tok) -> list[str]:
    """The requesting module's ``QUESTIONS`` as chat prompts (the text a completion continues)."""
    return [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in request.module.QUESTIONS
    ]


@pytest.fixture(scope="module")
def model(toy_tokenizer):
    """The tiny Qwen3 that writes the format by itself (no logits processor: a server has none)."""
    return format_model(toy_tokenizer)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model, toy_tokenizer) -> str:
    """``model`` saved with its tokenizer; no semantics recorded, so it reads as canonical."""
    return _saved(tmp_path_factory.mktemp("format-model"), model, toy_tokenizer)


@pytest.fixture(scope="module")
def reprefill_model_dir(tmp_path_factory, model, toy_tokenizer) -> str:
    """``model`` saved as trained in the reprefill semantics: what the client backends decode exactly."""
    folder = _saved(tmp_path_factory.mktemp("format-model-reprefill"), model, toy_tokenizer)
    record_reprefill(folder)
    return folder


def _saved(folder: Path, model, tokenizer) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def parallel(engine, prompts) -> list[Generation]:
    """Three fork/join samples of each prompt from the module's ``engine`` (seed 1)."""
    return engine.generate(prompts, SamplingParams(max_new_tokens=160, seed=1, n=3))
