//! What the Kafka front end needs from the log behind it.
//!
//! The protocol layer (this crate) turns Kafka requests into calls on a [`Broker`] and the
//! answers back into Kafka responses; it decides nothing about offsets, durability or
//! placement. The node implements `Broker` over the Raft-sequenced log; tests implement it in
//! memory.

use std::future::Future;

use bytes::Bytes;
use thiserror::Error;

use crate::batch::BatchHeader;
pub use quorumdb_meta::coordinator::{GroupCode, Request as GroupRequest, Response as GroupResponse};
pub use quorumdb_meta::group::{OffsetRefusal, OffsetSpec};

/// One broker as clients see it (a QuorumDB node with a Kafka listener).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    /// The node's zone.
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: String,
    /// The broker clients should send admin requests to (any broker works; this is the
    /// metadata leader when one is known).
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// The broker clients should produce to and fetch from. Any broker serves any partition;
    /// the leader is a placement hint that spreads client connections.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
    /// `retention.ms` (-1: unlimited).
    pub retention_ms: i64,
    /// `retention.bytes` per partition (-1: unlimited).
    pub retention_bytes: i64,
}

/// A topic to create. `None` fields take the cluster's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<i64>,
}

/// One validated record batch to append to a partition.
#[derive(Clone, Debug)]
pub struct Append {
    pub topic: String,
    pub partition: i32,
    pub header: BatchHeader,
    /// The whole batch as the producer sent it (base offset still the producer's).
    pub batch: Bytes,
}

/// Where an appended batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// What a fetch of one partition returns.
#[derive(Clone, Debug, Default)]
pub struct Records {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Whole batches, in offset order, their base offsets rewritten to the assigned ones. The
    /// first may begin before the requested offset (clients skip what they did not ask for).
    pub records: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// The first batch whose max timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Why the log refused or failed an operation. Each maps to one Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LogError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("offset out of range")]
    OffsetOutOfRange,
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("record batch too large: {bytes} bytes, at most {max}")]
    MessageTooLarge { bytes: usize, max: usize },
    #[error("out-of-order sequence number")]
    OutOfOrderSequence,
    #[error("producer epoch is stale")]
    InvalidProducerEpoch,
    #[error("unknown producer id")]
    UnknownProducerId,
    #[error("not enough replicas: {0}")]
    NotEnoughReplicas(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// Transient: no metadata leader, a queue full. Clients retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("policy violation: {0}")]
    PolicyViolation(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// A produce request's place in its connection's order of produce requests.
///
/// Kafka clients pipeline produce requests on a connection (librdkafka up to 5 with
/// idempotence) and an idempotent producer's batches must be sequenced in the order sent. The
/// listener serves several produce requests of one connection at once, so each gets a turn
/// chained to the previous one: [`Turn::wait`] returns once the previous request's batches
/// are sequenced (or it gave up: a request that fails or is dropped passes its turn too).
#[derive(Debug, Default)]
pub struct Turn {
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    next: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the next request's [`Turn`] waits on.
#[derive(Debug)]
pub struct TurnWait(tokio::sync::oneshot::Receiver<()>);

impl Turn {
    /// A turn that waits for nobody and that nobody waits for (a request served alone).
    pub fn alone() -> Turn {
        Turn::default()
    }

    /// The turn after `previous` (none: the first), and what the turn after it waits on.
    pub fn after(previous: Option<TurnWait>) -> (Turn, TurnWait) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Turn { previous: previous.map(|p| p.0), next: Some(tx) }, TurnWait(rx))
    }

    /// Waits until the previous request's batches are sequenced, failed or abandoned.
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error only means the previous request dropped its turn: it is done ordering.
            let _ = previous.await;
        }
    }

    /// This request's batches are sequenced: the next request may sequence its own.
    pub fn pass(self) {}
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(next) = self.next.take() else { return };
        match self.previous.take() {
            None => {
                let _ = next.send(());
            }
            // Dropped before its own wait (refused, or its connection went away): the next
            // request still comes after the previous one, so the signal is relayed, not given.
            Some(previous) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let _ = previous.await;
                        let _ = next.send(());
                    });
                }
                // No runtime, so no request is being served either; nothing waits in order.
                Err(_) => {
                    let _ = next.send(());
                }
            },
        }
    }
}

/// The log as the Kafka front end uses it. Implementations must be cheap to call concurrently
/// from many connections.
pub trait Broker: Send + Sync + 'static {
    fn cluster(&self) -> ClusterInfo;

    /// Every topic, sorted by name.
    fn topics(&self) -> Vec<TopicInfo>;

    fn topic(&self, name: &str) -> Option<TopicInfo>;

    /// Whether a Metadata request for an unknown topic creates it (with the defaults).
    fn auto_create_topics(&self) -> bool;

    /// Creates topics (one result per topic, in order). With `validate_only` nothing is
    /// created, only checked.
    fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        timeout_ms: u64,
    ) -> impl Future<Output = Vec<Result<TopicInfo, LogError>>> + Send;

    fn delete_topics(
        &self,
        names: Vec<String>,
        timeout_ms: u64,
    ) -> impl Future<Output = Vec<Result<(), LogError>>> + Send;

    /// Appends batches (one result per batch, in order). Batches of one partition are
    /// sequenced in the order given. Answers once every batch is durable and its offsets are
    /// committed, or failed.
    fn produce(
        &self,
        appends: Vec<Append>,
        timeout_ms: u64,
    ) -> impl Future<Output = Vec<Result<Appended, LogError>>> + Send;

    /// [`Broker::produce`] as one of a connection's pipelined produce requests: the work that
    /// needs no order (storing the bytes) may overlap the earlier requests, but the batches
    /// take their place in the log's sequence only after `turn` says the previous request's
    /// did ([`Turn::wait`]), and `turn` is passed on ([`Turn::pass`], or dropped) as soon as
    /// this request's are. The default does everything in turn, which is correct for any log.
    fn produce_in_turn(
        &self,
        appends: Vec<Append>,
        timeout_ms: u64,
        turn: Turn,
    ) -> impl Future<Output = Vec<Result<Appended, LogError>>> + Send {
        async move {
            let mut turn = turn;
            turn.wait().await;
            let out = self.produce(appends, timeout_ms).await;
            turn.pass();
            out
        }
    }

    /// Reads whole batches of one partition from `offset`, up to about `max_bytes` (at least
    /// one batch when any is available). An offset at the high watermark returns no records;
    /// one below the log start or beyond the high watermark is `OffsetOutOfRange`.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Records, LogError>> + Send;

    /// Resolves an offset query to `(offset, timestamp)`; the timestamp is -1 for
    /// `Earliest`/`Latest`.
    fn list_offset(&self, topic: &str, partition: i32, query: OffsetQuery) -> Result<(i64, i64), LogError>;

    /// Whether clients must authenticate (SASL) before any request but ApiVersions,
    /// SaslHandshake and SaslAuthenticate.
    fn authentication_required(&self) -> bool {
        false
    }

    /// SASL/PLAIN: the principal `user` authenticates as with `password`, or why not. The
    /// default (no users) refuses everyone.
    fn authenticate_plain(&self, _user: &str, _password: &str) -> Result<String, String> {
        Err("this broker has no users".into())
    }

    /// Whether `principal` (`None`: not authenticated) may do `permission` on `kind`/`name`.
    /// The default allows everything, as a broker without authentication does.
    fn authorize(
        &self,
        _principal: Option<&str>,
        _kind: quorumdb_meta::auth::ResourceKind,
        _name: &str,
        _permission: quorumdb_meta::auth::Permission,
    ) -> bool {
        true
    }

    /// Brings what [`Broker::list_offset`] answers up to date with every append acknowledged
    /// before the call, by any broker. A broker that serves every partition from a replicated
    /// index may lag it (just restarted, briefly cut off); without this, a client could read
    /// a high watermark below offsets it was already acknowledged. The default (one process,
    /// one index) has nothing to catch up with.
    fn catch_up(&self, _timeout_ms: u64) -> impl Future<Output = Result<(), LogError>> + Send {
        async { Ok(()) }
    }

    /// A new producer id and epoch for idempotent producing (transactions are not supported:
    /// a transactional id is refused).
    fn init_producer_id(&self, timeout_ms: u64) -> impl Future<Output = Result<(i64, i16), LogError>> + Send;

    /// Changes whenever any partition's high watermark moves (long-polling fetches wait on it).
    fn appended(&self) -> tokio::sync::watch::Receiver<u64>;

    // -----------------------------------------------------------------------------------------
    // Consumer groups. The defaults answer that no coordinator is available, for brokers (test
    // doubles) that serve only the log.

    /// The broker that coordinates `group` (FindCoordinator).
    fn coordinator(&self, group: &str) -> Result<BrokerInfo, GroupCode> {
        let _ = group;
        Err(GroupCode::CoordinatorNotAvailable)
    }

    /// JoinGroup, SyncGroup, Heartbeat, LeaveGroup: answered when the coordinator answers
    /// (a join waits for its rebalance).
    fn group(&self, request: GroupRequest) -> impl Future<Output = GroupResponse> + Send {
        let code = GroupCode::CoordinatorNotAvailable;
        let response = match request {
            GroupRequest::Join(_) => GroupResponse::Join(Err(code)),
            GroupRequest::Sync { .. } => GroupResponse::Sync(Err(code)),
            GroupRequest::Heartbeat { .. } => GroupResponse::Heartbeat(Err(code)),
            GroupRequest::Leave { .. } => GroupResponse::Leave(Err(code)),
        };
        async move { response }
    }

    /// Commits offsets for `member` of `generation` (-1 and "" for a simple consumer): one
    /// result per offset, in order, or a group-level refusal.
    fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: Vec<OffsetSpec>,
    ) -> impl Future<Output = Result<Vec<Result<(), OffsetRefusal>>, GroupCode>> + Send {
        let _ = (group, generation, member, offsets);
        async { Err(GroupCode::CoordinatorNotAvailable) }
    }

    /// Committed offsets of `group`: of the partitions given, or of every partition it has
    /// offsets for (`None`). A partition without one is absent.
    fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> impl Future<Output = Result<Vec<FetchedOffset>, GroupCode>> + Send {
        let _ = (group, partitions);
        async { Err(GroupCode::CoordinatorNotAvailable) }
    }

    /// Every group: `(group, protocol type, state)`.
    fn list_groups(&self) -> Result<Vec<(String, String, String)>, GroupCode> {
        Err(GroupCode::CoordinatorNotAvailable)
    }

    fn describe_group(&self, group: &str) -> Result<GroupDescription, GroupCode> {
        let _ = group;
        Err(GroupCode::CoordinatorNotAvailable)
    }

    /// Deletes empty groups and their offsets: one result per group, in order.
    fn delete_groups(&self, groups: Vec<String>) -> impl Future<Output = Vec<Result<(), GroupCode>>> + Send {
        let n = groups.len();
        async move { vec![Err(GroupCode::CoordinatorNotAvailable); n] }
    }
}

/// One committed offset (OffsetFetch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// One member of a described group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its subscription (empty if it has not joined the current coordinator).
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}
