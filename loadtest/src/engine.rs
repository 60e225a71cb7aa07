//! The event-loop engine: many clients per thread over non-blocking sockets (mio), so the
//! load generator costs little CPU next to the cluster it measures.
//!
//! Each client is what `rcraft::client::Client` is (its own connection, its own session, one
//! request in flight, leader discovery, retries across leader changes, the failover probe),
//! because it is driven by the same decisions: an `rcraft::client::ClientCore` per client.
//! The engine only does the I/O the core asks for: connect and greet, write the request,
//! read frames, sleep through back-off pauses, and ask the other nodes who leads. Those
//! status probes are shared by the thread's clients: one probe per node at a time, and every
//! answer is shown to every waiting client.
//!
//! Closed loop (next request on reply) or open loop (`--rate`: a fixed schedule per client,
//! latency counted from the scheduled time). Every operation is recorded in the client's
//! [`ClientLog`] and the shared [`Recorder`](crate::stats::Recorder), as the blocking clients
//! do, so the history checker sees all of them.
//!
//! Threads: each engine thread owns its clients, their sockets and its `Poll`; it shares only
//! the run's [`RunShared`]. Invariant: a client's connection carries at most the request its
//! core has in flight (the core tells the engine to close a connection whose attempt ended
//! without an answer).

use crate::history::key_name;
use crate::limits::{ENGINE_POLL_MAX, ERROR_BACKOFF};
use crate::oplog::{ClientLog, OpRecord, Outcome, Request, Value};
use crate::stats::OpOutcome;
use crate::workload::{Rng, RunShared, WorkloadSpec, draw_request};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rcraft::client::{
    ClientCore, ClientError, ClientOptions, ClientResult, Next, check_handshake, handshake,
    handshake_error,
};
use rcraft::kv::{KvCommand, KvResponse};
use rcraft::node::net::stream::Stream;
use rcraft::wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, FRAME_BYTES_MAX, FrameDecoder,
    HANDSHAKE_BYTES, NodeStatus, encode_client_request,
};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read per `read` call (one buffer per thread).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Tokens from here on are the status probes' (one per server); below, clients'.
const PROBE_TOKEN_BASE: usize = 1 << 30;

/// How the engine reaches the cluster.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// Node addresses in id order.
    pub addrs: Vec<SocketAddr>,
    /// The clients' options (deadline, attempt timeout, probes, cluster id).
    pub options: ClientOptions,
    /// Engine threads; the clients are dealt out among them.
    pub threads: usize,
}

/// Starts the engine threads; each returns the logs of its clients when the stop flag is
/// set and their last operations have ended.
pub fn spawn_engine(
    spec: WorkloadSpec,
    engine: &EngineSpec,
    shared: Arc<RunShared>,
) -> Vec<JoinHandle<Vec<ClientLog>>> {
    let threads = engine.threads.clamp(1, spec.clients.max(1));
    (0..threads)
        .map(|thread| {
            let clients: Vec<usize> = (thread..spec.clients).step_by(threads).collect();
            let (engine, shared) = (engine.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("engine-{thread}"))
                .spawn(
                    move || match EngineThread::new(spec, &engine, &shared, &clients) {
                        Ok(mut this) => {
                            this.run();
                            this.clients.into_iter().map(|c| c.log).collect()
                        }
                        Err(e) => {
                            log::error!("engine thread {thread}: {e}");
                            Vec::new()
                        }
                    },
                )
                .expect("spawning an engine thread")
        })
        .collect()
}

/// One connection of a client, or of a probe.
struct Connection {
    /// TCP, or TLS over it (`--cacert`).
    stream: Stream,
    /// Index into the server list.
    server: usize,
    /// False until the TCP connect completed.
    connected: bool,
    /// The node's handshake, until all of it arrived.
    theirs: Vec<u8>,
    decoder: FrameDecoder,
    /// Bytes to write (our handshake, then the request) from `written` on.
    out: Vec<u8>,
    written: usize,
    /// True while `out` holds a request not yet fully written.
    request_unsent: bool,
    /// When the connection was opened.
    opened: Instant,
    /// Whether the socket is registered for writability too: only while connecting or
    /// while `out` waits for room, since on loopback every acknowledgement would otherwise
    /// wake the thread once more per request.
    writable_interest: bool,
}

impl Connection {
    fn open(
        poll: &Poll,
        token: Token,
        address: SocketAddr,
        server: usize,
        options: &ClientOptions,
        now: Instant,
    ) -> io::Result<Connection> {
        let tcp = TcpStream::connect(address)?;
        tcp.set_nodelay(true)?;
        let mut stream = Stream::client(tcp, options.tls.as_ref(), address)?;
        poll.registry().register(
            stream.tcp_mut(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(Connection {
            stream,
            server,
            connected: false,
            theirs: Vec::with_capacity(HANDSHAKE_BYTES),
            decoder: FrameDecoder::new(FRAME_BYTES_MAX),
            out: handshake(options),
            written: 0,
            request_unsent: false,
            opened: now,
            writable_interest: true,
        })
    }

    /// Registers for writability exactly while it is needed (see `writable_interest`).
    fn settle_interest(&mut self, poll: &Poll, token: Token) -> io::Result<()> {
        let wanted = !self.connected || self.written < self.out.len() || self.stream.wants_write();
        if wanted == self.writable_interest {
            return Ok(());
        }
        let interest = match wanted {
            true => Interest::READABLE | Interest::WRITABLE,
            false => Interest::READABLE,
        };
        poll.registry()
            .reregister(self.stream.tcp_mut(), token, interest)?;
        self.writable_interest = wanted;
        Ok(())
    }

    fn greeted(&self) -> bool {
        self.theirs.len() == HANDSHAKE_BYTES
    }

    /// Checks whether a pending connect completed; `Err` when it failed.
    fn check_connected(&mut self) -> io::Result<()> {
        if self.connected {
            return Ok(());
        }
        if let Some(e) = self.stream.tcp().take_error()? {
            return Err(e);
        }
        match self.stream.tcp().peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes what it can of `out`. Returns true when a request was thereby fully written.
    fn flush(&mut self) -> io::Result<bool> {
        if !self.connected {
            return Ok(false);
        }
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // TLS records still waiting for the socket (a no-op for plain TCP).
        self.stream.flush()?;
        self.out.clear();
        self.written = 0;
        Ok(std::mem::take(&mut self.request_unsent))
    }

    /// Reads everything available into the handshake and the frame decoder. `Err` when the
    /// connection closed or failed.
    fn fill(&mut self, chunk: &mut [u8], options: &ClientOptions, drain: bool) -> io::Result<()> {
        loop {
            match self.stream.read(chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                // A short read emptied the socket's buffer: whatever arrives next raises a
                // new readiness edge, so no read is spent on learning it would block (unless
                // the peer closed, which raises no further edge).
                Ok(n) if n < chunk.len() && !drain && self.stream.short_read_drains() => {
                    return self.take_in(&chunk[..n], options);
                }
                Ok(n) => self.take_in(&chunk[..n], options)?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn take_in(&mut self, mut bytes: &[u8], options: &ClientOptions) -> io::Result<()> {
        if !self.greeted() {
            let take = (HANDSHAKE_BYTES - self.theirs.len()).min(bytes.len());
            self.theirs.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.greeted() {
                let theirs: [u8; HANDSHAKE_BYTES] =
                    self.theirs.as_slice().try_into().expect("length checked");
                check_handshake(&theirs, options)?;
            }
        }
        if !bytes.is_empty() {
            self.decoder.push(bytes);
        }
        Ok(())
    }

    /// The next response decoded, if a whole one arrived.
    fn next_response(&mut self) -> Result<Option<(u64, ClientResponseBody)>, String> {
        let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let response = frame.to_client_response().map_err(|e| e.to_string())?;
        Ok(Some((response.request_id, response.body)))
    }
}

/// The operation a client has in flight, for its record.
#[derive(Clone, Copy)]
struct Current {
    key: u64,
    request: Request,
    call_ns: u64,
    /// When it was meant to start (open loop: its scheduled time), for latency.
    intended: Instant,
}

/// One client: its core, connection and workload state.
struct EngineClient {
    /// The client's number in the run.
    number: usize,
    core: ClientCore,
    connection: Option<Connection>,
    rng: Rng,
    counter: u64,
    log: ClientLog,
    current: Option<Current>,
    /// Open loop: the scheduled time of the next operation.
    due: Instant,
    /// When the client must be looked at again (a deadline, a pause, the next start).
    wake_at: Option<Instant>,
    /// No new operation starts before this (after a definite error).
    resume_at: Option<Instant>,
}

/// A status probe in flight to one server.
struct Probe {
    connection: Connection,
    request_id: u64,
}

/// One engine thread.
struct EngineThread<'a> {
    spec: WorkloadSpec,
    options: ClientOptions,
    shared: &'a RunShared,
    poll: Poll,
    clients: Vec<EngineClient>,
    /// Per server: the status probe in flight, if any.
    probes: Vec<Option<Probe>>,
    next_probe_id: u64,
    interval: Option<Duration>,
    chunk: Box<[u8]>,
}

impl<'a> EngineThread<'a> {
    fn new(
        spec: WorkloadSpec,
        engine: &EngineSpec,
        shared: &'a RunShared,
        numbers: &[usize],
    ) -> io::Result<EngineThread<'a>> {
        let interval = spec
            .rate_per_client
            .map(|rate| Duration::from_secs_f64(1.0 / rate));
        let mut clients = Vec::with_capacity(numbers.len());
        for &number in numbers {
            let core = ClientCore::new(&engine.addrs, engine.options.clone())
                .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
            let mut rng = Rng::new(spec.run_id ^ (number as u64 + 1));
            // Spread the open-loop clients over one interval so they do not fire together.
            let due = shared.start + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.next_f64()));
            clients.push(EngineClient {
                number,
                core,
                connection: None,
                rng,
                counter: 0,
                log: ClientLog::new(spec.mix.cas > 0.0),
                current: None,
                due,
                wake_at: Some(Instant::now()),
                resume_at: None,
            });
        }
        Ok(EngineThread {
            spec,
            options: engine.options.clone(),
            shared,
            poll: Poll::new()?,
            clients,
            probes: (0..engine.addrs.len()).map(|_| None).collect(),
            next_probe_id: 1,
            interval,
            chunk: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
        })
    }

    /// Runs until the stop flag is set and every client's last operation has ended.
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if self.shared.stopping() && self.clients.iter().all(|c| c.core.is_idle()) {
                return;
            }
            let wake = self.clients.iter().filter_map(|c| c.wake_at).min();
            let timeout = wake
                .map_or(ENGINE_POLL_MAX, |w| w.saturating_duration_since(now))
                .min(ENGINE_POLL_MAX);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                log::error!("engine poll failed: {e}");
                return;
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token().0;
                if token >= PROBE_TOKEN_BASE {
                    self.on_probe_event(token - PROBE_TOKEN_BASE, now);
                } else {
                    let drain = event.is_read_closed() || event.is_error();
                    self.on_client_event(token, drain, now);
                }
            }
            self.expire_probes(now);
            for index in 0..self.clients.len() {
                let due = self.clients[index].wake_at.is_some_and(|w| w <= now);
                if due || self.shared.stopping() && self.clients[index].core.is_idle() {
                    self.drive(index, now);
                }
            }
        }
    }

    /// Socket readiness on client `index`'s connection; `drain` when the peer closed or the
    /// socket failed (read until it would block).
    fn on_client_event(&mut self, index: usize, drain: bool, now: Instant) {
        let options = &self.options;
        let client = &mut self.clients[index];
        let Some(connection) = client.connection.as_mut() else {
            return;
        };
        let sent_before = !connection.request_unsent;
        let poll = &self.poll;
        let result = connection
            .check_connected()
            .and_then(|()| connection.flush())
            .and_then(|sent| {
                connection
                    .fill(&mut self.chunk, options, drain)
                    .map(|()| sent)
            })
            .and_then(|sent| {
                connection
                    .settle_interest(poll, Token(index))
                    .map(|()| sent)
            });
        match result {
            Ok(sent) => {
                if sent {
                    client.core.on_sent(now);
                }
                loop {
                    match connection.next_response() {
                        Ok(Some((request_id, body))) => {
                            client.core.on_answer(request_id, body, now);
                        }
                        Ok(None) => break,
                        Err(why) => {
                            client.connection = None;
                            client.core.on_lost(why, now);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let connection = client.connection.take().expect("matched above");
                if !connection.greeted() {
                    let waited = now.duration_since(connection.opened);
                    let e = handshake_error(e, waited, options.cluster_id);
                    client.core.on_connect_failed(e, now);
                } else if !sent_before {
                    client.core.on_send_failed(e.to_string(), now);
                } else {
                    client.core.on_lost(e.to_string(), now);
                }
            }
        }
        self.drive(index, now);
    }

    /// Does what client `index`'s core says until it waits for something.
    fn drive(&mut self, index: usize, now: Instant) {
        loop {
            if self.clients[index].core.is_idle() && !self.start_next(index, now) {
                return;
            }
            let client = &mut self.clients[index];
            match client.core.poll(now) {
                Next::Done(result) => {
                    self.finish(index, result, now);
                }
                Next::Sleep { until } | Next::AwaitAnswer { until } => {
                    client.wake_at = Some(until);
                    return;
                }
                Next::Send {
                    server,
                    deadline: _,
                    reconnect,
                } => self.send(index, server, reconnect, now),
                Next::Probe { servers } => {
                    for server in servers {
                        self.start_probe(server, now);
                    }
                }
            }
        }
    }

    /// Starts client `index`'s next operation, if the run and its schedule allow; false
    /// when it is to wait (its `wake_at` says until when).
    fn start_next(&mut self, index: usize, now: Instant) -> bool {
        let client = &mut self.clients[index];
        if self.shared.stopping() {
            client.wake_at = None;
            return false;
        }
        if let Some(resume) = client.resume_at.filter(|&r| r > now) {
            client.wake_at = Some(resume);
            return false;
        }
        let intended = match self.interval {
            Some(_) if client.due > now => {
                client.wake_at = Some(client.due);
                return false;
            }
            Some(interval) => {
                let intended = client.due;
                client.due += interval;
                intended
            }
            None => now,
        };
        let key = client.rng.next_u64() % self.spec.keys;
        let request = draw_request(
            &self.spec.mix,
            &mut client.rng,
            &client.log,
            key,
            client.number,
            &mut client.counter,
        );
        let (is_read, command) = kv_command(&self.spec, key, request);
        let begun = match is_read {
            true => client.core.begin_read(command, now),
            false => client.core.begin_write(command, now),
        };
        client.current = Some(Current {
            key,
            request,
            call_ns: self.shared.elapsed_ns(),
            intended,
        });
        if let Err(e) = begun {
            // Refused before sending (e.g. a value over the limit): definite.
            self.record(index, Outcome::Failed, None);
            log::debug!("client {}: {e}", self.clients[index].number);
            return false;
        }
        true
    }

    /// Sends client `index`'s request to `server`, opening a connection first if needed.
    fn send(&mut self, index: usize, server: usize, reconnect: bool, now: Instant) {
        let options = &self.options;
        let client = &mut self.clients[index];
        if reconnect
            || client
                .connection
                .as_ref()
                .is_some_and(|c| c.server != server)
        {
            client.connection = None;
        }
        if client.connection.is_none() {
            let address = client.core.servers()[server];
            match Connection::open(&self.poll, Token(index), address, server, options, now) {
                Ok(connection) => client.connection = Some(connection),
                Err(e) => return client.core.on_connect_failed(e, now),
            }
        }
        let connection = client.connection.as_mut().expect("opened above");
        if let Err(e) = encode_client_request(client.core.request(), &mut connection.out) {
            return client
                .core
                .on_send_failed(format!("cannot encode: {e}"), now);
        }
        connection.request_unsent = true;
        let flushed = connection
            .check_connected()
            .and_then(|()| connection.flush())
            .and_then(|sent| {
                connection
                    .settle_interest(&self.poll, Token(index))
                    .map(|()| sent)
            });
        match flushed {
            Ok(true) => client.core.on_sent(now),
            Ok(false) => {}
            Err(e) => {
                client.connection = None;
                client.core.on_send_failed(e.to_string(), now);
            }
        }
    }

    /// Client `index`'s operation ended with `result`: record it.
    fn finish(&mut self, index: usize, result: rcraft::client::Result<ClientResult>, now: Instant) {
        let Some(current) = self.clients[index].current else {
            return;
        };
        let (outcome, term) = outcome_of(current.request, result);
        let counted = self.record(index, outcome, term);
        if counted == OpOutcome::DefiniteError {
            // The cluster said no (e.g. no leader yet): do not spin on it.
            self.clients[index].resume_at = Some(now + ERROR_BACKOFF);
        }
    }

    /// Records client `index`'s current operation with `outcome`.
    fn record(&mut self, index: usize, outcome: Outcome, term: Option<u64>) -> OpOutcome {
        let client = &mut self.clients[index];
        let current = client.current.take().expect("an operation was started");
        let op = OpRecord {
            client: client.number as u32,
            key: current.key,
            request: current.request,
            outcome,
            call_ns: current.call_ns,
            return_ns: self.shared.elapsed_ns(),
        };
        let in_history = self.shared.admit_to_history(op.call_ns);
        let counted = client.log.record(op, term, in_history);
        self.shared
            .recorder
            .record(client.number, counted, current.intended.elapsed());
        counted
    }

    /// Asks `server` for its status unless a probe to it is already in flight. Only the
    /// servers of the run's list are probed (a client may have learnt more from hints).
    fn start_probe(&mut self, server: usize, now: Instant) {
        if self.probes.get(server).is_none_or(Option::is_some) {
            return;
        }
        let address = self.options_servers()[server];
        let token = Token(PROBE_TOKEN_BASE + server);
        let Ok(mut connection) =
            Connection::open(&self.poll, token, address, server, &self.options, now)
        else {
            return;
        };
        self.next_probe_id += 1;
        let request = ClientRequest {
            request_id: self.next_probe_id,
            body: ClientRequestBody::Status,
        };
        if encode_client_request(&request, &mut connection.out).is_err() {
            return;
        }
        connection.request_unsent = true;
        self.probes[server] = Some(Probe {
            connection,
            request_id: request.request_id,
        });
    }

    /// The server list of the clients (they all start from the same one; hints may add
    /// addresses to a client's list, and probes ask only the ones every client knows).
    fn options_servers(&self) -> &[SocketAddr] {
        self.clients
            .first()
            .map_or(&[][..], |c| &c.core.servers()[..self.probes.len()])
    }

    /// Socket readiness on the probe to `server`.
    fn on_probe_event(&mut self, server: usize, now: Instant) {
        let Some(probe) = self.probes.get_mut(server).and_then(Option::as_mut) else {
            return;
        };
        let connection = &mut probe.connection;
        let read = connection
            .check_connected()
            .and_then(|()| connection.flush())
            .and_then(|_| connection.fill(&mut self.chunk, &self.options, true));
        let status = match (read, connection.next_response()) {
            (_, Ok(Some((id, ClientResponseBody::Status(status))))) if id == probe.request_id => {
                Some(*status)
            }
            (Ok(()), Ok(None)) => return,
            _ => None,
        };
        self.probes[server] = None;
        if let Some(status) = status {
            self.show_status(server, &status, now);
        }
    }

    /// Shows a node's status to every client waiting for an answer.
    fn show_status(&mut self, server: usize, status: &NodeStatus, now: Instant) {
        for index in 0..self.clients.len() {
            let client = &mut self.clients[index];
            if client.core.awaits_answer() {
                client.core.on_status(server, status, now);
                if !client.core.awaits_answer() {
                    self.drive(index, now);
                }
            }
        }
    }

    /// Drops probes that took longer than the probe interval.
    fn expire_probes(&mut self, now: Instant) {
        let limit = self.options.leader_probe_interval;
        for probe in &mut self.probes {
            if probe
                .as_ref()
                .is_some_and(|p| now.duration_since(p.connection.opened) > limit)
            {
                *probe = None;
            }
        }
    }
}

/// The KV store's bytes for `request` on `key`: `(true, query)` for a read, `(false,
/// command)` for a write.
pub fn kv_command(spec: &WorkloadSpec, key: u64, request: Request) -> (bool, Vec<u8>) {
    let key = key_name(spec.run_id, key).into_bytes();
    let size = spec.value_size;
    let command = match request {
        Request::Get => return (true, KvCommand::Get { key }.encode()),
        Request::Put(id) => KvCommand::Put {
            key,
            value: id.value(size).into_bytes(),
        },
        Request::Delete => KvCommand::Delete { key },
        Request::Cas { expected, new } => KvCommand::Cas {
            key,
            expected: expected.to_bytes(size),
            new: new.value(size).into_bytes(),
        },
    };
    (false, command.encode())
}

/// How a request that was answered `Ok` with the store's `result` ended, with the entry's
/// term for writes.
pub fn outcome_of_answer(request: Request, term: u64, result: &[u8]) -> (Outcome, Option<u64>) {
    let outcome = match (request, KvResponse::decode(result)) {
        (Request::Get, Ok(KvResponse::Value(value))) => {
            return (Outcome::Read(Value::from_bytes(value.as_deref())), None);
        }
        (Request::Put(_) | Request::Delete, Ok(KvResponse::Done)) => Outcome::Done,
        (Request::Cas { .. }, Ok(KvResponse::Cas { swapped: true, .. })) => Outcome::Swapped,
        (Request::Cas { .. }, Ok(KvResponse::Cas { current, .. })) => {
            Outcome::NotSwapped(Value::from_bytes(current.as_deref()))
        }
        // The entry committed but the store refused it: the store did not change.
        (_, Ok(KvResponse::Error(_))) => return (Outcome::Failed, None),
        _ if request.is_write() => return (Outcome::Unknown, None),
        _ => return (Outcome::Failed, None),
    };
    (outcome, Some(term))
}

/// How an operation ended, from the client core's result.
fn outcome_of(
    request: Request,
    result: Result<ClientResult, ClientError>,
) -> (Outcome, Option<u64>) {
    match result {
        Ok(answer) => outcome_of_answer(request, answer.term.0, &answer.response),
        Err(e) if e.is_definite() || !request.is_write() => (Outcome::Failed, None),
        Err(_) => (Outcome::Unknown, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_server::FakeNode;
    use crate::mix::Mix;
    use crate::oplog::OpRecord;
    use std::sync::atomic::Ordering;

    /// Waits (at most a minute) until `condition` holds.
    fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn clients_follow_leader_changes_and_leave_a_paused_leader() {
        let cluster_id = rcraft::config::CLUSTER_ID_DEFAULT;
        let (nodes, leadership) = FakeNode::cluster(cluster_id, 3);
        let clients = 16;
        let spec = WorkloadSpec {
            clients,
            keys: 20,
            value_size: 16,
            mix: Mix::reads_and_puts(0.3),
            rate_per_client: None,
            run_id: 5,
        };
        // Attempts as long as the deadline: only the failover probe can leave a paused node.
        let options = ClientOptions {
            timeout: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(120),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            leader_probe_after: Some(Duration::from_millis(50)),
            leader_probe_interval: Duration::from_millis(50),
            ..ClientOptions::default()
        };
        let engine = EngineSpec {
            addrs: nodes.iter().map(|n| n.addr).collect(),
            options,
            threads: 2,
        };
        let shared = Arc::new(RunShared::new());
        let handles = spawn_engine(spec, &engine, shared.clone());
        let served = |i: usize| nodes[i].served.load(Ordering::Relaxed);
        wait_for("node 0 serves", || served(0) > 100);
        // A leader change the clients learn from NotLeader hints (term 2).
        leadership.elect(1);
        wait_for("node 1 serves", || served(1) > 100);
        // The leader stops answering and node 2 takes over (term 3): the clients' requests at
        // node 1 are never answered, and their attempts last two minutes.
        leadership.pause(1);
        leadership.elect(2);
        wait_for("node 2 serves", || served(2) > 100);
        shared.stop.store(true, Ordering::Relaxed);
        let logs: Vec<ClientLog> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(logs.len(), clients);

        let ops: Vec<OpRecord> = logs.iter().flat_map(|l| l.ops.iter().copied()).collect();
        let (_, counts) = shared.recorder.totals();
        let recorded = counts.writes + counts.reads + counts.errors + counts.unknown;
        assert_eq!(
            recorded,
            ops.len() as u64,
            "every operation is in the history"
        );
        // Only requests in flight at node 1 when it stopped have unknown outcomes.
        assert!(counts.unknown <= clients as u64, "{counts:?}");
        let terms: Vec<u64> = logs
            .iter()
            .flat_map(|l| l.writes.iter().filter_map(|w| w.term))
            .collect();
        for term in [1, 2, 3] {
            assert!(terms.contains(&term), "writes acknowledged in term {term}");
        }
        let checked = crate::linearizability::check(ops, None);
        assert_eq!(checked.linearizable(), Some(true));
    }

    #[test]
    fn open_loop_clients_keep_their_schedule() {
        let node = FakeNode::start(rcraft::config::CLUSTER_ID_DEFAULT);
        let spec = WorkloadSpec {
            clients: 4,
            keys: 10,
            value_size: 16,
            mix: Mix::reads_and_puts(0.0),
            rate_per_client: Some(50.0),
            run_id: 6,
        };
        let engine = EngineSpec {
            addrs: vec![node.addr],
            options: crate::backend::client_options(Duration::from_secs(5)),
            threads: 1,
        };
        let shared = Arc::new(RunShared::new());
        let handles = spawn_engine(spec, &engine, shared.clone());
        // Each client may start at most one operation per 20 ms of its schedule.
        wait_for("writes", || shared.recorder.totals().1.writes >= 8);
        shared.stop.store(true, Ordering::Relaxed);
        let elapsed = shared.start.elapsed().as_secs_f64();
        let logs: Vec<ClientLog> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let started: usize = logs.iter().map(|l| l.ops.len()).sum();
        let allowed = 4.0 * (elapsed * 50.0 + 1.0);
        assert!(
            started as f64 <= allowed,
            "{started} operations in {elapsed} s"
        );
    }
}
