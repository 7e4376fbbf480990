//! `/v1/topics`: the log's topics over HTTP, for operators and `quorumdb topic`. Kafka clients
//! use the Kafka listener for the same operations; both go through [`crate::log::Log`], so a
//! topic created either way is validated by one set of rules and defaults.

use crate::error::ApiError;
use crate::http::AppState;
use crate::log::Log;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorumdb_api as api;
use quorumdb_kafka::LogError;
use quorumdb_meta::log::Topic;
use std::sync::Arc;

/// Formats a Kafka topic id the way Kafka tools print UUIDs (8-4-4-4-12 hex digits).
fn uuid_text(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

pub(crate) fn topic_info(t: &Topic) -> api::TopicInfo {
    api::TopicInfo {
        name: t.name.clone(),
        id: uuid_text(&t.id),
        replication_factor: t.replicas,
        retention_ms: t.config.retention_ms,
        retention_bytes: t.config.retention_bytes,
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| api::TopicPartitionInfo {
                partition: u32::try_from(i).unwrap_or(u32::MAX),
                log_start_offset: p.log_start,
                high_watermark: p.next_offset,
                batches: p.batches_len() as u64,
                bytes: p.bytes,
                producers: p.producers_len() as u64,
            })
            .collect(),
    }
}

/// The HTTP form of a refusal from the log. Codes match the Kafka error names in spirit so an
/// operator sees the same reason whichever interface they used.
fn log_error(e: LogError) -> ApiError {
    let message = e.to_string();
    let (code, status) = match e {
        LogError::UnknownTopicOrPartition => ("unknown_topic", 404),
        LogError::TopicAlreadyExists(_) => ("topic_exists", 409),
        LogError::InvalidTopic(_) => ("invalid_topic", 400),
        LogError::InvalidPartitions(_) => ("invalid_partitions", 400),
        LogError::InvalidReplicationFactor(_) => ("invalid_replication_factor", 400),
        LogError::InvalidConfig(_) | LogError::PolicyViolation(_) => ("invalid_config", 400),
        LogError::Timeout(_) => return ApiError::Timeout(message),
        LogError::Unavailable(_) | LogError::NotEnoughReplicas(_) => return ApiError::Unavailable(message),
        LogError::Unsupported(_) => ("unsupported", 400),
        LogError::OffsetOutOfRange
        | LogError::CorruptMessage(_)
        | LogError::MessageTooLarge { .. }
        | LogError::OutOfOrderSequence
        | LogError::InvalidProducerEpoch
        | LogError::UnknownProducerId
        | LogError::Internal(_) => return ApiError::Internal(message),
    };
    ApiError::Metadata { code, status, message }
}

fn not_found(name: &str) -> ApiError {
    ApiError::Metadata {
        code: "unknown_topic",
        status: 404,
        message: format!("topic {name:?} does not exist"),
    }
}

fn topic_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(n)| n).map_err(|_| ApiError::BadRequest("invalid topic name in the path".into()))
}

fn log_of(s: &AppState) -> Result<Arc<Log>, ApiError> {
    s.log
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this node runs no log (no kafka_listen configured)".into()))
}

/// Handlers are written as `Result`s; this turns either side into the response.
fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn list_topics(State(s): State<AppState>) -> Response {
    let v = crate::http::read_view!(s);
    let body = api::TopicList {
        topics: v.metadata.log().topics().values().filter(|t| !t.deleting).map(|t| topic_info(t)).collect(),
        kafka_addresses: s.node.config.members.iter().map(|m| m.kafka.clone()).collect(),
    };
    (StatusCode::OK, Json(body)).into_response()
}

pub(crate) async fn create_topic(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(
        async {
            let t = crate::http::json_body::<api::NewTopic>(body)?;
            let log = log_of(&s)?;
            let name = t.name.clone();
            let new = quorumdb_kafka::NewTopic {
                name: t.name,
                partitions: t.partitions.map(|p| i32::try_from(p).unwrap_or(i32::MAX)),
                replication_factor: t.replication_factor.map(i16::from),
                retention_ms: t.retention_ms,
                retention_bytes: t.retention_bytes,
            };
            log.create_topic(new).await.map_err(log_error)?;
            match s.meta.view().metadata.log().topic(&name) {
                Some(t) => Ok((StatusCode::CREATED, Json(topic_info(t))).into_response()),
                None => Err(ApiError::Unavailable(format!(
                    "topic {name:?} was created but is not visible on this node yet"
                ))),
            }
        }
        .await,
    )
}

pub(crate) async fn describe_topic(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let v = crate::http::read_view!(s);
    respond((|| {
        let name = topic_name(name)?;
        let t = v.metadata.log().topic(&name).ok_or_else(|| not_found(&name))?;
        Ok((StatusCode::OK, Json(topic_info(t))).into_response())
    })())
}

pub(crate) async fn delete_topic(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    respond(
        async {
            let name = topic_name(name)?;
            let log = log_of(&s)?;
            if s.meta.view().metadata.log().topic(&name).is_none() {
                return Err(not_found(&name));
            }
            log.delete_topic(&name).await.map_err(log_error)?;
            Ok((StatusCode::OK, Json(api::TopicDeleted { name, deleting: true })).into_response())
        }
        .await,
    )
}
