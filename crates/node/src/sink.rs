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
use quorumdb_meta::sink::{SinkDef, SinkKey, SinkRunState, SinkSettings, SinkValue};
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

// ---------------------------------------------------------------------------------------------
// The group member

/// Why a member's generation ended.
enum GenerationEnd {
    Stop,
    /// Rejoin with the same member id (a rebalance, a stale generation).
    Rejoin,
    /// Rejoin as a new member (the coordinator forgot us).
    Reset,
}

struct Member {
    manager: Arc<SinkManager>,
    def: Arc<SinkDef>,
    member_id: String,
    generation: i32,
    /// The sink's topics' partitions when this generation was joined: a topic created or
    /// grown since makes the member rejoin, so the leader assigns the new partitions (Kafka
    /// consumers rejoin on such metadata changes too).
    partitions_at_join: usize,
}

impl Member {
    fn partitions_now(&self) -> usize {
        self.def.topics.iter().filter_map(|t| self.manager.broker.topic(t)).map(|t| t.partitions.len()).sum()
    }
}

/// Kafka's consumer-protocol subscription (version 0): the topics, no user data.
fn encode_subscription(topics: &[String]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(i32::try_from(topics.len()).unwrap_or(0));
    for t in topics {
        b.put_i16(i16::try_from(t.len()).unwrap_or(0));
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.to_vec()
}

/// Kafka's consumer-protocol assignment (version 0), which `group describe` decodes.
fn encode_assignment(parts: &BTreeMap<String, Vec<i32>>) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(i32::try_from(parts.len()).unwrap_or(0));
    for (t, ps) in parts {
        b.put_i16(i16::try_from(t.len()).unwrap_or(0));
        b.put_slice(t.as_bytes());
        b.put_i32(i32::try_from(ps.len()).unwrap_or(0));
        for p in ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(-1);
    b.to_vec()
}

/// The range assignor: per topic, members sorted by id take consecutive partition ranges,
/// the first `partitions % members` one more.
pub fn range_assign(
    members: &[String],
    topics: &[(String, u32)],
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
        sorted.iter().map(|m| ((*m).clone(), BTreeMap::new())).collect();
    let n = sorted.len() as u32;
    if n == 0 {
        return out;
    }
    for (topic, partitions) in topics {
        let (each, extra) = (partitions / n, partitions % n);
        let mut next = 0u32;
        for (i, m) in sorted.iter().enumerate() {
            let take = each + u32::from((i as u32) < extra);
            let ps: Vec<i32> = (next..next + take).filter_map(|p| i32::try_from(p).ok()).collect();
            next += take;
            if let Some(a) = out.get_mut(*m) {
                a.insert(topic.clone(), ps);
            }
        }
    }
    out
}

impl Member {
    async fn run(mut self, mut stop: watch::Receiver<bool>, mut paused: watch::Receiver<bool>) {
        let name = self.def.name.clone();
        tracing::info!(node = self.manager.node.id(), sink = %name, "sink member starting");
        loop {
            if *stop.borrow() {
                break;
            }
            let assignment = match self.join(&mut stop).await {
                Some(a) => a,
                None => break,
            };
            match self.serve(assignment, &mut stop, &mut paused).await {
                GenerationEnd::Stop => break,
                GenerationEnd::Rejoin => {}
                GenerationEnd::Reset => self.member_id.clear(),
            }
        }
        if !self.member_id.is_empty() {
            let leave =
                GroupRequest::Leave { group: self.def.group(), member_ids: vec![self.member_id.clone()] };
            let _ =
                tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), self.manager.group(leave)).await;
        }
        lock(&self.manager.status).remove(&name);
        tracing::info!(node = self.manager.node.id(), sink = %name, "sink member stopped");
    }

    /// Joins and syncs one generation; `None` when stopped meanwhile.
    async fn join(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Vec<(String, u32)>> {
        let group = self.def.group();
        loop {
            if *stop.borrow() {
                return None;
            }
            let request = GroupRequest::Join(JoinRequest {
                group: group.clone(),
                member_id: self.member_id.clone(),
                instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![(ASSIGNOR.into(), encode_subscription(&self.def.topics))],
                session_timeout_ms: SESSION_TIMEOUT_MS,
                rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
                client_id: self.manager.node.id().to_string(),
                client_host: self.manager.node.config.http_listen.clone(),
                require_known_member: true,
            });
            let joined = tokio::select! {
                r = self.manager.group(request) => r,
                _ = stop.changed() => return None,
            };
            let joined = match joined {
                GroupResponse::Join(Ok(j)) => j,
                GroupResponse::Join(Err(GroupCode::MemberIdRequired(id))) => {
                    self.member_id = id;
                    continue;
                }
                GroupResponse::Join(Err(GroupCode::UnknownMemberId)) => {
                    self.member_id.clear();
                    continue;
                }
                other => {
                    tracing::debug!(sink = %self.def.name, ?other, "join failed; retrying");
                    tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS)).await;
                    continue;
                }
            };
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation;
            self.partitions_at_join = self.partitions_now();
            let assignments = if joined.leader == joined.member_id {
                let members: Vec<String> = joined.members.iter().map(|(id, _, _)| id.clone()).collect();
                let topics: Vec<(String, u32)> = self
                    .def
                    .topics
                    .iter()
                    .filter_map(|t| {
                        let info = self.manager.broker.topic(t)?;
                        Some((t.clone(), u32::try_from(info.partitions.len()).unwrap_or(0)))
                    })
                    .collect();
                range_assign(&members, &topics).into_iter().map(|(m, a)| (m, encode_assignment(&a))).collect()
            } else {
                Vec::new()
            };
            let sync = GroupRequest::Sync {
                group: group.clone(),
                generation: self.generation,
                member_id: self.member_id.clone(),
                assignments,
            };
            match self.manager.group(sync).await {
                GroupResponse::Sync(Ok((_, _, bytes))) => {
                    let parts = crate::http_groups::decode_assignment(&bytes).unwrap_or_default();
                    let mine: Vec<(String, u32)> = parts
                        .into_iter()
                        .flat_map(|a| {
                            let topic = a.topic;
                            a.partitions
                                .into_iter()
                                .filter_map(move |p| u32::try_from(p).ok().map(|p| (topic.clone(), p)))
                        })
                        .collect();
                    tracing::info!(
                        node = self.manager.node.id(),
                        sink = %self.def.name,
                        generation = self.generation,
                        partitions = ?mine,
                        "sink member assigned"
                    );
                    return Some(mine);
                }
                GroupResponse::Sync(Err(GroupCode::UnknownMemberId)) => self.member_id.clear(),
                other => {
                    tracing::debug!(sink = %self.def.name, ?other, "sync failed; rejoining");
                    tokio::time::sleep(Duration::from_millis(RETRY_WAIT_MS / 5)).await;
                }
            }
        }
    }

    /// Runs one generation: workers for the assigned partitions (unless paused) and the
    /// heartbeat, until the generation ends. Workers are stopped (their in-flight transaction
    /// finished) before this returns, so the member rejoins only after revoking.
    async fn serve(
        &mut self,
        assignment: Vec<(String, u32)>,
        stop: &mut watch::Receiver<bool>,
        paused: &mut watch::Receiver<bool>,
    ) -> GenerationEnd {
        let mut workers: Option<(watch::Sender<bool>, tokio::task::JoinSet<()>)> = None;
        let mut beat = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let want = !*paused.borrow();
            if want && workers.is_none() {
                let (tx, rx) = watch::channel(false);
                let mut set = tokio::task::JoinSet::new();
                for (topic, partition) in &assignment {
                    let w = Worker::new(self, topic.clone(), *partition, rx.clone());
                    set.spawn(w.run());
                }
                workers = Some((tx, set));
            } else if !want {
                if let Some((tx, set)) = workers.take() {
                    stop_workers(tx, set).await;
                }
            }
            tokio::select! {
                _ = stop.changed() => break GenerationEnd::Stop,
                _ = paused.changed() => continue,
                _ = beat.tick() => {}
            }
            let hb = GroupRequest::Heartbeat {
                group: self.def.group(),
                generation: self.generation,
                member_id: self.member_id.clone(),
            };
            match self.manager.group(hb).await {
                GroupResponse::Heartbeat(Ok(())) if self.partitions_now() != self.partitions_at_join => {
                    break GenerationEnd::Rejoin
                }
                GroupResponse::Heartbeat(Ok(())) => {}
                GroupResponse::Heartbeat(Err(
                    GroupCode::RebalanceInProgress | GroupCode::IllegalGeneration,
                )) => break GenerationEnd::Rejoin,
                GroupResponse::Heartbeat(Err(GroupCode::UnknownMemberId)) => break GenerationEnd::Reset,
                // No coordinator right now (a new metadata leader is loading): keep the
                // assignment and keep trying, as Kafka clients do; the group stays stable.
                _ => {}
            }
        };
        if let Some((tx, set)) = workers.take() {
            stop_workers(tx, set).await;
        }
        end
    }
}

async fn stop_workers(tx: watch::Sender<bool>, mut set: tokio::task::JoinSet<()>) {
    let _ = tx.send(true);
    // Each worker ends after its in-flight transaction, which is bounded by PG_TIMEOUT_MS;
    // the margin only bounds a bug.
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS * 2), all).await.is_err() {
        set.abort_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// One record read from the log.
#[derive(Clone, Debug)]
struct LogRecord {
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    /// The batch could not be decoded (compressed): the record is delivered as a poison.
    undecodable: Option<String>,
}

fn read_varint(b: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn read_bytes(b: &mut &[u8]) -> Option<Option<Bytes>> {
    let len = read_varint(b)?;
    if len < 0 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let v = Bytes::copy_from_slice(b.get(..len)?);
    *b = &b[len..];
    Some(Some(v))
}

/// The records of a fetched record set at or after `from`, by offset. Compressed batches
/// (the broker never decompresses, nor does the sink) yield undecodable records.
fn decode_records(set: &[u8], from: u64) -> BTreeMap<u64, LogRecord> {
    let mut out = BTreeMap::new();
    let mut rest = set;
    while let Some(h) = quorumdb_kafka::BatchHeader::parse(rest) {
        let Some(total) = h.total_bytes().filter(|t| *t <= rest.len() && *t >= 61) else { break };
        let batch = &rest[61..total];
        rest = &rest[total..];
        if h.compression() != 0 {
            for o in h.base_offset..=h.last_offset() {
                if let Ok(o) = u64::try_from(o) {
                    if o >= from {
                        out.insert(
                            o,
                            LogRecord {
                                timestamp_ms: h.max_timestamp,
                                key: None,
                                value: None,
                                undecodable: Some(format!("compressed batch (codec {})", h.compression())),
                            },
                        );
                    }
                }
            }
            continue;
        }
        let mut body = batch;
        for _ in 0..h.records_count.max(0) {
            let parsed = (|| {
                let len = usize::try_from(read_varint(&mut body)?).ok()?;
                let mut r = body.get(..len)?;
                body = &body[len..];
                r = r.get(1..)?;
                let ts_delta = read_varint(&mut r)?;
                let offset_delta = read_varint(&mut r)?;
                let key = read_bytes(&mut r)?;
                let value = read_bytes(&mut r)?;
                Some((
                    h.base_offset.checked_add(offset_delta)?,
                    h.first_timestamp.saturating_add(ts_delta),
                    key,
                    value,
                ))
            })();
            let Some((offset, timestamp_ms, key, value)) = parsed else { break };
            if let Ok(o) = u64::try_from(offset) {
                if o >= from {
                    out.insert(o, LogRecord { timestamp_ms, key, value, undecodable: None });
                }
            }
        }
    }
    out
}

fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn put_field(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            put_varint(out, v.len() as i64);
            out.put_slice(v);
        }
        None => put_varint(out, -1),
    }
}

/// A v2 record batch of one uncompressed record with headers (CRC-32C over attributes..end,
/// as Kafka defines it).
pub fn dead_letter_batch(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Vec<u8>)],
    timestamp_ms: i64,
) -> Bytes {
    let mut r = BytesMut::new();
    r.put_i8(0);
    put_varint(&mut r, 0);
    put_varint(&mut r, 0);
    put_field(&mut r, key);
    put_field(&mut r, value);
    put_varint(&mut r, headers.len() as i64);
    for (k, v) in headers {
        put_field(&mut r, Some(k.as_bytes()));
        put_field(&mut r, Some(v));
    }
    let mut crc_part = BytesMut::new();
    crc_part.put_i16(0); // attributes: no compression, create time
    crc_part.put_i32(0); // last offset delta
    crc_part.put_i64(timestamp_ms);
    crc_part.put_i64(timestamp_ms);
    crc_part.put_i64(-1); // no producer id
    crc_part.put_i16(-1);
    crc_part.put_i32(-1);
    crc_part.put_i32(1);
    put_varint(&mut crc_part, r.len() as i64);
    crc_part.put_slice(&r);
    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32(i32::try_from(4 + 1 + 4 + crc_part.len()).unwrap_or(i32::MAX));
    out.put_i32(-1);
    out.put_i8(2);
    out.put_u32(crc32c::crc32c(&crc_part));
    out.put_slice(&crc_part);
    out.freeze()
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Classifies a PostgreSQL failure: data the warehouse refuses (SQLSTATE classes 22 data
/// exception, 23 integrity violation, 42 syntax or undefined object) can never succeed and is
/// permanent — the record is bisected out and dead-lettered; everything else (connection
/// errors, 08 connection exception, 40001/40P01 serialization failure or deadlock, 53
/// insufficient resources, 57 operator intervention such as a shutdown, timeouts) is transient.
pub fn classify(e: &tokio_postgres::Error) -> Failure {
    let text = truncate(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    });
    match e.code().map(|c| c.code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") || code.starts_with("42") => {
            Failure::Permanent(text)
        }
        _ => Failure::Transient(text),
    }
}

fn quote_table(table: &str) -> String {
    // The name was checked to be one or two plain identifiers (`check_table`).
    table.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

/// The DDL a sink needs: its table (if missing) and the offsets table.
fn ddl(def: &SinkDef) -> Vec<String> {
    let value = match def.value {
        SinkValue::Bytea => "bytea",
        SinkValue::Jsonb => "jsonb",
    };
    let business = match def.key {
        SinkKey::Offset => "",
        SinkKey::Field(_) => "\"event_key\" text NOT NULL UNIQUE, ",
    };
    vec![
        "CREATE TABLE IF NOT EXISTS quorumdb_sink_offsets (sink text NOT NULL, topic text NOT NULL, \
         partition int NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (sink, topic, partition))"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\"topic\" text NOT NULL, \"partition\" int NOT NULL, \
             \"offset\" bigint NOT NULL, \"key\" bytea, \"value\" {value}, \"timestamp\" timestamptz NOT NULL, \
             {business}PRIMARY KEY (\"topic\", \"partition\", \"offset\"))",
            quote_table(&def.table)
        ),
    ]
}

/// The upsert of one batch. `ON CONFLICT DO NOTHING` without a target covers the primary key
/// and, in business-key mode, the key's unique constraint: a replayed record or event is skipped.
fn insert_sql(def: &SinkDef) -> String {
    let value = match def.value {
        SinkValue::Bytea => "v",
        SinkValue::Jsonb => "convert_from(v, 'UTF8')::jsonb",
    };
    let (col, expr) = match def.key {
        SinkKey::Offset => ("", String::new()),
        SinkKey::Field(_) => (", \"event_key\"", ", convert_from(v, 'UTF8')::jsonb ->> $7::text".to_string()),
    };
    format!(
        "INSERT INTO {} (\"topic\", \"partition\", \"offset\", \"key\", \"value\", \"timestamp\"{col}) \
         SELECT $1::text, $2::int, o, k, {value}, to_timestamp(ts::double precision / 1000){expr} \
         FROM unnest($3::bigint[], $4::bytea[], $5::bytea[], $6::bigint[]) AS u(o, k, v, ts) \
         ON CONFLICT DO NOTHING",
        quote_table(&def.table)
    )
}

const FENCED_UPDATE: &str = "UPDATE quorumdb_sink_offsets SET next_offset = $4 \
     WHERE sink = $1 AND topic = $2 AND partition = $3 AND next_offset = $5";

/// Why a warehouse transaction did not commit.
enum WriteError {
    Failed(Failure),
    /// The offsets row is not where this worker left it: another worker moved it.
    Fenced,
}

async fn pg<T>(f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Failure::Transient(format!("PostgreSQL did not answer within {PG_TIMEOUT_MS} ms"))),
    }
}

/// Opens a connection (bounded by `PG_TIMEOUT_MS`) and drives it on its own task.
async fn connect(conn: &str) -> Result<tokio_postgres::Client, Failure> {
    let mut config = tokio_postgres::Config::from_str(conn)
        .map_err(|e| Failure::Transient(format!("bad connection string: {e}")))?;
    config.connect_timeout(Duration::from_millis(PG_TIMEOUT_MS));
    let (client, connection) = pg(config.connect(tokio_postgres::NoTls)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "sink PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The connection string with its password replaced by `***`, for answers and logs: the
/// definition keeps the real one (in the metadata), nothing shows it.
pub fn redact_connection(conn: &str) -> String {
    if let Some(scheme_end) = conn.find("://") {
        // URL form: postgresql://user:password@host/db?password=...
        let (scheme, rest) = conn.split_at(scheme_end + 3);
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => format!("{}:***{}", &authority[..colon], &authority[at..]),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let tail = match tail.find("password=") {
            Some(i) => {
                let end = tail[i..].find('&').map_or(tail.len(), |e| i + e);
                format!("{}password=***{}", &tail[..i], &tail[end..])
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{authority}{tail}");
    }
    // Key-value form: password=secret or password='se cret'.
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    while let Some(i) = rest.find("password") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "password".len()..];
        let trimmed = after.trim_start();
        let Some(value) = trimmed.strip_prefix('=') else {
            out.push_str("password");
            rest = after;
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |e| e + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str("password=***");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Checks that a connection string parses (the HTTP layer refuses bad ones up front).
pub fn check_connection_string(conn: &str) -> Result<(), String> {
    tokio_postgres::Config::from_str(conn).map(|_| ()).map_err(|e| e.to_string())
}

/// The sink's offsets in the warehouse, for `sink describe`: `(topic, partition) → next`.
pub async fn warehouse_offsets(def: &SinkDef) -> Result<BTreeMap<(String, u32), u64>, String> {
    let text = |f: Failure| match f {
        Failure::Permanent(e) | Failure::Transient(e) => e,
    };
    let client = connect(&def.postgres).await.map_err(text)?;
    let rows = pg(client.query(
        "SELECT topic, partition, next_offset FROM quorumdb_sink_offsets WHERE sink = $1",
        &[&def.name],
    ))
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        // No offsets table yet: nothing delivered.
        Err(Failure::Permanent(e)) if e.starts_with("42P01") => return Ok(BTreeMap::new()),
        Err(e) => return Err(text(e)),
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            let topic: String = r.try_get(0).ok()?;
            let partition: i32 = r.try_get(1).ok()?;
            let next: i64 = r.try_get(2).ok()?;
            Some(((topic, u32::try_from(partition).ok()?), u64::try_from(next).ok()?))
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The partition worker

struct Worker {
    manager: Arc<SinkManager>,
    def: Arc<SinkDef>,
    member_id: String,
    generation: i32,
    topic: String,
    partition: u32,
    stop: watch::Receiver<bool>,
    client: Option<tokio_postgres::Client>,
    /// Where the warehouse's offsets row is, as this worker last wrote or read it: the fence.
    pg_position: u64,
    /// The next offset to read from the log.
    fetch_offset: u64,
    /// Fetched records not yet written or dead-lettered (at most `buffered_records_max`:
    /// the machine pauses fetching at that size).
    payloads: BTreeMap<u64, LogRecord>,
    machine: PartitionSink,
    fetch_paused: bool,
    high_watermark: u64,
    last_group_commit: Option<(Instant, u64)>,
    pending_group_commit: Option<u64>,
    /// The machine's latest `Commit`: when it is past `pg_position` (a dead letter whose
    /// position update failed), the update is retried.
    committed_next: u64,
    last_error: String,
}

/// A wall clock in ms since the epoch.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Worker {
    fn new(member: &Member, topic: String, partition: u32, stop: watch::Receiver<bool>) -> Worker {
        let def = member.def.clone();
        let seed = u64::from(partition) ^ def.id.rotate_left(17) ^ wall_ms() as u64;
        Worker {
            manager: member.manager.clone(),
            machine: PartitionSink::new(core_config(&def.settings), seed),
            def,
            member_id: member.member_id.clone(),
            generation: member.generation,
            topic,
            partition,
            stop,
            client: None,
            pg_position: 0,
            fetch_offset: 0,
            payloads: BTreeMap::new(),
            fetch_paused: false,
            high_watermark: 0,
            last_group_commit: None,
            pending_group_commit: None,
            committed_next: 0,
            last_error: String::new(),
        }
    }

    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("sink", self.def.name.clone()),
            ("topic", self.topic.clone()),
            ("partition", self.partition.to_string()),
        ]
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn publish(&mut self) {
        let now = self.manager.now_ms();
        let breaker = match self.machine.breaker_state(now) {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        };
        let lag = self.high_watermark.saturating_sub(self.pg_position);
        metrics::gauge!("quorumdb_sink_lag_records", &self.labels()).set(lag as f64);
        let status = PartitionStatus {
            pg_offset: Some(self.pg_position),
            high_watermark: self.high_watermark,
            written: self.machine.written,
            retries: self.machine.retries,
            dead_lettered: self.machine.dead_lettered,
            breaker,
            last_error: self.last_error.clone(),
        };
        lock(&self.manager.status)
            .entry(self.def.name.clone())
            .or_default()
            .insert((self.topic.clone(), self.partition), status);
    }

    fn unpublish(&self) {
        // This node no longer delivers the partition: its share of the lag and breaker
        // gauges is nothing (the new owner's node reports them).
        metrics::gauge!("quorumdb_sink_lag_records", &self.labels()).set(0.0);
        metrics::gauge!("quorumdb_sink_breaker_open", &self.labels()).set(0.0);
        let mut status = lock(&self.manager.status);
        if let Some(parts) = status.get_mut(&self.def.name) {
            parts.remove(&(self.topic.clone(), self.partition));
        }
    }

    async fn run(mut self) {
        // Each pass starts from the warehouse's position; a fence (another worker moved it)
        // or a lost connection at start begins a new pass.
        while !self.stopped() {
            match self.start_position().await {
                Ok(()) => {}
                Err(f) => {
                    self.last_error = failure_text(&f);
                    self.client = None;
                    self.publish();
                    self.sleep(RETRY_WAIT_MS * 2).await;
                    continue;
                }
            }
            self.deliver().await;
        }
        self.flush_group_commit().await;
        self.unpublish();
    }

    async fn sleep(&mut self, ms: u64) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = stop.changed() => {}
        }
    }

    async fn client(&mut self) -> Result<&mut tokio_postgres::Client, Failure> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut c = connect(&self.def.postgres).await?;
            // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in the catalog, so the
            // workers of every node serialize their DDL on an advisory lock.
            let t = pg(c.transaction()).await?;
            pg(t.execute("SELECT pg_advisory_xact_lock(7428111)", &[])).await?;
            for statement in ddl(&self.def) {
                pg(t.batch_execute(&statement)).await?;
            }
            pg(t.commit()).await?;
            self.client = Some(c);
        }
        self.client.as_mut().ok_or_else(|| Failure::Transient("no connection".into()))
    }

    /// Reads (or creates) the partition's offsets row and resets the delivery state to it.
    async fn start_position(&mut self) -> Result<(), Failure> {
        let log_start = self
            .manager
            .broker
            .list_offset(&self.topic, self.partition as i32, OffsetQuery::Earliest)
            .map(|(o, _)| u64::try_from(o).unwrap_or(0))
            .unwrap_or(0);
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let start = i64::try_from(log_start).unwrap_or(i64::MAX);
        let client = self.client().await?;
        pg(client.execute(
            "INSERT INTO quorumdb_sink_offsets (sink, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            &[&sink, &topic, &partition, &start],
        ))
        .await?;
        let row = pg(client.query_one(
            "SELECT next_offset FROM quorumdb_sink_offsets WHERE sink = $1 AND topic = $2 AND partition = $3",
            &[&sink, &topic, &partition],
        ))
        .await?;
        let next: i64 = row.try_get(0).map_err(|e| Failure::Transient(e.to_string()))?;
        let mut next = u64::try_from(next).unwrap_or(0);
        if next < log_start {
            // Retention dropped records the sink never delivered: they are gone from the log.
            tracing::warn!(sink = %sink, topic = %topic, partition, next, log_start, "records trimmed before delivery");
            let moved = pg(client.execute(
                FENCED_UPDATE,
                &[&sink, &topic, &partition, &start, &i64::try_from(next).unwrap_or(i64::MAX)],
            ))
            .await?;
            if moved == 1 {
                next = log_start;
            } else {
                return Err(Failure::Transient("the offsets row moved while starting".into()));
            }
        }
        self.pg_position = next;
        self.committed_next = next;
        self.fetch_offset = next;
        self.payloads.clear();
        let seed = u64::from(self.partition) ^ self.def.id.rotate_left(17) ^ wall_ms() as u64;
        self.machine = PartitionSink::new(core_config(&self.def.settings), seed);
        self.fetch_paused = false;
        self.publish();
        Ok(())
    }

    /// Delivers until stopped or fenced.
    async fn deliver(&mut self) {
        let mut appended = self.manager.broker.appended();
        let mut last_publish = Instant::now();
        loop {
            if self.stopped() {
                return;
            }
            let now = self.manager.now_ms();
            self.machine.tick(now);
            let effects = self.machine.take_effects();
            let busy = !effects.is_empty();
            for e in effects {
                if self.effect(e).await.is_err() {
                    // Fenced: start over from the warehouse's position.
                    return;
                }
            }
            let mut fetched = false;
            if !self.fetch_paused && self.payloads.len() < self.def.settings.buffered_records_max as usize {
                fetched = self.fetch().await;
            }
            if last_publish.elapsed() >= Duration::from_millis(250) {
                if self.committed_next > self.pg_position {
                    let _ = self.move_position(self.committed_next).await;
                }
                self.publish();
                self.flush_group_commit().await;
                last_publish = Instant::now();
            }
            if !busy && !fetched {
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
                    _ = appended.changed() => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    /// One read from the log; whether it brought records.
    async fn fetch(&mut self) -> bool {
        let read = self
            .manager
            .broker
            .read(
                &self.topic,
                self.partition as i32,
                i64::try_from(self.fetch_offset).unwrap_or(i64::MAX),
                READ_BYTES_MAX,
            )
            .await;
        let records = match read {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange) => {
                // Trimmed past our position: the next pass starts at the log start.
                if let Ok((start, _)) =
                    self.manager.broker.list_offset(&self.topic, self.partition as i32, OffsetQuery::Earliest)
                {
                    let start = u64::try_from(start).unwrap_or(0);
                    if start > self.fetch_offset && self.payloads.is_empty() {
                        self.fetch_offset = start;
                    }
                }
                return false;
            }
            Err(_) => return false,
        };
        self.high_watermark = u64::try_from(records.high_watermark).unwrap_or(0);
        let decoded = decode_records(&records.records, self.fetch_offset);
        if decoded.is_empty() {
            return false;
        }
        let room = (self.def.settings.buffered_records_max as usize).saturating_sub(self.payloads.len());
        let batch: Vec<(u64, LogRecord)> = decoded.into_iter().take(room.max(1)).collect();
        let offsets: Vec<Record> = batch.iter().map(|(o, _)| Record { offset: *o }).collect();
        if let Some((last, _)) = batch.last() {
            self.fetch_offset = last + 1;
        }
        self.payloads.extend(batch);
        self.machine.fetched(self.manager.now_ms(), &offsets);
        true
    }

    /// Carries out one effect; `Err` when fenced.
    async fn effect(&mut self, e: SinkEffect) -> Result<(), ()> {
        match e {
            SinkEffect::Write { first, last } => {
                let started = Instant::now();
                let result = self.write(first, last).await;
                let now = self.manager.now_ms();
                let sink = [("sink", self.def.name.clone())];
                metrics::histogram!("quorumdb_sink_write_seconds", &sink)
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        let committed = wall_ms();
                        let rows = self.payloads.range(first..=last).count();
                        for r in self.payloads.range(first..=last).map(|(_, r)| r) {
                            let e2e = (committed - r.timestamp_ms).max(0) as f64 / 1000.0;
                            metrics::histogram!("quorumdb_sink_end_to_end_seconds", &sink).record(e2e);
                        }
                        metrics::counter!("quorumdb_sink_rows_written_total", &sink).increment(rows as u64);
                        self.pg_position = last + 1;
                        self.payloads = self.payloads.split_off(&(last + 1));
                        self.last_error.clear();
                        self.machine.written(now);
                    }
                    Err(WriteError::Fenced) => {
                        tracing::warn!(sink = %self.def.name, topic = %self.topic, partition = self.partition,
                            "the offsets row moved (another worker wrote): re-reading the position");
                        metrics::counter!("quorumdb_sink_fenced_total", &sink).increment(1);
                        return Err(());
                    }
                    Err(WriteError::Failed(f)) => {
                        self.last_error = failure_text(&f);
                        if matches!(f, Failure::Transient(_)) {
                            // The connection may be broken: open a new one for the retry.
                            self.client = None;
                        }
                        self.machine.failed(now, f);
                        metrics::counter!("quorumdb_sink_retries_total", &sink).increment(1);
                    }
                }
                self.publish_breaker();
            }
            SinkEffect::DeadLetter { offset, error, attempts } => {
                let now = self.manager.now_ms();
                match self.dead_letter(offset, &error, attempts).await {
                    Ok(()) => {
                        metrics::counter!("quorumdb_sink_dead_lettered_total", "sink" => self.def.name.clone())
                            .increment(1);
                        self.payloads.remove(&offset);
                        self.machine.dead_lettered(now);
                        // Best effort: move the warehouse's position past the dead letter now
                        // (the next write's transaction moves it anyway).
                        let _ = self.move_position(offset + 1).await;
                    }
                    Err(e) => {
                        self.last_error = truncate(format!("dead-letter produce failed: {e}"));
                        self.machine.dead_letter_failed(now);
                    }
                }
            }
            SinkEffect::Commit { next } => {
                self.committed_next = next;
                self.pending_group_commit = Some(next);
                let due = self
                    .last_group_commit
                    .is_none_or(|(at, _)| at.elapsed() >= Duration::from_millis(GROUP_COMMIT_INTERVAL_MS));
                if due {
                    self.flush_group_commit().await;
                }
            }
            SinkEffect::PauseFetch => self.fetch_paused = true,
            SinkEffect::ResumeFetch => self.fetch_paused = false,
        }
        Ok(())
    }

    fn publish_breaker(&mut self) {
        let open = matches!(self.machine.breaker_state(self.manager.now_ms()), BreakerState::Open { .. });
        metrics::gauge!("quorumdb_sink_breaker_open", &self.labels()).set(if open { 1.0 } else { 0.0 });
        self.publish();
    }

    /// The group offset, for lag display (`group describe`); the warehouse's stays the truth.
    async fn flush_group_commit(&mut self) {
        let Some(next) = self.pending_group_commit else { return };
        if self.last_group_commit.is_some_and(|(_, n)| n == next) {
            self.pending_group_commit = None;
            return;
        }
        let spec = OffsetSpec {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: i64::try_from(next).unwrap_or(i64::MAX),
            leader_epoch: -1,
            metadata: String::new(),
        };
        let group = self.def.group();
        let commit = self.manager.broker.commit_offsets(&group, self.generation, &self.member_id, vec![spec]);
        if let Ok(Ok(results)) = tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), commit).await {
            if results.iter().all(Result::is_ok) {
                self.pending_group_commit = None;
            }
        }
        // A refused commit (a rebalance started) is harmless: the next owner commits its own.
        self.last_group_commit = Some((Instant::now(), next));
    }

    /// One transaction: the rows of `first..=last` and the fenced position update.
    async fn write(&mut self, first: u64, last: u64) -> Result<(), WriteError> {
        let mut offsets = Vec::new();
        let mut keys: Vec<Option<Vec<u8>>> = Vec::new();
        let mut values: Vec<Option<Vec<u8>>> = Vec::new();
        let mut timestamps = Vec::new();
        for (o, r) in self.payloads.range(first..=last) {
            if let Some(why) = &r.undecodable {
                return Err(WriteError::Failed(Failure::Permanent(format!("offset {o}: {why}"))));
            }
            offsets.push(i64::try_from(*o).unwrap_or(i64::MAX));
            keys.push(r.key.as_ref().map(|b| b.to_vec()));
            values.push(r.value.as_ref().map(|b| b.to_vec()));
            timestamps.push(r.timestamp_ms);
        }
        let sql = insert_sql(&self.def);
        let field = match &self.def.key {
            SinkKey::Field(f) => f.clone(),
            SinkKey::Offset => String::new(),
        };
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let (next, fence) = (
            i64::try_from(last + 1).unwrap_or(i64::MAX),
            i64::try_from(self.pg_position).unwrap_or(i64::MAX),
        );
        let business = matches!(self.def.key, SinkKey::Field(_));
        let client = self.client().await.map_err(WriteError::Failed)?;
        let failed = WriteError::Failed;
        let t = pg(client.transaction()).await.map_err(failed)?;
        let inserted = if business {
            pg(t.execute(&sql, &[&topic, &partition, &offsets, &keys, &values, &timestamps, &field])).await
        } else {
            pg(t.execute(&sql, &[&topic, &partition, &offsets, &keys, &values, &timestamps])).await
        };
        inserted.map_err(failed)?;
        let moved = pg(t.execute(FENCED_UPDATE, &[&sink, &topic, &partition, &next, &fence]))
            .await
            .map_err(failed)?;
        if moved != 1 {
            // Dropping the transaction rolls it back.
            return Err(WriteError::Fenced);
        }
        pg(t.commit()).await.map_err(failed)?;
        if let Some(n) = self.manager.node.config.sink_abort_after_commits {
            let done = self.manager.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if done >= n {
                // The test crash point: the rows and the position are committed, nothing else
                // (group offset, metrics, the machine's state) has happened.
                tracing::error!(commits = done, "sink_abort_after_commits reached: aborting");
                std::process::abort();
            }
        }
        Ok(())
    }

    /// Moves the warehouse's position to `next` (after a dead letter), fenced.
    async fn move_position(&mut self, next: u64) -> Result<(), Failure> {
        let (sink, topic, partition) = (self.def.name.clone(), self.topic.clone(), self.partition as i32);
        let (to, fence) =
            (i64::try_from(next).unwrap_or(i64::MAX), i64::try_from(self.pg_position).unwrap_or(i64::MAX));
        let client = self.client().await?;
        let moved = pg(client.execute(FENCED_UPDATE, &[&sink, &topic, &partition, &to, &fence])).await?;
        if moved == 1 {
            self.pg_position = next;
        }
        Ok(())
    }

    /// Produces the record to the dead-letter topic (created if missing) with acks=all.
    async fn dead_letter(&mut self, offset: u64, error: &str, attempts: u32) -> Result<(), String> {
        let dlq = self.def.dead_letter_topic.clone();
        let broker = self.manager.broker.clone();
        let info = match broker.topic(&dlq) {
            Some(t) => t,
            None => {
                let new = NewTopic {
                    name: dlq.clone(),
                    partitions: Some(1),
                    replication_factor: None,
                    retention_ms: None,
                    retention_bytes: None,
                };
                match broker.create_topics(vec![new], false, DLQ_PRODUCE_TIMEOUT_MS).await.pop() {
                    Some(Ok(t)) => t,
                    Some(Err(LogError::TopicAlreadyExists(_))) => {
                        broker.topic(&dlq).ok_or_else(|| format!("{dlq} exists but is not visible yet"))?
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("no answer".into()),
                }
            }
        };
        let partitions = u32::try_from(info.partitions.len()).unwrap_or(1).max(1);
        let target = i32::try_from(self.partition % partitions).unwrap_or(0);
        let record = self.payloads.get(&offset);
        let headers: Vec<(&str, Vec<u8>)> = vec![
            ("quorumdb.error", truncate(error.to_string()).into_bytes()),
            ("quorumdb.attempts", attempts.to_string().into_bytes()),
            ("quorumdb.source.topic", self.topic.clone().into_bytes()),
            ("quorumdb.source.partition", self.partition.to_string().into_bytes()),
            ("quorumdb.source.offset", offset.to_string().into_bytes()),
        ];
        let batch = dead_letter_batch(
            record.and_then(|r| r.key.as_deref()),
            record.and_then(|r| r.value.as_deref()),
            &headers,
            record.map_or_else(wall_ms, |r| r.timestamp_ms),
        );
        let split = quorumdb_kafka::split_batches(&batch, batch.len()).map_err(|e| e.to_string())?;
        let Some((header, batch)) = split.into_iter().next() else { return Err("empty batch".into()) };
        let append = Append { topic: dlq, partition: target, header, batch };
        match broker.produce(vec![append], DLQ_PRODUCE_TIMEOUT_MS).await.pop() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no answer".into()),
        }
    }
}

fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Transient(e) => format!("transient: {e}"),
        Failure::Permanent(e) => format!("permanent: {e}"),
    }
}

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
