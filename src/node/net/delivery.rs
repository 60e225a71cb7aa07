//! Hands decoded events to the consensus side without ever blocking the network thread.
//!
//! Owned by the network thread. Peer messages that do not fit are dropped and counted. Client
//! events (requests and closes) must not be lost: one that does not fit is held in a backlog,
//! and while the backlog is non-empty every later client event joins it (keeping order) and
//! the loop stops reading client requests. Invariant: the backlog holds at most one request
//! per client connection plus one close per connection, because a connection stops decoding
//! as soon as the backlog is non-empty.
//!
//! Two ways to hand events on ([`EventSink`]): one channel message per event (the public
//! [`super::Network::spawn`], whose users receive `NetEvent`s), or, for the node's consensus
//! thread, one channel message per loop turn holding everything that turn decoded
//! ([`EventBatches`]), bounded by the number of events queued rather than of messages. Either
//! way the consumer is woken once per loop turn ([`Delivery::notify_if_delivered`]).

use super::{NetEvent, NetStats, bump};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use rcraft_wire::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Wakes the consumer of the event channel (the consensus thread's doorbell).
pub(crate) type Notify = Box<dyn Fn() + Send>;

/// Where the network thread's events go.
pub(crate) enum EventSink {
    /// One channel message per event.
    Each(Sender<NetEvent>),
    /// One channel message per loop turn (see [`event_batches`]).
    Batches(BatchSender),
}

/// The sending half of [`event_batches`].
pub(crate) struct BatchSender {
    sender: Sender<Vec<NetEvent>>,
    /// Events sent and not yet taken by the receiver.
    queued: Arc<AtomicUsize>,
    /// Most events queued at once (sent, or gathered for the turn's batch).
    max: usize,
}

/// The receiving half of [`event_batches`]: each message is everything one network-loop
/// turn decoded, in order.
pub(crate) struct EventBatches {
    receiver: Receiver<Vec<NetEvent>>,
    queued: Arc<AtomicUsize>,
}

impl EventBatches {
    /// The next batch, if one is queued.
    pub(crate) fn try_recv(&self) -> Result<Vec<NetEvent>, TryRecvError> {
        let batch = self.receiver.try_recv()?;
        self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        Ok(batch)
    }
}

/// A channel of event batches holding at most `max_events` events in all.
pub(crate) fn event_batches(max_events: usize) -> (BatchSender, EventBatches) {
    // Every batch holds at least one event, so the channel never fills before the count.
    let (sender, receiver) = crossbeam_channel::bounded(max_events.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let sending = BatchSender {
        sender,
        queued: Arc::clone(&queued),
        max: max_events.max(1),
    };
    (sending, EventBatches { receiver, queued })
}

pub(super) struct Delivery {
    sink: EventSink,
    /// Events gathered this loop turn ([`EventSink::Batches`] only).
    batch: Vec<NetEvent>,
    /// Called once per loop turn in which events were queued.
    notify: Notify,
    /// True when events were queued since the last `notify`.
    delivered: bool,
    backlog: VecDeque<NetEvent>,
    pub(super) stats: Arc<NetStats>,
    /// Set once the receiving side hung up; later events are discarded.
    consumer_gone: bool,
}

/// What became of one event offered to the sink.
enum Offered {
    Taken,
    Full(NetEvent),
    Gone,
}

impl Delivery {
    pub(super) fn new(sink: EventSink, notify: Notify, stats: Arc<NetStats>) -> Delivery {
        Delivery {
            sink,
            batch: Vec::new(),
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

    /// Hands on the turn's batch and wakes the consumer once for everything queued since the
    /// last call.
    pub(super) fn notify_if_delivered(&mut self) {
        self.send_batch();
        if std::mem::take(&mut self.delivered) {
            (self.notify)();
        }
    }

    /// Delivers a peer message, or drops and counts it when the channel is full.
    pub(super) fn peer_message(&mut self, message: Message) {
        if self.consumer_gone {
            return;
        }
        match self.offer(NetEvent::Peer(message)) {
            Offered::Taken => {}
            Offered::Full(_) => bump(&self.stats.peer_dropped_events_full, 1),
            Offered::Gone => self.on_consumer_gone(),
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
        match self.offer(event) {
            Offered::Taken => {}
            Offered::Full(event) => self.backlog.push_back(event),
            Offered::Gone => self.on_consumer_gone(),
        }
    }

    /// Moves held-back events into the channel while it has room.
    pub(super) fn retry_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.offer(event) {
                Offered::Taken => {}
                Offered::Full(event) => {
                    self.backlog.push_front(event);
                    return;
                }
                Offered::Gone => {
                    self.on_consumer_gone();
                    return;
                }
            }
        }
    }

    /// Queues one event: sent at once, or added to the turn's batch when there is room.
    fn offer(&mut self, event: NetEvent) -> Offered {
        match &self.sink {
            EventSink::Each(sender) => match sender.try_send(event) {
                Ok(()) => {
                    self.delivered = true;
                    Offered::Taken
                }
                Err(TrySendError::Full(event)) => Offered::Full(event),
                Err(TrySendError::Disconnected(_)) => Offered::Gone,
            },
            EventSink::Batches(sink) => {
                if sink.queued.load(Ordering::Acquire) + self.batch.len() >= sink.max {
                    return Offered::Full(event);
                }
                self.batch.push(event);
                Offered::Taken
            }
        }
    }

    /// Sends the events gathered this turn as one message.
    fn send_batch(&mut self) {
        let EventSink::Batches(sink) = &self.sink else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let count = batch.len();
        // Counted before sending, so the receiver's subtraction never comes first.
        sink.queued.fetch_add(count, Ordering::AcqRel);
        match sink.sender.try_send(batch) {
            Ok(()) => self.delivered = true,
            Err(TrySendError::Disconnected(_)) => {
                sink.queued.fetch_sub(count, Ordering::AcqRel);
                self.on_consumer_gone();
            }
            // Cannot happen (the channel holds as many batches as events are allowed); kept
            // total: the client events wait in the backlog, the peer messages are dropped.
            Err(TrySendError::Full(batch)) => {
                sink.queued.fetch_sub(count, Ordering::AcqRel);
                let mut held = VecDeque::new();
                for event in batch {
                    match event {
                        NetEvent::Peer(_) => bump(&self.stats.peer_dropped_events_full, 1),
                        client => held.push_back(client),
                    }
                }
                held.append(&mut self.backlog);
                self.backlog = held;
            }
        }
    }

    fn on_consumer_gone(&mut self) {
        if !self.consumer_gone {
            log::warn!("network events receiver hung up; discarding inbound events");
        }
        self.consumer_gone = true;
        self.backlog.clear();
        self.batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::net::ClientConnId;
    use rcraft_wire::{ClientRequest, ClientRequestBody, LogIndex, MessageBody, NodeId, Term};
    use std::sync::atomic::AtomicUsize as Counter;

    fn heartbeat(n: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(0),
            term: Term(1),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex(n),
                read_context: n,
            },
        }
    }

    fn request(conn: u64) -> NetEvent {
        NetEvent::Client {
            conn: ClientConnId(conn),
            request: ClientRequest {
                request_id: conn,
                body: ClientRequestBody::Status,
            },
            received: std::time::Instant::now(),
        }
    }

    /// One turn's events arrive as one message behind one ring; the bound counts events:
    /// past it peer messages are dropped and client events wait in order until the
    /// consumer takes a batch.
    #[test]
    fn batches_hold_a_turn_and_the_bound_counts_events() {
        let (sender, batches) = event_batches(3);
        let rings = Arc::new(Counter::new(0));
        let counted = Arc::clone(&rings);
        let notify: Notify = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let stats = Arc::new(NetStats::default());
        let mut delivery = Delivery::new(EventSink::Batches(sender), notify, Arc::clone(&stats));

        delivery.peer_message(heartbeat(1));
        delivery.client_event(request(10));
        assert!(
            batches.try_recv().is_err(),
            "nothing is sent before the turn ends"
        );
        delivery.notify_if_delivered();
        assert_eq!(rings.load(Ordering::SeqCst), 1);

        // The next turn: one event of room left.
        delivery.client_event(request(11));
        delivery.peer_message(heartbeat(2)); // no room: dropped
        delivery.client_event(request(12)); // no room: held back
        assert!(delivery.has_backlog());
        delivery.notify_if_delivered();
        assert_eq!(rings.load(Ordering::SeqCst), 2);
        assert_eq!(stats.snapshot().peer_dropped_events_full, 1);

        let first = batches.try_recv().unwrap();
        assert_eq!(first.len(), 2);
        assert!(matches!(first[0], NetEvent::Peer(_)));
        assert!(matches!(
            first[1],
            NetEvent::Client {
                conn: ClientConnId(10),
                ..
            }
        ));
        // Room again: the held-back request goes in the next turn's batch, after the others.
        delivery.retry_backlog();
        assert!(!delivery.has_backlog());
        delivery.notify_if_delivered();
        let second = batches.try_recv().unwrap();
        let conns: Vec<u64> = second
            .iter()
            .map(|e| match e {
                NetEvent::Client { conn, .. } => conn.0,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(conns, vec![11]);
        let third = batches.try_recv().unwrap();
        assert!(matches!(
            third[..],
            [NetEvent::Client {
                conn: ClientConnId(12),
                ..
            }]
        ));
        // A turn with nothing decoded neither sends nor rings.
        delivery.notify_if_delivered();
        assert_eq!(rings.load(Ordering::SeqCst), 3);
        assert!(batches.try_recv().is_err());
    }
}
