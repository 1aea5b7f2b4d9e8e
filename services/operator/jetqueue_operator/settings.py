"""Operator settings (env prefix JETQUEUE_OPERATOR_; NATS from JETQUEUE_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JETQUEUE_OPERATOR_", extra="ignore")

    namespaces: str = Field(default="", description="comma-separated namespaces to watch; empty = the whole cluster")
    peering: str = Field(default="jetqueue-operator", description="kopf peering object: one active replica")
    standalone: bool = Field(default=False, description="no peering (a single replica, or local runs)")
    priority: int = Field(default=0, description="peering priority of this replica")
    liveness_port: int = Field(default=8080, ge=0, le=65535, description="GET /healthz; 0 = off")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="GET /metrics (Prometheus); 0 = off")
    metrics_host: str = Field(default="0.0.0.0", description="address /metrics listens on")
    reconcile_interval_s: float = Field(default=5.0, gt=0, description="how often each JobQueue is reconciled")
    action_wait_s: float = Field(default=120.0, ge=0, description="how long a QueueAction waits for its JobQueue")
    drain_settle_s: float = Field(default=30.0, gt=0, description="drain: time running jobs get to settle")
    worker_image: str = Field(default="jetqueue-worker:latest", description="default worker image")
    worker_image_pull_policy: str = "IfNotPresent"
    worker_env_secret: str = Field(
        default="jetqueue-nats", description="Secret with JETQUEUE_NATS_URL (and user/password) for workers"
    )
    nats_creds_secret: str = Field(default="", description="Secret with a nats.creds file mounted into workers")
    nats_tls_secret: str = Field(
        default="", description="Secret with ca.crt, tls.crt and tls.key mounted into workers for NATS TLS"
    )
    worker_service_account: str = ""
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
