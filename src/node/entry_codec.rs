//! Byte encoding of an entry's payload inside a WAL record.
//!
//! The WAL record header already holds the index and term, so only the [`EntryPayload`] is
//! encoded here, explicitly and little-endian:
//!
//! ```text
//! tag u8 = 0  Noop
//! tag u8 = 1  Command:    has_session u8 | [client_id u64 | sequence u64] | data ...
//! tag u8 = 2  Membership: 3 x (count u32 | ids u64 ...)  voters, voters_outgoing, learners
//! ```
//!
//! Pure functions, used by the storage thread (encode on append, decode on recovery).
//! Invariant: `decode_payload(&encode_payload(p)) == Ok(p)` for every payload.

use rcraft_wire::{EntryPayload, Membership, NodeId, Session};
use std::collections::BTreeSet;
use std::fmt;

/// Bytes a command's WAL payload takes beyond the command itself, at most: the tag, the
/// session flag and the session (client id and sequence).
pub(crate) const COMMAND_RECORD_OVERHEAD_BYTES: usize = 1 + 1 + 16;

const TAG_NOOP: u8 = 0;
const TAG_COMMAND: u8 = 1;
const TAG_MEMBERSHIP: u8 = 2;

/// Appends the encoding of `payload` to `out`.
pub(crate) fn encode_payload(payload: &EntryPayload, out: &mut Vec<u8>) {
    match payload {
        EntryPayload::Noop => out.push(TAG_NOOP),
        EntryPayload::Command { session, data } => {
            out.push(TAG_COMMAND);
            match session {
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.client_id.to_le_bytes());
                    out.extend_from_slice(&s.sequence.to_le_bytes());
                }
                None => out.push(0),
            }
            out.extend_from_slice(data);
        }
        EntryPayload::Membership(m) => {
            out.push(TAG_MEMBERSHIP);
            for set in [&m.voters, &m.voters_outgoing, &m.learners] {
                let count = u32::try_from(set.len()).expect("membership of more than 2^32 nodes");
                out.extend_from_slice(&count.to_le_bytes());
                for id in set {
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
            }
        }
    }
}

/// The encoding of `payload` as a new buffer.
pub(crate) fn payload_bytes(payload: &EntryPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_len_hint(payload));
    encode_payload(payload, &mut out);
    out
}

fn payload_len_hint(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 1,
        EntryPayload::Command { data, .. } => 18 + data.len(),
        EntryPayload::Membership(m) => 13 + 8 * m.members().len(),
    }
}

/// Why a payload's bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// The first byte is no known payload kind.
    UnknownTag(u8),
    /// A command's session flag is neither 0 nor 1.
    BadSessionFlag(u8),
    /// The bytes end before a field: `wanted` more bytes at offset `at`.
    Truncated {
        /// Bytes the field needs.
        wanted: usize,
        /// Where it starts.
        at: usize,
    },
    /// A membership list claims more ids than the remaining bytes hold.
    MembershipCount(usize),
    /// Bytes left over after a complete payload.
    Trailing(usize),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::UnknownTag(tag) => write!(f, "unknown payload tag {tag}"),
            PayloadError::BadSessionFlag(flag) => write!(f, "bad session flag {flag}"),
            PayloadError::Truncated { wanted, at } => {
                write!(f, "truncated: wanted {wanted} bytes at offset {at}")
            }
            PayloadError::MembershipCount(count) => {
                write!(f, "membership count {count} exceeds the record")
            }
            PayloadError::Trailing(bytes) => write!(f, "{bytes} trailing bytes after the payload"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Decodes a payload written by [`encode_payload`]; an error names what is wrong.
pub(crate) fn decode_payload(bytes: &[u8]) -> Result<EntryPayload, PayloadError> {
    let mut reader = ByteReader { bytes, at: 0 };
    let payload = match reader.u8()? {
        TAG_NOOP => EntryPayload::Noop,
        TAG_COMMAND => {
            let session = match reader.u8()? {
                0 => None,
                1 => Some(Session {
                    client_id: reader.u64()?,
                    sequence: reader.u64()?,
                }),
                other => return Err(PayloadError::BadSessionFlag(other)),
            };
            let data = reader.rest().to_vec();
            EntryPayload::Command { session, data }
        }
        TAG_MEMBERSHIP => EntryPayload::Membership(Membership {
            voters: reader.id_set()?,
            voters_outgoing: reader.id_set()?,
            learners: reader.id_set()?,
        }),
        other => return Err(PayloadError::UnknownTag(other)),
    };
    if reader.at != bytes.len() {
        return Err(PayloadError::Trailing(bytes.len() - reader.at));
    }
    Ok(payload)
}

/// A bounds-checked little-endian reader over a byte slice.
struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl ByteReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PayloadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(PayloadError::Truncated {
            wanted: n,
            at: self.at,
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PayloadError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn rest(&mut self) -> &[u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    fn id_set(&mut self) -> Result<BTreeSet<NodeId>, PayloadError> {
        let count = self.u32()? as usize;
        // Each id is 8 bytes; refuse a count the remaining bytes cannot hold before allocating.
        if count > (self.bytes.len() - self.at) / 8 {
            return Err(PayloadError::MembershipCount(count));
        }
        (0..count).map(|_| self.u64().map(NodeId)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payloads() -> impl Strategy<Value = EntryPayload> {
        let ids = || proptest::collection::btree_set(any::<u64>().prop_map(NodeId), 0..6);
        prop_oneof![
            Just(EntryPayload::Noop),
            (
                proptest::option::of((any::<u64>(), any::<u64>())),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(s, data)| EntryPayload::Command {
                    session: s.map(|(client_id, sequence)| Session {
                        client_id,
                        sequence
                    }),
                    data,
                }),
            (ids(), ids(), ids()).prop_map(|(voters, voters_outgoing, learners)| {
                EntryPayload::Membership(Membership {
                    voters,
                    voters_outgoing,
                    learners,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn payload_round_trips(payload in payloads()) {
            prop_assert_eq!(decode_payload(&payload_bytes(&payload)), Ok(payload));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_payload(&bytes);
        }
    }

    #[test]
    fn a_command_record_is_the_command_and_at_most_the_overhead() {
        let command = |session| EntryPayload::Command {
            session,
            data: vec![3; 100],
        };
        let with_session = Some(Session {
            client_id: u64::MAX,
            sequence: u64::MAX,
        });
        let longest = payload_bytes(&command(with_session)).len();
        assert_eq!(longest, 100 + COMMAND_RECORD_OVERHEAD_BYTES);
        assert!(payload_bytes(&command(None)).len() < longest);
    }

    #[test]
    fn truncated_membership_is_an_error() {
        let payload = EntryPayload::Membership(Membership::with_voters([NodeId(1), NodeId(2)]));
        let bytes = payload_bytes(&payload);
        assert_eq!(
            decode_payload(&bytes[..bytes.len() - 1]),
            Err(PayloadError::Truncated { wanted: 4, at: 25 })
        );
        let too_many = decode_payload(&[TAG_MEMBERSHIP, 255, 255, 255, 255]).unwrap_err();
        assert_eq!(too_many, PayloadError::MembershipCount(u32::MAX as usize));
        assert_eq!(
            too_many.to_string(),
            format!("membership count {} exceeds the record", u32::MAX)
        );
    }

    #[test]
    fn each_malformation_is_named() {
        assert_eq!(decode_payload(&[9]), Err(PayloadError::UnknownTag(9)));
        assert_eq!(
            decode_payload(&[TAG_COMMAND, 2]),
            Err(PayloadError::BadSessionFlag(2))
        );
        assert_eq!(
            decode_payload(&[TAG_NOOP, 0, 0]).unwrap_err().to_string(),
            "2 trailing bytes after the payload"
        );
        assert_eq!(
            decode_payload(&[]).unwrap_err().to_string(),
            "truncated: wanted 1 bytes at offset 0"
        );
    }
}
