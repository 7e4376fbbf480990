//! One member of the metadata Raft group as a sans-IO machine.
//!
//! ```text
//!   Input::Tick { now_ms } ──► raft ticks (one per tick_ms, jittered) ─┐
//!   Input::Message(m) ───────► RawNode::step ─────────────────────────┤
//!   Input::Propose { .. } ───► RawNode::propose (forwarded to leader) ─┤
//!                                                                     ▼
//!                         Ready: Send · Persist(delta) · Send(after persist) · Applied · Reply
//! ```
//!
//! Effects are ordered: a driver must make each [`Effect::Persist`] durable before it carries out
//! any effect after it (that is what lets a vote or an append acknowledgement leave the node).
//! Everything is a function of the inputs and `MetaConfig::seed`: raft-rs draws its own
//! randomized election timeout from the thread RNG, so the core pins that range to a single
//! value and randomizes by itself (a per-incarnation election timeout drawn from the seed, and
//! an extra tick now and then while not leading), which keeps runs reproducible.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::state::{Command, MetaError, Metadata, Outcome};
use crate::storage::{MetaStorage, PersistDelta};

/// Proposals one node keeps waiting for at once; more are refused as busy.
pub const PROPOSALS_PENDING_MAX: usize = 1024;
/// Log entries kept after the last snapshot before the node compacts (the default of
/// [`MetaConfig::log_entries_len_max`]).
pub const LOG_ENTRIES_LEN_MAX: usize = 512;
/// Most bytes of one encoded command (metadata commands are small; this bounds the log).
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of entries in one append message.
pub const APPEND_BYTES_MAX: u64 = 1024 * 1024;

/// How one member runs.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// Raft id, non-zero, unique in the group.
    pub id: u64,
    /// The founding voters (3 or 5) and non-voting learners; every founding member must be
    /// given the same lists.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Length of one raft tick.
    pub tick_ms: u64,
    /// Leader heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Base election timeout in ticks; each incarnation draws its own from
    /// `election_ticks..2 * election_ticks`.
    pub election_ticks: usize,
    /// How long a proposal waits for its commit before it is answered `Timeout`.
    pub proposal_timeout_ms: u64,
    /// Seeds the core's own randomness (election timeouts, tick jitter).
    pub seed: u64,
    /// Log entries kept after the last snapshot before the node compacts. The simulator sets
    /// it low so that snapshots are taken and sent in most runs.
    pub log_entries_len_max: usize,
    /// The founding members' ids, sorted (see [`member_raft_id`]). `Some`: the group's
    /// learners follow the committed layout — the leader adds every layout member that is not
    /// in the group as a learner and removes learners that left the layout. `None`: the group
    /// keeps its founding membership (the simulator's groups have no named members).
    pub founders: Option<Vec<String>>,
}

/// The raft id of metadata member `member`, stable for its lifetime: a founding member's is its
/// position among the founding members (`founders`, sorted) plus one; a member that joined
/// later gets a hash of its id in `2^24..2^31` (far above any founding position, and a
/// positive `i32` for Kafka broker ids). Every node computes the same id from the member's
/// name alone, so nothing about it needs agreeing on.
pub fn member_raft_id(founders: &[String], member: &str) -> u64 {
    if let Ok(i) = founders.binary_search_by(|f| f.as_str().cmp(member)) {
        return i as u64 + 1;
    }
    // FNV-1a, 64 bits: fixed forever (it names members in every raft log).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const LOW: u64 = 1 << 24;
    LOW + h % ((1u64 << 31) - LOW)
}

impl MetaConfig {
    /// Defaults: 50 ms ticks, heartbeats every 100 ms, elections after 0.5–1 s of silence.
    pub fn new(id: u64, voters: Vec<u64>, learners: Vec<u64>, seed: u64) -> Self {
        MetaConfig {
            id,
            voters,
            learners,
            tick_ms: 50,
            heartbeat_ticks: 2,
            election_ticks: 10,
            proposal_timeout_ms: 5_000,
            seed,
            log_entries_len_max: LOG_ENTRIES_LEN_MAX,
            founders: None,
        }
    }

    /// Lets the group's learners follow the committed layout (see [`MetaConfig::founders`]).
    pub fn with_founders(mut self, mut founders: Vec<String>) -> Self {
        founders.sort();
        founders.dedup();
        self.founders = Some(founders);
        self
    }
}

/// Why a proposal did not commit.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// Committed, and refused by the state machine on every node alike.
    #[error("{0}")]
    Refused(MetaError),
    /// No leader is known to forward to (an election is running): nothing was proposed.
    #[error("no metadata leader is known right now; retry shortly")]
    NoLeader,
    /// Not committed within the timeout. The outcome is unknown: it may still commit.
    #[error("the metadata change did not commit within {timeout_ms} ms; it may still apply")]
    Timeout { timeout_ms: u64 },
    #[error("too many metadata changes in flight (at most {max})")]
    Busy { max: usize },
    #[error("the command is too large ({bytes} bytes, at most {max})")]
    TooLarge { bytes: usize, max: usize },
}

/// An input to the machine.
#[derive(Clone, Debug)]
pub enum Input {
    Tick {
        now_ms: u64,
    },
    Message(Box<Message>),
    /// A command to commit; answered by one [`Effect::Reply`] with the same `request`.
    Propose {
        now_ms: u64,
        request: u64,
        command: Command,
    },
    /// A message to `peer` could not be delivered (connection refused, timed out): raft
    /// stops pipelining to it and probes instead.
    Unreachable {
        peer: u64,
    },
    /// A linearizable read: asks the leader for its commit index, confirmed by a quorum's
    /// heartbeat answers (raft's ReadIndex). Answered by one [`Effect::ReadIndex`]; once this
    /// member has applied up to that index, its metadata reflects every change committed
    /// before the request, whichever member committed it.
    ReadIndex {
        now_ms: u64,
        request: u64,
    },
}

/// What the driver must do, in order.
#[derive(Clone, Debug)]
pub enum Effect {
    Send {
        to: u64,
        message: Box<Message>,
    },
    /// Make durable before carrying out any later effect.
    Persist(PersistDelta),
    /// A committed entry was applied (every member emits the same sequence).
    Applied {
        index: u64,
        term: u64,
        command: Option<Command>,
        result: Result<Outcome, MetaError>,
    },
    Reply {
        request: u64,
        result: Result<Outcome, ProposeError>,
    },
    /// The answer to [`Input::ReadIndex`]: the index to apply up to before reading.
    ReadIndex {
        request: u64,
        result: Result<u64, ProposeError>,
    },
}

struct Pending {
    deadline_ms: u64,
}

/// One metadata group member.
pub struct MetaNode {
    config: MetaConfig,
    raw: RawNode<MetaStorage>,
    metadata: Metadata,
    applied: u64,
    pending: BTreeMap<u64, Pending>,
    /// Read-index requests waiting for the leader's answer, with their deadlines.
    reads: BTreeMap<u64, u64>,
    effects: Vec<Effect>,
    next_tick_ms: Option<u64>,
    rng: u64,
    /// The latest time an input brought (ticks, proposals).
    now_ms: u64,
    /// The lessor: when each lease expires by this member's clock. Only a leader acts on it,
    /// and a member that becomes leader first restarts every lease's timer (a new leader
    /// extends leases rather than expiring them early).
    expiry: BTreeMap<u64, u64>,
    /// Leases whose expiry this leader proposed, with when (proposed again after a timeout).
    expiring: BTreeMap<u64, u64>,
    was_leader: bool,
}

impl MetaNode {
    /// A founding member with an empty log.
    pub fn new(config: MetaConfig) -> Result<MetaNode, String> {
        let conf = ConfState {
            voters: config.voters.clone(),
            learners: config.learners.clone(),
            ..Default::default()
        };
        Self::restart(config, MetaStorage::new(conf))
    }

    /// A member rebuilt from its durable image (after a crash or a clean stop). The state
    /// machine restarts from the snapshot and raft replays the committed entries after it.
    pub fn restart(config: MetaConfig, storage: MetaStorage) -> Result<MetaNode, String> {
        let snapshot = storage.snapshot_ref().clone();
        let metadata = if snapshot.get_data().is_empty() {
            Metadata::new()
        } else {
            Metadata::decode(snapshot.get_data())
                .map_err(|e| format!("the metadata snapshot is corrupt: {e}"))?
        };
        let applied = snapshot.get_metadata().index;
        let mut rng = config.seed ^ 0x9e37_79b9_7f4a_7c15 ^ config.id.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let election =
            config.election_ticks + (next_random(&mut rng) % config.election_ticks as u64) as usize;
        let raft_config = raft::Config {
            id: config.id,
            election_tick: election,
            heartbeat_tick: config.heartbeat_ticks,
            // A single-value range: raft-rs would draw from the thread RNG otherwise.
            min_election_tick: election,
            max_election_tick: election + 1,
            applied,
            max_size_per_msg: APPEND_BYTES_MAX,
            max_inflight_msgs: 64,
            check_quorum: true,
            pre_vote: true,
            max_uncommitted_size: 16 * 1024 * 1024,
            ..Default::default()
        };
        raft_config.validate().map_err(|e| format!("invalid raft configuration: {e}"))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw =
            RawNode::new(&raft_config, storage, &logger).map_err(|e| format!("cannot start raft: {e}"))?;
        Ok(MetaNode {
            config,
            raw,
            metadata,
            applied,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            effects: Vec::new(),
            next_tick_ms: None,
            rng,
            now_ms: 0,
            expiry: BTreeMap::new(),
            expiring: BTreeMap::new(),
            was_leader: false,
        })
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The applied metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this member knows of (0 = none).
    pub fn leader(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The group's configuration as this member has applied it (voters and learners).
    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// The durable image as this member sees it (for tests; drivers keep their own copy).
    pub fn storage(&self) -> &MetaStorage {
        self.raw.store()
    }

    /// Feeds one input; returns the effects, in the order they must be carried out.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        if let Input::Tick { now_ms } | Input::Propose { now_ms, .. } | Input::ReadIndex { now_ms, .. } =
            &input
        {
            self.now_ms = self.now_ms.max(*now_ms);
        }
        let ticked = matches!(input, Input::Tick { .. });
        match input {
            Input::Tick { now_ms } => self.tick(now_ms),
            Input::Message(m) => {
                // A message from a member this one does not know, or for another group, is
                // dropped: raft-rs answers with an error and changes nothing.
                let _ = self.raw.step(*m);
            }
            Input::Propose { now_ms, request, command } => self.propose(now_ms, request, command),
            Input::Unreachable { peer } => self.raw.report_unreachable(peer),
            Input::ReadIndex { now_ms, request } => self.read_index(now_ms, request),
        }
        self.drain_ready();
        self.lessor(ticked);
        self.drain_ready();
        self.follow_layout();
        self.drain_ready();
        std::mem::take(&mut self.effects)
    }

    /// The leader's lease timers: restarted on winning leadership, checked on every tick;
    /// an expired lease is proposed for expiry (void if a keep-alive commits first).
    fn lessor(&mut self, ticked: bool) {
        let leader = self.is_leader();
        if leader && !self.was_leader {
            let now = self.now_ms;
            self.expiry =
                self.metadata.leases().values().map(|l| (l.id, now.saturating_add(l.ttl_ms))).collect();
            self.expiring.clear();
        }
        self.was_leader = leader;
        if !leader || !ticked {
            return;
        }
        let now = self.now_ms;
        let due: Vec<u64> = self
            .expiry
            .iter()
            .filter(|(id, deadline)| {
                **deadline <= now
                    && self
                        .expiring
                        .get(id)
                        .is_none_or(|at| now >= at.saturating_add(self.config.proposal_timeout_ms))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(lease) = self.metadata.leases().get(&id) else {
                self.expiry.remove(&id);
                continue;
            };
            let command = Command::LeaseExpire { id, renewals: lease.renewals };
            let data = postcard::to_allocvec(&command).expect("commands always encode: plain data");
            // Request 0: nobody waits for the answer.
            if self.raw.propose(self.proposal_context(0), data).is_ok() {
                self.expiring.insert(id, now);
            }
        }
    }

    /// The leader makes the group's learners follow the committed layout, one conf change at a
    /// time: a layout member that is neither voter nor learner is added as a learner (it
    /// receives every entry and does not vote); a learner that is no longer in the layout is
    /// removed. Voters stay the founding set: online voter changes are not done yet, so a
    /// voter that left the layout keeps voting. A pure function of the applied metadata and
    /// configuration, re-checked after every step, so a new leader finishes what an old one
    /// started and a lost proposal is proposed again.
    fn follow_layout(&mut self) {
        let Some(founders) = &self.config.founders else { return };
        if !self.is_leader() || self.raw.raft.has_pending_conf() || self.applied < self.commit_index() {
            return;
        }
        if self.metadata.layout().is_none() {
            return;
        }
        // Every member of a live layout, not only the newest: a leaving member must keep
        // learning the metadata until its data has streamed away and the layout it leaves
        // retired, or it could never see that it should stream (the trackers wait for it).
        let wanted: BTreeSet<u64> = self
            .metadata
            .live_layouts()
            .iter()
            .flat_map(|l| l.members.keys())
            .map(|m| member_raft_id(founders, m))
            .collect();
        let conf = self.raw.store().conf_state();
        let change = wanted
            .iter()
            .find(|id| !conf.voters.contains(id) && !conf.learners.contains(id))
            .map(|id| (ConfChangeType::AddLearnerNode, *id))
            .or_else(|| {
                conf.learners
                    .iter()
                    .find(|id| !wanted.contains(id))
                    .map(|id| (ConfChangeType::RemoveNode, *id))
            });
        if let Some((change_type, node_id)) = change {
            let mut cc = ConfChange { node_id, ..Default::default() };
            cc.set_change_type(change_type);
            // Request 0: nobody waits; a proposal that fails is made again on a later step.
            let _ = self.raw.propose_conf_change(self.proposal_context(0), cc);
        }
    }

    /// An entry's context: the proposing member and its request id, so that the member that
    /// applies its own proposal answers it (`apply_entries` reads it back).
    fn proposal_context(&self, request: u64) -> Vec<u8> {
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.config.id.to_le_bytes());
        context.extend_from_slice(&request.to_le_bytes());
        context
    }

    /// Keeps the lessor's timers in step with an applied lease command.
    fn track_lease(&mut self, command: &Command, result: &Result<Outcome, MetaError>) {
        let now = self.now_ms;
        match (command, result) {
            (_, Ok(Outcome::LeaseGranted { id, ttl_ms })) | (_, Ok(Outcome::LeaseKept { id, ttl_ms })) => {
                self.expiry.insert(*id, now.saturating_add(*ttl_ms));
                self.expiring.remove(id);
            }
            (Command::LeaseRevoke { id } | Command::LeaseExpire { id, .. }, _)
                if !self.metadata.leases().contains_key(id) =>
            {
                self.expiry.remove(id);
                self.expiring.remove(id);
            }
            _ => {}
        }
    }

    fn tick(&mut self, now_ms: u64) {
        let next = *self.next_tick_ms.get_or_insert(now_ms);
        if now_ms >= next {
            let ticks = (now_ms - next) / self.config.tick_ms + 1;
            // After a long gap (a paused process) one election timeout's worth is enough.
            for _ in 0..ticks.min(2 * self.config.election_ticks as u64) {
                self.raw.tick();
                // Jitter while not leading: an extra tick one time in four, so two members
                // whose timeouts were drawn alike still drift apart.
                if self.raw.raft.state != StateRole::Leader && next_random(&mut self.rng).is_multiple_of(4) {
                    self.raw.tick();
                }
            }
            self.next_tick_ms = Some(next + ticks * self.config.tick_ms);
        }
        let expired: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(r, _)| *r).collect();
        for request in expired {
            self.pending.remove(&request);
            let timeout_ms = self.config.proposal_timeout_ms;
            self.effects.push(Effect::Reply { request, result: Err(ProposeError::Timeout { timeout_ms }) });
        }
        let expired: Vec<u64> = self.reads.iter().filter(|(_, d)| **d <= now_ms).map(|(r, _)| *r).collect();
        for request in expired {
            self.reads.remove(&request);
            let timeout_ms = self.config.proposal_timeout_ms;
            self.effects
                .push(Effect::ReadIndex { request, result: Err(ProposeError::Timeout { timeout_ms }) });
        }
    }

    fn read_index(&mut self, now_ms: u64, request: u64) {
        let reply = |e| Effect::ReadIndex { request, result: Err(e) };
        if self.reads.len() >= PROPOSALS_PENDING_MAX {
            self.effects.push(reply(ProposeError::Busy { max: PROPOSALS_PENDING_MAX }));
            return;
        }
        // raft-rs drops a read index silently on a member that knows no leader.
        if self.leader() == 0 {
            self.effects.push(reply(ProposeError::NoLeader));
            return;
        }
        // The context names this member too: the leader keys the reads it confirms by it.
        self.raw.read_index(self.proposal_context(request));
        let deadline_ms = now_ms.saturating_add(self.config.proposal_timeout_ms);
        assert!(self.reads.insert(request, deadline_ms).is_none(), "request ids must be unique per member");
    }

    /// Answers the read-index requests raft has confirmed.
    fn answer_reads(&mut self, states: Vec<raft::ReadState>) {
        for state in states {
            let ctx = &state.request_ctx;
            if ctx.len() != 16 || ctx[..8] != self.config.id.to_le_bytes() {
                continue;
            }
            let request = u64::from_le_bytes(ctx[8..].try_into().expect("16 bytes"));
            if self.reads.remove(&request).is_some() {
                self.effects.push(Effect::ReadIndex { request, result: Ok(state.index) });
            }
        }
    }

    fn propose(&mut self, now_ms: u64, request: u64, command: Command) {
        let reply = |e| Effect::Reply { request, result: Err(e) };
        if self.pending.len() >= PROPOSALS_PENDING_MAX {
            self.effects.push(reply(ProposeError::Busy { max: PROPOSALS_PENDING_MAX }));
            return;
        }
        let data = postcard::to_allocvec(&command).expect("commands always encode: plain data");
        if data.len() > COMMAND_BYTES_MAX {
            self.effects.push(reply(ProposeError::TooLarge { bytes: data.len(), max: COMMAND_BYTES_MAX }));
            return;
        }
        match self.raw.propose(self.proposal_context(request), data) {
            Ok(()) => {
                let deadline_ms = now_ms.saturating_add(self.config.proposal_timeout_ms);
                assert!(
                    self.pending.insert(request, Pending { deadline_ms }).is_none(),
                    "request ids must be unique per member"
                );
            }
            Err(_) => self.effects.push(reply(ProposeError::NoLeader)),
        }
    }

    /// The raft-rs Ready loop, synchronous flavour: messages that need nothing durable go out
    /// first; then the snapshot, entries and hard state are persisted; then the messages that
    /// vouch for them; committed entries are applied as raft hands them over.
    fn drain_ready(&mut self) {
        while self.raw.has_ready() {
            let first_effect = self.effects.len();
            let mut rd = self.raw.ready();
            let reads = rd.take_read_states();
            self.answer_reads(reads);
            for m in rd.take_messages() {
                self.effects.push(Effect::Send { to: m.to, message: Box::new(m) });
            }
            let mut delta = PersistDelta::default();
            if !rd.snapshot().is_empty() {
                let snapshot = rd.snapshot().clone();
                self.install_snapshot(&snapshot);
                delta.snapshot = Some(snapshot);
            }
            let committed = rd.take_committed_entries();
            self.apply_entries(committed);
            if !rd.entries().is_empty() {
                delta.entries = rd.take_entries();
            }
            if let Some(hs) = rd.hs() {
                delta.hard_state = Some(hs.clone());
            }
            if !delta.is_empty() {
                let mut store_delta = delta.clone();
                // The snapshot was installed above already.
                store_delta.snapshot = None;
                self.raw.mut_store().apply(&store_delta).expect("raft hands over entries that fit the log");
                self.effects.push(Effect::Persist(delta));
            }
            for m in rd.take_persisted_messages() {
                self.effects.push(Effect::Send { to: m.to, message: Box::new(m) });
            }
            let mut light = self.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                let delta = PersistDelta { commit: Some(commit), ..Default::default() };
                self.raw.mut_store().apply(&delta).expect("a commit index always fits");
                self.effects.push(Effect::Persist(delta));
            }
            for m in light.take_messages() {
                self.effects.push(Effect::Send { to: m.to, message: Box::new(m) });
            }
            let committed = light.take_committed_entries();
            self.apply_entries(committed);
            self.raw.advance_apply();
            // A snapshot counts as sent once handed to the driver. raft-rs otherwise keeps the
            // follower in snapshot state until told; if the message is lost, the follower
            // rejects the next append and the leader sends a snapshot again.
            let snapshot_targets: Vec<u64> = self.effects[first_effect..]
                .iter()
                .filter_map(|e| match e {
                    Effect::Send { to, message } if message.get_msg_type() == MessageType::MsgSnapshot => {
                        Some(*to)
                    }
                    _ => None,
                })
                .collect();
            for to in snapshot_targets {
                self.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
            self.maybe_compact();
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) {
        match Metadata::decode(snapshot.get_data()) {
            Ok(m) => self.metadata = m,
            // A snapshot without data is the initial (empty) one.
            Err(_) if snapshot.get_data().is_empty() => self.metadata = Metadata::new(),
            Err(e) => panic!("a snapshot from the leader does not decode: {e}"),
        }
        self.applied = snapshot.get_metadata().index;
        self.raw.mut_store().install_snapshot(snapshot.clone()).expect("raft installs only newer snapshots");
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            let (command, result) = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => (None, Ok(Outcome::Nothing)),
                EntryType::EntryNormal => match postcard::from_bytes::<Command>(&entry.data) {
                    Ok(c) => {
                        let r = self.metadata.apply_at(entry.index, &c);
                        self.track_lease(&c, &r);
                        (Some(c), r)
                    }
                    Err(e) => (
                        None,
                        Err(MetaError::Invalid {
                            what: "a log entry".into(),
                            why: format!("does not decode: {e}"),
                        }),
                    ),
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    (None, self.apply_conf_change(&entry).map(|()| Outcome::Nothing))
                }
            };
            if entry.context.len() == 16 {
                let proposer = u64::from_le_bytes(entry.context[..8].try_into().expect("8 bytes"));
                let request = u64::from_le_bytes(entry.context[8..].try_into().expect("8 bytes"));
                if proposer == self.config.id && self.pending.remove(&request).is_some() {
                    let answer = result.clone().map_err(ProposeError::Refused);
                    self.effects.push(Effect::Reply { request, result: answer });
                }
            }
            self.effects.push(Effect::Applied { index: entry.index, term: entry.term, command, result });
        }
    }

    /// Applies a committed change of the group's configuration. The new configuration is kept
    /// in the storage (what raft-rs reads, and what this member's next snapshot records); it is
    /// durable as the log itself: a restart replays the committed entries after the snapshot,
    /// conf changes included. A change raft refuses (the same on every member) changes nothing.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), MetaError> {
        use protobuf::Message as _;
        let bad = |why: String| MetaError::Invalid { what: "a configuration change".into(), why };
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| bad(e.to_string()))?;
            self.raw.apply_conf_change(&cc)
        } else {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| bad(e.to_string()))?;
            self.raw.apply_conf_change(&cc)
        };
        let conf = applied.map_err(|e| bad(e.to_string()))?;
        self.raw.mut_store().set_conf_state(conf);
        Ok(())
    }

    /// Takes a snapshot at the applied index once the log holds more than
    /// `log_entries_len_max` entries, so the log (and a restart's replay) stays bounded.
    fn maybe_compact(&mut self) {
        let store = self.raw.store();
        let snap_index = store.snapshot_ref().get_metadata().index;
        if self.applied <= snap_index
            || (self.applied - snap_index) as usize <= self.config.log_entries_len_max
        {
            return;
        }
        let Ok(term) = store.term(self.applied) else { return };
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.metadata.encode().into());
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(store.conf_state().clone());
        self.raw
            .mut_store()
            .install_snapshot(snapshot.clone())
            .expect("an own snapshot at the applied index fits");
        self.effects.push(Effect::Persist(PersistDelta { snapshot: Some(snapshot), ..Default::default() }));
    }
}

/// splitmix64: a tiny, well-known generator; enough for timeouts and jitter.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Change, MemberSpec, TableDef};
    use crate::Conflict;

    fn spec(id: &str) -> MemberSpec {
        MemberSpec {
            id: id.into(),
            zone: format!("z-{id}"),
            peer_address: format!("{id}:1"),
            http_address: format!("http://{id}"),
        }
    }

    /// A lossless network of members driven in lockstep.
    struct Net {
        nodes: BTreeMap<u64, MetaNode>,
        queue: Vec<(u64, Message)>,
        now_ms: u64,
        next_request: u64,
    }

    impl Net {
        fn take(&mut self, effects: Vec<Effect>) {
            for e in effects {
                if let Effect::Send { to, message } = e {
                    self.queue.push((to, *message));
                }
            }
        }

        /// Ticks everyone and delivers messages until the network is quiet, `rounds` times.
        fn run(&mut self, rounds: usize) {
            for _ in 0..rounds {
                self.now_ms += 50;
                let ids: Vec<u64> = self.nodes.keys().copied().collect();
                for id in ids {
                    let effects = self.nodes.get_mut(&id).unwrap().step(Input::Tick { now_ms: self.now_ms });
                    self.take(effects);
                }
                while !self.queue.is_empty() {
                    for (to, m) in std::mem::take(&mut self.queue) {
                        if let Some(n) = self.nodes.get_mut(&to) {
                            let effects = n.step(Input::Message(Box::new(m)));
                            self.take(effects);
                        }
                    }
                }
            }
        }

        fn leader(&self) -> u64 {
            self.nodes.values().find(|n| n.is_leader()).map(|n| n.id()).expect("a leader")
        }

        fn propose(&mut self, command: Command) {
            let leader = self.leader();
            self.next_request += 1;
            let (now_ms, request) = (self.now_ms, self.next_request);
            let effects =
                self.nodes.get_mut(&leader).unwrap().step(Input::Propose { now_ms, request, command });
            self.take(effects);
            self.run(5);
        }
    }

    /// A layout member becomes a non-voting learner that receives later entries; leaving removes it.
    #[test]
    fn a_layout_member_joins_the_group_as_a_learner() {
        let founders: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let config = |id: u64| MetaConfig::new(id, vec![1, 2, 3], vec![], id).with_founders(founders.clone());
        let mut net = Net { nodes: BTreeMap::new(), queue: Vec::new(), now_ms: 0, next_request: 0 };
        for id in 1..=3 {
            net.nodes.insert(id, MetaNode::new(config(id)).unwrap());
        }
        net.run(60);
        let members = ["a", "b", "c"].map(spec).to_vec();
        net.propose(Command::Bootstrap { members, default_replicas: 3, tables: vec![] });
        net.propose(Command::Stage(Change::Join(spec("d"))));
        net.propose(Command::Commit { expected_version: 1 });
        let d = member_raft_id(&founders, "d");
        assert!(d >= 1 << 24, "a joined member's id is outside the founding positions");
        let conf = net.nodes[&net.leader()].conf_state().clone();
        assert_eq!((conf.voters.clone(), conf.learners.clone()), (vec![1, 2, 3], vec![d]));
        // The new member starts empty, from the founding configuration, like a `--join` node.
        net.nodes.insert(d, MetaNode::new(config(d)).unwrap());
        net.run(20);
        let def = TableDef { name: "after".into(), replicas: 3, conflict: Conflict::Lww };
        net.propose(Command::CreateTable(def));
        let joined = &net.nodes[&d];
        assert_eq!(joined.metadata().layout().map(|l| l.version), Some(2));
        assert!(joined.metadata().tables().contains_key("after"), "a later entry reached the learner");
        assert_eq!(joined.conf_state().learners, vec![d]);
        assert!(!joined.is_leader());
        // The learner does not vote: stopping one voter leaves a quorum of two voters.
        let leader = net.leader();
        let other = *[1, 2, 3].iter().find(|i| **i != leader).unwrap();
        net.nodes.remove(&other);
        net.propose(Command::Noop);
        // Every member reports the join's transition done (what the nodes' layout drivers do).
        let finish = |net: &mut Net, version: u64, members: &[&str]| {
            for tracker in crate::layout::Tracker::ALL {
                for m in members {
                    net.propose(Command::LayoutProgress { member: m.to_string(), tracker, version });
                }
            }
        };
        finish(&mut net, 2, &["a", "b", "c", "d"]);
        net.propose(Command::Stage(Change::Leave { id: "d".into() }));
        net.propose(Command::Commit { expected_version: 2 });
        net.run(5);
        // While v2 is live, the leaving learner keeps learning: it must see that it should
        // stream its data away.
        let conf = net.nodes[&net.leader()].conf_state().clone();
        assert_eq!((conf.voters.clone(), conf.learners.clone()), (vec![1, 2, 3], vec![d]));
        finish(&mut net, 3, &["a", "b", "c", "d"]);
        net.run(5);
        let conf = net.nodes[&net.leader()].conf_state().clone();
        assert_eq!((conf.voters, conf.learners), (vec![1, 2, 3], vec![]));
    }

    /// A learner that starts after the leader compacted catches up from the snapshot (conf included).
    #[test]
    fn a_learner_catches_up_from_a_snapshot() {
        let founders: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let config = |id: u64| {
            let mut c = MetaConfig::new(id, vec![1, 2, 3], vec![], id).with_founders(founders.clone());
            c.log_entries_len_max = 4;
            c
        };
        let mut net = Net { nodes: BTreeMap::new(), queue: Vec::new(), now_ms: 0, next_request: 0 };
        for id in 1..=3 {
            net.nodes.insert(id, MetaNode::new(config(id)).unwrap());
        }
        net.run(60);
        let members = ["a", "b", "c"].map(spec).to_vec();
        net.propose(Command::Bootstrap { members, default_replicas: 3, tables: vec![] });
        net.propose(Command::Stage(Change::Join(spec("d"))));
        net.propose(Command::Commit { expected_version: 1 });
        for _ in 0..12 {
            net.propose(Command::Noop);
        }
        let leader = net.leader();
        assert!(net.nodes[&leader].storage().snapshot_ref().get_metadata().index > 1, "the leader compacted");
        let d = member_raft_id(&founders, "d");
        net.nodes.insert(d, MetaNode::new(config(d)).unwrap());
        net.run(20);
        let joined = &net.nodes[&d];
        assert!(joined.storage().snapshot_ref().get_metadata().index > 1, "caught up by snapshot");
        assert_eq!(joined.metadata().layout().map(|l| l.version), Some(2));
        assert_eq!(
            (joined.conf_state().voters.clone(), joined.conf_state().learners.clone()),
            (vec![1, 2, 3], vec![d])
        );
        assert_eq!(joined.applied_index(), net.nodes[&leader].applied_index());
    }

    /// Raft ids: founders by position, joined members by a fixed hash of their id.
    #[test]
    fn raft_ids_are_stable() {
        let founders = vec!["n1".to_string(), "n2".into(), "n3".into()];
        assert_eq!(member_raft_id(&founders, "n2"), 2);
        let n4 = member_raft_id(&founders, "n4");
        assert_eq!(n4, member_raft_id(&[], "n4"));
        assert!((1 << 24..1 << 31).contains(&n4));
    }
}
