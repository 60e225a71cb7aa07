//! Every bound of the node runtime in one place: channel depths, table sizes, batch sizes.
//!
//! Nothing here is owned by a thread; these are constants read by all of them. Each bound
//! keeps memory finite under overload: a full queue either applies back-pressure (storage,
//! apply) or refuses work with an explicit `Overloaded` answer (client requests).

use super::entry_codec::COMMAND_RECORD_OVERHEAD_BYTES;
use rcraft_storage::limits::RECORD_PAYLOAD_BYTES_MAX;
use rcraft_wire::{
    APPEND_ENTRIES_BYTES_MAX, CLIENT_REQUEST_FIXED_BYTES_MAX, ENTRY_FIXED_BYTES_MAX,
    FRAME_BYTES_MAX,
};
use std::time::Duration;

/// How long the storage thread's queue must stay empty after a batch that appended entries
/// before it syncs the WAL header's count of those records alone (`Wal::confirm`,
/// storage/FORMAT.md §1.1). An append arriving sooner carries the count in its own sync, so
/// writes that come one at a time (one client) cost one sync each instead of two; the price
/// is that the newest records stay uncounted on disk this much longer when the log goes
/// quiet (the torn-write window of FORMAT §4.1). docs/BENCHMARKS.md, "Issue 13 on a
/// quiet machine".
pub const WAL_CONFIRM_IDLE: Duration = Duration::from_millis(2);

/// Readers (followers, backup clients' connections) of one snapshot file whose running CRC
/// the storage thread keeps (`snapshot_send.rs`); a reader beyond it is checked by the
/// whole-file check instead, so connections that start a backup and vanish cannot grow the
/// table without bound.
pub const SNAPSHOT_READERS_TRACKED_MAX: usize = 256;

/// Largest command (and read query) a node accepts, in bytes: 64 MiB less 384 bytes. Derived
/// so that one such command, with its session, fits every place it goes: an AppendRequest
/// carrying it as its only entry fits the peer frame limit (`FRAME_BYTES_MAX`, with
/// `APPEND_REQUEST_FIXED_BYTES_MAX` for the message and `ENTRY_FIXED_BYTES_MAX` for the entry,
/// both bounds tested in `wire/tests/size_bounds.rs`), its WAL record fits the WAL's record
/// limit, and a client's request carrying it fits a client frame. A bigger one is refused
/// with a definite error, by `NodeHandle` and by the consensus thread for network clients;
/// accepted, it could never be replicated or would stop the leader's storage.
pub const COMMAND_BYTES_MAX: usize = min(
    APPEND_ENTRIES_BYTES_MAX as usize - ENTRY_FIXED_BYTES_MAX,
    RECORD_PAYLOAD_BYTES_MAX - COMMAND_RECORD_OVERHEAD_BYTES,
);

const fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

// One entry of the largest command fits an AppendRequest frame, and its WAL record.
const _: () = assert!(
    (COMMAND_BYTES_MAX + ENTRY_FIXED_BYTES_MAX) as u64 <= APPEND_ENTRIES_BYTES_MAX
        && APPEND_ENTRIES_BYTES_MAX <= FRAME_BYTES_MAX as u64
);
const _: () =
    assert!(COMMAND_BYTES_MAX + COMMAND_RECORD_OVERHEAD_BYTES <= RECORD_PAYLOAD_BYTES_MAX);
// A client's write or read of the largest size fits the frame the node decodes it from.
const _: () =
    assert!(COMMAND_BYTES_MAX + CLIENT_REQUEST_FIXED_BYTES_MAX <= FRAME_BYTES_MAX as usize);

/// Network thread -> consensus thread: decoded peer messages and client requests. Sized for
/// a burst of pipelined client requests from many connections.
pub const NET_EVENT_QUEUE_DEPTH: usize = 8192;

/// Batches of peer messages held back by the test-only peer delay (`node/peer_delay.rs`); a
/// full line drops the newest batch, as a full peer queue does.
pub const PEER_DELAY_QUEUE_DEPTH: usize = 4096;

/// Consensus thread -> storage thread: persist, compact and snapshot-chunk commands. Never
/// dropped: a full queue makes the consensus thread wait (back-pressure on proposals).
pub const STORAGE_COMMAND_QUEUE_DEPTH: usize = 1024;

/// Storage thread -> consensus thread: completions. At most one per drained batch.
pub const STORAGE_EVENT_QUEUE_DEPTH: usize = 1024;

/// Consensus thread -> apply thread: committed entries, waiters, reads, restores.
pub const APPLY_COMMAND_QUEUE_DEPTH: usize = 4096;

/// Apply commands the consensus thread holds back while the apply thread's queue is full (a
/// slow state machine) before it refuses new client requests as `Overloaded`; it never waits
/// for room itself.
pub const APPLY_BACKLOG_MAX: usize = 4096;

/// Apply thread -> consensus thread: applied index, snapshots taken and restored.
pub const APPLY_PROGRESS_QUEUE_DEPTH: usize = 1024;

/// `NodeHandle` callers -> consensus thread.
pub const API_REQUEST_QUEUE_DEPTH: usize = 1024;

/// Apply thread -> one `subscribe_applied` receiver. A subscriber that falls this far behind
/// makes the apply thread wait for it.
pub const APPLIED_SUBSCRIBER_QUEUE_DEPTH: usize = 4096;

/// Longest the apply thread waits for room in one subscriber's full stream before it drops
/// that subscriber (so a forgotten receiver cannot stall the node, or its shutdown, for ever).
pub const APPLIED_SUBSCRIBER_STALL_MAX: Duration = Duration::from_secs(5);

/// Client requests waiting for the core's answer (proposal placed, read index confirmed).
/// Past this, new requests are answered `Overloaded`.
pub const PENDING_REQUESTS_MAX: usize = 65_536;

/// Most inputs the consensus thread takes from its channels before it drains the core's
/// actions once, so a flood of requests cannot delay ticks or persistence indefinitely. A
/// network batch (one loop turn's events, at most [`NET_EVENT_QUEUE_DEPTH`]) counts as its
/// events and is taken whole, so one turn may go past this by less than one batch.
pub const CONSENSUS_INPUT_BATCH_MAX: usize = 4096;

/// Most ticks the consensus thread feeds the core in one turn after falling behind its clock
/// (e.g. after SIGSTOP/SIGCONT). With the default 10 ms tick this is 10 s, longer than any
/// sensible election timeout; a longer gap is skipped, never replayed tick by tick.
pub const TICK_CATCH_UP_MAX: u32 = 1000;

/// Most commands the storage thread folds into one synced batch (group commit).
pub const STORAGE_BATCH_MAX: usize = 1024;

/// Client sessions remembered for at-most-once writes. Past this, the session applied least
/// recently is forgotten (deterministically: every replica forgets the same one).
pub const SESSIONS_MAX: usize = 100_000;

/// How often threads that wait for input look at expired requests.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes of one snapshot read while restoring or copying (bounded memory for any size).
pub const SNAPSHOT_COPY_BUFFER_BYTES: usize = 1 << 20;

/// Bytes counted per applied entry on top of its command, when the apply thread measures the
/// log written since the last snapshot (`snapshot_log_bytes`): about the WAL's per-entry
/// header and encoding.
pub const ENTRY_LOG_OVERHEAD_BYTES: u64 = 32;

/// Longest a `NodeHandle::snapshot` caller waits for a large snapshot to be written.
pub const SNAPSHOT_ANSWER_WAIT_MAX: Duration = Duration::from_secs(600);

/// Longest a restore that runs while its snapshot is still being received waits for the next
/// durable byte before it gives up (a transfer can be abandoned silently: a lost leader, a
/// network split; one abandoned for log entries fails the reader at once); the snapshot is
/// then restored once it is installed.
pub const SNAPSHOT_STREAM_STALL_MAX: Duration = Duration::from_secs(10);

/// A snapshot restored while it arrives has the cache of what it read dropped in steps of
/// this many bytes (one system call per step).
pub const SNAPSHOT_DROP_BEHIND_BYTES: u64 = 8 << 20;

/// `/health` answers 503 when the applied index is more than this many entries behind the
/// commit index (the node would serve reads late).
pub const HEALTH_APPLIED_LAG_ENTRIES_MAX: u64 = 1000;

/// Events the flight recorder keeps (node/flight_recorder.rs); the oldest go first.
pub const FLIGHT_RECORDER_EVENTS_MAX: usize = 4096;

/// A WAL sync slower than this is recorded in the flight recorder.
pub const SLOW_FSYNC_RECORD_MIN: Duration = Duration::from_millis(100);

/// How often the consensus thread looks for dropped peer frames to record.
pub const DROPPED_FRAMES_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for one read or write of the metrics responder (node/metrics_http.rs).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest HTTP request head the metrics responder reads; the rest is ignored.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 << 10;

// Abuse limits of the network thread (SECURITY.md). `NetConfig` starts from these; each
// refusal is logged and counted in `NetStatsSnapshot`.

/// Most simultaneous inbound connections; more are accepted and closed at once
/// (`connections_refused`).
pub const CONNECTIONS_MAX: usize = 4096;

/// Most simultaneous inbound connections from one source IP address, so that one client
/// cannot take every connection slot; more are closed at once
/// (`connections_refused_per_address`).
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 512;

/// Requests one client connection may have in flight (pending); past this the node stops
/// reading that connection until answers go out (`client_pauses`).
pub const CLIENT_REQUESTS_IN_FLIGHT_MAX: usize = 1024;

/// Time a connection has to complete its handshake (authentication included), and a started
/// frame to arrive in full; a connection that sends half a handshake or half a frame and
/// waits is closed after it (`connections_stalled`).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_limit_is_64_mib_less_384_bytes_as_documented() {
        assert_eq!(COMMAND_BYTES_MAX, (64 << 20) - 384);
    }
}
