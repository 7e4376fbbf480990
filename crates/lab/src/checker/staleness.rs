//! Staleness and t-visibility: how often a read misses a write that was acknowledged before the
//! read started, as a function of how long before.
//!
//! This is the measurement of Bailis et al., "Probabilistically Bounded Staleness for Practical
//! Partial Quorums" (PBS): with `r + w ≤ N` a read may miss the latest write, and the chance it
//! does falls quickly with the time Δt since the write was acknowledged ("t-visibility"). With
//! `r + w > N` and no replica replaced, QuorumDB promises a stale fraction of exactly zero
//! (README, guarantees table), so the same report doubles as a check of that promise.
//!
//! For each `ok` read `R` of key `k`, let `W` be the `ok` write or delete of `k` with the latest
//! `complete_ns` strictly before `R.invoke_ns` (acknowledged before `R` was sent). `R` is
//! **stale** iff `R.context_out` does not descend `W.context_out`, i.e. `R`'s state had not
//! seen `W` (see [`crate::history`] for why descent is exactly "saw"). Reads with no such `W`
//! are not judged. `Δt = R.invoke_ns − W.complete_ns` goes into one of the buckets of
//! [`STALENESS_BUCKET_BOUNDS_MS`].
//!
//! Only the latest acknowledged write is compared: an older write missed by `R` is either
//! superseded by the latest one (then missing it is not staleness) or concurrent with it (a
//! sibling the latest write's context does not cover), which this measure, like PBS's, ignores.

use super::{fraction, push_bounded, CheckConfig, OpRef};
use crate::history::{Decoded, History, HistoryError, OpKind, OpResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Upper bounds (exclusive) of the Δt buckets, in ms; a last bucket takes everything from the
/// final bound up. Roughly logarithmic, like PBS's plots: replication finishes within a few ms
/// on a LAN, and anything beyond 500 ms is a fault, not a race.
pub const STALENESS_BUCKET_BOUNDS_MS: [u64; 9] = [1, 2, 5, 10, 20, 50, 100, 200, 500];

const NS_PER_MS: u64 = 1_000_000;

/// Report of the staleness checker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StalenessReport {
    /// `ok` reads with an acknowledged write before them.
    pub reads_checked: u64,
    /// `ok` reads with no acknowledged write of their key before them (not judged).
    pub reads_without_prior_write: u64,
    pub stale: u64,
    /// `stale / reads_checked`, 0 when nothing was checked.
    pub stale_fraction: f64,
    /// The t-visibility curve over all reads.
    pub buckets: Vec<StalenessBucket>,
    /// The same, per `(setting, phase)` of the read, sorted.
    pub groups: Vec<StalenessGroup>,
    pub stale_examples: Vec<StaleRead>,
}

/// One point of the t-visibility curve.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StalenessBucket {
    /// Δt from (inclusive), ms.
    pub from_ms: u64,
    /// Δt to (exclusive), ms; `None` for the last, open bucket.
    pub to_ms: Option<u64>,
    pub reads: u64,
    pub stale: u64,
    pub stale_fraction: f64,
}

/// Staleness of the reads recorded under one `setting` and `phase`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StalenessGroup {
    pub setting: Option<String>,
    pub phase: Option<String>,
    pub reads_checked: u64,
    pub stale: u64,
    pub stale_fraction: f64,
    pub buckets: Vec<StalenessBucket>,
}

/// A stale read and the write it missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRead {
    pub read: OpRef,
    pub write: OpRef,
    /// `read.invoke_ns − write.complete_ns`.
    pub delta_ns: u64,
}

/// Measures staleness over `history` (see the module docs).
pub fn check_staleness(history: &History, config: &CheckConfig) -> Result<StalenessReport, HistoryError> {
    Ok(run(&Decoded::new(history)?, config))
}

/// The bucket index of a Δt.
fn bucket_of(delta_ns: u64) -> usize {
    STALENESS_BUCKET_BOUNDS_MS.iter().take_while(|&&bound| delta_ns >= bound * NS_PER_MS).count()
}

fn empty_buckets() -> Vec<StalenessBucket> {
    let mut from_ms = 0;
    let mut buckets = Vec::with_capacity(STALENESS_BUCKET_BOUNDS_MS.len() + 1);
    for &to in &STALENESS_BUCKET_BOUNDS_MS {
        buckets.push(StalenessBucket { from_ms, to_ms: Some(to), ..Default::default() });
        from_ms = to;
    }
    buckets.push(StalenessBucket { from_ms, to_ms: None, ..Default::default() });
    buckets
}

/// Counts into a curve; fractions are filled in by [`finish`].
fn count(buckets: &mut [StalenessBucket], delta_ns: u64, stale: bool) {
    if let Some(bucket) = buckets.get_mut(bucket_of(delta_ns)) {
        bucket.reads += 1;
        bucket.stale += u64::from(stale);
    }
}

fn finish(buckets: &mut [StalenessBucket]) {
    for bucket in buckets {
        bucket.stale_fraction = fraction(bucket.stale, bucket.reads);
    }
}

pub(crate) fn run(d: &Decoded<'_>, config: &CheckConfig) -> StalenessReport {
    let mut report = StalenessReport { buckets: empty_buckets(), ..Default::default() };
    let mut groups: BTreeMap<(Option<&str>, Option<&str>), StalenessGroup> = BTreeMap::new();
    for indices in d.keys.values() {
        // Acknowledged writes and deletes of this key by completion time.
        let mut acked: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| d.ops[i].kind != OpKind::Read && d.ops[i].result == OpResult::Ok)
            .collect();
        acked.sort_by_key(|&i| (d.ops[i].complete_ns, i));
        for &r in indices {
            let read = &d.ops[r];
            if read.kind != OpKind::Read || read.result != OpResult::Ok {
                continue;
            }
            // The last write acknowledged strictly before the read was invoked.
            let before = acked.partition_point(|&w| d.ops[w].complete_ns < read.invoke_ns);
            let Some(&w) = before.checked_sub(1).and_then(|last| acked.get(last)) else {
                report.reads_without_prior_write += 1;
                continue;
            };
            let stale = match (&d.context_out[r], &d.context_out[w]) {
                (Some(seen), Some(written)) => !seen.descends_modulo_pruning(written),
                // Validation guarantees both contexts on ok ops.
                _ => continue,
            };
            let delta_ns = read.invoke_ns - d.ops[w].complete_ns;
            report.reads_checked += 1;
            report.stale += u64::from(stale);
            count(&mut report.buckets, delta_ns, stale);
            let group = groups.entry((read.setting.as_deref(), read.phase.as_deref())).or_insert_with(|| {
                StalenessGroup {
                    setting: read.setting.clone(),
                    phase: read.phase.clone(),
                    buckets: empty_buckets(),
                    ..Default::default()
                }
            });
            group.reads_checked += 1;
            group.stale += u64::from(stale);
            count(&mut group.buckets, delta_ns, stale);
            if stale {
                push_bounded(&mut report.stale_examples, config.examples_len_max, || {
                    Some(StaleRead { read: OpRef::new(d.ops, r)?, write: OpRef::new(d.ops, w)?, delta_ns })
                });
            }
        }
    }
    report.stale_fraction = fraction(report.stale, report.reads_checked);
    finish(&mut report.buckets);
    report.groups = groups
        .into_values()
        .map(|mut g| {
            g.stale_fraction = fraction(g.stale, g.reads_checked);
            finish(&mut g.buckets);
            g
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bucket edges: a bound belongs to the bucket it starts, and the last bucket is open.
    #[test]
    fn bucket_edges() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(NS_PER_MS - 1), 0);
        assert_eq!(bucket_of(NS_PER_MS), 1);
        assert_eq!(bucket_of(4_999_999), 2);
        assert_eq!(bucket_of(5 * NS_PER_MS), 3);
        assert_eq!(bucket_of(500 * NS_PER_MS), STALENESS_BUCKET_BOUNDS_MS.len());
        assert_eq!(bucket_of(u64::MAX), STALENESS_BUCKET_BOUNDS_MS.len());
        let buckets = empty_buckets();
        assert_eq!(buckets.len(), STALENESS_BUCKET_BOUNDS_MS.len() + 1);
        assert_eq!((buckets[0].from_ms, buckets[0].to_ms), (0, Some(1)));
        assert_eq!(buckets.last().map(|b| (b.from_ms, b.to_ms)), Some((500, None)));
    }
}
