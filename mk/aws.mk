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
# What test-aws runs with moto up: the store contract and wake-up tests in shared, the
# Lambda host's tests, then the cloud rehearsal (the built binary on cargo lambda's Runtime API).
# `--workspace`, and the filters pick the tests: with `-p` cargo would resolve other features
# and compile shared and the AWS SDK again (see BUILD_FOR_TESTS in the Makefile). No other
# member's lib tests match these filters.
AWS_TESTS = $(CARGO) test --workspace --lib -- store:: wake::aws lambda:: metrics:: && \
  $(CARGO) test --workspace --test aws_rehearsal -- --nocapture

.PHONY: test-aws build-lambda

test-aws: $(VENV)/.stamp ## AWS path on moto server: store contract, wake-ups, cloud rehearsal (starts and stops moto)
	$(BUILD_FOR_TESTS)
	$(VENV_PATH) CARGO_LAMBDA="$(abspath $(VENV))/bin/cargo-lambda" \
	  scripts/with-moto.sh $(VENV)/bin/moto_server bash -c '$(AWS_TESTS)'

build-lambda: $(VENV)/.stamp ## Build target/lambda/task-scheduler/bootstrap with cargo lambda + zig (ARCH=arm64|x86_64)
	rustup target add $(LAMBDA_RUST_TARGET)
	$(VENV_PATH) $(VENV)/bin/cargo-lambda lambda build --profile lambda $(LAMBDA_ARCH_FLAG) -p task-scheduler
	@file $(LAMBDA_BOOTSTRAP) 2>/dev/null || true
	@ls -l $(LAMBDA_BOOTSTRAP)
