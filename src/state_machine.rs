//! The user's replicated state machine: the role of cRaft's `AbstractPersist`.
//!
//! The node's apply thread owns the state machine. It calls [`StateMachine::apply`] for every
//! committed command exactly once per log index (retried client writes are filtered out by
//! the node's session table before they reach `apply`), [`StateMachine::query`] for
//! linearizable reads once the read index is applied, and [`StateMachine::snapshot`] /
//! [`StateMachine::restore`] for log compaction and for followers that fell behind.

use rcraft_wire::LogIndex;
use std::io::{self, Read, Write};

/// A deterministic state machine replicated by rcraft.
///
/// Determinism is the contract: the same commands applied in the same order must produce the
/// same state and the same responses on every node.
pub trait StateMachine: Send + 'static {
    /// Apply one committed command at `index` and return the response for the client.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8>;

    /// Answer a read-only query against the current state.
    fn query(&self, query: &[u8]) -> Vec<u8>;

    /// Write the whole state to `out` in the state machine's own format.
    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()>;

    /// Replace the whole state with the one read from `input` (written by `snapshot`).
    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()>;

    /// True when [`StateMachine::restore`] leaves the state untouched whenever it returns an
    /// error: it builds the new state aside and swaps it in only at the end, and it reads
    /// `input` to its end (or at least up to the last byte of what `snapshot` wrote).
    ///
    /// rcraft then restores a snapshot a leader sends while it is still being received,
    /// reading each chunk as soon as it is durable, so a follower catching up waits for about
    /// the longer of the transfer and the restore instead of their sum. When the transfer is
    /// abandoned or its bytes turn out damaged, the input fails with an error and the state
    /// must stay as it was. The input's checksum is checked only at its end, so `restore` then
    /// sees bytes nobody has verified yet: it must turn any input into an error, never a panic,
    /// an abort or an allocation sized by an unchecked length field, and pass on the input's
    /// errors rather than ignore them. The default, `false`, restores only once the whole
    /// snapshot is received and verified.
    fn restores_atomically(&self) -> bool {
        false
    }
}
