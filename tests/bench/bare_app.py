"""The floor of the single-job HTTP figure: a bare Litestar endpoint that answers 202.

``python -m tests.bench.bare_app <port> <log level>`` serves it under uvicorn with the settings the
producer's ``__main__`` uses (``uvicorn.run(app, host, port, log_level, access_log=False)``). It reads
the JSON body and answers with a body shaped like the producer's, and does nothing else.
"""

from __future__ import annotations

import sys
from typing import Any

from litestar import Litestar, get, post


@post("/jobs/{queue:str}", status_code=202)
async def enqueue(queue: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": "0" * 25, "queue": queue, "state": "waiting", "duplicate": False, "run_at": None}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[enqueue, health])


def main() -> int:
    import uvicorn

    port, level = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "warning"
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level=level, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
