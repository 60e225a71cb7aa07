//! Every fixed limit of the consensus core, in one place (DESIGN.md §10).
//!
//! Tunable limits live in `CoreConfig`; these are the ones that follow from the algorithm.

/// Lease reads (thesis §6.4.1) assume the tick rates of any two nodes differ by at most
/// 1/`LEASE_DRIFT_DIVISOR` (12.5 %). A lease taken when a heartbeat was sent lasts
/// `election_timeout_min_ticks * (1 - 1/LEASE_DRIFT_DIVISOR) - 1` ticks: followers that
/// answered that heartbeat will not vote for anyone else until `election_timeout_min_ticks`
/// of *their* ticks have passed, which under the drift bound is later than the lease's end.
pub const LEASE_DRIFT_DIVISOR: u64 = 8;

/// How many recent heartbeat rounds remember their send tick (for lease reads). Older
/// acknowledgements are too old to extend a lease anyway.
pub const HEARTBEAT_ROUNDS_REMEMBERED: usize = 64;

/// Most ReadIndex requests queued at a leader (waiting for its first commit or for a
/// heartbeat round); beyond it reads are refused as overloaded.
pub const PENDING_READS_MAX: usize = 4096;

/// Most follower reads one follower waits on the leader's read index for; beyond it a
/// follower read is refused with `NotLeader` and the leader hint, so the client asks the
/// leader instead.
pub const FORWARDED_READS_MAX: usize = 4096;

const _: () = assert!(LEASE_DRIFT_DIVISOR >= 2);
const _: () = assert!(HEARTBEAT_ROUNDS_REMEMBERED > 0);
