"""Time in the monitor: everything is UTC; SQLite hands back naive datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_to_dt(ms: int | float | None) -> datetime | None:
    """A wire timestamp (ms since 1970) as a UTC datetime; None for none (or 0)."""
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def aware(dt: datetime | None) -> datetime | None:
    """``dt`` as UTC-aware (SQLite returns naive datetimes)."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt
