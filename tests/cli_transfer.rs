//! `rcraft transfer` end to end: four `rcraft serve` processes on 127.0.0.1 whose first
//! three vote. Leadership is moved to each voter in turn through the real binary; moving it
//! to the leader is a no-op; a non-voter, an unlisted id and a malformed id are refused with
//! one line and exit 2. The nodes' logs tell the elections won, the step-downs and the new
//! leaders at info with their terms, and a peer's clean shutdown is not a warning. Processes are
//! killed and directories removed on drop.

mod snapshot_support;

use rcraft::wire::Role;
use snapshot_support::{BIN, Cluster, wait_for};
use std::process::{Command, Output};

fn transfer(cluster: &Cluster, to: &str) -> Output {
    Command::new(BIN)
        .args(["transfer", "--servers", &cluster.servers(), "--to", to])
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn transfer_moves_leadership_to_the_named_voter() {
    let cluster = Cluster::start_nodes(4, &["--initial-voters", "0,1,2"]);
    let first = cluster.wait_for_leader();
    let term_before = cluster.status(first).unwrap().term;
    let mut previous = first;
    for step in 1..=2 {
        let target = (first + step) % 3;
        let output = transfer(&cluster, &target.to_string());
        let expected = format!("to node {target} ({}) at term ", cluster.addresses[target]);
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains(&expected),
            "{}\nlogs:\n{}",
            text(&output),
            cluster.logs()
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let term = stdout.trim().rsplit(' ').next().unwrap().to_string();
        // The operator can follow it in the logs, with the term.
        let told = |id: usize, line: &str| {
            let found = wait_for("the change in the log", || {
                cluster.log_of(id).contains(line).then_some(())
            });
            assert!(
                found.is_some(),
                "node {id} logged no {line:?}:\n{}",
                cluster.logs()
            );
        };
        told(
            target,
            &format!("node {target}: won the election for term {term}"),
        );
        told(
            previous,
            &format!("node {previous}: stepped down as leader of term "),
        );
        let third = 3 - target - previous;
        told(
            third,
            &format!("node {third}: follows leader {target} in term {term}"),
        );
        previous = target;
        let status = cluster.status(target).expect("the new leader answers");
        // Another election may follow on a loaded machine; the term only grows.
        assert!(status.term > term_before, "{status:?}");
        if status.role == Role::Leader {
            let again = transfer(&cluster, &target.to_string());
            let stdout = String::from_utf8_lossy(&again.stdout);
            assert!(again.status.success(), "{}", text(&again));
            assert!(
                stdout.contains("is already the leader") || stdout.contains("leadership moved"),
                "{}",
                text(&again)
            );
        }
    }
    // A follower that stops cleanly closes its links: the others log it, not as a warning.
    let follower = (previous + 1) % 3;
    cluster.signal(follower, libc::SIGTERM);
    let line = format!(
        "peer {follower} at {} closed the link",
        cluster.addresses[follower]
    );
    let found = wait_for("the closed link in the leader's log", || {
        cluster.log_of(previous).contains(&line).then_some(())
    });
    assert!(found.is_some(), "{line:?} not logged:\n{}", cluster.logs());
    for log_line in cluster
        .log_of(previous)
        .lines()
        .filter(|l| l.contains(&line))
    {
        assert!(log_line.contains(" INFO "), "{log_line}");
    }
    for (to, why) in [
        (
            "3",
            "node 3 is not a voter (voters 0,1,2; learners none); only a voter can lead",
        ),
        ("7", "--to 7: no listed address is node 7"),
        ("x", "--to \"x\" is not a node id"),
    ] {
        let output = transfer(&cluster, to);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert_eq!(stderr.lines().count(), 1, "{}", text(&output));
        assert!(stderr.contains(why), "{}", text(&output));
        assert!(output.stdout.is_empty(), "{}", text(&output));
    }
}
