"""How on-policy PAPO's steps are: ``npr/onpolicy_max_abs_diff`` per step, float32 vs bf16 autocast vs a stale step.

Run: ``python bench/rl_onpolicy.py [--steps 3] [--lr 3e-4]`` (CPU, about 2 minutes on 2 cores).

The toy model is first taught the format (100 SFT steps on reference trajectories) so that PAPO's
rollouts pass the filter; the reward splits every group (text-length parity) so every step moves
the weights. Three runs from the same start, same seeds:
- float32: the configuration PAPOConfig enforces;
- bf16 autocast: the same, with ``bf16=True`` (master weights stay float32);
- stale: ``steps_per_generation=2`` forced past PAPOConfig's check, so even steps train on the
  previous step's rollouts (what TRL would do if the check were not there).
It prints the logged metric per step: the largest |engine log-prob - trainer log-prob| over trained tokens.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from npr_toolkit.toy import save_format_model
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems
from npr_toolkit.train.papo import ONPOLICY_METRIC, PAPOTrainer
from npr_toolkit.train.papo_config import PAPOConfig


def parity_reward(completions, npr_valid, npr_text, **kwargs):
    return [(1.0 if len(t) % 2 else -1.0) if ok else None for t, ok in zip(npr_text, npr_valid, strict=True)]


def run(model_dir: Path, out: Path, steps: int, lr: float, *, bf16: bool = False, stale: bool = False) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [
        {"prompt": [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=p["problem"])}], "answer": p["answer"]}
        for p in make_problems(8 * steps, seed=7)
    ]
    config = PAPOConfig(
        output_dir=str(out), use_cpu=True, bf16=bf16, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=160, learning_rate=lr, lr_scheduler_type="constant", max_steps=steps,
        save_strategy="no", seed=0, disable_tqdm=True, logging_steps=1,
    )  # fmt: skip
    trainer = PAPOTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        reward_funcs=[parity_reward],
    )  # fmt: skip
    if stale:
        trainer.args.steps_per_generation = 2
        trainer.args.generation_batch_size = 16
    trainer.train()
    return [entry[ONPOLICY_METRIC] for entry in trainer.state.log_history if ONPOLICY_METRIC in entry]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_format_model(Path(tmp) / "format-model")
        results = {
            "float32 (enforced)": run(model_dir, Path(tmp) / "a", args.steps, args.lr),
            "bf16 autocast, float32 weights": run(model_dir, Path(tmp) / "b", args.steps, args.lr, bf16=True),
            "stale: steps_per_generation 2 forced": run(model_dir, Path(tmp) / "c", args.steps, args.lr, stale=True),
        }
    print(f"| run | {' | '.join(f'step {i + 1}' for i in range(args.steps))} |")
    print(f"|---|{'---:|' * args.steps}")
    for name, gaps in results.items():
        print(f"| {name} | {' | '.join(f'{g:.2e}' for g in gaps)} |")


if __name__ == "__main__":
    main()
