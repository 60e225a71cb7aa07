//! Hands decoded events to the consensus side over the bounded event channel without ever
//! blocking the network thread.
//!
//! Owned by the network thread. Peer messages that do not fit are dropped and counted. Client
//! events (requests and closes) must not be lost: one that does not fit is held in a backlog,
//! and while the backlog is non-empty every later client event joins it (keeping order) and
//! the loop stops reading client requests. Invariant: the backlog holds at most one request
//! per client connection plus one close per connection, because a connection stops decoding
//! as soon as the backlog is non-empty.

use super::{NetEvent, NetStats, bump};
use crossbeam_channel::{Sender, TrySendError};
use rcraft_wire::Message;
use std::collections::VecDeque;
use std::sync::Arc;

pub(super) struct Delivery {
    events: Sender<NetEvent>,
    backlog: VecDeque<NetEvent>,
    pub(super) stats: Arc<NetStats>,
    /// Set once the receiving side hung up; later events are discarded.
    consumer_gone: bool,
}

impl Delivery {
    pub(super) fn new(events: Sender<NetEvent>, stats: Arc<NetStats>) -> Delivery {
        Delivery {
            events,
            backlog: VecDeque::new(),
            stats,
            consumer_gone: false,
        }
    }

    /// True while client events are held back; clients must not be read meanwhile.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Delivers a peer message, or drops and counts it when the channel is full.
    pub(super) fn peer_message(&mut self, message: Message) {
        match self.events.try_send(NetEvent::Peer(message)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => bump(&self.stats.peer_dropped_events_full, 1),
            Err(TrySendError::Disconnected(_)) => self.on_consumer_gone(),
        }
    }

    /// Delivers a client event now, or holds it until the channel has room.
    pub(super) fn client_event(&mut self, event: NetEvent) {
        if self.consumer_gone {
            return;
        }
        if !self.backlog.is_empty() {
            self.backlog.push_back(event);
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => self.backlog.push_back(event),
            Err(TrySendError::Disconnected(_)) => self.on_consumer_gone(),
        }
    }

    /// Moves held-back events into the channel while it has room.
    pub(super) fn retry_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.on_consumer_gone();
                    return;
                }
            }
        }
    }

    fn on_consumer_gone(&mut self) {
        if !self.consumer_gone {
            log::warn!("network events receiver hung up; discarding inbound events");
        }
        self.consumer_gone = true;
        self.backlog.clear();
    }
}
