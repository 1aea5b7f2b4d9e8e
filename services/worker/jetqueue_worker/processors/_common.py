"""Helpers shared by the processor modules: payload validation (bad input is permanent) and binding."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jetqueue.processors import JobContext, PermanentError, Processor
from jetqueue_worker.processors.services import Services


def bind(fn: Callable[[JobContext, Services], Awaitable[Any]], services: Services) -> Processor:
    """Turn ``fn(ctx, services)`` into a processor ``run(ctx)`` closed over ``services``."""

    async def run(ctx: JobContext) -> Any:
        return await fn(ctx, services)

    run.__name__ = run.__qualname__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def payload(ctx: JobContext) -> Mapping[str, Any]:
    """Return the job data, which must be an object."""
    if not isinstance(ctx.data, Mapping):
        raise PermanentError(f"{ctx.queue}: job data must be an object, not {type(ctx.data).__name__}")
    return ctx.data


def _get(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], required: bool) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise PermanentError(f"missing required field '{key}'")
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise PermanentError(f"field '{key}' must be {names}, not {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise PermanentError(f"field '{key}' must not be empty")
    return value


def req_str(data: Mapping[str, Any], key: str) -> str:
    """Return the non-empty string ``data[key]``."""
    value: str = _get(data, key, (str,), True)
    return value


def opt_str(data: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    """Return the string ``data[key]`` if present, else ``default``."""
    value: str | None = _get(data, key, (str,), False)
    return default if value is None else value


def req_number(data: Mapping[str, Any], key: str) -> float:
    """Return the number ``data[key]`` (booleans are not numbers here)."""
    return float(_get(data, key, (int, float), True))


def req_list(data: Mapping[str, Any], key: str) -> list[Any]:
    """Return the list ``data[key]``."""
    value: list[Any] = _get(data, key, (list,), True)
    return value


def req_dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Return the object ``data[key]``."""
    value: dict[str, Any] = _get(data, key, (dict,), True)
    return value


def opt_dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Return the object ``data[key]`` if present, else an empty one."""
    value: dict[str, Any] | None = _get(data, key, (dict,), False)
    return {} if value is None else value


def opt_bool(data: Mapping[str, Any], key: str) -> bool:
    """Return the boolean ``data[key]`` if present, else False."""
    return bool(_get(data, key, (bool,), False))


def now_iso() -> str:
    """The current UTC time as ISO 8601."""
    return datetime.now(UTC).isoformat()
