# rcraft developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
SEED ?=
SEEDS ?= 2000

.PHONY: help build test unit doctest lint lean c-free sim soak bench bench-instructions demo loadtest faults mutants

help:
	@echo "make build | test | lint | sim [SEED=n] [SEEDS=n] | soak | bench | bench-instructions | demo | loadtest | faults | mutants"

build:
	$(CARGO) build --workspace --all-targets

## test: unit, property, interaction and cluster tests, 2,000 simulator seeds, doc tests, lint.
## The short nemesis matrix runs inside `unit` (loadtest/tests/nemesis.rs); `make faults` is
## the full one.
test: unit sim doctest lint

## unit: every test with TLS compiled in (the `tls` feature: tests/cli_tls.rs and
## loadtest/tests/tls.rs run, and every other test runs its plaintext links through the same
## code), then the default build's refusal of TLS flags (tests/cli_tls_off.rs).
UNIT_FEATURES := --features rcraft-loadtest/tls
unit:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace $(UNIT_FEATURES) --no-fail-fast; \
	else \
		$(CARGO) test --workspace $(UNIT_FEATURES) --no-fail-fast; \
	fi
	$(CARGO) test -p rcraft --test cli_tls_off

doctest:
	$(CARGO) test --doc --workspace

lint: c-free lean
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets $(UNIT_FEATURES) -- -D warnings

## lean: the library as an embedder gets it (`default-features = false`: no clap, env_logger,
## serde_json) must build on its own.
lean:
	$(CARGO) build -p rcraft --no-default-features

## c-free: the library promises embedders no C: no `cc`/`cmake` build step and no `-sys` crate.
c-free:
	@bad=$$($(CARGO) tree -p rcraft -e normal,build --prefix none | sort -u | grep -E '^(cc|cmake|pkg-config) |-sys ' || true); \
	if [ -n "$$bad" ]; then echo "c-free: rcraft's dependency tree builds or links C:"; echo "$$bad"; exit 1; fi; \
	echo "c-free: no C in rcraft's dependency tree"

## sim: the deterministic simulators in release (the cluster over the nodes' consensus handlers, and the storage
## thread under disk faults); SEED=n replays one seed of the first, STORAGE_SEED=n of the second.
STORAGE_SEED ?=
sim:
	@if [ -n "$(SEED)" ]; then \
		SIM_SEED=$(SEED) SIM_TRACE=$${SIM_TRACE:-0} $(CARGO) test --release --test sim -- --nocapture; \
	elif [ -n "$(STORAGE_SEED)" ]; then \
		STORAGE_SIM_SEED=$(STORAGE_SEED) STORAGE_SIM_TRACE=1 $(CARGO) test --release -p rcraft --lib storage_sim -- --nocapture; \
	else \
		SIM_SEEDS=$(SEEDS) $(CARGO) test --release --test sim -- --nocapture; \
		STORAGE_SIM_SEEDS=$(SEEDS) $(CARGO) test --release -p rcraft --lib storage_sim -- --nocapture; \
	fi

## soak: many more simulator seeds (SOAK_SEEDS, default 50000), the mutation check, then the
## full nemesis matrix.
SOAK_SEEDS ?= 50000
soak:
	SIM_SEEDS=$(SOAK_SEEDS) SIM_SEED_START=$${SIM_SEED_START:-2000} $(CARGO) test --release --test sim -- --nocapture
	STORAGE_SIM_SEEDS=$(SOAK_SEEDS) $(CARGO) test --release -p rcraft --lib storage_sim -- --nocapture
	$(MAKE) mutants
	$(MAKE) faults

## mutants: plants each classic Raft bug (cargo features bug-*) and checks it is caught.
mutants:
	./scripts/mutants.sh

## bench: storage and wire benchmarks (release); each prints its raw baseline beside it; then
## the entry path's instructions per entry.
bench:
	$(CARGO) bench -p rcraft-storage --bench wal
	$(CARGO) bench -p rcraft-wire --bench codec
	$(CARGO) test --release -p rcraft --test net_bench -- --ignored --nocapture
	$(MAKE) bench-instructions

## bench-instructions: instructions per entry on the entry path over 3 nodes (leader's entry,
## WAL appends, AppendRequest frames, follower's decode and CRC check, apply), counted by
## valgrind's callgrind (deterministic, unlike time on a shared machine); without valgrind it
## says so and prints wall-clock times. benches/entry_path.rs, scripts/bench-instructions.py.
bench-instructions:
	./scripts/bench-instructions.py

## demo: release build, a local 3-node cluster, 8 s of load with a leader kill, a report.
demo:
	./scripts/demo.sh

## loadtest: the loadtest against a spawned 3-node cluster; ARGS adds or overrides flags.
ARGS ?=
loadtest:
	$(CARGO) build --release -p rcraft -p rcraft-loadtest
	"$${CARGO_TARGET_DIR:-target}/release/rcraft-loadtest" --spawn 3 --clients 64 --duration 20 --value-size 100 --keys 100000 $(ARGS)

## faults: the nemesis matrix (release): kill, pause, partitions (root: network namespaces,
## else skipped with a message), loss and delay (tc netem), damaged follower logs, x seeds x 3
## and 5 spawned nodes; every run checked for linearizability and lost writes; a summary table.
## FAULTS_SEEDS, FAULTS_NODES, FAULTS_NEMESES, FAULTS_DURATION narrow it (scripts/faults.sh).
faults:
	$(CARGO) build --release -p rcraft -p rcraft-loadtest
	./scripts/faults.sh
