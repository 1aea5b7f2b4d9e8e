"""A JobQueue's stream and consumers: create, compare with the spec, repair drift.

Builds on :mod:`jetqueue.connection` (the same stream and consumer configs as
every other part) and adds what the catalog cannot say: storage and a size
cap. A consumer update never carries a pause (the server keeps the current
one), and a consumer recreated after it was deleted gets its siblings' pause,
so the operator never undoes a pause.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from jetqueue import names
from jetqueue.catalog import QueueSpec
from jetqueue.connection import job_stream_config, level_consumer_config
from jetqueue_operator.resources import StreamSettings

log = logging.getLogger(__name__)

OWNER_KEY = "jetqueue.io/owner"
_STREAM_FIELDS = ("subjects", "max_age", "duplicate_window", "num_replicas", "max_bytes", "storage")
_CONSUMER_FIELDS = ("filter_subject", "ack_policy", "ack_wait", "max_deliver", "max_ack_pending")


@dataclass(slots=True)
class Provisioned:
    """What :func:`ensure_queue` changed."""

    created_stream: bool = False
    updated_stream: list[str] = field(default_factory=list)
    created_consumers: list[str] = field(default_factory=list)
    updated_consumers: list[str] = field(default_factory=list)

    def changes(self) -> list[str]:
        out = []
        if self.created_stream:
            out.append("created the stream")
        if self.updated_stream:
            out.append("updated stream " + ", ".join(self.updated_stream))
        if self.created_consumers:
            out.append("created consumer(s) " + ", ".join(self.created_consumers))
        if self.updated_consumers:
            out.append("updated consumer(s) " + ", ".join(self.updated_consumers))
        return out


def stream_config(queue: QueueSpec, stream: StreamSettings, owner: str, replicas: int = 1) -> StreamConfig:
    """The queue's stream; ``replicas`` (the deployment's one setting) unless the JobQueue names its own."""
    cfg = job_stream_config(queue, replicas)
    return dataclasses.replace(
        cfg,
        storage=StorageType.MEMORY if stream.storage == "memory" else StorageType.FILE,
        max_bytes=stream.max_bytes,
        metadata={**(cfg.metadata or {}), OWNER_KEY: owner},
    )


def _differs(have: object, want: object, fields: tuple[str, ...]) -> list[str]:
    out = []
    for f in fields:
        a, b = getattr(have, f), getattr(want, f)
        if isinstance(b, float) or isinstance(a, float):
            if abs(float(a or 0) - float(b or 0)) > 1e-3:
                out.append(f)
        elif a != b:
            out.append(f)
    return out


async def ensure_queue(
    js: JetStreamContext, queue: QueueSpec, stream: StreamSettings, owner: str, *, replicas: int = 1
) -> Provisioned:
    """Make the stream and level consumers match the spec (a stream's replicas are never lowered).

    Raises:
        nats.js.errors.APIError: the server refused (e.g. a storage change); the message says why.
    """
    done = Provisioned()
    want = stream_config(queue, stream, owner, replicas)
    try:
        si = await js.stream_info(queue.stream)
    except NotFoundError:
        await js.add_stream(want)
        done.created_stream = True
    else:
        if (si.config.num_replicas or 1) > (want.num_replicas or 1):
            # Lowering replicas loses copies a cluster may be relying on; raise only.
            want = dataclasses.replace(want, num_replicas=si.config.num_replicas)
        diff = _differs(si.config, want, _STREAM_FIELDS)
        if diff:
            # Keep server-added metadata (_nats.*) out of the comparison; send ours.
            await js.update_stream(want)
            done.updated_stream = diff
    pause_until: str | None = None
    missing: list[ConsumerConfig] = []
    for level in range(queue.priority_levels):
        cfg = level_consumer_config(queue, level)
        try:
            ci = await js.consumer_info(queue.stream, cfg.durable_name or "")
        except NotFoundError:
            missing.append(cfg)
            continue
        if ci.paused:
            pause_until = ci.config.pause_until or pause_until
        if _differs(ci.config, cfg, _CONSUMER_FIELDS):
            await js.add_consumer(queue.stream, cfg)  # create-or-update; the pause stays as it is
            done.updated_consumers.append(cfg.durable_name or "")
    for cfg in missing:
        if pause_until:
            # A deleted consumer of a paused queue comes back paused.
            cfg = dataclasses.replace(cfg, pause_until=pause_until)
        await js.add_consumer(queue.stream, cfg)
        done.created_consumers.append(cfg.durable_name or "")
    return done


async def stream_owner(js: JetStreamContext, queue: str) -> str | None:
    """The JobQueue (``namespace/name``) recorded on an existing stream, if any."""
    try:
        si = await js.stream_info(names.job_stream(queue))
    except NotFoundError:
        return None
    return (si.config.metadata or {}).get(OWNER_KEY)
