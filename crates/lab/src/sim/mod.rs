//! Seeded whole-cluster simulation (doc written below, once the design has settled).

pub mod net;
mod node;
mod world;

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
pub const CLIENTS_LEN: usize = 4;

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
pub const CLIENT_TIMEOUT_MS: u64 = 1_000;

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
}

impl Bug {
    /// Every bug, for the command line.
    pub const ALL: [Bug; 1] = [Bug::AckBeforeFsync];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack-before-fsync",
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
}

impl SimOptions {
    /// The defaults `quorumdb lab simulate` uses; a replay command names only what differs.
    pub const DEFAULT: SimOptions = SimOptions { seed: 0, nodes: 5, ops: 200, faults: true, bug: None };

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
    pub crashes: u64,
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
    /// From the lost-write checker: acknowledged writes, those in the final state, and those a
    /// later acknowledged or unknown write superseded knowingly.
    pub writes_acknowledged: u64,
    pub writes_survived: u64,
    pub writes_superseded: u64,
    /// Simulated time of each phase.
    pub safety_ms: u64,
    pub liveness_ms: u64,
    /// Events processed (messages and timers).
    pub events: u64,
}

impl SimStats {
    /// Every fault injected, all kinds together.
    pub fn faults_injected(&self) -> u64 {
        self.crashes + self.pauses + self.partitions + self.drop_bursts
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
