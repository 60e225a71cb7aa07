//! Protocol-aware recovery through the real binary (issue 15): synced WAL records of a stopped
//! node are damaged on disk (the last one, or one in the middle of the segment), or the slot of
//! its hard-state file holding its term and vote, and the node restarts. It must start, say which entries it lost, fetch them from the leader, say when it
//! is whole, and the cluster must keep every acknowledged write, also after the leader it
//! repaired from is killed. Real `rcraft serve` processes on 127.0.0.1; every wait is bounded;
//! processes are killed and directories removed on drop.

mod snapshot_support;

use rcraft::wire::Role;
use snapshot_support::{
    Cluster, Damage, active_segment, damage, damage_hard_state_slot, key, value, wait_for,
    write_keys,
};

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
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    let count = 60;
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
    damage(&active_segment(&cluster, victim), which);
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
    let status = cluster.status(victim).expect("the repaired node answers");
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

/// The slot holding a stopped node's term and vote is damaged: the node keeps them (every
/// save writes both slots), says so, rewrites the slot, and the cluster loses nothing.
fn damaged_hard_state_keeps_the_vote(leader_damaged: bool) {
    let mut cluster = Cluster::start(&["--snapshot-every", "1000000"]);
    let leader = cluster.wait_for_leader();
    let count = 20;
    write_keys(&cluster, count, VALUE_BYTES);
    let victim = if leader_damaged {
        leader
    } else {
        (leader + 1) % 3
    };
    let term = cluster.status(victim).expect("status").term;
    cluster.kill(victim);
    damage_hard_state_slot(&cluster, victim, 0);
    cluster.restart(victim);
    wait_for_log(
        &cluster,
        victim,
        "the other slot holds the state, rewriting both",
    );
    let recovered = format!(
        "recovered from {}: term {}",
        cluster.data_dir(victim).display(),
        term.0
    );
    wait_for_log(&cluster, victim, &recovered);
    let bytes = std::fs::read(cluster.data_dir(victim).join("hard_state")).unwrap();
    assert_eq!(bytes[..512], bytes[512..], "the damaged slot was rewritten");
    cluster
        .client()
        .put(&key(count), &value(count, VALUE_BYTES))
        .expect("put after the damage");
    check_keys(&cluster, count + 1);
}

#[test]
fn a_stopped_follower_with_a_damaged_hard_state_slot_keeps_its_term_and_vote() {
    damaged_hard_state_keeps_the_vote(false);
}

#[test]
fn a_stopped_leader_with_a_damaged_hard_state_slot_keeps_its_term_and_vote() {
    damaged_hard_state_keeps_the_vote(true);
}
