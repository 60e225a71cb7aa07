//! `rcraft doctor DATA_DIR` through the real binary: the data dirs of a real 3-node run, read
//! while a node runs on one, healthy after a clean stop, with a damaged WAL record, and with a
//! damaged hard-state slot. Every file of a data dir must be byte for byte the same after
//! doctor read it. Real `rcraft serve` processes on 127.0.0.1; every wait is bounded;
//! processes are killed and directories removed on drop.

mod snapshot_support;

use snapshot_support::{
    BIN, Cluster, Damage, WAIT_MAX, active_segment, damage, damage_hard_state_slot, record_offsets,
    wait_for, write_keys,
};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every file under `dir` (recursively) with its length and a hash of its bytes.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mut hasher = DefaultHasher::new();
                bytes.hash(&mut hasher);
                files.insert(path, (bytes.len() as u64, hasher.finish()));
            }
        }
    }
    files
}

/// Runs `rcraft doctor ARGS`; returns exit code, stdout and stderr.
fn doctor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("doctor")
        .args(args)
        .output()
        .expect("rcraft runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs doctor on `dir` (text, then `--json`), asserting it changed no byte there; returns the
/// exit code, the text and the parsed JSON.
fn doctor_unchanged(dir: &Path) -> (i32, String, serde_json::Value) {
    let before = fingerprint(dir);
    let path = dir.to_str().unwrap();
    let (code, text, err) = doctor(&[path]);
    let (json_code, json, _) = doctor(&[path, "--json"]);
    assert_eq!(code, json_code, "text and JSON agree on the exit code");
    assert_eq!(
        fingerprint(dir),
        before,
        "doctor changed {path}:\n{text}{err}"
    );
    (
        code,
        text,
        serde_json::from_str(&json).expect("one JSON object"),
    )
}

/// Stops node `id` with SIGTERM and waits for it to exit (killing it after `WAIT_MAX`).
fn stop(cluster: &mut Cluster, id: usize) {
    cluster.signal(id, libc::SIGTERM);
    let mut child = cluster.nodes[id].take().expect("running");
    let deadline = Instant::now() + WAIT_MAX;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node {id} did not stop on SIGTERM:\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn doctor_reads_healthy_and_damaged_data_dirs_of_a_real_cluster_without_changing_them() {
    let mut cluster = Cluster::start(&["--snapshot-every", "25"]);
    let leader = cluster.wait_for_leader();
    write_keys(&cluster, 80, 64);
    for id in (0..3).filter(|&id| id != leader) {
        cluster.wait_caught_up(id, leader);
    }
    // Each node snapshots by itself; wait until node 0 has a snapshot file.
    let snapshots = cluster.data_dir(0).join("snapshots");
    let found = wait_for("a snapshot on node 0", || {
        std::fs::read_dir(&snapshots)
            .ok()?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".snap"))
            .then_some(())
    });
    assert!(found.is_some(), "no snapshot:\n{}", cluster.logs());

    // A node running on the dir: said so, and read anyway.
    let pid = cluster.nodes[0].as_ref().unwrap().id();
    let (_, text, err) = doctor(&[cluster.data_dir(0).to_str().unwrap()]);
    assert!(
        text.contains(&format!("YES: process {pid} holds the WAL lock")),
        "{text}{err}"
    );

    for id in 0..3 {
        stop(&mut cluster, id);
    }

    // Healthy.
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(0));
    assert_eq!(code, 0, "{text}");
    for expected in [
        "running         no (the WAL lock is free)",
        "identity        node 0 of cluster 0x",
        "initial voters  0,1,2",
        "slots agree",
        "data checksum verified, voters 0,1,2",
        "membership      voters 0,1,2",
        "verdict         healthy",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert_eq!(json["verdict"], "healthy", "{json}");
    assert_eq!(json["identity"]["node_id"], 0);
    assert_eq!(json["hard_state"]["agree"], true);
    assert_eq!(json["snapshots"]["latest"]["data_verified"], true);
    let snapshot_index = json["snapshots"]["latest"]["index"].as_u64().unwrap();
    let last_index = json["wal"]["last_index"].as_u64().unwrap();
    assert!(snapshot_index >= 25 && last_index >= 80, "{json}");
    assert!(json["wal"]["lost"].is_null(), "{json}");
    let term = json["hard_state"]["current"]["term"].as_u64().unwrap();
    assert!(term >= 1, "{json}");
    assert!(
        text.contains(&format!("{term} at ")),
        "the terms seen in the log:\n{text}"
    );

    // A byte of node 0's newest snapshot data rots: a start would set it aside and fetch the
    // state again (docs/ARCHITECTURE.md, "A damaged snapshot at start").
    let snapshot_path = PathBuf::from(json["snapshots"]["latest"]["path"].as_str().unwrap());
    let bytes = std::fs::read(&snapshot_path).unwrap();
    let at = bytes.len() / 2;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&snapshot_path)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[bytes[at] ^ 0x10], at as u64).unwrap();
    drop(file);
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(0));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DATA DAMAGED: "), "{text}");
    assert!(
        text.contains(&format!(
            "will repair: snapshot {}",
            snapshot_path.display()
        )),
        "{text}"
    );
    assert!(text.contains("its footer says"), "{text}");
    assert!(text.contains("moves the file aside (.damaged)"), "{text}");
    assert_eq!(json["verdict"], "repair");
    assert_eq!(json["snapshots"]["latest"]["data_verified"], false);
    let (code, text, _) = doctor(&[
        "force-new-cluster",
        cluster.data_dir(0).to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot          snapshot "), "{text}");

    // Garbage after node 0's last record, as a write torn by a power loss leaves it: cut,
    // nothing synced lost.
    let segment = active_segment(&cluster, 0);
    let end = *record_offsets(&std::fs::read(&segment).unwrap())
        .last()
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let end = end + u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAB; 40], end as u64).unwrap();
    drop(file);
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(0));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "  torn tail     never acknowledged; zero {} from offset {end} (40 bytes)",
            segment.display()
        )),
        "{text}"
    );
    assert!(json["wal"]["lost"].is_null(), "{json}");

    // A damaged record in the middle of node 1's active segment: synced entries lost.
    damage(&active_segment(&cluster, 1), Damage::MiddleRecord);
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(1));
    assert_eq!(code, 1, "{text}");
    let lost = &json["wal"]["lost"];
    let (from, through) = (
        lost["from"].as_u64().unwrap(),
        lost["through"].as_u64().unwrap(),
    );
    assert!(from <= through && through >= 80, "{json}");
    assert!(
        text.contains(&format!(
            "  LOST          synced entries {from}..={through} lost"
        )),
        "{text}"
    );
    let snapshot = json["snapshots"]["latest"]["index"].as_u64().unwrap();
    let repair = if through > snapshot {
        format!(
            "will repair: WAL: entries {}..={through} must be fetched again from a peer",
            from.max(snapshot + 1)
        )
    } else {
        "will repair: WAL: the lost entries are all in the snapshot".to_string()
    };
    assert!(text.contains(&repair), "{repair:?} missing:\n{text}");
    assert_eq!(json["verdict"], "repair");

    // The force-new-cluster dry run on the damaged node: what it keeps and may lose.
    let dir = cluster.data_dir(1);
    let path = dir.to_str().unwrap();
    let before = fingerprint(&dir);
    let (code, text, err) = doctor(&["force-new-cluster", path, "--dry-run"]);
    assert_eq!(code, 0, "{text}{err}");
    assert_eq!(
        fingerprint(&dir),
        before,
        "the dry run changed {path}:\n{text}"
    );
    // What the snapshot holds is not lost; the log is kept through the damage.
    let kept_last = (from - 1).max(snapshot);
    let mut expected = vec![
        "new cluster     voters 1 alone (was voters 0,1,2)".to_string(),
        format!("keep            entries 1..={snapshot} in the snapshot (term "),
        format!("may be lost     any entry after {kept_last} (last term "),
    ];
    if from - 1 > snapshot {
        expected.push(format!(
            "entries {}..={kept_last} from the log",
            snapshot + 1
        ));
    }
    if through > snapshot {
        let lost_from = from.max(snapshot + 1);
        expected.push(format!(
            "may be lost     entries {lost_from}..={through}: synced here once, damaged"
        ));
    }
    for expected in &expected {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }

    // Forced for real: the same plan, the lost entries replaced by empty ones, then the
    // membership entry; the node would now start healthy as the only voter.
    let (code, forced, err) = doctor(&["force-new-cluster", path]);
    assert_eq!(code, 0, "{forced}{err}");
    for expected in &expected {
        assert!(forced.contains(expected), "{expected:?} missing:\n{forced}");
    }
    let membership_at = if through > snapshot {
        let lost_from = from.max(snapshot + 1);
        let filled = format!("wrote           entries {lost_from}..={through}: empty, term ");
        assert!(forced.contains(&filled), "{filled:?} missing:\n{forced}");
        through + 1
    } else {
        kept_last + 1
    };
    let wrote = format!("wrote           entry {membership_at}: membership voters 1 alone");
    assert!(forced.contains(&wrote), "{wrote:?} missing:\n{forced}");
    let (code, text, json) = doctor_unchanged(&dir);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "membership      voters 1 (log entry {membership_at})"
        )),
        "{text}"
    );
    assert!(json["wal"]["lost"].is_null(), "{json}");

    // A damaged hard-state slot on node 2: the other slot holds the state.
    damage_hard_state_slot(&cluster, 2, 0);
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(2));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("  slot 0        DAMAGED: checksum mismatch"),
        "{text}"
    );
    assert!(text.contains("SLOTS DIFFER"), "{text}");
    assert!(text.contains("will repair: hard state"), "{text}");
    assert_eq!(json["hard_state"]["slots"][0]["status"], "damaged");
    assert_eq!(json["hard_state"]["slots"][1]["status"], "valid");
    assert!(json["hard_state"]["current"]["term"].as_u64().unwrap() >= 1);

    assert!(
        text.contains("whom this node voted for is unknown"),
        "{text}"
    );

    // Both slots damaged: a node starts with its votes unknown (issue 15).
    damage_hard_state_slot(&cluster, 2, 1);
    let (code, text, json) = doctor_unchanged(&cluster.data_dir(2));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("will repair: hard state: no valid slot (both damaged or empty)"),
        "{text}"
    );
    assert!(
        text.contains("whom this node voted for is unknown"),
        "{text}"
    );
    assert_eq!(json["verdict"], "repair");
}

#[test]
fn doctor_refuses_what_is_not_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (code, text, err) = doctor(&[missing.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}{err}");
    assert!(err.contains("is not a directory"), "{err}");
    let (code, text, _) = doctor(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("holds no rcraft state"), "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
    let (code, _, err) = doctor(&[]);
    assert_eq!(code, 2, "{err}");
}

/// Runs `rcraft ARGS` (a client command); returns exit code and stdout plus stderr.
fn rcraft(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("rcraft runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exited"), text + &err)
}

#[test]
fn force_new_cluster_makes_a_survivor_lead_alone_with_all_its_data_and_take_a_new_member() {
    let mut cluster = Cluster::start(&["--snapshot-every", "40"]);
    let leader = cluster.wait_for_leader();
    write_keys(&cluster, 100, 8);
    cluster.wait_caught_up(0, leader);
    // Nodes 1 and 2 are gone for good, disks and all: no quorum is left.
    for id in [1, 2] {
        cluster.kill(id);
        std::fs::remove_dir_all(cluster.data_dir(id)).unwrap();
    }
    let dir = cluster.data_dir(0);
    let path = dir.to_str().unwrap();

    // Refused while node 0 runs on the directory, which is left unchanged.
    let before = fingerprint(&dir);
    let (code, text, err) = doctor(&["force-new-cluster", path]);
    assert_eq!(code, 1, "{text}{err}");
    assert!(text.contains("holds the WAL lock"), "{text}");
    stop(&mut cluster, 0);
    assert_eq!(fingerprint(&dir), before, "a refused force changed {path}");

    let (code, text, err) = doctor(&["force-new-cluster", path]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(
        text.contains("new cluster     voters 0 alone (was voters 0,1,2)"),
        "{text}"
    );
    assert!(text.contains("membership voters 0 alone"), "{text}");
    let (code, text, _) = doctor_unchanged(&dir);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("membership      voters 0 (log entry "),
        "{text}"
    );

    // Node 0 starts as it always did, leads alone and serves every key.
    cluster.restart(0);
    let found = wait_for("node 0 to lead", || {
        cluster
            .status(0)
            .filter(|s| s.role == rcraft::wire::Role::Leader)
    });
    let status = found.unwrap_or_else(|| panic!("node 0 did not lead:\n{}", cluster.logs()));
    assert_eq!(status.membership.voters.len(), 1, "{status:?}");
    let mut client = cluster.client();
    for i in 0..100 {
        let got = client.get(&snapshot_support::key(i)).unwrap();
        assert_eq!(got, Some(snapshot_support::value(i, 8)), "key {i}");
    }
    client
        .put(b"after-force", b"yes")
        .expect("a write commits alone");

    // A new node joins at node 1's address with a fresh data dir.
    cluster.flags = vec!["--join".to_string()];
    cluster.restart(1);
    let servers = cluster.servers();
    let (code, out) = rcraft(&[
        "members",
        "add",
        "1",
        "--servers",
        &servers,
        "--timeout-ms",
        "20000",
    ]);
    assert_eq!(code, 0, "{out}\n{}", cluster.logs());
    assert!(out.contains("now voters 0,1"), "{out}");
    cluster.wait_caught_up(1, 0);
    let status = cluster.status(1).expect("node 1 answers");
    let voters: Vec<u64> = status.membership.voters.iter().map(|id| id.0).collect();
    assert_eq!(voters, [0, 1], "{status:?}");
    assert_eq!(client.get(b"after-force").unwrap(), Some(b"yes".to_vec()));
}
