//! The simulated world: one clock, one random source, one network, the nodes, the clients and
//! the fault schedule, and the checks of both phases. See the module docs of [`super`].

use super::driver::{shard_of_key, show, Msg, Reply, SimNode, SimReadRepair};
use super::net::{chance, Endpoint, Envelope, NetConfig, Network, PPM};
use super::{
    Bug, FailureKind, SimFailure, SimOptions, SimRun, SimStats, ANTIENTROPY_INTERVAL_MS, CLIENTS_LEN,
    CLIENT_TIMEOUT_MS, CLOCK_SKEW_MS_MAX, EVENTS_MAX, EXCHANGE_DEADLINE_MS, FAILURE_TIMEOUT_MS,
    FORWARD_MARGIN_MS, FSYNC_MS_MAX, HANDOFF_TICK_MS, HEARTBEAT_INTERVAL_MS, KEYS_LEN, LIVENESS_MS_MAX,
    NODES_MAX, QUIESCENCE_CHECK_MS, REPLICATION_FACTOR, REQUEST_TIMEOUT_MS, VIOLATIONS_LEN_MAX, VNODES,
    ZONES_LEN,
};
use crate::checker::{check_lost_writes, CheckConfig, LostWritesReport};
use crate::history::{FinalState, History, Op, OpKind, OpResult};
use quorumdb_core::antientropy::ExchangeLimits;
use quorumdb_core::causality::{ActorId, Dot, ItemState, Value, VersionVector};
use quorumdb_core::consistency::Level;
use quorumdb_core::handoff::HintLimits;
use quorumdb_core::key::ItemKey;
use quorumdb_core::placement::Placement;
use quorumdb_core::replica::{ReplicaConfig, ReplicaStats, TreeId};
use quorumdb_core::ring::Member;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The simulated table.
const TABLE: &str = "t";

/// History times are nanoseconds; the simulation counts milliseconds.
const NS_PER_MS: u64 = 1_000_000;

/// Pause between two faults of the safety phase.
const FAULT_GAP_MS_MIN: u64 = 50;
const FAULT_GAP_MS_MAX: u64 = 600;
/// How long a crashed node stays down: from shorter than a heartbeat to several request
/// timeouts, so both "nobody noticed" and "everyone routed around it" happen.
const DOWN_MS_MIN: u64 = 20;
const DOWN_MS_MAX: u64 = 1_500;
/// Bounds of the hedging delay of forwarded writes: half the simulated request timeout at
/// most, so that hedged copies (and the duplicate versions they create) are common.
const HEDGE_DELAY_MS_MIN: u64 = 20;
const HEDGE_DELAY_MS_MAX: u64 = 150;
/// Up and down times of the crash-looping node (`SimOptions::crash_loop`).
const CRASH_LOOP_UP_MS: u64 = 250;
const CRASH_LOOP_DOWN_MS: u64 = 20;
/// How long a paused process stays stopped.
const PAUSE_MS_MIN: u64 = 20;
const PAUSE_MS_MAX: u64 = 800;
/// How long a partition lasts.
const PARTITION_MS_MIN: u64 = 50;
const PARTITION_MS_MAX: u64 = 2_000;
/// How long a burst of message loss lasts, and how lossy it is.
const BURST_MS_MIN: u64 = 20;
const BURST_MS_MAX: u64 = 500;
const BURST_DROP_PPM_MIN: u32 = 300_000;
/// Client think time between two operations.
const THINK_MS_MAX: u64 = 20;
/// One-way latency range of the simulated links and their rare slow messages.
const LATENCY_MS_MAX: u64 = 8;
const SLOW_MS_MAX: u64 = 300;
const SLOW_PPM: u32 = 20_000;
/// Loss and duplication rates of the safety phase's background noise (bursts come on top).
const DROP_PPM_MAX: u32 = 20_000;
const DUPLICATE_PPM: u32 = 10_000;
/// With `SimOptions::join`: when the layout change is committed (drawn in this range), and how
/// late each node applies a new placement after the previous step (Raft apply skew).
const JOIN_AT_MS_MIN: u64 = 100;
const JOIN_AT_MS_MAX: u64 = 1_500;
const APPLY_SKEW_MS_MAX: u64 = 60;
/// How often the simulated layout trackers look at the nodes' reports.
const LAYOUT_CHECK_MS: u64 = 50;

/// Everything a node timer or fault can schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    NodeTick {
        node: usize,
        incarnation: u64,
    },
    Sync {
        node: usize,
        incarnation: u64,
    },
    ClientNext {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        op: u64,
    },
    Restart {
        node: usize,
    },
    Heal {
        generation: u64,
    },
    BurstEnd {
        generation: u64,
    },
    NextFault,
    /// The next step of `SimOptions::crash_loop`: crash the first node if it is up, else
    /// restart it.
    CrashLoop,
    CheckQuiescence,
    /// The simulated layout trackers' next look (`SimOptions::join`).
    LayoutCheck,
    /// Node `node` applies the metadata of layout step `step` (`JoinRun::steps`).
    Install {
        node: usize,
        step: usize,
    },
}

/// A crash that fires when one of its victims is about to complete a group commit: the moment
/// a node holds the most data it has not yet made durable, hence the worst moment to lose power.
/// Correct replicas survive a crash at any instant, so choosing the instant adversarially (as
/// FoundationDB's simulator does) only adds pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    Node(usize),
    Zone(usize),
    Cluster,
}

impl Armed {
    fn hits(self, node: usize) -> bool {
        match self {
            Armed::Node(n) => n == node,
            Armed::Zone(z) => node % ZONES_LEN == z,
            Armed::Cluster => true,
        }
    }
}

/// One key of the simulated table, with its placement worked out once.
pub(super) struct SimKey {
    /// `k0`, `k1`, …: the key in the history.
    pub(super) name: String,
    pub(super) storage: Vec<u8>,
    pub(super) item: ItemKey,
    /// Home replicas, primary first.
    pub(super) pref: Vec<usize>,
    /// The replica shard that owns the key on every node.
    pub(super) shard: usize,
    /// The Merkle tree the key belongs to.
    pub(super) tree: TreeId,
}

/// Per-seed protocol knobs, drawn from the seed so that different seeds explore different
/// corners (tiny hint queues, exchanges cut short, slow or fast group commits).
pub(super) struct Params {
    pub(super) fsync_ms_max: u64,
    pub(super) hint_limits: HintLimits,
    pub(super) exchange_limits: ExchangeLimits,
}

/// Ghost state: what the checks know and no node does.
#[derive(Default)]
pub(super) struct Ghost {
    /// Every dot ever minted per key, with its value: a dot must name exactly one write of its
    /// item (counters are per item, so the same dot names one write of each key).
    pub(super) minted: BTreeMap<(usize, Dot), Value>,
    /// Per (node, key), the join of every state the node acknowledged as durable.
    pub(super) acked: BTreeMap<(usize, usize), ItemState>,
    pub(super) violations: Vec<String>,
    pub(super) violations_total: u64,
    /// Most context entries any stored state had, and the most distinct writers (actors) of
    /// one key ever minted a dot: with a crash-looping node the second grows with every
    /// restart while pruning keeps the first bounded.
    pub(super) context_len_max: usize,
}

/// Counters the nodes bump; copied into [`SimStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) syncs: u64,
    pub(super) hints_added: u64,
    pub(super) hints_refused: u64,
    pub(super) hints_delivered: u64,
    pub(super) hints_dropped: u64,
    pub(super) read_repairs: u64,
    pub(super) exchanges_done: u64,
    pub(super) exchanges_failed: u64,
    pub(super) keys_pushed: u64,
    pub(super) keys_pulled: u64,
    pub(super) writes_hedged: u64,
    pub(super) writes_deduplicated: u64,
}

/// What every node handler may touch besides its own node: time, randomness, the network,
/// timers, the cluster layout and the ghost.
pub(super) struct Cx {
    /// True time, ms since the start of the run.
    pub(super) now_ms: u64,
    pub(super) rng: StdRng,
    pub(super) net: Network<Msg>,
    /// Timers by (time, sequence); the sequence keeps ties in scheduling order.
    timers: BTreeMap<(u64, u64), Timer>,
    timer_seq: u64,
    /// Request, job and op ids: unique across the run, so a reply can never be matched to a
    /// request of another incarnation.
    next_id: u64,
    pub(super) faults: bool,
    pub(super) bug: Option<Bug>,
    pub(super) names: Vec<String>,
    pub(super) keys: Vec<SimKey>,
    key_by_storage: BTreeMap<Vec<u8>, usize>,
    /// The placement every node starts with.
    pub(super) placement: Arc<Placement>,
    /// The replicas' configuration: the simulator's scaled-down timings and the seed's limits.
    pub(super) replica_config: ReplicaConfig,
    /// Which client issued each op (op ids are unique across the run).
    pub(super) op_clients: BTreeMap<u64, usize>,
    pub(super) params: Params,
    pub(super) ghost: Ghost,
    pub(super) counters: Counters,
}

impl Cx {
    /// Sends from a node.
    pub(super) fn send(&mut self, from: usize, to: Endpoint, msg: Msg) {
        let now = self.now_ms;
        self.net.send(&mut self.rng, now, Endpoint::Node(from), to, msg);
    }

    pub(super) fn timer(&mut self, at_ms: u64, timer: Timer) {
        self.timers.insert((at_ms, self.timer_seq), timer);
        self.timer_seq += 1;
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn key_index(&self, storage_key: &[u8]) -> Option<usize> {
        self.key_by_storage.get(storage_key).copied()
    }

    pub(super) fn key_name(&self, key: usize) -> String {
        self.keys.get(key).map_or_else(|| format!("key #{key}"), |k| k.name.clone())
    }

    /// A node's clock offset for a new incarnation.
    pub(super) fn draw_skew_ms(&mut self) -> u64 {
        if self.faults {
            self.rng.random_range(0..=CLOCK_SKEW_MS_MAX)
        } else {
            0
        }
    }

    /// Records a safety violation; the run goes on, so that the end-of-run checks still say
    /// what the violation cost.
    pub(super) fn violation(&mut self, message: String) {
        self.ghost.violations_total += 1;
        if self.ghost.violations.len() < VIOLATIONS_LEN_MAX {
            self.ghost.violations.push(format!("t={} ms: {message}", self.now_ms));
        }
    }

    /// Invariant: a dot names exactly one write. Checked when a node mints it.
    pub(super) fn mint(&mut self, node: usize, key: usize, dot: Dot, value: Value) {
        if let Some(earlier) = self.ghost.minted.get(&(key, dot)) {
            let message = format!(
                "{} minted dot {dot} for {} = {}, but it already names the write of {}",
                self.names[node],
                self.key_name(key),
                super::driver::show_value(&value),
                super::driver::show_value(earlier)
            );
            self.violation(message);
            return;
        }
        self.ghost.minted.insert((key, dot), value);
    }

    /// A node acknowledged `state` of `key` as durable.
    pub(super) fn record_ack(&mut self, node: usize, key: usize, state: &ItemState) {
        // Joined as plain dotted states: a node may have trimmed the write records that
        // would let a join treat two versions of one write as one, and the invariant is about
        // what the node must keep, which does not depend on them.
        self.ghost.acked.entry((node, key)).or_default().merge(&state.without_write_records());
    }
}

/// A client process: one operation at a time, remembering the context of its last read of
/// each key.
#[derive(Default)]
struct Client {
    pending: Option<Pending>,
    contexts: BTreeMap<usize, VersionVector>,
}

/// The operation a client waits for.
struct Pending {
    op: u64,
    /// Its record in the history.
    index: usize,
    key: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Clients and faults.
    Safety,
    /// Faults healed, clients done: converge.
    Liveness,
    /// Quiescent (or failed): stop.
    Done,
}

struct World {
    opts: SimOptions,
    cx: Cx,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    ops: Vec<Op>,
    phase: Phase,
    /// Link behaviour outside drop bursts.
    base_net: NetConfig,
    ops_issued: u64,
    /// Restarts of the crash loop so far.
    crash_loop_restarts: u64,
    /// Written values are `w1`, `w2`, …: unique across keys, as the checkers require.
    writes_issued: u64,
    /// Generations of the partition and drop burst in force, so that an old heal does not end
    /// a newer fault.
    partition_generation: u64,
    burst_generation: u64,
    liveness_started_ms: u64,
    /// A crash waiting for its victims' next group commit; see [`Armed`].
    armed: Option<Armed>,
    stats: SimStats,
    failure: Option<SimFailure>,
    final_state: FinalState,
    /// The layout change of `SimOptions::join`, if any.
    join: Option<JoinRun>,
}

/// A join of the last node, driven the way the metadata's layout trackers drive it: commit
/// (write to both versions, read the old) → every node acknowledged and no old write runs →
/// every node streamed its data (full anti-entropy pass over the new trees) → reads move to
/// the new version → the old version retires.
struct JoinRun {
    /// The placements in order: v1; v1+v2 reading v1; v1+v2 reading v2; v2.
    steps: Vec<Arc<Placement>>,
    /// The step committed last (0 before the join starts).
    step: usize,
    /// When step 1 (the layout change) was committed.
    committed_ms: u64,
    /// Nodes whose sync for v2 the trackers recorded (durable in the real metadata).
    synced: BTreeSet<usize>,
    /// Every acknowledged strict-quorum write so far: (key, w, the context it answered with).
    acked: Vec<(usize, usize, VersionVector)>,
}

/// Runs one seed to the end.
pub(super) fn run(opts: &SimOptions) -> SimRun {
    let mut world = match World::new(*opts) {
        Ok(world) => world,
        Err(failure) => {
            return SimRun {
                stats: SimStats { seed: opts.seed, ..SimStats::default() },
                history: History::default(),
                final_state: FinalState::default(),
                failure: Some(failure),
            }
        }
    };
    world.run_loop();
    world.into_run()
}

impl World {
    fn new(opts: SimOptions) -> Result<World, SimFailure> {
        let setup = |message: String| SimFailure {
            options: opts,
            kind: FailureKind::Setup,
            at_ms: 0,
            details: vec![message],
            lost_writes: 0,
        };
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let nodes_len = opts.nodes.clamp(1, NODES_MAX);
        let names: Vec<String> = (0..nodes_len).map(|i| format!("n{i}")).collect();
        let members: Vec<Member> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Member::new(name.clone(), format!("z{}", i % ZONES_LEN)))
            .collect();
        // With a join, the last node runs from the start but is a member only from v2 on.
        let join = opts.join && nodes_len >= 2;
        let v1: Vec<Member> = if join { members[..nodes_len - 1].to_vec() } else { members.clone() };
        let placement =
            Arc::new(Placement::new(&[(1, v1.clone())], 1, VNODES).map_err(|e| setup(e.to_string()))?);
        let n = REPLICATION_FACTOR.min(v1.len());
        let mut keys = Vec::with_capacity(KEYS_LEN);
        let mut key_by_storage = BTreeMap::new();
        for i in 0..KEYS_LEN {
            let name = format!("k{i}");
            let item = ItemKey::new(TABLE, name.as_bytes(), b"").map_err(|e| setup(e.to_string()))?;
            let pref = placement.read_set(item.placement_hash(), n);
            let storage = item.storage_key();
            key_by_storage.insert(storage.clone(), i);
            let shard = shard_of_key(&item);
            let mut set = pref.clone();
            set.sort_unstable();
            let tree = TreeId { table: TABLE.into(), set, shard };
            keys.push(SimKey { name, storage, item, pref, shard, tree });
        }

        // Ranges reach the extremes on purpose: a one-hint queue forces refusals (anti-entropy
        // must cover them), half-second hint expiry forces drops, one-leaf two-key exchanges
        // force `more_remaining`, and a 1 ms group commit narrows the crash window a 20 ms one
        // widens.
        let params = Params {
            fsync_ms_max: rng.random_range(1..=FSYNC_MS_MAX),
            hint_limits: HintLimits {
                hints_len_max: rng.random_range(1..=32),
                hint_bytes_max: HintLimits::default().hint_bytes_max,
                hint_age_ms_max: rng.random_range(500..=20_000),
                inflight_per_target_max: rng.random_range(1..=4),
            },
            exchange_limits: ExchangeLimits {
                leaves_max: rng.random_range(1..=8),
                keys_max: rng.random_range(2..=8),
            },
        };
        let base_net = NetConfig {
            latency_ms_min: 1,
            latency_ms_max: LATENCY_MS_MAX,
            slow_ppm: SLOW_PPM,
            slow_ms_max: SLOW_MS_MAX,
            drop_ppm: if opts.faults { rng.random_range(0..=DROP_PPM_MAX) } else { 0 },
            duplicate_ppm: if opts.faults { DUPLICATE_PPM } else { 0 },
        };
        let mut cx = Cx {
            now_ms: 0,
            rng,
            net: Network::new(base_net),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_id: 0,
            faults: opts.faults,
            bug: opts.bug,
            names,
            keys,
            key_by_storage,
            replica_config: replica_config(n, &params),
            placement: placement.clone(),
            op_clients: BTreeMap::new(),
            params,
            ghost: Ghost::default(),
            counters: Counters::default(),
        };
        let nodes: Vec<SimNode> = (0..nodes_len).map(|i| SimNode::new(i, &mut cx)).collect();
        for client in 0..CLIENTS_LEN {
            let at = cx.rng.random_range(0..=THINK_MS_MAX);
            cx.timer(at, Timer::ClientNext { client });
        }
        if opts.crash_loop > 0 {
            cx.timer(CRASH_LOOP_UP_MS, Timer::CrashLoop);
        }
        let join = if join {
            let v = VNODES;
            let both = |read| placement.next(&[(1, v1.clone()), (2, members.clone())], read, v);
            let steps = [both(1), both(2), placement.next(&[(2, members.clone())], 2, v)]
                .into_iter()
                .map(|p| p.map(Arc::new).map_err(|e| setup(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let at_ms = cx.rng.random_range(JOIN_AT_MS_MIN..=JOIN_AT_MS_MAX);
            cx.timer(at_ms, Timer::LayoutCheck);
            let mut all = vec![placement.clone()];
            all.extend(steps);
            Some(JoinRun { steps: all, step: 0, committed_ms: 0, synced: BTreeSet::new(), acked: Vec::new() })
        } else {
            None
        };
        if opts.faults {
            let at = cx.rng.random_range(FAULT_GAP_MS_MIN..=FAULT_GAP_MS_MAX);
            cx.timer(at, Timer::NextFault);
        }
        let mut world = World {
            opts,
            cx,
            nodes,
            clients: (0..CLIENTS_LEN).map(|_| Client::default()).collect(),
            ops: Vec::new(),
            phase: Phase::Safety,
            base_net,
            ops_issued: 0,
            crash_loop_restarts: 0,
            writes_issued: 0,
            partition_generation: 0,
            burst_generation: 0,
            liveness_started_ms: 0,
            armed: None,
            stats: SimStats { seed: opts.seed, ..SimStats::default() },
            failure: None,
            final_state: FinalState::default(),
            join,
        };
        world.maybe_end_safety();
        Ok(world)
    }

    /// Processes events in time order until the run is done. Messages and timers due at the
    /// same instant go messages first; either way the order is a function of the seed.
    fn run_loop(&mut self) {
        while self.phase != Phase::Done {
            self.stats.events += 1;
            if self.stats.events > EVENTS_MAX {
                self.fail(FailureKind::NoConvergence, vec![format!("more than {EVENTS_MAX} events")]);
                return;
            }
            let net_ms = self.cx.net.next_ms();
            let timer_ms = self.cx.timers.first_key_value().map(|((at, _), _)| *at);
            let message_first = match (net_ms, timer_ms) {
                (Some(n), Some(t)) => n <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => {
                    // Node ticks never stop, so only a broken schedule gets here.
                    self.fail(FailureKind::NoConvergence, vec!["the event queue ran dry".into()]);
                    return;
                }
            };
            if message_first {
                if let Some((at, envelope)) = self.cx.net.pop() {
                    self.cx.now_ms = self.cx.now_ms.max(at);
                    if let Some(envelope) = envelope {
                        self.deliver(envelope);
                    }
                }
            } else if let Some(((at, _), timer)) = self.cx.timers.pop_first() {
                self.cx.now_ms = self.cx.now_ms.max(at);
                self.on_timer(timer);
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope<Msg>) {
        match envelope.to {
            Endpoint::Client(client) => {
                if let Msg::ClientReply { op, reply } = envelope.msg {
                    self.complete(client, op, reply);
                }
            }
            Endpoint::Node(n) => {
                let Some(node) = self.nodes.get_mut(n) else { return };
                if !node.up {
                    return;
                }
                if node.paused_until_ms > self.cx.now_ms {
                    // A stopped process reads nothing; the message waits in its socket.
                    let at = node.paused_until_ms;
                    self.cx.net.deliver_at(at, envelope);
                    return;
                }
                node.on_message(&mut self.cx, envelope.from, envelope.msg);
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::NodeTick { node, incarnation } | Timer::Sync { node, incarnation } => {
                let Some(n) = self.nodes.get_mut(node) else { return };
                if !n.up || n.incarnation != incarnation {
                    return;
                }
                if n.paused_until_ms > self.cx.now_ms {
                    let at = n.paused_until_ms;
                    self.cx.timer(at, timer);
                    return;
                }
                if matches!(timer, Timer::Sync { .. }) {
                    if let Some(armed) = self.armed.filter(|a| a.hits(node)) {
                        // Power fails before this fsync completes.
                        self.armed = None;
                        let victims: Vec<usize> =
                            (0..self.nodes.len()).filter(|&i| self.nodes[i].up && armed.hits(i)).collect();
                        if armed != Armed::Node(node) {
                            self.stats.power_losses += 1;
                        }
                        for victim in victims {
                            self.crash(victim);
                        }
                        return;
                    }
                    n.on_sync(&mut self.cx);
                } else {
                    n.on_tick(&mut self.cx);
                }
            }
            Timer::ClientNext { client } => self.issue(client),
            Timer::ClientTimeout { client, op } => {
                self.complete(client, op, Reply::Unknown("client timeout".into()));
            }
            Timer::Restart { node } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    if !n.up {
                        n.restart(&mut self.cx);
                    }
                }
            }
            Timer::Heal { generation } => {
                if generation == self.partition_generation {
                    self.cx.net.heal();
                }
            }
            Timer::BurstEnd { generation } => {
                if generation == self.burst_generation {
                    let config = self.net_config();
                    self.cx.net.set_config(config);
                }
            }
            Timer::NextFault => {
                if self.phase == Phase::Safety {
                    self.inject_fault();
                    let at = self.cx.now_ms + self.cx.rng.random_range(FAULT_GAP_MS_MIN..=FAULT_GAP_MS_MAX);
                    self.cx.timer(at, Timer::NextFault);
                }
            }
            Timer::CrashLoop => self.crash_loop_step(),
            Timer::CheckQuiescence => self.check_quiescence(),
            Timer::LayoutCheck => self.layout_check(),
            Timer::Install { node, step } => {
                let Some(join) = &self.join else { return };
                let Some(p) = join.steps.get(step).cloned() else { return };
                let Some(n) = self.nodes.get_mut(node) else { return };
                if n.paused_until_ms > self.cx.now_ms {
                    let at = n.paused_until_ms;
                    self.cx.timer(at, timer);
                    return;
                }
                // A crashed node's process applies it when it restarts (it opens with the
                // placement it was last given, as a restarted node replays the metadata).
                if n.up {
                    n.install(&mut self.cx, p);
                } else {
                    n.placement = p;
                }
            }
        }
    }

    /// Invariant 5 (with a join): when reads move to v2, every acknowledged strict write is
    /// durable on at least `w` of its key's v2 replicas, so a read at `r` with `r + w > n`
    /// meets it. Writes from before the dual-write phase got there by the streaming; later
    /// ones by the joint quorum.
    fn check_read_switch(&mut self) {
        let Some(join) = &self.join else { return };
        let Some(v2) = join.steps.last().cloned() else { return };
        let n = REPLICATION_FACTOR.min(v2.live_members().len());
        let mut findings = Vec::new();
        for (key, w, ctx) in &join.acked {
            let homes = v2.read_set(self.cx.keys[*key].item.placement_hash(), n);
            let holding = homes
                .iter()
                .filter(|&&m| {
                    self.nodes[m].durable_state(&self.cx, *key).context().descends_modulo_pruning(ctx)
                })
                .count();
            if holding < (*w).min(homes.len()) {
                findings.push(format!(
                    "reads moved to v2 while an acknowledged w={w} write of {} ({}) is durable on only {holding} of its v2 replicas {:?}",
                    self.cx.key_name(*key),
                    ctx.to_token(),
                    homes.iter().map(|m| self.cx.names[*m].clone()).collect::<Vec<_>>()
                ));
            }
        }
        for f in findings {
            self.cx.violation(f);
        }
    }

    /// Commits layout step `step`: every node applies it after its own delay.
    fn commit_layout_step(&mut self, step: usize) {
        let Some(join) = &mut self.join else { return };
        join.step = step;
        if step == 1 {
            join.committed_ms = self.cx.now_ms;
        }
        for node in 0..self.nodes.len() {
            let at = self.cx.now_ms + self.cx.rng.random_range(0..=APPLY_SKEW_MS_MAX);
            self.cx.timer(at, Timer::Install { node, step });
        }
    }

    /// The simulated layout trackers: moves the join to its next step once every node reports
    /// what the real metadata would wait for (see [`JoinRun`]).
    fn layout_check(&mut self) {
        let Some(join) = &self.join else { return };
        let step = join.step;
        let Some(current) = join.steps.get(step).cloned() else { return };
        let newest = current.newest_version();
        let reports: Vec<(bool, bool, bool)> =
            self.nodes.iter().map(|n| n.layout_report(&current, newest)).collect();
        let all_have = reports.iter().all(|(has, _, _)| *has);
        let next = match step {
            0 => Some(1),
            // Acknowledged by every node, and no write from before is still running: stream.
            // The deliberate bug: reads move to v2 without waiting for the streaming.
            1 if self.cx.bug == Some(Bug::SkipLayoutSync)
                && all_have
                && reports.iter().all(|(_, old, _)| !old) =>
            {
                Some(2)
            }
            1 if all_have && reports.iter().all(|(_, old, _)| !old) => {
                let mut synced = join.synced.clone();
                for (i, (_, _, s)) in reports.iter().enumerate() {
                    if *s {
                        synced.insert(i);
                    }
                }
                let everyone = synced.len() == self.nodes.len();
                let pending: Vec<usize> = (0..self.nodes.len()).filter(|i| !synced.contains(i)).collect();
                if let Some(j) = &mut self.join {
                    j.synced = synced;
                }
                for i in pending {
                    if self.nodes[i].up && self.nodes[i].paused_until_ms <= self.cx.now_ms {
                        self.nodes[i].sync_layout(&mut self.cx, 2);
                    }
                }
                everyone.then_some(2)
            }
            // Every node reads from v2: the old version retires.
            2 if all_have => Some(3),
            3 if all_have => {
                // Done: the keys' homes are v2's from now on (the end checks use them).
                let n = REPLICATION_FACTOR.min(current.live_members().len());
                for k in &mut self.cx.keys {
                    k.pref = current.read_set(k.item.placement_hash(), n);
                    let mut set = current.sync_set(k.item.placement_hash(), n);
                    set.sort_unstable();
                    k.tree = TreeId { table: TABLE.into(), set, shard: k.shard };
                }
                if let Some(j) = &mut self.join {
                    j.step = 4;
                    self.stats.join_ms = self.cx.now_ms - j.committed_ms;
                }
                return;
            }
            _ => None,
        };
        if let Some(next) = next {
            if next == 2 {
                self.check_read_switch();
            }
            self.commit_layout_step(next);
        }
        let at = self.cx.now_ms + LAYOUT_CHECK_MS;
        self.cx.timer(at, Timer::LayoutCheck);
    }

    /// Link behaviour outside bursts: the seed's noise in the safety phase, none in liveness.
    fn net_config(&self) -> NetConfig {
        match self.phase {
            Phase::Safety => self.base_net,
            Phase::Liveness | Phase::Done => NetConfig { drop_ppm: 0, ..self.base_net },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Clients

    /// One step of the crash loop: the first node crashes after [`CRASH_LOOP_UP_MS`] up and
    /// restarts after [`CRASH_LOOP_DOWN_MS`] down, until it has restarted
    /// `SimOptions::crash_loop` times.
    fn crash_loop_step(&mut self) {
        if self.phase != Phase::Safety || self.crash_loop_done() {
            return;
        }
        let now = self.cx.now_ms;
        if self.nodes[0].up {
            self.stats.crashes += 1;
            self.nodes[0].absorb_stats(&mut self.cx.counters);
            self.nodes[0].crash();
            self.cx.timer(now + CRASH_LOOP_DOWN_MS, Timer::CrashLoop);
        } else {
            self.nodes[0].restart(&mut self.cx);
            self.crash_loop_restarts += 1;
            self.cx.timer(now + CRASH_LOOP_UP_MS, Timer::CrashLoop);
        }
        self.maybe_end_safety();
    }

    fn crash_loop_done(&self) -> bool {
        self.crash_loop_restarts >= self.opts.crash_loop
    }

    /// Starts the client's next operation, or lets it idle once the safety phase's ops are
    /// issued (and the crash loop, if any, is over).
    fn issue(&mut self, client: usize) {
        if self.phase != Phase::Safety || (self.ops_issued >= self.opts.ops && self.crash_loop_done()) {
            self.maybe_end_safety();
            return;
        }
        let Some(c) = self.clients.get(client) else { return };
        if c.pending.is_some() {
            return;
        }
        self.ops_issued += 1;
        let rng = &mut self.cx.rng;
        let key = rng.random_range(0..KEYS_LEN);
        let context = c.contexts.get(&key).cloned();
        let roll = rng.random_range(0..100);
        // Reads 45 %; writes with the last read's context 25 %; blind writes 20 %; deletes
        // (always with a context: the lost-write checker needs it) 10 %.
        let kind = match (roll, &context) {
            (0..45, _) | (90.., None) => OpKind::Read,
            (90.., Some(_)) => OpKind::Delete,
            _ => OpKind::Write,
        };
        let context_in = match kind {
            OpKind::Write if roll < 70 => context,
            OpKind::Delete => context,
            _ => None,
        };
        let level = match rng.random_range(0..10) {
            0..3 => Level::One,
            3..8 => Level::Quorum,
            _ => Level::All,
        };
        let n = REPLICATION_FACTOR.min(self.nodes.len());
        let needed = level.resolve("level", n).unwrap_or(1);
        // Clients mostly talk to nodes that are up, as a load balancer with health checks would;
        // sometimes to any node, which then never answers.
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.nodes[i].paused_until_ms <= self.cx.now_ms)
            .collect();
        let gateway = if !live.is_empty() && chance(&mut self.cx.rng, PPM / 10 * 9) {
            live[self.cx.rng.random_range(0..live.len())]
        } else {
            self.cx.rng.random_range(0..self.nodes.len())
        };

        let op = self.cx.next_id();
        self.cx.op_clients.insert(op, client);
        let (value, msg, setting) = match kind {
            OpKind::Read => {
                // Reads use every repair mode: blocking (the default) most, then async, off and
                // the linearizable write-back, each a different path through the replica.
                let (repair, name) = match self.cx.rng.random_range(0..10) {
                    0 => (SimReadRepair::Async, "-async"),
                    1 => (SimReadRepair::Off, "-norepair"),
                    2 => (SimReadRepair::WriteBack, "-linearizable"),
                    _ => (SimReadRepair::Blocking, ""),
                };
                (None, Msg::ClientRead { op, key, r: needed, repair }, format!("r{needed}{name}"))
            }
            OpKind::Write | OpKind::Delete => {
                let (value, stored) = if kind == OpKind::Write {
                    self.writes_issued += 1;
                    let v = format!("w{}", self.writes_issued);
                    (Some(v.clone()), Some(v.into_bytes()))
                } else {
                    (None, None)
                };
                let ctx = context_in.clone().unwrap_or_default();
                // A fifth of the writes ask for a sloppy quorum: stand-ins keep hints for down
                // home replicas and count toward W.
                let sloppy = chance(&mut self.cx.rng, PPM / 5);
                let setting = if sloppy { format!("w{needed}-sloppy") } else { format!("w{needed}") };
                (value, Msg::ClientWrite { op, key, value: stored, ctx, w: needed, sloppy }, setting)
            }
        };
        let now_ns = self.cx.now_ms * NS_PER_MS;
        self.ops.push(Op {
            process: client as u32,
            kind,
            table: TABLE.into(),
            key: self.cx.key_name(key),
            value,
            values: Vec::new(),
            invoke_ns: now_ns,
            complete_ns: now_ns,
            result: OpResult::Info,
            context_in: context_in.map(|c| c.to_token()),
            context_out: None,
            setting: Some(setting),
            phase: Some("safety".into()),
            error: None,
        });
        if let Some(c) = self.clients.get_mut(client) {
            c.pending = Some(Pending { op, index: self.ops.len() - 1, key });
        }
        let now = self.cx.now_ms;
        self.cx.net.send(&mut self.cx.rng, now, Endpoint::Client(client), Endpoint::Node(gateway), msg);
        self.cx.timer(now + CLIENT_TIMEOUT_MS, Timer::ClientTimeout { client, op });
    }

    /// Records the end of the client's pending op, if `op` is it (a late or duplicated reply
    /// is not).
    fn complete(&mut self, client: usize, op: u64, reply: Reply) {
        let Some(c) = self.clients.get_mut(client) else { return };
        let Some(pending) = c.pending.take_if(|p| p.op == op) else { return };
        let Some(record) = self.ops.get_mut(pending.index) else { return };
        record.complete_ns = self.cx.now_ms * NS_PER_MS;
        match reply {
            Reply::Written { ctx } => {
                record.result = OpResult::Ok;
                record.context_out = Some(ctx.to_token());
                // A strict write's `w` acks came from home replicas (no stand-ins).
                let strict_w = record
                    .setting
                    .as_deref()
                    .filter(|s| !s.ends_with("-sloppy"))
                    .and_then(|s| s.strip_prefix('w'))
                    .and_then(|n| n.parse::<usize>().ok());
                if let (Some(w), Some(join)) = (strict_w, &mut self.join) {
                    join.acked.push((pending.key, w, ctx.clone()));
                }
            }
            Reply::Read { state } => {
                record.result = OpResult::Ok;
                record.values =
                    state.values().iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
                record.context_out = Some(state.context().to_token());
                c.contexts.insert(pending.key, state.context().clone());
            }
            Reply::Fail(message) => {
                record.result = OpResult::Fail;
                record.error = Some(message);
            }
            Reply::Unknown(message) => {
                // A read with an unknown outcome changed nothing either; `info` is still the
                // honest record of a request that got no answer.
                record.result = OpResult::Info;
                record.error = Some(message);
            }
        }
        let at = self.cx.now_ms + self.cx.rng.random_range(0..=THINK_MS_MAX);
        self.cx.timer(at, Timer::ClientNext { client });
        self.maybe_end_safety();
    }

    // -----------------------------------------------------------------------------------------
    // Faults

    fn inject_fault(&mut self) {
        let now = self.cx.now_ms;
        let rng = &mut self.cx.rng;
        match rng.random_range(0..100) {
            // Crash one node, now or at its next group commit. At most a minority down at once,
            // else most writes fail and little of interest happens.
            0..25 => {
                let down = self.nodes.iter().filter(|n| !n.up).count();
                let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].up).collect();
                if up.is_empty() || down >= (self.nodes.len().saturating_sub(1)) / 2 {
                    return;
                }
                let node = up[rng.random_range(0..up.len())];
                if self.armed.is_none() && rng.random_bool(0.5) {
                    self.armed = Some(Armed::Node(node));
                } else {
                    self.crash(node);
                }
            }
            // Power loss at the next group commit of a victim: every node of one zone, or
            // (rarely) of the whole cluster. Correlated crashes are what fsync is for: only
            // they take every copy of an unsynced write at once.
            25..30 => {
                if self.armed.is_some() {
                    return;
                }
                self.armed = Some(if rng.random_range(0..3) == 0 {
                    Armed::Cluster
                } else {
                    Armed::Zone(rng.random_range(0..ZONES_LEN))
                });
            }
            30..50 => {
                let candidates: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up && self.nodes[i].paused_until_ms <= now)
                    .collect();
                if candidates.is_empty() {
                    return;
                }
                let node = candidates[rng.random_range(0..candidates.len())];
                self.nodes[node].paused_until_ms = now + rng.random_range(PAUSE_MS_MIN..=PAUSE_MS_MAX);
                self.stats.pauses += 1;
            }
            50..80 => {
                // Either one node cut off, or a random split in two.
                let len = self.nodes.len();
                let sides: Vec<BTreeSet<usize>> = if rng.random_bool(0.3) {
                    let lone = rng.random_range(0..len);
                    vec![BTreeSet::from([lone]), (0..len).filter(|&i| i != lone).collect()]
                } else {
                    let side: Vec<bool> = (0..len).map(|_| rng.random_bool(0.5)).collect();
                    vec![(0..len).filter(|&i| side[i]).collect(), (0..len).filter(|&i| !side[i]).collect()]
                };
                self.partition_generation += 1;
                let heal = now + rng.random_range(PARTITION_MS_MIN..=PARTITION_MS_MAX);
                self.cx.net.partition(&sides);
                self.cx.timer(heal, Timer::Heal { generation: self.partition_generation });
                self.stats.partitions += 1;
            }
            _ => {
                self.burst_generation += 1;
                let drop_ppm = rng.random_range(BURST_DROP_PPM_MIN..=PPM);
                let end = now + rng.random_range(BURST_MS_MIN..=BURST_MS_MAX);
                self.cx.net.set_config(NetConfig { drop_ppm, ..self.base_net });
                self.cx.timer(end, Timer::BurstEnd { generation: self.burst_generation });
                self.stats.drop_bursts += 1;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Phases

    /// Ends the safety phase once every op is issued and answered: heal everything and start
    /// waiting for convergence.
    fn maybe_end_safety(&mut self) {
        if self.phase != Phase::Safety
            || self.ops_issued < self.opts.ops
            || !self.crash_loop_done()
            || self.clients.iter().any(|c| c.pending.is_some())
        {
            return;
        }
        self.phase = Phase::Liveness;
        self.armed = None;
        self.stats.safety_ms = self.cx.now_ms;
        self.liveness_started_ms = self.cx.now_ms;
        self.cx.net.heal();
        let config = self.net_config();
        self.cx.net.set_config(config);
        for node in &mut self.nodes {
            node.paused_until_ms = 0;
            if !node.up {
                node.restart(&mut self.cx);
            }
        }
        let at = self.cx.now_ms + QUIESCENCE_CHECK_MS;
        self.cx.timer(at, Timer::CheckQuiescence);
    }

    /// Liveness: done once every node is settled and every key's home replicas agree; failed
    /// if that takes longer than [`LIVENESS_MS_MAX`].
    fn check_quiescence(&mut self) {
        let unsettled: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.is_settled())
            .map(|n| format!("{}: {}", self.cx.names[n.idx], n.unsettled_reason()))
            .collect();
        let diverged: Vec<String> = self
            .cx
            .keys
            .iter()
            .enumerate()
            .filter_map(|(key, k)| {
                let states: Vec<ItemState> =
                    k.pref.iter().map(|&p| self.nodes[p].current(&self.cx, key)).collect();
                let first = states.first()?;
                states.iter().any(|s| s != first).then(|| {
                    let each: Vec<String> = k
                        .pref
                        .iter()
                        .zip(&states)
                        .map(|(&p, s)| format!("{}: {}", self.cx.names[p], show(s)))
                        .collect();
                    format!("{} differs: {}", k.name, each.join("; "))
                })
            })
            .collect();
        let joining: Vec<String> = match &self.join {
            Some(j) if j.step < j.steps.len() => {
                vec![format!(
                    "the join is at step {} of {} (synced: {:?})",
                    j.step,
                    j.steps.len() - 1,
                    j.synced
                )]
            }
            _ => Vec::new(),
        };
        if unsettled.is_empty() && diverged.is_empty() && joining.is_empty() {
            self.stats.liveness_ms = self.cx.now_ms - self.liveness_started_ms;
            self.finish();
            return;
        }
        if self.cx.now_ms - self.liveness_started_ms >= LIVENESS_MS_MAX {
            let mut details = vec![format!("not quiescent {LIVENESS_MS_MAX} ms after the heal")];
            details.extend(unsettled);
            details.extend(diverged);
            details.extend(joining);
            self.stats.liveness_ms = self.cx.now_ms - self.liveness_started_ms;
            self.fail(FailureKind::NoConvergence, details);
            return;
        }
        let at = self.cx.now_ms + QUIESCENCE_CHECK_MS;
        self.cx.timer(at, Timer::CheckQuiescence);
    }

    /// The end-of-run checks on a quiescent cluster.
    fn finish(&mut self) {
        for i in 0..self.nodes.len() {
            self.nodes[i].check_acknowledged(&mut self.cx);
        }
        // Every replica set's trees agree with each other and with a rebuild from storage.
        let trees: BTreeSet<TreeId> = self.cx.keys.iter().map(|k| k.tree.clone()).collect();
        for tree in trees {
            let members = tree.set.clone();
            let mut roots = Vec::new();
            for &m in &members {
                let (kept, rebuilt) = self.nodes[m].tree_roots(&self.cx, &tree);
                if kept != rebuilt {
                    self.cx.violation(format!(
                        "{}: Merkle tree of replica set {:?} is out of step with storage",
                        self.cx.names[m], members
                    ));
                }
                roots.push(kept);
            }
            if roots.windows(2).any(|w| w[0] != w[1]) {
                self.cx.violation(format!(
                    "converged replica set {members:?} has different Merkle roots {roots:x?}"
                ));
            }
        }

        let mut final_state = FinalState::default();
        for (key, k) in self.cx.keys.iter().enumerate() {
            let Some(&home) = k.pref.first() else { continue };
            let state = self.nodes[home].durable_state(&self.cx, key);
            let values = state.values().iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
            final_state.push(TABLE, k.name.clone(), values, Some(state.context().to_token()));
        }
        self.final_state = final_state;
        let history = History::new(self.ops.clone());
        let report = match check_lost_writes(&history, &self.final_state, &CheckConfig::default()) {
            Ok(report) => report,
            Err(e) => {
                self.fail(FailureKind::BadHistory, vec![e.to_string()]);
                return;
            }
        };
        self.stats.writes_acknowledged = report.acknowledged;
        self.stats.writes_survived = report.survived;
        self.stats.writes_superseded = report.superseded;
        let findings = lost_write_findings(&report);
        if self.cx.ghost.violations_total > 0 {
            let mut details =
                vec![format!("{} invariant violations; the first:", self.cx.ghost.violations_total)];
            details.extend(self.cx.ghost.violations.iter().cloned());
            if findings.is_empty() {
                details.push("the lost-write checker found nothing".into());
            } else {
                details.push("and the lost-write checker:".into());
                details.extend(findings);
            }
            self.fail(FailureKind::Invariant, details);
        } else if !findings.is_empty() {
            self.fail(FailureKind::LostWrites, findings);
        } else {
            self.phase = Phase::Done;
        }
        if let Some(failure) = &mut self.failure {
            failure.lost_writes = report.lost;
        }
    }

    /// Crashes a node and schedules its restart.
    fn crash(&mut self, node: usize) {
        let back = self.cx.now_ms + self.cx.rng.random_range(DOWN_MS_MIN..=DOWN_MS_MAX);
        if let Some(n) = self.nodes.get_mut(node) {
            self.stats.crashes += 1;
            n.absorb_stats(&mut self.cx.counters);
            n.crash();
            self.cx.timer(back, Timer::Restart { node });
        }
    }

    fn fail(&mut self, kind: FailureKind, details: Vec<String>) {
        self.phase = Phase::Done;
        if self.failure.is_none() {
            self.failure =
                Some(SimFailure { options: self.opts, kind, at_ms: self.cx.now_ms, details, lost_writes: 0 });
        }
    }

    fn into_run(mut self) -> SimRun {
        let s = &mut self.stats;
        s.ops = self.ops.len() as u64;
        s.ops_ok = self.ops.iter().filter(|o| o.result == OpResult::Ok).count() as u64;
        s.ops_failed = self.ops.iter().filter(|o| o.result == OpResult::Fail).count() as u64;
        s.ops_unknown = self.ops.iter().filter(|o| o.result == OpResult::Info).count() as u64;
        s.messages = self.cx.net.stats().clone();
        for node in &self.nodes {
            node.absorb_stats(&mut self.cx.counters);
        }
        let c = &self.cx.counters;
        s.syncs = c.syncs;
        s.hints_added = c.hints_added;
        s.hints_refused = c.hints_refused;
        s.hints_delivered = c.hints_delivered;
        s.hints_dropped = c.hints_dropped;
        s.read_repairs = c.read_repairs;
        s.exchanges_done = c.exchanges_done;
        s.exchanges_failed = c.exchanges_failed;
        s.keys_pushed = c.keys_pushed;
        s.keys_pulled = c.keys_pulled;
        s.writes_hedged = c.writes_hedged;
        s.writes_deduplicated = c.writes_deduplicated;
        s.context_len_max = self.cx.ghost.context_len_max as u64;
        s.writers_per_key_max = {
            let mut per_key: BTreeMap<usize, BTreeSet<ActorId>> = BTreeMap::new();
            for (key, dot) in self.cx.ghost.minted.keys() {
                per_key.entry(*key).or_default().insert(dot.actor);
            }
            per_key.values().map(|a| a.len() as u64).max().unwrap_or(0)
        };
        SimRun {
            stats: self.stats,
            history: History::new(self.ops),
            final_state: self.final_state,
            failure: self.failure,
        }
    }
}

/// The lost-write checker's findings, one line each, examples included.
fn lost_write_findings(report: &LostWritesReport) -> Vec<String> {
    let mut out = Vec::new();
    if report.lost > 0 {
        out.push(format!("{} of {} acknowledged writes lost:", report.lost, report.acknowledged));
        for lost in &report.lost_examples {
            let op = &lost.write.op;
            out.push(format!(
                "  {} = {} by client {} acknowledged at t={} ms ({}), final values {:?}, final \
                 context covers it: {}",
                op.key,
                op.value.as_deref().unwrap_or("?"),
                op.process,
                op.complete_ns / NS_PER_MS,
                op.setting.as_deref().unwrap_or("?"),
                lost.final_values,
                lost.final_context_descends.map_or("unknown".into(), |d| d.to_string())
            ));
        }
    }
    if report.resurrected > 0 {
        out.push(format!("{} superseded values came back:", report.resurrected));
        for r in &report.resurrected_examples {
            out.push(format!(
                "  {} = {} superseded by op {}",
                r.write.op.key,
                r.write.op.value.as_deref().unwrap_or("?"),
                r.superseded_by.index
            ));
        }
    }
    if report.unexpected_final_values > 0 {
        out.push(format!("{} final values no write explains:", report.unexpected_final_values));
        for u in &report.unexpected_examples {
            out.push(format!("  {} = {}", u.key, u.value));
        }
    }
    out
}

/// The replicas' configuration in the simulator: production logic, simulated timings (scaled
/// down so faults outlast them) and the seed's limits.
fn replica_config(n: usize, params: &Params) -> ReplicaConfig {
    ReplicaConfig {
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        forward_margin_ms: FORWARD_MARGIN_MS,
        failure_timeout_ms: FAILURE_TIMEOUT_MS,
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        hint_limits: params.hint_limits,
        handoff_tick_ms: HANDOFF_TICK_MS,
        antientropy_interval_ms: ANTIENTROPY_INTERVAL_MS,
        exchange_limits: params.exchange_limits,
        exchange_deadline_ms: EXCHANGE_DEADLINE_MS,
        // Tombstone collection is not simulated yet (the lost-write checker reads the converged
        // states, and a purge makes "deleted" and "never written" look alike).
        tombstone_gc_interval_ms: 0,
        hedge_delay_ms_min: HEDGE_DELAY_MS_MIN,
        hedge_delay_ms_max: HEDGE_DELAY_MS_MAX,
        ..ReplicaConfig::with_defaults(n)
    }
}

/// Adds one replica's counters to the run's.
pub(super) fn add_stats(c: &mut Counters, s: &ReplicaStats) {
    c.hints_added += s.hints_added;
    c.hints_refused += s.hints_refused;
    c.hints_delivered += s.hints_delivered;
    c.hints_dropped += s.hints_dropped;
    c.read_repairs += s.read_repairs;
    c.exchanges_done += s.exchanges_done;
    c.exchanges_failed += s.exchanges_failed;
    c.keys_pushed += s.keys_pushed;
    c.keys_pulled += s.keys_pulled;
    c.writes_hedged += s.writes_hedged;
    c.writes_deduplicated += s.writes_deduplicated;
}
