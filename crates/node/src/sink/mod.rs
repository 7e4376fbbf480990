//! The sink runtime: delivers topics to a PostgreSQL table with exactly-once *effect*
//! (issue #12). A thin tokio driver around [`quorumdb_core::sink::PartitionSink`], which
//! makes every retry, budget, breaker and dead-letter decision.
//!
//! ```text
//!  metadata (Raft): SinkDef ──► SinkManager (every node) ──► one Member per running sink
//!                                                              │ JoinGroup/SyncGroup/Heartbeat
//!                                                              │ of group __sink.<name>
//!                                                              ▼ (range assignment by the leader)
//!  Log.read ──► decode ──► PartitionSink ──Write{first,last}──► ONE PostgreSQL transaction:
//!  (one worker per                 ▲                             INSERT rows ON CONFLICT DO NOTHING
//!   assigned partition)            │                             UPDATE quorumdb_sink_offsets
//!                                  │                               SET next_offset = last + 1
//!                                  │                               WHERE next_offset = <ours>
//!                                  └─ written / failed(Transient|Permanent) ◄─┘
//!                 DeadLetter ──► produce to the DLQ topic (acks=all) ──► dead_lettered
//!                 Commit     ──► group offset (lag display; PostgreSQL stays authoritative)
//! ```
//!
//! Why exactly-once: the rows and the position are in one transaction, so after any crash the
//! warehouse holds exactly the rows below its recorded position; a worker resumes from that
//! position, and a row written again (a retried transaction whose commit answer was lost)
//! collides with its key and is skipped. The `WHERE next_offset = <ours>` fence makes a zombie
//! (a worker of an older generation still writing after its partition moved) roll back instead
//! of moving the position backwards or past rows it did not write.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use quorumdb_api as api;
use quorumdb_core::sink::{BreakerState, Failure, PartitionSink, Record, SinkConfig, SinkEffect};
use quorumdb_kafka::{
    Append, Broker, GroupCode, GroupRequest, GroupResponse, LogError, NewTopic, OffsetQuery, OffsetSpec,
};
use quorumdb_meta::coordinator::JoinRequest;
use quorumdb_meta::sink::{ColumnType, SecretRef, SinkDef, SinkKey, SinkRunState, SinkSettings, SinkValue};
use tokio::sync::watch;

use crate::groups::NodeBroker;
use crate::meta::Meta;
use crate::node::Node;
use crate::wire;

/// How often the manager compares the running members with the definitions.
const MANAGE_INTERVAL_MS: u64 = 500;
/// The group session: a dead node's partitions move this long after its last heartbeat.
const SESSION_TIMEOUT_MS: u32 = 4_000;
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// How long the coordinator waits for every member to rejoin; a member rejoins after its
/// workers finish their in-flight transaction, which is bounded by `PG_TIMEOUT_MS`.
const REBALANCE_TIMEOUT_MS: u32 = 15_000;
/// Every PostgreSQL call (connect, statement, commit) is bounded by this.
const PG_TIMEOUT_MS: u64 = 5_000;
/// Bytes asked of the log per read.
const READ_BYTES_MAX: usize = 1 << 20;
/// How long an idle worker waits for new records before looking again.
const IDLE_WAIT_MS: u64 = 100;
/// How often the group offset (lag display) is committed at most, per partition.
const GROUP_COMMIT_INTERVAL_MS: u64 = 500;
/// Timeout of a dead-letter produce (acks=all: durable in the log).
const DLQ_PRODUCE_TIMEOUT_MS: u64 = 10_000;
/// Longest error text kept in a header or in the status.
const ERROR_BYTES_MAX: usize = 1024;
/// Waits between attempts that failed for lack of a coordinator or a warehouse connection.
const RETRY_WAIT_MS: u64 = 500;
/// The assignor the sink's members offer (Kafka's range assignor, computed by the leader).
const ASSIGNOR: &str = "range";

const _: () = assert!(HEARTBEAT_INTERVAL_MS * 3 <= SESSION_TIMEOUT_MS as u64);
const _: () = assert!(PG_TIMEOUT_MS * 2 < REBALANCE_TIMEOUT_MS as u64);

/// The state one worker publishes for `sink describe`.
#[derive(Clone, Debug, Default)]
struct PartitionStatus {
    pg_offset: Option<u64>,
    high_watermark: u64,
    written: u64,
    retries: u64,
    dead_lettered: u64,
    deduplicated: u64,
    breaker: &'static str,
    last_error: String,
}

type StatusMap = Arc<Mutex<HashMap<String, BTreeMap<(String, u32), PartitionStatus>>>>;

/// One running member of a sink's group on this node.
struct Running {
    /// The definition's id: a recreated sink of the same name is another sink.
    id: u64,
    /// Set to stop the member (the sink was deleted or recreated, or the node stops): it stops
    /// its workers, leaves the group and ends.
    stop: watch::Sender<bool>,
    /// The definition's state: paused members stay in the group but run no workers.
    paused: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Every node runs one: it keeps a group member running for each running sink.
pub struct SinkManager {
    node: Arc<Node>,
    meta: Meta,
    broker: Arc<NodeBroker>,
    running: Mutex<HashMap<String, Running>>,
    status: StatusMap,
    start: Instant,
    /// PostgreSQL commits of this process's workers (for `sink_abort_after_commits`).
    commits: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent across a panic (each update is one insert or remove).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn truncate(mut s: String) -> String {
    if s.len() > ERROR_BYTES_MAX {
        let mut cut = ERROR_BYTES_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl SinkManager {
    pub fn start(node: Arc<Node>, meta: Meta, broker: Arc<NodeBroker>) -> Arc<SinkManager> {
        let m = Arc::new(SinkManager {
            node,
            meta,
            broker,
            running: Mutex::new(HashMap::new()),
            status: Arc::new(Mutex::new(HashMap::new())),
            start: Instant::now(),
            commits: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&m);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(MANAGE_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { return };
                m.manage();
            }
        });
        m
    }

    fn manage(self: &Arc<Self>) {
        let view = self.meta.view();
        let defs = view.metadata.sinks().sinks();
        let mut running = lock(&self.running);
        running.retain(|name, r| {
            let keep = defs.get(name).is_some_and(|d| d.id == r.id) && !r.task.is_finished();
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for (name, def) in defs {
            let paused = def.state == SinkRunState::Paused;
            if let Some(r) = running.get(name) {
                r.paused.send_if_modified(|p| std::mem::replace(p, paused) != paused);
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let (paused_tx, paused_rx) = watch::channel(paused);
            let member = Member {
                manager: self.clone(),
                def: Arc::new(def.clone()),
                member_id: String::new(),
                generation: -1,
                partitions_at_join: 0,
            };
            let task = tokio::spawn(member.run(stop_rx, paused_rx));
            running.insert(name.clone(), Running { id: def.id, stop, paused: paused_tx, task });
        }
    }

    /// Stops every member (they leave their groups); for a clean node stop.
    pub async fn stop(&self) {
        let tasks: Vec<_> = lock(&self.running)
            .drain()
            .map(|(_, r)| {
                let _ = r.stop.send(true);
                r.task
            })
            .collect();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS * 2), t).await;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// This node's workers of sink `name`.
    pub fn local_status(&self, name: &str) -> Vec<api::SinkPartitionInfo> {
        let status = lock(&self.status);
        let Some(parts) = status.get(name) else { return Vec::new() };
        parts
            .iter()
            .map(|((topic, partition), s)| api::SinkPartitionInfo {
                topic: topic.clone(),
                partition: *partition,
                owner: Some(self.node.id().to_string()),
                pg_offset: s.pg_offset,
                high_watermark: s.high_watermark,
                lag: s.pg_offset.map(|o| s.high_watermark.saturating_sub(o)),
                written: s.written,
                retries: s.retries,
                dead_lettered: s.dead_lettered,
                breaker: s.breaker.to_string(),
                last_error: s.last_error.clone(),
                deduplicated: s.deduplicated,
            })
            .collect()
    }

    /// Every node's workers of sink `name` (this node's and each peer's that answers in time).
    pub async fn cluster_status(&self, name: &str) -> Vec<api::SinkPartitionInfo> {
        let mut out = self.local_status(name);
        let me = self.node.id().to_string();
        let mut asks = tokio::task::JoinSet::new();
        for m in &self.node.config.members {
            if m.id == me {
                continue;
            }
            let node = self.node.clone();
            let (id, name) = (m.id.clone(), name.to_string());
            asks.spawn(async move {
                node.ask_peer(&id, wire::Request::SinkStatus { name }, Duration::from_millis(2_000)).await
            });
        }
        while let Some(r) = asks.join_next().await {
            if let Ok(Ok(wire::Response::SinkStatus { json })) = r {
                if let Ok(parts) = serde_json::from_slice::<Vec<api::SinkPartitionInfo>>(&json) {
                    out.extend(parts);
                }
            }
        }
        out
    }

    /// A group request, sent to the coordinator: this node if it leads the metadata group,
    /// else the leader over the peer transport.
    async fn group(&self, request: GroupRequest) -> GroupResponse {
        let view = self.meta.view();
        if view.is_leader {
            return self.broker.group(request).await;
        }
        let fail = group_failure(&request, GroupCode::CoordinatorNotAvailable);
        let Some(leader) = view.leader else { return fail };
        let wait = Duration::from_millis(u64::from(REBALANCE_TIMEOUT_MS) + 5_000);
        match self.node.ask_peer(&leader, wire::Request::Group(request), wait).await {
            Ok(wire::Response::Group(r)) => r,
            _ => fail,
        }
    }
}

fn group_failure(r: &GroupRequest, code: GroupCode) -> GroupResponse {
    match r {
        GroupRequest::Join(_) => GroupResponse::Join(Err(code)),
        GroupRequest::Sync { .. } => GroupResponse::Sync(Err(code)),
        GroupRequest::Heartbeat { .. } => GroupResponse::Heartbeat(Err(code)),
        GroupRequest::Leave { .. } => GroupResponse::Leave(Err(code)),
    }
}

/// The delivery settings of the core machine.
pub fn core_config(s: &SinkSettings) -> SinkConfig {
    SinkConfig {
        backoff_base_ms: s.backoff_base_ms,
        backoff_max_ms: s.backoff_max_ms,
        budget_percent: s.budget_percent,
        budget_floor_per_s: s.budget_floor_per_s,
        breaker_failures_max: s.breaker_failures_max,
        breaker_open_ms: s.breaker_open_ms,
        batch_records_max: s.batch_records_max as usize,
        buffered_records_max: s.buffered_records_max as usize,
    }
}

mod member;
mod records;
mod schema;
mod warehouse;
mod worker;

use member::*;
pub use records::dead_letter_batch;
use records::*;
use schema::*;
use warehouse::*;
pub use warehouse::{check_connection_string, classify, redact_connection, warehouse_offsets};
use worker::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// The range assignor gives each member a consecutive range, the first members one more,
    /// every partition exactly once, and the same answer whatever the members' order.
    #[test]
    fn range_assignment_covers_every_partition_once() {
        let members = vec!["b".to_string(), "a".to_string(), "c".to_string()];
        let a = range_assign(&members, &[("t".into(), 4)]);
        assert_eq!(a["a"]["t"], vec![0, 1]);
        assert_eq!(a["b"]["t"], vec![2]);
        assert_eq!(a["c"]["t"], vec![3]);
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(range_assign(&reversed, &[("t".into(), 4)]), a);
        let encoded = encode_assignment(&a["a"]);
        let decoded = crate::http_groups::decode_assignment(&encoded).unwrap();
        assert_eq!(decoded, vec![api::AssignedPartitions { topic: "t".into(), partitions: vec![0, 1] }]);
    }

    /// A dead-letter batch passes the broker's validation (CRC-32C, lengths) and decodes back
    /// to the record, its offset and its headers.
    #[test]
    fn dead_letter_batches_are_valid_and_carry_headers() {
        let headers =
            vec![("quorumdb.error", b"23514: check".to_vec()), ("quorumdb.attempts", b"1".to_vec())];
        let b = dead_letter_batch(Some(b"k"), Some(b"{}"), &headers, 1_700_000_000_000);
        let split = quorumdb_kafka::split_batches(&b, b.len()).unwrap();
        assert_eq!(split.len(), 1);
        let records = decode_records(&b, 0);
        let r = &records[&0];
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"k"[..]), Some(&b"{}"[..])));
        assert_eq!(r.timestamp_ms, 1_700_000_000_000);
    }

    /// Passwords never appear in a redacted connection string, in either form.
    #[test]
    fn connection_strings_are_redacted() {
        assert_eq!(redact_connection("host=a password=s3cret user=u"), "host=a password=*** user=u");
        assert_eq!(redact_connection("host=a password = 'se cret' user=u"), "host=a password=*** user=u");
        assert_eq!(redact_connection("postgresql://u:s3cret@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(
            redact_connection("postgresql://u@h/db?password=s3cret&x=1"),
            "postgresql://u@h/db?password=***&x=1"
        );
        assert_eq!(redact_connection("host=127.0.0.1 user=postgres"), "host=127.0.0.1 user=postgres");
    }

    /// Records decode from a record set at and after the asked offset; truncated bytes stop
    /// the decoding without a panic.
    #[test]
    fn records_decode_from_the_asked_offset() {
        let mut b =
            quorumdb_kafka::testing::batch(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 5, None).to_vec();
        quorumdb_kafka::rewrite_base_offset(&mut b, 10);
        let r = decode_records(&b, 11);
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![11, 12]);
        for cut in 0..b.len() {
            let _ = decode_records(&b[..cut], 0);
        }
    }
}
