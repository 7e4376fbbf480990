//! One handler per served API: a decoded request in, the response to encode out.
//!
//! Handlers never fail: every problem becomes an error code in the response, in the place the
//! version's format has for it. Fields a version lacks are left at the codec's defaults, which
//! its encoder requires.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::watch;

use crate::batch::{split_batches, whole_batches_within, COMPRESSION_ZSTD};
use crate::broker::{Append, Broker, LogError, NewTopic, OffsetQuery, PartitionInfo, TopicInfo, Turn};
use crate::error::{check_topic_name, error_code};
use crate::server::{KafkaConfig, APIS};

/// What handlers share: the log, the limits, and the shutdown signal (long polls end early).
pub(crate) struct Ctx<'a, B> {
    pub broker: &'a B,
    pub config: &'a KafkaConfig,
    pub shutdown: watch::Receiver<bool>,
    /// Who the connection authenticated as (SASL), if anyone.
    pub principal: Option<std::sync::Arc<str>>,
}

impl<B: Broker> Ctx<'_, B> {
    /// Whether this connection's principal may do `permission` on `kind`/`name`.
    pub fn allowed(&self, kind: ResourceKind, name: &str, permission: Permission) -> bool {
        self.broker.authorize(self.principal.as_deref(), kind, name, permission)
    }
}

use quorumdb_meta::auth::{Permission, ResourceKind};

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// ListOffsets timestamps with special meanings.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
const MAX_TIMESTAMP: i64 = -3;
/// A fetch session's epochs that ask for a full (not incremental) fetch.
const INITIAL_EPOCH: i32 = 0;
const FINAL_EPOCH: i32 = -1;
/// `isolation_level` READ_COMMITTED.
const READ_COMMITTED: i8 = 1;
/// CreateTopics `config_source` values.
const CONFIG_SOURCE_TOPIC: i8 = 1;
const CONFIG_SOURCE_DEFAULT: i8 = 5;
/// The topic configs we honour.
const RETENTION_MS: &str = "retention.ms";
const RETENTION_BYTES: &str = "retention.bytes";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The codec's topic-id type from our 16 bytes (it is `uuid::Uuid`, built from a `Vec`).
fn to_uuid<T: TryFrom<Vec<u8>> + Default>(id: [u8; 16]) -> T {
    T::try_from(id.to_vec()).unwrap_or_default()
}

/// Our 16 bytes from the codec's topic id; `None` for the nil id (no id given).
fn from_uuid<T: AsRef<[u8]>>(u: &T) -> Option<[u8; 16]> {
    let id: [u8; 16] = AsRef::<[u8]>::as_ref(u).try_into().ok()?;
    (id != [0; 16]).then_some(id)
}

fn ms(timeout: u64) -> Duration {
    Duration::from_millis(timeout)
}

// ---------------------------------------------------------------------------------------------
// ApiVersions

/// Our API list; `error_code` 0, or UNSUPPORTED_VERSION when the request's version is not
/// served (KIP-511: the client retries with the highest version we list).
pub(crate) fn api_versions(error: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error;
    r.api_keys = APIS
        .iter()
        .map(|(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *key as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    r
}

// ---------------------------------------------------------------------------------------------
// Metadata

fn topic_metadata(t: &TopicInfo) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(s(&t.name)));
    out.topic_id = to_uuid(t.id);
    out.is_internal = false;
    out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    out.partitions = t
        .partitions
        .iter()
        .map(|p| {
            let mut mp = MetadataResponsePartition::default();
            mp.partition_index = p.partition;
            mp.leader_id = BrokerId(p.leader);
            // Leadership never moves in the Kafka sense (any broker serves any partition).
            mp.leader_epoch = 0;
            mp.replica_nodes = p.replicas.iter().map(|r| BrokerId(*r)).collect();
            mp.isr_nodes = mp.replica_nodes.clone();
            mp.offline_replicas = Vec::new();
            mp
        })
        .collect();
    out
}

fn topic_metadata_error(name: Option<&str>, code: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(s(name.unwrap_or(""))));
    out.error_code = code;
    out.topic_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    out
}

fn default_topic(name: &str) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        partitions: None,
        replication_factor: None,
        retention_ms: None,
        retention_bytes: None,
    }
}

pub(crate) async fn metadata<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let broker = cx.broker;
    let cluster = broker.cluster();
    let mut r = MetadataResponse::default();
    r.brokers = cluster
        .brokers
        .iter()
        .map(|b| {
            let mut mb = MetadataResponseBroker::default();
            mb.node_id = BrokerId(b.node_id);
            mb.host = s(&b.host);
            mb.port = b.port;
            mb.rack = b.rack.as_deref().map(s);
            mb
        })
        .collect();
    r.cluster_id = Some(s(&cluster.cluster_id));
    r.controller_id = BrokerId(cluster.controller_id);
    r.cluster_authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
    let wanted = match req.topics {
        // v0 has no null: an empty list means every topic. From v1 null means every topic and
        // an empty list none.
        None => None,
        Some(t) if version == 0 && t.is_empty() => None,
        Some(t) => Some(t),
    };
    let Some(wanted) = wanted else {
        // Listing every topic shows only those the principal may read, as Kafka does.
        r.topics = broker
            .topics()
            .iter()
            .filter(|t| cx.allowed(ResourceKind::Topic, &t.name, Permission::Read))
            .map(topic_metadata)
            .collect();
        return r;
    };
    // Before v4 the request has no flag and brokers auto-create.
    let auto_create = (version < 4 || req.allow_auto_topic_creation) && broker.auto_create_topics();
    let mut by_id: Option<Vec<TopicInfo>> = None;
    for t in wanted {
        let name = t.name.as_ref().map(|n| n.0.as_str().to_string());
        let Some(name) = name else {
            // v10+ may name a topic by id only.
            let Some(id) = from_uuid(&t.topic_id) else {
                r.topics.push(topic_metadata_error(None, ResponseError::InvalidRequest.code()));
                continue;
            };
            let all = by_id.get_or_insert_with(|| broker.topics());
            match all.iter().find(|t| t.id == id) {
                Some(info) => r.topics.push(topic_metadata(info)),
                None => {
                    let mut out = topic_metadata_error(None, ResponseError::UnknownTopicId.code());
                    out.topic_id = t.topic_id;
                    r.topics.push(out);
                }
            }
            continue;
        };
        if !cx.allowed(ResourceKind::Topic, &name, Permission::Read) {
            r.topics.push(topic_metadata_error(Some(&name), ResponseError::TopicAuthorizationFailed.code()));
            continue;
        }
        if let Some(info) = broker.topic(&name) {
            r.topics.push(topic_metadata(&info));
            continue;
        }
        if check_topic_name(&name).is_err() {
            r.topics.push(topic_metadata_error(Some(&name), ResponseError::InvalidTopicException.code()));
            continue;
        }
        if !auto_create || !cx.allowed(ResourceKind::Topic, &name, Permission::Admin) {
            r.topics.push(topic_metadata_error(Some(&name), ResponseError::UnknownTopicOrPartition.code()));
            continue;
        }
        let created =
            broker.create_topics(vec![default_topic(&name)], false, cx.config.auto_create_timeout_ms).await;
        let topic = match created.into_iter().next() {
            Some(Ok(info)) => topic_metadata(&info),
            // Created concurrently (another client, another broker): serve it if visible yet.
            Some(Err(LogError::TopicAlreadyExists(_))) => match broker.topic(&name) {
                Some(info) => topic_metadata(&info),
                None => topic_metadata_error(Some(&name), ResponseError::LeaderNotAvailable.code()),
            },
            // Transient: the client asks again, as for a topic whose leader is being elected.
            Some(Err(LogError::Timeout(_) | LogError::Unavailable(_) | LogError::NotEnoughReplicas(_))) => {
                topic_metadata_error(Some(&name), ResponseError::LeaderNotAvailable.code())
            }
            Some(Err(e)) => {
                tracing::debug!(topic = %name, error = %e, "kafka auto-creation refused");
                topic_metadata_error(Some(&name), error_code(&e))
            }
            None => topic_metadata_error(Some(&name), ResponseError::UnknownServerError.code()),
        };
        r.topics.push(topic);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// CreateTopics, DeleteTopics

/// Parses one `retention.*` value: an integer of at least -1 (-1: unlimited), or null (the
/// default).
fn retention(name: &str, value: Option<&StrBytes>) -> Result<Option<i64>, LogError> {
    let Some(value) = value else { return Ok(None) };
    match value.as_str().trim().parse::<i64>() {
        Ok(v) if v >= -1 => Ok(Some(v)),
        _ => Err(LogError::InvalidConfig(format!(
            "{name}={:?} is not an integer of at least -1",
            value.as_str()
        ))),
    }
}

/// A CreateTopics topic as a [`NewTopic`], or why it is refused before reaching the log.
fn new_topic(
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<NewTopic, (i16, String)> {
    let name = t.name.0.as_str();
    let refuse = |e: LogError| (error_code(&e), e.to_string());
    check_topic_name(name).map_err(|m| refuse(LogError::InvalidTopic(m)))?;
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest.code(),
            "manual replica assignments are not supported: QuorumDB places partitions itself".into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => None,
        n if n >= 1 => Some(n),
        n => return Err(refuse(LogError::InvalidPartitions(format!("{n} partitions; at least 1, or -1")))),
    };
    let replication_factor = match t.replication_factor {
        -1 => None,
        n if n >= 1 => Some(n),
        n => {
            return Err(refuse(LogError::InvalidReplicationFactor(format!(
                "replication factor {n}; at least 1, or -1"
            ))))
        }
    };
    let mut new = NewTopic { partitions, replication_factor, ..default_topic(name) };
    for c in &t.configs {
        match c.name.as_str() {
            RETENTION_MS => new.retention_ms = retention(RETENTION_MS, c.value.as_ref()).map_err(refuse)?,
            RETENTION_BYTES => {
                new.retention_bytes = retention(RETENTION_BYTES, c.value.as_ref()).map_err(refuse)?
            }
            other => {
                return Err(refuse(LogError::InvalidConfig(format!(
                    "topic config {other:?} is not supported (only {RETENTION_MS} and {RETENTION_BYTES})"
                ))))
            }
        }
    }
    Ok(new)
}

pub(crate) async fn create_topics<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    // Kafka refuses every copy of a name given twice.
    let mut seen = HashSet::new();
    let duplicates: HashSet<&str> =
        req.topics.iter().map(|t| t.name.0.as_str()).filter(|n| !seen.insert(*n)).collect();
    let checked: Vec<Result<NewTopic, (i16, String)>> = req
        .topics
        .iter()
        .map(|t| {
            if duplicates.contains(t.name.0.as_str()) {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    "the topic is named twice in the request".into(),
                ));
            }
            if !cx.allowed(ResourceKind::Topic, t.name.0.as_str(), Permission::Admin) {
                return Err((
                    ResponseError::TopicAuthorizationFailed.code(),
                    "admin on the topic is needed".into(),
                ));
            }
            new_topic(t)
        })
        .collect();
    let valid: Vec<NewTopic> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let timeout = cx.config.timeout_ms(req.timeout_ms);
    let mut created = if valid.is_empty() {
        Vec::new()
    } else {
        cx.broker.create_topics(valid, req.validate_only, timeout).await
    }
    .into_iter();
    let mut r = CreateTopicsResponse::default();
    for (t, check) in req.topics.iter().zip(checked) {
        let result = match check {
            Err(e) => Err(e),
            Ok(new) => match created.next() {
                Some(Ok(info)) => Ok((new, info)),
                Some(Err(e)) => Err((error_code(&e), e.to_string())),
                None => Err((ResponseError::UnknownServerError.code(), "the log gave no result".into())),
            },
        };
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        out.error_message = None;
        out.num_partitions = -1;
        out.replication_factor = -1;
        out.configs = None;
        match result {
            Ok((new, info)) => {
                if version >= 7 {
                    out.topic_id = to_uuid(info.id);
                }
                if version >= 5 {
                    out.num_partitions = i32::try_from(info.partitions.len()).unwrap_or(i32::MAX);
                    out.replication_factor = info
                        .partitions
                        .first()
                        .map_or(-1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX));
                    let config = |name: &str, value: i64, explicit: bool| {
                        let mut c = CreatableTopicConfigs::default();
                        c.name = s(name);
                        c.value = Some(s(&value.to_string()));
                        c.config_source = if explicit { CONFIG_SOURCE_TOPIC } else { CONFIG_SOURCE_DEFAULT };
                        c
                    };
                    out.configs = Some(vec![
                        config(RETENTION_MS, info.retention_ms, new.retention_ms.is_some()),
                        config(RETENTION_BYTES, info.retention_bytes, new.retention_bytes.is_some()),
                    ]);
                }
            }
            Err((code, message)) => {
                out.error_code = code;
                out.error_message = Some(s(&message));
            }
        }
        r.topics.push(out);
    }
    r
}

pub(crate) async fn delete_topics<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // Each requested topic: its name (looked up for v6 ids) and the id it was named by.
    let mut wanted: Vec<(Option<String>, Option<[u8; 16]>)> = Vec::new();
    if version >= 6 {
        let mut all: Option<Vec<TopicInfo>> = None;
        for t in &req.topics {
            let id = from_uuid(&t.topic_id);
            let name = match (&t.name, id) {
                (Some(n), _) => Some(n.0.as_str().to_string()),
                (None, Some(id)) => {
                    let all = all.get_or_insert_with(|| cx.broker.topics());
                    all.iter().find(|t| t.id == id).map(|t| t.name.clone())
                }
                (None, None) => None,
            };
            wanted.push((name, id));
        }
    } else {
        wanted = req.topic_names.iter().map(|n| (Some(n.0.as_str().to_string()), None)).collect();
    }
    let permitted = |n: &str| cx.allowed(ResourceKind::Topic, n, Permission::Admin);
    let names: Vec<String> = wanted.iter().filter_map(|(n, _)| n.clone()).filter(|n| permitted(n)).collect();
    let timeout = cx.config.timeout_ms(req.timeout_ms);
    let mut results =
        if names.is_empty() { Vec::new() } else { cx.broker.delete_topics(names, timeout).await }.into_iter();
    let mut r = DeleteTopicsResponse::default();
    for (name, id) in wanted {
        let mut out = DeletableTopicResult::default();
        if let Some(id) = id {
            out.topic_id = to_uuid(id);
        }
        match name {
            Some(name) if !permitted(&name) => {
                out.name = Some(TopicName(s(&name)));
                out.error_code = ResponseError::TopicAuthorizationFailed.code();
                out.error_message = Some(s("admin on the topic is needed"));
            }
            Some(name) => {
                out.name = Some(TopicName(s(&name)));
                match results.next() {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        out.error_code = error_code(&e);
                        out.error_message = Some(s(&e.to_string()));
                    }
                    None => out.error_code = ResponseError::UnknownServerError.code(),
                }
            }
            None => {
                out.name = None;
                out.error_code = ResponseError::UnknownTopicId.code();
                out.error_message = Some(s("no topic has this id"));
            }
        }
        r.responses.push(out);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Produce

/// A Produce response and whether any partition failed (with acks=0 a failure closes the
/// connection, Kafka's only way to tell such a producer).
pub(crate) struct Produced {
    pub response: ProduceResponse,
    pub failed: bool,
}

type PartitionOutcome = Result<(i64, i64), (i16, String)>;

/// Serves a Produce request; its batches are sequenced in `turn` (see [`Turn`]).
pub(crate) async fn produce<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: ProduceRequest,
    turn: Turn,
) -> Produced {
    let refused: Option<(i16, String)> = if req.transactional_id.is_some() {
        // Kafka has no code for "this broker has no transactions". INVALID_REQUEST is
        // non-retriable and documented as "sent to an incompatible broker", so the client
        // fails at once with that explanation; TRANSACTIONAL_ID_AUTHORIZATION_FAILED would
        // send operators looking for ACLs, and a retriable code would loop forever.
        Some((ResponseError::InvalidRequest.code(), "transactions are not supported by QuorumDB".into()))
    } else if !matches!(req.acks, -1..=1) {
        Some((ResponseError::InvalidRequiredAcks.code(), format!("acks={} (use -1, 0 or 1)", req.acks)))
    } else {
        None
    };
    // One slot per partition entry of the request, in order; batches point at their slot.
    let mut slots: Vec<Option<PartitionOutcome>> = Vec::new();
    let mut appends = Vec::new();
    let mut owners = Vec::new();
    for t in &req.topic_data {
        let denied = (!cx.allowed(ResourceKind::Topic, t.name.0.as_str(), Permission::Write)).then(|| {
            (ResponseError::TopicAuthorizationFailed.code(), "write on the topic is needed".to_string())
        });
        for p in &t.partition_data {
            let slot = slots.len();
            if let Some(e) = refused.as_ref().or(denied.as_ref()) {
                slots.push(Some(Err(e.clone())));
                continue;
            }
            let records = p.records.clone().unwrap_or_default();
            let batches = match split_batches(&records, cx.config.batch_bytes_max) {
                Ok(b) => b,
                Err(e) => {
                    slots.push(Some(Err((e.error_code(), e.to_string()))));
                    continue;
                }
            };
            // zstd needs Produce v7 (KIP-110), as Kafka enforces.
            if version < 7 && batches.iter().any(|(h, _)| h.compression() == COMPRESSION_ZSTD) {
                slots.push(Some(Err((
                    ResponseError::UnsupportedCompressionType.code(),
                    "zstd batches need Produce v7 or later".into(),
                ))));
                continue;
            }
            slots.push(None);
            for (header, batch) in batches {
                owners.push(slot);
                appends.push(Append {
                    topic: t.name.0.as_str().to_string(),
                    partition: p.index,
                    header,
                    batch,
                });
            }
        }
    }
    // Every partition's batches in one call: one proposal downstream.
    let results = if appends.is_empty() {
        drop(turn);
        Vec::new()
    } else {
        cx.broker.produce_in_turn(appends, cx.config.timeout_ms(req.timeout_ms), turn).await
    };
    let mut results = results.into_iter();
    for slot in owners {
        let r = results.next().unwrap_or_else(|| Err(LogError::Internal("the log gave no result".into())));
        let current = &mut slots[slot];
        match (current.as_ref(), r) {
            // The partition's first batch gives its base offset.
            (None, Ok(a)) => *current = Some(Ok((a.base_offset, a.log_start_offset))),
            (Some(Ok(_)), Ok(_)) | (Some(Err(_)), _) => {}
            // Any failed batch fails the partition.
            (_, Err(e)) => *current = Some(Err((error_code(&e), e.to_string()))),
        }
    }
    let mut failed = false;
    let mut slots = slots.into_iter();
    let mut r = ProduceResponse::default();
    for t in &req.topic_data {
        let mut tr = TopicProduceResponse::default();
        tr.name = t.name.clone();
        for p in &t.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            pr.log_append_time_ms = -1;
            let outcome = slots
                .next()
                .flatten()
                .unwrap_or_else(|| Err((ResponseError::UnknownServerError.code(), "no outcome".into())));
            match outcome {
                Ok((base, start)) => {
                    pr.base_offset = base;
                    pr.log_start_offset = start;
                }
                Err((code, message)) => {
                    failed = true;
                    pr.error_code = code;
                    pr.base_offset = -1;
                    pr.log_start_offset = -1;
                    pr.error_message = Some(s(&message));
                }
            }
            tr.partition_responses.push(pr);
        }
        r.responses.push(tr);
    }
    Produced { response: r, failed }
}

// ---------------------------------------------------------------------------------------------
// Fetch

fn partition_error(index: i32, code: i16) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = index;
    pd.error_code = code;
    pd.high_watermark = -1;
    pd.last_stable_offset = -1;
    pd.log_start_offset = -1;
    pd.aborted_transactions = None;
    pd.records = Some(Bytes::new());
    pd
}

fn partition_data(
    index: i32,
    high_watermark: i64,
    log_start_offset: i64,
    records: Bytes,
    isolation: i8,
) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = index;
    pd.high_watermark = high_watermark;
    // No transactions: everything below the high watermark is stable.
    pd.last_stable_offset = high_watermark;
    pd.log_start_offset = log_start_offset;
    pd.aborted_transactions = (isolation == READ_COMMITTED).then(Vec::new);
    pd.preferred_read_replica = BrokerId(-1);
    pd.records = Some(records);
    pd
}

/// One pass over the fetch's partitions: the responses, the record bytes they hold, and
/// whether any partition failed (which answers at once).
async fn fetch_once<B: Broker>(
    cx: &Ctx<'_, B>,
    req: &FetchRequest,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let broker = cx.broker;
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    let mut used = 0usize;
    let mut failed = false;
    let mut out = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.topic.0.as_str();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        let mut info: Option<Option<TopicInfo>> = None;
        if !cx.allowed(ResourceKind::Topic, name, Permission::Read) {
            failed = true;
            let code = ResponseError::TopicAuthorizationFailed.code();
            tr.partitions = t.partitions.iter().map(|p| partition_error(p.partition, code)).collect();
            out.push(tr);
            continue;
        }
        for p in &t.partitions {
            let partition_max = usize::try_from(p.partition_max_bytes).unwrap_or(0);
            let limit = partition_max.min(max_bytes.saturating_sub(used));
            // KIP-74: until some data is in the response, the next batch is returned even if it
            // alone exceeds the limits, so a large batch cannot stall a consumer.
            let first = used == 0;
            let pd = if limit == 0 && !first {
                // Nothing more fits: answer with the partition's state, without reading.
                let info = info.get_or_insert_with(|| broker.topic(name));
                match info.as_ref().and_then(|i| i.partitions.iter().find(|q| q.partition == p.partition)) {
                    Some(PartitionInfo { high_watermark, log_start_offset, .. }) => partition_data(
                        p.partition,
                        *high_watermark,
                        *log_start_offset,
                        Bytes::new(),
                        req.isolation_level,
                    ),
                    None => {
                        failed = true;
                        partition_error(p.partition, ResponseError::UnknownTopicOrPartition.code())
                    }
                }
            } else {
                match broker.read(name, p.partition, p.fetch_offset, limit).await {
                    Ok(rec) => {
                        let kept = whole_batches_within(&rec.records, limit, first);
                        used += kept.len();
                        partition_data(
                            p.partition,
                            rec.high_watermark,
                            rec.log_start_offset,
                            kept,
                            req.isolation_level,
                        )
                    }
                    Err(e) => {
                        failed = true;
                        partition_error(p.partition, error_code(&e))
                    }
                }
            };
            tr.partitions.push(pd);
        }
        out.push(tr);
    }
    (out, used, failed)
}

/// Serves a fetch, long-polling until `min_bytes` are available, a partition fails, or
/// `max_wait_ms` (capped by the config) passes.
///
/// Fetch sessions (KIP-227) are declined. A full fetch (epoch 0 or -1) is always served and
/// answered with session id 0, which tells a client asking to open a session that none was
/// created, so it keeps sending full fetches (Kafka does the same when its session cache is
/// full). An incremental fetch (any other epoch) names a session we never opened:
/// FETCH_SESSION_ID_NOT_FOUND, after which clients fall back to a full fetch. Sessions only
/// save request bytes for consumers of many partitions; serving full fetches is always correct.
pub(crate) async fn fetch<B: Broker>(cx: &Ctx<'_, B>, version: i16, req: FetchRequest) -> FetchResponse {
    let mut r = FetchResponse::default();
    r.session_id = 0;
    if version >= 7 && req.session_epoch != INITIAL_EPOCH && req.session_epoch != FINAL_EPOCH {
        r.error_code = ResponseError::FetchSessionIdNotFound.code();
        return r;
    }
    let wait_ms = u64::try_from(req.max_wait_ms).unwrap_or(0).min(cx.config.fetch_wait_ms_max);
    let deadline = tokio::time::Instant::now() + ms(wait_ms);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let any_partition = req.topics.iter().any(|t| !t.partitions.is_empty());
    let mut appended = cx.broker.appended();
    let mut shutdown = cx.shutdown.clone();
    loop {
        // Mark the current state seen before reading, so an append landing during the read
        // wakes the wait below.
        appended.borrow_and_update();
        let (responses, bytes, failed) = fetch_once(cx, &req).await;
        r.responses = responses;
        if bytes >= min_bytes || failed || !any_partition || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::select! {
            changed = appended.changed() => if changed.is_err() { return r },
            _ = tokio::time::sleep_until(deadline) => return r,
            _ = shutdown.wait_for(|stop| *stop) => return r,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ListOffsets, InitProducerId

/// Resolves offsets. Timestamp -2 is the log start, -1 the high watermark, others the first
/// batch at or after the timestamp. -3 (v7, the record with the largest timestamp) is refused
/// with UNSUPPORTED_VERSION on the partition: the log indexes batches by time order, not by
/// their largest timestamp, and answering "latest - 1" would be wrong whenever timestamps are
/// not monotonic. Clients send it only when asked explicitly (`OffsetSpec.maxTimestamp()`).
/// The isolation level is ignored: without transactions both levels see the same offsets.
/// The broker first catches up with every acknowledged append ([`Broker::catch_up`]); if it
/// cannot (no metadata leader), every partition gets the retriable error instead of a high
/// watermark that may be stale.
pub(crate) async fn list_offsets<B: Broker>(cx: &Ctx<'_, B>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    let caught_up = cx.broker.catch_up(cx.config.request_timeout_ms_default).await;
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.leader_epoch = -1;
            pr.timestamp = -1;
            pr.offset = -1;
            let query = match p.timestamp {
                EARLIEST_TIMESTAMP => Ok(OffsetQuery::Earliest),
                LATEST_TIMESTAMP => Ok(OffsetQuery::Latest),
                ts if ts >= 0 => Ok(OffsetQuery::Timestamp(ts)),
                MAX_TIMESTAMP => Err(ResponseError::UnsupportedVersion.code()),
                _ => Err(ResponseError::InvalidRequest.code()),
            };
            let answer = match &caught_up {
                _ if !cx.allowed(ResourceKind::Topic, t.name.0.as_str(), Permission::Read) => {
                    Err(ResponseError::TopicAuthorizationFailed.code())
                }
                Ok(()) => query.map(|q| cx.broker.list_offset(t.name.0.as_str(), p.partition_index, q)),
                Err(e) => Ok(Err(e.clone())),
            };
            match answer {
                Ok(Ok((offset, timestamp))) => {
                    pr.offset = offset;
                    pr.timestamp = timestamp;
                }
                Ok(Err(e)) => pr.error_code = error_code(&e),
                Err(code) => pr.error_code = code,
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

/// A new producer id for an idempotent producer. A transactional id is refused with
/// INVALID_REQUEST (see [`produce`] for why this code). The v3+ `producer_id`/`producer_epoch`
/// of a producer bumping its epoch are ignored: like Kafka for non-transactional producers we
/// hand out a fresh id, after which the client restarts its sequences.
pub(crate) async fn init_producer_id<B: Broker>(
    cx: &Ctx<'_, B>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    if req.transactional_id.is_some() {
        r.error_code = ResponseError::InvalidRequest.code();
        return r;
    }
    match cx.broker.init_producer_id(cx.config.request_timeout_ms_default).await {
        Ok((id, epoch)) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = epoch;
        }
        Err(e) => r.error_code = error_code(&e),
    }
    r
}
