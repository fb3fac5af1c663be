"""``npr serve``'s settings: where it listens and the bound on everything a client can make it do.

Every limit answers a way a client (careless or hostile) could exhaust the server: the queue bounds
work accepted, ``max_outputs``/``max_new_tokens``/``max_prompt_tokens`` bound one request's work and memory
(checked before tokenizing or queueing), the body size bounds what is read, and the three timeouts
bound how long a silent or slow connection is kept. The weight-update timeouts bound how long a trainer
that stops half-way can hold the server (``weights.py``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    host: str = Field("127.0.0.1", description="interface to bind; keep 127.0.0.1 unless you mean it")
    port: int = Field(30000, ge=0, le=65535, description="0: any free port")
    model_name: str = Field("npr", description="the name /v1/models reports (requests may name any model)")
    max_queue: int = Field(64, ge=1, description="requests accepted and not yet answered; beyond: 503")
    max_outputs: int = Field(64, ge=1, description="most outputs (prompts x n) in one request")
    max_new_tokens: int | None = Field(None, ge=1, description="most tokens per request (default: the context)")
    max_prompt_tokens: int | None = Field(None, ge=1, description="longest prompt (default: the context - 1)")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body; beyond: 413")
    header_timeout_s: float = Field(10.0, gt=0, description="a connection must send its request head within")
    body_timeout_s: float = Field(60.0, gt=0, description="the whole body must arrive within; else 408")
    keep_alive_s: int = Field(5, ge=1, description="an idle keep-alive connection is closed after")
    max_connections: int = Field(1024, ge=1, description="open connections; beyond: 503")
    shutdown_grace_s: int = Field(30, ge=1, description="on SIGINT/SIGTERM, running requests may finish within")
    weight_group_timeout_s: float = Field(
        600.0, gt=0, description="a weights-update group: joining it, and each broadcast in it, must finish within"
    )
    weight_session_timeout_s: float = Field(
        600.0, gt=0, description="an update session (/begin_weight_update) idle this long is ended for the client"
    )
