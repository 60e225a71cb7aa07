//! `rcraft serve --initial-voters` and `rcraft members` end to end: four `rcraft serve`
//! processes on 127.0.0.1 whose first three vote; the fourth address is a spare that stays
//! quiet, is added (learner, caught up, promoted), and then the leader is removed. Bad usages
//! give one-line errors with the documented exit codes. Every wait is bounded; processes are
//! killed and directories removed on drop (`snapshot_support::Cluster`).

mod snapshot_support;

use rcraft::wire::{NodeId, NodeStatus, Role, Term};
use snapshot_support::{BIN, Cluster, key, value, wait_for, write_keys};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// One `rcraft members ...` run: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn members(cluster: &Cluster, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("members")
        .args(args)
        .args(["--servers", &cluster.servers()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    run_of(&output)
}

fn run_of(output: &Output) -> Run {
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command that must succeed and returns its stdout.
fn members_ok(cluster: &Cluster, args: &[&str]) -> String {
    let run = members(cluster, args);
    assert_eq!(
        run.code,
        Some(0),
        "rcraft members {args:?}: {}{}\nlogs:\n{}",
        run.stdout,
        run.stderr,
        cluster.logs()
    );
    run.stdout
}

/// Runs a command that must fail with `code` and a one-line error containing `why`.
fn members_fails(cluster: &Cluster, args: &[&str], code: i32, why: &str) {
    let run = members(cluster, args);
    let context = || {
        let logs = cluster.logs();
        format!("{args:?}: {}{}\nlogs:\n{logs}", run.stdout, run.stderr)
    };
    assert_eq!(run.code, Some(code), "{}", context());
    assert_eq!(run.stderr.lines().count(), 1, "{}", context());
    assert!(run.stderr.contains(why), "{}", context());
    assert!(run.stdout.is_empty(), "{}", context());
}

/// The `membership` of node `id` in `members list --json` output.
fn membership_of(list: &str, id: usize) -> String {
    let prefix = format!(r#"{{"id":{id},"#);
    let line = list
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("node {id} is not listed: {list}"));
    let at = line.find(r#""membership":""#).expect("membership field") + 14;
    line[at..].split('"').next().unwrap().to_string()
}

/// The memberships of nodes 0-3 as the leader reports them.
fn memberships(cluster: &Cluster) -> Vec<String> {
    let list = members_ok(cluster, &["list", "--json"]);
    (0..4).map(|id| membership_of(&list, id)).collect()
}

/// Makes node `id` the leader (it must be a voter).
fn move_leadership_to(cluster: &Cluster, id: usize) {
    let mut client = cluster.client();
    let moved = wait_for("leadership to move", || {
        if cluster.status(id)?.role == Role::Leader {
            return Some(());
        }
        let _ = client.transfer_leader(NodeId(id as u64));
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    moved.unwrap_or_else(|| panic!("node {id} never led; logs:\n{}", cluster.logs()));
}

/// How many times a removal is tried when leadership moved between arranging it and the
/// removal itself.
const REMOVAL_ATTEMPTS: usize = 5;

/// Removes node `id` while it leads (`as_leader`) or while it follows, and returns the
/// command's output. On a loaded machine an election can move leadership between arranging
/// the role and the removal; then the node, removed in the other role, is added back and the
/// removal is tried again.
fn remove_in_role(cluster: &Cluster, id: usize, as_leader: bool) -> String {
    for _ in 0..REMOVAL_ATTEMPTS {
        if as_leader {
            move_leadership_to(cluster, id);
        } else if cluster.status(id).is_some_and(|s| s.role == Role::Leader) {
            let other = (0..cluster.nodes.len())
                .filter(|&other| other != id)
                .find(|&other| {
                    let voter = NodeId(other as u64);
                    cluster
                        .status(other)
                        .is_some_and(|s| s.voters.contains(&voter))
                })
                .expect("another voter");
            move_leadership_to(cluster, other);
        }
        let out = members_ok(cluster, &["remove", &id.to_string()]);
        let removed_the_leader = out.contains(&format!("removed node {id} (it was the leader"));
        if removed_the_leader == as_leader {
            return out;
        }
        members_ok(cluster, &["add", &id.to_string(), "--timeout-ms", "20000"]);
    }
    let role = if as_leader { "leader" } else { "follower" };
    panic!(
        "node {id} was never removed as a {role} in {REMOVAL_ATTEMPTS} attempts; logs:\n{}",
        cluster.logs()
    );
}

/// Checks that removed node `removed`, left running, disrupts nobody: it does not lead, no
/// other node takes it for the leader, and its term is at most `baseline` (its term right
/// after the removal) or the highest term of the `others`. Without campaigning it can only
/// adopt terms the others answer it with, and terms only grow, so its status is taken first
/// and theirs after it; a real election of its own would put it ahead of them.
fn assert_removed_node_is_quiet(
    cluster: &Cluster,
    removed: usize,
    others: &[usize],
    baseline: Term,
) {
    let status_of = |id: usize| {
        wait_for("a node's status", || cluster.status(id))
            .unwrap_or_else(|| panic!("node {id} does not answer; logs:\n{}", cluster.logs()))
    };
    let outcast = status_of(removed);
    let statuses: Vec<NodeStatus> = others.iter().map(|&id| status_of(id)).collect();
    let highest = statuses.iter().map(|s| s.term).max().expect("other nodes");
    let context = || {
        format!(
            "{outcast:?}\nothers: {statuses:?}\nlogs:\n{}",
            cluster.logs()
        )
    };
    assert!(
        outcast.term <= baseline.max(highest),
        "the removed node raised its term: {}",
        context()
    );
    assert_ne!(outcast.role, Role::Leader, "{}", context());
    let removed_id = NodeId(removed as u64);
    assert!(
        statuses.iter().all(|s| s.leader != Some(removed_id)),
        "a node follows the removed one: {}",
        context()
    );
}

#[test]
fn a_spare_node_is_added_and_the_leader_is_removed() {
    let mut cluster = Cluster::start_nodes(4, &["--initial-voters", "0,1,2"]);
    let leader = cluster.wait_for_leader();
    assert!(leader < 3, "the spare node 3 led");
    assert_eq!(memberships(&cluster), ["voter", "voter", "voter", "none"]);

    // The spare node never campaigned: it is still at term 0 and knows no leader.
    let spare = wait_for("node 3's status", || cluster.status(3)).expect("node 3 answers");
    let seen = (spare.term.0, spare.role, spare.leader);
    assert_eq!(seen, (0, Role::Follower, None), "{}", cluster.logs());
    assert!(spare.membership.voters.iter().all(|id| id.0 < 3));

    // Bad usages: nothing is asked of the cluster.
    members_fails(
        &cluster,
        &["add", "9"],
        2,
        "node 9 has no address in --servers",
    );
    members_fails(&cluster, &["add", "1"], 2, "node 1 is already a voter");
    members_fails(&cluster, &["promote", "3"], 2, "node 3 is not a member");
    members_fails(&cluster, &["remove", "3"], 2, "node 3 is not a member");
    members_fails(&cluster, &["remove", "x"], 2, "\"x\" is not a node id");

    // Node 3 down: it is added as a learner but cannot catch up in time, although the
    // leader's log is still short (a few entries: within the allowed lag of its match index 0).
    cluster.kill(3);
    let args = ["add", "3", "--timeout-ms", "3000"];
    members_fails(&cluster, &args, 1, "did not catch up within 3000 ms");
    assert_eq!(memberships(&cluster)[3], "learner");
    members_fails(&cluster, &["add", "3", "--learner"], 2, "already a learner");
    write_keys(&cluster, 100, 16);

    // Back up, `add` resumes: it catches up and is promoted.
    cluster.restart(3);
    let out = members_ok(&cluster, &["add", "3", "--timeout-ms", "20000"]);
    assert_eq!(
        out.trim_end(),
        "promoted node 3 to voter; now voters 0,1,2,3; learners none"
    );
    assert_eq!(memberships(&cluster), ["voter", "voter", "voter", "voter"]);
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(3, leader);

    // Remove node 0 while it leads: it steps down once the change commits.
    let out = remove_in_role(&cluster, 0, true);
    assert!(out.contains("removed node 0 (it was the leader"), "{out}");
    assert!(out.contains("now voters 1,2,3; learners none"), "{out}");
    let new_leader = cluster.wait_for_leader();
    assert_ne!(new_leader, 0);
    assert_eq!(memberships(&cluster), ["none", "voter", "voter", "voter"]);

    // Node 0 no longer votes and node 3 does: with node 0 and one more old voter down, the
    // remaining two of the three voters still commit writes and serve every key.
    cluster.kill(0);
    let down = (1..3).find(|&id| id != new_leader).unwrap();
    cluster.kill(down);
    let mut client = cluster.client();
    client.put(b"after", b"removal").expect("a write commits");
    for i in (0..100).step_by(9) {
        assert_eq!(client.get(&key(i)).unwrap(), Some(value(i, 16)), "key {i}");
    }
    assert_eq!(client.get(b"after").unwrap(), Some(b"removal".to_vec()));

    // With every node down no leader answers: exit 1.
    for id in 0..4 {
        cluster.kill(id);
    }
    let args = ["list", "--timeout-ms", "500"];
    members_fails(&cluster, &args, 1, "no leader answered");
}

#[test]
fn bad_initial_voters_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let peers = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    for (list, why) in [
        (
            "0,3",
            "--initial-voters: initial voters: id 3 has no address",
        ),
        (
            "0,0",
            "--initial-voters: initial voters: id 0 is listed twice",
        ),
        ("0,a", "--initial-voters: \"a\" is not a valid number"),
    ] {
        let output = Command::new(BIN)
            .args([
                "serve",
                "--id",
                "0",
                "--peers",
                peers,
                "--initial-voters",
                list,
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let run = run_of(&output);
        assert_eq!(run.code, Some(2), "{list}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.starts_with("rcraft serve: "), "{}", run.stderr);
        assert!(run.stderr.contains(why), "{list}: {}", run.stderr);
    }
    let conf = dir.path().join("craft.conf");
    let text = "id = 0\nservers = 127.0.0.1:1\nservers = 127.0.0.1:2\ninitial_voters =\n";
    std::fs::write(&conf, text).unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let run = run_of(&output);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("craft.conf:4: initial voters: the list is empty"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_removed_follower_left_running_does_not_disrupt_the_cluster() {
    // Long election timeouts so that only the removed node's campaigns could move the term.
    let flags = ["--election-timeout-ms", "600-1200", "--heartbeat-ms", "100"];
    let cluster = Cluster::start(&flags);
    let leader = cluster.wait_for_leader();

    // A member the nodes have no address for is refused by the leader itself, also when the
    // command's own --servers lists one (nodes started before a rolling restart finished).
    let extra = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let servers = format!("{},{}", cluster.servers(), extra.local_addr().unwrap());
    let output = Command::new(BIN)
        .args(["members", "add", "3", "--learner", "--servers", &servers])
        .args(["--timeout-ms", "5000"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let run = run_of(&output);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("node 3 has no address in the configured servers"),
        "{}",
        run.stderr
    );
    let list = members_ok(&cluster, &["list", "--json"]);
    assert!(
        (0..3).all(|id| membership_of(&list, id) == "voter"),
        "{list}"
    );
    assert!(!list.contains(r#"{"id":3,"#), "{list}");

    let removed = (leader + 1) % 3;
    let out = remove_in_role(&cluster, removed, false);
    assert!(
        out.contains(&format!("removed node {removed}; now")),
        "{out}"
    );
    let baseline = wait_for("the removed node's status", || cluster.status(removed))
        .expect("the removed node answers")
        .term;

    // Several of the removed node's election timeouts pass while clients write. It may
    // keep asking for pre-votes (it never learns that its removal committed), but Pre-Vote
    // keeps it from raising anyone's term: its log falls behind with the first write, and the
    // others ignore it while they hear from their leader. The others may still hold an
    // election of their own on a loaded machine, so the checks hold whichever of them leads,
    // and the client follows leader changes.
    let others: Vec<usize> = (0..3).filter(|&id| id != removed).collect();
    let mut client = cluster.client();
    let end = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    loop {
        client.put(&key(i), &value(i, 8)).expect("put");
        i += 1;
        assert_removed_node_is_quiet(&cluster, removed, &others, baseline);
        if Instant::now() >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader = cluster.wait_for_leader();
    assert!(others.contains(&leader), "node {leader} leads");
    client.put(b"after", b"watching").expect("a write commits");
    assert_removed_node_is_quiet(&cluster, removed, &others, baseline);
}

#[test]
fn a_replaced_node_rejoins_as_a_spare_and_never_leads_alone() {
    // A cluster first started as node 0 alone, grown to three with `members add`: node 0
    // alone is a majority of its initial voters, the case where re-bootstrapping an emptied
    // node would elect it in a cluster of its own.
    let mut cluster = Cluster::start(&["--initial-voters", "0"]);
    assert_eq!(cluster.wait_for_leader(), 0);
    members_ok(&cluster, &["add", "1", "--timeout-ms", "20000"]);
    members_ok(&cluster, &["add", "2", "--timeout-ms", "20000"]);
    write_keys(&cluster, 20, 8);

    // The procedure of docs/OPERATIONS.md, "Replace a node at the same address".
    move_leadership_to(&cluster, 1);
    members_ok(&cluster, &["remove", "0"]);
    cluster.kill(0);
    std::fs::remove_dir_all(cluster.data_dir(0)).unwrap();
    cluster.flags = vec!["--join".to_string()];
    cluster.restart(0);
    // Quiet through several election timeouts: it never campaigns (term 0), where a node
    // believing itself the only initial voter elects itself within one.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        let spare = wait_for("node 0's status", || cluster.status(0)).expect("node 0 answers");
        assert_eq!((spare.term.0, spare.role), (0, Role::Follower), "{spare:?}");
        assert!(spare.membership.voters.is_empty(), "{spare:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = members_ok(&cluster, &["add", "0", "--timeout-ms", "20000"]);
    assert!(out.contains("now voters 0,1,2"), "{out}");
    let leader = cluster.wait_for_leader();
    cluster.wait_caught_up(0, leader);

    // Node 0 leads the three voters and serves every key written before its replacement.
    move_leadership_to(&cluster, 0);
    let mut client = cluster.client();
    for i in 0..20 {
        assert_eq!(client.get(&key(i)).unwrap(), Some(value(i, 8)), "key {i}");
    }
    let status = cluster.status(0).expect("node 0 answers");
    assert_eq!(status.membership.voters.len(), 3, "{status:?}");
}
