//! Shared helpers of the in-process cluster tests: a journal state machine whose state the
//! test can inspect, free loopback ports, and bounded waits.

#![allow(dead_code)] // Each test file uses a different subset.

use rcraft::node::{Error, Node, NodeHandle};
use rcraft::wire::{LogIndex, NodeId, Role, Session};
use rcraft::{Config, StateMachine};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The commands a journal applied, shared with the test.
pub type Shared = Arc<Mutex<Vec<Vec<u8>>>>;

/// Records every command; `query` answers the number of commands and the last one.
pub struct Journal {
    pub commands: Shared,
}

impl StateMachine for Journal {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
        self.commands.lock().unwrap().push(command.to_vec());
        index.0.to_le_bytes().to_vec()
    }

    fn query(&self, query: &[u8]) -> Vec<u8> {
        let commands = self.commands.lock().unwrap();
        match query {
            b"count" => (commands.len() as u64).to_le_bytes().to_vec(),
            _ => commands.last().cloned().unwrap_or_default(),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let commands = self.commands.lock().unwrap();
        out.write_all(&(commands.len() as u64).to_le_bytes())?;
        for command in commands.iter() {
            out.write_all(&(command.len() as u32).to_le_bytes())?;
            out.write_all(command)?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let mut restored = Vec::new();
        for _ in 0..u64::from_le_bytes(word) {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let mut command = vec![0u8; u32::from_le_bytes(len) as usize];
            input.read_exact(&mut command)?;
            restored.push(command);
        }
        *self.commands.lock().unwrap() = restored;
        Ok(())
    }
}

/// `n` loopback addresses with ports that were free a moment ago.
pub fn free_addresses(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// One node of a test cluster: its handle (None while stopped) and its journal.
pub struct TestNode {
    pub config: Config,
    pub handle: Option<NodeHandle>,
    pub journal: Shared,
}

impl TestNode {
    pub fn handle(&self) -> &NodeHandle {
        self.handle.as_ref().expect("node is running")
    }

    /// Starts (or restarts) the node on its data directory with a fresh, empty journal that
    /// recovery fills.
    pub fn start(&mut self) {
        self.journal = Shared::default();
        let machine = Journal {
            commands: self.journal.clone(),
        };
        self.handle = Some(Node::start(self.config.clone(), machine).expect("node starts"));
    }

    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().expect("clean shutdown");
        }
    }

    pub fn applied(&self) -> Vec<Vec<u8>> {
        self.journal.lock().unwrap().clone()
    }
}

/// A cluster of `n` nodes with data under `dir`, configured for fast elections.
pub fn cluster(n: usize, dir: &Path, snapshot_every: u64) -> Vec<TestNode> {
    let servers = free_addresses(n);
    (0..n)
        .map(|i| {
            let data_dir: PathBuf = dir.join(format!("node{i}"));
            let mut config = Config::new(NodeId(i as u64), servers.clone(), data_dir);
            config.snapshot_every = snapshot_every;
            config.rpc_timeout_ms = 3000;
            TestNode {
                config,
                handle: None,
                journal: Shared::default(),
            }
        })
        .collect()
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until exactly one running node is leader and every running node knows it.
pub fn wait_for_leader(nodes: &[TestNode]) -> usize {
    let mut leader = None;
    wait_until(Duration::from_secs(20), "a leader", || {
        let statuses: Vec<_> = nodes
            .iter()
            .filter_map(|n| n.handle.as_ref())
            .filter_map(|h| h.status().ok())
            .collect();
        let leaders: Vec<_> = statuses.iter().filter(|s| s.role == Role::Leader).collect();
        if leaders.len() != 1 {
            return false;
        }
        let id = leaders[0].id;
        leader = Some(id.0 as usize);
        statuses.iter().all(|s| s.leader == Some(id))
    });
    leader.expect("leader found")
}

/// Proposes through whichever node is leader, retrying across elections (bounded). Every
/// attempt carries the same session, registered with the cluster first, so a retry of an
/// attempt that was committed after all is answered from the session table instead of being
/// applied again (Raft thesis §6.3): the command is applied at most once.
pub fn propose(nodes: &[TestNode], command: &[u8]) -> rcraft::node::ProposeResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    let retry = |e: Error| match e {
        Error::NotLeader { .. } | Error::Timeout | Error::Failed { .. } => {
            assert!(Instant::now() < deadline, "proposal kept failing: {e}");
        }
        e => panic!("proposal failed: {e}"),
    };
    let client_id = loop {
        let leader = wait_for_leader(nodes);
        match nodes[leader].handle().register_session() {
            Ok(client_id) => break client_id,
            Err(e) => retry(e),
        }
    };
    let session = Session {
        client_id,
        sequence: 1,
    };
    loop {
        let leader = wait_for_leader(nodes);
        let handle = nodes[leader].handle();
        match handle.propose_in_session(Some(session), command.to_vec()) {
            Ok(result) => return result,
            Err(e) => retry(e),
        }
    }
}

/// Reads through whichever node is leader, retrying across elections (bounded): a read
/// changes nothing, so asking again after a new election is safe, and a test does not depend
/// on the leader found a moment before still leading on a loaded machine.
pub fn read_from_leader(nodes: &[TestNode], query: &[u8]) -> rcraft::node::ReadResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = wait_for_leader(nodes);
        match nodes[leader].handle().read(query.to_vec()) {
            Ok(result) => return result,
            Err(e @ (Error::NotLeader { .. } | Error::Timeout | Error::Failed { .. })) => {
                assert!(Instant::now() < deadline, "read kept failing: {e}");
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Waits until every running node applied exactly `expected`.
pub fn wait_converged(nodes: &[TestNode], expected: &[Vec<u8>]) {
    wait_until(
        Duration::from_secs(20),
        "every node to apply the same commands",
        || {
            nodes
                .iter()
                .filter(|n| n.handle.is_some())
                .all(|n| n.applied() == expected)
        },
    );
}

/// A raw client connection to `address` after a checked handshake for `cluster_id` (tests
/// that send hand-made frames), reads timing out after `read_timeout`.
pub fn raw_client_stream(
    address: SocketAddr,
    cluster_id: u64,
    read_timeout: std::time::Duration,
) -> std::net::TcpStream {
    use rcraft::wire::{HANDSHAKE_BYTES, Handshake};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the node");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(read_timeout)).unwrap();
    stream
        .write_all(&Handshake::client(cluster_id).encode())
        .unwrap();
    let mut theirs = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut theirs).unwrap();
    Handshake::decode(&theirs)
        .and_then(|h| h.check_cluster(cluster_id))
        .expect("handshake");
    stream
}

/// Sends one hand-made client request to `address` on a fresh connection and returns the
/// node's answer (reads time out after `read_timeout`).
pub fn raw_request(
    address: SocketAddr,
    cluster_id: u64,
    body: rcraft::wire::ClientRequestBody,
    read_timeout: Duration,
) -> rcraft::wire::ClientResponseBody {
    use rcraft::wire::{ClientRequest, FRAME_BYTES_MAX, FrameDecoder, encode_client_request};
    let mut stream = raw_client_stream(address, cluster_id, read_timeout);
    let mut frame = Vec::new();
    let request = ClientRequest {
        request_id: 7,
        body,
    };
    encode_client_request(&request, &mut frame).unwrap();
    stream.write_all(&frame).unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            let response = frame.to_client_response().unwrap();
            assert_eq!(response.request_id, 7);
            return response.body;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the node closed the connection");
        decoder.push(&buf[..n]);
    }
}

/// Sends `signal` to our own child process. After `SIGSTOP` it also waits (bounded) until every
/// thread of the child is stopped: kill(2) returns once the stop is queued, and on a busy
/// machine the child's other threads can run on for milliseconds, long enough to serve a
/// request the test means to send to a stopped process.
pub fn signal_child(child: &std::process::Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal has no memory effects. The
    // child has not been reaped (we hold its `Child`), so the pid names no other process.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
    if signal == libc::SIGSTOP {
        wait_until(Duration::from_secs(10), "every thread to stop", || {
            all_threads_stopped(pid)
        });
    }
}

/// Whether every thread of `pid` is in state `T` (stopped) per /proc/PID/task/*/stat.
fn all_threads_stopped(pid: libc::pid_t) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses and may contain any byte.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t")
    })
}
