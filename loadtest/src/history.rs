//! The write history and the read-back check.
//!
//! Every write carries a value unique to the run (`c<client>.<counter>.` padded to the value
//! size) so a value read back names the write that produced it. Each client thread keeps its
//! own `Vec<WriteRecord>` (no sharing during the run); they are merged after the run.
//!
//! The check, per key: the value read after the run must come from a write that could be the
//! last one in a linearization of the key's writes. An unknown-outcome write may have been
//! applied at any time after it started, so it is always a possible final value. An
//! acknowledged write `W` is a possible final value unless some other acknowledged write `A`
//! started after `W` was acknowledged (then `A` is ordered after `W`). A key with at least one
//! acknowledged write whose value is not possible counts as one lost acknowledged write.
//! Deletes and successful compare-and-swaps are writes too: a delete that may be last makes
//! absence a possible final value. (The linearizability checker, `linearizability.rs`, checks
//! the whole history of reads and writes; this check only needs the writes.)

use std::collections::HashMap;

/// Identifies one write of the run: which client and its per-client counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId {
    /// Client thread number.
    pub client: u32,
    /// Per-client write counter, from 0.
    pub counter: u64,
}

impl WriteId {
    /// The value this write stores: its id, padded with `x` to `size` bytes when it fits.
    /// Values are whitespace-free tokens, as `rcraft kv` requires.
    pub fn value(&self, size: usize) -> String {
        let mut value = format!("c{}.{}.", self.client, self.counter);
        if value.len() < size {
            value.extend(std::iter::repeat_n('x', size - value.len()));
        }
        value
    }

    /// Recovers the write id from a stored value; `None` for a value this run never wrote.
    pub fn parse(value: &[u8]) -> Option<WriteId> {
        let rest = value.strip_prefix(b"c")?;
        let mut parts = rest.splitn(3, |&b| b == b'.');
        let client = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let counter = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let padding = parts.next()?;
        padding
            .iter()
            .all(|&b| b == b'x')
            .then_some(WriteId { client, counter })
    }
}

/// One write as the client saw it (a put, a delete, or a compare-and-swap that swapped or
/// whose outcome is unknown). Definitely failed writes are not recorded: they never take
/// effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRecord {
    /// Key number in `0..keys`.
    pub key: u64,
    /// Which write.
    pub id: WriteId,
    /// When the request was issued, nanoseconds since the run started.
    pub start_ns: u64,
    /// When it was acknowledged; `None` when the outcome is unknown.
    pub acked_ns: Option<u64>,
    /// Term of the acknowledged entry, when the client reports it.
    pub term: Option<u64>,
    /// True for a delete: the write leaves the key absent (`id` only names it).
    pub delete: bool,
}

/// The key name for key number `n` of run `run_id`. A fresh `run_id` per run keeps the key
/// space disjoint from earlier runs against the same cluster.
pub fn key_name(run_id: u64, n: u64) -> String {
    format!("lt{run_id:x}-{n}")
}

/// What the read-back found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A possible final value (or nothing, when no write was acknowledged).
    Consistent,
    /// An acknowledged write is missing: the value is absent, stale or from nowhere.
    Lost,
    /// The value was never written by this run and no write of the key was acknowledged.
    Unexpected,
}

/// Judges one key: `writes` are all records of the key, `observed` the value read back.
pub fn check_key(writes: &[WriteRecord], observed: Option<&[u8]>) -> KeyVerdict {
    let latest_acked_start = writes
        .iter()
        .filter(|w| w.acked_ns.is_some())
        .map(|w| w.start_ns)
        .max();
    let Some(latest_acked_start) = latest_acked_start else {
        // Nothing acknowledged: absence or any of our unknown writes is fine.
        return match observed.map(WriteId::parse) {
            None => KeyVerdict::Consistent,
            Some(Some(id)) if writes.iter().any(|w| w.id == id && !w.delete) => {
                KeyVerdict::Consistent
            }
            Some(_) => KeyVerdict::Unexpected,
        };
    };
    // The value the observation names: `None` for absence, `Some(None)` for foreign bytes.
    let observed_id = observed.map(WriteId::parse);
    if observed_id == Some(None) {
        return KeyVerdict::Lost;
    }
    let possible = writes.iter().any(|w| {
        let may_be_last = match w.acked_ns {
            None => true,
            Some(acked) => acked >= latest_acked_start,
        };
        let explains = match observed_id {
            None => w.delete,
            Some(id) => !w.delete && id == Some(w.id),
        };
        may_be_last && explains
    });
    if possible {
        KeyVerdict::Consistent
    } else {
        KeyVerdict::Lost
    }
}

/// All writes of the run, grouped by key.
#[derive(Debug, Default)]
pub struct History {
    by_key: HashMap<u64, Vec<WriteRecord>>,
    acked: u64,
    unknown: u64,
}

impl History {
    /// Merges the per-client logs.
    pub fn from_clients(logs: Vec<Vec<WriteRecord>>) -> History {
        let mut history = History::default();
        for record in logs.into_iter().flatten() {
            match record.acked_ns {
                Some(_) => history.acked += 1,
                None => history.unknown += 1,
            }
            history.by_key.entry(record.key).or_default().push(record);
        }
        history
    }

    /// Acknowledged writes.
    pub fn acked_writes(&self) -> u64 {
        self.acked
    }

    /// Writes with unknown outcome.
    pub fn unknown_writes(&self) -> u64 {
        self.unknown
    }

    /// Keys written at least once (acknowledged or not), sorted.
    pub fn keys(&self) -> Vec<u64> {
        let mut keys: Vec<u64> = self.by_key.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// The records of one key.
    pub fn writes_of(&self, key: u64) -> &[WriteRecord] {
        self.by_key.get(&key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `(acknowledged at, term)` of every acknowledged write, sorted by time.
    pub fn acks(&self) -> Vec<(u64, Option<u64>)> {
        let mut acks: Vec<(u64, Option<u64>)> = self
            .by_key
            .values()
            .flatten()
            .filter_map(|w| w.acked_ns.map(|t| (t, w.term)))
            .collect();
        acks.sort_unstable();
        acks
    }
}

/// Totals of the read-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verification {
    /// Keys read back.
    pub keys_checked: u64,
    /// Keys whose last acknowledged write is missing.
    pub lost_acked_writes: u64,
    /// Keys holding a value this run never wrote (with nothing acknowledged).
    pub unexpected_values: u64,
    /// Keys that could not be read back at all.
    pub unreadable_keys: u64,
}

impl Verification {
    /// Adds one key's verdict.
    pub fn count(&mut self, verdict: KeyVerdict) {
        self.keys_checked += 1;
        match verdict {
            KeyVerdict::Consistent => {}
            KeyVerdict::Lost => self.lost_acked_writes += 1,
            KeyVerdict::Unexpected => self.unexpected_values += 1,
        }
    }

    /// Adds another partial result.
    pub fn merge(&mut self, other: &Verification) {
        self.keys_checked += other.keys_checked;
        self.lost_acked_writes += other.lost_acked_writes;
        self.unexpected_values += other.unexpected_values;
        self.unreadable_keys += other.unreadable_keys;
    }

    /// True when nothing is missing, foreign or unreadable.
    pub fn passed(&self) -> bool {
        self.lost_acked_writes == 0 && self.unexpected_values == 0 && self.unreadable_keys == 0
    }
}

/// Failover time of one kill: from `kill_ns` to the first write acknowledged after it in a
/// newer term than the killed leader's (`acks` sorted by time). When terms are unknown, the
/// first acknowledgement after the kill counts. `None` when no write was acknowledged since.
pub fn failover_ns(
    acks: &[(u64, Option<u64>)],
    kill_ns: u64,
    killed_term: Option<u64>,
) -> Option<u64> {
    let first_after = acks.partition_point(|&(t, _)| t <= kill_ns);
    acks[first_after..]
        .iter()
        .find(|&&(_, term)| match (term, killed_term) {
            (Some(term), Some(killed)) => term > killed,
            _ => true,
        })
        .map(|&(t, _)| t - kill_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(client: u32, counter: u64, start: u64, end: u64) -> WriteRecord {
        WriteRecord {
            key: 1,
            id: WriteId { client, counter },
            start_ns: start,
            acked_ns: Some(end),
            term: None,
            delete: false,
        }
    }

    fn unknown(client: u32, counter: u64, start: u64) -> WriteRecord {
        WriteRecord {
            key: 1,
            id: WriteId { client, counter },
            start_ns: start,
            acked_ns: None,
            term: None,
            delete: false,
        }
    }

    fn value(client: u32, counter: u64) -> Vec<u8> {
        WriteId { client, counter }.value(100).into_bytes()
    }

    #[test]
    fn values_round_trip_and_have_the_requested_size() {
        let id = WriteId {
            client: 17,
            counter: 123_456,
        };
        let v = id.value(100);
        assert_eq!(v.len(), 100);
        assert!(!v.contains(char::is_whitespace));
        assert_eq!(WriteId::parse(v.as_bytes()), Some(id));
        // Too small a size: the id is kept whole.
        assert_eq!(WriteId::parse(id.value(3).as_bytes()), Some(id));
        assert_eq!(WriteId::parse(b"c1.2.xxy"), None);
        assert_eq!(WriteId::parse(b"hello"), None);
    }

    #[test]
    fn last_acked_value_is_consistent_and_older_one_is_lost() {
        let writes = [acked(0, 0, 0, 10), acked(0, 1, 20, 30)];
        assert_eq!(
            check_key(&writes, Some(&value(0, 1))),
            KeyVerdict::Consistent
        );
        assert_eq!(check_key(&writes, Some(&value(0, 0))), KeyVerdict::Lost);
        assert_eq!(check_key(&writes, None), KeyVerdict::Lost);
        assert_eq!(check_key(&writes, Some(b"garbage")), KeyVerdict::Lost);
    }

    #[test]
    fn overlapping_acked_writes_may_land_in_either_order() {
        // Client 1's write started before client 0's was acknowledged: both may be last.
        let writes = [acked(0, 0, 0, 50), acked(1, 0, 40, 60)];
        assert_eq!(
            check_key(&writes, Some(&value(0, 0))),
            KeyVerdict::Consistent
        );
        assert_eq!(
            check_key(&writes, Some(&value(1, 0))),
            KeyVerdict::Consistent
        );
    }

    #[test]
    fn an_unknown_write_may_overwrite_an_acked_one() {
        let writes = [acked(0, 0, 0, 10), unknown(1, 0, 5), acked(0, 1, 20, 30)];
        assert_eq!(
            check_key(&writes, Some(&value(1, 0))),
            KeyVerdict::Consistent
        );
        assert_eq!(
            check_key(&writes, Some(&value(0, 1))),
            KeyVerdict::Consistent
        );
        assert_eq!(check_key(&writes, Some(&value(0, 0))), KeyVerdict::Lost);
        // A value of another key's write (or another run) is not a possible value here.
        assert_eq!(check_key(&writes, Some(&value(9, 9))), KeyVerdict::Lost);
    }

    #[test]
    fn a_delete_that_may_be_last_makes_absence_possible() {
        let mut delete = acked(0, 1, 20, 30);
        delete.delete = true;
        let writes = [acked(0, 0, 0, 10), delete];
        assert_eq!(check_key(&writes, None), KeyVerdict::Consistent);
        assert_eq!(check_key(&writes, Some(&value(0, 0))), KeyVerdict::Lost);
        // A delete's id is not a value it stored.
        assert_eq!(check_key(&writes, Some(&value(0, 1))), KeyVerdict::Lost);
        let writes = [delete, acked(0, 2, 40, 50)];
        assert_eq!(check_key(&writes, None), KeyVerdict::Lost);
        assert_eq!(
            check_key(&writes, Some(&value(0, 2))),
            KeyVerdict::Consistent
        );
    }

    #[test]
    fn keys_without_acked_writes_accept_absence_or_their_unknown_writes() {
        let writes = [unknown(0, 0, 5)];
        assert_eq!(check_key(&writes, None), KeyVerdict::Consistent);
        assert_eq!(
            check_key(&writes, Some(&value(0, 0))),
            KeyVerdict::Consistent
        );
        assert_eq!(
            check_key(&writes, Some(&value(3, 3))),
            KeyVerdict::Unexpected
        );
    }

    #[test]
    fn history_merges_clients_and_verification_counts() {
        let mut other_key = acked(1, 0, 0, 5);
        other_key.key = 2;
        let history = History::from_clients(vec![
            vec![acked(0, 0, 0, 10), unknown(0, 1, 12)],
            vec![other_key],
        ]);
        assert_eq!((history.acked_writes(), history.unknown_writes()), (2, 1));
        assert_eq!(history.keys(), vec![1, 2]);
        assert_eq!(history.writes_of(1).len(), 2);
        assert_eq!(
            history.acks().iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![5, 10]
        );

        let mut v = Verification::default();
        v.count(check_key(history.writes_of(1), Some(&value(0, 1))));
        v.count(check_key(history.writes_of(2), None));
        assert_eq!((v.keys_checked, v.lost_acked_writes), (2, 1));
        assert!(!v.passed());
    }

    #[test]
    fn failover_waits_for_an_ack_in_a_newer_term() {
        let acks = [
            (90, Some(3)),
            (105, Some(3)),
            (400, Some(4)),
            (410, Some(4)),
        ];
        assert_eq!(failover_ns(&acks, 100, Some(3)), Some(300));
        assert_eq!(failover_ns(&acks, 100, None), Some(5));
        assert_eq!(failover_ns(&acks, 500, Some(4)), None);
        let no_terms = [(90, None), (150, None)];
        assert_eq!(failover_ns(&no_terms, 100, Some(3)), Some(50));
    }
}
