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
    """Deployments, ConfigMaps, PodDisruptionBudgets, the leader Lease and statuses through one ``ApiClient``.

    The client is blocking, so every call runs in a thread.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

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

    async def patch_jobqueue_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a JobQueue's status (the counts right after a QueueAction)."""
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            JOBQUEUES,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    # ---------------------------------------------------- PodDisruptionBudgets

    async def apply_pdb(self, namespace: str, body: dict[str, Any]) -> str | None:
        """Create or update a PodDisruptionBudget's spec: "created", "updated", or None (already so)."""
        name = body["metadata"]["name"]
        try:
            have = await asyncio.to_thread(self.policy.read_namespaced_pod_disruption_budget, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await asyncio.to_thread(self.policy.create_namespaced_pod_disruption_budget, namespace, body)  # type: ignore[arg-type]
            return "created"
        if self._plain(have.spec) == body["spec"]:
            return None
        await asyncio.to_thread(
            self.policy.patch_namespaced_pod_disruption_budget,
            name,
            namespace,
            [{"op": "replace", "path": "/spec", "value": body["spec"]}],
            _content_type=JSON_PATCH,
        )
        return "updated"

    async def delete_pdb(self, namespace: str, name: str) -> bool:
        try:
            await asyncio.to_thread(self.policy.delete_namespaced_pod_disruption_budget, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ---------------------------------------------------------------- Lease

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as a plain dict (camelCase keys), or None if it does not exist."""
        try:
            obj = await asyncio.to_thread(self.coordination.read_namespaced_lease, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._plain(obj)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create the Lease; False if another replica created it first (409)."""
        try:
            await asyncio.to_thread(self.coordination.create_namespaced_lease, namespace, body)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def swap_lease(self, namespace: str, name: str, resource_version: str, spec: dict[str, Any]) -> bool:
        """Replace the Lease's spec if nobody wrote it since ``resource_version`` (compare-and-swap).

        A JSON patch whose first operation tests the resourceVersion: the API server
        applies it atomically, so of two replicas racing for the same Lease one wins.
        Returns False when the test failed (someone else wrote it) or the Lease is gone.
        """
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        try:
            await asyncio.to_thread(
                self.coordination.patch_namespaced_lease, name, namespace, ops, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            # 409/422: the test failed or the write conflicted; 404: deleted. Anything else
            # (5xx, timeouts) is an outage the caller counts against its renew deadline.
            if exc.status in (404, 409, 422):
                return False
            raise
        return True
