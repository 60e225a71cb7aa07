//! The simulated clients: each registers a session and has at most one write in flight,
//! which it retries with the same session and sequence number, at the node it next believes
//! is the leader, whenever the outcome of an attempt is unknown (the node crashed, the entry
//! was overwritten, the answer is overdue, a new leader was named), as `rcraft::Client` does.
//!
//! Owned by [`World`]. Only the current attempt of a write is listened to: an abandoned one
//! may still commit, and then the session table must answer the retry without applying it
//! again, which the state machine and the history check.

use crate::checker::Verdict;
use crate::history::WriteOutcome;
use crate::replica::SimCore;
use crate::state_machine::{Applied, encode_write};
use crate::world::World;
use rcraft::core::{Input, ProposeError, RequestId};
use rcraft::wire::{ClientRequestBody, Session};

/// An attempt older than this without an outcome is retried.
const RETRY_AFTER_MS: u64 = 600;

/// One attempt a node holds for a client: a registration or one send of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The client.
    pub(crate) client: usize,
    /// Which attempt of the client's current operation (grows with every send).
    pub(crate) number: u64,
    /// The write id, or `None` for a registration.
    pub(crate) write_id: Option<u64>,
    /// The request it was sent as (set when it is sent).
    pub(crate) request: RequestId,
}

/// A write in flight.
#[derive(Clone, Debug)]
struct InFlight {
    write_id: u64,
    /// The session it is sent with: the client's id then, and the sequence number.
    session: Session,
    filler: usize,
    sent_at: u64,
    /// The current attempt's outcome is unknown: send it again.
    lost: bool,
    /// Some attempt may be in a log (every attempt sent, but those refused before being
    /// appended).
    maybe_appended: bool,
    /// Some attempt before the current one may be in a log, so a refusal of the current one
    /// is no definite failure.
    maybe_appended_before: bool,
}

/// One client.
#[derive(Clone, Debug, Default)]
pub(crate) struct SimClient {
    /// Its node of choice: it sticks to it until told otherwise (not leader, crashed), so
    /// writes also reach stale leaders.
    pub(crate) target: Option<usize>,
    client_id: Option<u64>,
    /// Registration in flight: sent at.
    registering: Option<u64>,
    next_sequence: u64,
    in_flight: Option<InFlight>,
    /// Number of the current attempt.
    attempt: u64,
}

impl<C: SimCore> World<C> {
    /// Client `client` writes at node `target`: registers first, retries its write in flight
    /// when its outcome is unknown, else starts a new write.
    pub(crate) fn client_write(&mut self, client: usize, target: usize) -> Verdict {
        let now = self.now;
        let c = &mut self.clients[client];
        let Some(client_id) = c.client_id else {
            if c.registering.is_some_and(|at| now < at + RETRY_AFTER_MS) {
                return Ok(());
            }
            c.registering = Some(now);
            c.attempt += 1;
            let attempt = Attempt {
                client,
                number: c.attempt,
                write_id: None,
                request: 0,
            };
            return self.send_attempt(target, attempt, Some(Session::REGISTER), Vec::new());
        };
        if c.in_flight
            .as_ref()
            .is_some_and(|w| w.lost && w.session.client_id != client_id)
        {
            // Its session was forgotten before any attempt may have been appended: the write
            // goes again as a new write of the new session, as `rcraft::Client` does.
            c.next_sequence += 1;
            let sequence = c.next_sequence;
            if let Some(w) = c.in_flight.as_mut() {
                w.session = Session {
                    client_id,
                    sequence,
                };
            }
        }
        let resend = match &c.in_flight {
            Some(w) if w.lost || now >= w.sent_at + RETRY_AFTER_MS => true,
            Some(_) => return Ok(()),
            None => false,
        };
        if !resend {
            let write_id = self.next_write_id;
            self.next_write_id += 1;
            let filler = self.rng.below(40) as usize;
            let c = &mut self.clients[client];
            c.next_sequence += 1;
            c.in_flight = Some(InFlight {
                write_id,
                session: Session {
                    client_id,
                    sequence: c.next_sequence,
                },
                filler,
                sent_at: now,
                lost: false,
                maybe_appended: false,
                maybe_appended_before: false,
            });
            self.history.invoke_write(write_id, now);
        }
        if resend {
            self.retries += 1;
        }
        let c = &mut self.clients[client];
        let w = c.in_flight.as_mut().expect("a write in flight");
        w.lost = false;
        w.sent_at = now;
        w.maybe_appended_before = w.maybe_appended;
        w.maybe_appended = true;
        c.attempt += 1;
        let attempt = Attempt {
            client,
            number: c.attempt,
            write_id: Some(w.write_id),
            request: 0,
        };
        let session = w.session;
        let data = encode_write(w.write_id, w.filler);
        self.send_attempt(target, attempt, Some(session), data)
    }

    fn send_attempt(
        &mut self,
        target: usize,
        mut attempt: Attempt,
        session: Option<Session>,
        data: Vec<u8>,
    ) -> Verdict {
        let id = self.next_request_id;
        self.next_request_id += 1;
        attempt.request = id;
        self.request_client.insert(id, attempt.client);
        self.nodes[target].proposals.insert(id, attempt);
        if !self.clients_over_wire() {
            return self.feed(target, Input::Propose { id, session, data });
        }
        let body = ClientRequestBody::Write {
            session,
            command: data,
        };
        if !self.client_send(attempt.client, target, id, body)? {
            // A cap refused the connection: nothing was sent, so nothing can be appended.
            self.nodes[target].proposals.remove(&id);
            self.connection_refused(id);
            let refused = ProposeError::NotLeader { leader: None };
            return self.attempt_refused(&attempt, &refused);
        }
        Ok(())
    }

    /// The client's connection broke with whatever it had in flight on it: the outcome of
    /// its current write (or registration) is unknown, and it sends it again.
    pub(crate) fn client_connection_lost(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.registering = None;
        if let Some(w) = c.in_flight.as_mut() {
            w.lost = true;
        }
    }

    fn is_current(&self, attempt: &Attempt) -> bool {
        self.clients[attempt.client].attempt == attempt.number
    }

    /// The outcome of `attempt` is unknown (its node crashed, its entry was overwritten):
    /// the client will send it again.
    pub(crate) fn attempt_lost(&mut self, attempt: &Attempt) {
        if !self.is_current(attempt) {
            return;
        }
        let c = &mut self.clients[attempt.client];
        match attempt.write_id {
            None => c.registering = None,
            Some(_) => {
                if let Some(w) = c.in_flight.as_mut() {
                    w.lost = true;
                }
            }
        }
    }

    /// The node refused `attempt` before appending it. Not being the leader is retried (at
    /// the leader named); any other refusal is a definite failure, unless an earlier attempt
    /// may be in some log.
    pub(crate) fn attempt_refused(&mut self, attempt: &Attempt, error: &ProposeError) -> Verdict {
        if !self.is_current(attempt) {
            return Ok(());
        }
        let retry = matches!(error, ProposeError::NotLeader { .. });
        let c = &mut self.clients[attempt.client];
        if let Some(w) = c.in_flight.as_mut() {
            w.maybe_appended = w.maybe_appended_before;
        }
        match (attempt.write_id, c.in_flight.as_mut()) {
            (Some(write_id), Some(w)) if !retry && !w.maybe_appended => {
                c.in_flight = None;
                self.history.complete_write(write_id, WriteOutcome::Failed)
            }
            _ => {
                self.attempt_lost(attempt);
                Ok(())
            }
        }
    }

    /// The node that appended `attempt` applied it (at `index`) with result `applied`.
    pub(crate) fn attempt_applied(
        &mut self,
        attempt: &Attempt,
        index: rcraft::wire::LogIndex,
        applied: &Applied,
    ) -> Verdict {
        if self.tracing() {
            let current = self.is_current(attempt);
            self.note(format!(
                "  client {} write {:?} applied at {index}: {applied:?} (current attempt: {current})",
                attempt.client, attempt.write_id
            ));
        }
        if !self.is_current(attempt) {
            return Ok(());
        }
        let now = self.now;
        let c = &mut self.clients[attempt.client];
        match (attempt.write_id, applied) {
            (None, Applied::Registered(client_id)) => {
                c.client_id = Some(*client_id);
                c.registering = None;
                Ok(())
            }
            (Some(write_id), Applied::Write | Applied::Duplicate) => {
                c.in_flight = None;
                if *applied == Applied::Duplicate {
                    self.duplicates += 1;
                }
                let acked = WriteOutcome::Acked { at: now, index };
                self.history.complete_write(write_id, acked)
            }
            (Some(_), Applied::RefusedDefinite) => {
                // The session is gone: register again. If an earlier attempt may have been
                // applied before it was forgotten, the outcome is unknown and the client moves
                // on; else the write was never applied and goes again in the new session.
                c.client_id = None;
                let Some(w) = c.in_flight.as_mut() else {
                    return Err(format!("client {}: no write in flight", attempt.client));
                };
                if w.maybe_appended_before {
                    c.in_flight = None;
                } else {
                    w.lost = true;
                }
                self.expired += 1;
                Ok(())
            }
            (Some(_), Applied::RefusedUnknown) => {
                if let Some(w) = c.in_flight.as_mut() {
                    w.lost = true;
                }
                Ok(())
            }
            (_, other) => Err(format!(
                "client {}: attempt {} at index {index} was applied as {other:?}",
                attempt.client, attempt.number
            )),
        }
    }
}
