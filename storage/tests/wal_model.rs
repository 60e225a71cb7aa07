//! Property test: random append / sync / truncate / compact / reset / crash / reopen / failed
//! sync sequences against a simple in-memory model of the log, on the simulated file system.
//!
//! After every step the WAL must hold exactly the model's records. After a crash it must hold
//! at least everything the model knows to be durable and nothing that was never appended.

use proptest::prelude::*;
use rcraft_storage::{CrashMode, Error, Record, SimFs, Wal, WalOptions};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        new_term: bool,
        payload_len: usize,
    },
    Sync,
    TruncateFrom(u64),
    CompactThrough(u64),
    Reset(u64),
    Crash(CrashMode),
    Reopen,
    FailSync,
}

fn op() -> impl Strategy<Value = Op> {
    let crash = prop_oneof![
        Just(CrashMode::LoseUnsynced),
        Just(CrashMode::KeepUnsynced),
        any::<u64>().prop_map(|seed| CrashMode::TearUnsynced { seed }),
    ];
    let payload_len = prop_oneof![8 => 0usize..300, 1 => 3000usize..6000];
    prop_oneof![
        10 => (1usize..24, any::<bool>(), payload_len)
            .prop_map(|(count, new_term, payload_len)| Op::Append { count, new_term, payload_len }),
        4 => Just(Op::Sync),
        2 => any::<u64>().prop_map(Op::TruncateFrom),
        2 => any::<u64>().prop_map(Op::CompactThrough),
        1 => (0u64..40).prop_map(Op::Reset),
        3 => crash.prop_map(Op::Crash),
        1 => Just(Op::Reopen),
        1 => Just(Op::FailSync),
    ]
}

/// The log as it should be: records from `start`, and how many of them are surely durable.
#[derive(Debug)]
struct Model {
    start: u64,
    records: Vec<(u64, Vec<u8>)>,
    durable_len: usize,
    term: u64,
    version: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        self.start + self.records.len() as u64
    }

    /// Drops records below `first` (compacted away by the WAL).
    fn compact_to(&mut self, first: u64) {
        let drop = (first.saturating_sub(self.start) as usize).min(self.records.len());
        self.records.drain(..drop);
        self.durable_len = self.durable_len.saturating_sub(drop);
        self.start += drop as u64;
    }
}

fn payload(version: u64, index: u64, len: usize) -> Vec<u8> {
    let seed = version.wrapping_mul(31).wrapping_add(index);
    (0..len)
        .map(|i| (seed.wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn open(fs: &SimFs, dir: &Path) -> Wal {
    let options = WalOptions {
        segment_bytes: 4096,
        fs: Arc::new(fs.clone()),
    };
    Wal::open(dir, options).expect("recovery must succeed on a crashed (not corrupted) log")
}

fn check_equal(wal: &Wal, model: &Model) {
    assert_eq!(wal.last_index() + 1, model.next_index(), "last index");
    assert_eq!(wal.first_index(), model.start, "first index");
    let records = wal.read(model.start..model.next_index()).unwrap();
    for (offset, record) in records.iter().enumerate() {
        let (term, payload) = &model.records[offset];
        assert_eq!(record.index, model.start + offset as u64);
        assert_eq!(record.term, *term, "term of {}", record.index);
        assert_eq!(record.payload, &payload[..], "payload of {}", record.index);
        assert_eq!(wal.term_at(record.index), Some(*term));
    }
    assert_eq!(wal.term_at(model.next_index()), None);
    // The positional reads of a running log (a follower's catch-up) read the same records,
    // whole or from any point with a byte limit (here: about a third of them at a time).
    let copies = wal.read_copies(model.start..model.next_index(), u64::MAX);
    assert!(copies.unwrap().iter().eq(records.iter().copied()));
    let mut from = model.start;
    while from < model.next_index() {
        let limit = (model.records.len() as u64 / 3).max(1) * 60;
        let copies = wal.read_copies(from..model.next_index(), limit).unwrap();
        let mapped = &records[(from - model.start) as usize..][..copies.len()];
        assert!(!copies.is_empty() && copies.iter().eq(mapped.iter().copied()));
        from += copies.len() as u64;
    }
}

fn append(wal: &mut Wal, model: &mut Model, count: usize, new_term: bool, payload_len: usize) {
    if new_term {
        model.term += 1;
    }
    model.version += 1;
    let first = model.next_index();
    let payloads: Vec<Vec<u8>> = (0..count as u64)
        .map(|k| payload(model.version, first + k, payload_len))
        .collect();
    let batch: Vec<Record<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(k, payload)| Record {
            index: first + k as u64,
            term: model.term,
            payload,
        })
        .collect();
    wal.append(&batch).unwrap();
    model
        .records
        .extend(payloads.into_iter().map(|p| (model.term, p)));
}

/// After a crash: the WAL must hold the durable prefix and at most what was appended.
fn after_crash(wal: &Wal, model: &mut Model, mode: CrashMode) {
    let recovered = (wal.last_index() + 1 - model.start) as usize;
    assert!(
        (model.durable_len..=model.records.len()).contains(&recovered),
        "recovered {recovered} records, durable {}, appended {}",
        model.durable_len,
        model.records.len()
    );
    if mode == CrashMode::KeepUnsynced {
        assert_eq!(recovered, model.records.len(), "kill -9 loses nothing");
    }
    model.records.truncate(recovered);
    model.durable_len = recovered;
}

fn run(ops: Vec<Op>) {
    let fs = SimFs::new();
    let dir = Path::new("/wal");
    let mut wal = open(&fs, dir);
    let mut model = Model {
        start: 1,
        records: Vec::new(),
        durable_len: 0,
        term: 1,
        version: 0,
    };
    for op in ops {
        match op {
            Op::Append {
                count,
                new_term,
                payload_len,
            } => {
                append(&mut wal, &mut model, count, new_term, payload_len);
            }
            Op::Sync => {
                wal.sync().unwrap();
                model.durable_len = model.records.len();
            }
            Op::TruncateFrom(seed) => {
                let index = model.start + seed % (model.records.len() as u64 + 1);
                wal.truncate_from(index).unwrap();
                if index < model.next_index() {
                    // A real truncation is synced (with everything before it) on return.
                    model.records.truncate((index - model.start) as usize);
                    model.durable_len = model.records.len();
                }
            }
            Op::CompactThrough(seed) => {
                let index = model.start + seed % (model.records.len() as u64 + 1);
                let before = wal.first_index();
                wal.compact_through(index).unwrap();
                let first = wal.first_index();
                assert!(
                    first >= before && first <= index.max(before) + 1,
                    "compaction bound"
                );
                model.compact_to(first);
            }
            Op::Reset(delta) => {
                let next = model.next_index() + delta;
                wal.reset(next).unwrap();
                model.start = next;
                model.records.clear();
                model.durable_len = 0;
            }
            Op::Crash(mode) => {
                drop(wal);
                fs.crash(mode);
                wal = open(&fs, dir);
                after_crash(&wal, &mut model, mode);
            }
            Op::Reopen => {
                drop(wal);
                wal = open(&fs, dir);
            }
            Op::FailSync => {
                append(&mut wal, &mut model, 1, false, 10);
                fs.fail_nth_sync(1);
                assert!(wal.sync().is_err(), "an injected sync failure must surface");
                assert!(wal.is_stopped());
                let refused = wal.append(&[Record {
                    index: model.next_index(),
                    term: model.term,
                    payload: b"x",
                }]);
                assert!(matches!(refused, Err(Error::Stopped { .. })), "{refused:?}");
                assert!(matches!(wal.sync(), Err(Error::Stopped { .. })));
                drop(wal);
                fs.crash(CrashMode::LoseUnsynced);
                wal = open(&fs, dir);
                after_crash(&wal, &mut model, CrashMode::LoseUnsynced);
            }
        }
        check_equal(&wal, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
