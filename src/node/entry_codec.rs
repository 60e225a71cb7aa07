//! Byte encoding of an entry's payload inside a WAL record: the wire crate's
//! [`rcraft_wire::record`] (an entry's one byte format, on disk and on the wire), re-exported
//! for the node's other users of the payload encoding (snapshot metadata, backups, the
//! doctor, force-new-cluster).

pub use rcraft_wire::record::PayloadError;
pub(crate) use rcraft_wire::record::{
    COMMAND_RECORD_OVERHEAD_BYTES, decode_payload, payload_bytes,
};
