//! Property tests of the frame decoder: any chunking of valid frames decodes to the same
//! messages; random bytes and randomly damaged frames never panic, never allocate past the
//! limit, and never yield a message that was not sent.

mod common;

use proptest::prelude::*;
use rcraft_wire::*;

/// A small limit so that oversized announcements are common among random headers.
const TEST_LIMIT: u32 = 4096;

/// Feeds `bytes` in chunks whose sizes cycle through `cuts`, draining after each push.
/// Returns the decoded frames and the first error, checking the memory bound on the way.
fn feed(bytes: &[u8], cuts: &[usize], limit: u32) -> (Vec<Frame>, Option<Error>) {
    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut cut = 0;
    while at < bytes.len() {
        let len = cuts[cut % cuts.len()].clamp(1, bytes.len() - at);
        cut += 1;
        decoder.push(&bytes[at..at + len]);
        at += len;
        let frame_limit = FRAME_HEADER_BYTES + limit as usize;
        assert!(
            decoder.buffer_capacity() <= frame_limit.max(decoder.buffered_bytes() + len),
            "buffer capacity {} over the bound",
            decoder.buffer_capacity()
        );
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.payload().len() <= limit as usize);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn describe(frame: &Frame) -> String {
    // Decoding through checked access must never panic; the result is compared as text.
    match frame.kind() {
        FrameKind::PeerMessage => format!("{:?}", frame.to_message()),
        FrameKind::ClientRequest => format!("{:?}", frame.to_client_request()),
        FrameKind::ClientResponse => format!("{:?}", frame.to_client_response()),
    }
}

fn expected_descriptions() -> Vec<String> {
    let mut all = Vec::new();
    all.extend(
        common::peer_messages()
            .into_iter()
            .map(|m| format!("{:?}", Ok::<_, Error>(m))),
    );
    all.extend(
        common::client_requests()
            .into_iter()
            .map(|m| format!("{:?}", Ok::<_, Error>(m))),
    );
    all.extend(
        common::client_responses()
            .into_iter()
            .map(|m| format!("{:?}", Ok::<_, Error>(m))),
    );
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_decodes_every_frame(cuts in prop::collection::vec(1usize..700, 1..16)) {
        let bytes = common::encode_all();
        let (frames, error) = feed(&bytes, &cuts, FRAME_BYTES_MAX);
        prop_assert!(error.is_none());
        let decoded: Vec<String> = frames.iter().map(describe).collect();
        prop_assert_eq!(decoded, expected_descriptions());
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(1usize..512, 1..8),
    ) {
        let (frames, _) = feed(&bytes, &cuts, TEST_LIMIT);
        for frame in &frames {
            let _ = describe(frame);
        }
    }

    #[test]
    fn random_header_after_valid_magic_never_panics(
        header in prop::collection::vec(any::<u8>(), 14),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Random bytes rarely pass the magic check; start from a valid magic so that the
        // later checks (version, checksum, kind, length) are exercised too.
        let mut bytes = b"RF".to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&tail);
        let (frames, _) = feed(&bytes, &[bytes.len()], TEST_LIMIT);
        prop_assert!(frames.is_empty(), "a random header checksum matched");
    }

    #[test]
    fn mutated_frames_never_panic_or_invent_messages(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cuts in prop::collection::vec(1usize..300, 1..8),
    ) {
        let mut bytes = common::encode_all();
        for (index, mask) in &flips {
            let at = index.index(bytes.len());
            bytes[at] ^= mask;
        }
        let (frames, _) = feed(&bytes, &cuts, FRAME_BYTES_MAX);
        // Checksums cover header and payload, so a frame that still decodes is one whose
        // bytes were not touched, and it must be one of the originals.
        let expected = expected_descriptions();
        for frame in &frames {
            let text = describe(frame);
            prop_assert!(expected.contains(&text), "invented {}", text);
        }
    }

    #[test]
    fn damaged_payload_with_recomputed_checksums_is_refused_or_valid(
        index in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        // Bypass the checksums entirely (an attacker can compute them): rkyv's checked
        // access is then the only guard and must refuse or accept without panicking.
        let mut out = Vec::new();
        encode_message(&common::peer_messages()[2], &mut out).unwrap();
        let payload_len = out.len() - FRAME_HEADER_BYTES;
        let at = FRAME_HEADER_BYTES + index.index(payload_len);
        out[at] ^= mask;
        let crc = crc32c::crc32c(&out[FRAME_HEADER_BYTES..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&out[..12]);
        out[12..16].copy_from_slice(&header_crc.to_le_bytes());
        let (frames, error) = feed(&out, &[out.len()], FRAME_BYTES_MAX);
        prop_assert!(error.is_none());
        let _ = describe(&frames[0]);
    }
}
