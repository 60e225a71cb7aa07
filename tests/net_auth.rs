//! Peer authentication on the network thread (SECURITY.md, `wire/PROTOCOL.md` section 2.1):
//! two network threads with the same secret link up and deliver messages; a dialler's bytes
//! recorded from a successful handshake and replayed on a new connection are refused, and
//! nothing they carry is delivered.

mod net_common;

use net_common::*;
use rcraft::node::net::auth::{PeerSecrets, Side, Transcript};
use rcraft::node::net::{NetConfig, NetEvent};
use rcraft_wire::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn secrets() -> Arc<PeerSecrets> {
    Arc::new(PeerSecrets::new(vec![b"the test cluster's secret".to_vec()]).unwrap())
}

fn secured(id: u64, listen: SocketAddr, peers: &[(u64, SocketAddr)]) -> NetConfig {
    let mut config = config(id, listen, peers);
    config.peer_secrets = Some(secrets());
    config
}

#[test]
fn nodes_with_the_same_secret_link_up_and_deliver() {
    let (listener_1, listener_2) = (listener(), listener());
    let (addr_1, addr_2) = (
        listener_1.local_addr().unwrap(),
        listener_2.local_addr().unwrap(),
    );
    let (node_1, _events_1) = spawn(listener_1, secured(1, addr_1, &[(2, addr_2)]), 64);
    let (node_2, events_2) = spawn(listener_2, secured(2, addr_2, &[(1, addr_1)]), 64);
    let mut n = 0;
    let received = loop {
        n += 1;
        node_1.sender().send_peer(heartbeat(1, 2, n));
        match events_2.recv_timeout(Duration::from_millis(50)) {
            Ok(NetEvent::Peer(message)) => break message,
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(_) => assert!(n < 200, "no message got through"),
        }
    };
    assert_eq!(received.from, NodeId(1));
    assert_eq!(node_2.stats().auth_failures, 0);
    node_1.shutdown();
    node_2.shutdown();
}

#[test]
fn a_recorded_dialler_handshake_replayed_later_is_refused() {
    let listener_1 = listener();
    let addr_1 = listener_1.local_addr().unwrap();
    // Node 2 is a configured peer of node 1; this socket plays it, holding the secret.
    let stand_in = listener();
    let (node_1, events) = spawn(
        listener_1,
        secured(1, addr_1, &[(2, stand_in.local_addr().unwrap())]),
        64,
    );

    // A genuine handshake as node 2, recording every byte it sends.
    let mut recorded = Handshake::peer(CLUSTER, NodeId(2))
        .with_auth()
        .encode()
        .to_vec();
    let nonce = [3u8; NONCE_BYTES];
    recorded.extend_from_slice(&nonce);
    let mut stream = TcpStream::connect(addr_1).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&recorded).unwrap();
    let mut answer = [0u8; HANDSHAKE_BYTES + NONCE_BYTES + MAC_BYTES];
    stream.read_exact(&mut answer).unwrap();
    let transcript = Transcript {
        cluster_id: CLUSTER,
        dialler: NodeId(2),
        acceptor: NodeId(1),
        dialler_nonce: nonce,
        acceptor_nonce: answer[HANDSHAKE_BYTES..HANDSHAKE_BYTES + NONCE_BYTES]
            .try_into()
            .unwrap(),
    };
    let mut rest = secrets().prove(Side::Dialler, &transcript).to_vec();
    encode_message(&heartbeat(2, 1, 1), &mut rest).unwrap();
    stream.write_all(&rest).unwrap();
    recorded.extend_from_slice(&rest);
    assert_eq!(next_peer_message(&events), heartbeat(2, 1, 1));

    // The same bytes on a new connection: the node's new nonce makes the proof stale.
    let mut replay = TcpStream::connect(addr_1).unwrap();
    replay.write_all(&recorded).unwrap();
    assert_closed_by_server(&mut replay);
    assert!(events.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(node_1.stats().auth_failures, 1);
    drop(stream);
    node_1.shutdown();
}
