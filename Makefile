# gridwhistle developer entry points. Prerequisites (see README): Python >= 3.11
# with venv, Java 17+, Maven, and PostgreSQL server binaries (Debian: postgresql).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
VENV_PY     := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.gridwhistle-installed
KAFKA_VERSION ?= 4.4.0
# infra.local reads this, so the broker the tests start uses the same jars.
export GRIDWHISTLE_KAFKA_VERSION := $(KAFKA_VERSION)
PYTEST_ARGS ?=
# Operations tools the observability and deployment checks run (git-ignored, fetched once).
TOOLS_BIN          := .cache/tools/bin
KUSTOMIZE_VERSION  := v5.7.1
KUBECONFORM_VERSION := v0.7.0

# First interpreter on PATH that is at least 3.11 (override: make PYTHON=/path/to/python).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

# The Kafka cache must be filled with an interpreter that exists before the
# venv does; infra.local only needs the standard library for that.
BOOT_PY = $(if $(wildcard $(VENV_PY)),$(VENV_PY),$(PYTHON))

# pytest exits 5 when it collects no test: not a failure of the code under test.
PYTEST = run_pytest() { $(VENV_PY) -m pytest -ra --durations=15 --junitxml=test-artifacts/junit.xml $(PYTEST_ARGS) "$$@"; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "warning: pytest collected no tests"; return 0; fi; return $$rc; }; run_pytest

.PHONY: help venv kafka-jars ops-tools asyncapi-tools run test test-all clean distclean

help:
	@echo "make venv        create $(VENV) and install gridwhistle with its dev extras"
	@echo "make kafka-jars  fetch the Apache Kafka $(KAFKA_VERSION) broker jars into .cache/kafka"
	@echo "make run         local Kafka + every service (python -m infra.devstack); Ctrl-C stops"
	@echo "make test        the test suite without slow tests (real Kafka and PostgreSQL)"
	@echo "make test-all    the whole test suite, slow tests included"
	@echo "make bench       benchmarks (BENCH_PROFILE=short|long), results in .bench/"
	@echo "make chaos       fault-injection scenarios (CHAOS_PROFILE=short|long), histories in test-artifacts/chaos/"
	@echo "make clean       remove run state and test artifacts (.run, caches)"
	@echo "make distclean   clean, plus the venv and the Kafka jar cache"

venv: $(VENV_STAMP)

# Re-installs only when pyproject.toml changes; the stamp records success.
$(VENV_STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: Python >= 3.11 not found on PATH (set PYTHON=...)" >&2; exit 1; fi
	@if [ ! -x $(VENV_PY) ]; then echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); fi
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -e '.[dev]'
	@touch $@

kafka-jars:
	@$(BOOT_PY) -m infra.local fetch-jars --version $(KAFKA_VERSION) >/dev/null

run: venv kafka-jars
	$(VENV_PY) -m infra.devstack

# promtool comes out of Debian's prometheus package (a static binary; no daemon installed or
# started); kustomize and kubeconform are built from the Go module proxy. A missing tool is only a
# warning here: the tests that need it fail under CI and say which tool is missing.
ops-tools: $(TOOLS_BIN)/promtool $(TOOLS_BIN)/kustomize $(TOOLS_BIN)/kubeconform

$(TOOLS_BIN)/promtool:
	@mkdir -p $(TOOLS_BIN) .cache/tools/deb
	@cd .cache/tools/deb && rm -f prometheus_*.deb && { apt-get download -qq prometheus 2>/dev/null \
		|| { apt-get update -qq && apt-get download -qq prometheus; }; } \
		&& dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > ../bin/promtool.part \
		&& chmod +x ../bin/promtool.part && mv ../bin/promtool.part ../bin/promtool \
		|| echo "warning: could not install promtool (Debian package prometheus)" >&2

$(TOOLS_BIN)/kustomize:
	@mkdir -p $(TOOLS_BIN)
	@GOBIN=$(abspath $(TOOLS_BIN)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION) \
		|| echo "warning: could not install kustomize (needs Go)" >&2

$(TOOLS_BIN)/kubeconform:
	@mkdir -p $(TOOLS_BIN)
	@GOBIN=$(abspath $(TOOLS_BIN)) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION) \
		|| echo "warning: could not install kubeconform (needs Go)" >&2

# The official AsyncAPI parser (Node) that tests/contract/test_asyncapi.py runs on contracts/asyncapi.yaml.
asyncapi-tools: tools/asyncapi/node_modules/.package-lock.json

tools/asyncapi/node_modules/.package-lock.json: tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@cd tools/asyncapi && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json \
		|| echo "warning: could not install tools/asyncapi (needs Node 20+ and npm)" >&2

test: venv kafka-jars ops-tools asyncapi-tools
	@mkdir -p test-artifacts
	@echo 'pytest -m "not slow" $(PYTEST_ARGS)'
	@$(PYTEST) -m "not slow"

test-all: venv kafka-jars ops-tools asyncapi-tools
	@mkdir -p test-artifacts
	@echo 'pytest $(PYTEST_ARGS)'
	@$(PYTEST)

# Benchmarks on a real broker and PostgreSQL (bench/README.md); results in .bench/.
BENCH_PROFILE ?= short
.PHONY: bench
bench: venv kafka-jars
	$(VENV_PY) -m bench --profile $(BENCH_PROFILE)

# Fault-injection scenarios on the real system, checked against invariants (tests/chaos/README.md);
# histories and verdicts in test-artifacts/chaos/. The short profile also runs inside `make test`.
CHAOS_PROFILE ?= short
.PHONY: chaos
chaos: venv kafka-jars
	@mkdir -p test-artifacts/chaos
	CHAOS_PROFILE=$(CHAOS_PROFILE) $(VENV_PY) -m pytest -ra -m chaos --timeout=900 $(PYTEST_ARGS) tests/chaos

# Classifier quality on the held-out split (accuracy, macro-F1, confusion, urgent recall).
.PHONY: eval-classifier
eval-classifier: venv
	$(VENV_PY) -m services.classification.evaluate

clean:
	rm -rf .run .pytest_cache test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .cache
