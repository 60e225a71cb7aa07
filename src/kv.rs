//! The built-in key-value state machine served by `rcraft serve`, and its byte formats.
//!
//! The node's apply thread owns the [`KvStore`]; clients build [`KvCommand`]s and read
//! [`KvResponse`]s. Keys and values are arbitrary non-empty (key) byte strings kept in a
//! `BTreeMap`, so iteration, and therefore the snapshot, is in key order and deterministic.
//! Keys of up to 30 bytes are held inside the map's nodes (`key.rs`), and applying a command
//! reads its key and value from the command's bytes: a put of a key that exists copies the
//! value into the old value's buffer when it fits, allocating nothing.
//!
//! # Command and response bytes
//!
//! All integers are little-endian. A *bytes* field is `len: u32` then `len` bytes; an
//! *optional bytes* field is one byte `0` (absent) or `1` followed by a bytes field.
//!
//! | command | layout |
//! |---|---|
//! | put | `0x01` key value |
//! | get | `0x02` key |
//! | del | `0x03` key |
//! | cas | `0x04` key expected(optional; absent = "key must not exist") new |
//! | scan (query only) | `0x05` prefix(bytes, may be empty) limit(`u32`, 1 to [`SCAN_LIMIT_MAX`]) |
//!
//! | response | layout |
//! |---|---|
//! | done (put, del) | `0x00` |
//! | value (get) | `0x01` optional value |
//! | cas | `0x02` swapped(`0`/`1`) optional current (only meaningful when not swapped) |
//! | error | `0x03` UTF-8 message as bytes |
//! | entries (scan) | `0x04` more(`0`/`1`) count(`u32`) then `count` pairs of key, value |
//!
//! A scan answers the keys starting with the prefix in key order, at most `limit` of them
//! and at most [`SCAN_BYTES_MAX`] bytes of keys and values (always at least one entry);
//! `more` says whether keys were left out.
//!
//! Decoding never trusts a length: it must fit in what is left of the input and under
//! [`KEY_BYTES_MAX`] / [`VALUE_BYTES_MAX`], and trailing bytes are an error. A command that
//! does not decode is answered with [`KvResponse::Error`], never a panic.
//!
//! # Snapshot bytes
//!
//! `magic "RCKVSNP1"`, `count: u64`, then `count` pairs of (key bytes, value bytes) in
//! strictly increasing key order, then `crc32c: u32` of everything before it. A snapshot that
//! is short, has a bad checksum or breaks the key order is refused with `InvalidData` and the
//! store keeps its old contents.
//!
//! Both directions stream: writing gathers entries into blocks of `SNAPSHOT_BLOCK_BYTES`
//! and checksums each block once; restoring reads through a bounded buffer, checksums as it
//! goes, checks every length and the key order as entries arrive, and builds the new map in
//! bulk from the sorted entries. Memory is the new map, the list of its entries while it is
//! built (the keys and values themselves are moved, not copied: 56 bytes per entry, up to
//! 84 with the scratch space of the sort `BTreeMap::from_iter` runs over it) and that buffer,
//! never the whole snapshot. A large replaced map is freed on a short-lived thread
//! of its own.

mod key;

use crate::state_machine::StateMachine;
use key::Key;
use rcraft_wire::LogIndex;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Bound;

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
/// Longest value accepted, in bytes.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest encoded command: a cas with the longest key, expected value and new value.
const ENCODED_COMMAND_BYTES_MAX: usize =
    1 + (4 + KEY_BYTES_MAX) + (1 + 4 + VALUE_BYTES_MAX) + (4 + VALUE_BYTES_MAX);
// Every command within the key and value limits is a command a node accepts.
const _: () = assert!(ENCODED_COMMAND_BYTES_MAX <= crate::node::limits::COMMAND_BYTES_MAX);
/// Most entries one scan may ask for.
pub const SCAN_LIMIT_MAX: u32 = 10_000;
/// Most key and value bytes one scan answers (at least one entry is always answered), so
/// the answer fits a client frame with room to spare.
pub const SCAN_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(SCAN_BYTES_MAX + KEY_BYTES_MAX + VALUE_BYTES_MAX < (60 << 20));

/// First bytes of every KV snapshot; the digit is the format version.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"RCKVSNP1";

/// Bytes gathered before a snapshot block is checksummed and written (a block exceeds it
/// by at most one entry).
const SNAPSHOT_BLOCK_BYTES: usize = 256 * 1024;
/// Bytes read from the input at a time while restoring.
const RESTORE_BUFFER_BYTES: usize = 1 << 20;
/// Most entries reserved up front from a snapshot's (untrusted) entry count.
const RESTORE_RESERVE_ENTRIES_MAX: usize = 1 << 20;
/// A replaced map with at least this many entries is freed on a short-lived thread of its
/// own, so the restoring thread does not wait for millions of deallocations.
const FREE_ELSEWHERE_ENTRIES_MIN: usize = 100_000;

const TAG_PUT: u8 = 0x01;
const TAG_GET: u8 = 0x02;
const TAG_DEL: u8 = 0x03;
const TAG_CAS: u8 = 0x04;
const TAG_SCAN: u8 = 0x05;

const TAG_DONE: u8 = 0x00;
const TAG_VALUE: u8 = 0x01;
const TAG_CAS_RESULT: u8 = 0x02;
const TAG_ERROR: u8 = 0x03;
const TAG_ENTRIES: u8 = 0x04;

/// A request to the key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Set `key` to `value`.
    Put {
        /// The key (non-empty).
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Read `key` (as a query: linearizable, not logged).
    Get {
        /// The key (non-empty).
        key: Vec<u8>,
    },
    /// Remove `key`; removing a missing key succeeds.
    Delete {
        /// The key (non-empty).
        key: Vec<u8>,
    },
    /// Set `key` to `new` only if its current value is `expected` (`None`: only if absent).
    Cas {
        /// The key (non-empty).
        key: Vec<u8>,
        /// The value the key must hold, or `None` for "must not exist".
        expected: Option<Vec<u8>>,
        /// The value to store when the comparison holds.
        new: Vec<u8>,
    },
    /// List the keys starting with `prefix`, in key order (as a query only).
    Scan {
        /// The prefix; empty lists every key.
        prefix: Vec<u8>,
        /// Most entries to answer, 1 to [`SCAN_LIMIT_MAX`].
        limit: u32,
    },
}

/// The store's answer to a [`KvCommand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A put or delete was applied.
    Done,
    /// The value of the key read, `None` when absent.
    Value(Option<Vec<u8>>),
    /// Outcome of a compare-and-swap.
    Cas {
        /// True when the new value was stored.
        swapped: bool,
        /// When not swapped, the value the key holds (`None` when absent).
        current: Option<Vec<u8>>,
    },
    /// The command was refused (undecodable, or not allowed as a query). Nothing changed.
    Error(String),
    /// The answer to a scan: entries in key order, and whether more keys match.
    Entries {
        /// `(key, value)` pairs in key order.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// True when the limit (or [`SCAN_BYTES_MAX`]) left matching keys out.
        more: bool,
    },
}

/// Why bytes did not decode as a command or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Reads the fields of a command, response or snapshot, refusing lengths that do not fit.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError(format!(
                "truncated {what}: need {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError(format!("{what} of {len} bytes exceeds {max}")));
        }
        self.take(len, what)
    }

    fn key(&mut self) -> Result<&'a [u8], DecodeError> {
        let key = self.bytes("key", KEY_BYTES_MAX)?;
        if key.is_empty() {
            return Err(DecodeError("empty key".to_string()));
        }
        Ok(key)
    }

    fn optional(&mut self, what: &str) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(what, VALUE_BYTES_MAX)?)),
            flag => Err(DecodeError(format!("bad presence flag {flag} for {what}"))),
        }
    }

    fn finish(&self, what: &str) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            let extra = self.bytes.len();
            Err(DecodeError(format!("{extra} trailing bytes after {what}")))
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("field longer than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

impl KvCommand {
    /// The command's bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KvCommand::Put { key, value } => {
                out.push(TAG_PUT);
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            KvCommand::Get { key } => {
                out.push(TAG_GET);
                put_bytes(&mut out, key);
            }
            KvCommand::Delete { key } => {
                out.push(TAG_DEL);
                put_bytes(&mut out, key);
            }
            KvCommand::Cas { key, expected, new } => {
                out.push(TAG_CAS);
                put_bytes(&mut out, key);
                put_optional(&mut out, expected.as_deref());
                put_bytes(&mut out, new);
            }
            KvCommand::Scan { prefix, limit } => {
                out.push(TAG_SCAN);
                put_bytes(&mut out, prefix);
                out.extend_from_slice(&limit.to_le_bytes());
            }
        }
        out
    }

    /// Parse a command; any malformation is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, DecodeError> {
        CommandRef::decode(bytes).map(|command| command.to_owned())
    }

    /// The command with its fields borrowed.
    fn as_ref(&self) -> CommandRef<'_> {
        match self {
            KvCommand::Put { key, value } => CommandRef::Put { key, value },
            KvCommand::Get { key } => CommandRef::Get { key },
            KvCommand::Delete { key } => CommandRef::Delete { key },
            KvCommand::Cas { key, expected, new } => CommandRef::Cas {
                key,
                expected: expected.as_deref(),
                new,
            },
            KvCommand::Scan { prefix, limit } => CommandRef::Scan {
                prefix,
                limit: *limit,
            },
        }
    }
}

/// A [`KvCommand`] whose fields point into the command's bytes: what the store applies, so
/// that applying a command copies only what it keeps.
enum CommandRef<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
    },
    Get {
        key: &'a [u8],
    },
    Delete {
        key: &'a [u8],
    },
    Cas {
        key: &'a [u8],
        expected: Option<&'a [u8]>,
        new: &'a [u8],
    },
    Scan {
        prefix: &'a [u8],
        limit: u32,
    },
}

impl<'a> CommandRef<'a> {
    /// Parse a command (see the module docs); any malformation is an error, never a panic.
    fn decode(bytes: &'a [u8]) -> Result<CommandRef<'a>, DecodeError> {
        let mut c = Cursor { bytes };
        let command = match c.u8("command tag")? {
            TAG_PUT => CommandRef::Put {
                key: c.key()?,
                value: c.bytes("value", VALUE_BYTES_MAX)?,
            },
            TAG_GET => CommandRef::Get { key: c.key()? },
            TAG_DEL => CommandRef::Delete { key: c.key()? },
            TAG_CAS => CommandRef::Cas {
                key: c.key()?,
                expected: c.optional("expected value")?,
                new: c.bytes("new value", VALUE_BYTES_MAX)?,
            },
            TAG_SCAN => CommandRef::Scan {
                prefix: c.bytes("prefix", KEY_BYTES_MAX)?,
                limit: match c.u32("limit")? {
                    limit @ 1..=SCAN_LIMIT_MAX => limit,
                    limit => {
                        let why = format!("scan limit {limit} outside 1 to {SCAN_LIMIT_MAX}");
                        return Err(DecodeError(why));
                    }
                },
            },
            tag => return Err(DecodeError(format!("unknown command tag {tag:#04x}"))),
        };
        c.finish("command")?;
        Ok(command)
    }

    fn to_owned(&self) -> KvCommand {
        match *self {
            CommandRef::Put { key, value } => KvCommand::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            CommandRef::Get { key } => KvCommand::Get { key: key.to_vec() },
            CommandRef::Delete { key } => KvCommand::Delete { key: key.to_vec() },
            CommandRef::Cas { key, expected, new } => KvCommand::Cas {
                key: key.to_vec(),
                expected: expected.map(<[u8]>::to_vec),
                new: new.to_vec(),
            },
            CommandRef::Scan { prefix, limit } => KvCommand::Scan {
                prefix: prefix.to_vec(),
                limit,
            },
        }
    }
}

impl KvResponse {
    /// The response's bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            KvResponse::Done => out.push(TAG_DONE),
            KvResponse::Value(value) => {
                out.push(TAG_VALUE);
                put_optional(&mut out, value.as_deref());
            }
            KvResponse::Cas { swapped, current } => {
                out.push(TAG_CAS_RESULT);
                out.push(u8::from(*swapped));
                put_optional(&mut out, current.as_deref());
            }
            KvResponse::Error(message) => {
                out.push(TAG_ERROR);
                out.extend_from_slice(message.as_bytes());
            }
            KvResponse::Entries { entries, more } => {
                out.push(TAG_ENTRIES);
                out.push(u8::from(*more));
                let count = u32::try_from(entries.len()).expect("scan answers are bounded");
                out.extend_from_slice(&count.to_le_bytes());
                for (key, value) in entries {
                    put_bytes(&mut out, key);
                    put_bytes(&mut out, value);
                }
            }
        }
        out
    }

    /// Parse a response; any malformation is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<KvResponse, DecodeError> {
        let mut c = Cursor { bytes };
        let response = match c.u8("response tag")? {
            TAG_DONE => KvResponse::Done,
            TAG_VALUE => KvResponse::Value(c.optional("value")?.map(<[u8]>::to_vec)),
            TAG_CAS_RESULT => {
                let swapped = match c.u8("swapped flag")? {
                    0 => false,
                    1 => true,
                    flag => return Err(DecodeError(format!("bad swapped flag {flag}"))),
                };
                let current = c.optional("current value")?.map(<[u8]>::to_vec);
                KvResponse::Cas { swapped, current }
            }
            TAG_ERROR => {
                let message = String::from_utf8_lossy(c.bytes).into_owned();
                c.bytes = &[];
                KvResponse::Error(message)
            }
            TAG_ENTRIES => {
                let more = c.u8("more flag")? == 1;
                let count = c.u32("entry count")?;
                // The count is not trusted for an allocation: entries are read as they come.
                let mut entries = Vec::new();
                for _ in 0..count {
                    let key = c.key()?.to_vec();
                    entries.push((key, c.bytes("value", VALUE_BYTES_MAX)?.to_vec()));
                }
                KvResponse::Entries { entries, more }
            }
            tag => return Err(DecodeError(format!("unknown response tag {tag:#04x}"))),
        };
        c.finish("response")?;
        Ok(response)
    }
}

/// The key-value store: a `BTreeMap` from key to value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    entries: BTreeMap<Key, Vec<u8>>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Carry out one command.
    pub fn execute(&mut self, command: KvCommand) -> KvResponse {
        self.execute_ref(command.as_ref())
    }

    fn execute_ref(&mut self, command: CommandRef<'_>) -> KvResponse {
        match command {
            CommandRef::Put { key, value } => {
                self.store(key, value);
                KvResponse::Done
            }
            CommandRef::Get { key } => KvResponse::Value(self.entries.get(key).cloned()),
            CommandRef::Scan { prefix, limit } => self.scan(prefix, limit),
            CommandRef::Delete { key } => {
                self.entries.remove(key);
                KvResponse::Done
            }
            CommandRef::Cas { key, expected, new } => {
                let current = self.entries.get(key).map(Vec::as_slice);
                if current == expected {
                    self.store(key, new);
                    KvResponse::Cas {
                        swapped: true,
                        current: None,
                    }
                } else {
                    let current = current.map(<[u8]>::to_vec);
                    KvResponse::Cas {
                        swapped: false,
                        current,
                    }
                }
            }
        }
    }

    /// Sets `key` to `value`. A key that exists keeps its value's buffer when the new value
    /// fits in it without wasting more than half of it, so overwriting allocates nothing.
    fn store(&mut self, key: &[u8], value: &[u8]) {
        match self.entries.get_mut(key) {
            Some(old) if old.capacity() >= value.len() && old.capacity() / 2 <= value.len() => {
                old.clear();
                old.extend_from_slice(value);
            }
            Some(old) => *old = value.to_vec(),
            None => {
                self.entries.insert(Key::new(key), value.to_vec());
            }
        }
    }

    /// The keys starting with `prefix`, at most `limit` entries and about [`SCAN_BYTES_MAX`]
    /// bytes of them (at least one entry when any matches).
    pub fn scan(&self, prefix: &[u8], limit: u32) -> KvResponse {
        let mut matching = self
            .entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.as_slice().starts_with(prefix));
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for (key, value) in matching.by_ref() {
            let size = key.as_slice().len() + value.len();
            if entries.len() == limit as usize
                || (!entries.is_empty() && bytes + size > SCAN_BYTES_MAX)
            {
                more = true;
                break;
            }
            bytes += size;
            entries.push((key.as_slice().to_vec(), value.clone()));
        }
        KvResponse::Entries { entries, more }
    }

    /// Reads a whole snapshot from `input` (see the module docs) into a new map. The
    /// entries arrive in strictly increasing key order, so they are collected and the map is
    /// built from them in bulk, which is much faster than inserting one by one.
    fn read_snapshot(input: &mut dyn Read) -> Result<BTreeMap<Key, Vec<u8>>, DecodeError> {
        let mut input = SnapshotInput::new(input);
        if input.take(8, "snapshot magic")? != SNAPSHOT_MAGIC {
            return Err(DecodeError("not a KV snapshot (bad magic)".to_string()));
        }
        let count = input.u64("entry count")?;
        // The count is not trusted for the allocation: a damaged one must not reserve memory
        // the snapshot does not back; past this many entries the vector grows as they arrive.
        let reserve = usize::try_from(count).map_or(RESTORE_RESERVE_ENTRIES_MAX, |count| {
            count.min(RESTORE_RESERVE_ENTRIES_MAX)
        });
        let mut entries: Vec<(Key, Vec<u8>)> = Vec::with_capacity(reserve);
        for _ in 0..count {
            let key = input.key()?;
            let value = input.bytes("value", VALUE_BYTES_MAX)?;
            if entries.last().is_some_and(|(previous, _)| *previous >= key) {
                return Err(DecodeError("snapshot keys out of order".to_string()));
            }
            entries.push((key, value));
        }
        input.finish()?;
        Ok(BTreeMap::from_iter(entries))
    }

    /// Writes the snapshot (see the module docs) to `out` in large blocks, computing the
    /// checksum once per block.
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut block = Vec::with_capacity(SNAPSHOT_BLOCK_BYTES);
        let mut crc = 0u32;
        let mut emit = |block: &mut Vec<u8>| -> io::Result<()> {
            crc = crc32c::crc32c_append(crc, block);
            out.write_all(block)?;
            block.clear();
            Ok(())
        };
        block.extend_from_slice(SNAPSHOT_MAGIC);
        block.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (key, value) in &self.entries {
            put_field(&mut block, key.as_slice())?;
            put_field(&mut block, value)?;
            if block.len() >= SNAPSHOT_BLOCK_BYTES {
                emit(&mut block)?;
            }
        }
        emit(&mut block)?;
        out.write_all(&crc.to_le_bytes())
    }
}

/// Appends a length-prefixed field to a snapshot block.
fn put_field(block: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "field over 4 GiB"))?;
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(bytes);
    Ok(())
}

/// Frees a replaced map: on a thread of its own when it is large (here when no thread can
/// be started: the refused closure, map included, is dropped on return).
fn free_replaced(entries: BTreeMap<Key, Vec<u8>>) {
    if entries.len() < FREE_ELSEWHERE_ENTRIES_MIN {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("kv-free".to_string())
        .spawn(move || drop(entries));
    if let Err(e) = spawned {
        log::debug!("freeing the replaced KV state on the restoring thread: {e}");
    }
}

/// A snapshot being read from a stream through a bounded buffer, with the CRC-32C of every
/// byte consumed so far (the stored checksum itself excluded).
struct SnapshotInput<'a> {
    input: &'a mut dyn Read,
    buffer: Box<[u8]>,
    /// Next unread byte of `buffer`.
    position: usize,
    /// End of the bytes held in `buffer`.
    end: usize,
    /// `buffer[..checked]` is already in `crc`.
    checked: usize,
    crc: u32,
}

impl<'a> SnapshotInput<'a> {
    fn new(input: &'a mut dyn Read) -> SnapshotInput<'a> {
        SnapshotInput {
            input,
            buffer: vec![0u8; RESTORE_BUFFER_BYTES].into_boxed_slice(),
            position: 0,
            end: 0,
            checked: 0,
            crc: 0,
        }
    }

    /// Adds the consumed bytes not yet checksummed to the CRC.
    fn checksum_consumed(&mut self) {
        let consumed = &self.buffer[self.checked..self.position];
        self.crc = crc32c::crc32c_append(self.crc, consumed);
        self.checked = self.position;
    }

    /// Moves the unread bytes to the start of the buffer and reads once from the input into
    /// the rest. Returns the bytes read: 0 at the end of the input.
    fn refill(&mut self) -> Result<usize, DecodeError> {
        self.checksum_consumed();
        self.buffer.copy_within(self.position..self.end, 0);
        self.end -= self.position;
        (self.position, self.checked) = (0, 0);
        loop {
            match self.input.read(&mut self.buffer[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DecodeError(format!("reading the snapshot: {e}"))),
            }
        }
    }

    /// Makes `n` (at most the buffer's size) unread bytes available in the buffer.
    fn fill(&mut self, n: usize, what: &str) -> Result<(), DecodeError> {
        while self.end - self.position < n {
            if self.refill()? == 0 {
                return Err(DecodeError(format!(
                    "truncated {what}: need {n} bytes, {} left",
                    self.end - self.position
                )));
            }
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], DecodeError> {
        self.fill(n, what)?;
        let start = self.position;
        self.position += n;
        Ok(&self.buffer[start..self.position])
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `u32`, left unread.
    fn peek_u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        self.fill(4, what)?;
        let b = &self.buffer[self.position..self.position + 4];
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A length-prefixed field of at most `max` bytes; one longer than the buffer is read
    /// straight into its own allocation.
    fn bytes(&mut self, what: &str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError(format!("{what} of {len} bytes exceeds {max}")));
        }
        if len <= self.buffer.len() {
            return Ok(self.take(len, what)?.to_vec());
        }
        let mut field = Vec::with_capacity(len);
        field.extend_from_slice(&self.buffer[self.position..self.end]);
        self.position = self.end;
        self.checksum_consumed();
        let buffered = field.len();
        let missing = (len - buffered) as u64;
        (&mut *self.input)
            .take(missing)
            .read_to_end(&mut field)
            .map_err(|e| DecodeError(format!("reading the snapshot: {e}")))?;
        if field.len() < len {
            let left = field.len();
            return Err(DecodeError(format!(
                "truncated {what}: need {len} bytes, {left} left"
            )));
        }
        self.crc = crc32c::crc32c_append(self.crc, &field[buffered..]);
        Ok(field)
    }

    /// A key: a short one is copied from the buffer into the map's key without allocating.
    fn key(&mut self) -> Result<Key, DecodeError> {
        let len = self.peek_u32("key")? as usize;
        let key = if len <= key::INLINE_BYTES {
            self.u32("key")?;
            Key::new(self.take(len, "key")?)
        } else {
            Key::from_vec(self.bytes("key", KEY_BYTES_MAX)?)
        };
        if key.as_slice().is_empty() {
            return Err(DecodeError("empty key".to_string()));
        }
        Ok(key)
    }

    /// Reads the stored checksum that follows the entries, compares it with the computed
    /// one and makes sure nothing follows it.
    fn finish(&mut self) -> Result<(), DecodeError> {
        self.checksum_consumed();
        let actual = self.crc;
        self.fill(4, "snapshot checksum")
            .map_err(|_| DecodeError("snapshot shorter than its checksum".to_string()))?;
        let stored = self.take(4, "snapshot checksum")?;
        let expected = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        if actual != expected {
            return Err(DecodeError(format!(
                "snapshot checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            )));
        }
        self.checked = self.position;
        if self.end > self.position || self.refill()? > 0 {
            return Err(DecodeError(
                "trailing bytes after the snapshot checksum".to_string(),
            ));
        }
        Ok(())
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
        match CommandRef::decode(command) {
            Ok(command) => self.execute_ref(command).encode(),
            Err(e) => KvResponse::Error(format!("bad command: {e}")).encode(),
        }
    }

    fn query(&self, query: &[u8]) -> Vec<u8> {
        let response = match CommandRef::decode(query) {
            Ok(CommandRef::Get { key }) => KvResponse::Value(self.entries.get(key).cloned()),
            Ok(CommandRef::Scan { prefix, limit }) => self.scan(prefix, limit),
            Ok(_) => KvResponse::Error("only get and scan are allowed as queries".to_string()),
            Err(e) => KvResponse::Error(format!("bad query: {e}")),
        };
        response.encode()
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        self.write_snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let entries = KvStore::read_snapshot(input)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
        free_replaced(std::mem::replace(&mut self.entries, entries));
        Ok(())
    }

    /// The new map is decoded aside, through the snapshot's own trailing checksum, and
    /// swapped in only when all of it decoded.
    fn restores_atomically(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn apply(store: &mut KvStore, command: &KvCommand) -> KvResponse {
        KvResponse::decode(&store.apply(LogIndex(1), &command.encode())).unwrap()
    }

    fn snapshot_bytes(store: &KvStore) -> Vec<u8> {
        let mut out = Vec::new();
        store.snapshot(&mut out).unwrap();
        out
    }

    #[test]
    fn scan_lists_keys_by_prefix_in_order() {
        let mut store = KvStore::new();
        for key in ["b2", "a", "b1", "b3", "c", "b"] {
            store.execute(put(key, &format!("v{key}")));
        }
        let query = |prefix: &str, limit| {
            let command = KvCommand::Scan {
                prefix: prefix.into(),
                limit,
            };
            let bytes = store.query(&KvCommand::decode(&command.encode()).unwrap().encode());
            KvResponse::decode(&bytes).unwrap()
        };
        let pairs = |keys: &[&str]| -> Vec<(Vec<u8>, Vec<u8>)> {
            let pair = |k: &&str| (k.as_bytes().to_vec(), format!("v{k}").into_bytes());
            keys.iter().map(pair).collect()
        };
        let entries = pairs(&["b", "b1", "b2", "b3"]);
        let more = false;
        assert_eq!(query("b", 10), KvResponse::Entries { entries, more });
        let (entries, more) = (pairs(&["b", "b1"]), true);
        assert_eq!(query("b", 2), KvResponse::Entries { entries, more });
        assert_eq!(query("", 10_000), query("", SCAN_LIMIT_MAX));
        let (entries, more) = (Vec::new(), false);
        assert_eq!(query("z", 1), KvResponse::Entries { entries, more });
        let response = query("a", 3);
        assert_eq!(KvResponse::decode(&response.encode()), Ok(response));
        for limit in [0, SCAN_LIMIT_MAX + 1] {
            let bad = KvCommand::Scan {
                prefix: Vec::new(),
                limit,
            };
            assert!(KvCommand::decode(&bad.encode()).is_err(), "{limit}");
        }
    }

    #[test]
    fn the_longest_command_is_a_cas_of_the_longest_fields() {
        let longest = KvCommand::Cas {
            key: vec![1; KEY_BYTES_MAX],
            expected: Some(vec![2; VALUE_BYTES_MAX]),
            new: vec![3; VALUE_BYTES_MAX],
        };
        assert_eq!(longest.encode().len(), ENCODED_COMMAND_BYTES_MAX);
    }

    #[test]
    fn commands_round_trip() {
        let commands = [
            put("k", "v"),
            put("k", ""),
            KvCommand::Get { key: "k".into() },
            KvCommand::Delete { key: "k".into() },
            KvCommand::Cas {
                key: "k".into(),
                expected: Some("a".into()),
                new: "b".into(),
            },
            KvCommand::Cas {
                key: "k".into(),
                expected: None,
                new: "b".into(),
            },
        ];
        for command in commands {
            assert_eq!(KvCommand::decode(&command.encode()), Ok(command));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            KvResponse::Done,
            KvResponse::Value(None),
            KvResponse::Value(Some("v".into())),
            KvResponse::Cas {
                swapped: true,
                current: None,
            },
            KvResponse::Cas {
                swapped: false,
                current: Some("x".into()),
            },
            KvResponse::Error("nope".into()),
        ];
        for response in responses {
            assert_eq!(KvResponse::decode(&response.encode()), Ok(response));
        }
    }

    #[test]
    fn documented_layout_of_put() {
        let bytes = put("ab", "c").encode();
        assert_eq!(bytes, [1, 2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']);
    }

    #[test]
    fn malformed_commands_are_errors() {
        let mut too_long = vec![TAG_GET];
        too_long.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut trailing = put("k", "v").encode();
        trailing.push(0);
        let cases: [&[u8]; 7] = [
            &[],
            &[0x7f],
            &[TAG_PUT, 1, 0],
            &too_long,
            &trailing,
            &[TAG_GET, 0, 0, 0, 0],
            &[TAG_CAS, 1, 0, 0, 0, b'k', 9],
        ];
        for bytes in cases {
            assert!(KvCommand::decode(bytes).is_err(), "{bytes:?}");
            let mut store = KvStore::new();
            let answer = KvResponse::decode(&store.apply(LogIndex(1), bytes)).unwrap();
            assert!(matches!(answer, KvResponse::Error(_)), "{bytes:?}");
            assert!(store.is_empty());
        }
        assert!(KvResponse::decode(&[]).is_err());
        assert!(KvResponse::decode(&[TAG_CAS_RESULT, 2, 0]).is_err());
    }

    #[test]
    fn put_get_del_cas_semantics() {
        let mut s = KvStore::new();
        assert_eq!(apply(&mut s, &put("a", "1")), KvResponse::Done);
        let get_a = KvCommand::Get { key: "a".into() };
        assert_eq!(
            KvResponse::decode(&s.query(&get_a.encode())).unwrap(),
            KvResponse::Value(Some("1".into()))
        );
        let cas = |expected: Option<&str>, new: &str| KvCommand::Cas {
            key: "a".into(),
            expected: expected.map(Into::into),
            new: new.into(),
        };
        assert_eq!(
            apply(&mut s, &cas(Some("0"), "2")),
            KvResponse::Cas {
                swapped: false,
                current: Some("1".into())
            }
        );
        assert_eq!(
            apply(&mut s, &cas(Some("1"), "2")),
            KvResponse::Cas {
                swapped: true,
                current: None
            }
        );
        assert_eq!(s.get(b"a"), Some(&b"2"[..]));
        let del = KvCommand::Delete { key: "a".into() };
        assert_eq!(apply(&mut s, &del), KvResponse::Done);
        assert_eq!(apply(&mut s, &del), KvResponse::Done);
        assert_eq!(apply(&mut s, &get_a), KvResponse::Value(None));
        assert_eq!(
            apply(&mut s, &cas(None, "3")),
            KvResponse::Cas {
                swapped: true,
                current: None
            }
        );
        assert_eq!(s.get(b"a"), Some(&b"3"[..]));
    }

    #[test]
    fn writes_are_refused_as_queries() {
        let s = KvStore::new();
        let answer = KvResponse::decode(&s.query(&put("a", "1").encode())).unwrap();
        assert!(matches!(answer, KvResponse::Error(_)));
        assert!(s.is_empty());
    }

    #[test]
    fn snapshot_round_trip_is_exact_and_deterministic() {
        let mut a = KvStore::new();
        for i in (0..100).rev() {
            apply(&mut a, &put(&format!("key{i}"), &"x".repeat(i)));
        }
        let bytes = snapshot_bytes(&a);
        let mut b = KvStore::new();
        apply(&mut b, &put("stale", "gone after restore"));
        b.restore(&mut &bytes[..]).unwrap();
        assert_eq!(a, b);
        assert_eq!(snapshot_bytes(&b), bytes, "same state, same bytes");
        let mut empty = KvStore::new();
        empty
            .restore(&mut &snapshot_bytes(&KvStore::new())[..])
            .unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn damaged_snapshots_are_refused_and_keep_the_old_state() {
        let mut a = KvStore::new();
        apply(&mut a, &put("k1", "v1"));
        apply(&mut a, &put("k2", "v2"));
        let good = snapshot_bytes(&a);
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        for at in 0..good.len() {
            let mut flipped = good.clone();
            flipped[at] ^= 0x40;
            damaged.push(flipped);
        }
        for bytes in damaged {
            let mut b = KvStore::new();
            apply(&mut b, &put("mine", "kept"));
            let before = b.clone();
            let e = b.restore(&mut &bytes[..]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(b, before);
        }
    }

    #[test]
    fn unordered_snapshot_with_valid_checksum_is_refused() {
        let mut body = SNAPSHOT_MAGIC.to_vec();
        body.extend_from_slice(&2u64.to_le_bytes());
        for key in ["b", "a"] {
            put_bytes(&mut body, key.as_bytes());
            put_bytes(&mut body, b"v");
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let e = KvStore::new().restore(&mut &body[..]).unwrap_err();
        assert!(e.to_string().contains("order"), "{e}");
    }

    /// Hands out at most `step` bytes per `read`, like a socket or a chunked file.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// A snapshot body with a valid checksum, from raw (unchecked) parts.
    fn raw_snapshot(count: u64, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = SNAPSHOT_MAGIC.to_vec();
        body.extend_from_slice(&count.to_le_bytes());
        for field in fields {
            put_bytes(&mut body, field);
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn restore_streams_from_short_reads_and_fields_larger_than_its_buffer() {
        let mut a = KvStore::new();
        for i in 0..50 {
            apply(&mut a, &put(&format!("key{i:03}"), &"y".repeat(i * 37)));
        }
        let big = vec![b'z'; RESTORE_BUFFER_BYTES * 2 + 3];
        a.execute(KvCommand::Put {
            key: b"key025x".to_vec(),
            value: big,
        });
        let bytes = snapshot_bytes(&a);
        for step in [1, 7, 4096, RESTORE_BUFFER_BYTES - 1, usize::MAX] {
            let mut b = KvStore::new();
            b.restore(&mut Trickle {
                bytes: &bytes,
                step,
            })
            .unwrap();
            assert_eq!(a, b, "step {step}");
        }
        // Cut inside the large value, and a flipped byte inside it.
        let cut = bytes.len() / 2;
        let e = KvStore::new().restore(&mut &bytes[..cut]).unwrap_err();
        assert!(e.to_string().contains("truncated value"), "{e}");
        let mut flipped = bytes.clone();
        flipped[cut] ^= 1;
        let e = KvStore::new().restore(&mut &flipped[..]).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn damaged_snapshots_name_what_is_wrong() {
        let good = raw_snapshot(2, &[b"a", b"1", b"b", b"2"]);
        let cases: [(Vec<u8>, &str); 7] = [
            (good[..good.len() - 2].to_vec(), "shorter than its checksum"),
            (good[..20].to_vec(), "truncated"),
            ([&good[..], b"x"].concat(), "trailing bytes"),
            (raw_snapshot(2, &[b"b", b"1", b"a", b"2"]), "out of order"),
            (raw_snapshot(2, &[b"a", b"1", b"a", b"2"]), "out of order"),
            (raw_snapshot(1, &[b"", b"1"]), "empty key"),
            (raw_snapshot(u64::MAX, &[b"a", b"1"]), "key"),
        ];
        for (bytes, expected) in cases {
            for step in [1, usize::MAX] {
                let mut store = KvStore::new();
                apply(&mut store, &put("mine", "kept"));
                let e = store
                    .restore(&mut Trickle {
                        bytes: &bytes,
                        step,
                    })
                    .unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(e.to_string().contains(expected), "{e} vs {expected}");
                assert_eq!(store.get(b"mine"), Some(&b"kept"[..]));
            }
        }
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let e = KvStore::new().restore(&mut &bad_crc[..]).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let mut too_long = raw_snapshot(1, &[b"a"]);
        too_long.truncate(16);
        too_long.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = KvStore::new().restore(&mut &too_long[..]).unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
    }

    #[test]
    fn a_large_replaced_state_is_freed_and_the_new_one_kept() {
        let mut a = KvStore::new();
        for i in 0..FREE_ELSEWHERE_ENTRIES_MIN + 1 {
            a.execute(KvCommand::Put {
                key: i.to_le_bytes().to_vec(),
                value: Vec::new(),
            });
        }
        let mut small = KvStore::new();
        apply(&mut small, &put("only", "one"));
        a.restore(&mut &snapshot_bytes(&small)[..]).unwrap();
        assert_eq!(a, small);
    }

    /// Speed of writing and restoring a large store (ignored: run in release, see
    /// docs/BENCHMARKS.md "Snapshots"): `KV_BENCH_KEYS` keys (default 1 000 000) of
    /// `KV_BENCH_VALUE`-byte values (default 100).
    #[test]
    #[ignore = "benchmark: run explicitly in release"]
    fn snapshot_and_restore_speed() {
        let setting = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let keys = setting("KV_BENCH_KEYS", 1_000_000);
        let value = vec![b'v'; setting("KV_BENCH_VALUE", 100)];
        let mut store = KvStore::new();
        for i in 0..keys {
            store.execute(KvCommand::Put {
                key: format!("k{i:09}").into_bytes(),
                value: value.clone(),
            });
        }
        let started = std::time::Instant::now();
        let bytes = snapshot_bytes(&store);
        let write = started.elapsed();
        let mb = bytes.len() as f64 / 1e6;
        for round in 0..3 {
            let mut restored = KvStore::new();
            let started = std::time::Instant::now();
            restored.restore(&mut &bytes[..]).unwrap();
            let restore = started.elapsed();
            assert_eq!(restored.len(), keys);
            let started = std::time::Instant::now();
            drop(restored);
            let dropped = started.elapsed();
            println!(
                "round {round}: {keys} keys, {mb:.1} MB: snapshot written in {:.3} s, \
                 restored in {:.3} s ({:.0} MB/s, {:.3} s per 1 M keys), dropped in {:.3} s",
                write.as_secs_f64(),
                restore.as_secs_f64(),
                mb / restore.as_secs_f64(),
                restore.as_secs_f64() * 1e6 / keys as f64,
                dropped.as_secs_f64()
            );
        }
    }

    /// Cost of applying puts the way the loadtest writes them (ignored: run in release, see
    /// docs/BENCHMARKS.md "Write path, round 2"): `KV_BENCH_KEYS` keys (default 100 000) named
    /// `lt<run id>-<n>`, 100 B values, a put of a random key each, through
    /// `StateMachine::apply`.
    #[test]
    #[ignore = "benchmark: run explicitly in release"]
    fn apply_speed() {
        let keys: u64 = std::env::var("KV_BENCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let commands: Vec<Vec<u8>> = (0..keys)
            .map(|n| {
                KvCommand::Put {
                    key: format!("lt18f3a2b4c5d6e7f8-{n}").into_bytes(),
                    value: vec![b'v'; 100],
                }
                .encode()
            })
            .collect();
        let mut store = KvStore::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % keys) as usize
        };
        for command in &commands {
            store.apply(LogIndex(1), command);
        }
        for round in 0..5 {
            let puts = 1_000_000;
            let started = std::time::Instant::now();
            for _ in 0..puts {
                std::hint::black_box(store.apply(LogIndex(1), &commands[next()]));
            }
            let took = started.elapsed();
            println!(
                "round {round}: {keys} keys, {:.0} ns per put",
                took.as_nanos() as f64 / puts as f64
            );
        }
    }

    proptest::proptest! {
        /// Applied through `StateMachine::apply` (borrowed decoding, inline and heap keys,
        /// values overwritten in place or replaced), the store answers and snapshots as a
        /// plain `BTreeMap<Vec<u8>, Vec<u8>>` model of it does.
        #[test]
        fn the_store_behaves_as_a_plain_map(
            ops in proptest::collection::vec(
                (0u8..4, 0usize..6, 0usize..3, proptest::collection::vec(0u8..4, 0..300)),
                1..120,
            ),
        ) {
            // Keys around the inline limit, some a prefix of others.
            let keys: Vec<Vec<u8>> = [1, 7, key::INLINE_BYTES, key::INLINE_BYTES + 1, 40, 29]
                .iter()
                .map(|&n| vec![b'k'; n])
                .collect();
            let mut store = KvStore::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (op, k, expected_pick, value) in ops {
                let key = keys[k].clone();
                let command = match op {
                    0 => KvCommand::Put { key: key.clone(), value: value.clone() },
                    1 => KvCommand::Delete { key: key.clone() },
                    _ => {
                        let expected = match expected_pick {
                            0 => None,
                            1 => model.get(&key).cloned(),
                            _ => Some(value.clone()),
                        };
                        KvCommand::Cas { key: key.clone(), expected, new: value.clone() }
                    }
                };
                let want = match &command {
                    KvCommand::Put { .. } => {
                        model.insert(key.clone(), value.clone());
                        KvResponse::Done
                    }
                    KvCommand::Delete { .. } => {
                        model.remove(&key);
                        KvResponse::Done
                    }
                    KvCommand::Cas { expected, .. } => {
                        let current = model.get(&key).cloned();
                        if current == *expected {
                            model.insert(key.clone(), value.clone());
                            KvResponse::Cas { swapped: true, current: None }
                        } else {
                            KvResponse::Cas { swapped: false, current }
                        }
                    }
                    _ => unreachable!(),
                };
                let got = KvResponse::decode(&store.apply(LogIndex(1), &command.encode())).unwrap();
                proptest::prop_assert_eq!(got, want);
            }
            let scan = KvCommand::Scan { prefix: b"k".to_vec(), limit: SCAN_LIMIT_MAX };
            let listed = KvResponse::decode(&store.query(&scan.encode())).unwrap();
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
            proptest::prop_assert_eq!(listed, KvResponse::Entries { entries: expected, more: false });
            let mut restored = KvStore::new();
            restored.restore(&mut &snapshot_bytes(&store)[..]).unwrap();
            proptest::prop_assert_eq!(&restored, &store);
            for (key, value) in &model {
                proptest::prop_assert_eq!(restored.get(key), Some(&value[..]));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48)) {
            let mut store = KvStore::new();
            let _ = KvCommand::decode(&bytes);
            let _ = KvResponse::decode(&bytes);
            let _ = store.apply(LogIndex(1), &bytes);
            let _ = store.query(&bytes);
            let _ = store.restore(&mut &bytes[..]);
        }

        #[test]
        fn arbitrary_cas_round_trips(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..16),
            expected in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)),
            new in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16),
        ) {
            let command = KvCommand::Cas { key, expected, new };
            proptest::prop_assert_eq!(KvCommand::decode(&command.encode()), Ok(command));
        }
    }
}
