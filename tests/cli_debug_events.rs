//! `rcraft debug events` and the flight recorder end to end, through the real binary: after a
//! leadership transfer every node's recorder tells its start, the votes it granted, the
//! elections and the leader changes (human-readable and `--json`); a node that stops on a
//! fatal error (its snapshot directory replaced by a file, so the next automatic snapshot
//! cannot be written) leaves `flight-recorder.txt` in its data dir, ending with the reason.

mod snapshot_support;

use snapshot_support::{BIN, Cluster, wait_for};
use std::process::{Command, Output};

fn rcraft(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn debug_events_tells_each_nodes_elections_votes_and_leaders() {
    let cluster = Cluster::start(&[]);
    let first = cluster.wait_for_leader();
    let target = (first + 1) % 3;
    let moved = rcraft(&[
        "transfer",
        "--servers",
        &cluster.servers(),
        "--to",
        &target.to_string(),
    ]);
    assert!(moved.status.success(), "{moved:?}\n{}", cluster.logs());
    let output = rcraft(&["debug", "events", "--servers", &cluster.servers()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for id in 0..3 {
        let header = format!("node {id} {}: ", cluster.addresses[id]);
        assert!(text.contains(&header), "{text}");
        let started = format!(" started: node {id} started on {}", cluster.addresses[id]);
        assert!(text.contains(&started), "{text}");
    }
    assert!(
        text.contains(" election_won: won the election for term "),
        "{text}"
    );
    assert!(
        text.contains(&format!(" vote_granted: voted for node {target} in term ")),
        "{text}"
    );
    assert!(
        text.contains(" stepped_down: stepped down as leader of term "),
        "{text}"
    );

    let output = rcraft(&[
        "debug",
        "events",
        "--servers",
        &cluster.servers(),
        "--id",
        &target.to_string(),
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().all(|e| e["node"] == target as u64),
        "{stdout}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events oldest first: {stdout}"
    );
    assert_eq!(events[0]["kind"], "started", "{stdout}");
    let won = events.iter().find(|e| e["kind"] == "election_won");
    let won = won.unwrap_or_else(|| panic!("node {target} recorded no win: {stdout}"));
    assert!(won["term"].as_u64().unwrap() >= 2, "{won}");
    assert!(
        won["unix_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{won}"
    );

    let bad = rcraft(&[
        "debug",
        "events",
        "--servers",
        &cluster.servers(),
        "--id",
        "9",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--id 9: no listed address is node 9"));
}

#[test]
fn a_fatal_stop_leaves_the_flight_recorder_in_the_data_dir() {
    let mut cluster = Cluster::start_nodes(1, &["--snapshot-every", "5"]);
    cluster.wait_for_leader();
    let data_dir = cluster.data_dir(0);
    // The next automatic snapshot cannot be written: a fatal error for the node.
    std::fs::rename(data_dir.join("snapshots"), cluster.dir.path().join("moved")).unwrap();
    std::fs::write(data_dir.join("snapshots"), b"not a directory").unwrap();
    let mut client = cluster.client();
    for i in 0..10 {
        if client.put(format!("key{i}").as_bytes(), b"value").is_err() {
            break;
        }
    }
    let dump = data_dir.join("flight-recorder.txt");
    let text = wait_for("the flight recorder dump", || {
        std::fs::read_to_string(&dump)
            .ok()
            .filter(|t| t.contains("fatal_stop"))
    })
    .unwrap_or_else(|| panic!("no dump at {}; logs:\n{}", dump.display(), cluster.logs()));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(" started: node 0 started on "), "{text}");
    assert!(
        text.contains(" election_won: won the election for term 1"),
        "{text}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.contains(" fatal_stop: the node stopped: writing the snapshot at index "),
        "{text}"
    );
    assert!(
        cluster.log_of(0).contains("flight recorder written to"),
        "{}",
        cluster.logs()
    );
    cluster.kill(0);
}
