//! Every size limit and fixed length of the wire protocol, in one place.
//!
//! Plain constants, shared by the codec and the network thread. Changing a `*_BYTES` layout
//! constant changes the protocol and must bump [`PROTOCOL_VERSION`].

/// Protocol version carried by the handshake and every frame header. A peer or client with
/// another version is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 11;

/// Length of the connection handshake (see `wire/PROTOCOL.md`).
pub const HANDSHAKE_BYTES: usize = 40;

/// Length of the fixed frame header that precedes every payload.
///
/// It is a multiple of [`PAYLOAD_ALIGN`], which keeps the alignment padding rkyv writes
/// identical whether the payload is measured from its own start or from the header's.
pub const FRAME_HEADER_BYTES: usize = 16;

/// Alignment of decoded payload buffers; at least the alignment of every archived type.
pub const PAYLOAD_ALIGN: usize = 16;

/// Default largest payload a receiver accepts (64 MiB). A frame announcing more is refused
/// before anything is allocated for it.
pub const FRAME_BYTES_MAX: u32 = 64 << 20;

/// Upper bound on the archived bytes of a peer [`crate::Message`] carrying an AppendRequest,
/// apart from its entries (measured: 112 bytes with every integer at its maximum). This and
/// the bounds below are tested in `wire/tests/size_bounds.rs`.
pub const APPEND_REQUEST_FIXED_BYTES_MAX: usize = 256;

/// Upper bound on the archived bytes one [`crate::Entry`] adds to a message, apart from its
/// command bytes and membership ids (measured: 56 bytes, plus up to 7 of alignment after the
/// command bytes). See [`crate::Entry::wire_bytes_max`].
pub const ENTRY_FIXED_BYTES_MAX: usize = 128;

/// Upper bound on the archived bytes of one membership set (voters, outgoing voters or
/// learners) apart from its ids; see [`MEMBERSHIP_ID_BYTES_MAX`].
pub const MEMBERSHIP_SET_FIXED_BYTES_MAX: usize = 64;

/// Upper bound on the archived bytes of one id in a membership set (measured: under 12, the
/// ids and the B-tree around them).
pub const MEMBERSHIP_ID_BYTES_MAX: usize = 16;

/// Most bytes the entries of one AppendRequest may take, counted with
/// [`crate::Entry::wire_bytes_max`]: with the message's own fields it then fits a frame of
/// [`FRAME_BYTES_MAX`]. A leader stops a batch before it would exceed this, whatever its
/// configured batch size.
pub const APPEND_ENTRIES_BYTES_MAX: u64 =
    FRAME_BYTES_MAX as u64 - APPEND_REQUEST_FIXED_BYTES_MAX as u64;

/// Upper bound on the archived bytes of a [`crate::ClientRequest`] apart from the command or
/// query it carries (measured: 48 bytes for a write with a session).
pub const CLIENT_REQUEST_FIXED_BYTES_MAX: usize = 256;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(PAYLOAD_ALIGN));
const _: () =
    assert!(APPEND_REQUEST_FIXED_BYTES_MAX + ENTRY_FIXED_BYTES_MAX < FRAME_BYTES_MAX as usize);
const _: () = assert!(CLIENT_REQUEST_FIXED_BYTES_MAX < FRAME_BYTES_MAX as usize);
const _: () = assert!(FRAME_BYTES_MAX as u64 <= u32::MAX as u64);
