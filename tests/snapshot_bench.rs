//! Snapshot benchmark (ignored by default; numbers go to docs/BENCHMARKS.md, "Snapshots"):
//! a fresh follower catches up on a large state by snapshot while the leader keeps taking
//! writes, and a node restarts from a large snapshot plus a short log.
//!
//! ```text
//! cargo build --release -p rcraft --bin rcraft
//! SNAP_BENCH_KEYS=1000000 SNAP_BENCH_VALUE=100 SNAP_BENCH_CHUNK=1048576 \
//!   cargo test --release -p rcraft --test snapshot_bench -- --ignored --nocapture
//! ```

mod snapshot_support;

use rcraft::client::{Client, ClientOptions};
use snapshot_support::{Cluster, wait_for};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Loads `count` keys of `size`-byte values with `writers` clients.
fn load(cluster: &Cluster, count: usize, size: usize, writers: usize) {
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let mut client = cluster.client();
                let value = vec![b'v'; size];
                for i in (w..count).step_by(writers) {
                    let key = format!("k{i:09}");
                    client.put(key.as_bytes(), &value).expect("put");
                }
            });
        }
    });
}

/// Writes continuously from `writers` clients until `stop`, counting acknowledged writes.
fn background_writes(servers: &[SocketAddr], writers: usize, stop: &AtomicBool, done: &AtomicU64) {
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let options = ClientOptions {
                    timeout: Duration::from_secs(10),
                    attempt_timeout: Duration::from_millis(500),
                    ..ClientOptions::default()
                };
                let mut client = Client::new(servers, options).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load-{w}-{}", i % 1000);
                    if client.put(key.as_bytes(), b"x").is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            });
        }
    });
}

/// Acknowledged writes per second over `window`.
fn rate_over(done: &AtomicU64, window: Duration) -> f64 {
    let before = done.load(Ordering::Relaxed);
    std::thread::sleep(window);
    (done.load(Ordering::Relaxed) - before) as f64 / window.as_secs_f64()
}

fn snapshot_size(line: &str) -> u64 {
    line.trim()
        .strip_suffix(" bytes")
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line:?}"))
}

#[test]
#[ignore = "benchmark: minutes of load; run explicitly in release"]
fn fresh_follower_catch_up_and_restart_from_a_large_snapshot() {
    let keys = setting("SNAP_BENCH_KEYS", 1_000_000);
    let value_bytes = setting("SNAP_BENCH_VALUE", 100);
    let writers = setting("SNAP_BENCH_WRITERS", 16);
    let chunk = setting("SNAP_BENCH_CHUNK", 1 << 20).to_string();
    let tail = setting("SNAP_BENCH_TAIL", 5000);
    let flags = [
        "--snapshot-every",
        "100000000",
        "--snapshot-chunk-bytes",
        &chunk,
    ];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let fresh = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(fresh);
    std::fs::remove_dir_all(cluster.data_dir(fresh)).unwrap();

    let started = Instant::now();
    load(&cluster, keys, value_bytes, writers);
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {keys} keys of {value_bytes} B in {load_secs:.1} s ({:.0} writes/s)",
        keys as f64 / load_secs
    );
    cluster.wait_caught_up(other, leader);
    let started = Instant::now();
    let line = cluster.snapshot(leader);
    let snapshot_secs = started.elapsed().as_secs_f64();
    cluster.snapshot(other);
    let bytes = snapshot_size(&line);
    let mb = bytes as f64 / 1e6;
    println!("leader snapshot: {mb:.1} MB written in {snapshot_secs:.2} s");

    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let servers = cluster.addresses.clone();
    std::thread::scope(|scope| {
        scope.spawn(|| background_writes(&servers, writers, &stop, &done));
        std::thread::sleep(Duration::from_secs(1));
        let before = rate_over(&done, Duration::from_secs(5));

        let started = Instant::now();
        let count_before = done.load(Ordering::Relaxed);
        cluster.restart(fresh);
        // Phases seen from outside: the partial file appears (first chunk arriving), goes
        // away (verified and renamed), then the node reports the snapshot applied.
        let (mut first_chunk, mut received) = (None, None);
        let installed = wait_for_long("the snapshot to be installed", || {
            let partial = cluster.partial_bytes(fresh) > 0;
            if partial && first_chunk.is_none() {
                first_chunk = Some(started.elapsed());
            }
            if !partial && first_chunk.is_some() && received.is_none() {
                received = Some(started.elapsed());
            }
            let status = cluster.status(fresh)?;
            (status.snapshot_index.0 > 0 && status.applied_index >= status.snapshot_index)
                .then_some(())
        });
        let install_secs = started.elapsed().as_secs_f64();
        if let (Some(first), Some(done)) = (first_chunk, received) {
            let transfer = (done - first).as_secs_f64();
            println!(
                "phases: partial file created after {:.2} s, whole file received {transfer:.2} s \
                 later ({:.0} MB/s), restored and reported {:.2} s after that",
                first.as_secs_f64(),
                mb / transfer,
                install_secs - done.as_secs_f64()
            );
        }
        let during = (done.load(Ordering::Relaxed) - count_before) as f64 / install_secs;
        stop.store(true, Ordering::Relaxed);
        installed.unwrap_or_else(|| panic!("no install; logs:\n{}", cluster.logs()));
        println!(
            "fresh follower installed {mb:.1} MB in {install_secs:.2} s ({:.0} MB/s); \
             leader writes/s before {before:.0}, during {during:.0} ({:.0} %)",
            mb / install_secs,
            100.0 * during / before.max(1.0)
        );
    });
    cluster.wait_caught_up(fresh, leader);

    // Restart: the fresh follower snapshots again (its log shrinks to the retained entries),
    // takes `tail` more writes, and restarts from the large snapshot plus that short log.
    cluster.snapshot(fresh);
    let tail_started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let servers = &cluster.addresses;
            scope.spawn(move || {
                let mut client = Client::new(servers, ClientOptions::default()).unwrap();
                for i in (w..tail).step_by(writers) {
                    client
                        .put(format!("tail-{i}").as_bytes(), b"t")
                        .expect("put");
                }
            });
        }
    });
    println!(
        "{tail} more writes in {:.1} s",
        tail_started.elapsed().as_secs_f64()
    );
    cluster.wait_caught_up(fresh, leader);
    let applied_before = cluster.status(fresh).unwrap().applied_index;
    cluster.kill(fresh);
    let started = Instant::now();
    cluster.restart(fresh);
    let mut probe = Client::new(&[cluster.addresses[fresh]], Default::default()).unwrap();
    let answered = wait_for_long("the restarted node to answer", || {
        probe.status_of(cluster.addresses[fresh]).ok()
    });
    let restart_secs = started.elapsed().as_secs_f64();
    let status = answered.expect("the restarted node answers");
    let reapplied = wait_for_long("the restarted node to re-apply its log", || {
        let status = probe.status_of(cluster.addresses[fresh]).ok()?;
        (status.applied_index >= applied_before).then_some(())
    });
    reapplied.expect("the log is applied again");
    println!(
        "restart with a {mb:.1} MB snapshot + {} log entries after it: status answered after \
         {restart_secs:.2} s, applied index back after {:.2} s",
        status.last_index.0 - status.snapshot_index.0,
        started.elapsed().as_secs_f64()
    );
}

/// Like `wait_for`, with the longer patience a large state needs.
fn wait_for_long<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Some(value) = wait_for(what, &mut check) {
            return Some(value);
        }
    }
    None
}
