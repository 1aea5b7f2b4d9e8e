"""Settings shared by every service (each service adds its own prefix)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """NATS connection and catalog location.

    Services subclass this with their own ``env_prefix`` (``JETQUEUE_PRODUCER_``
    …); the shared ``JETQUEUE_NATS_URL`` and ``JETQUEUE_CATALOG`` are read by all.
    """

    model_config = SettingsConfigDict(env_prefix="JETQUEUE_", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma separated")
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = Field(default=None, description="path of a NATS .creds file")
    nats_tls_ca: str | None = Field(default=None, description="CA bundle (PEM) to verify the NATS server with")
    nats_tls_cert: str | None = Field(default=None, description="client certificate (PEM) for mutual TLS")
    nats_tls_key: str | None = Field(default=None, description="private key (PEM) of the client certificate")
    replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="JetStream replicas of every stream and bucket jetqueue creates (3 on a production cluster); "
        "an existing stream with more replicas is never downgraded",
    )
    catalog: str | None = Field(default=None, description="path of a catalog YAML; the packaged seed catalog if unset")
    connect_timeout_s: float = 5.0
    provision: bool = Field(default=True, description="create/update streams and consumers at start")

    def servers(self) -> list[str]:
        """Server URLs, with user and password folded in when they are set."""
        from urllib.parse import quote, urlsplit, urlunsplit

        out = []
        for raw in (s.strip() for s in self.nats_url.split(",")):
            if not raw:
                continue
            parts = urlsplit(raw if "://" in raw else f"nats://{raw}")
            if self.nats_user and "@" not in parts.netloc:
                cred = quote(self.nats_user, safe="") + ":" + quote(self.nats_password or "", safe="")
                parts = parts._replace(netloc=f"{cred}@{parts.netloc}")
            out.append(urlunsplit(parts))
        return out
