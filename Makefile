# The two commands a newcomer runs: `make run` and `make test`. Both create .venv as needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Every dependency comes from the lock (requirements/, made by `make lock`), pinned with hashes:
# a release upstream never changes what a clone installs. The CPU build of torch lies on this
# machine's disk (requirements/torch-cpu.txt); GPU images install their own and skip that file.
PIP := $(BIN)/pip install --disable-pip-version-check -q
LOCKED := $(PIP) --require-hashes --no-deps -r requirements/torch-cpu.txt
# The project itself (and the client), built with the locked setuptools
EDITABLE := $(PIP) --no-deps --no-build-isolation

.PHONY: run serve worker test check test-gpu system-deps lint lock lock-upgrade lock-check \
	alembic-check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml requirements/run.txt requirements/torch-cpu.txt | $(BIN)/python
	$(LOCKED) -r requirements/run.txt
	$(EDITABLE) -e .
	touch $@

# The dev environment also holds the Python client (client/: its own package; its tests run
# against the service).
$(VENV)/.installed-dev: pyproject.toml client/pyproject.toml requirements/dev.txt requirements/torch-cpu.txt | $(BIN)/python
	$(LOCKED) -r requirements/dev.txt
	$(EDITABLE) -e . -e ./client
	touch $@ $(VENV)/.installed-run

## lock: compile requirements/*.txt from pyproject.toml (keeping the pinned versions where they
## still fit); lock-upgrade takes the newest releases. Commit the result.
lock: $(VENV)/.installed-dev
	$(BIN)/python requirements/lock.py compile

lock-upgrade: $(VENV)/.installed-dev
	$(BIN)/python requirements/lock.py compile --upgrade

## lock-check: the lock agrees with pyproject.toml (exact pins, hashes, inputs unchanged)
lock-check: $(VENV)/.installed-dev
	$(BIN)/python requirements/lock.py check

## run: install, migrate the embedded SQLite database under var/, seed the demo model, and
## start a worker process and the API on :8000 (no database or broker server needed)
run: $(VENV)/.installed-run
	$(BIN)/unlearn run

## serve: the API alone
serve: $(VENV)/.installed-run
	$(BIN)/unlearn db upgrade
	$(BIN)/unlearn serve

## worker: start a Celery worker on the configured broker (embedded by default)
worker: $(VENV)/.installed-run
	$(BIN)/unlearn worker

## system-deps: the Debian packages the tests drive: Chromium (the dashboard's browser test,
## through Playwright; no browser download) and docker-compose 1.29 (checks docker-compose.yml
## offline), shellcheck (docker/entrypoint.sh). Installed with apt-get when missing (root, or sudo).
SYSTEM_PACKAGES := chromium docker-compose shellcheck
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
		$$sudo apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

## test: install with the dev extra and the system packages, lint, type-check, check
## migrations, run the tests (the browser and deployment tests included) on every core, then
## the few that restart a machine service, alone
TEST_WORKERS ?= auto
test: $(VENV)/.installed-dev system-deps
	$(MAKE) --no-print-directory lock-check lint alembic-check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial"
	$(BIN)/pytest -m serial

## check: the developer loop: lint, types and the unit tests but the slow ones (the real
## backbone, the bench's smoke runs) and the deployment checks; no database, broker or browser;
## under 90 s on an idle 2-core machine. `make test` runs everything.
check: $(VENV)/.installed-dev
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) tests/unit -m "not deployment and not slow"

## test-gpu: the CUDA tests (tests/gpu: exactness, reproducibility, passes and serving on a
## GPU) with GPU_PYTHON, an interpreter whose torch is a CUDA build and that has the project
## installed (a GPU image's; .venv holds the CPU build). Skipped with a reason without CUDA.
GPU_PYTHON ?= python3
test-gpu:
	$(GPU_PYTHON) -m pytest -m gpu tests/gpu -p no:cacheprovider

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

## alembic-check: migrate a scratch SQLite database to head; the models must match it
alembic-check: $(VENV)/.installed-dev
	rm -rf var/alembic-check
	UNLEARN_DATA_DIR=var/alembic-check $(BIN)/alembic upgrade head
	UNLEARN_DATA_DIR=var/alembic-check $(BIN)/alembic check
	rm -rf var/alembic-check

bench: $(VENV)/.installed-dev
	@for script in bench/*.py; do [ -e "$$script" ] || continue; echo "# $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
