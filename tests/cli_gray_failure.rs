//! Gray-failure self-demotion end to end, through the real binary: three `rcraft serve`
//! processes, node 0 started with the fault injection for tests `RCRAFT_FAILPOINT_FSYNC_DELAY_MS`
//! (every sync of its log 300 ms late: a failing disk), or, for the network half,
//! `RCRAFT_FAILPOINT_PEER_DELAY_MS` (every peer message it sends 200 ms late: a slow network
//! card). Once node 0 leads (moved there with `rcraft transfer` if it was not elected) and a
//! client keeps writing, it hands leadership to another node of its own accord; its log says
//! why with the figures, its flight recorder has it, writes go on under the new leader, and
//! the healthy nodes never do it. A bad value of either variable stops `rcraft serve` with a
//! line naming it. Every wait is bounded; processes are killed and directories removed on
//! drop.

mod snapshot_support;

use rcraft::wire::Role;
use snapshot_support::{BIN, Cluster, wait_for};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const FAILPOINT: &str = "RCRAFT_FAILPOINT_FSYNC_DELAY_MS";
const PEER_FAILPOINT: &str = "RCRAFT_FAILPOINT_PEER_DELAY_MS";
const SLOW: usize = 0;
const FLAGS: &[&str] = &[
    // The slow node must still win the election a transfer asks of it: the sync of its own
    // vote (300 ms late) must fit well inside its election timeout.
    "--election-timeout-ms",
    "1000-2000",
    "--heartbeat-ms",
    "100",
    "--self-demotion-window-ms",
    "1500",
    // A loaded test machine may slow the healthy followers' round trips too: twice theirs
    // and 100 ms above is still far from what healthy disks do.
    "--self-demotion-ratio",
    "2",
];

fn rcraft(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The node that leads, as its own status says, if any.
fn leading(cluster: &Cluster) -> Option<usize> {
    (0..3).find(|&id| cluster.status(id).is_some_and(|s| s.role == Role::Leader))
}

/// Moves leadership to `target` (bounded: a transfer may need a retry on a loaded machine).
fn make_leader(cluster: &Cluster, target: usize) {
    let moved = wait_for("the slow node to lead", || {
        if leading(cluster) == Some(target) {
            return Some(());
        }
        let servers = cluster.servers();
        rcraft(&[
            "transfer",
            "--servers",
            &servers,
            "--to",
            &target.to_string(),
        ]);
        (leading(cluster) == Some(target)).then_some(())
    });
    assert!(
        moved.is_some(),
        "node {target} never led:\n{}",
        cluster.logs()
    );
}

/// A client writing keys one after another until `stop`; counts the acknowledged writes.
fn keep_writing(
    cluster: &Cluster,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let acked = Arc::new(AtomicU64::new(0));
    let mut client = cluster.client();
    let count = Arc::clone(&acked);
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let key = format!("gray-{i}");
            if client.put(key.as_bytes(), b"v").is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (acked, writer)
}

#[test]
fn a_leader_with_a_slow_disk_hands_leadership_over_and_says_why() {
    let injected = format!("fault injection for tests: {FAILPOINT}=300 delays every log sync");
    let reason = [
        "(gray failure): this leader's writes took ",
        " ms to become durable on average, ",
        " times the ",
        " ms of the median follower (2 measured), for the last ",
    ];
    slow_leader_hands_over((FAILPOINT, "300"), &injected, &reason);
}

#[test]
fn a_leader_with_slow_links_hands_leadership_over_and_says_why() {
    let injected = format!(
        "fault injection for tests: {PEER_FAILPOINT}=200 makes every peer message of this node \
         leave 200 ms late"
    );
    let reason = [
        "(gray failure, slow network): this leader's round trips to its followers took ",
        " ms on average, ",
        " times the ",
        " ms its followers measure between themselves (2 reporting), for the last ",
    ];
    slow_leader_hands_over((PEER_FAILPOINT, "200"), &injected, &reason);
}

/// Node 0, started with the fault injection `failpoint` (which it announces with
/// `injected`), is made leader under writes; it hands over and says why (`reason`, in parts).
fn slow_leader_hands_over(failpoint: (&str, &str), injected: &str, reason: &[&str]) {
    let cluster = Cluster::start_nodes_with_env(3, FLAGS, &[(SLOW, failpoint.0, failpoint.1)]);
    cluster.wait_for_leader();
    assert!(
        cluster.log_of(SLOW).contains(injected),
        "{}",
        cluster.logs()
    );
    make_leader(&cluster, SLOW);

    let stop = Arc::new(AtomicBool::new(false));
    let (acked, writer) = keep_writing(&cluster, Arc::clone(&stop));
    let told = wait_for("the slow leader to hand over", || {
        let log = cluster.log_of(SLOW);
        let line = log
            .lines()
            .find(|l| l.contains("handing leadership to node"))?;
        Some(line.to_string())
    });
    let Some(line) = told else {
        panic!("node {SLOW} never handed over:\n{}", cluster.logs());
    };
    // The reason, with the figures.
    assert!(line.contains(" WARN "), "{line}");
    for part in reason {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    let target = line
        .split("handing leadership to node ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse::<usize>().ok());
    assert!(target.is_some_and(|id| id != SLOW), "{line}");
    let new_leader = wait_for("another node to lead", || {
        leading(&cluster).filter(|&id| id != SLOW)
    });
    assert!(
        new_leader.is_some(),
        "no other node leads:\n{}",
        cluster.logs()
    );

    // Writes go on under the new leader.
    let before = acked.load(Ordering::Relaxed);
    let more = wait_for("writes after the hand-over", || {
        (acked.load(Ordering::Relaxed) >= before + 5).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(more.is_some(), "writes stopped:\n{}", cluster.logs());

    // The flight recorder has it; the healthy nodes never handed over; the cool-down (60 s)
    // keeps the slow node from doing it twice.
    let events = rcraft(&[
        "debug",
        "events",
        "--servers",
        &cluster.servers(),
        "--id",
        "0",
    ]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(events.status.success(), "{events:?}");
    assert!(
        text.contains(" self_demotion: handing leadership to node "),
        "{text}"
    );
    for id in 0..3 {
        let handovers = cluster
            .log_of(id)
            .matches("handing leadership to node")
            .count();
        let expected = usize::from(id == SLOW);
        assert_eq!(handovers, expected, "node {id}:\n{}", cluster.logs());
    }
}

#[test]
fn a_bad_fsync_or_peer_delay_is_refused_with_its_name() {
    for failpoint in [FAILPOINT, PEER_FAILPOINT] {
        bad_delay_is_refused(failpoint);
    }
}

fn bad_delay_is_refused(failpoint: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--id",
            "0",
            "--peers",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path().join("node0"))
        .env(failpoint, "slow")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr.contains(&format!(
            "{failpoint}=\"slow\" is not a number of milliseconds"
        )),
        "{stderr}"
    );
    assert!(
        !dir.path().join("node0").exists(),
        "a data dir was left behind"
    );
}
