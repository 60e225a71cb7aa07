//! The one owner of the snapshots a follower receives from a leader, from the first chunk
//! handed to storage to the state machine restored from them.
//!
//! Owned by the consensus thread, which sees every party of a received snapshot in order:
//! the core hands chunks to storage (`StorageAction::WriteSnapshotChunk`), storage answers them
//! (`StorageOutcome::SnapshotChunkWritten`) and installs the final one
//! (`StorageOutcome::SnapshotInstalled`, which the core takes after the stage), the
//! core asks for the state machine to be restored (`Action::RestoreSnapshot`, forwarded to
//! the apply thread as `ApplyCommand::Restore`), and the apply thread reports it restored
//! (`ApplyProgress::Restored`). Each snapshot moves through [`Stage`]s in that order:
//!
//! ```text
//! Receiving ──stored──▶ Stored ──restore asked──▶ Restoring ──restored──▶ Installed
//!     │                    │
//!     └─ another snapshot's chunk handed: abandoned
//!                          └─ another chunk handed: the core did not need it (it held as much)
//! ```
//!
//! Invariants: at most one snapshot is `Receiving` or `Stored` (the core hands storage one
//! transfer's chunks at a time and nothing while a final chunk is with it); snapshots in
//! `Restoring` are restored in the order they were asked for (the apply thread carries out
//! its commands in order), so every `Restored` names the oldest one. A transition the
//! protocol cannot produce (storage installing a snapshot no chunk was handed for, a restore
//! asked for a snapshot storage did not install, a restore reported out of order) is a bug
//! somewhere between the threads: it is returned as a [`StageError`] naming both the event
//! and the stage, and the node stops on it, rather than skipping it.
//!
//! The apply thread's restore *while* a snapshot arrives (`ApplyCommand::SnapshotArriving`)
//! starts from here: the first durable chunk of a transfer (and the first after a refused
//! one, which may have made storage start over) announces the snapshot once.

use super::apply::ApplyCommand;
use rcraft_wire::SnapshotMeta;
use std::collections::VecDeque;
use std::fmt;

/// Where a received snapshot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Its chunks are being handed to storage and made durable in the partial file.
    Receiving,
    /// Storage verified it, made it current and restarted the log after it; the core was
    /// told and decides whether the state machine needs it.
    Stored,
    /// The apply thread was asked to restore the state machine from it.
    Restoring,
    /// The apply thread restored it (or its state already covered it).
    Installed,
}

/// An event that cannot happen in the stage the received snapshot is in: a bug between the
/// node's threads, on which the node stops ([`Fatal::SnapshotStage`](super::Fatal)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageError {
    /// What happened, naming the snapshot.
    pub(crate) event: String,
    /// The stage of the snapshot(s) concerned, as the owner saw it.
    pub(crate) stage: String,
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received snapshot out of order: {} while {} (a bug between the threads)",
            self.event, self.stage
        )
    }
}

impl std::error::Error for StageError {}

/// The snapshot at storage: being received, or stored and not yet handed on.
#[derive(Debug)]
struct AtStorage {
    meta: SnapshotMeta,
    stage: Stage,
    /// The apply thread was told this transfer is arriving (since its last refused chunk).
    announced: bool,
}

/// The received snapshots of one node's life and their stages. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct ReceivedSnapshots {
    /// The snapshot storage is receiving or just stored.
    at_storage: Option<AtStorage>,
    /// Snapshots the apply thread was asked to restore, oldest first.
    restoring: VecDeque<SnapshotMeta>,
    /// The last snapshot restored.
    installed: Option<SnapshotMeta>,
}

fn point(meta: &SnapshotMeta) -> String {
    format!("snapshot {}@{}", meta.index, meta.term)
}

impl ReceivedSnapshots {
    /// The stage of `meta`, if this owner knows it.
    #[cfg(test)]
    pub(crate) fn stage_of(&self, meta: &SnapshotMeta) -> Option<Stage> {
        if let Some(at) = self.at_storage.as_ref().filter(|at| at.meta == *meta) {
            return Some(at.stage);
        }
        if self.restoring.contains(meta) {
            return Some(Stage::Restoring);
        }
        (self.installed.as_ref() == Some(meta)).then_some(Stage::Installed)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(at) = &self.at_storage {
            parts.push(format!("{} is {:?}", point(&at.meta), at.stage));
        }
        for meta in &self.restoring {
            parts.push(format!("{} is {:?}", point(meta), Stage::Restoring));
        }
        if parts.is_empty() {
            parts.push("no received snapshot is at storage or restoring".to_string());
        }
        if let Some(meta) = &self.installed {
            parts.push(format!("last {} is {:?}", point(meta), Stage::Installed));
        }
        parts.join(", ")
    }

    fn error(&self, event: String) -> StageError {
        StageError {
            event,
            stage: self.describe(),
        }
    }

    /// The core handed storage a chunk of `meta`. A chunk of another snapshot abandons the
    /// one being received (a new leader sends another snapshot), and ends the stage of one
    /// stored that the core did not ask to restore (its log already covered it).
    pub(crate) fn chunk_handed(&mut self, meta: &SnapshotMeta) {
        if let Some(at) = &self.at_storage {
            if at.meta == *meta && at.stage == Stage::Receiving {
                return;
            }
        }
        self.at_storage = Some(AtStorage {
            meta: meta.clone(),
            stage: Stage::Receiving,
            announced: false,
        });
    }

    /// Storage made a chunk of `meta` durable (`next_offset` bytes held) or refused it. Returns
    /// the command announcing the snapshot to the apply thread when this is the first durable
    /// chunk of the transfer since it began or since a refusal. An answer about a transfer the
    /// core already abandoned for another is not about the snapshot being received and changes
    /// nothing.
    pub(crate) fn chunk_written(
        &mut self,
        meta: &SnapshotMeta,
        next_offset: u64,
        rejected: bool,
    ) -> Result<Option<ApplyCommand>, StageError> {
        let Some(at) = self.at_storage.as_mut() else {
            return Err(self.error(format!(
                "storage answered a chunk of {} and no chunk is with storage",
                point(meta)
            )));
        };
        if at.meta != *meta {
            return Ok(None);
        }
        if at.stage != Stage::Receiving {
            return Err(self.error(format!(
                "storage answered a chunk of {} after installing it",
                point(meta)
            )));
        }
        if rejected {
            at.announced = false;
        } else if next_offset > 0 && !at.announced {
            at.announced = true;
            return Ok(Some(ApplyCommand::SnapshotArriving(meta.clone())));
        }
        Ok(None)
    }

    /// Storage installed `meta` (its final chunk was handed last).
    pub(crate) fn stored(&mut self, meta: &SnapshotMeta) -> Result<(), StageError> {
        match self.at_storage.as_mut() {
            Some(at) if at.meta == *meta && at.stage == Stage::Receiving => {
                at.stage = Stage::Stored;
                Ok(())
            }
            _ => Err(self.error(format!(
                "storage installed {} and no chunk of it was being received",
                point(meta)
            ))),
        }
    }

    /// The core asks for the state machine to be restored from `meta`, which storage just
    /// installed. Returns the command for the apply thread.
    pub(crate) fn restore_asked(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<ApplyCommand, StageError> {
        match self.at_storage.take() {
            Some(at) if at.meta == *meta && at.stage == Stage::Stored => {
                self.restoring.push_back(meta.clone());
                Ok(ApplyCommand::Restore(meta.clone()))
            }
            other => {
                self.at_storage = other;
                Err(self.error(format!(
                    "the core asked to restore {} which storage has not installed",
                    point(meta)
                )))
            }
        }
    }

    /// The apply thread restored `meta` (or found its state already covering it).
    pub(crate) fn restored(&mut self, meta: &SnapshotMeta) -> Result<(), StageError> {
        if self.restoring.front() != Some(meta) {
            return Err(self.error(format!(
                "the apply thread reported {} restored",
                point(meta)
            )));
        }
        self.installed = self.restoring.pop_front();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::{LogIndex, Membership, NodeId, Term};

    fn snapshot(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(index),
            term: Term(2),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
            membership_entry: None,
            size_bytes: 100,
            checksum: index as u32,
        }
    }

    fn announced(command: Option<ApplyCommand>) -> Option<LogIndex> {
        match command {
            Some(ApplyCommand::SnapshotArriving(meta)) => Some(meta.index),
            Some(_) => panic!("not an announcement"),
            None => None,
        }
    }

    fn stored_and_restoring(received: &mut ReceivedSnapshots, meta: &SnapshotMeta) {
        received.chunk_handed(meta);
        received.stored(meta).unwrap();
        let command = received.restore_asked(meta).unwrap();
        assert!(matches!(command, ApplyCommand::Restore(m) if m == *meta));
    }

    #[test]
    fn a_snapshot_goes_through_every_stage_in_order() {
        let mut received = ReceivedSnapshots::default();
        let meta = snapshot(10);
        received.chunk_handed(&meta);
        assert_eq!(received.stage_of(&meta), Some(Stage::Receiving));
        // Announced once, at the first durable chunk.
        assert_eq!(
            announced(received.chunk_written(&meta, 0, false).unwrap()),
            None
        );
        assert_eq!(
            announced(received.chunk_written(&meta, 40, false).unwrap()),
            Some(LogIndex(10))
        );
        received.chunk_handed(&meta);
        assert_eq!(
            announced(received.chunk_written(&meta, 80, false).unwrap()),
            None
        );
        // A refusal (storage may have started over) announces it again at the next one.
        assert_eq!(
            announced(received.chunk_written(&meta, 40, true).unwrap()),
            None
        );
        assert_eq!(
            announced(received.chunk_written(&meta, 60, false).unwrap()),
            Some(LogIndex(10))
        );
        received.stored(&meta).unwrap();
        assert_eq!(received.stage_of(&meta), Some(Stage::Stored));
        received.restore_asked(&meta).unwrap();
        assert_eq!(received.stage_of(&meta), Some(Stage::Restoring));
        received.restored(&meta).unwrap();
        assert_eq!(received.stage_of(&meta), Some(Stage::Installed));
    }

    #[test]
    fn storage_installing_a_snapshot_that_was_not_being_received_is_an_error() {
        let mut received = ReceivedSnapshots::default();
        let error = received.stored(&snapshot(10)).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("storage installed snapshot 10@2"),
            "{error}"
        );
        // Another snapshot's chunks were handed since: not that one either.
        received.chunk_handed(&snapshot(10));
        received.chunk_handed(&snapshot(20));
        let error = received.stored(&snapshot(10)).unwrap_err();
        assert!(
            error.stage.contains("snapshot 20@2 is Receiving"),
            "{error}"
        );
        // Nor twice.
        received.stored(&snapshot(20)).unwrap();
        assert!(received.stored(&snapshot(20)).is_err());
    }

    #[test]
    fn a_restore_asked_for_a_snapshot_storage_did_not_install_is_an_error() {
        let mut received = ReceivedSnapshots::default();
        let meta = snapshot(10);
        assert!(received.restore_asked(&meta).is_err());
        received.chunk_handed(&meta);
        let Err(error) = received.restore_asked(&meta) else {
            panic!("restore asked while receiving");
        };
        assert!(error.stage.contains("is Receiving"), "{error}");
        // The failed transition changed nothing.
        assert_eq!(received.stage_of(&meta), Some(Stage::Receiving));
        received.stored(&meta).unwrap();
        received.restore_asked(&meta).unwrap();
        // Asked twice: the second has no stored snapshot behind it.
        assert!(received.restore_asked(&meta).is_err());
    }

    #[test]
    fn restores_are_reported_in_the_order_they_were_asked_for() {
        let mut received = ReceivedSnapshots::default();
        let (older, newer) = (snapshot(10), snapshot(20));
        stored_and_restoring(&mut received, &older);
        stored_and_restoring(&mut received, &newer);
        let error = received.restored(&newer).unwrap_err();
        assert!(error.event.contains("snapshot 20@2 restored"), "{error}");
        assert!(
            error.stage.contains("snapshot 10@2 is Restoring"),
            "{error}"
        );
        received.restored(&older).unwrap();
        received.restored(&newer).unwrap();
        assert!(received.restored(&newer).is_err(), "reported twice");
    }

    #[test]
    fn answers_after_the_install_or_with_nothing_handed_are_errors() {
        let mut received = ReceivedSnapshots::default();
        let meta = snapshot(10);
        assert!(received.chunk_written(&meta, 10, false).is_err());
        received.chunk_handed(&meta);
        received.stored(&meta).unwrap();
        assert!(received.chunk_written(&meta, 10, false).is_err());
    }

    #[test]
    fn a_transfer_abandoned_for_another_ignores_its_late_answers() {
        let mut received = ReceivedSnapshots::default();
        let (old, new) = (snapshot(10), snapshot(20));
        received.chunk_handed(&old);
        received.chunk_handed(&new);
        assert_eq!(
            announced(received.chunk_written(&old, 50, false).unwrap()),
            None
        );
        assert_eq!(
            announced(received.chunk_written(&new, 50, false).unwrap()),
            Some(LogIndex(20))
        );
        // A stored snapshot the core did not restore (its log covered it) gives way to the
        // next transfer.
        received.stored(&new).unwrap();
        received.chunk_handed(&snapshot(30));
        assert_eq!(received.stage_of(&new), None);
        assert_eq!(received.stage_of(&snapshot(30)), Some(Stage::Receiving));
    }
}
