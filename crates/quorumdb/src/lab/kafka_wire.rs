//! A small Kafka wire client for the lab's producers and consumers (`log-under-faults`).
//!
//! One TCP connection to one broker, one request outstanding at a time, every request
//! encoded and every answer decoded by the `kafka-protocol` crate (the same codec, at the same
//! pinned version, the broker uses) and record batches built by its `RecordBatchEncoder`, so
//! the lab needs neither Python nor librdkafka. It speaks only what the lab needs:
//! CreateTopics, InitProducerId, Produce (one uncompressed batch of one record, `acks=all`),
//! Fetch (one partition from an offset, long polling), and a simple consumer's (no member,
//! generation -1) OffsetCommit and OffsetFetch (`flaky-warehouse-sink`'s naive consumer).
//!
//! Every call has a deadline. A call that times out or loses its connection leaves the
//! connection in an unknown state (an answer may still arrive and would be taken for the next
//! one), so the caller must drop the connection: [`KafkaConn`] marks itself broken and refuses
//! further calls.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{
    create_topics_request, fetch_request, offset_commit_request, offset_fetch_request, produce_request,
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, GroupId,
    InitProducerIdRequest, InitProducerIdResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer frame accepted, bytes: a fetch answers at most `FETCH_MAX_BYTES` of records
/// plus headers; anything far larger is a corrupt length prefix, not something to allocate.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most record bytes one fetch asks for (per partition and per request).
pub const FETCH_MAX_BYTES: i32 = 1024 * 1024;

/// API versions used: the newest the broker serves of each (docs/log.md's table).
const CREATE_TOPICS_VERSION: i16 = 7;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
const OFFSET_COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 5;

/// Kafka error codes the lab tells apart.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;

/// Why a call produced no decoded answer.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {ms} ms")]
    Timeout { ms: u64 },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("answer frame of {bytes} bytes is larger than {max}")]
    FrameTooLarge { bytes: usize, max: usize },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    #[error("answer to correlation id {got}, expected {expected}")]
    Correlation { got: i32, expected: i32 },
    #[error("the connection is broken by an earlier failed call")]
    Broken,
}

/// What one produce of one record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Produced {
    /// Acknowledged at this offset.
    Ok(u64),
    /// The broker answered this error code for the partition.
    Error(i16),
}

/// What one fetch of one partition returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The partition's error code (0: none).
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// `(offset, value)` of every record returned, in order (batches may start before the
    /// requested offset; the caller filters).
    pub records: Vec<(u64, String)>,
    /// `(offset, headers)` of the records that carry headers, in order.
    pub headers: Vec<(u64, Vec<(String, String)>)>,
}

/// One connection to one broker.
pub struct KafkaConn {
    stream: TcpStream,
    next_correlation: i32,
    broken: bool,
    timeout: Duration,
}

impl KafkaConn {
    /// Connects within `timeout`; every later call waits at most `timeout` for its answer.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<KafkaConn, WireError> {
        let connect = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
        let stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(WireError::Connect { addr: addr.to_owned(), source }),
            Err(_) => {
                return Err(WireError::Connect {
                    addr: addr.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(KafkaConn { stream, next_correlation: 1, broken: false, timeout })
    }

    /// Sends one request and waits for its answer. Any failure breaks the connection.
    async fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> Result<R, WireError> {
        if self.broken {
            return Err(WireError::Broken);
        }
        self.broken = true;
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let mut body = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("quorumdb-lab")));
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(|e| WireError::Encode(e.to_string()))?;
        req.encode(&mut body, version).map_err(|e| WireError::Encode(e.to_string()))?;
        let ms = self.timeout.as_millis() as u64;
        let exchange = async {
            let mut frame = BytesMut::with_capacity(body.len() + 4);
            frame.put_u32(body.len() as u32);
            frame.put_slice(&body);
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            if let Err(e) = self.stream.read_exact(&mut len).await {
                return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    WireError::Closed
                } else {
                    WireError::Io(e)
                });
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > RESPONSE_FRAME_BYTES_MAX {
                return Err(WireError::FrameTooLarge { bytes: len, max: RESPONSE_FRAME_BYTES_MAX });
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        };
        let mut frame =
            tokio::time::timeout(self.timeout, exchange).await.map_err(|_| WireError::Timeout { ms })??;
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .map_err(|e| WireError::Decode(e.to_string()))?;
        if header.correlation_id != correlation {
            return Err(WireError::Correlation { got: header.correlation_id, expected: correlation });
        }
        let r = R::decode(&mut frame, version).map_err(|e| WireError::Decode(e.to_string()))?;
        self.broken = false;
        Ok(r)
    }

    /// Creates `topic` with `partitions` partitions and unlimited retention; the error code
    /// (0, or e.g. [`TOPIC_ALREADY_EXISTS`]).
    pub async fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<i16, WireError> {
        let retention = create_topics_request::CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("-1")));
        let t = create_topics_request::CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(vec![retention]);
        let req = CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(5_000);
        let r: CreateTopicsResponse = self.call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &req).await?;
        Ok(r.topics.first().map_or(UNKNOWN_SERVER_ERROR, |t| t.error_code))
    }

    /// A new idempotent producer id and epoch, or the error code.
    pub async fn init_producer_id(&mut self) -> Result<Result<(i64, i16), i16>, WireError> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let r: InitProducerIdResponse =
            self.call(ApiKey::InitProducerId, INIT_PRODUCER_ID_VERSION, &req).await?;
        Ok(if r.error_code == 0 { Ok((r.producer_id.0, r.producer_epoch)) } else { Err(r.error_code) })
    }

    /// Produces one record with `acks=all`, of idempotent producer `(id, epoch, sequence)`
    /// when given; `server_timeout_ms` is the request's own timeout.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        value: &str,
        producer: Option<(i64, i16, i32)>,
        timestamp_ms: i64,
        server_timeout_ms: i32,
    ) -> Result<Produced, WireError> {
        let batch = encode_batch(value, producer, timestamp_ms)?;
        let p =
            produce_request::PartitionProduceData::default().with_index(partition).with_records(Some(batch));
        let t =
            produce_request::TopicProduceData::default().with_name(name(topic)).with_partition_data(vec![p]);
        let req = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(server_timeout_ms)
            .with_topic_data(vec![t]);
        let r: ProduceResponse = self.call(ApiKey::Produce, PRODUCE_VERSION, &req).await?;
        let part = r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| WireError::Decode(format!("no answer for partition {partition}")))?;
        Ok(match (part.error_code, u64::try_from(part.base_offset)) {
            (0, Ok(offset)) => Produced::Ok(offset),
            (0, Err(_)) => return Err(WireError::Decode(format!("base offset {}", part.base_offset))),
            (code, _) => Produced::Error(code),
        })
    }

    /// Fetches `partition` of `topic` from `offset`, waiting up to `max_wait_ms` for data.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: u64,
        max_wait_ms: i32,
    ) -> Result<Fetched, WireError> {
        let p = fetch_request::FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset as i64)
            .with_partition_max_bytes(FETCH_MAX_BYTES);
        let t = fetch_request::FetchTopic::default().with_topic(name(topic)).with_partitions(vec![p]);
        let req = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_session_epoch(-1)
            .with_topics(vec![t]);
        let r: FetchResponse = self.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
        if r.error_code != 0 {
            return Ok(Fetched { error_code: r.error_code, ..Fetched::default() });
        }
        let part = r
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| WireError::Decode(format!("no answer for partition {partition}")))?;
        let mut out = Fetched {
            error_code: part.error_code,
            high_watermark: part.high_watermark,
            log_start_offset: part.log_start_offset,
            records: Vec::new(),
            headers: Vec::new(),
        };
        if let Some(bytes) = part.records.as_ref().filter(|b| !b.is_empty()) {
            let mut bytes = bytes.clone();
            let sets = RecordBatchDecoder::decode_all(&mut bytes)
                .map_err(|e| WireError::Decode(format!("records: {e}")))?;
            for record in sets.iter().flat_map(|s| s.records.iter()) {
                let offset = u64::try_from(record.offset)
                    .map_err(|_| WireError::Decode(format!("record offset {}", record.offset)))?;
                let value = record
                    .value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                if !record.headers.is_empty() {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    let h = record
                        .headers
                        .iter()
                        .map(|(k, v)| (text(k.as_bytes()), v.as_deref().map(text).unwrap_or_default()));
                    out.headers.push((offset, h.collect()));
                }
                out.records.push((offset, value));
            }
        }
        Ok(out)
    }
}

impl KafkaConn {
    /// Commits `offsets` (`(partition, next offset to read)`) of `topic` for `group` as a
    /// simple consumer (no member, generation -1); the first non-zero error code, or 0.
    pub async fn offset_commit(
        &mut self,
        group: &str,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<i16, WireError> {
        let partitions = offsets
            .iter()
            .map(|&(p, o)| {
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(o)
            })
            .collect();
        let t = offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(name(topic))
            .with_partitions(partitions);
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(vec![t]);
        let r: OffsetCommitResponse = self.call(ApiKey::OffsetCommit, OFFSET_COMMIT_VERSION, &req).await?;
        Ok(r.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .find(|&c| c != 0)
            .unwrap_or(0))
    }

    /// `group`'s committed offsets of `partitions` of `topic` (-1: none), or the error code.
    pub async fn offset_fetch(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Result<Vec<(i32, i64)>, i16>, WireError> {
        let t = offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(name(topic))
            .with_partition_indexes(partitions.to_vec());
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(Some(vec![t]));
        let r: OffsetFetchResponse = self.call(ApiKey::OffsetFetch, OFFSET_FETCH_VERSION, &req).await?;
        if r.error_code != 0 {
            return Ok(Err(r.error_code));
        }
        let mut out = Vec::new();
        for p in r.topics.iter().flat_map(|t| t.partitions.iter()) {
            if p.error_code != 0 {
                return Ok(Err(p.error_code));
            }
            out.push((p.partition_index, p.committed_offset));
        }
        Ok(Ok(out))
    }
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// One uncompressed v2 batch holding one record whose value is `value`.
pub fn encode_batch(
    value: &str,
    producer: Option<(i64, i16, i32)>,
    timestamp_ms: i64,
) -> Result<Bytes, WireError> {
    let (producer_id, producer_epoch, sequence) = producer.unwrap_or((-1, -1, -1));
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: timestamp_ms,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, [&record], &options)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the batches the lab produces pass the broker's own validation (magic 2, CRC-32C,
    /// record count) with the producer's id, epoch and sequence in the header, and that the
    /// value decodes back.
    #[test]
    fn encoded_batches_validate_and_decode() {
        let b = encode_batch("p1-42", Some((7, 0, 3)), 1_000).unwrap();
        let split = quorumdb_kafka::split_batches(&b, usize::MAX).expect("a batch the broker accepts");
        let h = split[0].0;
        assert_eq!(
            (split.len(), h.producer_id, h.producer_epoch, h.base_sequence, h.records_count),
            (1, 7, 0, 3, 1)
        );
        let mut bytes = b.clone();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        assert_eq!(sets[0].records[0].value.as_deref(), Some(&b"p1-42"[..]));
        let plain = encode_batch("x", None, 0).unwrap();
        assert_eq!(quorumdb_kafka::split_batches(&plain, usize::MAX).unwrap()[0].0.producer_id, -1);
    }
}
