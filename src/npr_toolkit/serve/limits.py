"""Deadlines on slow or silent connections, which uvicorn and Starlette do not bound by themselves.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) and caps a request head's size
(h11, 16 KiB), and FastAPI caps a body's size (``max_body_size``, 413). Two gaps remain, each a way
for a client to hold the server's memory without ever finishing a request:

- ``GuardedH11Protocol``: a connection must deliver a complete request head within
  ``header_timeout_s`` of opening (or of the previous response), or it is closed. Without it a
  connection that sends nothing, or one header byte a second, is kept forever.
- ``BodyDeadline``: the whole body must arrive within ``body_timeout_s`` of the head, or the request
  gets 408. Without it a ``Content-Length`` larger than the body waits forever.
"""

from __future__ import annotations

import asyncio

import h11
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline on receiving each request head.

    ``header_timeout_s`` is read from the uvicorn ``Config`` (set as an attribute by ``app.run``).
    """

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # a keep-alive connection starts its next request head
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = getattr(self.config, "header_timeout_s", 10.0)
        self._deadline = self.loop.call_later(timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class BodyDeadline:
    """ASGI middleware: a request's body must be complete within ``timeout_s`` (else HTTP 408)."""

    def __init__(self, app: ASGIApp, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"The request body did not arrive within {self.timeout_s:g} s.") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)
