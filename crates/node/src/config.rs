//! Node configuration: a TOML file, overridable field by field (the binary applies
//! `QUORUMDB_*` environment variables and flags on top through [`ConfigOverrides`]).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Default per-request timeout. Long enough for a group-committed fsync on a slow disk plus a
/// network round trip, short enough that a client learns about a dead replica quickly.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Longest per-request timeout a client may ask for.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = quorumdb_core::limits::REQUEST_TIMEOUT_MS_MAX;
/// How often a node pings each peer to learn whether it is alive.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 100;
/// A peer with no successful exchange for this long is reported down and skipped by coordinators.
pub const FAILURE_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Most client (HTTP) requests one node serves at once; more are refused with 503 `overloaded`.
/// Each in-flight request holds at most a value (1 MiB) plus N replica states, so 4096 bounds
/// request memory to a few GiB in the worst case and far less in practice.
pub const HTTP_INFLIGHT_MAX_DEFAULT: usize = 4_096;
/// Most requests one node keeps in flight towards one peer; more wait for a slot (backpressure).
pub const PEER_INFLIGHT_MAX_DEFAULT: usize = 1_024;

/// Pause between background anti-entropy passes.
pub const ANTIENTROPY_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Anti-entropy transfer budget: 16 MiB/s keeps repair well below what one disk and one
/// network link serve, so client traffic keeps priority.
pub const ANTIENTROPY_BYTES_PER_SECOND_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Pause between tombstone garbage-collection passes.
pub const TOMBSTONE_GC_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Hints older than this are dropped and never delivered: the core's default (3 h).
pub const HINT_AGE_MS_MAX_DEFAULT: u64 = quorumdb_core::handoff::HINT_AGE_MS_MAX_DEFAULT;
/// Tombstone grace: one hour beyond the hint age limit (3 h), so clock differences between the
/// coordinator that dated a hint and the replica that dated a tombstone stay far inside it.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = HINT_AGE_MS_MAX_DEFAULT + 60 * 60 * 1000;

/// When a replica may acknowledge a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge after the journal is fsynced (group-committed across concurrent writes).
    #[default]
    Fsync,
    /// Acknowledge once the write is in the OS page cache: survives a process crash, not a
    /// power loss or kernel crash. For users who choose speed knowingly.
    Buffered,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "buffered" => Ok(Durability::Buffered),
            other => Err(format!("durability must be \"fsync\" or \"buffered\", got {other:?}")),
        }
    }
}

/// What a read does about stale replicas it notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadRepair {
    /// Repair stale replicas of the read set before answering: a later quorum read cannot
    /// return an older state than this one did (monotonic quorum reads), at the cost of latency
    /// when replicas diverge.
    #[default]
    Blocking,
    /// Answer first, repair in the background: cheaper, no monotonicity across readers.
    Async,
    /// Never repair on reads; convergence is left to hinted handoff and anti-entropy.
    Off,
    /// Like `Blocking`, but the read fails unless every stale replica of the read quorum
    /// acknowledged the write-back: what `consistency=linearizable` reads use. Not a config value.
    #[serde(skip)]
    WriteBack,
}

impl std::str::FromStr for ReadRepair {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blocking" => Ok(ReadRepair::Blocking),
            "async" => Ok(ReadRepair::Async),
            "off" => Ok(ReadRepair::Off),
            other => Err(format!("read_repair must be blocking, async or off, got {other:?}")),
        }
    }
}

/// Which replicas count toward a request's R or W.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QuorumMode {
    /// Only the key's N home replicas count. R + W > N then guarantees that a read sees every
    /// write acknowledged before it started; writes fail when too many home replicas are down.
    #[default]
    Strict,
    /// As in Dynamo: when a home replica is down, the next live node on the ring stands in,
    /// keeps the write as a durable hint and counts toward W (and answers reads from its hints).
    /// Writes stay available through more failures, but R + W > N no longer implies that a
    /// read intersects the replicas holding the latest write until the hints are handed off.
    Sloppy,
}

impl std::str::FromStr for QuorumMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(QuorumMode::Strict),
            "sloppy" => Ok(QuorumMode::Sloppy),
            other => Err(format!("quorum must be strict or sloppy, got {other:?}")),
        }
    }
}

/// One member of the static cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberConfig {
    pub id: String,
    pub zone: String,
    /// Address of the member's peer (node-to-node) listener.
    pub peer: String,
    /// Base URL of the member's HTTP API, reported by `status`.
    #[serde(default)]
    pub http: String,
    /// The address Kafka clients reach the member's Kafka listener at (`host:port`); empty
    /// when it runs none.
    #[serde(default)]
    pub kafka: String,
}

/// The log and its Kafka listener (`[log]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A Metadata request naming an unknown topic creates it with the defaults (Kafka's
    /// `auto.create.topics.enable`).
    #[serde(default = "default_true")]
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (Kafka's `num.partitions`).
    #[serde(default = "default_partitions")]
    pub default_partitions: u32,
    /// `retention.ms` of a topic created without one; 0: unlimited. Kafka's default: 7 days.
    #[serde(default = "default_retention_ms")]
    pub retention_ms_default: u64,
    /// How often the metadata leader looks for batches that retention may drop.
    #[serde(default = "default_retention_check_interval_ms")]
    pub retention_check_interval_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            auto_create_topics: true,
            default_partitions: default_partitions(),
            retention_ms_default: default_retention_ms(),
            retention_check_interval_ms: default_retention_check_interval_ms(),
        }
    }
}

fn default_partitions() -> u32 {
    1
}
fn default_retention_ms() -> u64 {
    7 * 24 * 60 * 60 * 1000
}
fn default_retention_check_interval_ms() -> u64 {
    1_000
}

/// Limits of the client HTTP listener against slow or greedy clients (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection must deliver a request's headers within this long of its first byte (or
    /// of going idle between requests), or it is closed: one slowloris client trickling a
    /// header byte at a time cannot hold a connection slot for ever.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this long of its headers (408 otherwise).
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Open client connections; more are closed at once (and counted) rather than left to
    /// queue in the kernel.
    #[serde(default = "default_connections_max")]
    pub connections_max: usize,
    /// Requests per second one client address may make (a token bucket of
    /// `requests_burst_per_client` tokens); beyond it, 429 with `Retry-After`. 0: no limit,
    /// the default, since clients are known by address only until authentication exists and
    /// a load balancer or benchmark would share one.
    #[serde(default)]
    pub requests_per_second_per_client: u32,
    #[serde(default = "default_requests_burst_per_client")]
    pub requests_burst_per_client: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            connections_max: default_connections_max(),
            requests_per_second_per_client: 0,
            requests_burst_per_client: default_requests_burst_per_client(),
        }
    }
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_read_timeout_ms() -> u64 {
    30_000
}
fn default_connections_max() -> usize {
    4096
}
fn default_requests_burst_per_client() -> u32 {
    100
}

/// How a table resolves concurrent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Keep every concurrent write as a sibling until a client supersedes them (default).
    #[default]
    Siblings,
    /// Last writer wins by hybrid-logical-clock timestamp taken at the coordinating replica.
    /// Concurrent writes are silently discarded, and under clock skew a write acknowledged later
    /// in real time can lose to an earlier one: offered to show that problem and for users who
    /// knowingly prefer it.
    Lww,
    /// A PN-counter per item (CRDT operations only, `/v1/tables/{t}/crdt/{key}`).
    #[serde(rename = "crdt-counter")]
    CrdtCounter,
    /// An add-wins observed-remove set per item.
    #[serde(rename = "crdt-set")]
    CrdtSet,
    /// A map of counters, sets and registers per item (a shopping cart).
    #[serde(rename = "crdt-map")]
    CrdtMap,
}

impl ConflictMode {
    /// The name used in config files, the tables API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ConflictMode::Siblings => "siblings",
            ConflictMode::Lww => "lww",
            ConflictMode::CrdtCounter => "crdt-counter",
            ConflictMode::CrdtSet => "crdt-set",
            ConflictMode::CrdtMap => "crdt-map",
        }
    }

    /// The replica's conflict rule for this mode.
    pub fn replica(self) -> quorumdb_core::replica::Conflict {
        use quorumdb_core::crdt::CrdtKind;
        use quorumdb_core::replica::Conflict;
        match self {
            ConflictMode::Siblings => Conflict::Siblings,
            ConflictMode::Lww => Conflict::Lww,
            ConflictMode::CrdtCounter => Conflict::Crdt(CrdtKind::Counter),
            ConflictMode::CrdtSet => Conflict::Crdt(CrdtKind::Set),
            ConflictMode::CrdtMap => Conflict::Crdt(CrdtKind::Map),
        }
    }
}

/// A table whose settings differ from the cluster defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    pub name: String,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    #[serde(default)]
    pub conflict: ConflictMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: String,
    pub zone: String,
    pub http_listen: String,
    pub peer_listen: String,
    pub data_dir: PathBuf,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    #[serde(default)]
    pub durability: Durability,
    /// Default read-repair mode; requests may override it with `read_repair=`.
    #[serde(default)]
    pub read_repair: ReadRepair,
    /// Default quorum mode; requests may override it with `quorum=`.
    #[serde(default)]
    pub quorum: QuorumMode,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "default_failure_timeout_ms")]
    pub failure_timeout_ms: u64,
    #[serde(default = "default_peer_inflight_max")]
    pub peer_inflight_max: usize,
    #[serde(default = "default_http_inflight_max")]
    pub http_inflight_max: usize,
    /// Queue hints for replicas that miss writes (default true). Off leaves convergence to
    /// read repair and anti-entropy; useful to measure them alone.
    #[serde(default = "default_true")]
    pub hinted_handoff: bool,
    /// Maintain Merkle trees on every write and run anti-entropy (default true).
    #[serde(default = "default_true")]
    pub antientropy: bool,
    /// Pause between background anti-entropy passes; 0 disables them (repair on demand only).
    #[serde(default = "default_antientropy_interval_ms")]
    pub antientropy_interval_ms: u64,
    /// Most bytes of item states anti-entropy moves per second, so repair never starves clients.
    #[serde(default = "default_antientropy_bytes_per_second_max")]
    pub antientropy_bytes_per_second_max: u64,
    /// Pause between tombstone garbage-collection passes.
    #[serde(default = "default_tombstone_gc_interval_ms")]
    pub tombstone_gc_interval_ms: u64,
    /// A tombstone is purged only this long after this replica first held it, and only once
    /// every home replica holds it. Must exceed the hint age limit, so no queued hint can
    /// carry an older version to a replica after the purge.
    #[serde(default = "default_tombstone_grace_ms")]
    pub tombstone_grace_ms: u64,
    /// Hints older than this are dropped and never delivered (the hint queue's
    /// `hint_age_ms_max`). It is the bound `tombstone_grace_ms` must exceed.
    #[serde(default = "default_hint_age_ms_max")]
    pub hint_age_ms_max: u64,
    /// Serve `/v1/admin/*` (fault injection: partitions, drops, delays, clock skew, failed
    /// fsyncs). Off by default because anyone who can reach the HTTP port could otherwise
    /// partition or poison the node; the demo, the lab and the tests turn it on.
    #[serde(default)]
    pub admin_enabled: bool,
    /// A crash point for tests: the process aborts right after its sink workers' N-th
    /// PostgreSQL commit, before the group commit or anything else (issue #12's "a crash
    /// between the warehouse write and anything else" test). Unset (never) by default.
    #[serde(default)]
    pub sink_abort_after_commits: Option<u64>,
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// The members the cluster was founded with, when they differ from `members`: set for a
    /// node that joined a running cluster (`server --join`, kept in the data directory's
    /// `joined.json`); empty means `members` are the founders. The metadata group's raft ids
    /// and founding voters derive from the founders (`quorumdb_meta::member_raft_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub founders: Vec<MemberConfig>,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Where the Kafka listener binds (`host:port`); none when unset.
    #[serde(default)]
    pub kafka_listen: Option<String>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// TLS on every listener and mutual TLS between nodes (`[tls]`, docs/security.md).
    #[serde(default)]
    pub tls: crate::tls::TlsConfig,
}

fn default_replication_factor() -> usize {
    3
}
fn default_request_timeout_ms() -> u64 {
    REQUEST_TIMEOUT_MS_DEFAULT
}
fn default_heartbeat_interval_ms() -> u64 {
    HEARTBEAT_INTERVAL_MS_DEFAULT
}
fn default_failure_timeout_ms() -> u64 {
    FAILURE_TIMEOUT_MS_DEFAULT
}
fn default_peer_inflight_max() -> usize {
    PEER_INFLIGHT_MAX_DEFAULT
}
fn default_http_inflight_max() -> usize {
    HTTP_INFLIGHT_MAX_DEFAULT
}
fn default_true() -> bool {
    true
}
fn default_antientropy_interval_ms() -> u64 {
    ANTIENTROPY_INTERVAL_MS_DEFAULT
}
fn default_antientropy_bytes_per_second_max() -> u64 {
    ANTIENTROPY_BYTES_PER_SECOND_MAX_DEFAULT
}
fn default_tombstone_gc_interval_ms() -> u64 {
    TOMBSTONE_GC_INTERVAL_MS_DEFAULT
}
fn default_tombstone_grace_ms() -> u64 {
    TOMBSTONE_GRACE_MS_DEFAULT
}
fn default_hint_age_ms_max() -> u64 {
    HINT_AGE_MS_MAX_DEFAULT
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values that replace fields of the file (from flags or `QUORUMDB_*` variables).
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    pub node_id: Option<String>,
    pub zone: Option<String>,
    pub http_listen: Option<String>,
    pub peer_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub replication_factor: Option<usize>,
    pub durability: Option<Durability>,
    pub request_timeout_ms: Option<u64>,
    /// `id@zone@peer_addr@http_url[@kafka_addr]`, comma-separated.
    pub members: Option<String>,
    // TLS (`[tls]`): a certs dir, single files, and whether clients need certificates.
    pub tls_certs_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_client_cert_required: Option<bool>,
}

impl NodeConfig {
    /// The members the cluster was founded with (see [`NodeConfig::founders`]).
    pub fn founding_members(&self) -> &[MemberConfig] {
        if self.founders.is_empty() {
            &self.members
        } else {
            &self.founders
        }
    }

    /// Reads a TOML file, applies overrides, validates.
    pub fn load(path: Option<&Path>, overrides: ConfigOverrides) -> Result<Self, ConfigError> {
        let mut value: toml::Table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        let o = overrides;
        let set = |t: &mut toml::Table, k: &str, v: toml::Value| {
            t.insert(k.to_owned(), v);
        };
        if let Some(v) = o.node_id {
            set(&mut value, "node_id", v.into());
        }
        if let Some(v) = o.zone {
            set(&mut value, "zone", v.into());
        }
        if let Some(v) = o.http_listen {
            set(&mut value, "http_listen", v.into());
        }
        if let Some(v) = o.peer_listen {
            set(&mut value, "peer_listen", v.into());
        }
        if let Some(v) = o.data_dir {
            set(&mut value, "data_dir", v.to_string_lossy().into_owned().into());
        }
        if let Some(v) = o.replication_factor {
            set(&mut value, "replication_factor", (v as i64).into());
        }
        if let Some(v) = o.durability {
            let s = match v {
                Durability::Fsync => "fsync",
                Durability::Buffered => "buffered",
            };
            set(&mut value, "durability", s.into());
        }
        if let Some(v) = o.request_timeout_ms {
            set(&mut value, "request_timeout_ms", (v as i64).into());
        }
        if let Some(spec) = o.members {
            let members = parse_members(&spec)?;
            let arr =
                toml::Value::try_from(members).map_err(|e| ConfigError::Invalid(format!("members: {e}")))?;
            set(&mut value, "members", arr);
        }
        {
            // `[tls]` fields from flags, merged into the file's table.
            let path = |p: PathBuf| toml::Value::from(p.to_string_lossy().into_owned());
            let mut from_flags = toml::Table::new();
            for (k, v) in
                [("certs_dir", o.tls_certs_dir), ("cert", o.tls_cert), ("key", o.tls_key), ("ca", o.tls_ca)]
            {
                if let Some(v) = v {
                    from_flags.insert(k.into(), path(v));
                }
            }
            if let Some(v) = o.tls_client_cert_required {
                from_flags.insert("client_cert_required".into(), v.into());
            }
            if !from_flags.is_empty() {
                let tls = value.entry("tls").or_insert_with(|| toml::Table::new().into());
                let Some(tls) = tls.as_table_mut() else {
                    return Err(ConfigError::Invalid("tls must be a table".into()));
                };
                tls.extend(from_flags);
            }
        }
        let where_ = path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("<flags>"));
        let config: NodeConfig = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: where_, message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node_id.is_empty() {
            return bad("node_id must not be empty".into());
        }
        let h = &self.http;
        if h.header_read_timeout_ms == 0 || h.body_read_timeout_ms == 0 {
            return bad("http.header_read_timeout_ms and http.body_read_timeout_ms must be at least 1".into());
        }
        if h.connections_max == 0 || h.connections_max > crate::http_guard::CONNECTIONS_MAX {
            return bad(format!(
                "http.connections_max must be 1 to {}, got {}",
                crate::http_guard::CONNECTIONS_MAX,
                h.connections_max
            ));
        }
        if h.requests_per_second_per_client > 0 && h.requests_burst_per_client == 0 {
            return bad("http.requests_burst_per_client must be at least 1 when a rate is set".into());
        }
        if let Err(m) = self.tls.paths() {
            return bad(m);
        }
        if self.members.is_empty() {
            return bad("members must list the cluster's nodes (including this one)".into());
        }
        if !self.members.iter().any(|m| m.id == self.node_id) {
            return bad(format!("node_id {:?} is not in members", self.node_id));
        }
        for addr in [&self.http_listen, &self.peer_listen] {
            if addr.parse::<SocketAddr>().is_err() {
                return bad(format!("{addr:?} is not a socket address like 127.0.0.1:7701"));
            }
        }
        let n_max = quorumdb_core::limits::REPLICATION_FACTOR_MAX;
        let rf_ok = |rf: usize| (1..=n_max).contains(&rf);
        if !rf_ok(self.replication_factor) {
            return bad(format!("replication_factor must be 1..={n_max}, got {}", self.replication_factor));
        }
        for t in &self.tables {
            if !rf_ok(t.replication_factor) {
                return bad(format!("table {}: replication_factor must be 1..={n_max}", t.name));
            }
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > REQUEST_TIMEOUT_MS_MAX {
            return bad(format!("request_timeout_ms must be 1..={REQUEST_TIMEOUT_MS_MAX}"));
        }
        if self.peer_inflight_max == 0 || self.http_inflight_max == 0 {
            return bad("peer_inflight_max and http_inflight_max must be at least 1".into());
        }
        if self.tombstone_gc_interval_ms == 0 || self.antientropy_bytes_per_second_max == 0 {
            return bad("tombstone_gc_interval_ms and antientropy_bytes_per_second_max must be > 0".into());
        }
        if self.heartbeat_interval_ms == 0 || self.failure_timeout_ms <= self.heartbeat_interval_ms {
            return bad("failure_timeout_ms must exceed heartbeat_interval_ms (> 0)".into());
        }
        if self.hint_age_ms_max == 0 {
            return bad("hint_age_ms_max must be > 0".into());
        }
        // A hint may carry a live state older than a delete. If the tombstone could be purged
        // while such a hint is still deliverable, the hint would resurrect the deleted item, so
        // the grace period must outlast every hint.
        if self.tombstone_grace_ms <= self.hint_age_ms_max {
            return bad(format!(
                "tombstone_grace_ms ({}) must be longer than hint_age_ms_max ({}): a hint delivered \
                 after its item's tombstone was purged would resurrect the deleted item",
                self.tombstone_grace_ms, self.hint_age_ms_max
            ));
        }
        Ok(())
    }

    /// The replication factor of `table`.
    pub fn replication_factor_of(&self, table: &str) -> usize {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .map(|t| t.replication_factor)
            .unwrap_or(self.replication_factor)
    }

    /// A config with every optional field at its default.
    pub fn with_defaults(
        node_id: String,
        zone: String,
        http_listen: String,
        peer_listen: String,
        data_dir: PathBuf,
        members: Vec<MemberConfig>,
    ) -> Result<Self, ConfigError> {
        let mut t = toml::Table::new();
        t.insert("node_id".into(), node_id.into());
        t.insert("zone".into(), zone.into());
        t.insert("http_listen".into(), http_listen.into());
        t.insert("peer_listen".into(), peer_listen.into());
        t.insert("data_dir".into(), data_dir.to_string_lossy().into_owned().into());
        let members =
            toml::Value::try_from(members).map_err(|e| ConfigError::Invalid(format!("members: {e}")))?;
        t.insert("members".into(), members);
        toml::Value::Table(t).try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            path: PathBuf::from("<defaults>"),
            message: e.to_string(),
        })
    }

    /// The hint queue's bounds under this config: the core defaults with this config's
    /// `hint_age_ms_max`, which validation keeps below `tombstone_grace_ms`. The node must build
    /// its hint queue from these limits, or the validated bound is not the one enforced.
    pub fn hint_limits(&self) -> quorumdb_core::handoff::HintLimits {
        quorumdb_core::handoff::HintLimits {
            hint_age_ms_max: self.hint_age_ms_max,
            ..quorumdb_core::handoff::HintLimits::default()
        }
    }

    /// The conflict mode of `table`.
    pub fn conflict_of(&self, table: &str) -> ConflictMode {
        self.tables.iter().find(|t| t.name == table).map(|t| t.conflict).unwrap_or_default()
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn parse_members(spec: &str) -> Result<Vec<MemberConfig>, ConfigError> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|entry| {
            let parts: Vec<&str> = entry.trim().splitn(5, '@').collect();
            let member = |id: &str, zone: &str, peer: &str, http: &str, kafka: &str| MemberConfig {
                id: id.into(),
                zone: zone.into(),
                peer: peer.into(),
                http: http.into(),
                kafka: kafka.into(),
            };
            match parts.as_slice() {
                [id, zone, peer] => Ok(member(id, zone, peer, "", "")),
                [id, zone, peer, http] => Ok(member(id, zone, peer, http, "")),
                [id, zone, peer, http, kafka] => Ok(member(id, zone, peer, http, kafka)),
                _ => Err(ConfigError::Invalid(format!(
                    "member {entry:?} must look like id@zone@peer_addr[@http_url[@kafka_addr]]"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a file's fields are replaced by overrides and validation catches a missing member.
    #[test]
    fn overrides_and_validation() {
        let dir = std::env::temp_dir().join(format!("qdb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            r#"node_id = "n1"
zone = "z1"
http_listen = "127.0.0.1:7701"
peer_listen = "127.0.0.1:7801"
data_dir = "/tmp/x"
[[members]]
id = "n1"
zone = "z1"
peer = "127.0.0.1:7801"
"#,
        )
        .unwrap();
        let c = NodeConfig::load(Some(&path), ConfigOverrides::default()).unwrap();
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.durability, Durability::Fsync);
        let o = ConfigOverrides { durability: Some(Durability::Buffered), ..Default::default() };
        assert_eq!(NodeConfig::load(Some(&path), o).unwrap().durability, Durability::Buffered);
        let o = ConfigOverrides { node_id: Some("n9".into()), ..Default::default() };
        assert!(NodeConfig::load(Some(&path), o).unwrap_err().to_string().contains("not in members"));
        let o = ConfigOverrides {
            members: Some("n1@z1@127.0.0.1:1@http://x,n2@z2@127.0.0.1:2".into()),
            ..Default::default()
        };
        assert_eq!(NodeConfig::load(Some(&path), o).unwrap().members.len(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn one_node() -> NodeConfig {
        let member = MemberConfig {
            id: "n1".into(),
            zone: "z1".into(),
            peer: "127.0.0.1:7801".into(),
            http: String::new(),
            kafka: String::new(),
        };
        NodeConfig::with_defaults(
            "n1".into(),
            "z1".into(),
            "127.0.0.1:7701".into(),
            "127.0.0.1:7801".into(),
            PathBuf::from("/tmp/x"),
            vec![member],
        )
        .unwrap()
    }

    /// Proves a tombstone grace period not strictly longer than the hint age limit is refused with both values named.
    #[test]
    fn tombstone_grace_must_exceed_hint_age() {
        let mut c = one_node();
        assert!(c.validate().is_ok(), "the defaults are valid");
        // Equal to the default hint age: a hint queued just before the delete could still be
        // delivered at the moment the tombstone is purged.
        c.tombstone_grace_ms = quorumdb_core::handoff::HINT_AGE_MS_MAX_DEFAULT;
        let err = c.validate().unwrap_err().to_string();
        let age = quorumdb_core::handoff::HINT_AGE_MS_MAX_DEFAULT.to_string();
        assert!(err.contains("tombstone_grace_ms") && err.contains("hint_age_ms_max"), "{err}");
        assert!(err.matches(age.as_str()).count() == 2, "both values must be named: {err}");
        c.tombstone_grace_ms = 2_000;
        assert!(c.validate().is_err(), "a grace period far below the hint age must be refused");
        // A shorter hint age makes the same grace period safe, and is what the queue uses.
        c.hint_age_ms_max = 2_000;
        assert!(c.validate().unwrap_err().to_string().contains("(2000)"));
        c.hint_age_ms_max = 1_999;
        assert!(c.validate().is_ok());
        assert_eq!(c.hint_limits().hint_age_ms_max, 1_999);
    }
}
