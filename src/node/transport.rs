//! The seam between the node's threads and the network thread, and where replies go.
//!
//! The consensus thread sends peer messages and the consensus and apply threads answer
//! clients through a shared [`Transport`]; API callers of a `NodeHandle` get their answer on
//! their own channel instead. Both kinds of requester are one [`ReplyTo`], so the pending
//! tables never care which kind of caller is waiting.

use crossbeam_channel::Sender;
use rcraft_wire::{ClientResponse, ClientResponseBody, Message};
use std::sync::Arc;

/// Identifies one client connection of the network thread.
pub(crate) type ClientConnId = u64;

/// Outbound half of the network: peer messages and client replies. Sends never block; the
/// network may drop peer messages when a peer's queue is full (Raft retransmits).
pub(crate) trait Transport: Send + Sync {
    /// Queues a message to a peer.
    fn send_peer(&self, message: Message);
    /// Queues a response to a client connection.
    fn reply(&self, conn: ClientConnId, response: ClientResponse);
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

    /// Sends `body` to `to`. Never blocks: an API caller that gave up is simply not told.
    pub(crate) fn send(&self, to: ReplyTo, body: ClientResponseBody) {
        match to {
            ReplyTo::Client { conn, request_id } => {
                self.transport
                    .reply(conn, ClientResponse { request_id, body });
            }
            ReplyTo::Api(sender) => {
                let _ = sender.try_send(body);
            }
        }
    }

    /// The transport, for peer messages.
    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }
}

/// What the network thread delivers to the consensus thread.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// A message from a peer.
    Peer(Message),
    /// A request from a client connection.
    Client {
        /// The connection to answer on.
        conn: ClientConnId,
        /// The request.
        request: rcraft_wire::ClientRequest,
    },
    /// A client connection closed.
    ClientClosed(ClientConnId),
}
