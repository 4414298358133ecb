# task-scheduler. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
# The fragments of mk/, each included by name: a missing or renamed one stops make at once,
# and a new file in mk/ that is not listed here is refused below, rather than its targets
# silently missing from `make help` and `make test`.
MK_FRAGMENTS := mk/aws.mk mk/cdk.mk mk/security.mk mk/bench.mk mk/console.mk
# Every suite `make test` runs, in order (benchmarks measure, they do not gate: not here).
TEST_TARGETS := test-rust test-cron-oracle test-aws test-chaos cdk-test test-security test-console
# Every debug build of `make test` resolves features as the workspace's tests do (all members,
# dev-dependencies included, as `cargo nextest run --workspace` does), and the binary that the
# black-box tests, the rehearsal and the fuzzer run (target/debug/task-scheduler) comes from it.
# A build of one package (`cargo build -p task-scheduler`, `cargo test -p ...`) resolves other
# features for task-scheduler-shared (without `default`) and tokio (without `test-util` or
# `process`), so it compiles shared, tokio and everything above tokio (hyper, reqwest, the AWS
# SDK) once more.
BUILD_FOR_TESTS = $(CARGO) build --workspace --bins --tests

.PHONY: help dev build test test-suites test-rust test-cron-oracle lint fmt

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
	$(BUILD_FOR_TESTS)
	@# The local host alone (no `aws` feature) is what `BENCH_QUICK=1 make bench` builds. The
	@# whole workspace, so that the dependencies checked here are those `make lint` checks too.
	$(CARGO) check --workspace --all-targets --no-default-features
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

# The independent oracle for schedules' cron plans: 10,000 random expressions x zones x start
# instants, their next 20 runs from Python's croniter + zoneinfo (scripts/cron_oracle.py, a
# fixed seed), written to target/cron-oracle.json (the path the test reads) and compared with
# the product's by an ignored Rust test. The same `cargo test --workspace` features as
# test-rust, so it reuses that build.
test-cron-oracle: $(VENV)/.stamp ## Schedules' cron plans against croniter + zoneinfo (10,000 cases)
	mkdir -p target
	$(VENV)/bin/python scripts/cron_oracle.py --seed 13 --cases 10000 --out target/cron-oracle.json
	$(CARGO) test --workspace --lib croniter_oracle -- --ignored --nocapture

lint: cdk-deps ## cargo fmt --check, clippy with warnings denied, tsc --noEmit for the CDK app
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --no-default-features -- -D warnings
	cd cdk && node_modules/.bin/tsc --noEmit

fmt: ## Format the Rust code
	$(CARGO) fmt --all

include $(MK_FRAGMENTS)
ifneq ($(filter-out $(MK_FRAGMENTS),$(wildcard mk/*.mk)),)
$(error $(filter-out $(MK_FRAGMENTS),$(wildcard mk/*.mk)) not included: add it to MK_FRAGMENTS in the Makefile)
endif
# A suite needs a rule: a .PHONY name left without one would make `make test` pass silently.
RULES := $(shell sed -nE 's/^([a-zA-Z0-9_.-]+):.*/\1/p' $(MAKEFILE_LIST))
ifneq ($(filter-out $(RULES),$(TEST_TARGETS)),)
$(error make test: no rule for $(filter-out $(RULES),$(TEST_TARGETS)) (TEST_TARGETS in the Makefile))
endif

test: $(TEST_TARGETS) ## Every test suite (what CI runs)

comma := ,
space := $() $()
# TEST_TARGETS as a JSON list: the matrix of .github/workflows/deploy.yml.
test-suites:
	@echo '[$(subst $(space),$(comma),$(patsubst %,"%",$(TEST_TARGETS)))]'
