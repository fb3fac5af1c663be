"""PAPO (Parallel-Aware Policy Optimisation) as a small subclass of TRL's ``GRPOTrainer``.

Run: ``npr train papo --model M --problems P.jsonl --out DIR [--config configs/papo.yaml]``.

What changes from GRPO, and where:
- rollouts come from the project's parallel engine (``rollout_func``), so the policy samples in the
  parallel form it is evaluated in: the torch engine in this process, or SGLang / OpenAI-compatible
  servers that get the new weights before every rollout (``rollouts.ServerRollouts``; exact only for
  the reprefill semantics, so a canonical run is refused there unless ``allow_approximate``); the
  engine's inserted headers carry no loss (``env_mask``); each process samples its own whole groups,
  each prompt seeded by its global position in the batch, so the samples do not depend on the number
  of processes (``split_groups``, ``rollouts.rollout_seeds``);
- the structural filter runs on every rollout and demands at least one block and a final
  ``\\boxed{}``; truncated rollouts are filtered too (``drop_truncated``). A filtered rollout's
  reward is ``None``: it is left out of the group mean and the batch std, its advantage is 0 and
  all of its tokens are masked, so it contributes nothing to the gradient;
- log π is recomputed through the training view (``logprobs.py``), so sibling branches are scored
  exactly as they were sampled (docs/design.md §3), with a BlockMask under FlexAttention and in TRL's chunks;
- the loss is TRL's, configured by ``PAPOConfig`` to be -A·log π averaged over tokens with batch-level
  advantage normalisation and no ratio, clipping or KL; ``PAPOConfig`` rejects off-policy settings,
  and every step logs ``npr/onpolicy_max_abs_diff``, the largest |rollout log-prob - trainer
  log-prob| over trained tokens, so the guarantee can be watched.
Everything else (logging, checkpointing, accelerate, reward functions) is TRL's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from ..engine import Generation, SamplingParams, TorchEngine
from ..engine.exactness import CLIENT_EXACT, checkpoint_semantics
from ..format import StructuralFilter, Verdict, get_profile
from ..view.semantics import SEMANTICS_KEY, read_semantics
from .logprobs import completion_logprobs, score_rows
from .papo_config import PAPOConfig
from .rewards import papo_reward
from .rollouts import ServerRollouts, rollout_seeds

ONPOLICY_METRIC = "npr/onpolicy_max_abs_diff"


def split_groups(prompts: list, num_generations: int) -> list:
    """The distinct prompts of one process's entries, which must come as whole runs of ``num_generations``.

    Raises:
        ValueError: the entries do not form whole groups (a group split across processes).
    """
    if len(prompts) % num_generations:
        raise ValueError(
            f"this process holds {len(prompts)} rollout entries, not whole groups of num_generations "
            f"({num_generations}); make per_device_train_batch_size × steps_per_generation a multiple of it"
        )
    heads = prompts[::num_generations]
    for g, head in enumerate(heads):
        if any(p != head for p in prompts[g * num_generations : (g + 1) * num_generations]):
            raise ValueError(f"rollout entries {g * num_generations}.. are not {num_generations} copies of one prompt")
    return heads


def papo_filter(profile: str) -> StructuralFilter:
    """The named profile, plus what the engine's rollouts must show: a block and a final ``\\boxed{}``."""
    return StructuralFilter(get_profile(profile).model_copy(update={"require_block": True, "require_answer": True}))


def passes(generation: Generation, verdict: Verdict, drop_truncated: bool) -> bool:
    """Whether a rollout is trained on: it passed the filter, ended cleanly, and (by default) was not cut short."""
    if generation.finish_reason == "malformed" or (drop_truncated and generation.finish_reason == "length"):
        return False
    return verdict.ok


def _not_unscored_warning(record: logging.LogRecord) -> bool:
    """TRL warns, with the whole row, whenever a rollout has no reward: for PAPO that is every filtered one."""
    return "All reward functions returned None" not in record.getMessage()


@contextmanager
def attention_kernel(model, name: str) -> Iterator[None]:
    """Run ``model`` with another attention kernel inside the block (the engine decodes with dense masks)."""
    before = model.config._attn_implementation
    if before != name:
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        if before != name:
            model.set_attn_implementation(before)


class PAPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollouts come from the parallel engine and whose log π uses the tree view."""

    def __init__(self, model, args: PAPOConfig, train_dataset, processing_class, reward_funcs=None, **kwargs: Any):
        if args.semantics is None:  # built directly (``run_papo`` resolves it): the checkpoint's
            args.semantics = read_semantics(model.config)[0]
        self._structural_filter = papo_filter(args.filter_profile)
        logging.getLogger("trl.trainer.grpo_trainer").addFilter(_not_unscored_warning)  # added once
        self._policy_logps: torch.Tensor | None = None
        if reward_funcs is None:
            reward = functools.partial(papo_reward, grade_timeout=args.grade_timeout)
            reward_funcs = [functools.update_wrapper(reward, papo_reward)]
        self.server_rollouts: ServerRollouts | None = None
        if args.on_servers:
            checkpoint_semantics(  # a server re-reads at joins: exact for the reprefill semantics only
                {SEMANTICS_KEY: args.recorded_semantics},
                where=model.name_or_path or "the policy",
                engine=args.rollout_engine,
                exact=CLIENT_EXACT,
                allow_approximate=args.allow_approximate,
            )
            self.server_rollouts = ServerRollouts(args, model.name_or_path)
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.server_rollouts]
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            rollout_func=self._rollout,
            **kwargs,
        )
        self._engine = None
        if not args.on_servers:  # decodes in the semantics log π is recomputed in (npr-compat: as canonical)
            self._engine = TorchEngine(self.model, processing_class, semantics=args.recorded_semantics)

    # --- rollouts -----------------------------------------------------------------------------
    def _prompt_text(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.processing_class.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def _rollout(self, prompts: list, trainer: GRPOTrainer) -> dict[str, Any]:
        """Sample one completion per entry (entries come as whole groups of ``num_generations``)."""
        args: PAPOConfig = self.args
        unique = [self._prompt_text(p) for p in split_groups(prompts, args.num_generations)]
        params = SamplingParams(
            max_new_tokens=args.max_completion_length,
            temperature=1.0,
            n=args.num_generations,
            parallel=True,
            max_width=args.max_width,
            max_depth=args.max_depth,
            max_branch_tokens=args.max_branch_tokens,
        )
        first = self.accelerator.process_index * len(unique)  # every process holds as many prompts
        seeds = rollout_seeds(args.seed, self.state.global_step, first, len(unique))
        if self.server_rollouts is not None:
            gens = self.server_rollouts.generate(self, unique, params, seeds)
        else:
            policy = self.accelerator.unwrap_model(self.model)
            self._engine.model = policy
            with attention_kernel(policy, "sdpa"):
                gens = self._engine.generate(unique, params, seeds=seeds)
        kept = self._keep(gens)
        return {
            "prompt_ids": [g.prompt_ids for g in gens],
            "completion_ids": [g.completion_ids for g in gens],
            "logprobs": [g.logprobs for g in gens],  # None (NaN in TRL) where the engine inserted the token
            # Inserted headers are never targets; filtered rollouts carry no loss at all.
            "env_mask": [[int(ok and not ins) for ins in g.inserted] for g, ok in zip(gens, kept, strict=True)],
            "npr_text": [g.text for g in gens],
            "npr_valid": kept,
        }

    def _keep(self, gens: list[Generation]) -> list[bool]:
        """Which rollouts pass PAPO's filter; logs the rollout statistics of the step."""
        verdicts = [self._structural_filter(g.text) for g in gens]
        kept = [passes(g, v, self.args.drop_truncated) for g, v in zip(gens, verdicts, strict=True)]
        trees = [v.stats for v in verdicts if v.stats is not None]
        widths = [w for t in trees for w in t.widths]
        for name, value in {
            "npr/format_valid_rate": sum(kept) / len(gens),
            "npr/filtered": float(len(gens) - sum(kept)),
            "npr/truncated": float(sum(g.finish_reason == "length" for g in gens)),
            "npr/parallel_rate": sum(t.parallel for t in trees) / len(gens),
            "npr/mean_width": sum(widths) / len(widths) if widths else 0.0,
            "npr/total_tokens": sum(g.stats.total_tokens for g in gens) / len(gens),
            "npr/critical_path_tokens": sum(g.stats.critical_path_tokens for g in gens) / len(gens),
        }.items():
            self._log_metric(name, value)  # averaged across processes by TRL
        return kept

    # --- log π through the tree view ----------------------------------------------------------
    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        """Per completion token: log π(token | its own branch path), from the training view (``logprobs.py``)."""
        rows = score_rows(input_ids, attention_mask, logits_to_keep, self.processing_class, self.args.semantics)
        logps, entropies = completion_logprobs(
            model,
            rows,
            logits_to_keep,
            pad_id=self.processing_class.pad_token_id or 0,
            attn_implementation=self.accelerator.unwrap_model(model).config._attn_implementation,
            dense_max_length=self.args.dense_mask_max_length,
            batch_size=batch_size,
            compute_entropy=compute_entropy,
            autocast=self.accelerator.autocast,
        )
        if compute_entropy:  # only the policy pass of ``_compute_loss`` asks for entropies
            self._policy_logps = logps.detach()
        return logps, entropies, None

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self._log_onpolicy_gap(inputs)
        return loss

    def _log_onpolicy_gap(self, inputs: dict) -> None:
        """Log the largest |rollout log-prob - trainer log-prob| over trained tokens (max over the logging window)."""
        sampled, policy, self._policy_logps = inputs.get("sampling_per_token_logps"), self._policy_logps, None
        if sampled is None or policy is None:
            return
        trained = inputs["completion_mask"].bool()
        if "tool_mask" in inputs:
            trained &= inputs["tool_mask"].bool()
        gap = torch.where(trained, (policy - sampled).abs(), torch.zeros_like(policy))
        gap = self.accelerator.gather(gap.amax().reshape(1)).max().item()
        mode = "train" if self.model.training else "eval"
        window = self._metrics[mode][ONPOLICY_METRIC]
        self._metrics[mode][ONPOLICY_METRIC] = [max([*window, gap])]


def run_papo(model: str | Path, problems: str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Train with PAPO on ``problems`` (rollouts from the parallel engine); save to ``out`` (``rl.run_rl``)."""
    from .rl import run_rl

    return run_rl(PAPOConfig, PAPOTrainer, model, problems, out, **kwargs)
