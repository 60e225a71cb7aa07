# rcraft developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
SEED ?=
SEEDS ?= 2000

.PHONY: help build test unit doctest lint c-free sim soak bench demo loadtest mutants

help:
	@echo "make build | test | lint | sim [SEED=n] [SEEDS=n] | soak | bench | demo | loadtest | mutants"

build:
	$(CARGO) build --workspace --all-targets

## test: unit, property, interaction, simulator and cluster tests, doc tests, then lint.
test: unit doctest lint

unit:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

doctest:
	$(CARGO) test --doc --workspace

lint: c-free
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## c-free: the library promises embedders no C: no `cc`/`cmake` build step and no `-sys` crate.
c-free:
	@bad=$$($(CARGO) tree -p rcraft -e normal,build --prefix none | sort -u | grep -E '^(cc|cmake|pkg-config) |-sys ' || true); \
	if [ -n "$$bad" ]; then echo "c-free: rcraft's dependency tree builds or links C:"; echo "$$bad"; exit 1; fi; \
	echo "c-free: no C in rcraft's dependency tree"

sim:
	@echo "sim: the deterministic simulator is not built yet (issue #3: the consensus core)"; exit 1

soak:
	@echo "soak: needs the simulator and the loadtest (issues #3, #7)"; exit 1

bench:
	@echo "bench: no benchmarks yet (issues #4, #5, #7)"; exit 1

demo:
	@echo "demo: needs the server binary and the loadtest (issues #6, #7)"; exit 1

loadtest:
	@echo "loadtest: rcraft-loadtest is not built yet (issue #7)"; exit 1

mutants:
	@echo "mutants: needs the simulator (issue #3)"; exit 1
