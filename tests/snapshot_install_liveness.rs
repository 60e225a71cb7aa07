//! A follower whose apply thread is held while it installs a received snapshot (a slow
//! state machine `restore`, or a restore reading an abandoned transfer until its stall limit)
//! must not hold the cluster: once storage has installed the snapshot, the follower's
//! consensus goes on (it votes, acknowledges the new leader's entries), and only applying
//! waits (issue 14, finding 7). Every wait is bounded; a held restore is released at the end
//! whatever the outcome.

mod cluster_support;

use cluster_support::{Journal, Shared, free_addresses, wait_until};
use crossbeam_channel::{Receiver, Sender, bounded};
use rcraft::node::{Node, NodeHandle};
use rcraft::wire::{LogIndex, NodeId, Role};
use rcraft::{Config, StateMachine};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A journal whose `restore` announces itself and then waits to be released.
struct HeldRestore {
    journal: Journal,
    started: Sender<()>,
    release: Receiver<()>,
}

impl StateMachine for HeldRestore {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
        self.journal.apply(index, command)
    }

    fn query(&self, query: &[u8]) -> Vec<u8> {
        self.journal.query(query)
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.journal.snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let _ = self.started.try_send(());
        // Bounded, so a failing test cannot hang.
        let _ = self.release.recv_timeout(Duration::from_secs(60));
        self.journal.restore(input)
    }
}

fn start_journal(config: &Config) -> (NodeHandle, Shared) {
    let commands = Shared::default();
    let machine = Journal {
        commands: commands.clone(),
    };
    (Node::start(config.clone(), machine).unwrap(), commands)
}

fn leader_of(handles: &[Option<NodeHandle>]) -> Option<usize> {
    handles.iter().position(|h| {
        h.as_ref()
            .and_then(|h| h.status().ok())
            .is_some_and(|s| s.role == Role::Leader)
    })
}

/// Proposes through whichever running node leads until one write commits or `limit` passes.
fn write_within(handles: &[Option<NodeHandle>], command: &[u8], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(leader) = leader_of(handles) {
            let handle = handles[leader].as_ref().unwrap();
            if handle.propose(command.to_vec()).is_ok() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn the_cluster_commits_while_a_follower_restores_a_received_snapshot() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let servers = free_addresses(3);
    let configs: Vec<Config> = (0..3)
        .map(|i| {
            let mut config = Config::new(
                NodeId(i as u64),
                servers.clone(),
                dir.path().join(format!("node{i}")),
            );
            config.snapshot_every = 50;
            config.snapshot_retain_entries = 5;
            config.rpc_timeout_ms = 1000;
            config
        })
        .collect();
    let mut handles: Vec<Option<NodeHandle>> =
        configs.iter().map(|c| Some(start_journal(c).0)).collect();
    let mut leader = None;
    wait_until(Duration::from_secs(20), "a leader", || {
        leader = leader_of(&handles);
        leader.is_some()
    });
    let leader = leader.unwrap();
    let follower = (leader + 1) % 3;

    // The follower misses far more entries than the others keep behind their snapshots.
    handles[follower].take().unwrap().shutdown().unwrap();
    for i in 0..300 {
        let command = format!("before-{i}").into_bytes();
        assert!(
            write_within(&handles, &command, Duration::from_secs(10)),
            "write {i}"
        );
    }

    // Restarted, it is sent a snapshot; its state machine's restore is held.
    let (started_tx, started) = bounded(1);
    let (release, release_rx) = bounded(1);
    let machine = HeldRestore {
        journal: Journal {
            commands: Shared::default(),
        },
        started: started_tx,
        release: release_rx,
    };
    handles[follower] = Some(Node::start(configs[follower].clone(), machine).unwrap());
    started
        .recv_timeout(Duration::from_secs(20))
        .expect("the follower restores a snapshot from the leader");

    // The leader is cut off: the other two must elect one of them and commit (its first
    // entry, a no-op of the new term, lies past every entry there was), although the
    // follower's state machine is still inside restore(). Either may win: the follower's log
    // is as good as the other's once it holds the snapshot. Commits are watched in the status,
    // not through a write's answer, which waits for applying (held on the follower).
    handles[leader].take().unwrap().shutdown().unwrap();
    let last = |handles: &[Option<NodeHandle>]| {
        handles
            .iter()
            .flatten()
            .filter_map(|h| h.status().ok())
            .map(|s| (s.last_index, s.commit_index))
            .fold((LogIndex(0), LogIndex(0)), |(l, c), (l2, c2)| {
                (l.max(l2), c.max(c2))
            })
    };
    let (before, _) = last(&handles);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut committed = false;
    while !committed && Instant::now() < deadline {
        committed = last(&handles).1 > before;
        std::thread::sleep(Duration::from_millis(20));
    }
    let follower_status = handles[follower].as_ref().unwrap().status().unwrap();
    let _ = release.send(());
    assert!(
        committed,
        "no write committed while the follower's restore was held: {follower_status:?}"
    );

    // Released, the follower applies the snapshot and what followed it.
    let other = (leader + 2) % 3;
    let target = handles[other]
        .as_ref()
        .unwrap()
        .status()
        .unwrap()
        .commit_index;
    wait_until(Duration::from_secs(20), "the follower to catch up", || {
        let status = handles[follower].as_ref().unwrap().status().unwrap();
        status.applied_index >= target
    });
    for handle in handles.into_iter().flatten() {
        handle.shutdown().unwrap();
    }
}
