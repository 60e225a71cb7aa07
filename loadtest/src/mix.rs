//! The operation mix: which requests a client draws (`--workload`, or `--read-ratio` for
//! today's mix of puts and gets), and what each client last saw per key, which it uses as the
//! expected value of its compare-and-swaps.
//!
//! Pure. A [`Mix`] is copied into every client thread; a [`LastSeen`] belongs to one client.
//! Invariant: the fractions of a mix are non-negative and add up to 1.

use crate::oplog::Value;
use crate::workload::Rng;
use std::collections::HashMap;

/// A named mix of operations (`--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// Mostly puts, some gets, deletes and compare-and-swaps.
    WriteHeavy,
    /// Mostly gets, a few writes of every kind.
    ReadHeavy,
    /// Mostly compare-and-swaps from the value last seen, with gets, puts and deletes.
    CasHeavy,
}

impl WorkloadKind {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::WriteHeavy => "write-heavy",
            WorkloadKind::ReadHeavy => "read-heavy",
            WorkloadKind::CasHeavy => "cas-heavy",
        }
    }
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpChoice {
    /// Linearizable read.
    Get,
    /// Store a new unique value.
    Put,
    /// Remove the key.
    Delete,
    /// Store a new unique value if the key holds what this client last saw there.
    Cas,
}

/// Fractions of each request kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Gets.
    pub get: f64,
    /// Puts.
    pub put: f64,
    /// Deletes.
    pub delete: f64,
    /// Compare-and-swaps.
    pub cas: f64,
}

impl Mix {
    /// Today's default mix: gets with probability `read_ratio`, puts otherwise.
    pub fn reads_and_puts(read_ratio: f64) -> Mix {
        Mix {
            get: read_ratio,
            put: 1.0 - read_ratio,
            delete: 0.0,
            cas: 0.0,
        }
    }

    /// The mix of a named workload.
    pub fn of(kind: WorkloadKind) -> Mix {
        let (get, put, delete, cas) = match kind {
            WorkloadKind::WriteHeavy => (0.10, 0.75, 0.05, 0.10),
            WorkloadKind::ReadHeavy => (0.90, 0.06, 0.02, 0.02),
            WorkloadKind::CasHeavy => (0.25, 0.10, 0.05, 0.60),
        };
        Mix {
            get,
            put,
            delete,
            cas,
        }
    }

    /// Draws one request kind.
    pub fn draw(&self, rng: &mut Rng) -> OpChoice {
        let x = rng.next_f64();
        if x < self.get {
            OpChoice::Get
        } else if x < self.get + self.put {
            OpChoice::Put
        } else if x < self.get + self.put + self.delete {
            OpChoice::Delete
        } else if self.cas > 0.0 {
            OpChoice::Cas
        } else {
            // Rounding at the top of the range: fall back to the commonest write.
            OpChoice::Put
        }
    }
}

/// What one client last saw in each key (read, written, or found by a compare-and-swap).
/// Keys it never saw are taken as absent.
#[derive(Debug, Default)]
pub struct LastSeen {
    values: HashMap<u64, Value>,
}

impl LastSeen {
    /// The value to expect in `key`; never [`Value::Foreign`], which cannot be sent back.
    pub fn expected(&self, key: u64) -> Value {
        match self.values.get(&key) {
            Some(Value::Foreign) | None => Value::Absent,
            Some(value) => *value,
        }
    }

    /// Notes what `key` held when an operation on it took effect.
    pub fn saw(&mut self, key: u64, value: Value) {
        self.values.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WriteId;

    #[test]
    fn every_mix_adds_up_and_draws_its_kinds() {
        for kind in [
            WorkloadKind::WriteHeavy,
            WorkloadKind::ReadHeavy,
            WorkloadKind::CasHeavy,
        ] {
            let mix = Mix::of(kind);
            assert!((mix.get + mix.put + mix.delete + mix.cas - 1.0).abs() < 1e-9);
            let mut rng = Rng::new(3);
            let mut seen = [0u32; 4];
            for _ in 0..10_000 {
                seen[mix.draw(&mut rng) as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n > 0), "{kind:?}: {seen:?}");
        }
        let mut rng = Rng::new(1);
        let puts_only = Mix::reads_and_puts(0.0);
        assert!((0..1000).all(|_| puts_only.draw(&mut rng) == OpChoice::Put));
        let gets_only = Mix::reads_and_puts(1.0);
        assert!((0..1000).all(|_| gets_only.draw(&mut rng) == OpChoice::Get));
    }

    #[test]
    fn last_seen_never_expects_a_foreign_value() {
        let mut seen = LastSeen::default();
        assert_eq!(seen.expected(1), Value::Absent);
        let id = WriteId {
            client: 1,
            counter: 2,
        };
        seen.saw(1, Value::Written(id));
        assert_eq!(seen.expected(1), Value::Written(id));
        seen.saw(1, Value::Foreign);
        assert_eq!(seen.expected(1), Value::Absent);
    }
}
