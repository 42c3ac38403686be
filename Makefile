# The two commands of the README:
#   make demo   run the whole loop (listener, queue, worker, SQL results) on the embedded default
#   make test   run the test suite against a real Kafka and a real PostgreSQL
#               (KIDNEYCT_TEST_SERVICES=containers: both through testcontainers, as CI does)
#   make compose-test   docker-compose.yml end to end, images built here (CI runs it too)
#   make lint   ruff (lint and format) and mypy
#   make check  lint and every test that needs no service and trains no model: a few minutes (CI runs it first)
# Both work on a fresh Debian 12 machine as root and are quick when everything is installed.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON := $(VENV)/bin/python
# Touched after a successful install: pip runs again only when pyproject.toml is newer.
INSTALLED := $(VENV)/.kidneyct-installed
KAFKA_LIBS_DIR := $(or $(KIDNEYCT_SERVICES_DIR),.services)/kafka-3.9.1/libs
PYTEST_ARGS ?=
# The fast lane: tests/conftest.py marks `integration` (tests/integration, tests/compose, any test taking a
# service fixture); `slow` marks model training and whole pipelines. CI runs the complement after it.
CHECK_MARKERS := not integration and not slow
# pytest-xdist workers for `make check` and `make test` (0: one process). Whole files go to one worker
# (`--dist loadfile`), so a module's shared fixture (a trained model) is built once; each worker starts
# its own session services (containers when KIDNEYCT_TEST_SERVICES=containers). Most of the
# integration lane waits on subprocesses, brokers and deadlines, so two workers overlap that waiting
# on a 2-core machine.
TEST_WORKERS ?= 2
XDIST_ARGS := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

.PHONY: demo check check-tests print-check-markers test compose-test test-engine-start test-engine-stop venv debian-packages kafka-jars services-start services-stop lint

# The demo needs the runtime only (`.[cpu]`, no test tools); a venv `make test` installed already has it.
DEMO_INSTALLED := $(VENV)/.kidneyct-demo-installed

demo: $(DEMO_INSTALLED)
	$(VENV)/bin/kidneyct demo

# pip is silent while it unpacks TensorFlow (a minute or more): a line every 10 s says it still works.
$(DEMO_INSTALLED): pyproject.toml | $(VENV_PYTHON)
	@if [ $(INSTALLED) -nt pyproject.toml ]; then echo "kidneyct is installed ($(VENV))"; else \
		echo "installing kidneyct and its runtime (TensorFlow for CPU, about 600 MB; pip shows each package)"; \
		( started=$$(date +%s); while sleep 10; do echo "  ... pip still installing: $$(( $$(date +%s) - started )) s"; done ) & ticker=$$!; \
		$(VENV_PYTHON) -m pip install --progress-bar on -e '.[cpu]'; status=$$?; kill $$ticker; exit $$status; fi
	touch $@

# No service, no Debian package, no Kafka jars: only the venv. `make -k check` runs the tests after a lint failure too.
check: lint check-tests

check-tests: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -p no:cacheprovider $(XDIST_ARGS) -m "$(CHECK_MARKERS)" $(PYTEST_ARGS); \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo "make check: pytest selected no tests"; status=0; fi; \
	exit $$status

test: debian-packages $(INSTALLED) kafka-jars
	@# pytest exits 5 when it selects no test (e.g. a -k filter): not a failure of the code.
	bash tests/services/with-services.sh $(VENV_PYTHON) -m pytest -p no:cacheprovider $(XDIST_ARGS) $(PYTEST_ARGS); \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest selected no tests"; status=0; fi; \
	exit $$status

# docker-compose.yml end to end on a private Docker engine, every image built here (no registry).
compose-test: debian-packages $(INSTALLED) kafka-jars
	bash tests/compose/compose-test.sh $(VENV_PYTHON) $(PYTEST_ARGS)

# For development: the private Docker engine and the stand-in images; `make test` then takes Kafka
# and PostgreSQL from testcontainers when KIDNEYCT_TEST_SERVICES=containers.
test-engine-start: debian-packages kafka-jars
	bash tests/services/docker.sh start
	bash tests/images/build.sh services
	@bash tests/services/docker.sh env

test-engine-stop:
	bash tests/services/docker.sh stop

venv: $(INSTALLED)

$(VENV_PYTHON):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "kidneyct needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -q -e '.[dev]'
	touch $@

debian-packages:
	bash tests/services/debian-packages.sh

kafka-jars:
	bash tests/services/kafka.sh fetch

# For development: keep the services up between test runs (make test then leaves them running).
services-start: debian-packages kafka-jars
	bash tests/services/kafka.sh start
	bash tests/services/postgres.sh start
	@echo "export KIDNEYCT_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$${KIDNEYCT_KAFKA_PORT:-19092}"
	@echo "export KIDNEYCT_TEST_DATABASE_URL=$$(bash tests/services/postgres.sh url)"

services-stop:
	bash tests/services/kafka.sh stop
	bash tests/services/postgres.sh stop

# The packages (the code that ships); mypy reads its options, the pydantic plugin included, from pyproject.toml.
MYPY_PATHS := common kidneyct storage ingest classifier training delivery migrations review

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

# .ci/run selects the complement of the fast lane with this expression.
print-check-markers:
	@echo '$(CHECK_MARKERS)'
