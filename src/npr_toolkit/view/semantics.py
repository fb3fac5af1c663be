"""The semantics a checkpoint was trained with, recorded in its ``config.json`` (docs/design.md §3, §3b).

``canonical`` (§3): a join splices the branches' KV, so only an engine that can splice decodes it exactly
(the torch engine). ``reprefill`` (§3b): a join re-reads the branches causally, which is what a stock
server computes, so the torch engine and the SGLang client both decode it exactly. SFT writes the key on
``model.config`` before ``save_pretrained`` so it travels with the checkpoint (and to the hub); engines,
PAPO and eval read it back. A checkpoint without the key predates the record and is canonical.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Literal, get_args

Semantics = Literal["canonical", "reprefill"]
SEMANTICS: tuple[Semantics, ...] = get_args(Semantics)
SEMANTICS_KEY = "npr_semantics"
DEFAULT_SEMANTICS: Semantics = "canonical"


def read_semantics(config: Any) -> tuple[Semantics, bool]:
    """(semantics, recorded) of a model config (a ``PretrainedConfig`` or its dict).

    Unrecorded: ``("canonical", False)``; the caller says so once.

    Raises:
        ValueError: the config records a value that is not a semantics.
    """
    mapping = isinstance(config, MutableMapping)
    value = config.get(SEMANTICS_KEY) if mapping else getattr(config, SEMANTICS_KEY, None)
    if value is None:
        return DEFAULT_SEMANTICS, False
    if value not in SEMANTICS:
        raise ValueError(f"model config: {SEMANTICS_KEY} {value!r} is not one of {', '.join(SEMANTICS)}")
    return value, True


def record_semantics(config: Any, semantics: Semantics) -> None:
    """Write ``semantics`` into a model config (``PretrainedConfig`` or dict) so ``save_pretrained`` keeps it.

    Raises:
        ValueError: ``semantics`` is not one of ``SEMANTICS``.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics {semantics!r}: choose one of {', '.join(SEMANTICS)}")
    if isinstance(config, MutableMapping):
        config[SEMANTICS_KEY] = semantics
    else:
        setattr(config, SEMANTICS_KEY, semantics)
