//! Scripted interaction tests of the consensus core with golden output (in the spirit of
//! etcd's datadriven tests).
//!
//! Each `tests/testdata/*.txt` holds blocks of
//!
//! ```text
//! command args
//! ----
//! expected output lines
//! ```
//!
//! separated by blank lines; lines starting with `#` between blocks are comments. The harness
//! drives a small in-memory cluster of `Replica`s: messages wait in a queue until `deliver`,
//! persists wait until `persist`, and a node's "disk" holds only what was persisted, so
//! `restart` loses everything unconfirmed. Run with `REWRITE=1` to regenerate the expected
//! output after an intended change, then review the diff.
//!
//! Commands: `nodes N [prevote=0|1] [checkquorum=0|1] [lease=0|1] [inflight=N]
//! [inflightbytes=N] [appendbytes=N] [uncommitted=N] [chunk=N]`, `campaign ID`,
//! `tick ID|all [N]`, `propose ID DATA`, `batch ID DATA...` (several proposals, one drain), `persist ID|all`, `deliver [N]` (N rounds),
//! `stabilize` (deliver and persist until quiet), `drop [FROM TO]`, `partition 1 | 2 3`,
//! `heal`, `read ID`, `status ID|all`, `transfer ID TARGET`, `snapshot ID [RETAIN]`,
//! `restart ID`, `add-learner ID NEW`, `members ID VOTERS... [learners IDS...]`, `log ID`, `lose-partial ID`
//! (the node's partially received snapshot file disappears).

use rcraft::core::describe::{
    describe_action, describe_entry, describe_membership, describe_message,
};
use rcraft::core::{
    Action, ApplyOutcome, CoreConfig, HardState, Input, ReadEntriesError, ReadFailure,
    RecoveredState, Replica, StorageAction, StorageOutcome,
};
use rcraft::wire::{Entry, LogIndex, Membership, Message, NodeId, SnapshotMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// What a node's disk holds: only what was confirmed persisted.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    entries: Vec<Entry>,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// A snapshot being received: its meta and the bytes so far.
    partial: Option<(SnapshotMeta, Vec<u8>)>,
}

impl Disk {
    fn persist(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
    }

    fn compact(&mut self, through: LogIndex) {
        self.entries.retain(|e| e.index > through);
    }
}

struct Node {
    replica: Replica,
    disk: Disk,
    /// Storage work not done yet: persists and snapshot chunk reads/writes, in order.
    storage_queue: Vec<Action>,
    applied: LogIndex,
}

struct Cluster {
    config_template: CoreConfig,
    membership: Membership,
    nodes: BTreeMap<u64, Node>,
    in_flight: Vec<Message>,
    groups: Option<Vec<BTreeSet<u64>>>,
    next_request: u64,
}

fn node_config(template: &CoreConfig, id: u64) -> CoreConfig {
    CoreConfig {
        id: NodeId(id),
        seed: id * 7919,
        ..template.clone()
    }
}

impl Cluster {
    fn new(count: u64, options: &[&str]) -> Cluster {
        let mut config = CoreConfig::new(NodeId(0), 0);
        config.election_timeout_min_ticks = 10;
        config.election_timeout_max_ticks = 20;
        config.heartbeat_interval_ticks = 3;
        for option in options {
            let (key, value) = option.split_once('=').expect("option is key=value");
            let number: u64 = value.parse().expect("option value is a number");
            match key {
                "prevote" => config.pre_vote = number != 0,
                "checkquorum" => config.check_quorum = number != 0,
                "lease" => config.lease_reads = number != 0,
                "inflight" => config.max_inflight_messages = number as usize,
                "inflightbytes" => config.max_inflight_bytes = number,
                "appendbytes" => config.max_append_bytes = number,
                "uncommitted" => config.max_uncommitted_bytes = number,
                "chunk" => config.snapshot_chunk_bytes = number,
                "cache" => config.entry_cache_bytes = number,
                other => panic!("unknown option {other}"),
            }
        }
        let membership = Membership::with_voters((1..=count).map(NodeId));
        let mut cluster = Cluster {
            config_template: config,
            membership,
            nodes: BTreeMap::new(),
            in_flight: Vec::new(),
            groups: None,
            next_request: 1,
        };
        for id in 1..=count {
            cluster.start_node(id, Disk::default());
        }
        cluster
    }

    fn start_node(&mut self, id: u64, disk: Disk) {
        let recovered = RecoveredState {
            hard_state: disk.hard_state,
            snapshot: disk.snapshot.as_ref().map(|(m, _)| m.clone()),
            entries: disk.entries.clone(),
            initial_membership: self.membership.clone(),
            lost: None,
        };
        let replica = Replica::new(node_config(&self.config_template, id), recovered)
            .expect("recovered state is valid");
        let applied = disk
            .snapshot
            .as_ref()
            .map(|(m, _)| m.index)
            .unwrap_or_default();
        let node = Node {
            replica,
            disk,
            storage_queue: Vec::new(),
            applied,
        };
        self.nodes.insert(id, node);
    }

    fn ids(&self, arg: &str) -> Vec<u64> {
        if arg == "all" {
            self.nodes.keys().copied().collect()
        } else {
            vec![arg.parse().expect("node id")]
        }
    }

    /// Steps node `id` and reports what it asked for.
    fn step(&mut self, id: u64, input: Input, out: &mut String) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.replica.step(input);
        node.replica.check_invariants();
        self.collect(id, out);
    }

    fn collect(&mut self, id: u64, out: &mut String) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let actions = node.replica.take_actions();
        let mut applied_to = None;
        for action in actions {
            writeln!(out, "n{id}: {}", describe_action(&action)).unwrap();
            match action {
                Action::Send(message) => {
                    if self.connected(message.from.0, message.to.0) {
                        self.in_flight.push(message);
                    } else {
                        writeln!(out, "dropped: {}", describe_message(&message)).unwrap();
                    }
                }
                Action::Apply { entries } => {
                    let node = self.nodes.get_mut(&id).expect("known node");
                    let last = entries.last().expect("apply is non-empty").index;
                    assert_eq!(entries[0].index, node.applied.next(), "apply in order");
                    node.applied = last;
                    applied_to = Some(last);
                }
                Action::RestoreSnapshot { meta } => {
                    self.nodes.get_mut(&id).expect("known node").applied = meta.index;
                }
                Action::Storage(StorageAction::CompactLog { through }) => {
                    self.nodes.get_mut(&id).unwrap().disk.compact(through);
                }
                other @ (Action::Storage(StorageAction::Persist { .. })
                | Action::Storage(StorageAction::ReadEntries { .. })
                | Action::Storage(StorageAction::ReadSnapshotChunk { .. })
                | Action::Storage(StorageAction::WriteSnapshotChunk { .. })) => {
                    self.nodes.get_mut(&id).unwrap().storage_queue.push(other);
                }
                Action::Proposed { .. }
                | Action::SelfDemotion(_)
                | Action::ProposeRejected { .. }
                | Action::ReadReady { .. }
                | Action::ReadRejected { .. }
                | Action::Storage(StorageAction::KeepSnapshots { .. }) => {}
            }
        }
        if let Some(index) = applied_to {
            let node = self.nodes.get_mut(&id).expect("known node");
            node.replica
                .step(Input::Apply(ApplyOutcome::Applied { index }));
            assert!(node.replica.take_actions().is_empty());
        }
    }

    /// Carries out node `id`'s storage work, feeding the completions back.
    fn persist(&mut self, id: u64, out: &mut String) {
        let queue = std::mem::take(&mut self.nodes.get_mut(&id).unwrap().storage_queue);
        for work in queue {
            let node = self.nodes.get_mut(&id).unwrap();
            let input = match work {
                Action::Storage(StorageAction::Persist {
                    seq,
                    hard_state,
                    entries,
                }) => {
                    node.disk.persist(hard_state, &entries);
                    Input::Storage(StorageOutcome::Persisted { seq })
                }
                Action::Storage(StorageAction::ReadEntries {
                    id,
                    to,
                    low,
                    high,
                    max_bytes,
                }) => {
                    let mut bytes = 0;
                    let entries: Vec<Entry> = (node.disk.entries.iter())
                        .filter(|e| e.index >= low && e.index <= high)
                        .take_while(|e| {
                            let more = bytes < max_bytes;
                            bytes += e.size_bytes();
                            more
                        })
                        .cloned()
                        .collect();
                    let entries = match entries.first() {
                        Some(first) if first.index == low => Ok(entries),
                        _ => Err(ReadEntriesError::new(
                            ReadFailure::NotHeld,
                            format!("entries from {low} are not on disk"),
                        )),
                    };
                    Input::Storage(StorageOutcome::EntriesRead {
                        id,
                        to,
                        low,
                        entries,
                    })
                }
                Action::Storage(StorageAction::ReadSnapshotChunk {
                    to,
                    meta,
                    offset,
                    max_bytes,
                }) => {
                    let data = match &node.disk.snapshot {
                        Some((m, bytes)) if *m == meta => {
                            let end = (offset + max_bytes).min(bytes.len() as u64);
                            bytes[offset as usize..end as usize].to_vec()
                        }
                        _ => continue,
                    };
                    Input::Storage(StorageOutcome::SnapshotChunkRead {
                        to,
                        meta,
                        offset,
                        data,
                    })
                }
                Action::Storage(StorageAction::WriteSnapshotChunk {
                    meta,
                    offset,
                    data,
                    done,
                    ..
                }) => write_chunk(node, meta, offset, data, done),
                _ => unreachable!("only storage work is queued"),
            };
            self.step(id, input, out);
        }
    }

    fn deliver_round(&mut self, out: &mut String) {
        let messages = std::mem::take(&mut self.in_flight);
        for message in messages {
            let (from, to) = (message.from.0, message.to.0);
            if !self.connected(from, to) || !self.nodes.contains_key(&to) {
                writeln!(out, "dropped: {}", describe_message(&message)).unwrap();
                continue;
            }
            self.step(to, Input::Message(message), out);
        }
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        match &self.groups {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(&a) && g.contains(&b)),
        }
    }

    fn stabilize(&mut self, out: &mut String) {
        for _ in 0..100 {
            let busy = !self.in_flight.is_empty()
                || self.nodes.values().any(|n| !n.storage_queue.is_empty());
            if !busy {
                return;
            }
            for id in self.ids("all") {
                self.persist(id, out);
            }
            self.deliver_round(out);
        }
        panic!("cluster did not stabilize within 100 rounds");
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    fn run(&mut self, command: &str, args: &[&str]) -> String {
        let mut out = String::new();
        match command {
            "campaign" => self.step(parse(args[0]), Input::Campaign, &mut out),
            "tick" => {
                let count = args.get(1).map(|n| parse(n)).unwrap_or(1);
                for _ in 0..count {
                    for id in self.ids(args[0]) {
                        self.step(id, Input::Tick, &mut out);
                    }
                }
            }
            "propose" => {
                let id = self.request_id();
                let input = Input::Propose {
                    id,
                    session: None,
                    data: args[1].as_bytes().to_vec(),
                };
                self.step(parse(args[0]), input, &mut out);
            }
            "batch" => {
                // Several proposals stepped before one drain, as the node's consensus thread
                // does with everything waiting in its channel.
                let node_id = parse(args[0]);
                for data in &args[1..] {
                    let id = self.request_id();
                    let input = Input::Propose {
                        id,
                        session: None,
                        data: data.as_bytes().to_vec(),
                    };
                    self.nodes.get_mut(&node_id).unwrap().replica.step(input);
                }
                self.collect(node_id, &mut out);
            }
            "persist" => {
                for id in self.ids(args[0]) {
                    self.persist(id, &mut out);
                }
            }
            "deliver" => {
                let rounds = args.first().map(|n| parse(n)).unwrap_or(1);
                for _ in 0..rounds {
                    self.deliver_round(&mut out);
                }
            }
            "stabilize" => self.stabilize(&mut out),
            "drop" => self.drop_messages(args, &mut out),
            "partition" => self.partition(args, &mut out),
            "heal" => {
                self.groups = None;
                out.push_str("healed\n");
            }
            "read" => {
                let id = self.request_id();
                let mode = rcraft_wire::ReadMode::Linearizable;
                self.step(parse(args[0]), Input::ReadIndex { id, mode }, &mut out);
            }
            "status" => {
                for id in self.ids(args[0]) {
                    writeln!(out, "{}", format_status(&self.nodes[&id].replica)).unwrap();
                }
            }
            "log" => {
                let node = &self.nodes[&parse(args[0])];
                for entry in node.replica.log_entries() {
                    writeln!(out, "{}", describe_entry(entry)).unwrap();
                }
                if node.replica.log_entries().len() == 0 {
                    out.push_str("(empty)\n");
                }
            }
            "transfer" => {
                let target = NodeId(parse(args[1]));
                self.step(
                    parse(args[0]),
                    Input::TransferLeadership { target },
                    &mut out,
                );
            }
            "snapshot" => self.snapshot(parse(args[0]), args.get(1).map(|n| parse(n)), &mut out),
            "restart" => {
                let id = parse(args[0]);
                let disk = self.nodes.remove(&id).expect("known node").disk;
                self.in_flight.retain(|m| m.from.0 != id);
                self.start_node(id, disk);
                writeln!(out, "{}", format_status(&self.nodes[&id].replica)).unwrap();
            }
            "add-learner" | "members" => self.change_members(command, args, &mut out),
            "lose-partial" => {
                self.nodes.get_mut(&parse(args[0])).unwrap().disk.partial = None;
                out.push_str("partial snapshot file lost\n");
            }
            other => panic!("unknown command {other}"),
        }
        if out.is_empty() {
            out.push_str("(no actions)\n");
        }
        out
    }

    fn drop_messages(&mut self, args: &[&str], out: &mut String) {
        let filter: Option<(u64, u64)> = match args {
            [from, to] => Some((parse(from), parse(to))),
            _ => None,
        };
        let (dropped, kept): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| filter.is_none_or(|(from, to)| m.from.0 == from && m.to.0 == to));
        self.in_flight = kept;
        for message in dropped {
            writeln!(out, "dropped: {}", describe_message(&message)).unwrap();
        }
    }

    fn partition(&mut self, args: &[&str], out: &mut String) {
        let mut groups = vec![BTreeSet::new()];
        for arg in args {
            if *arg == "|" {
                groups.push(BTreeSet::new());
            } else {
                groups.last_mut().unwrap().insert(parse(arg));
            }
        }
        writeln!(out, "partitioned {groups:?}").unwrap();
        self.groups = Some(groups);
    }

    fn snapshot(&mut self, id: u64, retain: Option<u64>, out: &mut String) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let index = node.applied;
        let term = node.replica.log_term(index).expect("applied entry is held");
        let data = format!("state-machine-at-{index}").into_bytes();
        let meta = SnapshotMeta {
            index,
            term,
            membership: node
                .replica
                .membership_at(index)
                .expect("applied index is held"),
            membership_entry: None,
            size_bytes: data.len() as u64,
            checksum: 0,
        };
        node.disk.snapshot = Some((meta.clone(), data));
        let input = Input::Apply(ApplyOutcome::SnapshotTaken {
            meta,
            retain_entries: retain.unwrap_or(0),
        });
        self.step(id, input, out);
    }

    fn change_members(&mut self, command: &str, args: &[&str], out: &mut String) {
        let leader = parse(args[0]);
        let mut membership = self.nodes[&leader].replica.status().membership;
        if command == "add-learner" {
            let new = parse(args[1]);
            membership.learners.insert(NodeId(new));
            if !self.nodes.contains_key(&new) {
                self.start_node(new, Disk::default());
            }
        } else {
            // `members ID VOTERS... [learners LEARNERS...]`
            let split = args
                .iter()
                .position(|a| *a == "learners")
                .unwrap_or(args.len());
            membership.voters = args[1..split].iter().map(|a| NodeId(parse(a))).collect();
            membership.learners = args[split..]
                .iter()
                .skip(1)
                .map(|a| NodeId(parse(a)))
                .collect();
        }
        let id = self.request_id();
        self.step(leader, Input::ProposeMembership { id, membership }, out);
    }
}

/// The harness's storage side of a received snapshot chunk.
fn write_chunk(
    node: &mut Node,
    meta: SnapshotMeta,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> Input {
    // Like the node's storage: the partial file of the same snapshot is kept (whichever
    // leader sends it), bytes already held are skipped, and a gap is refused.
    let partial = match node.disk.partial.take() {
        Some((m, bytes)) if m == meta => (m, bytes),
        _ => (meta.clone(), Vec::new()),
    };
    let (m, mut bytes) = partial;
    let held = bytes.len() as u64;
    if offset > held {
        node.disk.partial = Some((m, bytes));
        return Input::Storage(StorageOutcome::SnapshotChunkWritten {
            meta,
            next_offset: held,
            rejected: true,
        });
    }
    let end = offset + data.len() as u64;
    if end > held {
        bytes.extend_from_slice(&data[(held - offset) as usize..]);
    }
    let next_offset = bytes.len() as u64;
    let installed = done && next_offset == meta.size_bytes;
    if installed {
        node.disk.snapshot = Some((meta.clone(), bytes));
        node.disk.entries.clear();
        return Input::Storage(StorageOutcome::SnapshotInstalled { meta });
    }
    node.disk.partial = Some((m, bytes));
    Input::Storage(StorageOutcome::SnapshotChunkWritten {
        meta,
        next_offset,
        rejected: false,
    })
}

fn parse(arg: &str) -> u64 {
    arg.parse()
        .unwrap_or_else(|_| panic!("not a number: {arg}"))
}

fn format_status(replica: &Replica) -> String {
    let s = replica.status();
    let leader = s
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "n{} {:?} term={} leader={} last={} persisted={} commit={} applied={} snap={} {}",
        s.id,
        s.role,
        s.term,
        leader,
        s.last_index,
        s.persisted_index,
        s.commit_index,
        s.applied_index,
        s.snapshot_index,
        describe_membership(&s.membership)
    )
}

/// One block of a script: the text before it (comments), its command and its output.
struct Block {
    preamble: Vec<String>,
    command: String,
    expected: Vec<String>,
}

fn parse_script(text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut preamble = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            preamble.push(line.to_string());
            continue;
        }
        let command = line.to_string();
        assert_eq!(
            lines.next(),
            Some("----"),
            "expected ---- after `{command}`"
        );
        let mut expected = Vec::new();
        while let Some(out) = lines.peek() {
            if out.trim().is_empty() {
                break;
            }
            expected.push(lines.next().unwrap().to_string());
        }
        blocks.push(Block {
            preamble: std::mem::take(&mut preamble),
            command,
            expected,
        });
    }
    (blocks, preamble)
}

fn run_script(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).expect("script is readable");
    let (blocks, trailer) = parse_script(&text);
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut cluster: Option<Cluster> = None;
    let mut rewritten = String::new();
    let mut failures = String::new();
    for block in &blocks {
        let words: Vec<&str> = block.command.split_whitespace().collect();
        let output = if words[0] == "nodes" {
            cluster = Some(Cluster::new(parse(words[1]), &words[2..]));
            "ok\n".to_string()
        } else {
            let cluster = cluster.as_mut().expect("script starts with `nodes`");
            cluster.run(words[0], &words[1..])
        };
        let actual: Vec<&str> = output.lines().collect();
        if actual != block.expected && failures.is_empty() {
            failures = format!(
                "{}: `{}`\n--- expected\n{}\n--- actual\n{}\n",
                path.display(),
                block.command,
                block.expected.join("\n"),
                actual.join("\n")
            );
        }
        for line in &block.preamble {
            writeln!(rewritten, "{line}").unwrap();
        }
        writeln!(rewritten, "{}\n----\n{}", block.command, output.trim_end()).unwrap();
    }
    for line in &trailer {
        writeln!(rewritten, "{line}").unwrap();
    }
    if rewrite {
        std::fs::write(path, rewritten).expect("script is writable");
        return Ok(());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[test]
fn interaction_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    let failures: Vec<String> = paths.iter().filter_map(|p| run_script(p).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        paths.len() >= 6,
        "expected at least 6 scripts in {}",
        dir.display()
    );
}
