"""Training progress for people: one bar with steps, ETA, loss and reward instead of raw log dicts.

transformers' default progress callback writes every log dict under its bar (with TRL's metrics,
hundreds of characters a step), and its ``disable_tqdm`` fallback prints them bare.
``show_progress(trainer)`` replaces both with ``StageProgress``: a tqdm bar on stderr whose postfix
holds the latest loss, reward, accuracy and learning rate. The logs themselves still go where they
always go (``trainer.state.log_history``, saved in ``trainer_state.json``); ``disable_tqdm`` now means
no output at all. Used by ``train/sft.py`` and ``train/rl.py``.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

SHOWN = {"loss": "loss", "reward": "reward", "npr/accuracy": "acc", "learning_rate": "lr"}  # log key -> bar label


class StageProgress(TrainerCallback):
    """A bar over the optimizer steps; ``on_log`` refreshes its postfix with the ``SHOWN`` values."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(total=state.max_steps, desc=self.label, unit="step", dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            shown = {name: f"{logs[key]:.3g}" for key, name in SHOWN.items() if isinstance(logs.get(key), int | float)}
            if shown:
                self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def show_progress(trainer: Any, label: str | None = None) -> None:
    """Give ``trainer`` the ``StageProgress`` bar (labelled ``label``, else its class: ``GRPO``, ``PAPO``)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StageProgress(label or type(trainer).__name__.removesuffix("Trainer")))
