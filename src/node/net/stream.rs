//! A non-blocking connection as the event loops see it: plain TCP, or TCP carrying TLS that
//! this type drives (rustls does no I/O of its own). Reads and writes carry the rcraft bytes
//! (handshake, frames) either way, so the layers above do not know whether TLS is on.
//!
//! Owned by the thread of its event loop (a node's network thread, a loadtest engine thread).
//! An accepted connection on a node with TLS starts by looking at its first byte: a TLS
//! record starts with 22 (a handshake record), an rcraft handshake with `R`. A TLS one then
//! waits for the ClientHello and takes the peer or the client configuration by its ALPN
//! protocol (`crate::tls`); a plaintext one stays plaintext and is judged by its role once
//! its rcraft handshake arrives ([`Stream::refusal_for`]).
//!
//! Edge-triggered readiness: a read goes on until the socket says `WouldBlock`. With TLS a
//! short read does not mean the socket is drained (rustls hands out one record at a time),
//! so callers skip their short-read shortcut when [`Stream::short_read_drains`] is false.
//! Writes with TLS encrypt into rustls's buffer (bounded: a full one is `WouldBlock`) and
//! push the records out; records still waiting for the socket go out at the next
//! [`Write::flush`], which callers make on every writable event.
//!
//! Invariant: bytes are only read or written once the layer is known; while a TLS link is
//! still being accepted a write is `WouldBlock` (nothing is written before the other side's
//! handshake arrives, and that needs the TLS session).

use mio::net::TcpStream;
use rcraft_wire::ConnectionRole;
use std::io::{self, Read, Write};

#[cfg(feature = "tls")]
use crate::tls::{ALPN_PEER, NodeTls};
#[cfg(feature = "tls")]
use std::sync::Arc;

/// The first byte of a TLS handshake record (a ClientHello).
#[cfg(feature = "tls")]
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// What the TLS layer admitted the other side as.
#[cfg(feature = "tls")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admitted {
    /// It offered the peer ALPN protocol and presented a certificate of the peer CA.
    Peer,
    /// A client (the client ALPN protocol, or none).
    Client,
    /// This end dialled: the other side's certificate was checked by our client config.
    Dialled,
}

enum Layer {
    /// Plain TCP on a node or client without TLS.
    Plain,
    /// Accepted on a node with TLS: the first byte has not arrived.
    #[cfg(feature = "tls")]
    Sniffing(Arc<NodeTls>),
    /// Accepted on a node with TLS, and the first byte was not TLS.
    #[cfg(feature = "tls")]
    PlainOnTls(Arc<NodeTls>),
    /// Accepted on a node with TLS: waiting for the ClientHello.
    #[cfg(feature = "tls")]
    Accepting(Box<rustls::server::Acceptor>, Arc<NodeTls>),
    /// A TLS session (being set up or established).
    #[cfg(feature = "tls")]
    Tls(Box<rustls::Connection>, Admitted),
}

/// What a connection's protocol logic (`inbound.rs`, `peer.rs`) needs from the bytes under
/// it: reads, writes, and the two facts of the layer that change a decision. [`Stream`] is the
/// real one (TCP, TLS over it); the simulator's in-memory streams (`sim_link.rs`) are the
/// other, so that the same logic runs over both.
pub(crate) trait ByteStream: Read + Write {
    /// True when a read shorter than the buffer shows that nothing more is waiting.
    fn short_read_drains(&self) -> bool;
    /// Why a connection whose handshake claims `role` is refused by the layer (TLS policy).
    fn refusal_for(&self, role: ConnectionRole) -> Option<String>;
    /// For a dialled connection not known to be connected yet, on readiness: true once its
    /// connect completed (and the connection is set up for use), false while it is still
    /// under way; an error when it failed.
    fn finish_connect(&mut self) -> io::Result<bool>;
}

impl ByteStream for Stream {
    fn short_read_drains(&self) -> bool {
        Stream::short_read_drains(self)
    }

    fn refusal_for(&self, role: ConnectionRole) -> Option<String> {
        Stream::refusal_for(self, role)
    }

    fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(e) = self.tcp.take_error()? {
            return Err(e);
        }
        match self.tcp.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.tcp.set_nodelay(true)?;
        Ok(true)
    }
}

/// A connection; see the module header.
pub struct Stream {
    tcp: TcpStream,
    layer: Layer,
}

impl Stream {
    /// Plain TCP.
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream {
            tcp,
            layer: Layer::Plain,
        }
    }

    /// An accepted connection of a node whose TLS configuration is `tls` (`None`: plain).
    pub(crate) fn accepted(tcp: TcpStream, tls: Option<&crate::tls::TlsSlot>) -> Stream {
        match tls {
            None => Stream::plain(tcp),
            #[cfg(feature = "tls")]
            Some(slot) => Stream {
                tcp,
                layer: Layer::Sniffing(slot.current()),
            },
            #[cfg(not(feature = "tls"))]
            Some(slot) => match slot.never {},
        }
    }

    /// A connection this node dials to the peer at `tcp`'s address: TLS when the node has
    /// peer TLS.
    pub(crate) fn dialled_peer(
        tcp: TcpStream,
        tls: Option<&crate::tls::TlsSlot>,
        peer: std::net::SocketAddr,
    ) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::plain(tcp)),
            #[cfg(feature = "tls")]
            Some(slot) => match crate::tls::dial_peer(&slot.current(), peer.ip()) {
                None => Ok(Stream::plain(tcp)),
                Some(session) => Ok(Stream {
                    tcp,
                    layer: Layer::Tls(Box::new(session?.into()), Admitted::Dialled),
                }),
            },
            #[cfg(not(feature = "tls"))]
            Some(slot) => {
                let _ = peer;
                match slot.never {}
            }
        }
    }

    /// A client's connection to the node at `node` (TLS when `tls` is given).
    pub fn client(
        tcp: TcpStream,
        tls: Option<&crate::tls::ClientTls>,
        node: std::net::SocketAddr,
    ) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::plain(tcp)),
            #[cfg(feature = "tls")]
            Some(tls) => Ok(Stream {
                tcp,
                layer: Layer::Tls(Box::new(tls.connect(node.ip())?.into()), Admitted::Dialled),
            }),
            #[cfg(not(feature = "tls"))]
            Some(tls) => {
                let _ = node;
                match tls.never {}
            }
        }
    }

    /// The socket (for registration, addresses and socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, mutably (for registration with a `mio::Registry`).
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// True while TLS records wait for room in the socket (flushed by [`Write::flush`] at the
    /// next writable event, so a caller that registers for writability only when it has
    /// bytes to send registers for it then too).
    pub fn wants_write(&self) -> bool {
        match &self.layer {
            #[cfg(feature = "tls")]
            Layer::Tls(session, _) => session.wants_write(),
            _ => false,
        }
    }

    /// True when a read shorter than the buffer shows that the socket is drained (plain TCP);
    /// false with TLS, where rustls may hold more.
    pub fn short_read_drains(&self) -> bool {
        matches!(self.layer, Layer::Plain)
    }

    /// Why a connection whose rcraft handshake claims `role` is refused by this node's TLS
    /// policy, if it is: a peer must come over peer TLS when the node has peer TLS, a client
    /// over TLS when it has client TLS.
    pub(crate) fn refusal_for(&self, role: ConnectionRole) -> Option<String> {
        let _ = role; // Only TLS layers refuse.
        match &self.layer {
            Layer::Plain => None,
            #[cfg(feature = "tls")]
            Layer::PlainOnTls(node) => match role {
                ConnectionRole::Peer(id) if node.peer_tls() => Some(format!(
                    "peer {id} connected without TLS, and this node requires TLS between \
                     peers (--peer-cert-file): is TLS on at that node?"
                )),
                ConnectionRole::Client if node.client_tls() => Some(
                    "a client connected without TLS, and this node requires TLS for clients \
                     (--cert-file): give the client --cacert"
                        .to_string(),
                ),
                _ => None,
            },
            #[cfg(feature = "tls")]
            Layer::Tls(_, Admitted::Client) => match role {
                ConnectionRole::Peer(id) => Some(format!(
                    "peer {id} came over client TLS (ALPN not {:?}): peers must present a \
                     peer certificate",
                    String::from_utf8_lossy(ALPN_PEER)
                )),
                ConnectionRole::Client => None,
            },
            #[cfg(feature = "tls")]
            Layer::Tls(..) => None,
            #[cfg(feature = "tls")]
            Layer::Sniffing(_) | Layer::Accepting(..) => {
                Some("handshake before the TLS session was set up".to_string())
            }
        }
    }

    /// Moves an accepted connection on from `Sniffing` and `Accepting` as far as the bytes
    /// that have arrived allow. `Ok(false)`: the other side closed the connection.
    #[cfg(feature = "tls")]
    fn advance_accept(&mut self) -> io::Result<bool> {
        loop {
            match &mut self.layer {
                Layer::Sniffing(node) => {
                    let mut first = [0u8; 1];
                    if self.tcp.peek(&mut first)? == 0 {
                        return Ok(false);
                    }
                    let node = node.clone();
                    self.layer = match first[0] == TLS_HANDSHAKE_RECORD {
                        true => Layer::Accepting(Box::default(), node),
                        false => Layer::PlainOnTls(node),
                    };
                }
                Layer::Accepting(acceptor, node) => {
                    if acceptor.read_tls(&mut self.tcp)? == 0 {
                        return Ok(false);
                    }
                    let accepted = match acceptor.accept() {
                        Ok(None) => continue,
                        Ok(Some(accepted)) => accepted,
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(&mut self.tcp);
                            return Err(tls_error(&e));
                        }
                    };
                    let wants_peer = accepted
                        .client_hello()
                        .alpn()
                        .is_some_and(|mut offered| offered.any(|p| p == ALPN_PEER));
                    let (config, admitted) = match wants_peer {
                        true => (node.peer_server.clone(), Admitted::Peer),
                        false => (node.client_server.clone(), Admitted::Client),
                    };
                    let Some(config) = config else {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            match admitted {
                                Admitted::Peer => {
                                    "TLS from a peer, and this node has no TLS \
                                                   between peers (--peer-cert-file)"
                                }
                                _ => {
                                    "TLS from a client, and this node has no TLS for \
                                      clients (--cert-file)"
                                }
                            },
                        ));
                    };
                    match accepted.into_connection(config) {
                        Ok(session) => {
                            self.layer = Layer::Tls(Box::new(session.into()), admitted);
                        }
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(&mut self.tcp);
                            return Err(tls_error(&e));
                        }
                    }
                }
                _ => return Ok(true),
            }
        }
    }
}

/// A TLS failure as an I/O error (`InvalidData`, which plain sockets never report).
#[cfg(feature = "tls")]
fn tls_error(e: &rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Writes the TLS records rustls has ready until the socket would block.
#[cfg(feature = "tls")]
fn send_records(session: &mut rustls::Connection, tcp: &mut TcpStream) -> io::Result<()> {
    while session.wants_write() {
        match session.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if !self.advance_accept()? {
            return Ok(0);
        }
        match &mut self.layer {
            #[cfg(feature = "tls")]
            Layer::Tls(session, _) => loop {
                match session.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The socket closed without TLS's close_notify: an end of stream all the
                    // same for the framing above, which checks its own boundaries.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if session.read_tls(&mut self.tcp)? == 0 {
                    return Ok(0);
                }
                if let Err(e) = session.process_new_packets() {
                    // Tell the other side why (an alert) before the caller closes.
                    let _ = send_records(session, &mut self.tcp);
                    return Err(tls_error(&e));
                }
                send_records(session, &mut self.tcp)?;
            },
            _ => self.tcp.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.layer {
            #[cfg(feature = "tls")]
            Layer::Tls(session, _) => {
                send_records(session, &mut self.tcp)?;
                let taken = session.writer().write(buf)?;
                send_records(session, &mut self.tcp)?;
                if taken == 0 && !buf.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(taken)
            }
            #[cfg(feature = "tls")]
            Layer::Sniffing(_) | Layer::Accepting(..) => Err(io::ErrorKind::WouldBlock.into()),
            _ => self.tcp.write(buf),
        }
    }

    /// Pushes out TLS records still waiting for the socket (nothing to do for plain TCP).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.layer {
            #[cfg(feature = "tls")]
            Layer::Tls(session, _) => send_records(session, &mut self.tcp),
            _ => Ok(()),
        }
    }
}
