//! One sample of every message kind, shared by the codec tests.

#![allow(dead_code)] // each test binary uses a different part of the samples

use rcraft_wire::*;

fn membership() -> Membership {
    Membership {
        voters: [NodeId(0), NodeId(1), NodeId(2)].into_iter().collect(),
        voters_outgoing: [NodeId(0), NodeId(3)].into_iter().collect(),
        learners: [NodeId(9)].into_iter().collect(),
    }
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(100),
        term: Term(4),
        membership: membership(),
        membership_entry: Some((LogIndex(97), Term(3))),
        size_bytes: 4096,
        checksum: 0xdead_beef,
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::new(Term(3), LogIndex(7), EntryPayload::Noop),
        Entry::new(
            Term(3),
            LogIndex(8),
            EntryPayload::Command {
                session: Some(Session {
                    client_id: 42,
                    sequence: 9,
                }),
                data: b"put k v".into(),
            },
        ),
        Entry::new(Term(3), LogIndex(9), EntryPayload::Membership(membership())),
    ]
}

/// Every peer message body, once.
pub fn peer_messages() -> Vec<Message> {
    let bodies = vec![
        MessageBody::VoteRequest {
            pre_vote: true,
            last_log_index: LogIndex(10),
            last_log_term: Term(2),
            leadership_transfer: false,
        },
        MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
        },
        MessageBody::AppendRequest {
            prev_log_index: LogIndex(6),
            prev_log_term: Term(2),
            entries: entries(),
            leader_commit: LogIndex(5),
        },
        MessageBody::AppendRequest {
            prev_log_index: LogIndex(6),
            prev_log_term: Term(2),
            entries: Vec::new(),
            leader_commit: LogIndex(5),
        },
        MessageBody::AppendResponse {
            success: false,
            match_index: LogIndex(12),
            conflict: Some(ConflictHint {
                term: Some(Term(2)),
                first_index: LogIndex(4),
            }),
        },
        MessageBody::Heartbeat {
            leader_commit: LogIndex(77),
            read_context: 5,
        },
        MessageBody::HeartbeatResponse { read_context: 5 },
        MessageBody::InstallSnapshot {
            meta: snapshot_meta(),
            offset: 1024,
            data: vec![7; 300],
            chunk_crc: 0x1234_5678,
            done: false,
        },
        MessageBody::InstallSnapshotResponse {
            snapshot_index: LogIndex(100),
            next_offset: 1324,
            done: false,
            rejected: true,
        },
        MessageBody::TimeoutNow,
        MessageBody::ReadIndexRequest { request: 9 },
        MessageBody::ReadIndexResponse {
            request: 9,
            index: Some(LogIndex(41)),
        },
        MessageBody::ReadIndexResponse {
            request: u64::MAX,
            index: None,
        },
        MessageBody::RepairQuery { lost: None },
        MessageBody::RepairQuery {
            lost: Some(rcraft_wire::RepairedRange {
                from: LogIndex(10),
                through: LogIndex(14),
                through_term: Term(8),
                recovered_term: Term(8),
            }),
        },
        MessageBody::RepairAnswer {
            log_end: LogIndex(17),
            last_log_index: LogIndex(16),
            last_log_term: Term(3),
            snapshot_index: LogIndex(9),
            last_joint_index: LogIndex(12),
            snapshot_pair: true,
            range_membership: true,
        },
        MessageBody::LinkProbe {
            sent_tick: 1_234,
            peers_milliticks: Some(2_500),
        },
        MessageBody::LinkProbe {
            sent_tick: u64::MAX,
            peers_milliticks: None,
        },
        MessageBody::LinkProbeReply { sent_tick: 1_234 },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            from: NodeId(1),
            to: NodeId(2 + i as u64),
            term: Term(3),
            body,
        })
        .collect()
}

/// Every client request body, once.
pub fn client_requests() -> Vec<ClientRequest> {
    let bodies = vec![
        ClientRequestBody::Write {
            session: Some(Session {
                client_id: 1,
                sequence: 2,
            }),
            command: b"put a 1".to_vec(),
        },
        ClientRequestBody::Write {
            session: None,
            command: Vec::new(),
        },
        ClientRequestBody::Read {
            query: b"get a".to_vec(),
            mode: ReadMode::Linearizable,
        },
        ClientRequestBody::Read {
            query: b"get b".to_vec(),
            mode: ReadMode::Follower,
        },
        ClientRequestBody::Read {
            query: Vec::new(),
            mode: ReadMode::Lease,
        },
        ClientRequestBody::Status,
        ClientRequestBody::TransferLeader { target: NodeId(2) },
        ClientRequestBody::ChangeMembership {
            membership: membership(),
        },
        ClientRequestBody::Snapshot,
        ClientRequestBody::ReadSnapshot {
            index: LogIndex(40),
            offset: 1 << 20,
        },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| ClientRequest {
            request_id: i as u64 * 1000 + 1,
            body,
        })
        .collect()
}

/// Every client response body, once.
pub fn client_responses() -> Vec<ClientResponse> {
    let bodies = vec![
        ClientResponseBody::Ok {
            term: Term(3),
            index: LogIndex(99),
            result: b"1".to_vec(),
        },
        ClientResponseBody::NotLeader {
            leader: Some(NodeId(2)),
            leader_address: Some("127.0.0.1:7002".to_string()),
        },
        ClientResponseBody::NotLeader {
            leader: None,
            leader_address: None,
        },
        ClientResponseBody::Overloaded,
        ClientResponseBody::Error {
            definite: false,
            message: "timed out".to_string(),
        },
        ClientResponseBody::Status(Box::new(NodeStatus {
            id: NodeId(1),
            role: Role::Leader,
            term: Term(3),
            leader: Some(NodeId(1)),
            commit_index: LogIndex(10),
            applied_index: LogIndex(9),
            last_index: LogIndex(11),
            snapshot_index: LogIndex(5),
            voters: vec![NodeId(0), NodeId(1), NodeId(2)],
            learners: vec![NodeId(3)],
            membership: Membership {
                voters: [NodeId(1), NodeId(2)].into_iter().collect(),
                voters_outgoing: [NodeId(0), NodeId(1)].into_iter().collect(),
                learners: [NodeId(3)].into_iter().collect(),
            },
            replication: vec![
                PeerProgress {
                    id: NodeId(0),
                    match_index: LogIndex(10),
                    next_index: LogIndex(12),
                    state: ReplicationState::Replicate,
                    recently_active: true,
                },
                PeerProgress {
                    id: NodeId(2),
                    match_index: LogIndex(0),
                    next_index: LogIndex(1),
                    state: ReplicationState::Probe,
                    recently_active: false,
                },
                PeerProgress {
                    id: NodeId(3),
                    match_index: LogIndex(0),
                    next_index: LogIndex(6),
                    state: ReplicationState::Snapshot {
                        offset: 4096,
                        size_bytes: 1 << 20,
                    },
                    recently_active: true,
                },
            ],
            repairing: Some(LostRange {
                from: LogIndex(4),
                through: LogIndex(9),
            }),
            votes_unknown: Some(vec![NodeId(3)]),
            lost: Some(LostRange {
                from: LogIndex(12),
                through: LogIndex(14),
            }),
        })),
        ClientResponseBody::SnapshotChunk(Box::new(SnapshotChunk {
            meta: SnapshotMeta {
                index: LogIndex(40),
                term: Term(3),
                membership: membership(),
                membership_entry: None,
                size_bytes: 3000,
                checksum: 0xdead_beef,
            },
            offset: 1000,
            data: vec![7; 1000],
            chunk_crc: 0x1234_5678,
            done: false,
        })),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| ClientResponse {
            request_id: i as u64 + 10,
            body,
        })
        .collect()
}

/// The frames of every sample, in order: all peer messages, then requests, then responses.
pub fn encode_all() -> Vec<u8> {
    let mut out = Vec::new();
    for message in peer_messages() {
        encode_message(&message, &mut out).expect("encode message");
    }
    for request in client_requests() {
        encode_client_request(&request, &mut out).expect("encode request");
    }
    for response in client_responses() {
        encode_client_response(&response, &mut out).expect("encode response");
    }
    out
}

/// How many frames [`encode_all`] writes.
pub fn sample_count() -> usize {
    peer_messages().len() + client_requests().len() + client_responses().len()
}
