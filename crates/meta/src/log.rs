//! The log's sequencer: topics, partitions and the offset index, as part of the metadata state.
//!
//! Ordering does not belong in the leaderless store (siblings cannot hand out dense offsets),
//! so every partition's offsets are assigned here, by committed commands. The record-batch
//! bytes do not pass through Raft: a node first writes a batch to the quorum store as a
//! write-once *blob* under a fresh id, then proposes an [`AppendSpec`] naming it. Applying the
//! append gives the batch the partition's next offsets and records `(base offset, count,
//! blob)` in the partition's index, so:
//!
//! - offsets are dense and never reassigned (they are a pure function of the committed log);
//! - an acknowledged batch's bytes were durable on a quorum before its offsets existed, so the
//!   high watermark never covers bytes that could be missing;
//! - a node that dies between the blob write and the append leaves only an unreferenced blob.
//!
//! ```text
//!   Produce ──► blob put (W=quorum) ──► Append{topic, partition, blob, count, ...} ──Raft──►
//!               apply: idempotence check ─► base = next_offset; next_offset += count
//! ```
//!
//! Idempotent producers: a batch carrying a producer id, epoch and base sequence is checked
//! against the last [`PRODUCER_BATCHES_KEPT`] batches of that producer on that partition, as
//! Kafka's broker does: a retried duplicate gets its original offset back, a gap is
//! `OutOfOrderSequence`, an older epoch `InvalidProducerEpoch`.
//!
//! The index must be cheap to publish: every applied command is followed by a copy of the
//! metadata for readers. Topics and partitions are behind `Arc`s and a partition's index is a
//! list of `Arc` chunks of [`CHUNK_LEN`] entries, so a copy shares everything and an append
//! copies at most one topic's partition list, one partition header and one chunk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Most topics the cluster holds.
pub const TOPICS_LEN_MAX: usize = 1024;
/// Most partitions one topic has.
pub const TOPIC_PARTITIONS_MAX: u32 = 1024;
/// Most partitions over all topics.
pub const PARTITIONS_LEN_MAX: usize = 16_384;
/// Kafka's own limit on topic names.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most batches one partition indexes; appends beyond it are refused until retention trims.
/// An index entry is about 60 bytes, so a full partition costs about 12 MB of metadata.
pub const PARTITION_BATCHES_LEN_MAX: usize = 200_000;
/// Most batches indexed over all partitions (about 120 MB of metadata on every node).
pub const LOG_BATCHES_LEN_MAX: usize = 2_000_000;
/// Most appends one command carries (the appender groups concurrent produces into one entry).
pub const APPENDS_PER_COMMAND_MAX: usize = 256;
/// Most batches one trim command drops (so its outcome, the blobs to delete, stays small).
pub const TRIM_BATCHES_MAX: usize = 1024;
/// Batches per producer and partition remembered for duplicate detection (Kafka: 5, the most
/// in-flight requests an idempotent producer may have).
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Producers remembered per partition; the least recently appending one is forgotten first.
pub const PARTITION_PRODUCERS_MAX: usize = 4096;
/// Index entries per shared chunk.
pub const CHUNK_LEN: usize = 256;

const _: () = assert!(PARTITION_BATCHES_LEN_MAX <= LOG_BATCHES_LEN_MAX);
const _: () = assert!(TRIM_BATCHES_MAX >= CHUNK_LEN);

/// A topic's settings. `None`: unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Replicas of the topic's blobs in the quorum store.
    pub replicas: u8,
    pub config: TopicConfig,
}

/// One indexed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    pub base_offset: u64,
    pub records: u32,
    pub bytes: u32,
    pub max_timestamp: i64,
    /// The blob holding the batch's bytes in the quorum store.
    pub blob: u128,
}

impl BatchEntry {
    /// One past the batch's last offset.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.records)
    }
}

/// The producer fields of a batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// One batch to sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendSpec {
    pub topic: String,
    pub partition: u32,
    pub records: u32,
    pub bytes: u32,
    pub max_timestamp: i64,
    pub blob: u128,
    pub producer: Option<ProducerBatch>,
}

/// Where a batch landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    pub base_offset: u64,
    pub log_start_offset: u64,
    /// A retried batch already in the log: nothing was appended and `base_offset` is the
    /// original one (its new blob is unreferenced).
    pub duplicate: bool,
}

/// Why one append (of a command that may carry many) was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppendRefusal {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("out-of-order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than {current}")]
    InvalidProducerEpoch { current: i16, got: i16 },
    #[error("producer id {id} was never issued")]
    UnknownProducerId { id: i64 },
    #[error("the batch is invalid: {0}")]
    Invalid(String),
    #[error("the log is full: {what} (at most {max}); retention must trim first")]
    Full { what: String, max: usize },
}

/// Remembered batches of one producer on one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: i16,
    /// `(first sequence, last sequence, base offset)`, oldest first.
    pub recent: VecDeque<(i32, i32, u64)>,
    /// Log index of its last append (the eviction order).
    pub last_index: u64,
}

/// One partition: its offsets and index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLog {
    /// The first offset still readable.
    pub log_start: u64,
    /// The high watermark: the next offset to assign.
    pub next_offset: u64,
    /// Bytes of the indexed batches.
    pub bytes: u64,
    batches: usize,
    chunks: Vec<Arc<Vec<BatchEntry>>>,
    producers: BTreeMap<i64, ProducerState>,
}

impl PartitionLog {
    pub fn batches_len(&self) -> usize {
        self.batches
    }

    /// Indexed batches, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &BatchEntry> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Batches from the one holding `offset` on, oldest first (the first may begin before
    /// `offset`). Empty when `offset` is at or past the high watermark.
    pub fn batches_from(&self, offset: u64) -> impl Iterator<Item = &BatchEntry> {
        // The last chunk whose first batch begins at or before `offset`.
        let c = self.chunks.partition_point(|c| c.first().is_some_and(|b| b.base_offset <= offset));
        let c = c.saturating_sub(1);
        let skip =
            self.chunks.get(c).map(|chunk| chunk.partition_point(|b| b.end_offset() <= offset)).unwrap_or(0);
        self.chunks.iter().skip(c).flat_map(|c| c.iter()).skip(skip)
    }

    /// The first batch whose max timestamp is at or after `timestamp`.
    pub fn first_at_or_after(&self, timestamp: i64) -> Option<&BatchEntry> {
        self.batches().find(|b| b.max_timestamp >= timestamp)
    }

    pub fn producer(&self, id: i64) -> Option<&ProducerState> {
        self.producers.get(&id)
    }

    /// Producers whose recent batches this partition remembers.
    pub fn producers_len(&self) -> usize {
        self.producers.len()
    }

    fn push(&mut self, entry: BatchEntry) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK_LEN => Arc::make_mut(last).push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push(entry);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.batches += 1;
        self.bytes += u64::from(entry.bytes);
        self.next_offset = entry.end_offset();
    }

    /// Drops up to `max` of the oldest batches that end at or before `before`; returns their
    /// blobs.
    fn trim(&mut self, before: u64, max: usize) -> Vec<u128> {
        let mut dropped = Vec::new();
        while dropped.len() < max {
            let Some(first) = self.chunks.first_mut() else { break };
            let Some(b) = first.first().copied() else {
                self.chunks.remove(0);
                continue;
            };
            if b.end_offset() > before {
                break;
            }
            let chunk = Arc::make_mut(first);
            chunk.remove(0);
            if chunk.is_empty() {
                self.chunks.remove(0);
            }
            self.batches -= 1;
            self.bytes -= u64::from(b.bytes);
            dropped.push(b.blob);
        }
        let first = self.batches().next().map(|b| b.base_offset);
        self.log_start = first.unwrap_or(self.next_offset);
        dropped
    }
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    /// Kafka topic id (a UUID): derived from the creating command's index and the name.
    pub id: [u8; 16],
    pub replicas: u8,
    pub config: TopicConfig,
    /// Marked for deletion: hidden from clients, trimmed away, then removed.
    pub deleting: bool,
    pub partitions: Vec<Arc<PartitionLog>>,
}

/// What a command did to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogOutcome {
    TopicCreated {
        id: [u8; 16],
    },
    TopicDeleting,
    Appended {
        results: Vec<Result<AppendResult, AppendRefusal>>,
    },
    /// Blobs no longer referenced; the trimming node deletes them from the store.
    Trimmed {
        blobs: Vec<u128>,
        log_start: u64,
    },
    ProducerId {
        id: i64,
        epoch: i16,
    },
}

/// Why a log command was refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LogError {
    #[error("topic {name:?} already exists{}", if *.deleting { " (it is being deleted)" } else { "" })]
    TopicExists { name: String, deleting: bool },
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },
    #[error("unknown partition {partition} of topic {name:?}")]
    UnknownPartition { name: String, partition: u32 },
    #[error("invalid topic name {name:?}: {why}")]
    InvalidName { name: String, why: String },
    #[error("{what} is invalid: {why}")]
    Invalid { what: String, why: String },
    #[error("a limit is reached: {what} (at most {max})")]
    Limit { what: String, max: usize },
}

/// All topics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogState {
    topics: BTreeMap<String, Arc<Topic>>,
    partitions: usize,
    batches: usize,
    /// The newest producer id issued (ids are log indexes, so they only grow).
    producer_id_max: i64,
}

/// Checks a topic name by Kafka's rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), LogError> {
    let why = if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        Some(format!("must be 1 to {TOPIC_NAME_BYTES_MAX} characters"))
    } else if name == "." || name == ".." {
        Some("may not be \".\" or \"..\"".to_string())
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        Some("may only hold ASCII letters, digits, '.', '_' and '-'".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(LogError::InvalidName { name: name.chars().take(64).collect(), why }),
        None => Ok(()),
    }
}

/// The topic id for a topic created by the command at `index`: a version-4-shaped UUID from a
/// hash of both, never the nil UUID Kafka reserves.
fn topic_id(index: u64, name: &str) -> [u8; 16] {
    let mut h = index ^ 0x243f_6a88_85a3_08d3;
    let mut mix = |x: u64| {
        h = (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
        h
    };
    for chunk in name.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        mix(u64::from_le_bytes(w));
    }
    let a = mix(name.len() as u64);
    let b = mix(index);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&a.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

impl LogState {
    /// Topics by name, including those being deleted.
    pub fn topics(&self) -> &BTreeMap<String, Arc<Topic>> {
        &self.topics
    }

    /// A live (not deleting) topic.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name).map(|t| t.as_ref()).filter(|t| !t.deleting)
    }

    pub fn partition(&self, name: &str, partition: u32) -> Option<&PartitionLog> {
        self.topic(name)?.partitions.get(partition as usize).map(|p| p.as_ref())
    }

    pub fn batches_len(&self) -> usize {
        self.batches
    }

    pub fn create_topic(&mut self, index: u64, spec: &TopicSpec) -> Result<LogOutcome, LogError> {
        check_topic_name(&spec.name)?;
        if let Some(t) = self.topics.get(&spec.name) {
            return Err(LogError::TopicExists { name: spec.name.clone(), deleting: t.deleting });
        }
        if spec.partitions == 0 || spec.partitions > TOPIC_PARTITIONS_MAX {
            return Err(LogError::Invalid {
                what: format!("{} partitions", spec.partitions),
                why: format!("a topic has 1 to {TOPIC_PARTITIONS_MAX}"),
            });
        }
        if spec.replicas == 0 || spec.replicas > crate::state::REPLICAS_MAX {
            return Err(LogError::Invalid {
                what: format!("a replication factor of {}", spec.replicas),
                why: format!("must be 1 to {}", crate::state::REPLICAS_MAX),
            });
        }
        for (what, v) in
            [("retention_ms", spec.config.retention_ms), ("retention_bytes", spec.config.retention_bytes)]
        {
            if v == Some(0) {
                return Err(LogError::Invalid {
                    what: format!("{what} 0"),
                    why: "must be positive or unlimited".into(),
                });
            }
        }
        if self.topics.len() >= TOPICS_LEN_MAX {
            return Err(LogError::Limit { what: "topics".into(), max: TOPICS_LEN_MAX });
        }
        if self.partitions + spec.partitions as usize > PARTITIONS_LEN_MAX {
            return Err(LogError::Limit {
                what: "partitions over all topics".into(),
                max: PARTITIONS_LEN_MAX,
            });
        }
        let id = topic_id(index, &spec.name);
        let partitions = (0..spec.partitions).map(|_| Arc::new(PartitionLog::default())).collect();
        self.topics.insert(
            spec.name.clone(),
            Arc::new(Topic {
                name: spec.name.clone(),
                id,
                replicas: spec.replicas,
                config: spec.config.clone(),
                deleting: false,
                partitions,
            }),
        );
        self.partitions += spec.partitions as usize;
        Ok(LogOutcome::TopicCreated { id })
    }

    /// Marks a topic for deletion; trims then remove it.
    pub fn delete_topic(&mut self, name: &str) -> Result<LogOutcome, LogError> {
        match self.topics.get_mut(name) {
            Some(t) if !t.deleting => {
                Arc::make_mut(t).deleting = true;
                self.remove_if_drained(name);
                Ok(LogOutcome::TopicDeleting)
            }
            _ => Err(LogError::UnknownTopic { name: name.to_string() }),
        }
    }

    fn remove_if_drained(&mut self, name: &str) {
        let drained =
            self.topics.get(name).is_some_and(|t| t.deleting && t.partitions.iter().all(|p| p.batches == 0));
        if drained {
            if let Some(t) = self.topics.remove(name) {
                self.partitions -= t.partitions.len();
            }
        }
    }

    /// Issues a producer id: the command's log index, so ids are unique and only grow.
    pub fn init_producer(&mut self, index: u64) -> LogOutcome {
        let id = i64::try_from(index).unwrap_or(i64::MAX);
        self.producer_id_max = self.producer_id_max.max(id);
        LogOutcome::ProducerId { id, epoch: 0 }
    }

    /// Sequences a command's appends in order; each gets its own result.
    pub fn append(&mut self, index: u64, appends: &[AppendSpec]) -> Result<LogOutcome, LogError> {
        if appends.len() > APPENDS_PER_COMMAND_MAX {
            return Err(LogError::Limit {
                what: "appends in one command".into(),
                max: APPENDS_PER_COMMAND_MAX,
            });
        }
        let results = appends.iter().map(|a| self.append_one(index, a)).collect();
        Ok(LogOutcome::Appended { results })
    }

    fn append_one(&mut self, index: u64, a: &AppendSpec) -> Result<AppendResult, AppendRefusal> {
        if a.records == 0 {
            return Err(AppendRefusal::Invalid("a batch holds at least one record".into()));
        }
        if let Some(p) = a.producer {
            if p.id > self.producer_id_max || p.id < 0 || p.epoch < 0 || p.base_sequence < 0 {
                return Err(AppendRefusal::UnknownProducerId { id: p.id });
            }
        }
        let log_full = self.batches >= LOG_BATCHES_LEN_MAX;
        let topic = self
            .topics
            .get_mut(&a.topic)
            .filter(|t| !t.deleting)
            .ok_or(AppendRefusal::UnknownTopicOrPartition)?;
        if a.partition as usize >= topic.partitions.len() {
            return Err(AppendRefusal::UnknownTopicOrPartition);
        }
        // Checks first, on shared data: a refused append copies nothing.
        let part = &topic.partitions[a.partition as usize];
        let last_seq = a.producer.map(|p| p.base_sequence.wrapping_add(a.records as i32 - 1) & i32::MAX);
        if let Some(p) = a.producer {
            if let Some(state) = part.producers.get(&p.id) {
                if p.epoch < state.epoch {
                    return Err(AppendRefusal::InvalidProducerEpoch { current: state.epoch, got: p.epoch });
                }
                if p.epoch == state.epoch {
                    if let Some(&(_, _, base)) =
                        state.recent.iter().find(|(f, l, _)| *f == p.base_sequence && Some(*l) == last_seq)
                    {
                        return Ok(AppendResult {
                            base_offset: base,
                            log_start_offset: part.log_start,
                            duplicate: true,
                        });
                    }
                    let expected =
                        state.recent.back().map(|(_, l, _)| l.wrapping_add(1) & i32::MAX).unwrap_or(0);
                    if p.base_sequence != expected {
                        return Err(AppendRefusal::OutOfOrderSequence { expected, got: p.base_sequence });
                    }
                } else if p.base_sequence != 0 {
                    // A new epoch starts its sequences over.
                    return Err(AppendRefusal::OutOfOrderSequence { expected: 0, got: p.base_sequence });
                }
            } else if p.base_sequence != 0 {
                return Err(AppendRefusal::OutOfOrderSequence { expected: 0, got: p.base_sequence });
            }
        }
        if part.batches >= PARTITION_BATCHES_LEN_MAX {
            return Err(AppendRefusal::Full {
                what: format!("batches in partition {} of {:?}", a.partition, a.topic),
                max: PARTITION_BATCHES_LEN_MAX,
            });
        }
        if log_full {
            return Err(AppendRefusal::Full {
                what: "batches over all partitions".into(),
                max: LOG_BATCHES_LEN_MAX,
            });
        }
        let part = Arc::make_mut(&mut Arc::make_mut(topic).partitions[a.partition as usize]);
        let base = part.next_offset;
        part.push(BatchEntry {
            base_offset: base,
            records: a.records,
            bytes: a.bytes,
            max_timestamp: a.max_timestamp,
            blob: a.blob,
        });
        if let (Some(p), Some(last)) = (a.producer, last_seq) {
            let state = part.producers.entry(p.id).or_default();
            if state.epoch != p.epoch {
                state.recent.clear();
                state.epoch = p.epoch;
            }
            state.recent.push_back((p.base_sequence, last, base));
            if state.recent.len() > PRODUCER_BATCHES_KEPT {
                state.recent.pop_front();
            }
            state.last_index = index;
            if part.producers.len() > PARTITION_PRODUCERS_MAX {
                if let Some(oldest) =
                    part.producers.iter().min_by_key(|(_, s)| s.last_index).map(|(id, _)| *id)
                {
                    part.producers.remove(&oldest);
                }
            }
        }
        self.batches += 1;
        Ok(AppendResult { base_offset: base, log_start_offset: part.log_start, duplicate: false })
    }

    /// Drops up to [`TRIM_BATCHES_MAX`] whole batches of a partition that end at or before
    /// `before` (retention). A topic being deleted is trimmed regardless of `before`, and
    /// removed once empty.
    pub fn trim(&mut self, name: &str, partition: u32, before: u64) -> Result<LogOutcome, LogError> {
        let topic =
            self.topics.get_mut(name).ok_or_else(|| LogError::UnknownTopic { name: name.to_string() })?;
        if partition as usize >= topic.partitions.len() {
            return Err(LogError::UnknownPartition { name: name.to_string(), partition });
        }
        let before = if topic.deleting { u64::MAX } else { before };
        let part = Arc::make_mut(&mut Arc::make_mut(topic).partitions[partition as usize]);
        let blobs = part.trim(before, TRIM_BATCHES_MAX);
        let log_start = part.log_start;
        self.batches -= blobs.len();
        self.remove_if_drained(name);
        Ok(LogOutcome::Trimmed { blobs, log_start })
    }
}

/// Where retention would cut a partition now: the offset before which whole batches may go,
/// by age (`max_timestamp` older than `now_ms - retention_ms`) and by size (the oldest batches
/// beyond `retention_bytes`). `None`: nothing to trim.
pub fn retention_cut(part: &PartitionLog, config: &TopicConfig, now_ms: i64) -> Option<u64> {
    let mut cut = part.log_start;
    if let Some(ms) = config.retention_ms {
        let oldest_kept = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
        for b in part.batches() {
            if b.max_timestamp >= oldest_kept {
                break;
            }
            cut = cut.max(b.end_offset());
        }
    }
    if let Some(max) = config.retention_bytes {
        let mut over = part.bytes.saturating_sub(max);
        for b in part.batches() {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(u64::from(b.bytes));
            cut = cut.max(b.end_offset());
        }
    }
    (cut > part.log_start).then_some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(name: &str, partitions: u32) -> TopicSpec {
        TopicSpec { name: name.into(), partitions, replicas: 3, config: TopicConfig::default() }
    }

    fn append(topic: &str, partition: u32, records: u32, blob: u128) -> AppendSpec {
        AppendSpec {
            topic: topic.into(),
            partition,
            records,
            bytes: 100,
            max_timestamp: blob as i64,
            blob,
            producer: None,
        }
    }

    fn results(outcome: LogOutcome) -> Vec<Result<AppendResult, AppendRefusal>> {
        match outcome {
            LogOutcome::Appended { results } => results,
            other => panic!("not an append outcome: {other:?}"),
        }
    }

    /// Offsets are dense per partition, partitions are independent, and unknown partitions
    /// are refused without disturbing the others in the same command.
    #[test]
    fn appends_get_dense_offsets_per_partition() {
        let mut log = LogState::default();
        log.create_topic(1, &topic("t", 2)).unwrap();
        let r = results(
            log.append(
                2,
                &[append("t", 0, 3, 1), append("t", 1, 2, 2), append("t", 7, 1, 3), append("t", 0, 1, 4)],
            )
            .unwrap(),
        );
        let bases: Vec<_> =
            r.iter().map(|r| r.as_ref().map(|a| a.base_offset).map_err(|e| e.clone())).collect();
        assert_eq!(bases, vec![Ok(0), Ok(0), Err(AppendRefusal::UnknownTopicOrPartition), Ok(3)]);
        assert_eq!(log.partition("t", 0).unwrap().next_offset, 4);
        assert_eq!(log.partition("t", 1).unwrap().next_offset, 2);
        let from: Vec<u64> = log.partition("t", 0).unwrap().batches_from(2).map(|b| b.base_offset).collect();
        assert_eq!(from, vec![0, 3], "the batch holding offset 2 begins at 0");
        assert_eq!(log.partition("t", 0).unwrap().batches_from(4).count(), 0);
    }

    /// A retried duplicate gets its original offset, a gap or a stale epoch is refused, a new
    /// epoch restarts at sequence 0, and ids that were never issued are refused.
    #[test]
    fn idempotent_producers_are_checked_like_kafka() {
        let mut log = LogState::default();
        log.create_topic(1, &topic("t", 1)).unwrap();
        let LogOutcome::ProducerId { id, epoch } = log.init_producer(2) else { panic!() };
        let batch = |seq: i32, epoch: i16, records: u32| AppendSpec {
            producer: Some(ProducerBatch { id, epoch, base_sequence: seq }),
            ..append("t", 0, records, seq as u128 + 100)
        };
        let one = |log: &mut LogState, a: AppendSpec| results(log.append(3, &[a]).unwrap()).remove(0);
        assert_eq!(one(&mut log, batch(0, epoch, 2)).unwrap().base_offset, 0);
        assert_eq!(one(&mut log, batch(2, epoch, 3)).unwrap().base_offset, 2);
        let dup = one(&mut log, batch(0, epoch, 2)).unwrap();
        assert_eq!((dup.base_offset, dup.duplicate), (0, true));
        assert_eq!(log.partition("t", 0).unwrap().next_offset, 5, "a duplicate appends nothing");
        assert_eq!(
            one(&mut log, batch(9, epoch, 1)),
            Err(AppendRefusal::OutOfOrderSequence { expected: 5, got: 9 })
        );
        assert_eq!(one(&mut log, batch(0, 1, 1)).unwrap().base_offset, 5, "a new epoch starts over");
        assert_eq!(
            one(&mut log, batch(5, 0, 1)),
            Err(AppendRefusal::InvalidProducerEpoch { current: 1, got: 0 })
        );
        let forged = AppendSpec {
            producer: Some(ProducerBatch { id: 99, epoch: 0, base_sequence: 0 }),
            ..append("t", 0, 1, 7)
        };
        assert_eq!(one(&mut log, forged), Err(AppendRefusal::UnknownProducerId { id: 99 }));
    }

    /// Retention drops whole old batches, moves the log start, and returns their blobs; a
    /// deleted topic drains and disappears, freeing its name.
    #[test]
    fn trims_and_deletes() {
        let mut log = LogState::default();
        log.create_topic(
            1,
            &TopicSpec {
                config: TopicConfig { retention_ms: Some(10), retention_bytes: None },
                ..topic("t", 1)
            },
        )
        .unwrap();
        log.append(2, &(1..=5).map(|i| append("t", 0, 2, i)).collect::<Vec<_>>()).unwrap();
        let t = log.topic("t").unwrap();
        let cut = retention_cut(&t.partitions[0], &t.config, 13).unwrap();
        assert_eq!(cut, 4, "batches with max timestamp 1 and 2 are older than 13 - 10");
        assert_eq!(log.trim("t", 0, cut).unwrap(), LogOutcome::Trimmed { blobs: vec![1, 2], log_start: 4 });
        assert_eq!(log.batches_len(), 3);
        assert_eq!(log.delete_topic("t").unwrap(), LogOutcome::TopicDeleting);
        assert!(log.topic("t").is_none());
        assert!(matches!(
            log.create_topic(3, &topic("t", 1)),
            Err(LogError::TopicExists { deleting: true, .. })
        ));
        assert_eq!(log.trim("t", 0, 0).unwrap(), LogOutcome::Trimmed { blobs: vec![3, 4, 5], log_start: 10 });
        assert!(log.topics().is_empty());
        assert_eq!(log.batches_len(), 0);
        log.create_topic(4, &topic("t", 1)).unwrap();
    }

    /// Kafka's topic-name rules.
    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "a_b-c", &"x".repeat(249)] {
            check_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a b", "ä", "a/b", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Whatever appends and trims commit, every partition's indexed batches are
        /// contiguous, end at the high watermark and begin at the log start; a lookup by
        /// offset finds the batch holding it; counters match the index.
        #[test]
        fn index_stays_contiguous(ops in prop::collection::vec((0u32..3, 1u32..5, any::<bool>(), 0u64..40), 1..400)) {
            let mut log = LogState::default();
            log.create_topic(1, &topic("t", 3)).unwrap();
            for (i, (p, n, trim, before)) in ops.into_iter().enumerate() {
                if trim {
                    log.trim("t", p, before).unwrap();
                } else {
                    log.append(i as u64 + 2, &[append("t", p, n, i as u128)]).unwrap();
                }
            }
            let mut total = 0;
            for part in &log.topic("t").unwrap().partitions {
                let mut at = part.log_start;
                for b in part.batches() {
                    prop_assert_eq!(b.base_offset, at);
                    at = b.end_offset();
                }
                prop_assert_eq!(at, part.next_offset);
                for o in part.log_start..part.next_offset {
                    let b = part.batches_from(o).next().unwrap();
                    prop_assert!(b.base_offset <= o && o < b.end_offset());
                }
                prop_assert_eq!(part.batches().count(), part.batches_len());
                total += part.batches_len();
            }
            prop_assert_eq!(total, log.batches_len());
        }
    }
}
