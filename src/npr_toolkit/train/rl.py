"""What the RL stages (``zero``, ``papo``) share: problems as a prompt dataset, policy set-up, saving.

``run_rl(config_cls, build_trainer, ...)`` reads the problems and the prompt template first (bad
input fails before a model loads), loads the policy with the tag tokens, builds the stage's trainer,
trains and saves model, tokenizer and trainer state (whose log history the CLI summarises).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.problems import read_problems
from ..data.prompts import load_template, user_message
from .config import load_config, on_gpu
from .loading import load_pretrained
from .progress import show_progress


def problem_dataset(problems: list, template: str):
    """A ``datasets.Dataset`` with TRL's conversational ``prompt`` column and the gold ``answer``."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": user_message(p.problem, template), "answer": p.answer, "problem_id": p.id} for p in problems]
    )


def run_rl(
    config_cls: type,
    build_trainer: Callable[..., Any],
    model: str | Path,
    problems: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    template: str | None = None,
    **overrides: Any,
) -> Path:
    """Train one RL stage on ``problems`` and save it to ``out``.

    Args:
        config_cls: the stage's config dataclass (``ZeroConfig``, ``PAPOConfig``).
        build_trainer: ``(model=, args=, train_dataset=, processing_class=) -> trainer``.
        template: a prompt template with ``{problem}``; default: the config's ``prompt_file`` or the
            NPR instruction.
    """
    import torch

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cfg = load_config(config_cls, config, output_dir=str(out), **overrides)
    dataset = problem_dataset(read_problems(problems), template or load_template(cfg.prompt_file))
    dtype = torch.bfloat16 if on_gpu(cfg.use_cpu) else torch.float32
    policy, tokenizer = load_pretrained(model, dtype=dtype)
    trainer = build_trainer(model=policy, args=cfg, train_dataset=dataset, processing_class=tokenizer)
    show_progress(trainer)  # a bar with loss and reward instead of raw log dicts
    trainer.train()
    trainer.save_model(str(out))
    trainer.save_state()
    tokenizer.save_pretrained(str(out))
    return Path(out)
