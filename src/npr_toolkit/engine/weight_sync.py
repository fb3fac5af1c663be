"""Push a model's weights to running servers between rollouts, so that they sample from the policy.

Two ways, both through SGLang's own endpoints (``weight_wire``), so the same code drives real SGLang
servers and ``npr serve``:

- ``DiskWeightSync``: write the weights as safetensors into a directory every server can read, then
  ask each server to reload them (``/update_weights_from_disk``). Works anywhere a shared file system
  does; each push writes and reads the whole model once.
- ``DistributedWeightSync``: one torch.distributed group with every server rank (``update_group``; the
  trainer is rank 0, server i's ranks follow, as many as its tensor-parallel size); each push
  broadcasts every tensor (``/update_weights_from_distributed``), inside SGLang 0.5.23's
  ``/begin_weight_update`` .. ``/end_weight_update`` session on servers that have one (a server that
  answers 404 there, 0.5.4, takes the update without). NCCL between GPUs, gloo on CPU.

``push(model_or_state_dict, version) -> version``: every server must confirm, else ``WeightSyncError``
names each one that did not and why; the servers then report that ``weight_version`` in every answer,
which the rollout engine checks (``generate(..., weight_version=version)``). A tensor stored under two
names (tied embeddings) is sent once. An update is one call per server, so a server never answers a
request with half of it (SGLang holds its update lock for the call; ``npr serve`` for the session).

Usage (an on-policy trainer, after each optimizer step)::

    sync = DiskWeightSync(["http://h1:30000", "http://h2:30000"], "/shared/npr-weights")
    version = sync.push(model, version=str(step))
    rollouts = load_engine(model_dir, backend="sglang", server_url=urls).generate(
        prompts, params, weight_version=version)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file

from . import update_group
from .http_client import JSONClient, ServerError
from .weight_wire import DEFAULT_GROUP, dtype_name

log = logging.getLogger(__name__)
Weights = torch.nn.Module | Mapping[str, torch.Tensor]


class WeightSyncError(ServerError):
    """A server did not take the weights, or could not be reached."""


class WeightSync(Protocol):
    def push(self, weights: Weights, version: str | None = None) -> str: ...

    def close(self) -> None: ...


def named_tensors(weights: Weights) -> list[tuple[str, torch.Tensor]]:
    """The tensors to send, by ``state_dict`` name; a tensor under several names once, under its first."""
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    seen: set[tuple] = set()
    tensors = []
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if key not in seen:
            seen.add(key)
            tensors.append((name, tensor.detach()))
    return tensors


class _Servers:
    """The servers of one sync: a JSON client each, no retries (an update is not always safe to repeat)."""

    def __init__(self, server_urls: str | Sequence[str], timeout: float):
        urls = [server_urls] if isinstance(server_urls, str) else list(server_urls)
        if not urls:
            raise ValueError("give at least one server URL")
        self.clients = [
            JSONClient(url, what="server", timeout=timeout, busy_retries=0, error=WeightSyncError) for url in urls
        ]
        self.version: str | None = None  # the last version pushed

    def next_version(self, version: str | None) -> str:
        if version is not None:
            return version
        return str(int(self.version) + 1) if self.version and self.version.isdigit() else "1"

    def post_all(self, path: str, body: Callable[[int], dict[str, Any]] | dict[str, Any]) -> list[Future]:
        """POST to every server at once (``body``: one for all, or one per server index)."""
        return [
            _in_thread(lambda c=client, i=i: c.post(path, body(i) if callable(body) else body))
            for i, client in enumerate(self.clients)
        ]


class DiskWeightSync:
    """Push through a shared directory and ``/update_weights_from_disk`` (see the module doc).

    Args:
        server_urls: the servers (SGLang or ``npr serve``) to push to.
        directory: where to write; every server must read it at the same path.
        dtype: write the tensors in this dtype (e.g. ``torch.bfloat16`` for bf16 servers: half the bytes).
        keep: how many pushed folders to keep (older ones are deleted once every server has loaded a newer one).
        timeout: seconds a server may take to answer (it waits for the requests it is running first).
    """

    def __init__(
        self,
        server_urls: str | Sequence[str],
        directory: str | Path,
        *,
        dtype: torch.dtype | None = None,
        keep: int = 1,
        timeout: float = 600.0,
    ):
        self.servers = _Servers(server_urls, timeout)
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.keep = max(keep, 1)
        self.folders: list[Path] = []

    def push(self, weights: Weights, version: str | None = None) -> str:
        """Write the weights, have every server load them; returns their new ``weight_version``.

        ``weights``: as for ``DistributedWeightSync.push``.

        ``version`` defaults to the next integer after the last one pushed (``"1"`` first).
        """
        version = self.servers.next_version(version)
        folder = self._write(weights, version)
        body = {"model_path": str(folder), "weight_version": version}
        answers = self.servers.post_all("/update_weights_from_disk", body)
        _collect(self.servers, answers, _done(None), "update_weights_from_disk")
        self.servers.version = version
        if folder in self.folders:
            self.folders.remove(folder)
        self.folders.append(folder)
        while len(self.folders) > self.keep:
            shutil.rmtree(self.folders.pop(0), ignore_errors=True)
        return version

    def _write(self, weights: Weights, version: str) -> Path:
        """One folder per version, written under a temporary name and renamed: a server never reads half of it."""
        folder = self.directory / f"weights-{re.sub(r'[^A-Za-z0-9._-]', '_', version)}"
        partial = self.directory / f".{folder.name}.{uuid.uuid4().hex}"
        partial.mkdir()
        tensors = {name: _cast(tensor, self.dtype, "cpu") for name, tensor in named_tensors(weights)}
        save_file(tensors, partial / "model.safetensors", metadata={"weight_version": version})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)
        return folder

    def close(self) -> None:
        """Nothing to release: the folders stay for servers that restart from them."""

    def __enter__(self) -> DiskWeightSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DistributedWeightSync:
    """Push by broadcasting in a torch.distributed group with every server (see the module doc).

    Args:
        server_urls: the servers to push to.
        backend: ``nccl`` (GPUs; the default when CUDA is available) or ``gloo`` (CPU).
        master_address: this trainer's address as the servers can reach it (the group's store listens there).
        master_port: the store's port (0: a free one).
        group_name: the group's name on every server (one group per name per server).
        ranks_per_server: ranks each server joins with (its tensor-parallel size); by default read from
            each server's ``/server_info`` (``/get_server_info`` on SGLang 0.5.4).
        dtype: broadcast in this dtype (e.g. the servers' ``torch.bfloat16``).
        timeout: seconds for joining the group, for each broadcast, and for each server's answer.

    With NCCL, SGLang's own weight-sync test runs the trainer with ``NCCL_CUMEM_ENABLE=0`` and
    ``NCCL_NVLS_ENABLE=0`` (set before CUDA starts); this class does not set the environment for you.
    """

    def __init__(
        self,
        server_urls: str | Sequence[str],
        *,
        backend: str | None = None,
        master_address: str = "127.0.0.1",
        master_port: int = 0,
        group_name: str = DEFAULT_GROUP,
        ranks_per_server: int | Sequence[int] | None = None,
        dtype: torch.dtype | None = None,
        timeout: float = 600.0,
    ):
        self.servers = _Servers(server_urls, timeout)
        self.backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        self.master_address = master_address
        self.master_port = master_port
        self.group_name = group_name
        count = len(self.servers.clients)
        self.ranks = [ranks_per_server] * count if isinstance(ranks_per_server, int) else ranks_per_server
        self.dtype = dtype
        self.timeout = timeout
        self.group: torch.distributed.ProcessGroup | None = None
        self.sessions: list[bool | None] = [None] * count  # per server: has begin/end (None: not asked yet)
        self.broken = False

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def connect(self) -> None:
        """Form the group with every server (``push`` does it the first time)."""
        clients = self.servers.clients
        ranks = list(self.ranks) if self.ranks is not None else [_server_ranks(client) for client in clients]
        if len(ranks) != len(clients):
            raise ValueError(f"ranks_per_server has {len(ranks)} entries for {len(clients)} servers")
        port = self.master_port or update_group.free_port(self.master_address)
        offsets = [1 + sum(ranks[:i]) for i in range(len(ranks))]
        world_size = 1 + sum(ranks)
        body = {"master_address": self.master_address, "master_port": port, "world_size": world_size}
        body |= {"group_name": self.group_name, "backend": self.backend}
        answers = self.servers.post_all("/init_weights_update_group", lambda i: {**body, "rank_offset": offsets[i]})
        here = _in_thread(
            lambda: update_group.join(
                backend=self.backend,
                master_address=self.master_address,
                master_port=port,
                rank=0,
                world_size=world_size,
                group_name=self.group_name,
                timeout_s=self.timeout,
            )
        )
        _collect(self.servers, answers, here, "init_weights_update_group")
        self.group = here.result()

    def push(self, weights: Weights, version: str | None = None) -> str:
        """Broadcast the weights to every server; returns their new ``weight_version``.

        ``weights``: the unwrapped model (not DDP's wrapper, whose names start with ``module.``) or a
        full state dict (FSDP, ZeRO-3: gathered first, e.g. ``accelerator.get_state_dict``).

        ``version`` defaults to the next integer after the last one pushed (``"1"`` first). After a
        failed push the group may be out of step: ``close`` this sync and make a new one.
        """
        if self.broken:
            raise WeightSyncError("an earlier push failed and the update group may be out of step: make a new sync")
        if self.group is None:
            self.connect()
        version = self.servers.next_version(version)
        tensors = [(name, _cast(tensor, self.dtype, self.device)) for name, tensor in named_tensors(weights)]
        body = {
            "names": [name for name, _ in tensors],
            "dtypes": [dtype_name(tensor.dtype) for _, tensor in tensors],
            "shapes": [list(tensor.shape) for _, tensor in tensors],
            "group_name": self.group_name,
            "weight_version": version,
        }
        opened = self._begin()
        try:
            answers = self.servers.post_all("/update_weights_from_distributed", body)
            sent = _in_thread(lambda: self._broadcast([tensor for _, tensor in tensors]))
            _collect(self.servers, answers, sent, "update_weights_from_distributed")
        except BaseException:
            self.broken = True
            raise
        finally:
            self._end(opened)
        self.servers.version = version
        return version

    def _broadcast(self, tensors: list[torch.Tensor]) -> None:
        for tensor in tensors:
            torch.distributed.broadcast(tensor, src=0, group=self.group)

    def _begin(self) -> list[int]:
        """Open a session on every server that has them; the indices of those opened."""
        opened = []
        for i, client in enumerate(self.servers.clients):
            if self.sessions[i] is False:
                continue
            try:
                answer = client.post("/begin_weight_update", {"selector": "all"})
            except WeightSyncError as error:
                if error.status != 404 or self.sessions[i]:
                    self._end(opened)
                    raise
                self.sessions[i] = False  # SGLang 0.5.4: no sessions, updates without one
                continue
            if not isinstance(answer, dict) or answer.get("success") is not True:
                self._end(opened)
                raise WeightSyncError(f"{client.url} did not open an update session: {answer}")
            self.sessions[i] = True
            opened.append(i)
        return opened

    def _end(self, opened: list[int]) -> None:
        for i in opened:
            try:
                self.servers.clients[i].post("/end_weight_update", {})
            except WeightSyncError as error:
                log.warning("could not end the update session: %s", error)

    def close(self) -> None:
        """Leave the group here and on every server."""
        if self.group is None:
            return
        for client in self.servers.clients:
            try:
                client.post("/destroy_weights_update_group", {"group_name": self.group_name})
            except WeightSyncError as error:
                log.warning("could not destroy the update group: %s", error)
        update_group.leave(self.group)
        self.group = None

    def __enter__(self) -> DistributedWeightSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers --------------------------------------------------------------------------------------
def _cast(tensor: torch.Tensor, dtype: torch.dtype | None, device: str | torch.device) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype or tensor.dtype).contiguous()


def _server_ranks(client: JSONClient) -> int:
    """How many ranks a server joins a group with: its tensor-parallel size."""
    for path in ("/server_info", "/get_server_info"):
        try:
            info = json.loads(client.get(path))
        except (WeightSyncError, ValueError):
            continue
        if isinstance(info, dict):
            return int(info.get("tp_size", 1))
    raise WeightSyncError(f"{client.url} answers neither /server_info nor /get_server_info: pass ranks_per_server")


def _in_thread(fn: Callable[[], Any]) -> Future:
    """Run ``fn`` in a daemon thread: a collective that never completes must not keep the process alive."""
    future: Future = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as error:
                future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


def _collect(servers: _Servers, answers: list[Future], local: Future, what: str) -> None:
    """Wait for every server's answer and this end's part (``local``); raise one error naming every
    failure. While this end still waits in a collective, the first failure ends the wait: a server that
    refused before taking part leaves it waiting until the group's timeout, and its answer is the error."""
    pending = {*answers, local}
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        if not local.done() and any(_failure(future, False) for future in done):
            break
    problems = [
        problem
        for client, future in zip(servers.clients, answers, strict=True)
        if future.done() and (problem := _failure(future, False, client.url))
    ]
    if local.done() and (problem := _failure(local, True)):
        problems.append(f"this end: {problem}")
    if problems:
        raise WeightSyncError(f"{what} failed: " + "; ".join(problems))


def _failure(future: Future, local: bool, url: str = "") -> str | None:
    error = future.exception()
    if error is not None:
        return str(error)
    answer = future.result()
    if not local and (not isinstance(answer, dict) or answer.get("success") is not True):
        return f"{url} did not confirm: {answer}"
    return None


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
