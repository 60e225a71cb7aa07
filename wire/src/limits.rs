//! Every size limit and fixed length of the wire protocol, in one place.
//!
//! Plain constants, shared by the codec and the network thread. Changing a `*_BYTES` layout
//! constant changes the protocol and must bump [`PROTOCOL_VERSION`].

/// Protocol version carried by the handshake and every frame header. A peer or client with
/// another version is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 3;

/// Length of the connection handshake (see `wire/PROTOCOL.md`).
pub const HANDSHAKE_BYTES: usize = 32;

/// Length of the fixed frame header that precedes every payload.
///
/// It is a multiple of [`PAYLOAD_ALIGN`], which keeps the alignment padding rkyv writes
/// identical whether the payload is measured from its own start or from the header's.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Alignment of decoded payload buffers; at least the alignment of every archived type.
pub const PAYLOAD_ALIGN: usize = 16;

/// Default largest payload a receiver accepts (64 MiB). A frame announcing more is refused
/// before anything is allocated for it.
pub const MAX_FRAME_BYTES: u32 = 64 << 20;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(PAYLOAD_ALIGN));
const _: () = assert!(MAX_FRAME_BYTES as u64 <= u32::MAX as u64);
