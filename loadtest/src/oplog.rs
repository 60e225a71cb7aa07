//! The operation history: every get, put, delete and compare-and-swap a client issued, with
//! its call and return times on the run's one monotonic clock and its outcome.
//!
//! Each client thread appends to its own `Vec<OpRecord>` (no sharing during the run); the
//! logs are merged after the run and handed to the linearizability checker
//! (`linearizability.rs`). Values are kept as [`WriteId`]s, not bytes: every write stores a
//! value unique to the run, so a value read names the write that produced it, and a record
//! stays a few dozen bytes.
//!
//! Invariant: `call_ns <= return_ns` for every record; an operation whose outcome is unknown
//! keeps the time the client gave up as `return_ns`, and the checker treats it as possibly
//! taking effect at any time after its call (or never).

use crate::history::{WriteId, WriteRecord};
use crate::mix::LastSeen;
use crate::stats::OpOutcome;

/// What a key held, as a client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// The key did not exist.
    Absent,
    /// The value stored by this write of the run.
    Written(WriteId),
    /// Bytes this run never wrote (another run's, or garbage).
    Foreign,
}

impl Value {
    /// Classifies bytes read from the store (`None`: the key is absent).
    pub fn from_bytes(bytes: Option<&[u8]>) -> Value {
        match bytes {
            None => Value::Absent,
            Some(bytes) => WriteId::parse(bytes).map_or(Value::Foreign, Value::Written),
        }
    }

    /// The bytes to send for this value (`None`: absent). A foreign value cannot be rebuilt
    /// and is sent as absent, which only makes a compare-and-swap less likely to succeed.
    pub fn to_bytes(self, value_size: usize) -> Option<Vec<u8>> {
        match self {
            Value::Written(id) => Some(id.value(value_size).into_bytes()),
            Value::Absent | Value::Foreign => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Value::Absent => "absent".into(),
            Value::Written(id) => format!("c{}.{}", id.client, id.counter),
            Value::Foreign => "FOREIGN".into(),
        }
    }
}

/// The request a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Linearizable read.
    Get,
    /// Store the value of this write.
    Put(WriteId),
    /// Remove the key.
    Delete,
    /// Store the value of `new` if the key holds `expected`.
    Cas {
        /// What the key must hold.
        expected: Value,
        /// The write whose value is stored on success.
        new: WriteId,
    },
}

impl Request {
    /// True for the requests that may change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Request::Get)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A put or delete was applied.
    Done,
    /// A get returned this value.
    Read(Value),
    /// A compare-and-swap stored its new value.
    Swapped,
    /// A compare-and-swap found this value instead of the expected one and changed nothing.
    NotSwapped(Value),
    /// Certainly did not and will not take effect.
    Failed,
    /// May or may not take effect, at any time after the call.
    Unknown,
}

/// One operation of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRecord {
    /// Client thread number (read-back threads use numbers from [`READ_BACK_CLIENT`]).
    pub client: u32,
    /// Key number in `0..keys`.
    pub key: u64,
    /// What was asked.
    pub request: Request,
    /// What came back.
    pub outcome: Outcome,
    /// When the request was issued, nanoseconds since the start of the run.
    pub call_ns: u64,
    /// When the answer arrived (or the client gave up), nanoseconds since the start.
    pub return_ns: u64,
}

/// Client numbers of the read-back after the run start here, so its reads are told apart
/// from the workload's in a printed window.
pub const READ_BACK_CLIENT: u32 = 1 << 30;

impl OpRecord {
    /// One line for a printed window: times in ms since the start of the run.
    pub fn describe(&self) -> String {
        let request = match self.request {
            Request::Get => "get".to_string(),
            Request::Put(id) => format!("put {}", Value::Written(id).describe()),
            Request::Delete => "del".to_string(),
            Request::Cas { expected, new } => format!(
                "cas {} -> {}",
                expected.describe(),
                Value::Written(new).describe()
            ),
        };
        let outcome = match self.outcome {
            Outcome::Done => "ok".to_string(),
            Outcome::Read(value) => format!("= {}", value.describe()),
            Outcome::Swapped => "swapped".to_string(),
            Outcome::NotSwapped(value) => format!("not swapped, found {}", value.describe()),
            Outcome::Failed => "failed (definite)".to_string(),
            Outcome::Unknown => "UNKNOWN outcome".to_string(),
        };
        let client = match self.client.checked_sub(READ_BACK_CLIENT) {
            Some(n) => format!("read-back {n}"),
            None => format!("client {}", self.client),
        };
        format!(
            "[{:>10.3} ms .. {:>10.3} ms] {client:<14} {request} : {outcome}",
            self.call_ns as f64 / 1e6,
            self.return_ns as f64 / 1e6,
        )
    }
}

/// Everything one client thread recorded, returned when it ends.
#[derive(Debug)]
pub struct ClientLog {
    /// Writes that may have taken effect, for the read-back check (`history.rs`).
    pub writes: Vec<WriteRecord>,
    /// Every operation, for the linearizability checker.
    pub ops: Vec<OpRecord>,
    /// What the client last saw per key: the expected values of its compare-and-swaps.
    pub last_seen: LastSeen,
    /// Whether `last_seen` is kept up to date: only a mix with compare-and-swaps needs it,
    /// and it grows to one entry per key.
    track_last_seen: bool,
}

impl Default for ClientLog {
    fn default() -> Self {
        ClientLog::new(true)
    }
}

impl ClientLog {
    /// An empty log; `track_last_seen` when the client issues compare-and-swaps.
    pub fn new(track_last_seen: bool) -> ClientLog {
        ClientLog {
            writes: Vec::new(),
            ops: Vec::new(),
            last_seen: LastSeen::default(),
            track_last_seen,
        }
    }

    /// Records one finished operation and returns how the statistics count it. `term` is
    /// the acknowledged entry's term, when known; `in_history` says whether the operation
    /// joins the history (its size is bounded) or only the read-back's writes.
    pub fn record(&mut self, op: OpRecord, term: Option<u64>, in_history: bool) -> OpOutcome {
        if in_history {
            self.ops.push(op);
        }
        let acked_ns = (op.outcome != Outcome::Unknown).then_some(op.return_ns);
        let write = |id: WriteId, delete: bool| WriteRecord {
            key: op.key,
            id,
            start_ns: op.call_ns,
            acked_ns,
            term: acked_ns.and(term),
            delete,
        };
        // A delete stores no value; its record's id is never compared.
        let delete_id = WriteId {
            client: op.client,
            counter: u64::MAX,
        };
        match (op.request, op.outcome) {
            (Request::Put(id), Outcome::Done | Outcome::Unknown) => {
                self.writes.push(write(id, false));
            }
            (Request::Delete, Outcome::Done | Outcome::Unknown) => {
                self.writes.push(write(delete_id, true));
            }
            (Request::Cas { new, .. }, Outcome::Swapped | Outcome::Unknown) => {
                self.writes.push(write(new, false));
            }
            _ => {}
        }
        let seen = match (op.request, op.outcome) {
            (_, Outcome::Read(value) | Outcome::NotSwapped(value)) => Some(value),
            (Request::Put(id), Outcome::Done) => Some(Value::Written(id)),
            (Request::Cas { new, .. }, Outcome::Swapped) => Some(Value::Written(new)),
            (Request::Delete, Outcome::Done) => Some(Value::Absent),
            _ => None,
        };
        if let Some(value) = seen.filter(|_| self.track_last_seen) {
            self.last_seen.saw(op.key, value);
        }
        match op.outcome {
            Outcome::Read(_) => OpOutcome::ReadOk,
            Outcome::Done | Outcome::Swapped | Outcome::NotSwapped(_) => OpOutcome::WriteOk,
            Outcome::Failed => OpOutcome::DefiniteError,
            Outcome::Unknown => OpOutcome::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_classify_and_rebuild() {
        let id = WriteId {
            client: 2,
            counter: 5,
        };
        let bytes = id.value(40).into_bytes();
        assert_eq!(Value::from_bytes(Some(&bytes)), Value::Written(id));
        assert_eq!(Value::from_bytes(None), Value::Absent);
        assert_eq!(Value::from_bytes(Some(b"zzz")), Value::Foreign);
        assert_eq!(Value::Written(id).to_bytes(40), Some(bytes));
        assert_eq!(Value::Foreign.to_bytes(40), None);
    }

    #[test]
    fn a_client_log_keeps_writes_that_may_have_taken_effect() {
        let id = |counter| WriteId { client: 0, counter };
        let op = |request, outcome| OpRecord {
            client: 0,
            key: 4,
            request,
            outcome,
            call_ns: 10,
            return_ns: 20,
        };
        let mut log = ClientLog::default();
        let cas = |new| Request::Cas {
            expected: Value::Absent,
            new: id(new),
        };
        let outcomes = [
            log.record(op(Request::Put(id(0)), Outcome::Done), Some(2), true),
            log.record(op(Request::Put(id(1)), Outcome::Failed), None, true),
            log.record(op(Request::Get, Outcome::Read(Value::Absent)), None, true),
            log.record(
                op(cas(2), Outcome::NotSwapped(Value::Foreign)),
                Some(2),
                true,
            ),
            log.record(op(cas(3), Outcome::Swapped), Some(2), true),
            log.record(op(Request::Delete, Outcome::Unknown), None, true),
        ];
        assert_eq!(
            outcomes,
            [
                OpOutcome::WriteOk,
                OpOutcome::DefiniteError,
                OpOutcome::ReadOk,
                OpOutcome::WriteOk,
                OpOutcome::WriteOk,
                OpOutcome::Unknown
            ]
        );
        assert_eq!(log.ops.len(), 6);
        let writes: Vec<(u64, bool, Option<u64>)> = log
            .writes
            .iter()
            .map(|w| (w.id.counter, w.delete, w.acked_ns))
            .collect();
        assert_eq!(
            writes,
            vec![
                (0, false, Some(20)),
                (3, false, Some(20)),
                (u64::MAX, true, None)
            ]
        );
        assert_eq!(log.writes[0].term, Some(2));
        // The last value seen came from the swap; the unknown delete changes nothing.
        assert_eq!(log.last_seen.expected(4), Value::Written(id(3)));
    }

    #[test]
    fn a_record_describes_itself_on_one_line() {
        let record = OpRecord {
            client: READ_BACK_CLIENT + 1,
            key: 3,
            request: Request::Cas {
                expected: Value::Absent,
                new: WriteId {
                    client: 0,
                    counter: 7,
                },
            },
            outcome: Outcome::NotSwapped(Value::Foreign),
            call_ns: 1_500_000,
            return_ns: 2_000_000,
        };
        let line = record.describe();
        assert!(line.contains("read-back 1"), "{line}");
        assert!(line.contains("cas absent -> c0.7"), "{line}");
        assert!(line.contains("not swapped, found FOREIGN"), "{line}");
        assert!(!line.contains('\n'));
    }
}
