#!/usr/bin/env python3
"""The write-path measurement of issue 13 (docs/BENCHMARKS.md, "Write path, round 2").

Starts 3 `rcraft serve` nodes on loopback (fsync on), then for each client count runs
`rcraft-loadtest --servers` (100 B values, 100k keys, write-only) and prints writes/s, p50,
p99 and the server CPU per acknowledged write summed over the 3 nodes (utime+stime from
/proc/PID/stat over the middle of the run, divided by the writes acknowledged in it), next
to the load generator's own CPU per write and how busy the machine's cores were over the
same window (so the floor on this machine reads off: cores / (server + generator + other)
CPU per write), and to two baselines measured just before each run: a raw 124 B pwrite + fdatasync p50 into a
preallocated file on the same disk, and a raw loopback TCP round trip p50 (128 B, Python on
both ends). Build first: cargo build --release -p rcraft -p rcraft-loadtest.

With --redis (needs `redis-server` and `redis-benchmark` on the PATH, Debian's redis-server and
redis-tools), each row is followed by a single Redis node with `appendonly yes`, `appendfsync
always` in a directory on the same disk, driven by `redis-benchmark -t set -d 100 -r 100000`
with as many clients and about as many requests as rcraft acknowledged in the same row, and the
ratio of rcraft's writes/s to Redis's (the issue's same-run baseline), then by the same Redis
without persistence: its CPU per write is what one TCP request and its answer cost a server
on this machine, the part of the leader's CPU per write no design removes.

usage: scripts/perf-write-path.py [--clients 1,16,64,256] [--duration 10] [--bin target/release]
       [--idle 5]   (also report each node's CPU while no client writes, in % of a core)
       [--redis]    (a Redis baseline after each row)
       [--perf-stat EVENTS]  (also count perf events, e.g. context-switches or a uprobe such
                    as probe_libc:malloc, per thread of the 3 nodes over the same window, and
                    print them per acknowledged write; needs `perf`)
       [--serve-args "--snapshot-log-bytes 4GiB ..."]   (more flags for every `rcraft serve`)
       [--memory]   (after each run, print each node's peak RSS (VmHWM) and its anonymous and
                     file-backed parts now (RssAnon, RssFile; the WAL's mapped segments are
                     file-backed), in MiB)
"""
import argparse, csv, io, json, os, shlex, shutil, socket, subprocess, sys, tempfile, time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def machine_busy_seconds():
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # minus idle, iowait


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


def redis_row(work, clients, requests, persist=True):
    """One redis-benchmark SET run against a fresh Redis, fsync-always (or, with
    persist=False, without any persistence: what one TCP request and answer plus a hash-table
    store cost, the floor of a server's CPU per write on this machine): (writes/s, p50 ms,
    p99 ms, server CPU per write in us)."""
    directory = tempfile.mkdtemp(prefix="redis-", dir=work)
    port = free_ports(1)[0]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         *(["--appendonly", "yes", "--appendfsync", "always"] if persist
           else ["--appendonly", "no"]),
         "--save", "", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        before = cpu_seconds(server.pid)
        bench = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "set", "-d", "100", "-r", "100000",
             "-c", str(clients), "-n", str(requests), "--csv", "--precision", "3"],
            capture_output=True, text=True, check=True)
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(directory, ignore_errors=True)
    rows = list(csv.DictReader(io.StringIO(bench.stdout)))
    row = rows[-1]
    return (float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]),
            1e6 * cpu / requests)


def print_counts(perf_output, writes, tids):
    """perf stat --per-thread -x, lines: "comm-tid,count,unit,event,...". Sums per thread
    role and node (threads are named rcraft-<role>-<node id>, cut to 15 characters by the
    kernel, so the node is taken from `tids`, thread id -> node number) and prints per write
    (task-clock in us of CPU per write)."""
    totals = {}
    for line in perf_output.splitlines():
        fields = line.split(",")
        if len(fields) < 4:
            continue
        try:
            count = float(fields[1])
        except ValueError:
            continue
        comm, _, tid = fields[0].rpartition("-")
        role = comm.split("-")[1] if comm.count("-") >= 1 else comm
        if role.startswith("consensu"):
            role = "consensus"
        elif role.startswith("storage"):
            role = "storage"
        node = tids.get(tid, "?")
        if fields[3].startswith("task-clock"):
            count *= 1000  # msec -> us
        key = (fields[3], f"{role} of node {node}")
        totals[key] = totals.get(key, 0) + count
    for (event, thread), count in sorted(totals.items()):
        if count:
            print(f"    {event} {thread}: {count / max(writes, 1):.2f} per write")
    by_event = {}
    for (event, _), count in totals.items():
        by_event[event] = by_event.get(event, 0) + count
    for event, count in sorted(by_event.items()):
        print(f"    {event} all threads of the 3 nodes: {count / max(writes, 1):.2f} per write")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="1,16,64,256")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--redis", action="store_true")
    ap.add_argument("--perf-stat", default="")
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
              "| load generator CPU/write | machine busy | raw fdatasync p50 "
              "| raw loopback RTT p50 | p50 / fdatasync |")
        print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
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
            load_before, busy_before = cpu_seconds(load.pid), machine_busy_seconds()
            stat = None
            if args.perf_stat:
                stat = subprocess.Popen(
                    ["perf", "stat", "--per-thread", "-x", ",", "-e", args.perf_stat,
                     "-p", ",".join(str(n.pid) for n in nodes), "--", "sleep",
                     str(window[1] - window[0] - 0.1)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(max(0.0, start + window[1] - time.monotonic()))
            cpu = [cpu_seconds(n.pid) - b for n, b in zip(nodes, before)]
            load_cpu = cpu_seconds(load.pid) - load_before
            busy = machine_busy_seconds() - busy_before
            tids = {t: str(i) for i, n in enumerate(nodes)
                    for t in os.listdir(f"/proc/{n.pid}/task")}
            counts = stat.communicate()[1] if stat else ""
            load.wait()
            summary = json.load(open(out))
            writes = sum(s["writes"] for s in summary["per_second"]
                         if window[0] < s["t_s"] <= window[1])
            lat = summary["latency_us"]
            span = window[1] - window[0]
            per_write = 1e6 * sum(cpu) / max(writes, 1)
            print(f"| {clients} | {summary['ops_per_s']:,.0f} | {lat['p50'] / 1e3:.3f} ms | "
                  f"{lat['p99'] / 1e3:.2f} ms | {per_write:,.0f} us | "
                  f"{' / '.join(f'{100 * c / span:.0f}' for c in cpu)} | "
                  f"{1e6 * load_cpu / max(writes, 1):,.0f} us | "
                  f"{100 * busy / span / os.cpu_count():.0f} % | {fsync_ms:.3f} ms | "
                  f"{rtt_us:.0f} us | {lat['p50'] / 1e3 / fsync_ms:.2f}x |", flush=True)
            if counts:
                print_counts(counts, writes, tids)
            if args.redis:
                requests = max(1000, int(summary["ops_per_s"] * args.duration))
                rps, r50, r99, rcpu = redis_row(work, clients, requests)
                print(f"| redis, {clients} | {rps:,.0f} | {r50:.3f} ms | {r99:.2f} ms | "
                      f"{rcpu:,.0f} us | rcraft / redis writes/s: "
                      f"**{summary['ops_per_s'] / rps:.2f}x** | | | | | |", flush=True)
                rps, r50, r99, rcpu = redis_row(work, clients, requests, persist=False)
                print(f"| redis, no persistence, {clients} | {rps:,.0f} | {r50:.3f} ms | "
                      f"{r99:.2f} ms | {rcpu:,.0f} us | (CPU floor of one request and answer) "
                      f"| | | | | |", flush=True)
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
