//! What this node knows of who is who, and the identity checks of every peer handshake: the
//! cluster id (both sides must agree) and the incarnation of each peer's data dir.
//!
//! Owned by the network thread. A peer handshake from another cluster is refused, and so is
//! one whose incarnation differs from the one recorded for its node id: the node's data dir
//! was wiped or replaced, so it has forgotten its votes and the entries it acknowledged, and
//! letting it vote or count towards a commit quorum again could lose committed writes. Both
//! are refused before a single frame of the peer is read, so neither can make anyone's term
//! move.
//!
//! Invariants: the cluster id changes at most once, from [`CLUSTER_ID_UNKNOWN`] (a node
//! started with `join`) to the id of the first member it accepts or that accepts it; a peer's
//! incarnation is recorded the first time it is accepted (after it authenticated, when the
//! cluster has a secret) while it is a member, and forgotten when it leaves the membership,
//! so that a node removed and added again starts afresh (its incarnation is then recorded at
//! its first connection after it is a member again). Every change is written to the data dir's
//! `identity` file (`data_dir.rs`) before the connection that caused it delivers anything.

use super::super::data_dir::Identity;
use super::NetConfig;
use rcraft_wire::{CLUSTER_ID_UNKNOWN, Handshake, NodeId, Refusal};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a peer is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The peer belongs to another cluster.
    OtherCluster {
        peer: NodeId,
        ours: u64,
        theirs: u64,
    },
    /// The peer came back with another data dir than the one this node knows.
    NewIncarnation {
        peer: NodeId,
        theirs: u64,
        known: u64,
    },
}

impl Refused {
    /// The refusal handshake telling the peer why (`node_id` and `cluster_id` are ours).
    pub(super) fn answer(&self, cluster_id: u64, node_id: NodeId) -> Handshake {
        match *self {
            Refused::OtherCluster { .. } => {
                Handshake::refusal(cluster_id, node_id, Refusal::OtherCluster, 0)
            }
            Refused::NewIncarnation { known, .. } => {
                Handshake::refusal(cluster_id, node_id, Refusal::Incarnation, known)
            }
        }
    }
}

impl Refused {
    /// The refused node.
    pub(super) fn peer(&self) -> NodeId {
        match *self {
            Refused::OtherCluster { peer, .. } | Refused::NewIncarnation { peer, .. } => peer,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refused::OtherCluster { peer, ours, theirs } => write!(
                f,
                "refusing node {peer}: it belongs to cluster {theirs:#x}, not to this node's \
                 cluster {ours:#x} (a node of another cluster pointed at this one?)"
            ),
            Refused::NewIncarnation {
                peer,
                theirs,
                known,
            } => write!(
                f,
                "refusing node {peer}: {}",
                came_back(peer, theirs, known)
            ),
        }
    }
}

/// The sentence for a node that came back with a new data dir, the same on both sides.
fn came_back(node: NodeId, theirs: u64, known: u64) -> String {
    format!(
        "node {node} came back with a new data dir (incarnation {theirs:#x}, the cluster knows \
         {known:#x}): remove it (rcraft members remove {node}) and add it again (restart it \
         with --join, then rcraft members add {node})"
    )
}

/// What a dialled peer's refusal means, in this (the refused) node's words.
pub(super) fn refused_by(
    peer: NodeId,
    answer: &Handshake,
    us: NodeId,
    identities: &PeerIdentities,
) -> String {
    match answer.refusal {
        Some(Refusal::OtherCluster) => format!(
            "peer {peer} refuses this node: it belongs to cluster {:#x} and this node to \
             cluster {:#x}; this data dir was made for another cluster than the one --peers \
             points at",
            answer.cluster_id, identities.cluster_id
        ),
        Some(Refusal::Incarnation) => format!(
            "peer {peer} refuses this node: {}",
            came_back(us, identities.incarnation, answer.incarnation)
        ),
        Some(Refusal::Other(code)) => format!("peer {peer} refuses this node (reason {code})"),
        None => format!("peer {peer} answered without refusing"),
    }
}

/// The identities this node runs with and knows (module header).
#[derive(Debug)]
pub(super) struct PeerIdentities {
    cluster_id: u64,
    incarnation: u64,
    /// The incarnation of each peer, as last accepted while a member. Invariant: only
    /// members' (once the members are known).
    known: BTreeMap<NodeId, u64>,
    /// The members of the cluster as the consensus thread last told them; `None` until then.
    members: Option<BTreeSet<NodeId>>,
    /// Where changes are recorded and the rest of the file; `None`: in memory only.
    file: Option<(PathBuf, Identity)>,
}

impl PeerIdentities {
    pub(super) fn new(config: &NetConfig) -> PeerIdentities {
        let known = match &config.identity_file {
            Some((_, identity)) => identity.peers.clone(),
            None => BTreeMap::new(),
        };
        PeerIdentities {
            cluster_id: config.cluster_id,
            incarnation: config.incarnation,
            known,
            members: None,
            file: config.identity_file.clone(),
        }
    }

    /// This node's cluster id ([`CLUSTER_ID_UNKNOWN`] before a joining node's first contact).
    pub(super) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The handshake this node sends as a peer.
    pub(super) fn hello(&self, node_id: NodeId) -> Handshake {
        Handshake::peer(self.cluster_id, node_id).with_incarnation(self.incarnation)
    }

    /// The cluster id both sides of a handshake agree on (the authentication transcript's):
    /// ours, or theirs while ours is unknown.
    pub(super) fn agreed_cluster(&self, theirs: u64) -> u64 {
        match self.cluster_id {
            CLUSTER_ID_UNKNOWN => theirs,
            ours => ours,
        }
    }

    /// Checks a peer's handshake values, changing nothing.
    pub(super) fn check(
        &self,
        peer: NodeId,
        cluster_id: u64,
        incarnation: u64,
    ) -> Result<(), Refused> {
        let ours = self.cluster_id;
        if ours != CLUSTER_ID_UNKNOWN && cluster_id != CLUSTER_ID_UNKNOWN && cluster_id != ours {
            return Err(Refused::OtherCluster {
                peer,
                ours,
                theirs: cluster_id,
            });
        }
        match self.known.get(&peer) {
            // Zero: a peer that sends no incarnation (an embedding's test transport).
            Some(&known) if incarnation != 0 && known != incarnation => {
                Err(Refused::NewIncarnation {
                    peer,
                    theirs: incarnation,
                    known,
                })
            }
            _ => Ok(()),
        }
    }

    /// Accepts a checked peer: learns the cluster id if this node does not know it yet, and
    /// records the peer's incarnation if it is new; both durably before returning.
    pub(super) fn accept(
        &mut self,
        peer: NodeId,
        cluster_id: u64,
        incarnation: u64,
    ) -> io::Result<()> {
        let learned = self.cluster_id == CLUSTER_ID_UNKNOWN && cluster_id != CLUSTER_ID_UNKNOWN;
        // A non-member's incarnation is not recorded: a node removed while it runs would
        // otherwise be recorded again at once, and refused when it comes back emptied.
        let member = self.members.as_ref().is_none_or(|m| m.contains(&peer));
        let new_peer = member && incarnation != 0 && self.known.get(&peer) != Some(&incarnation);
        if !learned && !new_peer {
            return Ok(());
        }
        let mut cluster = self.cluster_id;
        let mut known = self.known.clone();
        if learned {
            cluster = cluster_id;
        }
        if new_peer {
            known.insert(peer, incarnation);
        }
        self.store(cluster, &known)?;
        if learned {
            log::info!("learned the cluster id {cluster:#x} from node {peer}; recorded");
        }
        self.cluster_id = cluster;
        self.known = known;
        Ok(())
    }

    /// Forgets the incarnation of every peer that is not in `members`: one that is added
    /// again later is accepted with whatever data dir it then has.
    pub(super) fn forget_except(&mut self, members: BTreeSet<NodeId>) -> io::Result<()> {
        let mut known = self.known.clone();
        known.retain(|id, _| members.contains(id));
        self.members = Some(members);
        if known.len() == self.known.len() {
            return Ok(());
        }
        self.store(self.cluster_id, &known)?;
        self.known = known;
        Ok(())
    }

    fn store(&mut self, cluster_id: u64, known: &BTreeMap<NodeId, u64>) -> io::Result<()> {
        let Some((dir, identity)) = self.file.as_mut() else {
            return Ok(());
        };
        let mut updated = identity.clone();
        updated.cluster_id = cluster_id;
        updated.peers = known.clone();
        updated.store(dir)?;
        *identity = updated;
        Ok(())
    }
}
