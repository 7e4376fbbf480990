//! Scenario files: what a lab run does, as data.
//!
//! A scenario is a TOML file (format reference with an annotated example in `docs/lab.md`):
//! the cluster's shape, its tables, the settings to compare, the phases and their fault steps,
//! the workload and its parameters, and the checkers to run. Workloads and checkers stay Rust
//! code ([`super::workload::WORKLOADS`], [`quorumdb_lab::report::Checker`]) selected by name, so
//! a file can recombine them but cannot smuggle in behaviour the lab does not know.
//!
//! Loading is two steps. Serde with `deny_unknown_fields` turns the text into the raw form, so a
//! misspelt field is an error with its line and column rather than a setting silently ignored;
//! [`load`] then checks what serde cannot (references between sections, ranges, timings) and
//! resolves `$param` references and command-line overrides into a [`Scenario`] the driver runs
//! without further checks. Every error names the file (or the embedded scenario) it came from.
//!
//! The scenarios QuorumDB ships are embedded in the binary ([`EMBEDDED`]) so that
//! `quorumdb lab run az-failure` works from any directory.

use super::workload::{self, Workload};
use anyhow::{bail, Context, Result};
use quorumdb_client::ReadOptions;
use quorumdb_lab::report::Checker;
use quorumdb_lab::FaultKind;
use quorumdb_node::config::ConflictMode;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The scenarios shipped with QuorumDB: name and file text, in `lab list` order.
pub const EMBEDDED: [(&str, &str); 4] = [
    ("az-failure", include_str!("../../../../scenarios/az-failure.toml")),
    ("clock-skew-lww", include_str!("../../../../scenarios/clock-skew-lww.toml")),
    ("feed-read-your-writes", include_str!("../../../../scenarios/feed-read-your-writes.toml")),
    ("gray-failure", include_str!("../../../../scenarios/gray-failure.toml")),
];

/// Longest phase a run accepts, seconds, after `--duration` scaling: an hour per phase is past
/// any useful run and stops a typo (ms for s) from tying up the machine for days.
pub const PHASE_S_MAX: f64 = 3_600.0;
/// Largest cluster a scenario may ask for: every node is a process on this machine, and the
/// lab's timings assume they share a few cores.
pub const NODES_MAX: usize = 32;

/// A duration written as a number and a unit: `"250ms"`, `"10s"`, `"1.5m"`. Strings rather than
/// bare numbers so a file never leaves the reader guessing whether `10` is seconds or ms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Dur, String> {
        let bad = || {
            format!("bad duration {s:?}: expected a number followed by ms, s or m (e.g. \"250ms\", \"10s\")")
        };
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "ms" => v / 1000.0,
            "s" => v,
            "m" => v * 60.0,
            _ => return Err(bad()),
        };
        Duration::try_from_secs_f64(secs).map(Dur).map_err(|_| bad())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        Dur::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An integer, or `"$name"`: the value of a `[params]` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum IntOrParam {
    Int(i64),
    Param(String),
}

impl<'de> Deserialize<'de> for IntOrParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IntOrParam, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IntOrParam;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or \"$param\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrParam, E> {
                Ok(IntOrParam::Int(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrParam, E> {
                match v.strip_prefix('$') {
                    Some(name) => Ok(IntOrParam::Param(name.to_owned())),
                    None => Err(E::custom(format!("expected an integer or \"$param\", got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, or `"$name"`: the value of a `[params]` entry. Integers are accepted as numbers
/// too, so `probability = 1` means what it says.
#[derive(Debug, Clone, PartialEq)]
pub enum FloatOrParam {
    Float(f64),
    Param(String),
}

impl<'de> Deserialize<'de> for FloatOrParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FloatOrParam, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FloatOrParam;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or \"$param\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FloatOrParam, E> {
                Ok(FloatOrParam::Float(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FloatOrParam, E> {
                Ok(FloatOrParam::Float(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FloatOrParam, E> {
                match v.strip_prefix('$') {
                    Some(name) => Ok(FloatOrParam::Param(name.to_owned())),
                    None => Err(E::custom(format!("expected a number or \"$param\", got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Which timeouts the cluster's servers and the workload's requests run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timeouts {
    /// The lab's: heartbeats every 200 ms, a peer down after 1 s, requests timing out after 1 s,
    /// so a phase sees the steady state of a fault rather than its detection.
    #[default]
    Lab,
    /// The server's defaults (heartbeats 500 ms, down after 3 s, requests 2 s), and requests
    /// without a `timeout_ms` of their own: what a default deployment lives through while a
    /// fault is being detected, which is what gray failures are about.
    Server,
}

impl Timeouts {
    pub fn name(self) -> &'static str {
        match self {
            Timeouts::Lab => "lab",
            Timeouts::Server => "server",
        }
    }
}

/// How the settings share the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingsRun {
    /// Each setting runs every phase with its own processes and keys, one after another, so a
    /// fault is measured against one setting at a time.
    #[default]
    Sequential,
    /// All settings at once, through the same phases, driven by the same processes.
    Together,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PickKind {
    Zone,
    Node,
}

/// When a pick is drawn from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PickPer {
    /// Once, at the start of the run (the value is reported in `cluster`).
    #[default]
    Run,
    /// Again for each setting (each group of settings run together).
    Setting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Plain reads at `r`.
    #[default]
    Quorum,
    /// `consistency=linearizable` reads (the server picks r = quorum).
    Linearizable,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Quorum => "quorum",
            Consistency::Linearizable => "linearizable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ClientsMode {
    /// Clients stop sending requests to the target's nodes before the fault (clients in a dead
    /// zone are dead too) and use them again once the fault is undone.
    Leave,
    /// Clients keep using the target (the default).
    Stay,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: String,
    #[serde(default)]
    settings_run: SettingsRun,
    phase_duration: Dur,
    #[serde(default)]
    note: String,
    /// The phase fault windows are compared with (throughput relative to it).
    baseline: Option<String>,
    checkers: Vec<String>,
    cluster: RawCluster,
    tables: Vec<RawTable>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    picks: BTreeMap<String, RawPick>,
    settings: Vec<RawSetting>,
    workload: RawWorkload,
    phases: Vec<RawPhase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nodes: usize,
    zones: usize,
    replicas: usize,
    #[serde(default)]
    timeouts: Timeouts,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    #[serde(default)]
    conflict: ConflictMode,
    replicas: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPick {
    kind: PickKind,
    #[serde(default)]
    per: PickPer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetting {
    name: String,
    table: String,
    r: u32,
    w: u32,
    #[serde(default)]
    consistency: Consistency,
    #[serde(default)]
    session: bool,
}

/// `name` selects the workload; the other keys are its parameters, checked by the workload
/// itself (each has its own `deny_unknown_fields` struct). Flattened, so no
/// `deny_unknown_fields` here: the workload's own check is the strict one.
#[derive(Debug, Deserialize)]
struct RawWorkload {
    name: String,
    #[serde(flatten)]
    params: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: String,
    duration: Option<Dur>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    at: Dur,
    action: String,
    target: Option<String>,
    clients: Option<ClientsMode>,
    offset_ms: Option<IntOrParam>,
    delay_ms: Option<IntOrParam>,
    probability: Option<FloatOrParam>,
    label: Option<String>,
}

/// What a fault step does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// SIGKILL the target's nodes (a crash: no flush, no goodbye).
    Kill,
    /// SIGSTOP them (a GC pause, a hung VM).
    Pause,
    /// Cut peer traffic between the target and every other node, both ways.
    Partition,
    /// The target's nodes stop sending peer messages (requests and answers) to every other
    /// node, while still receiving theirs: they hear everything and answer nothing, so work sent
    /// to them (a forwarded write, a replica update) may be applied there without anyone
    /// learning it. The direction a failing NIC or an egress firewall rule cuts.
    OneWayPartition,
    /// Every peer message the target's nodes send is dropped with this probability (without a
    /// target: every node's), requests and answers alike. Every round trip of a target node is
    /// thus lost with that probability, whichever side started it; without a target a round
    /// trip loses its request or its answer, about twice as often. A lost message is never
    /// retransmitted: the request times out.
    Loss(f64),
    /// Every peer message the target's nodes send is held back this many ms.
    Delay(u64),
    /// The target's nodes sleep this many ms before each group-commit fsync (a slow disk).
    SlowDisk(u64),
    /// Add `offset_ms` to the target's wall clocks.
    Skew(i64),
    /// Start the target's killed nodes again, with their data.
    Restart,
    /// SIGCONT the target's paused nodes.
    Resume,
    /// Remove every network fault (cuts both ways and one way, loss, delays) on every node.
    Heal,
    /// Reset the target's clocks.
    Unskew,
    /// Undo every fault on the target: restart, resume, heal the network, reset clocks and disks.
    Recover,
}

impl Action {
    const NAMES: [&'static str; 13] = [
        "kill",
        "pause",
        "partition",
        "one-way-partition",
        "loss",
        "delay",
        "slow-disk",
        "skew",
        "restart",
        "resume",
        "heal",
        "unskew",
        "recover",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Partition => "partition",
            Action::OneWayPartition => "one-way-partition",
            Action::Loss(_) => "loss",
            Action::Delay(_) => "delay",
            Action::SlowDisk(_) => "slow-disk",
            Action::Skew(_) => "skew",
            Action::Restart => "restart",
            Action::Resume => "resume",
            Action::Heal => "heal",
            Action::Unskew => "unskew",
            Action::Recover => "recover",
        }
    }

    /// The kind of fault the action starts; `None` for an action that undoes faults.
    pub fn fault_kind(self) -> Option<FaultKind> {
        match self {
            Action::Kill => Some(FaultKind::Crash),
            Action::Pause => Some(FaultKind::Pause),
            Action::Partition => Some(FaultKind::Partition),
            Action::OneWayPartition => Some(FaultKind::OneWayPartition),
            Action::Loss(_) => Some(FaultKind::Loss),
            Action::Delay(_) => Some(FaultKind::Delay),
            Action::SlowDisk(_) => Some(FaultKind::SlowDisk),
            Action::Skew(_) => Some(FaultKind::Skew),
            Action::Restart | Action::Resume | Action::Heal | Action::Unskew | Action::Recover => None,
        }
    }

    /// Whether the action starts a fault (rather than undoing one).
    pub fn is_fault(self) -> bool {
        self.fault_kind().is_some()
    }

    /// Whether the action is a fault of the peer network, which `heal` undoes.
    pub fn is_network(self) -> bool {
        matches!(self, Action::Partition | Action::OneWayPartition | Action::Loss(_) | Action::Delay(_))
    }
}

/// Which nodes a step acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `[picks]` entry, drawn from the seed.
    Pick(String),
    /// `zone:z2`.
    Zone(String),
    /// `node:n3`, as an index (n3 is 2).
    Node(usize),
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Offset from the start of the phase.
    pub at: Duration,
    pub action: Action,
    pub target: Option<Target>,
    /// Clients stop using the target before the fault and resume when it is undone.
    pub clients_leave: bool,
    /// Label of the fault window in the report (default: derived from target and action).
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    /// In `at` order.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub conflict: ConflictMode,
    pub replicas: usize,
}

/// One setting to compare: which table, and the options of every request.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    pub table: String,
    pub r: u32,
    pub w: u32,
    pub consistency: Consistency,
    /// The `timeout_ms` of every request under this setting; `None` leaves it to the server.
    pub timeout_ms: Option<u64>,
    /// Every workload process is one session (`X-QuorumDB-Session`) over all its requests, so
    /// its reads hold what it wrote and read before (docs/api.md, "Sessions").
    pub session: bool,
}

impl Setting {
    /// The read options of every workload read under this setting.
    pub fn read_options(&self) -> ReadOptions {
        let timeout_ms = self.timeout_ms;
        match self.consistency {
            // The server sets r=quorum itself and refuses an explicit r with this mode.
            Consistency::Linearizable => {
                ReadOptions { consistency: Some("linearizable".into()), timeout_ms, ..ReadOptions::default() }
            }
            Consistency::Quorum => {
                ReadOptions { r: Some(self.r.to_string()), timeout_ms, ..ReadOptions::default() }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pick {
    pub name: String,
    pub kind: PickKind,
    pub per: PickPer,
}

#[derive(Debug, Clone, Copy)]
pub struct ClusterShape {
    pub nodes: usize,
    pub zones: usize,
    pub replicas: usize,
    pub timeouts: Timeouts,
}

/// A loaded, checked scenario with overrides applied: the driver's whole input besides the seed.
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub settings_run: SettingsRun,
    /// The reference phase length after `--duration` (what the report calls `phase_s`).
    pub phase_duration: Duration,
    pub note: String,
    /// The phase fault windows are compared with, if the file names one.
    pub baseline: Option<String>,
    pub checkers: BTreeSet<Checker>,
    pub cluster: ClusterShape,
    pub tables: Vec<TableDef>,
    /// Parameter values after overrides (reported in the report's `cluster`).
    pub params: BTreeMap<String, toml::Value>,
    /// In name order, which is also the order they are drawn in.
    pub picks: Vec<Pick>,
    pub settings: Vec<Setting>,
    pub workload: Box<dyn Workload>,
    pub phases: Vec<Phase>,
}

impl Scenario {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// What the command line changes in a scenario.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Reference phase length, seconds: every timing in the file scales by
    /// `duration_s / phase_duration`.
    pub duration_s: Option<f64>,
    /// The workload's `clients` and `keys` parameters.
    pub clients: Option<usize>,
    pub keys: Option<usize>,
    /// Only these settings, in this order.
    pub settings: Vec<String>,
    /// `[params]` values.
    pub params: Vec<(String, toml::Value)>,
}

/// The embedded scenario called `name`.
pub fn embedded(name: &str) -> Option<&'static str> {
    EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// Parses and checks scenario `text`; `origin` (a path, or "embedded scenario NAME") starts
/// every error message.
pub fn load(origin: &str, text: &str, o: &Overrides) -> Result<Scenario> {
    check(text, o).with_context(|| origin.to_owned())
}

fn check(text: &str, o: &Overrides) -> Result<Scenario> {
    let mut raw: RawScenario =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;

    // Overrides first, so they go through the same checks as the file's own values.
    for (name, value) in &o.params {
        let Some(slot) = raw.params.get_mut(name) else {
            bail!("no parameter {name:?} to set; this scenario has: {}", list(raw.params.keys()));
        };
        if slot.type_str() != value.type_str() {
            bail!("parameter {name:?} is a {}, got {value} (a {})", slot.type_str(), value.type_str());
        }
        *slot = value.clone();
    }
    for (key, v) in [("clients", o.clients), ("keys", o.keys)] {
        if let Some(v) = v {
            let v = i64::try_from(v).context("value out of range")?;
            raw.workload.params.insert(key.into(), toml::Value::Integer(v));
        }
    }

    let c = &raw.cluster;
    if c.nodes == 0 || c.nodes > NODES_MAX {
        bail!("[cluster] nodes must be in 1..={NODES_MAX}, got {}", c.nodes);
    }
    if c.zones == 0 || c.zones > c.nodes {
        bail!("[cluster] zones must be in 1..=nodes ({}), got {}", c.nodes, c.zones);
    }
    if c.replicas == 0 || c.replicas > c.nodes {
        bail!("[cluster] replicas must be in 1..=nodes ({}), got {}", c.nodes, c.replicas);
    }
    let cluster = ClusterShape { nodes: c.nodes, zones: c.zones, replicas: c.replicas, timeouts: c.timeouts };
    let timeout_ms = match c.timeouts {
        Timeouts::Lab => Some(workload::OP_TIMEOUT_MS),
        Timeouts::Server => None,
    };

    let mut tables: Vec<TableDef> = Vec::new();
    for t in &raw.tables {
        if tables.iter().any(|u| u.name == t.name) {
            bail!("[[tables]] {:?} is defined twice", t.name);
        }
        let replicas = t.replicas.unwrap_or(cluster.replicas);
        if replicas == 0 || replicas > cluster.nodes {
            bail!(
                "[[tables]] {:?}: replicas must be in 1..=nodes ({}), got {replicas}",
                t.name,
                cluster.nodes
            );
        }
        tables.push(TableDef { name: t.name.clone(), conflict: t.conflict, replicas });
    }

    let mut all_settings: Vec<Setting> = Vec::new();
    for s in &raw.settings {
        if all_settings.iter().any(|u| u.name == s.name) {
            bail!("[[settings]] {:?} is defined twice", s.name);
        }
        let Some(table) = tables.iter().find(|t| t.name == s.table) else {
            bail!(
                "[[settings]] {:?}: table {:?} is not in [[tables]] ({})",
                s.name,
                s.table,
                list(tables.iter().map(|t| &t.name))
            );
        };
        for (what, v) in [("r", s.r), ("w", s.w)] {
            if v == 0 || v as usize > table.replicas {
                bail!(
                    "[[settings]] {:?}: {what} must be in 1..={} (the table's N), got {v}",
                    s.name,
                    table.replicas
                );
            }
        }
        all_settings.push(Setting {
            name: s.name.clone(),
            table: s.table.clone(),
            r: s.r,
            w: s.w,
            consistency: s.consistency,
            timeout_ms,
            session: s.session,
        });
    }
    let settings = if o.settings.is_empty() {
        all_settings
    } else {
        let mut chosen: Vec<Setting> = Vec::new();
        for name in &o.settings {
            let Some(s) = all_settings.iter().find(|s| &s.name == name) else {
                bail!("unknown setting {name:?}; known: {}", list(all_settings.iter().map(|s| &s.name)));
            };
            if chosen.iter().any(|c| &c.name == name) {
                // Each setting owns its keys; running one twice would write the same keys twice.
                bail!("setting {name} is listed twice");
            }
            chosen.push(s.clone());
        }
        chosen
    };
    if settings.is_empty() {
        bail!("[[settings]]: a scenario needs at least one setting");
    }

    let def = workload::WORKLOADS.iter().find(|w| w.name == raw.workload.name).with_context(|| {
        format!(
            "[workload] unknown workload {:?}; known: {}",
            raw.workload.name,
            list(workload::WORKLOADS.iter().map(|w| w.name))
        )
    })?;
    let params = std::mem::take(&mut raw.workload.params);
    let workload = (def.build)(params).map_err(|e| anyhow::anyhow!("[workload] {}: {e}", def.name))?;
    workload.validate(&settings).map_err(|e| anyhow::anyhow!("[workload] {}: {e}", def.name))?;

    let mut checkers = BTreeSet::new();
    for name in &raw.checkers {
        let Some(checker) = Checker::from_name(name) else {
            bail!(
                "checkers: unknown checker {name:?}; known: {}",
                list(Checker::ALL.iter().map(|c| c.name()))
            );
        };
        if checker == Checker::Lineage && !workload.lineage() {
            bail!(
                "checkers: \"lineage\" needs a workload whose values name the values they saw; {} does not",
                def.name
            );
        }
        checkers.insert(checker);
    }

    let picks: Vec<Pick> =
        raw.picks.iter().map(|(name, p)| Pick { name: name.clone(), kind: p.kind, per: p.per }).collect();
    if let Some(p) = picks.iter().find(|p| raw.params.contains_key(&p.name)) {
        bail!("{:?} is both a pick and a parameter; names must be unique", p.name);
    }

    // --duration rescales every timing in the file, so a file's short CI run keeps its shape.
    let file_phase = raw.phase_duration.0.as_secs_f64();
    if file_phase <= 0.0 {
        bail!("phase_duration must be positive");
    }
    let phase_s = o.duration_s.unwrap_or(file_phase);
    if !(phase_s > 0.0 && phase_s <= PHASE_S_MAX) {
        bail!("--duration must be in (0, {PHASE_S_MAX}] seconds per phase, got {phase_s}");
    }
    let scale = phase_s / file_phase;
    let scaled = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() * scale);

    let mut phases: Vec<Phase> = Vec::new();
    for p in &raw.phases {
        if phases.iter().any(|q| q.name == p.name) {
            bail!("[[phases]] {:?} is defined twice", p.name);
        }
        let duration = scaled(p.duration.map_or(raw.phase_duration.0, |d| d.0));
        if duration.is_zero() || duration.as_secs_f64() > PHASE_S_MAX {
            bail!("[[phases]] {:?}: duration must be in (0, {PHASE_S_MAX}] s, got {duration:?}", p.name);
        }
        let mut steps = Vec::new();
        for (i, s) in p.steps.iter().enumerate() {
            let here = format!("[[phases]] {:?}, step {}", p.name, i + 1);
            let step = check_step(s, &raw.params, &picks, cluster).with_context(|| here.clone())?;
            let at = scaled(step.at);
            if at >= duration {
                bail!(
                    "{here}: at {:?} is not before the end of the phase ({:?})",
                    s.at.0,
                    p.duration.unwrap_or(raw.phase_duration).0
                );
            }
            steps.push(Step { at, ..step });
        }
        steps.sort_by_key(|s| s.at);
        phases.push(Phase { name: p.name.clone(), duration, steps });
    }
    if phases.is_empty() {
        bail!("[[phases]]: a scenario needs at least one phase");
    }

    if let Some(b) = &raw.baseline {
        if !phases.iter().any(|p| &p.name == b) {
            bail!("baseline: no phase {b:?}; [[phases]] has: {}", list(phases.iter().map(|p| &p.name)));
        }
    }

    check_note(&raw.note, &raw.params, &picks)?;
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        settings_run: raw.settings_run,
        phase_duration: Duration::from_secs_f64(phase_s),
        note: raw.note,
        baseline: raw.baseline,
        checkers,
        cluster,
        tables,
        params: raw.params,
        picks,
        settings,
        workload,
        phases,
    })
}

fn list<T: AsRef<str>>(names: impl IntoIterator<Item = T>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The value of `$name` in `params`, which must be of the expected TOML type.
fn param<'a>(params: &'a BTreeMap<String, toml::Value>, name: &str, want: &str) -> Result<&'a toml::Value> {
    let v = params
        .get(name)
        .with_context(|| format!("unknown parameter ${name}; [params] has: {}", list(params.keys())))?;
    if v.type_str() != want {
        bail!("parameter ${name} must be a {want} here, got {v}");
    }
    Ok(v)
}

fn check_step(
    s: &RawStep,
    params: &BTreeMap<String, toml::Value>,
    picks: &[Pick],
    c: ClusterShape,
) -> Result<Step> {
    let action_name = match s.action.strip_prefix('$') {
        Some(p) => param(params, p, "string")?.as_str().unwrap_or_default().to_owned(),
        None => s.action.clone(),
    };
    let int = |v: &Option<IntOrParam>| -> Result<Option<i64>> {
        match v {
            None => Ok(None),
            Some(IntOrParam::Int(v)) => Ok(Some(*v)),
            Some(IntOrParam::Param(p)) => Ok(param(params, p, "integer")?.as_integer()),
        }
    };
    let offset = int(&s.offset_ms)?;
    let delay = int(&s.delay_ms)?;
    let probability = match &s.probability {
        None => None,
        Some(FloatOrParam::Float(v)) => Some(*v),
        Some(FloatOrParam::Param(p)) => param(params, p, "float")?.as_float(),
    };
    // Faults are named by the kinds live runs and the simulator share (`kill` for a crash);
    // the actions that undo them are the scenario's own words.
    let action = match FaultKind::from_name(&action_name) {
        Some(kind) => fault_action(kind, offset, delay, probability)?,
        None => match action_name.as_str() {
            "restart" => Action::Restart,
            "resume" => Action::Resume,
            "heal" => Action::Heal,
            "unskew" => Action::Unskew,
            "recover" => Action::Recover,
            other => bail!("unknown action {other:?}; known: {} (crash is kill)", Action::NAMES.join(", ")),
        },
    };
    for (field, given, used_by) in [
        ("offset_ms", offset.is_some(), matches!(action, Action::Skew(_))),
        ("delay_ms", delay.is_some(), matches!(action, Action::SlowDisk(_) | Action::Delay(_))),
        ("probability", probability.is_some(), matches!(action, Action::Loss(_))),
    ] {
        if given && !used_by {
            let owners = match field {
                "offset_ms" => "skew",
                "delay_ms" => "slow-disk and delay",
                _ => "loss",
            };
            bail!("{field} only applies to action {owners}, not {}", action.name());
        }
    }
    let target = match (&s.target, action) {
        (Some(_), Action::Heal) => bail!("action heal takes no target: it removes every network fault"),
        (None, Action::Heal) | (None, Action::Loss(_)) => None,
        (None, a) => bail!("action {} needs a target (a pick, zone:zN or node:nN)", a.name()),
        (Some(t), _) => Some(check_target(t, picks, c)?),
    };
    let clients_leave = s.clients == Some(ClientsMode::Leave);
    if clients_leave && !action.is_fault() {
        bail!("clients = \"leave\" only applies to a fault, not {}", action.name());
    }
    if clients_leave && target.is_none() {
        bail!("clients = \"leave\" needs a target: {} without one is on every node", action.name());
    }
    Ok(Step { at: s.at.0, action, target, clients_leave, label: s.label.clone() })
}

/// The action of fault `kind` with its parameter, checked against the bounds the server and
/// the lab accept.
fn fault_action(
    kind: FaultKind,
    offset: Option<i64>,
    delay: Option<i64>,
    probability: Option<f64>,
) -> Result<Action> {
    let delay_ms = |what: &str| -> Result<u64> {
        let ms = delay.with_context(|| format!("action {kind} needs delay_ms ({what})"))?;
        // The server's own bound on fsync delays; a message delay longer than that is past
        // every request timeout too, so the same bound serves both.
        let max = quorumdb_api::FSYNC_DELAY_MS_MAX;
        if ms < 1 || ms as u64 > max {
            bail!("delay_ms must be in 1..={max}, got {ms}");
        }
        Ok(ms as u64)
    };
    Ok(match kind {
        FaultKind::Crash => Action::Kill,
        FaultKind::Pause => Action::Pause,
        FaultKind::Partition => Action::Partition,
        FaultKind::OneWayPartition => Action::OneWayPartition,
        FaultKind::Loss => {
            let p = probability
                .context("action loss needs probability (of each message being dropped, e.g. 0.05)")?;
            // 0 would be no fault at all, and the server refuses anything outside [0, 1].
            if !(p > 0.0 && p <= 1.0) {
                bail!("probability must be in (0, 1], got {p}");
            }
            Action::Loss(p)
        }
        FaultKind::Delay => Action::Delay(delay_ms("added to every message the target sends")?),
        FaultKind::SlowDisk => Action::SlowDisk(delay_ms("added before each fsync")?),
        FaultKind::Skew => {
            let ms = offset.context("action skew needs offset_ms")?;
            // The server bounds offsets too; an hour is past any clock failure worth simulating.
            if ms.unsigned_abs() > 3_600_000 {
                bail!("offset_ms must be within ±3600000 (an hour), got {ms}");
            }
            Action::Skew(ms)
        }
    })
}

fn check_target(t: &str, picks: &[Pick], c: ClusterShape) -> Result<Target> {
    if let Some(z) = t.strip_prefix("zone:") {
        let n: usize = z.strip_prefix('z').and_then(|n| n.parse().ok()).unwrap_or(0);
        if n == 0 || n > c.zones {
            bail!("target {t:?}: no such zone (z1..z{})", c.zones);
        }
        return Ok(Target::Zone(z.to_owned()));
    }
    if let Some(id) = t.strip_prefix("node:") {
        let n: usize = id.strip_prefix('n').and_then(|n| n.parse().ok()).unwrap_or(0);
        if n == 0 || n > c.nodes {
            bail!("target {t:?}: no such node (n1..n{})", c.nodes);
        }
        return Ok(Target::Node(n - 1));
    }
    if picks.iter().any(|p| p.name == t) {
        return Ok(Target::Pick(t.to_owned()));
    }
    bail!("unknown target {t:?}: not a pick ({}), zone:zN or node:nN", list(picks.iter().map(|p| &p.name)))
}

/// `note` may name parameters and per-run picks as `{name}` (or `{name:+}`: an integer with its
/// sign); per-setting picks have no single value to name.
fn check_note(note: &str, params: &BTreeMap<String, toml::Value>, picks: &[Pick]) -> Result<()> {
    for name in placeholders(note) {
        let name = name.trim_end_matches(":+");
        let known =
            params.contains_key(name) || picks.iter().any(|p| p.name == name && p.per == PickPer::Run);
        if !known {
            bail!("note: {{{name}}} is neither a parameter nor a per-run pick");
        }
    }
    Ok(())
}

fn placeholders(s: &str) -> impl Iterator<Item = &str> {
    s.split('{').skip(1).filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// `note` with its placeholders replaced by `value(name)`; `{name:+}` signs integers.
pub fn render_note(note: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = note;
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        match after.split_once('}') {
            Some((name, tail)) => {
                match name.strip_suffix(":+") {
                    Some(name) => {
                        let v = value(name);
                        if !v.starts_with('-') {
                            out.push('+');
                        }
                        out.push_str(&v);
                    }
                    None => out.push_str(&value(name)),
                }
                rest = tail;
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A parameter's value as the report shows it (strings without quotes).
pub fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parameter's value in `report.json`.
pub fn param_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match load("bad.toml", text, &Overrides::default()) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A minimal valid scenario for the error tests to break one field of.
    const MINIMAL: &str = r#"
name = "t"
description = "d"
phase_duration = "1s"
checkers = ["lost-writes"]
[cluster]
nodes = 3
zones = 3
replicas = 3
[[tables]]
name = "t"
[[settings]]
name = "s"
table = "t"
r = 2
w = 2
[workload]
name = "profile-store"
clients = 2
keys = 2
update_fraction = 0.5
think_max = "5ms"
[[phases]]
name = "p"
steps = [{ at = "500ms", action = "kill", target = "node:n1" }]
"#;

    /// Both shipped scenario files parse and describe what the drivers they replaced ran.
    #[test]
    fn embedded_scenarios_parse() {
        let az = load("az", embedded("az-failure").unwrap(), &Overrides::default()).unwrap();
        assert_eq!(az.name, "az-failure");
        assert_eq!((az.cluster.nodes, az.cluster.zones, az.cluster.replicas), (6, 3, 3));
        let names: Vec<&str> = az.settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["r1w3", "r2w2", "r1w1", "linearizable"]);
        let phases: Vec<&str> = az.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(phases, ["healthy", "zone-down", "recovery"]);
        assert_eq!(az.phases[1].steps[0].action, Action::Kill);
        assert!(az.phases[1].steps[0].clients_leave);
        assert_eq!(az.phase_duration, Duration::from_secs(10));
        assert!(!az.checkers.contains(&Checker::Lineage));

        let skew = load("skew", embedded("clock-skew-lww").unwrap(), &Overrides::default()).unwrap();
        assert_eq!(skew.settings_run, SettingsRun::Together);
        let phases: Vec<&str> = skew.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(phases, ["healthy", "partition", "skew", "skew-partition"]);
        assert_eq!(skew.phases[2].steps[0].action, Action::Skew(5000));
        assert_eq!(skew.table("lww").unwrap().conflict, ConflictMode::Lww);
        assert!(skew.checkers.contains(&Checker::Lineage));
        assert_eq!(load("m", MINIMAL, &Overrides::default()).unwrap().phases[0].steps.len(), 1);
    }

    /// Overrides rescale every timing, set parameters through the same checks as the file, and
    /// pick settings; bad overrides are errors.
    #[test]
    fn overrides_apply_and_are_checked() {
        let o = Overrides {
            duration_s: Some(1.0),
            params: vec![("skew_ms".into(), toml::Value::Integer(-200))],
            ..Overrides::default()
        };
        let skew = load("skew", embedded("clock-skew-lww").unwrap(), &o).unwrap();
        assert_eq!(skew.phases[1].duration, Duration::from_secs(1));
        // 6667 ms of a 10 s phase, scaled to a 1 s phase: two thirds again.
        assert!((skew.phases[1].steps[1].at.as_secs_f64() - 0.6667).abs() < 1e-6);
        assert_eq!(skew.phases[2].steps[0].action, Action::Skew(-200));

        let o = Overrides {
            settings: vec!["r2w2".into(), "r1w3".into()],
            clients: Some(3),
            ..Overrides::default()
        };
        let az = load("az", embedded("az-failure").unwrap(), &o).unwrap();
        assert_eq!(az.settings.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["r2w2", "r1w3"]);

        let bad = |o: Overrides| match load("az", embedded("az-failure").unwrap(), &o) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        };
        let e = bad(Overrides { settings: vec!["r9w9".into()], ..Overrides::default() });
        assert!(e.contains("unknown setting \"r9w9\"") && e.contains("r1w3"), "{e}");
        let e = bad(Overrides { params: vec![("zone_fault".into(), "melt".into())], ..Overrides::default() });
        assert!(e.contains("unknown action \"melt\""), "{e}");
        let e = bad(Overrides { clients: Some(0), ..Overrides::default() });
        assert!(e.contains("clients"), "{e}");
        let e = bad(Overrides { duration_s: Some(0.0), ..Overrides::default() });
        assert!(e.contains("--duration"), "{e}");
    }

    /// A misspelt field is refused with the file, the field and its position, not ignored.
    #[test]
    fn unknown_field_is_named() {
        let e = err(&MINIMAL.replace("replicas = 3", "replicas = 3\nreplica = 2"));
        assert!(e.starts_with("bad.toml: "), "{e}");
        assert!(e.contains("unknown field `replica`") && e.contains("line"), "{e}");
        let e = err(&MINIMAL.replace("think_max", "think_min"));
        assert!(e.contains("[workload] profile-store") && e.contains("unknown field `think_min`"), "{e}");
    }

    /// Unknown workload and checker names are errors listing the known ones.
    #[test]
    fn unknown_workload_or_checker_is_named() {
        let e = err(&MINIMAL.replace("\"profile-store\"", "\"profile-shop\""));
        assert!(e.contains("unknown workload \"profile-shop\"") && e.contains("rmw-lineage"), "{e}");
        let e = err(&MINIMAL.replace("[\"lost-writes\"]", "[\"lost-writes\", \"lost-wallets\"]"));
        assert!(e.contains("unknown checker \"lost-wallets\"") && e.contains("linearizability"), "{e}");
        let e = err(&MINIMAL.replace("[\"lost-writes\"]", "[\"lineage\"]"));
        assert!(e.contains("\"lineage\" needs a workload"), "{e}");
    }

    /// Durations must carry a unit and steps must fall inside their phase.
    #[test]
    fn bad_duration_is_explained() {
        let e = err(&MINIMAL.replace("\"1s\"", "\"10\""));
        assert!(e.contains("bad duration \"10\"") && e.contains("phase_duration"), "{e}");
        let e = err(&MINIMAL.replace("\"500ms\"", "\"5 fortnights\""));
        assert!(e.contains("bad duration \"5 fortnights\""), "{e}");
        let e = err(&MINIMAL.replace("\"500ms\"", "\"2s\""));
        assert!(e.contains("step 1") && e.contains("not before the end of the phase"), "{e}");
        assert_eq!(Dur::parse("1.5m").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
    }

    /// References between sections are checked: tables, targets, parameters, actions.
    #[test]
    fn bad_references_are_named() {
        let e = err(&MINIMAL.replace("table = \"t\"", "table = \"nope\""));
        assert!(e.contains("table \"nope\" is not in [[tables]]"), "{e}");
        let e = err(&MINIMAL.replace("node:n1", "node:n7"));
        assert!(e.contains("no such node"), "{e}");
        let e = err(&MINIMAL.replace("action = \"kill\"", "action = \"$fault\""));
        assert!(e.contains("unknown parameter $fault"), "{e}");
        let e = err(&MINIMAL.replace("r = 2", "r = 4"));
        assert!(e.contains("r must be in 1..=3"), "{e}");
    }

    /// The gray-failure file parses into its four fault windows, each followed by its recovery,
    /// with the server's timeouts, the healthy baseline and no request timeout of its own.
    #[test]
    fn gray_failure_parses() {
        let g = load("gray", embedded("gray-failure").unwrap(), &Overrides::default()).unwrap();
        assert_eq!((g.cluster.nodes, g.cluster.zones, g.cluster.replicas), (5, 3, 3));
        assert_eq!(g.cluster.timeouts, Timeouts::Server);
        assert_eq!(g.baseline.as_deref(), Some("healthy"));
        assert_eq!(g.settings[0].timeout_ms, None);
        assert_eq!(g.settings[0].read_options().timeout_ms, None);
        let faults: Vec<Action> =
            g.phases.iter().flat_map(|p| &p.steps).map(|s| s.action).filter(|a| a.is_fault()).collect();
        assert_eq!(
            faults,
            [Action::Pause, Action::SlowDisk(200), Action::OneWayPartition, Action::Loss(0.05)]
        );
        let kinds: Vec<&str> = faults.iter().filter_map(|a| a.fault_kind()).map(|k| k.name()).collect();
        assert_eq!(kinds, ["pause", "slow-disk", "one-way-partition", "loss"]);
        // Clients leave the sick node for every fault that has one; loss is on every node.
        let leaving: Vec<bool> = g
            .phases
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| s.action.is_fault())
            .map(|s| s.clients_leave)
            .collect();
        assert_eq!(leaving, [true, true, true, false]);
        let o = Overrides {
            duration_s: Some(1.0),
            params: vec![("fsync_delay_ms".into(), toml::Value::Integer(50))],
            ..Overrides::default()
        };
        let short = load("gray", embedded("gray-failure").unwrap(), &o).unwrap();
        assert_eq!(short.phases[1].duration, Duration::from_millis(500));
        assert_eq!(short.phases[3].steps[0].action, Action::SlowDisk(50));
        // The lab's own timeouts stay the default for the other files.
        let az = load("az", embedded("az-failure").unwrap(), &Overrides::default()).unwrap();
        assert_eq!(
            (az.cluster.timeouts, az.settings[0].timeout_ms),
            (Timeouts::Lab, Some(workload::OP_TIMEOUT_MS))
        );
    }

    /// Proves the new fault actions take their parameters in the existing steps' syntax
    /// (`crash` as a synonym of `kill`, `$param` values), and `heal` and `recover` parse around them.
    #[test]
    fn gray_fault_actions_parse() {
        let with_steps = |steps: &str| {
            MINIMAL.replace(
                "steps = [{ at = \"500ms\", action = \"kill\", target = \"node:n1\" }]",
                &format!("steps = [{steps}]"),
            ) + "[params]\nslow = 80\np = 0.25\n"
        };
        let text = with_steps(
            r#"{ action = "crash", target = "node:n1" },
               { action = "slow-disk", target = "node:n2", delay_ms = "$slow" },
               { action = "one-way-partition", target = "zone:z3", clients = "leave" },
               { action = "loss", probability = "$p" },
               { action = "loss", target = "node:n1", probability = 1 },
               { action = "delay", target = "node:n2", delay_ms = 15 },
               { at = "600ms", action = "heal" },
               { at = "700ms", action = "recover", target = "node:n2" }"#,
        );
        let sc = load("t", &text, &Overrides::default()).unwrap();
        let actions: Vec<Action> = sc.phases[0].steps.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            [
                Action::Kill,
                Action::SlowDisk(80),
                Action::OneWayPartition,
                Action::Loss(0.25),
                Action::Loss(1.0),
                Action::Delay(15),
                Action::Heal,
                Action::Recover
            ]
        );
        assert_eq!(sc.phases[0].steps[3].target, None, "loss without a target is on every node");
        assert!(Action::Loss(0.1).is_network() && !Action::SlowDisk(1).is_network());
    }

    /// Malformed gray-failure steps are refused with an error naming the step and what is
    /// wrong, never a panic: missing, misplaced, out-of-range or mistyped parameters, and
    /// targets or clients modes that cannot apply.
    #[test]
    fn malformed_gray_faults_are_explained() {
        let step = |s: &str| {
            err(&(MINIMAL.replace(
                "steps = [{ at = \"500ms\", action = \"kill\", target = \"node:n1\" }]",
                &format!("steps = [{s}]"),
            ) + "[params]\nname = \"x\"\n"))
        };
        for (bad, expect) in [
            (r#"{ action = "slow-disk", target = "node:n1" }"#, "action slow-disk needs delay_ms"),
            (
                r#"{ action = "slow-disk", target = "node:n1", delay_ms = 0 }"#,
                "delay_ms must be in 1..=10000, got 0",
            ),
            (
                r#"{ action = "slow-disk", target = "node:n1", delay_ms = 20000 }"#,
                "delay_ms must be in 1..=10000",
            ),
            (
                r#"{ action = "slow-disk", target = "node:n1", delay_ms = "200ms" }"#,
                "expected an integer or \"$param\"",
            ),
            (
                r#"{ action = "slow-disk", target = "node:n1", delay_ms = "$name" }"#,
                "parameter $name must be a integer",
            ),
            (r#"{ action = "slow-disk", delay_ms = 5 }"#, "action slow-disk needs a target"),
            (r#"{ action = "loss" }"#, "action loss needs probability"),
            (r#"{ action = "loss", probability = 5 }"#, "probability must be in (0, 1], got 5"),
            (r#"{ action = "loss", probability = 0.0 }"#, "probability must be in (0, 1], got 0"),
            (r#"{ action = "loss", probability = "5%" }"#, "expected a number or \"$param\""),
            (
                r#"{ action = "loss", probability = 0.1, clients = "leave" }"#,
                "clients = \"leave\" needs a target",
            ),
            (
                r#"{ action = "kill", target = "node:n1", probability = 0.1 }"#,
                "probability only applies to action loss, not kill",
            ),
            (
                r#"{ action = "pause", target = "node:n1", delay_ms = 5 }"#,
                "delay_ms only applies to action slow-disk and delay",
            ),
            (r#"{ action = "one-way-partition" }"#, "action one-way-partition needs a target"),
            (r#"{ action = "heal", clients = "leave" }"#, "only applies to a fault, not heal"),
            (r#"{ action = "slow-dsik", target = "node:n1" }"#, "unknown action \"slow-dsik\""),
        ] {
            let e = step(bad);
            // Type errors come from the TOML parser, with the line and column; the rest from
            // the step checks, with the phase and step.
            let located =
                e.contains("step 1") || (e.contains("TOML parse error at line") && e.contains("column"));
            assert!(located && e.contains(expect), "{bad}: {e}");
        }
        let e = err(&MINIMAL.replace("checkers =", "baseline = \"nope\"\ncheckers ="));
        assert!(e.contains("baseline: no phase \"nope\"") && e.contains("p"), "{e}");
        let e = err(
            &MINIMAL.replace("replicas = 3\n[[tables]]", "replicas = 3\ntimeouts = \"fast\"\n[[tables]]")
        );
        assert!(e.contains("unknown variant `fast`"), "{e}");
    }

    /// Note placeholders are filled, with an explicit sign where asked.
    #[test]
    fn notes_render() {
        let v = |n: &str| if n == "a" { "5".to_owned() } else { "-3".to_owned() };
        assert_eq!(render_note("x {a:+} y {b:+} z {a}", v), "x +5 y -3 z 5");
    }
}
