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

/// Starts `rcraft serve` with `args` on `data_dir`, its output discarded.
fn spawn_serve(args: &[&str], data_dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rcraft serve starts")
}

#[test]
fn serve_kv_serves_until_sigterm_then_returns_ok() {
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(1);
    let data_dir = dir.path().join("n0");
    let peers = servers[0].to_string();
    let mut server = spawn_serve(&["--id", "0", "--peers", &peers], &data_dir);

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

/// `rcraft serve` with `args`, waited for (it must fail to start): exit code and stderr.
fn serve_that_fails(args: &[&str], data_dir: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("rcraft serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn a_node_listens_on_listen_addr_and_is_reached_there() {
    // The advertised address (192.0.2.1, TEST-NET-1) is no address of this host, as behind
    // NAT: without --listen-addr the node cannot start, with it the node serves on loopback.
    let dir = tempfile::tempdir().unwrap();
    let local = free_addresses(1)[0];
    let advertised = format!("192.0.2.1:{}", local.port());
    let data_dir = dir.path().join("n0");
    let (code, stderr) = serve_that_fails(&["--id", "0", "--peers", &advertised], &data_dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on {advertised}")) && stderr.contains("--listen-addr"),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "a failed start left {}",
        data_dir.display()
    );

    let listen = local.to_string();
    let args = [
        "--id",
        "0",
        "--peers",
        &advertised,
        "--listen-addr",
        &listen,
    ];
    let mut server = spawn_serve(&args, &data_dir);
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let served = KvClient::connect(&[local], options).and_then(|mut client| {
        client.put(b"key", b"behind nat")?;
        client.get(b"key")
    });
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(served.unwrap(), Some(b"behind nat".to_vec()));
}

#[test]
fn a_start_on_a_taken_port_fails_and_leaves_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data_dir = dir.path().join("n0");
    let (code, stderr) = serve_that_fails(&["--id", "0", "--peers", &address], &data_dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listening on {address}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "a failed start left {}",
        data_dir.display()
    );
}

#[test]
fn a_data_dir_started_as_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(2);
    let peers = format!("{},{}", servers[0], servers[1]);
    let data_dir = dir.path().join("n0");
    let mut node0 = spawn_serve(&["--id", "0", "--peers", &peers], &data_dir);
    let started = Instant::now();
    while !data_dir.join("identity").exists() && started.elapsed() < STOP_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = node0.kill();
    let _ = node0.wait();
    assert!(
        data_dir.join("identity").exists(),
        "node 0 recorded no identity"
    );

    let (code, stderr) = serve_that_fails(&["--id", "1", "--peers", &peers], &data_dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("belongs to node 0") && stderr.contains("--id 0"),
        "{stderr}"
    );
    let (code, stderr) = serve_that_fails(
        &["--id", "0", "--peers", &peers, "--cluster-id", "7"],
        &data_dir,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("belongs to cluster"), "{stderr}");
}
