//! TLS through the real binary (the `tls` feature; SECURITY.md, "TLS"): certificates made by
//! the test with Debian's `openssl` (a CA, a node certificate naming `IP:127.0.0.1`, and a
//! second CA that the cluster does not trust). A 3-node cluster with mutual TLS between peers
//! and TLS for clients elects, replicates, survives a leader kill and restart, and serves
//! `rcraft kv`/`status`; a node whose certificate comes from another CA, and a plaintext
//! peer, are refused and cannot disturb the cluster; plaintext clients and clients trusting
//! another CA get a clear error; `--client-cert-auth` asks clients for a certificate; SIGHUP
//! reloads the certificates (a bad file is logged and the old ones kept; a node without TLS
//! logs that it has nothing to reload and keeps serving); bad files are
//! refused at start naming the flag and file. Loopback only, every wait bounded, processes
//! killed and directories removed on drop (`snapshot_support::Cluster`).
//! The certificates come from `tests/tls_support` (openssl; skipped without it outside CI).

#![cfg(feature = "tls")]

mod snapshot_support;
mod tls_support;

use rcraft::client::ClientOptions;
use rcraft::config::CLUSTER_ID_DEFAULT;
use rcraft::kv_client::KvClient;
use rcraft::tls::ClientTls;
use rcraft::wire::{Handshake, LogIndex, Message, MessageBody, NodeId, NodeStatus, Role, Term};
use snapshot_support::{BIN, Cluster, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use tls_support::Pki;

fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn tls_options(tls: &ClientTls) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(10),
        attempt_timeout: Duration::from_millis(500),
        tls: Some(tls.clone()),
        ..ClientOptions::default()
    }
}

fn tls_client(cluster: &Cluster, tls: &ClientTls) -> KvClient {
    KvClient::new(&cluster.addresses, tls_options(tls)).unwrap()
}

fn tls_status(cluster: &Cluster, tls: &ClientTls, id: usize) -> Option<NodeStatus> {
    let options = ClientOptions {
        timeout: Duration::from_secs(1),
        ..tls_options(tls)
    };
    let mut client = KvClient::new(&cluster.addresses, options).unwrap();
    client.status_of(cluster.addresses[id]).ok()
}

/// The leader among `ids`, once one of them says it leads.
fn tls_leader(cluster: &Cluster, tls: &ClientTls, ids: &[usize]) -> usize {
    let found = wait_for("a leader over TLS", || {
        ids.iter()
            .copied()
            .find(|&id| tls_status(cluster, tls, id).is_some_and(|s| s.role == Role::Leader))
    });
    found.unwrap_or_else(|| panic!("no leader; logs:\n{}", cluster.logs()))
}

/// Runs `rcraft ARGS --servers ...` with `stdin`; returns success and stdout + stderr.
fn rcraft(cluster: &Cluster, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--servers", &cluster.servers()])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn a_tls_cluster_elects_replicates_survives_a_leader_kill_and_serves_the_cli() {
    let Some(pki) = Pki::new() else { return };
    // The cluster secret's challenge-response runs inside TLS, as it does over plain TCP.
    let mut flags = pki.serve_flags("node", "ca");
    let secret = pki.private("secret", "the cluster secret, 2026\n");
    flags.extend(["--secret-file".into(), secret]);
    // Snapshots are taken often and the log is not kept behind them, so the restarted node
    // below is brought up to date by a snapshot sent over TLS.
    flags.extend(["--snapshot-every", "20", "--snapshot-retain-entries", "0"].map(String::from));
    let mut cluster = Cluster::start(&as_strs(&flags));
    let tls = pki.client_tls("ca");
    let leader = tls_leader(&cluster, &tls, &[0, 1, 2]);
    let mut client = tls_client(&cluster, &tls);
    client.put(b"k", b"v1").unwrap();

    cluster.kill(leader);
    let others: Vec<usize> = (0..3).filter(|&id| id != leader).collect();
    let new_leader = tls_leader(&cluster, &tls, &others);
    client.put(b"k", b"v2").unwrap();
    // 2.5 MiB while the old leader is down: TLS records far past rustls's 64 KiB send buffer.
    let big = vec![b'x'; 64 << 10];
    for i in 0..40 {
        client.put(format!("big{i}").as_bytes(), &big).unwrap();
    }
    cluster.restart(leader);
    let caught_up = wait_for("the old leader to catch up over TLS", || {
        let leading = tls_status(&cluster, &tls, new_leader)?;
        let node = tls_status(&cluster, &tls, leader)?;
        (node.applied_index >= leading.commit_index && node.applied_index >= LogIndex(40))
            .then_some(())
    });
    assert!(caught_up.is_some(), "logs:\n{}", cluster.logs());

    let cacert = pki.arg("ca.pem");
    let (ok, text) = rcraft(
        &cluster,
        &["kv", "--cacert", &cacert],
        "get k\nput k v3\nget k\n",
    );
    assert!(ok, "{text}");
    assert_eq!(
        text,
        "{\"ok\":true,\"value\":\"v2\"}\n{\"ok\":true}\n{\"ok\":true,\"value\":\"v3\"}\n"
    );
    let (ok, text) = rcraft(&cluster, &["status", "--cacert", &cacert], "");
    assert!(ok, "{text}");
    assert!(text.contains("leader"), "{text}");
    let (ok, text) = rcraft(&cluster, &["members", "list", "--cacert", &cacert], "");
    assert!(ok && text.contains("voter"), "{text}");
    let (ok, text) = rcraft(
        &cluster,
        &["snapshot", "--id", "0", "--cacert", &cacert],
        "",
    );
    assert!(ok && text.contains("snapshot at index"), "{text}");
    let restarted = leader.to_string();
    let events = [
        "debug", "events", "--id", &restarted, "--json", "--cacert", &cacert,
    ];
    let (ok, text) = rcraft(&cluster, &events, "");
    assert!(ok, "{text}");
    assert!(
        text.contains(r#""kind":"snapshot_receive_started""#),
        "{text}"
    );
    let target = (new_leader + 1) % 3;
    let (ok, text) = rcraft(
        &cluster,
        &["transfer", "--to", &target.to_string(), "--cacert", &cacert],
        "",
    );
    assert!(ok, "{text}\nlogs:\n{}", cluster.logs());
    for id in 0..3 {
        let log = cluster.log_of(id);
        assert!(log.contains("TLS on"), "node {id}:\n{log}");
        assert!(!log.contains("without TLS"), "node {id}:\n{log}");
    }
}

/// A forged leader over plain TCP: claims to be node 2 and sends a heartbeat of term 100.
fn forge_plaintext_heartbeat(address: SocketAddr, to: u64) {
    let attempt = || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut bytes = Handshake::peer(CLUSTER_ID_DEFAULT, NodeId(2))
            .encode()
            .to_vec();
        let heartbeat = Message {
            from: NodeId(2),
            to: NodeId(to),
            term: Term(100),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex(0),
                read_context: 0,
            },
        };
        rcraft::wire::encode_message(&heartbeat, &mut bytes).unwrap();
        stream.write_all(&bytes)?;
        let _ = stream.read(&mut [0u8; 64]);
        Ok(())
    };
    let _ = attempt();
}

#[test]
fn a_node_with_a_certificate_of_another_ca_or_no_tls_cannot_disturb_the_cluster() {
    let Some(pki) = Pki::new() else { return };
    let tls = pki.client_tls("ca");
    let mut cluster = Cluster::start_nodes(3, &as_strs(&pki.serve_flags("node", "ca")));
    cluster.kill(2);
    let leader = tls_leader(&cluster, &tls, &[0, 1]);
    let term = tls_status(&cluster, &tls, leader).unwrap().term;

    // Node 2 holds a certificate of another CA (and trusts that CA), without Pre-Vote: were
    // its vote requests read, its elections would raise the others' term.
    let mut intruder = pki.serve_flags("stranger", "other");
    intruder.extend(["--pre-vote".into(), "off".into()]);
    cluster.flags = intruder;
    cluster.restart(2);
    let stranger = pki.client_tls("other");
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for id in 0..2 {
            forge_plaintext_heartbeat(cluster.addresses[id], id as u64);
            if let Some(seen) = tls_status(&cluster, &tls, id) {
                assert_eq!(
                    (seen.leader, seen.term),
                    (Some(NodeId(leader as u64)), term),
                    "node {id} was disturbed; logs:\n{}",
                    cluster.logs()
                );
            }
        }
    }
    let intruder_term = tls_status(&cluster, &stranger, 2).map(|s| s.term);
    assert!(
        intruder_term.is_some_and(|t| t > term),
        "node 2 never stood for election ({intruder_term:?}), so the test proves nothing; \
         logs:\n{}",
        cluster.logs()
    );
    let logs = cluster.log_of(0) + &cluster.log_of(1);
    assert!(
        logs.contains("invalid peer certificate"),
        "no certificate refusal logged:\n{logs}"
    );
    assert!(
        logs.contains("peer 2 connected without TLS, and this node requires TLS between peers"),
        "no plaintext refusal logged:\n{logs}"
    );
}

#[test]
fn plaintext_clients_and_clients_of_another_ca_get_a_clear_error() {
    let Some(pki) = Pki::new() else { return };
    let cluster = Cluster::start_nodes(1, &as_strs(&pki.serve_flags("node", "ca")));
    tls_leader(&cluster, &pki.client_tls("ca"), &[0]);

    let (ok, text) = rcraft(&cluster, &["kv", "put", "k", "v"], "");
    assert!(!ok, "{text}");
    assert!(text.contains("does it need TLS (give --cacert)"), "{text}");
    let log = cluster.log_of(0);
    assert!(
        log.contains("a client connected without TLS, and this node requires TLS for clients"),
        "{log}"
    );

    let other = pki.arg("other.pem");
    let (ok, text) = rcraft(&cluster, &["kv", "--cacert", &other, "put", "k", "v"], "");
    assert!(!ok, "{text}");
    assert!(text.contains("TLS handshake with"), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");

    // Files the client cannot use are named.
    let missing = pki.arg("missing.pem");
    let (ok, text) = rcraft(&cluster, &["status", "--cacert", &missing], "");
    assert!(!ok, "{text}");
    assert!(
        text.contains("--cacert") && text.contains("missing.pem"),
        "{text}"
    );
    let (ok, text) = rcraft(&cluster, &["status", "--cert", &pki.arg("node.pem")], "");
    assert!(!ok && text.contains("need --cacert"), "{text}");
}

#[test]
fn client_cert_auth_asks_clients_for_a_certificate_of_the_trusted_ca() {
    let Some(pki) = Pki::new() else { return };
    let mut flags = pki.serve_flags("node", "ca");
    // Tokens are checked inside TLS, as over plain TCP.
    let token = pki.private("admin", "an admin token, 32 bytes long...\n");
    flags.extend([
        "--trusted-ca-file".into(),
        pki.arg("ca.pem"),
        "--client-cert-auth".into(),
        "--admin-token-file".into(),
        token.clone(),
    ]);
    let cluster = Cluster::start_nodes(1, &as_strs(&flags));
    let cacert = pki.arg("ca.pem");
    let leader = wait_for("a leader", || {
        let (ok, text) = rcraft(
            &cluster,
            &[
                "status",
                "--cacert",
                &cacert,
                "--cert",
                &pki.arg("node.pem"),
                "--key",
                &pki.arg("node.key"),
                "--token-file",
                &token,
            ],
            "",
        );
        (ok && text.contains("leader")).then_some(())
    });
    assert!(leader.is_some(), "logs:\n{}", cluster.logs());
    let with_cert = [
        "--cacert",
        &cacert,
        "--cert",
        &pki.arg("node.pem"),
        "--key",
        &pki.arg("node.key"),
    ]
    .map(String::from);
    let put = |token: Option<&str>| {
        let mut args: Vec<&str> = vec!["kv"];
        args.extend(with_cert.iter().map(String::as_str));
        if let Some(token) = token {
            args.extend(["--token-file", token]);
        }
        args.extend(["put", "k", "v"]);
        rcraft(&cluster, &args, "")
    };
    let (ok, text) = put(None);
    assert!(
        !ok && text.contains("needs the client or admin token"),
        "{text}"
    );
    let (ok, text) = put(Some(&token));
    assert!(ok, "{text}");
    let (ok, text) = rcraft(&cluster, &["kv", "--cacert", &cacert, "put", "k", "v"], "");
    assert!(!ok, "{text}");
    assert!(text.contains("TLS"), "{text}");
    let (ok, text) = rcraft(
        &cluster,
        &[
            "kv",
            "--cacert",
            &cacert,
            "--cert",
            &pki.arg("stranger.pem"),
            "--key",
            &pki.arg("stranger.key"),
            "put",
            "k",
            "v",
        ],
        "",
    );
    assert!(!ok, "{text}");
    let log = cluster.log_of(0);
    assert!(log.contains("invalid peer certificate"), "{log}");
}

#[test]
fn sighup_reloads_the_certificates_and_a_bad_file_keeps_the_old_ones() {
    let Some(pki) = Pki::new() else { return };
    // Clients see `client.pem`, a copy of the node certificate, replaced during the test.
    let copy = |from: &str, to: &str| std::fs::copy(pki.path(from), pki.path(to)).unwrap();
    copy("node.pem", "client.pem");
    copy("node.key", "client.key");
    let mut flags = pki.serve_flags("node", "ca");
    let at = flags.iter().position(|f| f == "--cert-file").unwrap();
    flags[at + 1] = pki.arg("client.pem");
    flags[at + 3] = pki.arg("client.key");
    let cluster = Cluster::start(&as_strs(&flags));
    let (old_ca, new_ca) = (pki.client_tls("ca"), pki.client_tls("other"));
    let leader = tls_leader(&cluster, &old_ca, &[0, 1, 2]);
    assert!(tls_status(&cluster, &new_ca, leader).is_none());

    // The clients' certificate becomes one of the other CA; peers keep theirs.
    copy("stranger.pem", "client.pem");
    copy("stranger.key", "client.key");
    for id in 0..3 {
        cluster.signal(id, libc::SIGHUP);
    }
    let reloaded = wait_for("every node to reload", || {
        (0..3)
            .all(|id| {
                cluster
                    .log_of(id)
                    .contains("TLS certificates and keys reloaded")
            })
            .then_some(())
    });
    assert!(reloaded.is_some(), "logs:\n{}", cluster.logs());
    let mut client = tls_client(&cluster, &new_ca);
    client.put(b"k", b"after the reload").unwrap();
    assert!(tls_status(&cluster, &old_ca, 0).is_none());

    // A broken file: the node says so and keeps serving with the certificates it had.
    std::fs::write(pki.path("client.pem"), "not a certificate\n").unwrap();
    cluster.signal(0, libc::SIGHUP);
    let logged = wait_for("the failed reload to be logged", || {
        cluster
            .log_of(0)
            .contains("TLS reload failed, the previous certificates stay in use")
            .then_some(())
    });
    assert!(logged.is_some(), "logs:\n{}", cluster.logs());
    assert!(
        cluster.log_of(0).contains("client.pem"),
        "{}",
        cluster.log_of(0)
    );
    let status = tls_status(&cluster, &new_ca, 0);
    assert!(status.is_some(), "logs:\n{}", cluster.logs());
    assert_eq!(
        client.get(b"k").unwrap().as_deref(),
        Some(&b"after the reload"[..])
    );
}

/// `rcraft serve` with `flags`, expected to refuse to start; returns its stderr.
fn refused_at_start(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--id", "0", "--peers", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(flags)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_tls_files_are_refused_at_start_naming_the_flag_and_file() {
    let Some(pki) = Pki::new() else { return };
    let (pem, key, ca) = (pki.arg("node.pem"), pki.arg("node.key"), pki.arg("ca.pem"));
    let missing = pki.arg("missing.pem");
    let stderr = refused_at_start(&["--cert-file", &missing, "--key-file", &key]);
    assert!(
        stderr.contains("--cert-file") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot read"), "{stderr}");
    let stderr = refused_at_start(&["--cert-file", &key, "--key-file", &key]);
    assert!(stderr.contains("no certificate in it"), "{stderr}");
    let stderr = refused_at_start(&["--cert-file", &pem, "--key-file", &pem]);
    assert!(
        stderr.contains("--key-file") && stderr.contains("no private key"),
        "{stderr}"
    );
    let stranger_key = pki.arg("stranger.key");
    let stderr = refused_at_start(&["--cert-file", &pem, "--key-file", &stranger_key]);
    assert!(
        stderr.contains("--cert-file") && stderr.contains("--key-file"),
        "{stderr}"
    );
    let stderr = refused_at_start(&["--peer-cert-file", &pem, "--peer-key-file", &key]);
    assert!(stderr.contains("--peer-trusted-ca-file"), "{stderr}");
    let stderr = refused_at_start(&[
        "--peer-cert-file",
        &pem,
        "--peer-key-file",
        &key,
        "--peer-trusted-ca-file",
        &key,
    ]);
    assert!(
        stderr.contains("--peer-trusted-ca-file") && stderr.contains("node.key"),
        "{stderr}"
    );
    let stderr = refused_at_start(&[
        "--cert-file",
        &pem,
        "--key-file",
        &key,
        "--client-cert-auth",
    ]);
    assert!(
        stderr.contains("--client-cert-auth needs --trusted-ca-file"),
        "{stderr}"
    );
    let _ = ca;
}

#[test]
fn sighup_on_a_node_without_tls_is_logged_and_the_node_keeps_serving() {
    let cluster = Cluster::start_nodes(1, &[]);
    cluster.wait_for_leader();
    cluster.signal(0, libc::SIGHUP);
    let logged = wait_for("the SIGHUP to be logged", || {
        let log = cluster.log_of(0);
        log.contains("SIGHUP: nothing to reload (this node has no TLS)")
            .then_some(())
    });
    assert!(logged.is_some(), "logs:\n{}", cluster.logs());
    let mut client = cluster.client();
    client.put(b"k", b"v").unwrap();
}
