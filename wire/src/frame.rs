//! Frames: a fixed header followed by an rkyv archive of one message; the sans-I/O encoder
//! and [`FrameDecoder`].
//!
//! Header layout (all little-endian, [`FRAME_HEADER_BYTES`] long):
//!
//! | bytes | field |
//! |---|---|
//! | 0..2 | magic `RF` |
//! | 2 | protocol version (low byte of [`PROTOCOL_VERSION`]) |
//! | 3 | kind: 1 = peer message, 2 = client request, 3 = client response |
//! | 4..8 | payload length, u32 |
//! | 8..12 | CRC-32C of the payload, u32 |
//! | 12..16 | CRC-32C of header bytes 0..12, u32 |
//!
//! A decoder belongs to one connection and lives on the thread that reads it. Invariants: a
//! payload length over the decoder's limit is refused as soon as its header has arrived,
//! before anything is allocated for the payload; the decoder's buffer never grows past the
//! larger of one full frame and the bytes the caller pushed without draining; payloads are
//! copied into [`PAYLOAD_ALIGN`]-aligned buffers and only ever read through rkyv's checked
//! `access`; after the first error the decoder returns that error forever (the byte stream
//! is out of sync and the connection must be closed).

use crate::error::{Error, Result};
use crate::handshake::{Handshake, TOKEN_BYTES_MAX};
use crate::limits::{FRAME_HEADER_BYTES, HANDSHAKE_BYTES, PAYLOAD_ALIGN, PROTOCOL_VERSION};
use crate::message::{
    ArchivedClientRequest, ArchivedClientResponse, ArchivedMessage, ClientRequest, ClientResponse,
    Message,
};
use rkyv::api::high::HighSerializer;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use std::fmt;

/// First two bytes of every frame header.
pub const FRAME_MAGIC: [u8; 2] = *b"RF";

const _: () = assert!(PROTOCOL_VERSION <= u8::MAX as u16);
const FRAME_VERSION: u8 = PROTOCOL_VERSION as u8;
const HEADER_CHECKSUMMED_BYTES: usize = 12;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A Raft [`Message`] between peers.
    PeerMessage = 1,
    /// A [`ClientRequest`], client to node.
    ClientRequest = 2,
    /// A [`ClientResponse`], node to client.
    ClientResponse = 3,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Result<FrameKind> {
        match byte {
            1 => Ok(FrameKind::PeerMessage),
            2 => Ok(FrameKind::ClientRequest),
            3 => Ok(FrameKind::ClientResponse),
            other => Err(Error::UnknownFrameKind(other)),
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FrameKind::PeerMessage => "peer-message",
            FrameKind::ClientRequest => "client-request",
            FrameKind::ClientResponse => "client-response",
        };
        f.write_str(name)
    }
}

/// One decoded frame: its kind and its checksum-verified payload, not yet validated as an
/// archive. The typed accessors validate it.
pub struct Frame {
    kind: FrameKind,
    payload: AlignedVec<PAYLOAD_ALIGN>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &self.kind)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

impl Frame {
    /// What the frame carries.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// The raw payload bytes (an rkyv archive, aligned to [`PAYLOAD_ALIGN`]).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn expect_kind(&self, expected: FrameKind) -> Result<()> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(Error::UnexpectedFrameKind {
                expected,
                found: self.kind,
            })
        }
    }

    /// Validates the payload as a peer message and borrows it in place (zero copy).
    pub fn access_message(&self) -> Result<&ArchivedMessage> {
        self.expect_kind(FrameKind::PeerMessage)?;
        rkyv::access::<ArchivedMessage, rancor::Error>(&self.payload)
            .map_err(|e| Error::InvalidArchive(e.to_string()))
    }

    /// Validates the payload as a client request and borrows it in place.
    pub fn access_client_request(&self) -> Result<&ArchivedClientRequest> {
        self.expect_kind(FrameKind::ClientRequest)?;
        rkyv::access::<ArchivedClientRequest, rancor::Error>(&self.payload)
            .map_err(|e| Error::InvalidArchive(e.to_string()))
    }

    /// Validates the payload as a client response and borrows it in place.
    pub fn access_client_response(&self) -> Result<&ArchivedClientResponse> {
        self.expect_kind(FrameKind::ClientResponse)?;
        rkyv::access::<ArchivedClientResponse, rancor::Error>(&self.payload)
            .map_err(|e| Error::InvalidArchive(e.to_string()))
    }

    /// Validates and deserializes a peer message.
    pub fn to_message(&self) -> Result<Message> {
        let archived = self.access_message()?;
        rkyv::deserialize::<Message, rancor::Error>(archived)
            .map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Validates and deserializes a client request.
    pub fn to_client_request(&self) -> Result<ClientRequest> {
        let archived = self.access_client_request()?;
        rkyv::deserialize::<ClientRequest, rancor::Error>(archived)
            .map_err(|e| Error::Serialize(e.to_string()))
    }

    /// Validates and deserializes a client response.
    pub fn to_client_response(&self) -> Result<ClientResponse> {
        let archived = self.access_client_response()?;
        rkyv::deserialize::<ClientResponse, rancor::Error>(archived)
            .map_err(|e| Error::Serialize(e.to_string()))
    }
}

/// An rkyv writer that appends to a shared output buffer but reports positions relative to
/// the start of the payload, so a frame can be encoded after other frames in one buffer and
/// still decode from its own aligned copy.
struct PayloadWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl Positional for PayloadWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.start
    }
}

impl<E> Writer<E> for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

fn encode_frame<T>(kind: FrameKind, value: &T, out: &mut Vec<u8>) -> Result<usize>
where
    T: for<'a, 'w> rkyv::Serialize<
            HighSerializer<PayloadWriter<'w>, ArenaHandle<'a>, rancor::Error>,
        >,
{
    let frame_start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let payload_start = out.len();
    let writer = PayloadWriter {
        out: &mut *out,
        start: payload_start,
    };
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer) {
        out.truncate(frame_start);
        return Err(Error::Serialize(e.to_string()));
    }
    let payload_len = out.len() - payload_start;
    let Ok(len) = u32::try_from(payload_len) else {
        out.truncate(frame_start);
        return Err(Error::FrameTooLarge {
            len: payload_len as u64,
            max: u32::MAX,
        });
    };
    let payload_crc = crc32c::crc32c(&out[payload_start..]);
    let header = &mut out[frame_start..payload_start];
    header[0..2].copy_from_slice(&FRAME_MAGIC);
    header[2] = FRAME_VERSION;
    header[3] = kind as u8;
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..12].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..HEADER_CHECKSUMMED_BYTES]);
    header[12..16].copy_from_slice(&header_crc.to_le_bytes());
    Ok(out.len() - frame_start)
}

/// Appends one peer-message frame to `out`; returns the frame's length in bytes.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) -> Result<usize> {
    encode_frame(FrameKind::PeerMessage, message, out)
}

/// Appends one client-request frame to `out`; returns the frame's length in bytes.
pub fn encode_client_request(request: &ClientRequest, out: &mut Vec<u8>) -> Result<usize> {
    encode_frame(FrameKind::ClientRequest, request, out)
}

/// Appends one client-response frame to `out`; returns the frame's length in bytes.
pub fn encode_client_response(response: &ClientResponse, out: &mut Vec<u8>) -> Result<usize> {
    encode_frame(FrameKind::ClientResponse, response, out)
}

/// A parsed and checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHeader {
    kind: FrameKind,
    payload_len: u32,
    payload_crc: u32,
}

impl FrameHeader {
    /// Checks magic, version, header checksum, kind and length limit, in that order.
    fn parse(bytes: &[u8; FRAME_HEADER_BYTES], frame_bytes_max: u32) -> Result<FrameHeader> {
        if bytes[0..2] != FRAME_MAGIC {
            return Err(Error::BadFrameMagic {
                found: [bytes[0], bytes[1]],
            });
        }
        if bytes[2] != FRAME_VERSION {
            return Err(Error::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: u16::from(bytes[2]),
            });
        }
        let expected = read_u32(bytes, 12);
        let computed = crc32c::crc32c(&bytes[..HEADER_CHECKSUMMED_BYTES]);
        if expected != computed {
            return Err(Error::ChecksumMismatch {
                what: "frame header",
                expected,
                computed,
            });
        }
        let kind = FrameKind::from_byte(bytes[3])?;
        let payload_len = read_u32(bytes, 4);
        if payload_len > frame_bytes_max {
            return Err(Error::FrameTooLarge {
                len: u64::from(payload_len),
                max: frame_bytes_max,
            });
        }
        Ok(FrameHeader {
            kind,
            payload_len,
            payload_crc: read_u32(bytes, 8),
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

/// Splits a byte stream, pushed in chunks of any size, into a handshake and frames.
pub struct FrameDecoder {
    /// Received bytes; `buffer[consumed..]` are not yet decoded.
    buffer: Vec<u8>,
    /// Invariant: `consumed <= buffer.len()`.
    consumed: usize,
    frame_bytes_max: u32,
    /// Set by the first error; the stream cannot be resynchronized after it.
    failure: Option<Error>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads longer than `frame_bytes_max`.
    pub fn new(frame_bytes_max: u32) -> FrameDecoder {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            frame_bytes_max,
            failure: None,
        }
    }

    /// Appends received bytes. Bytes pushed after an error are discarded.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        self.compact();
        let needed = self.buffer.len() + bytes.len();
        if needed > self.buffer.capacity() {
            // Grow geometrically up to one full frame, or straight to the announced frame
            // length once a valid header is known, but never past a frame unless the caller
            // pushes more than that without draining.
            let frame_limit = FRAME_HEADER_BYTES + self.frame_bytes_max as usize;
            let doubled = (self.buffer.capacity() * 2).min(frame_limit);
            let target = needed.max(doubled).max(self.announced_frame_end());
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a handshake or frame. Non-zero after draining
    /// means a partial frame is waiting for the rest of its bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Capacity of the internal buffer, for tests and memory accounting.
    pub fn buffer_capacity(&self) -> usize {
        self.buffer.capacity()
    }

    /// The error that stopped this decoder, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// Takes the connection handshake off the front of the stream once all of its bytes
    /// have arrived. Call it once, before the first [`FrameDecoder::next_frame`].
    pub fn next_handshake(&mut self) -> Result<Option<Handshake>> {
        self.checked(|decoder| {
            let rest = &decoder.buffer[decoder.consumed..];
            let Some(bytes) = rest.get(..HANDSHAKE_BYTES) else {
                // Another version's handshake may be shorter: name it from its prefix.
                Handshake::check_prefix(rest)?;
                return Ok(None);
            };
            let bytes: &[u8; HANDSHAKE_BYTES] = bytes.try_into().expect("handshake length");
            let handshake = Handshake::decode(bytes)?;
            decoder.consumed += HANDSHAKE_BYTES;
            Ok(Some(handshake))
        })
    }

    /// Takes a fixed-size block (an authentication nonce or proof, `wire/PROTOCOL.md`
    /// section 2) off the front of the stream once all of its bytes have arrived.
    pub fn next_block<const N: usize>(&mut self) -> Result<Option<[u8; N]>> {
        self.checked(|decoder| {
            let Some(bytes) = decoder.buffer[decoder.consumed..].get(..N) else {
                return Ok(None);
            };
            let block: [u8; N] = bytes.try_into().expect("block length");
            decoder.consumed += N;
            Ok(Some(block))
        })
    }

    /// Takes a client token block (u16 length, then that many bytes, 1 to
    /// [`TOKEN_BYTES_MAX`]) off the front of the stream once all of it has arrived; a bad
    /// length is refused as soon as its two bytes are in.
    pub fn next_token(&mut self) -> Result<Option<Vec<u8>>> {
        self.checked(|decoder| {
            let rest = &decoder.buffer[decoder.consumed..];
            let Some(len) = rest.get(..2) else {
                return Ok(None);
            };
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            if len == 0 || len > TOKEN_BYTES_MAX {
                return Err(Error::BadTokenLength {
                    len,
                    max: TOKEN_BYTES_MAX,
                });
            }
            let Some(token) = rest.get(2..2 + len) else {
                return Ok(None);
            };
            let token = token.to_vec();
            decoder.consumed += 2 + len;
            Ok(Some(token))
        })
    }

    /// The next complete frame, `None` until all of its bytes have arrived. Checks the
    /// header (refusing an oversized length before allocating) and the payload checksum.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        self.checked(FrameDecoder::take_frame)
    }

    fn checked<T>(&mut self, step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        step(self).inspect_err(|e| self.failure = Some(e.clone()))
    }

    fn header(&self) -> Result<Option<FrameHeader>> {
        let Some(bytes) = self.buffer[self.consumed..].get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let bytes: &[u8; FRAME_HEADER_BYTES] = bytes.try_into().expect("header length");
        FrameHeader::parse(bytes, self.frame_bytes_max).map(Some)
    }

    fn take_frame(&mut self) -> Result<Option<Frame>> {
        let Some(header) = self.header()? else {
            return Ok(None);
        };
        let frame_len = FRAME_HEADER_BYTES + header.payload_len as usize;
        let Some(frame) = self.buffer[self.consumed..].get(..frame_len) else {
            return Ok(None);
        };
        let payload_bytes = &frame[FRAME_HEADER_BYTES..];
        let computed = crc32c::crc32c(payload_bytes);
        if computed != header.payload_crc {
            return Err(Error::ChecksumMismatch {
                what: "frame payload",
                expected: header.payload_crc,
                computed,
            });
        }
        let mut payload = AlignedVec::<PAYLOAD_ALIGN>::with_capacity(payload_bytes.len());
        payload.extend_from_slice(payload_bytes);
        self.consumed += frame_len;
        Ok(Some(Frame {
            kind: header.kind,
            payload,
        }))
    }

    /// End (relative to the buffer start) of the frame whose header is at the front, when
    /// that header is complete and valid; 0 otherwise.
    fn announced_frame_end(&self) -> usize {
        match self.header() {
            Ok(Some(header)) => FRAME_HEADER_BYTES + header.payload_len as usize,
            _ => 0,
        }
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
    }
}
