# jetqueue developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PKGS := -e libs/jetqueue -e services/producer -e services/worker -e services/monitor

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

test: setup ## run the test suite (unit + integration; starts its own nats-server)
	$(BIN)/python -m pytest $(ARGS)

lint: setup ## ruff, mypy and the import layering contract
	$(BIN)/ruff check libs services tests
	$(BIN)/mypy libs/jetqueue/jetqueue services/producer/jetqueue_producer services/worker/jetqueue_worker services/monitor/jetqueue_monitor
	$(BIN)/lint-imports

bench: setup ## run the benchmarks (tests/bench) and print the figures
	$(BIN)/python -m tests.bench.run $(ARGS)

lock: ## re-pin requirements with hashes (needs uv)
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/runtime.in -o requirements/runtime.txt
	uv pip compile -q --generate-hashes --python-version 3.11 requirements/dev.in -o requirements/dev.txt

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) .jetqueue .pytest_cache

.PHONY: help setup run demo test lint bench lock clean
