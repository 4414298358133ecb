# Fuzzing the local API from its OpenAPI document (schemathesis). The seed and budget are
# fixed here so a run is repeatable; override on the command line to explore.
FUZZ_SEED ?= 20261127
FUZZ_EXAMPLES ?= 100

.PHONY: test-security test-fuzz test-signature

test-security: test-fuzz test-signature ## Fuzzing and the signature check against the real server

test-fuzz: $(VENV)/.stamp ## Fuzz every route with schemathesis (seeded; server sealed in a loopback-only network namespace)
	$(BUILD_FOR_TESTS)
	FUZZ_SEED=$(FUZZ_SEED) FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMATHESIS=$(VENV)/bin/schemathesis scripts/fuzz.sh

test-signature: $(VENV)/.stamp ## The README's receiver verifies a real delivery with the standardwebhooks library
	$(BUILD_FOR_TESTS)
	PYTHON_VENV=$(VENV)/bin/python scripts/signature-test.sh
