//! Snapshots across real `rcraft serve` processes on 127.0.0.1: a follower frozen while the
//! others compact catches up by snapshot; a transfer survives killing its receiver and then
//! its sender, continuing from the receiver's durable offset; `rcraft snapshot` compacts on
//! demand. Every wait is bounded; processes are killed and directories removed on drop.

use rcraft::client::{Client, ClientOptions};
use rcraft::wire::{NodeId, NodeStatus, Role};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rcraft");
/// Longest wait for any one condition (leader known, node caught up, transfer progress).
const WAIT_MAX: Duration = Duration::from_secs(20);

/// Three `rcraft serve` processes; killed (and resumed, if stopped) on drop.
struct Cluster {
    addresses: Vec<SocketAddr>,
    flags: Vec<String>,
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(flags: &[&str]) -> Cluster {
        // Ports the kernel just handed out and we released; a clash fails the test loudly.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        drop(listeners);
        let mut cluster = Cluster {
            addresses,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            nodes: vec![None, None, None],
            dir: tempfile::tempdir().unwrap(),
        };
        (0..3).for_each(|id| cluster.restart(id));
        cluster
    }

    fn servers(&self) -> String {
        let list: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        list.join(",")
    }

    fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.log"))
    }

    fn restart(&mut self, id: usize) {
        assert!(self.nodes[id].is_none(), "node {id} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--id", &id.to_string(), "--peers", &self.servers()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--log-level", "info"])
            .args(&self.flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[id] = Some(child);
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, id: usize, signal: libc::c_int) {
        let child = self.nodes[id].as_ref().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid with a valid signal has no memory effects.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    fn client(&self) -> Client {
        let options = ClientOptions {
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        Client::new(&self.addresses, options).unwrap()
    }

    fn status(&self, id: usize) -> Option<NodeStatus> {
        self.client().status_of(self.addresses[id]).ok()
    }

    fn wait_for_leader(&self) -> usize {
        let found = wait_for("a leader", || {
            (0..3).find(|&id| self.status(id).is_some_and(|s| s.role == Role::Leader))
        });
        found.unwrap_or_else(|| panic!("no leader; logs:\n{}", self.logs()))
    }

    /// Waits until node `id` applied everything the leader committed.
    fn wait_caught_up(&self, id: usize, leader: usize) {
        let done = wait_for("the node to catch up", || {
            let leader = self.status(leader)?;
            let node = self.status(id)?;
            (node.applied_index >= leader.commit_index).then_some(())
        });
        done.unwrap_or_else(|| panic!("node {id} did not catch up; logs:\n{}", self.logs()));
    }

    /// Runs `rcraft snapshot` for node `id`.
    fn snapshot(&self, id: usize) -> String {
        let output = Command::new(BIN)
            .args(["snapshot", "--servers", &self.servers(), "--id"])
            .arg(id.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "rcraft snapshot: {text}");
        text
    }

    fn log_of(&self, id: usize) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn logs(&self) -> String {
        (0..3)
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
    fn partial_bytes(&self, id: usize) -> u64 {
        let path = self
            .data_dir(id)
            .join("snapshots")
            .join("partial.snap.recv");
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 0..3 {
            if self.nodes[id].is_some() {
                self.signal(id, libc::SIGCONT);
            }
            self.kill(id);
        }
    }
}

/// Polls `check` until it gives a value or `WAIT_MAX` passes.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Option<T> {
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

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(size, b'0' + (i % 10) as u8);
    value
}

/// Writes keys `0..count` with values of `size` bytes from several clients at once.
fn write_keys(cluster: &Cluster, count: usize, size: usize) {
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

/// Makes node `id` the leader and reads every key through it: its state machine answers.
fn check_keys_through(cluster: &Cluster, id: usize, count: usize, size: usize) {
    let mut client = cluster.client();
    let moved = wait_for("leadership to move", || {
        let status = cluster.status(id)?;
        if status.role == Role::Leader {
            return Some(());
        }
        let _ = client.transfer_leader(NodeId(id as u64));
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    moved.unwrap_or_else(|| panic!("node {id} never led; logs:\n{}", cluster.logs()));
    let mut client = Client::new(&[cluster.addresses[id]], ClientOptions::default()).unwrap();
    for i in 0..count {
        assert_eq!(
            client.get(&key(i)).unwrap(),
            Some(value(i, size)),
            "key {i}"
        );
    }
}

#[test]
fn a_frozen_follower_catches_up_by_snapshot_after_the_others_compact() {
    let flags = ["--snapshot-every", "300", "--snapshot-retain-entries", "20"];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let frozen = (leader + 1) % 3;
    cluster.signal(frozen, libc::SIGSTOP);

    let (count, size) = (1200, 64);
    write_keys(&cluster, count, size);
    let live = (leader + 2) % 3;
    cluster.snapshot(leader);
    cluster.snapshot(live);
    let leader_status = cluster.status(leader).unwrap();
    assert!(leader_status.snapshot_index.0 >= 1000, "{leader_status:?}");

    cluster.signal(frozen, libc::SIGCONT);
    cluster.wait_caught_up(frozen, leader);
    let log = cluster.log_of(frozen);
    assert!(
        log.contains("state restored from the snapshot at index"),
        "the follower caught up without a snapshot:\n{log}"
    );
    check_keys_through(&cluster, frozen, count, size);
    cluster.kill(leader);
}

#[test]
fn a_transfer_resumes_after_its_receiver_and_then_its_sender_are_killed() {
    // Small chunks so the transfer of a few MB takes many round trips (each synced).
    let flags = [
        "--snapshot-every",
        "1000000",
        "--snapshot-retain-entries",
        "0",
        "--snapshot-chunk-bytes",
        "4096",
    ];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let receiver = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(receiver);
    let (count, size) = (1500, 2048);
    write_keys(&cluster, count, size);
    // Both live nodes snapshot at the same applied index: identical files (the store is
    // deterministic), so whichever of them leads can continue the same transfer.
    cluster.wait_caught_up(other, leader);
    let first = cluster.snapshot(leader);
    let second = cluster.snapshot(other);
    let describe = |line: &str| line.split_once(": ").map(|(_, s)| s.to_string());
    assert_eq!(describe(&first), describe(&second), "{first} / {second}");
    let size_of_snapshot: u64 = first
        .trim()
        .strip_suffix(" bytes")
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {first:?}"));
    assert!(size_of_snapshot > (count * size) as u64, "{first}");

    cluster.restart(receiver);
    let quarter = wait_for("a quarter of the snapshot", || {
        (cluster.partial_bytes(receiver) > size_of_snapshot / 4).then_some(())
    });
    quarter.unwrap_or_else(|| panic!("the transfer did not start; logs:\n{}", cluster.logs()));
    cluster.kill(receiver);
    let held = cluster.partial_bytes(receiver);
    assert!(
        held < size_of_snapshot,
        "killed too late: {held} bytes held"
    );
    cluster.restart(receiver);

    let half = wait_for("half of the snapshot", || {
        (cluster.partial_bytes(receiver) > size_of_snapshot / 2).then_some(())
    });
    half.unwrap_or_else(|| panic!("the transfer did not resume; logs:\n{}", cluster.logs()));
    cluster.kill(leader);
    cluster.wait_for_leader();
    cluster.wait_caught_up(receiver, other);

    let log = cluster.log_of(receiver);
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("receiving snapshot"))
        .collect();
    assert!(
        starts
            .iter()
            .filter(|l| l.ends_with("from offset 0"))
            .count()
            == 1,
        "the transfer started over: {starts:?}"
    );
    assert!(
        starts.iter().any(|l| !l.ends_with("from offset 0")),
        "the restarted receiver did not resume: {starts:?}"
    );
    assert!(log.contains("state restored from the snapshot at index"));
    cluster.restart(leader);
    check_keys_through(&cluster, receiver, count, size);
}
