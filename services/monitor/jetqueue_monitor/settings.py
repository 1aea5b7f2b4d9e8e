"""Monitor settings (env prefix JETQUEUE_MONITOR_; NATS and catalog from JETQUEUE_*)."""

from __future__ import annotations

import secrets

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jetqueue.settings import CommonSettings


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JETQUEUE_MONITOR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    database_url: str = Field(
        default="sqlite+aiosqlite:///.jetqueue/monitor.db",
        description="SQLAlchemy async URL: postgresql+asyncpg://… or sqlite+aiosqlite:///…",
    )
    # Access. Each entry "name:role:secret"; role is viewer, operator or admin.
    tokens: str = Field(default="", description="API tokens for Authorization: Bearer <secret>")
    users: str = Field(default="", description="UI logins, 'name:role:password' comma separated")
    session_secret: str = Field(
        default_factory=lambda: secrets.token_hex(32),
        description="signs session cookies (set it, or sessions end at restart)",
    )
    secure_cookies: bool = Field(
        default=True, description="mark cookies Secure: browsers send them over HTTPS only (false for plain-http dev)"
    )
    # Login throttling, per replica (in memory): failures in a sliding window, then 429.
    login_max_failures: int = Field(default=5, ge=1, description="failed logins per username within the window")
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="failed logins per client address within the window (any usernames)"
    )
    login_window_s: float = Field(default=300.0, gt=0, description="the window the login failures are counted in")
    viewer_sees_payloads: bool = Field(default=False, description="whether viewers see job data and results")
    # Rules.
    offline_after_s: float = Field(default=30.0, gt=0)
    lost_worker_window_s: float = Field(
        default=3600.0, gt=0, description="a worker gone silent counts in jetqueue_workers_lost this long"
    )
    degraded_failure_ratio: float = Field(default=0.3, gt=0, le=1)
    degraded_window: int = Field(default=20, ge=1, description="recent jobs per worker the ratio looks at")
    sample_interval_s: float = Field(default=5.0, gt=0)
    backlog_surge_factor: float = Field(default=2.0, gt=1, description="waiting grew by this factor in 10 min")
    backlog_surge_min: int = Field(default=100, ge=1)
    failure_spike_ratio: float = Field(default=0.2, gt=0, le=1, description="failed share of the last 15 min")
    failure_spike_min: int = Field(default=10, ge=1)
    # Database timeouts: during an outage a request answers 503 within seconds instead of hanging.
    db_connect_timeout_s: float = Field(default=3.0, gt=0, description="PostgreSQL connect timeout")
    db_statement_timeout_s: float = Field(default=5.0, gt=0, description="PostgreSQL per-statement timeout")
    db_pool_timeout_s: float = Field(default=3.0, gt=0, description="wait for a free pooled connection")
    health_timeout_s: float = Field(default=2.0, gt=0, description="/health gives up on the database after this")
    drain_token_ttl_s: float = Field(default=300.0, gt=0)
    ingest: bool = Field(
        default=True, description="consume events/heartbeats and track waiting jobs (off for read-only replicas)"
    )
    track_jobs: bool = Field(
        default=True, description="list jobs from their enqueue (with ingest): follow and reconcile the job subjects"
    )
    track_check_interval_s: float = Field(
        default=5.0, gt=0, description="how often the job tracker settles due delays and checks the store's counts"
    )
    reconcile_every_s: float = Field(
        default=60.0, gt=0, description="least time between two reconciles of a queue whose store counts drifted"
    )
    bulk_rate_per_s: float = Field(default=200.0, gt=0, description="jobs a bulk action touches per second, at most")
    bulk_max_jobs: int = Field(default=100_000, ge=1, description="the most jobs one bulk action may touch")
    log_level: str = "INFO"
    common: CommonSettings = Field(default_factory=CommonSettings)
