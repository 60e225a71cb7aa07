#!/usr/bin/env bash
# `make demo`: build release, start a local 3-node cluster, run a short load with one leader
# kill and restart, print the report, stop every process. rcraft-loadtest owns the cluster:
# it starts the nodes in a temporary directory, stops them on every exit path (Ctrl-C
# included) and removes the directory. Exit status: the loadtest's (0 only when every
# acknowledged write was read back).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p rcraft -p rcraft-loadtest

target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/demo"
mkdir -p "$out"

status=0
"$target_dir/release/rcraft-loadtest" \
    --spawn 3 --clients 16 --duration 8 \
    --kill-leader-every 4 --restart-after 2 \
    --value-size 100 --keys 1000 \
    --json "$out/summary.json" --chart "$out/chart.svg" || status=$?

if [ "$status" -eq 0 ]; then
    echo "demo: summary in $out/summary.json, chart in $out/chart.svg"
else
    echo "demo: FAILED (rcraft-loadtest exit status $status)" >&2
fi
exit "$status"
