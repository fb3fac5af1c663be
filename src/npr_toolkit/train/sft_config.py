"""``NPRSFTConfig``: TRL's ``SFTConfig`` with the NPR-Beta defaults and the view settings (``npr train sft``).

Defaults follow the paper's NPR-Beta stage (lr 1e-6 cosine, 5% warmup, weight decay 0.1, one epoch,
sequences up to 32k tokens). The settings that a tree-structured batch needs from TRL (our own
collator, no dataset preparation, no packing, see docs/design.md §8) are fixed and checked.
Device-dependent fields left unset resolve in ``__post_init__``: bf16 autocast, FlexAttention and
activation checkpointing on GPU; float32, SDPA and no checkpointing on CPU.

One knob says what the model learns to compute: ``semantics``. People choose it by where the model
will be decoded (``canonical``: the project's torch engine splices KV at a join; ``reprefill``: a
stock SGLang/vLLM server re-reads the branches), so it is named after that, and it is what the
checkpoint records (``npr_semantics`` in config.json). The official NPR-Beta code's masks and
positions are a third value of the same knob, ``npr-compat``: an approximation of ``canonical`` kept
to continue from released NPR checkpoints, recorded as ``canonical``. The former field ``view_mode``
(canonical | npr-compat) is still read, as an alias, so old configs keep working.

YAML files (``configs/sft.yaml``) hold the same field names; ``load_sft_config`` merges a file with
keyword overrides (CLI flags win).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from .config import DeviceFields, SemanticsFields, load_config, resolve_attn_implementation, resolve_device_defaults

MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class NPRSFTConfig(SemanticsFields, DeviceFields, SFTConfig):
    """``SFTConfig`` for NPR-Beta: the parallel training view on TRL's ``SFTTrainer``."""

    # --- NPR fields
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel the model is loaded with: 'flex_attention' (BlockMask, O(L) mask memory; GPU "
            "only, FlexAttention has no backward on CPU), 'sdpa' (bool 4D mask) or 'eager' (additive 4D mask). "
            "Unset: flex_attention on GPU, sdpa on CPU."
        },
    )
    model_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype the weights are loaded in: float32 master weights with bf16 autocast keep the tiny "
            "lr-1e-6 updates from vanishing in bf16 rounding; 'bfloat16' halves weight memory; 'auto' uses the "
            "checkpoint's dtype."
        },
    )

    # --- NPR-Beta defaults (the paper's SFT stage) instead of TRL's
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (NPR-Beta: 1e-6)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (NPR-Beta: cosine)."})
    warmup_steps: float = field(
        default=0.05,
        metadata={"help": "Warmup: a number of steps, or below 1 a fraction of training (NPR-Beta: 0.05)."},
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (NPR-Beta: 0.1)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the Beta corpus (NPR-Beta: 1)."})
    max_length: int | None = field(
        default=32768,
        metadata={
            "help": "Longest sequence the model reads, in tokens (prompt + completion; with reprefill the packed "
            "sequence, re-read branches included); longer records are dropped and counted, never truncated (a "
            "cut tree would teach unclosed branches). None: no limit."
        },
    )
    report_to: str | list[str] = field(
        default="none", metadata={"help": "Experiment trackers to report to ('none', 'wandb', 'tensorboard', ...)."}
    )

    # --- what the tree collator requires from SFTTrainer (checked in __post_init__)
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must be False: the collator needs the prompt_length column."},
    )
    dataset_kwargs: dict[str, Any] | str | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True},
        metadata={"help": "Must contain skip_prepare_dataset=True: examples are tokenized by the NPR view code."},
    )

    def __post_init__(self) -> None:
        gpu = resolve_device_defaults(self)
        super().__post_init__()
        self.resolve_semantics("canonical")
        resolve_attn_implementation(self, gpu)
        if self.model_dtype not in MODEL_DTYPES:
            raise ValueError(f"model_dtype {self.model_dtype!r}: choose one of {', '.join(MODEL_DTYPES)}")
        if self.packing or self.padding_free:
            raise ValueError("packing and padding_free must be off: TRL packs documents, not trees")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the collator needs the prompt_length column")
        if not (self.dataset_kwargs or {}).get("skip_prepare_dataset"):
            raise ValueError("dataset_kwargs must set skip_prepare_dataset: true (examples are tokenized by npr)")
        if self.loss_type != "nll" or self.assistant_only_loss:
            raise ValueError(
                "loss_type must be 'nll' and assistant_only_loss False: the view's labels are the loss mask"
            )


def load_sft_config(path: str | Path | None = None, **overrides: Any) -> NPRSFTConfig:
    """A config from a YAML file (field names as keys) updated with ``overrides``.

    Raises:
        InputError: the file is missing or not a mapping, a key is not a field, or a value is invalid.
    """
    return load_config(NPRSFTConfig, path, **overrides)
