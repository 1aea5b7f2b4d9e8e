"""Operator settings (env prefix JETQUEUE_OPERATOR_; NATS from JETQUEUE_*)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class OperatorSettings(BaseSettings):
    """How one operator replica runs; the chart sets every field (docs/operations.md lists them).

    Several replicas coordinate through a ``coordination.k8s.io`` Lease
    (``leader_election``): the holder runs kopf, the others stand by, so exactly
    one replica acts whatever the replica count (kopf's own peering freezes every
    replica that shares a priority).
    """

    model_config = SettingsConfigDict(env_prefix="JETQUEUE_OPERATOR_", extra="ignore")

    namespaces: str = Field(default="", description="comma-separated namespaces to watch; empty = the whole cluster")
    leader_election: bool = Field(
        default=False, description="hold a Lease before acting (several replicas); off: act at once (one replica)"
    )
    lease_name: str = Field(default="jetqueue-operator", description="name of the leader election Lease")
    lease_namespace: str = Field(default="", description="namespace of the Lease: the operator's own (POD_NAMESPACE)")
    identity: str = Field(default="", description="this replica's name in the Lease (the pod name); empty: host name")
    lease_duration_s: float = Field(
        default=15.0, gt=0, description="a standby takes over this long after the holder's last renewal"
    )
    renew_deadline_s: float = Field(
        default=10.0, gt=0, description="the holder stops acting when it could not renew for this long"
    )
    retry_period_s: float = Field(default=2.0, gt=0, description="how often the Lease is renewed or tried")
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
    alerts_queue: str = Field(
        default="", description="queue whose workers send admin alerts of dead-lettered jobs (empty: no alerts)"
    )
    nats_creds_secret: str = Field(default="", description="Secret with a nats.creds file mounted into workers")
    nats_tls_secret: str = Field(
        default="", description="Secret with ca.crt, tls.crt and tls.key mounted into workers for NATS TLS"
    )
    worker_service_account: str = ""
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)

    @model_validator(mode="after")
    def _lease_timing(self) -> OperatorSettings:
        # The holder must give up (renew deadline) before a standby may take over (lease
        # duration), or two replicas act at once after a partition.
        if self.leader_election and not (self.retry_period_s < self.renew_deadline_s < self.lease_duration_s):
            raise ValueError("leader election needs retry_period_s < renew_deadline_s < lease_duration_s")
        return self

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
