"""The committed AsyncAPI document is the one the code generates."""

from __future__ import annotations

import json
from pathlib import Path

from jetqueue import names
from jetqueue.asyncapi import document, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_committed_document_is_current() -> None:
    assert DOC.read_text("utf-8") == render(), "run `jetqueue asyncapi > docs/asyncapi.json`"


def test_every_subject_family_is_described() -> None:
    doc = document()
    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert "jq.{queue}.job.p{level}.{jobId}" in addresses
    assert "jq.{queue}.sched.{jobId}" in addresses
    assert "jq.events.{queue}" in addresses and "jq.hb.{queue}.{workerId}" in addresses
    assert "jq.dlq.{queue}.{jobId}" in addresses and "jq.ctl.{queue}.cancel" in addresses
    assert names.MAX_DELIVERIES_ALL in addresses
    record = doc["components"]["messages"]["LifecycleBatch"]["payload"]["properties"]["records"]["items"]
    assert record["properties"]["type"]["enum"] == [
        "started",
        "progress",
        "completed",
        "retrying",
        "failed",
        "stalled",
        "cancelled",
    ]
    for op in doc["operations"].values():
        ref = op["channel"]["$ref"].rsplit("/", 1)[-1]
        assert ref in doc["channels"]
    json.dumps(doc)  # serialisable
