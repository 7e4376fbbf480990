//! The log behind the Kafka listener: [`quorumdb_kafka::Broker`] over the quorum store and the
//! metadata group.
//!
//! A produced batch takes two steps (see `quorumdb_meta::log` for why):
//!
//! 1. its bytes are written to the quorum store as a write-once *blob* (internal table
//!    [`LOG_TABLE`], partition key = a fresh random 128-bit id) at `w=quorum`;
//! 2. the [`Appender`] groups the appends waiting on this node into one `Command::Append` and
//!    proposes it; applying it assigns the offsets.
//!
//! The answer goes out only after step 2 committed, so an acknowledged batch is durable on a
//! quorum and its offsets are committed; `acks=1` gets the same treatment as `acks=all`.
//! Fetches read the index from this node's applied metadata and the blobs from the store
//! (`r=one`, then `r=quorum` if the first answer lacks the blob), rewriting each batch's base
//! offset (outside the batch CRC) to the assigned one.
//!
//! Where a produce's time goes is on `/metrics`: `quorumdb_log_blob_write_seconds` (step 1),
//! `quorumdb_log_append_propose_seconds` (one `Append` command, proposal to commit),
//! `quorumdb_log_produce_seconds` (the whole call) and `quorumdb_log_read_seconds` (a fetch's
//! blob reads).
//!
//! Retention: the metadata leader periodically proposes `Trim` commands for batches past a
//! topic's `retention.ms` / `retention.bytes` (and for topics being deleted), then deletes the
//! trimmed blobs. A blob orphaned by a crash between the two steps is not collected yet.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_kafka::{
    Append, Appended, Broker, BrokerInfo, ClusterInfo, LogError, NewTopic, OffsetQuery, PartitionInfo,
    Records, TopicInfo, Turn,
};
use quorumdb_meta::auth::{Permission, Refusal, ResourceKind};
use quorumdb_meta::log::{
    self as mlog, AppendRefusal, AppendResult, AppendSpec, LogOutcome, ProducerBatch, Topic, TopicConfig,
    TopicSpec, APPENDS_PER_COMMAND_MAX,
};
use quorumdb_meta::{Command, MetaError, Outcome, ProposeError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{QuorumMode, ReadRepair};
use crate::meta::Meta;
use crate::node::{Node, WriteSettings};

/// The internal table holding batch blobs. Clients cannot address tables beginning with `__`.
pub const LOG_TABLE: &str = "__log";
/// Appends waiting for a proposal on one node; more are refused as unavailable (retried).
pub const APPEND_QUEUE_LEN_MAX: usize = 8192;
/// Encoded bytes of appends gathered into one command, well under the metadata command limit.
const APPEND_COMMAND_BYTES_MAX: usize = 48 * 1024;
const _: () = assert!(APPEND_COMMAND_BYTES_MAX < quorumdb_meta::node::COMMAND_BYTES_MAX);
/// Blobs one fetch reads at once.
const FETCH_BLOBS_PARALLEL_MAX: usize = 16;
/// How long a fetch beyond this node's high watermark waits for this node to catch up with
/// what other nodes may already have acknowledged, before it is out of range.
const CATCH_UP_WAIT_MS: u64 = 1_000;
/// How long a ListOffsets waits to confirm this node's offsets with the metadata leader.
const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long an append waits for a metadata leader to be elected.
const APPEND_LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long the appender keeps re-proposing idempotent appends whose outcome is unknown.
/// Under the 30 s request timeout of librdkafka, kafka-python and aiokafka, so the client
/// hears the outcome rather than timing out itself.
const APPEND_OUTCOME_WAIT: Duration = Duration::from_secs(20);

type AppendReply = oneshot::Sender<Result<AppendResult, LogError>>;

/// Groups concurrent appends into one metadata command, one command in flight per node, so
/// the appends of one connection keep their order (an idempotent producer's sequences).
struct Appender {
    rx: mpsc::Receiver<(AppendSpec, AppendReply)>,
    meta: Meta,
}

impl Appender {
    async fn run(mut self) {
        let mut held: Option<(AppendSpec, AppendReply)> = None;
        loop {
            let first = match held.take() {
                Some(x) => x,
                None => match self.rx.recv().await {
                    Some(x) => x,
                    None => return,
                },
            };
            let mut bytes = spec_bytes(&first.0);
            let mut group = vec![first];
            while group.len() < APPENDS_PER_COMMAND_MAX {
                match self.rx.try_recv() {
                    Ok(x) => {
                        let b = spec_bytes(&x.0);
                        if bytes + b > APPEND_COMMAND_BYTES_MAX {
                            held = Some(x);
                            break;
                        }
                        bytes += b;
                        group.push(x);
                    }
                    Err(_) => break,
                }
            }
            let (specs, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            self.append(specs, replies).await;
        }
    }

    /// Proposes one command of appends and answers each. A proposal that timed out may still
    /// commit, so its outcome is unknown; answering "timed out" and moving on is wrong for an
    /// idempotent producer: its next batch would be sequenced without this one and refused as
    /// out of order, and librdkafka answers that by bumping its epoch and resending everything
    /// unacknowledged under new sequences — duplicating any batch of any partition that did
    /// commit. So the idempotent appends of an unknown outcome are proposed again (the
    /// sequencer answers a committed one with its original offset) until the outcome is known
    /// or [`APPEND_OUTCOME_WAIT`] passes, before any later append of this node is proposed.
    /// The others get "timed out" at once: without a producer id a retry cannot be recognised.
    async fn append(&self, mut specs: Vec<AppendSpec>, mut replies: Vec<AppendReply>) {
        let deadline = tokio::time::Instant::now() + APPEND_OUTCOME_WAIT;
        let mut unknown = false;
        loop {
            let n = specs.len();
            metrics::histogram!("quorumdb_log_appends_per_command").record(n as f64);
            let started = std::time::Instant::now();
            let proposed =
                propose(&self.meta, Command::Append { appends: specs.clone() }, APPEND_LEADER_WAIT).await;
            metrics::histogram!("quorumdb_log_append_propose_seconds")
                .record(started.elapsed().as_secs_f64());
            let e = match proposed {
                Ok(Outcome::Log(LogOutcome::Appended { results })) if results.len() == n => {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(r.map_err(refusal));
                    }
                    return;
                }
                Ok(o) => LogError::Internal(format!("unexpected outcome {o:?}")),
                Err(e @ ProposeError::Timeout { .. }) => {
                    unknown = true;
                    propose_error(e)
                }
                // Nothing was proposed this time, but an earlier attempt may still commit.
                Err(e @ (ProposeError::NoLeader | ProposeError::Busy { .. })) if unknown => propose_error(e),
                Err(e) => {
                    let e = propose_error(e);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return;
                }
            };
            let retry = unknown && tokio::time::Instant::now() + NO_LEADER_RETRY < deadline;
            let unknown_error =
                || LogError::Timeout(format!("the append's outcome is unknown ({e}); it may still apply"));
            let mut kept = (Vec::new(), Vec::new());
            for (spec, reply) in specs.into_iter().zip(replies) {
                if retry && spec.producer.is_some() {
                    kept.0.push(spec);
                    kept.1.push(reply);
                } else if unknown {
                    let _ = reply.send(Err(unknown_error()));
                } else {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            (specs, replies) = kept;
            if specs.is_empty() {
                return;
            }
            metrics::counter!("quorumdb_log_append_outcome_retries_total").increment(1);
            tokio::time::sleep(NO_LEADER_RETRY).await;
        }
    }
}

fn spec_bytes(s: &AppendSpec) -> usize {
    s.topic.len() + 64
}

fn refusal(r: AppendRefusal) -> LogError {
    match r {
        AppendRefusal::UnknownTopicOrPartition => LogError::UnknownTopicOrPartition,
        AppendRefusal::OutOfOrderSequence { .. } => LogError::OutOfOrderSequence,
        AppendRefusal::InvalidProducerEpoch { .. } => LogError::InvalidProducerEpoch,
        AppendRefusal::UnknownProducerId { .. } => LogError::UnknownProducerId,
        AppendRefusal::Invalid(why) => LogError::CorruptMessage(why),
        full @ AppendRefusal::Full { .. } => LogError::PolicyViolation(full.to_string()),
    }
}

fn propose_error(e: ProposeError) -> LogError {
    match e {
        ProposeError::Refused(MetaError::Log(e)) => match e {
            mlog::LogError::TopicExists { name, .. } => LogError::TopicAlreadyExists(name),
            mlog::LogError::UnknownTopic { .. } | mlog::LogError::UnknownPartition { .. } => {
                LogError::UnknownTopicOrPartition
            }
            mlog::LogError::InvalidName { .. } => LogError::InvalidTopic(e.to_string()),
            mlog::LogError::Invalid { .. } => LogError::InvalidConfig(e.to_string()),
            mlog::LogError::Limit { .. } => LogError::PolicyViolation(e.to_string()),
        },
        ProposeError::Refused(e) => LogError::Unavailable(e.to_string()),
        ProposeError::Timeout { .. } => LogError::Timeout(e.to_string()),
        ProposeError::NoLeader | ProposeError::Busy { .. } => LogError::Unavailable(e.to_string()),
        ProposeError::TooLarge { .. } => LogError::Internal(e.to_string()),
    }
}

/// Proposes `command`, waiting out an election until `timeout` (see `Meta::propose_waiting`).
async fn propose(meta: &Meta, command: Command, timeout: Duration) -> Result<Outcome, ProposeError> {
    meta.propose_waiting(command, timeout).await
}

/// Pause between proposals while no metadata leader is known.
const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

/// This node's side of the log.
pub struct Log {
    node: Arc<Node>,
    meta: Meta,
    appends: mpsc::Sender<(AppendSpec, AppendReply)>,
}

impl Log {
    /// Starts the appender and the retention worker.
    pub fn start(node: Arc<Node>, meta: Meta) -> Arc<Log> {
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_LEN_MAX);
        tokio::spawn(Appender { rx, meta: meta.clone() }.run());
        let log = Arc::new(Log { node, meta, appends: tx });
        tokio::spawn(retention(log.clone()));
        log
    }

    fn replicas(&self) -> u8 {
        self.node.config.replication_factor.min(usize::from(u8::MAX)) as u8
    }

    fn blob_key(blob: u128) -> ItemKey {
        ItemKey { table: LOG_TABLE.into(), partition: blob.to_be_bytes().to_vec(), sort: Vec::new() }
    }

    /// Blobs are written and deleted at w=quorum, strict: the fetch path's r=quorum fallback
    /// must intersect every acknowledged write.
    fn blob_write(timeout: Duration) -> WriteSettings {
        WriteSettings { w: Level::Quorum, mode: QuorumMode::Strict, timeout, write_id: None, fence: None }
    }

    fn timeout(&self, timeout_ms: u64) -> Duration {
        let max = crate::config::REQUEST_TIMEOUT_MS_MAX;
        Duration::from_millis(if timeout_ms == 0 {
            self.node.config.request_timeout_ms
        } else {
            timeout_ms.min(max)
        })
    }

    async fn put_blob(node: &Node, blob: u128, bytes: Vec<u8>, timeout: Duration) -> Result<(), LogError> {
        let settings = Self::blob_write(timeout);
        node.write(Self::blob_key(blob), Some(bytes), Default::default(), settings).await.map(|_| ()).map_err(
            |e| match e {
                crate::error::ApiError::Timeout(m) => LogError::Timeout(m),
                crate::error::ApiError::Quorum(d) => LogError::NotEnoughReplicas(d.message),
                other => LogError::Unavailable(other.to_string()),
            },
        )
    }

    async fn get_blob(node: &Node, blob: u128, timeout: Duration) -> Result<Vec<u8>, LogError> {
        for r in [Level::One, Level::Quorum] {
            let state = node
                .read(Self::blob_key(blob), r, ReadRepair::Off, QuorumMode::Strict, timeout)
                .await
                .map_err(|e| LogError::Unavailable(format!("reading a batch: {e}")))?;
            if let Some(v) = state.values().first() {
                return Ok(v.to_vec());
            }
        }
        Err(LogError::Internal(format!("batch blob {blob:032x} is missing from the store")))
    }

    async fn delete_blob(&self, blob: u128) {
        let timeout = self.timeout(0);
        let key = Self::blob_key(blob);
        let Ok(state) =
            self.node.read(key.clone(), Level::Quorum, ReadRepair::Off, QuorumMode::Strict, timeout).await
        else {
            return;
        };
        let settings = Self::blob_write(timeout);
        let _ = self.node.write(key, None, state.context().clone(), settings).await;
    }

    /// Brokers Kafka clients see: every member with a Kafka address, broker id = raft id.
    fn brokers(&self) -> Vec<(BrokerInfo, bool)> {
        let mut out: Vec<(BrokerInfo, bool)> = self
            .node
            .config
            .members
            .iter()
            .filter(|m| !m.kafka.is_empty())
            .filter_map(|m| {
                let (host, port) = m.kafka.rsplit_once(':')?;
                let port = port.parse::<i32>().ok()?;
                let node_id = i32::try_from(self.meta.raft_id(&m.id)?).ok()?;
                let up = self.node.placement().index_of(&m.id).is_none_or(|i| self.node.is_up(i));
                Some((BrokerInfo { node_id, host: host.to_string(), port, rack: Some(m.zone.clone()) }, up))
            })
            .collect();
        out.sort_by_key(|(b, _)| b.node_id);
        out
    }

    fn topic_info(&self, t: &Topic, brokers: &[(BrokerInfo, bool)]) -> TopicInfo {
        let live: Vec<i32> = brokers.iter().filter(|(_, up)| *up).map(|(b, _)| b.node_id).collect();
        let all: Vec<i32> = brokers.iter().map(|(b, _)| b.node_id).collect();
        let seed = u64::from_be_bytes(t.id[..8].try_into().unwrap_or([0; 8]));
        let partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let pick = |ids: &[i32], k: u64| {
                    ids.get(((seed + i as u64 + k) % ids.len().max(1) as u64) as usize).copied()
                };
                // Any node serves any partition: the leader only spreads clients over the live
                // brokers; the replicas shown are N brokers (the blobs are spread over all).
                let leader = pick(&live, 0).or_else(|| pick(&all, 0)).unwrap_or(-1);
                let mut replicas = vec![leader];
                for k in 0..all.len() as u64 {
                    if replicas.len() >= usize::from(t.replicas) {
                        break;
                    }
                    if let Some(b) = pick(&all, k) {
                        if !replicas.contains(&b) {
                            replicas.push(b);
                        }
                    }
                }
                PartitionInfo {
                    partition: i as i32,
                    leader,
                    replicas,
                    log_start_offset: p.log_start as i64,
                    high_watermark: p.next_offset as i64,
                }
            })
            .collect();
        TopicInfo {
            name: t.name.clone(),
            id: t.id,
            partitions,
            retention_ms: t.config.retention_ms.map_or(-1, |v| v as i64),
            retention_bytes: t.config.retention_bytes.map_or(-1, |v| v as i64),
        }
    }

    fn spec(&self, t: &NewTopic) -> Result<TopicSpec, LogError> {
        mlog::check_topic_name(&t.name).map_err(|e| LogError::InvalidTopic(e.to_string()))?;
        let n = self.replicas();
        let replicas = match t.replication_factor {
            None | Some(-1) => n,
            Some(r) if r >= 1 && r <= i16::from(n) => n,
            Some(r) => {
                return Err(LogError::InvalidReplicationFactor(format!(
                "{r}: topics are stored with the cluster's replication factor N={n}; ask for 1 to {n} or -1"
            )))
            }
        };
        let partitions = match t.partitions {
            None | Some(-1) => self.node.config.log.default_partitions,
            Some(p) if p >= 1 && p as u32 <= mlog::TOPIC_PARTITIONS_MAX => p as u32,
            Some(p) => {
                return Err(LogError::InvalidPartitions(format!(
                    "{p}: a topic has 1 to {}",
                    mlog::TOPIC_PARTITIONS_MAX
                )))
            }
        };
        let positive = |what: &str, v: Option<i64>, default: Option<u64>| match v {
            None => Ok(default),
            Some(-1) => Ok(None),
            Some(v) if v > 0 => Ok(Some(v as u64)),
            Some(v) => {
                Err(LogError::InvalidConfig(format!("{what}={v}: must be positive, or -1 for unlimited")))
            }
        };
        let retention_default = Some(self.node.config.log.retention_ms_default).filter(|v| *v > 0);
        let config = TopicConfig {
            retention_ms: positive("retention.ms", t.retention_ms, retention_default)?,
            retention_bytes: positive("retention.bytes", t.retention_bytes, None)?,
        };
        Ok(TopicSpec { name: t.name.clone(), partitions, replicas, config })
    }

    /// Creates a topic (the HTTP API and the CLI use this too).
    pub async fn create_topic(&self, t: NewTopic) -> Result<TopicInfo, LogError> {
        let spec = self.spec(&t)?;
        match propose(&self.meta, Command::CreateTopic(spec), self.timeout(0).max(Duration::from_secs(5)))
            .await
        {
            Ok(_) => self.topic(&t.name).ok_or(LogError::Unavailable("the topic is not visible yet".into())),
            Err(e) => Err(propose_error(e)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        propose(
            &self.meta,
            Command::DeleteTopic { name: name.to_string() },
            self.timeout(0).max(Duration::from_secs(5)),
        )
        .await
        .map(|_| ())
        .map_err(propose_error)
    }
}

impl Broker for Log {
    fn cluster(&self) -> ClusterInfo {
        let view = self.meta.view();
        let brokers: Vec<BrokerInfo> = self.brokers().into_iter().map(|(b, _)| b).collect();
        let controller_id = view
            .leader
            .as_deref()
            .and_then(|l| self.meta.raft_id(l))
            .and_then(|i| i32::try_from(i).ok())
            .or_else(|| brokers.first().map(|b| b.node_id))
            .unwrap_or(-1);
        let mut ids: Vec<&str> = self.node.config.members.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        let cluster_id = format!("quorumdb-{:016x}", xxh(ids.join(",").as_bytes()));
        ClusterInfo { cluster_id, controller_id, brokers }
    }

    fn topics(&self) -> Vec<TopicInfo> {
        let view = self.meta.view();
        let brokers = self.brokers();
        view.metadata
            .log()
            .topics()
            .values()
            .filter(|t| !t.deleting)
            .map(|t| self.topic_info(t, &brokers))
            .collect()
    }

    fn topic(&self, name: &str) -> Option<TopicInfo> {
        let view = self.meta.view();
        let t = view.metadata.log().topic(name)?;
        Some(self.topic_info(t, &self.brokers()))
    }

    fn auto_create_topics(&self) -> bool {
        self.node.config.log.auto_create_topics
    }

    async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        _timeout_ms: u64,
    ) -> Vec<Result<TopicInfo, LogError>> {
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            if validate_only {
                let r = self.spec(&t).and_then(|spec| {
                    if self.meta.view().metadata.log().topics().contains_key(&spec.name) {
                        return Err(LogError::TopicAlreadyExists(spec.name));
                    }
                    Ok(TopicInfo {
                        name: spec.name,
                        id: [0; 16],
                        partitions: Vec::new(),
                        retention_ms: spec.config.retention_ms.map_or(-1, |v| v as i64),
                        retention_bytes: spec.config.retention_bytes.map_or(-1, |v| v as i64),
                    })
                });
                out.push(r);
            } else {
                out.push(self.create_topic(t).await);
            }
        }
        out
    }

    async fn delete_topics(&self, names: Vec<String>, _timeout_ms: u64) -> Vec<Result<(), LogError>> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.delete_topic(&n).await);
        }
        out
    }

    async fn produce(&self, appends: Vec<Append>, timeout_ms: u64) -> Vec<Result<Appended, LogError>> {
        self.produce_in_turn(appends, timeout_ms, Turn::alone()).await
    }

    /// The blob writes (step 1) need no order and overlap the connection's earlier produce
    /// requests; the appends are queued to the appender (whose queue keeps their order) only
    /// in `turn`.
    async fn produce_in_turn(
        &self,
        appends: Vec<Append>,
        timeout_ms: u64,
        mut turn: Turn,
    ) -> Vec<Result<Appended, LogError>> {
        let timeout = self.timeout(timeout_ms);
        let started = std::time::Instant::now();
        // Step 1: every blob, concurrently.
        let mut writes = tokio::task::JoinSet::new();
        let mut specs = Vec::with_capacity(appends.len());
        for (i, a) in appends.into_iter().enumerate() {
            let blob: u128 = rand::random();
            let h = a.header;
            let producer = (h.producer_id >= 0).then_some(ProducerBatch {
                id: h.producer_id,
                epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            });
            specs.push(AppendSpec {
                topic: a.topic,
                partition: u32::try_from(a.partition).unwrap_or(u32::MAX),
                records: u32::try_from(h.records_count).unwrap_or(0),
                bytes: a.batch.len() as u32,
                max_timestamp: h.max_timestamp,
                blob,
                producer,
            });
            let (node, bytes) = (self.node.clone(), a.batch.to_vec());
            writes.spawn(async move { (i, Log::put_blob(&node, blob, bytes, timeout).await) });
        }
        let mut written: Vec<Result<(), LogError>> = (0..specs.len()).map(|_| Ok(())).collect();
        while let Some(j) = writes.join_next().await {
            if let Ok((i, r)) = j {
                written[i] = r;
            }
        }
        metrics::histogram!("quorumdb_log_blob_write_seconds").record(started.elapsed().as_secs_f64());
        // Step 2: sequence those whose bytes are durable, in the given order, after the
        // connection's earlier requests.
        turn.wait().await;
        let mut waits = Vec::with_capacity(specs.len());
        for (spec, w) in specs.into_iter().zip(written) {
            match w {
                Err(e) => waits.push(Err(e)),
                Ok(()) => {
                    let (tx, rx) = oneshot::channel();
                    match self.appends.try_send((spec, tx)) {
                        Ok(()) => waits.push(Ok(rx)),
                        Err(_) => waits.push(Err(LogError::Unavailable(format!(
                            "too many appends waiting (at most {APPEND_QUEUE_LEN_MAX})"
                        )))),
                    }
                }
            }
        }
        turn.pass();
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Err(e) => Err(e),
                Ok(rx) => match tokio::time::timeout(timeout + Duration::from_secs(5), rx).await {
                    Ok(Ok(r)) => r.map(|a| Appended {
                        base_offset: a.base_offset as i64,
                        log_start_offset: a.log_start_offset as i64,
                    }),
                    _ => {
                        Err(LogError::Timeout("the append did not commit in time; it may still apply".into()))
                    }
                },
            });
        }
        metrics::histogram!("quorumdb_log_produce_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("quorumdb_log_batches_produced_total")
            .increment(out.iter().filter(|r| r.is_ok()).count() as u64);
        out
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Records, LogError> {
        let p = u32::try_from(partition).map_err(|_| LogError::UnknownTopicOrPartition)?;
        let mut view = self.meta.view();
        let mut hw =
            view.metadata.log().partition(topic, p).ok_or(LogError::UnknownTopicOrPartition)?.next_offset;
        if offset > hw as i64 {
            // Another node may have acknowledged offsets this one has not applied yet, or even
            // heard of (a node just restarted knows only the commit index it had persisted):
            // confirm with the leader before calling the offset out of range, which would make
            // the consumer reset its position.
            view = self
                .meta
                .linearizable_view(Duration::from_millis(CATCH_UP_WAIT_MS))
                .await
                .map_err(|e| LogError::Unavailable(format!("cannot confirm the high watermark: {e}")))?;
            hw =
                view.metadata.log().partition(topic, p).ok_or(LogError::UnknownTopicOrPartition)?.next_offset;
        }
        let part = view.metadata.log().partition(topic, p).ok_or(LogError::UnknownTopicOrPartition)?;
        if offset < part.log_start as i64 || offset > hw as i64 {
            return Err(LogError::OffsetOutOfRange);
        }
        let mut picked = Vec::new();
        let mut bytes = 0usize;
        for b in part.batches_from(offset as u64) {
            if !picked.is_empty() && bytes + b.bytes as usize > max_bytes {
                break;
            }
            bytes += b.bytes as usize;
            picked.push(*b);
        }
        let (log_start, timeout) = (part.log_start as i64, self.timeout(0));
        let started = std::time::Instant::now();
        let mut out = BytesMut::with_capacity(bytes);
        for chunk in picked.chunks(FETCH_BLOBS_PARALLEL_MAX) {
            let mut reads = tokio::task::JoinSet::new();
            for (i, b) in chunk.iter().enumerate() {
                let (node, blob) = (self.node.clone(), b.blob);
                reads.spawn(async move { (i, Log::get_blob(&node, blob, timeout).await) });
            }
            let mut got: Vec<Option<Vec<u8>>> = vec![None; chunk.len()];
            while let Some(j) = reads.join_next().await {
                let (i, r) = j.map_err(|e| LogError::Internal(e.to_string()))?;
                got[i] = Some(r?);
            }
            for (b, bytes) in chunk.iter().zip(got) {
                let mut bytes =
                    bytes.ok_or_else(|| LogError::Internal("a batch read did not finish".into()))?;
                // The base offset is the first field, outside the batch CRC.
                if let Some(head) = bytes.get_mut(..8) {
                    head.copy_from_slice(&(b.base_offset as i64).to_be_bytes());
                }
                out.extend_from_slice(&bytes);
            }
        }
        metrics::histogram!("quorumdb_log_read_seconds").record(started.elapsed().as_secs_f64());
        Ok(Records { high_watermark: hw as i64, log_start_offset: log_start, records: Bytes::from(out) })
    }

    fn list_offset(&self, topic: &str, partition: i32, query: OffsetQuery) -> Result<(i64, i64), LogError> {
        let view = self.meta.view();
        let p = u32::try_from(partition).map_err(|_| LogError::UnknownTopicOrPartition)?;
        let part = view.metadata.log().partition(topic, p).ok_or(LogError::UnknownTopicOrPartition)?;
        Ok(match query {
            OffsetQuery::Earliest => (part.log_start as i64, -1),
            OffsetQuery::Latest => (part.next_offset as i64, -1),
            OffsetQuery::Timestamp(t) => match part.first_at_or_after(t) {
                Some(b) => (b.base_offset as i64, b.max_timestamp),
                None => (-1, -1),
            },
        })
    }

    fn authentication_required(&self) -> bool {
        self.meta.metadata().auth().enabled()
    }

    fn authenticate_plain(&self, user: &str, password: &str) -> Result<String, String> {
        let metadata = self.meta.metadata();
        match metadata.auth().authenticate(password) {
            Ok(owner) if owner == user => Ok(owner.to_string()),
            Ok(_) => Err(format!("the token does not belong to {user:?}")),
            Err(Refusal::Unauthenticated(why)) => Err(why),
            Err(Refusal::Forbidden { .. }) => Err("refused".into()),
        }
    }

    fn authorize(
        &self,
        principal: Option<&str>,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> bool {
        let metadata = self.meta.metadata();
        let auth = metadata.auth();
        if !auth.enabled() {
            return true;
        }
        let allowed = principal.is_some_and(|p| auth.authorize(p, kind, name, permission).is_ok());
        if !allowed {
            metrics::counter!("quorumdb_auth_refused_total", "reason" => "forbidden").increment(1);
        }
        allowed
    }

    async fn catch_up(&self, timeout_ms: u64) -> Result<(), LogError> {
        let timeout = self.timeout(timeout_ms).min(CATCH_UP_WAIT_MAX);
        match self.meta.linearizable_view(timeout).await {
            Ok(_) => Ok(()),
            Err(e) => Err(LogError::Unavailable(format!(
                "cannot confirm this node's offsets with the metadata leader: {e}"
            ))),
        }
    }

    async fn init_producer_id(&self, _timeout_ms: u64) -> Result<(i64, i16), LogError> {
        match propose(&self.meta, Command::InitProducerId, self.timeout(0).max(Duration::from_secs(5))).await
        {
            Ok(Outcome::Log(LogOutcome::ProducerId { id, epoch })) => Ok((id, epoch)),
            Ok(o) => Err(LogError::Internal(format!("unexpected outcome {o:?}"))),
            Err(e) => Err(propose_error(e)),
        }
    }

    fn appended(&self) -> watch::Receiver<u64> {
        self.meta.applied()
    }
}

fn xxh(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable id from the member list, no need for a strong hash.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// On the metadata leader: trims what retention allows and drains topics being deleted.
async fn retention(log: Arc<Log>) {
    let interval = Duration::from_millis(log.node.config.log.retention_check_interval_ms.max(100));
    loop {
        tokio::time::sleep(interval).await;
        let view = log.meta.view();
        if !view.is_leader {
            continue;
        }
        let now = log.node.wall_ms();
        let mut trims = Vec::new();
        for t in view.metadata.log().topics().values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let cut = if t.deleting {
                    (p.batches_len() > 0 || i == 0).then_some(u64::MAX)
                } else {
                    mlog::retention_cut(p, &t.config, now)
                };
                if let Some(before) = cut {
                    trims.push(Command::Trim { topic: t.name.clone(), partition: i as u32, before });
                }
            }
        }
        for trim in trims {
            if let Ok(Outcome::Log(LogOutcome::Trimmed { blobs, .. })) = log.meta.propose(trim).await {
                metrics::counter!("quorumdb_log_batches_trimmed_total").increment(blobs.len() as u64);
                for blob in blobs {
                    log.delete_blob(blob).await;
                }
            }
        }
    }
}
