//! The layout driver: makes the data path follow the committed layout versions.
//!
//! The metadata decides (`quorumdb_meta::layout`): which layout versions are live (writes go to
//! all of them), which one reads use, and three trackers per member. This task only carries
//! the decision to the replica shards and reports what the shards did:
//!
//! ```text
//!   applied metadata ──live layouts, read version──► Node::install_layout ──► every shard
//!   shards (published every 250 ms) ──► newest version held, old writes done ──► ack
//!   min ack ≥ v ──► Input::SyncLayout{v} (full anti-entropy pass over v's trees) ──► sync
//!   min sync ≥ v ──► the metadata's read version is v ──► shards read v ──► sync_ack
//!   min sync_ack ≥ v ──► older versions retire (writes stop going to them)
//! ```
//!
//! Every report is idempotent (the trackers take the maximum), so the task simply looks
//! again every [`LAYOUT_TICK_MS`] and reports whatever is true and not yet recorded; a report
//! the metadata refuses (too early, a member it does not track) is retried on the next look.

use crate::meta::Meta;
use crate::node::Node;
use quorumdb_core::ring::Member;
use quorumdb_meta::layout::Tracker;
use quorumdb_meta::state::{Command, Metadata};
use std::sync::Arc;
use std::time::Duration;

/// How often the driver looks at the metadata and the shards.
pub const LAYOUT_TICK_MS: u64 = 200;

/// Longest a progress proposal may take before the next look tries again.
const PROPOSE_TIMEOUT_MS: u64 = 5_000;

/// The live layouts of `md` as the node's placement wants them: version and members with
/// their peer addresses, oldest first.
pub fn live_layouts(md: &Metadata) -> Vec<(u64, Vec<(Member, String)>)> {
    md.live_layouts()
        .iter()
        .map(|l| {
            let members = l
                .members
                .values()
                .map(|m| (Member { id: m.id.clone(), zone: m.zone.clone() }, m.peer_address.clone()))
                .collect();
            (l.version, members)
        })
        .collect()
}

/// Runs the driver until the process ends.
pub fn spawn(node: Arc<Node>, meta: Meta) {
    tokio::spawn(async move {
        let mut applied = meta.applied();
        loop {
            step(&node, &meta).await;
            // Wake on the next applied entry or after a tick, whichever comes first.
            let _ = tokio::time::timeout(Duration::from_millis(LAYOUT_TICK_MS), applied.changed()).await;
        }
    });
}

/// One look: install the placement the metadata wants, then report what became true.
async fn step(node: &Node, meta: &Meta) {
    let md = meta.metadata();
    if md.layout().is_none() {
        return;
    }
    let live = live_layouts(&md);
    let read = md.read_version();
    if let Err(e) = node.install_layout(&live, read) {
        tracing::error!(error = %e, "cannot place keys by the committed layout");
        return;
    }
    let Some(newest) = live.last().map(|(v, _)| *v) else { return };
    let me = node.id().to_owned();
    let Some(mine) = md.progress(&me) else {
        // Not tracked: this node is in no live layout (it left), nothing to report.
        return;
    };
    let shards = node.layout_progress();
    let mut reports = Vec::new();
    if mine.ack < newest && shards.newest >= newest && !shards.old_writes {
        reports.push((Tracker::Ack, newest));
    }
    if md.min_ack() >= newest && mine.sync < newest {
        if shards.synced >= newest {
            reports.push((Tracker::Sync, newest));
        } else {
            // Idempotent: a shard already streaming for `newest` ignores it.
            node.sync_layout(newest);
        }
    }
    if mine.sync_ack < read && shards.read >= read {
        reports.push((Tracker::SyncAck, read));
    }
    for (tracker, version) in reports {
        let command = Command::LayoutProgress { member: me.clone(), tracker, version };
        match tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), meta.propose(command)).await {
            Ok(Ok(_)) => {
                tracing::info!(tracker = tracker.name(), version, "layout progress recorded");
                metrics::counter!("quorumdb_layout_progress_reports_total", "tracker" => tracker.name())
                    .increment(1);
            }
            Ok(Err(e)) => {
                tracing::debug!(tracker = tracker.name(), version, error = %e, "layout progress not recorded yet")
            }
            Err(_) => {
                tracing::debug!(tracker = tracker.name(), version, "layout progress proposal timed out")
            }
        }
    }
    metrics::gauge!("quorumdb_layout_newest_version").set(newest as f64);
    metrics::gauge!("quorumdb_layout_read_version").set(read as f64);
    metrics::gauge!("quorumdb_layout_live_versions").set(live.len() as f64);
}
