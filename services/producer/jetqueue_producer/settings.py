"""Producer settings (env prefix JETQUEUE_PRODUCER_; NATS and catalog from JETQUEUE_*)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class ProducerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JETQUEUE_PRODUCER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_bulk: int = Field(default=10_000, ge=1, description="most jobs one bulk request may carry")
    # Access. Each entry "name:scopes:secret", scopes joined with '+': enqueue, read, cancel, admin.
    tokens: SecretStr = Field(
        default=SecretStr(""), description="API tokens for Authorization: Bearer <secret>, comma separated"
    )
    auth_disabled: bool = Field(
        default=False, description="accept every request without a token: for local development only"
    )
    # Request sizes, checked before a body is read; the SDK also checks every job against the server's max payload.
    max_job_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest body of a one-job request (NATS's default max payload)"
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="largest bulk request body (it is also at most max_bulk × max_job_bytes)",
    )
    register_schedules: bool = Field(default=True, description="register the catalog's recurring jobs at start")
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)

    @property
    def max_bulk_body_bytes(self) -> int:
        """The body limit of a bulk request."""
        return min(self.max_body_bytes, self.max_bulk * self.max_job_bytes)
