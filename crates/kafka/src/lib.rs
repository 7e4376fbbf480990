//! QuorumDB's Kafka front end: the wire protocol, spoken by unmodified Kafka clients
//! (librdkafka and its bindings, kafka-python, the Java client), in front of the log behind
//! the [`Broker`] trait.
//!
//! - [`batch`]: record-batch validation; the broker stores batches as produced and never
//!   decompresses them.
//! - [`serve`] (module `server`): the listener, framing, version negotiation, dispatch;
//!   `api`: one handler per API; `bounds`: the allocation guard run before decoding;
//!   `legacy`: the hand-encoded refusal of Produce v0–v2; `groups`: the consumer-group APIs;
//!   [`request`]: a frame's bytes to a typed request, without I/O (shared with the fuzz target).
//! - [`error_code`]: every [`LogError`] as a Kafka error code.

mod api;
pub mod batch;
mod bounds;
pub mod broker;
mod error;
mod groups;
mod legacy;
pub mod request;
pub mod server;

pub use batch::{rewrite_base_offset, split_batches, testing, BatchError, BatchHeader};
pub use broker::{
    Append, Appended, Broker, BrokerInfo, ClusterInfo, DescribedMember, FetchedOffset, GroupCode,
    GroupDescription, GroupRequest, GroupResponse, LogError, NewTopic, OffsetQuery, OffsetRefusal,
    OffsetSpec, PartitionInfo, Records, TopicInfo, Turn, TurnWait,
};
pub use error::{check_topic_name, error_code};
pub use groups::group_code;
pub use server::{advertised, serve, serve_with_handshake, Handshake, KafkaConfig, Stream, APIS};
