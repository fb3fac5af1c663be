"""Loading trainer configs (TRL config dataclasses) from YAML with keyword overrides.

Every stage's YAML (``configs/*.yaml``) holds field names of its config class; flags win over the
file. Errors name the file and the field, and surface as ``InputError`` (exit 2 in the CLI).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..data.io import InputError
from ..view import MODES
from ..view.semantics import Semantics

C = TypeVar("C")
ATTN_IMPLEMENTATIONS = ("flex_attention", "sdpa", "eager")
logger = logging.getLogger(__name__)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Undo YAML 1.1 surprises: ``1e-6`` is read as text, and ``no``/``yes`` as booleans.

    Numbers given as text become numbers for numeric fields; a boolean given to a text-only field
    (``save_strategy: no``) becomes ``"no"``/``"yes"`` again.
    """
    kinds = typing.get_args(hint) or (hint,)
    if isinstance(value, bool):
        textual = any(isinstance(k, type) and issubclass(k, str) for k in kinds)
        return ("yes" if value else "no") if textual and bool not in kinds else value
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        if kind in kinds and str not in kinds:
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"field {name}: expected {kind.__name__}, got {value!r}") from None
    return value


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """An instance of the dataclass ``cls`` from a YAML file (field names as keys) plus ``overrides``.

    Raises:
        InputError: the file is missing or not a mapping, a key is not a field, or a value is invalid.
    """
    import yaml

    values: dict[str, Any] = {}
    source = "options"
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise InputError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: invalid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping of config fields, got {type(loaded).__name__}")
        values = loaded or {}
    values |= overrides
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{source}: unknown config field(s) {', '.join(unknown)} (see {cls.__name__})")
    hints = typing.get_type_hints(cls)
    try:
        values = {name: _coerce(name, hints[name], value) for name, value in values.items()}
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: {exc}") from None


@dataclass
class DeviceFields:
    """Device-dependent trainer fields that stay unset until ``resolve_device_defaults`` (mixin)."""

    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision. Unset: on with a CUDA device, off on CPU."}
    )
    activation_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations in the backward pass. Unset: on with a CUDA device, off on CPU."},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP: look for parameters without a gradient after each backward. Off: every stage trains every "
            "parameter, and the search costs a traversal of the graph per step (transformers turns it on by default)."
        },
    )


@dataclass
class SemanticsFields:
    """What a stage trains the model to compute, recorded in every checkpoint it writes (mixin).

    One knob, ``semantics``, named after where the model will be decoded (docs/design.md §3, §3b):
    ``canonical`` (a join splices the branches' KV: the torch engine and ``npr serve``), ``reprefill``
    (a join re-reads the branches, as a stock SGLang/vLLM server does: exact there and on the torch
    engine) or ``npr-compat`` (the official NPR-Beta code's masks and positions, an approximation of
    canonical kept to continue from released NPR checkpoints; recorded as canonical). The former field
    ``view_mode`` (canonical | npr-compat) is still read, as an alias, so old configs keep working.
    """

    semantics: str | None = field(
        default=None,
        metadata={
            "help": "What the model learns to compute, so which engines decode it exactly: 'canonical' (torch "
            "engine, `npr serve`), 'reprefill' (also exact on stock SGLang/vLLM servers; training reads the re-read "
            "branches too) or 'npr-compat' (the official NPR-Beta masks and positions; recorded as canonical). "
            "Recorded in the checkpoint. Unset: SFT trains canonical; zero and papo keep the checkpoint's."
        },
    )
    view_mode: str | None = field(
        default=None,
        metadata={"help": "Former name of `semantics` (canonical or npr-compat), still read by old configs."},
    )

    def resolve_semantics(self, default: str | None) -> None:
        """Fold the former ``view_mode`` into ``semantics``, then fill ``default`` when unset (None: later).

        Raises:
            ValueError: an unknown value, or ``view_mode`` and ``semantics`` that disagree.
        """
        if self.view_mode is not None:
            if self.view_mode not in ("canonical", "npr-compat"):
                raise ValueError(f"view_mode {self.view_mode!r}: choose canonical or npr-compat (or set semantics)")
            if self.semantics not in (None, self.view_mode):
                raise ValueError(
                    f"view_mode {self.view_mode!r} and semantics {self.semantics!r} disagree: set semantics only"
                )
            logger.warning("view_mode is the former name of semantics: write semantics: %s", self.view_mode)
            self.semantics, self.view_mode = self.view_mode, None
        if self.semantics is None:
            self.semantics = default
        if self.semantics is not None and self.semantics not in MODES:
            raise ValueError(f"semantics {self.semantics!r}: choose one of {', '.join(MODES)}")

    @property
    def recorded_semantics(self) -> Semantics:
        """What the checkpoint records: npr-compat approximates canonical, so it is recorded as canonical."""
        return "reprefill" if self.semantics == "reprefill" else "canonical"


def on_gpu(use_cpu: bool) -> bool:
    import torch

    return torch.cuda.is_available() and not use_cpu


def resolve_device_defaults(config: Any) -> bool:
    """Fill the device-dependent fields a user left unset; returns whether training runs on a GPU.

    TRL would turn an unset ``bf16`` into True even on CPU (and then refuse to run); here unset means
    bf16 autocast and activation checkpointing on a CUDA device, float32 and none on CPU.
    """
    gpu = on_gpu(config.use_cpu)
    if config.bf16 is None:
        config.bf16 = gpu and not config.fp16
    if config.activation_checkpointing is None and config.gradient_checkpointing is None:
        config.activation_checkpointing = gpu
    if not gpu:
        config.dataloader_pin_memory = False  # nothing to pin for; torch warns otherwise
    return gpu


def resolve_attn_implementation(config: Any, gpu: bool) -> None:
    """Fill an unset ``attn_implementation`` (flex_attention on a GPU, sdpa on CPU) and check it.

    Raises:
        ValueError: an unknown kernel, or flex_attention without a CUDA device (no FlexAttention backward on CPU).
    """
    if config.attn_implementation is None:
        config.attn_implementation = "flex_attention" if gpu else "sdpa"
    if config.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation {config.attn_implementation!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}"
        )
    if config.attn_implementation == "flex_attention" and not gpu:
        raise ValueError("attn_implementation flex_attention needs a CUDA device (no FlexAttention backward on CPU)")


# TRL's GRPOConfig sampling fields, each with what "the user set it" means. The project's samplers (the
# parallel engine, the rollout servers) honour only some; each RL config refuses the others by name.
_SAMPLING_SET = {
    "top_p": lambda c: c.top_p != 1.0,
    "top_k": lambda c: c.top_k not in (0, None),
    "min_p": lambda c: c.min_p is not None,
    "repetition_penalty": lambda c: c.repetition_penalty != 1.0,
    "generation_kwargs": lambda c: bool(c.generation_kwargs),
    "mask_truncated_completions": lambda c: bool(c.mask_truncated_completions),
    "use_vllm": lambda c: bool(c.use_vllm),
}


def first_set(config: Any, names: tuple[str, ...]) -> str | None:
    """The first of TRL's sampling fields ``names`` that ``config`` sets (away from its neutral value), or None."""
    return next((name for name in names if _SAMPLING_SET[name](config)), None)


def check_whole_groups(config: Any) -> None:
    """Every process must hold whole groups of ``num_generations`` entries of one prompt.

    TRL checks divisibility of the global generation batch only; its sampler then hands each process
    a consecutive slice of ``per_device_train_batch_size × steps_per_generation`` entries, which
    holds whole groups only when that number is a multiple of ``num_generations``.

    Raises:
        ValueError: naming the settings to change.
    """
    local = config.per_device_train_batch_size * config.steps_per_generation
    if local % config.num_generations:
        raise ValueError(
            f"each process generates per_device_train_batch_size × steps_per_generation = "
            f"{config.per_device_train_batch_size} × {config.steps_per_generation} = {local} completions, not a "
            f"multiple of num_generations ({config.num_generations}): a group would be split across processes; "
            "make that product a multiple of num_generations"
        )
