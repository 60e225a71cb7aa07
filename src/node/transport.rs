//! The seam between the node's threads and the network thread, and where replies go.
//!
//! The consensus thread sends peer messages and the consensus and apply threads answer
//! clients through a shared [`Transport`]; API callers of a `NodeHandle` get their answer on
//! their own channel instead. Both kinds of requester are one [`ReplyTo`], so the pending
//! tables never care which kind of caller is waiting.

use super::net::NetSender;
use crossbeam_channel::Sender;
use rcraft_wire::{ClientResponse, ClientResponseBody, Message};
use std::sync::Arc;

pub(crate) use super::net::{ClientConnId, NetEvent};

/// Outbound half of the network: peer messages and client replies. Sends never block; the
/// network may drop peer messages when a peer's queue is full (Raft retransmits).
pub(crate) trait Transport: Send + Sync {
    /// Queues messages to peers (each to its `to`), waking the network thread once.
    fn send_peers(&self, messages: Vec<Message>);
    /// Queues a response to a client connection.
    fn reply(&self, conn: ClientConnId, response: ClientResponse);
    /// The members of the cluster changed (the network thread forgets the data-dir
    /// incarnation of peers that left).
    fn members_changed(&self, _members: std::collections::BTreeSet<rcraft_wire::NodeId>) {}
    /// Queues many responses, waking the network thread once.
    fn reply_all(&self, replies: Vec<(ClientConnId, ClientResponse)>) {
        for (conn, response) in replies {
            self.reply(conn, response);
        }
    }
}

/// Who is waiting for the outcome of a request.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// A client connection of the network thread and the request id it chose.
    Client {
        /// The connection.
        conn: ClientConnId,
        /// Echoed in the response.
        request_id: u64,
    },
    /// A `NodeHandle` caller blocked on this channel (capacity 1; a gone caller is ignored).
    Api(Sender<ClientResponseBody>),
}

/// Delivers outcomes to whoever waits for them.
#[derive(Clone)]
pub(crate) struct Replier {
    transport: Arc<dyn Transport>,
}

impl Replier {
    /// Replies through `transport` for network clients.
    pub(crate) fn new(transport: Arc<dyn Transport>) -> Replier {
        Replier { transport }
    }

    /// Sends every `(to, body)` pair, never blocking (an API caller that gave up is simply
    /// not told); client answers go to the network thread in one hand-off (one wake-up for
    /// the whole batch).
    pub(crate) fn send_all(
        &self,
        replies: impl IntoIterator<Item = (ReplyTo, ClientResponseBody)>,
    ) {
        let mut to_clients = Vec::new();
        for (to, body) in replies {
            match to {
                ReplyTo::Client { conn, request_id } => {
                    to_clients.push((conn, ClientResponse { request_id, body }));
                }
                ReplyTo::Api(sender) => {
                    let _ = sender.try_send(body);
                }
            }
        }
        if !to_clients.is_empty() {
            self.transport.reply_all(to_clients);
        }
    }

    /// The transport, for peer messages.
    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }
}

impl Transport for NetSender {
    fn members_changed(&self, members: std::collections::BTreeSet<rcraft_wire::NodeId>) {
        if NetSender::members_changed(self, members).is_err() {
            log::debug!("membership not told: the network thread stopped");
        }
    }

    fn send_peers(&self, messages: Vec<Message>) {
        // A dropped peer message is retransmitted by Raft; the network thread counts drops.
        NetSender::send_peers(self, messages);
    }

    fn reply(&self, conn: ClientConnId, response: ClientResponse) {
        // Fails only when the network thread stopped, i.e. while the node shuts down.
        if NetSender::reply(self, conn, response).is_err() {
            log::debug!("reply to {conn} dropped: the network thread stopped");
        }
    }

    fn reply_all(&self, replies: Vec<(ClientConnId, ClientResponse)>) {
        let count = replies.len();
        if NetSender::reply_all(self, replies).is_err() {
            log::debug!("{count} replies dropped: the network thread stopped");
        }
    }
}
