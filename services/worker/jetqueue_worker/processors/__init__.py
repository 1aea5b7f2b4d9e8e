"""The reference job pack: processors for all catalog queues, registered on demand by :func:`register_all`."""

from __future__ import annotations

from jetqueue.processors import ProcessorRegistry
from jetqueue_worker.processors import batch, fleet, messaging
from jetqueue_worker.processors.demo import simulate
from jetqueue_worker.processors.services import Services

__all__ = ["Services", "register_all", "simulate"]


def register_all(registry: ProcessorRegistry, services: Services | None = None) -> ProcessorRegistry:
    """Register the reference processors for every catalog queue into ``registry``.

    Args:
        registry: Where to register; use a fresh one (registering a queue twice raises).
        services: The services the processors call; simulated in-memory ones by default.

    Returns:
        ``registry``, for chaining.
    """
    services = services or Services.simulated()
    fleet.register(registry, services)
    messaging.register(registry, services)
    batch.register(registry, services)
    return registry
