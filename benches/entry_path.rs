//! The entry path of one write batch over 3 nodes, deterministic, for counting instructions
//! per entry (`make bench-instructions` runs it under `valgrind --tool=callgrind`; this VM
//! has no hardware counters, and instruction counts are the one A/B that its neighbours'
//! load does not move).
//!
//! Per batch of `ENTRIES_PER_BATCH` commands of `COMMAND_BYTES` bytes, each with a session:
//! the leader makes the entries from the proposals' bytes as its core does (`Entry::command`:
//! the record, which the command then views), appends the records to its WAL
//! (`Wal::append_encoded`), encodes one AppendRequest frame per follower; a follower pushes
//! the frame's bytes through a `FrameDecoder`, decodes and checks the message
//! (`Frame::to_message`, `Message::check_well_formed`: each record's length and CRC), appends
//! the records to its WAL; every node hands each command's bytes to its state machine's
//! `apply`. WALs live on `/dev/shm` when it exists and are never synced: the
//! figures are user-space work only. What a stage does lives in one `stage_*` function that
//! is never inlined, so callgrind's inclusive count of that function is the stage's cost;
//! `scripts/bench-instructions.py` divides it by the entries.
//!
//! Without valgrind it prints wall-clock nanoseconds per entry per stage (noisy on a shared
//! machine; compare instruction counts instead). `ENTRY_PATH_BATCHES` overrides the batch count.

use rcraft::StateMachine;
use rcraft::wire::{
    Entry, EntryPayload, FRAME_BYTES_MAX, FrameDecoder, LogIndex, Message, MessageBody, NodeId,
    Session, Term, encode_message,
};
use rcraft_storage::{Wal, WalOptions};
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

const ENTRIES_PER_BATCH: u64 = 256;
const COMMAND_BYTES: usize = 100;
const BATCHES_DEFAULT: u64 = 200;
const TERM: Term = Term(3);

/// A state machine that only reads its input: what is measured is how the command's bytes
/// reach `apply`, not a store's work.
#[derive(Default)]
struct Digest {
    bytes: u64,
    folded: u64,
}

impl StateMachine for Digest {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
        self.bytes += command.len() as u64;
        self.folded ^= index.0 ^ u64::from(command.first().copied().unwrap_or(0));
        Vec::new()
    }

    fn query(&self, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&self, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn restore(&mut self, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

/// One node's WAL and state machine.
struct Node {
    wal: Wal,
    state: Digest,
}

/// The proposals of batch `batch`: the command bytes as the leader's network thread decoded
/// them from clients (one buffer each, freed once the entry is made). Not measured.
#[inline(never)]
fn proposals(batch: u64) -> Vec<(Session, Vec<u8>)> {
    (0..ENTRIES_PER_BATCH)
        .map(|i| {
            let session = Session {
                client_id: 1 + i % 64,
                sequence: batch * ENTRIES_PER_BATCH + i + 1,
            };
            (session, vec![(batch + i) as u8; COMMAND_BYTES])
        })
        .collect()
}

#[inline(never)]
fn stage_leader_make_entries(first: LogIndex, proposals: Vec<(Session, Vec<u8>)>) -> Vec<Entry> {
    proposals
        .into_iter()
        .zip(first.0..)
        .map(|((session, data), index)| Entry::command(TERM, LogIndex(index), Some(session), &data))
        .collect()
}

#[inline(never)]
fn stage_wal_append(wal: &mut Wal, entries: &[Entry]) {
    let records: Vec<&[u8]> = entries.iter().map(Entry::record).collect();
    wal.append_encoded(&records).expect("WAL append");
}

#[inline(never)]
fn stage_frame_encode(to: NodeId, entries: &[Entry], prev: LogIndex, out: &mut Vec<u8>) {
    let message = Message {
        from: NodeId(1),
        to,
        term: TERM,
        body: MessageBody::AppendRequest {
            prev_log_index: prev,
            prev_log_term: if prev.0 == 0 { Term(0) } else { TERM },
            entries: entries.to_vec(),
            leader_commit: prev,
        },
    };
    out.clear();
    encode_message(&message, out).expect("encode the AppendRequest");
}

#[inline(never)]
fn stage_follower_decode(decoder: &mut FrameDecoder, frame: &[u8]) -> Vec<Entry> {
    decoder.push(frame);
    let frame = decoder
        .next_frame()
        .expect("a good frame")
        .expect("a whole frame");
    let message = frame.to_message().expect("an AppendRequest");
    message.check_well_formed().expect("well formed");
    match message.body {
        MessageBody::AppendRequest { entries, .. } => entries,
        other => panic!("expected an AppendRequest, got {other:?}"),
    }
}

/// Hands each command to the state machine, as the apply thread does, and drops the entries.
#[inline(never)]
fn stage_apply(state: &mut Digest, entries: Vec<Entry>) {
    for entry in entries {
        if let EntryPayload::Command { data, .. } = &entry.payload {
            black_box(state.apply(entry.index, &data[..]));
        }
    }
}

fn open_node(dir: &std::path::Path, name: &str) -> Node {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).expect("create the WAL directory");
    Node {
        wal: Wal::open(&path, WalOptions::default()).expect("open the WAL"),
        state: Digest::default(),
    }
}

/// Wall-clock time per stage, for runs without valgrind.
#[derive(Default)]
struct Clock {
    stages: Vec<(&'static str, Duration)>,
}

impl Clock {
    fn time<T>(&mut self, stage: &'static str, run: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = run();
        let took = start.elapsed();
        match self.stages.iter_mut().find(|(name, _)| *name == stage) {
            Some((_, total)) => *total += took,
            None => self.stages.push((stage, took)),
        }
        out
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments of its own.
    let batches: u64 = std::env::var("ENTRY_PATH_BATCHES")
        .ok()
        .map(|v| v.parse().expect("ENTRY_PATH_BATCHES: a number of batches"))
        .unwrap_or(BATCHES_DEFAULT);
    assert!(
        batches >= 2,
        "ENTRY_PATH_BATCHES: at least 2 (the first is not timed)"
    );
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let mut leader = open_node(dir.path(), "leader");
    let mut followers = [open_node(dir.path(), "f2"), open_node(dir.path(), "f3")];
    let mut decoders = [
        FrameDecoder::new(FRAME_BYTES_MAX),
        FrameDecoder::new(FRAME_BYTES_MAX),
    ];
    let mut frame = Vec::new();
    let mut clock = Clock::default();
    let mut next = LogIndex(1);
    for batch in 0..batches {
        let proposals = proposals(batch);
        let entries = clock.time("leader_make_entries", || {
            stage_leader_make_entries(next, proposals)
        });
        clock.time("wal_append", || stage_wal_append(&mut leader.wal, &entries));
        for (at, (follower, decoder)) in followers.iter_mut().zip(&mut decoders).enumerate() {
            let to = NodeId(2 + at as u64);
            clock.time("frame_encode", || {
                stage_frame_encode(to, &entries, next.prev(), &mut frame)
            });
            let received = clock.time("follower_decode", || stage_follower_decode(decoder, &frame));
            clock.time("wal_append", || {
                stage_wal_append(&mut follower.wal, &received)
            });
            clock.time("apply", || stage_apply(&mut follower.state, received));
        }
        clock.time("apply", || stage_apply(&mut leader.state, entries));
        next = LogIndex(next.0 + ENTRIES_PER_BATCH);
        if batch == 0 {
            // The first append to each WAL creates its first segment, whose kernel time
            // (tens of milliseconds on tmpfs) would swamp the wall-clock figures.
            clock.stages.clear();
        }
    }
    for node in std::iter::once(&leader).chain(&followers) {
        assert_eq!(
            node.wal.last_index(),
            next.0 - 1,
            "every node holds the log"
        );
        assert_eq!(
            node.state.bytes,
            batches * ENTRIES_PER_BATCH * COMMAND_BYTES as u64,
            "every command reached apply"
        );
    }
    let entries = batches * ENTRIES_PER_BATCH;
    println!(
        "entry_path: {batches} batches x {ENTRIES_PER_BATCH} entries of {COMMAND_BYTES} B, 3 nodes, entries {entries}"
    );
    let timed = entries - ENTRIES_PER_BATCH;
    for (stage, took) in &clock.stages {
        println!(
            "  {stage:<20} {:>8.1} ns per entry (wall clock, summed over the nodes; the first batch left out)",
            took.as_nanos() as f64 / timed as f64
        );
    }
}
