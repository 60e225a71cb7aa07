#!/usr/bin/env python3
"""The write-path measurement of issue 13 (docs/BENCHMARKS.md, "Write path, round 2").

Starts 3 `rcraft serve` nodes on loopback (fsync on), then for each client count runs
`rcraft-loadtest --servers` (100 B values, 100k keys, write-only) and prints writes/s, p50,
p99 and the server CPU per acknowledged write summed over the 3 nodes (utime+stime from
/proc/PID/stat over the middle of the run, divided by the writes acknowledged in it), next
to two baselines measured just before each run: a raw 124 B pwrite + fdatasync p50 into a
preallocated file on the same disk, and a raw loopback TCP round trip p50 (128 B, Python on
both ends). Build first: cargo build --release -p rcraft -p rcraft-loadtest.

usage: scripts/perf-write-path.py [--clients 1,16,64,256] [--duration 10] [--bin target/release]
       [--idle 5]   (also report each node's CPU while no client writes, in % of a core)
       [--serve-args "--snapshot-log-bytes 4GiB ..."]   (more flags for every `rcraft serve`)
       [--memory]   (after each run, print each node's peak RSS (VmHWM) and its anonymous and
                     file-backed parts now (RssAnon, RssFile; the WAL's mapped segments are
                     file-backed), in MiB)
"""
import argparse, json, os, shlex, socket, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def memory_mib(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


def p50(samples):
    return sorted(samples)[len(samples) // 2]


def raw_fdatasync_p50_ms(directory, n=400):
    path = os.path.join(directory, "fsync-floor")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, b"\0" * (n * 124), 0)
    os.fsync(fd)
    times = []
    for i in range(n):
        start = time.perf_counter()
        os.pwrite(fd, b"x" * 124, i * 124)
        os.fdatasync(fd)
        times.append(time.perf_counter() - start)
    os.close(fd)
    os.unlink(path)
    return p50(times) * 1e3


ECHO = """
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = c.recv(128, socket.MSG_WAITALL)
    if not b: break
    c.sendall(b)
"""


def raw_loopback_rtt_p50_us(n=3000):
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    port = int(echo.stdout.readline())
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times, frame = [], b"p" * 128
    for _ in range(n):
        start = time.perf_counter()
        s.sendall(frame)
        s.recv(128, socket.MSG_WAITALL)
        times.append(time.perf_counter() - start)
    s.close()
    echo.wait()
    return p50(times[n // 10:]) * 1e6


def free_ports(k):
    socks = [socket.socket() for _ in range(k)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,16,64,256")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--serve-args", default="")
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rcraft-perf-")
    servers = ",".join(f"127.0.0.1:{p}" for p in free_ports(3))
    nodes = []
    for i in range(3):
        log = open(os.path.join(work, f"node{i}.log"), "w")
        nodes.append(subprocess.Popen(
            [f"{args.bin}/rcraft", "serve", "--id", str(i), "--peers", servers,
             "--data-dir", os.path.join(work, f"n{i}"), "--election-timeout-ms", "150-300",
             "--heartbeat-ms", "50", *shlex.split(args.serve_args)], stdout=log, stderr=log))
    try:
        for _ in range(100):
            status = subprocess.run([f"{args.bin}/rcraft", "status", "--servers", servers],
                                    capture_output=True)
            if status.returncode == 0:
                break
            time.sleep(0.1)
        print(f"machine: nproc {os.cpu_count()}, kernel {os.uname().release}, "
              f"load {open('/proc/loadavg').read().split()[:3]}, data in {work}")
        if args.idle:
            before = [cpu_seconds(n.pid) for n in nodes]
            time.sleep(args.idle)
            idle = [100 * (cpu_seconds(n.pid) - b) / args.idle for n, b in zip(nodes, before)]
            print("idle CPU per node (% of a core): " + ", ".join(f"{x:.1f}" for x in idle))
        print("| clients | writes/s | p50 | p99 | server CPU/write (3 nodes) | per node CPU % "
              "| raw fdatasync p50 | raw loopback RTT p50 | p50 / fdatasync |")
        print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
        for clients in [int(c) for c in args.clients.split(",")]:
            fsync_ms = raw_fdatasync_p50_ms(work)
            rtt_us = raw_loopback_rtt_p50_us()
            out = os.path.join(work, f"clients-{clients}.json")
            load = subprocess.Popen(
                [f"{args.bin}/rcraft-loadtest", "--servers", servers, "--clients", str(clients),
                 "--duration", str(args.duration), "--value-size", "100", "--keys", "100000",
                 "--json", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = time.monotonic()
            # The middle of the run: skip connecting and warm-up, stop before the read-back.
            window = (2.0, args.duration - 1.0)
            time.sleep(window[0])
            before = [cpu_seconds(n.pid) for n in nodes]
            time.sleep(max(0.0, start + window[1] - time.monotonic()))
            cpu = [cpu_seconds(n.pid) - b for n, b in zip(nodes, before)]
            load.wait()
            summary = json.load(open(out))
            writes = sum(s["writes"] for s in summary["per_second"]
                         if window[0] < s["t_s"] <= window[1])
            lat = summary["latency_us"]
            span = window[1] - window[0]
            per_write = 1e6 * sum(cpu) / max(writes, 1)
            print(f"| {clients} | {summary['ops_per_s']:,.0f} | {lat['p50'] / 1e3:.3f} ms | "
                  f"{lat['p99'] / 1e3:.2f} ms | {per_write:,.0f} us | "
                  f"{' / '.join(f'{100 * c / span:.0f}' for c in cpu)} | {fsync_ms:.3f} ms | "
                  f"{rtt_us:.0f} us | {lat['p50'] / 1e3 / fsync_ms:.2f}x |", flush=True)
            if args.memory:
                for i, n in enumerate(nodes):
                    m = memory_mib(n.pid)
                    print(f"  node {i}: VmHWM {m['VmHWM']:.1f} MiB, RssAnon {m['RssAnon']:.1f} "
                          f"MiB, RssFile {m['RssFile']:.1f} MiB", flush=True)
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
