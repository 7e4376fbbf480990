//! Kafka error codes for the log's errors, and the topic-name rules.

use kafka_protocol::ResponseError;

use crate::broker::LogError;

/// The Kafka error code a [`LogError`] is answered with.
///
/// Transient conditions map to codes every client retries: a missing metadata leader or a
/// full queue ([`LogError::Unavailable`]) to LEADER_NOT_AVAILABLE, which also makes clients
/// refresh their metadata (cheap here: any broker serves any partition); a timeout to
/// REQUEST_TIMED_OUT; too few live replicas to NOT_ENOUGH_REPLICAS. The rest name the problem.
pub fn error_code(e: &LogError) -> i16 {
    let r = match e {
        LogError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        LogError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        LogError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        LogError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        LogError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        LogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        LogError::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        LogError::CorruptMessage(_) => ResponseError::CorruptMessage,
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        LogError::UnknownProducerId => ResponseError::UnknownProducerId,
        LogError::NotEnoughReplicas(_) => ResponseError::NotEnoughReplicas,
        LogError::Timeout(_) => ResponseError::RequestTimedOut,
        LogError::Unavailable(_) => ResponseError::LeaderNotAvailable,
        LogError::PolicyViolation(_) => ResponseError::PolicyViolation,
        LogError::Unsupported(_) => ResponseError::UnsupportedVersion,
        LogError::Internal(_) => ResponseError::UnknownServerError,
    };
    r.code()
}

/// Kafka's topic-name rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`. The rule
/// itself is the metadata state machine's, which every topic creation passes anyway; checking
/// here refuses a bad name before a proposal.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    quorumdb_meta::log::check_topic_name(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every log error maps to its documented Kafka code.
    #[test]
    fn log_errors_map_to_kafka_codes() {
        let s = || String::from("x");
        let cases = [
            (LogError::UnknownTopicOrPartition, 3),
            (LogError::TopicAlreadyExists(s()), 36),
            (LogError::InvalidTopic(s()), 17),
            (LogError::InvalidPartitions(s()), 37),
            (LogError::InvalidReplicationFactor(s()), 38),
            (LogError::InvalidConfig(s()), 40),
            (LogError::OffsetOutOfRange, 1),
            (LogError::CorruptMessage(s()), 2),
            (LogError::MessageTooLarge { bytes: 2, max: 1 }, 10),
            (LogError::OutOfOrderSequence, 45),
            (LogError::InvalidProducerEpoch, 47),
            (LogError::UnknownProducerId, 59),
            (LogError::NotEnoughReplicas(s()), 19),
            (LogError::Timeout(s()), 7),
            (LogError::Unavailable(s()), 5),
            (LogError::PolicyViolation(s()), 44),
            (LogError::Unsupported(s()), 35),
            (LogError::Internal(s()), -1),
        ];
        for (e, code) in cases {
            assert_eq!(error_code(&e), code, "{e:?}");
        }
    }

    /// Topic names follow Kafka's rules.
    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            assert_eq!(check_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad}");
        }
    }
}
