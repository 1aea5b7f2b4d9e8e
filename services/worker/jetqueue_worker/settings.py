"""Worker settings (env prefix JETQUEUE_WORKER_; NATS and catalog from JETQUEUE_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JETQUEUE_WORKER_", extra="ignore")

    queue: str = Field(default="", description="the queue this process serves")
    concurrency: int | None = Field(default=None, ge=1, description="overrides the catalog's concurrency")
    prefetch: int = Field(
        default=0, ge=0, le=10_000, description="jobs pulled ahead of free slots (they wait with a renewed lease)"
    )
    worker_id: str | None = None
    processor: str | None = Field(
        default=None,
        description="your processors: 'package.module' (registered with @processor on import) or "
        "'package.module:function' (called with a ProcessorRegistry); default: the reference job pack",
    )
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="port of /metrics, /health (liveness) and /ready; 0 = off"
    )
    grace_s: float = Field(default=30.0, ge=0, description="SIGTERM: time running jobs get to finish")
    heartbeat_s: float = Field(default=10.0, gt=0)
    idle_wait_s: float = Field(default=2.0, gt=0)
    loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto", description="event loop: uvloop when installed (auto), or asyncio's own"
    )
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)
