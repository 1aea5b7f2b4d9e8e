"""Refusals in the audit log: a 403 on a control endpoint, a login refused with 401 or 429."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from litestar.datastructures import State

from jetqueue import names
from jetqueue.job import now_ms

log = logging.getLogger("jetqueue.monitor.audit")

PUBLISH_TIMEOUT_S = 2.0
DB_TIMEOUT_S = 3.0


async def refusal(
    state: State,
    *,
    actor: str,
    role: str | None,
    action: str,
    entity_type: str,
    entity_id: str,
    error: str,
    params: dict[str, Any] | None = None,
) -> None:
    """Write an audit record (``ok`` false) for a refused request; never raises, and gives up within seconds.

    The record takes the path of every other audit record — the events stream,
    ingested into ``audit_logs`` — so a database outage delays it instead of
    losing it (or turning the refusal into a 500). Only when NATS cannot take
    it is it written to the database directly.
    """
    rec = {
        "v": 1,
        "actor": _storable(actor)[:200],
        "role": role,
        "action": action,
        "entity_type": entity_type,
        "entity_id": _storable(entity_id)[:200],
        "ok": False,
        "error": _storable(error),
        "source": "monitor",
        "params": {k: _storable(v) if isinstance(v, str) else v for k, v in (params or {}).items()},
        "result": {},
        "ts": now_ms(),
    }
    nc = state.get("nc")
    if nc is not None and nc.is_connected:
        try:
            # the subject the control functions publish their audit records on (jetqueue.control)
            subject = names.audit_subject(entity_type)
            await nc.jetstream().publish(subject, json.dumps(rec).encode(), timeout=PUBLISH_TIMEOUT_S)
            return
        except Exception as exc:
            log.warning("refusal audit record not published (%s); writing it to the database", exc)
    try:
        await asyncio.wait_for(state.store.insert_audit(rec), timeout=DB_TIMEOUT_S)
    except Exception as exc:
        log.error(
            "refusal not audited (NATS and database unavailable: %s): %s %s by %s: %s",
            exc,
            action,
            entity_id,
            actor,
            error,
        )


def _storable(text: str) -> str:
    """``text`` as PostgreSQL can store it: a refusal comes before any input is validated (a path may
    hold ``%00``), and one row it cannot store would stop audit ingest for good."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
