"""The no-op processor of the bench queue: ``JETQUEUE_WORKER_PROCESSOR=tests.bench.noop:register``."""

from __future__ import annotations

from jetqueue.processors import JobContext, ProcessorRegistry

QUEUE = "bench"


async def noop(ctx: JobContext) -> None:
    return None


def register(registry: ProcessorRegistry) -> None:
    registry.register(QUEUE, noop)
