"""Unit tests for the reference job pack (processors, simulated services, _simulate controls)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jetqueue.processors import (
    JobCancelled,
    JobContext,
    PermanentError,
    ProcessorRegistry,
)
from jetqueue_worker.processors import Services, register_all, simulate
from jetqueue_worker.processors.services import ei_grade

CATALOG = Path(__file__).resolve().parents[2] / "libs/jetqueue/jetqueue/catalog.yaml"

VALID: dict[str, dict[str, Any]] = {
    "ei-update": {"fleet_id": "F-1", "new_ei": 155},
    "proposal-ranking": {"bid_id": "B-1"},
    "order-status-update": {"order_id": "O-1", "status": "dispatched"},
    "notification-send": {
        "user_id": "u1",
        "type": "BID",
        "title": "입찰",
        "message": "새 제안",
        "send_email": True,
        "related_entity_type": "bid",
        "related_entity_id": "B-1",
    },
    "audit-log": {"action": "update", "entity_type": "fleet", "entity_id": "F-1"},
    "analytics-aggregate": {"aggregation_type": "daily", "date": "2024-05-01"},
    "data-dtg-sync": {"vehicle_id": "V-7"},
    "dispatch-optimize": {
        "batch_id": "BA-1",
        "orders": [{"order_id": f"O-{i}"} for i in range(4)],
        "optimization_goals": {"minimize": "cost"},
    },
    "report-generate": {"report_type": "fleet-ei", "format": "csv"},
    "email-send": {"to": "a@example.com", "subject": "안녕", "body": "본문"},
    "cleanup-old-data": {
        "retention_days": {"api_logs": 90, "ei_history": 730, "notifications": 180, "completed_jobs": 30}
    },
}

KEYS: dict[str, set[str]] = {
    "ei-update": {"fleet_id", "old_ei", "new_ei", "updated_at"},
    "proposal-ranking": {"bid_id", "ranked_count", "top_proposal_id", "top_score"},
    "order-status-update": {"order_id", "old_status", "new_status", "updated_at"},
    "notification-send": {"notification_id"},
    "audit-log": {"audit_id", "recorded_at"},
    "analytics-aggregate": {"aggregation_type", "date", "records_processed", "metrics"},
    "data-dtg-sync": {"vehicle_id", "synced_count", "last_record_at"},
    "dispatch-optimize": {"batch_id", "optimized_count", "total_cost_saving"},
    "report-generate": {"report_id", "url", "row_count", "format"},
    "email-send": {"message_id", "to"},
    "cleanup-old-data": {"deleted", "total_deleted"},
}

REQUIRED = [
    ("ei-update", "fleet_id"),
    ("ei-update", "new_ei"),
    ("proposal-ranking", "bid_id"),
    ("order-status-update", "order_id"),
    ("order-status-update", "status"),
    ("notification-send", "user_id"),
    ("notification-send", "title"),
    ("audit-log", "action"),
    ("analytics-aggregate", "aggregation_type"),
    ("data-dtg-sync", "vehicle_id"),
    ("dispatch-optimize", "batch_id"),
    ("dispatch-optimize", "orders"),
    ("report-generate", "report_type"),
    ("email-send", "to"),
    ("cleanup-old-data", "retention_days"),
]


class Run:
    """A registry with simulated services, and a runner that records progress."""

    def __init__(self) -> None:
        self.services = Services.simulated()
        self.registry = register_all(ProcessorRegistry(), self.services)
        self.progress: list[float] = []

    def ctx(self, queue: str, data: Any, *, name: str = "job", attempt: int = 1) -> JobContext:
        ctx = JobContext(job_id="j-1", queue=queue, name=name, data=data, attempt=attempt, attempts=3)

        async def record(value: float) -> None:
            self.progress.append(value)

        ctx._progress_cb = record
        return ctx

    async def __call__(self, queue: str, data: Any, *, name: str = "job", attempt: int = 1) -> Any:
        fn = self.registry.resolve(queue, name)
        assert fn is not None, f"no processor for {queue}/{name}"
        return await fn(self.ctx(queue, data, name=name, attempt=attempt))


def _assert_progress(values: list[float]) -> None:
    assert values, "no progress reported"
    assert values == sorted(values), values
    assert values[-1] == 100
    assert all(0 <= v <= 100 for v in values)


def test_every_catalog_queue_has_a_processor() -> None:
    queues = {q["name"] for q in yaml.safe_load(CATALOG.read_text())["queues"]}
    assert len(queues) == 11
    registry = register_all(ProcessorRegistry())
    assert registry.queues() == queues == set(VALID)
    assert registry.resolve("notification-send", "admin-alert") is not registry.resolve("notification-send", "x")


def test_register_all_twice_into_one_registry_fails() -> None:
    registry = register_all(ProcessorRegistry())
    with pytest.raises(Exception, match="already registered"):
        register_all(registry)


@pytest.mark.asyncio
@pytest.mark.parametrize("queue", sorted(VALID))
async def test_processor_result_and_progress(queue: str) -> None:
    run = Run()
    result = await run(queue, dict(VALID[queue]))
    assert KEYS[queue] <= set(result), result
    _assert_progress(run.progress)


@pytest.mark.asyncio
@pytest.mark.parametrize(("queue", "field"), REQUIRED)
async def test_missing_required_field_is_permanent(queue: str, field: str) -> None:
    data = {k: v for k, v in VALID[queue].items() if k != field}
    with pytest.raises(PermanentError, match=f"'{field}'"):
        await Run()(queue, data)


@pytest.mark.asyncio
async def test_non_object_payload_and_wrong_types_are_permanent() -> None:
    run = Run()
    with pytest.raises(PermanentError, match="must be an object"):
        await run("ei-update", ["F-1", 1])
    with pytest.raises(PermanentError, match="'new_ei' must be"):
        await run("ei-update", {"fleet_id": "F-1", "new_ei": "high"})
    with pytest.raises(PermanentError, match="between 0 and 200"):
        await run("ei-update", {"fleet_id": "F-1", "new_ei": 250})
    with pytest.raises(PermanentError, match="aggregation_type"):
        await run("analytics-aggregate", {"aggregation_type": "hourly"})
    with pytest.raises(PermanentError, match="unknown tables"):
        await run("cleanup-old-data", {"retention_days": {"users": 1}})
    with pytest.raises(PermanentError, match="positive integer"):
        await run("cleanup-old-data", {"retention_days": {"api_logs": -5}})
    with pytest.raises(PermanentError, match=r"orders\[1\]"):
        await run("dispatch-optimize", {"batch_id": "b", "orders": [{"order_id": "a"}, {"id": 2}]})
    assert run.progress == []  # validation happens before any work


@pytest.mark.asyncio
async def test_ei_update_stores_grades_and_publishes() -> None:
    run = Run()
    first = await run("ei-update", {"fleet_id": "F-9", "new_ei": 155})
    second = await run("ei-update", {"fleet_id": "F-9", "new_ei": 95})
    assert run.progress[:5] == [10, 20, 50, 70, 100]
    assert (first["new_ei"], first["ei_grade"]) == (155, "A")
    assert (second["old_ei"], second["new_ei"], second["ei_grade"]) == (155, 95, "C")
    assert run.services.ei.invalidated == ["F-9", "F-9"]  # type: ignore[attr-defined]
    assert [c for c, _ in run.services.realtime.published] == ["fleet.F-9.ei"] * 2  # type: ignore[attr-defined]
    assert [ei_grade(v) for v in (0, 59.9, 60, 120, 200)] == ["E", "E", "D", "B", "A"]


@pytest.mark.asyncio
async def test_proposal_ranking_is_deterministic_and_sorted() -> None:
    run = Run()
    a = await run("proposal-ranking", {"bid_id": "B-42"})
    b = await run("proposal-ranking", {"bid_id": "B-42"})
    assert a == b and a["ranked_count"] >= 3
    ranked = run.services.proposals.rankings["B-42"]  # type: ignore[attr-defined]
    scores = [p["composite_score"] for p in ranked]
    assert scores == sorted(scores, reverse=True) and a["top_score"] == scores[0]
    assert [p["rank"] for p in ranked] == list(range(1, len(ranked) + 1))
    assert run.progress[:6] == [10, 20, 40, 70, 85, 100]


@pytest.mark.asyncio
async def test_notification_emails_and_admin_alert() -> None:
    run = Run()
    result = await run("notification-send", VALID["notification-send"])
    assert result["email_sent"] is True
    sent = run.services.email.sent  # type: ignore[attr-defined]
    assert sent[0]["to"] == "u1@example.com" and sent[0]["action_url"].endswith("/bid/B-1")
    alert = {
        "type": "JOB_FAILED",
        "severity": "HIGH",
        "title": "Job Failed: x",
        "message": "boom",
        "details": {"job_id": "j", "data": {"_simulate": {"fail": True}}},
        "audience": "admins",
    }
    out = await run("notification-send", alert, name="admin-alert")
    assert out["audience"] == "admins" and len(out["notification_ids"]) == 2
    assert out["notification_id"] == out["notification_ids"][0]
    stored = run.services.notifications.notifications  # type: ignore[attr-defined]
    assert {stored[i]["user_id"] for i in out["notification_ids"]} == {"admin-1", "admin-2"}
    assert stored[out["notification_id"]]["severity"] == "HIGH"
    with pytest.raises(PermanentError, match="'audience'"):
        await run("notification-send", {**alert, "audience": "everyone"}, name="admin-alert")


@pytest.mark.asyncio
async def test_dispatch_and_order_status() -> None:
    run = Run()
    out = await run("dispatch-optimize", VALID["dispatch-optimize"])
    stored = run.services.dispatch.results["BA-1"]  # type: ignore[attr-defined]
    assert out["optimized_count"] == 4 == len(stored)
    assert out["total_cost_saving"] == sum(a["cost_saving"] for a in stored)
    first = await run("order-status-update", {"order_id": "O-1", "status": "dispatched"})
    again = await run("order-status-update", {"order_id": "O-1", "status": "dispatched"})
    assert (first["old_status"], first["changed"]) == ("pending", True)
    assert (again["old_status"], again["changed"]) == ("dispatched", False)


@pytest.mark.asyncio
async def test_analytics_defaults_to_yesterday_and_cleanup_counts() -> None:
    run = Run()
    out = await run("analytics-aggregate", {"aggregation_type": "daily"})
    assert out["date"] == (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert out["metrics"]["orders"] == out["records_processed"] > 0
    with pytest.raises(PermanentError, match="ISO 8601"):
        await run("analytics-aggregate", {"aggregation_type": "daily", "date": "yesterday"})
    clean = await run("cleanup-old-data", VALID["cleanup-old-data"])
    assert set(clean["deleted"]) == set(VALID["cleanup-old-data"]["retention_days"])
    assert clean["total_deleted"] == sum(clean["deleted"].values())


@pytest.mark.asyncio
async def test_simulate_fail_attempts_then_succeeds() -> None:
    run = Run()
    data = {**VALID["ei-update"], "_simulate": {"fail_attempts": 1}}
    with pytest.raises(RuntimeError, match="simulated failure on attempt 1"):
        await run("ei-update", data, attempt=1)
    assert run.progress == []
    result = await run("ei-update", data, attempt=2)
    assert result["fleet_id"] == "F-1"


@pytest.mark.asyncio
async def test_simulate_permanent_fail_and_rate() -> None:
    run = Run()
    with pytest.raises(PermanentError, match="simulated permanent"):
        await run("email-send", {**VALID["email-send"], "_simulate": {"permanent": True}})
    with pytest.raises(RuntimeError, match="simulated failure"):
        await run("email-send", {**VALID["email-send"], "_simulate": {"fail": True}}, attempt=3)
    ctx = run.ctx("email-send", {"_simulate": {"fail_rate": 0.5}})
    outcomes = []
    rng = random.Random(7)
    for _ in range(40):
        try:
            await simulate(ctx, rng)
            outcomes.append(True)
        except RuntimeError:
            outcomes.append(False)
    assert True in outcomes and False in outcomes
    await simulate(run.ctx("email-send", {"_simulate": {"fail_rate": 0}}))
    with pytest.raises(RuntimeError):
        await simulate(run.ctx("email-send", {"_simulate": {"fail_rate": 1}}))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ("slow", "must be an object"),
        ({"sleep_ms": "10"}, "sleep_ms must be int or float"),
        ({"fail_attempts": 1.5}, "fail_attempts must be int"),
        ({"fail_attempts": True}, "fail_attempts must be int"),
        ({"fail": "yes"}, "fail must be bool"),
        ({"fail_rate": 2}, "between 0 and 1"),
        ({"sleep_ms": -1}, ">= 0"),
        ({"explode": True}, "unknown keys"),
    ],
)
async def test_simulate_rejects_malformed_controls(controls: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        await Run()("audit-log", {**VALID["audit-log"], "_simulate": controls})


@pytest.mark.asyncio
async def test_simulate_sleep_stops_when_cancelled() -> None:
    run = Run()
    fn = run.registry.resolve("report-generate", "job")
    assert fn is not None
    ctx = run.ctx("report-generate", {**VALID["report-generate"], "_simulate": {"sleep_ms": 5000}})
    task = asyncio.ensure_future(fn(ctx))
    await asyncio.sleep(0.05)
    assert not task.done()
    started = time.monotonic()
    ctx.cancelled.set()
    with pytest.raises(JobCancelled):
        await task
    assert time.monotonic() - started < 0.5
    assert run.progress == []
