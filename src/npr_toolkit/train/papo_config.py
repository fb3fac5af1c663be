"""``PAPOConfig``: TRL's ``GRPOConfig`` with PAPO's defaults, the NPR rollout settings and the on-policy checks.

Defaults follow the paper's PAPO stage (lr 1e-7, 16 prompts x 16 samples, temperature 1.0, max
response 30000). The fixed settings make TRL's GRPO loss exactly PAPO's strictly on-policy
objective (docs/design.md §8): one optimizer step per generation batch and one
pass over it, so the importance ratio is exactly 1; ``loss_type="cispo"`` with ``epsilon_high >= 1``
gives value and gradient -A·log π as a token mean; no KL (``beta=0``); batch-level advantage
normalisation. ``__post_init__`` rejects every setting that would train on rollouts of other
weights or of another distribution, naming the field to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from ..format import get_profile
from .config import (
    DeviceFields,
    SemanticsFields,
    check_whole_groups,
    first_set,
    resolve_attn_implementation,
    resolve_device_defaults,
)
from .rollouts import RolloutFields


@dataclass
class PAPOConfig(RolloutFields, SemanticsFields, DeviceFields, GRPOConfig):
    learning_rate: float = field(default=1e-7, metadata={"help": "PAPO learning rate (paper: 1e-7)."})
    num_generations: int = field(default=16, metadata={"help": "Samples per prompt (paper: 16)."})
    per_device_train_batch_size: int = field(
        default=256, metadata={"help": "Completions per step: prompts x num_generations (paper: 16 x 16)."}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Must be 1.0: PAPO samples from π itself (see the on-policy checks)."}
    )
    max_completion_length: int = field(default=30000, metadata={"help": "Critical-path token budget per rollout."})
    loss_type: str = field(default="cispo", metadata={"help": "cispo + epsilon_high>=1 = exact -A·logπ token mean."})
    epsilon_high: float = field(default=10.0, metadata={"help": "Upper ratio clip; >=1 never clips (ratio is 1)."})
    scale_rewards: str = field(default="batch", metadata={"help": "Group mean subtracted, batch std divided."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (PAPO: none)."})
    num_iterations: int = field(default=1, metadata={"help": "Must stay 1: strictly on-policy."})
    logging_steps: float = field(default=1, metadata={"help": "Log every step."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Trackers (none by default)."})
    # --- NPR rollout settings -------------------------------------------------------------------
    filter_profile: str = field(
        default="lenient",
        metadata={
            "help": "Structural filter profile; PAPO also demands at least one block and a final \\boxed{} answer. "
            "A filtered rollout is left out of the advantage statistics and carries no loss."
        },
    )
    drop_truncated: bool = field(
        default=True,
        metadata={"help": "Filter rollouts cut at the token budget (finish reason 'length') like malformed ones."},
    )
    max_width: int = field(default=8, metadata={"help": "Engine: max plans per block."})
    max_depth: int = field(default=1, metadata={"help": "Engine: max nesting depth (NPR trains depth 1)."})
    max_branch_tokens: int | None = field(default=None, metadata={"help": "Engine: per-branch token budget."})
    grade_timeout: float = field(default=5.0, metadata={"help": "Seconds per math-verify comparison."})
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel of the policy's log π recomputation: 'flex_attention' (view BlockMask, O(L) "
            "mask memory; CUDA only, no FlexAttention backward on CPU), 'sdpa' (bool 4D mask) or 'eager' (additive "
            "4D mask). Unset: flex_attention on GPU, sdpa on CPU. Rollouts always decode with sdpa."
        },
    )
    dense_mask_max_length: int = field(
        default=8192,
        metadata={
            "help": "Longest sequence whose log π may be recomputed with a dense (rows, 1, L, L) mask (sdpa/eager); "
            "longer ones need attn_implementation flex_attention."
        },
    )
    prompt_file: str | None = field(default=None, metadata={"help": "Prompt template with {problem}."})

    def __post_init__(self) -> None:
        gpu = resolve_device_defaults(self)
        super().__post_init__()
        check_on_policy(self)
        check_whole_groups(self)
        self.check_rollout_fields()
        get_profile(self.filter_profile)  # an unknown profile is a ValueError naming the choices
        self.resolve_semantics(None)  # unset: the checkpoint's, once the policy is loaded (rl.run_rl)
        if self.loss_type == "cispo" and (self.epsilon_high or 0) < 1:
            raise ValueError("loss_type cispo needs epsilon_high >= 1, or the gradient is scaled down")
        resolve_attn_implementation(self, gpu)


def check_on_policy(config: PAPOConfig) -> None:
    """Reject every setting under which a step would train on rollouts of other weights or another distribution.

    Strictly on-policy means: the rollouts of one generation batch are sampled from the current
    weights at the model's own distribution, and all of them are used in exactly one optimizer step.
    TRL would otherwise keep "old" log-probs and multiply importance ratios into the loss.

    Raises:
        ValueError: naming the first offending setting and what to set it to.
    """
    if config.num_iterations != 1:
        raise ValueError(
            f"num_iterations {config.num_iterations}: PAPO is strictly on-policy; set num_iterations to 1 "
            "(each generation batch is trained on once)"
        )
    if config.steps_per_generation != config.gradient_accumulation_steps:
        raise ValueError(
            f"steps_per_generation {config.steps_per_generation} != gradient_accumulation_steps "
            f"{config.gradient_accumulation_steps}: rollouts would be trained on after the weights that sampled them "
            "changed; leave steps_per_generation and generation_batch_size unset (one generation batch = one "
            "optimizer step)"
        )
    if config.use_vllm:
        raise ValueError("use_vllm: PAPO samples with the parallel engine (its own log-probs); set use_vllm to false")
    if config.off_policy_mask_threshold is not None:
        raise ValueError("off_policy_mask_threshold: PAPO is strictly on-policy; leave it unset")
    if config.temperature != 1.0:
        raise ValueError(
            f"temperature {config.temperature}: PAPO samples from π itself and its loss uses log π; set temperature "
            "to 1.0"
        )
    fields = ("top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs", "mask_truncated_completions")
    if name := first_set(config, fields):
        raise ValueError(
            f"{name}: PAPO's rollouts come from the parallel engine, sampled from π itself at temperature 1; "
            f"unset {name}" + (" (drop_truncated filters truncated rollouts)" if "truncated" in name else "")
        )
