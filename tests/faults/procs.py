"""Processors of the fault suite, loaded by workers with ``JETQUEUE_WORKER_PROCESSOR=tests.faults.procs:register``.

Every run appends lines to the file named by ``JQ_FAULTS_RUNS`` (opened with
O_APPEND, one ``write`` per line, so lines of concurrent processes never mix):
``S <job_id> <pid> <time>`` when a run starts, ``E ...`` when the processor
returned (ran to completion), ``F ...`` when it raised. Tests count runs from
the outside with :func:`tests.faults.measure.read_runs`.

A job's data steers what the processor does: ``sleep_ms`` (work time),
``result_bytes`` (return a result that large), ``error_bytes`` (raise an
exception whose message is that large).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from jetqueue import JobContext
from jetqueue.processors import ProcessorRegistry

QUEUE = "email-send"
RUNS_ENV = "JQ_FAULTS_RUNS"

_fd: int | None = None


def _log(kind: str, job_id: str) -> None:
    global _fd
    path = os.environ.get(RUNS_ENV)
    if not path:
        return
    if _fd is None:
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{kind} {job_id} {os.getpid()} {time.time():.4f}\n".encode())


async def work(ctx: JobContext) -> Any:
    """Sleep, then return a small (or a huge) result, or raise a huge error."""
    _log("S", ctx.job_id)
    data = ctx.data if isinstance(ctx.data, dict) else {}
    if sleep_ms := data.get("sleep_ms"):
        await asyncio.sleep(sleep_ms / 1000)
    if error_bytes := data.get("error_bytes"):
        _log("F", ctx.job_id)
        raise RuntimeError("e" * error_bytes)
    result: Any = {"ok": True}
    if result_bytes := data.get("result_bytes"):
        result = {"blob": "r" * result_bytes}
    _log("E", ctx.job_id)
    return result


def register(registry: ProcessorRegistry) -> None:
    registry.register(QUEUE, work)
