"""The torch.distributed group a trainer broadcasts new weights over (SGLang's "weights update group").

Three parties join such a group: the trainer as rank 0 (``weight_sync.DistributedWeightSync``),
``npr serve`` as rank ``rank_offset`` when ``/init_weights_update_group`` asks it to, and real SGLang
servers (ranks ``rank_offset + tp_rank``) with their own code. They meet only if they build the group
the same way, so this builds it as SGLang's ``init_custom_process_group`` does: a TCP store hosted by
rank 0 at ``master_address:master_port``, its keys under ``PrefixStore(group_name)``, and a process
group registered under ``group_name`` (which adds torch's own ``{group_name}/`` prefix).

Two differences, both invisible to the other ranks: the store is created directly rather than through
``rendezvous("tcp://...")``, which under torchrun/accelerate (``TORCHELASTIC_USE_AGENT_STORE``) would
make rank 0 a client of a store nobody hosts; and the group is never torch's default group, so a
trainer that runs its own ``init_process_group`` (DDP, FSDP) holds both. Weights travel with
``torch.distributed.broadcast(tensor, src=0, group=group)``.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch.distributed as dist
from torch.distributed.distributed_c10d import Backend, PrefixStore, _new_process_group_helper, _world


def join(
    *,
    backend: str,
    master_address: str,
    master_port: int,
    rank: int,
    world_size: int,
    group_name: str,
    timeout_s: float,
) -> dist.ProcessGroup:
    """Join the group as ``rank``; returns once all ``world_size`` ranks have joined.

    Raises:
        ValueError: unknown backend, or a group of that name already exists in this process.
        RuntimeError (torch's ``DistStoreError``, ...): the other ranks did not come within ``timeout_s``.
    """
    if backend not in (Backend.GLOO, Backend.NCCL):
        raise ValueError(f"backend must be gloo or nccl, not {backend!r}")
    if group_name in _world.pg_names.values():
        raise ValueError(f"a group named {group_name!r} already exists here")
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(master_address, master_port, world_size, is_master=rank == 0, timeout=timeout)
    group, _ = _new_process_group_helper(
        world_size, rank, [], Backend(backend), PrefixStore(group_name, store), group_name=group_name, timeout=timeout
    )
    _world.pg_group_ranks[group] = {i: i for i in range(world_size)}  # group ranks are global ranks here
    return group


def leave(group: dist.ProcessGroup) -> None:
    """Destroy the group (this process's end of it)."""
    dist.destroy_process_group(group)


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` now (for rank 0's store)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
