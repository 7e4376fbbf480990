//! `/v1/groups`: consumer groups over HTTP, for operators and `quorumdb group`: members,
//! their assignments and the lag of every committed offset. Read from the answering node's
//! applied metadata (and, on the coordinator, the live rebalance state).

use crate::error::ApiError;
use crate::http::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorumdb_api as api;
use quorumdb_meta::group::Group;
use quorumdb_meta::Metadata;

/// Most topics and partitions decoded from one member's assignment (a bound on hostile bytes;
/// a group has at most 16 384 committed partitions anyway).
const ASSIGNMENT_ENTRIES_MAX: usize = 16_384;

/// Decodes the Kafka consumer protocol's `Assignment` (version, then `[topic, [partition]]`,
/// then user data, which is ignored). `None` when the bytes are not one.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Option<Vec<api::AssignedPartitions>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|h| i16::from_be_bytes([h[0], h[1]]))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|h| i32::from_be_bytes([h[0], h[1], h[2], h[3]]))
    }
    let mut b = bytes;
    if b.is_empty() {
        return Some(Vec::new());
    }
    let _version = i16_(&mut b)?;
    let topics = usize::try_from(i32_(&mut b)?).ok()?;
    if topics > ASSIGNMENT_ENTRIES_MAX {
        return None;
    }
    let mut out = Vec::new();
    let mut entries = 0usize;
    for _ in 0..topics {
        let len = usize::try_from(i16_(&mut b)?).ok()?;
        let topic = String::from_utf8(take(&mut b, len)?.to_vec()).ok()?;
        let n = usize::try_from(i32_(&mut b)?).ok()?;
        entries += n;
        if entries > ASSIGNMENT_ENTRIES_MAX {
            return None;
        }
        let partitions = (0..n).map(|_| i32_(&mut b)).collect::<Option<Vec<i32>>>()?;
        out.push(api::AssignedPartitions { topic, partitions });
    }
    Some(out)
}

fn offsets(metadata: &Metadata, g: &Group) -> Vec<api::GroupOffsetInfo> {
    g.offsets
        .iter()
        .map(|((topic, partition), c)| {
            let hw = metadata.log().partition(topic, *partition).map_or(0, |p| p.next_offset);
            let lag = hw.saturating_sub(u64::try_from(c.offset).unwrap_or(0));
            api::GroupOffsetInfo {
                topic: topic.clone(),
                partition: *partition,
                committed: c.offset,
                high_watermark: hw,
                lag,
                metadata: c.metadata.clone(),
                commit_ms: c.commit_ms,
            }
        })
        .collect()
}

fn state(s: &AppState, name: &str, metadata: &Metadata) -> String {
    match &s.groups {
        Some(g) => g.state_name(name),
        None => quorumdb_meta::coordinator::persisted_state_name(name, metadata.groups()).into(),
    }
}

pub(crate) async fn list_groups(State(s): State<AppState>) -> Response {
    let v = crate::http::read_view!(s);
    let groups = v
        .metadata
        .groups()
        .groups()
        .iter()
        .map(|(name, g)| api::GroupSummary {
            name: name.clone(),
            state: state(&s, name, &v.metadata),
            protocol_type: g.protocol_type.clone(),
            generation: g.generation,
            members: g.members.len(),
            lag: offsets(&v.metadata, g).iter().map(|o| o.lag).sum(),
        })
        .collect();
    (StatusCode::OK, Json(api::GroupList { groups })).into_response()
}

pub(crate) async fn describe_group(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(name)) = name else {
        return ApiError::BadRequest("invalid group name in the path".into()).into_response();
    };
    let v = crate::http::read_view!(s);
    let Some(g) = v.metadata.groups().group(&name) else {
        return ApiError::Metadata {
            code: "unknown_group",
            status: 404,
            message: format!("group {name:?} does not exist"),
        }
        .into_response();
    };
    let consumer = g.protocol_type == "consumer";
    let body = api::GroupInfo {
        name: name.clone(),
        state: state(&s, &name, &v.metadata),
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        generation: g.generation,
        leader: g.leader.clone(),
        members: g
            .members
            .values()
            .map(|m| api::GroupMemberInfo {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                assignment: if consumer {
                    decode_assignment(&m.assignment).unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
            .collect(),
        offsets: offsets(&v.metadata, g),
    };
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer-protocol assignment decodes to its topics and partitions; truncated or
    /// hostile bytes give `None`, never a panic or a huge allocation.
    #[test]
    fn assignments_decode_and_bad_bytes_do_not() {
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 6];
        b.extend_from_slice(b"orders");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0]);
        let a = decode_assignment(&b).unwrap();
        assert_eq!(a, vec![api::AssignedPartitions { topic: "orders".into(), partitions: vec![1, 3] }]);
        assert_eq!(decode_assignment(&[]), Some(Vec::new()));
        for cut in 1..b.len() - 4 {
            assert_eq!(decode_assignment(&b[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_assignment(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
    }
}
