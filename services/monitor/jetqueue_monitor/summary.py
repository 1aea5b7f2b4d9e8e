"""Plain-language summaries of a job: what it was and why it failed (Korean and English)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jetqueue.catalog import Catalog

_CAUSES: list[tuple[tuple[str, ...], str, str]] = [
    (("timed out", "TimeoutError"), "제한 시간 안에 끝나지 않았습니다", "it did not finish within its time limit"),
    (("stalled",), "작업 중 워커가 멈추거나 종료되었습니다", "the worker running it died or stopped responding"),
    (("malformed", "not JSON", "InvalidJob"), "메시지 형식이 잘못되었습니다", "its message could not be read"),
    (("no processor registered",), "이 작업 유형을 처리할 프로세서가 없습니다", "no processor handles this job type"),
    (
        ("ConnectionError", "ConnectionRefused", "unreachable", "OSError"),
        "외부 시스템에 연결하지 못했습니다",
        "an external system could not be reached",
    ),
    (
        ("PermanentError", "ValueError", "KeyError", "required", "must be"),
        "입력 데이터가 올바르지 않습니다",
        "its input data was invalid",
    ),
    (("cancel",), "사용자가 취소했습니다", "it was cancelled"),
]


def summarize(job: dict[str, Any], catalog: Catalog) -> dict[str, str]:
    """``{"ko": ..., "en": ...}``: one or two sentences an operator can act on."""
    queue = str(job.get("queue", ""))
    spec = catalog.get(queue) if queue in catalog else None
    label_ko = spec.display_name if spec and spec.display_name else queue
    label_en = spec.display_name_en if spec and spec.display_name_en else queue
    name = job.get("name") or "?"
    status = job.get("status")
    attempts = job.get("attempts_made") or 0
    max_attempts = job.get("max_attempts") or attempts
    error = str(job.get("error") or "")
    what_ko = f"'{label_ko}' 큐의 {name} 작업"
    what_en = f"A {name} job on the '{label_en}' queue"
    if status == "completed":
        return {
            "ko": f"{what_ko}이 {attempts}번째 시도에서 완료되었습니다.",
            "en": f"{what_en} completed on attempt {attempts}.",
        }
    if status in ("failed", "scheduled") and error:
        cause_ko, cause_en = "오류가 발생했습니다", "it raised an error"
        for needles, ko, en in _CAUSES:
            if any(n.lower() in error.lower() for n in needles):
                cause_ko, cause_en = ko, en
                break
        short = error.split("\n", 1)[0][:200]
        if status == "failed":
            return {
                "ko": f"{what_ko}이 {attempts}/{max_attempts}번 시도 후 실패했습니다: {cause_ko}. (오류: {short})",
                "en": f"{what_en} failed after {attempts} of {max_attempts} attempts: {cause_en}. (error: {short})",
            }
        at = _when(job.get("run_at"))
        return {
            "ko": f"{what_ko}의 {attempts}번째 시도가 실패해 재시도를 기다리는 중입니다: {cause_ko}."
            + (f" 다음 시도: {at}." if at else ""),
            "en": f"{what_en} failed attempt {attempts} and is waiting to retry: {cause_en}."
            + (f" Next attempt at {at}." if at else ""),
        }
    if status == "scheduled":
        at = _when(job.get("run_at"))
        if at:
            return {
                "ko": f"{what_ko}이 {at}에 실행되도록 예약되어 있습니다.",
                "en": f"{what_en} is scheduled to run at {at}.",
            }
        return {"ko": f"{what_ko}이 실행 시각을 기다리고 있습니다.", "en": f"{what_en} is delayed until its run time."}
    if status == "cancelled":
        return {"ko": f"{what_ko}이 취소되었습니다.", "en": f"{what_en} was cancelled."}
    if status == "active":
        return {
            "ko": f"{what_ko}이 실행 중입니다 ({attempts}번째 시도).",
            "en": f"{what_en} is running (attempt {attempts}).",
        }
    level = job.get("level")
    if level is None:
        return {"ko": f"{what_ko}이 대기 중입니다.", "en": f"{what_en} is waiting to run."}
    return {
        "ko": f"{what_ko}이 워커를 기다리고 있습니다 (우선순위 레벨 {level}).",
        "en": f"{what_en} is waiting for a worker (priority level {level}).",
    }


def _when(stamp: Any) -> str | None:
    """An ISO time as the summaries say it: to the minute, in UTC (the page shows local times next to it)."""
    if not stamp:
        return None
    try:
        at = datetime.fromisoformat(str(stamp)).astimezone(UTC)
    except ValueError:
        return None
    return at.strftime("%Y-%m-%d %H:%M UTC")
