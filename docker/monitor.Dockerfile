# jetqueue monitor: stats, job history, control actions and the Worker Monitor API.
# Port 8090 (HTTP API, /metrics); probes: GET /health. Needs JETQUEUE_MONITOR_DATABASE_URL. Build context: the repo root.
# The base image, pinned by digest so a rebuild gets the same bytes (the tag moves weekly).
# Bump it with: docker buildx imagetools inspect python:3.11-slim (or let Renovate do it).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt \
    && /venv/bin/pip install --no-cache-dir setuptools==84.2.1
COPY libs/jetqueue libs/jetqueue
COPY services/monitor services/monitor
RUN /venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ./libs/jetqueue ./services/monitor

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin jetqueue
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 JETQUEUE_MONITOR_HOST=0.0.0.0 JETQUEUE_MONITOR_PORT=8090
USER 10001
EXPOSE 8090
ENTRYPOINT ["python", "-m", "jetqueue_monitor"]
