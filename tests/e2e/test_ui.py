"""The Worker Monitor UI in a real browser (Debian's Chromium via Playwright) on a real monitor, NATS and workers.

Set JETQUEUE_SCREENSHOTS=1 to (re)write docs/screenshots/*.png from the run.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from jetqueue.catalog import Catalog
from jetqueue.client import JobClient
from jetqueue.control import queue_info
from tests.conftest import eventually
from tests.e2e.conftest import ANALYTICS, API, DISPATCH, EMAIL, REPORT, Session, World

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WRITE_SHOTS = os.environ.get("JETQUEUE_SCREENSHOTS") == "1"


def real_errors(s: Session) -> list[str]:
    """Script errors and CSP violations of the page.

    Expected and left out: refused API calls a test provokes (401/403), and Chromium's note that
    the sandboxed HTML snapshot's script was blocked (that is the point of the sandbox).
    """
    expected = ("Failed to load resource", "frame is sandboxed and the 'allow-scripts' permission is not set")
    return [e for e in s.errors if not any(x in e for x in expected)]


async def texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_inner_texts()]


async def test_login_then_every_tab_shows_live_data(open_ui: Any, world: World, client: JobClient) -> None:
    s = await open_ui("ada")
    page = s.page
    ov = await world.api("/overview")
    # Overview: six KPI cards with the API's numbers, and the incident banner.
    await page.wait_for_selector("[data-kpi=online_workers] [data-role=value]")
    assert await page.locator(".kpi").count() == 6
    assert (await page.inner_text("[data-kpi=online_workers] [data-role=value]")).strip() == "4"
    assert (await page.inner_text("[data-kpi=failed_24h] [data-role=value]")).strip() == str(ov["failed_24h"])
    assert (await page.inner_text("[data-kpi=delayed] [data-role=value]")).strip() == "2"
    assert re.search(r"\d+(\.\d)?%", await page.inner_text("[data-kpi=success_rate] [data-role=value]"))
    banner = page.locator(f"[data-role=incidents] li[data-type=no_worker][data-queue={DISPATCH}]")
    await banner.wait_for()
    assert "배차 최적화 AI" in await banner.inner_text()  # Korean queue label
    # Live: a new job waiting shows up without a reload (the SSE stream).
    before = int((await page.inner_text("[data-kpi=waiting] [data-role=value]")).replace(",", ""))
    await client.enqueue(DISPATCH, "optimize-route", {"region": "live"})
    await page.wait_for_function(
        "n => Number(document.querySelector('[data-kpi=waiting] [data-role=value]').textContent.replace(/,/g, '')) > n",
        arg=before,
    )
    # One click from the incident to the workers tab, filtered to that queue.
    await banner.locator("[data-role=drill]").click()
    await page.wait_for_url(re.compile(rf"/ui/workers\?queue={DISPATCH}$"))
    assert await page.input_value("#w-queue") == DISPATCH
    await page.wait_for_selector("[data-view=workers] [data-role=empty]")  # nobody serves that queue
    # Back goes back to the overview (history.pushState + popstate).
    await page.go_back()
    await page.wait_for_selector("[data-view=overview] [data-role=kpis]")
    assert page.url.endswith("/ui")

    # Queues: Korean label and key, status chips, counts; a row opens the detail panel.
    await page.click("nav.tabs [data-tab=queues]")
    row = page.locator(f"tr[data-queue={EMAIL}]")
    await row.wait_for()
    assert "이메일 발송" in await row.inner_text() and EMAIL in await row.inner_text()
    await page.wait_for_selector(f"tr[data-queue={DISPATCH}] .chip[data-status=Degraded]")
    await page.wait_for_selector(f"tr[data-queue={ANALYTICS}] .chip[data-status=Paused]")
    assert await page.locator("table[data-role=queues-table] tbody tr").count() == 11
    await row.locator("td").nth(3).click()
    await page.wait_for_url(re.compile(rf"/ui/queues\?queue={EMAIL}$"))
    panel = page.locator("[data-role=queue-drawer]")
    # drawn from the trend samples (a flat line at 0 has no height, so "attached", not "visible")
    await panel.locator("svg[data-role=trend] polyline[data-series=dlq]").wait_for(state="attached")
    assert await panel.locator("svg[data-role=trend] polyline").count() == 4
    await panel.locator("[data-role=top-errors]").wait_for()
    assert "mailbox full" in await panel.locator("[data-role=top-errors]").inner_text()
    for action in ("pause", "retry-failed", "drain", "clean"):
        assert await panel.locator(f"[data-action={action}]").count() == 1, action
    await page.keyboard.press("Escape")
    await page.wait_for_url(re.compile(r"/ui/queues$"))

    # Jobs: real rows; Workers: the four in-process workers with host, pid, version.
    await page.keyboard.press("3")
    await page.wait_for_selector(f"tr[data-job='{world.failed_job}']")
    assert await page.locator("table[data-role=jobs-table] tbody tr").count() >= 15
    await page.keyboard.press("5")
    await page.wait_for_selector(f"tr[data-worker='{EMAIL}-w1']")
    wrow = await page.inner_text(f"tr[data-worker='{EMAIL}-w1']")
    assert "0.1.0" in wrow and str(os.getpid()) in wrow and "이메일 발송" in wrow
    # online, or degraded when enough of its recent attempts failed (the seed fails some on purpose)
    status = await page.get_attribute(f"tr[data-worker='{EMAIL}-w1']", "data-status")
    assert {"ONLINE": "온라인", "DEGRADED": "성능 저하"}[status] in wrow
    assert await page.locator("table[data-role=workers-table] tbody tr").count() == 4
    assert real_errors(s) == []


async def test_filters_narrow_the_job_list_and_the_url_keeps_them(open_ui: Any, world: World) -> None:
    s = await open_ui("otto", path="/ui/jobs")
    page = s.page
    await page.wait_for_selector(f"tr[data-job='{world.ok_job}']")
    all_rows = await page.locator("table[data-role=jobs-table] tbody tr").count()
    await page.select_option("#f-status", "failed")
    await page.wait_for_url(re.compile(r"status=failed"))
    await page.wait_for_function("() => !document.querySelector(\"tr[data-status='completed']\")")
    statuses = await page.eval_on_selector_all(
        "table[data-role=jobs-table] tbody tr", "rs => rs.map(r => r.dataset.status)"
    )
    assert statuses and set(statuses) == {"failed"} and len(statuses) < all_rows
    # queue + free text narrow further; the URL is shareable and reload restores the filters
    await page.select_option("#f-queue", EMAIL)
    await page.fill("[data-role=search]", "mailbox")
    await page.wait_for_url(re.compile(r"q=mailbox"))
    await page.wait_for_function("() => document.querySelectorAll('table[data-role=jobs-table] tbody tr').length === 1")
    assert await page.get_attribute("table[data-role=jobs-table] tbody tr", "data-job") == world.failed_job
    await page.reload()
    await page.wait_for_selector(f"tr[data-job='{world.failed_job}']")
    assert await page.input_value("#f-status") == "failed" and await page.input_value("[data-role=search]") == "mailbox"
    # the job type and user filters
    await page.click("[data-role=clear]")
    await page.fill("#f-user", "u-3177")
    await page.wait_for_selector(f"tr[data-job='{world.artifact_job}']")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('table[data-role=jobs-table] tbody tr')]"
        ".every(r => r.innerText.includes('u-3177'))"
    )
    assert real_errors(s) == []


async def test_drawer_explains_a_failed_job_with_attempts_and_safe_artifacts(open_ui: Any, world: World) -> None:
    s = await open_ui("otto", path=f"/ui/jobs?job={world.failed_job}")
    page = s.page
    drawer = page.locator("[data-role=job-drawer]")
    summary = drawer.locator("[data-role=summary]")
    await summary.wait_for()
    assert "이메일 발송" in await summary.inner_text() and "2/2번 시도 후 실패" in await summary.inner_text()
    await drawer.locator("[data-lang=en]").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-role=summary]').textContent.includes('failed after 2 of 2 attempts')"
    )
    assert "mailbox full" in await summary.inner_text()
    assert await drawer.locator("[data-role=attempts] tbody tr").count() == 2
    raw = drawer.locator("[data-role=raw-error]")
    assert not await raw.is_visible()
    await drawer.locator("details[data-key=raw] summary").click()
    assert await raw.is_visible() and "relay.py:88" in await raw.inner_text()
    # Retry: a confirmation (Cancel focused), then the job is requeued and audited.
    await drawer.locator("[data-action=retry]").click()
    confirm = page.locator("dialog [data-role=confirm]")
    await confirm.wait_for()
    assert await page.evaluate("document.activeElement.dataset.role") == "cancel"
    await confirm.click()
    await page.wait_for_selector(".toast")

    async def retried() -> Any:
        return (await world.api(f"/audit?action=JOB_RETRY&entity_id={world.failed_job}"))["items"] or None

    rows = await eventually(retried, timeout=10, what="retry audit record")
    assert rows[0]["actor"] == "otto" and rows[0]["ok"]

    # The job with files: the PNG shows inline; the HTML snapshot is framed with a bare sandbox (no scripts).
    await page.click("[data-role=close]")
    await page.wait_for_function("() => !document.querySelector('[data-role=job-drawer]')")
    await page.click(f"tr[data-job='{world.artifact_job}']")
    img = drawer.locator("[data-role=artifact-image]")
    await img.wait_for()
    await page.wait_for_function("() => document.querySelector('[data-role=artifact-image]').naturalWidth === 240")
    frame = drawer.locator("iframe[data-role=artifact-frame]")
    assert await frame.get_attribute("sandbox") == ""
    assert (await frame.get_attribute("src")).endswith(f"/jobs/{world.artifact_job}/artifacts/checkout.html")
    inner = page.frame_locator("iframe[data-role=artifact-frame]")
    await inner.locator("p.err").wait_for()
    assert await inner.locator("body").get_attribute("data-scripted") is None  # its script never ran
    assert "unreachable" in await drawer.locator("[data-role=summary]").inner_text() or "연결하지 못했습니다" in (
        await drawer.locator("[data-role=summary]").inner_text()
    )
    assert any("frame is sandboxed" in e for e in s.errors)  # Chromium reports the blocked script
    assert real_errors(s) == []


async def test_drain_needs_the_typed_word_and_empties_the_queue(
    open_ui: Any, world: World, nc: NatsClient, catalog: Catalog
) -> None:
    s = await open_ui("ada", path=f"/ui/queues?queue={DISPATCH}")
    page = s.page
    spec = catalog.get(DISPATCH)
    assert (await queue_info(nc.jetstream(), spec)).waiting == world.waiting_dispatch
    await page.click("[data-role=queue-drawer] [data-action=drain]")
    dialog = page.locator("dialog[data-role=danger]")
    await dialog.wait_for()
    await page.wait_for_function(
        "n => document.querySelector('[data-role=affected]').textContent.trim() === String(n)",
        arg=world.waiting_dispatch,
    )
    text = await dialog.inner_text()
    assert "취소할 수 없습니다" in text and "DRAIN" in text
    # Cancel is the default: focused first, so Enter does not confirm.
    assert await page.evaluate("document.activeElement.dataset.role") == "cancel"
    confirm = dialog.locator("[data-role=confirm]")
    assert await confirm.is_disabled()
    for wrong in ("drain", "DRAI", "DRAIN ", "yes"):
        await dialog.locator("[data-role=word]").fill(wrong)
        assert await confirm.is_disabled(), wrong
    await dialog.locator("[data-role=word]").press("Enter")
    assert (await queue_info(nc.jetstream(), spec)).waiting == world.waiting_dispatch  # nothing happened
    await dialog.locator("[data-role=reason]").fill("poisoned batch")
    await dialog.locator("[data-role=word]").fill("DRAIN")
    assert await confirm.is_enabled()
    await confirm.click()
    await dialog.wait_for(state="detached")
    await page.wait_for_selector(".toast")

    async def empty() -> bool:
        return (await queue_info(nc.jetstream(), spec)).waiting == 0

    await eventually(empty, timeout=10, what="queue drained")

    async def audited() -> Any:
        items = (await world.api(f"/audit?action=QUEUE_DRAIN&entity_id={DISPATCH}"))["items"]
        return items or None

    rows = await eventually(audited, timeout=10, what="drain audit record")
    assert rows[0]["actor"] == "ada" and rows[0]["ok"] and rows[0]["reason"] == "poisoned batch"
    assert rows[0]["result"]["removed"] == world.waiting_dispatch
    # the panel follows: nothing waiting any more
    await page.wait_for_function(
        "() => [...document.querySelectorAll('[data-role=queue-drawer] .stat')][0].innerText.trim().endsWith('0')"
    )
    assert real_errors(s) == []


async def test_cancel_in_the_danger_dialog_changes_nothing(
    open_ui: Any, world: World, nc: NatsClient, catalog: Catalog
) -> None:
    s = await open_ui("ada", path=f"/ui/queues?queue={DISPATCH}")
    page = s.page
    await page.click("[data-role=queue-drawer] [data-action=drain]")
    dialog = page.locator("dialog[data-role=danger]")
    await dialog.locator("[data-role=word]").fill("DRAIN")
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="detached")
    await page.click("[data-role=queue-drawer] [data-action=drain]")
    await dialog.locator("[data-role=cancel]").click()
    await dialog.wait_for(state="detached")
    assert (await queue_info(nc.jetstream(), catalog.get(DISPATCH))).waiting == world.waiting_dispatch
    assert (await world.api(f"/audit?action=QUEUE_DRAIN&entity_id={DISPATCH}"))["items"] == []


async def test_operator_pauses_and_resumes_but_cannot_drain(open_ui: Any, world: World) -> None:
    s = await open_ui("otto", path=f"/ui/queues?queue={EMAIL}", lang="en")
    page = s.page
    panel = page.locator("[data-role=queue-drawer]")
    # pause until two hours from now (the browser's local time, Asia/Seoul here)
    local = await page.evaluate(
        "() => { const d = new Date(Date.now() + 7200e3 - new Date().getTimezoneOffset() * 60e3);"
        " return d.toISOString().slice(0, 16); }"
    )
    await panel.locator("[data-role=pause-until]").fill(local)
    await panel.locator("[data-action=pause]").click()
    await page.wait_for_selector(f"tr[data-queue={EMAIL}] .chip[data-status=Paused]")
    detail = await world.api(f"/queues/{EMAIL}")
    assert detail["paused"] is True
    until = datetime.fromisoformat(detail["pause_until"].replace("Z", "+00:00"))
    assert abs((until - datetime.now(UTC)).total_seconds() - 7200) < 120
    assert "until" in await page.inner_text(f"tr[data-queue={EMAIL}]")
    await panel.locator("[data-action=resume]").click()
    await page.wait_for_selector(f"tr[data-queue={EMAIL}] .chip:not([data-status=Paused])")
    assert (await world.api(f"/queues/{EMAIL}"))["paused"] is False
    assert await panel.locator("[data-action=drain], [data-action=clean]").count() == 0
    assert await panel.locator("[data-action=retry-failed]").count() == 1
    assert real_errors(s) == []


async def test_a_viewer_sees_no_actions_and_the_api_refuses_them(open_ui: Any, world: World) -> None:
    s = await open_ui("vic", path=f"/ui/queues?queue={EMAIL}")
    page = s.page
    panel = page.locator("[data-role=queue-drawer]")
    await panel.locator("[data-role=no-actions]").wait_for()
    assert await page.locator("[data-action]").count() == 0
    await page.goto(f"/ui/jobs?job={world.failed_job}")
    await page.locator("[data-role=job-drawer] [data-role=summary]").wait_for()
    assert await page.locator("[data-role=job-drawer] [data-role=payload-hidden]").is_visible()
    assert await page.locator("[data-action], [data-role=artifacts]").count() == 0
    # The server refuses too, even with the session's CSRF token.
    me = await (await page.request.get("/auth/me")).json()
    assert me["role"] == "viewer"
    headers = {"X-CSRF-Token": me["csrf_token"]}
    r = await page.request.post(f"{API}/queues/{EMAIL}/pause", data={}, headers=headers)
    assert r.status == 403 and "operator role required" in (await r.json())["detail"]
    r = await page.request.delete(f"{API}/queues/{EMAIL}/drain", data={}, headers=headers)
    assert r.status == 403
    r = await page.request.post(f"{API}/jobs/{world.failed_job}/retry", data={}, headers=headers)
    assert r.status == 403
    r = await page.request.get(f"{API}/jobs/{world.artifact_job}/artifacts/checkout.png")
    assert r.status == 403
    assert (await world.api(f"/queues/{EMAIL}"))["paused"] is False


async def test_phone_shows_cards_and_a_full_screen_drawer(open_ui: Any, world: World) -> None:
    s = await open_ui("ada", phone=True, path="/ui/jobs")
    page = s.page
    first = page.locator("table[data-role=jobs-table] tbody tr").first
    await first.wait_for()
    # Rows are cards: grid boxes with their own border, and the column header row is hidden.
    assert await first.evaluate("r => getComputedStyle(r).display") == "grid"
    head = page.locator("table[data-role=jobs-table] thead")
    assert await head.evaluate("t => t.getBoundingClientRect().height") <= 1
    box = await first.bounding_box()
    assert box and box["width"] <= 390
    user_cell = first.locator("td[data-label='사용자']")  # each value carries its column name
    assert await user_cell.evaluate("td => getComputedStyle(td, '::before').content") == '"사용자"'
    await page.locator(f"tr[data-job='{world.failed_job}']").tap()
    drawer = page.locator("[data-role=job-drawer]")
    await drawer.locator("[data-role=summary]").wait_for()
    d = await drawer.bounding_box()
    assert d and d["x"] == 0 and d["width"] == 390 and d["height"] == 844
    await drawer.locator(".drawer-back").tap()
    await drawer.wait_for(state="detached")
    # The queues table is cards too, and every tab is reachable with a tap.
    await page.locator("nav.tabs [data-tab=queues]").tap()
    card = page.locator(f"tr[data-queue={EMAIL}]")
    await card.wait_for()
    assert await card.evaluate("r => getComputedStyle(r).display") == "grid"
    assert real_errors(s) == []


async def rows(page: Any) -> int:
    return int(await page.locator("table[data-role=jobs-table] tbody tr").count())


async def wait_rows(page: Any, n: int) -> None:
    await page.wait_for_function(
        "n => document.querySelectorAll('table[data-role=jobs-table] tbody tr').length === n", arg=n
    )


async def audited(world: World, query: str, n: int = 1) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await world.api(f"/audit?{query}"))["items"]
        return items if len(items) >= n else None

    return await eventually(found, timeout=10, what=f"audit {query}")


async def test_waiting_and_delayed_jobs_are_listed_and_a_delayed_one_runs_now(open_ui: Any, world: World) -> None:
    async def settled() -> int | None:
        ov = await world.api("/overview")
        listed = len((await world.api("/jobs?status=waiting&limit=500"))["items"])
        return listed if listed == ov["waiting"] and listed > 0 else None

    waiting = await eventually(settled, timeout=15, what="the Waiting KPI and the waiting jobs agree")
    s = await open_ui("otto", path="/ui/jobs?status=waiting")
    page = s.page
    await wait_rows(page, waiting)  # every waiting job is in the list, as many as the KPI says
    first = page.locator("table[data-role=jobs-table] tbody tr").first
    assert await first.locator("[data-role=job-id]").inner_text() == await first.get_attribute("data-job")
    # the delayed ones, with their run time; search finds one by its id
    await page.select_option("#f-status", "scheduled")
    await wait_rows(page, 2)
    assert "실행 예정" in await page.inner_text("table[data-role=jobs-table] tbody tr [data-role=run-at]")
    await page.fill("[data-role=search]", world.delayed_job)
    await wait_rows(page, 1)
    await page.click(f"tr[data-job='{world.delayed_job}'] td.cell-title")
    drawer = page.locator("[data-role=job-drawer]")
    await drawer.locator("[data-role=run-at]").wait_for()
    assert "예약되어 있습니다" in await drawer.locator("[data-role=summary]").inner_text()
    # run it now: it leaves its delay and waits (a worker of the queue then runs it)
    await drawer.locator("[data-action=promote]").click()
    await page.locator("dialog [data-role=confirm]").click()
    await page.wait_for_selector(".toast")
    await drawer.locator(".drawer-sub .chip:not([data-status=scheduled])").wait_for()
    [row] = await audited(world, f"action=JOB_PROMOTE&entity_id={world.delayed_job}")
    assert row["actor"] == "otto" and row["ok"]
    assert real_errors(s) == []


async def test_bulk_actions_count_first_and_show_their_progress(
    open_ui: Any, world: World, nc: NatsClient, catalog: Catalog
) -> None:
    s = await open_ui("ada", path=f"/ui/jobs?queue={DISPATCH}&status=waiting")
    page = s.page
    await wait_rows(page, world.waiting_dispatch)
    body = page.locator("table[data-role=jobs-table] tbody tr")
    picked = [await body.nth(i).get_attribute("data-job") for i in range(2)]
    for i in range(2):
        await body.nth(i).locator("[data-role=pick]").check()
    assert "2" in await page.inner_text("[data-role=selected-count]")
    assert page.url.endswith("status=waiting")  # ticking a box opens no drawer
    # the selection: the count in large figures before anything happens, Cancel focused
    await page.click("[data-bulk=selection-cancel]")
    dialog = page.locator("dialog[data-role=confirm-dialog]")
    await dialog.wait_for()
    assert (await dialog.locator("[data-role=count]").inner_text()).strip() == "2"
    assert await page.evaluate("document.activeElement.dataset.role") == "cancel"
    await dialog.locator("[data-role=confirm]").click()
    await page.wait_for_selector("[data-role=bulk-status][data-status=done]")
    await wait_rows(page, world.waiting_dispatch - 2)
    # everything the filter matches: the dry run's count first, then the run and its progress
    await page.click("[data-bulk=filter-delete]")
    await dialog.wait_for()
    assert (await dialog.locator("[data-role=count]").inner_text()).strip() == str(world.waiting_dispatch - 2)
    await dialog.locator("[data-role=confirm]").click()
    await page.wait_for_function(
        "() => document.querySelector('[data-role=bulk-status]')?.textContent.includes('삭제')"
        " && document.querySelector('[data-role=bulk-status]').dataset.status === 'done'"
    )
    progress = page.locator("[data-role=bulk-progress] progress")
    assert await progress.get_attribute("value") == await progress.get_attribute("max") == "2"
    await page.wait_for_selector("[data-view=jobs] [data-role=empty]")
    assert (await queue_info(nc.jetstream(), catalog.get(DISPATCH))).waiting == 0
    [cancel] = await audited(world, "action=BULK_CANCEL&ok=true")
    assert cancel["actor"] == "ada" and sorted(cancel["params"]["job_ids"]) == sorted(picked)
    [delete] = await audited(world, "action=BULK_DELETE&ok=true")
    assert delete["params"]["filter"] == {"queue": DISPATCH, "status": "waiting"} and delete["params"]["matched"] == 2
    assert real_errors(s) == []


async def test_schedules_page_pauses_runs_edits_creates_and_deletes(open_ui: Any, world: World) -> None:
    s = await open_ui("ada", path="/ui/schedules")
    page = s.page
    daily = page.locator("tr[data-schedule='analytics-aggregate/daily-aggregate']")
    await daily.wait_for()
    assert await daily.locator("[data-role=cron]").inner_text() == "0 0 * * *"
    assert await daily.locator("[data-role=next-run]").count() == 1
    assert await page.locator("tr[data-schedule='cleanup-old-data/cleanup-old-data']").count() == 1
    # pause, resume
    await daily.locator("[data-action=pause]").click()
    await page.wait_for_selector("tr[data-schedule='analytics-aggregate/daily-aggregate'][data-paused=true]")
    assert (await world.api("/schedules"))[0]["paused"] is True
    await daily.locator("[data-action=resume]").click()
    await page.wait_for_selector("tr[data-schedule='analytics-aggregate/daily-aggregate'][data-paused=false]")
    # run now: a job, shown among the last runs
    await daily.locator("[data-action=trigger]").click()
    await page.locator("dialog [data-role=confirm]").click()
    await daily.locator("[data-role=sparkline] .spark-dot").wait_for(timeout=20_000)
    # edit it
    await daily.locator("[data-action=edit]").click()
    form = page.locator("dialog[data-role=form-dialog]")
    await form.locator("[data-field=cron]").fill("30 1 * * *")
    await form.locator("[data-role=submit]").click()
    await page.wait_for_function(
        "() => document.querySelector(\"tr[data-schedule='analytics-aggregate/daily-aggregate'] [data-role=cron]\")"
        ".textContent === '30 1 * * *'"
    )
    # a new one, then delete it
    await page.click("[data-action=new-schedule]")
    await form.locator("[data-field=queue]").select_option(EMAIL)
    await form.locator("[data-field=name]").fill("weekly-digest")
    await form.locator("[data-field=cron]").fill("0 9 * * 1")
    await form.locator("[data-field=time_zone]").fill("Asia/Seoul")
    await form.locator("[data-field=data]").fill("not json")
    await form.locator("[data-role=submit]").click()
    assert "JSON" in await form.locator("[data-role=error]").inner_text()
    await form.locator("[data-field=data]").fill('{"kind": "weekly"}')
    await form.locator("[data-role=submit]").click()
    weekly = page.locator(f"tr[data-schedule='{EMAIL}/weekly-digest']")
    await weekly.wait_for()
    await weekly.locator("[data-action=delete]").click()
    await page.locator("dialog [data-role=confirm]").click()
    await weekly.wait_for(state="detached")
    actions = [
        a["action"] for a in await audited(world, "actor=ada&limit=20", n=6) if a["action"].startswith("SCHEDULE_")
    ]
    assert actions == [
        "SCHEDULE_DELETE", "SCHEDULE_CREATE", "SCHEDULE_UPDATE", "SCHEDULE_TRIGGER", "SCHEDULE_RESUME", "SCHEDULE_PAUSE"
    ]  # fmt: skip
    assert real_errors(s) == []


async def test_schedules_show_each_role_what_it_may_do(open_ui: Any, world: World) -> None:
    otto = (await open_ui("otto", path="/ui/schedules")).page
    row = otto.locator("tr[data-schedule='analytics-aggregate/daily-aggregate']")
    await row.wait_for()
    assert await row.locator("[data-action=pause], [data-action=trigger]").count() == 2
    assert await otto.locator("[data-action=edit], [data-action=delete], [data-action=new-schedule]").count() == 0
    vic = await open_ui("vic", path="/ui/schedules")
    await vic.page.locator("tr[data-schedule='analytics-aggregate/daily-aggregate']").wait_for()
    assert await vic.page.locator("[data-action]").count() == 0
    assert real_errors(vic) == []


async def test_audit_view_lists_refusals_and_filters_them(open_ui: Any, world: World) -> None:
    vic = await open_ui("vic", path="/ui")
    me = await (await vic.page.request.get("/auth/me")).json()
    r = await vic.page.request.post(f"{API}/queues/{EMAIL}/pause", data={}, headers={"X-CSRF-Token": me["csrf_token"]})
    assert r.status == 403
    s = await open_ui("otto", path=f"/ui/queues?queue={EMAIL}")
    page = s.page
    panel = page.locator("[data-role=queue-drawer]")
    await panel.locator("[data-role=pause-reason]").fill("deploying 1.4")
    await panel.locator("[data-action=pause]").click()
    await page.wait_for_selector(f"tr[data-queue={EMAIL}] .chip[data-status=Paused]")
    await audited(world, f"queue={EMAIL}", n=2)  # the refusal and the pause (the seed paused another queue)
    await page.goto("/ui/audit")
    table = page.locator("table[data-role=audit-table]")
    await table.wait_for()
    refused = table.locator("tr[data-action=QUEUE_PAUSE][data-outcome=refused]")
    assert "vic" in await refused.inner_text() and "operator role required" in await refused.inner_text()
    paused = table.locator("tr[data-action=QUEUE_PAUSE][data-outcome=ok]").first
    assert "deploying 1.4" in await paused.inner_text()  # the reason reaches the audit log
    # filters: outcome, actor, queue (in the URL, so a reload keeps them)
    await page.select_option("#a-outcome", "not_ok")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-audit]')].every(r => r.dataset.outcome !== 'ok')"
    )
    await page.fill("#a-actor", "vic")
    await page.wait_for_url(re.compile(r"actor=vic"))
    await page.wait_for_function("() => document.querySelectorAll('tr[data-audit]').length === 1")
    await page.reload()
    await page.wait_for_function("() => document.querySelectorAll('tr[data-audit]').length === 1")
    await page.click("[data-role=clear]")
    await page.select_option("#a-queue", ANALYTICS)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-audit]')].every(r => r.innerText.includes('analytics-aggregate'))"
    )
    # a custom range in the future holds nothing
    await page.select_option("#a-range", "custom")
    await page.fill("#a-from", "2099-01-01T00:00")
    await page.locator("#a-from").dispatch_event("change")
    await page.wait_for_selector("[data-view=audit] [data-role=empty]")
    assert real_errors(s) == []


async def test_incidents_group_acknowledge_snooze_and_the_kpis_stay_above_the_fold(
    open_ui: Any, world: World, client: JobClient
) -> None:
    more = ("ei-update", "proposal-ranking", "order-status-update", "audit-log", "data-dtg-sync")
    for q in more:  # more queues with waiting jobs and no worker: six incidents of one rule
        await client.enqueue(q, "stuck", {})
    s = await open_ui("otto", viewport={"width": 1440, "height": 900})
    page = s.page
    group = page.locator("[data-role=incidents] [data-group=no_worker]")
    await page.wait_for_function("() => Number(document.querySelector('[data-group=no_worker]')?.dataset.count) === 6")
    kpis = await page.locator("[data-role=kpis]").bounding_box()
    assert kpis and kpis["y"] + kpis["height"] <= 900, kpis
    assert await page.locator("[data-role=incidents] [data-type=no_worker]").count() == 6  # folded in one line
    await group.locator("summary").click()
    row = group.locator(f"li.incident[data-queue={DISPATCH}]")
    assert "Dispatch" not in await row.inner_text() and "배차 최적화 AI" in await row.inner_text()
    await row.locator("[data-action=ack]").click()
    await row.locator("[data-role=acked]").wait_for()
    assert "otto" in await row.locator("[data-role=acked]").inner_text()
    snoozed = group.locator("li.incident[data-queue=ei-update]")
    await snoozed.locator("[data-action=snooze]").click()
    await snoozed.wait_for(state="detached")
    await page.wait_for_selector("[data-role=incidents] [data-role=snoozed]")
    assert await group.locator("details[open]").count() == 1  # the group stayed open through the redraws
    [ack] = await audited(world, "action=INCIDENT_ACK")
    assert (ack["actor"], ack["entity_id"]) == ("otto", f"{DISPATCH}/no_worker")
    [snooze] = await audited(world, "action=INCIDENT_SNOOZE")
    assert snooze["params"] == {"minutes": 60}
    # the English text names the queue by its English label, like the Korean one
    en = await open_ui("otto", lang="en")
    await en.page.locator("[data-group=no_worker] summary").click()
    text = await en.page.locator(f"li.incident[data-queue={DISPATCH}]").inner_text()
    assert "Dispatch optimisation: 4 waiting jobs" in text
    assert real_errors(s) == [] and real_errors(en) == []


async def test_one_overview_url_a_favicon_and_a_heading_on_every_page(open_ui: Any, world: World) -> None:
    r = await world.http.get("/ui/overview?lang=en", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "/ui?lang=en"
    r = await world.http.get("/favicon.ico", follow_redirects=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    s = await open_ui("ada", lang="en")
    page = s.page
    assert await page.get_attribute("link[rel=icon]", "href") == "/ui/assets/favicon.svg"
    names = {"overview": "Overview", "queues": "Queues", "jobs": "Jobs", "schedules": "Schedules",
             "workers": "Workers", "audit": "Audit log"}  # fmt: skip
    for i, (tab, title) in enumerate(names.items(), start=1):
        await page.keyboard.press(str(i))
        await page.wait_for_selector(f"[data-view={tab}]")
        assert await page.locator("h1").all_inner_texts() == [title], tab
    await page.click("nav.tabs [data-tab=overview]")
    assert page.url.endswith("/ui")
    assert real_errors(s) == []


async def test_a_custom_time_range_and_the_queue_trend_over_a_day_and_a_week(open_ui: Any, world: World) -> None:
    s = await open_ui("ada", path="/ui/jobs")
    page = s.page
    await page.wait_for_selector(f"tr[data-job='{world.ok_job}']")
    await page.select_option("#f-range", "custom")
    await page.locator("#f-from").wait_for()
    await page.fill("#f-to", "2001-01-01T00:00")
    await page.locator("#f-to").dispatch_event("change")
    await page.wait_for_selector("[data-view=jobs] [data-role=empty]")
    assert "to=2001-01-01" in page.url
    await page.fill("#f-to", "")
    await page.locator("#f-to").dispatch_event("change")
    await page.wait_for_selector(f"tr[data-job='{world.ok_job}']")
    await page.goto(f"/ui/queues?queue={EMAIL}")
    panel = page.locator("[data-role=queue-drawer]")
    await panel.locator("svg[data-role=trend]").wait_for()
    for window, bars in (("24h", 24), ("7d", 168)):
        await panel.locator(f"[data-window='{window}']").click()
        chart = panel.locator(f"svg[data-role=history][data-window='{window}']")
        await chart.wait_for()
        # this hour's finished jobs are the last of one bar per hour; the failed ones on top of the completed
        done = chart.locator("rect[data-series=completed]")
        assert await done.count() == 1 and await chart.locator("rect[data-series=failed]").count() == 1
        assert float(await done.get_attribute("x")) >= 600 * (bars - 1) / bars
    assert real_errors(s) == []


TAP_TARGETS = """() => [...document.querySelectorAll(
    'button, select, input:not([type=checkbox]):not([type=radio]), summary, nav.tabs a, label.check, a.btn')]
  .filter(el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0
    && getComputedStyle(el).visibility !== 'hidden' && !el.closest('[hidden], .sr-only'); })
  .map(el => { const r = el.getBoundingClientRect();
    return {what: el.outerHTML.slice(0, 90), w: Math.round(r.width), h: Math.round(r.height)}; })
  .filter(b => b.w < 44 || b.h < 44)"""


async def test_phone_tap_targets_are_44_px_on_every_tab(open_ui: Any, world: World) -> None:
    s = await open_ui("ada", phone=True)
    page = s.page
    for tab in ("overview", "queues", "jobs", "schedules", "workers", "audit"):
        await page.goto("/ui" if tab == "overview" else f"/ui/{tab}")
        await page.wait_for_selector(f"[data-view={tab}] :is(table, .kpis, .empty)")
        assert await page.evaluate(TAP_TARGETS) == [], tab
    # the Live switch of the Jobs list and a row's checkbox are labels of 44 px at least
    await page.goto("/ui/jobs")
    await page.wait_for_selector("tr[data-job] label.pick")
    live = await page.locator("label[for=jobs-live]").bounding_box()
    pick = await page.locator("tr[data-job] label.pick").first.bounding_box()
    assert live and live["height"] >= 44 and pick and pick["height"] >= 44 and pick["width"] >= 44
    # schedules and the audit log are cards too; a delayed job's drawer says when it runs
    await page.goto("/ui/schedules")
    card = page.locator("tr[data-schedule]").first
    assert await card.evaluate("r => getComputedStyle(r).display") == "grid"
    await page.goto(f"/ui/jobs?job={world.delayed_job}")
    await page.locator("[data-role=job-drawer] [data-role=run-at]").wait_for()
    assert real_errors(s) == []


async def shot(page: Any, name: str) -> None:
    """Write docs/screenshots/<name>.png when JETQUEUE_SCREENSHOTS=1."""
    await page.wait_for_selector("[data-role=live] .live-at", state="attached")  # queue labels are in
    if WRITE_SHOTS:
        await page.mouse.move(2, 400)  # no hover highlight in the picture
        await page.wait_for_timeout(300)  # let the last paint settle (fonts, SVG)
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def _screens(page: Any, world: World, kind: str, phone: bool) -> None:
    """Every view of one device size, in the order of the README's table."""
    await page.wait_for_selector("[data-role=incidents] li")
    await shot(page, f"{kind}-overview")
    await page.goto(f"/ui/queues?queue={EMAIL}" if not phone else "/ui/queues")
    await page.wait_for_selector("tr[data-queue]")
    if not phone:
        await page.wait_for_selector("[data-role=queue-drawer] svg[data-role=trend]")
    await shot(page, f"{kind}-queues")
    if phone:
        await page.goto(f"/ui/queues?queue={EMAIL}")
        await page.wait_for_selector("[data-role=queue-drawer] svg[data-role=trend]")
        await shot(page, f"{kind}-queue-detail")
    await page.goto("/ui/jobs")
    await page.wait_for_selector("tr[data-job]")
    await shot(page, f"{kind}-jobs")
    await page.goto("/ui/jobs?status=waiting")
    await page.wait_for_selector("tr[data-job]")
    for i in range(2):
        await page.locator("tr[data-job] [data-role=pick]").nth(i).check()
    await shot(page, f"{kind}-jobs-bulk")
    await page.goto(f"/ui/jobs?status=failed&job={world.artifact_job}")
    await page.wait_for_selector("[data-role=job-drawer] [data-role=artifact-image]")
    await page.wait_for_function("() => document.querySelector('[data-role=artifact-image]').naturalWidth > 0")
    await shot(page, f"{kind}-job-drawer")
    await page.goto(f"/ui/jobs?status=scheduled&job={world.delayed_job}")
    await page.wait_for_selector("[data-role=job-drawer] [data-role=run-at]")
    await shot(page, f"{kind}-job-delayed")
    await page.goto("/ui/schedules")
    await page.wait_for_selector("tr[data-schedule]")
    await shot(page, f"{kind}-schedules")
    await page.goto("/ui/audit")
    await page.wait_for_selector("tr[data-audit]")
    await shot(page, f"{kind}-audit")
    await page.goto("/ui/workers")
    await page.wait_for_selector("tr[data-worker]")
    await shot(page, f"{kind}-workers")
    await page.goto(f"/ui/queues?queue={DISPATCH}")
    await page.click("[data-role=queue-drawer] [data-action=drain]")
    await page.wait_for_function("() => /\\d/.test(document.querySelector('[data-role=affected]').textContent)")
    await page.fill("[data-role=word]", "DRAI")
    await shot(page, f"{kind}-drain-dialog")
    await page.click("dialog [data-role=cancel]")


async def _activity(world: World, client: JobClient, open_ui: Any) -> None:
    """Something to see on the new screens: a schedule with runs that ended both ways, audit records of each kind."""
    for month, runs in (("2026-11", 3), ("bad", 1), ("2026-12", 1)):  # "bad" fails for good
        await client.schedule(REPORT, "weekly-report", "0 6 * * 1", data={"month": month}, time_zone="Asia/Seoul")
        for _ in range(runs):
            await client.trigger_schedule(REPORT, "weekly-report")
    for path, body in (("pause", {"reason": "deploying 1.4"}), ("resume", {"reason": "deployed"})):
        assert (await world.http.post(f"{API}/queues/{EMAIL}/{path}", json=body)).status_code == 200
    vic = (await open_ui("vic")).page
    csrf = (await (await vic.request.get("/auth/me")).json())["csrf_token"]
    await vic.request.post(f"{API}/jobs/{world.failed_job}/retry", data={}, headers={"X-CSRF-Token": csrf})
    await vic.context.close()

    async def ran() -> bool:
        [weekly] = [s for s in await world.api("/schedules") if s["name"] == "weekly-report"]
        return sum(r["status"] in ("completed", "failed") for r in weekly["last_runs"]) == 5

    await eventually(ran, timeout=30, what="the schedule's runs finished")


async def test_screenshots(open_ui: Any, world: World, client: JobClient) -> None:
    """Writes docs/screenshots/*.png when JETQUEUE_SCREENSHOTS=1 (else only renders each view)."""
    await _activity(world, client, open_ui)
    for phone in (False, True):
        s = await open_ui("ada", phone=phone)
        await _screens(s.page, world, "phone" if phone else "desktop", phone)
        assert real_errors(s) == []
    s = await open_ui("ada", lang="en")
    await s.page.wait_for_selector("[data-role=incidents] li")
    await shot(s.page, "desktop-overview-en")


def test_page_and_assets_are_served_without_a_build_step(catalog: Catalog, tmp_path: Path) -> None:
    """The page has a strict CSP and links only our own modules; no bundles or third-party files ship."""
    from litestar.testing import TestClient

    from jetqueue.settings import CommonSettings
    from jetqueue_monitor.app import create_app
    from jetqueue_monitor.settings import MonitorSettings

    settings = MonitorSettings(
        common=CommonSettings(nats_url="nats://127.0.0.1:1"),  # never connected: no lifespan runs
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
    )
    http = TestClient(app=create_app(settings, catalog=catalog))
    for path in ("/ui", "/ui/jobs"):
        r = http.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert re.findall(r'(?:src|href)="(https?:)?//', r.text) == []  # no CDN
    assert http.get("/ui/nope").status_code == 404
    assert http.get("/", follow_redirects=False).headers["location"] == "/ui"
    js = http.get("/ui/assets/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    static = Path(__file__).resolve().parents[2] / "services/monitor/jetqueue_monitor/ui/static"
    for f in static.rglob("*"):
        if f.is_file():
            assert f.suffix in (".js", ".css", ".svg"), f  # the favicon is the one picture
            assert ".min." not in f.name and max(map(len, f.read_text("utf-8").splitlines())) < 400, f
