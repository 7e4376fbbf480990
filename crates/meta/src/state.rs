//! The metadata state machine: what the Raft log's committed commands build.
//!
//! Every node applies the same committed [`Command`]s in the same order to a [`Metadata`], so
//! every node holds the same members, layout versions and tables. `apply` is a pure function of
//! the state and the command: a command that is invalid against the state (joining an id that
//! exists, committing a stale plan) is still committed to the log, and every node rejects it
//! alike with the same [`MetaError`], changing nothing.
//!
//! Membership changes are staged, then committed, in the spirit of `riak-admin cluster
//! plan/commit` and Garage's layout versions:
//!
//! ```text
//!   Stage(Join a) ─┐
//!   Stage(Leave b) ├─► staged changes ──Commit { expected_version: v }──► layout v+1
//!   Unstage ───────┘   (validated on     (refused unless the layout is still at v
//!                       staging and       and the result keeps every table's
//!                       again on commit)  zone spread)
//! ```
//!
//! A commit starts a layout transition: the old and the new version stay live until every
//! tracked member has reported `ack`, `sync` and `sync_ack` for the new one
//! (`Command::LayoutProgress`, rules in [`crate::layout`]); the next commit waits for that.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::{AuthCommand, AuthError, AuthOutcome, AuthState};
use crate::group::{GroupCommand, GroupError, GroupOutcome, GroupsState};
use crate::layout::{live_suffix, LayoutError, LayoutTrackers, MemberProgress, Tracker};
use crate::log::{AppendSpec, LogError, LogOutcome, LogState, TopicSpec};
use crate::sink::{SinkCommand, SinkError, SinkOutcome, SinksState};

/// Most members one layout holds. Bounds the state and every answer that lists members.
pub const MEMBERS_LEN_MAX: usize = 256;
/// Most changes that may be staged at once.
pub const STAGED_LEN_MAX: usize = 64;
/// Most tables the cluster declares.
pub const TABLES_LEN_MAX: usize = 1024;
/// Committed layout versions kept for `cluster layout` (the newest stay).
pub const LAYOUT_HISTORY_LEN_MAX: usize = 16;
/// Longest member id, zone, address or table name, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Most leases alive at once.
pub const LEASES_LEN_MAX: usize = 10_000;
/// Most lock or election names held at once.
pub const HOLDERS_LEN_MAX: usize = 10_000;
/// Shortest and longest lease TTL.
pub const LEASE_TTL_MS_MIN: u64 = 1_000;
pub const LEASE_TTL_MS_MAX: u64 = 3_600_000;
/// Longest value an election winner may publish, in bytes.
pub const HOLDER_VALUE_BYTES_MAX: usize = 4096;

/// Most replicas a table may ask for (the data path's `REPLICATION_FACTOR_MAX`).
pub const REPLICAS_MAX: u8 = 7;

/// How a member is reached and where it sits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    pub id: String,
    pub zone: String,
    pub peer_address: String,
    pub http_address: String,
}

/// How a table resolves concurrent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conflict {
    Siblings,
    Lww,
    /// A CRDT table of this type (issue #14).
    Crdt(CrdtType),
}

/// The CRDT type of a CRDT table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrdtType {
    Counter,
    Set,
    Map,
}

impl Conflict {
    /// The name the tables API, config files and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Conflict::Siblings => "siblings",
            Conflict::Lww => "lww",
            Conflict::Crdt(CrdtType::Counter) => "crdt-counter",
            Conflict::Crdt(CrdtType::Set) => "crdt-set",
            Conflict::Crdt(CrdtType::Map) => "crdt-map",
        }
    }

    /// Parses [`Conflict::name`].
    pub fn from_name(name: &str) -> Option<Conflict> {
        Some(match name {
            "siblings" => Conflict::Siblings,
            "lww" => Conflict::Lww,
            "crdt-counter" => Conflict::Crdt(CrdtType::Counter),
            "crdt-set" => Conflict::Crdt(CrdtType::Set),
            "crdt-map" => Conflict::Crdt(CrdtType::Map),
            _ => return None,
        })
    }
}

/// A declared table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub replicas: u8,
    pub conflict: Conflict,
}

/// One staged membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Join(MemberSpec),
    Leave {
        id: String,
    },
    /// `new` takes over `old`'s place; `new` must be in the same zone, so spread is unchanged.
    Replace {
        old: String,
        new: MemberSpec,
    },
}

/// One committed layout: the member set data placement is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub version: u64,
    pub members: BTreeMap<String, MemberSpec>,
    /// The changes that made this version from the previous one (empty for the first).
    pub changes: Vec<Change>,
}

impl Layout {
    /// Distinct zones of the members.
    pub fn zones(&self) -> BTreeSet<&str> {
        self.members.values().map(|m| m.zone.as_str()).collect()
    }
}

/// A lease: alive until revoked or expired. Expiry is decided by the metadata leader's clock
/// (see `node.rs`); the replicated state only records the lease and how often it was renewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The log index of its grant: unique, and increasing with grant order.
    pub id: u64,
    pub ttl_ms: u64,
    /// Keep-alives applied so far; an expiry proposed before the latest one is void.
    pub renewals: u64,
}

/// Who holds a lock or leads an election, bound to a live lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub lease: u64,
    /// The fencing token of this grant: the log index of the acquiring command, so strictly
    /// increasing per name across holders, metadata leaders and restarts.
    pub token: u64,
    pub value: String,
}

/// A command in the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first layout. Accepted once; a second bootstrap (another node racing, a retried
    /// request) is refused, so every node starts from the same members.
    Bootstrap {
        members: Vec<MemberSpec>,
        default_replicas: u8,
        tables: Vec<TableDef>,
    },
    Stage(Change),
    /// Drops every staged change.
    Unstage,
    /// Applies the staged changes as layout `expected_version + 1`.
    Commit {
        expected_version: u64,
    },
    CreateTable(TableDef),
    /// A new lease of `ttl_ms`; its id is the grant's log index.
    LeaseGrant {
        ttl_ms: u64,
    },
    /// Renews a lease (the leader restarts its timer on applying it).
    LeaseKeepAlive {
        id: u64,
    },
    /// Ends a lease and releases every lock and election it holds.
    LeaseRevoke {
        id: u64,
    },
    /// The leader's lessor found the lease expired after `renewals` renewals; void if it was
    /// renewed since.
    LeaseExpire {
        id: u64,
        renewals: u64,
    },
    /// Takes lock or election `name` for `lease` (publishing `value`); its token is this
    /// command's log index. The same lease acquiring again gets its token back.
    Acquire {
        name: String,
        lease: u64,
        value: String,
    },
    /// Gives `name` up; `token` must be the holder's.
    Release {
        name: String,
        token: u64,
    },
    /// No state change; a leader's way to learn its commit index (and the simulator's filler).
    Noop,
    /// A log topic (see `log.rs`); its id derives from the log index.
    CreateTopic(TopicSpec),
    /// Marks a topic for deletion: hidden at once, trimmed away, then removed.
    DeleteTopic {
        name: String,
    },
    /// Sequences batches whose bytes are already durable as blobs.
    Append {
        appends: Vec<AppendSpec>,
    },
    /// Retention: drops whole batches of a partition that end at or before `before`.
    Trim {
        topic: String,
        partition: u32,
        before: u64,
    },
    /// Issues an idempotent producer id (the log index).
    InitProducerId,
    /// A consumer group's generation, assignment or committed offsets (see `group.rs`).
    Group(GroupCommand),
    /// Users, roles, tokens, and whether authentication is on (see `auth.rs`).
    Auth(AuthCommand),
    /// A sink definition (see `sink.rs`); a created sink's id is the log index.
    Sink(SinkCommand),
    /// `member` reports that its `tracker` reached layout `version` (see `layout.rs`). The
    /// value only grows: a report at or below it is a harmless no-op.
    LayoutProgress {
        member: String,
        tracker: Tracker,
        version: u64,
    },
}

/// What an accepted command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Bootstrapped {
        version: u64,
    },
    Staged {
        staged: usize,
    },
    Unstaged {
        dropped: usize,
    },
    Committed {
        version: u64,
    },
    TableCreated,
    LeaseGranted {
        id: u64,
        ttl_ms: u64,
    },
    LeaseKept {
        id: u64,
        ttl_ms: u64,
    },
    /// The lease ended; these names were released with it.
    LeaseEnded {
        released: Vec<String>,
    },
    Acquired {
        token: u64,
    },
    Released,
    Nothing,
    Log(LogOutcome),
    Group(GroupOutcome),
    Auth(AuthOutcome),
    Sink(SinkOutcome),
    /// A progress report applied: the tracker's value after it (unchanged if the report was
    /// at or below it), and the members that stopped being tracked because the versions they
    /// are in retired.
    Progressed {
        value: u64,
        retired: Vec<String>,
    },
}

/// Why a command was refused. Deterministic in the state, so every node refuses alike.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("the cluster is already bootstrapped (layout version {version})")]
    AlreadyBootstrapped { version: u64 },
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    #[error("member {id:?} is already in the layout or staged to join")]
    DuplicateMember { id: String },
    #[error("member {id:?} is not in the layout")]
    UnknownMember { id: String },
    #[error("{what} is invalid: {why}")]
    Invalid { what: String, why: String },
    #[error("table {table:?} wants {replicas} replicas in distinct zones; after this change only {zones_after} of the {zones_before} zones and {members_after} members would remain")]
    BreaksZoneSpread {
        table: String,
        replicas: u8,
        zones_before: usize,
        zones_after: usize,
        members_after: usize,
    },
    #[error("there are no staged changes to commit")]
    NothingStaged,
    #[error("the plan is stale: it was made for layout version {expected}, the layout is at {current}")]
    StalePlan { expected: u64, current: u64 },
    #[error("table {name:?} already exists")]
    TableExists { name: String },
    #[error("lease {id} does not exist (never granted, revoked, or expired)")]
    UnknownLease { id: u64 },
    #[error("{name:?} is held by lease {lease} with token {token}")]
    Held { name: String, lease: u64, token: u64 },
    #[error("{name:?} is not held with token {token}")]
    NotHolder { name: String, token: u64 },
    #[error("a limit is reached: {what} (at most {max})")]
    Limit { what: String, max: usize },
    #[error("{0}")]
    Log(LogError),
    #[error("{0}")]
    Group(GroupError),
    #[error("{0}")]
    Auth(AuthError),
    #[error("{0}")]
    Sink(SinkError),
    /// A layout-transition rule (progress reports, commits during a transition).
    #[error("{0}")]
    Layout(LayoutError),
}

/// The replicated metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Newest last; empty until bootstrapped.
    layouts: Vec<Layout>,
    staged: Vec<Change>,
    tables: BTreeMap<String, TableDef>,
    /// Replication factor of tables created on first write.
    default_replicas: u8,
    leases: BTreeMap<u64, Lease>,
    holders: BTreeMap<String, Holder>,
    /// The last token granted per name, kept after release: the next grant must exceed it.
    tokens: BTreeMap<String, u64>,
    /// Topics, partitions and their offset index.
    log: LogState,
    /// Consumer groups: generations, members, assignments, committed offsets.
    groups: GroupsState,
    /// Users, roles and tokens.
    auth: AuthState,
    /// Sink definitions (their delivery positions live in the warehouse).
    sinks: SinksState,
    /// Per tracked member: the layout versions it acknowledged, synced and reads from.
    trackers: LayoutTrackers,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current layout, if bootstrapped.
    pub fn layout(&self) -> Option<&Layout> {
        self.layouts.last()
    }

    /// The kept layout versions, oldest first.
    pub fn layouts(&self) -> &[Layout] {
        &self.layouts
    }

    pub fn staged(&self) -> &[Change] {
        &self.staged
    }

    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    pub fn tables(&self) -> &BTreeMap<String, TableDef> {
        &self.tables
    }

    pub fn default_replicas(&self) -> u8 {
        self.default_replicas
    }

    pub fn leases(&self) -> &BTreeMap<u64, Lease> {
        &self.leases
    }

    pub fn holders(&self) -> &BTreeMap<String, Holder> {
        &self.holders
    }

    /// The log's topics and offsets.
    pub fn log(&self) -> &LogState {
        &self.log
    }

    /// The consumer groups.
    pub fn groups(&self) -> &GroupsState {
        &self.groups
    }

    /// The sinks.
    pub fn sinks(&self) -> &SinksState {
        &self.sinks
    }

    /// The layout-transition trackers of every tracked member (see `layout.rs`).
    pub fn trackers(&self) -> &LayoutTrackers {
        &self.trackers
    }

    /// `member`'s trackers, if it is tracked (in a live layout version).
    pub fn progress(&self, member: &str) -> Option<MemberProgress> {
        self.trackers.get(member)
    }

    fn min_tracker(&self, tracker: Tracker) -> u64 {
        self.trackers.min(tracker).unwrap_or_else(|| self.layout().map_or(0, |l| l.version))
    }

    /// The lowest `ack` over tracked members: every member's writes go to all live versions up
    /// to at least this one. 0 until bootstrapped.
    pub fn min_ack(&self) -> u64 {
        self.min_tracker(Tracker::Ack)
    }

    /// The lowest `sync` over tracked members: every member streamed its data to this
    /// version's owners. 0 until bootstrapped.
    pub fn min_sync(&self) -> u64 {
        self.min_tracker(Tracker::Sync)
    }

    /// The lowest `sync_ack` over tracked members: every member reads from this version, so
    /// older ones are retired. 0 until bootstrapped.
    pub fn min_sync_ack(&self) -> u64 {
        self.min_tracker(Tracker::SyncAck)
    }

    /// The version reads use: [`Metadata::min_sync`], the newest version whose owners are
    /// known to hold all data. Always a live version once bootstrapped; 0 before.
    pub fn read_version(&self) -> u64 {
        self.min_sync()
    }

    /// The live layout versions, oldest first: those at or after [`Metadata::min_sync_ack`].
    /// Writes go to the replica sets of all of them. Never empty once bootstrapped, and the
    /// newest layout is always among them.
    pub fn live_layouts(&self) -> &[Layout] {
        live_suffix(&self.layouts, self.min_sync_ack())
    }

    /// Whether no transition is running: at most one live layout (none before bootstrap).
    pub fn transition_done(&self) -> bool {
        self.live_layouts().len() <= 1
    }

    /// The last fencing token granted for `name` (0 if none ever was).
    pub fn last_token(&self, name: &str) -> u64 {
        self.tokens.get(name).copied().unwrap_or(0)
    }

    /// Applies the command committed at log `index`. Leases and tokens take their ids from
    /// the index; everything else ignores it.
    pub fn apply_at(&mut self, index: u64, command: &Command) -> Result<Outcome, MetaError> {
        match command {
            Command::LeaseGrant { ttl_ms } => {
                if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(ttl_ms) {
                    return Err(MetaError::Invalid {
                        what: format!("a lease TTL of {ttl_ms} ms"),
                        why: format!("must be {LEASE_TTL_MS_MIN} to {LEASE_TTL_MS_MAX} ms"),
                    });
                }
                if self.leases.len() >= LEASES_LEN_MAX {
                    return Err(MetaError::Limit { what: "leases".into(), max: LEASES_LEN_MAX });
                }
                self.leases.insert(index, Lease { id: index, ttl_ms: *ttl_ms, renewals: 0 });
                Ok(Outcome::LeaseGranted { id: index, ttl_ms: *ttl_ms })
            }
            Command::LeaseKeepAlive { id } => {
                let lease = self.leases.get_mut(id).ok_or(MetaError::UnknownLease { id: *id })?;
                lease.renewals += 1;
                Ok(Outcome::LeaseKept { id: *id, ttl_ms: lease.ttl_ms })
            }
            Command::LeaseRevoke { id } => self.end_lease(*id),
            Command::LeaseExpire { id, renewals } => match self.leases.get(id) {
                Some(l) if l.renewals == *renewals => self.end_lease(*id),
                // Renewed after the lessor looked, or already gone: nothing to do.
                _ => Ok(Outcome::Nothing),
            },
            Command::Acquire { name, lease, value } => {
                check_name("lock name", name)?;
                if value.len() > HOLDER_VALUE_BYTES_MAX {
                    return Err(MetaError::Invalid {
                        what: format!("the value for {name:?}"),
                        why: format!("{} bytes, at most {HOLDER_VALUE_BYTES_MAX}", value.len()),
                    });
                }
                if !self.leases.contains_key(lease) {
                    return Err(MetaError::UnknownLease { id: *lease });
                }
                match self.holders.get(name) {
                    Some(h) if h.lease == *lease => return Ok(Outcome::Acquired { token: h.token }),
                    Some(h) => {
                        return Err(MetaError::Held { name: name.clone(), lease: h.lease, token: h.token })
                    }
                    None => {}
                }
                if self.holders.len() >= HOLDERS_LEN_MAX {
                    return Err(MetaError::Limit { what: "held locks".into(), max: HOLDERS_LEN_MAX });
                }
                // Log indexes only grow, so this holds for every honest log; asserted because
                // a token that does not grow would let a stale holder's writes through.
                assert!(
                    index > self.last_token(name),
                    "fencing tokens must grow: {index} after {}",
                    self.last_token(name)
                );
                self.tokens.insert(name.clone(), index);
                self.holders
                    .insert(name.clone(), Holder { lease: *lease, token: index, value: value.clone() });
                Ok(Outcome::Acquired { token: index })
            }
            Command::Release { name, token } => match self.holders.get(name) {
                Some(h) if h.token == *token => {
                    self.holders.remove(name);
                    Ok(Outcome::Released)
                }
                _ => Err(MetaError::NotHolder { name: name.clone(), token: *token }),
            },
            Command::CreateTopic(spec) => {
                self.log_ready()?;
                self.log.create_topic(index, spec).map(Outcome::Log).map_err(MetaError::Log)
            }
            Command::Append { appends } => {
                self.log.append(index, appends).map(Outcome::Log).map_err(MetaError::Log)
            }
            Command::InitProducerId => Ok(Outcome::Log(self.log.init_producer(index))),
            Command::Sink(c) => self.sinks.apply(index, c).map(Outcome::Sink).map_err(MetaError::Sink),
            other => self.apply(other),
        }
    }

    fn log_ready(&self) -> Result<(), MetaError> {
        self.layout().map(|_| ()).ok_or(MetaError::NotBootstrapped)
    }

    fn end_lease(&mut self, id: u64) -> Result<Outcome, MetaError> {
        if self.leases.remove(&id).is_none() {
            return Err(MetaError::UnknownLease { id });
        }
        let released: Vec<String> =
            self.holders.iter().filter(|(_, h)| h.lease == id).map(|(n, _)| n.clone()).collect();
        for name in &released {
            self.holders.remove(name);
        }
        Ok(Outcome::LeaseEnded { released })
    }

    /// Applies one committed command. Never panics on any input.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, MetaError> {
        match command {
            Command::LeaseGrant { .. }
            | Command::LeaseKeepAlive { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseExpire { .. }
            | Command::Acquire { .. }
            | Command::Release { .. }
            | Command::CreateTopic(_)
            | Command::Append { .. }
            | Command::InitProducerId
            | Command::Sink(_) => Err(MetaError::Invalid {
                what: "a lease, lock, log or sink command".into(),
                why: "needs its log index (apply_at)".into(),
            }),
            Command::Noop => Ok(Outcome::Nothing),
            Command::DeleteTopic { name } => {
                let outcome = self.log.delete_topic(name).map(Outcome::Log).map_err(MetaError::Log)?;
                // Offsets of a deleted topic would apply to a recreated one with new offsets.
                self.groups.forget_topic(name);
                Ok(outcome)
            }
            Command::Group(c) => {
                self.groups.apply(&self.log, c).map(Outcome::Group).map_err(MetaError::Group)
            }
            Command::Auth(c) => self.auth.apply(c).map(Outcome::Auth).map_err(MetaError::Auth),
            Command::Trim { topic, partition, before } => {
                self.log.trim(topic, *partition, *before).map(Outcome::Log).map_err(MetaError::Log)
            }
            Command::Bootstrap { members, default_replicas, tables } => {
                if let Some(l) = self.layout() {
                    return Err(MetaError::AlreadyBootstrapped { version: l.version });
                }
                check_replicas("default replicas", *default_replicas)?;
                let mut layout = Layout { version: 1, members: BTreeMap::new(), changes: Vec::new() };
                for m in members {
                    check_member(m)?;
                    if layout.members.insert(m.id.clone(), m.clone()).is_some() {
                        return Err(MetaError::DuplicateMember { id: m.id.clone() });
                    }
                }
                if layout.members.is_empty() || layout.members.len() > MEMBERS_LEN_MAX {
                    return Err(MetaError::Invalid {
                        what: "the member list".into(),
                        why: format!("{} members (1 to {MEMBERS_LEN_MAX})", layout.members.len()),
                    });
                }
                if tables.len() > TABLES_LEN_MAX {
                    return Err(MetaError::Limit { what: "tables".into(), max: TABLES_LEN_MAX });
                }
                let mut declared = BTreeMap::new();
                for t in tables {
                    check_name("table name", &t.name)?;
                    check_replicas("replicas", t.replicas)?;
                    if declared.insert(t.name.clone(), t.clone()).is_some() {
                        return Err(MetaError::TableExists { name: t.name.clone() });
                    }
                }
                self.default_replicas = *default_replicas;
                self.tables = declared;
                self.trackers = LayoutTrackers::founded(layout.members.keys().map(String::as_str), 1);
                self.layouts.push(layout);
                Ok(Outcome::Bootstrapped { version: 1 })
            }
            Command::Stage(change) => {
                let current = self.layout().ok_or(MetaError::NotBootstrapped)?;
                if self.staged.len() >= STAGED_LEN_MAX {
                    return Err(MetaError::Limit { what: "staged changes".into(), max: STAGED_LEN_MAX });
                }
                let mut staged = self.staged.clone();
                staged.push(change.clone());
                // Validate the whole staged set against the layout now, so a bad change is
                // refused when it is staged and not only at commit.
                self.plan(current, &staged)?;
                self.staged = staged;
                Ok(Outcome::Staged { staged: self.staged.len() })
            }
            Command::Unstage => {
                let dropped = self.staged.len();
                self.staged.clear();
                Ok(Outcome::Unstaged { dropped })
            }
            Command::Commit { expected_version } => {
                let current = self.layout().ok_or(MetaError::NotBootstrapped)?;
                if current.version != *expected_version {
                    return Err(MetaError::StalePlan {
                        expected: *expected_version,
                        current: current.version,
                    });
                }
                if self.staged.is_empty() {
                    return Err(MetaError::NothingStaged);
                }
                // No stacking: a new version only once every tracked member reads from the
                // current one, so at most two versions are ever live.
                if !self.transition_done() {
                    return Err(MetaError::Layout(LayoutError::TransitionInProgress {
                        version: current.version,
                        live_from: self.min_sync_ack(),
                        waiting: self.trackers.waiting(current.version),
                    }));
                }
                // Never drop a live version from the history (unreachable while commits wait
                // for transitions, kept so a larger live window cannot lose one).
                if self.layouts.len() >= LAYOUT_HISTORY_LEN_MAX
                    && self.layouts.first().is_some_and(|l| l.version >= self.min_sync_ack())
                {
                    return Err(MetaError::Layout(LayoutError::HistoryFull {
                        version: self.layouts[0].version,
                        max: LAYOUT_HISTORY_LEN_MAX,
                    }));
                }
                let next = self.plan(current, &self.staged)?;
                let from = current.version;
                self.staged.clear();
                let version = next.version;
                self.trackers.track_joined(next.members.keys().map(String::as_str), from);
                self.layouts.push(next);
                if self.layouts.len() > LAYOUT_HISTORY_LEN_MAX {
                    self.layouts.remove(0);
                }
                Ok(Outcome::Committed { version })
            }
            Command::LayoutProgress { member, tracker, version } => {
                let current = self.layout().ok_or(MetaError::NotBootstrapped)?.version;
                let live_from = self.min_sync_ack();
                let (value, _) = self
                    .trackers
                    .report(member, *tracker, *version, current, live_from)
                    .map_err(MetaError::Layout)?;
                // Retire: members found only in versions that are no longer live.
                let retired = if self.min_sync_ack() > live_from {
                    let live = live_suffix(&self.layouts, self.min_sync_ack());
                    self.trackers.retire(live)
                } else {
                    Vec::new()
                };
                Ok(Outcome::Progressed { value, retired })
            }
            Command::CreateTable(def) => {
                check_name("table name", &def.name)?;
                check_replicas("replicas", def.replicas)?;
                if self.tables.contains_key(&def.name) {
                    return Err(MetaError::TableExists { name: def.name.clone() });
                }
                if self.tables.len() >= TABLES_LEN_MAX {
                    return Err(MetaError::Limit { what: "tables".into(), max: TABLES_LEN_MAX });
                }
                self.tables.insert(def.name.clone(), def.clone());
                Ok(Outcome::TableCreated)
            }
        }
    }

    /// The layout `changes` would make from `from`, or why it may not be made.
    pub fn plan(&self, from: &Layout, changes: &[Change]) -> Result<Layout, MetaError> {
        let mut members = from.members.clone();
        for change in changes {
            match change {
                Change::Join(m) => {
                    check_member(m)?;
                    if members.insert(m.id.clone(), m.clone()).is_some() {
                        return Err(MetaError::DuplicateMember { id: m.id.clone() });
                    }
                }
                Change::Leave { id } => {
                    if members.remove(id).is_none() {
                        return Err(MetaError::UnknownMember { id: id.clone() });
                    }
                }
                Change::Replace { old, new } => {
                    check_member(new)?;
                    let Some(gone) = members.remove(old) else {
                        return Err(MetaError::UnknownMember { id: old.clone() });
                    };
                    if gone.zone != new.zone {
                        return Err(MetaError::Invalid {
                            what: format!("replacing {old:?} by {:?}", new.id),
                            why: format!(
                                "the new member is in zone {:?}, the old one in {:?}",
                                new.zone, gone.zone
                            ),
                        });
                    }
                    if members.insert(new.id.clone(), new.clone()).is_some() {
                        return Err(MetaError::DuplicateMember { id: new.id.clone() });
                    }
                }
            }
        }
        if members.len() > MEMBERS_LEN_MAX {
            return Err(MetaError::Limit { what: "members".into(), max: MEMBERS_LEN_MAX });
        }
        let next = Layout { version: from.version + 1, members, changes: changes.to_vec() };
        // Zone spread: each table's replicas land in min(replicas, zones) distinct zones; a
        // change may not lower that, nor leave fewer members than replicas.
        let zones_before = from.zones().len();
        let zones_after = next.zones().len();
        let replicas = std::iter::once(("(default)".to_string(), self.default_replicas))
            .chain(self.tables.values().map(|t| (t.name.clone(), t.replicas)));
        for (table, n) in replicas {
            let n_usize = usize::from(n);
            if zones_after.min(n_usize) < zones_before.min(n_usize) || next.members.len() < n_usize {
                return Err(MetaError::BreaksZoneSpread {
                    table,
                    replicas: n,
                    zones_before,
                    zones_after,
                    members_after: next.members.len(),
                });
            }
        }
        Ok(next)
    }

    /// The canonical encoding (snapshots, and comparing nodes' states).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self)
            .expect("metadata always encodes: plain data, no maps with non-string keys")
    }

    pub fn decode(bytes: &[u8]) -> Result<Metadata, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), MetaError> {
    if name.is_empty()
        || name.len() > NAME_BYTES_MAX
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(MetaError::Invalid {
            what: format!("{what} {:?}", name.chars().take(64).collect::<String>()),
            why: format!("must be 1 to {NAME_BYTES_MAX} bytes without spaces or control characters"),
        });
    }
    Ok(())
}

fn check_member(m: &MemberSpec) -> Result<(), MetaError> {
    check_name("member id", &m.id)?;
    check_name("zone", &m.zone)?;
    check_name("peer address", &m.peer_address)?;
    check_name("http address", &m.http_address)
}

fn check_replicas(what: &str, n: u8) -> Result<(), MetaError> {
    if n == 0 || n > REPLICAS_MAX {
        return Err(MetaError::Invalid {
            what: format!("{what} {n}"),
            why: format!("must be 1 to {REPLICAS_MAX}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, zone: &str) -> MemberSpec {
        MemberSpec {
            id: id.into(),
            zone: zone.into(),
            peer_address: format!("127.0.0.1:1{id}"),
            http_address: format!("127.0.0.1:2{id}"),
        }
    }

    fn three_zones() -> Metadata {
        let mut m = Metadata::new();
        let members = vec![member("1", "a"), member("2", "b"), member("3", "c")];
        assert_eq!(
            m.apply(&Command::Bootstrap { members, default_replicas: 3, tables: vec![] }),
            Ok(Outcome::Bootstrapped { version: 1 })
        );
        m
    }

    /// Staging then committing makes the next layout version with the changes applied.
    #[test]
    fn stage_and_commit_make_a_new_version() {
        let mut m = three_zones();
        assert_eq!(
            m.apply(&Command::Stage(Change::Join(member("4", "a")))),
            Ok(Outcome::Staged { staged: 1 })
        );
        assert_eq!(m.apply(&Command::Commit { expected_version: 1 }), Ok(Outcome::Committed { version: 2 }));
        let layout = m.layout().unwrap();
        assert_eq!(layout.members.len(), 4);
        assert!(m.staged().is_empty());
    }

    /// Each bad input of the issue is refused and changes nothing.
    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let mut m = three_zones();
        let before = m.clone();
        let cases = [
            (Command::Stage(Change::Join(member("2", "b"))), "duplicate"),
            (Command::Stage(Change::Leave { id: "3".into() }), "zone spread"),
            (Command::Stage(Change::Leave { id: "9".into() }), "unknown"),
            (Command::Commit { expected_version: 1 }, "nothing staged"),
            (
                Command::Stage(Change::Replace { old: "1".into(), new: member("5", "b") }),
                "zone of a replacement",
            ),
            (
                Command::Bootstrap { members: vec![member("7", "a")], default_replicas: 3, tables: vec![] },
                "second bootstrap",
            ),
        ];
        for (command, why) in cases {
            assert!(m.apply(&command).is_err(), "{why} must be refused");
            assert_eq!(m, before, "{why} changed the state");
        }
        // A stale plan: staged against version 1, but the layout moved on.
        m.apply(&Command::Stage(Change::Join(member("4", "a")))).unwrap();
        m.apply(&Command::Commit { expected_version: 1 }).unwrap();
        m.apply(&Command::Stage(Change::Join(member("5", "b")))).unwrap();
        assert_eq!(
            m.apply(&Command::Commit { expected_version: 1 }),
            Err(MetaError::StalePlan { expected: 1, current: 2 })
        );
    }

    /// Leaving the last node of a zone is allowed when no table needs that zone.
    #[test]
    fn zone_spread_is_judged_per_table() {
        let mut m = Metadata::new();
        let members = vec![member("1", "a"), member("2", "b"), member("3", "c"), member("4", "a")];
        m.apply(&Command::Bootstrap { members, default_replicas: 2, tables: vec![] }).unwrap();
        // Two replicas still find two zones without c.
        assert!(m.apply(&Command::Stage(Change::Leave { id: "3".into() })).is_ok());
        m.apply(&Command::Unstage).unwrap();
        m.apply(&Command::CreateTable(TableDef {
            name: "t".into(),
            replicas: 3,
            conflict: Conflict::Siblings,
        }))
        .unwrap();
        assert!(matches!(
            m.apply(&Command::Stage(Change::Leave { id: "3".into() })),
            Err(MetaError::BreaksZoneSpread { .. })
        ));
    }

    /// The encoding round-trips, so snapshots restore the same state.
    #[test]
    fn encoding_round_trips() {
        let mut m = three_zones();
        m.apply(&Command::CreateTable(TableDef { name: "t".into(), replicas: 2, conflict: Conflict::Lww }))
            .unwrap();
        m.apply(&Command::Stage(Change::Join(member("4", "a")))).unwrap();
        assert_eq!(Metadata::decode(&m.encode()).unwrap(), m);
    }

    /// Every tracked member reports ack, then sync, then sync_ack for the newest version.
    fn finish_transition(m: &mut Metadata) {
        let version = m.layout().unwrap().version;
        for tracker in Tracker::ALL {
            let members: Vec<String> = m.trackers().members().keys().cloned().collect();
            for member in members {
                m.apply(&Command::LayoutProgress { member, tracker, version }).unwrap();
            }
        }
        assert!(m.transition_done());
    }

    /// Layout history is bounded (each transition finished before the next commit).
    #[test]
    fn layout_history_is_bounded() {
        let mut m = three_zones();
        for i in 0..(LAYOUT_HISTORY_LEN_MAX as u64 + 5) {
            let v = m.layout().unwrap().version;
            m.apply(&Command::Stage(Change::Join(member(&format!("x{i}"), "a")))).unwrap();
            m.apply(&Command::Commit { expected_version: v }).unwrap();
            finish_transition(&mut m);
        }
        assert_eq!(m.layouts().len(), LAYOUT_HISTORY_LEN_MAX);
        assert_eq!(m.layout().unwrap().version, LAYOUT_HISTORY_LEN_MAX as u64 + 6);
    }

    fn lease_commands() -> impl proptest::strategy::Strategy<Value = Vec<Command>> {
        use proptest::prelude::*;
        let command = prop_oneof![
            (1_000u64..5_000).prop_map(|ttl_ms| Command::LeaseGrant { ttl_ms }),
            (0u64..40).prop_map(|id| Command::LeaseKeepAlive { id }),
            (0u64..40).prop_map(|id| Command::LeaseRevoke { id }),
            (0u64..40, 0u64..3).prop_map(|(id, renewals)| Command::LeaseExpire { id, renewals }),
            (0u8..3, 0u64..40).prop_map(|(n, lease)| Command::Acquire {
                name: format!("l{n}"),
                lease,
                value: String::new()
            }),
            (0u8..3, 0u64..40).prop_map(|(n, token)| Command::Release { name: format!("l{n}"), token }),
        ];
        proptest::collection::vec(command, 1..120)
    }

    proptest::proptest! {
        /// Over any sequence of lease and lock commands: every new grant's token exceeds every
        /// earlier token of its name, a holder's lease is alive, and a re-acquire by the holder
        /// returns its token.
        #[test]
        fn fencing_tokens_grow_and_holders_hold_live_leases(commands in lease_commands()) {
            let mut m = Metadata::new();
            let mut last: BTreeMap<String, u64> = BTreeMap::new();
            for (i, c) in commands.iter().enumerate() {
                let index = i as u64 + 1;
                let before = m.holders().clone();
                let r = m.apply_at(index, c);
                if let (Command::Acquire { name, lease, .. }, Ok(Outcome::Acquired { token })) = (c, &r) {
                    match before.get(name) {
                        Some(h) => proptest::prop_assert_eq!((h.lease, h.token), (*lease, *token)),
                        None => {
                            proptest::prop_assert_eq!(*token, index);
                            proptest::prop_assert!(*token > last.get(name).copied().unwrap_or(0));
                            last.insert(name.clone(), *token);
                        }
                    }
                }
                for (name, h) in m.holders() {
                    proptest::prop_assert!(m.leases().contains_key(&h.lease), "{} held by dead lease {}", name, h.lease);
                    proptest::prop_assert!(h.token <= m.last_token(name));
                }
            }
        }
    }

    /// Bad lease input: unknown lease, a lease that expired, a lock held by another lease, a
    /// release with another token, an out-of-range TTL.
    #[test]
    fn bad_lease_input_is_refused() {
        let mut m = Metadata::new();
        assert!(matches!(m.apply_at(1, &Command::LeaseGrant { ttl_ms: 10 }), Err(MetaError::Invalid { .. })));
        assert_eq!(
            m.apply_at(2, &Command::LeaseGrant { ttl_ms: 5_000 }),
            Ok(Outcome::LeaseGranted { id: 2, ttl_ms: 5_000 })
        );
        assert_eq!(
            m.apply_at(3, &Command::LeaseGrant { ttl_ms: 5_000 }),
            Ok(Outcome::LeaseGranted { id: 3, ttl_ms: 5_000 })
        );
        let acquire = |lease| Command::Acquire { name: "scheduler".into(), lease, value: "a".into() };
        assert_eq!(m.apply_at(4, &acquire(9)), Err(MetaError::UnknownLease { id: 9 }));
        assert_eq!(m.apply_at(5, &acquire(2)), Ok(Outcome::Acquired { token: 5 }));
        assert_eq!(
            m.apply_at(6, &acquire(3)),
            Err(MetaError::Held { name: "scheduler".into(), lease: 2, token: 5 })
        );
        let release = Command::Release { name: "scheduler".into(), token: 4 };
        assert!(matches!(m.apply_at(7, &release), Err(MetaError::NotHolder { .. })));
        // An expiry the lessor proposed before a renewal is void; one after it ends the lease
        // and frees the lock; the next holder's token is larger.
        m.apply_at(8, &Command::LeaseKeepAlive { id: 2 }).unwrap();
        assert_eq!(m.apply_at(9, &Command::LeaseExpire { id: 2, renewals: 0 }), Ok(Outcome::Nothing));
        assert_eq!(
            m.apply_at(10, &Command::LeaseExpire { id: 2, renewals: 1 }),
            Ok(Outcome::LeaseEnded { released: vec!["scheduler".into()] })
        );
        assert_eq!(
            m.apply_at(11, &Command::LeaseKeepAlive { id: 2 }),
            Err(MetaError::UnknownLease { id: 2 })
        );
        assert_eq!(m.apply_at(12, &acquire(3)), Ok(Outcome::Acquired { token: 12 }));
    }
}
