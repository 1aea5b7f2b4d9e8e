# jetqueue developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PKGS := -e libs/jetqueue -e services/producer -e services/worker -e services/monitor -e services/operator
# Helm for the chart tests comes from helm-sdkpy, which needs Python >= 3.12:
# the first such interpreter found (PATH, then pyenv's versions), or empty.
HELM_VENV ?= $(VENV)/helm
HELM_PYTHON ?= $(shell for p in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements/dev.txt libs/jetqueue/pyproject.toml services/*/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "jetqueue needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation $(PKGS)
	@touch $@

setup: $(BIN)/.installed ## create .venv and install pinned dependencies and the packages

run: setup ## run jetqueue locally: embedded nats-server, producer, workers of all queues
	$(BIN)/jetqueue run $(ARGS)

demo: setup ## like run, and feed demo jobs (slow, failing, delayed) to watch retries and the DLQ
	$(BIN)/jetqueue run --demo $(ARGS)

browser: ## install Debian's Chromium (and a Korean font) for the browser tests, if missing
	@command -v chromium >/dev/null && fc-list :lang=ko family | grep -q . || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-nanum)

promtool: ## install Debian's prometheus package for promtool (the alert rule tests), if missing
	@command -v promtool >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)

test: setup browser promtool helm-venv checkov-venv ## run the test suite (unit + integration + e2e in Chromium; starts its own nats-server)
	$(BIN)/python -m pytest $(ARGS)

$(HELM_VENV)/.installed: requirements/helm.txt
	@if [ -z "$(HELM_PYTHON)" ]; then \
		echo "no Python >= 3.12 found: the chart's helm lint/render tests will be skipped"; \
	else \
		$(HELM_PYTHON) -m venv $(HELM_VENV) && \
		$(HELM_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/helm.txt && \
		touch $@; \
	fi

helm-venv: $(HELM_VENV)/.installed ## create .venv/helm (Python >= 3.12) with helm-sdkpy for the chart tests

# checkov (the rendered chart's policy checks) pins a large tree of its own: its own venv.
CHECKOV_VENV ?= $(VENV)/checkov

$(CHECKOV_VENV)/.installed: requirements/checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/checkov.txt
	@touch $@

checkov-venv: $(CHECKOV_VENV)/.installed ## create .venv/checkov with checkov for the chart's policy test

lint: setup ## ruff, mypy and the import layering contract
	$(BIN)/ruff check libs services tests
	$(BIN)/mypy libs/jetqueue/jetqueue services/producer/jetqueue_producer services/worker/jetqueue_worker services/monitor/jetqueue_monitor services/operator/jetqueue_operator
	$(BIN)/lint-imports

bench: setup ## run the benchmarks side by side with raw nats-py, pgqueuer and taskiq-nats (ARGS="--quick" for a smoke run)
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/bench.txt
	$(BIN)/python -m tests.bench.run $(ARGS)

lock: ## re-pin requirements with hashes (needs uv)
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/runtime.in -o requirements/runtime.txt
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/dev.in -o requirements/dev.txt
	uv pip compile -q --generate-hashes --python-version 3.12 requirements/helm.in -o requirements/helm.txt
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/checkov.in -o requirements/checkov.txt
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/bench.in -o requirements/bench.txt

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .jetqueue .pytest_cache

.PHONY: help setup browser promtool helm-venv checkov-venv run demo test lint bench lock clean
