//! What a newcomer tripped over (issue 16), each through the real binary against `rcraft
//! serve` processes on 127.0.0.1: nodes named by the ids they report whatever the order of
//! `--servers`, `members list` following a leader hint, connection failures named plainly,
//! `status --wait` and its exit code, and the `kv` conveniences (flags after the command,
//! `--`, JSON lines, `scan`, `RCRAFT_SERVERS`). Processes are killed on drop.

mod snapshot_support;

use rcraft::wire::{NodeId, Role};
use snapshot_support::{BIN, Cluster, wait_for};
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `rcraft ARGS` with no environment the test did not give.
fn rcraft(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RCRAFT_SERVERS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(output: &Output) -> String {
    let err = String::from_utf8_lossy(&output.stderr);
    format!("exit {:?}\n{}{err}", output.status.code(), stdout(output))
}

/// The JSON lines of `output`, parsed.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    let lines = stdout(output);
    let parse = |line: &str| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    lines.lines().map(parse).collect()
}

/// `--servers` with the addresses in reverse id order.
fn reversed(cluster: &Cluster) -> String {
    let list: Vec<String> = cluster
        .addresses
        .iter()
        .rev()
        .map(|a| a.to_string())
        .collect();
    list.join(",")
}

#[test]
fn nodes_are_named_by_the_ids_they_report() {
    let cluster = Cluster::start(&[]);
    let leader = cluster.wait_for_leader();
    let servers = reversed(&cluster);
    let list = rcraft(&["members", "list", "--json", "--servers", &servers], &[]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    for row in json_lines(&list) {
        let id = row["id"].as_u64().unwrap() as usize;
        let address = cluster.addresses[id].to_string();
        assert_eq!(row["address"], address.as_str(), "{row}");
        assert_eq!(row["leader"], id == leader, "{row}");
    }
    // One address of node 2: the snapshot line names node 2, not position 0. (A node
    // snapshots only once it has applied something: a write every node has applied.)
    cluster.client().put(b"k0", b"v0").unwrap();
    (0..3).for_each(|id| cluster.wait_caught_up(id, leader));
    let node_2 = cluster.addresses[2].to_string();
    let snapshot = rcraft(&["snapshot", "--servers", &node_2], &[]);
    assert_eq!(snapshot.status.code(), Some(0), "{}", text(&snapshot));
    assert!(stdout(&snapshot).starts_with(&format!("node 2 {node_2}: snapshot at")));
    let by_id = rcraft(&["snapshot", "--servers", &servers, "--id", "0"], &[]);
    let node_0 = cluster.addresses[0].to_string();
    assert!(
        stdout(&by_id).starts_with(&format!("node 0 {node_0}: ")),
        "{}",
        text(&by_id)
    );
    // With the list reversed, ids 0 and 2 sit at the other's position: removing a follower
    // that is one of them removes that node, not the one at its position.
    let follower = (0..3).find(|&id| id != leader && id != 1).unwrap();
    let remove = [
        "members",
        "remove",
        &follower.to_string(),
        "--servers",
        &servers,
    ];
    let removed = rcraft(&remove, &[]);
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed));
    let voters = cluster.status(leader).unwrap().membership.voters;
    assert!(!voters.contains(&NodeId(follower as u64)), "{voters:?}");
    assert_eq!(voters.len(), 2, "{voters:?}");
    // The node log names its address plainly.
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(
        log.contains(&format!("listening on {}", cluster.addresses[0])),
        "{log}"
    );
    assert!(!log.contains("listening on Ok("), "{log}");
}

#[test]
fn members_list_follows_the_leader_hint() {
    let cluster = Cluster::start(&[]);
    let leader = cluster.wait_for_leader();
    let follower = (0..3).find(|&id| id != leader).unwrap();
    let only = cluster.addresses[follower].to_string();
    let list = rcraft(&["members", "list", "--json", "--servers", &only], &[]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let rows = json_lines(&list);
    let leader_row = rows.iter().find(|row| row["leader"] == true);
    assert!(
        leader_row.is_some_and(|row| row["id"] == leader),
        "{rows:?}"
    );
}

#[test]
fn connection_failures_are_named() {
    // Nothing listening: refused at once, not after the 5 s timeout.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nothing = closed.to_string();
    let started = Instant::now();
    let kv = rcraft(&["kv", "get", "k", "--servers", &nothing], &[]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(kv.status.code(), Some(1));
    assert!(stdout(&kv).contains("Connection refused"), "{}", text(&kv));
    // The wrong cluster id: the handshake is named, in status and in kv.
    let cluster = Cluster::start(&[
        "--election-timeout-ms",
        "3000-6000",
        "--heartbeat-ms",
        "100",
    ]);
    let leader = cluster.wait_for_leader();
    let servers = cluster.servers();
    let wrong = ["--servers", &servers, "--cluster-id", "7"];
    let status = rcraft(&[&["status"][..], &wrong].concat(), &[]);
    assert!(
        stdout(&status).contains("during the handshake"),
        "{}",
        text(&status)
    );
    let started = Instant::now();
    let kv = rcraft(&[&["kv", "get", "k"][..], &wrong].concat(), &[]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stdout(&kv).contains("during the handshake"),
        "{}",
        text(&kv)
    );
    // A frozen leader: its row says how long it waited, and the followers that still name
    // it do not make the exit status 0.
    cluster.signal(leader, libc::SIGSTOP);
    let status = rcraft(
        &["status", "--servers", &servers, "--timeout-ms", "300"],
        &[],
    );
    let table = stdout(&status);
    assert!(table.contains("timed out after"), "{}", text(&status));
    assert!(!table.contains("os error 11"), "{table}");
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
}

#[test]
fn status_waits_for_a_leader() {
    let cluster = Cluster::start(&[]);
    let servers = cluster.servers();
    let status = rcraft(&["status", "--servers", &servers, "--wait", "20000"], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(stdout(&status).contains(" leader "), "{}", text(&status));
    assert!(cluster.status(0).is_some_and(|s| s.term.0 > 0));
    let found = wait_for("a leader", || {
        (0..3).find(|&id| cluster.status(id).is_some_and(|s| s.role == Role::Leader))
    });
    assert!(found.is_some());
}

#[test]
fn kv_takes_flags_anywhere_json_lines_scan_and_the_server_variable() {
    let cluster = Cluster::start(&[]);
    cluster.wait_for_leader();
    let servers = cluster.servers();
    let put = rcraft(&["kv", "put", "k1", "v1", "--servers", &servers], &[]);
    assert_eq!(stdout(&put).trim(), r#"{"ok":true}"#, "{}", text(&put));
    let dashed = rcraft(&["kv", "--servers", &servers, "--", "put", "k2", "-5"], &[]);
    assert_eq!(dashed.status.code(), Some(0), "{}", text(&dashed));
    let env = [("RCRAFT_SERVERS", servers.as_str())];
    let get = rcraft(&["kv", "get", "k2"], &env);
    assert_eq!(
        stdout(&get).trim(),
        r#"{"ok":true,"value":"-5"}"#,
        "{}",
        text(&get)
    );
    let scan = rcraft(&["kv", "scan", "k", "1"], &env);
    assert_eq!(
        stdout(&scan).trim(),
        r#"{"ok":true,"entries":[{"key":"k1","value":"v1"}],"more":true}"#,
        "{}",
        text(&scan)
    );
    let mut pipe = Command::new(BIN)
        .args(["kv"])
        .env("RCRAFT_SERVERS", &servers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = concat!(
        r#"{"op":"put","key":"a b","value":"c d"}"#,
        "\n",
        r#"{"op":"get","key":"a b"}"#,
        "\n",
        "scan k\n",
        r#"{"op":"nope"}"#,
        "\n",
    );
    pipe.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let output = pipe.wait_with_output().unwrap();
    let answers = json_lines(&output);
    assert_eq!(answers[0], serde_json::json!({"ok": true}));
    assert_eq!(answers[1], serde_json::json!({"ok": true, "value": "c d"}));
    assert_eq!(answers[2]["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(answers[3]["definite"], true, "{:?}", answers[3]);
}
