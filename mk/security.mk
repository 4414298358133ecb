# Fuzzing the local API from its OpenAPI document (schemathesis). The seed and budget are
# fixed here so a run is repeatable; override on the command line to explore.
FUZZ_SEED ?= 20261127
FUZZ_EXAMPLES ?= 100

TEST_TARGETS += test-fuzz

.PHONY: test-fuzz

test-fuzz: $(VENV)/.stamp ## Fuzz every route with schemathesis (seeded; server sealed in a loopback-only network namespace)
	$(CARGO) build -p task-scheduler
	FUZZ_SEED=$(FUZZ_SEED) FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMATHESIS=$(VENV)/bin/schemathesis scripts/fuzz.sh
