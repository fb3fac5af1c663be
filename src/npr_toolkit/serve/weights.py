"""The served model's weights as ``npr serve``'s state: their version, who may use them, how they change.

What SGLang's weight-update endpoints do here (routes: ``weight_routes.py``; wire: ``engine/weight_wire.py``):

- **Version.** SGLang's ``weight_version`` (``"default"`` at start) is reported in every ``/generate``
  answer's ``meta_info``, in the OpenAI answers and by ``/model_info``. An update sets the version it
  names, or else the next integer after the current one (``1`` after ``default`` or any non-integer).
  SGLang keeps the old version when none is named; here new weights always get a new version, so a
  rollout's version always tells which weights sampled it.
- **Exclusion** (``VersionLock``). Every generation request holds the lock, shared, from before it is
  queued until it is answered; an update holds it alone. So an update waits for the requests in flight
  (they finish on the old weights) and the requests that arrive meanwhile wait for it (they run on the
  new ones): no request ever sees two versions. The copy runs on the engine's worker thread
  (``Scheduler.run_exclusive``), never during a forward pass.
- **All or nothing.** An update is checked as a whole before anything is copied (``model_tensors``);
  a refused one changes nothing. A distributed update receives every tensor first, so a refusal for
  names or shapes keeps the group in step with the trainer.
- **Sessions** (SGLang 0.5.23's ``/begin_weight_update`` .. ``/end_weight_update``). Updates are accepted
  with or without one (0.5.4 has none). A session holds the lock from begin to end, so an update sent
  in several calls is seen at once, and its version is applied at the end. A session left idle for
  ``weight_session_timeout_s`` is ended as if the client had ended it (with a warning), so a trainer
  that dies does not stop the server for good.
- **Groups**: the torch.distributed groups joined through ``/init_weights_update_group``, by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from pydantic import BaseModel

from ..engine import update_group
from ..engine.weight_wire import (
    BeginWeightUpdateRequest,
    DestroyWeightsUpdateGroupRequest,
    InitWeightsUpdateGroupRequest,
    UpdateWeightsFromDiskRequest,
    UpdateWeightsFromDistributedRequest,
    parse_dtype,
)
from .config import ServeConfig
from .model_tensors import CheckpointFolder, ModelTensors, TensorError
from .scheduler import Scheduler

log = logging.getLogger(__name__)
INITIAL_VERSION = "default"  # SGLang's
T = TypeVar("T")


class UpdateError(ValueError):
    """An update the server refuses or could not make; answered ``{"success": false, "message"}`` (400)."""


class VersionLock:
    """Shared by generation requests, held alone by a weight update; an update waiting keeps new requests out."""

    def __init__(self) -> None:
        self.readers = 0  # requests holding it
        self.waiting = 0  # requests waiting for an update to finish
        self._writers = 0  # updates holding it or waiting for it
        self._writer = asyncio.Lock()
        self._no_readers = asyncio.Event()
        self._no_readers.set()
        self._open = asyncio.Event()  # no update holds it or waits for it
        self._open.set()

    async def acquire_shared(self) -> None:
        while not self._open.is_set():
            self.waiting += 1
            try:
                await self._open.wait()
            finally:
                self.waiting -= 1
        self.readers += 1
        self._no_readers.clear()

    def release_shared(self) -> None:
        self.readers -= 1
        if self.readers == 0:
            self._no_readers.set()

    async def acquire_exclusive(self) -> None:
        self._writers += 1
        self._open.clear()
        try:
            await self._writer.acquire()
        except BaseException:
            self._writer_left()
            raise
        try:
            await self._no_readers.wait()
        except BaseException:
            self.release_exclusive()
            raise

    def release_exclusive(self) -> None:
        self._writer.release()
        self._writer_left()

    def _writer_left(self) -> None:
        self._writers -= 1
        if self._writers == 0:
            self._open.set()


@dataclass
class _Group:
    group: dist.ProcessGroup
    backend: str


@dataclass
class _Session:
    last: float  # when its last call ended (monotonic seconds)
    busy: int = 0  # its calls running now
    updated: bool = False
    version: str | None = None  # the last version one of its updates named


class Weights:
    """The version, the lock, the update groups and the session of one server (``service.weights``)."""

    def __init__(self, engine, scheduler: Scheduler, config: ServeConfig):
        self.engine = engine
        self.scheduler = scheduler
        self.tensors = ModelTensors(engine.model)
        self.version = INITIAL_VERSION
        self.lock = VersionLock()
        self.group_timeout_s = config.weight_group_timeout_s
        self.session_timeout_s = config.weight_session_timeout_s
        self._groups: dict[str, _Group] = {}
        self._joining: set[str] = set()
        self._session: _Session | None = None
        self._opening = False
        self._watchdog: asyncio.Task | None = None

    def next_version(self, named: str | None) -> str:
        if named is not None:
            return named
        return str(int(self.version) + 1) if self.version.isdigit() else "1"

    # --- updates ------------------------------------------------------------------------------------
    async def update_from_disk(self, req: UpdateWeightsFromDiskRequest) -> str:
        _refuse_unsupported(req, {"abort_all_requests": (False,), "is_async": (False,), "keep_pause": (False,)})
        _refuse_unsupported(req, {"token_step": (0,), "manifest": (None,)})
        _refuse_unsupported(req, {"load_format": (None, "auto", "safetensors")})
        try:  # names and shapes first (file headers only), so a bad folder is refused without waiting
            folder = await asyncio.to_thread(CheckpointFolder, req.model_path)
            self.tensors.check(folder.shapes, complete=True)
        except TensorError as error:
            raise UpdateError(f"Failed to get weights iterator: {error}.") from None
        async with self._exclusive() as session:
            count = await self._on_worker(lambda: self.tensors.copy(folder.tensors()), "Failed to update weights")
            version = self._applied(session, req.weight_version, req.torch_empty_cache)
        return f"Succeeded to update model weights: {count} tensors from {req.model_path}; {version}."

    async def update_from_distributed(self, req: UpdateWeightsFromDistributedRequest) -> str:
        _refuse_unsupported(req, {"abort_all_requests": (False,), "load_format": (None,), "selector": ("all",)})
        if not len(req.names) == len(req.dtypes) == len(req.shapes):
            raise UpdateError("names, dtypes and shapes must have the same length.")
        group = self._groups.get(req.group_name)
        if group is None:
            raise UpdateError(
                f"Group {req.group_name} not in {list(self._groups)}. Please call `init_weights_update_group` first."
            )
        try:
            dtypes = [parse_dtype(name) for name in req.dtypes]
        except ValueError as error:
            raise UpdateError(f"dtypes: {error}.") from None
        if any(dim < 0 for shape in req.shapes for dim in shape):
            raise UpdateError("shapes: a dimension is negative.")
        device = torch.device("cpu") if group.backend == "gloo" else self.engine.device

        def receive() -> int:
            received = []
            for name, dtype, shape in zip(req.names, dtypes, req.shapes, strict=True):
                tensor = torch.empty(shape, dtype=dtype, device=device)
                dist.broadcast(tensor, src=0, group=group.group)
                received.append((name, tensor))
            self.tensors.check({name: tensor.shape for name, tensor in received}, complete=False)
            return self.tensors.copy(received)

        async with self._exclusive() as session:
            count = await self._on_worker(receive, "Failed to update parameter online")
            version = self._applied(session, req.weight_version, req.torch_empty_cache)
        return f"Succeeded to update parameter online: {count} tensors; {version}."

    def _applied(self, session: _Session | None, named: str | None, empty_cache: bool) -> str:
        """Record a successful update: the new version now, or at the end of the session."""
        if empty_cache and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if session is not None:
            session.updated = True
            session.version = named if named is not None else session.version
            return "the weight version changes at /end_weight_update"
        self.version = self.next_version(named)
        return f"weight_version {self.version}"

    # --- groups -------------------------------------------------------------------------------------
    async def init_group(self, req: InitWeightsUpdateGroupRequest) -> str:
        name = req.group_name
        if name in self._groups or name in self._joining:
            raise UpdateError(f"Failed to initialize custom process group: a group named {name!r} already exists.")
        if req.backend not in ("gloo", "nccl"):
            raise UpdateError(f"Failed to initialize custom process group: unknown backend {req.backend!r}.")
        if req.backend == "nccl" and self.engine.device.type != "cuda":
            raise UpdateError(
                f"Failed to initialize custom process group: backend nccl needs a CUDA device and this server's "
                f"model is on {self.engine.device.type}; ask for backend gloo."
            )
        if req.rank_offset >= req.world_size:
            raise UpdateError(f"rank_offset {req.rank_offset} is not below world_size {req.world_size}.")
        self._joining.add(name)
        try:
            joined = await asyncio.to_thread(self._join, req)
        except Exception as error:
            raise UpdateError(f"Failed to initialize custom process group: {error}.") from None
        finally:
            self._joining.discard(name)
        self._groups[name] = _Group(joined, req.backend)
        log.info("joined update group %r: rank %d of %d (%s)", name, req.rank_offset, req.world_size, req.backend)
        return "Succeeded to initialize custom process group."

    def _join(self, req: InitWeightsUpdateGroupRequest) -> dist.ProcessGroup:
        device = self.engine.device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            return update_group.join(
                backend=req.backend,
                master_address=req.master_address,
                master_port=req.master_port,
                rank=req.rank_offset,
                world_size=req.world_size,
                group_name=req.group_name,
                timeout_s=self.group_timeout_s,
            )

    async def destroy_group(self, req: DestroyWeightsUpdateGroupRequest) -> str:
        group = self._groups.pop(req.group_name, None)
        if group is None:
            raise UpdateError("The group to be destroyed does not exist.")
        await self._on_worker(lambda: update_group.leave(group.group), "Failed to destroy custom process group")
        return "Succeeded to destroy custom process group."

    # --- sessions -----------------------------------------------------------------------------------
    async def begin(self, req: BeginWeightUpdateRequest) -> str:
        _refuse_unsupported(req, {"selector": ("all",)})
        if self._session is not None or self._opening:
            raise UpdateError("A weight update session is already open: end it first (/end_weight_update).")
        self._opening = True
        try:
            await self.lock.acquire_exclusive()
        finally:
            self._opening = False
        session = self._session = _Session(last=time.monotonic())
        self._watchdog = asyncio.create_task(self._expire(session))
        return "Weight update session open: generation waits until /end_weight_update."

    async def end(self) -> str:
        session = self._session
        if session is None:
            raise UpdateError("No weight update session is open (/begin_weight_update first).")
        if session.busy:
            raise UpdateError("An update of this session is still running.")
        self._close(session)
        return f"Weight update session closed; weight_version {self.version}."

    def _close(self, session: _Session) -> None:
        self._session = None
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        if session.updated:
            self.version = self.next_version(session.version)
        self.lock.release_exclusive()

    async def _expire(self, session: _Session) -> None:
        while self._session is session:
            idle = time.monotonic() - session.last
            if session.busy or idle < self.session_timeout_s:
                await asyncio.sleep(max(self.session_timeout_s - idle, 0.1))
                continue
            log.warning("weight update session idle for %.0f s: ended for the client", idle)
            self._close(session)

    # --- shared -------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[_Session | None]:
        """No request runs inside: the open session's hold, or the lock taken for this update alone."""
        session = self._session
        if session is not None:
            session.busy += 1
            try:
                yield session
            finally:
                session.busy -= 1
                session.last = time.monotonic()
            return
        await self.lock.acquire_exclusive()
        try:
            yield None
        finally:
            self.lock.release_exclusive()

    async def _on_worker(self, fn: Callable[[], T], failed: str) -> T:
        """``fn`` on the engine's worker thread; its errors become ``UpdateError``s."""
        try:
            return await asyncio.wrap_future(self.scheduler.run_exclusive(fn))
        except TensorError as error:
            raise UpdateError(f"{failed}: {error}.") from None
        except Exception as error:
            log.exception(failed)
            raise UpdateError(f"{failed}: {type(error).__name__}: {error}.") from None

    async def read(self, name: str, truncate_size: int) -> list[Any]:
        """A tensor's first rows (``/get_weights_by_name``), read between two batches."""
        return await asyncio.wrap_future(self.scheduler.run_exclusive(lambda: self.tensors.read(name, truncate_size)))


def _refuse_unsupported(req: BaseModel, allowed: dict[str, tuple[Any, ...]]) -> None:
    """Fields npr serve cannot honour are accepted only at their neutral values, never ignored."""
    bad = [f"{name}={getattr(req, name)!r}" for name, values in allowed.items() if getattr(req, name) not in values]
    if bad:
        raise UpdateError(f"npr serve does not support {', '.join(bad)}.")
