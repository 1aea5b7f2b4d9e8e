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


def document() -> dict[str, Any]:
    """The AsyncAPI document (stable: same code, same output)."""
    q, lvl, jid, nm, wid = "{queue}", "{level}", "{jobId}", "{name}", "{workerId}"
    params = {
        "queue": {"description": "queue key from the catalog, e.g. email-send"},
        "level": {"description": "priority level 0..levels-1, 0 most urgent"},
        "jobId": {"description": "job id: 1-128 of letters, digits and _-:=@+"},
        "name": {"description": "schedule name"},
        "workerId": {"description": "worker id"},
    }

    def with_params(ch: dict[str, Any], *keys: str) -> dict[str, Any]:
        ch["parameters"] = {k: params[k] for k in keys}
        return ch

    channels = {
        "job": with_params(
            _channel(
                f"{names.PREFIX}.{q}.job.p{lvl}.{jid}",
                "A waiting job (stream JQ_<QUEUE>). Header Nats-Msg-Id = job id.",
                "Job",
            ),
            "queue",
            "level",
            "jobId",
        ),
        "delayed": with_params(
            _channel(
                f"{names.PREFIX}.{q}.sched.{jid}",
                "A delayed job or a retry waiting for its backoff: a broker schedule "
                "(Nats-Schedule: @at <RFC 3339>, Nats-Schedule-Target: the job subject).",
                "Job",
            ),
            "queue",
            "jobId",
        ),
        "recurring": with_params(
            _channel(
                f"{names.PREFIX}.{q}.cron.{nm}",
                "A recurring schedule (Nats-Schedule: 6-field cron or @every), firing "
                "onto jq.<queue>.cronjob.p<level>.<name>.",
                "Job",
            ),
            "queue",
            "name",
        ),
        "cronjob": with_params(
            _channel(
                f"{names.PREFIX}.{q}.cronjob.p{lvl}.{nm}",
                "A job fired by a recurring schedule; its id is cron-<name>-<stream seq>.",
                "Job",
            ),
            "queue",
            "level",
            "name",
        ),
        "events": with_params(
            _channel(
                f"{names.PREFIX}.events.{q}",
                "Batched lifecycle records (stream JQ_EVENTS); header Nats-Msg-Id per batch.",
                "LifecycleBatch",
            ),
            "queue",
        ),
        "audit": _channel(
            f"{names.PREFIX}.audit.{{entity}}", "Audit records of control actions (stream JQ_EVENTS).", "Audit"
        ),
        "heartbeats": with_params(
            _channel(
                f"{names.PREFIX}.hb.{q}.{wid}",
                "Worker heartbeats every 10 s (stream JQ_HEARTBEATS, last per worker).",
                "Heartbeat",
            ),
            "queue",
            "workerId",
        ),
        "deadLetters": with_params(
            _channel(
                f"{names.PREFIX}.dlq.{q}.{jid}",
                "Dead-lettered jobs (stream JQ_DLQ); headers Jq-Reason, Jq-Error, Jq-Failed-At, Jq-Original-Subject.",
                "Job",
            ),
            "queue",
            "jobId",
        ),
        "cancel": with_params(
            _channel(
                f"{names.PREFIX}.ctl.{q}.cancel",
                "Core NATS: ask the workers of a queue to stop a running job.",
                "Cancel",
            ),
            "queue",
        ),
        "jobState": with_params(
            _channel(
                f"$KV.{names.JOBS_BUCKET}.{jid}",
                "Last known state of a job (KV bucket jq-jobs; per-key TTL).",
                "JobState",
            ),
            "jobId",
        ),
        "maxDeliveries": _channel(
            names.MAX_DELIVERIES_ALL,
            "Server advisories for jobs that hit max_deliver (captured in JQ_ADVISORIES).",
            "Advisory",
        ),
    }
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
    messages = {
        "Job": {"contentType": "application/json", "payload": ENVELOPE},
        "LifecycleBatch": {"contentType": "application/json", "payload": batch},
        "Audit": {
            "contentType": "application/json",
            "payload": dataclass_schema(
                AuditRecord, required=("actor", "action", "entity_type", "entity_id", "ok", "ts")
            ),
        },
        "Heartbeat": {
            "contentType": "application/json",
            "payload": dataclass_schema(Heartbeat, required=("worker_id", "queue", "ts")),
        },
        "Cancel": {
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "required": ["job_id"],
                "properties": {"job_id": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "JobState": {
            "contentType": "application/json",
            "payload": dataclass_schema(JobState, required=("id", "queue", "state")),
        },
        "Advisory": {
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "properties": {
                    "stream": {"type": "string"},
                    "consumer": {"type": "string"},
                    "stream_seq": {"type": "integer"},
                    "deliveries": {"type": "integer"},
                },
            },
        },
    }
    operations = {
        "enqueue": {"action": "send", "channel": {"$ref": "#/channels/job"}},
        "enqueueDelayed": {"action": "send", "channel": {"$ref": "#/channels/delayed"}},
        "schedule": {"action": "send", "channel": {"$ref": "#/channels/recurring"}},
        "runJob": {"action": "receive", "channel": {"$ref": "#/channels/job"}},
        "runCronJob": {"action": "receive", "channel": {"$ref": "#/channels/cronjob"}},
        "emitEvents": {"action": "send", "channel": {"$ref": "#/channels/events"}},
        "ingestEvents": {"action": "receive", "channel": {"$ref": "#/channels/events"}},
        "emitAudit": {"action": "send", "channel": {"$ref": "#/channels/audit"}},
        "heartbeat": {"action": "send", "channel": {"$ref": "#/channels/heartbeats"}},
        "deadLetter": {"action": "send", "channel": {"$ref": "#/channels/deadLetters"}},
        "cancelRunning": {"action": "send", "channel": {"$ref": "#/channels/cancel"}},
        "recordState": {"action": "send", "channel": {"$ref": "#/channels/jobState"}},
        "handleMaxDeliveries": {"action": "receive", "channel": {"$ref": "#/channels/maxDeliveries"}},
    }
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
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
