"""JSON log lines and the job context."""

from __future__ import annotations

import json
import logging

from jetqueue.logs import JsonFormatter, bind, job_context


def _format(logger: logging.Logger, fn: object) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    fmt = JsonFormatter()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # formats when logged, like a StreamHandler
            lines.append(json.loads(fmt.format(record)))

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        fn()  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    return lines


def test_lines_inside_a_job_carry_its_fields() -> None:
    log = logging.getLogger("test.logs.a")

    def work() -> None:
        log.info("before")
        with job_context(job_id="j-1", queue="email-send", attempt=2, worker="w"):
            bind(trace_id="ab" * 16)
            log.warning("attempt %d failed", 2)
        log.info("after")

    before, inside, after = _format(log, work)
    assert inside["msg"] == "attempt 2 failed" and inside["level"] == "WARNING"
    assert (inside["job_id"], inside["queue"], inside["attempt"], inside["trace_id"]) == (
        "j-1",
        "email-send",
        2,
        "ab" * 16,
    )
    assert "job_id" not in before and "job_id" not in after


def test_exceptions_are_included() -> None:
    log = logging.getLogger("test.logs.b")

    def work() -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    (line,) = _format(log, work)
    assert "ValueError: boom" in str(line["exc"])
