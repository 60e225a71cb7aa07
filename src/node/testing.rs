//! The node's consensus-thread handler, storage thread, apply-thread handler and client
//! session table, reachable by the cluster simulator (`tests/sim/`), which drives the
//! consensus handler for every node, runs the storage thread beside its model of the disk and
//! the apply handler and session table inside its state
//! machine; [`SimPeerNet`] (`net/sim_link.rs`) is the network thread's connection logic over
//! in-memory streams, which carries the simulator's messages as bytes in half its seeds. Hidden
//! from the documentation and not part of the API: it exists so that the simulator drives the
//! same code the consensus, storage, apply and network threads run, not a copy.
//!
//! Owned by one simulated node; single-threaded. Storage commands queue until
//! [`SimStorage::run`] carries them out as one drained batch, exactly as the thread's loop
//! would. [`SimConsensus`] is fed the simulator's inputs with its simulated time, as the
//! consensus thread feeds the handler what it receives with the time it takes it.

use super::apply::{ApplyCommand, ApplyHandler, ApplyProgress, SnapshotPolicy};
use super::consensus_logic::{ConsensusLogic, ConsensusSettings, Received};
pub use super::net::sim_link::{SimClientReceived, SimNetSettings, SimPeerNet, SimSend};
use super::net::{ClientConnId, NetEvent};
use super::sessions::{SessionCheck, SessionTable};
use super::snapshot_files::{
    OpenSnapshot, SnapshotFileError, SnapshotFiles, SnapshotWriteFn, StoreSnapshots, snapshot_meta,
};
use super::snapshot_format::{read_snapshot, write_snapshot};
use super::storage_error::StorageError;
use super::storage_io::{StorageCommand, StorageEvent};
use super::storage_thread::{OpenedStorage, open_storage_with};
use super::transport::ReplyTo;
use crate::core::{
    ApplyOutcome, CoreConfig, HardState, Input, ReadEntriesError, RecoveredState, Replica,
    SelfDemotion, StorageAction, StorageOutcome,
};
use rcraft_storage::SimFs;
use rcraft_wire::{
    ClientRequest, ClientRequestBody, ClientResponseBody, Entry, LogIndex, Membership, Message,
    NodeId, Session, SnapshotMeta, Term,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// WAL segment size of a simulated node: small, so that batches roll segments.
const SEGMENT_BYTES: u64 = 16 << 10;

/// Why [`SimStorage::run`] could not carry out a batch.
#[derive(Debug)]
pub enum SimStorageError {
    /// The storage thread stopped on this error (fail-stop), as the node's would.
    Stopped(StorageError),
    /// The thread reported something that is not for the core (described), which no command
    /// a simulated node queues asks for.
    NotForTheCore(String),
}

impl std::fmt::Display for SimStorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimStorageError::Stopped(error) => write!(f, "storage stopped: {error}"),
            SimStorageError::NotForTheCore(event) => {
                write!(f, "storage reported {event}, which is not for the core")
            }
        }
    }
}

impl std::error::Error for SimStorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimStorageError::Stopped(error) => Some(error),
            SimStorageError::NotForTheCore(_) => None,
        }
    }
}

/// One simulated node's storage thread over a simulated file system.
pub struct SimStorage {
    opened: OpenedStorage,
    queue: Vec<StorageCommand>,
}

impl SimStorage {
    /// Opens the node's files under `/data` on `fs` (creating them the first time) and
    /// returns the storage with what it recovered.
    pub fn open(
        fs: &SimFs,
        initial: Membership,
    ) -> Result<(SimStorage, RecoveredState), StorageError> {
        let fs = Arc::new(fs.clone());
        let opened = open_storage_with(fs, Path::new("/data"), initial, SEGMENT_BYTES)?;
        let recovered = opened.recovered.clone();
        let storage = SimStorage {
            opened,
            queue: Vec::new(),
        };
        Ok((storage, recovered))
    }

    /// Queues a persist action.
    pub fn persist(&mut self, seq: u64, hard_state: Option<HardState>, entries: Vec<Entry>) {
        self.queue
            .push(StorageCommand::Core(StorageAction::Persist {
                seq,
                hard_state,
                entries,
            }));
    }

    /// Queues a compaction through `through`.
    pub fn compact(&mut self, through: LogIndex) {
        self.queue
            .push(StorageCommand::Core(StorageAction::CompactLog { through }));
    }

    /// Queues the core's list of snapshots in use (`StorageAction::KeepSnapshots`).
    pub fn keep(&mut self, in_use: Vec<SnapshotMeta>) {
        self.queue
            .push(StorageCommand::Core(StorageAction::KeepSnapshots {
                in_use,
            }));
    }

    /// Queues a received chunk from leader `from` (`chunk_crc` is computed here, as the
    /// leader would).
    pub fn write_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        self.queue
            .push(StorageCommand::Core(StorageAction::WriteSnapshotChunk {
                from,
                meta,
                offset,
                chunk_crc: crc32c::crc32c(&data),
                data,
                done,
            }));
    }

    /// Reads log entries `[low, high]` (up to `max_bytes`) from the WAL now, as the thread
    /// answers `StorageAction::ReadEntries` (with the same error the core is told): without
    /// waiting for the queued commands, since the core reads only entries a confirmed
    /// persist wrote.
    pub fn read_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, ReadEntriesError> {
        self.opened.thread.read_entries(low, high, max_bytes)
    }

    /// Persists queued before a command not yet run.
    pub fn queued_persists(&self) -> usize {
        self.queue
            .iter()
            .filter(|c| matches!(c, StorageCommand::Core(StorageAction::Persist { .. })))
            .count()
    }

    /// Carries out the first `count` queued commands (all when `None`) as one batch and
    /// returns what the thread reported for the core, in order, exactly as the thread sends
    /// it; an error is the thread's fail-stop.
    pub fn run(&mut self, count: Option<usize>) -> Result<Vec<StorageOutcome>, SimStorageError> {
        let count = count.unwrap_or(self.queue.len()).min(self.queue.len());
        let batch: Vec<StorageCommand> = self.queue.drain(..count).collect();
        let (result, events) = self.opened.thread.carry_out_batch(batch);
        result.map_err(SimStorageError::Stopped)?;
        events
            .into_iter()
            .map(|event| match event {
                StorageEvent::Core(outcome) => Ok(outcome),
                other => Err(SimStorageError::NotForTheCore(format!("{other:?}"))),
            })
            .collect()
    }

    /// Carries out every queued command up to and including the persist `seq`.
    pub fn run_through(&mut self, seq: u64) -> Result<Vec<StorageOutcome>, SimStorageError> {
        let count = self
            .queue
            .iter()
            .position(|c| matches!(c, StorageCommand::Core(StorageAction::Persist { seq: s, .. }) if *s >= seq))
            .map_or(self.queue.len(), |at| at + 1);
        self.run(Some(count))
    }

    /// Writes a local snapshot of `bytes` described by `meta` (durable on return), as the
    /// apply thread does.
    pub fn write_local_snapshot(
        &self,
        meta: &SnapshotMeta,
        bytes: &[u8],
    ) -> Result<(), SnapshotFileError> {
        let mut files = StoreSnapshots::new(self.opened.snapshots.clone());
        let mut write = |out: &mut dyn std::io::Write| out.write_all(bytes);
        let written = files.save(meta.clone(), &mut write)?;
        if written.checksum != meta.checksum {
            return Err(SnapshotFileError::Meta(StorageError::Inconsistent(
                format!(
                    "snapshot {} written with data CRC {:08x}, described as {:08x}",
                    meta.index, written.checksum, meta.checksum
                ),
            )));
        }
        Ok(())
    }

    /// The bytes of the current snapshot, if any.
    pub fn current_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
        let store = &self.opened.snapshots;
        let Some(info) = store.latest().map_err(SnapshotFileError::Store)? else {
            return Ok(None);
        };
        let meta = snapshot_meta(&info).map_err(SnapshotFileError::Meta)?;
        let bytes = store
            .read_chunk(&info, 0, meta.size_bytes as usize)
            .map_err(SnapshotFileError::Store)?;
        Ok(Some((meta, bytes)))
    }
}

/// The apply thread's client session table, for the simulated state machine: the same table
/// and the same snapshot encoding the apply thread uses, so the simulator's replicas dedup
/// retried writes exactly as a node does.
#[derive(Debug, Default)]
pub struct SimSessions {
    table: SessionTable,
}

/// What the session table decides for a command (see the apply thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimSessionCheck {
    /// A registration: create a session (its client id is the entry's index).
    Register,
    /// A new write of a registered client: apply it.
    Apply,
    /// A retry of the last applied write: answer with its saved response, do not apply.
    Duplicate(Vec<u8>),
    /// Older than the last applied write: not applied, outcome unknown to the client.
    Stale,
    /// The client is not in the table: refused, never applied (a definite failure).
    Expired,
    /// Sequence 0 from a client other than 0: refused.
    ReservedSequence,
}

impl SimSessions {
    /// An empty table that remembers at most `capacity` clients (a node's is
    /// [`SESSIONS_MAX`](super::limits::SESSIONS_MAX)); past it the least recent is forgotten.
    pub fn with_capacity(capacity: usize) -> SimSessions {
        SimSessions {
            table: SessionTable::with_capacity(capacity.max(1)),
        }
    }

    /// Decides what to do with `session`'s command at the next applied index.
    pub fn check(&self, session: Session) -> SimSessionCheck {
        match self.table.check(session) {
            SessionCheck::Register => SimSessionCheck::Register,
            SessionCheck::Apply => SimSessionCheck::Apply,
            SessionCheck::Duplicate(response) => SimSessionCheck::Duplicate(response),
            SessionCheck::Stale => SimSessionCheck::Stale,
            SessionCheck::Expired => SimSessionCheck::Expired,
            SessionCheck::ReservedSequence => SimSessionCheck::ReservedSequence,
        }
    }

    /// Creates the session of the registration at `index`; returns its client id.
    pub fn register(&mut self, index: LogIndex) -> u64 {
        self.table.register(index)
    }

    /// Records that `session`'s write was applied at `index` with `response`.
    pub fn record(&mut self, session: Session, index: LogIndex, response: Vec<u8>) {
        self.table.record(session, index, response);
    }

    /// A node snapshot's bytes: this table, then `state` (the state machine's own snapshot),
    /// in the apply thread's format (`snapshot_format.rs`).
    pub fn snapshot_bytes(&self, state: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let adapter = StateBytes(state.to_vec());
        write_snapshot(&mut out, &self.table, &adapter)
            .unwrap_or_else(|e| unreachable!("writing a snapshot to memory failed: {e}"));
        out
    }

    /// Reads a node snapshot's bytes back into a table of `capacity`: the session table and
    /// the state machine's bytes.
    pub fn restore(
        bytes: &[u8],
        capacity: usize,
    ) -> Result<(SimSessions, Vec<u8>), std::io::Error> {
        let mut table = SessionTable::with_capacity(capacity.max(1));
        let mut adapter = StateBytes(Vec::new());
        let mut input = bytes;
        read_snapshot(&mut input, &mut table, &mut adapter)?;
        Ok((SimSessions { table }, adapter.0))
    }
}

/// A state machine that is only its snapshot bytes (the simulator keeps its own state).
struct StateBytes(Vec<u8>);

impl crate::StateMachine for StateBytes {
    fn apply(&mut self, _index: LogIndex, _command: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.0)
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.0.clear();
        input.read_to_end(&mut self.0).map(|_| ())
    }
}

/// A snapshot held in memory: its description and its bytes (sessions and state).
pub type SimSnapshot = (SnapshotMeta, Vec<u8>);

/// The apply thread's snapshot files for the simulator: the current snapshot, in memory.
/// The simulator's disk model owns the durable copy; this slot is what the handler reads
/// when it restores and where the snapshot it writes lands.
#[derive(Clone, Default)]
struct SimSnapshotFiles(Arc<std::sync::Mutex<Option<SimSnapshot>>>);

impl SimSnapshotFiles {
    fn set(&self, snapshot: Option<SimSnapshot>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    fn get(&self) -> Option<SimSnapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl SnapshotFiles for SimSnapshotFiles {
    fn save(
        &mut self,
        meta: SnapshotMeta,
        write: SnapshotWriteFn<'_>,
    ) -> Result<SnapshotMeta, SnapshotFileError> {
        let mut data = Vec::new();
        write(&mut data).map_err(SnapshotFileError::StateMachine)?;
        let meta = SnapshotMeta {
            size_bytes: data.len() as u64,
            checksum: crc32c::crc32c(&data),
            ..meta
        };
        self.set(Some((meta.clone(), data)));
        Ok(meta)
    }

    fn open_current(&mut self) -> Result<Option<OpenSnapshot>, SnapshotFileError> {
        Ok(self.get().map(|(meta, data)| {
            let reader: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(data));
            (meta, reader)
        }))
    }
}

/// What applying one entry answered the proposal waiting for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimAnswer {
    /// Success, with the state machine's response (a registration's: the client id, u64 LE).
    Ok(Vec<u8>),
    /// Refused: `definite` when it did not and will not take effect.
    Refused {
        /// True for a definite failure.
        definite: bool,
        /// The message.
        message: String,
    },
}

/// The apply thread's handler (`ApplyHandler`) for the cluster simulator: the same code
/// the apply thread runs (sessions, proposals answered, snapshots written and restored),
/// driven one command at a time on the simulator's thread, with the simulator's state
/// machine and the current snapshot in memory.
pub struct SimApply {
    handler: ApplyHandler,
    files: SimSnapshotFiles,
}

/// The simulator's clock: durations measured by the handler are only logged.
fn sim_clock() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Far enough that no waiter of the simulator ever expires.
fn never() -> Instant {
    sim_clock() + Duration::from_secs(1 << 32)
}

impl SimApply {
    /// The handler over `state_machine`, restored from `current` (the durable snapshot) if
    /// any; its session table remembers at most `sessions_max` clients. Snapshots are taken
    /// only when asked ([`SimApply::take_snapshot`]), and the core keeps `retain_entries`
    /// entries behind each.
    pub fn new(
        state_machine: Box<dyn crate::StateMachine>,
        current: Option<SimSnapshot>,
        initial: Membership,
        sessions_max: usize,
        retain_entries: u64,
    ) -> Result<SimApply, String> {
        let files = SimSnapshotFiles::default();
        files.set(current);
        let policy = SnapshotPolicy {
            every_entries: 0,
            log_bytes: 0,
            retain_entries,
        };
        let sessions = SessionTable::with_capacity(sessions_max.max(1));
        let handler = ApplyHandler::new(
            state_machine,
            Box::new(files.clone()),
            initial,
            policy,
            sessions,
            sim_clock,
        )
        .map_err(|e| e.to_string())?;
        Ok(SimApply { handler, files })
    }

    /// Highest applied index, the term of its entry, and the configuration in force there.
    pub fn applied(&self) -> (LogIndex, Term, Membership) {
        let (term, membership) = self.handler.applied_term_and_membership();
        (self.handler.applied(), term, membership.clone())
    }

    /// Applies `entries` (committed, in order) as the apply thread applies one batch it was
    /// handed: one `ApplyCommand::Entries` through the handler (sessions and dedup included),
    /// then the handler's report of the batch to the core, as the thread's loop makes it after
    /// every batch. Each entry is awaited as if proposed here in its own term, so each one is
    /// answered (a waiter registered before its entry applies, as the consensus thread's
    /// `WaitProposal` is).
    pub fn apply_batch(&mut self, entries: Vec<Entry>) -> Result<SimApplied, String> {
        let before = self.handler.applied();
        let awaited: Vec<LogIndex> = entries.iter().map(|e| e.index).collect();
        for entry in &entries {
            self.handler
                .handle(ApplyCommand::WaitProposal {
                    index: entry.index,
                    term: entry.term,
                    reply: sim_reply(entry.index),
                    deadline: never(),
                })
                .map_err(|e| e.to_string())?;
        }
        self.handler
            .handle(ApplyCommand::Entries(entries))
            .map_err(|e| e.to_string())?;
        self.handler.report_applied(before);
        let mut answers = self.answers();
        let mut replies = Vec::with_capacity(awaited.len());
        let answers = awaited
            .into_iter()
            .map(|index| {
                let (answer, reply) = answers
                    .remove(&index)
                    .ok_or_else(|| format!("entry {index} was applied without an answer"))?;
                replies.push(reply);
                Ok((index, answer))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut reported = None;
        for progress in self.handler.take_progress() {
            match progress {
                ApplyProgress::Core(outcome @ ApplyOutcome::Applied { .. })
                    if reported.is_none() =>
                {
                    reported = Some(outcome);
                }
                other => {
                    return Err(format!(
                        "applying entries reported {other:?}, which a batch of entries never \
                         does in a simulated node"
                    ));
                }
            }
        }
        Ok(SimApplied {
            answers,
            replies,
            reported,
        })
    }

    /// Restores the state machine from the installed snapshot `meta` as the apply thread does
    /// on `ApplyCommand::Restore`, reading `current` (the snapshot storage holds now: `meta`,
    /// or a newer one installed since).
    pub fn restore(&mut self, meta: SnapshotMeta, current: SimSnapshot) -> Result<(), String> {
        self.files.set(Some(current));
        self.handler
            .handle(ApplyCommand::Restore(meta))
            .map_err(|e| e.to_string())?;
        let _ = self.handler.take_progress();
        Ok(())
    }

    /// Takes a snapshot of every applied entry as the apply thread does when asked
    /// (`ApplyCommand::TakeSnapshot`): the snapshot written and what the handler reports to
    /// the core (`ApplyOutcome::SnapshotTaken`, for [`SimConsensus::report`] as
    /// `Input::Apply`); `None` when the latest one already covers them (or nothing is
    /// applied).
    pub fn take_snapshot(&mut self) -> Result<Option<(SimSnapshot, ApplyOutcome)>, String> {
        self.handler
            .handle(ApplyCommand::TakeSnapshot {
                reply: sim_reply(LogIndex(0)),
            })
            .map_err(|e| e.to_string())?;
        let _ = self.handler.take_replies();
        let taken = self
            .handler
            .take_progress()
            .into_iter()
            .find_map(|p| match p {
                ApplyProgress::Core(outcome @ ApplyOutcome::SnapshotTaken { .. }) => Some(outcome),
                _ => None,
            });
        Ok(taken.and_then(|outcome| Some((self.files.get()?, outcome))))
    }

    /// The answers the handler gave since last asked, by the index they wait on, with the
    /// reply as the handler gave it.
    fn answers(&mut self) -> BTreeMap<LogIndex, (SimAnswer, ClientResponseBody)> {
        let mut answers = BTreeMap::new();
        for (to, body) in self.handler.take_replies() {
            let ReplyTo::Client { request_id, .. } = to else {
                continue;
            };
            let answer = match body.clone() {
                ClientResponseBody::Ok { result, .. } => SimAnswer::Ok(result),
                ClientResponseBody::Error { definite, message } => {
                    SimAnswer::Refused { definite, message }
                }
                other => SimAnswer::Refused {
                    definite: false,
                    message: format!("unexpected answer {other:?}"),
                },
            };
            answers.insert(LogIndex(request_id), (answer, body));
        }
        answers
    }
}

/// What applying one batch of committed entries produced ([`SimApply::apply_batch`]).
#[derive(Debug)]
pub struct SimApplied {
    /// Each entry's answer, in log order.
    pub answers: Vec<(LogIndex, SimAnswer)>,
    /// The same answers as the handler gave them, for the client waiting on the entry (the
    /// network thread writes these).
    pub replies: Vec<ClientResponseBody>,
    /// What the handler reports to the core for the batch (`ApplyOutcome::Applied`, for
    /// [`SimConsensus::report`] as `Input::Apply`); `None` when the applied index did not move.
    pub reported: Option<ApplyOutcome>,
}

/// Where the simulator's waiter for `index` is answered (no network: the answer is taken
/// from the handler).
fn sim_reply(index: LogIndex) -> ReplyTo {
    ReplyTo::Client {
        conn: ClientConnId(0),
        request_id: index.0,
    }
}

/// The connection every simulated client request arrives on (the simulator tells its
/// requests apart by request id).
const SIM_CONN: ClientConnId = ClientConnId(0);

/// The settings of one simulated node's consensus handler.
#[derive(Clone, Debug)]
pub struct SimConsensusSettings {
    /// Servers in the cluster (node ids `0..servers`).
    pub servers: usize,
    /// Length of one tick, ms of simulated time.
    pub tick_ms: u64,
    /// How long a client request may wait inside the node, ms.
    pub rpc_timeout_ms: u64,
    /// Applied index at start (the restored snapshot's).
    pub applied: LogIndex,
}

/// One apply command (the consensus thread's commands to the apply thread, in the
/// simulator's terms: a waiting request is named by the request id it was sent with).
#[derive(Clone, Debug)]
pub enum SimApplyCommand {
    /// Committed entries to apply in order.
    Entries(Vec<Entry>),
    /// The write `request` was appended at (`index`, `term`): answer it once applied.
    WaitProposal {
        /// The request id.
        request: u64,
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// The read `request` is confirmed at `index`: serve it once applied through it.
    Read {
        /// The request id.
        request: u64,
        /// The read index.
        index: LogIndex,
    },
    /// A received snapshot is current on disk: restore the state machine from it (unless it
    /// already covers it).
    Restore(SnapshotMeta),
    /// A received snapshot's chunks are arriving.
    SnapshotArriving(SnapshotMeta),
}

/// What one turn of a simulated node's consensus handler decided, per destination, each
/// group in the order it must be carried out.
#[derive(Debug, Default)]
pub struct SimTurn {
    /// To its storage.
    pub storage: Vec<StorageAction>,
    /// To its state machine.
    pub apply: Vec<SimApplyCommand>,
    /// To its peers.
    pub peers: Vec<Message>,
    /// To its clients: (connection, request id, answer); connection 0 is the one
    /// [`SimConsensus::client`]'s requests arrive on.
    pub replies: Vec<(u64, u64, ClientResponseBody)>,
    /// Gray-failure self-demotions the core decided.
    pub self_demotions: Vec<SelfDemotion>,
}

/// One simulated node's consensus thread: the same handler the thread runs
/// (`ConsensusLogic`), fed one input at a time with the simulated time in ms. It runs without
/// the handler's observer (operators' log lines and metrics, timed by the wall clock): the
/// simulator checks what those would tell itself, and reads no clock.
pub struct SimConsensus {
    logic: ConsensusLogic,
    /// Simulated time 0 is `base + tick`.
    base: Instant,
    tick: Duration,
}

impl SimConsensus {
    /// Builds the handler around a replica recovered from `recovered`; its first tick falls
    /// due at `first_tick_ms`.
    pub fn start(
        config: CoreConfig,
        recovered: RecoveredState,
        settings: &SimConsensusSettings,
        first_tick_ms: u64,
    ) -> Result<SimConsensus, String> {
        let replica = Replica::new(config, recovered).map_err(|e| e.to_string())?;
        let tick = Duration::from_millis(settings.tick_ms.max(1));
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let node_settings = ConsensusSettings {
            servers: vec![address; settings.servers],
            tick,
            rpc_timeout: Duration::from_millis(settings.rpc_timeout_ms),
            applied: settings.applied,
            snapshot_chunk_bytes: 1 << 20,
            lost_alone: None,
        };
        // Simulated time `ms` is `base + tick + ms`: the handler's clock starts one tick
        // before its first tick is due.
        let base = Instant::now();
        let start = base + Duration::from_millis(first_tick_ms);
        Ok(SimConsensus {
            logic: ConsensusLogic::new(replica, node_settings, start).unobserved(),
            base,
            tick,
        })
    }

    /// The instant of simulated time `ms`.
    fn at(&self, ms: u64) -> Instant {
        self.base + self.tick + Duration::from_millis(ms)
    }

    /// The core, for the simulator's checkers.
    pub fn replica(&self) -> &Replica {
        self.logic.replica()
    }

    /// Feeds the ticks due at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        let now = self.at(now_ms);
        self.logic.tick(now);
    }

    /// Feeds a peer's message at `now_ms`.
    pub fn message(&mut self, message: Message, now_ms: u64) {
        let now = self.at(now_ms);
        let item = Received::Net(vec![NetEvent::Peer(message)]);
        self.logic.receive(item, now);
    }

    /// Feeds a client's request (`request_id` names it in the answers) at `now_ms`.
    pub fn client(&mut self, request_id: u64, body: ClientRequestBody, now_ms: u64) {
        let now = self.at(now_ms);
        let event = NetEvent::Client {
            conn: SIM_CONN,
            request: ClientRequest { request_id, body },
            received: now,
        };
        self.logic.receive(Received::Net(vec![event]), now);
    }

    /// Feeds what the network thread decoded from client connections
    /// ([`SimPeerNet::client_receive`]) at `now_ms`, as one batch of network events; each
    /// request's receive time is taken as `now_ms` (the thread stamps it with its clock,
    /// which a simulated node never reads).
    pub fn net_events(&mut self, events: Vec<NetEvent>, now_ms: u64) {
        if events.is_empty() {
            return;
        }
        let now = self.at(now_ms);
        let events = (events.into_iter())
            .map(|event| match event {
                NetEvent::Client { conn, request, .. } => NetEvent::Client {
                    conn,
                    request,
                    received: now,
                },
                other => other,
            })
            .collect();
        self.logic.receive(Received::Net(events), now);
    }

    /// Feeds what storage or the state machine reported, in the core's terms: storage's
    /// outcomes (`Input::Storage`) as the storage thread sends them, the state machine's
    /// (`Input::Apply`) as the apply thread does. Errs for an input no thread sends.
    pub fn report(&mut self, input: Input, now_ms: u64) -> Result<(), String> {
        let now = self.at(now_ms);
        let item = match input {
            Input::Storage(outcome) => Received::Storage(StorageEvent::Core(outcome)),
            Input::Apply(outcome) => Received::Apply(ApplyProgress::Core(outcome)),
            other => return Err(format!("no node thread reports {other:?}")),
        };
        self.logic.receive(item, now);
        Ok(())
    }

    /// The apply side restored the received snapshot `meta` (`ApplyProgress::Restored`).
    pub fn restored(&mut self, meta: SnapshotMeta, now_ms: u64) {
        let now = self.at(now_ms);
        self.logic
            .receive(Received::Apply(ApplyProgress::Restored(meta)), now);
    }

    /// A fault with no node input: the core campaigns at once.
    pub fn campaign(&mut self) {
        self.logic.step_core(Input::Campaign);
    }

    /// Ends the turn at `now_ms` and returns what it decided. Errs with the node's fatal
    /// error, or for a command a simulated node cannot carry out.
    pub fn finish_turn(&mut self, now_ms: u64) -> Result<SimTurn, String> {
        let now = self.at(now_ms);
        self.logic.finish_turn(now);
        let outbox = self.logic.outbox();
        let mut turn = SimTurn {
            peers: std::mem::take(&mut outbox.peers),
            self_demotions: std::mem::take(&mut outbox.self_demotions),
            ..SimTurn::default()
        };
        outbox.members = None;
        outbox.statuses.clear();
        for command in std::mem::take(&mut outbox.storage) {
            turn.storage.push(sim_storage_command(command)?);
        }
        for command in std::mem::take(&mut outbox.apply) {
            turn.apply.push(sim_apply_command(command)?);
        }
        for (to, body) in std::mem::take(&mut outbox.replies) {
            let ReplyTo::Client { conn, request_id } = to else {
                return Err("an answer to an API caller the simulator has none of".into());
            };
            turn.replies.push((conn.0, request_id, body));
        }
        match self.logic.take_failure() {
            Some(reason) => Err(format!("the node stopped: {reason}")),
            None => Ok(turn),
        }
    }
}

fn sim_request_id(to: &ReplyTo) -> Result<u64, String> {
    match to {
        ReplyTo::Client { request_id, .. } => Ok(*request_id),
        ReplyTo::Api(_) => Err("an answer to an API caller the simulator has none of".into()),
    }
}

fn sim_storage_command(command: StorageCommand) -> Result<StorageAction, String> {
    match command {
        StorageCommand::Core(action) => Ok(action),
        StorageCommand::ReadSnapshotForClient { .. } => {
            Err("a backup read, which simulated clients never ask for".into())
        }
    }
}

fn sim_apply_command(command: ApplyCommand) -> Result<SimApplyCommand, String> {
    Ok(match command {
        ApplyCommand::Entries(entries) => SimApplyCommand::Entries(entries),
        ApplyCommand::WaitProposal {
            index, term, reply, ..
        } => SimApplyCommand::WaitProposal {
            request: sim_request_id(&reply)?,
            index,
            term,
        },
        ApplyCommand::Read { index, reply, .. } => SimApplyCommand::Read {
            request: sim_request_id(&reply)?,
            index,
        },
        ApplyCommand::Restore(meta) => SimApplyCommand::Restore(meta),
        ApplyCommand::SnapshotArriving(meta) => SimApplyCommand::SnapshotArriving(meta),
        ApplyCommand::Subscribe(_)
        | ApplyCommand::TakeSnapshot { .. }
        | ApplyCommand::ReplaceSnapshot { .. } => {
            return Err("an apply command simulated requests never cause".into());
        }
    })
}
