#!/usr/bin/env bash
# The performance round of issue 7, as recorded in docs/BENCHMARKS.md ("Loadtest"): 3 spawned
# nodes (fsync on), 100 B values, 100k keys, the loadtest on the same machine. Writes one JSON
# summary (and an SVG chart) per run into $OUT (default target/perf-round) and prints the
# reports. Takes about 3 minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p rcraft -p rcraft-loadtest
bin="${CARGO_TARGET_DIR:-target}/release/rcraft-loadtest"
out="${OUT:-${CARGO_TARGET_DIR:-target}/perf-round}"
mkdir -p "$out"
echo "machine: nproc $(nproc), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

common=(--spawn 3 --value-size 100 --keys 100000)
run() {
    local name=$1
    shift
    echo "== $name: rcraft-loadtest ${common[*]} $*"
    "$bin" "${common[@]}" "$@" --json "$out/$name.json" --chart "$out/$name.svg" 2>/dev/null
    echo "   load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run clients-1 --clients 1 --duration 10
run clients-256 --clients 256 --duration 10
run pipelined-16x16 --clients 16 --pipeline 16 --duration 10
run kills-20 --clients 16 --duration 41 --kill-leader-every 2 --restart-after 1
run kills-20-pipelined --clients 4 --pipeline 16 --duration 41 --kill-leader-every 2 --restart-after 1
echo "summaries in $out"
