"""NPR-Zero (stage 1): DAPO-style GRPO with a format-gated reward teaches a model to emit the format at all.

Run: ``npr train zero --model M --problems P.jsonl --out DIR [--config configs/zero.yaml]``.

TRL's ``GRPOTrainer`` with ordinary sequential sampling (the model cannot decode in parallel yet):
TRL's own generation, or SGLang / OpenAI-compatible servers that get the new weights before every
rollout (``rollout_engine``, ``rollouts.ServerRollouts``; plain text has no join, so a server samples
it exactly whatever the semantics). DAPO's settings (token-level loss, asymmetric clip 0.2/0.28, no
KL, overlong completions masked), the paper's format-discovery reward (``rewards.py``: correctness
counts only once the format check passes) and, as an option, DAPO's dynamic sampling: groups whose
rewards are all equal carry no advantage, so they are dropped and the batch is refilled with groups
of fresh prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from ..engine import SamplingParams
from .config import DeviceFields, SemanticsFields, check_whole_groups, first_set, resolve_device_defaults
from .rl import run_rl
from .rollouts import RolloutFields, ServerRollouts, rollout_seeds


@dataclass
class ZeroConfig(RolloutFields, SemanticsFields, DeviceFields, GRPOConfig):
    loss_type: str = field(default="dapo", metadata={"help": "DAPO: token-level policy-gradient loss."})
    epsilon: float = field(default=0.2, metadata={"help": "Lower clip (DAPO)."})
    epsilon_high: float = field(default=0.28, metadata={"help": "Clip-higher (DAPO)."})
    beta: float = field(default=0.0, metadata={"help": "No KL term (DAPO)."})
    mask_truncated_completions: bool = field(default=True, metadata={"help": "DAPO overlong filtering."})
    num_generations: int = field(default=8, metadata={"help": "Samples per prompt."})
    max_completion_length: int = field(default=4096, metadata={"help": "Tokens per sampled completion."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Learning rate."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Trackers (none by default)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every step."})
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO dynamic sampling: drop groups whose rewards are all equal (zero advantage) and refill the "
            "batch with groups of fresh prompts."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=8,
        metadata={
            "help": "Generation rounds per step at most; if the batch is still short, the remaining slots keep "
            "dropped groups (no gradient)."
        },
    )
    prompt_file: str | None = field(default=None, metadata={"help": "Prompt template with {problem}."})

    def __post_init__(self) -> None:
        resolve_device_defaults(self)
        super().__post_init__()
        # Unset: the checkpoint's (Zero samples plain text; the record is for later stages).
        self.resolve_semantics(None)
        self.check_rollout_fields()
        unsupported = first_set(self, ("min_p", "repetition_penalty", "generation_kwargs", "use_vllm"))
        if self.on_servers and unsupported:
            raise ValueError(
                f"{unsupported}: rollout_engine {self.rollout_engine} samples with temperature, top_p and top_k "
                f"only; unset {unsupported}"
            )
        if self.dynamic_sampling:
            check_whole_groups(self)  # groups are dropped whole on each process
            if self.scale_rewards == "batch":
                raise ValueError(
                    "dynamic_sampling with scale_rewards batch would divide each refill round by its own std; "
                    "set scale_rewards to group or none"
                )
            if self.dynamic_sampling_max_rounds < 1:
                raise ValueError("dynamic_sampling_max_rounds must be at least 1")


class ZeroTrainer(GRPOTrainer):
    """``GRPOTrainer`` with rollouts on servers (``ZeroConfig.rollout_engine``) and DAPO's dynamic sampling
    (``ZeroConfig.dynamic_sampling``) as options."""

    def __init__(self, model, args: ZeroConfig, **kwargs: Any):
        self.server_rollouts = ServerRollouts(args, model.name_or_path) if args.on_servers else None
        if self.server_rollouts is not None:
            kwargs["rollout_func"] = self._server_rollout
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.server_rollouts]
        super().__init__(model=model, args=args, **kwargs)

    def _server_rollout(self, prompts: list, trainer: GRPOTrainer) -> dict[str, Any]:
        """One plain-text sample per entry, on the servers, seeded by the entry's global position."""
        args: ZeroConfig = self.args
        texts = [
            p
            if isinstance(p, str)
            else self.processing_class.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        params = SamplingParams(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or 0,
            parallel=False,
        )
        seeds = rollout_seeds(
            args.seed, self.state.global_step, self.accelerator.process_index * len(texts), len(texts)
        )
        gens = self.server_rollouts.generate(self, texts, params, seeds)
        return {
            "prompt_ids": [g.prompt_ids for g in gens],
            "completion_ids": [g.completion_ids for g in gens],
            "logprobs": [g.logprobs for g in gens],
        }

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        output = super()._generate_and_score_completions(inputs)
        if not (self.args.dynamic_sampling and self.model.training):
            return output
        return self._refill(inputs, output)

    def _refill(self, inputs: list[dict], output: dict) -> dict:
        """Keep the groups with a non-zero advantage; sample fresh prompts until the batch is full again.

        Every process runs the same number of rounds (the rewards are gathered across processes), so
        the loop stops when all of them are full or after ``dynamic_sampling_max_rounds``.
        """
        size = self.num_generations
        wanted = len(inputs) // size
        kept: list[tuple[dict, slice]] = []
        dropped: list[tuple[dict, slice]] = []
        rounds = 0
        while True:
            rounds += 1
            for g, informative in enumerate(output["advantages"].view(-1, size).abs().amax(1) > 1e-6):
                (kept if informative else dropped).append((output, slice(g * size, (g + 1) * size)))
            full = torch.tensor([float(len(kept) >= wanted)], device=self.accelerator.device)
            if bool(self.accelerator.gather(full).min() > 0) or rounds >= self.args.dynamic_sampling_max_rounds:
                break
            output = super()._generate_and_score_completions(self._fresh_inputs(wanted, rounds))
        self._metrics["train"]["dynamic_sampling/rounds"].append(float(rounds))
        self._metrics["train"]["dynamic_sampling/filled"].append(min(len(kept), wanted) / wanted)
        return self._assemble((kept + dropped)[:wanted])

    def _fresh_inputs(self, groups: int, round_index: int) -> list[dict]:
        """``groups`` random problems, each repeated ``num_generations`` times (distinct per process and round)."""
        rng = random.Random(f"{self.args.seed}/{self.state.global_step}/{self.accelerator.process_index}/{round_index}")
        picks = rng.sample(range(len(self.train_dataset)), min(groups, len(self.train_dataset)))
        picks += rng.choices(range(len(self.train_dataset)), k=groups - len(picks))
        return [dict(self.train_dataset[i]) for i in picks for _ in range(self.num_generations)]

    def _assemble(self, groups: list[tuple[dict, slice]]) -> dict:
        """One batch from rows of several generation outputs: re-pad, concatenate, recount the loss tokens."""
        pad_id = self.processing_class.pad_token_id or 0
        batch: dict[str, Any] = {}
        for key, value in groups[0][0].items():
            if key == "num_items_in_batch":
                continue
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                raise ValueError(f"dynamic sampling cannot merge the field {key!r} of a generation batch")
            parts = [out[key][rows] for out, rows in groups]
            if value.dim() == 1:
                batch[key] = torch.cat(parts)
                continue
            width = max(p.size(1) for p in parts)
            fill = pad_id if key.endswith("_ids") else 0
            left = key.startswith("prompt_")  # prompts are left-padded, completions right-padded
            batch[key] = torch.cat(
                [
                    torch.nn.functional.pad(p, (width - p.size(1), 0) if left else (0, width - p.size(1)), value=fill)
                    for p in parts
                ]
            )
        mask = batch["completion_mask"] * batch["tool_mask"] if "tool_mask" in batch else batch["completion_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
        return batch


def run_zero(model: str | Path, problems: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Train NPR-Zero on ``problems`` and save the model + tokenizer to ``out`` (see ``rl.run_rl``)."""
    from .rewards import correctness_reward, format_reward

    def trainer(**parts: Any) -> ZeroTrainer:
        return ZeroTrainer(reward_funcs=[format_reward, correctness_reward], **parts)

    return run_rl(ZeroConfig, trainer, model, problems, out, **kwargs)
