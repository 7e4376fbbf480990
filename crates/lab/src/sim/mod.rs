//! # Seeded whole-cluster simulation
//!
//! A QuorumDB cluster — every node's protocol cores, storage reduced to what matters for
//! durability, a network, clients and a fault schedule — run as a discrete-event simulation from
//! one seed, then judged. The approach is FoundationDB's and TigerBeetle's (everything from one
//! seed, so any failure replays exactly) with openraft's two phases: a *safety phase* with faults
//! and continuous invariant checks, then a *liveness phase* that heals everything and requires
//! convergence and no lost acknowledged write.
//!
//! ```text
//!   seed ──► StdRng ──► every choice: latencies, losses, faults, client ops, protocol knobs
//!
//!   8 clients ──ClientRead/ClientWrite──► any node (gateway) ──CoordinateWrite──► home replica
//!      │ record History                    ReadCoordinator                  ItemState::update
//!      │ (invoke/complete, ok/fail/info,   blocking read repair             WriteCoordinator
//!      │  tokens via to_token)                  │                                 │
//!      ◄──────────── ClientReply ───────────────┘          Replicate / Read / AeHashes /
//!                                                          AeLeafKeys / Ping ──► peers
//!   ┌──────────────────────────────────────────────────────────────────────────────────────┐
//!   │ net::Network: queue[(deliver_ms, seq)]; per message: latency, loss, duplicate;        │
//!   │ partitions checked at send and at delivery; paused nodes hold their messages          │
//!   └──────────────────────────────────────────────────────────────────────────────────────┘
//!   per node:  store ──► unsynced map ──Sync timer (group commit)──► durable map
//!              acks wait for the Sync · crash: unsynced lost · restart: from durable,
//!              hints restored (HintQueue::restore), Merkle trees rebuilt, new actor id
//!   node tick (10 ms): overdue replies · coordinator deadlines · HintQueue::tick ·
//!                      Exchange over MerkleTree (anti-entropy) · heartbeats
//!
//!   safety phase: ops + faults + invariants ──► liveness phase: heal, restart, stop faults ──►
//!   quiescent? (states equal, nothing unsynced, hints drained) ──► end checks + lost writes
//! ```
//!
//! ## What is simulated
//!
//! - **Nodes** (default 5 in 3 zones, one table, N = 3) run the shipping replica protocol,
//!   `quorumdb_core::replica::Replica`, one machine per shard ([`quorumdb_core::replica::SHARDS_LEN`], two),
//!   driven by `sim/driver.rs`, which only maps the machines' effects onto the simulated network,
//!   timers and an in-memory store (`MemStore`) and checks their trace events. A write
//!   is coordinated by its gateway if that is a home replica, else forwarded to the first home
//!   replica believed up, which mints a dot with `ItemState::update`, stores, and replicates the
//!   full state to the other home replicas while waiting for its own group commit; the
//!   `WriteCoordinator` answers at W acknowledgements, and when finished the replica hints every
//!   home replica that did not acknowledge. Reads ask every home replica; the `ReadCoordinator`
//!   answers at R replies after repairing the stale ones that replied (the default, blocking
//!   read repair), then repairs late repliers. A failure detector (heartbeats every 100 ms; a
//!   peer failing for 300 ms is down) decides whom requests skip and when hints flow.
//!   Anti-entropy runs `Exchange` against per-replica-set `MerkleTree`s kept in step with every
//!   store, pushing and pulling the differing keys.
//! - **Storage**: per node a durable map and an unsynced map. A store lands in the unsynced map
//!   (reads see it); a group commit, 1 to `fsync_ms_max` ms later, moves everything to the
//!   durable map and releases the acknowledgements waiting for it. Hints are stored the same
//!   way. A crash keeps only the durable maps (and the data dir's actor history).
//! - **Network** ([`net`]): 1–8 ms latency, 2 % of messages slow by up to 300 ms (reordering),
//!   0–2 % loss and 1 % duplicates of idempotent messages while faults are on.
//! - **Clocks**: true time is a `u64` of ms; a node's clock adds an offset of 0–2 s, drawn anew
//!   at each restart, so a node's clock can jump backwards across a crash.
//! - **Clients**: 8 processes, one op at a time, on 6 keys: 45 % reads, 45 % writes (unique
//!   values `w1`, `w2`, …; some with the context of the client's last read of the key, some
//!   blind), 10 % deletes with a context; R and W each `one`, `quorum` or `all`, a fifth of the writes with a sloppy quorum, reads with blocking repair (70 %), async,
//!   off or linearizable write-back (10 % each). A client talks
//!   to a live node 90 % of the time, else to any, and gives up after 600 ms (`info`). `fail` is
//!   recorded only when the write certainly reached no replica.
//! - **Faults** (safety phase, one every 50–600 ms): a crash of one node (a minority at most),
//!   now or at the instant its next group commit would complete; a power loss of a zone or of
//!   the whole cluster at such an instant; a pause (SIGSTOP) of 20–800 ms; a partition (one node
//!   cut off, or a random split) of 50 ms–2 s; a burst of 30–100 % loss of 20–500 ms. Per seed
//!   also: the group-commit delay, hint-queue limits (down to one hint, expiry from 0.5 s) and
//!   exchange limits (down to one leaf and two keys), so rare paths are common somewhere.
//!
//! ## What is checked
//!
//! Safety, continuously:
//! 1. Every stored state survives encode → decode unchanged; decoding enforces the causality
//!    invariants (sorted unique dots, each covered by the context). States from the wire decode.
//! 2. A replica's state only grows: each store descends the state it replaces.
//! 3. A dot names one write: no node mints a dot that already names a write of that key, and
//!    every sibling anywhere carries the value its dot was minted with.
//! 4. Acknowledged means durable: per (node, key) the simulator keeps the join of every state
//!    the node acknowledged; after every restart, and at the end, the node's durable state must
//!    descend it. (Durable states only grow, so a crash may lose what is unsynced, never that.)
//!
//! Liveness, after the heal: within [`LIVENESS_MS_MAX`] every node is up with nothing
//! unsynced, no hint queued and no request being coordinated, and every key's home replicas
//! hold identical states. Then: every kept Merkle tree equals one rebuilt from storage and the
//! replicas of a set have equal roots; invariant 4 holds everywhere; and the lost-write checker
//! ([`crate::checker::lost_writes`]) judges the recorded history against the converged states
//! (values and context token of each key): no acknowledged write lost, none resurrected, no
//! value from nowhere. A violation does not stop the run, so its report also says whether the
//! violation cost an acknowledged write.
//!
//! ## A finding: keeping the actor id and skipping counters loses writes
//!
//! Issue #7 suggested fixing actor churn (a fresh actor per unclean restart) by keeping the
//! actor and reserving dot counters in durable blocks, so a restarted replica mints above any
//! dot it may have lost. The simulator rejected it (seed 974 of that build): the restarted
//! replica's next write carries a context whose entry for its actor jumps past the lost dot,
//! and merging that state into a replica that does hold the lost write drops it — an
//! acknowledged write lost. Version vectors cannot express gaps, so the replica keeps a new
//! actor per unclean restart, and bounds contexts instead by dropping the entries of retired
//! incarnations (`ItemState::prune_retired`: only ever shrinks coverage, so no merge can drop a
//! write because of it). `--crash-loop N` makes the first node restart uncleanly N times, up
//! 250 ms and down 20 ms each time, while clients keep writing: with N = 200, 300 of 300 seeds
//! pass with faults, keys see up to ~100 writers, stored contexts stay at ~20–30 entries, and
//! no write is refused (with pruning disabled, seed 0 already refuses writes at 64 writers).
//!
//! ## A finding: dot reuse after a crash
//!
//! `crates/node` keeps one actor id per data dir, and its write coordinator replicates a new
//! state while its own fsync is still pending. If it crashes in that window, the dot it minted
//! survives on other replicas but not in its own durable state, so after the restart it mints
//! the same dot again for another write; merges then keep only one of the two values. The
//! simulator catches this with invariant 3 ([`Bug::ReuseActorAfterCrash`] reproduces the
//! node's old behaviour through the driver's actor seam), and on some seeds as a lost
//! acknowledged write. By default it simulates
//! the fix: a node that restarts after a crash stamps its writes with a new actor id.
//!
//! ## A join (`--join`)
//!
//! The last node starts outside layout v1 (a gateway only); at a random moment of the faulty
//! safety phase layout v2 adds it, and the world plays the metadata's layout trackers: every
//! node applies v1+v2 (writes need `w` in both replica sets, reads stay on v1) after its own
//! delay; once every node has it and no write from before runs, each node streams with a full
//! anti-entropy pass over v2's trees (retried until one has no failed exchange); then reads
//! move to v2, then v1 retires. Invariant 5, checked at the read switch: every acknowledged
//! strict write is durable on `w` of its v2 replicas. `--bug skip-layout-sync` (reads move
//! before the streaming) breaks it on 13 of seeds 0..50; with the protocol as built, 50 of 50
//! pass, the join taking 2–5 s of simulated time under faults.
//!
//! ## What is not simulated
//!
//! - The real shell around the replica: fjall (`ShardStore`), the group-commit thread, tokio,
//!   the TCP transport and its framing, HTTP and JSON, configuration, and the driver
//!   (`crates/node/src/node.rs`) that carries effects between them. The protocol itself is the
//!   server's own code: the server runs the same `Replica` machines.
//! - Disk faults: failed fsyncs and poisoning, torn or corrupted writes, lost or wiped data
//!   dirs, full disks. A crash loses exactly the writes since the last group commit.
//! - Last-writer-wins tables, scans and tombstone collection are in the replica but not
//!   exercised by the simulated clients yet (a fifth of the writes use a sloppy quorum, and
//!   reads use every repair mode, linearizable write-back included); the peer in-flight bound; membership changes other than
//!   one join (`--join`, below); more than one table. Item states cross the simulated network decoded (the codec
//!   is still checked on every store: encode → decode must give the state back).
//! - Client retries; partitions between clients and nodes (client messages can still be lost).
//! - Production timings: timeouts and intervals are scaled down (a 300 ms request timeout
//!   instead of 2 s, anti-entropy every 200 ms instead of 10 s) so that faults outlast them.
//! - Properties other than lost writes: stale reads, linearizability and session guarantees
//!   depend on R and W and are measured by the lab's scenarios, not asserted here.
//!
//! ## Replay
//!
//! A failure's message ends with the one command that replays it, e.g.
//! `quorumdb lab simulate --seeds 1 --start 42` (plus `--bug ack-before-fsync` when a deliberate
//! bug was on). The same commit and options always produce the same run: the only randomness is
//! the seeded `StdRng`, maps are ordered (`BTreeMap`), and nothing reads a clock or spawns a
//! thread. [`simulate`] returns the recorded history and final state for closer inspection.
//!
//! Measured on the 2-core development machine (default options: 5 nodes, 200 ops per seed):
//! `lab simulate --seeds 1000` takes about 5.5 s in a release build (4.6 million events; the shipping
//! replica runs two shard machines per node); the test suite's 300 seeds take about 18 s in a
//! debug build. With `--bug ack-before-fsync` (the driver reports a sync done before it is),
//! 717 of seeds 0..1000 fail, 51 of them also with acknowledged writes lost per the lost-write
//! checker alone; with `--bug reuse-actor-after-crash` (the driver keeps the actor id after a
//! crash), 155 fail, two with an acknowledged write lost.

mod driver;
pub mod meta;
pub mod net;
mod world;

use crate::fault::FaultKind;
use crate::history::{FinalState, History};
use net::NetStats;
use std::fmt;

/// Replication factor of the simulated table: the common Dynamo setting, and the one the lab's
/// scenarios use, so the simulator explores the configuration users run.
pub const REPLICATION_FACTOR: usize = 3;

/// Zones the nodes are spread over, round-robin. Three zones with five nodes is the uneven
/// layout where one node holds a replica of every key (see `ring.rs`), which concentrates load
/// and faults on it.
pub const ZONES_LEN: usize = 3;

/// Most nodes a simulation accepts: replica sets are bit masks of node indexes in a `u64`, and
/// a bigger cluster would not find more bugs per second than a small one.
pub const NODES_MAX: usize = 16;

/// Keys the clients use. Few, so that concurrent writes to one key (siblings, superseding,
/// read repair, hint coalescing) are the common case rather than the exception.
pub const KEYS_LEN: usize = 6;

/// Concurrent client processes.
pub const CLIENTS_LEN: usize = 8;

/// Virtual nodes per member. The simulator needs placement, not balance, and a small ring builds
/// in microseconds instead of the milliseconds the production default (1024) costs per seed.
pub const VNODES: usize = 16;

/// Period of each node's timer: coordinator deadlines, overdue replies, hint delivery,
/// anti-entropy and heartbeats are checked this often (node clock).
pub const TICK_MS: u64 = 10;

/// Deadline of a coordinator and timeout of every node-to-node request. Short compared with the
/// node's default (2 s) so that timeouts are frequent at simulated latencies of a few ms.
pub const REQUEST_TIMEOUT_MS: u64 = 300;

/// Extra time a gateway waits for a write coordinator it forwarded to, so that the coordinator
/// can report a failure it reached at its own deadline (the node adds 200 ms the same way).
pub const FORWARD_MARGIN_MS: u64 = 200;

/// A client gives up on a request after this long and records it as `info` (unknown outcome).
pub const CLIENT_TIMEOUT_MS: u64 = 600;

/// Heartbeat period of the failure detector.
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;

/// A peer whose requests have been failing this long is believed down: requests skip it and its
/// hints wait.
pub const FAILURE_TIMEOUT_MS: u64 = 300;

/// How often a node looks for hints to deliver (the node's `HANDOFF_TICK_MS`).
pub const HANDOFF_TICK_MS: u64 = 100;

/// Pause between two anti-entropy exchanges of one node (one replica set, one peer each).
pub const ANTIENTROPY_INTERVAL_MS: u64 = 200;

/// An exchange still unfinished after this long fails and the next one starts afresh.
pub const EXCHANGE_DEADLINE_MS: u64 = 2_000;

/// Upper bound of a seed's group-commit delay: a write waits up to this long for its fsync.
pub const FSYNC_MS_MAX: u64 = 20;

/// Upper bound of a node's clock offset from true time. Clocks are per-incarnation: a
/// restarted node draws a new offset, so its clock can jump backwards across a crash.
pub const CLOCK_SKEW_MS_MAX: u64 = 2_000;

/// The liveness phase must converge within this much simulated time after the heal, or the seed
/// fails. Hint back-off is at most 10 s and anti-entropy exchanges run every 200 ms, so a
/// healthy cluster converges in a few seconds; a minute separates slow from stuck.
pub const LIVENESS_MS_MAX: u64 = 60_000;

/// How often the liveness phase checks for quiescence.
pub const QUIESCENCE_CHECK_MS: u64 = 100;

/// Most events one seed may process: a bound on a run whose time stops advancing (a bug in the
/// simulator), far above the ~100 000 events of a default seed.
pub const EVENTS_MAX: u64 = 20_000_000;

/// Most violation messages a failure keeps (all are counted).
pub const VIOLATIONS_LEN_MAX: usize = 10;

const _: () = assert!(FAILURE_TIMEOUT_MS > HEARTBEAT_INTERVAL_MS, "the node refuses this config");
const _: () = assert!(TICK_MS < REQUEST_TIMEOUT_MS && TICK_MS <= HEARTBEAT_INTERVAL_MS);
const _: () = assert!(
    CLIENT_TIMEOUT_MS > REQUEST_TIMEOUT_MS + FORWARD_MARGIN_MS,
    "a client must outwait a forwarded write so that most failures reach it as answers"
);
const _: () = assert!(NODES_MAX <= 64, "replica sets are u64 bit masks");
const _: () = assert!(REPLICATION_FACTOR <= quorumdb_core::limits::REPLICATION_FACTOR_MAX);

/// A deliberately broken replica, to prove the simulator and its checkers can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Replicas (the coordinating one and the others) acknowledge a write as soon as it is in
    /// memory, before the group commit has made it durable; a crash then loses acknowledged
    /// writes.
    AckBeforeFsync,
    /// A restarted node keeps minting dots under the actor id it had before the crash, counting
    /// from a durable state that can lack dots it had already minted and replicated. This is
    /// what `crates/node` does today (the actor id is stored once in the data dir); see the
    /// module docs on dot reuse.
    ReuseActorAfterCrash,
    /// With `--join`: the layout trackers move reads to the new layout as soon as every node
    /// writes to it, without waiting for the data to stream to the new owners.
    SkipLayoutSync,
}

impl Bug {
    /// Every bug, for the command line.
    pub const ALL: [Bug; 3] = [Bug::AckBeforeFsync, Bug::ReuseActorAfterCrash, Bug::SkipLayoutSync];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
            Bug::ReuseActorAfterCrash => "reuse-actor-after-crash",
            Bug::SkipLayoutSync => "skip-layout-sync",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to simulate. Everything else is drawn from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size, `1..=NODES_MAX` (clamped).
    pub nodes: usize,
    /// Client operations in the safety phase, all clients together.
    pub ops: u64,
    /// Inject faults (crashes, pauses, partitions, loss, duplicates, clock offsets) in the safety
    /// phase. Without faults the network still reorders.
    pub faults: bool,
    /// A deliberately broken replica, or `None` for the protocol as the node implements it.
    pub bug: Option<Bug>,
    /// Unclean restarts the first node goes through, back to back, before the safety phase may
    /// end (0: none beyond the random faults). Clients keep writing meanwhile, so this is the
    /// crash-looping node whose every incarnation is a new writer of the hot keys.
    pub crash_loop: u64,
    /// The last node joins during the safety phase: it starts outside layout v1, v2 adds it,
    /// and the run follows the metadata's steps (dual writes, streaming by anti-entropy, the
    /// read switch, retirement of v1) under the same faults. The liveness phase waits for the
    /// join to finish, and the end checks use v2's replica sets.
    pub join: bool,
}

impl SimOptions {
    /// The defaults `quorumdb lab simulate` uses; a replay command names only what differs.
    pub const DEFAULT: SimOptions =
        SimOptions { seed: 0, nodes: 5, ops: 200, faults: true, bug: None, crash_loop: 0, join: false };

    /// The one command that replays this seed.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!("quorumdb lab simulate --seeds 1 --start {}", self.seed);
        if let Some(bug) = self.bug {
            cmd.push_str(&format!(" --bug {bug}"));
        }
        if self.nodes != Self::DEFAULT.nodes {
            cmd.push_str(&format!(" --nodes {}", self.nodes));
        }
        if self.ops != Self::DEFAULT.ops {
            cmd.push_str(&format!(" --ops {}", self.ops));
        }
        if !self.faults {
            cmd.push_str(" --no-faults");
        }
        if self.crash_loop != 0 {
            cmd.push_str(&format!(" --crash-loop {}", self.crash_loop));
        }
        if self.join {
            cmd.push_str(" --join");
        }
        cmd
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one seed did. Deterministic: the same options give the same stats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub seed: u64,
    /// Client operations invoked, and how they ended (`ok`, `fail`, `info`).
    pub ops: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    /// Faults injected in the safety phase, by kind.
    /// Node crashes, power losses included.
    pub crashes: u64,
    /// Correlated crashes: every node of a zone, or of the cluster, at once.
    pub power_losses: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub drop_bursts: u64,
    pub messages: NetStats,
    /// Group commits (fsyncs) completed.
    pub syncs: u64,
    pub hints_added: u64,
    pub hints_refused: u64,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    pub read_repairs: u64,
    pub exchanges_done: u64,
    pub exchanges_failed: u64,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    /// Forwarded writes also sent to a second home replica, and writes a replica recognised
    /// by their write id as already applied.
    pub writes_hedged: u64,
    pub writes_deduplicated: u64,
    /// Most entries in any stored item's context.
    pub context_len_max: u64,
    /// Most distinct writers (actor ids, one per data-dir incarnation) that minted dots of one
    /// key.
    pub writers_per_key_max: u64,
    /// From the lost-write checker: acknowledged writes, those in the final state, and those a
    /// later acknowledged or unknown write superseded knowingly.
    pub writes_acknowledged: u64,
    pub writes_survived: u64,
    pub writes_superseded: u64,
    /// With `--join`: simulated time from the layout commit to v1's retirement (0 without).
    pub join_ms: u64,
    /// Simulated time of each phase.
    pub safety_ms: u64,
    pub liveness_ms: u64,
    /// Events processed (messages and timers).
    pub events: u64,
}

impl SimStats {
    /// Faults injected in the safety phase by kind, under the names live lab runs use (power
    /// losses are counted among the crashes, drop bursts are `loss`).
    pub fn faults_by_kind(&self) -> [(FaultKind, u64); 4] {
        [
            (FaultKind::Crash, self.crashes),
            (FaultKind::Pause, self.pauses),
            (FaultKind::Partition, self.partitions),
            (FaultKind::Loss, self.drop_bursts),
        ]
    }

    /// Every fault injected, all kinds together.
    pub fn faults_injected(&self) -> u64 {
        self.faults_by_kind().iter().map(|(_, n)| n).sum()
    }
}

/// Which property a failed seed broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A safety invariant checked during the run (see the module docs).
    Invariant,
    /// The lost-write checker found acknowledged writes missing from the converged state (or
    /// resurrected or unexplained values).
    LostWrites,
    /// The liveness phase did not reach quiescence in time.
    NoConvergence,
    /// The recorded history is one the checkers refuse: a bug in the simulator itself.
    BadHistory,
    /// The options could not be turned into a cluster.
    Setup,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Invariant => "safety invariant violated",
            FailureKind::LostWrites => "acknowledged writes lost",
            FailureKind::NoConvergence => "replicas did not converge",
            FailureKind::BadHistory => "the simulator recorded an invalid history",
            FailureKind::Setup => "cannot set up the cluster",
        })
    }
}

/// A failed seed: what broke, when, and how to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFailure {
    pub options: SimOptions,
    pub kind: FailureKind,
    /// Simulated time of the failure (for invariants, of the end of the run; each detail line
    /// carries its own time).
    pub at_ms: u64,
    /// What broke, one finding per line, at most [`VIOLATIONS_LEN_MAX`] plus summaries.
    pub details: Vec<String>,
    /// Acknowledged writes the lost-write checker found missing from the converged state (0 if
    /// the run did not get that far): whether the failure cost clients data they were promised.
    pub lost_writes: u64,
}

impl SimFailure {
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// The one command that replays this failure.
    pub fn replay_command(&self) -> String {
        self.options.replay_command()
    }
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} failed: {} (simulated t={} ms)", self.options.seed, self.kind, self.at_ms)?;
        if let Some(bug) = self.options.bug {
            write!(f, " [deliberate bug: {bug}]")?;
        }
        for line in &self.details {
            write!(f, "\n  {line}")?;
        }
        write!(f, "\nreplay: {}", self.replay_command())
    }
}

impl std::error::Error for SimFailure {}

/// Everything one seed produced: the stats, the recorded history and the converged final state
/// (as far as it got), and the failure if any.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub stats: SimStats,
    pub history: History,
    pub final_state: FinalState,
    pub failure: Option<SimFailure>,
}

/// Runs one seed and keeps everything it produced.
pub fn simulate(opts: &SimOptions) -> SimRun {
    world::run(opts)
}

/// Runs one seed: its stats if every check passed, else what broke.
pub fn run_seed(opts: &SimOptions) -> Result<SimStats, SimFailure> {
    let run = simulate(opts);
    match run.failure {
        Some(failure) => Err(failure),
        None => Ok(run.stats),
    }
}
