"""The whole stack on a real cluster: ``skaffold run``, then an SRE's QueueAction, end to end.

Runs only when KUBECONFIG is set (and then needs skaffold, a container
builder the cluster can pull from, and a JetStream NATS at the chart's
nats.url). Namespace: JETQUEUE_E2E_NAMESPACE (default jetqueue-e2e).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster: set KUBECONFIG to run it"),
    pytest.mark.timeout(1200),
]


def _kubectl() -> str:
    path = Path(sysconfig.get_path("scripts")) / "kubectl"
    return str(path) if path.exists() else (shutil.which("kubectl") or "kubectl")


def run(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_skaffold_run_then_a_queueaction_succeeds(tmp_path: Path) -> None:
    skaffold = shutil.which("skaffold")
    assert skaffold, "KUBECONFIG is set but skaffold is not on PATH"
    ns = os.environ.get("JETQUEUE_E2E_NAMESPACE", "jetqueue-e2e")
    kubectl = _kubectl()
    subprocess.run([kubectl, "create", "namespace", ns], capture_output=True, text=True, cwd=ROOT)
    run(skaffold, "run", "--namespace", ns, "--status-check=true", timeout=1500)
    run(kubectl, "-n", ns, "wait", "--for=condition=Ready", "jobqueue/email-send", "--timeout=300s")
    replicas = run(
        kubectl, "-n", ns, "get", "deployment", "jetqueue-worker-email-send", "-o", "jsonpath={.spec.replicas}"
    )
    assert int(replicas) >= 1

    action = yaml.safe_load((ROOT / "k8s" / "examples" / "queueaction-drain.yaml").read_text("utf-8"))
    name = f"e2e-drain-{uuid.uuid4().hex[:6]}"
    action["metadata"] = {"name": name, "namespace": ns}
    path = tmp_path / "action.yaml"
    path.write_text(yaml.safe_dump(action))
    run(kubectl, "apply", "-f", str(path))  # server-side schema validation applies here
    try:
        deadline = time.monotonic() + 180
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            out = run(kubectl, "-n", ns, "get", "queueaction", name, "-o", "json")
            status = json.loads(out).get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(2)
        assert status.get("phase") == "Succeeded", status
        events = run(
            kubectl, "-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
        assert any(e["reason"] == "ActionSucceeded" for e in json.loads(events)["items"])
        # A bad spec is refused by the API server itself (the CRD's OpenAPI schema).
        # A drain without its confirmation is refused by the CRD's CEL rule, before any job is touched.
        unconfirmed = {**action, "metadata": {"name": f"{name}-unconfirmed"}}
        unconfirmed["spec"] = {k: v for k, v in action["spec"].items() if k != "confirm"}
        path = tmp_path / "unconfirmed.yaml"
        path.write_text(yaml.safe_dump(unconfirmed))
        proc = subprocess.run([kubectl, "-n", ns, "apply", "-f", str(path)], capture_output=True, text=True)
        assert proc.returncode != 0 and "confirm: DRAIN" in proc.stderr + proc.stdout
        # One operator replica holds the Lease (the chart runs two).
        holder = run(kubectl, "-n", ns, "get", "lease", "jetqueue-operator", "-o", "jsonpath={.spec.holderIdentity}")
        assert holder.startswith("jetqueue-operator-"), holder
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**action, "metadata": {"name": f"{name}-bad"}, "spec": {"action": "explode"}}))
        proc = subprocess.run([kubectl, "-n", ns, "apply", "-f", str(bad)], capture_output=True, text=True)
        assert proc.returncode != 0 and "spec.action" in proc.stderr + proc.stdout
    finally:
        subprocess.run([kubectl, "-n", ns, "delete", "queueaction", name, "--ignore-not-found"], capture_output=True)
        if os.environ.get("JETQUEUE_E2E_CLEANUP", "1") == "1":
            subprocess.run([skaffold, "delete", "--namespace", ns], capture_output=True, cwd=ROOT, timeout=600)
