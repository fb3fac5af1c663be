"""SGLang's weight-update endpoints on ``npr serve``, with SGLang's field names and answer shapes.

An RL trainer pushes its weights here between rollouts (``engine/weight_sync.py``) exactly as it would
to an SGLang server; what each update does to the server's state is ``weights.py``'s.

- ``POST /update_weights_from_disk``: ``{"model_path", "weight_version"?}``, a folder of safetensors.
- ``POST /init_weights_update_group``, ``/update_weights_from_distributed``, ``/destroy_weights_update_group``:
  join the trainer's group (``gloo`` on CPU, ``nccl`` on GPU) and receive tensors by name, dtype, shape.
- ``POST /begin_weight_update``, ``/end_weight_update``: SGLang 0.5.23's session (optional here).
- ``GET|POST /get_weights_by_name``, ``/flush_cache`` (plain text, as SGLang), ``GET /server_info`` (and
  0.5.4's ``/get_server_info``), which a client reads the server's rank count from.

Updates answer ``{"success", "message"}`` (``num_paused_requests`` too for the disk), 200 or 400;
malformed bodies get the 400 of every SGLang route (``app.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from ..engine.sglang_wire import error_body
from ..engine.weight_wire import (
    BeginWeightUpdateRequest,
    DestroyWeightsUpdateGroupRequest,
    DiskUpdateAnswer,
    EndWeightUpdateRequest,
    GetWeightsByNameRequest,
    InitWeightsUpdateGroupRequest,
    UpdateAnswer,
    UpdateWeightsFromDiskRequest,
    UpdateWeightsFromDistributedRequest,
)
from .model_tensors import TensorError
from .service import Service
from .weights import UpdateError, Weights

router = APIRouter()
FLUSHED = (
    "Cache flushed.\nPlease check backend logs for more details. "
    "(When there are running or waiting requests, the operation will not be performed.)\n"
)


def _weights(request: Request) -> Weights:
    return request.app.state.service.weights


def _answer(answer: UpdateAnswer) -> JSONResponse:
    return JSONResponse(answer.model_dump(), status_code=200 if answer.success else 400)


async def _run(update) -> JSONResponse:
    try:
        return _answer(UpdateAnswer(success=True, message=await update))
    except UpdateError as error:
        return _answer(UpdateAnswer(success=False, message=str(error)))


@router.post("/update_weights_from_disk")
async def update_weights_from_disk(req: UpdateWeightsFromDiskRequest, request: Request) -> JSONResponse:
    try:
        message = await _weights(request).update_from_disk(req)
    except UpdateError as error:
        return _answer(DiskUpdateAnswer(success=False, message=str(error)))
    return _answer(DiskUpdateAnswer(success=True, message=message))


@router.post("/init_weights_update_group")
async def init_weights_update_group(req: InitWeightsUpdateGroupRequest, request: Request) -> JSONResponse:
    return await _run(_weights(request).init_group(req))


@router.post("/update_weights_from_distributed")
async def update_weights_from_distributed(req: UpdateWeightsFromDistributedRequest, request: Request) -> JSONResponse:
    return await _run(_weights(request).update_from_distributed(req))


@router.post("/destroy_weights_update_group")
async def destroy_weights_update_group(req: DestroyWeightsUpdateGroupRequest, request: Request) -> JSONResponse:
    return await _run(_weights(request).destroy_group(req))


@router.post("/begin_weight_update")
async def begin_weight_update(req: BeginWeightUpdateRequest, request: Request) -> JSONResponse:
    return await _run(_weights(request).begin(req))


@router.post("/end_weight_update")
async def end_weight_update(req: EndWeightUpdateRequest, request: Request) -> JSONResponse:
    return await _run(_weights(request).end())


@router.api_route("/get_weights_by_name", methods=["GET", "POST"])
async def get_weights_by_name(req: GetWeightsByNameRequest, request: Request) -> JSONResponse:
    try:
        return JSONResponse(await _weights(request).read(req.name, req.truncate_size))
    except TensorError as error:
        return JSONResponse(error_body("value", 400, str(error)), status_code=400)


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request, timeout: float = Query(0.0, ge=0.0)) -> Response:
    """npr serve keeps no cache across requests: this only answers as SGLang does (400 while busy)."""
    service: Service = request.app.state.service
    deadline = time.monotonic() + timeout
    while _busy(service) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if _busy(service):
        return PlainTextResponse("Cache not flushed: requests are running or waiting.\n", status_code=400)
    return PlainTextResponse(FLUSHED)


def _busy(service: Service) -> bool:
    return bool(service.scheduler.inflight or service.weights.lock.waiting)


@router.get("/server_info")
@router.get("/get_server_info")
def server_info(request: Request) -> dict[str, Any]:
    """The few server facts a weight-sync client needs (SGLang reports its whole ``ServerArgs``)."""
    service: Service = request.app.state.service
    return {
        "model_path": service.config.model_name,
        "tp_size": 1,
        "dp_size": 1,
        "pp_size": 1,
        "device": service.engine.device.type,
        "weight_version": service.weights.version,
    }
