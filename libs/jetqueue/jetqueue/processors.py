"""Processor registration: the public API for code that runs jobs.

::

    from jetqueue import processor, JobContext

    @processor("email-send")
    async def send(ctx: JobContext) -> dict:
        await ctx.progress(50)
        return {"sent": True}

A processor receives a :class:`JobContext` and returns a JSON-serialisable
result. Raising fails the attempt (retried per the queue's settings); raising
:class:`PermanentError` dead-letters the job at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from jetqueue.errors import JetqueueError

Processor = Callable[["JobContext"], Awaitable[Any]]

JOB_LOG = logging.getLogger("jetqueue.job")


class PermanentError(JetqueueError):
    """Raise from a processor to fail a job without further retries."""


class JobCancelled(JetqueueError):
    """Raised inside a processor when its job was cancelled."""


@dataclass(slots=True)
class JobContext:
    """What a processor knows about its job and can do with it."""

    job_id: str
    queue: str
    name: str
    data: Any
    attempt: int
    attempts: int
    user_id: str | None = None
    enqueued_at: int | None = None
    # Inside a worker every line logged while the job runs carries its id, queue and attempt
    # (jetqueue.logs), whatever logger it goes through; this one is just a convenient name.
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger = JOB_LOG
    _progress_cb: Callable[[float], Awaitable[None]] | None = None
    _attach_cb: Callable[[str, bytes, str], Awaitable[None]] | None = None
    _cancelled: asyncio.Event | None = None

    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the job is cancelled (made on first use: most jobs never look)."""
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
        return self._cancelled

    async def progress(self, value: float) -> None:
        """Report progress 0-100 (rate-limited by the worker)."""
        if not 0 <= value <= 100:
            raise ValueError("progress is a percentage between 0 and 100")
        if self._cancelled is not None and self._cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if self._progress_cb is not None:
            await self._progress_cb(float(value))

    @property
    def can_attach(self) -> bool:
        """Whether files can be attached (inside a worker; not in a bare unit test)."""
        return self._attach_cb is not None

    async def attach(self, name: str, data: bytes, content_type: str) -> None:
        """Keep a file with the job (a screenshot, an HTML snapshot); the monitor shows it.

        Raises:
            InvalidJob: bad name, type not allowed, or over 20 MiB.
        """
        if self._attach_cb is None:
            raise JetqueueError("attach is only available inside a worker")
        await self._attach_cb(name, data, content_type)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.attempts


class ProcessorRegistry:
    """Processors by queue, and optionally by job name within a queue."""

    def __init__(self) -> None:
        self._by_queue: dict[str, Processor] = {}
        self._by_name: dict[tuple[str, str], Processor] = {}

    def register(self, queue: str, fn: Processor, *, name: str | None = None) -> None:
        key = (queue, name) if name else None
        if key is not None:
            if key in self._by_name:
                raise JetqueueError(f"a processor for {queue}/{name} is already registered")
            self._by_name[key] = fn
        else:
            if queue in self._by_queue:
                raise JetqueueError(f"a processor for queue {queue} is already registered")
            self._by_queue[queue] = fn

    def resolve(self, queue: str, name: str) -> Processor | None:
        return self._by_name.get((queue, name)) or self._by_queue.get(queue)

    def names(self, queue: str) -> set[str]:
        """Job names with a processor of their own on ``queue``."""
        return {n for q, n in self._by_name if q == queue}

    def queues(self) -> set[str]:
        return set(self._by_queue) | {q for q, _ in self._by_name}

    def clear(self) -> None:
        self._by_queue.clear()
        self._by_name.clear()


registry = ProcessorRegistry()


def processor(
    queue: str, *, name: str | None = None, into: ProcessorRegistry | None = None
) -> Callable[[Processor], Processor]:
    """Register ``fn`` as the processor of ``queue`` (or of job ``name`` in it)."""

    def deco(fn: Processor) -> Processor:
        (into or registry).register(queue, fn, name=name)
        return fn

    return deco
