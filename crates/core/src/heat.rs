//! Heat telemetry: which partition keys carry a node's load, in bounded memory.
//!
//! Each replica counts the reads and writes it handles per `(table, partition key)` with the
//! Space-Saving algorithm (Metwally, Agrawal and El Abbadi, 2005): at most [`HEAT_KEYS_LEN_MAX`]
//! counters; a key not yet counted takes over the smallest counter when all are in use, and
//! inherits its count as an error bound. Space-Saving guarantees, for a stream of `n` operations
//! and `k` counters:
//!
//! - every key that occurred more than `n / k` times holds a counter (so, with `k = 256`, any key
//!   carrying more than 0.4 % of the load is found, well below the 1 % the issue asks for);
//! - a counted key's `count - error <= true count <= count`.
//!
//! Counts are kept per window of [`HEAT_WINDOW_MS`]: the report shows the last completed window
//! (rates per second) so a key that turned hot is visible at most two windows after it did, and
//! one that cooled down disappears as fast. Time enters only through [`Heat::tick`], as
//! everywhere in this crate.
//!
//! Memory: a counter is a 64-bit key hash, two counts and the first [`HEAT_KEY_SHOWN_BYTES_MAX`]
//! bytes of the table and key for display; two windows of two sketches (reads and writes) of 256
//! counters are about 4 × 256 × 110 B ≈ 110 KiB per replica shard at worst (long keys), a few
//! tens of KiB with short ones.

use std::collections::HashMap;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Counters per sketch.
pub const HEAT_KEYS_LEN_MAX: usize = 256;
/// Length of one counting window, ms.
pub const HEAT_WINDOW_MS: u64 = 1_000;
/// Bytes of a table name or partition key kept for display; longer ones are cut (identity is
/// the hash of the whole key, so two keys sharing a prefix are still counted apart).
pub const HEAT_KEY_SHOWN_BYTES_MAX: usize = 64;

const _: () = assert!(HEAT_KEYS_LEN_MAX >= 100, "a 1 % key must always be found");

/// Whether an operation read or wrote the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeatOp {
    Read,
    Write,
}

#[derive(Clone, Debug)]
struct Counter {
    hash: u64,
    table: String,
    partition: Vec<u8>,
    count: u64,
    error: u64,
}

/// A Space-Saving sketch of one operation kind over one window.
#[derive(Clone, Debug, Default)]
pub struct SpaceSaving {
    counters: Vec<Counter>,
    index: HashMap<u64, usize>,
    /// Operations observed (the stream length `n`).
    total: u64,
    /// The smallest count once the sketch is full, and counters that may still hold it (a
    /// counter hit since has moved on; it is skipped when popped). Rebuilt by one scan when it
    /// runs dry, so a miss costs O(1) amortized rather than a scan of every counter: under an
    /// even load many counters share the minimum.
    min_count: u64,
    at_min: Vec<usize>,
}

/// The identity of `(table, partition)`: the key hashed with the table's hash as seed, so no
/// allocation on the request path and no table name can run into a key.
fn key_hash(table: &str, partition: &[u8]) -> u64 {
    xxh3_64_with_seed(partition, xxh3_64(table.as_bytes()))
}

fn shown(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(HEAT_KEY_SHOWN_BYTES_MAX)]
}

impl SpaceSaving {
    /// Counts one operation on `(table, partition)`.
    pub fn observe(&mut self, table: &str, partition: &[u8]) {
        self.total += 1;
        let hash = key_hash(table, partition);
        if let Some(&i) = self.index.get(&hash) {
            self.counters[i].count += 1;
            return;
        }
        if self.counters.len() < HEAT_KEYS_LEN_MAX {
            self.index.insert(hash, self.counters.len());
            self.counters.push(Counter {
                hash,
                table: String::from_utf8_lossy(shown(table.as_bytes())).into_owned(),
                partition: shown(partition).to_vec(),
                count: 1,
                error: 0,
            });
            return;
        }
        // Replace a smallest counter; the newcomer inherits its count as the error bound.
        let i = self.pop_min();
        let min = self.min_count;
        let c = &mut self.counters[i];
        self.index.remove(&c.hash);
        self.index.insert(hash, i);
        // Reuse the evicted counter's buffers: no allocation once the sketch is warm.
        c.hash = hash;
        c.table.clear();
        c.table.push_str(&String::from_utf8_lossy(shown(table.as_bytes())));
        c.partition.clear();
        c.partition.extend_from_slice(shown(partition));
        c.count = min + 1;
        c.error = min;
    }

    /// The index of a counter holding the smallest count (`min_count`), of a full sketch.
    fn pop_min(&mut self) -> usize {
        loop {
            while let Some(i) = self.at_min.pop() {
                if self.counters[i].count == self.min_count {
                    return i;
                }
            }
            self.min_count = self.counters.iter().map(|c| c.count).min().expect("a full sketch has counters");
            let min = self.min_count;
            self.at_min
                .extend(self.counters.iter().enumerate().filter(|(_, c)| c.count == min).map(|(i, _)| i));
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// `(count, error)` of a key, if it holds a counter.
    pub fn estimate(&self, table: &str, partition: &[u8]) -> Option<(u64, u64)> {
        let c = &self.counters[*self.index.get(&key_hash(table, partition))?];
        Some((c.count, c.error))
    }
}

/// One hot key of a report.
#[derive(Clone, Debug, PartialEq)]
pub struct HotKey {
    /// Hash of the whole `(table, partition key)`: what merges one key's counts across shards
    /// and nodes.
    pub hash: u64,
    pub table: String,
    /// The partition key's first [`HEAT_KEY_SHOWN_BYTES_MAX`] bytes.
    pub partition: Vec<u8>,
    /// Operations in the window, and the Space-Saving error bound of each count.
    pub reads: u64,
    pub reads_error: u64,
    pub writes: u64,
    pub writes_error: u64,
}

/// One replica's heat over its last completed window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeatReport {
    pub window_ms: u64,
    pub reads_total: u64,
    pub writes_total: u64,
    /// Every counted key, hottest (reads + writes) first.
    pub keys: Vec<HotKey>,
}

impl HeatReport {
    /// Adds another shard's or node's report: counts of one key add up (each shard owns its
    /// keys; across nodes a key's replicas each count the operations they handled).
    pub fn merge(&mut self, other: &HeatReport) {
        self.window_ms = self.window_ms.max(other.window_ms);
        self.reads_total += other.reads_total;
        self.writes_total += other.writes_total;
        let mut at: HashMap<u64, usize> = self.keys.iter().enumerate().map(|(i, k)| (k.hash, i)).collect();
        for k in &other.keys {
            match at.get(&k.hash) {
                Some(&i) => {
                    let mine = &mut self.keys[i];
                    mine.reads += k.reads;
                    mine.reads_error += k.reads_error;
                    mine.writes += k.writes;
                    mine.writes_error += k.writes_error;
                }
                None => {
                    at.insert(k.hash, self.keys.len());
                    self.keys.push(k.clone());
                }
            }
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.keys.sort_by(|a, b| (b.reads + b.writes).cmp(&(a.reads + a.writes)).then(a.hash.cmp(&b.hash)));
    }
}

/// A replica's heat: the window being counted and the last completed one.
#[derive(Clone, Debug, Default)]
pub struct Heat {
    window_start_ms: Option<u64>,
    reads: SpaceSaving,
    writes: SpaceSaving,
    last: HeatReport,
}

impl Heat {
    pub fn observe(&mut self, op: HeatOp, table: &str, partition: &[u8]) {
        match op {
            HeatOp::Read => self.reads.observe(table, partition),
            HeatOp::Write => self.writes.observe(table, partition),
        }
    }

    /// Closes the window when it is over. A gap longer than a window (nothing ticked: a paused
    /// process) closes it too, over the time it really covered.
    pub fn tick(&mut self, now_ms: u64) {
        let start = *self.window_start_ms.get_or_insert(now_ms);
        if now_ms < start + HEAT_WINDOW_MS {
            return;
        }
        let reads = std::mem::take(&mut self.reads);
        let writes = std::mem::take(&mut self.writes);
        self.last = Self::report(now_ms - start, &reads, &writes);
        self.window_start_ms = Some(now_ms);
    }

    /// The last completed window.
    pub fn last(&self) -> &HeatReport {
        &self.last
    }

    fn report(window_ms: u64, reads: &SpaceSaving, writes: &SpaceSaving) -> HeatReport {
        let mut r = HeatReport {
            window_ms,
            reads_total: reads.total,
            writes_total: writes.total,
            keys: Vec::with_capacity(reads.len() + writes.len()),
        };
        let mut at: HashMap<u64, usize> = HashMap::new();
        for (c, op) in reads
            .counters
            .iter()
            .map(|c| (c, HeatOp::Read))
            .chain(writes.counters.iter().map(|c| (c, HeatOp::Write)))
        {
            let i = *at.entry(c.hash).or_insert_with(|| {
                r.keys.push(HotKey {
                    hash: c.hash,
                    table: c.table.clone(),
                    partition: c.partition.clone(),
                    reads: 0,
                    reads_error: 0,
                    writes: 0,
                    writes_error: 0,
                });
                r.keys.len() - 1
            });
            let k = &mut r.keys[i];
            match op {
                HeatOp::Read => (k.reads, k.reads_error) = (c.count, c.error),
                HeatOp::Write => (k.writes, k.writes_error) = (c.count, c.error),
            }
        }
        r.sort();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Proves Space-Saving's two guarantees on arbitrary streams: every key occurring more
        /// than n/k times holds a counter, and each counted key's count brackets its true count
        /// (count - error <= true <= count); the sketch never holds more than k counters.
        #[test]
        fn space_saving_finds_every_frequent_key_and_bounds_its_count(
            stream in prop::collection::vec((0u16..2_000, 0u8..4), 1..6_000),
        ) {
            let mut s = SpaceSaving::default();
            let mut truth: HashMap<u16, u64> = HashMap::new();
            for (key, reps) in &stream {
                for _ in 0..=*reps {
                    s.observe("t", &key.to_be_bytes());
                    *truth.entry(*key).or_default() += 1;
                }
            }
            let n = s.total();
            prop_assert_eq!(n, truth.values().sum::<u64>());
            prop_assert!(s.len() <= HEAT_KEYS_LEN_MAX);
            for (key, &count) in &truth {
                match s.estimate("t", &key.to_be_bytes()) {
                    Some((est, err)) => prop_assert!(est - err <= count && count <= est, "{key}: {est}-{err} vs {count}"),
                    None => prop_assert!(count * HEAT_KEYS_LEN_MAX as u64 <= n, "{key} ({count} of {n}) not counted"),
                }
            }
        }
    }

    /// Proves a key carrying 1 % of a replica's load among 10 000 uniformly used ones is in the
    /// first completed window's report, near the top, with its rate; and that windows roll.
    #[test]
    fn a_one_percent_key_shows_up_in_the_next_window() {
        let mut h = Heat::default();
        h.tick(0);
        for i in 0..30_000u32 {
            let key = if i % 100 == 0 { b"celebrity".to_vec() } else { (i % 10_000).to_be_bytes().to_vec() };
            h.observe(if i % 2 == 0 { HeatOp::Write } else { HeatOp::Read }, "feed", &key);
        }
        h.tick(500);
        assert!(h.last().keys.is_empty(), "the window is not over yet");
        h.tick(1_000);
        let r = h.last();
        assert_eq!((r.window_ms, r.reads_total + r.writes_total), (1_000, 30_000));
        let top = &r.keys[0];
        assert_eq!(top.partition, b"celebrity");
        assert!(top.writes >= 300 && top.writes - top.writes_error <= 300, "{top:?}");
        h.tick(2_000);
        assert!(h.last().keys.is_empty(), "an idle window reports nothing");
    }

    /// Proves merged reports add up one key's counts from several shards and keep the order.
    #[test]
    fn reports_merge_by_key() {
        let mut a = Heat::default();
        let mut b = Heat::default();
        for (h, n) in [(&mut a, 3), (&mut b, 5)] {
            h.tick(0);
            for _ in 0..n {
                h.observe(HeatOp::Write, "t", b"k");
            }
            h.observe(HeatOp::Read, "t", b"other");
            h.tick(1_000);
        }
        let mut r = a.last().clone();
        r.merge(b.last());
        assert_eq!((r.keys[0].writes, r.keys[1].reads, r.writes_total, r.reads_total), (8, 2, 8, 2));
    }
}
