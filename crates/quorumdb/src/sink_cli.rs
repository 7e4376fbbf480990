//! `quorumdb sink ...`: sinks that deliver topics to PostgreSQL, over the HTTP API.
//!
//! ```text
//!   quorumdb sink create orders-pg --topic orders --postgres 'host=db user=etl' --table orders \
//!       [--key offset|field:event_id] [--config sink.toml] [--postgres-password env:VAR|file:PATH] \
//!       [--column FIELD:TYPE[?][:COLUMN]]... [--dedup-field F] [--dedup-window-records N] [--dedup-window-ms MS]
//!   quorumdb sink list [-o table|json]
//!   quorumdb sink describe orders-pg [-o table|json]   per partition: owner node, warehouse
//!                                                       offset, high watermark, lag, retries,
//!                                                       dead letters, breaker
//!   quorumdb sink pause|resume|delete orders-pg
//! ```
//!
//! `--config` takes a TOML file with the fields of `POST /v1/sinks` (docs/api.md); flags
//! override the file.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quorumdb_api as api;
use std::path::PathBuf;

use crate::cli::{EndpointArg, TableOrJson};

#[derive(Args, Debug)]
pub struct SinkArgs {
    #[command(subcommand)]
    pub command: SinkCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum SinkCommand {
    /// Create a sink (it starts running at once).
    Create(Box<CreateArgs>),
    /// List the sinks.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Show one sink and each partition's delivery state.
    Describe {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Stop delivering (members stay in the group: no rebalance).
    Pause { name: String },
    /// Deliver again from the warehouse's recorded offsets.
    Resume { name: String },
    /// Delete the sink (rows and the warehouse's offsets stay).
    Delete { name: String },
}

/// `quorumdb sink create`'s arguments.
#[derive(Args, Debug)]
pub struct CreateArgs {
    name: String,
    /// A topic to deliver (repeatable).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// PostgreSQL connection string (`host=... user=... dbname=...` or a URL).
    #[arg(long)]
    postgres: Option<String>,
    /// Target table (`table` or `schema.table`); created if missing.
    #[arg(long)]
    table: Option<String>,
    /// `offset` (upsert on topic, partition, offset) or `field:NAME` (on a JSON field).
    #[arg(long)]
    key: Option<String>,
    /// The password by reference, resolved on each node: `env:VAR` or `file:PATH` (keeps
    /// it out of the cluster metadata).
    #[arg(long)]
    postgres_password: Option<String>,
    /// A mapped column of the declared schema (repeatable): `FIELD:TYPE` with TYPE one of
    /// text, bigint, double, boolean, jsonb; `TYPE?` for an optional field; `:COLUMN` to
    /// name the column (default: the field). Replaces the file's `columns`.
    #[arg(long = "column")]
    columns: Vec<String>,
    /// The JSON field with the event id to deduplicate on (default: the key's field).
    #[arg(long)]
    dedup_field: Option<String>,
    /// Offsets per partition the dedup window spans.
    #[arg(long)]
    dedup_window_records: Option<u32>,
    /// Event-time bound of the dedup window, in ms.
    #[arg(long)]
    dedup_window_ms: Option<u64>,
    /// A TOML file with any fields of the HTTP body (settings, value format, DLQ topic).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: TableOrJson,
}

/// `FIELD:TYPE[?][:COLUMN]` as a column of the HTTP body.
fn parse_column(spec: &str) -> Result<api::SinkColumnSpec> {
    let mut parts = spec.split(':');
    let (Some(field), Some(kind)) = (parts.next(), parts.next()) else {
        bail!("--column {spec:?}: expected FIELD:TYPE[?][:COLUMN]");
    };
    let column = parts.next().map(str::to_string);
    if field.is_empty() || parts.next().is_some() || column.as_deref() == Some("") {
        bail!("--column {spec:?}: expected FIELD:TYPE[?][:COLUMN]");
    }
    let (kind, required) = match kind.strip_suffix('?') {
        Some(k) => (k, false),
        None => (kind, true),
    };
    Ok(api::SinkColumnSpec { field: field.into(), column, kind: kind.into(), required: Some(required) })
}

fn print_sink(s: &api::SinkInfo) {
    println!(
        "sink {} ({}) topics {} -> {} key {} value {} dlq {} group {}",
        s.name,
        s.state,
        s.topics.join(","),
        s.table,
        s.key,
        s.value,
        s.dead_letter_topic,
        s.group
    );
    if let Some(p) = &s.postgres_password {
        println!("password from {p}");
    }
    if !s.columns.is_empty() {
        let cols: Vec<String> = s
            .columns
            .iter()
            .map(|c| {
                let opt = if c.required == Some(false) { "?" } else { "" };
                format!("{}:{}{opt} -> {}", c.field, c.kind, c.column.as_deref().unwrap_or(&c.field))
            })
            .collect();
        println!("schema {}", cols.join(", "));
    }
    if let Some(d) = &s.dedup {
        println!(
            "dedup on {:?} over {} offsets, {} ms (0: no time bound)",
            d.field, d.window_records, d.window_ms
        );
    }
}

pub async fn sink(a: SinkArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        SinkCommand::Create(create) => {
            let CreateArgs {
                name,
                topics,
                postgres,
                table,
                key,
                postgres_password,
                columns,
                dedup_field,
                dedup_window_records,
                dedup_window_ms,
                config,
                output,
            } = *create;
            let mut body: api::NewSink = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    toml::from_str(&text)
                        .with_context(|| format!("{} is not a sink config", path.display()))?
                }
                None => api::NewSink::default(),
            };
            body.name = name;
            if !topics.is_empty() {
                body.topics = topics;
            }
            if let Some(p) = postgres {
                body.postgres = p;
            }
            if let Some(t) = table {
                body.table = t;
            }
            if key.is_some() {
                body.key = key;
            }
            if postgres_password.is_some() {
                body.postgres_password = postgres_password;
            }
            if !columns.is_empty() {
                body.columns = columns.iter().map(|c| parse_column(c)).collect::<Result<_>>()?;
            }
            if dedup_field.is_some() {
                body.dedup_field = dedup_field;
            }
            if dedup_window_records.is_some() {
                body.dedup_window_records = dedup_window_records;
            }
            if dedup_window_ms.is_some() {
                body.dedup_window_ms = dedup_window_ms;
            }
            if body.topics.is_empty() || body.postgres.is_empty() || body.table.is_empty() {
                bail!("a sink needs --topic, --postgres and --table (as flags or in --config)");
            }
            let s = client.create_sink(&body).await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&s)?),
                TableOrJson::Table => print_sink(&s),
            }
        }
        SinkCommand::List { output } => {
            let l = client.sinks().await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TableOrJson::Table => {
                    println!("{:<24} {:<8} {:<32} {:<24} {:<16}", "SINK", "STATE", "TOPICS", "TABLE", "KEY");
                    for s in &l.sinks {
                        println!(
                            "{:<24} {:<8} {:<32} {:<24} {:<16}",
                            s.name,
                            s.state,
                            s.topics.join(","),
                            s.table,
                            s.key
                        );
                    }
                }
            }
        }
        SinkCommand::Describe { name, output } => {
            let s = client.sink(&name).await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&s)?),
                TableOrJson::Table => {
                    print_sink(&s);
                    if let Some(e) = &s.warehouse_error {
                        println!("warehouse: {e}");
                    }
                    println!(
                        "{:<24} {:>9} {:<10} {:>10} {:>10} {:>8} {:>9} {:>6} {:>7} {:<9} LAST_ERROR",
                        "TOPIC",
                        "PARTITION",
                        "OWNER",
                        "PG_OFFSET",
                        "HIGH_WM",
                        "LAG",
                        "RETRIES",
                        "DLQ",
                        "DEDUP",
                        "BREAKER"
                    );
                    let dash = |o: Option<u64>| o.map_or_else(|| "-".to_string(), |v| v.to_string());
                    for p in &s.partitions {
                        println!(
                            "{:<24} {:>9} {:<10} {:>10} {:>10} {:>8} {:>9} {:>6} {:>7} {:<9} {}",
                            p.topic,
                            p.partition,
                            p.owner.as_deref().unwrap_or("-"),
                            dash(p.pg_offset),
                            p.high_watermark,
                            dash(p.lag),
                            p.retries,
                            p.dead_lettered,
                            p.deduplicated,
                            p.breaker,
                            p.last_error
                        );
                    }
                }
            }
        }
        SinkCommand::Pause { name } => {
            let s = client.set_sink_paused(&name, true).await?;
            println!("sink {} {}", s.name, s.state);
        }
        SinkCommand::Resume { name } => {
            let s = client.set_sink_paused(&name, false).await?;
            println!("sink {} {}", s.name, s.state);
        }
        SinkCommand::Delete { name } => {
            let d = client.delete_sink(&name).await?;
            println!("sink {} deleted", d.name);
        }
    }
    Ok(0)
}
