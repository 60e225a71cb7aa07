#!/usr/bin/env python3
"""Instructions per entry on the entry path over 3 nodes (`make bench-instructions`).

Builds `benches/entry_path.rs` (release, with the bench profile), runs it under
`valgrind --tool=callgrind` and prints each stage's inclusive instruction count divided by the
entries, summed over the nodes that run it, and the 3 nodes' total. Instruction counts are
deterministic for one binary: the A/B that a shared, noisy machine does not move.

Without valgrind it says so and runs the bench plainly (wall-clock nanoseconds, noisy).
ENTRY_PATH_BATCHES sets the batches (default 200 of 256 entries).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Stage function -> how many of the 3 nodes run it per batch (see benches/entry_path.rs).
STAGES = [
    ("leader_make_entries", "leader: make the entries (Entry::command: the record)", 1),
    ("wal_append", "WAL append (append_encoded), each node", 3),
    ("frame_encode", "leader: AppendRequest frame, one per follower", 2),
    ("follower_decode", "follower: frame decode + CRC check + entries", 2),
    ("apply", "apply: command bytes to the state machine, each node", 3),
]


def build():
    out = subprocess.run(
        ["cargo", "bench", "-p", "rcraft", "--bench", "entry_path", "--no-run",
         "--message-format=json"],
        check=True, stdout=subprocess.PIPE, text=True)
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "entry_path":
            return msg["executable"]
    sys.exit("bench-instructions: cargo built no entry_path executable")


def inclusive_counts(callgrind_out):
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", callgrind_out],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    counts, total = {}, None
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
        if not m:
            continue
        ir, what = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in what:
            total = ir
            continue
        # A function's inclusive count is listed once under its own source file and again,
        # in parts, under each file whose code was inlined into it: the largest is the whole.
        s = re.search(r"entry_path::stage_(\w+)", what)
        if s:
            counts[s.group(1)] = max(counts.get(s.group(1), 0), ir)
    return counts, total


def main():
    exe = build()
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("bench-instructions: valgrind (callgrind) is missing, so no instruction counts; "
              "install it (Debian: apt-get install valgrind). Running the bench without it: "
              "wall-clock times, noisy on a shared machine.")
        subprocess.run([exe], check=True)
        return
    with tempfile.TemporaryDirectory(prefix="rcraft-callgrind-") as work:
        out_file = os.path.join(work, "callgrind.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", exe],
            check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = re.search(r"entries (\d+)", run.stdout)
        if not m:
            sys.exit(f"bench-instructions: no entry count in the bench's output:\n{run.stdout}")
        entries = int(m.group(1))
        counts, total = inclusive_counts(out_file)
    missing = [name for name, _, _ in STAGES if name not in counts]
    if missing:
        sys.exit(f"bench-instructions: no callgrind count for stage(s) {missing}")
    print(run.stdout.splitlines()[0].split(", entries")[0])
    print("instructions per entry (callgrind, inclusive; summed over the nodes that run a stage):")
    path = 0
    for name, label, nodes in STAGES:
        per_entry = counts[name] / entries
        path += per_entry
        print(f"  {label:<56} {per_entry:>8,.0f}  ({nodes} x {per_entry / nodes:,.0f})")
    print(f"  {'3 nodes, the entry path':<56} {path:>8,.0f}")
    if total is not None:
        print(f"  {'whole program (setup, WALs opened, checks)':<56} {total / entries:>8,.0f}")


if __name__ == "__main__":
    main()
