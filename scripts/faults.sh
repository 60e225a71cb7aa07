#!/usr/bin/env bash
# The nemesis matrix (`make faults`): every nemesis set x every seed x 3 and 5 spawned nodes,
# each run `rcraft-loadtest` (release) with a snapshot every 300 entries, checked for
# linearizability and lost acknowledged writes. Prints one row per run and a summary; exits 1
# when any run failed. As root the nodes run in network namespaces; without root the partition
# nemeses are skipped, each with a visible message.
#
# Environment: FAULTS_NODES (default "3 5"), FAULTS_SEEDS (default "1 2 3"),
# FAULTS_DURATION (seconds per run, default 12), FAULTS_NEMESES (space-separated sets,
# each a comma-separated --nemesis list; default below), FAULTS_OUT (directory for each run's
# JSON, chart and report; default a temporary one, kept when a run fails), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes_list="${FAULTS_NODES:-3 5}"
seeds="${FAULTS_SEEDS:-1 2 3}"
duration="${FAULTS_DURATION:-12}"
default_nemeses="kill pause isolate-leader halves bridge one-way loss delay wal-record wal-tail
    wal-tail,kill halves,kill,wal-tail isolate-leader,one-way,pause"
nemeses="${FAULTS_NEMESES:-$default_nemeses}"
bin="${CARGO_TARGET_DIR:-target}/release"
out="${FAULTS_OUT:-$(mktemp -d -t rcraft-faults-XXXXXX)}"
mkdir -p "$out"

network_only() {
    # True when every kind of the set needs network namespaces.
    local kind
    for kind in ${1//,/ }; do
        case "$kind" in
            isolate-leader|halves|bridge|one-way|loss|delay) ;;
            *) return 1 ;;
        esac
    done
}

field() { # field NAME FILE: the JSON value of a top-level scalar field
    grep -oE "\"$1\":(\"[^\"]*\"|[^,}]*)" "$2" | head -n1 | cut -d: -f2- | tr -d '"'
}

root=1
[ "$(id -u)" = 0 ] || root=0
if [ "$root" = 0 ]; then
    echo "faults: not running as root: partition, loss and delay nemeses are SKIPPED"
fi
printf '%-6s %-34s %-5s %9s %7s %6s %13s %s\n' nodes nemesis seed ops faults lost linearizable result
failed=0 passed=0 skipped=0
for nodes in $nodes_list; do
    for nemesis in $nemeses; do
        for seed in $seeds; do
            name="n${nodes}-${nemesis//,/+}-s${seed}"
            if [ "$root" = 0 ] && network_only "$nemesis"; then
                printf '%-6s %-34s %-5s %9s %7s %6s %13s %s\n' "$nodes" "$nemesis" "$seed" - - - - \
                    "SKIPPED (needs root)"
                skipped=$((skipped + 1))
                continue
            fi
            status=0
            "$bin/rcraft-loadtest" --spawn "$nodes" --clients 16 --duration "$duration" \
                --keys 100 --workload write-heavy --nemesis "$nemesis" --seed "$seed" \
                --nemesis-every 2.5 --nemesis-hold 1.5 --snapshot-every 300 \
                --rcraft-bin "$bin/rcraft" --json "$out/$name.json" --chart "$out/$name.svg" \
                >"$out/$name.txt" 2>"$out/$name.err" || status=$?
            json="$out/$name.json"
            if [ -s "$json" ]; then
                ops=$(field ops "$json")
                faults=$(grep -oE '"kind":"(kill|pause|partition|netem|damage)"' "$json" | wc -l || true)
                lost=$(field lost_acked_writes "$json")
                linear=$(field linearizable "$json")
                problems=$(grep -oE '"problems":\[[^]]*\]' "$json" | head -n1)
            else
                ops=- faults=- lost=- linear=- problems=""
            fi
            notes=$(grep -oE 'rcraft-loadtest: [a-z-]+ skipped: .*' "$out/$name.err" | sort -u || true)
            result=ok
            if [ "$status" != 0 ] || [ "$problems" != '"problems":[]' ]; then
                result="FAILED (exit $status)"
                failed=$((failed + 1))
            elif [ "$faults" = 0 ] && [ -n "$notes" ]; then
                result="SKIPPED (see below)"
                skipped=$((skipped + 1))
            else
                passed=$((passed + 1))
            fi
            printf '%-6s %-34s %-5s %9s %7s %6s %13s %s\n' "$nodes" "$nemesis" "$seed" "$ops" \
                "$faults" "$lost" "$linear" "$result"
            if [ "${result#FAILED}" != "$result" ]; then
                grep -E '^  (problem|verification|linearizable)|^    |^  +[0-9.]+ s  ' "$out/$name.txt" \
                    | sed 's/^/        /' || true
                tail -n 3 "$out/$name.err" | sed 's/^/        /'
            fi
            if [ -n "$notes" ]; then
                sed 's/^/        /' <<<"$notes"
            fi
        done
    done
done
echo "faults: $passed passed, $failed failed, $skipped skipped; reports, JSON and charts in $out"
[ "$failed" = 0 ]
