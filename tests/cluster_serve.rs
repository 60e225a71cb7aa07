//! `rcraft serve` serves the built-in KV store and exits 0 after SIGTERM (clean shutdown), with
//! what it acknowledged durable. Runs the real binary: the signal handling is the binary's.

mod cluster_support;

use cluster_support::free_addresses;
use rcraft::Config;
use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::wire::NodeId;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the server may take to stop after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);

#[test]
fn serve_kv_serves_until_sigterm_then_returns_ok() {
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(1);
    let data_dir = dir.path().join("n0");
    let mut server = Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .args(["serve", "--id", "0", "--peers", &servers[0].to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rcraft serve starts");

    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let mut client = KvClient::connect(&servers, options).expect("client");
    client.put(b"key", b"value").unwrap();
    assert_eq!(client.get(b"key").unwrap(), Some(b"value".to_vec()));

    let sent = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > STOP_LIMIT {
            let _ = server.kill();
            panic!("rcraft serve did not stop within {STOP_LIMIT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    // The data is durable: a node started on the same directory serves it again.
    let config = Config::new(NodeId(0), servers.clone(), data_dir);
    let node = rcraft::node::Node::start(config, rcraft::kv::KvStore::new()).unwrap();
    node.wait_for_leader(Duration::from_secs(10)).unwrap();
    assert_eq!(client.get(b"key").unwrap(), Some(b"value".to_vec()));
    node.shutdown().unwrap();
}
