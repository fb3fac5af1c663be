"""What the RL stages (``zero``, ``papo``) share: problems as a prompt dataset, policy set-up, saving.

``run_rl(config_cls, build_trainer, ...)`` reads the problems and the prompt template first (bad
input fails before a model loads), checks that the problems fill at least one step, loads the
policy with float32 master weights (``bf16`` only turns on autocast for compute: an AdamW update at
PAPO's lr 1e-7 is far below bf16's resolution and would leave almost every weight unchanged),
builds the stage's trainer, trains and saves model, tokenizer and trainer state (whose log history
the CLI summarises). A run that took no optimizer step is an input error and saves nothing. Under
``accelerate launch`` every process runs this; the checkpoint is written once, by the main process,
which alone reports (``processes.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..data.io import InputError
from ..data.problems import read_problems
from ..data.prompts import load_template, user_message
from ..engine import SemanticsError
from ..view.semantics import read_semantics, record_semantics
from .config import load_config
from .loading import load_pretrained
from .processes import close_process_group_at_exit, output_lock, quiet_replicas, save_once
from .progress import show_progress

logger = logging.getLogger(__name__)


def problem_dataset(problems: list, template: str):
    """A ``datasets.Dataset`` with TRL's conversational ``prompt`` column and the gold ``answer``."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": user_message(p.problem, template), "answer": p.answer, "problem_id": p.id} for p in problems]
    )


def check_fills_a_step(config: Any, problems: int, source: str) -> None:
    """A step needs ``generation_batch_size / num_generations`` distinct prompts; TRL's sampler drops the rest.

    Raises:
        InputError: fewer problems than one step needs, saying what to change.
    """
    needed = config.generation_batch_size // config.num_generations
    if problems >= needed:
        return
    slices = config.generation_batch_size // config.per_device_train_batch_size  # processes × steps_per_generation
    fits = problems // slices * config.num_generations  # the largest batch these problems fill
    change = (
        f"lower per_device_train_batch_size to {fits}"
        if fits
        else "use fewer processes or a lower gradient_accumulation_steps"
    )
    raise InputError(
        f"{source}: {problems} problems cannot fill one step, which takes {needed} distinct prompts "
        f"(per_device_train_batch_size {config.per_device_train_batch_size} × {slices} / num_generations "
        f"{config.num_generations}); add problems or {change}"
    )


def run_rl(
    config_cls: type,
    build_trainer: Callable[..., Any],
    model: str | Path,
    problems: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    template: str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    **overrides: Any,
) -> Path:
    """Train one RL stage on ``problems`` and save it to ``out``.

    Args:
        config_cls: the stage's config dataclass (``ZeroConfig``, ``PAPOConfig``).
        build_trainer: ``(model=, args=, train_dataset=, processing_class=) -> trainer``.
        template: a prompt template with ``{problem}``; default: the config's ``prompt_file`` or the
            NPR instruction.
        callbacks: more ``TrainerCallback``s for the trainer (trackers, probes).

    Raises:
        InputError: bad config, problems or model, too few problems for one step, no step taken, or
            server rollouts for a model they cannot sample exactly (without ``allow_approximate``), or
            another run writing ``out``.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cfg = load_config(config_cls, config, output_dir=str(out), **overrides)
    quiet_replicas(cfg)
    close_process_group_at_exit()
    with output_lock(out):
        return _fit(cfg, build_trainer, model, problems, out, template, callbacks)


def _fit(
    cfg: Any,
    build_trainer: Callable[..., Any],
    model: str | Path,
    problems: str | Path,
    out: str | Path,
    template: str | None,
    callbacks: Sequence[TrainerCallback],
) -> Path:
    """``run_rl`` once its config is resolved and the output is ours: load, train, save."""
    import torch

    dataset = problem_dataset(read_problems(problems), template or load_template(cfg.prompt_file))
    check_fills_a_step(cfg, len(dataset), str(problems))
    attn = getattr(cfg, "attn_implementation", None) or "sdpa"
    policy, tokenizer = load_pretrained(model, dtype=torch.float32, attn_implementation=attn)
    checkpoint, _ = read_semantics(policy.config)
    if cfg.semantics is None:
        cfg.semantics = checkpoint  # decode and score the model as it was trained
    elif cfg.recorded_semantics != checkpoint:
        logger.warning("%s was trained %s; this run trains %s and records it", model, checkpoint, cfg.semantics)
    record_semantics(policy.config, cfg.recorded_semantics)  # every checkpoint this run writes carries it
    try:
        trainer = build_trainer(model=policy, args=cfg, train_dataset=dataset, processing_class=tokenizer)
    except SemanticsError as error:
        raise InputError(str(error)) from None
    for callback in callbacks:
        trainer.add_callback(callback)
    show_progress(trainer)  # a bar with loss and reward instead of raw log dicts
    trainer.train()
    if trainer.state.global_step == 0:
        raise InputError(
            f"{problems}: training took no optimizer step (max_steps {cfg.max_steps}, num_train_epochs "
            f"{cfg.num_train_epochs}); nothing was saved"
        )
    save_once(trainer, str(out))
    return Path(out)
