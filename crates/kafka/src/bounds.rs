//! A structural check of a request body before the codec decodes it.
//!
//! The codec preallocates every array with the element count the client wrote
//! (`Vec::with_capacity(n)`), so a 30-byte request claiming two billion topics would ask the
//! allocator for hundreds of gigabytes, and a failed allocation aborts the process. This walk
//! follows the same schema as the codec, without building anything, and refuses any array
//! whose count times its elements' smallest encoding exceeds the bytes left in the frame. A
//! request that passes therefore allocates at most what a genuine request of its size would.
//!
//! Every served request with an array is walked (ApiVersions and InitProducerId have none); the
//! schemas follow Kafka's message definitions for the versions we advertise, field for field.

use kafka_protocol::messages::ApiKey;

/// A cursor over a request body.
struct Walk<'a> {
    buf: &'a [u8],
}

type Result<T = ()> = std::result::Result<T, String>;

impl<'a> Walk<'a> {
    fn skip(&mut self, n: usize) -> Result {
        if n > self.buf.len() {
            return Err(format!("{n} bytes wanted, {} left", self.buf.len()));
        }
        self.buf = &self.buf[n..];
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let Some((head, rest)) = self.buf.split_first_chunk::<N>() else {
            return Err(format!("{N} bytes wanted, {} left", self.buf.len()));
        };
        self.buf = rest;
        Ok(*head)
    }

    fn uvarint(&mut self) -> Result<u32> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let [b] = self.take::<1>()?;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 5 bytes".into())
    }

    /// A (nullable) string: i16 length, or a compact length in flexible versions.
    fn string(&mut self, flexible: bool) -> Result {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            match i16::from_be_bytes(self.take()?) {
                -1 => return Ok(()),
                n => usize::try_from(n).map_err(|_| format!("string length {n}"))?,
            }
        };
        self.skip(len)
    }

    /// (Nullable) bytes: i32 length, or a compact length in flexible versions.
    fn bytes(&mut self, flexible: bool) -> Result {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            match i32::from_be_bytes(self.take()?) {
                -1 => return Ok(()),
                n => usize::try_from(n).map_err(|_| format!("bytes length {n}"))?,
            }
        };
        self.skip(len)
    }

    /// An array's element count (0 for null), refused if `count × element_bytes_min` exceeds
    /// what is left.
    fn array(&mut self, flexible: bool, element_bytes_min: usize) -> Result<usize> {
        let n = if flexible {
            match self.uvarint()? {
                0 => 0,
                n => (n - 1) as usize,
            }
        } else {
            match i32::from_be_bytes(self.take()?) {
                -1 => 0,
                n => usize::try_from(n).map_err(|_| format!("array length {n}"))?,
            }
        };
        let need = n.checked_mul(element_bytes_min.max(1));
        if need.is_none_or(|need| need > self.buf.len()) {
            return Err(format!("an array of {n} elements in {} bytes", self.buf.len()));
        }
        Ok(n)
    }

    /// The tagged fields ending a structure in flexible versions.
    fn tagged(&mut self, flexible: bool) -> Result {
        if !flexible {
            return Ok(());
        }
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }
}

/// Smallest encodings, for the array checks: a string or array length is 1 byte compact, else
/// 2 (string) or 4 (array, bytes); tagged fields are at least 1 byte in flexible versions.
fn str_min(f: bool) -> usize {
    if f {
        1
    } else {
        2
    }
}
fn arr_min(f: bool) -> usize {
    if f {
        1
    } else {
        4
    }
}
fn tag_min(f: bool) -> usize {
    usize::from(f)
}

/// Checks that `body` (the request after its header) is a structurally valid `key` request
/// of `version` whose arrays fit in it. Keys without arrays always pass.
pub fn check(key: ApiKey, version: i16, body: &[u8]) -> Result {
    walk(key, version, body).map(|_| ())
}

/// [`check`], giving the bytes left after the request (0 for a request that fills its frame).
fn walk(key: ApiKey, version: i16, body: &[u8]) -> Result<usize> {
    let mut w = Walk { buf: body };
    walk_body(&mut w, key, version)?;
    Ok(w.buf.len())
}

fn walk_body(w: &mut Walk<'_>, key: ApiKey, version: i16) -> Result {
    let v = version;
    match key {
        ApiKey::Produce => {
            let f = v >= 9;
            w.string(f)?; // transactional_id
            w.skip(2 + 4)?; // acks, timeout_ms
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                for _ in 0..w.array(f, 4 + arr_min(f) + tag_min(f))? {
                    w.skip(4)?; // index
                    w.bytes(f)?; // records
                    w.tagged(f)?;
                }
                w.tagged(f)?;
            }
            w.tagged(f)
        }
        ApiKey::Fetch => {
            let f = v >= 12;
            w.skip(4 + 4 + 4 + 4 + 1)?; // replica_id, max_wait_ms, min_bytes, max_bytes, isolation
            if v >= 7 {
                w.skip(4 + 4)?; // session_id, session_epoch
            }
            let partition_fixed = 4
                + if v >= 9 { 4 } else { 0 } // current_leader_epoch
                + 8 // fetch_offset
                + if v >= 12 { 4 } else { 0 } // last_fetched_epoch
                + if v >= 5 { 8 } else { 0 } // log_start_offset
                + 4; // partition_max_bytes
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // topic
                for _ in 0..w.array(f, partition_fixed + tag_min(f))? {
                    w.skip(partition_fixed)?;
                    w.tagged(f)?;
                }
                w.tagged(f)?;
            }
            if v >= 7 {
                for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                    w.string(f)?; // topic
                    let n = w.array(f, 4)?;
                    w.skip(n * 4)?; // partitions
                    w.tagged(f)?;
                }
            }
            if v >= 11 {
                w.string(f)?; // rack_id
            }
            w.tagged(f)
        }
        ApiKey::ListOffsets => {
            let f = v >= 6;
            w.skip(4)?; // replica_id
            if v >= 2 {
                w.skip(1)?; // isolation_level
            }
            let partition_fixed = 4 + if v >= 4 { 4 } else { 0 } + 8;
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                for _ in 0..w.array(f, partition_fixed + tag_min(f))? {
                    w.skip(partition_fixed)?;
                    w.tagged(f)?;
                }
                w.tagged(f)?;
            }
            if v >= 10 {
                w.skip(4)?; // timeout_ms
            }
            w.tagged(f)
        }
        ApiKey::Metadata => {
            let f = v >= 9;
            let id = if v >= 10 { 16 } else { 0 };
            for _ in 0..w.array(f, id + str_min(f) + tag_min(f))? {
                w.skip(id)?; // topic_id
                w.string(f)?; // name
                w.tagged(f)?;
            }
            if v >= 4 {
                w.skip(1)?; // allow_auto_topic_creation
            }
            if (8..=10).contains(&v) {
                w.skip(1)?; // include_cluster_authorized_operations
            }
            if v >= 8 {
                w.skip(1)?; // include_topic_authorized_operations
            }
            w.tagged(f)
        }
        ApiKey::CreateTopics => {
            let f = v >= 5;
            for _ in 0..w.array(f, str_min(f) + 4 + 2 + 2 * arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                w.skip(4 + 2)?; // num_partitions, replication_factor
                for _ in 0..w.array(f, 4 + arr_min(f) + tag_min(f))? {
                    w.skip(4)?; // partition_index
                    let n = w.array(f, 4)?;
                    w.skip(n * 4)?; // broker_ids
                    w.tagged(f)?;
                }
                for _ in 0..w.array(f, 2 * str_min(f) + tag_min(f))? {
                    w.string(f)?; // name
                    w.string(f)?; // value
                    w.tagged(f)?;
                }
                w.tagged(f)?;
            }
            w.skip(4 + 1)?; // timeout_ms, validate_only
            w.tagged(f)
        }
        ApiKey::DeleteTopics => {
            let f = v >= 4;
            if v >= 6 {
                for _ in 0..w.array(f, str_min(f) + 16 + tag_min(f))? {
                    w.string(f)?; // name
                    w.skip(16)?; // topic_id
                    w.tagged(f)?;
                }
            } else {
                for _ in 0..w.array(f, str_min(f))? {
                    w.string(f)?;
                }
            }
            w.skip(4)?; // timeout_ms
            w.tagged(f)
        }
        ApiKey::FindCoordinator => {
            let f = v >= 3;
            if v <= 3 {
                w.string(f)?; // key
            }
            if v >= 1 {
                w.skip(1)?; // key_type
            }
            if v >= 4 {
                for _ in 0..w.array(f, str_min(f))? {
                    w.string(f)?; // coordinator_keys
                }
            }
            w.tagged(f)
        }
        ApiKey::JoinGroup => {
            let f = v >= 6;
            w.string(f)?; // group_id
            w.skip(4)?; // session_timeout_ms
            if v >= 1 {
                w.skip(4)?; // rebalance_timeout_ms
            }
            w.string(f)?; // member_id
            if v >= 5 {
                w.string(f)?; // group_instance_id
            }
            w.string(f)?; // protocol_type
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                w.bytes(f)?; // metadata
                w.tagged(f)?;
            }
            if v >= 8 {
                w.string(f)?; // reason
            }
            w.tagged(f)
        }
        ApiKey::SyncGroup => {
            let f = v >= 4;
            w.string(f)?; // group_id
            w.skip(4)?; // generation_id
            w.string(f)?; // member_id
            if v >= 3 {
                w.string(f)?; // group_instance_id
            }
            if v >= 5 {
                w.string(f)?; // protocol_type
                w.string(f)?; // protocol_name
            }
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // member_id
                w.bytes(f)?; // assignment
                w.tagged(f)?;
            }
            w.tagged(f)
        }
        ApiKey::Heartbeat => {
            let f = v >= 4;
            w.string(f)?; // group_id
            w.skip(4)?; // generation_id
            w.string(f)?; // member_id
            if v >= 3 {
                w.string(f)?; // group_instance_id
            }
            w.tagged(f)
        }
        ApiKey::LeaveGroup => {
            let f = v >= 4;
            w.string(f)?; // group_id
            if v <= 2 {
                w.string(f)?; // member_id
            } else {
                let reason = if v >= 5 { str_min(f) } else { 0 };
                for _ in 0..w.array(f, 2 * str_min(f) + reason + tag_min(f))? {
                    w.string(f)?; // member_id
                    w.string(f)?; // group_instance_id
                    if v >= 5 {
                        w.string(f)?; // reason
                    }
                    w.tagged(f)?;
                }
            }
            w.tagged(f)
        }
        ApiKey::OffsetCommit => {
            let f = v >= 8;
            w.string(f)?; // group_id
            w.skip(4)?; // generation_id_or_member_epoch
            w.string(f)?; // member_id
            if v >= 7 {
                w.string(f)?; // group_instance_id
            }
            if v <= 4 {
                w.skip(8)?; // retention_time_ms
            }
            let partition_fixed = 4 + 8 + if v >= 6 { 4 } else { 0 };
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                for _ in 0..w.array(f, partition_fixed + str_min(f) + tag_min(f))? {
                    w.skip(partition_fixed)?;
                    w.string(f)?; // committed_metadata
                    w.tagged(f)?;
                }
                w.tagged(f)?;
            }
            w.tagged(f)
        }
        ApiKey::OffsetFetch => {
            let f = v >= 6;
            w.string(f)?; // group_id
            for _ in 0..w.array(f, str_min(f) + arr_min(f) + tag_min(f))? {
                w.string(f)?; // name
                let n = w.array(f, 4)?;
                w.skip(n * 4)?; // partition_indexes
                w.tagged(f)?;
            }
            if v >= 7 {
                w.skip(1)?; // require_stable
            }
            w.tagged(f)
        }
        ApiKey::ListGroups => {
            let f = v >= 3;
            if v >= 4 {
                for _ in 0..w.array(f, str_min(f))? {
                    w.string(f)?; // states_filter
                }
            }
            w.tagged(f)
        }
        ApiKey::DescribeGroups => {
            let f = v >= 5;
            for _ in 0..w.array(f, str_min(f))? {
                w.string(f)?; // groups
            }
            if v >= 3 {
                w.skip(1)?; // include_authorized_operations
            }
            w.tagged(f)
        }
        ApiKey::DeleteGroups => {
            let f = v >= 2;
            for _ in 0..w.array(f, str_min(f))? {
                w.string(f)?; // groups_names
            }
            w.tagged(f)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{
        create_topics_request, delete_topics_request, fetch_request, join_group_request, leave_group_request,
        list_offsets_request, metadata_request, offset_commit_request, offset_fetch_request, produce_request,
        sync_group_request, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
        DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
        JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest,
        OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, SyncGroupRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;
    use crate::server::APIS;

    fn name(n: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(n))
    }

    /// A request of `key` at `v` with every array populated (two elements where it matters).
    fn populated(key: ApiKey, v: i16) -> Option<BytesMut> {
        let mut buf = BytesMut::new();
        match key {
            ApiKey::Produce => {
                let part = |i| {
                    produce_request::PartitionProduceData::default()
                        .with_index(i)
                        .with_records(Some(Bytes::from_static(b"0123456789")))
                };
                let topic = produce_request::TopicProduceData::default()
                    .with_name(name("t"))
                    .with_partition_data(vec![part(0), part(1)]);
                let req = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![topic.clone(), topic.with_name(name("u"))]);
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::Fetch => {
                let mut part = fetch_request::FetchPartition::default()
                    .with_fetch_offset(5)
                    .with_partition_max_bytes(99);
                if v >= 9 {
                    part = part.with_current_leader_epoch(3);
                }
                let topic = fetch_request::FetchTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![part.clone(), part]);
                let mut req =
                    FetchRequest::default().with_max_wait_ms(10).with_topics(vec![topic.clone(), topic]);
                if v >= 7 {
                    req = req.with_session_id(1).with_session_epoch(2).with_forgotten_topics_data(vec![
                        fetch_request::ForgottenTopic::default()
                            .with_topic(name("x"))
                            .with_partitions(vec![1, 2]),
                    ]);
                }
                if v >= 11 {
                    req = req.with_rack_id(StrBytes::from_static_str("rack"));
                }
                if v >= 12 {
                    req = req.with_cluster_id(Some(StrBytes::from_static_str("cluster")));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::ListOffsets => {
                let part = list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1);
                let topic = list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![part.clone(), part]);
                ListOffsetsRequest::default()
                    .with_topics(vec![topic.clone(), topic])
                    .encode(&mut buf, v)
                    .ok()?;
            }
            ApiKey::Metadata => {
                let topic = metadata_request::MetadataRequestTopic::default().with_name(Some(name("t")));
                MetadataRequest::default()
                    .with_topics(Some(vec![topic.clone(), topic]))
                    .encode(&mut buf, v)
                    .ok()?;
            }
            ApiKey::CreateTopics => {
                let assignment = create_topics_request::CreatableReplicaAssignment::default()
                    .with_partition_index(0)
                    .with_broker_ids(vec![1.into(), 2.into()]);
                let config = create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")));
                let topic = create_topics_request::CreatableTopic::default()
                    .with_name(name("t"))
                    .with_num_partitions(-1)
                    .with_assignments(vec![assignment.clone(), assignment])
                    .with_configs(vec![config.clone(), config]);
                CreateTopicsRequest::default()
                    .with_topics(vec![topic.clone(), topic])
                    .with_timeout_ms(5)
                    .with_validate_only(v >= 1)
                    .encode(&mut buf, v)
                    .ok()?;
            }
            ApiKey::DeleteTopics => {
                let req = if v >= 6 {
                    let t = delete_topics_request::DeleteTopicState::default().with_name(Some(name("t")));
                    DeleteTopicsRequest::default().with_topics(vec![t.clone(), t])
                } else {
                    DeleteTopicsRequest::default().with_topic_names(vec![name("t"), name("u")])
                };
                req.with_timeout_ms(5).encode(&mut buf, v).ok()?;
            }
            ApiKey::FindCoordinator => {
                let mut req = FindCoordinatorRequest::default();
                if v >= 4 {
                    req = req.with_coordinator_keys(vec![sb("g1"), sb("g2")]);
                } else {
                    req = req.with_key(sb("g1"));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::JoinGroup => {
                let p = join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(sb("range"))
                    .with_metadata(Bytes::from_static(b"sub"));
                let mut req = JoinGroupRequest::default()
                    .with_group_id(group("g"))
                    .with_session_timeout_ms(10)
                    .with_member_id(sb("m"))
                    .with_protocol_type(sb("consumer"))
                    .with_protocols(vec![p.clone(), p]);
                if v >= 1 {
                    req = req.with_rebalance_timeout_ms(20);
                }
                if v >= 5 {
                    req = req.with_group_instance_id(Some(sb("i")));
                }
                if v >= 8 {
                    req = req.with_reason(Some(sb("why")));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::SyncGroup => {
                let a = sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(sb("m"))
                    .with_assignment(Bytes::from_static(b"parts"));
                let mut req = SyncGroupRequest::default()
                    .with_group_id(group("g"))
                    .with_generation_id(3)
                    .with_member_id(sb("m"))
                    .with_assignments(vec![a.clone(), a]);
                if v >= 3 {
                    req = req.with_group_instance_id(Some(sb("i")));
                }
                if v >= 5 {
                    req = req.with_protocol_type(Some(sb("consumer"))).with_protocol_name(Some(sb("range")));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::Heartbeat => {
                let mut req = HeartbeatRequest::default()
                    .with_group_id(group("g"))
                    .with_generation_id(3)
                    .with_member_id(sb("m"));
                if v >= 3 {
                    req = req.with_group_instance_id(Some(sb("i")));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::LeaveGroup => {
                let mut req = LeaveGroupRequest::default().with_group_id(group("g"));
                if v >= 3 {
                    let mut m = leave_group_request::MemberIdentity::default()
                        .with_member_id(sb("m"))
                        .with_group_instance_id(Some(sb("i")));
                    if v >= 5 {
                        m = m.with_reason(Some(sb("bye")));
                    }
                    req = req.with_members(vec![m.clone(), m]);
                } else {
                    req = req.with_member_id(sb("m"));
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::OffsetCommit => {
                let mut p = offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(7)
                    .with_committed_metadata(Some(sb("meta")));
                if v >= 6 {
                    p = p.with_committed_leader_epoch(2);
                }
                let t = offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![p.clone(), p]);
                let mut req = OffsetCommitRequest::default()
                    .with_group_id(group("g"))
                    .with_generation_id_or_member_epoch(3)
                    .with_member_id(sb("m"))
                    .with_topics(vec![t.clone(), t]);
                if v >= 7 {
                    req = req.with_group_instance_id(Some(sb("i")));
                }
                if v <= 4 {
                    req = req.with_retention_time_ms(-1);
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::OffsetFetch => {
                let t = offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("t"))
                    .with_partition_indexes(vec![0, 1]);
                let mut req = OffsetFetchRequest::default()
                    .with_group_id(group("g"))
                    .with_topics(Some(vec![t.clone(), t]));
                if v >= 7 {
                    req = req.with_require_stable(true);
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::ListGroups => {
                let mut req = ListGroupsRequest::default();
                if v >= 4 {
                    req = req.with_states_filter(vec![sb("Stable"), sb("Empty")]);
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::DescribeGroups => {
                let mut req = DescribeGroupsRequest::default().with_groups(vec![group("g"), group("h")]);
                if v >= 3 {
                    req = req.with_include_authorized_operations(true);
                }
                req.encode(&mut buf, v).ok()?;
            }
            ApiKey::DeleteGroups => {
                DeleteGroupsRequest::default()
                    .with_groups_names(vec![group("g"), group("h")])
                    .encode(&mut buf, v)
                    .ok()?;
            }
            _ => return None,
        }
        Some(buf)
    }

    fn sb(v: &'static str) -> StrBytes {
        StrBytes::from_static_str(v)
    }

    fn group(v: &'static str) -> GroupId {
        GroupId(StrBytes::from_static_str(v))
    }

    /// Every advertised version of every walked request, as the codec encodes it, passes the
    /// walk and fills its frame exactly (the walk follows the codec's schema).
    #[test]
    fn accepts_every_advertised_version_exactly() {
        let mut walked = 0;
        for (key, min, max) in APIS {
            // Produce v0–v2 are not the codec's (see `legacy`).
            let min = if *key == ApiKey::Produce { 3 } else { *min };
            for v in min..=*max {
                let Some(body) = populated(*key, v) else {
                    assert!(
                        matches!(
                            key,
                            ApiKey::ApiVersions
                                | ApiKey::InitProducerId
                                | ApiKey::SaslHandshake
                                | ApiKey::SaslAuthenticate
                        ),
                        "{key:?} v{v} did not encode"
                    );
                    continue;
                };
                assert_eq!(walk(*key, v, &body), Ok(0), "{key:?} v{v}");
                // One byte short must fail (the last field is cut); ListGroups v0–v2 is empty.
                if !body.is_empty() {
                    assert!(walk(*key, v, &body[..body.len() - 1]).is_err(), "{key:?} v{v} truncated");
                }
                walked += 1;
            }
        }
        assert!(walked > 90, "{walked}");
    }

    /// A Metadata request claiming two billion topics in a few bytes is refused before decoding.
    #[test]
    fn refuses_huge_array_counts() {
        let body = [0x7f, 0xff, 0xff, 0xff, 1];
        assert!(check(ApiKey::Metadata, 4, &body).is_err());
        // Compact (flexible) form: count 2^32 - 2.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        assert!(check(ApiKey::Metadata, 9, &body).is_err());
        // Nested: a Fetch with one topic holding a huge partition array.
        let mut fetch = vec![0u8; 17 + 8];
        fetch.extend_from_slice(&1i32.to_be_bytes());
        fetch.extend_from_slice(&1i16.to_be_bytes());
        fetch.push(b't');
        fetch.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(check(ApiKey::Fetch, 7, &fetch).is_err());
    }

    /// Truncated bodies and negative lengths are refused, never panic.
    #[test]
    fn refuses_truncated_and_negative() {
        assert!(check(ApiKey::Produce, 3, &[0xff, 0xff, 0, 1]).is_err());
        assert!(check(ApiKey::DeleteTopics, 1, &[0xff, 0xff, 0xff, 0xfe]).is_err());
        for key in
            [ApiKey::Produce, ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::Metadata, ApiKey::CreateTopics]
        {
            for v in 0..13 {
                for len in 0..40 {
                    let body: Vec<u8> = (0..len).map(|i| (i * 37 + v as usize) as u8).collect();
                    let _ = check(key, v, &body);
                }
            }
        }
    }
}
