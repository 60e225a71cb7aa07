//! The core's error type: what can be wrong with the inputs given at construction.
//!
//! Inputs given to `Replica::step` never fail: a message that makes no sense in the current
//! state (stale term, unknown sender, duplicate) is ignored, as Raft requires.

use std::fmt;

/// Why a `Replica` could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreError {
    /// The configuration is unusable (e.g. an empty election timeout range).
    Config(String),
    /// The recovered log is not contiguous or its terms decrease.
    RecoveredLog(String),
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Config(why) => write!(f, "invalid core configuration: {why}"),
            CoreError::RecoveredLog(why) => write!(f, "invalid recovered log: {why}"),
        }
    }
}

impl std::error::Error for CoreError {}

/// Result alias of the core.
pub type Result<T> = std::result::Result<T, CoreError>;
