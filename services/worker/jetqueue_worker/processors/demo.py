"""Demo and test controls a job can carry in ``data["_simulate"]`` to fake slowness and failures."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from jetqueue.processors import JobCancelled, JobContext, PermanentError

log = logging.getLogger(__name__)

SLICE_S = 0.01  # how often a simulated sleep checks for cancellation

_TYPES: dict[str, tuple[type, ...]] = {
    "sleep_ms": (int, float),
    "fail_attempts": (int,),
    "fail": (bool,),
    "permanent": (bool,),
    "fail_rate": (int, float),
}


def _controls(ctx: JobContext) -> dict[str, Any]:
    """Return the validated ``_simulate`` controls of ``ctx`` (empty when there are none)."""
    raw = ctx.data.get("_simulate") if isinstance(ctx.data, Mapping) else None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PermanentError(f"_simulate must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise PermanentError(f"_simulate has unknown keys {unknown}; allowed: {sorted(_TYPES)}")
    for key, value in raw.items():
        allowed = _TYPES[key]
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in allowed)
            raise PermanentError(f"_simulate.{key} must be {names}, not {type(value).__name__}")
    if raw.get("sleep_ms", 0) < 0:
        raise PermanentError("_simulate.sleep_ms must be >= 0")
    if raw.get("fail_attempts", 0) < 0:
        raise PermanentError("_simulate.fail_attempts must be >= 0")
    if not 0 <= raw.get("fail_rate", 0) <= 1:
        raise PermanentError("_simulate.fail_rate must be between 0 and 1")
    return dict(raw)


async def simulate(ctx: JobContext, rng: random.Random | None = None) -> None:
    """Apply the job's ``_simulate`` controls; a no-op for jobs without them.

    Controls: ``sleep_ms`` (sleep, stopping early if the job is cancelled),
    ``permanent`` (fail without retry), ``fail`` (always fail), ``fail_attempts``
    (fail while ``ctx.attempt`` is at most this) and ``fail_rate`` (fail at random).

    Args:
        ctx: The running job.
        rng: Random source for ``fail_rate`` (the module's by default).

    Raises:
        PermanentError: The controls are malformed, or ``permanent`` is true.
        RuntimeError: A simulated (retryable) failure.
        JobCancelled: The job was cancelled during ``sleep_ms``.
    """
    controls = _controls(ctx)
    if not controls:
        return
    log.debug("job %s simulating %s", ctx.job_id, controls)
    remaining = controls.get("sleep_ms", 0) / 1000
    while remaining > 0:
        if ctx.cancelled.is_set():
            raise JobCancelled(f"job {ctx.job_id} was cancelled")
        step = min(SLICE_S, remaining)
        await asyncio.sleep(step)
        remaining -= step
    if ctx.cancelled.is_set():
        raise JobCancelled(f"job {ctx.job_id} was cancelled")
    if controls.get("permanent"):
        raise PermanentError("simulated permanent failure")
    if controls.get("fail"):
        raise RuntimeError("simulated failure")
    if ctx.attempt <= controls.get("fail_attempts", 0):
        raise RuntimeError(f"simulated failure on attempt {ctx.attempt}")
    rate = controls.get("fail_rate", 0)
    if rate and (rng or random).random() < rate:
        raise RuntimeError(f"simulated random failure (rate {rate})")
