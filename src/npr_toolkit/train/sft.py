"""NPR-Beta SFT on TRL's ``SFTTrainer`` with the parallel training view (``npr train sft``).

Each Beta record (``{"id", "messages", "answer", "stats"}``) is tokenized as the engine emits it
(``view.tokenize_completion``: prompt = chat template of the turns before the assistant's, with the
generation prompt; completion = the assistant text + eos). ``TreeCollator`` turns the ids into the
view of the configured semantics (docs/design.md §3 canonical, §3b reprefill: trie-packed, or the
official npr-compat; positions, targets, 4D mask or BlockMask) and batches them; TRL's fused LM head
then scores exactly the view's targets, and ``NPRSFTTrainer`` only replaces ``compute_loss`` so a
FlexAttention BlockMask works and the ``num_tokens`` metric counts tokens (docs/design.md §8).

``run_sft(model, data, out)`` is the whole stage: load model + tokenizer, add the tag tokens, read and
check the records (bad, too long or malformed ones are counted and reported, never silently dropped),
record the semantics in the model's config (so every checkpoint, intermediate ones included, carries
``npr_semantics``), train, save model + tokenizer + ``sft_report.json`` to ``out``. Under
``accelerate launch`` every process runs it; the main process alone warns, writes and reports
(``processes.py``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from transformers import TrainerCallback
from trl import SFTTrainer

from npr_toolkit.data.io import InputError, read_records, write_json_atomic
from npr_toolkit.data.records import BetaExample, describe_error
from npr_toolkit.view import ViewError, ViewMode, build_view, collate, tokenize_completion
from npr_toolkit.view.batch import Attention
from npr_toolkit.view.semantics import read_semantics, record_semantics

from .loading import load_pretrained
from .processes import close_process_group_at_exit, output_lock, quiet_replicas, save_once
from .progress import show_progress
from .sft_config import NPRSFTConfig, load_sft_config

logger = logging.getLogger(__name__)

REPORT_NAME = "sft_report.json"
ATTENTION_FOR: dict[str, Attention] = {"flex_attention": "flex", "sdpa": "bool", "eager": "additive"}


class Dropped(BaseModel):
    """A record that was not trained on, and why."""

    where: str
    id: str | None = None
    kind: str  # invalid | too_long | malformed
    reason: str


class SFTReport(BaseModel):
    """What ``run_sft`` did: written to ``out/sft_report.json`` and printed by ``npr train sft``."""

    model: str
    data: str
    out: str
    semantics: str  # recorded in the checkpoint: canonical | reprefill
    view_mode: str  # the training view: canonical | reprefill | npr-compat
    attn_implementation: str
    records: int
    trained: int
    dropped: dict[str, int]
    dropped_records: list[Dropped]
    steps: int
    first_loss: float | None
    last_loss: float | None
    train_loss: float
    runtime_s: float


# --- examples and batches


def encode_messages(tokenizer, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], int]:
    """(ids, prompt length) of one conversation whose last turn is the assistant completion."""
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False, add_generation_prompt=True)
    return tokenize_completion(tokenizer, prompt, messages[-1]["content"] + tokenizer.eos_token)


class TreeCollator:
    """Pre-tokenized examples (``input_ids``, ``prompt_length``) -> one batch of the training view.

    Returns only model inputs: ``input_ids``, ``attention_mask`` (bool or additive 4D, or a
    BlockMask), ``position_ids``, ``labels`` (TRL convention) and ``shift_labels`` (the view's targets).
    With ``mode="reprefill"`` every row is its trie-packed sequence, longer than the record.
    """

    def __init__(
        self,
        tokenizer,
        *,
        mode: ViewMode = "canonical",
        attention: Attention = "additive",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        self.tokenizer = tokenizer
        self.mode = mode
        self.attention = attention
        self.dtype = dtype
        self.device = device

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        views = [
            build_view(f["input_ids"], self.tokenizer, mode=self.mode, prompt_length=f["prompt_length"])
            for f in features
        ]
        return collate(views, self.tokenizer.pad_token_id, self.dtype, self.attention, self.device)


def _beta_records(data: str | Path | Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, dict | None, str | None]]:
    """(where, record, read error) for a file / saved dataset, or for in-memory records."""
    if isinstance(data, str | Path):
        for item in read_records(data, text_field="messages"):
            yield item.where, item.data, item.error
    else:
        for index, record in enumerate(data):
            yield f"<data>:{index + 1}", dict(record), None


def prepare_examples(
    records: Iterable[tuple[str, dict | None, str | None]],
    tokenizer,
    *,
    max_length: int | None,
    mode: ViewMode,
) -> tuple[list[dict[str, Any]], list[Dropped], int]:
    """Tokenize and check every record: (examples, dropped records, records read).

    A record is dropped when it is not a Beta example, is not a well-formed tree under the view, or
    does not fit ``max_length`` (never truncated: a cut tree teaches unclosed branches). The length
    that counts is the view's, what the model reads: the packed sequence under ``reprefill``.
    """
    examples, dropped, count = [], [], 0
    for where, data, error in records:
        count += 1
        if error is not None:
            dropped.append(Dropped(where=where, kind="invalid", reason=error))
            continue
        try:
            example = BetaExample.model_validate(data)
        except ValidationError as exc:
            dropped.append(Dropped(where=where, id=_id_of(data), kind="invalid", reason=describe_error(exc)))
            continue
        if len(example.messages) < 2 or example.messages[-1].role != "assistant":
            reason = "messages must end with the assistant completion after at least one prompt turn"
            dropped.append(Dropped(where=where, id=example.id, kind="invalid", reason=reason))
            continue
        ids, prompt_length = encode_messages(tokenizer, [m.model_dump() for m in example.messages])
        try:
            view = build_view(ids, tokenizer, mode=mode, prompt_length=prompt_length)
        except ViewError as exc:
            dropped.append(Dropped(where=where, id=example.id, kind="malformed", reason=str(exc)))
            continue
        if max_length is not None and len(view) > max_length:
            packed = f" ({mode} packs the record's {len(ids)})" if len(view) != len(ids) else ""
            reason = f"{len(view)} tokens{packed} > max_length {max_length}"
            dropped.append(Dropped(where=where, id=example.id, kind="too_long", reason=reason))
            continue
        examples.append({"id": example.id, "input_ids": ids, "prompt_length": prompt_length})
    return examples, dropped, count


def _id_of(data: dict | None) -> str | None:
    value = (data or {}).get("id")
    return None if value is None else str(value)


# --- trainer


class NPRSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss accepts any 4D mask, a FlexAttention BlockMask included.

    The loss is TRL's (token-mean NLL of the fused LM head over the tree targets); only the
    metrics read the batch differently: ``num_tokens`` counts non-pad tokens instead of summing the mask.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        denominator = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(denominator).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients across ranks

        gather = self.accelerator.gather_for_metrics
        valid = gather(outputs.label_mask.sum()).sum()
        entropy = gather(outputs.entropy.detach().sum()).sum()
        correct = gather(outputs.is_top1.sum()).sum()
        self._metrics[mode]["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            real = (inputs["input_ids"] != self.processing_class.pad_token_id).sum()
            self._total_train_tokens += gather(real).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss


# --- the stage


def load_model(name: str | Path, config: NPRSFTConfig):
    """(model, tokenizer) for SFT, in the config's dtype and attention kernel, with the tag tokens."""
    dtype = config.model_dtype if config.model_dtype == "auto" else getattr(torch, config.model_dtype)
    return load_pretrained(name, dtype=dtype, attn_implementation=config.attn_implementation)


def run_sft(
    model: str | Path,
    data: str | Path | Sequence[Mapping[str, Any]],
    out: str | Path,
    config: NPRSFTConfig | str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    **overrides: Any,
) -> Path:
    """Fine-tune ``model`` on the Beta corpus ``data`` with the parallel view; save to ``out``.

    Args:
        model: hub id or local path of the base model (tag tokens are added if missing).
        data: Beta JSONL / JSON / parquet / saved dataset, or in-memory Beta records.
        out: output folder: the checkpoint (model + tokenizer), trainer state and ``sft_report.json``.
        config: an ``NPRSFTConfig``, a YAML file of its fields, or None for the defaults.
        callbacks: more ``TrainerCallback``s for the trainer (trackers, probes).
        **overrides: config fields that win over ``config`` (e.g. ``max_steps=100``).

    Returns:
        ``out``, loadable by ``AutoModelForCausalLM``/``AutoTokenizer``, the engines and ``npr eval``.

    Raises:
        InputError: unreadable data or model, a bad config, no usable record, or another run writing ``out``.
    """
    import dataclasses

    out = Path(out)
    if isinstance(config, NPRSFTConfig):
        try:
            config = dataclasses.replace(config, output_dir=str(out), **overrides)
        except (TypeError, ValueError) as exc:
            raise InputError(f"options: {exc}") from None
    else:
        config = load_sft_config(config, output_dir=str(out), **overrides)
    quiet_replicas(config)
    close_process_group_at_exit()
    with output_lock(out):
        return _fit(model, data, out, config, callbacks)


def _fit(
    model: str | Path,
    data: str | Path | Sequence[Mapping[str, Any]],
    out: Path,
    config: NPRSFTConfig,
    callbacks: Sequence[TrainerCallback],
) -> Path:
    """``run_sft`` once its config is resolved and the output is ours: load, train, save, report."""
    from datasets import Dataset

    records = list(_beta_records(data))  # read first: a missing file fails before the model loads
    model_obj, tokenizer = load_model(model, config)
    examples, dropped, count = prepare_examples(records, tokenizer, max_length=config.max_length, mode=config.semantics)
    kinds = Counter(d.kind for d in dropped)
    for d in dropped[:10]:
        logger.warning("%s: dropped (%s): %s", d.where, d.kind, d.reason)
    if dropped:
        logger.warning("dropped %d of %d records: %s", len(dropped), count, dict(kinds))
    if not examples:
        raise InputError(f"{data if isinstance(data, str | Path) else '<data>'}: no usable record ({dict(kinds)})")

    try:
        base, recorded = read_semantics(model_obj.config)
    except ValueError as exc:
        raise InputError(f"{model}: {exc}") from None
    if recorded and base != config.recorded_semantics:
        logger.warning("%s was trained %s; this run trains %s and records it", model, base, config.recorded_semantics)
    record_semantics(model_obj.config, config.recorded_semantics)  # before any checkpoint is written
    collator = TreeCollator(
        tokenizer,
        mode=config.semantics,
        attention=ATTENTION_FOR[config.attn_implementation],
        dtype=model_obj.dtype,
        device=config.device,
    )
    trainer = NPRSFTTrainer(
        model=model_obj,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=list(callbacks) or None,
    )
    show_progress(trainer, "sft")
    started = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - started
    save_once(trainer, str(out))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    report = SFTReport(
        model=str(model),
        data=str(data) if isinstance(data, str | Path) else "<data>",
        out=str(out),
        semantics=config.recorded_semantics,
        view_mode=config.semantics,
        attn_implementation=config.attn_implementation,
        records=count,
        trained=len(examples),
        dropped=dict(kinds),
        dropped_records=dropped,
        steps=trainer.state.global_step,
        first_loss=losses[0] if losses else None,
        last_loss=losses[-1] if losses else None,
        train_loss=result.training_loss,
        runtime_s=round(runtime, 3),
    )
    if trainer.is_world_process_zero():
        write_json_atomic(out / REPORT_NAME, report.model_dump())
    trainer.accelerator.wait_for_everyone()
    return out
