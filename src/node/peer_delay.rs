//! Fault injection for tests only: every peer message of this node leaves late, as over a
//! slow network card or a congested uplink, without `tc netem` (the network half of the
//! gray-failure test, `tests/cli_gray_failure.rs`).
//!
//! Off unless `rcraft serve` starts with [`PEER_DELAY_FAILPOINT`] set to a number of
//! milliseconds; the node then warns that it runs with it. [`DelayedPeers`] wraps the node's
//! [`Transport`]: peer messages go through a delay line (a bounded channel and a thread of
//! its own that hands each batch on once it is due, in order, so the delay adds to every
//! message without serializing them), client replies go straight through. The thread ends
//! when the wrapper is dropped (its channel closes), and the drop waits for it.
//!
//! Invariant: batches leave in the order they came, each no earlier than its due time.

use super::limits::PEER_DELAY_QUEUE_DEPTH;
use super::transport::{ClientConnId, Transport};
use crossbeam_channel::{Receiver, Sender};
use rcraft_wire::{ClientResponse, Message, NodeId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Environment variable of the fault injection: a number of milliseconds by which every
/// peer message of the node is late. Unset or empty, it is off; anything but a number up to
/// [`PEER_DELAY_FAILPOINT_MAX_MS`] refuses to start.
pub(crate) const PEER_DELAY_FAILPOINT: &str = "RCRAFT_FAILPOINT_PEER_DELAY_MS";
/// Largest delay [`PEER_DELAY_FAILPOINT`] takes: a minute.
pub(crate) const PEER_DELAY_FAILPOINT_MAX_MS: u64 = 60_000;

/// A fault-injection variable set to something that is not a delay it takes; the node does
/// not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailpointError {
    /// The environment variable.
    pub variable: &'static str,
    /// What it was set to.
    pub value: String,
    /// The largest delay it takes, ms.
    pub max_ms: u64,
}

impl std::fmt::Display for FailpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} is not a number of milliseconds from 0 to {}",
            self.variable, self.value, self.max_ms
        )
    }
}

impl std::error::Error for FailpointError {}

/// Reads the delay of the fault injection `name` (milliseconds, up to `max_ms`): `None` when
/// unset, empty or 0; an error naming the variable for anything else.
pub(crate) fn failpoint_delay(
    name: &'static str,
    max_ms: u64,
) -> Result<Option<Duration>, FailpointError> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) => parse_delay(name, &value.to_string_lossy(), max_ms),
    }
}

/// [`failpoint_delay`] of the text `text` of the variable `name`.
fn parse_delay(
    name: &'static str,
    text: &str,
    max_ms: u64,
) -> Result<Option<Duration>, FailpointError> {
    let millis = match text.trim() {
        "" => 0,
        number => (number.parse::<u64>().ok())
            .filter(|ms| *ms <= max_ms)
            .ok_or_else(|| FailpointError {
                variable: name,
                value: text.to_string(),
                max_ms,
            })?,
    };
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

/// A [`Transport`] whose peer messages leave `delay` late (see the module header).
pub(crate) struct DelayedPeers {
    inner: Arc<dyn Transport>,
    delay: Duration,
    /// `None` only while dropping.
    line: Option<Sender<(Instant, Vec<Message>)>>,
    thread: Option<JoinHandle<()>>,
}

impl DelayedPeers {
    /// Starts the delay line in front of `inner`.
    pub(crate) fn spawn(inner: Arc<dyn Transport>, delay: Duration) -> std::io::Result<Self> {
        let (line, due) = crossbeam_channel::bounded(PEER_DELAY_QUEUE_DEPTH);
        let out = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("rcraft-peer-delay".to_string())
            .spawn(move || hand_on_when_due(&due, out.as_ref()))?;
        Ok(DelayedPeers {
            inner,
            delay,
            line: Some(line),
            thread: Some(thread),
        })
    }
}

/// The delay line's thread: each batch goes on once due, in order.
fn hand_on_when_due(due: &Receiver<(Instant, Vec<Message>)>, out: &dyn Transport) {
    while let Ok((at, messages)) = due.recv() {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        out.send_peers(messages);
    }
}

impl Transport for DelayedPeers {
    fn send_peers(&self, messages: Vec<Message>) {
        // A full line drops the batch, as a full peer queue does (Raft retransmits).
        if let Some(line) = &self.line {
            let _ = line.try_send((Instant::now() + self.delay, messages));
        }
    }

    fn reply(&self, conn: ClientConnId, response: ClientResponse) {
        self.inner.reply(conn, response);
    }

    fn members_changed(&self, members: BTreeSet<NodeId>) {
        self.inner.members_changed(members);
    }

    fn reply_all(&self, replies: Vec<(ClientConnId, ClientResponse)>) {
        self.inner.reply_all(replies);
    }
}

impl Drop for DelayedPeers {
    fn drop(&mut self) {
        self.line = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use rcraft_wire::{MessageBody, Term};

    /// Records when each peer message was handed on.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<(Instant, u64)>>,
    }

    impl Transport for Recorder {
        fn send_peers(&self, messages: Vec<Message>) {
            let now = Instant::now();
            let mut sent = self.sent.lock();
            sent.extend(messages.iter().map(|m| (now, m.to.0)));
        }

        fn reply(&self, _: ClientConnId, _: ClientResponse) {}
    }

    fn message(to: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(to),
            term: Term(1),
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn peer_messages_leave_late_and_in_order() {
        let recorder = Arc::new(Recorder::default());
        let delay = Duration::from_millis(30);
        let delayed = DelayedPeers::spawn(recorder.clone(), delay).expect("thread");
        let start = Instant::now();
        delayed.send_peers(vec![message(2), message(3)]);
        delayed.send_peers(vec![message(4)]);
        drop(delayed);
        let sent = recorder.sent.lock().clone();
        let to: Vec<u64> = sent.iter().map(|(_, to)| *to).collect();
        assert_eq!(
            to,
            [2, 3, 4],
            "every message handed on before the drop returns, in order"
        );
        assert!(sent.iter().all(|(at, _)| *at >= start + delay));
    }

    #[test]
    fn a_bad_delay_is_refused_with_the_variable_named() {
        let error = parse_delay("RCRAFT_X", "soon", 100).expect_err("not a number");
        let expected = FailpointError {
            variable: "RCRAFT_X",
            value: "soon".to_string(),
            max_ms: 100,
        };
        assert_eq!(error, expected);
        assert_eq!(
            error.to_string(),
            "RCRAFT_X=\"soon\" is not a number of milliseconds from 0 to 100"
        );
        assert!(
            parse_delay("RCRAFT_X", "101", 100).is_err(),
            "over the maximum"
        );
        assert!(parse_delay("RCRAFT_X", "-1", 100).is_err());
        let forty = Some(Duration::from_millis(40));
        assert_eq!(parse_delay("RCRAFT_X", " 40 ", 100), Ok(forty));
        assert_eq!(parse_delay("RCRAFT_X", "0", 100), Ok(None));
        assert_eq!(parse_delay("RCRAFT_X", "", 100), Ok(None));
    }
}
