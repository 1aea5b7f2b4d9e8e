"""Every CEL rule of the CRDs (``x-kubernetes-validations``), evaluated with accepted and rejected examples.

kmock's emulator runs no admission, so the API server's CEL rules are evaluated
here with cel-python, the way the API server binds them: ``self`` is the value
at the rule's place in the schema, ``oldSelf`` the stored one for a transition
rule (an update). A rule without examples below fails the coverage test, so a
new rule cannot ship untested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "k8s" / "crds"

_NO_OLD = object()  # a create: a transition rule is not evaluated


def rules() -> dict[str, tuple[str, str]]:
    """``{rule: (kind, where)}`` for every x-kubernetes-validations rule in the CRDs."""
    found: dict[str, tuple[str, str]] = {}

    def walk(node: Any, kind: str, where: str) -> None:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations") or []:
            found[rule["rule"]] = (kind, where or ".")
        for key, prop in (node.get("properties") or {}).items():
            walk(prop, kind, f"{where}.{key}")
        walk(node.get("items"), kind, f"{where}[]")

    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            for version in doc["spec"]["versions"]:
                walk(version["schema"]["openAPIV3Schema"], doc["spec"]["names"]["kind"], "")
    return found


def evaluate(rule: str, value: Any, old: Any = _NO_OLD) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": celpy.json_to_cel(value)}
    if old is not _NO_OLD:
        activation["oldSelf"] = celpy.json_to_cel(old)
    return bool(program.evaluate(activation))


def action(**spec: Any) -> dict[str, Any]:
    return {"jobQueue": "email-send", "reason": "test", **spec}


# rule -> (accepted, rejected). Each example is a value, or (value, oldSelf) for a transition rule.
EXAMPLES: dict[str, tuple[list[Any], list[Any]]] = {
    "size(self.metadata.name) <= 47": (
        [{"metadata": {"name": "email-send"}}, {"metadata": {"name": "q" * 47}}],
        [{"metadata": {"name": "q" * 48}}],
    ),
    "self == oldSelf": (
        [("email-send", "email-send"), (action(action="pause"), action(action="pause"))],
        [("email-send-2", "email-send"), (action(action="drain", confirm="DRAIN"), action(action="pause"))],
    ),
    "self.minReplicas <= self.maxReplicas": (
        [{"minReplicas": 1, "maxReplicas": 10}, {"minReplicas": 3, "maxReplicas": 3}],
        [{"minReplicas": 5, "maxReplicas": 2}],
    ),
    "type(self) == int ? self >= 1 : self.matches('^[1-9][0-9]?%$|^100%$')": (
        [1, 3, "25%", "100%", "1%"],
        [0, -1, "0%", "101%", "25", "half"],
    ),
    "!has(self.until) || self.action == 'pause'": (
        [action(action="pause", until="2030-01-01T00:00:00Z"), action(action="resume")],
        [action(action="resume", until="2030-01-01T00:00:00Z")],
    ),
    "!has(self.includeDelayed) || self.action == 'drain'": (
        [action(action="drain", includeDelayed=True, confirm="DRAIN"), action(action="pause")],
        [action(action="pause", includeDelayed=False)],
    ),
    "(!has(self.state) && !has(self.olderThanSeconds)) || self.action == 'clean'": (
        [action(action="clean", state="failed", olderThanSeconds=60, confirm="CLEAN"), action(action="resume")],
        [action(action="drain", olderThanSeconds=60, confirm="DRAIN"), action(action="pause", state="failed")],
    ),
    "self.action != 'drain' || (has(self.confirm) && self.confirm == 'DRAIN')": (
        [action(action="drain", confirm="DRAIN"), action(action="pause")],
        [action(action="drain"), action(action="drain", confirm="CLEAN"), action(action="drain", confirm="drain")],
    ),
    "self.action != 'clean' || (has(self.confirm) && self.confirm == 'CLEAN')": (
        [action(action="clean", confirm="CLEAN", olderThanSeconds=0), action(action="retryFailed")],
        [action(action="clean", olderThanSeconds=0), action(action="clean", confirm="DRAIN")],
    ),
    "!has(self.confirm) || self.action in ['drain', 'clean']": (
        [action(action="drain", confirm="DRAIN"), action(action="clean", confirm="CLEAN"), action(action="pause")],
        [action(action="pause", confirm="DRAIN"), action(action="retryFailed", confirm="CLEAN")],
    ),
}


def test_every_rule_has_accepted_and_rejected_examples() -> None:
    found = rules()
    assert set(found) == set(EXAMPLES), {
        "without examples": set(found) - set(EXAMPLES),
        "stale": set(EXAMPLES) - set(found),
    }
    for rule, (accepted, rejected) in EXAMPLES.items():
        assert accepted and rejected, rule


CASES = [
    pytest.param(rule, example, ok, id=f"{rules()[rule][0]}{rules()[rule][1]}:{'ok' if ok else 'no'}{i}")
    for rule, (accepted, rejected) in EXAMPLES.items()
    for ok, examples in ((True, accepted), (False, rejected))
    for i, example in enumerate(examples)
]


@pytest.mark.parametrize(("rule", "example", "ok"), CASES)
def test_rule(rule: str, example: Any, ok: bool) -> None:
    if isinstance(example, tuple):
        value, old = example
        assert evaluate(rule, value, old) is ok, (rule, value, old)
    else:
        assert evaluate(rule, example) is ok, (rule, example)


def test_the_examples_shipped_in_k8s_examples_pass_every_rule() -> None:
    """The manifests an SRE copies (k8s/examples) pass the API server's rules as they are."""
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for rule, (kind, where) in rules().items():
        by_kind.setdefault(kind, []).append((rule, where))
    checked = 0
    for path in sorted((ROOT / "k8s" / "examples").glob("*.yaml")):
        for doc in (d for d in yaml.safe_load_all(path.read_text("utf-8")) if d):
            for rule, where in by_kind.get(doc["kind"], []):
                value: Any = doc
                for part in (p for p in where.split(".") if p):
                    value = value.get(part) if isinstance(value, dict) else None
                if value is None or "oldSelf" in rule:
                    continue  # the field is absent (the rule does not apply), or a transition rule
                assert evaluate(rule, value), (path.name, doc["metadata"]["name"], rule)
                checked += 1
    assert checked >= 10
