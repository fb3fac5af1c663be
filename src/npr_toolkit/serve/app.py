"""``npr serve``: the FastAPI application, its uvicorn server, and how it starts and stops.

``create_app(engine, config)`` builds the application: SGLang's native API (``sglang_routes.py``, and
its weight updates in ``weight_routes.py``) and the OpenAI-compatible one (``openai_routes.py``) over
one ``Service`` (limits, checks, the engine worker, the weights). Errors keep each API's shapes,
whatever raised them: OpenAI's on ``/v1/*``, SGLang's elsewhere (a validation error is a 400, as both
servers answer, not FastAPI's 422).

``serve(model, config)`` is the command: it binds first (a port in use is one clear error before the
model loads), loads the torch engine, then serves until SIGINT or SIGTERM. On either signal the server
stops admitting (``/health`` 503, new requests 503), the batch running finishes (or is aborted after
``shutdown_grace_s``), queued requests get 503, and the process exits 0.

``Server(engine, config)`` runs the same application in a background thread (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..engine import openai_wire, sglang_wire
from . import openai_routes, sglang_routes, weight_routes
from .config import ServeConfig
from .limits import BodyDeadline, GuardedH11Protocol
from .service import Service

log = logging.getLogger(__name__)


# --- the application ------------------------------------------------------------------------------
def create_app(engine, config: ServeConfig) -> FastAPI:
    """The application over ``engine`` (a ``TorchEngine``); its engine worker stops with the app."""
    service = Service(engine, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.scheduler.close()

    app = FastAPI(
        title="npr serve",
        lifespan=lifespan,
        max_body_size=config.max_body_bytes,
        strict_content_type=False,  # a client that sends JSON without a Content-Type still gets an answer
    )
    app.state.service = service
    app.include_router(sglang_routes.router)
    app.include_router(weight_routes.router)
    app.include_router(openai_routes.router)
    app.add_middleware(BodyDeadline, timeout_s=config.body_timeout_s)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        answer = _shaped(request, error.status_code, str(error.detail))
        if error.status_code in (408, 413):  # the rest of the body is not wanted: free the connection now
            answer.headers["Connection"] = "close"
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        detail = (first.get("ctx") or {}).get("error", "")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return _shaped(request, 400, f"{message}: {detail}" if detail else message, where or None)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed")
        return _shaped(request, 500, f"{type(error).__name__}: {error}")

    return app


def _shaped(request: Request, status: int, message: str, param: str | None = None) -> JSONResponse:
    """An error in the shape of the API the request was for."""
    if request.url.path.startswith("/v1/"):
        return JSONResponse(openai_wire.error_body(status, message, param), status_code=status)
    if status in (404, 405):
        return JSONResponse({"detail": message}, status_code=status)  # FastAPI's, as SGLang answers them
    return JSONResponse(sglang_wire.error_body("request", status, message), status_code=status)


# --- uvicorn --------------------------------------------------------------------------------------
class _Uvicorn(uvicorn.Server):
    """uvicorn's server, with two changes: shutting down first stops admissions (queued requests get
    503 instead of waiting for the engine), and a handled SIGINT/SIGTERM is a clean exit (status 0),
    not re-raised once the server has stopped."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.scheduler.begin_shutdown()
        await super().shutdown(sockets)


def _uvicorn(app: FastAPI, config: ServeConfig) -> _Uvicorn:
    settings = uvicorn.Config(
        app,
        http=GuardedH11Protocol,
        lifespan="on",
        log_config=None,  # the caller's logging (the CLI: stderr); stdout stays the CLI's
        timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=config.shutdown_grace_s,
        limit_concurrency=config.max_connections,
        backlog=2048,  # a client forking many branch requests at once must not be reset
    )
    settings.header_timeout_s = config.header_timeout_s  # read by GuardedH11Protocol
    return _Uvicorn(settings, app.state.service)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or an ``OSError`` saying which failed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# --- entry points ---------------------------------------------------------------------------------
def serve(
    model: str,
    config: ServeConfig | None = None,
    *,
    device: str | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Load ``model`` into the torch engine and serve it until SIGINT or SIGTERM (module doc).

    Raises:
        OSError: the address cannot be bound, or the model cannot be read.
    """
    from ..engine.torch_engine import TorchEngine

    config = config or ServeConfig(model_name=model)
    sock = bind(config.host, config.port)
    try:
        engine = TorchEngine.from_pretrained(model, device=device)
        server = _uvicorn(create_app(engine, config), config)
        if on_ready is not None:
            on_ready(_url(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()


class Server:
    """``npr serve`` over ``engine`` in a background thread: ``with Server(engine) as url: ...``."""

    def __init__(self, engine, config: ServeConfig | None = None):
        self.config = config or ServeConfig(port=0)
        self.app = create_app(engine, self.config)
        self.service: Service = self.app.state.service
        self._server = _uvicorn(self.app, self.config)
        self._sock = bind(self.config.host, self.config.port)
        self.url = _url(self._sock)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("npr serve did not start")
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self.config.shutdown_grace_s + 30)
        self._sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
