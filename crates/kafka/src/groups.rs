//! The consumer-group APIs (Kafka's classic protocol): FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups.
//!
//! Each handler translates between the version's wire format and the coordinator's own
//! request and response types (`quorumdb_meta::coordinator`), through the [`Broker`]. Like the
//! log's handlers they never fail: every problem is an error code where the version has one.
//! Fields a version lacks stay at the codec's defaults (its encoder refuses anything else).

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use quorumdb_meta::auth::{Permission, ResourceKind};
use quorumdb_meta::coordinator::JoinRequest;

use crate::api::Ctx;
use crate::broker::{Broker, GroupCode, GroupRequest, GroupResponse, OffsetRefusal, OffsetSpec};

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;
/// FindCoordinator `key_type` of a consumer group (1 is a transaction).
const KEY_TYPE_GROUP: i8 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The Kafka error code of a group-level refusal.
pub fn group_code(c: &GroupCode) -> i16 {
    let r = match c {
        GroupCode::NotCoordinator => ResponseError::NotCoordinator,
        GroupCode::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        GroupCode::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        GroupCode::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupCode::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupCode::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupCode::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupCode::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupCode::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupCode::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupCode::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupCode::InvalidRequest(_) => ResponseError::InvalidRequest,
        GroupCode::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupCode::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupCode::Internal(_) => ResponseError::UnknownServerError,
    };
    r.code()
}

fn offset_code(r: &OffsetRefusal) -> i16 {
    match r {
        OffsetRefusal::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        OffsetRefusal::MetadataTooLarge { .. } => ResponseError::OffsetMetadataTooLarge,
        OffsetRefusal::InvalidOffset { .. } => ResponseError::InvalidRequest,
    }
    .code()
}

/// A timeout from the wire: negative values are invalid, and the coordinator refuses 0.
fn timeout(ms: i32) -> u32 {
    u32::try_from(ms).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// FindCoordinator

/// GROUP_AUTHORIZATION_FAILED.
const GROUP_AUTHORIZATION_FAILED: i16 = 30;

/// Whether the connection's principal lacks read on `group`.
fn denied<B: Broker>(cx: &Ctx<'_, B>, group: &str) -> bool {
    !cx.allowed(ResourceKind::Group, group, Permission::Read)
}

pub(crate) fn find_coordinator<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // (node id, host, port, error code, message)
    let lookup = |key: &str| -> (i32, String, i32, i16, Option<String>) {
        if req.key_type != KEY_TYPE_GROUP {
            let why = "transactions are not supported, so there is no transaction coordinator";
            return (-1, String::new(), -1, ResponseError::InvalidRequest.code(), Some(why.into()));
        }
        match cx.broker.coordinator(key) {
            Ok(b) => (b.node_id, b.host, b.port, 0, None),
            Err(c) => (-1, String::new(), -1, group_code(&c), Some(format!("{c:?}"))),
        }
    };
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let (node, host, port, code, message) = lookup(key.as_str());
                let mut c = Coordinator::default();
                c.key = key.clone();
                c.node_id = BrokerId(node);
                c.host = s(&host);
                c.port = port;
                c.error_code = code;
                c.error_message = message.as_deref().map(s);
                c
            })
            .collect();
        return r;
    }
    let (node, host, port, code, message) = lookup(req.key.as_str());
    r.node_id = BrokerId(node);
    r.host = s(&host);
    r.port = port;
    r.error_code = code;
    if version >= 1 {
        r.error_message = message.as_deref().map(s);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// JoinGroup, SyncGroup, Heartbeat, LeaveGroup

pub(crate) async fn join_group<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: JoinGroupRequest,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    if denied(cx, req.group_id.0.as_str()) {
        let mut r = JoinGroupResponse::default();
        r.error_code = GROUP_AUTHORIZATION_FAILED;
        r.generation_id = -1;
        return r;
    }
    let member_id = req.member_id.as_str().to_string();
    let join = JoinRequest {
        group: req.group_id.0.as_str().to_string(),
        member_id: member_id.clone(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.as_str().to_string(), p.metadata.to_vec())).collect(),
        session_timeout_ms: timeout(req.session_timeout_ms),
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: timeout(if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        }),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        require_known_member: version >= 4,
    };
    let answer = cx.broker.group(GroupRequest::Join(join)).await;
    let mut r = JoinGroupResponse::default();
    match answer {
        GroupResponse::Join(Ok(j)) => {
            r.generation_id = j.generation;
            if version >= 7 {
                r.protocol_type = Some(s(&j.protocol_type));
            }
            r.protocol_name = Some(s(&j.protocol));
            r.leader = s(&j.leader);
            r.member_id = s(&j.member_id);
            r.members = j
                .members
                .iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default();
                    m.member_id = s(id);
                    if version >= 5 {
                        m.group_instance_id = instance.as_deref().map(s);
                    }
                    m.metadata = Bytes::from(metadata.clone());
                    m
                })
                .collect();
        }
        other => {
            let code = match other {
                GroupResponse::Join(Err(c)) => c,
                _ => GroupCode::Internal("the coordinator answered a join with another response".into()),
            };
            r.error_code = group_code(&code);
            r.generation_id = -1;
            // v0–v6 have no null protocol name; v7+ say null on an error.
            r.protocol_name = if version >= 7 { None } else { Some(StrBytes::default()) };
            r.member_id = match &code {
                GroupCode::MemberIdRequired(id) => s(id),
                _ => s(&member_id),
            };
        }
    }
    r
}

pub(crate) async fn sync_group<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let request = GroupRequest::Sync {
        group: req.group_id.0.as_str().to_string(),
        generation: req.generation_id,
        member_id: req.member_id.as_str().to_string(),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.to_vec()))
            .collect(),
    };
    let mut r = SyncGroupResponse::default();
    if denied(cx, req.group_id.0.as_str()) {
        r.error_code = GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    match cx.broker.group(request).await {
        GroupResponse::Sync(Ok((protocol_type, protocol, assignment))) => {
            if version >= 5 {
                r.protocol_type = Some(s(&protocol_type));
                r.protocol_name = Some(s(&protocol));
            }
            r.assignment = Bytes::from(assignment);
        }
        GroupResponse::Sync(Err(c)) => r.error_code = group_code(&c),
        _ => r.error_code = ResponseError::UnknownServerError.code(),
    }
    r
}

pub(crate) async fn heartbeat<B: Broker>(cx: &Ctx<'_, B>, req: HeartbeatRequest) -> HeartbeatResponse {
    let request = GroupRequest::Heartbeat {
        group: req.group_id.0.as_str().to_string(),
        generation: req.generation_id,
        member_id: req.member_id.as_str().to_string(),
    };
    let mut r = HeartbeatResponse::default();
    if denied(cx, req.group_id.0.as_str()) {
        r.error_code = GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    r.error_code = match cx.broker.group(request).await {
        GroupResponse::Heartbeat(Ok(())) => 0,
        GroupResponse::Heartbeat(Err(c)) => group_code(&c),
        _ => ResponseError::UnknownServerError.code(),
    };
    r
}

pub(crate) async fn leave_group<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    // v0–v2 name one member; v3+ a batch (with instance ids, which we do not resolve: a
    // member leaving by instance id alone is answered UNKNOWN_MEMBER_ID).
    let ids: Vec<String> = if version >= 3 {
        req.members.iter().map(|m| m.member_id.as_str().to_string()).collect()
    } else {
        vec![req.member_id.as_str().to_string()]
    };
    let request = GroupRequest::Leave { group: req.group_id.0.as_str().to_string(), member_ids: ids };
    let mut r = LeaveGroupResponse::default();
    if denied(cx, req.group_id.0.as_str()) {
        r.error_code = GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    match cx.broker.group(request).await {
        GroupResponse::Leave(Ok(results)) => {
            if version >= 3 {
                r.members = results
                    .iter()
                    .zip(&req.members)
                    .map(|((id, result), asked)| {
                        let mut m = MemberResponse::default();
                        m.member_id = s(id);
                        m.group_instance_id = asked.group_instance_id.clone();
                        m.error_code = result.as_ref().err().map_or(0, group_code);
                        m
                    })
                    .collect();
            } else if let Some((_, Err(c))) = results.first() {
                r.error_code = group_code(c);
            }
        }
        GroupResponse::Leave(Err(c)) => r.error_code = group_code(&c),
        _ => r.error_code = ResponseError::UnknownServerError.code(),
    }
    r
}

// ---------------------------------------------------------------------------------------------
// OffsetCommit, OffsetFetch

pub(crate) async fn offset_commit<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    // Offsets of negative partitions never reach the log; everything else does, in order.
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            if let Ok(partition) = u32::try_from(p.partition_index) {
                offsets.push(OffsetSpec {
                    topic: t.name.0.as_str().to_string(),
                    partition,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map_or(String::new(), |m| m.as_str().to_string()),
                });
            }
        }
    }
    let group = req.group_id.0.as_str();
    // Kafka needs read on the group and on every topic committed to.
    let topic_denied =
        req.topics.iter().any(|t| !cx.allowed(ResourceKind::Topic, t.name.0.as_str(), Permission::Read));
    if denied(cx, group) || topic_denied {
        offsets.clear();
    }
    let result = if offsets.is_empty() && (denied(cx, group) || topic_denied) {
        Ok(Vec::new())
    } else {
        cx.broker
            .commit_offsets(group, req.generation_id_or_member_epoch, req.member_id.as_str(), offsets)
            .await
    };
    let mut results = match &result {
        Ok(r) => r.iter().map(|r| r.as_ref().err().map_or(0, offset_code)).collect::<Vec<_>>().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let group_error = if denied(cx, group) {
        Some(GROUP_AUTHORIZATION_FAILED)
    } else if topic_denied {
        Some(ResponseError::TopicAuthorizationFailed.code())
    } else {
        result.as_ref().err().map(group_code)
    };
    let mut r = OffsetCommitResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut out = OffsetCommitResponseTopic::default();
            out.name = t.name.clone();
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut op = OffsetCommitResponsePartition::default();
                    op.partition_index = p.partition_index;
                    op.error_code = if p.partition_index < 0 {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        group_error.unwrap_or_else(|| results.next().unwrap_or(0))
                    };
                    op
                })
                .collect();
            out
        })
        .collect();
    r
}

pub(crate) async fn offset_fetch<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let wanted: Option<Vec<(String, i32)>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.0.as_str().to_string(), *p)))
            .collect()
    });
    let mut r = OffsetFetchResponse::default();
    let answer = if denied(cx, req.group_id.0.as_str()) {
        Err(GROUP_AUTHORIZATION_FAILED)
    } else {
        cx.broker.fetch_offsets(req.group_id.0.as_str(), wanted.clone()).await.map_err(|c| group_code(&c))
    };
    let fetched = match answer {
        Ok(f) => f,
        Err(code) => {
            if version >= 2 {
                r.error_code = code;
            }
            // v1 has no top-level code: each asked partition carries it.
            r.topics = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partition)| {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = TopicName(s(&topic));
                    let mut p = OffsetFetchResponsePartition::default();
                    p.partition_index = partition;
                    p.committed_offset = -1;
                    p.committed_leader_epoch = -1;
                    p.metadata = Some(StrBytes::default());
                    p.error_code = if version >= 2 { 0 } else { code };
                    t.partitions = vec![p];
                    t
                })
                .collect();
            return r;
        }
    };
    let partition = |index: i32, offset: Option<&crate::broker::FetchedOffset>| {
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = index;
        p.committed_offset = offset.map_or(-1, |o| o.offset);
        if version >= 5 {
            p.committed_leader_epoch = offset.map_or(-1, |o| o.leader_epoch);
        }
        p.metadata = Some(s(offset.map_or("", |o| o.metadata.as_str())));
        p
    };
    match &req.topics {
        // Asked partitions come back in the asked order, -1 where nothing is committed.
        Some(topics) => {
            r.topics = topics
                .iter()
                .map(|t| {
                    let mut out = OffsetFetchResponseTopic::default();
                    out.name = t.name.clone();
                    out.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|i| {
                            let o =
                                fetched.iter().find(|f| f.topic == t.name.0.as_str() && f.partition == *i);
                            partition(*i, o)
                        })
                        .collect();
                    out
                })
                .collect();
        }
        None => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for f in &fetched {
                if topics.last().is_none_or(|t| t.name.0.as_str() != f.topic) {
                    let mut t = OffsetFetchResponseTopic::default();
                    t.name = TopicName(s(&f.topic));
                    topics.push(t);
                }
                if let Some(t) = topics.last_mut() {
                    t.partitions.push(partition(f.partition, Some(f)));
                }
            }
            r.topics = topics;
        }
    }
    r
}

// ---------------------------------------------------------------------------------------------
// ListGroups, DescribeGroups, DeleteGroups

pub(crate) fn list_groups<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    match cx.broker.list_groups() {
        Ok(groups) => {
            r.groups = groups
                .into_iter()
                .filter(|(group, _, state)| {
                    !denied(cx, group)
                        && (req.states_filter.is_empty()
                            || req.states_filter.iter().any(|f| f.as_str() == state))
                })
                .map(|(group, protocol_type, state)| {
                    let mut g = ListedGroup::default();
                    g.group_id = GroupId(s(&group));
                    g.protocol_type = s(&protocol_type);
                    if version >= 4 {
                        g.group_state = s(&state);
                    }
                    g
                })
                .collect();
        }
        Err(c) => r.error_code = group_code(&c),
    }
    r
}

pub(crate) fn describe_groups<B: Broker>(
    cx: &Ctx<'_, B>,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    r.groups = req
        .groups
        .iter()
        .map(|name| {
            let mut g = DescribedGroup::default();
            g.group_id = name.clone();
            g.authorized_operations = AUTHORIZED_OPERATIONS_OMITTED;
            if denied(cx, name.0.as_str()) {
                g.error_code = GROUP_AUTHORIZATION_FAILED;
                return g;
            }
            match cx.broker.describe_group(name.0.as_str()) {
                Ok(d) => {
                    g.group_state = s(&d.state);
                    g.protocol_type = s(&d.protocol_type);
                    g.protocol_data = s(&d.protocol);
                    g.members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut out = DescribedGroupMember::default();
                            out.member_id = s(&m.member_id);
                            if version >= 4 {
                                out.group_instance_id = m.instance_id.as_deref().map(s);
                            }
                            out.client_id = s(&m.client_id);
                            out.client_host = s(&m.client_host);
                            out.member_metadata = Bytes::from(m.metadata);
                            out.member_assignment = Bytes::from(m.assignment);
                            out
                        })
                        .collect();
                }
                Err(c) => g.error_code = group_code(&c),
            }
            g
        })
        .collect();
    r
}

pub(crate) async fn delete_groups<B: Broker>(
    cx: &Ctx<'_, B>,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let permitted = |g: &str| cx.allowed(ResourceKind::Group, g, Permission::Admin);
    let names: Vec<String> =
        req.groups_names.iter().map(|g| g.0.as_str().to_string()).filter(|g| permitted(g)).collect();
    let mut results = cx
        .broker
        .delete_groups(names)
        .await
        .into_iter()
        .chain(std::iter::repeat(Err(GroupCode::Internal("no answer".into()))));
    let mut r = DeleteGroupsResponse::default();
    r.results = req
        .groups_names
        .iter()
        .map(|name| {
            let mut d = DeletableGroupResult::default();
            d.group_id = name.clone();
            d.error_code = if permitted(name.0.as_str()) {
                results.next().and_then(|r| r.err()).map_or(0, |c| group_code(&c))
            } else {
                GROUP_AUTHORIZATION_FAILED
            };
            d
        })
        .collect();
    r
}
