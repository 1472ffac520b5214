# The two commands a new machine needs: `make demo` and `make test`. Both install what is missing.
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
BIN_DEBUG := $(CARGO_TARGET_DIR)/debug/dualrun
BIN_RELEASE := $(CARGO_TARGET_DIR)/release/dualrun

.PHONY: demo test bench fmt lint build fixtures

build:
	@scripts/setup.sh build
	$(CARGO) build --quiet

# The nightly job on the bundled fixtures. They carry planted divergences, so dualrun exits 1
# (diverged) here: that is the expected verdict, and only another exit code fails the target.
demo: build
	@status=0; $(BIN_DEBUG) run --config dualrun.toml || status=$$?; \
	if [ $$status -eq 1 ]; then echo "demo: dualrun exited 1 (diverged) — the expected verdict on the planted divergences"; \
	else echo "demo: unexpected exit code $$status (expected 1: diverged)"; exit 1; fi

test:
	@scripts/setup.sh test
	$(CARGO) test --quiet

bench:
	@scripts/setup.sh bench
	$(CARGO) build --release --quiet
	.venv/bin/python bench/run.py --dualrun $(BIN_RELEASE)

# Regenerates fixtures/ (deterministic; the result is committed).
fixtures:
	@scripts/setup.sh bench
	.venv/bin/python fixtures/generate.py

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
