# The AWS path: tests against moto server and the Lambda build with cargo lambda.
# Included by the main Makefile (MK_FRAGMENTS), which defines CARGO, VENV, BUILD_FOR_TESTS and its
# $(VENV)/.stamp target (pip-installs requirements-dev.txt: moto, cargo-lambda, ziglang).
#
# Knobs (make VAR=value ...):
#   ARCH   Lambda architecture for build-lambda: arm64 (default) or x86_64

ARCH ?= arm64
LAMBDA_RUST_TARGET_arm64 := aarch64-unknown-linux-gnu
LAMBDA_RUST_TARGET_x86_64 := x86_64-unknown-linux-gnu
LAMBDA_ARCH_FLAG_arm64 := --arm64
LAMBDA_ARCH_FLAG_x86_64 := --x86-64
LAMBDA_RUST_TARGET = $(or $(LAMBDA_RUST_TARGET_$(ARCH)),$(error ARCH must be arm64 or x86_64, not $(ARCH)))
LAMBDA_ARCH_FLAG = $(LAMBDA_ARCH_FLAG_$(ARCH))
LAMBDA_BOOTSTRAP := target/lambda/task-scheduler/bootstrap
# cargo lambda finds zig through the venv's python (ziglang) and itself on PATH.
VENV_PATH = PATH="$(abspath $(VENV))/bin:$$PATH"
# What test-aws runs with moto up: the check of scripts/moto_server.py's transactions, the
# tests a plain `cargo test` reports as ignored (every `#[ignore]` test in shared needs moto:
# the store contract on DynamoDB, the Scheduler + SQS waker; but the croniter oracle's, which
# needs `make test-cron-oracle`'s file and runs there), then the cloud rehearsal (the built
# binary on cargo lambda's Runtime API). Asked for with --ignored, they fail without the
# emulator instead of skipping. `--workspace`, and the filters pick the tests: with `-p`
# cargo would resolve other features and compile shared and the AWS SDK again (see
# BUILD_FOR_TESTS in the Makefile).
AWS_TESTS = $(VENV)/bin/python scripts/check_moto_server.py && \
  $(CARGO) test --workspace --lib -- --ignored --skip croniter_oracle_agrees && \
  $(CARGO) test --workspace --test aws_rehearsal -- --ignored --nocapture
# The rehearsal plays moments hours ahead by moving the function's wall clock with
# libfaketime (LD_PRELOAD), from the test side: nothing in the binary knows about it.
LIBFAKETIME ?= /usr/lib/$(shell uname -m)-linux-gnu/faketime/libfaketime.so.1
APT_SUDO = $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: test-aws build-lambda

test-aws: $(VENV)/.stamp $(LIBFAKETIME) ## AWS path on moto server: store contract, wake-ups, cloud rehearsal (starts and stops moto)
	$(BUILD_FOR_TESTS)
	$(VENV_PATH) CARGO_LAMBDA="$(abspath $(VENV))/bin/cargo-lambda" LIBFAKETIME="$(LIBFAKETIME)" \
	  scripts/with-moto.sh $(VENV)/bin/python bash -c '$(AWS_TESTS)'

# Installed only when missing (a fresh CI machine runs as root); the package index is
# refreshed only if the first attempt cannot find the package.
$(LIBFAKETIME):
	$(APT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y libfaketime || \
	  { $(APT_SUDO) apt-get update && $(APT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y libfaketime; }
	test -e $@

build-lambda: $(VENV)/.stamp ## Build target/lambda/task-scheduler/bootstrap with cargo lambda + zig (ARCH=arm64|x86_64)
	rustup target add $(LAMBDA_RUST_TARGET)
	$(VENV_PATH) $(VENV)/bin/cargo-lambda lambda build --profile lambda $(LAMBDA_ARCH_FLAG) -p task-scheduler
	@file $(LAMBDA_BOOTSTRAP) 2>/dev/null || true
	@ls -l $(LAMBDA_BOOTSTRAP)

# The fault-injection rehearsal (integration-tests/tests/chaos.rs): faults on the
# function's AWS calls through a seeded proxy, kills mid-invocation, duplicated and
# dead-lettered SQS messages, dropped Scheduler invocations, the sweep every few seconds.
# A new seed each run, printed. Knobs: CHAOS_SEED (replay), CHAOS_TASKS, CHAOS_SWEEP_MS,
# CHAOS_CONCURRENCY (execution environments), CHAOS_CREATE_SECS, CHAOS_OUTAGE_MS, CHAOS_REPORT.
CHAOS_TEST = $(CARGO) test --workspace --test chaos -- --ignored --nocapture
.PHONY: test-chaos chaos

test-chaos: $(VENV)/.stamp $(LIBFAKETIME) ## Fault-injection rehearsal, bounded (300 tasks) + the local host's full disk: writes integration-tests/chaos-report.md
	$(BUILD_FOR_TESTS)
	$(VENV_PATH) CARGO_LAMBDA="$(abspath $(VENV))/bin/cargo-lambda" LIBFAKETIME="$(LIBFAKETIME)" \
	  scripts/with-moto.sh $(VENV)/bin/python bash -c '$(CHAOS_TEST)'
	$(FULL_DISK_TEST)

chaos: $(VENV)/.stamp $(LIBFAKETIME) ## Fault-injection rehearsal, long (CHAOS_TASKS=1000 by default)
	$(BUILD_FOR_TESTS)
	$(VENV_PATH) CARGO_LAMBDA="$(abspath $(VENV))/bin/cargo-lambda" LIBFAKETIME="$(LIBFAKETIME)" \
	  CHAOS_TASKS=$${CHAOS_TASKS:-1000} CHAOS_CREATE_SECS=$${CHAOS_CREATE_SECS:-80} \
	  scripts/with-moto.sh $(VENV)/bin/python bash -c '$(CHAOS_TEST)'
# The local host's half (integration-tests/tests/crash.rs, ignored tests): a full disk, the
# data directory on a small tmpfs mounted in a private mount namespace (root: unshare -m).
FULL_DISK_TEST = $(APT_SUDO) unshare -m --propagation private env PATH="$$PATH" \
  $(CARGO) test --workspace --test crash -- --ignored --nocapture
