"""Service interfaces the reference processors use, with in-memory simulated implementations."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Protocol

log = logging.getLogger(__name__)

_LATENCY_S = 0.002  # simulated I/O latency: small so tests stay fast


def _digits(*parts: object) -> int:
    """A stable pseudo-random integer derived from ``parts`` (same input, same number)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def ei_grade(value: float) -> str:
    """Grade an EI value on the seed's 0-200 scale."""
    for floor, grade in ((150, "A"), (120, "B"), (90, "C"), (60, "D")):
        if value >= floor:
            return grade
    return "E"


class EIService(Protocol):
    async def get_fleet_ei(self, fleet_id: str) -> float: ...
    async def update_fleet_ei(self, fleet_id: str, new_ei: float) -> str:
        """Store the value and return its grade."""
        ...

    async def invalidate_ei_cache(self, fleet_id: str) -> None: ...


class RealtimeService(Protocol):
    async def publish(self, channel: str, payload: dict[str, Any]) -> None: ...


class ProposalService(Protocol):
    async def get_bid(self, bid_id: str) -> dict[str, Any] | None: ...
    async def get_proposals_for_bid(self, bid_id: str) -> list[dict[str, Any]]: ...
    async def calculate_scores_and_rank(
        self, bid_id: str, proposals: list[dict[str, Any]], policy: dict[str, float]
    ) -> list[dict[str, Any]]: ...
    async def update_proposal_rankings(self, bid_id: str, ranked: list[dict[str, Any]]) -> None: ...


class OrderService(Protocol):
    async def get_status(self, order_id: str) -> str | None: ...
    async def set_status(self, order_id: str, status: str) -> None: ...


class NotificationService(Protocol):
    async def create_notification(self, notification: dict[str, Any]) -> str: ...
    async def get_user_email(self, user_id: str) -> str | None: ...
    def get_action_url(self, entity_type: str | None, entity_id: str | None) -> str | None: ...
    async def notify_admins(self, alert: dict[str, Any]) -> list[str]:
        """Notify every administrator; return the notification ids."""
        ...


class EmailService(Protocol):
    async def send(self, to: str, subject: str, body: str, action_url: str | None = None) -> str: ...


class DispatchService(Protocol):
    async def validate_batch(self, batch_id: str, orders: list[dict[str, Any]]) -> None: ...
    async def fetch_fleet_data(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    async def optimize_dispatch(
        self, orders: list[dict[str, Any]], fleets: list[dict[str, Any]], goals: dict[str, Any]
    ) -> list[dict[str, Any]]: ...
    async def store_optimization_results(self, batch_id: str, assignments: list[dict[str, Any]]) -> None: ...


class AuditLogService(Protocol):
    async def write(self, entry: dict[str, Any]) -> str: ...


class AnalyticsService(Protocol):
    async def collect(self, aggregation_type: str, day: date) -> list[dict[str, Any]]: ...
    async def store(self, aggregation_type: str, day: date, metrics: dict[str, Any]) -> None: ...


class DtgService(Protocol):
    async def fetch_records(self, vehicle_id: str, since: datetime | None) -> list[dict[str, Any]]: ...
    async def store_records(self, vehicle_id: str, records: list[dict[str, Any]]) -> int: ...


class ReportService(Protocol):
    async def query(self, report_type: str, params: dict[str, Any]) -> list[dict[str, Any]]: ...
    async def render(self, report_type: str, rows: list[dict[str, Any]], fmt: str) -> bytes: ...
    async def store(self, report_id: str, content: bytes, fmt: str) -> str:
        """Store a rendered report; return where it can be downloaded."""
        ...


class CleanupService(Protocol):
    def known_tables(self) -> frozenset[str]: ...
    async def purge(self, table: str, cutoff: datetime) -> int: ...


class SimulatedEIService:
    """EI values kept in a dict; unknown fleets start at a value derived from their id."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.invalidated: list[str] = []

    async def get_fleet_ei(self, fleet_id: str) -> float:
        await asyncio.sleep(_LATENCY_S)
        return self.values.setdefault(fleet_id, float(60 + _digits("ei", fleet_id) % 100))

    async def update_fleet_ei(self, fleet_id: str, new_ei: float) -> str:
        await asyncio.sleep(_LATENCY_S)
        self.values[fleet_id] = new_ei
        return ei_grade(new_ei)

    async def invalidate_ei_cache(self, fleet_id: str) -> None:
        self.invalidated.append(fleet_id)


class SimulatedRealtimeService:
    """Records what would be pushed to subscribers."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(_LATENCY_S)
        self.published.append((channel, payload))


class SimulatedProposalService:
    """Each bid has 3-7 proposals with price, EI and delivery time derived from the bid id."""

    DEFAULT_POLICY: ClassVar[dict[str, float]] = {"price": 0.5, "ei": 0.3, "delivery": 0.2}

    def __init__(self) -> None:
        self.rankings: dict[str, list[dict[str, Any]]] = {}

    async def get_bid(self, bid_id: str) -> dict[str, Any] | None:
        await asyncio.sleep(_LATENCY_S)
        return {"bid_id": bid_id, "evaluation_policy": dict(self.DEFAULT_POLICY)}

    async def get_proposals_for_bid(self, bid_id: str) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        n = 3 + _digits("n", bid_id) % 5
        return [
            {
                "proposal_id": f"{bid_id}-p{i + 1}",
                "price": 500_000 + _digits("price", bid_id, i) % 500_000,
                "ei": float(60 + _digits("ei", bid_id, i) % 140),
                "delivery_hours": 4 + _digits("hours", bid_id, i) % 44,
            }
            for i in range(n)
        ]

    async def calculate_scores_and_rank(
        self, bid_id: str, proposals: list[dict[str, Any]], policy: dict[str, float]
    ) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        if not proposals:
            return []
        low_price = min(p["price"] for p in proposals)
        fastest = min(p["delivery_hours"] for p in proposals)
        scored = [
            {
                "proposal_id": p["proposal_id"],
                "composite_score": round(
                    100 * policy.get("price", 0) * low_price / p["price"]
                    + 100 * policy.get("ei", 0) * p["ei"] / 200
                    + 100 * policy.get("delivery", 0) * fastest / p["delivery_hours"],
                    2,
                ),
            }
            for p in proposals
        ]
        scored.sort(key=lambda s: (-s["composite_score"], s["proposal_id"]))
        return [{**s, "rank": i + 1} for i, s in enumerate(scored)]

    async def update_proposal_rankings(self, bid_id: str, ranked: list[dict[str, Any]]) -> None:
        await asyncio.sleep(_LATENCY_S)
        self.rankings[bid_id] = ranked


class SimulatedOrderService:
    """Order statuses in a dict; unknown orders start as ``pending``."""

    def __init__(self) -> None:
        self.statuses: dict[str, str] = {}

    async def get_status(self, order_id: str) -> str | None:
        await asyncio.sleep(_LATENCY_S)
        return self.statuses.get(order_id, "pending")

    async def set_status(self, order_id: str, status: str) -> None:
        await asyncio.sleep(_LATENCY_S)
        self.statuses[order_id] = status


class SimulatedNotificationService:
    """Keeps notifications in memory; every user has an e-mail address at example.com."""

    def __init__(self, admins: tuple[str, ...] = ("admin-1", "admin-2")) -> None:
        self.admins = admins
        self.notifications: dict[str, dict[str, Any]] = {}

    async def create_notification(self, notification: dict[str, Any]) -> str:
        await asyncio.sleep(_LATENCY_S)
        notification_id = f"ntf-{uuid.uuid4().hex[:12]}"
        self.notifications[notification_id] = notification
        return notification_id

    async def get_user_email(self, user_id: str) -> str | None:
        await asyncio.sleep(_LATENCY_S)
        return f"{user_id}@example.com"

    def get_action_url(self, entity_type: str | None, entity_id: str | None) -> str | None:
        if not entity_type or not entity_id:
            return None
        return f"https://app.example.com/{entity_type}/{entity_id}"

    async def notify_admins(self, alert: dict[str, Any]) -> list[str]:
        log.info("admin alert (%s): %s", alert.get("severity"), alert.get("title"))
        return [await self.create_notification({**alert, "user_id": admin}) for admin in self.admins]


class SimulatedEmailService:
    """Records sent messages instead of delivering them."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, to: str, subject: str, body: str, action_url: str | None = None) -> str:
        await asyncio.sleep(_LATENCY_S)
        message_id = f"msg-{uuid.uuid4().hex[:12]}"
        self.sent.append(
            {"message_id": message_id, "to": to, "subject": subject, "body": body, "action_url": action_url}
        )
        log.debug("simulated e-mail %s to %s: %s", message_id, to, subject)
        return message_id


class SimulatedDispatchService:
    """Greedy assignment of orders to a small fleet derived from the order ids."""

    def __init__(self) -> None:
        self.results: dict[str, list[dict[str, Any]]] = {}

    async def validate_batch(self, batch_id: str, orders: list[dict[str, Any]]) -> None:
        await asyncio.sleep(_LATENCY_S)

    async def fetch_fleet_data(self, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        count = max(1, len(orders) // 2)
        return [{"fleet_id": f"fleet-{i + 1}", "ei": float(80 + 10 * i)} for i in range(count)]

    async def optimize_dispatch(
        self, orders: list[dict[str, Any]], fleets: list[dict[str, Any]], goals: dict[str, Any]
    ) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S * 5)
        return [
            {
                "order_id": o["order_id"],
                "fleet_id": fleets[_digits("fleet", o["order_id"]) % len(fleets)]["fleet_id"],
                "cost_saving": 1_000 * (_digits("saving", o["order_id"]) % 50),
            }
            for o in orders
        ]

    async def store_optimization_results(self, batch_id: str, assignments: list[dict[str, Any]]) -> None:
        await asyncio.sleep(_LATENCY_S)
        self.results[batch_id] = assignments


class SimulatedAuditLogService:
    """Appends entries to a list."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def write(self, entry: dict[str, Any]) -> str:
        await asyncio.sleep(_LATENCY_S)
        audit_id = f"audit-{len(self.entries) + 1}"
        self.entries.append({**entry, "audit_id": audit_id})
        return audit_id


class SimulatedAnalyticsService:
    """Fake per-order rows for a day; aggregates are stored by (type, date)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}

    async def collect(self, aggregation_type: str, day: date) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        n = 20 + _digits("rows", day) % 80
        return [{"amount": 10_000 + _digits("amount", day, i) % 90_000, "ei": float(60 + i % 140)} for i in range(n)]

    async def store(self, aggregation_type: str, day: date, metrics: dict[str, Any]) -> None:
        await asyncio.sleep(_LATENCY_S)
        self.stored[(aggregation_type, day.isoformat())] = metrics


class SimulatedDtgService:
    """Digital tachograph records: one per ten minutes over the last hours, derived from the vehicle id."""

    def __init__(self) -> None:
        self.stored: dict[str, list[dict[str, Any]]] = {}

    async def fetch_records(self, vehicle_id: str, since: datetime | None) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        n = 6 + _digits("dtg", vehicle_id) % 12
        base = 1_700_000_000 + _digits("t0", vehicle_id) % 86_400
        records = [{"ts": base + 600 * i, "speed_kmh": 40 + _digits("v", vehicle_id, i) % 60} for i in range(n)]
        return [r for r in records if since is None or r["ts"] > since.timestamp()]

    async def store_records(self, vehicle_id: str, records: list[dict[str, Any]]) -> int:
        await asyncio.sleep(_LATENCY_S)
        self.stored.setdefault(vehicle_id, []).extend(records)
        return len(records)


class SimulatedReportService:
    """Reports rendered as CSV-ish text and kept in memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    async def query(self, report_type: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(_LATENCY_S)
        return [{"row": i, "value": _digits(report_type, i) % 1000} for i in range(10 + _digits(report_type) % 40)]

    async def render(self, report_type: str, rows: list[dict[str, Any]], fmt: str) -> bytes:
        await asyncio.sleep(_LATENCY_S)
        return ("row,value\n" + "".join(f"{r['row']},{r['value']}\n" for r in rows)).encode()

    async def store(self, report_id: str, content: bytes, fmt: str) -> str:
        await asyncio.sleep(_LATENCY_S)
        self.files[report_id] = content
        return f"https://reports.example.com/{report_id}.{fmt}"


class SimulatedCleanupService:
    """Pretends to delete a count of rows derived from the table and cutoff date."""

    TABLES = frozenset({"api_logs", "ei_history", "notifications", "completed_jobs"})

    def known_tables(self) -> frozenset[str]:
        return self.TABLES

    async def purge(self, table: str, cutoff: datetime) -> int:
        await asyncio.sleep(_LATENCY_S)
        return _digits("purge", table, cutoff.date()) % 5_000


@dataclass(slots=True)
class Services:
    """One implementation of every service; build your own to plug in real ones."""

    ei: EIService
    realtime: RealtimeService
    proposals: ProposalService
    orders: OrderService
    notifications: NotificationService
    email: EmailService
    dispatch: DispatchService
    audit: AuditLogService
    analytics: AnalyticsService
    dtg: DtgService
    reports: ReportService
    cleanup: CleanupService

    @classmethod
    def simulated(cls) -> Services:
        """All-in-memory services for demos and tests."""
        return cls(
            ei=SimulatedEIService(),
            realtime=SimulatedRealtimeService(),
            proposals=SimulatedProposalService(),
            orders=SimulatedOrderService(),
            notifications=SimulatedNotificationService(),
            email=SimulatedEmailService(),
            dispatch=SimulatedDispatchService(),
            audit=SimulatedAuditLogService(),
            analytics=SimulatedAnalyticsService(),
            dtg=SimulatedDtgService(),
            reports=SimulatedReportService(),
            cleanup=SimulatedCleanupService(),
        )
