"""The taskiq-nats app of the bench: ``taskiq worker tests.bench.taskiq_app:broker``.

A pull-based JetStream broker (``fetch`` of ``JQBENCH_TASKIQ_BATCH`` messages) on the server at
``JQBENCH_NATS_URL``, one no-op task, and a middleware that counts the tasks a worker process
finished and when it finished the last one; each worker process writes those to
``JQBENCH_TASKIQ_OUT/<pid>.json`` when it shuts down.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq_nats import PullBasedJetStreamBroker

SUBJECT = "bench.taskiq"
STREAM = "BENCH_TASKIQ"
DURABLE = "bench-taskiq"


class Stats(TaskiqMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.done = 0
        self.errors = 0
        self.last = 0.0

    def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        # the receiver acks right after this (ack type "when saved", taskiq's default)
        self.done += 1
        self.last = time.time()

    def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        self.errors += 1

    def shutdown(self) -> None:
        out = os.environ.get("JQBENCH_TASKIQ_OUT")
        if out and self.broker.is_worker_process:
            stats = {"done": self.done, "errors": self.errors, "last": self.last}
            Path(out, f"{os.getpid()}.json").write_text(json.dumps(stats))


broker = PullBasedJetStreamBroker(
    servers=os.environ.get("JQBENCH_NATS_URL", "nats://127.0.0.1:4222"),
    subject=SUBJECT,
    stream_name=STREAM,
    durable=DURABLE,
    pull_consume_batch=int(os.environ.get("JQBENCH_TASKIQ_BATCH", "100")),
    pull_consume_timeout=1.0,
).with_middlewares(Stats())


@broker.task(task_name="noop")
async def noop(**data: Any) -> None:
    return None
