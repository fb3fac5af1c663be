"""Train one optimizer step of SFT or PAPO through the library, and dump what that step saw.

Run by ``test_multiprocess.py`` as one plain process and under ``accelerate launch --num_processes 2``
with half the per-device batch: the two dumps must agree, since the global batch is the same.
From the main process it writes, into ``--dump``:

- ``grads.pt``: every parameter's gradient as the optimizer receives it (after DDP's average);
- ``first_step.json``: the step's logged loss and, for PAPO, the whole generation batch as TRL
  gathers it: rewards (None for filtered rollouts), advantages and completion ids.

Usage: ``python multiprocess_driver.py sft|papo --model DIR --data FILE --out DIR --dump DIR --batch N``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import TrainerCallback

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


class FirstStep(TrainerCallback):
    """Dumps the first optimizer step's gradients and logged loss (main process)."""

    def __init__(self, dump: Path, batch: dict[str, Any]):
        self.dump = dump
        self.batch = batch  # filled by ProbedPAPO for PAPO

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and state.is_world_process_zero:
            grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
            torch.save(grads, self.dump / "grads.pt")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and "loss" in (logs or {}) and state.global_step == 1:
            record = {"loss": logs["loss"], **self.batch}
            (self.dump / "first_step.json").write_text(json.dumps(record))


def papo_trainer(batch: dict[str, Any]):
    """PAPOTrainer with a reward that splits every group, probed for the first generation batch."""
    from npr_toolkit.train.papo import PAPOTrainer

    def parity_reward(completions, npr_valid, **kwargs):
        texts = kwargs["npr_text"]
        return [(1.0 if len(t) % 2 else -1.0) if ok else None for t, ok in zip(texts, npr_valid, strict=True)]

    class ProbedPAPO(PAPOTrainer):
        def _calculate_rewards(self, *args, **kwargs):
            rewards = super()._calculate_rewards(*args, **kwargs)  # already gathered over the processes
            if "rewards" not in batch:
                batch["rewards"] = [None if math.isnan(r) else r for r in rewards[:, 0].tolist()]
            return rewards

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if "advantages" not in batch:
                batch["advantages"] = self.accelerator.gather(output["advantages"]).tolist()
                rows = zip(output["completion_ids"].tolist(), output["completion_mask"].tolist(), strict=True)
                batch["completions"] = gather_object(
                    [[t for t, m in zip(ids, mask, strict=True) if m] for ids, mask in rows]
                )
            return output

    def build(**parts: Any) -> ProbedPAPO:
        return ProbedPAPO(reward_funcs=[parity_reward], **parts)

    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sft", "papo"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dump", required=True, type=Path)
    parser.add_argument("--batch", required=True, type=int, help="per_device_train_batch_size")
    options = parser.parse_args()
    options.dump.mkdir(parents=True, exist_ok=True)
    batch: dict[str, Any] = {}
    common = {"max_steps": 1, "per_device_train_batch_size": options.batch, "save_strategy": "no", "seed": 0}
    common |= {"use_cpu": True, "disable_tqdm": True, "logging_steps": 1}
    callbacks = [FirstStep(options.dump, batch)]
    if options.stage == "sft":
        from npr_toolkit.train.sft import run_sft

        run_sft(options.model, options.data, options.out, callbacks=callbacks, learning_rate=1e-3, **common)
    else:
        from npr_toolkit.toy.task import PROMPT_TEMPLATE
        from npr_toolkit.train.papo_config import PAPOConfig
        from npr_toolkit.train.rl import run_rl

        papo = {"num_generations": 4, "max_completion_length": 160, "learning_rate": 3e-4}
        run_rl(
            PAPOConfig, papo_trainer(batch), options.model, options.data, options.out, template=PROMPT_TEMPLATE,
            callbacks=callbacks, **common, **papo,
        )  # fmt: skip


if __name__ == "__main__":
    main()
