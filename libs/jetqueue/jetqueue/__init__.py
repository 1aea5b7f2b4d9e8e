"""jetqueue: a job queue on NATS JetStream (contracts, SDK and control functions)."""

from jetqueue.catalog import Catalog, QueueSpec, load_catalog
from jetqueue.client import JobClient
from jetqueue.errors import (
    JetqueueError,
    JobNotFound,
    NatsUnavailable,
    ServerTooOld,
    UnknownQueue,
)
from jetqueue.job import EnqueueResult, JobOptions, JobState, JobStatus
from jetqueue.processors import JobContext, processor, registry

__version__ = "0.1.0"

__all__ = [
    "Catalog",
    "EnqueueResult",
    "JetqueueError",
    "JobClient",
    "JobContext",
    "JobNotFound",
    "JobOptions",
    "JobState",
    "JobStatus",
    "NatsUnavailable",
    "QueueSpec",
    "ServerTooOld",
    "UnknownQueue",
    "__version__",
    "load_catalog",
    "processor",
    "registry",
]
