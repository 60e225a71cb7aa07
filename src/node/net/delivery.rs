//! Hands decoded events to the consensus side over the bounded event channel without ever
//! blocking the network thread.
//!
//! Owned by the network thread. Peer messages that do not fit are dropped and counted. Client
//! events (requests and closes) must not be lost: one that does not fit is held in a backlog,
//! and while the backlog is non-empty every later client event joins it (keeping order) and
//! the loop stops reading client requests. Invariant: the backlog holds at most one request
//! per client connection plus one close per connection, because a connection stops decoding
//! as soon as the backlog is non-empty.
//!
//! Events are queued one by one but the consumer is woken once per loop turn
//! ([`Delivery::notify_if_delivered`]), so everything one poll round decoded reaches the
//! consensus thread as one batch behind one wake-up.

use super::{NetEvent, NetStats, bump};
use crossbeam_channel::{Sender, TrySendError};
use rcraft_wire::Message;
use std::collections::VecDeque;
use std::sync::Arc;

/// Wakes the consumer of the event channel (the consensus thread's doorbell).
pub(crate) type Notify = Box<dyn Fn() + Send>;

pub(super) struct Delivery {
    events: Sender<NetEvent>,
    /// Called once per loop turn in which events were queued.
    notify: Notify,
    /// True when events were queued since the last `notify`.
    delivered: bool,
    backlog: VecDeque<NetEvent>,
    pub(super) stats: Arc<NetStats>,
    /// Set once the receiving side hung up; later events are discarded.
    consumer_gone: bool,
}

impl Delivery {
    pub(super) fn new(events: Sender<NetEvent>, notify: Notify, stats: Arc<NetStats>) -> Delivery {
        Delivery {
            events,
            notify,
            delivered: false,
            backlog: VecDeque::new(),
            stats,
            consumer_gone: false,
        }
    }

    /// True while client events are held back; clients must not be read meanwhile.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Wakes the consumer once for everything queued since the last call.
    pub(super) fn notify_if_delivered(&mut self) {
        if std::mem::take(&mut self.delivered) {
            (self.notify)();
        }
    }

    /// Delivers a peer message, or drops and counts it when the channel is full.
    pub(super) fn peer_message(&mut self, message: Message) {
        match self.events.try_send(NetEvent::Peer(message)) {
            Ok(()) => self.delivered = true,
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
            Ok(()) => self.delivered = true,
            Err(TrySendError::Full(event)) => self.backlog.push_back(event),
            Err(TrySendError::Disconnected(_)) => self.on_consumer_gone(),
        }
    }

    /// Moves held-back events into the channel while it has room.
    pub(super) fn retry_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => self.delivered = true,
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
