"""The AsyncAPI 3.0 document of every subject jetqueue uses, generated from the code.

``jetqueue asyncapi > docs/asyncapi.json`` refreshes the committed copy; a
test fails when the two differ.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from jetqueue import __version__, names
from jetqueue.control import AuditRecord
from jetqueue.events import Heartbeat, LifecycleRecord
from jetqueue.job import SCHEMA_VERSION, EventType, JobState, JobStatus

_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}


def _schema_of(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(tp) if a is not type(None)]
        return _schema_of(parts[0]) if len(parts) == 1 else {"oneOf": [_schema_of(p) for p in parts]}
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return {"type": "array", "items": _schema_of(args[0]) if args else {}}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, str) and hasattr(tp, "__members__"):
        return {"type": "string", "enum": [m.value for m in tp]}  # type: ignore[attr-defined]
    return dict(_PRIMITIVES.get(tp, {}))


def dataclass_schema(cls: type, *, required: tuple[str, ...] = (), title: str = "") -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    field_names = getattr(cls, "__struct_fields__", None) or [f.name for f in dataclasses.fields(cls)]
    props = {name: _schema_of(hints[name]) for name in field_names if name != "v"}
    props["v"] = {"type": "integer", "const": SCHEMA_VERSION}
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if title:
        out["title"] = title
    return out


ENVELOPE: dict[str, Any] = {
    "type": "object",
    "title": "Job envelope",
    "required": ["name"],
    "properties": {
        "v": {"type": "integer", "const": SCHEMA_VERSION},
        "id": {
            "type": "string",
            "pattern": names.TOKEN_RE.pattern,
            "description": "defaults to the subject's last token",
        },
        "name": {"type": "string", "description": "job type"},
        "data": {"description": "payload handed to the processor"},
        "attempt": {"type": "integer", "minimum": 1, "description": "1-based; raised by the worker on retry"},
        "opts": {
            "type": "object",
            "properties": {
                "attempts": {"type": "integer", "minimum": 1},
                "backoff": {
                    "type": "object",
                    "properties": {"type": {"enum": ["exponential", "fixed"]}, "delay_ms": {"type": "integer"}},
                },
                "timeout_ms": {"type": ["integer", "null"]},
                "priority": {"type": ["integer", "null"], "description": "1 = most urgent"},
            },
        },
        "user_id": {"type": ["string", "null"]},
        "enqueued_at": {"type": "integer", "description": "ms since the epoch"},
        "errors": {"type": "array", "items": {"type": "string"}, "description": "errors of failed attempts"},
        "cron": {"type": "string", "description": "set on jobs fired by a recurring schedule"},
    },
}


def _channel(address: str, description: str, message: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }


_PARAMS = {
    "queue": {"description": "queue key from the catalog, e.g. email-send"},
    "level": {"description": "priority level 0..levels-1, 0 most urgent"},
    "jobId": {"description": "job id: 1-128 of letters, digits and _-:=@+"},
    "name": {"description": "schedule name"},
    "workerId": {"description": "worker id"},
}

# channel key: (address, description, message, parameters); addresses come from jetqueue.names
# with the parameters in place of their values.
_Q, _L, _J, _N, _W = "{queue}", "{level}", "{jobId}", "{name}", "{workerId}"
_CHANNELS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "job": (
        names.job_subject(_Q, _L, _J),  # type: ignore[arg-type]  # a template: {level} stands for the number
        "A waiting job (stream JQ_<QUEUE>). Header Nats-Msg-Id = job id.",
        "Job",
        ("queue", "level", "jobId"),
    ),
    "delayed": (
        names.sched_subject(_Q, _J),
        "A delayed job or a retry waiting for its backoff: a broker schedule "
        "(Nats-Schedule: @at <RFC 3339>, Nats-Schedule-Target: the job subject).",
        "Job",
        ("queue", "jobId"),
    ),
    "recurring": (
        names.cron_subject(_Q, _N),
        "A recurring schedule (Nats-Schedule: 6-field cron or @every), firing onto jq.<queue>.cronjob.p<level>.<name>.",
        "Job",
        ("queue", "name"),
    ),
    "cronjob": (
        names.cronjob_subject(_Q, _L, _N),  # type: ignore[arg-type]
        "A job fired by a recurring schedule; its id is cron-<name>-<stream seq>.",
        "Job",
        ("queue", "level", "name"),
    ),
    "events": (
        names.events_subject(_Q),
        "Batched lifecycle records (stream JQ_EVENTS); header Nats-Msg-Id per batch.",
        "LifecycleBatch",
        ("queue",),
    ),
    "audit": (names.audit_subject("{entity}"), "Audit records of control actions (stream JQ_EVENTS).", "Audit", ()),
    "heartbeats": (
        names.heartbeat_subject(_Q, _W),
        "Worker heartbeats every 10 s (stream JQ_HEARTBEATS, last per worker).",
        "Heartbeat",
        ("queue", "workerId"),
    ),
    "deadLetters": (
        names.dlq_subject(_Q, _J),
        "Dead-lettered jobs (stream JQ_DLQ); headers Jq-Reason, Jq-Error, Jq-Failed-At, Jq-Original-Subject.",
        "Job",
        ("queue", "jobId"),
    ),
    "cancel": (
        names.cancel_subject(_Q),
        "Core NATS: ask the workers of a queue to stop a running job.",
        "Cancel",
        ("queue",),
    ),
    "jobState": (
        names.state_subject(_J),
        "Last known state of a job (KV bucket jq-jobs; per-key TTL).",
        "JobState",
        ("jobId",),
    ),
    "maxDeliveries": (
        names.MAX_DELIVERIES_ALL,
        "Server advisories for jobs that hit max_deliver (captured in JQ_ADVISORIES).",
        "Advisory",
        (),
    ),
}

# operation: (action, channel)
_OPERATIONS = {
    "enqueue": ("send", "job"),
    "enqueueDelayed": ("send", "delayed"),
    "schedule": ("send", "recurring"),
    "runJob": ("receive", "job"),
    "runCronJob": ("receive", "cronjob"),
    "emitEvents": ("send", "events"),
    "ingestEvents": ("receive", "events"),
    "emitAudit": ("send", "audit"),
    "heartbeat": ("send", "heartbeats"),
    "deadLetter": ("send", "deadLetters"),
    "cancelRunning": ("send", "cancel"),
    "recordState": ("send", "jobState"),
    "handleMaxDeliveries": ("receive", "maxDeliveries"),
}


def _channels() -> dict[str, Any]:
    out = {}
    for key, (address, description, message, params) in _CHANNELS.items():
        ch = _channel(address, description, message)
        if params:
            ch["parameters"] = {k: _PARAMS[k] for k in params}
        out[key] = ch
    return out


def _json(payload: dict[str, Any]) -> dict[str, Any]:
    return {"contentType": "application/json", "payload": payload}


def _messages() -> dict[str, Any]:
    batch = {
        "type": "object",
        "required": ["v", "records"],
        "properties": {
            "v": {"type": "integer", "const": SCHEMA_VERSION},
            "records": {
                "type": "array",
                "items": dataclass_schema(
                    LifecycleRecord, required=("type", "job_id", "queue", "name", "attempt", "worker", "ts")
                ),
            },
        },
    }
    cancel = {
        "type": "object",
        "required": ["job_id"],
        "properties": {"job_id": {"type": "string"}, "reason": {"type": "string"}},
    }
    advisory = {
        "type": "object",
        "properties": {
            "stream": {"type": "string"},
            "consumer": {"type": "string"},
            "stream_seq": {"type": "integer"},
            "deliveries": {"type": "integer"},
        },
    }
    return {
        "Job": _json(ENVELOPE),
        "LifecycleBatch": _json(batch),
        "Audit": _json(
            dataclass_schema(AuditRecord, required=("actor", "action", "entity_type", "entity_id", "ok", "ts"))
        ),
        "Heartbeat": _json(dataclass_schema(Heartbeat, required=("worker_id", "queue", "ts"))),
        "Cancel": _json(cancel),
        "JobState": _json(dataclass_schema(JobState, required=("id", "queue", "state"))),
        "Advisory": _json(advisory),
    }


def document() -> dict[str, Any]:
    """The AsyncAPI document (stable: same code, same output)."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "jetqueue",
            "version": __version__,
            "description": "Subjects and messages of jetqueue on NATS JetStream. Job states: "
            + ", ".join(s.value for s in JobStatus)
            + ". Lifecycle record types: "
            + ", ".join(e.value for e in EventType)
            + ".",
        },
        "defaultContentType": "application/json",
        "channels": _channels(),
        "operations": {
            op: {"action": action, "channel": {"$ref": f"#/channels/{ch}"}} for op, (action, ch) in _OPERATIONS.items()
        },
        "components": {"messages": _messages()},
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
