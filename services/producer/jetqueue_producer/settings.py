"""Producer settings (env prefix JETQUEUE_PRODUCER_; NATS and catalog from JETQUEUE_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class ProducerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JETQUEUE_PRODUCER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_bulk: int = Field(default=10_000, ge=1, description="most jobs one bulk request may carry")
    register_schedules: bool = Field(default=True, description="register the catalog's recurring jobs at start")
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)
