"""Loading a policy for training: model + tokenizer from a hub id or folder, tag tokens added."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoints import load_checkpoint
from ..data.io import InputError
from ..view import add_tag_tokens


def load_pretrained(name: str | Path, *, dtype: Any = None, attn_implementation: str = "sdpa"):
    """(model, tokenizer) ready for the NPR stages.

    Raises:
        InputError: the model or tokenizer cannot be loaded, or the tokenizer has no chat template.
    """
    model, tokenizer = load_checkpoint(name, dtype=dtype, attn_implementation=attn_implementation)
    if tokenizer.chat_template is None:
        raise InputError(f"{name}: the tokenizer has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out and never targets
    add_tag_tokens(model, tokenizer)
    return model, tokenizer
