//! Protocol-aware recovery through the real binary (issue 15): synced WAL records of a stopped
//! node are damaged on disk (the last one, one in the middle of a segment, a sealed segment with
//! its header, a segment of the older format, or a whole segment missing), or the slot of
//! its hard-state file holding its term and vote, and the node restarts. It must start, say which entries it lost (or that it does not know whom it voted for), fetch them from the leader (or learn every voter's term), say when it
//! is whole, and the cluster must keep every acknowledged write, also after the leader it
//! repaired from is killed. A node whose lost entry no other voter holds learns from their
//! answers that it was never committed. A node whose newest snapshot file rotted (data or
//! header) or was deleted starts, sets it aside, and rebuilds its state from its log or fetches
//! it from the leader under a saved claim. Real `rcraft serve` processes on 127.0.0.1; every wait is bounded;
//! processes are killed and directories removed on drop.

mod snapshot_support;

use rcraft::wire::Role;
use rcraft_storage::{Record, Wal, WalOptions};
use snapshot_support::{
    BIN, Cluster, Damage, active_segment, damage, damage_hard_state_slot, key, record_offsets,
    value, wait_for, write_keys,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes keys of this size.
const VALUE_BYTES: usize = 64;

/// Waits until node `id`'s log holds `text`.
fn wait_for_log(cluster: &Cluster, id: usize, text: &str) {
    let found = wait_for(text, || cluster.log_of(id).contains(text).then_some(()));
    found.unwrap_or_else(|| panic!("node {id} never logged {text:?}; logs:\n{}", cluster.logs()));
}

/// Reads every key back through the cluster.
fn check_keys(cluster: &Cluster, count: usize) {
    let mut client = cluster.client();
    for i in 0..count {
        let got = client.get(&key(i)).expect("get");
        assert_eq!(got, Some(value(i, VALUE_BYTES)), "key {i}");
    }
}

/// Damages node `victim` (the leader when `leader_damaged`, else a follower) while stopped,
/// restarts it, waits for its repair, then kills the other node that held the data the
/// longest (the leader it repaired from, or a follower) and checks every write.
fn damaged_node_repairs_and_no_write_is_lost(which: Damage, leader_damaged: bool) {
    let damage_it = |cluster: &Cluster, victim: usize| {
        damage(&active_segment(cluster, victim), which);
    };
    node_repairs_and_no_write_is_lost(60, &damage_it, leader_damaged);
}

/// As [`damaged_node_repairs_and_no_write_is_lost`], with `count` writes and any damage.
fn node_repairs_and_no_write_is_lost(
    count: usize,
    damage_it: &dyn Fn(&Cluster, usize),
    leader_damaged: bool,
) {
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = if leader_damaged {
        leader
    } else {
        (leader + 1) % 3
    };
    let witness = (victim + 2) % 3;
    cluster.wait_caught_up((leader + 1) % 3, leader);
    cluster.wait_caught_up((leader + 2) % 3, leader);
    cluster.kill(victim);
    damage_it(&cluster, victim);
    cluster.restart(victim);

    wait_for_log(
        &cluster,
        victim,
        "were synced and are lost from this node's log",
    );
    if leader_damaged {
        // The others elect a leader meanwhile; a write in its term gives the repair an entry
        // to end on.
        let new_leader = wait_for("a new leader", || {
            (0..3).find(|&id| {
                id != victim && cluster.status(id).is_some_and(|s| s.role == Role::Leader)
            })
        });
        assert!(new_leader.is_some(), "no new leader:\n{}", cluster.logs());
    }
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the damage");
    wait_for_log(&cluster, victim, "repaired: the lost entries");
    // Its status names no range any more.
    let status = wait_for("the repaired node's status", || {
        cluster.status(victim).filter(|s| s.repairing.is_none())
    });
    let status = status.unwrap_or_else(|| panic!("still repairing:\n{}", cluster.logs()));
    assert!(status.last_index.0 >= count as u64, "{status:?}");

    // The node holds the writes again: without the node it repaired from, the cluster still
    // has every acknowledged one (a quorum of the victim and the third node).
    cluster.kill(witness);
    let leader = cluster.wait_for_leader();
    assert_ne!(leader, witness);
    check_keys(&cluster, count + 1);
}

#[test]
fn a_follower_whose_last_synced_record_rotted_repairs_it() {
    damaged_node_repairs_and_no_write_is_lost(Damage::LastRecord, false);
}

#[test]
fn a_follower_with_a_damaged_record_mid_segment_repairs_the_rest_of_its_log() {
    damaged_node_repairs_and_no_write_is_lost(Damage::MiddleRecord, false);
}

#[test]
fn a_stopped_leader_whose_last_synced_record_rotted_repairs_it() {
    damaged_node_repairs_and_no_write_is_lost(Damage::LastRecord, true);
}

#[test]
fn a_stopped_leader_with_a_damaged_record_mid_segment_repairs_it() {
    damaged_node_repairs_and_no_write_is_lost(Damage::MiddleRecord, true);
}

/// Segments this small hold a few dozen of the tests' entries each.
const SMALL_SEGMENT_BYTES: u64 = 4096;

/// Rewrites stopped node `id`'s log into segments of [`SMALL_SEGMENT_BYTES`] (the node writes
/// 16 MiB ones), the same records in the same format, and returns their paths, oldest first:
/// damage to a sealed segment, or between segments, needs several.
fn split_log_into_small_segments(cluster: &Cluster, id: usize) -> Vec<PathBuf> {
    let dir = cluster.data_dir(id).join("wal");
    let records: Vec<(u64, u64, Vec<u8>)> = {
        let wal = Wal::open(&dir, WalOptions::default()).expect("open the node's log");
        assert!(wal.lost().is_none());
        let first = wal.first_index();
        wal.entries_from(first)
            .unwrap()
            .map(|r| (r.index, r.term, r.payload.to_vec()))
            .collect()
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let options = WalOptions {
        segment_bytes: SMALL_SEGMENT_BYTES,
        ..WalOptions::default()
    };
    let mut wal = Wal::open(&dir, options).unwrap();
    let first = records.first().expect("entries").0;
    if first > 1 {
        wal.reset(first).unwrap();
    }
    let batch: Vec<Record<'_>> = records
        .iter()
        .map(|(index, term, payload)| Record {
            index: *index,
            term: *term,
            payload,
        })
        .collect();
    wal.append(&batch).unwrap();
    wal.sync().unwrap();
    let paths = wal.segment_paths();
    assert!(paths.len() >= 4, "several segments: {paths:?}");
    paths
}

/// Flips one bit at `at` of `path`, as bit rot would.
fn flip_bit(path: &Path, at: usize) {
    let bytes = std::fs::read(path).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[bytes[at] ^ 0x02], at as u64).unwrap();
}

/// Damages the header of a sealed segment (its magic and first index: nothing the records
/// do not say) and one record in it: the header is rebuilt, and the log is repaired from the
/// damaged record on.
fn damage_a_sealed_header_and_record(cluster: &Cluster, victim: usize) {
    let paths = split_log_into_small_segments(cluster, victim);
    let sealed = &paths[1];
    flip_bit(sealed, 3);
    flip_bit(sealed, 17);
    let offsets = record_offsets(&std::fs::read(sealed).unwrap());
    flip_bit(sealed, offsets[offsets.len() / 2] + 16);
}

/// Removes a segment between two others.
fn remove_a_middle_segment(cluster: &Cluster, victim: usize) {
    let paths = split_log_into_small_segments(cluster, victim);
    std::fs::remove_file(&paths[1]).unwrap();
}

/// Rewrites the first segment's header as an older rcraft wrote it (version 1: no synced
/// count, the first index at bytes 16..24 where version 3 has the frontier's term;
/// storage/FORMAT.md §1.1) and damages a record in it.
fn damage_an_old_format_sealed_segment(cluster: &Cluster, victim: usize) {
    let paths = split_log_into_small_segments(cluster, victim);
    let sealed = &paths[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[12..16].fill(0);
    let first_index: [u8; 8] = bytes[40..48].try_into().unwrap(); // the first record's
    bytes[16..24].copy_from_slice(&first_index);
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes[28..32].fill(0);
    std::fs::write(sealed, &bytes).unwrap();
    let offsets = record_offsets(&bytes);
    flip_bit(sealed, offsets[offsets.len() / 2] + 16);
}

#[test]
fn a_follower_with_a_damaged_segment_header_and_record_repairs_from_there() {
    node_repairs_and_no_write_is_lost(150, &damage_a_sealed_header_and_record, false);
}

#[test]
fn a_follower_missing_a_middle_segment_repairs_the_rest_of_its_log() {
    node_repairs_and_no_write_is_lost(150, &remove_a_middle_segment, false);
}

#[test]
fn a_stopped_leader_missing_a_middle_segment_repairs_it() {
    node_repairs_and_no_write_is_lost(150, &remove_a_middle_segment, true);
}

#[test]
fn a_follower_with_a_damaged_old_format_sealed_segment_repairs_it() {
    node_repairs_and_no_write_is_lost(150, &damage_an_old_format_sealed_segment, false);
}

/// The only server of a cluster that lost synced entries has no peer to fetch them from: it
/// names the range (in its log and in `rcraft status`) and goes on without it (it does not
/// wait for a leader that cannot come), and everything before the range is still there.
#[test]
fn the_only_server_that_lost_entries_names_them_and_goes_on() {
    let mut cluster = Cluster::start_nodes(1, &["--snapshot-every", "1000000"]);
    cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    cluster.kill(0);
    damage(&active_segment(&cluster, 0), Damage::LastRecord);
    cluster.restart(0);
    wait_for_log(&cluster, 0, "were synced and are lost from this node's log");
    let (from, through) = logged_loss(&cluster, 0);
    assert_eq!(from, through, "the last record alone");
    wait_for_log(
        &cluster,
        0,
        &format!("entries {from}..={through} are lost from the only server of this cluster"),
    );
    assert_eq!(cluster.wait_for_leader(), 0);
    let status = cluster.status(0).expect("status");
    assert_eq!(status.repairing, None, "{status:?}");
    let lost = status.lost.expect("the status names the range");
    assert_eq!((lost.from.0, lost.through.0), (from, through), "{status:?}");
    let address = cluster.addresses[0];
    let table = rcraft_status(address, &[]);
    let line = format!(
        "lost: entries {from}..={through} were lost from this node's disk at its start; it is \
         the only server of its cluster"
    );
    assert!(table.contains(&line), "{table}");
    assert!(!table.contains("repairing"), "{table}");
    let json = rcraft_status(address, &["--json"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect(&json);
    assert_eq!(row["lost"]["from"], from, "{json}");
    assert_eq!(row["lost"]["through"], through, "{json}");
    assert!(row["repairing"].is_null(), "{json}");
    let mut client = cluster.client();
    client
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("a write after the loss");
    // The lost record was one of the writes (writers run in parallel, so any key); every
    // other one is there, and none holds a value it was not given.
    let mut missing = Vec::new();
    for i in 0..count {
        match client.get(&key(i)).unwrap() {
            Some(got) => assert_eq!(got, value(i, VALUE_BYTES), "key {i}"),
            None => missing.push(i),
        }
    }
    assert_eq!(
        missing.len(),
        1,
        "one write lost with the record: {missing:?}"
    );
    assert_eq!(
        client.get(&key(count)).unwrap(),
        Some(value(count, VALUE_BYTES))
    );
    // New entries took the range's indexes: the next start finds nothing lost and says so.
    drop(client);
    cluster.kill(0);
    cluster.restart(0);
    assert_eq!(cluster.wait_for_leader(), 0);
    let status = cluster.status(0).expect("status");
    assert_eq!(status.lost, None, "{status:?}");
    let table = rcraft_status(address, &[]);
    assert!(!table.contains("lost:"), "{table}");
}

/// Every node's disk lost the same last entry: no intact copy is left. Nobody stands for
/// election (each may have acknowledged it, and no candidate's log covers it), so nothing is
/// served without it, and `rcraft status` says exactly which entries no node holds.
#[test]
fn when_every_copy_is_damaged_status_names_the_entries_no_node_holds() {
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    cluster.wait_caught_up((leader + 1) % 3, leader);
    cluster.wait_caught_up((leader + 2) % 3, leader);
    for id in 0..3 {
        cluster.kill(id);
    }
    for id in 0..3 {
        damage(&active_segment(&cluster, id), Damage::LastRecord);
        cluster.restart(id);
    }
    let mut losses = Vec::new();
    for id in 0..3 {
        wait_for_log(
            &cluster,
            id,
            "were synced and are lost from this node's log",
        );
        losses.push(logged_loss(&cluster, id));
    }
    assert!(losses.iter().all(|l| *l == losses[0]), "{losses:?}");
    let (from, through) = losses[0];
    let line = format!("LOST: no node holds entries {from}..={through}, which a node synced");
    let table = wait_for("every node to answer status", || {
        let out = Command::new(BIN)
            .args(["status", "--servers", &cluster.servers()])
            .output()
            .expect("run rcraft status");
        assert_eq!(out.status.code(), Some(1), "no leader is known");
        let table = String::from_utf8(out.stdout).unwrap();
        table.contains(&line).then_some(table)
    });
    assert!(table.is_some(), "{}", cluster.logs());
    for id in 0..3 {
        let status = cluster.status(id).expect("status");
        assert_ne!(status.role, Role::Leader, "{status:?}");
        assert_eq!(status.last_index.0, from - 1, "{status:?}");
    }
}

/// The `slots` of the hard state of a stopped node (a follower or the leader) are damaged
/// while a third node is down too (every save writes the same state to slot 0, then to slot
/// 1: either is the current one). The node starts, says in its log, its
/// status, `rcraft status` and its `rcraft_votes_unknown` gauge that it does not know whom it voted for and waits for the
/// missing voter's term; meanwhile it grants no vote, so no leader is elected with the only
/// other node up (a leader that stayed up keeps leading, with the node as its follower).
/// Then leadership is handed to it: it campaigns above the bound and wins. Once the third node is back, it learns the terms, says it votes again,
/// saves its hard state without the mark, a leader is elected, and every acknowledged write
/// is still there.
fn damaged_hard_state_votes_again_after_learning_terms(leader_damaged: bool, slots: &[usize]) {
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = if leader_damaged {
        leader
    } else {
        (leader + 1) % 3
    };
    let absent = (victim + 1) % 3;
    let up = (victim + 2) % 3;
    cluster.wait_caught_up(absent, leader);
    cluster.wait_caught_up(up, leader);
    let term = cluster.status(victim).expect("status").term;
    cluster.kill(victim);
    cluster.kill(absent);
    for &slot in slots {
        damage_hard_state_slot(&cluster, victim, slot);
    }
    let metrics = restart_serving_metrics(&mut cluster, victim);
    wait_for_log(&cluster, victim, "votes unknown: this node's hard state");
    // The node that is up answers; the absent one is still waited for.
    let absent_only = Some(vec![rcraft::wire::NodeId(absent as u64)]);
    let waiting = wait_for("the victim to wait for the absent voter only", || {
        cluster
            .status(victim)
            .filter(|s| s.votes_unknown == absent_only)
    });
    assert!(waiting.is_some(), "{}", cluster.logs());
    let out = Command::new(BIN)
        .args(["status", "--servers", &cluster.servers()])
        .output()
        .expect("run rcraft status");
    let table = String::from_utf8(out.stdout).unwrap();
    let line = format!(
        "votes unknown: its hard state (whom it voted for) was damaged; it neither votes nor \
         campaigns until voters {absent} have told their current terms"
    );
    assert!(table.contains(&line), "{table}");
    let scrape = http_get(metrics, "/metrics").expect("/metrics answered");
    assert!(scrape.contains("\nrcraft_votes_unknown 1\n"), "{scrape}");
    // Without its vote the node that stayed up cannot be elected: a leader that stayed up
    // goes on in its term (the victim follows it), else there is none, for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let victim_status = cluster.status(victim).expect("status");
    assert_ne!(victim_status.role, Role::Leader, "{victim_status:?}");
    let up_status = cluster.status(up).expect("status");
    assert!(
        up_status.role != Role::Leader || up_status.term == term,
        "{up_status:?}"
    );
    cluster.restart(absent);
    wait_for_log(
        &cluster,
        victim,
        "votes known again: every voter told its term",
    );
    let status = wait_for("votes known on the victim", || {
        cluster.status(victim).filter(|s| s.votes_unknown.is_none())
    });
    assert!(status.is_some(), "{}", cluster.logs());
    let scrape = wait_for("rcraft_votes_unknown 0", || {
        http_get(metrics, "/metrics").filter(|s| s.contains("\nrcraft_votes_unknown 0\n"))
    });
    assert!(scrape.is_some(), "{:?}", http_get(metrics, "/metrics"));
    cluster.wait_for_leader();
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the damage");
    check_keys(&cluster, count + 1);
    // Leadership handed to the node: it campaigns in a term above the bound and wins; its
    // hard state is saved without the mark, so a restart now votes at once.
    let out = Command::new(BIN)
        .args(["transfer", "--servers", &cluster.servers(), "--to"])
        .arg(victim.to_string())
        .output()
        .expect("run rcraft transfer");
    assert!(out.status.success(), "{out:?}\n{}", cluster.logs());
    let status = cluster.status(victim).expect("status");
    assert_eq!(status.role, Role::Leader, "{status:?}");
    assert!(status.term > term, "{status:?}");
    let bytes = std::fs::read(cluster.data_dir(victim).join("hard_state")).unwrap();
    assert_eq!(bytes[..512], bytes[512..]);
    assert_eq!(bytes[41], 1, "flags: mirrored, votes known");
    check_keys(&cluster, count + 1);
}

#[test]
fn a_stopped_follower_with_a_damaged_hard_state_slot_votes_again_after_learning_terms() {
    damaged_hard_state_votes_again_after_learning_terms(false, &[0]);
}

#[test]
fn a_stopped_leader_with_a_damaged_hard_state_votes_again_after_learning_terms() {
    damaged_hard_state_votes_again_after_learning_terms(true, &[0, 1]);
}

#[test]
fn a_stopped_leader_whose_last_written_hard_state_slot_rotted_votes_again_after_learning_terms() {
    damaged_hard_state_votes_again_after_learning_terms(true, &[1]);
}

/// The range node `id` logged as lost at start (`entries A..=B were synced and are lost`).
fn logged_loss(cluster: &Cluster, id: usize) -> (u64, u64) {
    let log = cluster.log_of(id);
    let line = log
        .lines()
        .find(|l| l.contains("were synced and are lost"))
        .expect("the loss is logged");
    let range = line
        .split("entries ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("entries A..=B");
    let (from, through) = range.split_once("..=").expect("A..=B");
    (from.parse().unwrap(), through.parse().unwrap())
}

/// Runs `rcraft status` on one node; returns its standard output.
fn rcraft_status(address: SocketAddr, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["status", "--servers", &address.to_string()])
        .args(extra)
        .output()
        .expect("run rcraft status");
    String::from_utf8(out.stdout).unwrap()
}

/// A plain HTTP GET of `path` on the node's metrics address; the whole answer.
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: rcraft\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// While a node repairs, `rcraft status` (table and `--json`), `/health` and the
/// `rcraft_repairing_entries` metric name the lost range. The window is held open: the other
/// two nodes stay down until all of them have shown it, so nobody can repair it yet; then
/// they return, the node repairs, and status no longer names a range.
#[test]
fn rcraft_status_and_health_name_the_range_a_node_is_repairing() {
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    let count = 30;
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = (leader + 1) % 3;
    cluster.wait_caught_up(victim, leader);
    for id in 0..3 {
        cluster.kill(id);
    }
    damage(&active_segment(&cluster, victim), Damage::LastRecord);
    let metrics = restart_serving_metrics(&mut cluster, victim);
    wait_for_log(
        &cluster,
        victim,
        "were synced and are lost from this node's log",
    );
    let (from, through) = logged_loss(&cluster, victim);
    assert!(from <= through, "{from}..={through}");
    let address = cluster.addresses[victim];

    let table = rcraft_status(address, &[]);
    let line = format!("repairing: entries {from}..={through} were lost from this node's disk");
    assert!(table.contains(&line), "{table}");
    let json = rcraft_status(address, &["--json"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).expect(&json);
    assert_eq!(row["repairing"]["from"], from, "{json}");
    assert_eq!(row["repairing"]["through"], through, "{json}");
    let health =
        wait_for("/health to answer", || http_get(metrics, "/health")).expect("/health answered");
    assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
    assert!(
        health.contains(&format!(
            "unhealthy: repairing: entries {from}..={through} "
        )),
        "{health}"
    );
    let scrape = http_get(metrics, "/metrics").expect("/metrics answered");
    let entries = through - from + 1;
    assert!(
        scrape.contains(&format!("\nrcraft_repairing_entries {entries}\n")),
        "{scrape}"
    );

    for id in (0..3).filter(|&id| id != victim) {
        cluster.restart(id);
    }
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the others return");
    wait_for_log(&cluster, victim, "repaired: the lost entries");
    let status = cluster.status(victim).expect("the repaired node answers");
    assert_eq!(status.repairing, None, "{status:?}");
    let table = rcraft_status(address, &[]);
    assert!(!table.contains("repairing"), "{table}");
    check_keys(&cluster, count + 1);
}

/// The leader's last entry was written and synced but never replicated (both followers were
/// down), then rotted on its disk while it was stopped. It may have acknowledged that entry,
/// so it comes back repairing it; but no leader can send it (none holds it), and none can be
/// elected before its repair ends: the followers come back with election timeouts far beyond
/// the test, and a repairing node does not campaign. The followers first answer its
/// `RepairQuery` in the term it recovered with, which does not count (docs/SIM_FINDINGS.md,
/// finding 36: they could still acknowledge the entry in that term); the node moves to the
/// next term and asks again, they adopt it, and their answers from it (each log ends before
/// the lost entry, so it was never committed) end the repair; then the node stands for
/// election, wins, and the cluster serves every acknowledged write and not the
/// unacknowledged one.
#[test]
fn a_lost_entry_that_every_other_voter_lacks_was_never_committed_and_the_repair_ends() {
    let mut cluster = Cluster::start(&[
        "--snapshot-every",
        "1000000",
        "--election-timeout-ms",
        "1000-2000",
    ]);
    let leader = cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    let followers = [(leader + 1) % 3, (leader + 2) % 3];
    for id in followers {
        cluster.wait_caught_up(id, leader);
    }
    let before = cluster.status(leader).expect("status").last_index;
    for id in followers {
        cluster.kill(id);
    }
    // A write the leader appends and syncs alone: it can never commit. Its client gives up.
    let unacknowledged = Command::new(BIN)
        .args(["kv", "--servers", &cluster.addresses[leader].to_string()])
        .args(["--timeout-ms", "300", "put"])
        .arg(String::from_utf8(key(count)).unwrap())
        .arg("never-committed")
        .output()
        .expect("run rcraft kv");
    assert!(!unacknowledged.status.success(), "the write cannot commit");
    let appended = wait_for("the leader to append the write", || {
        let last = cluster.status(leader)?.last_index;
        (last > before).then_some(last)
    });
    let appended = appended.expect("the leader appended the write before stepping down");
    cluster.kill(leader);
    damage(&active_segment(&cluster, leader), Damage::LastRecord);

    cluster.restart(leader);
    wait_for_log(
        &cluster,
        leader,
        "were synced and are lost from this node's log",
    );
    let (from, through) = logged_loss(&cluster, leader);
    assert_eq!((from, through), (appended.0, appended.0));
    // The term it recovered with (alone, it neither campaigns nor hears of another).
    let term_before = wait_for("the damaged node's status", || cluster.status(leader))
        .expect("status")
        .term;
    let flags = cluster.flags.clone();
    cluster.flags = [
        "--snapshot-every",
        "1000000",
        "--election-timeout-ms",
        "600000-700000",
    ]
    .map(String::from)
    .to_vec();
    let logged_before = followers.map(|id| cluster.log_of(id).len());
    for id in followers {
        cluster.restart(id);
    }
    cluster.flags = flags;
    wait_for_log(&cluster, leader, "repaired: the lost entries");
    // Nobody led before that: the repair ended on the followers' word alone.
    for (id, before) in followers.into_iter().zip(logged_before) {
        let log = cluster.log_of(id);
        assert!(!log[before..].contains("won the election"), "{log}");
    }
    assert_eq!(cluster.wait_for_leader(), leader, "{}", cluster.logs());
    let won_after_repair = wait_for("the repaired node to log its election", || {
        let log = cluster.log_of(leader);
        let repaired = log.rfind("repaired: the lost entries")?;
        log[repaired..].contains("won the election").then_some(())
    });
    assert!(won_after_repair.is_some(), "{}", cluster.logs());
    // It moved one term past the recovered one for the answers, and campaigned in a later one.
    let term_after = cluster.status(leader).expect("status").term;
    assert!(
        term_after.0 >= term_before.0 + 2,
        "{term_before:?} -> {term_after:?}"
    );
    let mut client = cluster.client();
    client
        .put(&key(count + 1), &value(count + 1, VALUE_BYTES))
        .expect("a write after the repair");
    for i in 0..count {
        assert_eq!(
            client.get(&key(i)).unwrap(),
            Some(value(i, VALUE_BYTES)),
            "key {i}"
        );
    }
    assert_eq!(client.get(&key(count)).unwrap(), None, "never committed");
    assert_eq!(
        client.get(&key(count + 1)).unwrap(),
        Some(value(count + 1, VALUE_BYTES))
    );
}

/// Restarts `node` with a metrics endpoint of its own (the other nodes' flags unchanged) and
/// returns its address.
fn restart_serving_metrics(cluster: &mut Cluster, node: usize) -> std::net::SocketAddr {
    let metrics = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let flags = cluster.flags.clone();
    cluster
        .flags
        .extend(["--metrics-addr".to_string(), metrics.to_string()]);
    cluster.restart(node);
    cluster.flags = flags;
    metrics
}

/// Trace of the consensus thread's actions (each message sent, with its term), at info level
/// otherwise: set as `RUST_LOG`, which overrides `--log-level`.
const TRACE_SENDS: &str = "info,rcraft::node::consensus_logic=trace";

/// Flips a bit in the term of the record of `index` in node `id`'s newest segment.
fn damage_record_of_index(cluster: &Cluster, id: usize, index: u64) {
    let segment = active_segment(cluster, id);
    let bytes = std::fs::read(&segment).unwrap();
    let at = record_offsets(&bytes)
        .into_iter()
        .find(|&at| u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) == index)
        .unwrap_or_else(|| panic!("no record of index {index} in {}", segment.display()));
    flip_bit(&segment, at + 16);
}

/// How many `RepairAnswer`s node `from` logged sending to `to` in `term` (`TRACE_SENDS`).
fn answers_sent(cluster: &Cluster, from: usize, to: usize, term: u64) -> usize {
    let sent = format!("send {from}->{to} t{term} RepairAnswer ");
    cluster.log_of(from).matches(&sent).count()
}

/// The leader (D) appends and syncs writes that neither follower has: both are stopped
/// (SIGSTOP), so they are never acknowledged. D is killed and its last records are damaged:
/// with `lose_acknowledged`, from the last acknowledged entry on (which both followers hold),
/// else only its own unreplicated tail. D restarts repairing that range.
///
/// The followers are then killed while stopped. F1 alone restarts first: while F2 has never
/// answered, D votes for no candidate lacking the range, so F1 campaigns in vain. Then both
/// restart with election timeouts far beyond the test (a resumed follower could still read appends of D that reached its socket
/// before D died, and hold the tail: that case needs no rule at all). Nobody leads, so the
/// only way on is D's `RepairQuery`: both answer first in D's recovered term R, which does
/// not count; D moves to R + 1 and asks again, they adopt it and answer above R.
/// - Unreplicated tail only: each log ends before the range, so it was never committed (the
///   witness rule), and D ends its repair on their word, with no leader (then it votes, and
///   may campaign, as usual).
/// - From an acknowledged entry on: both logs reach into the range, so no answer shows it
///   was never committed, and no follower's log covers D's lost one (its last entry is
///   before the range's end in the same term), so D could not vote for either before the
///   tail rule (docs/SIM_FINDINGS.md, finding 37) and stays repairing. By the tail rule it
///   votes for a candidate at least as up to date as both answers.
///
/// Then one follower (F2) dies for good after answering above R, and the other (F1)
/// restarts with short timeouts: F1 and D are all that is left, so a leader needs both. With
/// the lost acknowledged entry, D still repairs and does not stand, so F1 is elected only with
/// D's vote. Without the tail rule D would refuse it, F2 is gone, and the test fails at the
/// election (checked by disabling the rule's call in `election.rs`: "no leader"); nothing
/// else in the test stands in for the rule. The cluster elects a leader, accepts a write, D
/// has repaired and says so in its log and `rcraft status` (no `repairing` line), and every
/// acknowledged write reads back; the unacknowledged one is gone (no node left holds it).
fn lost_own_tail_and_a_voter_dies(lose_acknowledged: bool) {
    let fast = [
        "--snapshot-every",
        "1000000",
        "--election-timeout-ms",
        "1000-2000",
    ];
    let slow = [
        "--snapshot-every",
        "1000000",
        "--election-timeout-ms",
        "600000-700000",
    ];
    let mut cluster = Cluster::start(&fast);
    let d = cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    let (f1, f2) = ((d + 1) % 3, (d + 2) % 3);
    for id in [f1, f2] {
        cluster.wait_caught_up(id, d);
    }
    let acknowledged = cluster.status(d).expect("status").last_index.0;
    for id in [f1, f2] {
        cluster.signal(id, libc::SIGSTOP);
    }
    // A write D appends and syncs alone: it never commits, and its client gives up.
    let unacknowledged = Command::new(BIN)
        .args(["kv", "--servers", &cluster.addresses[d].to_string()])
        .args(["--timeout-ms", "300", "put", "never-acknowledged", "x"])
        .output()
        .expect("run rcraft kv");
    assert!(!unacknowledged.status.success(), "the write cannot commit");
    let last = wait_for("D to append the write", || {
        let last = cluster.status(d)?.last_index.0;
        (last > acknowledged).then_some(last)
    });
    let last = last.unwrap_or_else(|| panic!("nothing appended:\n{}", cluster.logs()));
    for id in [d, f1, f2] {
        cluster.kill(id);
    }
    let from = if lose_acknowledged {
        acknowledged
    } else {
        acknowledged + 1
    };
    damage_record_of_index(&cluster, d, from);

    cluster.restart(d);
    wait_for_log(&cluster, d, "were synced and are lost from this node's log");
    assert_eq!(logged_loss(&cluster, d), (from, last), "{}", cluster.logs());
    let recovered = wait_for("D's status", || cluster.status(d))
        .expect("status")
        .term
        .0;

    // While F2 has never answered, D cannot tell that F2 holds none of the range (F2 could
    // have acknowledged it, and D committed it with F2), so it votes for nobody that lacks
    // it: F1 alone with D campaigns in vain.
    for id in [f1, f2] {
        cluster.envs[id].push(("RUST_LOG".to_string(), TRACE_SENDS.to_string()));
    }
    let logged = cluster.log_of(f1).len();
    cluster.restart(f1);
    // (a pre-vote request carries the term it asks for)
    let pre_vote = format!("send {f1}->{d} t{} PreVote ", recovered + 1);
    let tried = wait_for("F1 to ask D for its pre-vote twice", || {
        let log = cluster.log_of(f1);
        (log[logged..].matches(&pre_vote).count() >= 2).then_some(log)
    });
    let log = tried.unwrap_or_else(|| panic!("F1 did not campaign:\n{}", cluster.logs()));
    assert!(!log[logged..].contains("won the election"), "{log}");
    for id in [d, f1] {
        let status = cluster.status(id).expect("status");
        assert_ne!(status.role, Role::Leader, "{status:?}");
    }
    assert!(cluster.status(d).expect("status").repairing.is_some());
    cluster.kill(f1);

    cluster.flags = slow.map(String::from).to_vec();
    for id in [f1, f2] {
        cluster.restart(id);
    }
    if lose_acknowledged {
        // D asks every minimum election timeout while their answers do not end its repair.
        // Two answers above R from F2: the first one reached D before the second was sent.
        let answered = wait_for("F2 to answer D twice above its recovered term", || {
            (answers_sent(&cluster, f2, d, recovered + 1) >= 2).then_some(())
        });
        assert!(answered.is_some(), "{}", cluster.logs());
        // No rule but the tail rule can end this: D still repairs, and nobody leads.
        assert!(!cluster.log_of(d).contains("repaired: the lost entries"));
        let status = cluster.status(d).expect("status");
        let repairing = status.repairing.expect("still repairing");
        assert_eq!((repairing.from.0, repairing.through.0), (from, last));
        assert_eq!(status.term.0, recovered + 1, "D raised its term once");
        for id in [f1, f2] {
            let status = cluster.status(id).expect("status");
            assert_eq!(status.role, Role::Follower, "{status:?}");
        }
    } else {
        // Both answered above R from logs ending before the range: the repair ends on their
        // word, before any leader (F2's answers were received: D counted them).
        wait_for_log(&cluster, d, "repaired: the lost entries");
        assert!(answers_sent(&cluster, f2, d, recovered + 1) >= 1);
    }

    cluster.kill(f2);
    cluster.kill(f1);
    cluster.flags = fast.map(String::from).to_vec();
    cluster.restart(f1);
    let leader = cluster.wait_for_leader();
    if lose_acknowledged {
        // D still repairs, so it cannot stand; F1 won with D's vote.
        assert_eq!(leader, f1, "{}", cluster.logs());
    }
    let mut client = cluster.client();
    client
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("a write with one node down");
    wait_for_log(&cluster, d, "repaired: the lost entries");
    let status = wait_for("D's status without a lost range", || {
        cluster
            .status(d)
            .filter(|s| s.repairing.is_none() && s.lost.is_none())
    });
    assert!(status.is_some(), "{}", cluster.logs());
    let table = rcraft_status(cluster.addresses[d], &[]);
    assert!(!table.contains("repairing"), "{table}");
    assert!(!table.contains("lost:"), "{table}");
    check_keys(&cluster, count + 1);
    assert_eq!(
        client.get(b"never-acknowledged").unwrap(),
        None,
        "no node left holds it"
    );
}

#[test]
fn a_leader_that_lost_its_own_unreplicated_tail_votes_by_the_tail_rule_with_a_voter_gone() {
    lost_own_tail_and_a_voter_dies(true);
}

#[test]
fn a_leader_that_lost_only_entries_nobody_acknowledged_learns_they_were_never_committed() {
    lost_own_tail_and_a_voter_dies(false);
}

/// Where a snapshot file is damaged.
#[derive(Clone, Copy, Debug)]
enum SnapshotDamage {
    /// A bit of the state machine's data: only the footer's data checksum shows it.
    Data,
    /// A bit of the header's snapshot index: the header checksum shows it.
    Header,
    /// The whole file deleted (by hand): the log then starts after the snapshot left.
    Removed,
}

/// Node `id`'s newest complete snapshot file.
fn newest_snapshot(cluster: &Cluster, id: usize) -> PathBuf {
    let dir = cluster.data_dir(id).join("snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| rcraft_storage::snapshot_point_of_file(path).is_some())
        .collect();
    files.sort();
    files
        .pop()
        .unwrap_or_else(|| panic!("no snapshot in {}", dir.display()))
}

/// Compacts stopped node `id`'s log through `through`, as a running node does behind a
/// snapshot (its 16 MiB segments are first split into small ones, which compaction can drop),
/// and returns the log's new first index.
fn compact_log_through(cluster: &Cluster, id: usize, through: u64) -> u64 {
    split_log_into_small_segments(cluster, id);
    let options = WalOptions {
        segment_bytes: SMALL_SEGMENT_BYTES,
        ..WalOptions::default()
    };
    let mut wal = Wal::open(&cluster.data_dir(id).join("wal"), options).unwrap();
    wal.compact_through(through).unwrap();
    wal.first_index()
}

/// Node `victim` (the leader when `leader_damaged`, else a follower) is stopped, its newest
/// snapshot file damaged (`which`), and, when `compacted`, its log compacted behind that
/// snapshot, so that only a leader can give it its state back. It restarts: it must start,
/// name the file, keep it aside, catch up, and the cluster must keep every acknowledged
/// write also without the node that held them the longest.
fn damaged_snapshot_is_replaced(which: SnapshotDamage, leader_damaged: bool, compacted: bool) {
    let retain = 10;
    let mut cluster = Cluster::start(&[
        "--snapshot-every",
        "40",
        "--snapshot-retain-entries",
        &retain.to_string(),
    ]);
    let leader = cluster.wait_for_leader();
    let count = 150;
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = if leader_damaged {
        leader
    } else {
        (leader + 1) % 3
    };
    let witness = (victim + 2) % 3;
    cluster.wait_caught_up((leader + 1) % 3, leader);
    cluster.wait_caught_up((leader + 2) % 3, leader);
    cluster.kill(victim);

    let snapshot = newest_snapshot(&cluster, victim);
    let (index, _) = rcraft_storage::snapshot_point_of_file(&snapshot).unwrap();
    match which {
        SnapshotDamage::Data => flip_bit(
            &snapshot,
            std::fs::metadata(&snapshot).unwrap().len() as usize / 2,
        ),
        SnapshotDamage::Header => flip_bit(&snapshot, 20),
        SnapshotDamage::Removed => std::fs::remove_file(&snapshot).unwrap(),
    }
    let removed = matches!(which, SnapshotDamage::Removed);
    if compacted {
        let first = compact_log_through(&cluster, victim, index - retain);
        assert!(
            first > 1,
            "the log no longer starts at 1 (it starts at {first})"
        );
    }
    cluster.restart(victim);

    let aside = PathBuf::from(format!("{}.damaged", snapshot.display()));
    if !removed {
        wait_for_log(&cluster, victim, "is damaged");
        wait_for_log(
            &cluster,
            victim,
            &format!("moved aside to {}", aside.display()),
        );
    }
    if compacted {
        wait_for_log(&cluster, victim, "it fetches the rest from the leader");
    }
    if leader_damaged {
        let new_leader = wait_for("a new leader", || {
            (0..3).find(|&id| {
                id != victim && cluster.status(id).is_some_and(|s| s.role == Role::Leader)
            })
        });
        assert!(new_leader.is_some(), "no new leader:\n{}", cluster.logs());
    }
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the damage");
    if compacted {
        wait_for_log(&cluster, victim, "repaired: the lost entries");
    }
    let status = wait_for("the node's status", || {
        cluster.status(victim).filter(|s| s.repairing.is_none())
    });
    status.unwrap_or_else(|| panic!("still repairing:\n{}", cluster.logs()));
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(victim, leader);
    assert_eq!(
        aside.exists(),
        !removed,
        "the damaged file is kept: {}",
        aside.display()
    );
    let log = cluster.log_of(victim);
    assert!(!log.contains("storage failed"), "{log}");
    if !compacted {
        assert!(
            !log.contains("fetches the rest"),
            "rebuilt from its own log:\n{log}"
        );
    }

    // Without the node that held the writes the longest, the cluster still has every one.
    cluster.kill(witness);
    let leader = cluster.wait_for_leader();
    assert_ne!(leader, witness);
    check_keys(&cluster, count + 1);
}

#[test]
fn a_follower_whose_snapshot_data_rotted_behind_a_compacted_log_fetches_it_from_the_leader() {
    damaged_snapshot_is_replaced(SnapshotDamage::Data, false, true);
}

#[test]
fn a_follower_whose_snapshot_header_rotted_fetches_the_state_from_the_leader() {
    damaged_snapshot_is_replaced(SnapshotDamage::Header, false, true);
}

#[test]
fn a_stopped_leader_whose_snapshot_rotted_fetches_the_state_from_the_new_leader() {
    damaged_snapshot_is_replaced(SnapshotDamage::Data, true, true);
}

#[test]
fn a_follower_whose_newest_snapshot_was_deleted_claims_the_log_it_drops_and_fetches_it() {
    damaged_snapshot_is_replaced(SnapshotDamage::Removed, false, true);
}

#[test]
fn a_follower_whose_snapshot_rotted_over_a_whole_log_rebuilds_its_state_from_the_log() {
    damaged_snapshot_is_replaced(SnapshotDamage::Data, false, false);
}

/// The claim outlives restarts: a follower whose snapshot rotted behind a compacted log
/// restarts while no leader can repair it, and again; its claim file still names the range,
/// it repairs once the others are back, and the start after that removes the claim.
#[test]
fn a_snapshot_repair_claim_outlives_a_restart_and_is_removed_once_held() {
    let retain = 10;
    let mut cluster = Cluster::start(&[
        "--snapshot-every",
        "40",
        "--snapshot-retain-entries",
        &retain.to_string(),
    ]);
    let leader = cluster.wait_for_leader();
    let count = 150;
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = (leader + 1) % 3;
    cluster.wait_caught_up(victim, leader);
    cluster.wait_caught_up((leader + 2) % 3, leader);
    let others: Vec<usize> = (0..3).filter(|&id| id != victim).collect();
    for id in [victim, others[0], others[1]] {
        cluster.kill(id);
    }
    let snapshot = newest_snapshot(&cluster, victim);
    let (index, _) = rcraft_storage::snapshot_point_of_file(&snapshot).unwrap();
    flip_bit(
        &snapshot,
        std::fs::metadata(&snapshot).unwrap().len() as usize / 2,
    );
    compact_log_through(&cluster, victim, index - retain);

    let claim = cluster.data_dir(victim).join("repair_claim");
    let line = "it fetches the rest from the leader";
    cluster.restart(victim);
    wait_for_log(&cluster, victim, line);
    let repairing = wait_for("the range in the status", || {
        cluster.status(victim).and_then(|s| s.repairing)
    });
    let range = repairing.unwrap_or_else(|| panic!("no range:\n{}", cluster.logs()));
    assert_eq!(range.from.0, 1, "{range:?}");
    assert!(range.through.0 >= index, "{range:?}");
    assert!(claim.exists());

    // A restart before any repair: the log and the damaged file are gone from view, and
    // only the claim still knows the range. `rcraft doctor` names it meanwhile.
    cluster.kill(victim);
    let doctor = Command::new(BIN)
        .arg("doctor")
        .arg(cluster.data_dir(victim))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    let named = format!(
        "will repair: repair_claim: entries 1..={} were lost from this node's disk",
        range.through.0
    );
    assert!(text.contains(&named), "{text}");
    cluster.restart(victim);
    let again = wait_for("the claim again", || {
        (cluster.log_of(victim).matches(line).count() >= 2).then_some(())
    });
    again.unwrap_or_else(|| panic!("the claim was forgotten:\n{}", cluster.logs()));
    let repairing = wait_for("the range in the status", || {
        cluster.status(victim).and_then(|s| s.repairing)
    });
    assert_eq!(repairing, Some(range), "{}", cluster.logs());

    for &id in &others {
        cluster.restart(id);
    }
    let leader = cluster.wait_for_leader();
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the others are back");
    wait_for_log(&cluster, victim, "repaired: the lost entries");
    cluster.wait_caught_up(victim, leader);

    cluster.kill(victim);
    cluster.restart(victim);
    wait_for_log(&cluster, victim, "claim removed");
    assert!(!claim.exists());
    cluster.kill(others[0]);
    cluster.wait_for_leader();
    check_keys(&cluster, count + 1);
}
