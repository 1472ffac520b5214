# The two commands a new machine needs: `make demo` and `make test`. Both install what is missing.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
BIN_DEBUG := $(CARGO_TARGET_DIR)/debug/dualrun
BIN_RELEASE := $(CARGO_TARGET_DIR)/release/dualrun

.PHONY: demo test bench fuzz cluster-demo cluster-bench fmt lint build fixtures

build:
	@scripts/setup.sh build
	$(CARGO) build --quiet

# The nightly job on the bundled fixtures. They carry planted divergences, so dualrun exits 1
# (diverged) here: that is the expected verdict, and only another exit code fails the target.
# The nights before run_date go first (quietly), so the history, the gate and the board have a
# fortnight's worth to show; then the HTML report, the static board (site/) and their
# screenshots for the README (docs/img/, when Chromium is installed).
demo: build
	@for day in 16 17 18 19 20 21 22 23 24; do \
	  $(BIN_DEBUG) run --config dualrun.toml --param run_date=2026-11-$$day --format json --output /dev/null 2>/dev/null || true; done
	@status=0; $(BIN_DEBUG) run --config dualrun.toml || status=$$?; \
	if [ $$status -eq 1 ]; then echo "demo: dualrun exited 1 (diverged) — the expected verdict on the planted divergences"; \
	else echo "demo: unexpected exit code $$status (expected 1: diverged)"; exit 1; fi
	@$(BIN_DEBUG) run --config dualrun.toml --no-history --format html --output demo-report.html 2>/dev/null || [ $$? -eq 1 ]
	@$(BIN_DEBUG) board --config dualrun.toml --output site --report demo-report.html
	@echo "demo: HTML report in demo-report.html, migration board in site/index.html"
	@scripts/screenshots.sh

# The database servers start once for the whole run and stop whatever the outcome.
test:
	@scripts/setup.sh test
	@set -o pipefail; eval "$$(scripts/servers.sh start)"; trap 'scripts/servers.sh stop' EXIT; \
	$(CARGO) test --quiet --features ballista 2>&1 | tee .test-output.log
	@awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "%d passed, %d failed\n", p, f}' .test-output.log

# Keyed and keyless diffs from 1M to 2 x 50M rows, against DuckDB in the same run, with unsorted
# keys, a replayed micro-batch, 1,000 small files and memory limits (see bench/run.py).
bench:
	@scripts/setup.sh bench
	$(CARGO) build --release --quiet --bin dualrun --example datafusion_diff
	.venv/bin/python bench/run.py --dualrun $(BIN_RELEASE) $(BENCH_ARGS)

# Differential fuzzing of verdicts, change-log compaction and exact float sums: random messy
# inputs, dualrun's answers against a Python model of docs/semantics.md (FUZZ_SEEDS=0:1000 for more).
FUZZ_SEEDS ?= 0:300
fuzz:
	@scripts/setup.sh bench
	$(CARGO) build --release --quiet
	.venv/bin/python bench/fuzz_verdicts.py --dualrun $(BIN_RELEASE) --seeds $(FUZZ_SEEDS)
	.venv/bin/python bench/fuzz_changelog.py --dualrun $(BIN_RELEASE) --seeds $(FUZZ_SEEDS)
	.venv/bin/python bench/fuzz_sums.py --dualrun $(BIN_RELEASE) --seeds $(FUZZ_SEEDS)
	.venv/bin/python bench/fuzz_queries.py --dualrun $(BIN_RELEASE) --seeds $(FUZZ_SEEDS)

# A real Ballista cluster on loopback (scheduler + two executors, cargo-installed when missing):
# the demo through it, verdicts checked against embedded; or the 5M benchmark through it.
cluster-demo:
	scripts/cluster.sh demo

cluster-bench:
	scripts/cluster.sh bench

# Regenerates fixtures/ (deterministic; the result is committed).
fixtures:
	@scripts/setup.sh bench
	.venv/bin/python fixtures/generate.py

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features ballista --quiet -- -D warnings
