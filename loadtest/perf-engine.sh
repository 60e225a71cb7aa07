#!/usr/bin/env bash
# The loadtest rows of docs/BENCHMARKS.md ("Load generator: the event-loop engine", issue 18):
# 3 spawned nodes (fsync on), 100 B values, 100k keys, write-only, the loadtest on the same
# machine; 1/16/64/256 clients on the engine, 256 clients one thread each (the old way, same
# binary), 16 x 16 pipelined. Each run prints writes/s, latency and the CPU per write of the
# load generator and of the nodes; the same-run baselines (raw fdatasync, raw loopback round
# trip) are measured before and after. JSON summaries land in $OUT (default
# target/perf-engine). About 3 minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p rcraft -p rcraft-loadtest
bin="${CARGO_TARGET_DIR:-target}/release/rcraft-loadtest"
out="${OUT:-${CARGO_TARGET_DIR:-target}/perf-engine}"
mkdir -p "$out"

baselines() {
    python3 - "$out" <<'PY'
import os, socket, statistics, sys, threading, time
path = os.path.join(sys.argv[1], "fsync-floor.bin")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 1 << 20)
os.fsync(fd)
record = b"x" * 124
samples = []
for i in range(1000):
    t = time.perf_counter()
    os.pwrite(fd, record, (i * 124) % (1 << 20))
    os.fdatasync(fd)
    samples.append(time.perf_counter() - t)
os.close(fd)
os.unlink(path)
q = statistics.quantiles(samples, n=100)
print(f"baseline: pwrite 124 B + fdatasync p50 {q[49]*1e3:.3f} ms p99 {q[98]*1e3:.3f} ms")
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
def echo():
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (data := conn.recv(256)):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
client = socket.create_connection(server.getsockname())
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples = []
for _ in range(5000):
    t = time.perf_counter()
    client.sendall(b"y" * 100)
    got = 0
    while got < 100:
        got += len(client.recv(256))
    samples.append(time.perf_counter() - t)
q = statistics.quantiles(samples, n=100)
print(f"baseline: loopback TCP round trip of 100 B p50 {q[49]*1e6:.0f} us p99 {q[98]*1e6:.0f} us")
PY
}

echo "machine: nproc $(nproc), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
baselines
common=(--spawn 3 --value-size 100 --keys 100000 --duration 10)
run() {
    local name=$1
    shift
    echo "== $name: rcraft-loadtest ${common[*]} $*"
    "$bin" "${common[@]}" "$@" --json "$out/$name.json" 2>/dev/null |
        grep -E "throughput|writes|latency|CPU per write|lost|linearizable" || true
    echo "   load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run engine-1 --clients 1
run engine-16 --clients 16
run engine-64 --clients 64
run engine-256 --clients 256
run threads-256 --clients 256 --thread-per-client
run pipelined-16x16 --clients 16 --pipeline 16
baselines
echo "summaries in $out"
