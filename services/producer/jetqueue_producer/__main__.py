"""``python -m jetqueue_producer``: run the producer HTTP API."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from jetqueue.errors import JetqueueError


def main() -> int:
    import uvicorn

    from jetqueue_producer.app import create_app
    from jetqueue_producer.settings import ProducerSettings

    try:
        settings = ProducerSettings()
        app = create_app(settings)
    except (ValidationError, JetqueueError) as exc:
        print(f"jetqueue-producer: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
