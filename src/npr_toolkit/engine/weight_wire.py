"""SGLang's weight-update endpoints on the wire: what ``npr serve`` reads and ``weight_sync`` sends.

One module for both ends, as ``sglang_wire`` is for ``/generate``. Field names and defaults are
SGLang's (``io_struct.py`` of 0.5.4 and 0.5.23; docs/design.md §8); unknown keys are
ignored, as SGLang's dataclass bodies ignore them. Every update answers ``{"success", "message"}``
(``/update_weights_from_disk`` adds ``num_paused_requests``) with status 200, or 400 when
``success`` is false.

- ``/update_weights_from_disk``: reload the weights from a checkpoint folder.
- ``/init_weights_update_group``, ``/update_weights_from_distributed``, ``/destroy_weights_update_group``:
  a torch.distributed group (``update_group.py``) in which the trainer, rank 0, broadcasts each
  tensor by name, dtype and shape.
- ``/begin_weight_update``, ``/end_weight_update``: SGLang 0.5.23's update session (0.5.4 has none).
- ``/get_weights_by_name``: read a parameter back (tests, checks).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_GROUP = "weight_update_group"  # SGLang's default group_name


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # SGLang's dataclass bodies ignore unknown keys


class UpdateWeightsFromDiskRequest(_Body):
    model_path: str
    load_format: str | None = None
    abort_all_requests: bool = False
    weight_version: str | None = None
    flush_cache: bool = True
    is_async: bool = False
    torch_empty_cache: bool = False
    keep_pause: bool = False
    recapture_cuda_graph: bool = False
    token_step: int = 0
    manifest: Any = None


class InitWeightsUpdateGroupRequest(_Body):
    master_address: str
    master_port: int = Field(ge=1, le=65535)
    rank_offset: int = Field(ge=1, description="this server's first rank; rank 0 is the trainer that broadcasts")
    world_size: int = Field(ge=2)
    group_name: str = DEFAULT_GROUP
    backend: str = "nccl"


class DestroyWeightsUpdateGroupRequest(_Body):
    group_name: str = DEFAULT_GROUP


class UpdateWeightsFromDistributedRequest(_Body):
    names: list[str]
    dtypes: list[str]
    shapes: list[list[int]]
    group_name: str = DEFAULT_GROUP
    flush_cache: bool = True
    abort_all_requests: bool = False
    weight_version: str | None = None
    load_format: str | None = None
    selector: str = "all"
    torch_empty_cache: bool = False


class BeginWeightUpdateRequest(_Body):
    selector: str = "all"


class EndWeightUpdateRequest(_Body):
    pass


class GetWeightsByNameRequest(_Body):
    name: str
    truncate_size: int = Field(100, ge=1)


class UpdateAnswer(BaseModel):
    success: bool
    message: str


class DiskUpdateAnswer(UpdateAnswer):
    num_paused_requests: int = 0


# --- dtypes as SGLang spells them ----------------------------------------------------------------
def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (SGLang resolves the name with ``getattr(torch, name)``)."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    """The dtype a name stands for (``"bfloat16"`` or ``"torch.bfloat16"``).

    Raises:
        ValueError: the name is not a torch dtype.
    """
    found = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return found
