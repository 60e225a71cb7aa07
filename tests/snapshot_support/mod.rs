//! Shared helpers of the multi-process tests (snapshots, membership) and the snapshot
//! benchmark: a cluster of `rcraft serve` processes on 127.0.0.1 (three unless asked
//! otherwise; killed, and resumed if stopped, on drop), bounded waits and parallel writers.

#![allow(dead_code)] // Each test file uses a different subset.

#[path = "../cluster_support/mod.rs"]
mod cluster_support;

use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::wire::{NodeStatus, Role};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rcraft");
/// Longest wait for any one condition (leader known, node caught up, transfer progress).
pub const WAIT_MAX: Duration = Duration::from_secs(20);

/// `rcraft serve` processes, one per address; killed (and resumed, if stopped) on drop.
pub struct Cluster {
    pub addresses: Vec<SocketAddr>,
    pub flags: Vec<String>,
    pub nodes: Vec<Option<Child>>,
    pub dir: tempfile::TempDir,
    /// Per node, the CPUs (a `taskset` list such as "1") it is started on; `None`: any.
    pub cpus: Vec<Option<String>>,
    /// Per node, environment variables it is started with (fault injection).
    pub envs: Vec<Vec<(String, String)>>,
}

impl Cluster {
    pub fn start(flags: &[&str]) -> Cluster {
        Cluster::start_nodes(3, flags)
    }

    /// `n` nodes, each started with `flags` after `--id`, `--peers`, `--data-dir`.
    pub fn start_nodes(n: usize, flags: &[&str]) -> Cluster {
        Cluster::start_nodes_with_env(n, flags, &[])
    }

    /// As [`Cluster::start_nodes`], node `id` of each `(id, name, value)` of `env` with that
    /// environment variable set (at every start).
    pub fn start_nodes_with_env(n: usize, flags: &[&str], env: &[(usize, &str, &str)]) -> Cluster {
        let mut cluster = Cluster::unstarted(n, flags);
        for &(id, name, value) in env {
            cluster.envs[id].push((name.to_string(), value.to_string()));
        }
        (0..n).for_each(|id| cluster.restart(id));
        cluster
    }

    /// `n` nodes' addresses and data dirs, none started yet (`restart` starts one).
    pub fn unstarted(n: usize, flags: &[&str]) -> Cluster {
        // Ports the kernel just handed out and we released; a clash fails the test loudly.
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        drop(listeners);
        Cluster {
            addresses,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            nodes: (0..n).map(|_| None).collect(),
            dir: tempfile::tempdir().unwrap(),
            cpus: vec![None; n],
            envs: vec![Vec::new(); n],
        }
    }

    pub fn servers(&self) -> String {
        let list: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        list.join(",")
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.log"))
    }

    pub fn restart(&mut self, id: usize) {
        assert!(self.nodes[id].is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .unwrap();
        let mut command = match &self.cpus[id] {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", cpus, BIN]);
                taskset
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["serve", "--id", &id.to_string(), "--peers", &self.servers()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--log-level", "info"])
            .args(&self.flags)
            .env_remove("RUST_LOG")
            .envs(self.envs[id].iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[id] = Some(child);
    }

    /// Moves every thread of process `pid` onto `cpus` (a `taskset` list).
    pub fn pin_process(pid: u32, cpus: &str) {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("taskset runs");
        assert!(status.success(), "taskset -a -p -c {cpus} {pid}: {status}");
    }

    /// Moves every thread of running node `id` onto `cpus`.
    pub fn pin(&self, id: usize, cpus: &str) {
        let pid = self.nodes[id].as_ref().expect("node is running").id();
        Cluster::pin_process(pid, cpus);
    }

    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, id: usize, signal: libc::c_int) {
        let child = self.nodes[id].as_ref().expect("node is running");
        cluster_support::signal_child(child, signal);
    }

    pub fn client(&self) -> KvClient {
        let options = ClientOptions {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        KvClient::new(&self.addresses, options).unwrap()
    }

    pub fn status(&self, id: usize) -> Option<NodeStatus> {
        self.client().status_of(self.addresses[id]).ok()
    }

    pub fn wait_for_leader(&self) -> usize {
        let found = wait_for("a leader", || {
            (0..self.nodes.len())
                .find(|&id| self.status(id).is_some_and(|s| s.role == Role::Leader))
        });
        found.unwrap_or_else(|| panic!("no leader; logs:\n{}", self.logs()))
    }

    /// Waits until node `id` applied everything the leader committed.
    pub fn wait_caught_up(&self, id: usize, leader: usize) {
        let done = wait_for("the node to catch up", || {
            let leader = self.status(leader)?;
            let node = self.status(id)?;
            (node.applied_index >= leader.commit_index).then_some(())
        });
        done.unwrap_or_else(|| panic!("node {id} did not catch up; logs:\n{}", self.logs()));
    }

    /// Runs `rcraft snapshot` for node `id`.
    pub fn snapshot(&self, id: usize) -> String {
        let output = Command::new(BIN)
            .args(["snapshot", "--servers", &self.servers(), "--id"])
            .arg(id.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "rcraft snapshot: {text}");
        text
    }

    pub fn log_of(&self, id: usize) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|id| {
                let text = self.log_of(id);
                let tail: Vec<&str> = text.lines().rev().take(25).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node {id}\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Bytes of node `id`'s partially received snapshot file (0 when there is none).
    pub fn partial_bytes(&self, id: usize) -> u64 {
        let path = self
            .data_dir(id)
            .join("snapshots")
            .join("partial.snap.recv");
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 0..self.nodes.len() {
            if self.nodes[id].is_some() {
                self.signal(id, libc::SIGCONT);
            }
            self.kill(id);
        }
    }
}

/// Polls `check` until it gives a value or `WAIT_MAX` passes.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline {
        if let Some(value) = check() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("gave up waiting for {what}");
    None
}

pub fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

pub fn value(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(size, b'0' + (i % 10) as u8);
    value
}

/// Writes keys `0..count` with values of `size` bytes from several clients at once.
pub fn write_keys(cluster: &Cluster, count: usize, size: usize) {
    let writers = 8;
    std::thread::scope(|scope| {
        for w in 0..writers {
            scope.spawn(move || {
                let mut client = cluster.client();
                for i in (w..count).step_by(writers) {
                    client.put(&key(i), &value(i, size)).expect("put");
                }
            });
        }
    });
}

// Damage as bit rot would make it, on a stopped node's data dir (recovery_damage, cli_doctor).

/// The newest WAL segment of node `id` (the one being written).
pub fn active_segment(cluster: &Cluster, id: usize) -> PathBuf {
    let dir = cluster.data_dir(id).join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Byte offsets of the records in a segment (storage/FORMAT.md §1: a 32-byte header, then
/// records whose first four bytes are their length, 0 at the end).
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 32;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offsets.push(at);
        at += len;
    }
    offsets
}

/// Which record of the segment to damage.
#[derive(Clone, Copy, Debug)]
pub enum Damage {
    /// The last record: it was synced, so this is a loss, not a torn write.
    LastRecord,
    /// A record in the middle of the segment: it and everything after it are cut.
    MiddleRecord,
}

/// Flips one byte inside a record of `segment`, as bit rot would (its term field, so the
/// record's checksum no longer matches).
pub fn damage(segment: &Path, which: Damage) {
    let bytes = std::fs::read(segment).unwrap();
    let offsets = record_offsets(&bytes);
    assert!(offsets.len() > 4, "a few records to damage: {offsets:?}");
    let record = match which {
        Damage::LastRecord => offsets[offsets.len() - 1],
        Damage::MiddleRecord => offsets[offsets.len() / 2],
    };
    let at = record + 16;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[bytes[at] ^ 0x04], at as u64).unwrap();
}

/// Flips a byte of the term in hard-state slot `slot` of node `id` (storage/FORMAT.md §2).
pub fn damage_hard_state_slot(cluster: &Cluster, id: usize, slot: usize) {
    let path = cluster.data_dir(id).join("hard_state");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 1024, "two 512-byte slots");
    let at = slot * 512 + 16;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[bytes[at] ^ 0x01], at as u64).unwrap();
}
