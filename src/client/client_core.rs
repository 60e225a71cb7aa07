//! The client's decisions without I/O: which node to ask, when to retry, pause or give up,
//! the session of each write, and whether a failure is definite. [`ClientCore`] holds them for
//! one client (one request in flight); a driver does the I/O and feeds back what happened.
//!
//! Two drivers share it: the blocking [`Client`](super::Client) on its caller's thread, and
//! the loadtest's event loop, which runs hundreds of cores over non-blocking sockets on one
//! thread. Time is given by the driver (`now` on every call), so the core reads no clock.
//!
//! The protocol between driver and core, for one operation:
//!
//! 1. `begin_write` or `begin_read` (or the blocking client's other calls) starts it.
//! 2. [`ClientCore::poll`] says what to do next ([`Next`]): send the current request to a
//!    server (over a connection to it, opened and greeted with the handshake if needed),
//!    wait for the answer, sleep through a back-off pause, ask the other nodes who leads, or
//!    take the result.
//! 3. The driver reports each event (`on_sent`, `on_connect_failed`, `on_send_failed`,
//!    `on_answer`, `on_lost`, `on_status`) and polls again, at the latest when the instant
//!    the last [`Next`] named has come.
//!
//! Failover as clients feel it: a request sent to a node that stops answering (paused, cut
//! off) would cost the whole attempt timeout. Once an attempt has waited
//! [`ClientOptions::leader_probe_after`] (an election timeout), the core asks the driver to
//! ask the other nodes for their status, and again every
//! [`ClientOptions::leader_probe_interval`]; when one names a leader other than the node
//! asked, in a newer term than the one that node last answered in, the attempt is abandoned
//! (its outcome unknown, so a write keeps its session and sequence) and sent to that leader.
//!
//! Invariants: at most one operation at a time; once any attempt of a write may have reached
//! a node (its bytes were fully written), a failure of that write is reported as not
//! definite; a retry of a write reuses its session and sequence.

use super::{ClientError, ClientOptions, ClientResult, Result};
use crate::node::limits::COMMAND_BYTES_MAX;
use rcraft_wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, NodeId, NodeStatus, Role, Session, Term,
    is_session_expired,
};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the driver does next for the operation in progress.
#[derive(Debug)]
pub enum Next {
    /// Send [`ClientCore::request`] to `servers()[server]`: over the open connection to that
    /// server, or a new one (connect, handshake) opened by `deadline`. With `reconnect`, the
    /// previous attempt ended without its answer: close any open connection first (it may
    /// hold part of a request or a late answer). Then report `on_sent` once the request's
    /// bytes are fully written, or `on_connect_failed` / `on_send_failed`.
    Send {
        /// Index into [`ClientCore::servers`].
        server: usize,
        /// End of this attempt.
        deadline: Instant,
        /// Close the current connection before sending.
        reconnect: bool,
    },
    /// The request is being sent or has been sent: wait for its answer (report `on_answer`
    /// or `on_lost`), and poll again by `until` at the latest.
    AwaitAnswer {
        /// When to poll again if nothing happens.
        until: Instant,
    },
    /// A back-off pause: nothing to do until `until`, then poll again.
    Sleep {
        /// End of the pause.
        until: Instant,
    },
    /// The attempt has waited an election timeout: ask these servers for their status
    /// (report each answer with `on_status`), keep waiting for the answer meanwhile, and poll
    /// again. The probes' own wait should not outlast [`ClientOptions::leader_probe_interval`].
    Probe {
        /// Indexes into [`ClientCore::servers`]: every server but the one asked.
        servers: Vec<usize>,
    },
    /// The operation ended; the core is idle again.
    Done(Result<ClientResult>),
}

/// Whether retrying an operation can change the cluster's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A write: an unanswered attempt makes the outcome unknown.
    Write,
    /// A read or an admin request: failures are always definite.
    ReadOnly,
    /// Registering a session before a write: failures are definite for that write, which was
    /// not sent. An unanswered attempt may leave a session behind that nobody uses; the
    /// cluster forgets it in time.
    Register,
}

/// What one attempt at one node produced.
// One short-lived value per answer, moved straight into `settle`: boxing the large answer
// (a status) would add an allocation per answer to save stack space nobody holds.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// The node answered.
    Answer(ClientResponseBody),
    /// The request never fully left this client; it cannot take effect.
    NotSent(String),
    /// The request was sent but no usable answer came; it may take effect.
    Lost(String),
}

/// Where the operation in progress stands.
#[derive(Debug)]
enum Stage {
    /// The next attempt may go out now.
    Ready,
    /// Pausing before the next attempt.
    Paused { until: Instant },
    /// An attempt at `server`, sent once `sent_at` is set.
    InFlight {
        server: usize,
        deadline: Instant,
        sent_at: Option<Instant>,
        /// When to ask the other nodes who leads next (set once sent).
        probe_at: Option<Instant>,
    },
    /// Finished; taken by the next `poll`.
    Finished(Result<ClientResult>),
}

/// The retry state of one request (one `call_until` of the blocking client before it was
/// split): reset when a write's session registration is done and the write itself starts.
#[derive(Debug)]
struct Retry {
    backoff: Duration,
    /// True once an attempt of a write may have reached a node.
    maybe_applied: bool,
    /// The refusal to report if the deadline passes (nothing was proposed).
    last_refusal: Option<ClientError>,
    /// `NotLeader` answers since the last pause: a hint cycle means an election.
    refusals_in_a_row: usize,
}

/// The operation in progress.
#[derive(Debug)]
struct Operation {
    /// The request being tried: the operation's own, or its session's registration.
    request: ClientRequest,
    effect: Effect,
    /// True for writes carrying a session ([`ClientCore::begin_write`]).
    session_write: bool,
    /// A session write's command while its session is being registered.
    pending_command: Option<Vec<u8>>,
    deadline: Instant,
    retry: Retry,
    stage: Stage,
    /// A follower read not refused yet: it goes to the node this client last talked to
    /// (any node that knows the leader serves it), and its answer says nothing of who leads.
    follower_read: bool,
}

/// One client's decision logic; see the module docs.
#[derive(Debug)]
pub struct ClientCore {
    servers: Vec<SocketAddr>,
    options: ClientOptions,
    /// The node believed to lead, as an index into `servers`.
    leader: Option<usize>,
    /// The term `leader` last answered in, if it has answered since it became `leader`.
    leader_term: Option<Term>,
    /// Next node to try when no leader is known.
    round_robin: usize,
    /// The node the last attempt went to (the driver's connection is to it).
    last_server: Option<usize>,
    /// This client's session, as assigned by the cluster; `None` until the first write
    /// registers one, and again once the cluster said it forgot it.
    client_id: Option<u64>,
    /// Sequence of the latest write started in this session.
    sequence: u64,
    next_request_id: u64,
    /// True once any server has answered this client.
    answered: bool,
    /// True when the last attempt ended without an answer: its connection must not be
    /// reused.
    connection_tainted: bool,
    /// Servers whose last connection attempt was refused or rejected in the handshake, with
    /// the first time it happened in a row and the last reason.
    unreachable: BTreeMap<usize, (Instant, io::Error)>,
    operation: Option<Operation>,
}

impl ClientCore {
    /// The core of a client of the cluster at `servers` (in node-id order).
    pub fn new(servers: &[SocketAddr], options: ClientOptions) -> Result<ClientCore> {
        if servers.is_empty() {
            return Err(ClientError::InvalidInput("no servers given".to_string()));
        }
        Ok(ClientCore {
            servers: servers.to_vec(),
            options,
            leader: None,
            leader_term: None,
            round_robin: 0,
            last_server: None,
            client_id: None,
            sequence: 0,
            next_request_id: 1,
            answered: false,
            connection_tainted: false,
            unreachable: BTreeMap::new(),
            operation: None,
        })
    }

    /// The server list, in node-id order (plus leaders' addresses learnt from hints).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The options this core decides by.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The node believed to lead, as an index into [`ClientCore::servers`].
    pub fn leader_index(&self) -> Option<usize> {
        self.leader
    }

    /// The node believed to lead.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader.map(|i| NodeId(i as u64))
    }

    /// The id of this client's current session, if it has one.
    pub fn client_id(&self) -> Option<u64> {
        self.client_id
    }

    /// True when no operation is in progress.
    pub fn is_idle(&self) -> bool {
        self.operation.is_none()
    }

    /// The request to send on [`Next::Send`]. Panics when idle (a driver bug).
    pub fn request(&self) -> &ClientRequest {
        &self.operation().request
    }

    /// Starts a write of `command`, applied at most once even across retries (a session is
    /// registered first when the client has none). A command over [`COMMAND_BYTES_MAX`] is
    /// refused before anything is sent.
    pub fn begin_write(&mut self, command: Vec<u8>, now: Instant) -> Result<()> {
        check_size("command", command.len())?;
        let (body, effect, pending_command) = match self.client_id {
            Some(client_id) => (self.session_body(client_id, command), Effect::Write, None),
            None => (register_body(), Effect::Register, Some(command)),
        };
        self.begin_operation(body, effect, now);
        let operation = self.operation_mut();
        operation.session_write = true;
        operation.pending_command = pending_command;
        Ok(())
    }

    /// Starts a linearizable read answered by the state machine's `query`. A query over
    /// [`COMMAND_BYTES_MAX`] is refused before anything is sent.
    pub fn begin_read(&mut self, query: Vec<u8>, now: Instant) -> Result<()> {
        check_size("query", query.len())?;
        let mode = self.options.read_mode;
        self.begin_operation(
            ClientRequestBody::Read { query, mode },
            Effect::ReadOnly,
            now,
        );
        Ok(())
    }

    /// Starts an operation other than a session write (reads, admin requests).
    pub(crate) fn begin(&mut self, body: ClientRequestBody, effect: Effect, now: Instant) {
        self.begin_operation(body, effect, now);
    }

    fn begin_operation(&mut self, body: ClientRequestBody, effect: Effect, now: Instant) {
        assert!(
            self.operation.is_none(),
            "an operation is already in progress"
        );
        let follower_read = body_mode(&body) == Some(rcraft_wire::ReadMode::Follower);
        self.operation = Some(Operation {
            request: ClientRequest {
                request_id: 0,
                body,
            },
            effect,
            session_write: false,
            pending_command: None,
            deadline: now + self.options.timeout,
            retry: self.fresh_retry(),
            stage: Stage::Ready,
            follower_read,
        });
    }

    fn fresh_retry(&self) -> Retry {
        Retry {
            backoff: self.options.backoff_min,
            maybe_applied: false,
            last_refusal: None,
            refusals_in_a_row: 0,
        }
    }

    /// The body of a new write in session `client_id`: the session's next sequence.
    fn session_body(&mut self, client_id: u64, command: Vec<u8>) -> ClientRequestBody {
        self.sequence += 1;
        ClientRequestBody::Write {
            session: Some(Session {
                client_id,
                sequence: self.sequence,
            }),
            command,
        }
    }

    fn operation(&self) -> &Operation {
        self.operation
            .as_ref()
            .expect("an operation is in progress")
    }

    fn operation_mut(&mut self) -> &mut Operation {
        self.operation
            .as_mut()
            .expect("an operation is in progress")
    }

    /// What to do next; see [`Next`]. Panics when idle (a driver bug).
    pub fn poll(&mut self, now: Instant) -> Next {
        let probe_interval = self.options.leader_probe_interval;
        let servers = self.servers.len();
        loop {
            let operation = self.operation_mut();
            match &mut operation.stage {
                Stage::Finished(_) => {
                    let operation = self.operation.take().expect("in progress");
                    let Stage::Finished(result) = operation.stage else {
                        unreachable!("matched above")
                    };
                    return Next::Done(result);
                }
                Stage::Paused { until } if now < *until => return Next::Sleep { until: *until },
                Stage::Paused { .. } => {
                    operation.stage = match now >= operation.deadline {
                        true => Stage::Finished(Err(deadline_error(&mut operation.retry))),
                        false => Stage::Ready,
                    };
                }
                Stage::Ready => return self.start_attempt(now),
                Stage::InFlight {
                    deadline, sent_at, ..
                } if now >= *deadline => {
                    let attempt = match sent_at {
                        Some(at) => Attempt::Lost(format!(
                            "no answer: timed out after {} ms",
                            now.duration_since(*at).as_millis()
                        )),
                        None => Attempt::NotSent("timed out before the request was sent".into()),
                    };
                    self.settle(attempt, now);
                }
                Stage::InFlight {
                    server,
                    deadline,
                    probe_at,
                    ..
                } => {
                    let until = probe_at.map_or(*deadline, |p| p.min(*deadline));
                    let probe_due = probe_at.is_some_and(|p| now >= p);
                    if !probe_due {
                        return Next::AwaitAnswer { until };
                    }
                    *probe_at = Some(now + probe_interval);
                    let asked = *server;
                    let servers = (0..servers).filter(|&i| i != asked).collect();
                    return Next::Probe { servers };
                }
            }
        }
    }

    fn start_attempt(&mut self, now: Instant) -> Next {
        let server = match self.operation().follower_read {
            true => self.last_server.unwrap_or(self.round_robin),
            false => self.leader.unwrap_or(self.round_robin),
        };
        self.last_server = Some(server);
        let request_id = self.take_request_id();
        let reconnect = std::mem::take(&mut self.connection_tainted);
        let attempt_timeout = self.options.attempt_timeout;
        let operation = self.operation_mut();
        let deadline = operation.deadline.min(now + attempt_timeout);
        operation.request.request_id = request_id;
        operation.stage = Stage::InFlight {
            server,
            deadline,
            sent_at: None,
            probe_at: None,
        };
        Next::Send {
            server,
            deadline,
            reconnect,
        }
    }

    /// The request's bytes are fully written (it may now take effect).
    pub fn on_sent(&mut self, now: Instant) {
        let probe_after = self.options.leader_probe_after;
        let several = self.servers.len() > 1;
        let Some(Stage::InFlight {
            server,
            sent_at,
            probe_at,
            ..
        }) = self.operation.as_mut().map(|o| &mut o.stage)
        else {
            return;
        };
        *sent_at = Some(now);
        *probe_at = probe_after.filter(|_| several).map(|after| now + after);
        let server = *server;
        self.unreachable.remove(&server);
    }

    /// Connecting to the server (or the handshake) failed: nothing was sent.
    pub fn on_connect_failed(&mut self, error: io::Error, now: Instant) {
        let Some(server) = self.in_flight_server() else {
            return;
        };
        let why = error.to_string();
        if is_unreachable(&error) {
            let since = self.unreachable.get(&server).map_or(now, |u| u.0);
            self.unreachable.insert(server, (since, error));
        }
        self.settle(Attempt::NotSent(why), now);
    }

    /// Writing the request failed part way: the server cannot decode it, so it cannot take
    /// effect.
    pub fn on_send_failed(&mut self, why: String, now: Instant) {
        if self.in_flight_server().is_some() {
            self.settle(Attempt::NotSent(why), now);
        }
    }

    /// The connection failed (or spoke nonsense) after the request was sent.
    pub fn on_lost(&mut self, why: String, now: Instant) {
        if self.in_flight_server().is_some() {
            self.settle(Attempt::Lost(why), now);
        }
    }

    /// An answer arrived for `request_id`; answers to abandoned requests are ignored.
    pub fn on_answer(&mut self, request_id: u64, body: ClientResponseBody, now: Instant) {
        let current = self
            .operation
            .as_ref()
            .is_some_and(|o| o.request.request_id == request_id);
        if current && self.in_flight_server().is_some() {
            self.answered = true;
            self.settle(Attempt::Answer(body), now);
        }
    }

    /// `servers()[server]` reported `status` (a probe's answer). Abandons the attempt in
    /// flight when the status names another leader in a newer term than the asked node
    /// last answered in (see the module docs).
    pub fn on_status(&mut self, server: usize, status: &NodeStatus, now: Instant) {
        let Some(Stage::InFlight {
            server: asked,
            sent_at: Some(_),
            ..
        }) = self.operation.as_ref().map(|o| &o.stage)
        else {
            return;
        };
        let asked = *asked;
        let named = match status.role {
            Role::Leader => Some(server),
            _ => status
                .leader
                .map(|id| id.0 as usize)
                .filter(|&i| i < self.servers.len()),
        };
        let newer = self
            .leader_term
            .is_none_or(|term| status.term > term || self.leader != Some(asked));
        let Some(next) = named.filter(|&n| n != asked && newer) else {
            return;
        };
        log::debug!(
            "{}: {} leads in term {}; abandoning the attempt at {}",
            self.servers[server],
            self.servers[next],
            status.term.0,
            self.servers[asked]
        );
        let operation = self.operation_mut();
        operation.retry.maybe_applied |= operation.effect == Effect::Write;
        operation.retry.last_refusal = None;
        operation.retry.refusals_in_a_row = 0;
        operation.stage = match now >= operation.deadline {
            true => Stage::Finished(Err(deadline_error(&mut operation.retry))),
            false => Stage::Ready,
        };
        self.connection_tainted = true;
        self.leader = Some(next);
        self.leader_term = None;
    }

    fn in_flight_server(&self) -> Option<usize> {
        match self.operation.as_ref().map(|o| &o.stage) {
            Some(Stage::InFlight { server, .. }) => Some(*server),
            _ => None,
        }
    }

    /// Decides after one attempt: finish, retry at once, or pause first.
    fn settle(&mut self, attempt: Attempt, now: Instant) {
        let Some(target) = self.in_flight_server() else {
            return;
        };
        let is_write = self.operation().effect == Effect::Write;
        let mut should_pause = true;
        match attempt {
            Attempt::Answer(ClientResponseBody::Ok {
                term,
                index,
                result,
            }) => {
                if !self.operation().follower_read {
                    self.leader = Some(target);
                    self.leader_term = Some(term);
                }
                let result = ClientResult {
                    term,
                    index,
                    response: result,
                };
                return self.answered_ok(result, now);
            }
            Attempt::Answer(ClientResponseBody::NotLeader {
                leader,
                leader_address,
            }) => {
                let next = self.follow_hint(target, leader, leader_address.as_deref());
                let servers = self.servers.len();
                // A refused follower read goes where the hints lead, like any request.
                self.operation_mut().follower_read = false;
                let retry = &mut self.operation_mut().retry;
                retry.last_refusal = Some(ClientError::NotLeader { hint: leader });
                retry.refusals_in_a_row += 1;
                // A fresh hint is worth trying at once; a hint cycle or "no leader" means
                // an election is under way, so wait a little.
                should_pause = next.is_none() || retry.refusals_in_a_row >= servers;
            }
            Attempt::Answer(ClientResponseBody::Overloaded) => {
                self.set_leader(target);
                self.operation_mut().retry.last_refusal = Some(ClientError::Overloaded);
            }
            Attempt::Answer(ClientResponseBody::Error { definite, message }) => {
                if definite {
                    let definite = !self.operation().retry.maybe_applied;
                    return self.finish(Err(ClientError::Server { definite, message }));
                }
                // The node lost track of the proposal (e.g. it stepped down); the session
                // makes a retry safe, and another node may now lead.
                self.lost_at(target, is_write);
            }
            Attempt::Answer(
                ClientResponseBody::Status(_)
                | ClientResponseBody::Latency(_)
                | ClientResponseBody::Events(_)
                | ClientResponseBody::SnapshotChunk(_),
            ) => {
                self.connection_tainted = true;
                let definite = !self.operation().retry.maybe_applied;
                return self.finish(Err(ClientError::Protocol {
                    definite,
                    message: "status answer to a non-status request".to_string(),
                }));
            }
            Attempt::NotSent(why) => {
                log::debug!("{}: not sent: {why}", self.servers[target]);
                self.connection_tainted = true;
                self.forget_leader(target);
                if let Some(error) = self.take_unreachable_error(now) {
                    return self.finish(Err(error));
                }
            }
            Attempt::Lost(why) => {
                log::debug!("{}: no answer: {why}", self.servers[target]);
                self.connection_tainted = true;
                self.lost_at(target, is_write);
            }
        }
        let backoff_max = self.options.backoff_max;
        let operation = self.operation_mut();
        let deadline = operation.deadline;
        operation.stage = if now >= deadline {
            Stage::Finished(Err(deadline_error(&mut operation.retry)))
        } else if should_pause {
            let retry = &mut operation.retry;
            retry.refusals_in_a_row = 0;
            let until = now + retry.backoff.min(deadline - now);
            retry.backoff = (retry.backoff * 2).min(backoff_max);
            Stage::Paused { until }
        } else {
            Stage::Ready
        };
    }

    /// An attempt at `target` ended without a usable answer after it may have been received.
    fn lost_at(&mut self, target: usize, is_write: bool) {
        let retry = &mut self.operation_mut().retry;
        retry.maybe_applied |= is_write;
        retry.last_refusal = None;
        self.forget_leader(target);
    }

    /// An `Ok` answer: the operation's result, or for a session registration, the start of
    /// the write it was for.
    fn answered_ok(&mut self, result: ClientResult, _now: Instant) {
        if self.operation().effect != Effect::Register {
            return self.finish(Ok(result));
        }
        let Ok(id) = <[u8; 8]>::try_from(result.response.as_slice()) else {
            return self.finish(Err(ClientError::Protocol {
                definite: true,
                message: "the session registration's answer holds no client id".to_string(),
            }));
        };
        let client_id = u64::from_le_bytes(id);
        self.client_id = Some(client_id);
        self.sequence = 0;
        let command = self
            .operation_mut()
            .pending_command
            .take()
            .unwrap_or_default();
        let body = self.session_body(client_id, command);
        let retry = self.fresh_retry();
        let operation = self.operation_mut();
        operation.request.body = body;
        operation.effect = Effect::Write;
        operation.retry = retry;
        operation.stage = Stage::Ready;
    }

    /// Ends the operation with `result`, unless it is a session write the cluster refused
    /// because it forgot the session and no attempt of it can have been applied: then a new
    /// session is registered and the write sent again, as a new write.
    fn finish(&mut self, result: Result<ClientResult>) {
        let operation = self.operation_mut();
        let expired = matches!(&result, Err(ClientError::Server { message, .. })
            if is_session_expired(message));
        if !(operation.session_write && operation.effect == Effect::Write && expired) {
            operation.stage = Stage::Finished(result);
            return;
        }
        self.client_id = None;
        let Err(ClientError::Server { definite, message }) = result else {
            unreachable!("matched above")
        };
        let operation = self.operation_mut();
        if !definite {
            let message = format!(
                "{message} (an earlier attempt of this write may have been applied: the \
                 outcome is unknown)"
            );
            operation.stage = Stage::Finished(Err(ClientError::Server {
                definite: false,
                message,
            }));
            return;
        }
        let ClientRequestBody::Write { command, .. } = &mut operation.request.body else {
            unreachable!("a session write's request is a write")
        };
        operation.pending_command = Some(std::mem::take(command));
        operation.request.body = register_body();
        operation.effect = Effect::Register;
        operation.stage = Stage::Ready;
        let retry = self.fresh_retry();
        self.operation_mut().retry = retry;
    }

    /// True while the attempt in flight waits for its answer.
    pub fn awaits_answer(&self) -> bool {
        matches!(
            self.operation.as_ref().map(|o| &o.stage),
            Some(Stage::InFlight {
                sent_at: Some(_),
                ..
            })
        )
    }

    /// Makes `servers[server]` the node believed to lead.
    pub(crate) fn set_leader(&mut self, server: usize) {
        if self.leader != Some(server) {
            self.leader_term = None;
        }
        self.leader = Some(server);
    }

    /// Uses a `NotLeader` hint: the leader's address when the hint gives one (added to the
    /// list if it is not there), else its id as an index into the server list. Returns the
    /// node to try next, if the hint names one.
    pub(crate) fn follow_hint(
        &mut self,
        from: usize,
        leader: Option<NodeId>,
        address: Option<&str>,
    ) -> Option<usize> {
        let by_id = leader
            .map(|id| id.0 as usize)
            .filter(|&i| i < self.servers.len());
        let mut by_address = || {
            let addr = address.and_then(|a| crate::config::resolve_address(a).ok())?;
            match self.servers.iter().position(|s| *s == addr) {
                Some(i) => Some(i),
                None => {
                    self.servers.push(addr);
                    Some(self.servers.len() - 1)
                }
            }
        };
        // The address is the node's own word; the id is a list position only when the list
        // is in id order.
        let next = by_address().or(by_id).filter(|&i| i != from);
        match next {
            Some(i) => self.set_leader(i),
            None => self.forget_leader(from),
        }
        next
    }

    /// `servers[failed]` is not (reachable as) the leader: move on to the next node.
    pub(crate) fn forget_leader(&mut self, failed: usize) {
        self.leader = None;
        self.leader_term = None;
        self.advance_round_robin(failed);
    }

    /// The next node to try when no leader is known.
    pub(crate) fn round_robin(&self) -> usize {
        self.round_robin
    }

    pub(crate) fn advance_round_robin(&mut self, failed: usize) {
        self.round_robin = (failed + 1) % self.servers.len();
    }

    /// Records that `server` reports itself leader (from a status answer).
    pub(crate) fn found_leader(&mut self, server: usize, term: Term) {
        self.set_leader(server);
        self.leader_term = Some(term);
    }

    pub(crate) fn take_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// The error to give up with when [`ClientOptions::unreachable_give_up`] applies: no
    /// server ever answered and every one has refused (or rejected in the handshake) every
    /// connection for that long.
    fn take_unreachable_error(&mut self, now: Instant) -> Option<ClientError> {
        let give_up = self.options.unreachable_give_up?;
        let all = self.unreachable.len() == self.servers.len();
        let long_enough = self
            .unreachable
            .values()
            .all(|(since, _)| now.duration_since(*since) >= give_up);
        if self.answered || !all || !long_enough {
            return None;
        }
        let (&server, _) = self.unreachable.iter().next_back()?;
        let (_, error) = self.unreachable.remove(&server)?;
        Some(ClientError::Io {
            address: self.servers[server],
            error,
        })
    }
}

fn register_body() -> ClientRequestBody {
    ClientRequestBody::Write {
        session: Some(Session::REGISTER),
        command: Vec::new(),
    }
}

/// The error for an operation whose deadline passed.
fn deadline_error(retry: &mut Retry) -> ClientError {
    match retry.last_refusal.take() {
        Some(refusal) if !retry.maybe_applied => refusal,
        _ => ClientError::Timeout {
            definite: !retry.maybe_applied,
        },
    }
}

/// True when nothing listens at the address or the node refused this client's cluster: a
/// client that never got an answer may give up on these (see
/// [`ClientOptions::unreachable_give_up`]).
/// Connections refused, closed during the handshake, or failing TLS (`InvalidData`: another
/// CA, a node without TLS), which retrying cannot mend.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::InvalidData
    )
}

/// Refuses a command or query a node would refuse (`COMMAND_BYTES_MAX`), before sending it.
pub(crate) fn check_size(what: &str, bytes: usize) -> Result<()> {
    if bytes > COMMAND_BYTES_MAX {
        let why = format!("{what} of {bytes} bytes is over the limit of {COMMAND_BYTES_MAX} bytes");
        return Err(ClientError::InvalidInput(why));
    }
    Ok(())
}

/// The read mode of a `Read` body; `None` for other requests.
fn body_mode(body: &ClientRequestBody) -> Option<rcraft_wire::ReadMode> {
    match body {
        ClientRequestBody::Read { mode, .. } => Some(*mode),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::{LogIndex, Membership};

    fn servers() -> Vec<SocketAddr> {
        (1..=3)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    }

    fn ok(term: u64, result: &[u8]) -> ClientResponseBody {
        ClientResponseBody::Ok {
            term: Term(term),
            index: LogIndex(9),
            result: result.to_vec(),
        }
    }

    fn leader_status(id: u64, term: u64) -> NodeStatus {
        NodeStatus {
            id: NodeId(id),
            role: Role::Leader,
            term: Term(term),
            leader: Some(NodeId(id)),
            commit_index: LogIndex(0),
            applied_index: LogIndex(0),
            last_index: LogIndex(0),
            snapshot_index: LogIndex(0),
            voters: vec![],
            learners: vec![],
            membership: Membership::with_voters([NodeId(0)]),
            replication: Vec::new(),
            repairing: None,
            votes_unknown: None,
            lost: None,
        }
    }

    /// Expects `Next::Send` and returns (server, reconnect, the request's session).
    fn expect_send(core: &mut ClientCore, now: Instant) -> (usize, bool, Option<Session>) {
        match core.poll(now) {
            Next::Send {
                server, reconnect, ..
            } => {
                let ClientRequestBody::Write { session, .. } = &core.request().body else {
                    panic!("not a write: {:?}", core.request())
                };
                (server, reconnect, *session)
            }
            other => panic!("expected a send, got {other:?}"),
        }
    }

    #[test]
    fn a_write_registers_a_session_then_leaves_a_silent_leader_for_a_newer_one() {
        let options = ClientOptions {
            attempt_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            leader_probe_after: Some(Duration::from_millis(300)),
            leader_probe_interval: Duration::from_millis(100),
            ..ClientOptions::default()
        };
        let mut core = ClientCore::new(&servers(), options).unwrap();
        let t0 = Instant::now();
        core.begin_write(b"cmd".to_vec(), t0).unwrap();
        // The session's registration goes to the first server and is answered in term 2.
        assert_eq!(
            expect_send(&mut core, t0),
            (0, false, Some(Session::REGISTER))
        );
        core.on_sent(t0);
        let id = core.request().request_id;
        core.on_answer(id, ok(2, &7u64.to_le_bytes()), t0);
        // The write itself, in session 7, to the same node.
        let session = Some(Session {
            client_id: 7,
            sequence: 1,
        });
        assert_eq!(expect_send(&mut core, t0), (0, false, session));
        core.on_sent(t0);
        // Unanswered: nothing to do until the probe is due, then ask the two others.
        let Next::AwaitAnswer { until } = core.poll(t0) else {
            panic!("waits for the answer")
        };
        assert_eq!(until, t0 + Duration::from_millis(300));
        let Next::Probe { servers } = core.poll(until) else {
            panic!("asks who leads")
        };
        assert_eq!(servers, vec![1, 2]);
        // A leader of the same term named by another node is not followed; a newer one is.
        core.on_status(1, &leader_status(1, 2), until);
        assert!(core.awaits_answer());
        core.on_status(2, &leader_status(2, 3), until);
        assert!(!core.awaits_answer());
        assert_eq!(expect_send(&mut core, until), (2, true, session));
        core.on_sent(until);
        // A late answer to the abandoned attempt is ignored; the new one ends the write.
        let id = core.request().request_id;
        core.on_answer(id - 1, ok(2, b"stale"), until);
        core.on_answer(id, ok(3, b"done"), until);
        match core.poll(until) {
            Next::Done(Ok(result)) => assert_eq!(result.response, b"done"),
            other => panic!("{other:?}"),
        }
        assert!(core.is_idle());
        assert_eq!(core.leader(), Some(NodeId(2)));
    }

    #[test]
    fn an_abandoned_write_that_then_times_out_is_unknown() {
        let options = ClientOptions {
            timeout: Duration::from_millis(500),
            attempt_timeout: Duration::from_millis(500),
            leader_probe_after: Some(Duration::from_millis(100)),
            ..ClientOptions::default()
        };
        let mut core = ClientCore::new(&servers()[..2], options).unwrap();
        let t0 = Instant::now();
        core.begin_read(b"q".to_vec(), t0).unwrap();
        assert!(matches!(core.poll(t0), Next::Send { server: 0, .. }));
        core.on_sent(t0);
        let deadline = t0 + Duration::from_millis(500);
        // Reads: an unanswered attempt is a definite failure once the deadline passes.
        match core.poll(deadline) {
            Next::Done(Err(e)) => assert!(e.is_definite(), "{e:?}"),
            other => panic!("{other:?}"),
        }
        core.begin_write(b"w".to_vec(), t0).unwrap();
        let _ = core.poll(t0);
        core.on_sent(t0);
        let id = core.request().request_id;
        core.on_answer(id, ok(1, &5u64.to_le_bytes()), t0);
        let Next::Send { server: asked, .. } = core.poll(t0) else {
            panic!("the write is sent")
        };
        core.on_sent(t0);
        let other = 1 - asked;
        core.on_status(other, &leader_status(other as u64, 4), t0);
        // Sent and abandoned: the outcome of the write is unknown from now on.
        assert!(matches!(core.poll(t0), Next::Send { server, .. } if server == other));
        match core.poll(deadline) {
            Next::Done(Err(e)) => assert!(!e.is_definite(), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
}
