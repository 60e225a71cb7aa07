//! Every message kind survives encode -> decode through frames, one at a time and many to a
//! buffer, and every kind of damage is refused with a precise error.

mod common;

use rcraft_wire::*;

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    decoder.push(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("valid frames") {
        frames.push(frame);
    }
    assert_eq!(decoder.buffered_bytes(), 0);
    frames
}

#[test]
fn every_peer_message_roundtrips() {
    for message in common::peer_messages() {
        let mut out = Vec::new();
        let len = encode_message(&message, &mut out).unwrap();
        assert_eq!(len, out.len());
        let frames = decode_all(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].kind(), FrameKind::PeerMessage);
        assert_eq!(frames[0].to_message().unwrap(), message);
    }
}

#[test]
fn every_client_request_and_response_roundtrips() {
    for request in common::client_requests() {
        let mut out = Vec::new();
        encode_client_request(&request, &mut out).unwrap();
        let frames = decode_all(&out);
        assert_eq!(frames[0].to_client_request().unwrap(), request);
    }
    for response in common::client_responses() {
        let mut out = Vec::new();
        encode_client_response(&response, &mut out).unwrap();
        let frames = decode_all(&out);
        assert_eq!(frames[0].to_client_response().unwrap(), response);
    }
}

#[test]
fn frames_packed_at_unaligned_offsets_in_one_buffer_decode() {
    // A one-byte prefix shifts every following frame off its natural alignment; the decoder
    // must still produce valid archives because payloads are measured from their own start.
    let mut out = vec![0xAA];
    for message in common::peer_messages() {
        encode_message(&message, &mut out).unwrap();
    }
    let frames = decode_all(&out[1..]);
    let decoded: Vec<Message> = frames.iter().map(|f| f.to_message().unwrap()).collect();
    assert_eq!(decoded, common::peer_messages());
}

#[test]
fn handshake_then_frames_decode_in_order() {
    let mut bytes = Handshake::peer(5, NodeId(1)).encode().to_vec();
    bytes.extend_from_slice(&common::encode_all());
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    decoder.push(&bytes);
    assert_eq!(
        decoder.next_handshake().unwrap(),
        Some(Handshake::peer(5, NodeId(1)))
    );
    let mut count = 0;
    while decoder.next_frame().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, common::sample_count());
}

#[test]
fn wrong_kind_accessor_is_refused() {
    let mut out = Vec::new();
    encode_client_request(&common::client_requests()[0], &mut out).unwrap();
    let frame = decode_all(&out).pop().unwrap();
    assert_eq!(
        frame.to_message().unwrap_err(),
        Error::UnexpectedFrameKind {
            expected: FrameKind::PeerMessage,
            found: FrameKind::ClientRequest
        }
    );
}

fn first_error(bytes: &[u8], max: u32) -> Error {
    let mut decoder = FrameDecoder::new(max);
    decoder.push(bytes);
    loop {
        match decoder.next_frame() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error for {bytes:02x?}"),
            Err(e) => {
                assert_eq!(decoder.next_frame().unwrap_err(), e, "errors are sticky");
                return e;
            }
        }
    }
}

#[test]
fn damaged_frames_are_refused_with_a_named_reason() {
    let mut frame = Vec::new();
    encode_message(&common::peer_messages()[2], &mut frame).unwrap();

    let mut bad_magic = frame.clone();
    bad_magic[0] = b'X';
    assert!(matches!(
        first_error(&bad_magic, FRAME_BYTES_MAX),
        Error::BadFrameMagic { .. }
    ));

    let mut bad_version = frame.clone();
    bad_version[2] = PROTOCOL_VERSION as u8 + 1;
    assert!(matches!(
        first_error(&bad_version, FRAME_BYTES_MAX),
        Error::VersionMismatch { .. }
    ));

    let mut bad_length = frame.clone();
    bad_length[5] ^= 0x10;
    assert!(matches!(
        first_error(&bad_length, FRAME_BYTES_MAX),
        Error::ChecksumMismatch {
            what: "frame header",
            ..
        }
    ));

    let mut bad_payload = frame.clone();
    let last = bad_payload.len() - 1;
    bad_payload[last] ^= 1;
    assert!(matches!(
        first_error(&bad_payload, FRAME_BYTES_MAX),
        Error::ChecksumMismatch {
            what: "frame payload",
            ..
        }
    ));

    let payload_len = (frame.len() - FRAME_HEADER_BYTES) as u32;
    assert_eq!(
        first_error(&frame, payload_len - 1),
        Error::FrameTooLarge {
            len: u64::from(payload_len),
            max: payload_len - 1
        }
    );
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    // A header announcing 4 GiB - 1 with a valid header checksum: the decoder must refuse it
    // without waiting for (or allocating) the payload.
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..2].copy_from_slice(b"RF");
    header[2] = PROTOCOL_VERSION as u8;
    header[3] = 1;
    header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    decoder.push(&header);
    assert!(matches!(
        decoder.next_frame(),
        Err(Error::FrameTooLarge { .. })
    ));
    assert!(decoder.buffer_capacity() < 1024);
}

#[test]
fn valid_checksum_over_invalid_archive_is_refused_by_checked_access() {
    // Build a frame whose checksums are right but whose payload is not a Message archive.
    let payload = vec![0xFFu8; 64];
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    frame[0..2].copy_from_slice(b"RF");
    frame[2] = PROTOCOL_VERSION as u8;
    frame[3] = FrameKind::PeerMessage as u8;
    frame[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[8..12].copy_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    let crc = crc32c::crc32c(&frame[..12]);
    frame[12..16].copy_from_slice(&crc.to_le_bytes());
    frame.extend_from_slice(&payload);
    let decoded = decode_all(&frame).pop().unwrap();
    assert!(matches!(
        decoded.to_message(),
        Err(Error::InvalidArchive(_))
    ));
}
