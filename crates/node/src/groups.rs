//! Consumer groups on a node: the thin driver of the deterministic group coordinator
//! (`quorumdb_meta::coordinator`), and [`NodeBroker`], the Kafka listener's view of this node
//! (the log plus the groups).
//!
//! The metadata group's leader coordinates every group (FindCoordinator names it). The driver
//! feeds the coordinator requests, a `tick` every [`TICK_MS`], and the outcomes of the Raft
//! proposals it asks for; it answers parked requests when the coordinator says so. When this
//! node stops leading, the coordinator steps down and every parked request is answered
//! NOT_COORDINATOR, so clients find the new leader. A new leader first commits a no-op of its
//! term, so the group state it loads includes everything committed before it.
//!
//! Offset commits do not need the coordinator's memory: they are proposed directly, and the
//! state machine fences them by generation and member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorumdb_kafka::{
    Append, Appended, Broker, BrokerInfo, ClusterInfo, DescribedMember, FetchedOffset, GroupCode,
    GroupDescription, GroupRequest, GroupResponse, LogError, NewTopic, OffsetQuery, OffsetRefusal,
    OffsetSpec, Records, TopicInfo,
};
use quorumdb_meta::coordinator::{Coordinator, CoordinatorConfig, Effect, ProposalFailure, RequestId};
use quorumdb_meta::group::{GroupCommand, GroupError, GroupOutcome, OFFSETS_PER_COMMIT_MAX};
use quorumdb_meta::{Command, MetaError, Outcome, ProposeError};

use crate::log::Log;
use crate::meta::Meta;
use crate::node::Node;

/// How often the coordinator's timers (sessions, rebalance deadlines) are checked.
pub const TICK_MS: u64 = 100;
/// Longest a group request waits for its answer: the longest rebalance the coordinator allows
/// (a join waits for it) and a margin. The coordinator answers well before in every path; this
/// only bounds a bug.
const GROUP_REQUEST_WAIT_MS_MAX: u64 = 300_000 + 30_000;
/// Encoded bytes of offsets packed into one commit command (the command limit is 64 KiB).
const COMMIT_COMMAND_BYTES_TARGET: usize = 48 * 1024;
/// Proposal timeout of group commands.
const PROPOSE_TIMEOUT_MS: u64 = 10_000;

const _: () = assert!(TICK_MS * 10 <= CoordinatorConfig::SESSION_TIMEOUT_MS_MIN_DEFAULT as u64);

struct Inner {
    coordinator: Coordinator,
    waiting: HashMap<RequestId, tokio::sync::oneshot::Sender<GroupResponse>>,
    next_request: RequestId,
    /// The term in which this node, as leader, has applied its own no-op: from then on its
    /// applied group state holds everything committed before.
    ready_term: Option<u64>,
    /// The term whose no-op is being proposed.
    readying: Option<u64>,
}

/// The group coordinator of this node.
pub struct Groups {
    node: Arc<Node>,
    meta: Meta,
    inner: Mutex<Inner>,
    start: Instant,
}

impl Groups {
    pub fn start(node: Arc<Node>, meta: Meta) -> Arc<Groups> {
        let raft_id = meta.view().raft_id;
        let groups = Arc::new(Groups {
            node,
            meta,
            inner: Mutex::new(Inner {
                coordinator: Coordinator::new(raft_id, CoordinatorConfig::default()),
                waiting: HashMap::new(),
                next_request: 1,
                ready_term: None,
                readying: None,
            }),
            start: Instant::now(),
        });
        let g = Arc::downgrade(&groups);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(g) = g.upgrade() else { return };
                g.tick();
            }
        });
        groups
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the state it guards is still consistent
        // enough to answer (every path pushes effects before mutating further).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leadership bookkeeping and the coordinator's timers.
    fn tick(self: &Arc<Self>) {
        let view = self.meta.view();
        let now = self.now_ms();
        let effects = {
            let mut inner = self.lock();
            if !view.is_leader || inner.ready_term.is_some_and(|t| t != view.term) {
                if inner.ready_term.is_some() || inner.coordinator.live_groups() > 0 {
                    tracing::info!(node = self.node.id(), "group coordinator stepping down");
                }
                inner.ready_term = None;
                inner.coordinator.step_down();
            }
            if view.is_leader && inner.ready_term.is_none() && inner.readying != Some(view.term) {
                inner.readying = Some(view.term);
                let me = self.clone();
                let term = view.term;
                tokio::spawn(async move { me.become_ready(term).await });
            }
            inner.coordinator.tick(now);
            inner.coordinator.take_effects()
        };
        self.run(effects);
    }

    async fn become_ready(self: Arc<Self>, term: u64) {
        let r =
            tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), self.meta.propose(Command::Noop))
                .await;
        let view = self.meta.view();
        let mut inner = self.lock();
        inner.readying = None;
        if matches!(r, Ok(Ok(_))) && view.is_leader && view.term == term {
            tracing::info!(node = self.node.id(), term, "group coordinator ready");
            inner.ready_term = Some(term);
        }
    }

    /// Carries out the coordinator's effects: answers go to their waiters, proposals to Raft.
    fn run(self: &Arc<Self>, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Respond { request, response } => {
                    if let Some(tx) = self.lock().waiting.remove(&request) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Propose { token, command } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let result = me.propose(command).await.map_err(|e| match e {
                            ProposeError::Refused(MetaError::Group(g)) => ProposalFailure::Refused(g),
                            _ => ProposalFailure::Unavailable,
                        });
                        let view = me.meta.view();
                        let now = me.now_ms();
                        let effects = {
                            let mut inner = me.lock();
                            inner.coordinator.proposed(now, token, result, view.metadata.groups());
                            inner.coordinator.take_effects()
                        };
                        me.run(effects);
                    });
                }
            }
        }
    }

    async fn propose(&self, command: GroupCommand) -> Result<GroupOutcome, ProposeError> {
        let proposal = self.meta.propose(Command::Group(command));
        match tokio::time::timeout(Duration::from_millis(PROPOSE_TIMEOUT_MS), proposal).await {
            Ok(Ok(Outcome::Group(o))) => Ok(o),
            Ok(Ok(other)) => Err(ProposeError::Refused(MetaError::Invalid {
                what: "a group command".into(),
                why: format!("answered {other:?}"),
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProposeError::Timeout { timeout_ms: PROPOSE_TIMEOUT_MS }),
        }
    }

    /// Whether this node may coordinate now.
    fn serving(&self) -> Result<(), GroupCode> {
        let view = self.meta.view();
        if !view.is_leader {
            return Err(GroupCode::NotCoordinator);
        }
        if self.lock().ready_term != Some(view.term) {
            return Err(GroupCode::CoordinatorLoadInProgress);
        }
        Ok(())
    }

    /// JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
    pub async fn request(self: &Arc<Self>, request: GroupRequest) -> GroupResponse {
        let fail = |code: GroupCode, r: &GroupRequest| match r {
            GroupRequest::Join(_) => GroupResponse::Join(Err(code)),
            GroupRequest::Sync { .. } => GroupResponse::Sync(Err(code)),
            GroupRequest::Heartbeat { .. } => GroupResponse::Heartbeat(Err(code)),
            GroupRequest::Leave { .. } => GroupResponse::Leave(Err(code)),
        };
        if let Err(code) = self.serving() {
            return fail(code, &request);
        }
        let view = self.meta.view();
        let now = self.now_ms();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shape = fail(GroupCode::CoordinatorNotAvailable, &request);
        let effects = {
            let mut inner = self.lock();
            let id = inner.next_request;
            inner.next_request += 1;
            inner.waiting.insert(id, tx);
            inner.coordinator.request(now, id, request, view.metadata.groups());
            inner.coordinator.take_effects()
        };
        self.run(effects);
        match tokio::time::timeout(Duration::from_millis(GROUP_REQUEST_WAIT_MS_MAX), rx).await {
            Ok(Ok(r)) => r,
            // Dropped (shutdown) or a bug's timeout: a retriable answer.
            _ => shape,
        }
    }

    pub fn coordinator_raft_id(&self) -> Option<u64> {
        let view = self.meta.view();
        view.leader.as_deref().and_then(|l| self.meta.raft_id(l))
    }

    pub async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: Vec<OffsetSpec>,
    ) -> Result<Vec<Result<(), OffsetRefusal>>, GroupCode> {
        let mut results = Vec::with_capacity(offsets.len());
        let mut chunk: Vec<OffsetSpec> = Vec::new();
        let mut bytes = 0;
        let mut chunks = Vec::new();
        for o in offsets {
            let size = o.topic.len() + o.metadata.len() + 32;
            if !chunk.is_empty()
                && (chunk.len() >= OFFSETS_PER_COMMIT_MAX || bytes + size > COMMIT_COMMAND_BYTES_TARGET)
            {
                chunks.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += size;
            chunk.push(o);
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        for offsets in chunks {
            let command = GroupCommand::CommitOffsets {
                group: group.to_string(),
                generation,
                member: member.to_string(),
                offsets,
                commit_ms: self.node.wall_ms(),
            };
            match self.propose(command).await {
                Ok(GroupOutcome::Committed { results: r }) => results.extend(r),
                Ok(_) => return Err(GroupCode::Internal("a commit answered something else".into())),
                Err(e) => return Err(propose_code(e)),
            }
        }
        Ok(results)
    }

    pub fn fetch_offsets(&self, group: &str, partitions: Option<Vec<(String, i32)>>) -> Vec<FetchedOffset> {
        let view = self.meta.view();
        let Some(g) = view.metadata.groups().group(group) else { return Vec::new() };
        let fetched = |topic: &str, partition: u32| {
            g.offsets.get(&(topic.to_string(), partition)).map(|c| FetchedOffset {
                topic: topic.to_string(),
                partition: i32::try_from(partition).unwrap_or(i32::MAX),
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
            })
        };
        match partitions {
            Some(wanted) => wanted
                .iter()
                .filter_map(|(t, p)| u32::try_from(*p).ok().and_then(|p| fetched(t, p)))
                .collect(),
            None => g.offsets.keys().filter_map(|(t, p)| fetched(t, *p)).collect(),
        }
    }

    /// The group's state as Kafka names it.
    pub fn state_name(&self, group: &str) -> String {
        let view = self.meta.view();
        self.lock().coordinator.state_name(group, view.metadata.groups()).to_string()
    }

    pub fn list(&self) -> Vec<(String, String, String)> {
        let view = self.meta.view();
        let inner = self.lock();
        view.metadata
            .groups()
            .groups()
            .iter()
            .map(|(name, g)| {
                let state = inner.coordinator.state_name(name, view.metadata.groups());
                (name.clone(), g.protocol_type.clone(), state.to_string())
            })
            .collect()
    }

    pub fn describe(&self, group: &str) -> GroupDescription {
        let view = self.meta.view();
        let inner = self.lock();
        let state = inner.coordinator.state_name(group, view.metadata.groups()).to_string();
        let Some(g) = view.metadata.groups().group(group) else {
            return GroupDescription {
                group: group.to_string(),
                state,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        GroupDescription {
            group: group.to_string(),
            state,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: inner.coordinator.member_metadata(group, &m.id),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    pub async fn delete(&self, groups: Vec<String>) -> Vec<Result<(), GroupCode>> {
        let n = groups.len();
        match self.propose(GroupCommand::Delete { groups }).await {
            Ok(GroupOutcome::Deleted { results }) => results
                .into_iter()
                .map(|r| {
                    r.map_err(|e| match e {
                        GroupError::NotEmpty { .. } => GroupCode::NonEmptyGroup,
                        GroupError::UnknownGroup { .. } => GroupCode::GroupIdNotFound,
                        other => GroupCode::Internal(other.to_string()),
                    })
                })
                .collect(),
            Ok(_) => vec![Err(GroupCode::Internal("a delete answered something else".into())); n],
            Err(e) => vec![Err(propose_code(e)); n],
        }
    }
}

/// The Kafka code of a failed group proposal.
fn propose_code(e: ProposeError) -> GroupCode {
    match e {
        ProposeError::Refused(MetaError::Group(g)) => match g {
            GroupError::IllegalGeneration { .. } | GroupError::StaleGeneration { .. } => {
                GroupCode::IllegalGeneration
            }
            GroupError::UnknownMember { .. } | GroupError::UnknownGroup { .. } => GroupCode::UnknownMemberId,
            GroupError::RebalanceInProgress { .. } => GroupCode::RebalanceInProgress,
            GroupError::Invalid { .. } => GroupCode::InvalidGroupId,
            GroupError::NotEmpty { .. } => GroupCode::NonEmptyGroup,
            GroupError::Limit { .. } => GroupCode::Internal(g.to_string()),
        },
        ProposeError::Refused(other) => GroupCode::Internal(other.to_string()),
        // Transient: clients look the coordinator up again and retry (commits are idempotent).
        ProposeError::NoLeader | ProposeError::Busy { .. } | ProposeError::Timeout { .. } => {
            GroupCode::CoordinatorNotAvailable
        }
        ProposeError::TooLarge { .. } => GroupCode::InvalidRequest(e.to_string()),
    }
}

/// What the Kafka listener serves on this node: the log, and the groups.
pub struct NodeBroker {
    pub log: Arc<Log>,
    pub groups: Arc<Groups>,
}

impl Broker for NodeBroker {
    fn cluster(&self) -> ClusterInfo {
        self.log.cluster()
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.log.topics()
    }

    fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.log.topic(name)
    }

    fn auto_create_topics(&self) -> bool {
        self.log.auto_create_topics()
    }

    async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        timeout_ms: u64,
    ) -> Vec<Result<TopicInfo, LogError>> {
        self.log.create_topics(topics, validate_only, timeout_ms).await
    }

    async fn delete_topics(&self, names: Vec<String>, timeout_ms: u64) -> Vec<Result<(), LogError>> {
        self.log.delete_topics(names, timeout_ms).await
    }

    async fn produce(&self, appends: Vec<Append>, timeout_ms: u64) -> Vec<Result<Appended, LogError>> {
        self.log.produce(appends, timeout_ms).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Records, LogError> {
        self.log.read(topic, partition, offset, max_bytes).await
    }

    fn list_offset(&self, topic: &str, partition: i32, query: OffsetQuery) -> Result<(i64, i64), LogError> {
        self.log.list_offset(topic, partition, query)
    }

    async fn catch_up(&self, timeout_ms: u64) -> Result<(), LogError> {
        self.log.catch_up(timeout_ms).await
    }

    fn authentication_required(&self) -> bool {
        self.log.authentication_required()
    }

    fn authenticate_plain(&self, user: &str, password: &str) -> Result<String, String> {
        self.log.authenticate_plain(user, password)
    }

    fn authorize(
        &self,
        principal: Option<&str>,
        kind: quorumdb_meta::auth::ResourceKind,
        name: &str,
        permission: quorumdb_meta::auth::Permission,
    ) -> bool {
        self.log.authorize(principal, kind, name, permission)
    }

    async fn init_producer_id(&self, timeout_ms: u64) -> Result<(i64, i16), LogError> {
        self.log.init_producer_id(timeout_ms).await
    }

    fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.appended()
    }

    fn coordinator(&self, _group: &str) -> Result<BrokerInfo, GroupCode> {
        let id = self.groups.coordinator_raft_id().ok_or(GroupCode::CoordinatorNotAvailable)?;
        let id = i32::try_from(id).map_err(|_| GroupCode::CoordinatorNotAvailable)?;
        self.log
            .cluster()
            .brokers
            .into_iter()
            .find(|b| b.node_id == id)
            .ok_or(GroupCode::CoordinatorNotAvailable)
    }

    async fn group(&self, request: GroupRequest) -> GroupResponse {
        self.groups.request(request).await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: Vec<OffsetSpec>,
    ) -> Result<Vec<Result<(), OffsetRefusal>>, GroupCode> {
        self.groups.commit_offsets(group, generation, member, offsets).await
    }

    async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<FetchedOffset>, GroupCode> {
        Ok(self.groups.fetch_offsets(group, partitions))
    }

    fn list_groups(&self) -> Result<Vec<(String, String, String)>, GroupCode> {
        Ok(self.groups.list())
    }

    fn describe_group(&self, group: &str) -> Result<GroupDescription, GroupCode> {
        Ok(self.groups.describe(group))
    }

    async fn delete_groups(&self, groups: Vec<String>) -> Vec<Result<(), GroupCode>> {
        self.groups.delete(groups).await
    }
}
