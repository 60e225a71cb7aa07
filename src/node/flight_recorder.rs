//! The flight recorder: the node's last [`FLIGHT_RECORDER_EVENTS_MAX`] notable events (term
//! and role changes, votes, snapshot stages, slow fsyncs, dropped frames, membership changes,
//! starts and fatal stops) in a fixed-size ring in memory. Served on demand (the client
//! request `Events`, `rcraft debug events`) and written to `DATA_DIR/flight-recorder.txt` when
//! the node stops on a fatal error, so the story of the last minutes survives the process.
//!
//! Written by whichever thread sees an event (consensus, storage) through the node's
//! [`MetricsHook`](super::metrics::MetricsHook); a short lock per event. Invariants: at most
//! [`FLIGHT_RECORDER_EVENTS_MAX`] events are held (the oldest is dropped first); `seq` numbers
//! every event recorded since the start, so a gap shows how many were dropped.

use super::limits::FLIGHT_RECORDER_EVENTS_MAX;
use rcraft_wire::{RecordedEvent, Term};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the dump in the data directory.
pub const FLIGHT_RECORDER_FILE: &str = "flight-recorder.txt";

/// The ring of recent events.
#[derive(Default)]
pub struct FlightRecorder {
    ring: parking_lot::Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<RecordedEvent>,
    next_seq: u64,
    /// The highest term recorded, for events whose thread does not know the term.
    last_term: Term,
}

impl FlightRecorder {
    /// Records one event of `kind` (a short fixed word) in `term`.
    pub fn record(&self, term: Term, kind: &str, detail: String) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut ring = self.ring.lock();
        if ring.events.len() >= FLIGHT_RECORDER_EVENTS_MAX {
            ring.events.pop_front();
        }
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let term = term.max(ring.last_term);
        ring.last_term = term;
        ring.events.push_back(RecordedEvent {
            seq,
            unix_ms,
            term,
            kind: kind.to_string(),
            detail,
        });
    }

    /// Records one event in the last term recorded (for threads that do not know the term).
    pub fn record_now(&self, kind: &str, detail: String) {
        self.record(Term(0), kind, detail);
    }

    /// Every event held, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.ring.lock().events.iter().cloned().collect()
    }

    /// Writes every event held to `dir/flight-recorder.txt` (replacing an older dump), one
    /// line each as [`describe_event`] writes it, and syncs it. Returns the file's path.
    pub fn dump_to(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(FLIGHT_RECORDER_FILE);
        let mut file = std::fs::File::create(&path)?;
        for event in self.events() {
            writeln!(file, "{}", describe_event(&event))?;
        }
        file.sync_all()?;
        Ok(path)
    }
}

/// One event as a line: `2026-12-07T04:03:09.123Z #17 term 3 election_won: won the ...`.
pub fn describe_event(event: &RecordedEvent) -> String {
    format!(
        "{} #{} term {} {}: {}",
        utc_time(event.unix_ms),
        event.seq,
        event.term,
        event.kind,
        event.detail
    )
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with milliseconds.
pub fn utc_time(unix_ms: u64) -> String {
    let (days, ms_of_day) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

/// The Gregorian date of a day count since 1970-01-01 (H. Hinnant's civil-from-days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_events_and_numbers_them_all() {
        let recorder = FlightRecorder::default();
        let extra = 5;
        for i in 0..FLIGHT_RECORDER_EVENTS_MAX + extra {
            recorder.record(Term(1), "test", format!("event {i}"));
        }
        let events = recorder.events();
        assert_eq!(events.len(), FLIGHT_RECORDER_EVENTS_MAX);
        assert_eq!(events[0].seq, extra as u64);
        assert_eq!(events[0].detail, format!("event {extra}"));
        let last = events.last().unwrap();
        assert_eq!(last.seq, (FLIGHT_RECORDER_EVENTS_MAX + extra - 1) as u64);
    }

    #[test]
    fn a_dump_has_one_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = FlightRecorder::default();
        recorder.record(
            Term(3),
            "election_won",
            "won the election for term 3".into(),
        );
        recorder.record(Term(3), "fatal_stop", "the node stopped: disk full".into());
        let path = recorder.dump_to(dir.path()).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with("#0 term 3 election_won: won the election for term 3"));
        assert!(lines[1].ends_with("#1 term 3 fatal_stop: the node stopped: disk full"));
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc_time(1_796_612_589_456), "2026-12-07T03:03:09.456Z");
    }
}
