"""Every stream, subject, consumer and bucket name jetqueue uses is made here.

Layout (``<q>`` is a queue key such as ``ei-update``, ``<l>`` a priority level
0..levels-1, 0 being the most urgent):

======================================  =========================================
``jq.<q>.job.p<l>.<job_id>``            a waiting job (stream ``JQ_<Q>``)
``jq.<q>.sched.<job_id>``               a delayed job or a retry waiting for its
                                        backoff (broker ``@at`` schedule)
``jq.<q>.cron.<name>``                  a recurring schedule (broker cron)
``jq.<q>.cronjob.p<l>.<name>``          where a cron schedule fires its jobs
``jq.<q>.cronpaused.<name>``            a paused recurring schedule's definition
                                        (no schedule header: it fires nothing)
``jq.dlq.<q>.<job_id>``                 dead-lettered job (stream ``JQ_DLQ``)
``jq.events.<q>``                       batched lifecycle records (``JQ_EVENTS``)
``jq.hb.<q>.<worker_id>``               worker heartbeats (``JQ_HEARTBEATS``)
``jq.ctl.<q>.cancel``                   core NATS: cancel a running job
KV bucket ``jq-jobs``, key ``<job_id>`` last known state of a job (TTL = the
                                        queue's retention)
======================================  =========================================

Cron-fired jobs land on ``cronjob`` subjects so that the ``job.*.<id>``
wildcard addresses exactly one job; both are matched by the level consumer
filter ``jq.<q>.*.p<l>.>``.
"""

from __future__ import annotations

import re

PREFIX = "jq"

EVENTS_STREAM = "JQ_EVENTS"
HEARTBEATS_STREAM = "JQ_HEARTBEATS"
DLQ_STREAM = "JQ_DLQ"
JOBS_BUCKET = "jq-jobs"

# Tokens that travel inside subjects: NATS forbids whitespace, '.', '*' and '>'.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-:=@+]{1,128}$")
QUEUE_RE = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")


def is_valid_token(value: str) -> bool:
    """Whether ``value`` can be used as one subject token (job id, name)."""
    return bool(TOKEN_RE.fullmatch(value))  # match() with '$' would let a trailing newline through


def job_stream(queue: str) -> str:
    """Stream holding a queue's waiting, scheduled and recurring jobs."""
    return "JQ_" + queue.upper().replace("-", "_")


def job_subject(queue: str, level: int, job_id: str) -> str:
    return f"{PREFIX}.{queue}.job.p{level}.{job_id}"


def job_subject_any_level(queue: str, job_id: str) -> str:
    return f"{PREFIX}.{queue}.job.*.{job_id}"


def waiting_filter(queue: str) -> str:
    """Every waiting job of a queue, at any level (used by drain)."""
    return f"{PREFIX}.{queue}.*.>"


def level_filter(queue: str, level: int) -> str:
    """What the consumer of one priority level delivers (jobs and cron fires)."""
    return f"{PREFIX}.{queue}.*.p{level}.>"


def cronjob_subject(queue: str, level: int, name: str) -> str:
    return f"{PREFIX}.{queue}.cronjob.p{level}.{name}"


def sched_subject(queue: str, job_id: str) -> str:
    return f"{PREFIX}.{queue}.sched.{job_id}"


def sched_filter(queue: str) -> str:
    return f"{PREFIX}.{queue}.sched.*"


def cron_subject(queue: str, name: str) -> str:
    return f"{PREFIX}.{queue}.cron.{name}"


def cron_filter(queue: str) -> str:
    return f"{PREFIX}.{queue}.cron.*"


def delays_and_schedules_filter(queue: str) -> str:
    """The delayed jobs and recurring schedules of a queue (two-token kinds: ``sched.<id>``, ``cron.<name>``)."""
    return f"{PREFIX}.{queue}.*.*"


def cron_paused_subject(queue: str, name: str) -> str:
    """Where a paused schedule's definition waits (no ``Nats-Schedule`` header: the broker fires nothing)."""
    return f"{PREFIX}.{queue}.cronpaused.{name}"


def cron_paused_filter(queue: str) -> str:
    return f"{PREFIX}.{queue}.cronpaused.*"


def job_filter(queue: str) -> str:
    """Every waiting job of a queue (any level), without the jobs cron schedules fire."""
    return f"{PREFIX}.{queue}.job.>"


def cronjob_filter(queue: str) -> str:
    """Every job a cron schedule of a queue fired that is still in its stream."""
    return f"{PREFIX}.{queue}.cronjob.>"


def queue_filter(queue: str) -> str:
    """Every subject of a queue's stream (jobs, delays, schedules)."""
    return f"{PREFIX}.{queue}.>"


def cron_template_id(name: str) -> str:
    """The id of a schedule's template envelope (the jobs it fires extend it)."""
    return f"cron-{name}"


def cron_job_prefix(name: str) -> str:
    """What the id of every job a schedule fired or a "run now" made begins with."""
    return f"{cron_template_id(name)}-"


def cron_job_id(name: str, seq: int) -> str:
    """The id of the job a cron schedule fired: its name and the message's stream sequence."""
    return f"{cron_job_prefix(name)}{seq}"


def triggered_cron_job_id(name: str, ms: int) -> str:
    """The id of a job a schedule's "run now" enqueued: next to the fired ones (``cron-<name>-``)."""
    return f"{cron_job_prefix(name)}t{ms}"


def queue_subjects(queue: str) -> list[str]:
    """Subjects bound to a queue's stream."""
    return [f"{PREFIX}.{queue}.>"]


def level_consumer(queue: str, level: int) -> str:
    """Durable consumer of one priority level of a queue."""
    return f"{queue}-p{level}"


def parse_job_subject(subject: str) -> tuple[str, str, int, str]:
    """Split ``jq.<q>.<kind>.p<l>.<id>`` into (queue, kind, level, id)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != PREFIX or not parts[3].startswith("p"):
        raise ValueError(f"not a job subject: {subject!r}")
    return parts[1], parts[2], int(parts[3][1:]), parts[4]


def dlq_subject(queue: str, job_id: str) -> str:
    return f"{PREFIX}.dlq.{queue}.{job_id}"


def dlq_filter(queue: str | None = None) -> str:
    return f"{PREFIX}.dlq.{queue or '*'}.*"


def events_subject(queue: str) -> str:
    return f"{PREFIX}.events.{queue}"


def events_filter() -> str:
    return f"{PREFIX}.events.*"


def heartbeat_subject(queue: str, worker_id: str) -> str:
    return f"{PREFIX}.hb.{queue}.{worker_id}"


def heartbeats_filter() -> str:
    return f"{PREFIX}.hb.*.*"


def cancel_subject(queue: str) -> str:
    return f"{PREFIX}.ctl.{queue}.cancel"


def max_deliveries_advisory(queue: str) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{job_stream(queue)}.*"


def kv_key(job_id: str) -> str:
    return job_id


def state_subject(job_id: str) -> str:
    """Subject of a job's state in the ``jq-jobs`` bucket (a put with a per-message TTL)."""
    return f"$KV.{JOBS_BUCKET}.{kv_key(job_id)}"


def states_prefix() -> str:
    """The common start of every job-state subject (the worker writes them as fast batches)."""
    return state_subject("")


def bucket_stream(bucket: str) -> str:
    """Stream behind a KV bucket."""
    return f"KV_{bucket}"


def object_store_stream(bucket: str) -> str:
    """Stream behind an object store."""
    return f"OBJ_{bucket}"


ADVISORIES_STREAM = "JQ_ADVISORIES"
MAX_DELIVERIES_ALL = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"


def stalled_consumer(queue: str) -> str:
    """Durable consumer of a queue's max-deliveries advisories (kept in JQ_ADVISORIES)."""
    return f"{queue}-stalled"


ARTIFACTS_BUCKET = "jq-artifacts"


def artifact_object(job_id: str, name: str) -> str:
    """Object-store name of a file a processor attached to a job."""
    return f"{job_id}/{name}"


def audit_subject(entity: str) -> str:
    """Where an audit record of a control action on ``entity`` (QUEUE, JOB, WORKER, USER) goes."""
    return f"{PREFIX}.audit.{entity.lower()}"


def events_all() -> str:
    """Every queue's lifecycle records (the subjects of ``JQ_EVENTS`` besides audit)."""
    return f"{PREFIX}.events.>"


def audit_all() -> str:
    """Every audit record."""
    return f"{PREFIX}.audit.>"


def heartbeats_all() -> str:
    """Every worker's heartbeats (the subjects of ``JQ_HEARTBEATS``)."""
    return f"{PREFIX}.hb.>"


def dlq_all() -> str:
    """Every dead letter (the subjects of ``JQ_DLQ``)."""
    return f"{PREFIX}.dlq.>"


def parse_dlq_subject(subject: str) -> tuple[str, str]:
    """Split ``jq.dlq.<q>.<job_id>`` into (queue, job id).

    Raises:
        ValueError: not a dead-letter subject.
    """
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or parts[1] != "dlq":
        raise ValueError(f"not a dead-letter subject: {subject!r}")
    return parts[2], parts[3]


def pull_subject(stream: str, consumer: str) -> str:
    """JetStream API subject of a pull request to a durable consumer."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"


def direct_get_subject(stream: str) -> str:
    """JetStream API subject of a direct get from a stream (``allow_direct``)."""
    return f"$JS.API.DIRECT.GET.{stream}"


def purge_subject(stream: str) -> str:
    """JetStream API subject of a stream purge."""
    return f"$JS.API.STREAM.PURGE.{stream}"
