//! Delivery of one partition's records to a warehouse, as a deterministic machine: the retry,
//! budget, breaker and dead-letter decisions of the sink (issue #12), without the warehouse.
//!
//! The seed's incident — a deploy makes the warehouse answer 500s, the consumer retries
//! blindly, rows are duplicated and lag spikes — has four fixes, and each is a part here:
//!
//! - **Retries with full-jitter exponential backoff** ([`Backoff`]): the n-th retry waits a
//!   uniform time in `[0, min(max, base·2ⁿ))`, so a fleet of sinks does not retry in lockstep.
//! - **A retry budget** ([`RetryBudget`], Finagle's): retries may add at most `ratio` of the
//!   successful writes (plus a small floor per second), so a failing warehouse is not flooded.
//!   A retry that finds no budget waits for the breaker instead of hammering.
//! - **A circuit breaker** ([`Breaker`]): after `failures_max` consecutive failures the sink
//!   stops writing for `open_ms` (the member stays in its group: fetching pauses, no
//!   rebalance), then sends one probe; success closes it.
//! - **Dead letters, not a blocked partition**: a batch that fails *permanently* (the data is
//!   refused: a constraint, a schema) is bisected until the failing record is alone; that
//!   record goes to the dead-letter topic, durably, before the committed offset moves past it.
//!   Transient failures (timeouts, 5xx) never dead-letter: during an outage every record would
//!   look poisonous. They are retried under the budget and the breaker until the warehouse
//!   recovers; the partition's lag shows the wait. (Limit: a record that makes the warehouse
//!   fail *transiently* every time blocks its partition; the driver must classify such errors
//!   as permanent.)
//!
//! What this machine guarantees (property-tested below): the offset it commits never passes a
//! record that was neither acknowledged by the warehouse nor durably dead-lettered; every
//! record is written or dead-lettered; at most one batch is in flight, and records are written
//! in offset order, so an idempotent (upserting) warehouse write plus the offset committed in
//! the same transaction gives exactly-once effect.

use std::collections::VecDeque;

/// The sink's knobs. Units last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Retries allowed per successful write, in percent (Finagle's default: 20).
    pub budget_percent: u32,
    /// Retries always allowed per second, however few writes succeed.
    pub budget_floor_per_s: u32,
    /// Consecutive failures that open the breaker.
    pub breaker_failures_max: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open_ms: u64,
    /// Records per warehouse write.
    pub batch_records_max: usize,
    /// Records buffered (fetched, not yet written); beyond it fetching pauses.
    pub buffered_records_max: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            budget_percent: 20,
            budget_floor_per_s: 10,
            breaker_failures_max: 5,
            breaker_open_ms: 5_000,
            batch_records_max: 500,
            buffered_records_max: 10_000,
        }
    }
}

/// A small deterministic PRNG (SplitMix64): the jitter must be reproducible from a seed in
/// the simulator, and ten lines do not justify a dependency in this crate.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound)` (0 for a bound of 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.next_u64() % bound
    }
}

/// Full-jitter exponential backoff.
#[derive(Clone, Debug)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    rng: SplitMix,
}

impl Backoff {
    pub fn new(base_ms: u64, max_ms: u64, seed: u64) -> Self {
        assert!(base_ms <= max_ms, "backoff base {base_ms} ms exceeds its max {max_ms} ms");
        Backoff { base_ms, max_ms, rng: SplitMix::new(seed) }
    }

    /// The wait before retry number `retry` (0 for the first retry).
    pub fn delay_ms(&mut self, retry: u32) -> u64 {
        let cap =
            self.base_ms.saturating_mul(1u64.checked_shl(retry.min(63)).unwrap_or(u64::MAX)).min(self.max_ms);
        self.rng.below(cap.max(1))
    }
}

/// Finagle's retry budget: a balance credited by successes and the passing seconds, debited by
/// retries. Balances are kept in hundredths of a retry.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    percent: u32,
    floor_per_s: u32,
    /// Hundredths of a retry.
    balance: u64,
    cap: u64,
    last_ms: u64,
}

impl RetryBudget {
    pub fn new(percent: u32, floor_per_s: u32) -> Self {
        // At most ten seconds of floor or a hundred successes' worth can be saved up.
        let cap = u64::from(floor_per_s.max(1)) * 100 * 10 + u64::from(percent) * 100;
        RetryBudget { percent, floor_per_s, balance: cap, cap, last_ms: 0 }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.balance = (self.balance + elapsed * u64::from(self.floor_per_s) / 10).min(self.cap);
    }

    pub fn success(&mut self, now_ms: u64) {
        self.refill(now_ms);
        self.balance = (self.balance + u64::from(self.percent)).min(self.cap);
    }

    /// Takes one retry if the budget has it.
    pub fn try_retry(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.balance >= 100 {
            self.balance -= 100;
            true
        } else {
            false
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Nothing is written until `until_ms`.
    Open {
        until_ms: u64,
    },
    /// One probe write is allowed.
    HalfOpen,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    failures_max: u32,
    open_ms: u64,
    failures: u32,
    state: BreakerState,
    /// Times it opened (a metric).
    pub opened: u64,
}

impl Breaker {
    pub fn new(failures_max: u32, open_ms: u64) -> Self {
        assert!(failures_max >= 1, "a breaker needs at least one failure to open");
        Breaker { failures_max, open_ms, failures: 0, state: BreakerState::Closed, opened: 0 }
    }

    pub fn state(&mut self, now_ms: u64) -> BreakerState {
        if let BreakerState::Open { until_ms } = self.state {
            if now_ms >= until_ms {
                self.state = BreakerState::HalfOpen;
            }
        }
        self.state
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    pub fn failure(&mut self, now_ms: u64) {
        self.failures += 1;
        if self.state == BreakerState::HalfOpen || self.failures >= self.failures_max {
            self.state = BreakerState::Open { until_ms: now_ms + self.open_ms };
            self.opened += 1;
        }
    }
}

/// Deduplication of events by id over a bounded window of a partition's log (issue #12, item
/// 4): a record is a duplicate when one of the `records_max` offsets before it carries the same
/// event id and, with a time bound, that earlier record's timestamp is at most `window_ms` older
/// than the newest timestamp seen. The window is over the *log*, not the table: it is a pure
/// function of the records before an offset, so a driver that rebuilds it after a restart by
/// replaying those offsets ([`DedupWindow::offer`] on each) reaches the same decisions.
///
/// Memory is bounded by `records_max` entries of one key each (the driver passes a fixed-size
/// digest of the id). An id seen longer ago than the window is not remembered: its duplicate is
/// delivered (in business-key mode the table's unique constraint still skips it).
#[derive(Clone, Debug)]
pub struct DedupWindow<K> {
    records_max: u64,
    /// 0: no time bound.
    window_ms: u64,
    /// (offset, timestamp, id) of the records in the window, in offset order.
    entries: VecDeque<(u64, i64, Option<K>)>,
    /// Per id in the window: how many entries carry it and the newest timestamp among them.
    ids: std::collections::HashMap<K, (u32, i64)>,
    newest_ms: i64,
}

impl<K: std::hash::Hash + Eq + Clone> DedupWindow<K> {
    pub fn new(records_max: u64, window_ms: u64) -> Self {
        assert!(records_max >= 1, "a dedup window holds at least one record");
        DedupWindow {
            records_max,
            window_ms,
            entries: VecDeque::new(),
            ids: std::collections::HashMap::new(),
            newest_ms: i64::MIN,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict_front(&mut self) {
        let Some((_, _, Some(id))) = self.entries.pop_front() else { return };
        if let Some((n, _)) = self.ids.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(&id);
            }
        }
    }

    /// Offers the record at `offset` (offsets must increase) with its timestamp and event id
    /// (`None`: a record without one, never a duplicate); whether it duplicates a record in the
    /// window. Every record enters the window, duplicates included.
    pub fn offer(&mut self, offset: u64, timestamp_ms: i64, id: Option<K>) -> bool {
        if let Some((last, _, _)) = self.entries.back() {
            assert!(offset > *last, "dedup offers must be in offset order");
        }
        self.newest_ms = self.newest_ms.max(timestamp_ms);
        let oldest_offset = offset.saturating_sub(self.records_max);
        let oldest_ms = if self.window_ms == 0 {
            i64::MIN
        } else {
            self.newest_ms.saturating_sub(i64::try_from(self.window_ms).unwrap_or(i64::MAX))
        };
        while self.entries.front().is_some_and(|(o, ts, _)| *o < oldest_offset || *ts < oldest_ms) {
            self.evict_front();
        }
        let Some(id) = id else {
            self.entries.push_back((offset, timestamp_ms, None));
            return false;
        };
        // Timestamps need not grow with offsets, so an entry behind a newer one at the front
        // may be older than the bound: the id's newest timestamp decides.
        let duplicate = self.ids.get(&id).is_some_and(|(_, newest)| *newest >= oldest_ms);
        let entry = self.ids.entry(id.clone()).or_insert((0, timestamp_ms));
        entry.0 += 1;
        entry.1 = entry.1.max(timestamp_ms);
        self.entries.push_back((offset, timestamp_ms, Some(id)));
        duplicate
    }
}

/// A record to deliver: its offset (the driver keeps the payload) and, when the driver
/// already knows the warehouse must not see it (the payload fails the sink's declared schema,
/// or its batch cannot be decoded), why: such a record is dead-lettered without a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub rejected: Option<String>,
}

impl Record {
    /// A record for the warehouse.
    pub fn new(offset: u64) -> Record {
        Record { offset, rejected: None }
    }

    /// A record refused before any write, for `why`.
    pub fn rejected(offset: u64, why: String) -> Record {
        Record { offset, rejected: Some(why) }
    }
}

/// How a warehouse write failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Timeouts, 5xx, connection resets: worth retrying.
    Transient(String),
    /// The data itself is refused (a constraint, a schema mismatch): retrying cannot help.
    Permanent(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkEffect {
    /// Write these records (consecutive offsets `first..=last`) to the warehouse, upserting by
    /// `(topic, partition, offset)` and storing `last + 1` as the partition's offset in the same
    /// transaction. Answer with [`PartitionSink::written`] or [`PartitionSink::failed`].
    Write {
        first: u64,
        last: u64,
    },
    /// Write this record to the dead-letter topic with the error and attempt count (durably,
    /// acks=all); answer with [`PartitionSink::dead_lettered`]. `attempts` counts the
    /// warehouse writes that included the record: 0 for a record rejected before any write.
    DeadLetter {
        offset: u64,
        error: String,
        attempts: u32,
    },
    /// Commit `next` as the group's offset for the partition (after the warehouse has it).
    Commit {
        next: u64,
    },
    /// Stop or resume fetching this partition (backpressure, breaker).
    PauseFetch,
    ResumeFetch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum InFlight {
    None,
    Write { first: u64, last: u64 },
    DeadLetter { offset: u64, error: String, attempts: u32 },
}

/// The delivery state of one partition.
#[derive(Clone, Debug)]
pub struct PartitionSink {
    config: SinkConfig,
    buffered: VecDeque<Record>,
    in_flight: InFlight,
    /// The current batch's attempts so far.
    attempts: u32,
    /// Failed produces of the current dead letter (paces their retries).
    dead_letter_failures: u32,
    /// When the next write may start (backoff).
    not_before_ms: u64,
    /// After a permanent failure of a batch ending at `.1`: the batch size to try (halved
    /// down to 1) until the writes have passed that batch.
    bisect: Option<(usize, u64)>,
    /// A dead-letter write to (re)issue: offset, error, attempts.
    pending_dead_letter: Option<(u64, String, u32)>,
    last_error: String,
    backoff: Backoff,
    budget: RetryBudget,
    breaker: Breaker,
    paused: bool,
    /// Counters (metrics).
    pub retries: u64,
    pub dead_lettered: u64,
    pub written: u64,
    effects: Vec<SinkEffect>,
}

impl PartitionSink {
    pub fn new(config: SinkConfig, seed: u64) -> Self {
        assert!(config.batch_records_max >= 1);
        assert!(config.buffered_records_max >= config.batch_records_max, "the buffer must hold a batch");
        PartitionSink {
            config,
            buffered: VecDeque::new(),
            in_flight: InFlight::None,
            attempts: 0,
            dead_letter_failures: 0,
            not_before_ms: 0,
            bisect: None,
            pending_dead_letter: None,
            last_error: String::new(),
            backoff: Backoff::new(config.backoff_base_ms, config.backoff_max_ms, seed),
            budget: RetryBudget::new(config.budget_percent, config.budget_floor_per_s),
            breaker: Breaker::new(config.breaker_failures_max, config.breaker_open_ms),
            paused: false,
            retries: 0,
            dead_lettered: 0,
            written: 0,
            effects: Vec::new(),
        }
    }

    pub fn take_effects(&mut self) -> Vec<SinkEffect> {
        std::mem::take(&mut self.effects)
    }

    pub fn breaker_state(&mut self, now_ms: u64) -> BreakerState {
        self.breaker.state(now_ms)
    }

    pub fn breaker_opened(&self) -> u64 {
        self.breaker.opened
    }

    pub fn buffered_len(&self) -> usize {
        self.buffered.len()
    }

    /// Fetched records, in offset order, continuing the buffer.
    pub fn fetched(&mut self, now_ms: u64, records: &[Record]) {
        for r in records {
            if let Some(last) = self.buffered.back() {
                assert!(r.offset > last.offset, "records must arrive in offset order");
            }
            self.buffered.push_back(r.clone());
        }
        self.step(now_ms);
    }

    /// The warehouse acknowledged the in-flight write.
    pub fn written(&mut self, now_ms: u64) {
        let InFlight::Write { first, last } = self.in_flight else { return };
        self.in_flight = InFlight::None;
        while self.buffered.front().is_some_and(|r| r.offset <= last) {
            self.buffered.pop_front();
        }
        self.written += last - first + 1;
        self.attempts = 0;
        self.breaker.success();
        self.budget.success(now_ms);
        // Bisection ends once the writes passed the batch that failed.
        if self.bisect.is_some_and(|(_, until)| last >= until) {
            self.bisect = None;
        }
        self.effects.push(SinkEffect::Commit { next: last + 1 });
        self.step(now_ms);
    }

    /// The in-flight write failed.
    pub fn failed(&mut self, now_ms: u64, failure: Failure) {
        let InFlight::Write { first, last } = self.in_flight else { return };
        self.in_flight = InFlight::None;
        self.attempts += 1;
        let n = (last - first + 1) as usize;
        let (permanent, error) = match failure {
            Failure::Permanent(e) => (true, e),
            Failure::Transient(e) => (false, e),
        };
        self.last_error = error;
        if !permanent {
            self.breaker.failure(now_ms);
        }
        if permanent {
            if n == 1 {
                // The record alone fails: it goes to the dead-letter topic.
                self.dead_letter(first, self.last_error.clone(), self.attempts);
                return;
            }
            self.bisect = Some((n.div_ceil(2), last));
            self.attempts = 0;
            self.not_before_ms = now_ms;
        } else {
            let delay = self.backoff.delay_ms(self.attempts - 1);
            self.not_before_ms = now_ms + delay;
        }
        self.step(now_ms);
    }

    /// The dead-letter write of the in-flight record is durable.
    pub fn dead_lettered(&mut self, now_ms: u64) {
        let InFlight::DeadLetter { offset, .. } = self.in_flight else { return };
        self.in_flight = InFlight::None;
        if self.buffered.front().is_some_and(|r| r.offset == offset) {
            self.buffered.pop_front();
        }
        self.dead_lettered += 1;
        self.attempts = 0;
        self.dead_letter_failures = 0;
        self.bisect = None;
        self.effects.push(SinkEffect::Commit { next: offset + 1 });
        self.step(now_ms);
    }

    /// The dead-letter write failed: it is retried with backoff (the partition waits; moving
    /// past the record without a durable dead letter would lose it).
    pub fn dead_letter_failed(&mut self, now_ms: u64) {
        let InFlight::DeadLetter { offset, error, attempts } =
            std::mem::replace(&mut self.in_flight, InFlight::None)
        else {
            return;
        };
        // `dead_letter_failures` paces the produce retries; the header keeps the write attempts.
        let delay = self.backoff.delay_ms(self.dead_letter_failures.min(16));
        self.dead_letter_failures += 1;
        self.not_before_ms = now_ms + delay;
        self.pending_dead_letter = Some((offset, error, attempts));
        self.step(now_ms);
    }

    fn dead_letter(&mut self, offset: u64, error: String, attempts: u32) {
        self.in_flight = InFlight::DeadLetter { offset, error: error.clone(), attempts };
        self.effects.push(SinkEffect::DeadLetter { offset, error, attempts });
    }

    pub fn tick(&mut self, now_ms: u64) {
        self.step(now_ms);
    }

    fn step(&mut self, now_ms: u64) {
        let want_pause = self.buffered.len() >= self.config.buffered_records_max
            || matches!(self.breaker.state(now_ms), BreakerState::Open { .. });
        if want_pause != self.paused {
            self.paused = want_pause;
            self.effects.push(if want_pause { SinkEffect::PauseFetch } else { SinkEffect::ResumeFetch });
        }
        if self.in_flight != InFlight::None || now_ms < self.not_before_ms {
            return;
        }
        if let Some((offset, error, attempts)) = self.pending_dead_letter.take() {
            self.dead_letter(offset, error, attempts);
            return;
        }
        let Some(front) = self.buffered.front() else { return };
        let first = front.offset;
        if let Some(why) = front.rejected.clone() {
            // Refused before the warehouse: no write, so neither the breaker nor the budget
            // is involved; the dead-letter topic is the log, not the warehouse.
            self.dead_letter(first, why, 0);
            return;
        }
        match self.breaker.state(now_ms) {
            BreakerState::Open { .. } => return,
            BreakerState::HalfOpen | BreakerState::Closed => {}
        }
        if self.attempts > 0 {
            // A retry: it needs budget, else it waits (a second) for the budget to refill.
            if !self.budget.try_retry(now_ms) {
                self.not_before_ms = now_ms + 1_000;
                return;
            }
            self.retries += 1;
        }
        let n = self.bisect.map_or(self.config.batch_records_max, |(n, _)| n).min(self.buffered.len());
        // A batch ends before the next rejected record (it is dead-lettered on its own).
        let n = self.buffered.iter().take(n).take_while(|r| r.rejected.is_none()).count();
        // A batch is consecutive buffered records; gaps (compacted or trimmed offsets) are
        // fine, the write names the range.
        let last = self.buffered.get(n - 1).map_or(first, |r| r.offset);
        self.in_flight = InFlight::Write { first, last };
        self.effects.push(SinkEffect::Write { first, last });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn records(range: std::ops::Range<u64>) -> Vec<Record> {
        range.map(Record::new).collect()
    }

    fn config() -> SinkConfig {
        SinkConfig { batch_records_max: 8, buffered_records_max: 64, ..SinkConfig::default() }
    }

    /// Full jitter stays below min(max, base·2ⁿ) and is reproducible from the seed.
    #[test]
    fn backoff_is_full_jitter_and_capped() {
        let mut a = Backoff::new(100, 10_000, 7);
        let mut b = Backoff::new(100, 10_000, 7);
        for retry in 0..40 {
            let d = a.delay_ms(retry);
            assert_eq!(d, b.delay_ms(retry));
            assert!(d < (100u64 << retry.min(20)).clamp(1, 10_000), "retry {retry}: {d}");
        }
    }

    /// The budget allows its floor per second and a share of successes, no more.
    #[test]
    fn retry_budget_bounds_retries() {
        let mut b = RetryBudget::new(20, 10);
        let mut allowed = 0;
        while b.try_retry(0) {
            allowed += 1;
        }
        assert_eq!(allowed, 120, "at most ten seconds of floor and a hundred successes' share are saved");
        for _ in 0..50 {
            b.success(0);
        }
        let mut earned = 0;
        while b.try_retry(0) {
            earned += 1;
        }
        assert_eq!(earned, 10, "50 successes at 20% earn 10 retries");
        let mut later = 0;
        while b.try_retry(1_000) {
            later += 1;
        }
        assert_eq!(later, 10, "one second of the floor: 10 retries");
    }

    /// Consecutive failures open the breaker; after open_ms one probe may go; a failed probe
    /// reopens it, a successful one closes it.
    #[test]
    fn breaker_opens_probes_and_closes() {
        let mut b = Breaker::new(3, 1_000);
        for _ in 0..3 {
            assert_ne!(b.state(0), BreakerState::Open { until_ms: 1_000 });
            b.failure(0);
        }
        assert_eq!(b.state(10), BreakerState::Open { until_ms: 1_000 });
        assert_eq!(b.state(1_000), BreakerState::HalfOpen);
        b.failure(1_000);
        assert_eq!(b.state(1_500), BreakerState::Open { until_ms: 2_000 });
        assert_eq!(b.state(2_000), BreakerState::HalfOpen);
        b.success();
        assert_eq!(b.state(2_001), BreakerState::Closed);
        assert_eq!(b.opened, 2);
    }

    /// A poison record inside a batch is isolated by bisection and dead-lettered; the records
    /// around it are written; the committed offset passes it only after its dead letter.
    #[test]
    fn a_poison_record_is_bisected_out_and_dead_lettered() {
        let mut s = PartitionSink::new(config(), 1);
        s.fetched(0, &records(0..8));
        let mut now = 0;
        let mut log = Vec::new();
        for _ in 0..100 {
            let effects = s.take_effects();
            if effects.is_empty() {
                now += 100;
                s.tick(now);
                continue;
            }
            for e in effects {
                log.push(e.clone());
                match e {
                    SinkEffect::Write { first, last } if (first..=last).contains(&5) => {
                        s.failed(now, Failure::Permanent("row 5 violates a constraint".into()))
                    }
                    SinkEffect::Write { .. } => s.written(now),
                    SinkEffect::DeadLetter { .. } => s.dead_lettered(now),
                    _ => {}
                }
            }
            if s.buffered_len() == 0 {
                break;
            }
        }
        log.extend(s.take_effects());
        assert_eq!((s.written, s.dead_lettered), (7, 1));
        let dl = log.iter().position(|e| matches!(e, SinkEffect::DeadLetter { offset: 5, .. })).unwrap();
        let past = log.iter().position(|e| matches!(e, SinkEffect::Commit { next } if *next > 5)).unwrap();
        assert!(dl < past, "{log:?}");
        assert!(matches!(log.last(), Some(SinkEffect::Commit { next: 8 })), "{log:?}");
    }

    /// Transient failures back off and open the breaker (fetching pauses); when the warehouse
    /// recovers, one probe closes it and every record is written once, none dead-lettered.
    #[test]
    fn an_outage_opens_the_breaker_and_recovers() {
        let mut s = PartitionSink::new(config(), 2);
        s.fetched(0, &records(0..20));
        let mut now = 0;
        let mut paused = false;
        let mut writes_during_outage = 0;
        while s.buffered_len() > 0 && now < 120_000 {
            let effects = s.take_effects();
            if effects.is_empty() {
                now += 50;
                s.tick(now);
                continue;
            }
            for e in effects {
                match e {
                    SinkEffect::Write { .. } if now < 30_000 => {
                        writes_during_outage += 1;
                        s.failed(now, Failure::Transient("503".into()))
                    }
                    SinkEffect::Write { .. } => s.written(now),
                    SinkEffect::PauseFetch => paused = true,
                    SinkEffect::DeadLetter { .. } => panic!("transient failures must not dead-letter"),
                    _ => {}
                }
            }
        }
        assert!(paused, "the open breaker pauses fetching");
        assert!(s.breaker_opened() >= 1);
        assert_eq!((s.written, s.dead_lettered), (20, 0));
        // 30 s of outage: the breaker and budget keep attempts far below one per 50 ms.
        assert!(writes_during_outage < 30, "{writes_during_outage} writes during the outage");
    }

    /// The count bound: an id repeated within `records_max` offsets is a duplicate, beyond it
    /// is not; a record without an id is never one.
    #[test]
    fn dedup_window_counts_offsets() {
        let mut w = DedupWindow::new(3, 0);
        assert!(!w.offer(0, 0, Some("a")));
        assert!(!w.offer(1, 0, None));
        assert!(w.offer(2, 0, Some("a")), "within 3 offsets");
        assert!(!w.offer(10, 0, Some("a")), "offsets 7..10 hold no a");
        assert!(!w.offer(11, 0, None) && !w.offer(12, 0, None));
        assert!(w.offer(13, 0, Some("a")), "10 is within 3 offsets of 13");
        assert!(w.len() <= 4, "bounded: {}", w.len());
    }

    /// The time bound: an id whose last record is older than `window_ms` before the newest
    /// timestamp is forgotten, even when records arrive out of timestamp order.
    #[test]
    fn dedup_window_forgets_by_time() {
        let mut w = DedupWindow::new(1_000, 100);
        assert!(!w.offer(0, 1_000, Some("a")));
        assert!(!w.offer(1, 1_000, Some("b")));
        assert!(w.offer(2, 1_090, Some("a")), "90 ms later");
        assert!(!w.offer(3, 1_300, Some("b")), "300 ms later");
        assert!(!w.offer(4, 1_250, Some("a")), "a's newest (1 090) is 210 ms before the newest (1 300)");
    }

    /// Rebuilding the window by replaying the records before an offset gives the same
    /// decisions as the window that saw them live (what a restarted worker does).
    #[test]
    fn dedup_window_replay_matches_live() {
        let ids: Vec<Option<u8>> =
            (0..200u64).map(|i| if i % 7 == 0 { None } else { Some((i * 31 % 23) as u8) }).collect();
        let mut live = DedupWindow::new(16, 0);
        let decisions: Vec<bool> =
            ids.iter().enumerate().map(|(o, id)| live.offer(o as u64, 0, *id)).collect();
        let restart_at = 120u64;
        let mut rebuilt = DedupWindow::new(16, 0);
        for o in restart_at - 16..restart_at {
            rebuilt.offer(o, 0, ids[o as usize]);
        }
        for o in restart_at..200 {
            assert_eq!(rebuilt.offer(o, 0, ids[o as usize]), decisions[o as usize], "offset {o}");
        }
    }

    /// A rejected record is dead-lettered on its own with 0 attempts, without a write or the
    /// breaker; the batches around it are written.
    #[test]
    fn rejected_records_are_dead_lettered_without_a_write() {
        let mut s = PartitionSink::new(config(), 3);
        let mut input = records(0..6);
        input[2] = Record::rejected(2, "schema: amount is missing".into());
        s.fetched(0, &input);
        let mut log = Vec::new();
        for _ in 0..20 {
            let effects = s.take_effects();
            if effects.is_empty() {
                break;
            }
            for e in effects {
                log.push(e.clone());
                match e {
                    SinkEffect::Write { .. } => s.written(0),
                    SinkEffect::DeadLetter { .. } => s.dead_lettered(0),
                    _ => {}
                }
            }
        }
        let writes: Vec<_> = log.iter().filter(|e| matches!(e, SinkEffect::Write { .. })).cloned().collect();
        assert_eq!(
            writes,
            vec![SinkEffect::Write { first: 0, last: 1 }, SinkEffect::Write { first: 3, last: 5 }]
        );
        assert!(log.contains(&SinkEffect::DeadLetter {
            offset: 2,
            error: "schema: amount is missing".into(),
            attempts: 0
        }));
        assert_eq!((s.written, s.dead_lettered), (5, 1));
    }

    proptest! {
        /// Whatever the warehouse answers before it recovers: every record ends written or
        /// dead-lettered (only poison and rejected records dead-lettered, rejected ones with 0
        /// attempts and never in a write), the
        /// committed offset only grows and never passes a record that is neither, and at most
        /// one operation is in flight at a time.
        #[test]
        fn commits_never_pass_an_undelivered_record(
            answers in proptest::collection::vec(0u8..10, 1..400),
            poison in proptest::collection::btree_set(0u64..40, 0..4),
            rejected in proptest::collection::btree_set(0u64..40, 0..4),
            seed in any::<u64>(),
        ) {
            let mut s = PartitionSink::new(config(), seed);
            let input: Vec<Record> = (0..40)
                .map(|o| if rejected.contains(&o) { Record::rejected(o, "schema".into()) } else { Record::new(o) })
                .collect();
            s.fetched(0, &input);
            let mut delivered: BTreeMap<u64, &str> = BTreeMap::new();
            let mut committed = 0u64;
            let mut now = 0u64;
            // The warehouse misbehaves as `answers` says, then recovers for good.
            let mut answers = answers.into_iter().chain(std::iter::repeat(9));
            let mut pending: Vec<SinkEffect> = Vec::new();
            for _ in 0..20_000 {
                pending.extend(s.take_effects());
                let writes = pending.iter().filter(|e| matches!(e, SinkEffect::Write { .. } | SinkEffect::DeadLetter { .. })).count();
                prop_assert!(writes <= 1, "{pending:?}");
                if pending.is_empty() {
                    if s.buffered_len() == 0 { break; }
                    now += 250;
                    s.tick(now);
                    continue;
                }
                let e = pending.remove(0);
                let a = answers.next().unwrap_or(0);
                match e {
                    SinkEffect::Write { first, last } => {
                        prop_assert!(!(first..=last).any(|o| rejected.contains(&o)), "a write of a rejected record");
                        if (first..=last).any(|o| poison.contains(&o)) {
                            s.failed(now, Failure::Permanent("poison".into()));
                        } else if a < 3 {
                            s.failed(now, Failure::Transient("500".into()));
                        } else {
                            for o in first..=last { delivered.insert(o, "written"); }
                            s.written(now);
                        }
                    }
                    SinkEffect::DeadLetter { offset, attempts, .. } => {
                        prop_assert_eq!(attempts == 0, rejected.contains(&offset), "offset {}", offset);
                        if a < 2 {
                            s.dead_letter_failed(now);
                        } else {
                            delivered.insert(offset, "dead");
                            s.dead_lettered(now);
                        }
                    }
                    SinkEffect::Commit { next } => {
                        prop_assert!(next >= committed);
                        prop_assert!((committed..next).all(|o| delivered.contains_key(&o)), "commit {next} past an undelivered record");
                        committed = next;
                    }
                    SinkEffect::PauseFetch | SinkEffect::ResumeFetch => {}
                }
            }
            prop_assert_eq!(committed, 40);
            for o in 0..40 {
                let want = if poison.contains(&o) || rejected.contains(&o) { "dead" } else { "written" };
                prop_assert_eq!(delivered.get(&o).copied(), Some(want), "offset {}", o);
            }
        }
    }
}
