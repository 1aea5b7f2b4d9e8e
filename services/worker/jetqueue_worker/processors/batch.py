"""Processors for background batch work: audit-log, analytics-aggregate, data-dtg-sync, report-generate, cleanup."""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from jetqueue.processors import JobContext, PermanentError, ProcessorRegistry
from jetqueue_worker.processors._common import (
    bind,
    now_iso,
    opt_dict,
    opt_str,
    payload,
    req_dict,
    req_str,
)
from jetqueue_worker.processors.demo import simulate
from jetqueue_worker.processors.services import Services

log = logging.getLogger(__name__)

AGGREGATION_TYPES = ("daily", "weekly", "monthly")
REPORT_FORMATS = ("pdf", "csv", "xlsx")


def _parse_time(value: str | None, key: str) -> datetime | None:
    try:
        return None if value is None else datetime.fromisoformat(value)
    except ValueError:
        raise PermanentError(f"field '{key}' is not ISO 8601: {value!r}") from None


async def audit_log(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Record one audit entry (single attempt: the queue does not retry)."""
    await simulate(ctx)
    data = payload(ctx)
    entry = {
        "action": req_str(data, "action"),
        "entity_type": req_str(data, "entity_type"),
        "entity_id": opt_str(data, "entity_id"),
        "actor_id": opt_str(data, "actor_id", ctx.user_id),
        "details": opt_dict(data, "details"),
        "occurred_at": opt_str(data, "occurred_at") or now_iso(),
    }
    await ctx.progress(50)
    audit_id = await s.audit.write(entry)
    await ctx.progress(100)
    return {"audit_id": audit_id, "recorded_at": now_iso()}


async def analytics_aggregate(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Aggregate one period's figures; ``date`` defaults to yesterday (UTC) (seed §6.1)."""
    await simulate(ctx)
    data = payload(ctx)
    kind = req_str(data, "aggregation_type")
    if kind not in AGGREGATION_TYPES:
        raise PermanentError(f"field 'aggregation_type' must be one of {AGGREGATION_TYPES}, got {kind!r}")
    day_at = _parse_time(opt_str(data, "date"), "date")
    day = day_at.date() if day_at else datetime.now(UTC).date() - timedelta(days=1)
    await ctx.progress(10)
    rows = await s.analytics.collect(kind, day)
    await ctx.progress(50)
    total = sum(r.get("amount", 0) for r in rows)
    metrics = {
        "orders": len(rows),
        "total_amount": total,
        "avg_amount": round(total / len(rows), 2) if rows else 0,
        "avg_ei": round(sum(r.get("ei", 0) for r in rows) / len(rows), 2) if rows else None,
    }
    await ctx.progress(80)
    await s.analytics.store(kind, day, metrics)
    await ctx.progress(100)
    return {"aggregation_type": kind, "date": day.isoformat(), "records_processed": len(rows), "metrics": metrics}


async def dtg_sync(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Pull a vehicle's digital tachograph (DTG) records newer than ``since`` and store them."""
    await simulate(ctx)
    data = payload(ctx)
    vehicle_id = req_str(data, "vehicle_id")
    since = _parse_time(opt_str(data, "since"), "since")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    await ctx.progress(10)
    records = await s.dtg.fetch_records(vehicle_id, since)
    await ctx.progress(50)
    synced = await s.dtg.store_records(vehicle_id, records) if records else 0
    await ctx.progress(100)
    last = max((r["ts"] for r in records), default=None)
    return {
        "vehicle_id": vehicle_id,
        "synced_count": synced,
        "last_record_at": datetime.fromtimestamp(last, UTC).isoformat() if last is not None else None,
    }


async def report_generate(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Query, render and store a report; the report id is the job id so a retry overwrites, not duplicates."""
    await simulate(ctx)
    data = payload(ctx)
    report_type = req_str(data, "report_type")
    fmt = opt_str(data, "format", "pdf")
    if fmt not in REPORT_FORMATS:
        raise PermanentError(f"field 'format' must be one of {REPORT_FORMATS}, got {fmt!r}")
    report_id = f"rpt-{ctx.job_id}"
    await ctx.progress(10)
    rows = await s.reports.query(report_type, opt_dict(data, "params"))
    await ctx.progress(50)
    content = await s.reports.render(report_type, rows, fmt)
    await ctx.progress(80)
    url = await s.reports.store(report_id, content, fmt)
    if ctx.can_attach:
        await ctx.attach("preview.html", _preview_html(report_type, rows), "text/html")
        await ctx.attach("chart.svg", _chart_svg(rows), "image/svg+xml")
    await ctx.progress(100)
    return {
        "report_id": report_id,
        "report_type": report_type,
        "format": fmt,
        "url": url,
        "row_count": len(rows),
        "size_bytes": len(content),
    }


def _preview_html(report_type: str, rows: list[Any]) -> bytes:
    """A small static HTML snapshot of the first rows (shown sandboxed by the monitor)."""
    body = "".join(f"<tr><td>{html.escape(str(r))}</td></tr>" for r in rows[:20])
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(report_type)}</title>"
        f"<h1>{html.escape(report_type)}</h1><table>{body}</table>"
    ).encode()


def _chart_svg(rows: list[Any]) -> bytes:
    """A bar per row (up to 12) sized by the row's position: a stand-in for a real chart."""
    n = min(len(rows), 12) or 1
    bars = "".join(
        f'<rect x="{10 + i * 24}" y="{110 - (i + 1) * 8}" width="18" height="{(i + 1) * 8}" fill="#3b82f6"/>'
        for i in range(n)
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="320" height="120">{bars}</svg>'.encode()


async def cleanup_old_data(ctx: JobContext, s: Services) -> dict[str, Any]:
    """Delete rows older than each table's retention (``retention_days``: table -> days) (seed §6.2)."""
    await simulate(ctx)
    retention = req_dict(payload(ctx), "retention_days")
    if not retention:
        raise PermanentError("field 'retention_days' must name at least one table")
    unknown = sorted(set(retention) - s.cleanup.known_tables())
    if unknown:
        raise PermanentError(f"field 'retention_days' names unknown tables {unknown}")
    for table, days in retention.items():
        if not isinstance(days, int) or isinstance(days, bool) or days < 1:
            raise PermanentError(f"field 'retention_days.{table}' must be a positive integer, got {days!r}")
    now = datetime.now(UTC)
    deleted: dict[str, int] = {}
    await ctx.progress(0)
    for i, (table, days) in enumerate(sorted(retention.items()), start=1):
        deleted[table] = await s.cleanup.purge(table, now - timedelta(days=days))
        log.info("cleanup: %d rows older than %d days deleted from %s", deleted[table], days, table)
        await ctx.progress(100 * i / len(retention))
    return {"deleted": deleted, "total_deleted": sum(deleted.values()), "ran_at": now.isoformat()}


def register(registry: ProcessorRegistry, services: Services) -> None:
    """Register this module's processors into ``registry``."""
    registry.register("audit-log", bind(audit_log, services))
    registry.register("analytics-aggregate", bind(analytics_aggregate, services))
    registry.register("data-dtg-sync", bind(dtg_sync, services))
    registry.register("report-generate", bind(report_generate, services))
    registry.register("cleanup-old-data", bind(cleanup_old_data, services))
