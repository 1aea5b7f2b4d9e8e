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
from tests.e2e.conftest import ANALYTICS, API, DISPATCH, EMAIL, Session, World

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
    await page.keyboard.press("4")
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
    user_cell = first.locator("td[data-label]").nth(2)  # each value carries its column name
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


async def test_screenshots(open_ui: Any, world: World) -> None:
    """Writes docs/screenshots/*.png when JETQUEUE_SCREENSHOTS=1 (else only renders each view)."""

    async def shot(page: Any, name: str) -> None:
        await page.wait_for_selector("[data-role=live] .live-at", state="attached")  # queue labels are in
        if WRITE_SHOTS:
            await page.mouse.move(2, 400)  # no hover highlight in the picture
            await page.wait_for_timeout(300)  # let the last paint settle (fonts, SVG)
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / f"{name}.png"))

    for phone in (False, True):
        kind = "phone" if phone else "desktop"
        s = await open_ui("ada", phone=phone)
        page = s.page
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
        await page.goto(f"/ui/jobs?status=failed&job={world.artifact_job}")
        await page.wait_for_selector("[data-role=job-drawer] [data-role=artifact-image]")
        await page.wait_for_function("() => document.querySelector('[data-role=artifact-image]').naturalWidth > 0")
        await shot(page, f"{kind}-job-drawer")
        await page.goto("/ui/workers")
        await page.wait_for_selector("tr[data-worker]")
        await shot(page, f"{kind}-workers")
        await page.goto(f"/ui/queues?queue={DISPATCH}")
        await page.click("[data-role=queue-drawer] [data-action=drain]")
        await page.wait_for_function("() => /\\d/.test(document.querySelector('[data-role=affected]').textContent)")
        await page.fill("[data-role=word]", "DRAI")
        await shot(page, f"{kind}-drain-dialog")
        await page.click("dialog [data-role=cancel]")
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
            assert f.suffix in (".js", ".css"), f
            assert ".min." not in f.name and max(map(len, f.read_text("utf-8").splitlines())) < 400, f
