"""Leader election on a ``coordination.k8s.io`` Lease: exactly one operator replica acts.

kopf's peering is not a leader election: replicas with equal priorities all
freeze ("Pausing all operators, including self"), and two pods of one
Deployment always share their settings. A Lease is what Kubernetes' own
controllers use, with the rules of client-go's ``leaderelection``:

* a replica takes the Lease when it is free (released, or never held) or when
  its holder has not renewed it for ``lease_duration_s``, measured on this
  replica's own clock from the moment it saw the last renewal (so clock skew
  between nodes does not matter);
* every write is a compare-and-swap on the Lease's resourceVersion, so of two
  replicas racing for it exactly one wins;
* the holder renews every ``retry_period_s`` and stops acting once it could not
  renew for ``renew_deadline_s``, which is shorter than ``lease_duration_s``:
  a holder cut off from the API server (a lost node, a partition) has stopped
  before anyone else may start;
* a holder that stops cleanly (a rolling upgrade) releases the Lease, so a
  standby takes over within ``retry_period_s`` instead of ``lease_duration_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jetqueue.errors import JetqueueError
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class LeaderLost(JetqueueError):
    """The Lease could not be renewed in time: this replica stopped acting (it exits to rejoin as a standby).

    ``fenced_at`` (``time.time()``) is when it stopped acting: its NATS connection was
    closed for good and kopf told to stop.
    """

    def __init__(self, message: str, *, fenced_at: float) -> None:
        super().__init__(message)
        self.fenced_at = fenced_at


def micro_time(when: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease for one replica."""

    def __init__(self, kube: KubeApi, settings: OperatorSettings, *, clock: Callable[[], float] = time.monotonic):
        self.kube = kube
        self.namespace = settings.lease_namespace
        self.name = settings.lease_name
        self.identity = settings.identity or socket.gethostname()
        self.lease_duration_s = settings.lease_duration_s
        self.renew_deadline_s = settings.renew_deadline_s
        self.retry_period_s = settings.retry_period_s
        self._clock = clock
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0  # our clock when it was first seen
        self.holder = ""
        self.is_leader = False

    def _spec(self, *, transitions: int, acquired: str) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            # Whole seconds on the wire; the sub-second settings only matter in tests.
            "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
            "acquireTime": acquired,
            "renewTime": micro_time(),
            "leaseTransitions": transitions,
        }

    def _observe(self, holder: str, renewed: str) -> None:
        if self._observed != (holder, renewed):
            self._observed, self._observed_at = (holder, renewed), self._clock()
        self.holder = holder

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this replica holds the Lease afterwards."""
        lease = await self.kube.read_lease(self.namespace, self.name)
        if lease is None:
            first = self._spec(transitions=0, acquired=micro_time())
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": first,
            }
            return self._won(await self.kube.create_lease(self.namespace, body), first)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(holder, str(spec.get("renewTime") or ""))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and self._clock() - self._observed_at < duration:
            return self._won(False, None)  # held, and renewed recently enough
        mine = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = str(spec.get("acquireTime") or "") if mine else micro_time()
        new = self._spec(transitions=transitions, acquired=acquired or micro_time())
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        return self._won(await self.kube.swap_lease(self.namespace, self.name, version, new), new)

    def _won(self, won: bool, spec: dict[str, Any] | None) -> bool:
        if won and spec is not None:
            self._observe(self.identity, spec["renewTime"])
            if not self.is_leader:
                log.info("leader election: %s holds Lease %s/%s", self.identity, self.namespace, self.name)
        elif self.is_leader:
            log.warning(
                "leader election: %s lost Lease %s/%s to %s", self.identity, self.namespace, self.name, self.holder
            )
        self.is_leader = won
        return won

    def _jittered(self) -> float:
        return self.retry_period_s * random.uniform(1.0, 1.2)

    async def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Wait until this replica holds the Lease (True) or ``stopping()`` says to give up (False)."""
        while not stopping():
            try:
                if await self.try_acquire_or_renew():
                    return True
            except Exception as exc:  # the API server is unreachable: keep standing by
                log.warning("leader election: cannot reach the Lease %s/%s: %s", self.namespace, self.name, exc)
            deadline = self._clock() + self._jittered()
            while self._clock() < deadline and not stopping():
                await asyncio.sleep(min(0.1, self.retry_period_s))
        return False

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew every retry period; set ``lost`` (and return) once renewing failed for the renew deadline."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.retry_period_s)
            try:
                renewed = await asyncio.wait_for(
                    self.try_acquire_or_renew(), timeout=max(0.1, self.renew_deadline_s - self.retry_period_s)
                )
            except Exception as exc:
                log.warning("leader election: renewing Lease %s/%s failed: %s", self.namespace, self.name, exc)
                renewed = None  # an outage: maybe only a blip, counted against the deadline
            if renewed:
                last_renewed = self._clock()
            elif renewed is False or self._clock() - last_renewed >= self.renew_deadline_s:
                # False: someone else holds it now. Either way, stop acting at once.
                self.is_leader = False
                log.error(
                    "leader election: %s could not renew Lease %s/%s within %.0fs; stopping",
                    self.identity,
                    self.namespace,
                    self.name,
                    self.renew_deadline_s,
                )
                lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up (a clean stop) so a standby takes over at its next try, not after the duration."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.kube.read_lease(self.namespace, self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time()}
            version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            if await self.kube.swap_lease(self.namespace, self.name, version, released):
                log.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:  # the standby then waits out the lease duration instead
            log.warning("leader election: could not release Lease %s/%s: %s", self.namespace, self.name, exc)
