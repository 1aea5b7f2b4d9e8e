"""The few Kubernetes API calls the operator makes besides kopf's own (official client, off the event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from jetqueue_operator import GROUP, JOBQUEUES, QUEUEACTIONS, VERSION

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApi:
    """Deployments, ConfigMaps and QueueAction status through one ``ApiClient``.

    The client is blocking, so every call runs in a thread.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def for_host(cls, host: str, *, token: str | None = None, verify_ssl: bool = True) -> KubeApi:
        """A client for an API server URL (tests, local runs)."""
        cfg = client.Configuration()
        cfg.host = host
        cfg.verify_ssl = verify_ssl
        if token:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        return cls(client.ApiClient(cfg))

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self.api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    async def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment as a plain dict, or None if it does not exist."""
        try:
            obj = await asyncio.to_thread(self.apps.read_namespaced_deployment, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._plain(obj)

    async def create_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(self.apps.create_namespaced_deployment, namespace, body)  # type: ignore[arg-type]

    async def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """JSON merge patch (the generated client would send a dict as a JSON patch)."""
        await asyncio.to_thread(
            self.apps.patch_namespaced_deployment, name, namespace, patch, _content_type=MERGE_PATCH
        )

    async def json_patch_deployment(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        """RFC 6902 JSON patch: replaces whole subtrees, so fields dropped from a template go away too."""
        await asyncio.to_thread(self.apps.patch_namespaced_deployment, name, namespace, ops, _content_type=JSON_PATCH)

    async def delete_deployment(self, namespace: str, name: str) -> bool:
        try:
            await asyncio.to_thread(self.apps.delete_namespaced_deployment, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply_configmap(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create or update a ConfigMap; True if it changed."""
        name = body["metadata"]["name"]
        try:
            have = await asyncio.to_thread(self.core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await asyncio.to_thread(self.core.create_namespaced_config_map, namespace, body)  # type: ignore[arg-type]
            return True
        if (have.data or {}) == body["data"]:
            return False
        await asyncio.to_thread(
            self.core.patch_namespaced_config_map, name, namespace, {"data": body["data"]}, _content_type=MERGE_PATCH
        )
        return True

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(self.core.delete_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def get_jobqueue(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, JOBQUEUES, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(obj)  # type: ignore[call-overload,no-any-return]

    async def patch_action_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a QueueAction's status at once (kopf writes its patch only when a handler returns)."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            QUEUEACTIONS,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )
