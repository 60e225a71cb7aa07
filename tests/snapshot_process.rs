//! Snapshots across real `rcraft serve` processes on 127.0.0.1: a follower frozen while the
//! others compact catches up by snapshot; a transfer survives killing its receiver and then
//! its sender, continuing from the receiver's durable offset; a byte flipped in a frozen
//! receiver's partial file costs only the chunk holding it; `rcraft snapshot` compacts on
//! demand. Every wait is bounded; processes are killed and directories removed on drop.

mod snapshot_support;

use rcraft::client::ClientOptions;
use rcraft::kv_client::KvClient;
use rcraft::wire::{NodeId, Role};
use snapshot_support::{Cluster, key, value, wait_for, write_keys};
use std::time::Duration;

/// Makes node `id` the leader and reads every key through it: its state machine answers.
fn check_keys_through(cluster: &Cluster, id: usize, count: usize, size: usize) {
    let mut client = cluster.client();
    let moved = wait_for("leadership to move", || {
        let status = cluster.status(id)?;
        if status.role == Role::Leader {
            return Some(());
        }
        let _ = client.transfer_leader(NodeId(id as u64));
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    moved.unwrap_or_else(|| panic!("node {id} never led; logs:\n{}", cluster.logs()));
    let mut client = KvClient::new(&[cluster.addresses[id]], ClientOptions::default()).unwrap();
    for i in 0..count {
        assert_eq!(
            client.get(&key(i)).unwrap(),
            Some(value(i, size)),
            "key {i}"
        );
    }
}

#[test]
fn a_frozen_follower_catches_up_by_snapshot_after_the_others_compact() {
    let flags = ["--snapshot-every", "300", "--snapshot-retain-entries", "20"];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let frozen = (leader + 1) % 3;
    cluster.signal(frozen, libc::SIGSTOP);

    let (count, size) = (1200, 64);
    write_keys(&cluster, count, size);
    let live = (leader + 2) % 3;
    cluster.snapshot(leader);
    cluster.snapshot(live);
    let leader_status = cluster.status(leader).unwrap();
    assert!(leader_status.snapshot_index.0 >= 1000, "{leader_status:?}");

    cluster.signal(frozen, libc::SIGCONT);
    cluster.wait_caught_up(frozen, leader);
    let log = cluster.log_of(frozen);
    assert!(
        log.contains("state restored from the snapshot at index"),
        "the follower caught up without a snapshot:\n{log}"
    );
    check_keys_through(&cluster, frozen, count, size);
    cluster.kill(leader);
}

/// A 3-node cluster in which one follower (the receiver) missed `count` writes of `size` bytes
/// while the other two took identical snapshots (the store is deterministic), so whichever of
/// them leads can continue the same transfer. Returns the cluster, the leader, the receiver
/// (stopped), the other node and the snapshot's size in bytes.
fn receiver_behind_two_snapshots(
    flags: &[&str],
    count: usize,
    size: usize,
) -> (Cluster, usize, usize, usize, u64) {
    let mut cluster = Cluster::start(flags);
    let leader = cluster.wait_for_leader();
    let receiver = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(receiver);
    write_keys(&cluster, count, size);
    cluster.wait_caught_up(other, leader);
    let first = cluster.snapshot(leader);
    let second = cluster.snapshot(other);
    let describe = |line: &str| line.split_once(": ").map(|(_, s)| s.to_string());
    assert_eq!(describe(&first), describe(&second), "{first} / {second}");
    let size_of_snapshot: u64 = first
        .trim()
        .strip_suffix(" bytes")
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {first:?}"));
    assert!(size_of_snapshot > (count * size) as u64, "{first}");
    (cluster, leader, receiver, other, size_of_snapshot)
}

/// Restarts the receiver and waits until it holds a quarter of the snapshot.
fn restart_until_a_quarter_is_received(cluster: &mut Cluster, receiver: usize, snapshot: u64) {
    cluster.restart(receiver);
    let quarter = wait_for("a quarter of the snapshot", || {
        (cluster.partial_bytes(receiver) > snapshot / 4).then_some(())
    });
    quarter.unwrap_or_else(|| panic!("the transfer did not start; logs:\n{}", cluster.logs()));
}

#[test]
fn a_transfer_resumes_after_its_receiver_and_then_its_sender_are_killed() {
    // Small chunks so the transfer of a few MB takes many round trips (each synced), throttled
    // so that it takes seconds: each kill below must land while the transfer runs, and the
    // test notices a quarter or a half received by polling, which takes milliseconds.
    let flags = [
        "--snapshot-every",
        "1000000",
        "--snapshot-retain-entries",
        "0",
        "--snapshot-chunk-bytes",
        "4096",
        "--snapshot-bytes-per-sec",
        "500000",
    ];
    let (count, size) = (1500, 2048);
    let (mut cluster, leader, receiver, other, size_of_snapshot) =
        receiver_behind_two_snapshots(&flags, count, size);
    restart_until_a_quarter_is_received(&mut cluster, receiver, size_of_snapshot);
    cluster.kill(receiver);
    let held = cluster.partial_bytes(receiver);
    assert!(
        held < size_of_snapshot,
        "killed too late: {held} bytes held"
    );
    cluster.restart(receiver);

    let half = wait_for("half of the snapshot", || {
        (cluster.partial_bytes(receiver) > size_of_snapshot / 2).then_some(())
    });
    half.unwrap_or_else(|| panic!("the transfer did not resume; logs:\n{}", cluster.logs()));
    cluster.kill(leader);
    // The partial file is renamed once the snapshot is complete: a partial file that is
    // still short shows the sender died in the middle of the transfer.
    let held = cluster.partial_bytes(receiver);
    assert!(
        held > 0 && held < size_of_snapshot,
        "the sender was killed too late: {held} of {size_of_snapshot} bytes held"
    );
    cluster.wait_for_leader();
    cluster.wait_caught_up(receiver, other);

    let log = cluster.log_of(receiver);
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("receiving snapshot"))
        .collect();
    assert!(
        starts
            .iter()
            .filter(|l| l.ends_with("from offset 0"))
            .count()
            == 1,
        "the transfer started over: {starts:?}"
    );
    assert!(
        starts.iter().any(|l| !l.ends_with("from offset 0")),
        "the restarted receiver did not resume: {starts:?}"
    );
    assert!(log.contains("state restored from the snapshot at index"));
    cluster.restart(leader);
    check_keys_through(&cluster, receiver, count, size);
}

#[test]
fn rcraft_snapshot_reports_bad_usage_and_unreachable_nodes() {
    let run = |args: &[&str]| {
        std::process::Command::new(snapshot_support::BIN)
            .arg("snapshot")
            .args(args)
            .output()
            .unwrap()
    };
    let out_of_range = run(&["--servers", "127.0.0.1:1", "--id", "3"]);
    assert_eq!(out_of_range.status.code(), Some(2), "{out_of_range:?}");
    // Nothing listens on port 1: the node's line says it failed and the exit status is 1.
    let unreachable = run(&["--servers", "127.0.0.1:1", "--timeout-ms", "300"]);
    assert_eq!(unreachable.status.code(), Some(1), "{unreachable:?}");
    let text = String::from_utf8_lossy(&unreachable.stdout);
    assert!(text.starts_with("node 0 127.0.0.1:1: failed: "), "{text}");
}

#[test]
fn replication_to_the_other_follower_goes_on_during_a_stalled_transfer() {
    // Throttled so that the transfer takes seconds and the receiver is surely frozen in its
    // middle, although the test notices the start only by polling.
    let flags = [
        "--snapshot-every",
        "1000000",
        "--snapshot-retain-entries",
        "0",
        "--snapshot-chunk-bytes",
        "4096",
        "--snapshot-bytes-per-sec",
        "400000",
    ];
    let mut cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();
    let receiver = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(receiver);
    let (count, size) = (600, 2048);
    write_keys(&cluster, count, size);
    cluster.snapshot(leader);

    // Freeze the receiver in the middle of the transfer: the leader's transfer to it waits
    // on a chunk that is never answered.
    cluster.restart(receiver);
    let started = wait_for("the transfer to start", || {
        (cluster.partial_bytes(receiver) > 0).then_some(())
    });
    started.unwrap_or_else(|| panic!("no transfer; logs:\n{}", cluster.logs()));
    cluster.signal(receiver, libc::SIGSTOP);
    // The partial file is renamed once the snapshot is complete, and a frozen receiver writes
    // nothing: a partial file now means the receiver is frozen mid-transfer.
    assert!(
        cluster.partial_bytes(receiver) > 0,
        "frozen too late: the transfer already ended"
    );

    let mut client = cluster.client();
    for i in count..count + 50 {
        client
            .put(&key(i), &value(i, 16))
            .expect("a write during the transfer");
    }
    cluster.wait_caught_up(other, leader);
    assert!(
        cluster.partial_bytes(receiver) > 0,
        "the transfer already ended"
    );

    cluster.signal(receiver, libc::SIGCONT);
    cluster.wait_caught_up(receiver, leader);
    assert!(
        cluster
            .log_of(receiver)
            .contains("state restored from the snapshot")
    );
}

/// The offset in the last line of `log` that says from where a bad snapshot is asked again.
fn asked_again_from(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("is bad; asking for it again from offset"))?;
    line.rsplit(' ').next()?.parse().ok()
}

#[test]
fn a_byte_flipped_in_the_partial_file_is_received_again_from_its_chunk() {
    // Small chunks, throttled, so the transfer is still running when the follower is frozen.
    let chunk_bytes: u64 = 4096;
    let flags = [
        "--snapshot-every",
        "1000000",
        "--snapshot-retain-entries",
        "0",
        "--snapshot-chunk-bytes",
        "4096",
        "--snapshot-bytes-per-sec",
        "400000",
    ];
    let (count, size) = (800, 2048);
    let (mut cluster, _, receiver, _, size_of_snapshot) =
        receiver_behind_two_snapshots(&flags, count, size);
    restart_until_a_quarter_is_received(&mut cluster, receiver, size_of_snapshot);
    cluster.signal(receiver, libc::SIGSTOP);
    let held = cluster.partial_bytes(receiver);
    assert!(
        held > 0 && held < size_of_snapshot,
        "frozen too late: {held} of {size_of_snapshot} bytes held"
    );
    // Flip a byte in the middle of what the follower already wrote (and acknowledged).
    let partial = cluster
        .data_dir(receiver)
        .join("snapshots")
        .join("partial.snap.recv");
    let flipped = held / 2;
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[flipped as usize] ^= 0x5a;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes[flipped as usize..][..1], flipped)
        .unwrap();
    drop(file);
    cluster.signal(receiver, libc::SIGCONT);

    let asked = wait_for("the damaged chunk to be found", || {
        asked_again_from(&cluster.log_of(receiver))
    });
    let asked =
        asked.unwrap_or_else(|| panic!("the damage went unnoticed; logs:\n{}", cluster.logs()));
    // The data offset asked for is the start of the chunk holding the flipped byte (file
    // offset `flipped`, behind a header of a few dozen bytes): not 0, not past it.
    assert!(asked > 0, "the whole snapshot was asked for again");
    assert!(
        asked <= flipped && flipped - asked < chunk_bytes + 1024,
        "asked again from {asked}, the flipped byte is at file offset {flipped}"
    );
    let log = cluster.log_of(receiver);
    assert!(
        log.contains("partial.snap.recv: chunk at offset"),
        "no warning names the damaged chunk:\n{log}"
    );
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(receiver, leader);
    let log = cluster.log_of(receiver);
    assert!(log.contains("state restored from the snapshot at index"));
    assert!(
        !log.contains("asking for it again from offset 0"),
        "the transfer started over:\n{log}"
    );
    check_keys_through(&cluster, receiver, count, size);
}
