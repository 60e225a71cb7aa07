//! Encode/decode throughput of an AppendRequest carrying 256 entries of 100 B (since protocol
//! version 8 the entries travel as their WAL records, so decoding checks each record's CRC),
//! and, for comparison with the round before, the cost a follower paid to re-encode those
//! entries as WAL records with rkyv payloads (`reencode_entries_as_wal_records`).
//!
//! Run: `cargo bench -p rcraft-wire --bench codec`.

use criterion::{Criterion, Throughput, black_box, criterion_main};
use rcraft_wire::*;

const ENTRIES: u64 = 256;
const ENTRY_BYTES: usize = 100;

fn append_request() -> Message {
    let entries = (1..=ENTRIES)
        .map(|i| {
            Entry::new(
                Term(7),
                LogIndex(1000 + i),
                EntryPayload::Command {
                    session: Some(Session {
                        client_id: 42,
                        sequence: i,
                    }),
                    data: vec![i as u8; ENTRY_BYTES].into(),
                },
            )
        })
        .collect();
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(7),
        body: MessageBody::AppendRequest {
            prev_log_index: LogIndex(1000),
            prev_log_term: Term(7),
            entries,
            leader_commit: LogIndex(990),
        },
    }
}

/// An entry's payload as the round before archived it with rkyv (the command in a `Vec` of
/// its own); `EntryPayload` itself is no longer archived.
#[derive(rkyv::Archive, rkyv::Serialize)]
enum RkyvPayload {
    Noop,
    Command {
        session: Option<Session>,
        data: Vec<u8>,
    },
    Membership(Membership),
}

/// The entries with their payloads as the round before held them. Not measured.
fn rkyv_payloads(entries: &[Entry]) -> Vec<(LogIndex, Term, RkyvPayload)> {
    let payload = |p: &EntryPayload| match p {
        EntryPayload::Noop => RkyvPayload::Noop,
        EntryPayload::Command { session, data } => RkyvPayload::Command {
            session: *session,
            data: data.to_vec(),
        },
        EntryPayload::Membership(m) => RkyvPayload::Membership(m.clone()),
    };
    entries
        .iter()
        .map(|e| (e.index, e.term, payload(&e.payload)))
        .collect()
}

/// A WAL record as storage/FORMAT.md lays it out: `len | crc32c | index | term | payload`,
/// with the entry payload serialized by rkyv. This is the work a follower does per entry
/// when entries do not arrive as ready-made records.
fn reencode_as_wal_records(
    entries: &[(LogIndex, Term, RkyvPayload)],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    out.clear();
    for (index, term, payload) in entries {
        scratch.clear();
        let buffer = std::mem::take(scratch);
        let payload = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(payload, buffer)
            .expect("serialize payload");
        let start = out.len();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&index.0.to_le_bytes());
        out.extend_from_slice(&term.0.to_le_bytes());
        out.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        *scratch = payload;
    }
}

fn bench_codec(c: &mut Criterion) {
    let message = append_request();
    let mut frame = Vec::new();
    encode_message(&message, &mut frame).unwrap();
    let mut group = c.benchmark_group("append_256x100B");
    group.throughput(Throughput::Bytes(frame.len() as u64));

    let mut out = Vec::with_capacity(frame.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_message(black_box(&message), &mut out).unwrap()
        })
    });

    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    group.bench_function("decode_checked_access", |b| {
        b.iter(|| {
            decoder.push(black_box(&frame));
            let frame = decoder.next_frame().unwrap().unwrap();
            let archived = frame.access_message().unwrap();
            black_box(archived.term.0);
        })
    });

    group.bench_function("decode_to_owned", |b| {
        b.iter(|| {
            decoder.push(black_box(&frame));
            let frame = decoder.next_frame().unwrap().unwrap();
            black_box(frame.to_message().unwrap())
        })
    });

    let MessageBody::AppendRequest { entries, .. } = &message.body else {
        unreachable!()
    };
    let entries = rkyv_payloads(entries);
    let (mut scratch, mut records) = (Vec::new(), Vec::new());
    group.bench_function("reencode_entries_as_wal_records", |b| {
        b.iter(|| reencode_as_wal_records(black_box(&entries), &mut scratch, &mut records))
    });
    group.finish();
}

// criterion's macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_codec);
}
criterion_main!(group::benches);
