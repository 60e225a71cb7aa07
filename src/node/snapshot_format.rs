//! The bytes of a node snapshot: the session table followed by the user's own snapshot.
//!
//! ```text
//! magic "RCSTATE1" | session_count u64 |
//!   session_count x (client_id u64 | sequence u64 | last_index u64 | len u32 | response)
//! | the state machine's snapshot bytes, to the end of the file
//! ```
//!
//! A record with sequence 0 is a registered session that has not written yet (`last_index`
//! is its registration's, `response` empty).
//!
//! The magic is this layer's own (the storage crate's snapshot file starts with `RCSNAP01`);
//! snapshots written before the two were told apart begin with `RCSNAP01` here too and are
//! still read. All integers little-endian. Used only by the apply thread, which owns both the session
//! table and the state machine. The surrounding file (metadata, checksum, atomic rename)
//! belongs to the storage crate's snapshot store. Both directions go through a small buffer
//! (the session records are many small fields) that large reads and writes of the state
//! machine's own snapshot pass straight through.

use super::sessions::{SessionRecord, SessionTable};
use crate::StateMachine;
use rcraft_wire::LogIndex;
use std::io::{self, BufReader, BufWriter, Read, Write};

const MAGIC: &[u8; 8] = b"RCSTATE1";

/// The magic this layer shared with the storage crate's file header until they were told
/// apart; accepted when reading, never written.
const MAGIC_BEFORE_SPLIT: &[u8; 8] = b"RCSNAP01";

/// Largest saved response accepted when restoring; a larger length means corruption.
const RESPONSE_BYTES_MAX: u32 = 64 << 20;

/// Bytes of the buffer between the snapshot file and the session records; reads and writes
/// at least this large (the state machine's blocks) bypass it.
const SESSION_BUFFER_BYTES: usize = 64 * 1024;

/// Writes the session table and then the state machine's snapshot to `out`.
pub(crate) fn write_snapshot(
    out: &mut dyn Write,
    sessions: &SessionTable,
    state_machine: &dyn StateMachine,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(SESSION_BUFFER_BYTES, out);
    write_sessions(&mut out, sessions)?;
    state_machine.snapshot(&mut out)?;
    out.flush()
}

fn write_sessions(out: &mut dyn Write, sessions: &SessionTable) -> io::Result<()> {
    out.write_all(MAGIC)?;
    let records = sessions.records_sorted();
    out.write_all(&(records.len() as u64).to_le_bytes())?;
    for (client_id, record) in records {
        out.write_all(&client_id.to_le_bytes())?;
        out.write_all(&record.sequence.to_le_bytes())?;
        out.write_all(&record.last_index.0.to_le_bytes())?;
        let len = u32::try_from(record.response.len())
            .map_err(|_| invalid("a saved response is over 4 GiB"))?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&record.response)?;
    }
    Ok(())
}

/// Replaces `sessions` and the state machine's state with the snapshot read from `input`.
///
/// The session table is read into a new table and swapped in only after the state machine's
/// `restore` returned `Ok`, so an error leaves `sessions` as it was (and the state machine
/// too, when its restore is atomic: [`StateMachine::restores_atomically`]).
pub(crate) fn read_snapshot(
    input: &mut dyn Read,
    sessions: &mut SessionTable,
    state_machine: &mut dyn StateMachine,
) -> io::Result<()> {
    let mut input = BufReader::with_capacity(SESSION_BUFFER_BYTES, input);
    let restored = read_sessions(&mut input, sessions.capacity())?;
    state_machine.restore(&mut input)?;
    *sessions = restored;
    Ok(())
}

/// Reads whatever of a snapshot's bytes `read_snapshot` left (a state machine may stop before
/// their end), so the checksum a snapshot reader checks at the end covers every byte. An
/// error here comes after the state was replaced: the caller must not go on with it.
pub(crate) fn read_to_end_of_snapshot(input: &mut dyn Read) -> io::Result<()> {
    io::copy(input, &mut io::sink()).map(|_| ())
}

/// Reads the saved session table into a table of `capacity` (the reader's own, which is the
/// same on every replica).
fn read_sessions(input: &mut dyn Read, capacity: usize) -> io::Result<SessionTable> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC && &magic != MAGIC_BEFORE_SPLIT {
        return Err(invalid("not an rcraft node snapshot (bad magic)"));
    }
    let mut sessions = SessionTable::with_capacity(capacity);
    let count = read_u64(input)?;
    for _ in 0..count {
        let client_id = read_u64(input)?;
        let sequence = read_u64(input)?;
        let last_index = LogIndex(read_u64(input)?);
        let len = read_u32(input)?;
        if len > RESPONSE_BYTES_MAX {
            return Err(invalid("saved session response length is implausible"));
        }
        let mut response = vec![0u8; len as usize];
        input.read_exact(&mut response)?;
        let record = SessionRecord {
            sequence,
            last_index,
            response,
        };
        sessions.insert(client_id, record);
    }
    Ok(sessions)
}

fn read_u64(input: &mut dyn Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(input: &mut dyn Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::Session;

    /// A state machine that is just a list of applied commands.
    #[derive(Default)]
    struct Journal(Vec<u8>);

    impl StateMachine for Journal {
        fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
            self.0.extend_from_slice(command);
            Vec::new()
        }
        fn query(&self, _query: &[u8]) -> Vec<u8> {
            self.0.clone()
        }
        fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&self.0)
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            self.0.clear();
            input.read_to_end(&mut self.0).map(|_| ())
        }
    }

    /// Reads `bytes`, then fails as a snapshot reader does at the end of damaged data.
    struct FailsAtEnd<'a>(&'a [u8]);

    impl Read for FailsAtEnd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "checksum mismatch",
                ));
            }
            self.0.read(buf)
        }
    }

    /// Restores from the first byte only.
    struct FirstByte(u8);

    impl StateMachine for FirstByte {
        fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Vec<u8> {
            Vec::new()
        }
        fn query(&self, _query: &[u8]) -> Vec<u8> {
            vec![self.0]
        }
        fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&[self.0; 1000])
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            let mut first = [0u8; 1];
            input.read_exact(&mut first)?;
            self.0 = first[0];
            Ok(())
        }
    }

    #[test]
    fn the_end_of_the_data_is_checked_when_the_state_machine_stops_reading_early() {
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &SessionTable::default(), &FirstByte(7)).unwrap();
        let mut restored = FirstByte(0);
        let mut sessions = SessionTable::default();
        let mut input = &bytes[..];
        read_snapshot(&mut input, &mut sessions, &mut restored).unwrap();
        read_to_end_of_snapshot(&mut input).unwrap();
        assert_eq!(restored.0, 7);
        // The restore itself succeeds; reading on to the end finds the damage.
        let mut input = FailsAtEnd(&bytes);
        read_snapshot(&mut input, &mut sessions, &mut restored).unwrap();
        let e = read_to_end_of_snapshot(&mut input).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn sessions_and_user_state_round_trip() {
        let mut sessions = SessionTable::default();
        let s = Session {
            client_id: 9,
            sequence: 4,
        };
        sessions.record(s, LogIndex(12), b"resp".to_vec());
        let registered = sessions.register(LogIndex(13));
        let journal = Journal(b"abc".to_vec());
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &sessions, &journal).unwrap();

        use super::super::sessions::SessionCheck;
        let mut restored_sessions = SessionTable::with_capacity(5);
        let mut restored = Journal::default();
        read_snapshot(&mut &bytes[..], &mut restored_sessions, &mut restored).unwrap();
        assert_eq!(restored.0, b"abc");
        assert_eq!(
            restored_sessions.check(s),
            SessionCheck::Duplicate(b"resp".to_vec())
        );
        // A registered session without a write yet is kept; an unknown one is not invented.
        let first_write = Session {
            client_id: registered,
            sequence: 1,
        };
        assert_eq!(restored_sessions.check(first_write), SessionCheck::Apply);
        let unknown = Session {
            client_id: 10,
            sequence: 1,
        };
        assert_eq!(restored_sessions.check(unknown), SessionCheck::Expired);
        assert_eq!(restored_sessions.capacity(), 5, "the reader's capacity");
    }

    #[test]
    fn bad_magic_and_truncation_are_errors() {
        let mut sessions = SessionTable::default();
        let mut journal = Journal::default();
        assert!(read_snapshot(&mut &b"NOTASNAP\0"[..], &mut sessions, &mut journal).is_err());
        assert!(read_snapshot(&mut &b"RCSNAP01\x01"[..], &mut sessions, &mut journal).is_err());
        assert!(read_snapshot(&mut &b"RCSTATE1\x01"[..], &mut sessions, &mut journal).is_err());
    }

    #[test]
    fn a_snapshot_written_with_the_old_shared_magic_is_still_read() {
        let mut sessions = SessionTable::default();
        let mut journal = Journal::default();
        let mut old = b"RCSNAP01".to_vec();
        old.extend_from_slice(&0u64.to_le_bytes());
        read_snapshot(&mut &old[..], &mut sessions, &mut journal).unwrap();
        assert_ne!(
            MAGIC,
            &rcraft_storage::limits::SNAPSHOT_MAGIC,
            "the layers differ"
        );
    }

    /// A state machine whose restore always fails (after reading everything).
    struct Refuses;

    impl StateMachine for Refuses {
        fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Vec<u8> {
            Vec::new()
        }
        fn query(&self, _query: &[u8]) -> Vec<u8> {
            Vec::new()
        }
        fn snapshot(&self, _out: &mut dyn Write) -> io::Result<()> {
            Ok(())
        }
        fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
            input.read_to_end(&mut Vec::new())?;
            Err(invalid("refused"))
        }
    }

    #[test]
    fn a_failed_restore_keeps_the_session_table() {
        let old = Session {
            client_id: 1,
            sequence: 1,
        };
        let new = Session {
            client_id: 2,
            sequence: 5,
        };
        let mut sessions = SessionTable::default();
        sessions.record(old, LogIndex(3), b"old".to_vec());
        let mut other = SessionTable::default();
        other.record(new, LogIndex(9), b"new".to_vec());
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &other, &Journal::default()).unwrap();

        assert!(read_snapshot(&mut &bytes[..], &mut sessions, &mut Refuses).is_err());
        use super::super::sessions::SessionCheck;
        assert_eq!(
            sessions.check(old),
            SessionCheck::Duplicate(b"old".to_vec())
        );
        assert_eq!(sessions.check(new), SessionCheck::Expired);
    }

    /// Hands out at most `step` bytes per `read`.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn many_sessions_and_a_large_state_round_trip_through_the_buffers() {
        let mut sessions = SessionTable::default();
        for client_id in 1..=2000u64 {
            let session = Session {
                client_id,
                sequence: client_id * 3,
            };
            let response = vec![client_id as u8; (client_id % 50) as usize];
            sessions.record(session, LogIndex(client_id), response);
        }
        // Larger than the session buffer, so the state machine's reads bypass it.
        let state: Vec<u8> = (0..3 * SESSION_BUFFER_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut bytes = Vec::new();
        write_snapshot(&mut bytes, &sessions, &Journal(state.clone())).unwrap();
        for step in [1, 13, SESSION_BUFFER_BYTES + 1, usize::MAX] {
            let mut restored_sessions = SessionTable::default();
            let mut restored = Journal::default();
            let mut input = Trickle(&bytes, step);
            read_snapshot(&mut input, &mut restored_sessions, &mut restored).unwrap();
            assert_eq!(restored.0, state, "step {step}");
            let session = Session {
                client_id: 1999,
                sequence: 1999 * 3,
            };
            let response = vec![(1999 % 256) as u8; 1999 % 50];
            assert_eq!(
                restored_sessions.check(session),
                super::super::sessions::SessionCheck::Duplicate(response)
            );
        }
    }
}
