//! `rcraft serve --metrics-addr` end to end: a one-node cluster serves Prometheus text on
//! `/metrics` (checked by `promtool check metrics`, and for the values the writes must have
//! moved) and `/health`; a node without a quorum answers 503 with the reason; other paths and
//! garbage get 404 and 400; a bad address, or one in use, is refused at start. Processes are killed and
//! directories removed on drop.
//!
//! `promtool` comes from the Debian package `prometheus` (.ci/run installs it). Outside CI a
//! machine without it skips only the promtool check, saying so; with `CI=true` its absence
//! fails the test.

mod snapshot_support;

use snapshot_support::{BIN, Cluster, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `request` as is and returns the whole answer (the server closes the connection).
fn http_raw(address: SocketAddr, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn get(address: SocketAddr, path: &str) -> Option<String> {
    http_raw(
        address,
        format!("GET {path} HTTP/1.1\r\nHost: rcraft\r\n\r\n").as_bytes(),
    )
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// The value of the sample line `name` (with its labels, if any) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not installed (then the
/// caller skips, or fails under CI).
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Some((output.status.success(), said))
}

#[test]
fn a_live_node_serves_metrics_that_promtool_accepts_and_its_health() {
    let metrics = free_address();
    let cluster = Cluster::start_nodes(1, &["--metrics-addr", &metrics.to_string()]);
    cluster.wait_for_leader();
    let mut client = cluster.client();
    for i in 0..20 {
        client.put(format!("key{i}").as_bytes(), b"value").unwrap();
    }
    let answer = wait_for("/metrics to show the writes", || {
        let answer = get(metrics, "/metrics")?;
        let applied = sample(body(&answer), "rcraft_applied_index")?;
        (applied >= 20.0).then_some(answer)
    })
    .unwrap_or_else(|| panic!("no metrics; logs:\n{}", cluster.logs()));
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4"),
        "{answer}"
    );
    let text = body(&answer);
    for (name, at_least) in [
        ("rcraft_has_leader", 1.0),
        ("rcraft_is_leader", 1.0),
        ("rcraft_term", 1.0),
        ("rcraft_commit_index", 20.0),
        ("rcraft_last_index", 20.0),
        ("rcraft_leader_changes_total", 1.0),
        ("rcraft_elections_won_total", 1.0),
        ("rcraft_proposals_committed_total", 20.0),
        ("rcraft_proposals_applied_total", 20.0),
        ("rcraft_wal_fsync_duration_seconds_count", 1.0),
        ("rcraft_network_received_bytes_total", 1.0),
        ("rcraft_network_sent_bytes_total", 1.0),
        ("rcraft_network_received_frames_total", 20.0),
        ("rcraft_client_connections", 1.0),
    ] {
        let value = sample(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        assert!(
            value >= at_least,
            "{name} is {value}, expected >= {at_least}"
        );
    }
    for name in [
        "rcraft_repairing_entries",
        "rcraft_votes_unknown",
        "rcraft_proposals_pending",
        "rcraft_proposals_failed_total",
        "rcraft_snapshot_save_duration_seconds_count",
        "rcraft_snapshot_send_duration_seconds_count",
        "rcraft_snapshot_receive_duration_seconds_count",
        "rcraft_snapshot_sent_bytes_total",
        "rcraft_snapshot_received_bytes_total",
        "rcraft_network_sent_frames_total",
        r#"rcraft_network_dropped_frames_total{reason="queue_full"}"#,
    ] {
        assert!(sample(text, name).is_some(), "no {name} in:\n{text}");
    }
    // A one-node cluster has no peers: rcraft_peer_round_trip_seconds has no samples here
    // (node/metrics.rs's unit test renders it).
    match promtool_check(text) {
        Some((ok, said)) => assert!(ok, "promtool check metrics: {said}\n{text}"),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("promtool is not installed under CI (apt-get install prometheus)")
        }
        None => eprintln!(
            "SKIPPED: promtool check metrics (promtool not installed; \
             apt-get install prometheus); the other checks ran"
        ),
    }

    let health = get(metrics, "/health").unwrap();
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(
        body(&health).starts_with("ok: leader 0 in term "),
        "{health}"
    );
    let missing = get(metrics, "/nothing").unwrap();
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    let garbage = http_raw(metrics, b"\x16\x03\x01 not http\r\n\r\n").unwrap();
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    // The node is still serving.
    assert!(get(metrics, "/health").unwrap().contains("200 OK"));
}

#[test]
fn a_node_without_a_quorum_is_unhealthy_and_says_why() {
    // Three addresses, one node started: it never learns of a leader.
    let metrics = free_address();
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let mut node = Command::new(BIN)
        .args(["serve", "--id", "0", "--peers", &peers.join(",")])
        .arg("--data-dir")
        .arg(dir.path().join("node0"))
        .args(["--metrics-addr", &metrics.to_string()])
        .env_remove("RUST_LOG")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let health = wait_for("/health to answer", || get(metrics, "/health"));
    let _ = node.kill();
    let _ = node.wait();
    let health = health.expect("/health answered");
    assert!(
        health.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{health}"
    );
    assert!(
        body(&health).starts_with("unhealthy: no leader known in term "),
        "{health}"
    );
}

#[test]
fn a_bad_metrics_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (value, why) in [
        ("nonsense", "--metrics-addr"),
        ("127.0.0.1:1,127.0.0.1:2", "takes one HOST:PORT"),
    ] {
        let output = Command::new(BIN)
            .args(["serve", "--id", "0", "--peers", "127.0.0.1:1"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--metrics-addr", value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains(why), "{value}: {stderr}");
    }
    // A port in use: the node stops its threads and exits non-zero, naming the address.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(BIN)
        .args(["serve", "--id", "0", "--peers", &free_address().to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("in-use"))
        .args(["--metrics-addr", &address])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let why = format!("rcraft serve: serving metrics on {address}: ");
    assert!(stderr.contains(&why), "{stderr}");
}

/// The stages `rcraft status --latency --json` reports for node `id`, as (stage, peer, count).
fn stages_of(line: &serde_json::Value) -> Vec<(String, Option<u64>, u64)> {
    line["latency"]
        .as_array()
        .unwrap_or_else(|| panic!("no latency in {line}"))
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["peer"].as_u64(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn status_latency_shows_every_stage_of_the_write_path() {
    let cluster = Cluster::start(&[]);
    let leader = cluster.wait_for_leader();
    let mut client = cluster.client();
    for i in 0..30 {
        client.put(format!("key{i}").as_bytes(), b"value").unwrap();
    }
    for id in 0..3 {
        cluster.wait_caught_up(id, leader);
    }
    let output = Command::new(BIN)
        .args([
            "status",
            "--latency",
            "--json",
            "--servers",
            &cluster.servers(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines {
        let id = line["id"].as_u64().unwrap() as usize;
        let stages = stages_of(line);
        let names: Vec<&str> = stages.iter().map(|(s, _, _)| s.as_str()).collect();
        let counted = |stage: &str| {
            stages
                .iter()
                .filter(|(s, _, _)| s == stage)
                .map(|(_, _, count)| count)
                .sum::<u64>()
        };
        if line["role"] == "leader" {
            for stage in [
                "queue_wait",
                "wal_append",
                "fsync",
                "replication",
                "commit",
                "apply",
                "reply",
            ] {
                assert!(counted(stage) >= 1, "leader has no {stage}: {stdout}");
            }
            assert!(counted("commit") >= 30, "{stdout}");
            let followers: Vec<u64> = stages
                .iter()
                .filter(|(s, _, _)| s == "replication")
                .filter_map(|(_, peer, _)| *peer)
                .collect();
            assert!(
                !followers.is_empty() && !followers.contains(&(id as u64)),
                "{stdout}"
            );
        } else {
            assert!(counted("receive_to_durable") >= 1, "{stdout}");
            assert!(
                !names.contains(&"commit"),
                "a follower times no commits: {stdout}"
            );
        }
    }
    // The table form names each node and its stages.
    let output = Command::new(BIN)
        .args(["status", "--latency", "--servers", &cluster.servers()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(&format!(
            "node {leader} {} (leader): write latency since start",
            cluster.addresses[leader]
        )),
        "{table}"
    );
    assert!(table.contains("receive_to_durable"), "{table}");
}
