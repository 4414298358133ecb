# task-scheduler. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
# Test suites run by `make test`; the fragments in mk/ append theirs.
TEST_TARGETS := test-rust

.PHONY: help dev build test test-rust lint fmt

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort -u | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

dev: ## Run the scheduler on http://127.0.0.1:3000 with its SQLite store in ./.scheduler
	$(CARGO) run -p task-scheduler -- serve

build: ## Build the workspace (debug)
	$(CARGO) build --workspace --all-targets

# The project's Python tools (moto, cargo-lambda, cfn-lint, ...) live in one venv.
$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

test-rust: ## Rust unit, route and black-box tests (builds the binary first)
	$(CARGO) build -p task-scheduler
	@# The local host alone (no `aws` feature) is what `BENCH_QUICK=1 make bench` builds.
	$(CARGO) check -p task-scheduler -p bench --no-default-features
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

lint: cdk-deps ## cargo fmt --check, clippy with warnings denied, tsc --noEmit for the CDK app
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --no-default-features -- -D warnings
	cd cdk && node_modules/.bin/tsc --noEmit

fmt: ## Format the Rust code
	$(CARGO) fmt --all

-include mk/*.mk

test: $(TEST_TARGETS) ## Every test suite (what CI runs)
