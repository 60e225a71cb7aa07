//! `GET /metrics` and `GET /health` over HTTP/1.1, for Prometheus and load balancers
//! (`metrics_addr`, `rcraft serve --metrics-addr`).
//!
//! A thread of its own answers one connection at a time with blocking sockets (a scrape is a
//! few kilobytes every few seconds; no async runtime). Every read and write has a timeout, a
//! request head is at most [`HTTP_REQUEST_BYTES_MAX`], and every connection is closed after
//! its answer, so a slow or hostile client delays a scrape by at most the timeouts and never
//! stops the node. The thread owns its listener; [`MetricsServer::stop`] sets a flag and
//! connects once to wake the blocking `accept`.
//!
//! Health (`/health`): 200 when the node knows a leader and has applied within
//! [`HEALTH_APPLIED_LAG_ENTRIES_MAX`] entries of its commit index, else 503; the body is one
//! line saying which, and why.

use super::consensus::ApiRequest;
use super::limits::{HEALTH_APPLIED_LAG_ENTRIES_MAX, HTTP_REQUEST_BYTES_MAX, HTTP_TIMEOUT};
use super::mailbox::Ringing;
use super::metrics::NodeMetrics;
use super::net::NetStats;
use crossbeam_channel::bounded;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use rcraft_wire::{LogIndex, LostRange, NodeId, NodeStatus, Term};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What `/metrics` and `/health` read: the node's metrics, its status (asked of the
/// consensus thread) and the network thread's counters.
#[derive(Clone)]
pub(crate) struct MetricsSource {
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) api: Ringing<ApiRequest>,
    pub(crate) net: Arc<NetStats>,
    /// Longest wait for the consensus thread's status.
    pub(crate) timeout: Duration,
}

impl MetricsSource {
    /// The node's status, or `None` when it does not answer in time (stopped or stalled).
    fn status(&self) -> Option<NodeStatus> {
        let (reply, answer) = bounded(1);
        self.api
            .send_timeout(ApiRequest::Status { reply }, self.timeout)
            .ok()?;
        answer.recv_timeout(self.timeout).ok()
    }

    /// Every metric in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let status = self.status();
        self.metrics.render(status.as_ref(), &self.net.snapshot())
    }

    /// `Ok(why healthy)`, one line, or `Err(why not)`.
    pub(crate) fn health(&self) -> Result<String, Unhealthy> {
        let Some(status) = self.status() else {
            return Err(Unhealthy::NotAnswering);
        };
        health_of(&status)
    }
}

/// Why a node is not healthy (`/health` answers 503 with this as its one line; also
/// [`NodeHandle::health`](super::NodeHandle::health)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unhealthy {
    /// The consensus thread does not answer in time (stopped or stalled).
    NotAnswering,
    /// The node was shut down.
    ShutDown,
    /// Entries were lost from this node's disk and are being fetched from the leader.
    Repairing {
        /// The lost entries.
        lost: LostRange,
    },
    /// This node's hard state was damaged; it does not vote until these voters have told
    /// their current terms.
    VotesUnknown {
        /// The voters it waits for.
        waiting: Vec<NodeId>,
    },
    /// No leader is known.
    NoLeader {
        /// This node's term.
        term: Term,
    },
    /// The applied index is more than
    /// [`HEALTH_APPLIED_LAG_ENTRIES_MAX`] entries behind the commit index.
    ApplyLagging {
        /// The applied index.
        applied: LogIndex,
        /// The commit index.
        commit: LogIndex,
    },
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::NotAnswering => f.write_str("the node does not answer (stopped or stalled)"),
            Unhealthy::ShutDown => f.write_str("the node is shut down"),
            Unhealthy::Repairing { lost } => write!(
                f,
                "repairing: entries {}..={} were lost from this node's disk and are being \
                 fetched from the leader; until then it votes only for a candidate whose log \
                 covers them",
                lost.from, lost.through
            ),
            Unhealthy::VotesUnknown { waiting } => {
                let ids: Vec<String> = waiting.iter().map(|id| id.to_string()).collect();
                write!(
                    f,
                    "votes unknown: this node's hard state (its record of whom it voted for) \
                     was damaged; it does not vote until voters {} have told their current \
                     terms",
                    ids.join(", ")
                )
            }
            Unhealthy::NoLeader { term } => write!(f, "no leader known in term {term}"),
            Unhealthy::ApplyLagging { applied, commit } => write!(
                f,
                "applied index {applied} is {} entries behind commit index {commit} (more \
                 than {HEALTH_APPLIED_LAG_ENTRIES_MAX})",
                commit.0.saturating_sub(applied.0)
            ),
        }
    }
}

impl std::error::Error for Unhealthy {}

/// The health verdict on one status.
fn health_of(s: &NodeStatus) -> Result<String, Unhealthy> {
    if let Some(lost) = s.repairing {
        return Err(Unhealthy::Repairing { lost });
    }
    if let Some(waiting) = &s.votes_unknown {
        return Err(Unhealthy::VotesUnknown {
            waiting: waiting.clone(),
        });
    }
    let Some(leader) = s.leader else {
        return Err(Unhealthy::NoLeader { term: s.term });
    };
    let lag = s.commit_index.0.saturating_sub(s.applied_index.0);
    if lag > HEALTH_APPLIED_LAG_ENTRIES_MAX {
        return Err(Unhealthy::ApplyLagging {
            applied: s.applied_index,
            commit: s.commit_index,
        });
    }
    Ok(format!(
        "leader {leader} in term {}; applied index {} of commit index {}",
        s.term, s.applied_index, s.commit_index
    ))
}

/// The running responder.
pub(crate) struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Listens on `address` and answers from `source` on a new thread.
    pub(crate) fn start(address: SocketAddr, source: MetricsSource) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rcraft-metrics".to_string())
            .spawn(move || serve(&listener, &source, &stopping))?;
        log::info!("metrics on http://{address}/metrics, health on /health");
        Ok(MetricsServer {
            address,
            stop,
            thread,
        })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; a failure means the listener is gone already.
        let _ = TcpStream::connect_timeout(&self.address, HTTP_TIMEOUT);
        let _ = self.thread.join();
    }
}

fn serve(listener: &TcpListener, source: &MetricsSource, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(e) = answer(stream, source) {
                    log::debug!("metrics: a request failed: {e}");
                }
            }
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                std::thread::sleep(HTTP_TIMEOUT / 10);
            }
        }
    }
}

/// Reads one request head and writes one answer.
fn answer(mut stream: TcpStream, source: &MetricsSource) -> io::Result<()> {
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => ("200 OK", CONTENT_TYPE, source.render()),
        Route::Health => match source.health() {
            Ok(why) => (
                "200 OK",
                "text/plain; charset=utf-8",
                format!("ok: {why}\n"),
            ),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("unhealthy: {why}\n"),
            ),
        },
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics or /health\n".to_string(),
        ),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".to_string(),
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "not an HTTP/1.x request\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// The request head up to its blank line, at most [`HTTP_REQUEST_BYTES_MAX`] bytes.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= HTTP_REQUEST_BYTES_MAX {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    NotFound,
    BadMethod,
    BadRequest,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::BadMethod;
    }
    match target.split('?').next().unwrap_or_default() {
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::{Membership, Role};

    #[test]
    fn requests_are_routed_by_method_and_path() {
        for (head, expected) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Route::Metrics,
            ),
            (b"GET /health?verbose=1 HTTP/1.0\r\n\r\n", Route::Health),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::BadMethod),
            (b"GET /metrics\r\n\r\n", Route::BadRequest),
            (b"\x00\xff garbage", Route::BadRequest),
            (b"", Route::BadRequest),
        ] {
            assert_eq!(route(head), expected, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn health_needs_a_leader_and_applied_close_to_commit() {
        let mut status = NodeStatus {
            id: NodeId(1),
            role: Role::Follower,
            term: Term(3),
            leader: None,
            commit_index: LogIndex(5000),
            applied_index: LogIndex(5000),
            last_index: LogIndex(5000),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0), NodeId(1)],
            learners: Vec::new(),
            membership: Membership::with_voters([NodeId(0), NodeId(1)]),
            replication: Vec::new(),
            repairing: None,
            votes_unknown: None,
            lost: None,
        };
        assert_eq!(
            health_of(&status),
            Err(Unhealthy::NoLeader { term: Term(3) })
        );
        assert_eq!(
            health_of(&status).unwrap_err().to_string(),
            "no leader known in term 3"
        );
        status.leader = Some(NodeId(0));
        assert!(health_of(&status).is_ok());
        status.applied_index = LogIndex(5000 - HEALTH_APPLIED_LAG_ENTRIES_MAX - 1);
        let why = health_of(&status).unwrap_err().to_string();
        assert!(why.contains("entries behind commit index 5000"), "{why}");
        status.applied_index = LogIndex(5000);
        status.repairing = Some(rcraft_wire::LostRange {
            from: LogIndex(4990),
            through: LogIndex(5000),
        });
        let why = health_of(&status).unwrap_err().to_string();
        assert!(why.starts_with("repairing: entries 4990..=5000 "), "{why}");
        status.repairing = None;
        status.votes_unknown = Some(vec![NodeId(1)]);
        let why = health_of(&status).unwrap_err().to_string();
        assert!(why.starts_with("votes unknown: "), "{why}");
        assert!(
            why.ends_with("until voters 1 have told their current terms"),
            "{why}"
        );
    }
}
