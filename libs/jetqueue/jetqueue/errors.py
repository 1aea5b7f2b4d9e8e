"""Errors raised by jetqueue; each carries a message fit to show a user."""


class JetqueueError(Exception):
    """Base class of every jetqueue error."""


class UnknownQueue(JetqueueError):
    """The queue name is not in the catalog."""

    def __init__(self, queue: str) -> None:
        super().__init__(f"unknown queue {queue!r}")
        self.queue = queue


class JobNotFound(JetqueueError):
    """No job with that id is known (never enqueued, or its record expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found (never enqueued, or its record expired)")
        self.job_id = job_id


class InvalidJob(JetqueueError):
    """The job or its options are invalid."""


class PayloadTooLarge(InvalidJob):
    """A job (or what would be derived from it) cannot fit the NATS server's max payload."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"job too large: {size} bytes; this NATS server takes jobs of at most {limit} bytes "
            "(keep large payloads elsewhere, e.g. an object store, and pass a reference)"
        )
        self.size = size
        self.limit = limit


class NatsUnavailable(JetqueueError):
    """NATS could not be reached or did not answer in time."""


class ServerTooOld(JetqueueError):
    """The nats-server is older than jetqueue needs."""


class ConflictError(JetqueueError):
    """The operation does not fit the current state (e.g. cancel a finished job)."""


class ScheduleNotFound(JetqueueError):
    """No recurring job with that queue and name."""

    def __init__(self, queue: str, name: str) -> None:
        super().__init__(f"no schedule {name!r} on queue {queue!r}")
        self.queue = queue
        self.name = name
