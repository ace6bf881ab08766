//! Producer-side partitioning, as Kafka's default partitioner does it.
//!
//! Keyed records go to `toPositive(murmur2(key)) % partitions`, so a key lands on the same
//! partition as it would with the Java client or librdkafka's `murmur2_random`. Keyless records
//! stick to one partition until the current batch completes, then move on (KIP-480's sticky
//! partitioner), which keeps batches large.

/// Kafka's murmur2 hash of `data` (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ length as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

/// Sticky choice for keyless records: one partition per batch, a new one when a batch completes.
#[derive(Debug)]
pub struct StickyPartitioner {
    current: Option<i32>,
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl StickyPartitioner {
    /// A partitioner that has not picked a partition yet.
    pub fn new() -> StickyPartitioner {
        StickyPartitioner { current: None }
    }

    /// The partition for the next keyless record.
    pub fn partition(&mut self, partition_count: i32) -> i32 {
        assert!(partition_count > 0, "a topic has at least one partition");
        match self.current {
            Some(p) if p < partition_count => p,
            _ => {
                let p = rand::random_range(0..partition_count);
                self.current = Some(p);
                p
            }
        }
    }

    /// The batch for the current partition was sent: move to a different partition.
    pub fn batch_completed(&mut self, partition_count: i32) {
        let previous = self.current.take();
        if partition_count > 1 {
            let mut next = rand::random_range(0..partition_count - 1);
            if Some(next) >= previous {
                next += 1;
            }
            self.current = Some(next);
        }
    }
}

/// A record's partition: by key when it has one, sticky otherwise.
pub fn choose(key: Option<&[u8]>, partition_count: i32, sticky: &mut StickyPartitioner) -> i32 {
    match key {
        Some(k) => partition_for_key(k, partition_count),
        None => sticky.partition(partition_count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_utils_test() {
        // The cases of Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keyed_partition_is_positive_modulo() {
        for key in ["21", "foobar", "abc", "key-17"] {
            let p = partition_for_key(key.as_bytes(), 3);
            assert!((0..3).contains(&p));
            assert_eq!(p, (murmur2(key.as_bytes()) & 0x7fff_ffff) % 3);
        }
    }

    #[test]
    fn sticky_keeps_a_partition_until_the_batch_completes_then_moves() {
        let mut sticky = StickyPartitioner::new();
        let first = sticky.partition(4);
        assert!((0..100).all(|_| sticky.partition(4) == first));
        sticky.batch_completed(4);
        assert_ne!(sticky.partition(4), first);
    }
}
