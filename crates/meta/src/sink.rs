//! Sink definitions in the replicated metadata: which topics a sink delivers, to which
//! PostgreSQL table, keyed how, with which retry settings, and whether it runs (issue #12).
//!
//! Every node applies the same [`SinkCommand`]s, so every node's sink manager sees the same
//! definitions and joins the same consumer group (`__sink.<name>`) for each running sink. The
//! delivery position is *not* here: it lives in the warehouse, in the same transaction as the
//! rows (see `quorumdb_node::sink`), because only there can it be atomic with them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::log::{check_topic_name, TOPIC_NAME_BYTES_MAX};

/// Most sinks the cluster holds. Each running sink is a consumer group with a member per node.
pub const SINKS_LEN_MAX: usize = 64;
/// Longest sink name, in bytes: `__sink.<name>` (the group) and `<name>.dlq` (the default
/// dead-letter topic) must stay valid topic and group names.
pub const SINK_NAME_BYTES_MAX: usize = 200;
/// Most topics one sink consumes.
pub const SINK_TOPICS_LEN_MAX: usize = 16;
/// Longest PostgreSQL connection string, in bytes.
pub const SINK_CONNECTION_BYTES_MAX: usize = 1024;
/// Longest table name (`schema.table`), in bytes: two PostgreSQL identifiers of 63 and a dot.
pub const SINK_TABLE_BYTES_MAX: usize = 127;
/// Longest JSON field name of a business key, in bytes.
pub const SINK_KEY_FIELD_BYTES_MAX: usize = 255;
/// Most records in one warehouse transaction.
pub const SINK_BATCH_RECORDS_MAX: u32 = 10_000;
/// Most records buffered per partition.
pub const SINK_BUFFERED_RECORDS_MAX: u32 = 100_000;
/// Longest backoff and breaker-open time.
pub const SINK_WAIT_MS_MAX: u64 = 600_000;
/// Most offsets a dedup window spans, per partition (memory: one 16-byte digest each, plus
/// the map's overhead; also what a restarted worker re-reads from the log to rebuild it).
pub const SINK_DEDUP_WINDOW_RECORDS_MAX: u32 = 100_000;
/// Longest dedup time window (7 days, the default log retention).
pub const SINK_DEDUP_WINDOW_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Most mapped columns of a declared schema.
pub const SINK_COLUMNS_LEN_MAX: usize = 64;
/// Longest JSON field name of a mapped column, in bytes.
pub const SINK_COLUMN_FIELD_BYTES_MAX: usize = 255;
/// The columns every sink table has; a mapped column may not take their names.
pub const SINK_RESERVED_COLUMNS: [&str; 7] =
    ["topic", "partition", "offset", "key", "value", "timestamp", "event_key"];

const _: () = assert!(SINK_NAME_BYTES_MAX + "__sink.".len() <= TOPIC_NAME_BYTES_MAX);
const _: () = assert!(SINK_NAME_BYTES_MAX + ".dlq".len() <= TOPIC_NAME_BYTES_MAX);
const _: () = assert!(SINK_BATCH_RECORDS_MAX <= SINK_BUFFERED_RECORDS_MAX);

/// How rows are keyed, so a replayed write upserts instead of duplicating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkKey {
    /// `(topic, partition, offset)`: each record once.
    Offset,
    /// A field of the JSON value (an event id): each event once, even if produced twice.
    Field(String),
}

/// How the record value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkValue {
    Bytea,
    /// Parsed as JSON by PostgreSQL; a value that is not JSON is a poison record.
    Jsonb,
}

/// The type of a mapped column: what the JSON field must be, and the PostgreSQL column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// A JSON string; `text`.
    Text,
    /// A JSON integer within i64; `bigint`.
    Bigint,
    /// Any JSON number; `double precision`.
    Double,
    /// `true` or `false`; `boolean`.
    Boolean,
    /// Any JSON value; `jsonb`.
    Jsonb,
}

impl ColumnType {
    pub const NAMES: [&'static str; 5] = ["text", "bigint", "double", "boolean", "jsonb"];

    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s {
            "text" => ColumnType::Text,
            "bigint" => ColumnType::Bigint,
            "double" => ColumnType::Double,
            "boolean" => ColumnType::Boolean,
            "jsonb" => ColumnType::Jsonb,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The PostgreSQL type of the column.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Double => "double precision",
            other => other.name(),
        }
    }
}

/// One column of a sink's declared schema: a top-level field of the JSON value, stored in its
/// own column. A record whose value is not a JSON object, lacks a required field (absent or
/// `null`) or has a field of the wrong type is dead-lettered before any write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkColumn {
    pub field: String,
    pub column: String,
    pub kind: ColumnType,
    pub required: bool,
}

/// Deduplication by event id within a window of each partition's log (`quorumdb_core::sink::
/// DedupWindow`): a duplicate inside the window is not written (the position moves past it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDedup {
    /// The top-level JSON field holding the event id.
    pub field: String,
    /// Offsets the window spans (1 to [`SINK_DEDUP_WINDOW_RECORDS_MAX`]).
    pub window_records: u32,
    /// Event-time bound (record timestamps); 0: none.
    pub window_ms: u64,
}

/// Where the PostgreSQL password comes from, when not in the connection string: resolved on
/// each node at connect time, so the secret itself never enters the metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretRef {
    /// An environment variable of the node process.
    Env(String),
    /// A file on the node (its content, without a trailing newline).
    File(String),
}

impl SecretRef {
    /// `env:NAME` or `file:/path`.
    pub fn parse(s: &str) -> Option<SecretRef> {
        if let Some(v) = s.strip_prefix("env:").filter(|v| !v.is_empty()) {
            return Some(SecretRef::Env(v.to_string()));
        }
        s.strip_prefix("file:").filter(|v| !v.is_empty()).map(|v| SecretRef::File(v.to_string()))
    }

    pub fn show(&self) -> String {
        match self {
            SecretRef::Env(v) => format!("env:{v}"),
            SecretRef::File(v) => format!("file:{v}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkRunState {
    Running,
    /// Members stay in the group (no rebalance) but deliver nothing.
    Paused,
}

/// The delivery knobs (`quorumdb_core::sink::SinkConfig`). Units last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSettings {
    pub batch_records_max: u32,
    pub buffered_records_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub budget_percent: u32,
    pub budget_floor_per_s: u32,
    pub breaker_failures_max: u32,
    pub breaker_open_ms: u64,
}

impl Default for SinkSettings {
    /// The core machine's defaults, except a smaller buffer: a sink's memory per partition.
    fn default() -> Self {
        SinkSettings {
            batch_records_max: 500,
            buffered_records_max: 5_000,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            budget_percent: 20,
            budget_floor_per_s: 10,
            breaker_failures_max: 5,
            breaker_open_ms: 5_000,
        }
    }
}

/// One sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDef {
    pub name: String,
    /// The log index of its creation: a sink deleted and created again under the same name is
    /// another sink (its workers restart).
    pub id: u64,
    pub topics: Vec<String>,
    /// A libpq-style connection string or URL.
    pub postgres: String,
    /// `table` or `schema.table`.
    pub table: String,
    pub key: SinkKey,
    pub value: SinkValue,
    pub dead_letter_topic: String,
    pub settings: SinkSettings,
    pub state: SinkRunState,
    /// The declared schema (empty: none; values are stored as they are).
    pub columns: Vec<SinkColumn>,
    pub dedup: Option<SinkDedup>,
    /// The password, by reference (`None`: the connection string's, if any).
    pub password: Option<SecretRef>,
}

impl SinkDef {
    /// The consumer group its workers form.
    pub fn group(&self) -> String {
        group_of(&self.name)
    }
}

/// The consumer group of sink `name`.
pub fn group_of(name: &str) -> String {
    format!("__sink.{name}")
}

/// What `Create` carries (the id comes from the log index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSink {
    pub name: String,
    pub topics: Vec<String>,
    pub postgres: String,
    pub table: String,
    pub key: SinkKey,
    pub value: SinkValue,
    /// `None`: `<name>.dlq`.
    pub dead_letter_topic: Option<String>,
    pub settings: SinkSettings,
    pub columns: Vec<SinkColumn>,
    pub dedup: Option<SinkDedup>,
    pub password: Option<SecretRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkCommand {
    /// Boxed: a definition is large next to the other commands of the log.
    Create(Box<NewSink>),
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkOutcome {
    Created(Box<SinkDef>),
    /// The sink's state after a pause or resume (already in it: no change).
    State(SinkRunState),
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum SinkError {
    #[error("{what} is invalid: {why}")]
    Invalid { what: String, why: String },
    #[error("sink {name:?} already exists")]
    Exists { name: String },
    #[error("sink {name:?} does not exist")]
    Unknown { name: String },
    #[error("a limit is reached: {what} (at most {max})")]
    Limit { what: String, max: usize },
}

fn invalid(what: impl Into<String>, why: impl Into<String>) -> SinkError {
    SinkError::Invalid { what: what.into(), why: why.into() }
}

/// Sink names: what a topic name allows, shorter, so the group and DLQ names stay valid.
pub fn check_sink_name(name: &str) -> Result<(), SinkError> {
    if name.is_empty()
        || name.len() > SINK_NAME_BYTES_MAX
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        || name == "."
        || name == ".."
    {
        return Err(invalid(
            format!("sink name {:?}", name.chars().take(64).collect::<String>()),
            format!("must be 1 to {SINK_NAME_BYTES_MAX} characters of [A-Za-z0-9._-]"),
        ));
    }
    Ok(())
}

/// A PostgreSQL identifier we are willing to quote into SQL: `[A-Za-z_][A-Za-z0-9_]*`, at
/// most 63 bytes (PostgreSQL's NAMEDATALEN − 1).
pub fn check_identifier(what: &str, id: &str) -> Result<(), SinkError> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || id.len() > 63 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid(
            format!("{what} {:?}", id.chars().take(64).collect::<String>()),
            "must be a PostgreSQL identifier: [A-Za-z_][A-Za-z0-9_]*, at most 63 bytes",
        ));
    }
    Ok(())
}

/// Checks the table name (`table` or `schema.table`).
pub fn check_table(table: &str) -> Result<(), SinkError> {
    if table.len() > SINK_TABLE_BYTES_MAX {
        return Err(invalid("the table name", format!("at most {SINK_TABLE_BYTES_MAX} bytes")));
    }
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 {
        return Err(invalid(format!("table {table:?}"), "must be table or schema.table"));
    }
    parts.iter().try_for_each(|p| check_identifier("table name part", p))
}

impl SinkSettings {
    pub fn check(&self) -> Result<(), SinkError> {
        let s = self;
        if !(1..=SINK_BATCH_RECORDS_MAX).contains(&s.batch_records_max) {
            return Err(invalid("batch_records_max", format!("must be 1 to {SINK_BATCH_RECORDS_MAX}")));
        }
        if !(s.batch_records_max..=SINK_BUFFERED_RECORDS_MAX).contains(&s.buffered_records_max) {
            return Err(invalid(
                "buffered_records_max",
                format!("must be batch_records_max ({}) to {SINK_BUFFERED_RECORDS_MAX}", s.batch_records_max),
            ));
        }
        if s.backoff_base_ms == 0
            || s.backoff_base_ms > s.backoff_max_ms
            || s.backoff_max_ms > SINK_WAIT_MS_MAX
        {
            return Err(invalid(
                "backoff_base_ms/backoff_max_ms",
                format!("need 1 <= base <= max <= {SINK_WAIT_MS_MAX} ms"),
            ));
        }
        if s.budget_percent > 1_000 || s.budget_floor_per_s > 10_000 {
            return Err(invalid("the retry budget", "budget_percent <= 1000, budget_floor_per_s <= 10000"));
        }
        if !(1..=1_000).contains(&s.breaker_failures_max) {
            return Err(invalid("breaker_failures_max", "must be 1 to 1000"));
        }
        if !(1..=SINK_WAIT_MS_MAX).contains(&s.breaker_open_ms) {
            return Err(invalid("breaker_open_ms", format!("must be 1 to {SINK_WAIT_MS_MAX} ms")));
        }
        Ok(())
    }
}

impl NewSink {
    /// Every rule a definition must meet, independent of the state (the HTTP layer runs it
    /// before proposing, so bad input is refused without a Raft round trip).
    pub fn check(&self) -> Result<(), SinkError> {
        check_sink_name(&self.name)?;
        if self.topics.is_empty() || self.topics.len() > SINK_TOPICS_LEN_MAX {
            return Err(invalid("the topic list", format!("1 to {SINK_TOPICS_LEN_MAX} topics")));
        }
        for (i, t) in self.topics.iter().enumerate() {
            check_topic_name(t).map_err(|e| invalid(format!("topic {t:?}"), e.to_string()))?;
            if self.topics[..i].contains(t) {
                return Err(invalid(format!("topic {t:?}"), "listed twice"));
            }
        }
        if self.postgres.trim().is_empty() || self.postgres.len() > SINK_CONNECTION_BYTES_MAX {
            return Err(invalid(
                "the PostgreSQL connection string",
                format!("must be 1 to {SINK_CONNECTION_BYTES_MAX} bytes"),
            ));
        }
        if self.postgres.chars().any(char::is_control) {
            return Err(invalid("the PostgreSQL connection string", "contains control characters"));
        }
        check_table(&self.table)?;
        if let SinkKey::Field(f) = &self.key {
            if f.is_empty() || f.len() > SINK_KEY_FIELD_BYTES_MAX || f.chars().any(char::is_control) {
                return Err(invalid(
                    "the business key field",
                    format!("must be 1 to {SINK_KEY_FIELD_BYTES_MAX} bytes without control characters"),
                ));
            }
        }
        if let Some(d) = &self.dead_letter_topic {
            check_topic_name(d).map_err(|e| invalid(format!("dead-letter topic {d:?}"), e.to_string()))?;
            if self.topics.contains(d) {
                return Err(invalid(format!("dead-letter topic {d:?}"), "is also a source topic"));
            }
        }
        if self.dead_letter_topic.is_none() && self.topics.contains(&format!("{}.dlq", self.name)) {
            return Err(invalid("the default dead-letter topic", "is also a source topic"));
        }
        self.check_columns()?;
        self.check_dedup()?;
        if let Some(p) = &self.password {
            let (SecretRef::Env(v) | SecretRef::File(v)) = p;
            if v.is_empty() || v.len() > SINK_CONNECTION_BYTES_MAX || v.chars().any(char::is_control) {
                return Err(invalid(
                    "the password reference",
                    format!("must be env:NAME or file:PATH, at most {SINK_CONNECTION_BYTES_MAX} bytes"),
                ));
            }
        }
        self.settings.check()
    }

    fn check_columns(&self) -> Result<(), SinkError> {
        if self.columns.len() > SINK_COLUMNS_LEN_MAX {
            return Err(invalid("the column list", format!("at most {SINK_COLUMNS_LEN_MAX} columns")));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if c.field.is_empty()
                || c.field.len() > SINK_COLUMN_FIELD_BYTES_MAX
                || c.field.chars().any(char::is_control)
            {
                return Err(invalid(
                    format!("the field of column {:?}", c.column),
                    format!("must be 1 to {SINK_COLUMN_FIELD_BYTES_MAX} bytes without control characters"),
                ));
            }
            check_identifier("column", &c.column)?;
            // PostgreSQL folds nothing here (names are quoted), but two columns differing only
            // in case are a trap: refuse them, and the reserved ones in any case.
            let lower = c.column.to_ascii_lowercase();
            if SINK_RESERVED_COLUMNS.contains(&lower.as_str()) {
                return Err(invalid(
                    format!("column {:?}", c.column),
                    format!("is reserved (every sink table has {})", SINK_RESERVED_COLUMNS.join(", ")),
                ));
            }
            if self.columns[..i].iter().any(|o| o.column.eq_ignore_ascii_case(&c.column)) {
                return Err(invalid(format!("column {:?}", c.column), "is mapped twice"));
            }
        }
        Ok(())
    }

    fn check_dedup(&self) -> Result<(), SinkError> {
        let Some(d) = &self.dedup else { return Ok(()) };
        if d.field.is_empty()
            || d.field.len() > SINK_KEY_FIELD_BYTES_MAX
            || d.field.chars().any(char::is_control)
        {
            return Err(invalid(
                "dedup_field",
                format!("must be 1 to {SINK_KEY_FIELD_BYTES_MAX} bytes without control characters"),
            ));
        }
        if !(1..=SINK_DEDUP_WINDOW_RECORDS_MAX).contains(&d.window_records) {
            return Err(invalid(
                "dedup_window_records",
                format!("must be 1 to {SINK_DEDUP_WINDOW_RECORDS_MAX} (the window's memory bound)"),
            ));
        }
        if d.window_ms > SINK_DEDUP_WINDOW_MS_MAX {
            return Err(invalid(
                "dedup_window_ms",
                format!("must be 0 (no time bound) to {SINK_DEDUP_WINDOW_MS_MAX} ms"),
            ));
        }
        Ok(())
    }
}

/// Every sink, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinksState {
    sinks: BTreeMap<String, SinkDef>,
}

impl SinksState {
    pub fn sinks(&self) -> &BTreeMap<String, SinkDef> {
        &self.sinks
    }

    pub fn sink(&self, name: &str) -> Option<&SinkDef> {
        self.sinks.get(name)
    }

    /// Applies the command committed at log `index`. Never panics on any input.
    pub fn apply(&mut self, index: u64, command: &SinkCommand) -> Result<SinkOutcome, SinkError> {
        match command {
            SinkCommand::Create(new) => {
                new.check()?;
                if self.sinks.contains_key(&new.name) {
                    return Err(SinkError::Exists { name: new.name.clone() });
                }
                if self.sinks.len() >= SINKS_LEN_MAX {
                    return Err(SinkError::Limit { what: "sinks".into(), max: SINKS_LEN_MAX });
                }
                let def = SinkDef {
                    name: new.name.clone(),
                    id: index,
                    topics: new.topics.clone(),
                    postgres: new.postgres.clone(),
                    table: new.table.clone(),
                    key: new.key.clone(),
                    value: new.value,
                    dead_letter_topic: new
                        .dead_letter_topic
                        .clone()
                        .unwrap_or_else(|| format!("{}.dlq", new.name)),
                    settings: new.settings,
                    state: SinkRunState::Running,
                    columns: new.columns.clone(),
                    dedup: new.dedup.clone(),
                    password: new.password.clone(),
                };
                self.sinks.insert(def.name.clone(), def.clone());
                Ok(SinkOutcome::Created(Box::new(def)))
            }
            SinkCommand::Pause { name } | SinkCommand::Resume { name } => {
                let def =
                    self.sinks.get_mut(name).ok_or_else(|| SinkError::Unknown { name: name.clone() })?;
                def.state = if matches!(command, SinkCommand::Pause { .. }) {
                    SinkRunState::Paused
                } else {
                    SinkRunState::Running
                };
                Ok(SinkOutcome::State(def.state))
            }
            SinkCommand::Delete { name } => {
                self.sinks.remove(name).ok_or_else(|| SinkError::Unknown { name: name.clone() })?;
                Ok(SinkOutcome::Deleted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str) -> NewSink {
        NewSink {
            name: name.into(),
            topics: vec!["orders".into()],
            postgres: "host=127.0.0.1 user=postgres".into(),
            table: "public.orders".into(),
            key: SinkKey::Offset,
            value: SinkValue::Bytea,
            dead_letter_topic: None,
            settings: SinkSettings::default(),
            columns: vec![SinkColumn {
                field: "amount".into(),
                column: "amount".into(),
                kind: ColumnType::Bigint,
                required: true,
            }],
            dedup: Some(SinkDedup { field: "id".into(), window_records: 1_000, window_ms: 0 }),
            password: Some(SecretRef::Env("PGPASSWORD".into())),
        }
    }

    /// Create, pause, resume and delete do what they say; the DLQ topic defaults to
    /// `<name>.dlq` and the id is the creating log index.
    #[test]
    fn lifecycle() {
        let mut s = SinksState::default();
        let Ok(SinkOutcome::Created(def)) = s.apply(7, &SinkCommand::Create(Box::new(new("pg")))) else {
            panic!()
        };
        assert_eq!((def.id, def.dead_letter_topic.as_str(), def.group()), (7, "pg.dlq", "__sink.pg".into()));
        assert_eq!(
            s.apply(8, &SinkCommand::Create(Box::new(new("pg")))),
            Err(SinkError::Exists { name: "pg".into() })
        );
        let pause = SinkCommand::Pause { name: "pg".into() };
        assert_eq!(s.apply(9, &pause), Ok(SinkOutcome::State(SinkRunState::Paused)));
        assert_eq!(s.sink("pg").map(|d| d.state), Some(SinkRunState::Paused));
        let resume = SinkCommand::Resume { name: "pg".into() };
        assert_eq!(s.apply(10, &resume), Ok(SinkOutcome::State(SinkRunState::Running)));
        assert_eq!(s.apply(11, &SinkCommand::Delete { name: "pg".into() }), Ok(SinkOutcome::Deleted));
        assert!(matches!(s.apply(12, &pause), Err(SinkError::Unknown { .. })));
    }

    /// Each kind of bad definition is refused and changes nothing.
    #[test]
    fn bad_definitions_are_refused() {
        let mut s = SinksState::default();
        type Change = Box<dyn Fn(&mut NewSink)>;
        let cases: Vec<(&str, Change)> = vec![
            ("empty name", Box::new(|n| n.name.clear())),
            ("long name", Box::new(|n| n.name = "x".repeat(SINK_NAME_BYTES_MAX + 1))),
            ("slash in name", Box::new(|n| n.name = "a/b".into())),
            ("no topics", Box::new(|n| n.topics.clear())),
            ("bad topic", Box::new(|n| n.topics = vec!["a b".into()])),
            ("twice", Box::new(|n| n.topics = vec!["a".into(), "a".into()])),
            ("empty connection", Box::new(|n| n.postgres.clear())),
            ("long connection", Box::new(|n| n.postgres = "x".repeat(SINK_CONNECTION_BYTES_MAX + 1))),
            ("injected table", Box::new(|n| n.table = "t; drop table x".into())),
            ("three-part table", Box::new(|n| n.table = "a.b.c".into())),
            ("empty field", Box::new(|n| n.key = SinkKey::Field(String::new()))),
            ("dlq is a source", Box::new(|n| n.dead_letter_topic = Some("orders".into()))),
            ("zero batch", Box::new(|n| n.settings.batch_records_max = 0)),
            ("buffer below batch", Box::new(|n| n.settings.buffered_records_max = 1)),
            ("backoff inverted", Box::new(|n| n.settings.backoff_base_ms = 20_000)),
            ("no breaker", Box::new(|n| n.settings.breaker_failures_max = 0)),
            ("reserved column", Box::new(|n| n.columns[0].column = "Offset".into())),
            ("injected column", Box::new(|n| n.columns[0].column = "a\"b".into())),
            ("empty column field", Box::new(|n| n.columns[0].field.clear())),
            ("column twice", Box::new(|n| n.columns.push(n.columns[0].clone()))),
            ("empty dedup field", Box::new(|n| n.dedup.as_mut().unwrap().field.clear())),
            ("no dedup window", Box::new(|n| n.dedup.as_mut().unwrap().window_records = 0)),
            ("huge dedup window", Box::new(|n| n.dedup.as_mut().unwrap().window_records = u32::MAX)),
            ("long dedup time", Box::new(|n| n.dedup.as_mut().unwrap().window_ms = u64::MAX)),
            ("empty secret", Box::new(|n| n.password = Some(SecretRef::File(String::new())))),
        ];
        for (why, change) in cases {
            let mut n = new("pg");
            change(&mut n);
            assert!(
                matches!(s.apply(1, &SinkCommand::Create(Box::new(n))), Err(SinkError::Invalid { .. })),
                "{why} must be refused"
            );
            assert!(s.sinks().is_empty(), "{why} changed the state");
        }
        for i in 0..SINKS_LEN_MAX {
            s.apply(1, &SinkCommand::Create(Box::new(new(&format!("s{i}"))))).unwrap();
        }
        assert!(matches!(
            s.apply(2, &SinkCommand::Create(Box::new(new("one-more")))),
            Err(SinkError::Limit { .. })
        ));
    }
}
