//! Property tests of the queue message codec: a sender decodes whatever it
//! finds in the queue (a message of an older or newer Herald, a stray
//! publish, a corrupted body) without panicking, and every delivery ingest
//! encodes comes back unchanged.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set);
//! `PROPTEST_CASES=100000 cargo test -p herald-queue --test properties`
//! searches longer.

use herald_proto::v1::{DeliveryMessage, delivery_message};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Cases: proptest's default, which reads `PROPTEST_CASES` (256 unless set).
fn config() -> ProptestConfig {
    ProptestConfig {
        // Failing inputs are kept next to this file, in
        // properties.proptest-regressions, and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// 16 bytes most of the time (a UUID), any length sometimes.
fn id_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 16),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn delivery_message() -> impl Strategy<Value = DeliveryMessage> {
    let data = prop::option::of(prop_oneof![
        any::<String>().prop_map(delivery_message::Data::Text),
        any::<String>().prop_map(delivery_message::Data::Json),
    ]);
    (
        (id_bytes(), any::<String>(), any::<String>(), id_bytes()),
        (any::<u32>(), any::<i64>(), data),
        (any::<String>(), any::<String>(), id_bytes()),
    )
        .prop_map(
            |(
                (delivery_id, tenant, event, webhook_id),
                (attempt, fired_at_unix_ms, data),
                (url, method, resent_from),
            )| DeliveryMessage {
                ordering_key: Default::default(),
                delivery_id,
                tenant,
                event,
                webhook_id,
                attempt,
                fired_at_unix_ms,
                data,
                url,
                method,
                resent_from,
            },
        )
}

/// Protobuf-shaped bytes: field keys of the message's own field numbers
/// and wire types, lengths and varints, mixed with noise; more likely than
/// uniform bytes to get deep into the decoder.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        // A key: field 1..=12 (one past the last) with any wire type.
        (1u8..=12, 0u8..8).prop_map(|(field, wire)| vec![field << 3 | wire]),
        // A length or varint, possibly overlong or unterminated.
        prop::collection::vec(0x80u8.., 0..10).prop_map(|mut v| {
            v.push(0x01);
            v
        }),
        prop::collection::vec(any::<u8>(), 0..12),
        // Invalid UTF-8 where a string is expected.
        Just(vec![0x12, 0x02, 0xc3, 0x28]),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever bytes are in the queue, decoding returns a message or an
    /// error: never a panic.
    #[test]
    fn decoding_any_bytes_never_panics(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), wire_bytes()],
    ) {
        let _ = herald_queue::decode(&bytes);
    }

    /// Every message decodes back to itself.
    #[test]
    fn encode_then_decode_round_trips(message in delivery_message()) {
        let bytes = herald_queue::encode(&message);
        let decoded = herald_queue::decode(&bytes).map_err(|e| {
            TestCaseError::fail(format!("{message:?} did not decode: {e}"))
        })?;
        prop_assert_eq!(decoded, message);
    }

    /// A message whose body was cut short, or had a byte flipped, is an
    /// error or some other message, never a panic.
    #[test]
    fn damaged_messages_never_panic(
        message in delivery_message(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let bytes = herald_queue::encode(&message);
        if bytes.is_empty() {
            return Ok(());
        }
        let _ = herald_queue::decode(&bytes[..cut.index(bytes.len())]);
        let mut flipped = bytes.clone();
        flipped[flip.index(bytes.len())] ^= mask;
        let _ = herald_queue::decode(&flipped);
    }
}
