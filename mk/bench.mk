# Benchmarks (bench/). Included by the main Makefile (MK_FRAGMENTS), which defines
# CARGO, VENV and its $(VENV)/.stamp target (requirements-dev.txt, matplotlib for the plots).
# Not part of `make test`: benchmarks measure, they do not gate.
#
# Each binary of bench/ starts the server built beside it on 127.0.0.1:0 with a fresh data directory,
# measures, stops it by PID and writes bench/results/raw/<name>.json; bench/report.py turns
# those into results.json, README.md (the table) and the PNG plots.
#
# Knobs: BENCH_QUICK=1 (reduced sizes, ~30 s of measurement, the bench-quick build of the local
# host alone), BENCH_ONLY="burst precision".

BENCH_BINS := loadgen burst schedules precision scale
BENCH_ONLY ?= $(BENCH_BINS)
BENCH_TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)
# The published figures come from the release build of the binary users run. BENCH_QUICK=1
# builds the `bench-quick` profile (Cargo.toml) of the local host alone: same code, faster to
# build, so an edit can be measured in under two minutes.
BENCH_IS_QUICK = $(filter-out 0,$(BENCH_QUICK))
BENCH_PROFILE = $(if $(BENCH_IS_QUICK),bench-quick,release)
BENCH_FEATURES = $(if $(BENCH_IS_QUICK),--no-default-features)
BENCH_LAMBDA_DIR = $(BENCH_TARGET_DIR)/bench-lambda

.PHONY: bench bench-aws bench-report

bench: $(VENV)/.stamp ## Benchmarks on loopback: create throughput, burst, schedules, precision, scale -> bench/results/ (BENCH_QUICK=1: a lighter build, ~30 s of measurement)
	$(CARGO) build --profile $(BENCH_PROFILE) $(BENCH_FEATURES) -p task-scheduler -p bench
	@# `sync` before each benchmark flushes the dirty pages of the build and of the previous
	@# benchmark's store: on ext4 the store's fsyncs would otherwise wait for them (measured:
	@# create throughput 14.6k/s instead of 21k/s right after a build; a 75 ms precision
	@# outlier right after the burst).
	@start=$$(date +%s); status=0; \
	mkdir -p bench/results/raw; \
	for b in $(BENCH_ONLY); do \
	  rm -f bench/results/raw/$$b.json; \
	  echo "== $$b"; \
	  sync; \
	  $(BENCH_TARGET_DIR)/$(BENCH_PROFILE)/$$b || { echo "bench: $$b failed"; status=1; }; \
	done; \
	end=$$(date +%s); \
	$(VENV)/bin/python bench/report.py bench/results --duration $$((end - start)) || status=1; \
	echo "bench: $$((end - start)) s of measurement; see bench/results/README.md"; \
	exit $$status

# The Lambda figures: both bootstraps built with build-lambda (mk/aws.mk), copied aside, then
# zipped and cold-started (x86_64, this machine's architecture) on cargo lambda's Runtime API
# emulator. Then, with a private moto server (scripts/with-moto.sh), bench/src/bin/aws.rs runs
# the x86_64 bootstrap on a Runtime API on loopback: AWS precision (Scheduler's minute
# simulated, 40 tasks; 10 with BENCH_QUICK=1), AWS calls per task (moto's request recorder),
# the RSS after one request and one wake-up, and the handler's CPU per create and per fire
# (process user+sys time, every AWS call answered by an instant stub replaying moto's
# answers). Their results stay in bench/results/raw/aws_*.json, which later `make bench` runs
# keep in the table.
bench-aws: $(VENV)/.stamp $(LIBFAKETIME) ## Lambda figures: bootstrap size, cold start, RSS, handler CPU, AWS calls per task, AWS precision on moto -> bench/results/
	$(CARGO) build --release -p bench
	$(MAKE) build-lambda ARCH=x86_64
	mkdir -p $(BENCH_LAMBDA_DIR)/x86_64 $(BENCH_LAMBDA_DIR)/arm64
	cp $(LAMBDA_BOOTSTRAP) $(BENCH_LAMBDA_DIR)/x86_64/bootstrap
	$(MAKE) build-lambda ARCH=arm64
	cp $(LAMBDA_BOOTSTRAP) $(BENCH_LAMBDA_DIR)/arm64/bootstrap
	$(VENV_PATH) CARGO_LAMBDA="$(abspath $(VENV))/bin/cargo-lambda" \
	  $(BENCH_TARGET_DIR)/release/coldstart --x86 $(BENCH_LAMBDA_DIR)/x86_64/bootstrap --arm64 $(BENCH_LAMBDA_DIR)/arm64/bootstrap
	$(VENV_PATH) LIBFAKETIME="$(LIBFAKETIME)" scripts/with-moto.sh $(VENV)/bin/python \
	  $(BENCH_TARGET_DIR)/release/aws --bootstrap $(BENCH_LAMBDA_DIR)/x86_64/bootstrap
	$(VENV)/bin/python bench/report.py bench/results

bench-report: $(VENV)/.stamp ## Rebuild bench/results/{results.json,README.md,*.png} from bench/results/raw
	$(VENV)/bin/python bench/report.py bench/results
