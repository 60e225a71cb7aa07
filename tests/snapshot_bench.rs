//! Snapshot benchmark (ignored by default; numbers go to docs/BENCHMARKS.md, "Snapshots"):
//! a fresh follower catches up on a large state by snapshot while the leader keeps taking
//! writes, and a node restarts from a large snapshot plus a short log.
//!
//! ```text
//! cargo build --release -p rcraft --bin rcraft
//! SNAP_BENCH_KEYS=1000000 SNAP_BENCH_VALUE=1024 \
//!   cargo test --release -p rcraft --test snapshot_bench -- --ignored --nocapture
//! ```
//!
//! Settings (environment, all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SNAP_BENCH_KEYS` | 1 000 000 | keys loaded before the catch-up |
//! | `SNAP_BENCH_VALUE` | 100 | bytes per value (1024 with 1 M keys is ~1 GiB of state) |
//! | `SNAP_BENCH_LOADERS` | 8 | pipelined loading connections |
//! | `SNAP_BENCH_PIPELINE` | 64 | writes in flight per loading connection |
//! | `SNAP_BENCH_WRITERS` | 16 | blocking clients writing during the catch-up (the "normal level") |
//! | `SNAP_BENCH_CHUNK` | 1 MiB | `--snapshot-chunk-bytes` |
//! | `SNAP_BENCH_RATES` | `0` | comma-separated `snapshot_bytes_per_sec` values, one catch-up round each (0: the node's default) |
//! | `SNAP_BENCH_IN_FLIGHT` | node default | `snapshot_chunks_in_flight` |
//! | `SNAP_BENCH_TAIL` | 5000 | log entries after the snapshot in the restart measurement |
//! | `SNAP_BENCH_LOGS` | none | a directory to copy the nodes' logs to at the end |
//! | `SNAP_BENCH_PIN` | unset | set: during each catch-up the fresh follower runs on CPU 1 and everything else (the two live nodes, the writers) on CPU 0, as if the follower had a machine of its own; the "before" rate is measured pinned the same way |
//!
//! Each round after the first restarts the nodes with the round's settings (they restore from
//! their snapshots), with another node wiped, and times that node's catch-up.

mod snapshot_support;

use rcraft::client::ClientOptions;
use rcraft::kv::{KvCommand, KvResponse};
use rcraft::kv_client::KvClient;
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder,
    HANDSHAKE_BYTES, Handshake, encode_client_request,
};
use snapshot_support::{BIN, Cluster, wait_for};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Seconds of background writes before the "normal level" is measured.
const SETTLE_SECS: u64 = 3;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    keys: usize,
    value_bytes: usize,
    loaders: usize,
    pipeline: usize,
    writers: usize,
    chunk: usize,
    rates: Vec<u64>,
    in_flight: Option<u64>,
    tail: usize,
    pin: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let rates = std::env::var("SNAP_BENCH_RATES")
            .unwrap_or_else(|_| "0".to_string())
            .split(',')
            .map(|r| r.trim().parse().expect("SNAP_BENCH_RATES: numbers"))
            .collect();
        Settings {
            keys: setting("SNAP_BENCH_KEYS", 1_000_000),
            value_bytes: setting("SNAP_BENCH_VALUE", 100),
            loaders: setting("SNAP_BENCH_LOADERS", 8),
            pipeline: setting("SNAP_BENCH_PIPELINE", 64),
            writers: setting("SNAP_BENCH_WRITERS", 16),
            chunk: setting("SNAP_BENCH_CHUNK", 1 << 20),
            rates,
            in_flight: std::env::var("SNAP_BENCH_IN_FLIGHT")
                .ok()
                .and_then(|v| v.parse().ok()),
            tail: setting("SNAP_BENCH_TAIL", 5000),
            pin: std::env::var_os("SNAP_BENCH_PIN").is_some(),
        }
    }

    /// The node config file of a round: the throttle keys have no command-line flags.
    fn write_config(&self, path: &Path, rate: u64) {
        let mut text = String::new();
        if rate > 0 {
            text += &format!("snapshot_bytes_per_sec = {rate}\n");
        }
        if let Some(in_flight) = self.in_flight {
            text += &format!("snapshot_chunks_in_flight = {in_flight}\n");
        }
        std::fs::write(path, text).unwrap();
    }
}

/// One pipelined loading connection to the leader: writes `keys` (retrying refused ones)
/// with up to `depth` in flight, without sessions (a put can be repeated harmlessly).
fn load_connection(leader: SocketAddr, keys: Vec<usize>, value: &[u8], depth: usize) {
    let mut stream = TcpStream::connect(leader).expect("connect to the leader");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(&Handshake::client(rcraft::wire::CLUSTER_ID_UNKNOWN).encode())
        .unwrap();
    let mut theirs = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut theirs).unwrap();
    Handshake::decode(&theirs)
        .and_then(|h| h.check_cluster(rcraft::wire::CLUSTER_ID_UNKNOWN))
        .expect("handshake");
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut todo: VecDeque<usize> = keys.into();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let (mut next_id, mut out, mut buf) = (1u64, Vec::new(), vec![0u8; 256 << 10]);
    while !todo.is_empty() || !in_flight.is_empty() {
        while in_flight.len() < depth {
            let Some(key) = todo.pop_front() else { break };
            let command = KvCommand::Put {
                key: format!("k{key:09}").into_bytes(),
                value: value.to_vec(),
            };
            let body = ClientRequestBody::Write {
                session: None,
                command: command.encode(),
            };
            let request = ClientRequest {
                request_id: next_id,
                body,
            };
            encode_client_request(&request, &mut out).unwrap();
            in_flight.insert(next_id, key);
            next_id += 1;
        }
        if !out.is_empty() {
            stream.write_all(&out).unwrap();
            out.clear();
        }
        let n = stream.read(&mut buf).expect("read answers");
        assert!(n > 0, "the leader closed a loading connection");
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            let response = frame.to_client_response().unwrap();
            let Some(key) = in_flight.remove(&response.request_id) else {
                continue;
            };
            match response.body {
                ClientResponseBody::Ok { result, .. }
                    if KvResponse::decode(&result) == Ok(KvResponse::Done) => {}
                ClientResponseBody::Overloaded => {
                    todo.push_back(key);
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => panic!("loading write refused: {other:?}"),
            }
        }
    }
}

/// Loads `k000000000..` with `settings.value_bytes`-byte values through the leader.
fn load(leader: SocketAddr, settings: &Settings) {
    let value = vec![b'v'; settings.value_bytes];
    std::thread::scope(|scope| {
        for l in 0..settings.loaders {
            let keys: Vec<usize> = (l..settings.keys).step_by(settings.loaders).collect();
            let value = &value;
            scope.spawn(move || load_connection(leader, keys, value, settings.pipeline));
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
                let mut client = KvClient::new(servers, options).unwrap();
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

/// Peak resident memory (VmHWM) of node `id`, in MiB.
fn peak_rss_mib(cluster: &Cluster, id: usize) -> u64 {
    let pid = cluster.nodes[id].as_ref().expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// The restore duration of node `id`'s latest "state restored" log line, in seconds.
fn logged_restore_secs(cluster: &Cluster, id: usize) -> Option<f64> {
    let log = cluster.log_of(id);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("state restored from the snapshot"))?;
    // "... (N bytes in 1.234 s)", or "... in 1.234 s while it was received)" for a restore
    // that overlapped the transfer (it then lasts about as long as the transfer).
    let (_, after) = line.rsplit_once(" bytes in ")?;
    after.split_once(" s")?.0.parse().ok()
}

/// Kills every node, wipes `fresh` and restarts the other two (picking up a new config
/// file; they restore from their snapshots), then waits for a leader among them and for both
/// to have applied what they committed. `fresh` is wiped before any leader of the new term
/// sees it: a leader that saw it caught up would keep its match index and never probe below
/// it (a lost disk under the same node id is outside Raft's model).
fn restart_without(cluster: &mut Cluster, fresh: usize) -> usize {
    let started = Instant::now();
    (0..3).for_each(|id| cluster.kill(id));
    std::fs::remove_dir_all(cluster.data_dir(fresh)).unwrap();
    (0..3)
        .filter(|&id| id != fresh)
        .for_each(|id| cluster.restart(id));
    let leader = cluster.wait_for_leader();
    (0..3)
        .filter(|&id| id != fresh)
        .for_each(|id| cluster.wait_caught_up(id, leader));
    println!(
        "two nodes restarted from their snapshots in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    leader
}

/// `rcraft members ARGS` against the cluster, not waited for.
fn members(cluster: &Cluster, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("members")
        .args(args)
        .args(["--servers", &cluster.servers(), "--timeout-ms", "600000"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rcraft members")
}

fn members_done(child: Child, what: &str) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "rcraft members {what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `fresh` (stopped, its directory removed) as a new member: a node that comes back
/// with a new data dir under its old id is refused (issue 17's incarnation check), so, as
/// OPERATIONS.md says, it is started with `--join` and added again (`members add`, which
/// waits until it has caught up and promotes it; returned, not waited for).
fn start_as_new_member(cluster: &mut Cluster, fresh: usize) -> Child {
    let flags = cluster.flags.clone();
    cluster.flags.push("--join".to_string());
    cluster.restart(fresh);
    cluster.flags = flags;
    members(cluster, &["add", &fresh.to_string()])
}

/// One catch-up round: snapshot the live nodes, start `fresh` (stopped, its directory
/// removed; removed from the membership first) while writers keep the leader busy, and time
/// its phases.
fn catch_up_round(cluster: &mut Cluster, settings: &Settings, leader: usize, fresh: usize) {
    let other = 3 - leader - fresh;
    cluster.wait_caught_up(other, leader);
    members_done(members(cluster, &["remove", &fresh.to_string()]), "remove");
    if settings.pin {
        cluster.cpus[fresh] = Some("1".to_string());
        cluster.pin(leader, "0");
        cluster.pin(other, "0");
        Cluster::pin_process(std::process::id(), "0");
        println!(
            "pinned: node {fresh} (fresh) on CPU 1; nodes {leader}, {other} and the writers on CPU 0"
        );
    }
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
    let writers = settings.writers;
    std::thread::scope(|scope| {
        scope.spawn(|| background_writes(&servers, writers, &stop, &done));
        // Settle first: right after a large snapshot the live nodes are still compacting
        // (freeing the log's memory, removing WAL segments), which depresses the rate.
        std::thread::sleep(Duration::from_secs(SETTLE_SECS));
        let before = rate_over(&done, Duration::from_secs(5));

        let started = Instant::now();
        let count_before = done.load(Ordering::Relaxed);
        let added = start_as_new_member(cluster, fresh);
        // Phases seen from outside: the partial file appears (first chunk arriving), goes
        // away (verified and renamed), then the node reports the snapshot applied.
        // Each phase boundary with the acknowledged-write count at that moment.
        let (mut first_chunk, mut received) = (None, None);
        let mark = || (started.elapsed(), done.load(Ordering::Relaxed));
        let installed = wait_for_long("the snapshot to be installed", || {
            let partial = cluster.partial_bytes(fresh) > 0;
            if partial && first_chunk.is_none() {
                first_chunk = Some(mark());
            }
            if !partial && first_chunk.is_some() && received.is_none() {
                received = Some(mark());
            }
            let status = cluster.status(fresh)?;
            (status.snapshot_index.0 > 0 && status.applied_index >= status.snapshot_index)
                .then_some(())
        });
        let end = mark();
        let install_secs = end.0.as_secs_f64();
        let during = (end.1 - count_before) as f64 / install_secs;
        stop.store(true, Ordering::Relaxed);
        installed.unwrap_or_else(|| panic!("no install; logs:\n{}", cluster.logs()));
        members_done(added, "add");
        let restore = logged_restore_secs(cluster, fresh);
        let percent = |from: (Duration, u64), to: (Duration, u64)| {
            let rate = (to.1 - from.1) as f64 / (to.0 - from.0).as_secs_f64().max(1e-3);
            100.0 * rate / before.max(1.0)
        };
        if let (Some(first), Some(received)) = (first_chunk, received) {
            let transfer = (received.0 - first.0).as_secs_f64();
            println!(
                "phases: first chunk after {:.2} s, whole file received {transfer:.2} s later \
                 ({:.0} MB/s), restored in {} s, reported {:.2} s after the file was received; \
                 leader writes during the transfer {:.0} %, after it {:.0} % of before",
                first.0.as_secs_f64(),
                mb / transfer,
                restore.map_or("?".to_string(), |r| format!("{r:.2}")),
                install_secs - received.0.as_secs_f64(),
                percent(first, received),
                percent(received, end)
            );
        }
        println!(
            "fresh follower installed {mb:.1} MB in {install_secs:.2} s ({:.0} MB/s); \
             leader writes/s before {before:.0}, during {during:.0} ({:.0} %)",
            mb / install_secs,
            100.0 * during / before.max(1.0)
        );
    });
    cluster.wait_caught_up(fresh, leader);
    let rss: Vec<String> = (0..3)
        .map(|id| format!("node {id}: {} MiB", peak_rss_mib(cluster, id)))
        .collect();
    println!("peak RSS (VmHWM) {}", rss.join(", "));
    print_floors(cluster.dir.path(), bytes);
    if settings.pin {
        cluster.cpus[fresh] = None;
        for id in 0..3 {
            cluster.pin(id, "0,1");
        }
        Cluster::pin_process(std::process::id(), "0,1");
    }
}

/// The same run's baselines for moving `bytes` without rcraft, measured after the catch-up
/// (while the follower still holds its memory, so they get memory as cold as it got):
/// touching that much fresh memory (a restored state needs at least its size in heap),
/// writing and syncing a file of that size (the received snapshot), and loopback TCP.
fn print_floors(dir: &Path, bytes: u64) {
    let len = usize::try_from(bytes).expect("snapshot fits in memory");
    let mb = bytes as f64 / 1e6;
    let started = Instant::now();
    let memory = vec![0x5au8; len];
    let memory_secs = started.elapsed().as_secs_f64();
    drop(memory);
    let file_secs = write_and_sync_secs(&dir.join("floor.bin"), len);
    let tcp_secs = loopback_secs(len);
    println!(
        "baselines for {mb:.1} MB in this run: fresh memory touched in {memory_secs:.2} s \
         ({:.0} MB/s), a file written and synced in {file_secs:.2} s ({:.0} MB/s), loopback \
         TCP in {tcp_secs:.2} s ({:.0} MB/s)",
        mb / memory_secs,
        mb / file_secs,
        mb / tcp_secs
    );
}

/// Seconds to write `len` bytes to a new file at `path` in 1 MiB blocks and sync it.
fn write_and_sync_secs(path: &Path, len: usize) -> f64 {
    let block = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::File::create(path).unwrap();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        file.write_all(&block[..n]).unwrap();
        left -= n;
    }
    file.sync_all().unwrap();
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    secs
}

/// Seconds to send `len` bytes over one 127.0.0.1 TCP connection in 1 MiB writes.
fn loopback_secs(len: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while total < len {
            match stream.read(&mut buf).unwrap() {
                0 => break,
                n => total += n,
            }
        }
        total
    });
    let block = vec![0xa5u8; 1 << 20];
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).unwrap();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        stream.write_all(&block[..n]).unwrap();
        left -= n;
    }
    assert_eq!(reader.join().unwrap(), len, "the reader got every byte");
    started.elapsed().as_secs_f64()
}

/// The restart measurement: `fresh` snapshots again (its log shrinks to the retained
/// entries), takes `tail` more writes, and restarts from the large snapshot plus that log.
fn restart_from_large_snapshot(cluster: &mut Cluster, settings: &Settings, fresh: usize) {
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(fresh, leader);
    let line = cluster.snapshot(fresh);
    let mb = snapshot_size(&line) as f64 / 1e6;
    let (writers, tail) = (settings.writers, settings.tail);
    let tail_started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let servers = &cluster.addresses;
            scope.spawn(move || {
                let mut client = KvClient::new(servers, ClientOptions::default()).unwrap();
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
    let mut probe = KvClient::new(&[cluster.addresses[fresh]], Default::default()).unwrap();
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
         {restart_secs:.2} s (restore {} s), applied index back after {:.2} s, peak RSS {} MiB",
        status.last_index.0 - status.snapshot_index.0,
        logged_restore_secs(cluster, fresh).map_or("?".to_string(), |r| format!("{r:.2}")),
        started.elapsed().as_secs_f64(),
        peak_rss_mib(cluster, fresh)
    );
}

#[test]
#[ignore = "benchmark: minutes of load; run explicitly in release"]
fn fresh_follower_catch_up_and_restart_from_a_large_snapshot() {
    let settings = Settings::from_env();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("bench.conf");
    settings.write_config(&config, settings.rates[0]);
    let chunk = settings.chunk.to_string();
    let config_arg = config.display().to_string();
    let flags = [
        "--snapshot-every",
        "100000000",
        "--snapshot-log-bytes",
        "1099511627776",
        "--snapshot-chunk-bytes",
        &chunk,
        "--config",
        &config_arg,
    ];
    let mut cluster = Cluster::start(&flags);
    let mut leader = cluster.wait_for_leader();
    let mut fresh = (leader + 1) % 3;
    cluster.kill(fresh);
    std::fs::remove_dir_all(cluster.data_dir(fresh)).unwrap();

    let started = Instant::now();
    load(cluster.addresses[leader], &settings);
    let load_secs = started.elapsed().as_secs_f64();
    println!(
        "loaded {} keys of {} B in {load_secs:.1} s ({:.0} writes/s, {} connections x {} in \
         flight)",
        settings.keys,
        settings.value_bytes,
        settings.keys as f64 / load_secs,
        settings.loaders,
        settings.pipeline
    );
    for (round, &rate) in settings.rates.iter().enumerate() {
        if round > 0 {
            settings.write_config(&config, rate);
            fresh = (fresh + 1) % 3;
            leader = restart_without(&mut cluster, fresh);
        }
        let rate_text = match rate {
            0 => "node default".to_string(),
            rate => format!("{:.0} MB/s", rate as f64 / 1e6),
        };
        println!("--- round {round}: snapshot_bytes_per_sec {rate_text}");
        catch_up_round(&mut cluster, &settings, leader, fresh);
    }
    restart_from_large_snapshot(&mut cluster, &settings, fresh);
    if let Ok(dir) = std::env::var("SNAP_BENCH_LOGS") {
        std::fs::create_dir_all(&dir).unwrap();
        for id in 0..3 {
            let to = Path::new(&dir).join(format!("node{id}.log"));
            std::fs::copy(cluster.log_path(id), to).unwrap();
        }
    }
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
