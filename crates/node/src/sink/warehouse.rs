//! PostgreSQL: connections and timeouts, the DDL, the upsert and the fenced offsets update,
//! and the classification of errors into transient and permanent.

use super::*;

/// Classifies a PostgreSQL failure: data the warehouse refuses (SQLSTATE classes 22 data
/// exception, 23 integrity violation, 42 syntax or undefined object) can never succeed and is
/// permanent — the record is bisected out and dead-lettered; everything else (connection
/// errors, 08 connection exception, 40001/40P01 serialization failure or deadlock, 53
/// insufficient resources, 57 operator intervention such as a shutdown, timeouts) is transient.
pub fn classify(e: &tokio_postgres::Error) -> Failure {
    let text = truncate(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    });
    match e.code().map(|c| c.code()) {
        Some(code) if code.starts_with("22") || code.starts_with("23") || code.starts_with("42") => {
            Failure::Permanent(text)
        }
        _ => Failure::Transient(text),
    }
}

pub(super) fn quote_table(table: &str) -> String {
    // The name was checked to be one or two plain identifiers (`check_table`).
    table.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

/// The DDL a sink needs: its table (if missing, with the mapped columns, required ones NOT
/// NULL), the mapped columns on an existing table (added nullable: the rows already there have
/// no value), and the offsets table.
pub(super) fn ddl(def: &SinkDef) -> Vec<String> {
    let value = match def.value {
        SinkValue::Bytea => "bytea",
        SinkValue::Jsonb => "jsonb",
    };
    let business = match def.key {
        SinkKey::Offset => "",
        SinkKey::Field(_) => "\"event_key\" text NOT NULL UNIQUE, ",
    };
    let mapped: String = def
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}{}, ", c.column, c.kind.sql(), if c.required { " NOT NULL" } else { "" }))
        .collect();
    let table = quote_table(&def.table);
    let mut out = vec![
        "CREATE TABLE IF NOT EXISTS quorumdb_sink_offsets (sink text NOT NULL, topic text NOT NULL, \
         partition int NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (sink, topic, partition))"
            .to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\"topic\" text NOT NULL, \"partition\" int NOT NULL, \
             \"offset\" bigint NOT NULL, \"key\" bytea, \"value\" {value}, \"timestamp\" timestamptz NOT NULL, \
             {business}{mapped}PRIMARY KEY (\"topic\", \"partition\", \"offset\"))"
        ),
    ];
    if !def.columns.is_empty() {
        let adds: Vec<String> = def
            .columns
            .iter()
            .map(|c| format!("ADD COLUMN IF NOT EXISTS \"{}\" {}", c.column, c.kind.sql()))
            .collect();
        out.push(format!("ALTER TABLE {table} {}", adds.join(", ")));
    }
    out
}

/// The upsert of one batch. `ON CONFLICT DO NOTHING` without a target covers the primary key
/// and, in business-key mode, the key's unique constraint: a replayed record or event is skipped.
/// Parameters: $1 topic, $2 partition, $3..$6 the arrays of offsets, keys, values, timestamps,
/// then the key's field (business-key mode), then the mapped fields' names as one array (with a
/// schema). The value is parsed once (`LATERAL`) when a key field or mapped column needs it;
/// the worker checked the schema, so the casts succeed.
pub(super) fn insert_sql(def: &SinkDef) -> String {
    let value = match def.value {
        SinkValue::Bytea => "v",
        SinkValue::Jsonb => "j",
    };
    let business = matches!(def.key, SinkKey::Field(_));
    let parse = business || !def.columns.is_empty() || def.value == SinkValue::Jsonb;
    let mut cols = String::new();
    let mut exprs = String::new();
    if business {
        cols.push_str(", \"event_key\"");
        exprs.push_str(", j ->> $7::text");
    }
    let fields = if business { 8 } else { 7 };
    for (i, c) in def.columns.iter().enumerate() {
        let f = format!("(${fields}::text[])[{}]", i + 1);
        cols.push_str(&format!(", \"{}\"", c.column));
        exprs.push_str(&match c.kind {
            ColumnType::Text => format!(", j ->> {f}"),
            ColumnType::Bigint => format!(", (j ->> {f})::bigint"),
            ColumnType::Double => format!(", (j ->> {f})::double precision"),
            ColumnType::Boolean => format!(", (j ->> {f})::boolean"),
            ColumnType::Jsonb => format!(", NULLIF(j -> {f}, 'null'::jsonb)"),
        });
    }
    let lateral = if parse { ", LATERAL (SELECT convert_from(v, 'UTF8')::jsonb) AS p(j)" } else { "" };
    format!(
        "INSERT INTO {} (\"topic\", \"partition\", \"offset\", \"key\", \"value\", \"timestamp\"{cols}) \
         SELECT $1::text, $2::int, o, k, {value}, to_timestamp(ts::double precision / 1000){exprs} \
         FROM unnest($3::bigint[], $4::bytea[], $5::bytea[], $6::bigint[]) AS u(o, k, v, ts){lateral} \
         ON CONFLICT DO NOTHING",
        quote_table(&def.table)
    )
}

pub(super) const FENCED_UPDATE: &str = "UPDATE quorumdb_sink_offsets SET next_offset = $4 \
     WHERE sink = $1 AND topic = $2 AND partition = $3 AND next_offset = $5";

/// Why a warehouse transaction did not commit.
pub(super) enum WriteError {
    Failed(Failure),
    /// The offsets row is not where this worker left it: another worker moved it.
    Fenced,
}

pub(super) async fn pg<T>(
    f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_millis(PG_TIMEOUT_MS), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(Failure::Transient(format!("PostgreSQL did not answer within {PG_TIMEOUT_MS} ms"))),
    }
}

/// The password a reference names, read now (a rotated secret is picked up on the next
/// connection). Failing to read it is transient: the operator can fix the node's environment.
fn resolve_password(r: &SecretRef) -> Result<Vec<u8>, Failure> {
    match r {
        SecretRef::Env(name) => std::env::var(name)
            .map(String::into_bytes)
            .map_err(|e| Failure::Transient(format!("the password reference env:{name}: {e}"))),
        SecretRef::File(path) => {
            let mut b = std::fs::read(path)
                .map_err(|e| Failure::Transient(format!("the password reference file:{path}: {e}")))?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            Ok(b)
        }
    }
}

/// Opens a connection to the sink's warehouse (bounded by `PG_TIMEOUT_MS`) and drives it on
/// its own task.
pub(super) async fn connect(def: &SinkDef) -> Result<tokio_postgres::Client, Failure> {
    let mut config = tokio_postgres::Config::from_str(&def.postgres)
        .map_err(|e| Failure::Transient(format!("bad connection string: {e}")))?;
    config.connect_timeout(Duration::from_millis(PG_TIMEOUT_MS));
    if let Some(r) = &def.password {
        config.password(resolve_password(r)?);
    }
    let (client, connection) = pg(config.connect(tokio_postgres::NoTls)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "sink PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The connection string with its password replaced by `***`, for answers and logs: the
/// definition keeps the real one (in the metadata), nothing shows it.
pub fn redact_connection(conn: &str) -> String {
    if let Some(scheme_end) = conn.find("://") {
        // URL form: postgresql://user:password@host/db?password=...
        let (scheme, rest) = conn.split_at(scheme_end + 3);
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => format!("{}:***{}", &authority[..colon], &authority[at..]),
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let tail = match tail.find("password=") {
            Some(i) => {
                let end = tail[i..].find('&').map_or(tail.len(), |e| i + e);
                format!("{}password=***{}", &tail[..i], &tail[end..])
            }
            None => tail.to_string(),
        };
        return format!("{scheme}{authority}{tail}");
    }
    // Key-value form: password=secret or password='se cret'.
    let mut out = String::with_capacity(conn.len());
    let mut rest = conn;
    while let Some(i) = rest.find("password") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "password".len()..];
        let trimmed = after.trim_start();
        let Some(value) = trimmed.strip_prefix('=') else {
            out.push_str("password");
            rest = after;
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |e| e + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str("password=***");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Checks that a connection string parses (the HTTP layer refuses bad ones up front).
pub fn check_connection_string(conn: &str) -> Result<(), String> {
    tokio_postgres::Config::from_str(conn).map(|_| ()).map_err(|e| e.to_string())
}

/// The sink's offsets in the warehouse, for `sink describe`: `(topic, partition) → next`.
pub async fn warehouse_offsets(def: &SinkDef) -> Result<BTreeMap<(String, u32), u64>, String> {
    let text = |f: Failure| match f {
        Failure::Permanent(e) | Failure::Transient(e) => e,
    };
    let client = connect(def).await.map_err(text)?;
    let rows = pg(client.query(
        "SELECT topic, partition, next_offset FROM quorumdb_sink_offsets WHERE sink = $1",
        &[&def.name],
    ))
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        // No offsets table yet: nothing delivered.
        Err(Failure::Permanent(e)) if e.starts_with("42P01") => return Ok(BTreeMap::new()),
        Err(e) => return Err(text(e)),
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            let topic: String = r.try_get(0).ok()?;
            let partition: i32 = r.try_get(1).ok()?;
            let next: i64 = r.try_get(2).ok()?;
            Some(((topic, u32::try_from(partition).ok()?), u64::try_from(next).ok()?))
        })
        .collect())
}
