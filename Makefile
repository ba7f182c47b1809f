# Samhandling: `make run` starts the whole mesh with demo data; `make test` runs every tier.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen/python
# protoc plugins (protoc-gen-mypy) and envoy live in the venv's bin.
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP := $(VENV)/.installed
# axe-core for the portal's accessibility check in the browser tests (npm ci, pinned lock file)
AXE_DIR := tests/e2e/portal/axe
AXE := $(AXE_DIR)/node_modules/.package-lock.json
PROTOS := $(shell find protos -name '*.proto')

.PHONY: help install proto run run-hosts test test-unit test-integration test-e2e test-faults lint format breaking bench demo demo-scan backup restore clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The real OpenID provider the federated-login tests run against (panva's oidc-provider,
# pinned by its package-lock.json).
OIDC_PROVIDER := tests/support/oidc_provider
$(OIDC_PROVIDER)/node_modules/.installed: $(OIDC_PROVIDER)/package.json $(OIDC_PROVIDER)/package-lock.json
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --silent
	touch $@

$(AXE): $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json
	cd $(AXE_DIR) && npm ci --no-audit --no-fund --silent --ignore-scripts
	touch $@

install: $(STAMP) $(OIDC_PROVIDER)/node_modules/.installed $(AXE) ## create .venv and install pinned dependencies (Python, and npm ci for the test OpenID provider and axe-core)

# The Node example of docs/partners.md (openid-client, pinned by its package-lock.json),
# executed by tests/e2e/test_partner_docs.py.
PARTNER_NODE := docs/partners/node
$(PARTNER_NODE)/node_modules/.installed: $(PARTNER_NODE)/package.json $(PARTNER_NODE)/package-lock.json
	cd $(PARTNER_NODE) && npm ci --no-audit --no-fund --silent
	touch $@
install: $(PARTNER_NODE)/node_modules/.installed

gen/python/.stamp: $(STAMP) $(PROTOS) tools/protogen.py
	$(PY) tools/protogen.py
	touch $@

proto: gen/python/.stamp ## generate Python code, stubs and the descriptor set from protos/

run: proto ## start every service, the Envoy edge and the citizen portal on SQLite with demo data
	$(PY) -m deploy.local.mesh

run-hosts: proto ## the mesh on five "hosts" (network namespaces, needs root) on PostgreSQL; prints how to reach it
	@trap '$(PY) -m deploy.local.hosts --sweep' EXIT; $(PY) -m deploy.local.hosts

# Every run shuffles modules and the tests inside each module (bucket=module keeps the
# module-scoped mesh fixtures cheap) with one fixed seed, so an order dependency fails the
# same way everywhere; `make test RANDOM_ORDER_SEED=n` tries another order.
RANDOM_ORDER_SEED ?= 20261201
RANDOM_ORDER := -p random_order --random-order-bucket=module --random-order-seed=$(RANDOM_ORDER_SEED)

test: proto ## unit, integration (SQLite + PostgreSQL) and e2e tiers, in a fixed random order
	$(PY) -m pytest -q $(RANDOM_ORDER)

test-unit: proto ## unit tier only
	$(PY) -m pytest -q $(RANDOM_ORDER) -m unit

test-integration: proto ## integration tier only
	$(PY) -m pytest -q $(RANDOM_ORDER) -m integration

test-e2e: proto ## e2e tier only (real Envoy)
	$(PY) -m pytest -q $(RANDOM_ORDER) -m e2e

test-faults: proto ## the fault suite (SAMHANDLING_FAULTS_LONG=1 for the long faults); figures in var/reliability
	$(PY) -m pytest -q -m faults -s

backup: proto ## back up every database, the documents store and the access-log witness (BACKUP_DIR=...)
	$(PY) -m deploy.local.backup backup $(if $(BACKUP_DIR),--out $(BACKUP_DIR))

restore: proto ## restore a backup: make restore BACKUP_DIR=var/backups/<time> [DB_URL=postgresql://...]
	@test -n "$(BACKUP_DIR)" || { echo "usage: make restore BACKUP_DIR=<dir> [DB_URL=<url>]"; exit 2; }
	$(PY) -m deploy.local.backup restore $(BACKUP_DIR) $(if $(DB_URL),--db-url $(DB_URL))

lint: proto ## ruff, ruff format --check, mypy, buf lint, buf breaking
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services gateway deploy tools bench tests portal
	$(BIN)/buf lint build/descriptors.binpb --config protos/buf.yaml --path samhandling
	$(PY) tools/breaking.py

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: proto ## run the benchmarks and update bench/README.md
	$(PY) -m bench.run

demo: proto ## the end-to-end story through the Envoy edge (starts its own mesh; prints each step)
	$(PY) -m deploy.local.demo

demo-scan: proto ## make demo with tracing to a local OTLP sink, then scan logs and spans for identity numbers
	$(PY) -m deploy.local.pidscan --demo var/demo-scan

clean: ## remove generated code, build output and local data
	rm -rf gen build var
