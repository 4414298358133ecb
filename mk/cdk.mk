# The CDK app in cdk/: dependencies, tests, synth, deploy, destroy.
# Included by the main Makefile (MK_FRAGMENTS), which defines VENV, its $(VENV)/.stamp
# target (the Python tools of requirements-dev.txt, cfn-lint among them) and build-lambda.
#
# Knobs (make VAR=value ...):
#   STACK_NAME     CloudFormation stack name (default TaskScheduler)
#   ARCH           Lambda architecture, arm64 (default) or x86_64; build-lambda reads it too
#   BOOTSTRAP_DIR  directory holding the built `bootstrap` (default: cdk's ../target/lambda/task-scheduler)
#   CDK_CONTEXT    extra context flags, e.g. CDK_CONTEXT="-c alarmEmail=ops@example.com -c destroyTable=true"
#   AWS_PROFILE / AWS_REGION   honoured by deploy/destroy/cdk-bootstrap (standard AWS variables)

VENV ?= .venv
CDK_DIR := cdk
CDK_BIN := node_modules/.bin
# Never phone home: no telemetry, no version check (synth works with no network at all).
CDK_ENV := CDK_DISABLE_CLI_TELEMETRY=true CDK_DISABLE_VERSION_CHECK=1
CDK_DEPS_STAMP := $(CDK_DIR)/node_modules/.deps.stamp
CDK_TEST_OUT := cdk.out.test
STACK_NAME ?= TaskScheduler
ARCH ?= arm64
CDK_CONTEXT ?=
CDK_BASE_ARGS = -c stackName=$(STACK_NAME) -c arch=$(ARCH) $(CDK_CONTEXT)
CDK_ARGS = $(CDK_BASE_ARGS) $(if $(BOOTSTRAP_DIR),-c bootstrapDir=$(abspath $(BOOTSTRAP_DIR)))
CDK_PROFILE = $(if $(AWS_PROFILE),--profile $(AWS_PROFILE))
# No terminal in CI: no approval prompt there; locally, confirm IAM/security-group widening.
CDK_REQUIRE_APPROVAL ?= $(if $(CI),never,broadening)
CDK_OUTPUTS := $(CDK_DIR)/cdk-outputs.json

.PHONY: cdk-deps cdk-test synth deploy destroy cdk-bootstrap

# npm ci again only when the lock file (or package.json) changes.
$(CDK_DEPS_STAMP): $(CDK_DIR)/package-lock.json $(CDK_DIR)/package.json
	cd $(CDK_DIR) && npm ci --no-audit --no-fund
	touch $@

cdk-deps: $(CDK_DEPS_STAMP) ## Install the CDK app's pinned npm packages (npm ci, from package-lock.json)

cdk-test: cdk-deps $(VENV)/.stamp ## CDK app: tsc, jest, cdk-nag, offline synth with a stub binary, cfn-lint
	cd $(CDK_DIR) && $(CDK_BIN)/tsc --noEmit
	cd $(CDK_DIR) && $(CDK_ENV) $(CDK_BIN)/jest --ci
	@set -e; stub=$$(mktemp -d); trap 'rm -rf "$$stub"' EXIT; \
	  printf '#!/bin/sh\necho "stub bootstrap" >&2\nexit 1\n' > "$$stub/bootstrap"; chmod +x "$$stub/bootstrap"; \
	  cd $(CDK_DIR); rm -rf $(CDK_TEST_OUT); \
	  echo "cdk synth (stub binary, default context) -> $(CDK_DIR)/$(CDK_TEST_OUT)/default"; \
	  $(CDK_ENV) $(CDK_BIN)/cdk synth --quiet -c bootstrapDir="$$stub" -o $(CDK_TEST_OUT)/default; \
	  echo "cdk synth (stub binary, alarmEmail + destroyTable + x86_64) -> $(CDK_DIR)/$(CDK_TEST_OUT)/variant"; \
	  $(CDK_ENV) $(CDK_BIN)/cdk synth --quiet -c bootstrapDir="$$stub" -c alarmEmail=ops@example.com \
	    -c destroyTable=true -c arch=x86_64 -o $(CDK_TEST_OUT)/variant
	$(VENV)/bin/cfn-lint $(CDK_DIR)/$(CDK_TEST_OUT)/default/*.template.json $(CDK_DIR)/$(CDK_TEST_OUT)/variant/*.template.json
	@echo "cfn-lint: no errors, no warnings"

synth: build-lambda cdk-deps ## Build the function and synthesize the CloudFormation template (no credentials, no network)
	cd $(CDK_DIR) && $(CDK_ENV) $(CDK_BIN)/cdk synth --quiet $(CDK_ARGS) -o cdk.out
	@echo "template: $(CDK_DIR)/cdk.out/$(STACK_NAME).template.json (assets beside it in $(CDK_DIR)/cdk.out/)"

deploy: build-lambda cdk-deps ## Deploy the stack with your AWS credentials (AWS_PROFILE/AWS_REGION, STACK_NAME) and print its outputs
	cd $(CDK_DIR) && $(CDK_ENV) $(CDK_BIN)/cdk deploy $(STACK_NAME) $(CDK_ARGS) $(CDK_PROFILE) \
	  --require-approval $(CDK_REQUIRE_APPROVAL) --outputs-file cdk-outputs.json
	@echo "outputs written to $(CDK_OUTPUTS):"
	@cat $(CDK_OUTPUTS)

# destroy only needs the stack's name, not a real build: synthesize it around a stub binary.
destroy: cdk-deps ## Delete the stack (the table is kept unless deployed with -c destroyTable=true)
	@set -e; stub=$$(mktemp -d); trap 'rm -rf "$$stub"' EXIT; touch "$$stub/bootstrap"; \
	  cd $(CDK_DIR); $(CDK_ENV) $(CDK_BIN)/cdk destroy $(STACK_NAME) $(CDK_BASE_ARGS) -c bootstrapDir="$$stub" \
	    $(CDK_PROFILE) $(if $(CI),--force)

cdk-bootstrap: cdk-deps ## One-time per account and region: create the CDK toolkit stack that deploy needs
	@set -e; stub=$$(mktemp -d); trap 'rm -rf "$$stub"' EXIT; touch "$$stub/bootstrap"; \
	  cd $(CDK_DIR); $(CDK_ENV) $(CDK_BIN)/cdk bootstrap $(CDK_BASE_ARGS) -c bootstrapDir="$$stub" $(CDK_PROFILE)
