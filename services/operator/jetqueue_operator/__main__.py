"""``python -m jetqueue_operator``: run the operator (in-cluster, or with the current kubeconfig)."""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    import kopf
    from kubernetes import client, config

    from jetqueue.logs import setup_logging
    from jetqueue.telemetry import setup_tracing
    from jetqueue_operator.app import build_registry, create_runtime, operate
    from jetqueue_operator.kube import KubeApi
    from jetqueue_operator.leader import LeaderLost
    from jetqueue_operator.settings import OperatorSettings

    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        print(f"jetqueue-operator: invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    setup_tracing("jetqueue-operator")
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]  # a developer's machine
        except (config.ConfigException, OSError) as exc:
            print(f"jetqueue-operator: no Kubernetes access (in-cluster or kubeconfig): {exc}", file=sys.stderr)
            return 2
    kube = KubeApi(client.ApiClient())
    # kopf's default registry logs in the way the kubernetes client just did.
    runtime = create_runtime(settings, kube)
    registry = build_registry(runtime, kopf.get_default_registry())
    try:
        asyncio.run(operate(settings, registry, kube=kube, metrics=runtime.metrics, fence=runtime.nats.fence))
    except KeyboardInterrupt:
        pass
    except LeaderLost as exc:
        # Exit so the container restarts and stands by again with a clean state.
        print(f"jetqueue-operator: {exc}", file=sys.stderr)
        return 1
    finally:
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
