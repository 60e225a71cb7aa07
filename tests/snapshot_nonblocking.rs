//! Writing a snapshot never blocks consensus: while the state machine is held inside
//! `snapshot()` (on the apply thread), the node still answers status and commits new
//! entries; they are applied once the snapshot is written. Also checks `NodeHandle::snapshot`
//! and that a node restarts from the snapshot it took on demand.

mod cluster_support;

use cluster_support::free_addresses;
use crossbeam_channel::{Receiver, Sender, bounded};
use rcraft::node::Node;
use rcraft::wire::{LogIndex, NodeId};
use rcraft::{Config, StateMachine};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts applied commands; `snapshot()` announces itself and then waits to be released.
struct GatedCounter {
    applied: Arc<Mutex<u64>>,
    started: Sender<()>,
    release: Receiver<()>,
}

impl StateMachine for GatedCounter {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Vec<u8> {
        *self.applied.lock().unwrap() += 1;
        Vec::new()
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        self.applied.lock().unwrap().to_le_bytes().to_vec()
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let _ = self.started.try_send(());
        // Held until the test releases it (bounded, so a failing test cannot hang).
        let _ = self.release.recv_timeout(Duration::from_secs(30));
        out.write_all(&self.applied.lock().unwrap().to_le_bytes())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut count = [0u8; 8];
        input.read_exact(&mut count)?;
        *self.applied.lock().unwrap() = u64::from_le_bytes(count);
        Ok(())
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn consensus_commits_while_the_state_machine_writes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(NodeId(0), free_addresses(1), dir.path().join("node0"));
    config.rpc_timeout_ms = 20_000;
    let (started_tx, started) = bounded(1);
    let (release, release_rx) = bounded(1);
    let applied = Arc::new(Mutex::new(0));
    let machine = GatedCounter {
        applied: applied.clone(),
        started: started_tx,
        release: release_rx,
    };
    let node = Node::start(config.clone(), machine).unwrap();
    node.wait_for_leader(Duration::from_secs(10)).unwrap();
    node.propose(b"first".to_vec()).unwrap();

    std::thread::scope(|scope| {
        let snapshot = scope.spawn(|| node.snapshot());
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the snapshot started");
        let before = node.status().unwrap();
        let write = scope.spawn(|| node.propose(b"during".to_vec()));
        // The apply thread is inside snapshot(): the entry commits (consensus and storage run)
        // but is not applied until the snapshot is written.
        wait_until("the entry to commit", || {
            node.status().unwrap().commit_index > before.commit_index
        });
        let during = node.status().unwrap();
        assert_eq!(during.applied_index, before.applied_index, "{during:?}");
        assert_eq!(*applied.lock().unwrap(), 1);

        release.send(()).unwrap();
        let taken = snapshot.join().unwrap().expect("the snapshot is durable");
        assert_eq!(taken.index, before.applied_index);
        assert!(taken.size_bytes > 8, "{taken:?}");
        write
            .join()
            .unwrap()
            .expect("the write applied after the snapshot");
    });
    assert_eq!(*applied.lock().unwrap(), 2);
    let status = node.status().unwrap();
    assert!(status.snapshot_index.0 >= 1, "{status:?}");
    node.shutdown().unwrap();

    // The node restarts from that snapshot plus the entry after it.
    let restored = Arc::new(Mutex::new(0));
    let (started_tx, _started) = bounded(1);
    let (_release, release_rx) = bounded(1);
    let machine = GatedCounter {
        applied: restored.clone(),
        started: started_tx,
        release: release_rx,
    };
    let node = Node::start(config, machine).unwrap();
    node.wait_for_leader(Duration::from_secs(10)).unwrap();
    wait_until("the restarted node to apply the log", || {
        *restored.lock().unwrap() == 2
    });
    node.shutdown().unwrap();
}
