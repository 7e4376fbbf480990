//! # Seeded simulation of the metadata Raft group
//!
//! The shipping metadata members (`quorumdb_meta::MetaNode`, raft-rs inside) on the simulated
//! network of [`super::net`], with crashes that lose everything not persisted, partitions
//! (random splits and the leader cut off alone), loss bursts and restarts, all from one seed.
//!
//! ```text
//!   seed ──► StdRng ──► latencies, losses, faults, client proposals, each member's own seed
//!
//!   clients ──Propose──► any live member ──(raft forwards to the leader)──► commit ──► Reply
//!   member effects:  Send ──► net    Persist ──► durable image (survives a crash)
//!                    Applied ──► checkers       Reply ──► client bookkeeping
//!
//!   safety phase (faults on, invariants checked after every step) ──► liveness phase (heal,
//!   restart everyone, no loss) ──► everyone at the same applied index with equal metadata
//! ```
//!
//! Checked, in every run:
//! - **election safety**: at most one leader per term, over every member and incarnation;
//! - **state machine safety**: every member applies the same entry (term and command) at each
//!   index, so no committed entry is ever lost or replaced, across crashes;
//! - **acknowledged changes survive**: every table whose creation was acknowledged exists in the
//!   final metadata of every member;
//! - **convergence**: after the heal every member (learners too) reaches the same applied index
//!   and byte-identical metadata, and a last proposal commits;
//! - **the log** ([`crate::checker::log`]): every append the clients were told about is recorded
//!   as a send (`ok(base offset)`, `fail` when refused or never proposed, `info` on a timeout or
//!   a crash of the proposing member), simulated consumers poll the partition index of a random
//!   live member from their position, and the converged metadata gives the final contents of
//!   every partition. The log checker must find no duplicate, lost append, inconsistent offset,
//!   non-monotonic or skipped poll, or unexpected batch. A batch is one value (its blob id) at
//!   its base offset. Topics are judged per incarnation (name and topic id), so appends to a
//!   topic later deleted are dropped from the judgement (counted), and offsets below a
//!   partition's final log start were trimmed on purpose (the checker excludes them). A retried
//!   idempotent batch acknowledged as a duplicate carries another blob than the batch it
//!   duplicates, so those acknowledgements are counted but not judged.
//!
//! Deliberate bugs at the driver seam, to show the checks bite: [`MetaBug::AckBeforePersist`]
//! (the driver lets messages leave before the persisted state is durable; a crash then loses
//! votes and appended entries that were acknowledged) and [`MetaBug::LoseSnapshotState`] (a
//! restart keeps the snapshot's position in the log but not the metadata it holds). A member
//! that panics (raft-rs asserts its log's consistency) fails the run too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::checker::log::{check_log, FinalPartition, LogHistory, LogOp, Poll, Send};
use crate::checker::CheckConfig;
use crate::history::OpResult;
use quorumdb_meta::group::{GroupCommand, GroupMember, OffsetSpec};
use quorumdb_meta::log::{AppendSpec, LogOutcome, ProducerBatch, TopicConfig, TopicSpec};
use quorumdb_meta::{
    Change, Command, Conflict, Effect, Input, MemberSpec, MetaConfig, MetaNode, MetaStorage, Outcome,
    PersistDelta, ProposeError, RaftMessage, TableDef, Tracker,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::net::{Endpoint, Message, NetConfig, Network, PPM};

/// A deliberately broken driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaBug {
    AckBeforePersist,
    LoseSnapshotState,
}

impl MetaBug {
    pub const ALL: [MetaBug; 2] = [MetaBug::AckBeforePersist, MetaBug::LoseSnapshotState];

    pub fn name(self) -> &'static str {
        match self {
            MetaBug::AckBeforePersist => "ack-before-persist",
            MetaBug::LoseSnapshotState => "lose-snapshot-state",
        }
    }

    pub fn from_name(name: &str) -> Option<MetaBug> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for MetaBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct MetaSimOptions {
    pub seed: u64,
    pub voters: usize,
    pub learners: usize,
    /// Length of the safety phase.
    pub safety_ms: u64,
    pub faults: bool,
    pub bug: Option<MetaBug>,
}

impl MetaSimOptions {
    pub const DEFAULT: MetaSimOptions =
        MetaSimOptions { seed: 0, voters: 5, learners: 2, safety_ms: 20_000, faults: true, bug: None };
}

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct MetaSimStats {
    pub proposals: u64,
    pub acknowledged: u64,
    pub refused: u64,
    /// Not proposed at all (no leader known, or refused before proposing).
    pub not_proposed: u64,
    /// Timed out, or the proposing member crashed: may or may not have committed.
    pub unknown: u64,
    pub entries_applied: u64,
    pub terms_with_leader: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub leader_isolations: u64,
    pub loss_bursts: u64,
    pub snapshots: u64,
    pub layout_version: u64,
    /// New lock grants (fencing tokens minted) and leases the leader expired.
    pub tokens_granted: u64,
    pub leases_expired: u64,
    /// Time from the heal to convergence.
    pub liveness_ms: u64,
    pub events: u64,
    /// Log appends acknowledged with an offset and judged by the log checker.
    pub log_acked: u64,
    /// Acknowledged appends not judged: idempotent duplicates, or of a topic later deleted.
    pub log_acked_unjudged: u64,
    /// Consumer polls and the batches they returned; batches in the final partitions.
    pub log_polls: u64,
    pub log_polled: u64,
    pub log_final: u64,
    /// Read-index requests answered, and those answered with an index (not an error).
    pub reads: u64,
    pub reads_confirmed: u64,
}

/// One log append as its client saw it; resolved into a [`Send`] once every blob's topic
/// incarnation is known.
#[derive(Clone, Debug)]
struct SimSend {
    process: u32,
    topic: String,
    partition: u32,
    blob: u128,
    invoke_ms: u64,
    complete_ms: u64,
    result: OpResult,
    offset: Option<u64>,
}

/// Simulated consumers per partition.
const LOG_CONSUMERS: u32 = 2;
/// Most batches one simulated poll returns.
const LOG_POLL_BATCHES_MAX: usize = 4;

fn blob_value(blob: u128) -> String {
    format!("{blob:032x}")
}

fn incarnation(name: &str, id: &[u8; 16]) -> String {
    let hex: String = id[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}#{hex}")
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaViolation {
    pub at_ms: u64,
    pub what: String,
}

impl fmt::Display for MetaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {} ms: {}", self.at_ms, self.what)
    }
}

#[derive(Clone, Debug)]
struct Raft(Box<RaftMessage>);

impl Message for Raft {
    // Raft tolerates duplicated messages (every message carries its term and indexes), except
    // a forwarded proposal: delivered twice it commits its command twice, which the log
    // checker sees as a duplicate append. The real transport (TCP) never duplicates a message
    // and never resends one, so, as for the replicas' writes (`net::Message`), that fault is
    // left out.
    fn may_duplicate(&self) -> bool {
        !quorumdb_meta::is_forwarded_proposal(&self.0)
    }
}

struct Member {
    id: u64,
    node: Option<MetaNode>,
    /// What survives a crash.
    durable: MetaStorage,
    /// Deltas not yet durable (only under `AckBeforePersist`; otherwise durable at once).
    unsynced: Vec<PersistDelta>,
    incarnation: u64,
    restart_at_ms: Option<u64>,
    next_tick_ms: u64,
}

struct World {
    opts: MetaSimOptions,
    rng: StdRng,
    now_ms: u64,
    net: Network<Raft>,
    members: Vec<Member>,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// Leader of each term, as first seen.
    leaders: BTreeMap<u64, u64>,
    /// The committed log as applied by anyone: index → (term, encoded command).
    log: BTreeMap<u64, (u64, String)>,
    /// Per member: the last index it applied.
    applied: BTreeMap<u64, u64>,
    /// Requests in flight: (member id, request id) → the table it creates, if any.
    requests: BTreeMap<(u64, u64), Option<String>>,
    /// Read-index requests in flight: for each, the highest index any member had applied
    /// (so: committed) when it was asked. A linearizable read must answer at least that.
    reads: BTreeMap<(u64, u64), u64>,
    /// Tables whose creation was acknowledged.
    acked_tables: BTreeSet<String>,
    next_request: u64,
    next_table: u64,
    /// Leases the clients were granted; the last token they saw per name.
    leases: Vec<u64>,
    tokens_seen: BTreeMap<String, u64>,
    /// Every fencing token applied, per name, by log index.
    tokens: BTreeMap<String, BTreeMap<u64, u64>>,
    log_entries_len_max: usize,
    stats: MetaSimStats,
    violation: Option<MetaViolation>,
    /// Append proposals in flight: (member id, request id) → (proposed at, specs).
    log_requests: BTreeMap<(u64, u64), (u64, Vec<AppendSpec>)>,
    log_sends: Vec<SimSend>,
    /// The incarnation each topic name has as of the newest applied index, and the
    /// incarnation each applied blob went to.
    topic_ids: BTreeMap<String, [u8; 16]>,
    blob_topic: BTreeMap<u128, String>,
    /// Simulated consumers: (incarnation, partition, consumer) → position.
    log_positions: BTreeMap<(String, u32, u32), u64>,
    log_polls: Vec<Poll>,
}

const TICK_MS: u64 = 50;

/// Runs one seed; `Ok` with its stats, or the first violation.
pub fn run_meta_seed(opts: &MetaSimOptions) -> Result<MetaSimStats, MetaViolation> {
    let mut w = World::new(*opts);
    w.run();
    match w.violation {
        Some(v) => Err(v),
        None => Ok(w.stats),
    }
}

impl World {
    fn new(opts: MetaSimOptions) -> World {
        assert!(opts.voters >= 1 && opts.voters + opts.learners <= 16, "1 to 16 members");
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let voters: Vec<u64> = (1..=opts.voters as u64).collect();
        let learners: Vec<u64> = (opts.voters as u64 + 1..=(opts.voters + opts.learners) as u64).collect();
        let net = Network::new(NetConfig {
            latency_ms_min: 1,
            latency_ms_max: 10,
            slow_ppm: if opts.faults { 10_000 } else { 0 },
            slow_ms_max: 300,
            drop_ppm: if opts.faults { 10_000 } else { 0 },
            duplicate_ppm: if opts.faults { 10_000 } else { 0 },
        });
        // Small logs, so snapshots are taken, sent to lagging members and restarted from.
        let log_entries_len_max = rng.random_range(16..128);
        let mut members = Vec::new();
        for &id in voters.iter().chain(&learners) {
            let mut config = MetaConfig::new(id, voters.clone(), learners.clone(), rng.random());
            config.log_entries_len_max = log_entries_len_max;
            let node = MetaNode::new(config).expect("a valid founding configuration");
            let durable = node.storage().clone();
            let next_tick_ms = rng.random_range(0..TICK_MS);
            members.push(Member {
                id,
                node: Some(node),
                durable,
                unsynced: Vec::new(),
                incarnation: 0,
                restart_at_ms: None,
                next_tick_ms,
            });
        }
        World {
            opts,
            rng,
            now_ms: 0,
            net,
            members,
            voters,
            learners,
            leaders: BTreeMap::new(),
            log: BTreeMap::new(),
            applied: BTreeMap::new(),
            requests: BTreeMap::new(),
            reads: BTreeMap::new(),
            acked_tables: BTreeSet::new(),
            next_request: 1,
            next_table: 1,
            leases: Vec::new(),
            tokens_seen: BTreeMap::new(),
            tokens: BTreeMap::new(),
            log_entries_len_max,
            stats: MetaSimStats::default(),
            violation: None,
            log_requests: BTreeMap::new(),
            log_sends: Vec::new(),
            topic_ids: BTreeMap::new(),
            blob_topic: BTreeMap::new(),
            log_positions: BTreeMap::new(),
            log_polls: Vec::new(),
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(MetaViolation { at_ms: self.now_ms, what });
        }
    }

    fn run(&mut self) {
        // Bootstrap: one proposal to a random member, retried until acknowledged below.
        let mut next_client_ms = 200;
        let mut next_fault_ms = if self.opts.faults { self.rng.random_range(500..1500) } else { u64::MAX };
        let mut heal_at_ms: Option<u64> = None;
        let end_safety = self.opts.safety_ms;
        let mut bootstrapped = false;
        while self.now_ms < end_safety && self.violation.is_none() {
            let next_tick = self.members.iter().map(|m| m.next_tick_ms).min().unwrap_or(u64::MAX);
            let next = [
                self.net.next_ms().unwrap_or(u64::MAX),
                next_tick,
                next_client_ms,
                next_fault_ms,
                end_safety,
            ]
            .into_iter()
            .chain(heal_at_ms)
            .chain(self.members.iter().filter_map(|m| m.restart_at_ms))
            .min()
            .expect("non-empty");
            self.now_ms = next.max(self.now_ms);
            self.stats.events += 1;
            if self.now_ms >= end_safety {
                break;
            }
            if heal_at_ms.is_some_and(|t| t <= self.now_ms) {
                heal_at_ms = None;
                self.net.heal();
                let mut c = *self.net.config();
                c.drop_ppm = 10_000;
                self.net.set_config(c);
            }
            self.restart_due();
            if self.now_ms >= next_fault_ms {
                let heal_after = self.inject_fault();
                heal_at_ms = Some(self.now_ms + heal_after);
                next_fault_ms = self.now_ms + self.rng.random_range(500..2000);
            }
            if self.now_ms >= next_client_ms {
                let command = if bootstrapped { self.random_command() } else { self.bootstrap_command() };
                bootstrapped |= self.any_bootstrapped();
                self.propose_random(command);
                if bootstrapped && self.rng.random_bool(0.5) {
                    self.poll_log();
                }
                if self.rng.random_bool(0.3) {
                    self.read_random();
                }
                next_client_ms = self.now_ms + self.rng.random_range(20..120);
            }
            self.tick_due();
            self.deliver_due();
        }
        if self.violation.is_some() {
            return;
        }
        self.liveness();
    }

    fn any_bootstrapped(&self) -> bool {
        self.members.iter().any(|m| m.node.as_ref().is_some_and(|n| n.metadata().layout().is_some()))
    }

    fn bootstrap_command(&self) -> Command {
        let members = (1..=5)
            .map(|i| MemberSpec {
                id: format!("n{i}"),
                zone: format!("z{}", (i - 1) % 3 + 1),
                peer_address: format!("127.0.0.1:{}", 7000 + i),
                http_address: format!("127.0.0.1:{}", 8000 + i),
            })
            .collect();
        Command::Bootstrap { members, default_replicas: 3, tables: Vec::new() }
    }

    /// Mostly table creations (each acknowledged one must survive), with membership changes
    /// staged and committed against whatever version the proposer believes current, and the
    /// layout-transition progress reports that let the next commit through.
    fn random_command(&mut self) -> Command {
        let roll = self.rng.random_range(0..100);
        let version = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .filter_map(|n| n.metadata().layout().map(|l| l.version))
            .max()
            .unwrap_or(1);
        match self.rng.random_range(0..100) {
            0..=29 => return self.lease_command(),
            30..=49 => return self.log_command(),
            50..=59 => return self.group_command(),
            60..=64 => return self.sink_command(),
            65..=84 => return self.progress_command(),
            _ => {}
        }
        match roll {
            0..=59 => {
                let name = format!("t{}", self.next_table);
                self.next_table += 1;
                let conflict = if self.rng.random_bool(0.5) { Conflict::Siblings } else { Conflict::Lww };
                Command::CreateTable(TableDef { name, replicas: self.rng.random_range(1..=3), conflict })
            }
            60..=74 => {
                let i = self.rng.random_range(6..40);
                Command::Stage(Change::Join(MemberSpec {
                    id: format!("n{i}"),
                    zone: format!("z{}", i % 3 + 1),
                    peer_address: format!("127.0.0.1:{}", 7000 + i),
                    http_address: format!("127.0.0.1:{}", 8000 + i),
                }))
            }
            75..=84 => Command::Stage(Change::Leave { id: format!("n{}", self.rng.random_range(1..40)) }),
            85..=94 => Command::Commit { expected_version: version },
            95..=97 => Command::Unstage,
            _ => Command::Noop,
        }
    }

    /// A member's layout-transition report, as the data-path driver would send it: mostly a
    /// member behind on the tracker the transition needs next reports it for the newest
    /// version some node knows; sometimes any member reports its first missing tracker (early
    /// reports are refused), a random tracker, an old version or one not committed yet.
    fn progress_command(&mut self) -> Command {
        let newest = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .map(|n| n.metadata())
            .max_by_key(|m| m.layout().map_or(0, |l| l.version));
        let Some(metadata) = newest.filter(|m| m.layout().is_some()) else { return Command::Noop };
        let version = metadata.layout().map_or(1, |l| l.version);
        let tracked: Vec<(String, quorumdb_meta::MemberProgress)> =
            metadata.trackers().members().iter().map(|(id, p)| (id.clone(), *p)).collect();
        if tracked.is_empty() {
            return Command::Noop;
        }
        let needed = Tracker::ALL
            .into_iter()
            .find(|t| metadata.trackers().min(*t).is_some_and(|v| v < version))
            .unwrap_or(Tracker::SyncAck);
        let behind = metadata.trackers().behind(needed, version);
        let (member, progress) = tracked[self.rng.random_range(0..tracked.len())].clone();
        let next = Tracker::ALL.into_iter().find(|t| progress.get(*t) < version).unwrap_or(Tracker::SyncAck);
        match self.rng.random_range(0..10) {
            0..=6 if !behind.is_empty() => {
                let member = behind[self.rng.random_range(0..behind.len())].clone();
                Command::LayoutProgress { member, tracker: needed, version }
            }
            0..=7 => Command::LayoutProgress { member, tracker: next, version },
            8 => {
                let tracker = Tracker::ALL[self.rng.random_range(0..3)];
                Command::LayoutProgress { member, tracker, version }
            }
            _ if self.rng.random_bool(0.5) => {
                Command::LayoutProgress { member, tracker: next, version: version - 1 }
            }
            _ => Command::LayoutProgress { member, tracker: next, version: version + 1 },
        }
    }

    /// The log's sequencer (the same `quorumdb_meta::log` the server runs): topics created and
    /// deleted, appends (some of idempotent producers) and trims; every member must apply them
    /// with the same offsets.
    fn log_command(&mut self) -> Command {
        let topic = format!("log{}", self.rng.random_range(0..2));
        match self.rng.random_range(0..100) {
            0..=14 => Command::CreateTopic(TopicSpec {
                name: topic,
                partitions: self.rng.random_range(1..=3),
                replicas: 3,
                config: TopicConfig::default(),
            }),
            15..=74 => {
                let appends = (0..self.rng.random_range(1..=3))
                    .map(|_| AppendSpec {
                        topic: topic.clone(),
                        partition: self.rng.random_range(0..3),
                        records: self.rng.random_range(1..=5),
                        bytes: 100,
                        max_timestamp: self.next_request as i64,
                        blob: self.rng.random(),
                        producer: self.rng.random_bool(0.3).then(|| ProducerBatch {
                            id: self.rng.random_range(1..200),
                            epoch: 0,
                            base_sequence: self.rng.random_range(0..3) * 5,
                        }),
                    })
                    .collect();
                Command::Append { appends }
            }
            75..=84 => Command::Trim {
                topic,
                partition: self.rng.random_range(0..3),
                before: self.rng.random_range(0..40),
            },
            85..=94 => Command::InitProducerId,
            _ => Command::DeleteTopic { name: topic },
        }
    }

    /// Consumer groups' replicated commands (the same `quorumdb_meta::group` the server runs):
    /// generations proposed from the generation some member last applied (so racing
    /// proposals lose their compare-and-set), assignments, and offset commits from current and
    /// stale generations; every member must apply them alike.
    fn group_command(&mut self) -> Command {
        let group = format!("g{}", self.rng.random_range(0..2));
        let seen = self
            .members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .filter_map(|n| n.metadata().groups().group(&group).map(|g| g.generation))
            .max()
            .unwrap_or(0);
        let generation = seen - self.rng.random_range(0..2).min(seen);
        let member = |i: u32| format!("m{i}");
        let command = match self.rng.random_range(0..100) {
            0..=29 => {
                let members: Vec<GroupMember> = (0..self.rng.random_range(0..=3))
                    .map(|i| GroupMember {
                        id: member(i),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        ..Default::default()
                    })
                    .collect();
                GroupCommand::Generation {
                    group,
                    expected: generation,
                    protocol_type: "consumer".into(),
                    protocol: "range".into(),
                    leader: if members.is_empty() { String::new() } else { member(0) },
                    members,
                }
            }
            30..=49 => GroupCommand::Assign {
                group,
                generation,
                assignments: vec![(member(0), vec![1, 2]), (member(1), vec![3])],
            },
            50..=94 => GroupCommand::CommitOffsets {
                group,
                generation: if self.rng.random_bool(0.1) { -1 } else { generation },
                member: member(self.rng.random_range(0..4)),
                offsets: vec![OffsetSpec {
                    topic: format!("log{}", self.rng.random_range(0..2)),
                    partition: self.rng.random_range(0..3),
                    offset: self.rng.random_range(0..50),
                    leader_epoch: -1,
                    metadata: String::new(),
                }],
                commit_ms: self.next_request as i64,
            },
            _ => GroupCommand::Delete { groups: vec![group] },
        };
        Command::Group(command)
    }

    /// Sink definitions (`quorumdb_meta::sink`): creations of three names (some invalid, some
    /// already existing), pauses, resumes and deletes; every member must apply them alike.
    fn sink_command(&mut self) -> Command {
        use quorumdb_meta::sink::{NewSink, SinkCommand, SinkKey, SinkSettings, SinkValue};
        let name = format!("s{}", self.rng.random_range(0..3));
        let command = match self.rng.random_range(0..100) {
            0..=39 => SinkCommand::Create(Box::new(NewSink {
                name,
                topics: vec![format!("log{}", self.rng.random_range(0..2))],
                postgres: "host=127.0.0.1".into(),
                // One in ten is refused by validation, alike on every member.
                table: if self.rng.random_bool(0.1) { "bad;table".into() } else { "rows".into() },
                key: if self.rng.random_bool(0.5) { SinkKey::Offset } else { SinkKey::Field("id".into()) },
                value: SinkValue::Bytea,
                dead_letter_topic: None,
                settings: SinkSettings::default(),
                columns: Vec::new(),
                dedup: None,
                password: None,
            })),
            40..=59 => SinkCommand::Pause { name },
            60..=79 => SinkCommand::Resume { name },
            _ => SinkCommand::Delete { name },
        };
        Command::Sink(command)
    }

    /// Leases, locks and releases on three names, with leases and tokens the clients saw.
    fn lease_command(&mut self) -> Command {
        let lease =
            if self.leases.is_empty() { 0 } else { self.leases[self.rng.random_range(0..self.leases.len())] };
        let name = format!("l{}", self.rng.random_range(0..3));
        match self.rng.random_range(0..100) {
            0..=19 => Command::LeaseGrant { ttl_ms: self.rng.random_range(1_000..4_000) },
            20..=49 => Command::LeaseKeepAlive { id: lease },
            50..=54 => Command::LeaseRevoke { id: lease },
            55..=84 => Command::Acquire { name, lease, value: format!("v{}", self.next_request) },
            _ => {
                let token = self.tokens_seen.get(&name).copied().unwrap_or(1);
                Command::Release { name, token }
            }
        }
    }

    /// Fencing tokens, in log order per name: a new grant (token = its index) exceeds every
    /// earlier token of the name; a re-acquire returns the current one.
    fn check_token(&mut self, index: u64, name: &str, token: u64) {
        let tokens = self.tokens.entry(name.to_string()).or_default();
        if tokens.get(&index).is_some() {
            return;
        }
        let before = tokens.range(..index).next_back().map(|(_, t)| *t).unwrap_or(0);
        let after = tokens.range(index + 1..).next().map(|(_, t)| *t).unwrap_or(u64::MAX);
        let new_grant = token == index;
        let ok = if new_grant { before < token && token <= after } else { before == token && token <= after };
        tokens.insert(index, token);
        if !ok {
            self.fail(format!(
                "fencing token {token} for {name:?} at index {index} does not grow: {before} before it, {after} after"
            ));
        }
    }

    fn propose_random(&mut self, command: Command) {
        let Some(i) = self.random_live() else { return };
        let request = self.next_request;
        self.next_request += 1;
        let table = match &command {
            Command::CreateTable(t) => Some(t.name.clone()),
            Command::Acquire { name, .. } => Some(format!("lock:{name}")),
            _ => None,
        };
        self.stats.proposals += 1;
        let id = self.members[i].id;
        self.requests.insert((id, request), table);
        if let Command::Append { appends } = &command {
            self.log_requests.insert((id, request), (self.now_ms, appends.clone()));
        }
        let now_ms = self.now_ms;
        self.step(i, Input::Propose { now_ms, request, command });
    }

    /// A random live member, if any.
    fn random_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].node.is_some()).collect();
        (!live.is_empty()).then(|| live[self.rng.random_range(0..live.len())])
    }

    /// A read-index request at a random live member.
    fn read_random(&mut self) {
        let Some(i) = self.random_live() else { return };
        let request = self.next_request;
        self.next_request += 1;
        let floor = self.applied.values().copied().max().unwrap_or(0);
        self.reads.insert((self.members[i].id, request), floor);
        let now_ms = self.now_ms;
        self.step(i, Input::ReadIndex { now_ms, request });
    }

    fn tick_due(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].next_tick_ms <= self.now_ms {
                self.members[i].next_tick_ms = self.now_ms + TICK_MS;
                // Under the bug, a "sync" happens once per tick: deltas become durable late.
                let m = &mut self.members[i];
                for d in std::mem::take(&mut m.unsynced) {
                    m.durable.apply(&d).expect("deltas fit the durable image");
                }
                if self.members[i].node.is_some() {
                    let now_ms = self.now_ms;
                    self.step(i, Input::Tick { now_ms });
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        while self.net.next_ms().is_some_and(|t| t <= self.now_ms) {
            let Some((_, envelope)) = self.net.pop() else { break };
            let Some(envelope) = envelope else { continue };
            let Endpoint::Node(to) = envelope.to else { continue };
            if self.members[to].node.is_some() {
                self.step(to, Input::Message(envelope.msg.0));
            }
        }
    }

    fn index_of(&self, id: u64) -> usize {
        self.members.iter().position(|m| m.id == id).expect("a member id")
    }

    fn step(&mut self, i: usize, input: Input) {
        let Some(node) = self.members[i].node.as_mut() else { return };
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.step(input)));
        let effects = match stepped {
            Ok(effects) => effects,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let id = self.members[i].id;
                self.members[i].node = None;
                self.fail(format!("member {id} panicked: {message}"));
                return;
            }
        };
        let node = self.members[i].node.as_ref().expect("stepped above");
        let (id, term, leader) = (node.id(), node.term(), node.is_leader());
        if leader {
            let first = *self.leaders.entry(term).or_insert(id);
            if first != id {
                self.fail(format!("two leaders in term {term}: member {first} and member {id}"));
            }
        }
        for effect in effects {
            match effect {
                Effect::Send { to, message } => {
                    let to = self.index_of(to);
                    let now_ms = self.now_ms;
                    self.net.send(
                        &mut self.rng,
                        now_ms,
                        Endpoint::Node(i),
                        Endpoint::Node(to),
                        Raft(message),
                    );
                }
                Effect::Persist(delta) => {
                    if delta.snapshot.as_ref().is_some_and(|s| !s.get_data().is_empty()) {
                        self.stats.snapshots += 1;
                    }
                    let m = &mut self.members[i];
                    if self.opts.bug == Some(MetaBug::AckBeforePersist) {
                        m.unsynced.push(delta);
                    } else {
                        m.durable.apply(&delta).expect("deltas fit the durable image");
                    }
                }
                Effect::Applied { index, term, command, result } => {
                    self.stats.entries_applied += 1;
                    // Counted once per log entry, not once per member applying it.
                    let first_seen = !self.log.contains_key(&index);
                    if let (Some(Command::Acquire { name, .. }), Ok(Outcome::Acquired { token })) =
                        (&command, &result)
                    {
                        self.check_token(index, name, *token);
                        self.stats.tokens_granted += u64::from(*token == index && first_seen);
                    }
                    if let (Some(Command::LeaseExpire { .. }), Ok(Outcome::LeaseEnded { .. })) =
                        (&command, &result)
                    {
                        self.stats.leases_expired += u64::from(first_seen);
                    }
                    if first_seen {
                        self.track_log_apply(command.as_ref(), &result);
                    }
                    let shown = format!("{command:?} → {result:?}");
                    let previous = self.applied.insert(id, index).unwrap_or(0);
                    if index <= previous {
                        self.fail(format!("member {id} applied index {index} after {previous}"));
                    }
                    match self.log.get(&index) {
                        Some((t, s)) if *t != term || *s != shown => {
                            let what = format!(
                                "member {id} applied ({term}, {shown}) at index {index}, where ({t}, {s}) was applied before: a committed entry was replaced"
                            );
                            self.fail(what);
                        }
                        Some(_) => {}
                        None => {
                            self.log.insert(index, (term, shown));
                        }
                    }
                }
                Effect::ReadIndex { request, result } => {
                    let Some(floor) = self.reads.remove(&(id, request)) else {
                        self.fail(format!("member {id} answered read {request}, which it was never asked"));
                        continue;
                    };
                    self.stats.reads += 1;
                    if let Ok(index) = result {
                        self.stats.reads_confirmed += 1;
                        if index < floor {
                            self.fail(format!(
                                "member {id} answered a read index {index}, below index {floor} committed before the read"
                            ));
                        }
                    }
                }
                Effect::Reply { request, result } => {
                    if let Some((invoke_ms, specs)) = self.log_requests.remove(&(id, request)) {
                        self.record_append_reply(request, invoke_ms, specs, &result);
                    }
                    let table = self.requests.remove(&(id, request)).flatten();
                    match result {
                        Ok(outcome) => {
                            self.stats.acknowledged += 1;
                            match (table, outcome) {
                                (Some(t), Outcome::TableCreated) => {
                                    self.acked_tables.insert(t);
                                }
                                (Some(t), Outcome::Acquired { token }) => {
                                    if let Some(name) = t.strip_prefix("lock:") {
                                        self.tokens_seen.insert(name.to_string(), token);
                                    }
                                }
                                (_, Outcome::LeaseGranted { id, .. }) => self.leases.push(id),
                                _ => {}
                            }
                        }
                        Err(ProposeError::Refused(_)) => self.stats.refused += 1,
                        Err(
                            ProposeError::NoLeader
                            | ProposeError::Busy { .. }
                            | ProposeError::TooLarge { .. },
                        ) => self.stats.not_proposed += 1,
                        Err(ProposeError::Timeout { .. }) => self.stats.unknown += 1,
                    }
                }
            }
        }
    }

    fn restart_due(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].restart_at_ms.is_some_and(|t| t <= self.now_ms) {
                self.restart(i);
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.restart_at_ms = None;
        m.incarnation += 1;
        let mut storage = m.durable.clone();
        // A restart replays from its snapshot: applying the same indexes again is expected.
        let snapshot_index = storage.snapshot_ref().get_metadata().index;
        self.applied.insert(m.id, snapshot_index);
        if self.opts.bug == Some(MetaBug::LoseSnapshotState) {
            let mut snapshot = storage.snapshot_ref().clone();
            snapshot.set_data(Default::default());
            storage
                .apply(&PersistDelta { snapshot: Some(snapshot), ..Default::default() })
                .expect("the same snapshot position fits");
        }
        let mut config = MetaConfig::new(m.id, self.voters.clone(), self.learners.clone(), self.rng.random());
        config.log_entries_len_max = self.log_entries_len_max;
        match MetaNode::restart(config, storage) {
            Ok(node) => self.members[i].node = Some(node),
            Err(e) => {
                let id = self.members[i].id;
                self.fail(format!("member {id} cannot restart from its durable state: {e}"));
            }
        }
        // Requests the crashed incarnation had in flight are answered by nobody: unknown.
        let id = self.members[i].id;
        let lost: Vec<(u64, u64)> = self.requests.keys().filter(|(m, _)| *m == id).copied().collect();
        for k in lost {
            self.requests.remove(&k);
            self.stats.unknown += 1;
            if let Some((invoke_ms, specs)) = self.log_requests.remove(&k) {
                let timeout = Err(ProposeError::Timeout { timeout_ms: 0 });
                self.record_append_reply(k.1, invoke_ms, specs, &timeout);
            }
        }
    }

    fn crash(&mut self, i: usize, down_ms: u64) {
        let m = &mut self.members[i];
        if m.node.is_none() {
            return;
        }
        m.node = None;
        m.unsynced.clear();
        m.restart_at_ms = Some(self.now_ms + down_ms);
        self.stats.crashes += 1;
    }

    /// One fault; returns after how long the network heals.
    fn inject_fault(&mut self) -> u64 {
        let n = self.members.len();
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=34 => {
                let i = self.rng.random_range(0..n);
                let down = self.rng.random_range(100..3000);
                self.crash(i, down);
                0
            }
            35..=59 => {
                let mut side = BTreeSet::new();
                for i in 0..n {
                    if self.rng.random_bool(0.5) {
                        side.insert(i);
                    }
                }
                let other: BTreeSet<usize> = (0..n).filter(|i| !side.contains(i)).collect();
                self.net.partition(&[side, other]);
                self.stats.partitions += 1;
                self.rng.random_range(300..3000)
            }
            60..=79 => {
                // Leader loss: cut the current leader off alone.
                let leader = self.members.iter().position(|m| m.node.as_ref().is_some_and(|x| x.is_leader()));
                if let Some(l) = leader {
                    let rest: BTreeSet<usize> = (0..n).filter(|&i| i != l).collect();
                    self.net.partition(&[BTreeSet::from([l]), rest]);
                    self.stats.leader_isolations += 1;
                }
                self.rng.random_range(500..3000)
            }
            80..=89 => {
                // A crash of the leader itself, the most disruptive single crash.
                let leader = self.members.iter().position(|m| m.node.as_ref().is_some_and(|x| x.is_leader()));
                if let Some(l) = leader {
                    let down = self.rng.random_range(100..2000);
                    self.crash(l, down);
                }
                0
            }
            _ => {
                let mut c = *self.net.config();
                c.drop_ppm = self.rng.random_range(50_000..300_000).min(PPM);
                self.net.set_config(c);
                self.stats.loss_bursts += 1;
                self.rng.random_range(200..2000)
            }
        }
    }

    /// Heal, restart everyone, stop loss, then wait for every member to agree.
    fn liveness(&mut self) {
        self.net.heal();
        let mut c = *self.net.config();
        c.drop_ppm = 0;
        c.duplicate_ppm = 0;
        c.slow_ppm = 0;
        self.net.set_config(c);
        for i in 0..self.members.len() {
            if self.members[i].node.is_none() {
                self.restart(i);
            }
        }
        let healed_ms = self.now_ms;
        let deadline = healed_ms + 30_000;
        let mut final_request: Option<(u64, u64)> = None;
        while self.now_ms < deadline && self.violation.is_none() {
            let next_tick = self.members.iter().map(|m| m.next_tick_ms).min().unwrap_or(u64::MAX);
            self.now_ms = self.net.next_ms().unwrap_or(u64::MAX).min(next_tick).max(self.now_ms);
            self.stats.events += 1;
            self.tick_due();
            self.deliver_due();
            // Once a leader is known, one last proposal must commit.
            if final_request.is_none()
                && self.members.iter().any(|m| m.node.as_ref().is_some_and(|n| n.is_leader()))
            {
                let i = self
                    .members
                    .iter()
                    .position(|m| m.node.as_ref().is_some_and(|n| n.is_leader()))
                    .expect("a leader");
                let request = self.next_request;
                self.next_request += 1;
                let id = self.members[i].id;
                self.requests.insert((id, request), None);
                final_request = Some((id, request));
                let now_ms = self.now_ms;
                self.step(i, Input::Propose { now_ms, request, command: Command::Noop });
            }
            let final_done = final_request.is_some_and(|k| !self.requests.contains_key(&k));
            if final_done && self.converged() {
                self.stats.liveness_ms = self.now_ms - healed_ms;
                self.final_checks();
                return;
            }
        }
        if self.violation.is_none() {
            let indexes: Vec<String> = self
                .members
                .iter()
                .map(|m| {
                    let n = m.node.as_ref().expect("all restarted");
                    format!("{}: applied {} term {} leader {}", m.id, n.applied_index(), n.term(), n.leader())
                })
                .collect();
            self.fail(format!("no convergence within 30 s of the heal ({})", indexes.join("; ")));
        }
    }

    fn converged(&self) -> bool {
        let nodes: Vec<&MetaNode> = self.members.iter().filter_map(|m| m.node.as_ref()).collect();
        let Some(first) = nodes.first() else { return false };
        let bytes = first.metadata().encode();
        nodes.iter().all(|n| n.applied_index() == first.applied_index() && n.metadata().encode() == bytes)
            && first.applied_index() >= self.log.keys().next_back().copied().unwrap_or(0)
    }

    fn final_checks(&mut self) {
        let node = self.members[0].node.as_ref().expect("restarted");
        let metadata = node.metadata().clone();
        self.stats.terms_with_leader = self.leaders.len() as u64;
        self.stats.layout_version = metadata.layout().map_or(0, |l| l.version);
        // The transition trackers: the newest version is live, reads use a live version, and
        // never more than two are live (a commit waits for the previous transition).
        if let Some(newest) = metadata.layout() {
            let live = metadata.live_layouts();
            let read = metadata.read_version();
            if live.last().map(|l| l.version) != Some(newest.version)
                || live.len() > 2
                || !(metadata.min_sync_ack()..=newest.version).contains(&read)
            {
                let versions: Vec<u64> = live.iter().map(|l| l.version).collect();
                self.fail(format!(
                    "layout transition state broken: newest v{}, live {versions:?}, read v{read}",
                    newest.version
                ));
            }
        }
        let missing: Vec<&String> =
            self.acked_tables.iter().filter(|t| !metadata.tables().contains_key(*t)).collect();
        if !missing.is_empty() {
            let what = format!("{} acknowledged table creations lost: {:?}", missing.len(), missing);
            self.fail(what);
        }
        self.judge_log(&metadata);
    }

    /// Follows topic incarnations and where each applied batch went, in log order (an index is
    /// first applied only after every index before it).
    fn track_log_apply(
        &mut self,
        command: Option<&Command>,
        result: &Result<Outcome, quorumdb_meta::MetaError>,
    ) {
        match (command, result) {
            (Some(Command::CreateTopic(spec)), Ok(Outcome::Log(LogOutcome::TopicCreated { id }))) => {
                self.topic_ids.insert(spec.name.clone(), *id);
            }
            (Some(Command::DeleteTopic { name }), Ok(Outcome::Log(LogOutcome::TopicDeleting))) => {
                self.topic_ids.remove(name);
            }
            (Some(Command::Append { appends }), Ok(Outcome::Log(LogOutcome::Appended { results }))) => {
                for (spec, r) in appends.iter().zip(results) {
                    if let (Ok(r), Some(id)) = (r, self.topic_ids.get(&spec.topic)) {
                        if !r.duplicate {
                            self.blob_topic.insert(spec.blob, incarnation(&spec.topic, id));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// What the client of one append proposal was told, one send per batch.
    fn record_append_reply(
        &mut self,
        request: u64,
        invoke_ms: u64,
        specs: Vec<AppendSpec>,
        result: &Result<Outcome, ProposeError>,
    ) {
        // One process per batch of the proposal (a proposal carries up to three, sent at once).
        let process = |i: usize| u32::try_from(request * 4 + i as u64).unwrap_or(u32::MAX);
        let complete_ms = self.now_ms;
        let results: Vec<(OpResult, Option<u64>)> = match result {
            Ok(Outcome::Log(LogOutcome::Appended { results })) if results.len() == specs.len() => results
                .iter()
                .map(|r| match r {
                    Ok(a) if a.duplicate => (OpResult::Info, None),
                    Ok(a) => (OpResult::Ok, Some(a.base_offset)),
                    Err(_) => (OpResult::Fail, None),
                })
                .collect(),
            Ok(_) | Err(ProposeError::Refused(_)) => vec![(OpResult::Fail, None); specs.len()],
            Err(ProposeError::NoLeader | ProposeError::Busy { .. } | ProposeError::TooLarge { .. }) => {
                vec![(OpResult::Fail, None); specs.len()]
            }
            Err(ProposeError::Timeout { .. }) => vec![(OpResult::Info, None); specs.len()],
        };
        // An idempotent duplicate is acknowledged with the offset of the batch it repeats, which
        // holds another blob here: recorded as unknown (its own blob never lands), counted.
        if let Ok(Outcome::Log(LogOutcome::Appended { results })) = result {
            self.stats.log_acked_unjudged +=
                results.iter().filter(|x| x.as_ref().is_ok_and(|a| a.duplicate)).count() as u64;
        }
        for (i, (spec, (r, offset))) in specs.into_iter().zip(results).enumerate() {
            self.log_sends.push(SimSend {
                process: process(i),
                topic: spec.topic,
                partition: spec.partition,
                blob: spec.blob,
                invoke_ms,
                complete_ms,
                result: r,
                offset,
            });
        }
    }

    /// One simulated consumer poll: a random live member's applied index of a random
    /// partition, from the consumer's position.
    fn poll_log(&mut self) {
        let Some(i) = self.random_live() else { return };
        let name = format!("log{}", self.rng.random_range(0..2));
        let partition = self.rng.random_range(0..3u32);
        let consumer = self.rng.random_range(0..LOG_CONSUMERS);
        let Some(node) = self.members[i].node.as_ref() else { return };
        let log = node.metadata().log();
        let Some(topic) = log.topic(&name) else { return };
        let Some(part) = topic.partitions.get(partition as usize) else { return };
        let key = (incarnation(&name, &topic.id), partition, consumer);
        let (mut position, mut fresh) = match self.log_positions.get(&key) {
            Some(&p) => (p, false),
            None => (part.log_start, true),
        };
        if position < part.log_start {
            // Trimmed under the consumer: it resets, which starts a new session.
            position = part.log_start;
            fresh = true;
        }
        let from_offset = position;
        let batches: Vec<(u64, u64, u128)> = part
            .batches_from(position)
            .filter(|b| b.base_offset >= position)
            .take(LOG_POLL_BATCHES_MAX)
            .map(|b| (b.base_offset, b.end_offset(), b.blob))
            .collect();
        if let Some(&(_, end, _)) = batches.last() {
            position = end;
        }
        let now_ns = self.now_ms * 1_000_000;
        self.log_polls.push(Poll {
            process: 1_000_000 + consumer,
            topic: key.0.clone(),
            partition,
            invoke_ns: now_ns,
            complete_ns: now_ns,
            from_offset,
            fresh,
            records: batches.iter().map(|&(o, _, b)| (o, blob_value(b))).collect(),
            error: None,
        });
        self.log_positions.insert(key, position);
    }

    /// The log checker over every append, poll and the converged partitions.
    fn judge_log(&mut self, metadata: &quorumdb_meta::Metadata) {
        // Proposals still unanswered at the end may have committed: unknown outcome.
        for ((_, request), (invoke_ms, specs)) in std::mem::take(&mut self.log_requests) {
            self.record_append_reply(
                request,
                invoke_ms,
                specs,
                &Err(ProposeError::Timeout { timeout_ms: 0 }),
            );
        }
        let mut ops = Vec::new();
        let mut finals = BTreeSet::new();
        for (name, topic) in metadata.log().topics() {
            let key = incarnation(name, &topic.id);
            for (p, part) in topic.partitions.iter().enumerate() {
                let records: Vec<(u64, String)> =
                    part.batches().map(|b| (b.base_offset, blob_value(b.blob))).collect();
                self.stats.log_final += records.len() as u64;
                ops.push(LogOp::Final(FinalPartition {
                    topic: key.clone(),
                    partition: p as u32,
                    log_start: part.log_start,
                    high_watermark: part.next_offset,
                    records,
                }));
            }
            finals.insert(key);
        }
        for s in &self.log_sends {
            let topic =
                self.blob_topic.get(&s.blob).cloned().unwrap_or_else(|| format!("{}#unapplied", s.topic));
            if !finals.contains(&topic) {
                // A topic deleted since: its appends are gone on purpose.
                self.stats.log_acked_unjudged += u64::from(s.result == OpResult::Ok);
                continue;
            }
            self.stats.log_acked += u64::from(s.result == OpResult::Ok);
            ops.push(LogOp::Send(Send {
                process: s.process,
                topic,
                partition: s.partition,
                value: blob_value(s.blob),
                invoke_ns: s.invoke_ms * 1_000_000,
                complete_ns: s.complete_ms * 1_000_000,
                result: s.result,
                offset: s.offset,
                producer: None,
                error: None,
            }));
        }
        for p in &self.log_polls {
            if finals.contains(&p.topic) {
                self.stats.log_polls += 1;
                self.stats.log_polled += p.records.len() as u64;
                ops.push(LogOp::Poll(p.clone()));
            }
        }
        match check_log(&LogHistory::new(ops), &CheckConfig { examples_len_max: 1, ..CheckConfig::default() })
        {
            Ok(r) if r.anomalies == 0 => {}
            Ok(r) => {
                let example = serde_json::json!({
                    "duplicate": r.duplicate_examples, "lost": r.lost_examples,
                    "inconsistent": r.inconsistent_examples, "nonmonotonic": r.nonmonotonic_examples,
                    "skipped": r.skipped_examples, "unexpected": r.unexpected_examples,
                });
                self.fail(format!(
                    "log checker: {} anomalies (duplicates {}, lost {}, inconsistent offsets {}, non-monotonic polls {}, skipped polls {}, unexpected {}): {example}",
                    r.anomalies, r.duplicates, r.lost, r.inconsistent_offsets, r.nonmonotonic_polls, r.skipped_polls, r.unexpected_values
                ));
            }
            Err(e) => self.fail(format!("the simulated log history is not valid: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault-free run bootstraps, commits, and converges.
    #[test]
    fn fault_free_run_converges() {
        let stats =
            run_meta_seed(&MetaSimOptions { faults: false, safety_ms: 5_000, ..MetaSimOptions::DEFAULT })
                .expect("no violation");
        assert!(stats.acknowledged > 20, "{stats:?}");
        assert!(stats.layout_version >= 1, "{stats:?}");
    }

    /// A faulty run exercises the log judgement: appends acknowledged with offsets, polls that
    /// returned batches and final partitions all reach the log checker, which found nothing.
    #[test]
    fn faulty_runs_feed_the_log_checker() {
        let (mut acked, mut polled, mut final_batches) = (0, 0, 0);
        for seed in 0..5 {
            let stats =
                run_meta_seed(&MetaSimOptions { seed, ..MetaSimOptions::DEFAULT }).expect("no violation");
            (acked, polled, final_batches) =
                (acked + stats.log_acked, polled + stats.log_polled, final_batches + stats.log_final);
        }
        assert!(acked > 30 && polled > 30 && final_batches > 30, "{acked} {polled} {final_batches}");
    }

    /// Layout transitions run under faults: on some seeds every tracked member reports ack,
    /// sync and sync_ack for version 2 through the Raft log, so a version 3 commit goes through.
    #[test]
    fn transitions_finish_and_the_next_commit_goes_through() {
        let beyond = (0..30)
            .filter(|&seed| {
                let stats =
                    run_meta_seed(&MetaSimOptions { seed, ..MetaSimOptions::DEFAULT }).expect("no violation");
                stats.layout_version >= 3
            })
            .count();
        assert!(beyond >= 1, "no seed of 30 finished a layout transition and committed again");
    }

    /// The same seed gives the same run.
    #[test]
    fn runs_are_deterministic() {
        let opts = MetaSimOptions { seed: 3, safety_ms: 5_000, ..MetaSimOptions::DEFAULT };
        let a = run_meta_seed(&opts).expect("no violation");
        let b = run_meta_seed(&opts).expect("no violation");
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
