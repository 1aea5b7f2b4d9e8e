"""Status conditions in the Kubernetes convention (lastTransitionTime moves only on a change)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
PAUSED = "Paused"
SCALING = "Scaling"
DEGRADED = "Degraded"
# A QueueAction's: Accepted (valid, its JobQueue exists), then Complete or Failed, as a Job's
# (so `kubectl wait --for=condition=Complete queueaction/<name>` works).
ACCEPTED = "Accepted"
COMPLETE = "Complete"
FAILED = "Failed"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Conditions:
    """The conditions of one object, updated in place and rendered for a status patch."""

    def __init__(self, existing: Iterable[Mapping[str, Any]] | None, generation: int | None) -> None:
        self._by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in (existing or []) if "type" in c}
        self._generation = generation

    def set(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value = "True" if status else "False"
        old = self._by_type.get(type_)
        changed = old is None or old.get("status") != value
        self._by_type[type_] = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_iso() if changed else old.get("lastTransitionTime", now_iso()),  # type: ignore[union-attr]
            "observedGeneration": self._generation,
        }

    def get(self, type_: str) -> dict[str, Any] | None:
        return self._by_type.get(type_)

    def render(self) -> list[dict[str, Any]]:
        order = {READY: 0, PAUSED: 1, SCALING: 2, DEGRADED: 3, ACCEPTED: 4, COMPLETE: 5, FAILED: 6}
        return sorted(self._by_type.values(), key=lambda c: (order.get(c["type"], 9), c["type"]))
