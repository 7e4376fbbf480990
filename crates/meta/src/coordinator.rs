//! The consumer-group coordinator of Kafka's classic protocol, as a deterministic machine:
//! requests and `tick(now)` in, responses and proposals out. No clock, no I/O.
//!
//! One node coordinates all groups at a time: the metadata group's leader (FindCoordinator
//! answers it). What must outlive that node is in the replicated [`GroupsState`]; this
//! machine holds what does not need to: the members' subscriptions, heartbeat times and the
//! requests parked during a rebalance. A node that becomes coordinator loads each group from
//! the replicated state the first time it is asked about it, with every member's session
//! restarted, so members of a stable group keep their generation and assignment across a
//! coordinator change without a rebalance.
//!
//! ```text
//!              join (any member)            all members rejoined, or rebalance timeout
//!   Empty/Stable ───────────► Preparing ───────────────────────────► Proposing
//!        ▲                        ▲                                     │ Generation{expected → +1}
//!        │ Assign committed       │ join, leave, session expiry         ▼ committed: join answers
//!        └─────────────── Completing ◄──────────────────────────────────┘ (leader gets members)
//!                            leader's sync → Assign{generation} ─Raft─►
//! ```
//!
//! Safety does not rest on there being one coordinator: a generation is a compare-and-set in
//! the state machine and offsets are fenced there by generation and member, so a deposed
//! coordinator's proposals are refused ([`GroupError::StaleGeneration`]) and it drops the
//! group ([`Coordinator::step_down`], or on that refusal).

use std::collections::BTreeMap;

use crate::group::{
    check_group_name, GroupCommand, GroupError, GroupMember, GroupOutcome, GroupsState,
    GROUP_ASSIGNMENT_BYTES_MAX, GROUP_MEMBERS_LEN_MAX, MEMBER_TEXT_BYTES_MAX, PROTOCOL_NAME_BYTES_MAX,
};

/// Identifies a parked request; the driver maps it to a connection.
pub type RequestId = u64;

/// Most groups held in memory; a group beyond it is refused until others empty out.
pub const LIVE_GROUPS_MAX: usize = 4096;
/// Most protocols one member may offer.
pub const MEMBER_PROTOCOLS_MAX: usize = 16;
/// A member's subscription bytes per protocol (kept in memory only).
pub const PROTOCOL_METADATA_BYTES_MAX: usize = 16 * 1024;

/// Timeouts the coordinator accepts and uses (Kafka's broker settings of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: u32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: u32,
    /// `group.initial.rebalance.delay.ms`: an empty group waits this long for more members
    /// before its first generation, so a fleet starting together gets one rebalance.
    pub initial_rebalance_delay_ms: u64,
}

impl CoordinatorConfig {
    /// The default `session_timeout_ms_min`.
    pub const SESSION_TIMEOUT_MS_MIN_DEFAULT: u32 = 1_000;
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        // Kafka's minimum is 6 s; clients' default session timeout is 45 s. 1 s lets tests and
        // the lab exercise expiry quickly without admitting absurd values.
        Self {
            session_timeout_ms_min: Self::SESSION_TIMEOUT_MS_MIN_DEFAULT,
            session_timeout_ms_max: 300_000,
            initial_rebalance_delay_ms: 500,
        }
    }
}

/// Errors the group APIs answer; each maps to one Kafka error code.
///
/// Requests, answers and codes are serializable: a node's sink workers reach the coordinator
/// (the metadata leader) over the peer transport with them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupCode {
    NotCoordinator,
    CoordinatorNotAvailable,
    InvalidGroupId,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    /// JoinGroup v4+: the new member must rejoin with this id.
    MemberIdRequired(String),
    GroupMaxSizeReached,
    /// A request the protocol does not allow (an assignment too large, a bad field).
    InvalidRequest(String),
    /// A new coordinator is still catching up with the replicated state.
    CoordinatorLoadInProgress,
    /// DeleteGroups / DescribeGroups of a group that does not exist.
    GroupIdNotFound,
    /// DeleteGroups of a group with members.
    NonEmptyGroup,
    /// Committed offsets refused or failed for a reason no other code names.
    Internal(String),
}

/// One member id of a LeaveGroup, and whether it left.
pub type MemberLeft = (String, Result<(), GroupCode>);

/// One member offer of protocols: `(assignor name, subscription bytes)`.
pub type Protocols = Vec<(String, Vec<u8>)>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Protocols,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new member first gets `MemberIdRequired` and rejoins with its id.
    pub require_known_member: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    Join(JoinRequest),
    Sync { group: String, generation: i32, member_id: String, assignments: Vec<(String, Vec<u8>)> },
    Heartbeat { group: String, generation: i32, member_id: String },
    Leave { group: String, member_ids: Vec<String> },
}

/// A JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// The leader alone gets every member with its subscription for the chosen protocol.
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Response {
    Join(Result<Joined, GroupCode>),
    /// `(protocol type, protocol, this member's assignment)`.
    Sync(Result<(String, String, Vec<u8>), GroupCode>),
    Heartbeat(Result<(), GroupCode>),
    /// Per member id given.
    Leave(Result<Vec<MemberLeft>, GroupCode>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Respond {
        request: RequestId,
        response: Response,
    },
    /// Propose this command; report the result with [`Coordinator::proposed`] and `token`.
    Propose {
        token: u64,
        command: GroupCommand,
    },
}

/// Why a proposal did not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalFailure {
    /// Committed and refused by the state machine.
    Refused(GroupError),
    /// Not committed (no leader, timeout, busy): the outcome is unknown.
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// No members (the generation may be past 0).
    Empty,
    /// Waiting for members to (re)join until `deadline_ms`.
    Preparing {
        deadline_ms: u64,
    },
    /// The next generation is proposed with these members, assignor and leader.
    Proposing {
        token: u64,
        members: Vec<String>,
        protocol: String,
        leader: String,
    },
    /// The generation is committed; waiting for the leader's assignment.
    Completing {
        deadline_ms: u64,
        proposing: Option<u64>,
    },
    Stable,
}

#[derive(Clone, Debug)]
struct LiveMember {
    spec: GroupMember,
    /// Empty for a member loaded from the replicated state: it offers again when it rejoins.
    protocols: Protocols,
    last_heard_ms: u64,
    join: Option<RequestId>,
    sync: Option<RequestId>,
}

#[derive(Clone, Debug)]
struct LiveGroup {
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    phase: Phase,
    members: BTreeMap<String, LiveMember>,
    /// Ids handed out with `MemberIdRequired`, and when they lapse unless used.
    pending: BTreeMap<String, u64>,
}

impl LiveGroup {
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members.values().map(|m| u64::from(m.spec.rebalance_timeout_ms)).max().unwrap_or(0)
    }
}

/// The coordinator of every group this node coordinates.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    /// Makes member ids unique across coordinators (the node's Raft id).
    node: u64,
    groups: BTreeMap<String, LiveGroup>,
    next_token: u64,
    next_member: u64,
    /// Tokens of proposals in flight, to their group.
    proposals: BTreeMap<u64, String>,
    effects: Vec<Effect>,
}

fn protocol_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= PROTOCOL_NAME_BYTES_MAX && !s.chars().any(char::is_control)
}

impl Coordinator {
    pub fn new(node: u64, config: CoordinatorConfig) -> Self {
        Coordinator {
            config,
            node,
            groups: BTreeMap::new(),
            next_token: 1,
            next_member: 1,
            proposals: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// Effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The group's state as Kafka names it (`Empty`, `PreparingRebalance`,
    /// `CompletingRebalance`, `Stable`, `Dead` for an unknown group), from memory when the
    /// group is live here, else from the replicated state.
    pub fn state_name(&self, group: &str, persisted: &GroupsState) -> &'static str {
        if let Some(g) = self.groups.get(group) {
            return match g.phase {
                Phase::Empty => "Empty",
                Phase::Preparing { .. } | Phase::Proposing { .. } => "PreparingRebalance",
                Phase::Completing { .. } => "CompletingRebalance",
                Phase::Stable => "Stable",
            };
        }
        persisted_state_name(group, persisted)
    }

    /// A live member's subscription for the group's protocol (DescribeGroups shows it);
    /// empty when the member has not joined this coordinator.
    pub fn member_metadata(&self, group: &str, member: &str) -> Vec<u8> {
        let Some(g) = self.groups.get(group) else { return Vec::new() };
        let Some(m) = g.members.get(member) else { return Vec::new() };
        m.protocols.iter().find(|(p, _)| *p == g.protocol).map(|(_, b)| b.clone()).unwrap_or_default()
    }

    /// Groups held in memory (for metrics and tests).
    pub fn live_groups(&self) -> usize {
        self.groups.len()
    }

    fn respond(&mut self, request: RequestId, response: Response) {
        self.effects.push(Effect::Respond { request, response });
    }

    fn propose(&mut self, group: &str, command: GroupCommand) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.proposals.insert(token, group.to_string());
        self.effects.push(Effect::Propose { token, command });
        token
    }

    /// This node no longer coordinates: every parked request is answered `NotCoordinator`
    /// (clients find the new coordinator and retry) and nothing is kept.
    pub fn step_down(&mut self) {
        let groups = std::mem::take(&mut self.groups);
        for g in groups.into_values() {
            self.abandon(g, GroupCode::NotCoordinator);
        }
        self.proposals.clear();
    }

    fn abandon(&mut self, g: LiveGroup, code: GroupCode) {
        for m in g.members.into_values() {
            if let Some(r) = m.join {
                self.respond(r, Response::Join(Err(code.clone())));
            }
            if let Some(r) = m.sync {
                self.respond(r, Response::Sync(Err(code.clone())));
            }
        }
    }

    /// Loads `name` from the replicated state unless it is live already.
    fn load(&mut self, now_ms: u64, name: &str, persisted: &GroupsState) -> Result<(), GroupCode> {
        if self.groups.contains_key(name) {
            return Ok(());
        }
        if self.groups.len() >= LIVE_GROUPS_MAX {
            return Err(GroupCode::CoordinatorNotAvailable);
        }
        let g = match persisted.group(name) {
            Some(p) => {
                let members: BTreeMap<String, LiveMember> = p
                    .members
                    .values()
                    .map(|m| {
                        let live = LiveMember {
                            spec: m.clone(),
                            protocols: Vec::new(),
                            last_heard_ms: now_ms,
                            join: None,
                            sync: None,
                        };
                        (m.id.clone(), live)
                    })
                    .collect();
                let phase = if members.is_empty() {
                    Phase::Empty
                } else if p.assigned {
                    Phase::Stable
                } else {
                    let timeout =
                        members.values().map(|m| u64::from(m.spec.rebalance_timeout_ms)).max().unwrap_or(0);
                    Phase::Completing { deadline_ms: now_ms + timeout, proposing: None }
                };
                LiveGroup {
                    generation: p.generation,
                    protocol_type: p.protocol_type.clone(),
                    protocol: p.protocol.clone(),
                    leader: p.leader.clone(),
                    phase,
                    members,
                    pending: BTreeMap::new(),
                }
            }
            None => LiveGroup {
                generation: 0,
                protocol_type: String::new(),
                protocol: String::new(),
                leader: String::new(),
                phase: Phase::Empty,
                members: BTreeMap::new(),
                pending: BTreeMap::new(),
            },
        };
        self.groups.insert(name.to_string(), g);
        Ok(())
    }

    /// Handles one request. Its answer comes as an [`Effect::Respond`] with `id`, now or once
    /// the rebalance it waits for completes.
    pub fn request(&mut self, now_ms: u64, id: RequestId, request: Request, persisted: &GroupsState) {
        let group = match &request {
            Request::Join(j) => j.group.clone(),
            Request::Sync { group, .. } | Request::Heartbeat { group, .. } | Request::Leave { group, .. } => {
                group.clone()
            }
        };
        let fail = |code: GroupCode| match &request {
            Request::Join(_) => Response::Join(Err(code)),
            Request::Sync { .. } => Response::Sync(Err(code)),
            Request::Heartbeat { .. } => Response::Heartbeat(Err(code)),
            Request::Leave { .. } => Response::Leave(Err(code)),
        };
        if check_group_name(&group).is_err() {
            let r = fail(GroupCode::InvalidGroupId);
            return self.respond(id, r);
        }
        if let Err(code) = self.load(now_ms, &group, persisted) {
            let r = fail(code);
            return self.respond(id, r);
        }
        match request {
            Request::Join(j) => self.join(now_ms, id, j),
            Request::Sync { group, generation, member_id, assignments } => {
                self.sync(now_ms, id, &group, generation, &member_id, assignments)
            }
            Request::Heartbeat { group, generation, member_id } => {
                let r = self.heartbeat(now_ms, &group, generation, &member_id);
                self.respond(id, Response::Heartbeat(r));
            }
            Request::Leave { group, member_ids } => self.leave(now_ms, id, &group, &member_ids),
        }
        self.settle(now_ms, &group);
    }

    fn join(&mut self, now_ms: u64, id: RequestId, j: JoinRequest) {
        let group = j.group.clone();
        let reply = |c: &mut Self, code| c.respond(id, Response::Join(Err(code)));
        let cfg = self.config;
        if !(cfg.session_timeout_ms_min..=cfg.session_timeout_ms_max).contains(&j.session_timeout_ms)
            || j.rebalance_timeout_ms == 0
        {
            return reply(self, GroupCode::InvalidSessionTimeout);
        }
        if !protocol_ok(&j.protocol_type)
            || j.protocols.is_empty()
            || j.protocols.len() > MEMBER_PROTOCOLS_MAX
            || j.protocols.iter().any(|(n, m)| !protocol_ok(n) || m.len() > PROTOCOL_METADATA_BYTES_MAX)
        {
            return reply(self, GroupCode::InconsistentGroupProtocol);
        }
        let too_long = |s: &str| s.len() > MEMBER_TEXT_BYTES_MAX || s.chars().any(char::is_control);
        if [j.member_id.as_str(), &j.client_id, &j.client_host].into_iter().any(too_long)
            || j.instance_id.as_deref().is_some_and(too_long)
        {
            return reply(self, GroupCode::InvalidRequest("an id or host is too long".into()));
        }
        let node = self.node;
        let serial = self.next_member;
        let g = self.groups.get_mut(&j.group).expect("loaded by request()");
        if !g.protocol_type.is_empty() && !g.members.is_empty() && g.protocol_type != j.protocol_type {
            return reply(self, GroupCode::InconsistentGroupProtocol);
        }
        // The member's protocols must meet every other member's (those that offered any).
        let shared = g
            .members
            .values()
            .filter(|m| m.spec.id != j.member_id && !m.protocols.is_empty())
            .all(|m| m.protocols.iter().any(|(p, _)| j.protocols.iter().any(|(q, _)| p == q)));
        if !shared {
            return reply(self, GroupCode::InconsistentGroupProtocol);
        }
        let member_id = if j.member_id.is_empty() {
            let mut prefix = j.client_id.clone();
            prefix.truncate(MEMBER_TEXT_BYTES_MAX - 48);
            let new = format!("{prefix}-{node}-{now_ms}-{serial}");
            self.next_member += 1;
            if g.members.len() + g.pending.len() >= GROUP_MEMBERS_LEN_MAX {
                return reply(self, GroupCode::GroupMaxSizeReached);
            }
            if j.require_known_member {
                g.pending.insert(new.clone(), now_ms + u64::from(j.session_timeout_ms));
                return reply(self, GroupCode::MemberIdRequired(new));
            }
            new
        } else if g.members.contains_key(&j.member_id) || g.pending.remove(&j.member_id).is_some() {
            j.member_id.clone()
        } else {
            return reply(self, GroupCode::UnknownMemberId);
        };
        if !g.members.contains_key(&member_id) && g.members.len() >= GROUP_MEMBERS_LEN_MAX {
            return reply(self, GroupCode::GroupMaxSizeReached);
        }
        let spec = GroupMember {
            id: member_id.clone(),
            instance_id: j.instance_id,
            client_id: j.client_id,
            client_host: j.client_host,
            session_timeout_ms: j.session_timeout_ms,
            rebalance_timeout_ms: j.rebalance_timeout_ms,
            assignment: Vec::new(),
        };
        let m = g.members.entry(member_id).or_insert_with(|| LiveMember {
            spec: spec.clone(),
            protocols: Vec::new(),
            last_heard_ms: now_ms,
            join: None,
            sync: None,
        });
        // A member joining twice: the earlier request is superseded (Kafka answers it too).
        let superseded = m.join.replace(id);
        let stale_sync = m.sync.take();
        m.spec = GroupMember { assignment: std::mem::take(&mut m.spec.assignment), ..spec };
        m.protocols = j.protocols;
        m.last_heard_ms = now_ms;
        if g.protocol_type.is_empty() || g.members.len() == 1 {
            g.protocol_type = j.protocol_type;
        }
        if let Some(r) = superseded {
            self.respond(r, Response::Join(Err(GroupCode::RebalanceInProgress)));
        }
        if let Some(r) = stale_sync {
            self.respond(r, Response::Sync(Err(GroupCode::RebalanceInProgress)));
        }
        self.prepare(now_ms, &group);
    }

    fn sync(
        &mut self,
        now_ms: u64,
        id: RequestId,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Vec<u8>)>,
    ) {
        let g = self.groups.get_mut(group).expect("loaded by request()");
        let Some(m) = g.members.get_mut(member_id) else {
            return self.respond(id, Response::Sync(Err(GroupCode::UnknownMemberId)));
        };
        m.last_heard_ms = now_ms;
        if generation != g.generation {
            return self.respond(id, Response::Sync(Err(GroupCode::IllegalGeneration)));
        }
        match g.phase {
            Phase::Empty | Phase::Preparing { .. } | Phase::Proposing { .. } => {
                self.respond(id, Response::Sync(Err(GroupCode::RebalanceInProgress)))
            }
            Phase::Stable => {
                let r = Ok((g.protocol_type.clone(), g.protocol.clone(), m.spec.assignment.clone()));
                self.respond(id, Response::Sync(r));
            }
            Phase::Completing { deadline_ms, proposing } => {
                if let Some(old) = m.sync.replace(id) {
                    // `self.respond` would borrow all of `self` while `g` is held.
                    let response = Response::Sync(Err(GroupCode::RebalanceInProgress));
                    self.effects.push(Effect::Respond { request: old, response });
                }
                let is_leader = member_id == g.leader;
                if !is_leader || proposing.is_some() {
                    return;
                }
                let bytes: usize = assignments.iter().map(|(_, a)| a.len()).sum();
                let unknown = assignments.iter().any(|(m, _)| !g.members.contains_key(m));
                if bytes > GROUP_ASSIGNMENT_BYTES_MAX || unknown {
                    let why = if unknown {
                        "the assignment names a member outside this generation".to_string()
                    } else {
                        format!("the assignment is {bytes} bytes, at most {GROUP_ASSIGNMENT_BYTES_MAX}")
                    };
                    if let Some(m) = g.members.get_mut(member_id) {
                        m.sync = None;
                    }
                    return self.respond(id, Response::Sync(Err(GroupCode::InvalidRequest(why))));
                }
                let command = GroupCommand::Assign { group: group.to_string(), generation, assignments };
                let token = self.propose(group, command);
                let g = self.groups.get_mut(group).expect("still live");
                g.phase = Phase::Completing { deadline_ms, proposing: Some(token) };
            }
        }
    }

    fn heartbeat(
        &mut self,
        now_ms: u64,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), GroupCode> {
        let g = self.groups.get_mut(group).expect("loaded by request()");
        let m = g.members.get_mut(member_id).ok_or(GroupCode::UnknownMemberId)?;
        m.last_heard_ms = now_ms;
        if generation != g.generation {
            return Err(GroupCode::IllegalGeneration);
        }
        match g.phase {
            Phase::Stable | Phase::Completing { .. } => Ok(()),
            Phase::Empty | Phase::Preparing { .. } | Phase::Proposing { .. } => {
                Err(GroupCode::RebalanceInProgress)
            }
        }
    }

    fn leave(&mut self, now_ms: u64, id: RequestId, group: &str, member_ids: &[String]) {
        let g = self.groups.get_mut(group).expect("loaded by request()");
        let mut results = Vec::new();
        let mut gone = Vec::new();
        for m in member_ids {
            match g.members.remove(m) {
                Some(live) => {
                    gone.push(live);
                    results.push((m.clone(), Ok(())));
                }
                None => results.push((m.clone(), Err(GroupCode::UnknownMemberId))),
            }
        }
        let any = !gone.is_empty();
        for live in gone {
            if let Some(r) = live.join {
                self.respond(r, Response::Join(Err(GroupCode::UnknownMemberId)));
            }
            if let Some(r) = live.sync {
                self.respond(r, Response::Sync(Err(GroupCode::UnknownMemberId)));
            }
        }
        self.respond(id, Response::Leave(Ok(results)));
        if any {
            self.prepare(now_ms, group);
        }
    }

    /// Starts (or keeps) a rebalance of `group`.
    fn prepare(&mut self, now_ms: u64, group: &str) {
        let initial = self.config.initial_rebalance_delay_ms;
        let Some(g) = self.groups.get_mut(group) else { return };
        let timeout = g.rebalance_timeout_ms();
        let pending_syncs: Vec<RequestId> = g.members.values_mut().filter_map(|m| m.sync.take()).collect();
        match g.phase {
            Phase::Preparing { .. } | Phase::Proposing { .. } => {}
            Phase::Empty => {
                let wait = if g.generation == 0 { initial.min(timeout) } else { 0 };
                g.phase = Phase::Preparing { deadline_ms: now_ms + wait };
            }
            Phase::Stable | Phase::Completing { .. } => {
                g.phase = Phase::Preparing { deadline_ms: now_ms + timeout };
            }
        }
        for r in pending_syncs {
            self.respond(r, Response::Sync(Err(GroupCode::RebalanceInProgress)));
        }
    }

    /// Moves `group` on if it can: a rebalance whose members all rejoined (or whose deadline
    /// passed) proposes its generation; a lapsed rebalance drops members that did not rejoin.
    fn settle(&mut self, now_ms: u64, group: &str) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let Phase::Preparing { deadline_ms } = g.phase else { return };
        let all_joined = g.members.values().all(|m| m.join.is_some());
        let first_generation_wait = g.generation == 0 && now_ms < deadline_ms;
        if !(now_ms >= deadline_ms || (all_joined && !first_generation_wait)) {
            return;
        }
        // Members that did not rejoin in time leave the group.
        g.members.retain(|_, m| m.join.is_some());
        let members: Vec<GroupMember> = g.members.values().map(|m| m.spec.clone()).collect();
        let (protocol, leader) = if members.is_empty() {
            (String::new(), String::new())
        } else {
            let protocol = choose_protocol(g.members.values());
            let leader = if g.members.contains_key(&g.leader) {
                g.leader.clone()
            } else {
                g.members.keys().next().cloned().unwrap_or_default()
            };
            (protocol, leader)
        };
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let command = GroupCommand::Generation {
            group: group.to_string(),
            expected: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: protocol.clone(),
            leader: leader.clone(),
            members,
        };
        let token = self.propose(group, command);
        self.groups.get_mut(group).expect("still live").phase =
            Phase::Proposing { token, members: ids, protocol, leader };
    }

    /// The outcome of proposal `token`; `persisted` is the replicated state after it applied
    /// (the assignment answers come from there, so they are exactly what was stored).
    pub fn proposed(
        &mut self,
        now_ms: u64,
        token: u64,
        result: Result<GroupOutcome, ProposalFailure>,
        persisted: &GroupsState,
    ) {
        let Some(group) = self.proposals.remove(&token) else { return };
        let Some(g) = self.groups.get_mut(&group) else { return };
        match (&g.phase, result) {
            (
                Phase::Proposing { token: t, members, protocol, leader },
                Ok(GroupOutcome::Generation { generation }),
            ) if *t == token => {
                let (members, protocol, leader) = (members.clone(), protocol.clone(), leader.clone());
                self.generation_committed(now_ms, &group, generation, &members, protocol, leader);
            }
            (Phase::Completing { proposing: Some(t), .. }, Ok(GroupOutcome::Assigned)) if *t == token => {
                g.phase = Phase::Stable;
                let stored = persisted.group(&group);
                let mut answers = Vec::new();
                for m in g.members.values_mut() {
                    m.spec.assignment = stored
                        .and_then(|p| p.members.get(&m.spec.id))
                        .map(|pm| pm.assignment.clone())
                        .unwrap_or_default();
                    if let Some(r) = m.sync.take() {
                        answers.push((r, m.spec.assignment.clone()));
                    }
                }
                let (pt, p) = (g.protocol_type.clone(), g.protocol.clone());
                for (r, a) in answers {
                    self.respond(r, Response::Sync(Ok((pt.clone(), p.clone(), a))));
                }
            }
            (_, Err(ProposalFailure::Refused(GroupError::StaleGeneration { .. }))) => {
                // Another coordinator moved the group: ours is stale. Answer what is parked
                // and reload from the replicated state on the next request.
                let g = self.groups.remove(&group).expect("present");
                self.abandon(g, GroupCode::NotCoordinator);
            }
            (_, Err(_)) | (_, Ok(_)) => {
                // Unknown outcome, or a refusal we did not expect: drop the live group so the
                // next request reloads it; members retry with the code Kafka clients treat
                // as "find the coordinator again".
                let g = self.groups.remove(&group).expect("present");
                self.abandon(g, GroupCode::CoordinatorNotAvailable);
            }
        }
    }

    /// Generation `generation` of `members` committed: answer their joins (the leader gets
    /// everyone's subscription). Members that joined or left while it was proposed make
    /// another rebalance start at once.
    fn generation_committed(
        &mut self,
        now_ms: u64,
        group: &str,
        generation: i32,
        members: &[String],
        protocol: String,
        leader: String,
    ) {
        let g = self.groups.get_mut(group).expect("present");
        g.generation = generation;
        g.protocol = protocol.clone();
        g.leader = leader.clone();
        if members.is_empty() {
            g.phase = Phase::Empty;
            if !g.members.is_empty() {
                self.prepare(now_ms, group);
                self.settle(now_ms, group);
            }
            return;
        }
        let timeout = g.rebalance_timeout_ms();
        g.phase = Phase::Completing { deadline_ms: now_ms + timeout, proposing: None };
        let everyone: Vec<(String, Option<String>, Vec<u8>)> = members
            .iter()
            .filter_map(|id| g.members.get(id))
            .map(|m| {
                let meta = m.protocols.iter().find(|(p, _)| *p == protocol).map(|(_, b)| b.clone());
                (m.spec.id.clone(), m.spec.instance_id.clone(), meta.unwrap_or_default())
            })
            .collect();
        let mut answers = Vec::new();
        for id in members {
            let Some(m) = g.members.get_mut(id) else { continue };
            m.last_heard_ms = now_ms;
            m.spec.assignment.clear();
            if let Some(r) = m.join.take() {
                let joined = Joined {
                    generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { everyone.clone() } else { Vec::new() },
                };
                answers.push((r, joined));
            }
        }
        let changed = g.members.len() != members.len() || g.members.keys().any(|k| !members.contains(k));
        for (r, joined) in answers {
            self.respond(r, Response::Join(Ok(joined)));
        }
        if changed {
            self.prepare(now_ms, group);
            self.settle(now_ms, group);
        }
    }

    /// Advances time: expires sessions, lapsed member ids and rebalance deadlines.
    pub fn tick(&mut self, now_ms: u64) {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let Some(g) = self.groups.get_mut(&name) else { continue };
            g.pending.retain(|_, until| *until > now_ms);
            // A member parked in a join or sync is alive by definition (Kafka keeps members
            // awaiting a sync too); any other member must keep heartbeating, also during a
            // rebalance (its heartbeats then say REBALANCE_IN_PROGRESS), so a dead member is
            // dropped after its session timeout rather than holding the rebalance for the
            // whole rebalance timeout.
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join.is_none()
                        && m.sync.is_none()
                        && now_ms >= m.last_heard_ms + u64::from(m.spec.session_timeout_ms)
                })
                .map(|m| m.spec.id.clone())
                .collect();
            let mut lapsed = false;
            if let Phase::Completing { deadline_ms, proposing: None } = g.phase {
                // The leader never sent the assignment: rebalance without the members that
                // did not sync.
                if now_ms >= deadline_ms {
                    let leader_synced = g.members.get(&g.leader).is_some_and(|m| m.sync.is_some());
                    if !leader_synced {
                        let leader = g.leader.clone();
                        g.members.remove(&leader);
                    }
                    lapsed = true;
                }
            }
            let mut dropped = Vec::new();
            for id in &expired {
                if let Some(m) = g.members.remove(id) {
                    dropped.push(m);
                }
            }
            for m in dropped {
                if let Some(r) = m.sync {
                    self.respond(r, Response::Sync(Err(GroupCode::UnknownMemberId)));
                }
            }
            if !expired.is_empty() || lapsed {
                self.prepare(now_ms, &name);
            }
            self.settle(now_ms, &name);
            // Forget groups with nothing in memory worth keeping: they reload on demand.
            if let Some(g) = self.groups.get(&name) {
                if g.phase == Phase::Empty && g.members.is_empty() && g.pending.is_empty() {
                    self.groups.remove(&name);
                }
            }
        }
    }
}

/// A group's state as the replicated state alone shows it (a node that does not coordinate
/// it, or before the coordinator loads it).
pub fn persisted_state_name(group: &str, persisted: &GroupsState) -> &'static str {
    match persisted.group(group) {
        None => "Dead",
        Some(p) if p.members.is_empty() => "Empty",
        Some(p) if p.assigned => "Stable",
        Some(_) => "CompletingRebalance",
    }
}

/// Kafka's choice: among the protocols every member offers, the one most members list first
/// (ties by name, so every coordinator chooses alike).
fn choose_protocol<'a>(members: impl Iterator<Item = &'a LiveMember> + Clone) -> String {
    let offering: Vec<&LiveMember> = members.filter(|m| !m.protocols.is_empty()).collect();
    let Some(first) = offering.first() else { return String::new() };
    let common: Vec<&String> = first
        .protocols
        .iter()
        .map(|(p, _)| p)
        .filter(|p| offering.iter().all(|m| m.protocols.iter().any(|(q, _)| q == *p)))
        .collect();
    let mut votes: BTreeMap<&String, usize> = common.iter().map(|p| (*p, 0)).collect();
    for m in &offering {
        if let Some((p, _)) = m.protocols.iter().find(|(p, _)| votes.contains_key(p)) {
            *votes.get_mut(p).expect("present") += 1;
        }
    }
    let best = votes.values().copied().max().unwrap_or(0);
    votes.into_iter().find(|(_, v)| *v == best).map(|(p, _)| p.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogState, TopicConfig, TopicSpec};
    use proptest::prelude::*;

    /// A coordinator with the replicated state beside it: proposals apply at once (or fail
    /// when `unavailable`), answers are collected by request id.
    struct Harness {
        c: Coordinator,
        state: GroupsState,
        log: LogState,
        now: u64,
        next_id: RequestId,
        answers: BTreeMap<RequestId, Response>,
        /// Requests answered more than once (must stay empty).
        twice: Vec<RequestId>,
        unavailable: bool,
    }

    impl Harness {
        fn new() -> Self {
            let mut log = LogState::default();
            let spec =
                TopicSpec { name: "t".into(), partitions: 4, replicas: 3, config: TopicConfig::default() };
            log.create_topic(1, &spec).unwrap();
            Harness {
                c: Coordinator::new(1, CoordinatorConfig::default()),
                state: GroupsState::default(),
                log,
                now: 1_000,
                next_id: 1,
                answers: BTreeMap::new(),
                twice: Vec::new(),
                unavailable: false,
            }
        }

        fn pump(&mut self) {
            loop {
                let effects = self.c.take_effects();
                if effects.is_empty() {
                    return;
                }
                for e in effects {
                    match e {
                        Effect::Respond { request, response } => {
                            if self.answers.insert(request, response).is_some() {
                                self.twice.push(request);
                            }
                        }
                        Effect::Propose { token, command } => {
                            let r = if self.unavailable {
                                Err(ProposalFailure::Unavailable)
                            } else {
                                self.state.apply(&self.log, &command).map_err(ProposalFailure::Refused)
                            };
                            self.c.proposed(self.now, token, r, &self.state);
                        }
                    }
                }
            }
        }

        fn send(&mut self, r: Request) -> RequestId {
            let id = self.next_id;
            self.next_id += 1;
            self.c.request(self.now, id, r, &self.state);
            self.pump();
            id
        }

        fn advance(&mut self, ms: u64) {
            self.now += ms;
            self.c.tick(self.now);
            self.pump();
        }

        fn join(&mut self, member: &str, protocols: &[&str]) -> RequestId {
            self.send(Request::Join(JoinRequest {
                group: "g".into(),
                member_id: member.into(),
                instance_id: None,
                protocol_type: "consumer".into(),
                protocols: protocols
                    .iter()
                    .map(|p| (p.to_string(), format!("sub-{member}").into_bytes()))
                    .collect(),
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 20_000,
                client_id: "cli".into(),
                client_host: "/127.0.0.1".into(),
                require_known_member: true,
            }))
        }

        /// A new member: MEMBER_ID_REQUIRED, then the rejoin (parked); returns (id, request).
        fn new_member(&mut self) -> (String, RequestId) {
            let r = self.join("", &["range"]);
            let Some(Response::Join(Err(GroupCode::MemberIdRequired(id)))) = self.answers.get(&r).cloned()
            else {
                panic!("expected MemberIdRequired, got {:?}", self.answers.get(&r))
            };
            let r = self.join(&id, &["range"]);
            (id, r)
        }

        fn joined(&self, r: RequestId) -> Joined {
            match self.answers.get(&r) {
                Some(Response::Join(Ok(j))) => j.clone(),
                other => panic!("request {r}: expected a join answer, got {other:?}"),
            }
        }

        fn sync(&mut self, member: &str, generation: i32, assignments: Vec<(String, Vec<u8>)>) -> RequestId {
            self.send(Request::Sync { group: "g".into(), generation, member_id: member.into(), assignments })
        }

        fn heartbeat(&mut self, member: &str, generation: i32) -> Result<(), GroupCode> {
            let r = self.send(Request::Heartbeat { group: "g".into(), generation, member_id: member.into() });
            match self.answers.get(&r) {
                Some(Response::Heartbeat(h)) => h.clone(),
                other => panic!("expected a heartbeat answer, got {other:?}"),
            }
        }

        fn assignment(&self, r: RequestId) -> Result<Vec<u8>, GroupCode> {
            match self.answers.get(&r) {
                Some(Response::Sync(s)) => s.clone().map(|(_, _, a)| a),
                other => panic!("expected a sync answer, got {other:?}"),
            }
        }

        /// Brings `members` (each with a parked join) through join and sync to a stable
        /// generation; returns it.
        fn complete(&mut self, joins: &[(String, RequestId)]) -> i32 {
            if joins.iter().any(|(_, r)| !self.answers.contains_key(r)) {
                self.advance(CoordinatorConfig::default().initial_rebalance_delay_ms);
            }
            let answers: Vec<Joined> = joins.iter().map(|(_, r)| self.joined(*r)).collect();
            let generation = answers[0].generation;
            let leader = answers[0].leader.clone();
            let assignments: Vec<(String, Vec<u8>)> =
                joins.iter().map(|(m, _)| (m.clone(), format!("parts-of-{m}").into_bytes())).collect();
            let mut syncs = Vec::new();
            for (m, _) in joins.iter().filter(|(m, _)| *m != leader) {
                syncs.push((m.clone(), self.sync(m, generation, Vec::new())));
            }
            syncs.push((leader.clone(), self.sync(&leader, generation, assignments)));
            for (m, r) in syncs {
                assert_eq!(self.assignment(r), Ok(format!("parts-of-{m}").into_bytes()));
            }
            generation
        }

        fn commit(&mut self, generation: i32, member: &str) -> Result<GroupOutcome, GroupError> {
            let c = GroupCommand::CommitOffsets {
                group: "g".into(),
                generation,
                member: member.into(),
                offsets: vec![crate::group::OffsetSpec {
                    topic: "t".into(),
                    partition: 0,
                    offset: 5,
                    leader_epoch: -1,
                    metadata: String::new(),
                }],
                commit_ms: 0,
            };
            self.state.apply(&self.log, &c)
        }
    }

    /// Two members join (each first told its member id), wait out the initial delay together,
    /// and get one generation: the leader alone sees both subscriptions, and each member gets
    /// the assignment the leader sent, as stored in the replicated state.
    #[test]
    fn two_members_join_sync_and_heartbeat() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        assert!(!h.answers.contains_key(&a.1), "the first generation waits for the initial delay");
        h.advance(500);
        let (ja, jb) = (h.joined(a.1), h.joined(b.1));
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.leader, a.0);
        assert_eq!(ja.protocol, "range");
        assert_eq!(ja.members.len(), 2);
        assert_eq!(ja.members[1].2, format!("sub-{}", b.0).into_bytes());
        assert!(jb.members.is_empty());
        assert_eq!(h.heartbeat(&b.0, 1), Ok(()), "heartbeats are fine while completing");
        let generation = h.complete(&[a.clone(), b.clone()]);
        assert_eq!(generation, 1);
        let stored = h.state.group("g").unwrap();
        assert!(stored.assigned);
        assert_eq!(stored.members[&b.0].assignment, format!("parts-of-{}", b.0).into_bytes());
        assert_eq!(h.heartbeat(&a.0, 1), Ok(()));
        assert_eq!(h.heartbeat(&a.0, 0), Err(GroupCode::IllegalGeneration));
        assert_eq!(h.heartbeat("stranger", 1), Err(GroupCode::UnknownMemberId));
        assert!(h.twice.is_empty());
    }

    /// A third member joining makes the others' heartbeats say REBALANCE_IN_PROGRESS; once
    /// they rejoin, generation 2 has all three and the old generation's commits are refused.
    #[test]
    fn a_join_rebalances_and_fences_the_old_generation() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.complete(&[a.clone(), b.clone()]);
        let c = h.new_member();
        assert_eq!(h.heartbeat(&a.0, 1), Err(GroupCode::RebalanceInProgress));
        assert!(h.commit(1, &a.0).is_ok(), "committing during the rebalance is allowed (Kafka: onRevoked)");
        let ra = h.join(&a.0, &["range"]);
        assert!(!h.answers.contains_key(&c.1), "waits for b");
        let rb = h.join(&b.0, &["range"]);
        assert_eq!(h.joined(ra).generation, 2);
        assert_eq!(h.joined(ra).members.len(), 3);
        assert!(matches!(h.commit(1, &a.0), Err(GroupError::IllegalGeneration { .. })));
        assert!(
            matches!(h.commit(2, &a.0), Err(GroupError::RebalanceInProgress { .. })),
            "no commits between a generation and its assignment"
        );
        h.complete(&[(a.0.clone(), ra), (b.0.clone(), rb), c]);
        assert!(h.commit(2, &a.0).is_ok());
    }

    /// A member that stops heartbeating is dropped after its session timeout; the others
    /// rebalance without it, and it is told UNKNOWN_MEMBER_ID.
    #[test]
    fn session_expiry_removes_a_silent_member() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.complete(&[a.clone(), b.clone()]);
        for _ in 0..3 {
            h.advance(3_000);
            assert_eq!(h.heartbeat(&a.0, 1), Ok(()));
        }
        h.advance(3_000);
        assert_eq!(h.heartbeat(&a.0, 1), Err(GroupCode::RebalanceInProgress), "b expired at 10 s");
        let ra = h.join(&a.0, &["range"]);
        let j = h.joined(ra);
        assert_eq!((j.generation, j.members.len()), (2, 1));
        assert_eq!(h.heartbeat(&b.0, 1), Err(GroupCode::UnknownMemberId));
        assert!(matches!(h.commit(1, &b.0), Err(GroupError::IllegalGeneration { .. })));
    }

    /// A member that dies during a rebalance is dropped after its session timeout (10 s),
    /// not the rebalance timeout (20 s): the others' rebalance completes without it.
    #[test]
    fn a_dead_member_does_not_hold_a_rebalance() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.complete(&[a.clone(), b.clone()]);
        let c = h.new_member();
        let ra = h.join(&a.0, &["range"]);
        // b never rejoins nor heartbeats again.
        h.advance(9_000);
        assert!(!h.answers.contains_key(&ra));
        h.advance(1_100);
        let j = h.joined(ra);
        assert_eq!((j.generation, j.members.len()), (2, 2), "{j:?}");
        assert!(h.answers.contains_key(&c.1));
    }

    /// LeaveGroup removes the member at once; the last one leaving empties the group (a new
    /// generation with no members), after which a simple consumer may commit.
    #[test]
    fn leaving_rebalances_and_the_last_leave_empties() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.complete(&[a.clone(), b.clone()]);
        let r = h.send(Request::Leave { group: "g".into(), member_ids: vec![b.0.clone(), "nobody".into()] });
        let Some(Response::Leave(Ok(results))) = h.answers.get(&r).cloned() else { panic!() };
        assert_eq!(results, vec![(b.0.clone(), Ok(())), ("nobody".into(), Err(GroupCode::UnknownMemberId))]);
        let ra = h.join(&a.0, &["range"]);
        assert_eq!(h.joined(ra).generation, 2);
        h.complete(&[(a.0.clone(), ra)]);
        h.send(Request::Leave { group: "g".into(), member_ids: vec![a.0.clone()] });
        let g = h.state.group("g").unwrap();
        assert_eq!((g.generation, g.members.len()), (3, 0));
        assert!(h.commit(-1, "").is_ok());
    }

    /// A new coordinator (the old one's node died) loads the group from the replicated state:
    /// members keep heartbeating their generation and re-syncing gets the stored assignment,
    /// with no rebalance.
    #[test]
    fn a_new_coordinator_continues_the_stable_generation() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        let generation = h.complete(&[a.clone(), b.clone()]);
        h.c = Coordinator::new(2, CoordinatorConfig::default());
        assert_eq!(h.heartbeat(&a.0, generation), Ok(()));
        let r = h.sync(&b.0, generation, Vec::new());
        assert_eq!(h.assignment(r), Ok(format!("parts-of-{}", b.0).into_bytes()));
        assert_eq!(h.state.group("g").unwrap().generation, generation);
    }

    /// Two coordinators acting on one group: the second one's generation is refused by the
    /// state machine and its waiting members are told NOT_COORDINATOR; no generation is
    /// handed out twice.
    #[test]
    fn a_deposed_coordinator_cannot_hand_out_a_generation() {
        let mut h = Harness::new();
        let a = h.new_member();
        h.complete(std::slice::from_ref(&a));
        let mut old = Coordinator::new(9, CoordinatorConfig::default());
        // The old coordinator loaded the group at generation 1 ...
        old.request(
            h.now,
            900,
            Request::Heartbeat { group: "g".into(), generation: 1, member_id: a.0.clone() },
            &h.state,
        );
        // ... then the new one moved it to generation 2.
        let ra = h.join(&a.0, &["range"]);
        assert_eq!(h.joined(ra).generation, 2);
        old.request(
            h.now,
            901,
            Request::Join(JoinRequest {
                group: "g".into(),
                member_id: a.0.clone(),
                instance_id: None,
                protocol_type: "consumer".into(),
                protocols: vec![("range".into(), Vec::new())],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 20_000,
                client_id: "cli".into(),
                client_host: "h".into(),
                require_known_member: true,
            }),
            &h.state,
        );
        let mut answered = Vec::new();
        for e in old.take_effects() {
            match e {
                Effect::Propose { token, command } => {
                    let r = h.state.apply(&h.log, &command).map_err(ProposalFailure::Refused);
                    assert!(matches!(r, Err(ProposalFailure::Refused(GroupError::StaleGeneration { .. }))));
                    old.proposed(h.now, token, r, &h.state);
                }
                Effect::Respond { request, response } => answered.push((request, response)),
            }
        }
        answered.extend(old.take_effects().into_iter().filter_map(|e| match e {
            Effect::Respond { request, response } => Some((request, response)),
            Effect::Propose { .. } => None,
        }));
        assert!(answered.contains(&(901, Response::Join(Err(GroupCode::NotCoordinator)))), "{answered:?}");
        assert_eq!(h.state.group("g").unwrap().generation, 2);
    }

    /// A leader that never sends its assignment is dropped after the rebalance timeout and
    /// the rest rebalance without it.
    #[test]
    fn a_leader_that_never_syncs_is_dropped() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.advance(500);
        let leader = h.joined(a.1).leader;
        let follower = if leader == a.0 { b.0.clone() } else { a.0.clone() };
        let rs = h.sync(&follower, 1, Vec::new());
        assert!(!h.answers.contains_key(&rs), "the follower's sync waits for the leader");
        h.advance(20_000);
        assert_eq!(h.assignment(rs), Err(GroupCode::RebalanceInProgress));
        let rj = h.join(&follower, &["range"]);
        let j = h.joined(rj);
        assert_eq!((j.generation, j.leader.as_str(), j.members.len()), (2, follower.as_str(), 1));
    }

    /// Bad joins get their Kafka codes: a session timeout out of range, protocols that do not
    /// meet the group's, an unknown member id, an invalid group id.
    #[test]
    fn bad_joins_get_their_codes() {
        let mut h = Harness::new();
        let a = h.new_member();
        h.complete(std::slice::from_ref(&a));
        let mut bad = JoinRequest {
            group: "g".into(),
            member_id: String::new(),
            instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![("roundrobin".into(), Vec::new())],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            client_id: "c".into(),
            client_host: "h".into(),
            require_known_member: false,
        };
        let code = |h: &mut Harness, j: JoinRequest| {
            let r = h.send(Request::Join(j));
            match h.answers.get(&r) {
                Some(Response::Join(Err(c))) => c.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(code(&mut h, bad.clone()), GroupCode::InconsistentGroupProtocol);
        bad.protocols = vec![("range".into(), Vec::new())];
        bad.session_timeout_ms = 10;
        assert_eq!(code(&mut h, bad.clone()), GroupCode::InvalidSessionTimeout);
        bad.session_timeout_ms = 10_000;
        bad.member_id = "ghost".into();
        assert_eq!(code(&mut h, bad.clone()), GroupCode::UnknownMemberId);
        bad.group = String::new();
        assert_eq!(code(&mut h, bad), GroupCode::InvalidGroupId);
        assert_eq!(h.heartbeat(&a.0, 1), Ok(()), "the group is untouched");
    }

    /// Stepping down answers every parked request with NOT_COORDINATOR and keeps nothing.
    #[test]
    fn step_down_answers_everything_parked() {
        let mut h = Harness::new();
        let a = h.new_member();
        let b = h.new_member();
        h.c.step_down();
        h.pump();
        for r in [a.1, b.1] {
            assert_eq!(h.answers.get(&r), Some(&Response::Join(Err(GroupCode::NotCoordinator))));
        }
        assert_eq!(h.c.live_groups(), 0);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Join(usize),
        Sync(usize),
        Heartbeat(usize),
        Leave(usize),
        Advance(u64),
        Unavailable(bool),
        NewCoordinator,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..4usize).prop_map(Step::Join),
            3 => (0..4usize).prop_map(Step::Sync),
            3 => (0..4usize).prop_map(Step::Heartbeat),
            1 => (0..4usize).prop_map(Step::Leave),
            3 => (0..12_000u64).prop_map(Step::Advance),
            1 => any::<bool>().prop_map(Step::Unavailable),
            1 => Just(Step::NewCoordinator),
        ]
    }

    proptest! {
        /// Whatever members do, and whatever happens to proposals and coordinators: no request
        /// is answered twice; every successful join names a generation the replicated state
        /// handed out to exactly that member set, with that leader; a successful sync returns
        /// the assignment stored for its member.
        #[test]
        fn answers_agree_with_the_replicated_state(steps in proptest::collection::vec(step(), 1..80)) {
            let mut h = Harness::new();
            let mut ids: Vec<String> = vec![String::new(); 4];
            let mut gens: Vec<i32> = vec![0; 4];
            // generation -> (members, leader) as committed
            let mut committed: BTreeMap<i32, (Vec<String>, String)> = BTreeMap::new();
            let mut seen = 0usize;
            for s in steps {
                match s {
                    Step::Join(i) => {
                        let r = h.join(&ids[i].clone(), &["range"]);
                        if let Some(Response::Join(Err(GroupCode::MemberIdRequired(id)))) = h.answers.get(&r) {
                            ids[i] = id.clone();
                        }
                    }
                    Step::Sync(i) => {
                        let assignments = ids.iter().filter(|m| !m.is_empty()).map(|m| (m.clone(), m.clone().into_bytes())).collect();
                        h.sync(&ids[i].clone(), gens[i], assignments);
                    }
                    Step::Heartbeat(i) => { h.send(Request::Heartbeat { group: "g".into(), generation: gens[i], member_id: ids[i].clone() }); }
                    Step::Leave(i) => { h.send(Request::Leave { group: "g".into(), member_ids: vec![ids[i].clone()] }); }
                    Step::Advance(ms) => h.advance(ms),
                    Step::Unavailable(u) => h.unavailable = u,
                    Step::NewCoordinator => { h.c.step_down(); h.pump(); h.c = Coordinator::new(7, CoordinatorConfig::default()); }
                }
                if let Some(g) = h.state.group("g") {
                    let members: Vec<String> = g.members.keys().cloned().collect();
                    committed.entry(g.generation).or_insert((members, g.leader.clone()));
                }
                prop_assert!(h.twice.is_empty(), "answered twice: {:?}", h.twice);
                let answers: Vec<Response> = h.answers.values().skip(seen).cloned().collect();
                seen = h.answers.len();
                for a in answers {
                    match a {
                        Response::Join(Ok(j)) => {
                            let (members, leader) = committed.get(&j.generation).cloned().unwrap_or_default();
                            prop_assert!(members.contains(&j.member_id), "{j:?} not in {members:?}");
                            prop_assert_eq!(&j.leader, &leader);
                            if let Some(i) = ids.iter().position(|m| *m == j.member_id) { gens[i] = j.generation; }
                        }
                        Response::Sync(Ok((_, _, a))) => {
                            prop_assert!(ids.iter().any(|m| m.as_bytes() == a.as_slice()), "assignment {a:?}");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
