//! QuorumDB's Kafka front end: the wire protocol, spoken by unmodified Kafka clients, in front
//! of the log behind the [`Broker`] trait.

pub mod batch;
pub mod broker;

pub use batch::BatchHeader;
pub use broker::{
    Append, Appended, Broker, BrokerInfo, ClusterInfo, LogError, NewTopic, OffsetQuery, PartitionInfo,
    Records, TopicInfo,
};
