//! `serve_kv` serves the built-in KV store and returns `Ok` after SIGTERM (clean shutdown).
//! Alone in its test binary: the signal goes to this whole process.

mod cluster_support;

use cluster_support::free_addresses;
use rcraft::Config;
use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::node::serve_kv;
use rcraft::wire::NodeId;
use std::time::Duration;

#[test]
fn serve_kv_serves_until_sigterm_then_returns_ok() {
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(1);
    let config = Config::new(NodeId(0), servers.clone(), dir.path().join("n0"));
    let server = std::thread::spawn(move || serve_kv(config));

    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let mut client = KvClient::connect(&servers, options).expect("client");
    client.put(b"key", b"value").unwrap();
    assert_eq!(client.get(b"key").unwrap(), Some(b"value".to_vec()));

    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    let result = server.join().expect("serve_kv did not panic");
    assert!(result.is_ok(), "{result:?}");
    // The data is durable: a node started on the same directory serves it again.
    let config = Config::new(NodeId(0), servers.clone(), dir.path().join("n0"));
    let node = rcraft::node::Node::start(config, rcraft::kv::KvStore::new()).unwrap();
    node.wait_for_leader(Duration::from_secs(10)).unwrap();
    assert_eq!(client.get(b"key").unwrap(), Some(b"value".to_vec()));
    node.shutdown().unwrap();
}
