"""The semantics a checkpoint was trained with, recorded in its ``config.json`` (DESIGN §3 and §3b).

``canonical`` (§3) trains what an engine that splices KV at a join computes; ``reprefill`` (§3b) trains
what a stock server computes when a join re-reads the branches causally. Training records the one it
used (``record_semantics``) in the model's config, so it travels with ``save_pretrained`` and the hub;
engines, PAPO and eval read it back (``read_semantics``) to decode the checkpoint as it was trained.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

Semantics = Literal["canonical", "reprefill"]
SEMANTICS_KEY = "npr_semantics"
SEMANTICS: tuple[Semantics, ...] = get_args(Semantics)


def read_semantics(config: Any) -> tuple[Semantics, bool]:
    """The semantics recorded in ``config`` (a transformers config or a ``config.json`` dict), and
    whether it was recorded at all; a config with no record is canonical (what every older
    checkpoint was trained with). An unknown value is a ``ValueError`` naming the key."""
    value = config.get(SEMANTICS_KEY) if isinstance(config, dict) else getattr(config, SEMANTICS_KEY, None)
    if value is None:
        return "canonical", False
    if value not in SEMANTICS:
        raise ValueError(f"config {SEMANTICS_KEY} is {value!r}; expected one of {', '.join(SEMANTICS)}")
    return value, True


def record_semantics(config: Any, semantics: Semantics) -> None:
    """Write ``semantics`` into ``config`` (a transformers config or a dict); ``save_pretrained`` keeps it."""
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; expected one of {', '.join(SEMANTICS)}")
    if isinstance(config, dict):
        config[SEMANTICS_KEY] = semantics
    else:
        setattr(config, SEMANTICS_KEY, semantics)
