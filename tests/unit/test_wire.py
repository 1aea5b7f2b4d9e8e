"""Wire formats the worker writes on its hot path: lifecycle batches and job states."""

from __future__ import annotations

from typing import Any

from jetqueue.events import EventBatcher, LifecycleRecord, decode_batch
from jetqueue.job import EventType, JobState, JobStatus


class Captured:
    """Stands in for a JetStream context: keeps what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, body: bytes, timeout: float, headers: dict[str, str]) -> None:
        self.sent.append((subject, body, headers))


def record(**kw: Any) -> LifecycleRecord:
    base: dict[str, Any] = {"type": EventType.STARTED, "job_id": "j1", "queue": "email-send", "name": "x",
                            "attempt": 1, "worker": "w1"}  # fmt: skip
    return LifecycleRecord(**{**base, **kw})


async def test_a_batch_decodes_to_the_records_as_they_were_when_added() -> None:
    js = Captured()
    batcher = EventBatcher(js, "email-send")  # type: ignore[arg-type]
    data = {"to": "a", "tags": ["x"]}
    batcher.add(record(data=data, user_id="u1"))
    data["to"] = "b"  # the processor changes its data after the record was added
    data["tags"].append("y")
    batcher.add(record(type=EventType.COMPLETED, result={"ok": True}, duration_ms=12))
    await batcher.flush()
    (subject, body, headers), = js.sent  # fmt: skip
    assert subject.endswith("email-send") and headers["Nats-Msg-Id"]
    first, second = decode_batch(body)
    assert first["data"] == {"to": "a", "tags": ["x"]} and first["type"] == "started" and first["user_id"] == "u1"
    assert "error" not in first and "result" not in first  # unset fields are left out
    assert second["type"] == "completed" and second["result"] == {"ok": True} and second["duration_ms"] == 12


async def test_batches_are_split_at_max_batch_and_keep_their_order() -> None:
    js = Captured()
    batcher = EventBatcher(js, "email-send", max_batch=3)  # type: ignore[arg-type]
    for i in range(7):
        batcher.add(record(job_id=f"j{i}"))
    await batcher.flush()
    ids = [[r["job_id"] for r in decode_batch(body)] for _s, body, _h in js.sent]
    assert ids == [["j0", "j1", "j2"], ["j3", "j4", "j5"], ["j6"]]
    assert len({h["Nats-Msg-Id"] for _s, _b, h in js.sent}) == 3


def test_job_state_round_trips() -> None:
    st = JobState(id="j1", queue="email-send", state=JobStatus.ACTIVE, name="x", attempt=2, attempts=3,
                  progress=40.0, errors=["RuntimeError: boom"], data={"to": "a"}, started_at=5)  # fmt: skip
    back = JobState.from_bytes(st.to_bytes())
    assert back == st and back.state is JobStatus.ACTIVE
    assert st.to_dict()["state"] == "active" and st.to_dict()["v"] >= 1
