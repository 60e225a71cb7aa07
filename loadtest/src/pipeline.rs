//! Pipelined clients (`--pipeline K`): each client thread keeps up to K requests in flight on
//! one connection to the leader, matching answers by `request_id` (the protocol allows many
//! requests in flight per connection). This measures the cluster rather than the cost of one
//! blocked thread per request, which on a 2-core machine is mostly wake-ups.
//!
//! Unlike the blocking client it never retries: a write without an answer (connection lost,
//! deadline passed, the node stepped down) is recorded as an unknown outcome, and writes carry
//! no session, so nothing can be applied twice. After `NotLeader` or a lost connection the
//! thread stops sending, settles what is in flight, and reconnects to whoever leads then.
//!
//! Owned by one client thread; shares only the run's [`RunShared`].

use crate::backend::{ClusterAccess, find_leader};
use crate::engine::{kv_command, outcome_of_answer};
use crate::limits::{CONNECT_TIMEOUT, ERROR_BACKOFF, PIPELINE_READ_POLL, STATUS_POLL_INTERVAL};
use crate::oplog::{ClientLog, OpRecord, Outcome, Request};
use crate::stats::OpOutcome;
use crate::workload::{Rng, RunShared, WorkloadSpec, draw_request};
use rcraft::client::{ClientOptions, ConnStream, check_handshake, handshake};
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponse, ClientResponseBody, FRAME_BYTES_MAX,
    FrameDecoder, HANDSHAKE_BYTES, ReadMode, encode_client_request,
};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Bytes read per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How the pipelined clients reach the cluster.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Requests in flight per connection.
    pub depth: usize,
    /// Node addresses in id order.
    pub addrs: Vec<SocketAddr>,
    /// A request unanswered this long makes the connection count as lost.
    pub timeout: Duration,
    /// Cluster id for the handshake.
    pub cluster_id: u64,
    /// How gets read (`--read-mode`).
    pub read_mode: ReadMode,
    /// The client token sent in the handshake (`--token-file`), if any.
    pub token: Option<rcraft::node::net::auth::Token>,
    /// TLS (`--cacert`, `--cert`, `--key`), if any.
    pub tls: Option<rcraft::tls::ClientTls>,
}

struct InFlight {
    key: u64,
    request: Request,
    /// Call time on the run's clock, for the history.
    call_ns: u64,
    /// Send time, for latency and the deadline.
    sent: Instant,
}

struct Connection {
    stream: ConnStream,
    decoder: FrameDecoder,
    next_request_id: u64,
    in_flight: HashMap<u64, InFlight>,
    /// Set after `NotLeader` or an unknown-outcome error: send nothing more, settle what is
    /// in flight, then reconnect.
    draining: bool,
}

fn open(addr: SocketAddr, spec: &PipelineSpec) -> std::io::Result<Connection> {
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(spec.timeout))?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    let mut stream = ConnStream::open(tcp, spec.tls.as_ref(), addr)?;
    let options = ClientOptions {
        cluster_id: spec.cluster_id,
        token: spec.token.clone(),
        ..ClientOptions::default()
    };
    stream.write_all(&handshake(&options))?;
    let mut theirs = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut theirs)?;
    check_handshake(&theirs, &options)?;
    stream.tcp().set_read_timeout(Some(PIPELINE_READ_POLL))?;
    Ok(Connection {
        stream,
        decoder: FrameDecoder::new(FRAME_BYTES_MAX),
        next_request_id: 1,
        in_flight: HashMap::new(),
        draining: false,
    })
}

/// One pipelined client thread's state.
struct PipelinedClient<'a> {
    client: usize,
    spec: WorkloadSpec,
    pipe: &'a PipelineSpec,
    shared: &'a RunShared,
    rng: Rng,
    counter: u64,
    log: ClientLog,
}

/// Runs one pipelined client until the run stops; returns its log.
pub fn client_loop(
    client: usize,
    spec: WorkloadSpec,
    pipe: &PipelineSpec,
    access: &dyn ClusterAccess,
    shared: &RunShared,
) -> ClientLog {
    let mut this = PipelinedClient {
        client,
        spec,
        pipe,
        shared,
        rng: Rng::new(spec.run_id ^ (client as u64 + 1)),
        counter: 0,
        log: ClientLog::new(spec.mix.cas > 0.0),
    };
    let mut connection: Option<Connection> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        if shared.stopping() && stopped_at.is_none() {
            stopped_at = Some(Instant::now());
        }
        let Some(conn) = connection.as_mut() else {
            if stopped_at.is_some() {
                break;
            }
            connection = connection_target(client, &spec, pipe, access)
                .and_then(|addr| open(addr, pipe).ok());
            if connection.is_none() {
                std::thread::sleep(STATUS_POLL_INTERVAL);
            }
            continue;
        };
        if stopped_at.is_some() || conn.draining {
            if conn.in_flight.is_empty() {
                connection = None;
                continue;
            }
        } else if let Err(e) = this.fill(conn) {
            log::debug!("client {client}: send failed: {e}");
            this.fail(conn);
            connection = None;
            continue;
        }
        let overdue = conn
            .in_flight
            .values()
            .any(|f| f.sent.elapsed() > pipe.timeout);
        if overdue || this.receive(conn).is_err() {
            this.fail(conn);
            connection = None;
        }
    }
    this.log
}

/// Where a pipelined client connects: the leader, except for read-only follower reads, where
/// client `i` connects to node `i` (mod the cluster size) so the reads spread over every node
/// (a write there would only be refused, ending the connection).
fn connection_target(
    client: usize,
    spec: &WorkloadSpec,
    pipe: &PipelineSpec,
    access: &dyn ClusterAccess,
) -> Option<SocketAddr> {
    if pipe.read_mode == ReadMode::Follower && spec.mix.get >= 1.0 && !pipe.addrs.is_empty() {
        return Some(pipe.addrs[client % pipe.addrs.len()]);
    }
    find_leader(access, &pipe.addrs).map(|(i, _)| pipe.addrs[i])
}

impl PipelinedClient<'_> {
    /// Sends new requests until `depth` are in flight, in one write.
    fn fill(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        let mut out = Vec::new();
        while conn.in_flight.len() < self.pipe.depth {
            let key = self.rng.next_u64() % self.spec.keys;
            let request = self.next_request(key);
            let body = self.request_body(key, request);
            let request_id = conn.next_request_id;
            conn.next_request_id += 1;
            encode_client_request(&ClientRequest { request_id, body }, &mut out)
                .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
            conn.in_flight.insert(
                request_id,
                InFlight {
                    key,
                    request,
                    call_ns: self.shared.elapsed_ns(),
                    sent: Instant::now(),
                },
            );
        }
        if out.is_empty() {
            Ok(())
        } else {
            conn.stream.write_all(&out)
        }
    }

    /// Reads what has arrived (waiting at most one poll interval) and settles answered
    /// requests. `Err` when the connection is gone or speaks nonsense.
    fn receive(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.decoder.push(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let invalid =
            |e: rcraft::wire::Error| std::io::Error::new(ErrorKind::InvalidData, e.to_string());
        while let Some(frame) = conn.decoder.next_frame().map_err(invalid)? {
            let ClientResponse { request_id, body } =
                frame.to_client_response().map_err(invalid)?;
            if let Some(in_flight) = conn.in_flight.remove(&request_id) {
                self.settle(conn, in_flight, body);
            }
        }
        Ok(())
    }

    /// Draws the next request for `key` from the mix.
    fn next_request(&mut self, key: u64) -> Request {
        let (mix, log) = (&self.spec.mix, &self.log);
        draw_request(mix, &mut self.rng, log, key, self.client, &mut self.counter)
    }

    /// The wire request for `request` on `key`. Writes carry no session: they are never
    /// retried, so none can be applied twice.
    fn request_body(&self, key: u64, request: Request) -> ClientRequestBody {
        match kv_command(&self.spec, key, request) {
            (true, query) => ClientRequestBody::Read {
                query,
                mode: self.pipe.read_mode,
            },
            (false, command) => ClientRequestBody::Write {
                session: None,
                command,
            },
        }
    }

    fn settle(&mut self, conn: &mut Connection, in_flight: InFlight, body: ClientResponseBody) {
        let is_write = in_flight.request.is_write();
        let (outcome, term) = match body {
            ClientResponseBody::Ok { term, result, .. } => {
                outcome_of_answer(in_flight.request, term.0, &result)
            }
            ClientResponseBody::NotLeader { .. } => {
                conn.draining = true;
                (Outcome::Failed, None)
            }
            ClientResponseBody::Overloaded => (Outcome::Failed, None),
            ClientResponseBody::Error { definite: true, .. } => (Outcome::Failed, None),
            ClientResponseBody::Error {
                definite: false, ..
            }
            | ClientResponseBody::Status(_)
            | ClientResponseBody::Latency(_)
            | ClientResponseBody::Events(_)
            | ClientResponseBody::SnapshotChunk(_) => {
                conn.draining = true;
                match is_write {
                    true => (Outcome::Unknown, None),
                    false => (Outcome::Failed, None),
                }
            }
        };
        let outcome = self.record(&in_flight, outcome, term);
        if outcome == OpOutcome::DefiniteError && !conn.draining {
            // Overloaded or refused: give the leader a moment.
            std::thread::sleep(ERROR_BACKOFF);
        }
    }

    /// Records a finished request in the log and the statistics.
    fn record(&mut self, in_flight: &InFlight, outcome: Outcome, term: Option<u64>) -> OpOutcome {
        let op = OpRecord {
            client: self.client as u32,
            key: in_flight.key,
            request: in_flight.request,
            outcome,
            call_ns: in_flight.call_ns,
            return_ns: self.shared.elapsed_ns(),
        };
        let in_history = self.shared.admit_to_history(op.call_ns);
        let outcome = self.log.record(op, term, in_history);
        self.shared
            .recorder
            .record(self.client, outcome, in_flight.sent.elapsed());
        outcome
    }

    /// The connection is lost: every write in flight has an unknown outcome (a read simply
    /// failed: it changed nothing).
    fn fail(&mut self, conn: &mut Connection) {
        for (_, in_flight) in conn.in_flight.drain() {
            let outcome = match in_flight.request.is_write() {
                true => Outcome::Unknown,
                false => Outcome::Failed,
            };
            self.record(&in_flight, outcome, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RcraftCluster;
    use crate::fake_server::FakeNode;
    use crate::history::{History, Verification, check_key, key_name};
    use crate::workload::spawn_clients;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    fn run_against(node: &FakeNode, pipeline: Option<PipelineSpec>) -> (History, Verification) {
        let access: Arc<dyn ClusterAccess> =
            Arc::new(RcraftCluster::new(vec![node.addr], Duration::from_secs(2)));
        let shared = Arc::new(RunShared::new());
        let spec = WorkloadSpec {
            clients: 3,
            keys: 40,
            value_size: 24,
            mix: crate::mix::Mix::reads_and_puts(0.25),
            rate_per_client: None,
            run_id: 9,
        };
        let handles = spawn_clients(spec, pipeline, access.clone(), shared.clone());
        std::thread::sleep(Duration::from_millis(300));
        shared.stop.store(true, Ordering::Relaxed);
        let logs: Vec<ClientLog> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let history = History::from_clients(logs.into_iter().map(|l| l.writes).collect());
        let verification =
            crate::run::verify(&history, access.as_ref(), 9, &AtomicBool::new(false)).unwrap();
        (history, verification)
    }

    use std::sync::atomic::AtomicBool;

    #[test]
    fn pipelined_clients_write_and_verify_over_tcp() {
        let cluster_id = rcraft::config::CLUSTER_ID_DEFAULT;
        let node = FakeNode::start(cluster_id);
        let pipe = PipelineSpec {
            depth: 8,
            addrs: vec![node.addr],
            timeout: Duration::from_secs(2),
            cluster_id,
            read_mode: ReadMode::Linearizable,
            token: None,
            tls: None,
        };
        let (history, verification) = run_against(&node, Some(pipe));
        assert!(history.acked_writes() > 0);
        assert_eq!(history.unknown_writes(), 0, "the fake answers everything");
        assert!(
            verification.passed() && verification.keys_checked > 0,
            "{verification:?}"
        );
        // Cross-check one key directly against the fake's map.
        let key = history.keys()[0];
        let stored = node
            .map
            .lock()
            .unwrap()
            .get(key_name(9, key).as_bytes())
            .cloned();
        assert_eq!(
            check_key(history.writes_of(key), stored.as_deref()),
            crate::history::KeyVerdict::Consistent
        );
    }

    #[test]
    fn blocking_clients_use_the_real_client_over_tcp() {
        let node = FakeNode::start(rcraft::config::CLUSTER_ID_DEFAULT);
        let (history, verification) = run_against(&node, None);
        assert!(history.acked_writes() > 0);
        assert!(verification.passed(), "{verification:?}");
        let access = RcraftCluster::new(vec![node.addr], Duration::from_secs(1));
        assert_eq!(
            access.status(node.addr).map(|s| s.role),
            Some(rcraft::wire::Role::Leader)
        );
    }

    #[test]
    fn a_dead_node_costs_unknown_outcomes_not_a_hang() {
        let cluster_id = rcraft::config::CLUSTER_ID_DEFAULT;
        let node = FakeNode::start(cluster_id);
        let addr = node.addr;
        drop(node);
        let access: Arc<dyn ClusterAccess> =
            Arc::new(RcraftCluster::new(vec![addr], Duration::from_millis(200)));
        let shared = Arc::new(RunShared::new());
        let spec = WorkloadSpec {
            clients: 1,
            keys: 4,
            value_size: 8,
            mix: crate::mix::Mix::reads_and_puts(0.0),
            rate_per_client: None,
            run_id: 1,
        };
        let pipe = PipelineSpec {
            depth: 4,
            addrs: vec![addr],
            timeout: Duration::from_millis(200),
            cluster_id,
            read_mode: ReadMode::Linearizable,
            token: None,
            tls: None,
        };
        let handles = spawn_clients(spec, Some(pipe), access, shared.clone());
        std::thread::sleep(Duration::from_millis(100));
        shared.stop.store(true, Ordering::Relaxed);
        let logs: Vec<ClientLog> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert!(
            logs.iter()
                .flat_map(|l| &l.writes)
                .all(|w| w.acked_ns.is_none())
        );
        assert!(
            logs.iter()
                .flat_map(|l| &l.ops)
                .all(|op| op.outcome == Outcome::Unknown)
        );
    }
}
