"""Processors a user would ship: loaded by a worker through JETQUEUE_WORKER_PROCESSOR."""

from jetqueue import JobContext
from jetqueue.processors import ProcessorRegistry


async def shout(ctx: JobContext) -> dict[str, str]:
    return {"shout": str(ctx.data.get("text", "")).upper()}


def register(registry: ProcessorRegistry) -> None:
    registry.register("email-send", shout)
