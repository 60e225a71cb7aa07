//! Every vocabulary type survives an rkyv round trip through checked access.

use rcraft_wire::*;

fn roundtrip(message: &Message) -> Message {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(message).expect("serialize");
    let archived =
        rkyv::access::<ArchivedMessage, rkyv::rancor::Error>(&bytes).expect("checked access");
    rkyv::deserialize::<Message, rkyv::rancor::Error>(archived).expect("deserialize")
}

#[test]
fn append_request_with_every_payload_kind_roundtrips() {
    let entries = vec![
        Entry {
            term: Term(3),
            index: LogIndex(7),
            payload: EntryPayload::Noop,
        },
        Entry {
            term: Term(3),
            index: LogIndex(8),
            payload: EntryPayload::Command {
                session: Some(Session {
                    client_id: 42,
                    sequence: 9,
                }),
                data: b"put k v".to_vec(),
            },
        },
        Entry {
            term: Term(3),
            index: LogIndex(9),
            payload: EntryPayload::Membership(Membership::with_voters([NodeId(0), NodeId(1)])),
        },
    ];
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(6),
            prev_log_term: Term(2),
            entries,
            leader_commit: LogIndex(5),
        },
    };
    assert_eq!(roundtrip(&message), message);
}

#[test]
fn truncated_archive_is_refused_by_checked_access() {
    let message = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::VoteRequest {
            pre_vote: true,
            last_log_index: LogIndex(10),
            last_log_term: Term(2),
            leadership_transfer: false,
        },
    };
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&message).expect("serialize");
    let mut short = rkyv::util::AlignedVec::<16>::new();
    short.extend_from_slice(&bytes[..bytes.len() / 2]);
    assert!(rkyv::access::<ArchivedMessage, rkyv::rancor::Error>(&short).is_err());
}
