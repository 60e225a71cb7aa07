//! The blocking client's connection: plain TCP, or TLS over it (the `tls` feature) when the
//! client has [`ClientOptions::tls`](super::ClientOptions::tls).
//!
//! Owned by the thread of one [`Client`](super::Client). The TLS handshake is completed
//! when the connection opens, before the rcraft handshake, so that a TLS failure (a node
//! without TLS, a certificate of another CA) is reported as such. Socket timeouts are set on
//! the TCP socket beneath and bound every blocking call, TLS records included.

use crate::tls::ClientTls;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One blocking connection to a node: plain TCP or TLS over it. Used by [`Client`](super::Client)
/// and by other blocking tools that speak the client protocol (the loadtest's pipelined clients).
pub enum ConnStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ConnStream {
    /// Wraps a connected socket (whose timeouts are already set), completing the TLS
    /// handshake first when `tls` is given.
    pub fn open(
        tcp: TcpStream,
        tls: Option<&ClientTls>,
        address: SocketAddr,
    ) -> io::Result<ConnStream> {
        let Some(tls) = tls else {
            return Ok(ConnStream::Plain(tcp));
        };
        #[cfg(feature = "tls")]
        {
            let mut session = tls.connect(address.ip())?;
            let mut tcp = tcp;
            while session.is_handshaking() {
                session
                    .complete_io(&mut tcp)
                    .map_err(|e| tls_handshake_error(e, address))?;
            }
            Ok(ConnStream::Tls(Box::new(rustls::StreamOwned::new(
                session, tcp,
            ))))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (tcp, address);
            match tls.never {}
        }
    }

    /// The socket beneath (timeouts, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ConnStream::Plain(tcp) => tcp,
            #[cfg(feature = "tls")]
            ConnStream::Tls(tls) => &tls.sock,
        }
    }
}

/// The TLS handshake failed: say why in the words an operator needs.
#[cfg(feature = "tls")]
fn tls_handshake_error(e: io::Error, address: SocketAddr) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "the node at {address} closed the connection during the TLS handshake: does \
                 it have TLS for clients (--cert-file), and a certificate for this client if \
                 it asks for one (--client-cert-auth)? (the node's log says why)"
            ),
        ),
        io::ErrorKind::InvalidData => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS handshake with {address} failed: {e}"),
        ),
        _ => e,
    }
}

impl Read for ConnStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => tcp.read(buf),
            #[cfg(feature = "tls")]
            ConnStream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for ConnStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => tcp.write(buf),
            #[cfg(feature = "tls")]
            ConnStream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.flush(),
            #[cfg(feature = "tls")]
            ConnStream::Tls(tls) => tls.flush(),
        }
    }
}
