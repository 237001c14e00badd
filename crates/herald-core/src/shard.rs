//! Which work queue (shard) a delivery belongs to.
//!
//! With `HERALD_WORK_QUEUES` > 1 the deliveries are spread over several
//! work queues, so that on a RabbitMQ cluster their Raft leaders (each one
//! node's core) share the work. A delivery's shard is a pure function of its
//! id: ingest, a resend, the CLI's requeue and a sender's retry all pick the
//! same shard without any shared state, and a delivery stays in its shard
//! through every retry and park.
//!
//! The hash is FNV-1a over the id's 16 bytes, written out here rather than
//! taken from `std`, whose hasher may change between Rust releases: two
//! Herald builds must agree on a delivery's shard during a rolling upgrade.
//! All 16 bytes go in, so both the time part and the random part of a
//! UUIDv7 spread the ids.

/// The most work queues an installation may have (`HERALD_WORK_QUEUES`).
pub const MAX_WORK_QUEUES: u16 = 64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The shard (0-based, below `shards`) of the delivery with this id. One
/// shard (or zero, read as one) is always shard 0; an id that is not 16
/// bytes (a malformed message) hashes like any other bytes, so it still
/// has a stable shard.
pub fn shard_of(delivery_id: &[u8], shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let mut hash = FNV_OFFSET;
    for byte in delivery_id {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    // The remainder is below `shards`, a u16.
    (hash % u64::from(shards)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_shard_is_a_fixed_function_of_the_id() {
        // A table, not a property: these values must never change, or
        // deliveries queued by one build would move shards under another.
        // (Checked against an independent FNV-1a 64 implementation.)
        let ids = [
            "00000000-0000-0000-0000-000000000000",
            "01936b2e-7c4a-7d3e-9f10-2b6c8d4e5a71",
            "01936b2e-7c4a-7d3e-9f10-2b6c8d4e5a72",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ];
        let table: [(u16, [u16; 4]); 4] = [
            (1, [0, 0, 0, 0]),
            (2, [1, 1, 0, 1]),
            (4, [1, 3, 2, 1]),
            (64, [37, 27, 14, 21]),
        ];
        for (shards, expected) in table {
            let got: Vec<u16> = ids
                .iter()
                .map(|id| shard_of(Uuid::parse_str(id).unwrap().as_bytes(), shards))
                .collect();
            assert_eq!(got, expected, "{shards} shards");
        }
        assert_eq!(shard_of(b"", 0), 0, "zero shards read as one");
    }

    #[test]
    fn uuid_v7_ids_of_one_millisecond_spread_over_every_shard() {
        // Ingest makes a burst's ids in the same millisecond: only the
        // random part differs, and it must still reach every shard evenly.
        for shards in [2u16, 3, 4, 16, MAX_WORK_QUEUES] {
            let mut counts = vec![0u32; usize::from(shards)];
            let n = 1_000 * u32::from(shards);
            for i in 0..n {
                // One millisecond's UUIDv7 prefix, and a deterministic
                // stand-in for the random part, so the test never flakes.
                let mut bytes = *Uuid::parse_str("01936b2e-7c4a-7d3e-0000-000000000000")
                    .unwrap()
                    .as_bytes();
                let random = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                bytes[8..].copy_from_slice(&random.to_be_bytes());
                let shard = shard_of(&bytes, shards);
                assert!(shard < shards);
                counts[usize::from(shard)] += 1;
            }
            for (shard, count) in counts.iter().enumerate() {
                assert!(
                    (700..=1_300).contains(count),
                    "{shards} shards: shard {shard} got {count} of {n}"
                );
            }
        }
    }
}
