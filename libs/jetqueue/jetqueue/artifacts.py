"""Files a processor attaches to a job (screenshots, HTML snapshots), kept in a JetStream object store."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from jetqueue import names
from jetqueue.errors import InvalidJob

MAX_ARTIFACT_BYTES = 20 * 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")
ALLOWED_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/svg+xml",
    "text/html",
    "text/plain",
    "application/json",
    "application/pdf",
    "text/csv",
)


@dataclass(slots=True, frozen=True)
class Artifact:
    name: str
    content_type: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def bucket(js: JetStreamContext, *, create: bool = True, replicas: int = 1) -> ObjectStore:
    try:
        return await js.object_store(names.ARTIFACTS_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        if not create:
            raise
        return await js.create_object_store(
            names.ARTIFACTS_BUCKET,
            config=ObjectStoreConfig(
                bucket=names.ARTIFACTS_BUCKET,
                description="jetqueue job artifacts",
                ttl=float(14 * 86400),
                storage=StorageType.FILE,
                replicas=replicas,
            ),
        )


def check(name: str, data: bytes, content_type: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidJob("artifact names are 1-100 letters, digits, '.', '_' or '-' and start with a letter or digit")
    if content_type not in ALLOWED_TYPES:
        raise InvalidJob(f"artifact type {content_type!r} is not one of {', '.join(ALLOWED_TYPES)}")
    if len(data) > MAX_ARTIFACT_BYTES:
        raise InvalidJob(f"artifact {name} is {len(data)} bytes; the limit is {MAX_ARTIFACT_BYTES}")


async def put(js: JetStreamContext, job_id: str, name: str, data: bytes, content_type: str) -> Artifact:
    """Store a file for a job (replacing one of the same name)."""
    check(name, data, content_type)
    obs = await bucket(js)
    await obs.put(
        names.artifact_object(job_id, name),
        data,
        meta=ObjectMeta(name=names.artifact_object(job_id, name), description=content_type),
    )
    return Artifact(name=name, content_type=content_type, size=len(data))


async def get(js: JetStreamContext, job_id: str, name: str) -> tuple[bytes, str] | None:
    """(data, content type) of a job's file, or None."""
    if not NAME_RE.match(name):
        return None
    try:
        obs = await bucket(js, create=False)
        res = await obs.get(names.artifact_object(job_id, name))
    except (BucketNotFoundError, NotFoundError, ObjectNotFoundError):
        return None
    content_type = (res.info.description or "application/octet-stream") if res.info else "application/octet-stream"
    return bytes(res.data or b""), content_type
