"""Structured JSON logs; job log lines carry job id, queue, attempt and trace id.

The worker sets the job context (a context variable) around each job, so every
line logged while the job runs — by the runtime or by processor code, with any
logger — carries those fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_job: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("jetqueue_job", default=None)

FIELDS = ("job_id", "queue", "attempt", "trace_id", "worker")


@contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (job_id, queue, attempt, trace_id…) to log records made inside the block."""
    token = _job.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _job.reset(token)


def enter_job(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    """Like :func:`job_context` without the context manager (the worker's hot path); undo with :func:`leave_job`."""
    return _job.set(fields)


def leave_job(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _job.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current job context (e.g. the trace id once the span exists)."""
    ctx = _job.get()
    if ctx is not None:
        ctx.update({k: v for k, v in fields.items() if v is not None})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the job fields, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = _job.get()
        if ctx:
            out.update(ctx)
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (services call this in ``__main__``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
