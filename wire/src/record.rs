//! An entry's one byte format: the WAL record (storage/FORMAT.md §1.2), which is also how
//! entries travel in an AppendRequest (wire/PROTOCOL.md §4).
//!
//! ```text
//! offset 0   len   u32   24 + payload length
//!        4   crc   u32   CRC-32C of bytes 0..4 followed by 8..len
//!        8   index u64
//!       16   term  u64
//!       24   payload: tag u8 = 0  Noop
//!                     tag u8 = 1  Command:    has_session u8 | [client_id u64 | sequence u64] | data ...
//!                     tag u8 = 2  Membership: 3 x (count u32 | ids u64 ...)  voters, voters_outgoing, learners
//! ```
//!
//! An [`Entry`] is encoded once, when it is made ([`Entry::new`]); its record bytes are
//! shared by every clone (the core's cache, the storage thread, each AppendRequest) and are
//! what the WAL stores and what followers receive. A follower checks each record's CRC
//! ([`decode_records`]) and appends the same bytes to its WAL. A command's bytes are the
//! record's last bytes, and an entry's command is a view of them ([`SharedBytes`]), never a
//! second copy. Pure functions, no I/O.
//! Invariant: `decode_payload(&payload_bytes(p)) == Ok(p)` for every payload, and
//! `Entry::from_record(e.record()) == Ok(e)` for every entry.

use crate::shared_bytes::SharedBytes;
use crate::types::{Entry, EntryPayload, LogIndex, Membership, NodeId, Session, Term};
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Length of a record's header (len, crc, index, term).
pub const RECORD_HEADER_BYTES: usize = 24;

/// Bytes a command's payload takes beyond the command itself, at most: the tag, the session
/// flag and the session (client id and sequence).
pub const COMMAND_RECORD_OVERHEAD_BYTES: usize = 1 + 1 + 16;

const TAG_NOOP: u8 = 0;
const TAG_COMMAND: u8 = 1;
const TAG_MEMBERSHIP: u8 = 2;

/// Why record bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub String);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}

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

/// Exact length of `payload`'s encoding.
fn payload_len(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 1,
        EntryPayload::Command { session, data } => command_len(session, data),
        EntryPayload::Membership(m) => {
            1 + 12 + 8 * (m.voters.len() + m.voters_outgoing.len() + m.learners.len())
        }
    }
}

/// Exact length of a command payload's encoding.
fn command_len(session: &Option<Session>, data: &[u8]) -> usize {
    2 + if session.is_some() { 16 } else { 0 } + data.len()
}

/// Encodes the record of (`index`, `term`, `payload`) into one new shared buffer (one
/// allocation, of the record's exact length).
pub(crate) fn encode_record(index: LogIndex, term: Term, payload: &EntryPayload) -> SharedBytes {
    encode_record_with(index, term, payload_len(payload), |out| {
        write_payload(payload, out)
    })
}

/// Encodes the record of a command (`session`, `data`) at (`index`, `term`), as
/// [`encode_record`] does, from borrowed command bytes.
pub(crate) fn encode_command_record(
    index: LogIndex,
    term: Term,
    session: &Option<Session>,
    data: &[u8],
) -> SharedBytes {
    encode_record_with(index, term, command_len(session, data), |out| {
        write_command(session, data, out)
    })
}

/// A record's header around a payload of `payload_len` bytes that `write` writes, in one new
/// buffer of the record's exact length.
fn encode_record_with(
    index: LogIndex,
    term: Term,
    payload_len: usize,
    write: impl FnOnce(&mut SliceOut<'_>),
) -> SharedBytes {
    let len = RECORD_HEADER_BYTES + payload_len;
    let record_len = u32::try_from(len).expect("an entry of more than 4 GiB");
    let mut buf: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let bytes = Arc::get_mut(&mut buf).expect("a new buffer has one owner");
    bytes[0..4].copy_from_slice(&record_len.to_le_bytes());
    bytes[8..16].copy_from_slice(&index.0.to_le_bytes());
    bytes[16..24].copy_from_slice(&term.0.to_le_bytes());
    let mut out = SliceOut {
        bytes: &mut bytes[RECORD_HEADER_BYTES..],
        at: 0,
    };
    write(&mut out);
    assert_eq!(out.at, payload_len, "a payload's length computed wrong");
    let crc = record_crc(bytes);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
    SharedBytes::from_shared(buf)
}

/// A view of the command bytes `data_len` long at the end of `record` (a command's bytes are
/// its record's last bytes).
pub(crate) fn command_view(record: &SharedBytes, data_len: usize) -> SharedBytes {
    record.slice(record.len() - data_len..record.len())
}

/// Where a payload's encoding goes: a growing `Vec` or a slice of the exact length.
trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct SliceOut<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl Out for SliceOut<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// The CRC-32C a record carries: of its bytes `0..4` followed by `8..`.
fn record_crc(record: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks the record at `offset` of `buf` (length in bounds, CRC) and decodes it; returns
/// the entry, whose record and command are views of `buf`, and the record's length.
fn decode_one(buf: &SharedBytes, offset: usize) -> Result<(Entry, usize), RecordError> {
    let bytes = &buf[offset..];
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordError(format!(
            "truncated record: {} bytes, a header takes {RECORD_HEADER_BYTES}",
            bytes.len()
        )));
    }
    let len = read_u32(bytes, 0) as usize;
    if len < RECORD_HEADER_BYTES || len > bytes.len() {
        return Err(RecordError(format!(
            "record length {len} out of range ({} bytes left)",
            bytes.len()
        )));
    }
    let record = &bytes[..len];
    let (index, term) = (read_u64(record, 8), read_u64(record, 16));
    if record_crc(record) != read_u32(record, 4) {
        return Err(RecordError(format!(
            "record of entry {index} (term {term}): checksum mismatch"
        )));
    }
    let payload_at = offset + RECORD_HEADER_BYTES;
    let payload = decode_payload_with(&record[RECORD_HEADER_BYTES..], |data| {
        buf.slice(payload_at + data.start..payload_at + data.end)
    })
    .map_err(|e| RecordError(format!("record of entry {index}: {e}")))?;
    let entry = Entry::with_record(
        Term(term),
        LogIndex(index),
        payload,
        buf.slice(offset..offset + len),
    );
    Ok((entry, len))
}

/// Decodes one whole record (and nothing after it) into an entry, checking its length and
/// CRC; the entry keeps a copy of the bytes as its record (and its command is a view of it).
pub fn entry_from_record(bytes: &[u8]) -> Result<Entry, RecordError> {
    let buf = SharedBytes::copy_from_slice(bytes);
    let (entry, len) = decode_one(&buf, 0)?;
    if len != bytes.len() {
        return Err(RecordError(format!(
            "{} bytes after the record of entry {}",
            bytes.len() - len,
            entry.index
        )));
    }
    Ok(entry)
}

/// Decodes records laid back to back (an AppendRequest's entries), checking each one's
/// length and CRC. The entries share one copy of `bytes`: their records and their commands
/// are views of it. Indexes and terms are the records' own; their order is checked with the
/// message (`Message::check_well_formed`).
pub fn decode_records(bytes: &[u8]) -> Result<Vec<Entry>, RecordError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let buf = SharedBytes::copy_from_slice(bytes);
    let mut entries = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (entry, len) = decode_one(&buf, at)?;
        entries.push(entry);
        at += len;
    }
    Ok(entries)
}

/// Appends the encoding of `payload` to `out`.
pub fn encode_payload(payload: &EntryPayload, out: &mut Vec<u8>) {
    write_payload(payload, out);
}

fn write_payload(payload: &EntryPayload, out: &mut impl Out) {
    match payload {
        EntryPayload::Noop => out.put(&[TAG_NOOP]),
        EntryPayload::Command { session, data } => write_command(session, data, out),
        EntryPayload::Membership(m) => {
            out.put(&[TAG_MEMBERSHIP]);
            for set in [&m.voters, &m.voters_outgoing, &m.learners] {
                let count = u32::try_from(set.len()).expect("membership of more than 2^32 nodes");
                out.put(&count.to_le_bytes());
                for id in set {
                    out.put(&id.0.to_le_bytes());
                }
            }
        }
    }
}

/// Writes a command payload: tag, session flag, session, then the command bytes (last, so a
/// command is a view of the end of its record).
fn write_command(session: &Option<Session>, data: &[u8], out: &mut impl Out) {
    out.put(&[TAG_COMMAND]);
    match session {
        Some(s) => {
            out.put(&[1]);
            out.put(&s.client_id.to_le_bytes());
            out.put(&s.sequence.to_le_bytes());
        }
        None => out.put(&[0]),
    }
    out.put(data);
}

/// The encoding of `payload` as a new buffer.
pub fn payload_bytes(payload: &EntryPayload) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_len(payload));
    encode_payload(payload, &mut out);
    out
}

/// Decodes a payload written by [`encode_payload`]; an error names what is wrong. A
/// command's bytes are copied into a buffer of their own.
pub fn decode_payload(bytes: &[u8]) -> Result<EntryPayload, PayloadError> {
    decode_payload_with(bytes, |data| SharedBytes::copy_from_slice(&bytes[data]))
}

/// Decodes a payload as [`decode_payload`] does; a command's bytes are `command(range)`, the
/// range of `bytes` they occupy (a caller holding `bytes` shared returns a view).
fn decode_payload_with(
    bytes: &[u8],
    command: impl FnOnce(Range<usize>) -> SharedBytes,
) -> Result<EntryPayload, PayloadError> {
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
            let start = reader.at;
            reader.skip_rest();
            EntryPayload::Command {
                session,
                data: command(start..bytes.len()),
            }
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

    fn skip_rest(&mut self) {
        self.at = self.bytes.len();
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

/// rkyv "with" wrapper that archives an AppendRequest's `Vec<Entry>` as the entries' record
/// bytes back to back (an archived `Vec<u8>`), copied from each entry's shared record, and
/// deserializes them with [`decode_records`] (a bad record fails the whole message).
pub struct AsRecords;

impl rkyv::with::ArchiveWith<Vec<Entry>> for AsRecords {
    type Archived = rkyv::vec::ArchivedVec<u8>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve_with(
        field: &Vec<Entry>,
        resolver: Self::Resolver,
        out: rkyv::Place<Self::Archived>,
    ) {
        let len = field.iter().map(|e| e.record().len()).sum();
        rkyv::vec::ArchivedVec::resolve_from_len(len, resolver, out);
    }
}

impl<S> rkyv::with::SerializeWith<Vec<Entry>, S> for AsRecords
where
    S: rkyv::rancor::Fallible + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(field: &Vec<Entry>, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let pos = serializer.pos();
        for entry in field {
            serializer.write(entry.record())?;
        }
        Ok(rkyv::vec::VecResolver::from_pos(pos))
    }
}

impl<D> rkyv::with::DeserializeWith<rkyv::vec::ArchivedVec<u8>, Vec<Entry>, D> for AsRecords
where
    D: rkyv::rancor::Fallible + ?Sized,
    D::Error: rkyv::rancor::Source,
{
    fn deserialize_with(
        field: &rkyv::vec::ArchivedVec<u8>,
        _: &mut D,
    ) -> Result<Vec<Entry>, D::Error> {
        decode_records(field.as_slice()).map_err(<D::Error as rkyv::rancor::Source>::new)
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
                    data: data.into(),
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

    fn command(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry::new(
            Term(term),
            LogIndex(index),
            EntryPayload::Command {
                session: None,
                data: data.into(),
            },
        )
    }

    proptest! {
        #[test]
        fn payload_round_trips(payload in payloads()) {
            prop_assert_eq!(decode_payload(&payload_bytes(&payload)), Ok(payload));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_payload(&bytes);
            let _ = decode_records(&bytes);
            let _ = entry_from_record(&bytes);
        }

        #[test]
        fn an_entry_round_trips_through_its_record(
            payload in payloads(), index in any::<u64>(), term in any::<u64>()
        ) {
            let entry = Entry::new(Term(term), LogIndex(index), payload);
            prop_assert_eq!(entry.record().len(), RECORD_HEADER_BYTES + payload_len(&entry.payload));
            let decoded = entry_from_record(entry.record()).unwrap();
            prop_assert_eq!(decoded.record(), entry.record());
            prop_assert_eq!(decoded, entry);
        }

        #[test]
        fn any_flipped_bit_is_refused(data in proptest::collection::vec(any::<u8>(), 0..40), bit in any::<usize>()) {
            let entry = command(7, 3, &data);
            let mut bytes = entry.record().to_vec();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(entry_from_record(&bytes).is_err());
            prop_assert!(decode_records(&bytes).is_err());
        }
    }

    #[test]
    fn the_record_is_the_wal_layout() {
        let entry = command(5, 2, b"abc");
        let r = entry.record();
        assert_eq!(read_u32(r, 0) as usize, r.len());
        assert_eq!(r.len(), RECORD_HEADER_BYTES + 2 + 3);
        assert_eq!(read_u64(r, 8), 5);
        assert_eq!(read_u64(r, 16), 2);
        assert_eq!(read_u32(r, 4), record_crc(r));
        assert_eq!(
            &r[RECORD_HEADER_BYTES..],
            &[TAG_COMMAND, 0, b'a', b'b', b'c']
        );
    }

    /// The command of `entry`, as a view.
    fn command_of(entry: &Entry) -> &SharedBytes {
        match &entry.payload {
            EntryPayload::Command { data, .. } => data,
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn a_command_is_a_view_of_its_record() {
        let session = Some(Session {
            client_id: 4,
            sequence: 9,
        });
        let made = Entry::new(
            Term(2),
            LogIndex(8),
            EntryPayload::Command {
                session,
                data: b"payload".into(),
            },
        );
        let borrowed = Entry::command(Term(2), LogIndex(8), session, b"payload");
        assert_eq!(made, borrowed);
        assert_eq!(made.record(), borrowed.record());
        for entry in [&made, &borrowed] {
            let data = command_of(entry);
            assert_eq!(data, b"payload");
            assert!(std::ptr::eq(
                data.as_ptr(),
                entry.record()[entry.record().len() - 7..].as_ptr()
            ));
        }
        let clone = made.clone();
        assert!(command_of(&clone).shares_buffer_with(command_of(&made)));
    }

    #[test]
    fn a_batch_of_records_decodes_to_its_entries_sharing_one_buffer() {
        let entries: Vec<Entry> = (1..=3).map(|i| command(i, 1, &[i as u8; 10])).collect();
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.record().to_vec()).collect();
        let decoded = decode_records(&bytes).unwrap();
        assert_eq!(decoded, entries);
        assert!(std::ptr::eq(
            decoded[0].record().as_ptr(),
            decoded[2]
                .record()
                .as_ptr()
                .wrapping_sub(2 * decoded[0].record().len())
        ));
        // The commands are views of that buffer too: no copy of a payload on arrival.
        assert!(command_of(&decoded[2]).shares_buffer_with(command_of(&decoded[0])));
        assert!(std::ptr::eq(
            command_of(&decoded[1]).as_ptr(),
            decoded[1].record()[RECORD_HEADER_BYTES + 2..].as_ptr()
        ));
        assert_eq!(decode_records(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn damaged_batches_are_refused_with_the_reason() {
        let entries: Vec<Entry> = (1..=2).map(|i| command(i, 1, b"value")).collect();
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.record().to_vec()).collect();
        let truncated = decode_records(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(truncated.0.contains("out of range"), "{truncated}");
        let short = decode_records(&bytes[..bytes.len() - 20]).unwrap_err();
        assert!(short.0.contains("truncated record"), "{short}");
        let mut bad = bytes.clone();
        bad[bytes.len() - 1] ^= 0xff;
        let crc = decode_records(&bad).unwrap_err();
        assert!(
            crc.0.contains("entry 2") && crc.0.contains("checksum"),
            "{crc}"
        );
        let mut zero_len = bytes.clone();
        zero_len[0..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode_records(&zero_len).is_err());
        // A record with a good checksum whose payload does not decode.
        let mut tagless = command(1, 1, b"").record().to_vec();
        tagless[RECORD_HEADER_BYTES] = 9;
        let crc = record_crc(&tagless);
        tagless[4..8].copy_from_slice(&crc.to_le_bytes());
        let tag = decode_records(&tagless).unwrap_err();
        assert!(tag.0.contains("unknown payload tag 9"), "{tag}");
        let trailing = entry_from_record(&bytes).unwrap_err();
        assert!(trailing.0.contains("bytes after the record"), "{trailing}");
    }

    #[test]
    fn a_command_record_is_the_command_and_at_most_the_overhead() {
        let command = |session| EntryPayload::Command {
            session,
            data: vec![3; 100].into(),
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
