//! Security through the real binary (SECURITY.md): `rcraft serve` nodes with a cluster secret
//! refuse a node that lacks it or holds another one, which then cannot disturb the cluster
//! (no election, no term change); client and admin tokens decide what a client may do; secret
//! and token files readable by others are refused. Every wait is bounded; processes are
//! killed and directories removed on drop (`snapshot_support::Cluster`).

mod snapshot_support;

use rcraft::node::net::auth::{PeerSecrets, Side, Transcript};
use rcraft::wire::{
    CLUSTER_ID_UNKNOWN, HANDSHAKE_BYTES, Handshake, LogIndex, MAC_BYTES, Message, MessageBody,
    NONCE_BYTES, NodeId, Role, Term,
};
use snapshot_support::{BIN, Cluster, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Writes `text` to `dir/name` with `mode` and returns the path.
fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A directory outside the cluster's, for the files that configure it.
fn files_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The leader's id and term, seen by node `id`.
fn leader_and_term(cluster: &Cluster, id: usize) -> Option<(u64, Term)> {
    let status = cluster.status(id)?;
    Some((status.leader?.0, status.term))
}

/// Waits until nodes 0 and 1 agree on a leader among themselves; returns it and the term.
fn settled(cluster: &Cluster) -> (u64, Term) {
    let agreed = wait_for("nodes 0 and 1 to agree on a leader", || {
        let a = leader_and_term(cluster, 0)?;
        let b = leader_and_term(cluster, 1)?;
        (a == b && a.0 < 2).then_some(a)
    });
    agreed.unwrap_or_else(|| panic!("no agreed leader; logs:\n{}", cluster.logs()))
}

/// A forged leader: claims to be node 2 and sends `to` a heartbeat of term 100, which a node
/// that read it would follow (thesis 3.3: a higher term makes it a follower of the sender).
/// With `secret`, it runs the authenticated handshake with that (wrong) secret, reading the
/// node's challenge; without, the plain one. Errors (the node closing on us) are ignored.
fn forge_heartbeat(address: SocketAddr, to: u64, secret: Option<&PeerSecrets>) {
    let attempt = || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        // The cluster id is made at bootstrap; a forger that does not know it says so.
        let hello = Handshake::peer(CLUSTER_ID_UNKNOWN, NodeId(2));
        let mut bytes = Vec::new();
        match secret {
            Some(secret) => {
                let nonce = [7u8; NONCE_BYTES];
                stream.write_all(&hello.with_auth().encode())?;
                stream.write_all(&nonce)?;
                let mut answer = [0u8; HANDSHAKE_BYTES + NONCE_BYTES + MAC_BYTES];
                stream.read_exact(&mut answer)?;
                let theirs: &[u8; HANDSHAKE_BYTES] = answer[..HANDSHAKE_BYTES].try_into().unwrap();
                let cluster_id = Handshake::decode(theirs).map_or(0, |h| h.cluster_id);
                let transcript = Transcript {
                    cluster_id,
                    dialler: NodeId(2),
                    acceptor: NodeId(to),
                    dialler_nonce: nonce,
                    acceptor_nonce: answer[HANDSHAKE_BYTES..HANDSHAKE_BYTES + NONCE_BYTES]
                        .try_into()
                        .unwrap(),
                };
                bytes.extend_from_slice(&secret.prove(Side::Dialler, &transcript));
            }
            None => bytes.extend_from_slice(&hello.encode()),
        }
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
        // Give the node time to read it before the connection closes.
        let _ = stream.read(&mut [0u8; 64]);
        Ok(())
    };
    let _ = attempt();
}

/// Starts nodes 0 and 1 with `good` flags and node 2 with `intruder` flags. Node 2 runs
/// without Pre-Vote and nodes 0 and 1 without CheckQuorum, which would otherwise make them
/// ignore its vote requests while they hear from their leader (thesis 4.2.3): so if its
/// messages got through, its elections would raise the cluster's term. The test then
/// checks for a few seconds that the term and leader of nodes 0 and 1 never change and that
/// they refused node 2.
/// A forged leader (`forge_heartbeat`, with `forger_secret`) tries the same meanwhile.
fn intruder_cannot_disturb(
    good: &[&str],
    intruder: &[&str],
    forger_secret: Option<&PeerSecrets>,
    refusal: &str,
) {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut cluster = Cluster {
        addresses: listeners.iter().map(|l| l.local_addr().unwrap()).collect(),
        flags: good.iter().map(|f| f.to_string()).collect(),
        nodes: vec![None, None, None],
        dir: tempfile::tempdir().unwrap(),
        cpus: vec![None; 3],
        envs: vec![Vec::new(); 3],
    };
    drop(listeners);
    cluster.restart(0);
    cluster.restart(1);
    let (leader, term) = settled(&cluster);

    cluster.flags = intruder.iter().map(|f| f.to_string()).collect();
    cluster.flags.extend(["--pre-vote".into(), "off".into()]);
    cluster.restart(2);
    // Node 2 cannot reach anyone: it times out and stands for election over and over.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for id in 0..2 {
            forge_heartbeat(cluster.addresses[id], id as u64, forger_secret);
        }
        for id in 0..2 {
            if let Some(seen) = leader_and_term(&cluster, id) {
                assert_eq!(
                    seen,
                    (leader, term),
                    "node {id} saw the intruder; logs:\n{}",
                    cluster.logs()
                );
            }
        }
    }
    let intruder_term = cluster.status(2).map(|s| s.term);
    assert!(
        intruder_term.is_some_and(|t| t > term),
        "node 2 never stood for election ({intruder_term:?}), so the test proves nothing; \
         logs:\n{}",
        cluster.logs()
    );
    let refused = (0..2).any(|id| cluster.log_of(id).contains(refusal));
    assert!(
        refused,
        "no node logged {refusal:?}; logs:\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.status(0).unwrap().role == Role::Leader, leader == 0);
}

#[test]
fn a_node_without_the_secret_is_refused_and_cannot_disturb_the_cluster() {
    let files = files_dir();
    let secret = private_file(files.path(), "secret", "the cluster secret, 2026\n", 0o600);
    let secret = secret.to_str().unwrap();
    intruder_cannot_disturb(
        &["--secret-file", secret],
        &[],
        None,
        "did not authenticate, and this node requires the cluster secret",
    );
}

#[test]
fn a_node_with_another_secret_is_refused_and_cannot_disturb_the_cluster() {
    let files = files_dir();
    let secret = private_file(files.path(), "secret", "the cluster secret, 2026\n", 0o600);
    let other = private_file(
        files.path(),
        "other",
        "a secret of another cluster\n",
        0o400,
    );
    intruder_cannot_disturb(
        &["--secret-file", secret.to_str().unwrap()],
        &["--secret-file", other.to_str().unwrap()],
        Some(&PeerSecrets::from_file(&other).unwrap()),
        "failed to prove it holds the cluster secret",
    );
}

#[test]
fn a_secret_file_readable_by_others_is_refused_at_start() {
    let files = files_dir();
    let secret = private_file(files.path(), "secret", "the cluster secret, 2026\n", 0o644);
    let output = Command::new(BIN)
        .args(["serve", "--id", "0", "--peers", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(files.path().join("data"))
        .arg("--secret-file")
        .arg(&secret)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("mode 644"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn with_a_secret_the_cluster_elects_replicates_and_survives_a_restart() {
    let files = files_dir();
    // Two secrets: the first proves, both are accepted (a rotation in progress).
    let secret = private_file(
        files.path(),
        "secret",
        "# new first, old second\nthe new cluster secret\nthe old cluster secret\n",
        0o600,
    );
    let secret = secret.to_str().unwrap();
    let mut cluster = Cluster::start(&["--secret-file", secret]);
    let leader = cluster.wait_for_leader();
    assert!(
        !cluster.log_of(0).contains("no --secret-file"),
        "{}",
        cluster.logs()
    );
    let mut client = cluster.client();
    client.put(b"k", b"v1").unwrap();
    // A follower restarted with only the new secret (the last step of the rotation on that
    // node) still joins: it accepts the others' proofs and they accept its own.
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let new = private_file(files.path(), "new", "the new cluster secret\n", 0o600);
    cluster.flags = vec!["--secret-file".into(), new.to_str().unwrap().into()];
    cluster.restart(follower);
    client.put(b"k", b"v2").unwrap();
    cluster.wait_caught_up(follower, cluster.wait_for_leader());
    let status = cluster.status(follower).unwrap();
    assert!(status.applied_index.0 >= 3, "{status:?}");
}

/// Runs `rcraft ARGS --servers ...` with `RCRAFT_TOKEN_FILE` set to `token` (or unset).
fn rcraft(cluster: &Cluster, args: &[&str], token: Option<&Path>) -> (bool, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--servers", &cluster.servers()])
        .env_remove("RUST_LOG")
        .env_remove("RCRAFT_TOKEN_FILE");
    if let Some(token) = token {
        command.env("RCRAFT_TOKEN_FILE", token);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn tokens_decide_what_a_client_may_do() {
    let files = files_dir();
    let dir = files.path();
    let client = private_file(dir, "client", "a client token, 32 bytes long..\n", 0o600);
    let admin = private_file(dir, "admin", "an admin token, 32 bytes long...\n", 0o600);
    let wrong = private_file(dir, "wrong", "a token nobody issued, at all..\n", 0o600);
    let flags = [
        "--client-token-file",
        client.to_str().unwrap(),
        "--admin-token-file",
        admin.to_str().unwrap(),
    ];
    let cluster = Cluster::start(&flags);
    let leader = wait_for("a leader", || {
        let (ok, text) = rcraft(&cluster, &["status", "--json"], Some(&client));
        (ok && text.contains(r#""role":"leader""#)).then_some(())
    });
    assert!(leader.is_some(), "no leader; logs:\n{}", cluster.logs());

    // Reads and writes: the client or the admin token; nothing without one.
    let put = ["kv", "put", "k", "v"];
    for token in [None, Some(wrong.as_path())] {
        let (ok, text) = rcraft(&cluster, &put, token);
        assert!(!ok, "{text}");
        assert!(text.contains("needs the client or admin token"), "{text}");
    }
    for token in [&client, &admin] {
        let (ok, text) = rcraft(&cluster, &put, Some(token));
        assert!(ok, "{text}\nlogs:\n{}", cluster.logs());
    }

    // Membership and snapshots: the admin token only.
    let remove = ["members", "remove", "2"];
    for token in [None, Some(client.as_path())] {
        let (ok, text) = rcraft(&cluster, &remove, token);
        assert!(!ok, "{text}");
        assert!(text.contains("needs"), "{text}");
        let (ok, text) = rcraft(&cluster, &["snapshot", "--id", "0"], token);
        assert!(!ok, "{text}");
        // A backup too: refused, and no file left behind.
        let backup = dir.join("backup.snap");
        let save = ["snapshot", "save", backup.to_str().unwrap()];
        let (ok, text) = rcraft(&cluster, &save, token);
        assert!(!ok, "{text}");
        assert!(
            text.contains("needs the admin token") || token.is_none(),
            "{text}"
        );
        assert!(text.contains("no backup written"), "{text}");
        assert!(!backup.exists() && !dir.join("backup.snap.tmp").exists());
    }
    let backup = dir.join("backup.snap");
    let save = ["snapshot", "save", backup.to_str().unwrap()];
    let (ok, text) = rcraft(&cluster, &save, Some(&admin));
    assert!(ok && text.contains("saved snapshot at index"), "{text}");
    assert!(backup.exists());
    let (ok, text) = rcraft(&cluster, &["members", "list"], Some(&client));
    assert!(ok, "{text}");
    assert!(text.contains("voter"), "node 2 is still a voter: {text}");
    let (ok, text) = rcraft(&cluster, &["snapshot", "--id", "0"], Some(&admin));
    assert!(ok, "{text}");
    let (ok, text) = rcraft(&cluster, &remove, Some(&admin));
    assert!(ok, "{text}\nlogs:\n{}", cluster.logs());
    // The node that carried it out logged it with the connection it came from.
    let logged = (0..3).any(|id| {
        let log = cluster.log_of(id);
        log.lines()
            .any(|l| l.contains("admin request ChangeMembership") && l.contains("client#"))
    });
    assert!(logged, "no admin request logged; logs:\n{}", cluster.logs());
}

#[test]
fn a_token_file_readable_by_others_is_refused_by_the_cli() {
    let files = files_dir();
    let token = private_file(
        files.path(),
        "token",
        "a client token, 32 bytes long..\n",
        0o640,
    );
    let output = Command::new(BIN)
        .args(["status", "--servers", "127.0.0.1:1", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mode 640"), "{stderr}");
}

#[test]
fn the_data_dir_and_its_files_are_private_and_an_open_one_is_reported() {
    let cluster = Cluster::start(&[]);
    let mut client = cluster.client();
    client.put(b"k", b"v").unwrap();
    cluster.snapshot(0);
    for id in 0..3 {
        let dir = cluster.data_dir(id);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        let mut stack = vec![dir];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                if entry.file_type().unwrap().is_dir() {
                    assert_eq!(mode, 0o700, "{}", entry.path().display());
                    stack.push(entry.path());
                } else {
                    assert_eq!(mode, 0o600, "{}", entry.path().display());
                    files += 1;
                }
            }
        }
        assert!(files > 0, "node {id} wrote no files");
    }
    assert!(
        !cluster.log_of(0).contains("chmod 700"),
        "{}",
        cluster.logs()
    );
    // Without a secret or token files, the node says what it trusts.
    let log = cluster.log_of(0);
    assert!(log.contains("no --secret-file"), "{log}");
    assert!(log.contains("no --client-token-file"), "{log}");
    assert!(log.contains("for a trusted network only"), "{log}");

    let files = files_dir();
    let open_dir = files.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut node = Command::new(BIN)
        .args([
            "serve",
            "--id",
            "0",
            "--peers",
            "127.0.0.1:1",
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(&open_dir)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = node.stderr.take().unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains("chmod 700") && Instant::now() < deadline {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = node.kill();
    let _ = node.wait();
    assert!(seen.contains("has mode 755"), "{seen}");
}
