//! A connection's outbound bytes: encoded frames waiting to be written, written with as few
//! `write` calls as possible (everything pending goes to the socket in one call).
//!
//! Owned by the network thread, one per connection. Invariants: `written <= bytes.len()`;
//! `frame_ends` holds, in order, the end offset of every frame not yet fully written; raw
//! bytes (the handshake) have no entry there.

use rcraft_wire::FRAME_HEADER_BYTES;
use std::collections::VecDeque;
use std::io::{self, Write};

/// Written bytes are compacted away once at least this many have accumulated in front of
/// unwritten ones (and they are at least half the buffer).
const COMPACT_MIN_BYTES: usize = 64 << 10;

/// Capacity an empty buffer keeps. A burst (a peer that stopped reading while its queue
/// filled towards `peer_queue_bytes`, a large scan answer) grows the buffer; once it is
/// written out, capacity beyond this is given back, so that a node's memory after a paused
/// peer or a slow client returns to its level before instead of keeping the burst's peak
/// for every connection for good (docs/BENCHMARKS.md, "Issue 13 on a quiet machine").
const RETAIN_BYTES_MAX: usize = 1 << 20;

/// Why a frame was not queued.
#[derive(Debug)]
pub(super) enum PushError {
    /// The encoder failed.
    Encode(rcraft_wire::Error),
    /// The payload is larger than the receiver accepts.
    TooLarge { payload_bytes: usize },
}

#[derive(Default)]
pub(super) struct OutBuffer {
    bytes: Vec<u8>,
    written: usize,
    frame_ends: VecDeque<usize>,
    /// Bytes written since [`take_written_bytes`](Self::take_written_bytes) last ran.
    written_uncounted: u64,
}

impl OutBuffer {
    /// Bytes written to the socket since the last call (for the node's byte counter).
    pub(super) fn take_written_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.written_uncounted)
    }

    /// Bytes queued and not yet written.
    pub(super) fn pending_bytes(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Frames queued and not yet fully written (raw bytes such as the handshake excluded).
    pub(super) fn pending_frames(&self) -> usize {
        self.frame_ends.len()
    }

    /// Forgets everything queued; returns how many frames were dropped.
    pub(super) fn clear(&mut self) -> usize {
        let dropped = self.frame_ends.len();
        self.bytes.clear();
        self.written = 0;
        self.frame_ends.clear();
        dropped
    }

    /// Queues raw bytes (the handshake); they are not counted as a frame.
    pub(super) fn push_raw(&mut self, raw: &[u8]) {
        self.bytes.extend_from_slice(raw);
    }

    /// Queues one frame produced by `encode`, refusing a payload over `max_payload_bytes`.
    pub(super) fn push_frame(
        &mut self,
        max_payload_bytes: u32,
        encode: impl FnOnce(&mut Vec<u8>) -> rcraft_wire::Result<usize>,
    ) -> Result<(), PushError> {
        let start = self.bytes.len();
        let frame_len = encode(&mut self.bytes).map_err(PushError::Encode)?;
        let payload_bytes = frame_len - FRAME_HEADER_BYTES;
        if payload_bytes > max_payload_bytes as usize {
            self.bytes.truncate(start);
            return Err(PushError::TooLarge { payload_bytes });
        }
        self.frame_ends.push_back(self.bytes.len());
        Ok(())
    }

    /// Writes as much as the socket takes. Returns the number of frames completed; stops
    /// quietly at `WouldBlock` (the caller waits for a writable event).
    pub(super) fn write_to(&mut self, sink: &mut impl Write) -> io::Result<usize> {
        let mut completed = 0;
        while self.written < self.bytes.len() {
            match sink.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.written_uncounted += n as u64;
                    while self
                        .frame_ends
                        .front()
                        .is_some_and(|&end| end <= self.written)
                    {
                        self.frame_ends.pop_front();
                        completed += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.compact();
        Ok(completed)
    }

    fn compact(&mut self) {
        if self.written == self.bytes.len() {
            self.bytes.clear();
            self.bytes.shrink_to(RETAIN_BYTES_MAX);
            self.written = 0;
        } else if self.written >= COMPACT_MIN_BYTES && self.written * 2 >= self.bytes.len() {
            self.bytes.drain(..self.written);
            for end in &mut self.frame_ends {
                *end -= self.written;
            }
            self.written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `chunk` bytes per call and then reports WouldBlock every
    /// other call, like a congested socket.
    struct Trickle {
        taken: Vec<u8>,
        chunk: usize,
        block_next: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.block_next = !self.block_next;
            if !self.block_next {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_written_out_burst_gives_its_memory_back() {
        let mut out = OutBuffer::default();
        let frame = vec![7u8; 64 << 10];
        for _ in 0..64 {
            let encode = |bytes: &mut Vec<u8>| {
                bytes.extend_from_slice(&frame);
                Ok(frame.len())
            };
            out.push_frame(u32::MAX, encode).unwrap();
        }
        assert!(out.bytes.capacity() >= 4 << 20);
        let mut sink = Trickle {
            taken: Vec::new(),
            chunk: 1 << 20,
            block_next: false,
        };
        while out.pending_bytes() > 0 {
            out.write_to(&mut sink).unwrap();
        }
        assert_eq!(sink.taken.len(), 64 * frame.len());
        assert!(
            out.bytes.capacity() <= RETAIN_BYTES_MAX,
            "an empty buffer keeps {} bytes",
            out.bytes.capacity()
        );
    }

    #[test]
    fn partial_writes_and_would_block_keep_every_byte_in_order() {
        let mut out = OutBuffer::default();
        let mut expected = Vec::new();
        let mut sink = Trickle {
            taken: Vec::new(),
            chunk: 7,
            block_next: false,
        };
        let mut completed = 0;
        out.push_raw(b"hello");
        expected.extend_from_slice(b"hello");
        for round in 0..50u8 {
            let block = vec![round; FRAME_HEADER_BYTES + round as usize];
            expected.extend_from_slice(&block);
            let encode = |bytes: &mut Vec<u8>| {
                bytes.extend_from_slice(&block);
                Ok(block.len())
            };
            out.push_frame(u32::MAX, encode).unwrap();
            completed += out.write_to(&mut sink).unwrap();
        }
        while out.pending_bytes() > 0 {
            completed += out.write_to(&mut sink).unwrap();
        }
        assert_eq!(sink.taken, expected);
        assert_eq!(completed, 50);
        assert_eq!(out.pending_frames(), 0);
    }
}
