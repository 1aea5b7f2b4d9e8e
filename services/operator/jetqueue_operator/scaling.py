"""Worker replica decisions from a queue's lag (pure: no I/O, time passed in).

The rule, per reconcile:

* ``desired = ceil(waiting / targetPendingPerReplica)``, clamped to
  ``[minReplicas, maxReplicas]``; ``waiting`` is the consumers' ``num_pending``
  as the server reports it.
* A queue with jobs running never goes to zero (their workers would be killed).
* ``scaleToZero``: no job waiting and none running → 0.
* Paused: the lower bound (the minimum, or zero under ``scaleToZero`` when
  nothing runs): waiting jobs are not delivered, so more workers would idle.
* Scale-up applies at once. Scale-down goes only to the highest desired
  count seen during the last ``scaleDownStabilizationSeconds`` (as the
  HorizontalPodAutoscaler does), so a short lull does not kill workers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from jetqueue_operator.resources import ScalingPolicy


@dataclass(frozen=True, slots=True)
class Load:
    """What the server reports about a queue."""

    waiting: int
    active: int
    paused: bool


@dataclass(frozen=True, slots=True)
class Recommendation:
    replicas: int
    reason: str


def recommend(policy: ScalingPolicy, load: Load) -> Recommendation:
    """Replicas the current load asks for (before the stabilisation window)."""
    idle = load.waiting == 0 and load.active == 0
    floor = 0 if (policy.scale_to_zero and load.active == 0) else policy.min_replicas
    if load.paused:
        return Recommendation(floor, "queue paused: workers at the minimum")
    if idle and policy.scale_to_zero:
        return Recommendation(0, "queue idle: scaled to zero")
    raw = math.ceil(load.waiting / policy.target_pending_per_replica)
    replicas = min(max(raw, floor, 1 if load.active else 0), policy.max_replicas)
    return Recommendation(
        replicas,
        f"{load.waiting} waiting, {load.active} running, target {policy.target_pending_per_replica} per replica",
    )


@dataclass(slots=True)
class Stabilizer:
    """Remembers recent recommendations of one queue to damp scale-down."""

    history: deque[tuple[float, int]] = field(default_factory=deque)
    seeded: bool = False

    def decide(self, *, current: int, recommended: int, window_s: float, now: float) -> int:
        """Replicas to set now, given the ``current`` count and the fresh recommendation."""
        if not self.seeded:
            # After a restart the history is empty: treat the current count as
            # recommended just now, so a restart never scales down at once.
            self.history.append((now, current))
            self.seeded = True
        self.history.append((now, recommended))
        while self.history and self.history[0][0] < now - window_s:
            self.history.popleft()
        if recommended >= current:
            return recommended
        highest = max(r for _, r in self.history)
        return min(current, max(highest, recommended))
