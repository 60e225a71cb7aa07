//! The size bounds in `limits.rs` hold for real archives: an AppendRequest never takes more
//! than `APPEND_REQUEST_FIXED_BYTES_MAX` plus the `Entry::wire_bytes_max` of its entries, and
//! a client request never more than `CLIENT_REQUEST_FIXED_BYTES_MAX` plus its command. A
//! leader relies on the first to keep every batch inside the frame limit (issue 14 A).

use proptest::prelude::*;
use rcraft_wire::*;
use std::collections::BTreeSet;

/// Payload bytes of `message`'s frame.
fn archived_bytes(message: &Message) -> usize {
    let mut out = Vec::new();
    encode_message(message, &mut out).unwrap() - FRAME_HEADER_BYTES
}

/// An AppendRequest with every fixed field at its largest value.
fn append(entries: Vec<Entry>) -> Message {
    Message {
        from: NodeId(u64::MAX),
        to: NodeId(u64::MAX),
        term: Term(u64::MAX),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(u64::MAX),
            prev_log_term: Term(u64::MAX),
            entries,
            leader_commit: LogIndex(u64::MAX),
        },
    }
}

fn bound(entries: &[Entry]) -> u64 {
    APPEND_REQUEST_FIXED_BYTES_MAX as u64 + entries.iter().map(Entry::wire_bytes_max).sum::<u64>()
}

fn ids(count: usize, from: u64) -> BTreeSet<NodeId> {
    (0..count as u64).map(|i| NodeId(from + i)).collect()
}

fn membership_entry(voters: usize, outgoing: usize, learners: usize) -> Entry {
    Entry::new(
        Term(u64::MAX),
        LogIndex(u64::MAX),
        EntryPayload::Membership(Membership {
            voters: ids(voters, 0),
            voters_outgoing: ids(outgoing, 1 << 20),
            learners: ids(learners, 1 << 40),
        }),
    )
}

fn payloads() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Noop),
        (
            proptest::option::of((any::<u64>(), any::<u64>())),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(session, data)| EntryPayload::Command {
                session: session.map(|(client_id, sequence)| Session {
                    client_id,
                    sequence
                }),
                data: data.into(),
            }),
        (0usize..40, 0usize..40, 0usize..40).prop_map(|(v, o, l)| {
            match membership_entry(v, o, l).payload {
                payload @ EntryPayload::Membership(_) => payload,
                _ => unreachable!(),
            }
        }),
    ]
}

proptest! {
    #[test]
    fn an_append_request_fits_its_bound(payloads in proptest::collection::vec(payloads(), 0..40)) {
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry::new(Term(u64::MAX), LogIndex(i as u64), payload))
            .collect();
        let message = append(entries.clone());
        prop_assert!(archived_bytes(&message) as u64 <= bound(&entries));
    }
}

#[test]
fn every_command_length_and_membership_size_fits_its_bound() {
    for len in (0..600).chain([4095, 4096, 4097, 1 << 20, (1 << 20) + 3]) {
        for session in [
            None,
            Some(Session {
                client_id: u64::MAX,
                sequence: u64::MAX,
            }),
        ] {
            let entries = vec![Entry::new(
                Term(u64::MAX),
                LogIndex(u64::MAX),
                EntryPayload::Command {
                    session,
                    data: vec![0xAB; len].into(),
                },
            )];
            let archived = archived_bytes(&append(entries.clone())) as u64;
            assert!(
                archived <= bound(&entries),
                "command of {len} bytes: {archived}"
            );
        }
    }
    for count in 0..700 {
        for entry in [
            membership_entry(count, 0, 0),
            membership_entry(count, count, count),
            membership_entry(1, count, 0),
        ] {
            let entries = vec![entry];
            let archived = archived_bytes(&append(entries.clone())) as u64;
            assert!(
                archived <= bound(&entries),
                "{count} ids per set: {archived}"
            );
        }
    }
}

#[test]
fn a_client_request_fits_its_bound() {
    for len in (0..600).chain([1 << 20, (1 << 20) + 5]) {
        let write = ClientRequestBody::Write {
            session: Some(Session {
                client_id: u64::MAX,
                sequence: u64::MAX,
            }),
            command: vec![1; len],
        };
        let read = ClientRequestBody::Read {
            query: vec![1; len],
            mode: ReadMode::Follower,
        };
        for body in [write, read] {
            let request = ClientRequest {
                request_id: u64::MAX,
                body,
            };
            let mut out = Vec::new();
            let archived = encode_client_request(&request, &mut out).unwrap() - FRAME_HEADER_BYTES;
            assert!(
                archived <= CLIENT_REQUEST_FIXED_BYTES_MAX + len,
                "{len} bytes: {archived}"
            );
        }
    }
}

/// A request or response variant added without a protocol version bump (PROTOCOL.md,
/// "Versions") must not change the archived size of the body enums: the root of an archive
/// sits at the end of the buffer, at a fixed distance given by that size. (The response
/// enum shrank from 152 bytes in protocol 7, when the status answer was boxed.)
#[test]
fn the_client_body_enums_keep_their_archived_sizes() {
    assert_eq!(std::mem::size_of::<ArchivedClientRequestBody>(), 40);
    assert_eq!(std::mem::size_of::<ArchivedClientResponseBody>(), 40);
}
