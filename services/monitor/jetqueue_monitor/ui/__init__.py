"""The Worker Monitor web UI: one HTML page and plain ES modules, served as they are (no build step).

The page is an app shell with no data in it, so it is served without a login;
everything it shows comes from the API under ``/admin/worker-monitor``, which
checks the caller's role on every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATH = "/ui"
ASSETS_PATH = "/ui/assets"
TABS = frozenset({"queues", "jobs", "schedules", "workers", "audit"})  # and the overview, at PAGE_PATH itself

# Only our own files. Job artifacts are framed from the same origin and carry
# their own `sandbox` policy (see the artifact route), so frame-src 'self' is enough.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # No hashed file names (no build step): the browser revalidates with the ETag.
    "Cache-Control": "no-cache",
}


def ui_routes() -> list[Any]:
    """The page (one per tab, so a shared link opens the right tab), its assets, and ``/`` → the page."""
    index = (Path(__file__).parent / "index.html").read_bytes()

    def html() -> Response[bytes]:
        return Response(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @get(PAGE_PATH, include_in_schema=False, name="ui-page")
    async def page() -> Response[bytes]:
        return html()

    @get(PAGE_PATH + "/{tab:str}", include_in_schema=False, name="ui-tab")
    async def tab_page(tab: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes] | Redirect:
        if tab == "overview":  # one URL for the overview: an old link lands on it, filters kept
            query = request.url.query
            return Redirect(PAGE_PATH + (f"?{query}" if query else ""), status_code=301)
        if tab not in TABS:
            raise NotFoundException(f"no such tab {tab!r}")
        return html()

    @get("/", include_in_schema=False, name="ui-root")
    async def root() -> Redirect:
        return Redirect(PAGE_PATH)

    @get("/favicon.ico", include_in_schema=False, name="ui-favicon")
    async def favicon() -> Redirect:
        # browsers ask for it on any page (the API's JSON too): the page's own icon
        return Redirect(ASSETS_PATH + "/favicon.svg", status_code=301)

    assets = create_static_files_router(
        ASSETS_PATH,
        [STATIC_DIR],
        name="ui-assets",
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    )
    return [page, tab_page, root, favicon, assets]
