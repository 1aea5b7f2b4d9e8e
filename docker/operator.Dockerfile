# jetqueue operator: reconciles JobQueue resources (stream, consumers, worker
# Deployment, lag-based scaling) and runs QueueAction requests (kopf).
# Port 8080: GET /healthz (liveness; kopf's probe, reports the NATS link).
# Port 9090: GET /metrics (Prometheus: reconciles, scaling, QueueActions).
# Needs a ServiceAccount with the chart's RBAC. Build context: the repo root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt \
    && /venv/bin/pip install --no-cache-dir setuptools==84.2.1
COPY libs/jetqueue libs/jetqueue
COPY services/operator services/operator
RUN /venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation ./libs/jetqueue ./services/operator

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin jetqueue
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 JETQUEUE_OPERATOR_LIVENESS_PORT=8080 JETQUEUE_OPERATOR_METRICS_PORT=9090
USER 10001
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "jetqueue_operator"]
