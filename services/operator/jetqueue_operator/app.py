"""Build and run the operator: :func:`create_runtime` + :func:`operate` (also used by the tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from jetqueue_operator.handlers import Runtime, build_registry
from jetqueue_operator.kube import KubeApi
from jetqueue_operator.natslink import NatsLink
from jetqueue_operator.settings import OperatorSettings


def create_runtime(settings: OperatorSettings, kube: KubeApi) -> Runtime:
    return Runtime(settings=settings, kube=kube, nats=NatsLink(settings))


async def operate(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    *,
    liveness_host: str = "0.0.0.0",
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    **kwargs: Any,
) -> None:
    """Run kopf until ``stop_flag`` is set (or a signal arrives)."""
    namespaces = settings.namespace_list()
    await kopf.operator(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering,
        priority=settings.priority,
        liveness_endpoint=f"http://{liveness_host}:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **kwargs,
    )


__all__ = ["build_registry", "create_runtime", "operate"]
