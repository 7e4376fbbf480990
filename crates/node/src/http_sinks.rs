//! `/v1/sinks`: sink definitions over HTTP, for operators and `quorumdb sink`. Definitions go
//! through the metadata Raft log (`Command::Sink`); `describe` adds each partition's live
//! state from the nodes running its workers and the position recorded in the warehouse.

use crate::error::ApiError;
use crate::http::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorumdb_api as api;
use quorumdb_meta::sink::{
    ColumnType, NewSink, SecretRef, SinkColumn, SinkCommand, SinkDedup, SinkDef, SinkError, SinkKey,
    SinkOutcome, SinkRunState, SinkSettings, SinkValue, SINK_DEDUP_WINDOW_RECORDS_MAX,
};
use quorumdb_meta::{Command, MetaError, Outcome};

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

fn sink_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(n)| n).map_err(|_| ApiError::BadRequest("invalid sink name in the path".into()))
}

fn not_found(name: &str) -> ApiError {
    ApiError::Metadata { code: "unknown_sink", status: 404, message: format!("sink {name:?} does not exist") }
}

fn refused(e: SinkError) -> ApiError {
    ApiError::from(quorumdb_meta::ProposeError::Refused(MetaError::Sink(e)))
}

/// The API's definition as the metadata's, or why it is not one.
fn definition(n: api::NewSink) -> Result<NewSink, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let key = match n.key.as_deref() {
        None | Some("offset") => SinkKey::Offset,
        Some(k) => match k.strip_prefix("field:") {
            Some(f) => SinkKey::Field(f.to_string()),
            None => return Err(bad(format!("key must be \"offset\" or \"field:NAME\", not {k:?}"))),
        },
    };
    let value = match n.value.as_deref() {
        None | Some("bytea") => SinkValue::Bytea,
        Some("jsonb") => SinkValue::Jsonb,
        Some(v) => return Err(bad(format!("value must be \"bytea\" or \"jsonb\", not {v:?}"))),
    };
    let d = SinkSettings::default();
    let settings = SinkSettings {
        batch_records_max: n.batch_records_max.unwrap_or(d.batch_records_max),
        buffered_records_max: n.buffered_records_max.unwrap_or(d.buffered_records_max),
        backoff_base_ms: n.backoff_base_ms.unwrap_or(d.backoff_base_ms),
        backoff_max_ms: n.backoff_max_ms.unwrap_or(d.backoff_max_ms),
        budget_percent: n.budget_percent.unwrap_or(d.budget_percent),
        budget_floor_per_s: n.budget_floor_per_s.unwrap_or(d.budget_floor_per_s),
        breaker_failures_max: n.breaker_failures_max.unwrap_or(d.breaker_failures_max),
        breaker_open_ms: n.breaker_open_ms.unwrap_or(d.breaker_open_ms),
    };
    let columns = n
        .columns
        .iter()
        .map(|c| {
            let kind = ColumnType::parse(&c.kind).ok_or_else(|| {
                bad(format!(
                    "column {:?}: type must be one of {}, not {:?}",
                    c.field,
                    ColumnType::NAMES.join(", "),
                    c.kind
                ))
            })?;
            Ok(SinkColumn {
                field: c.field.clone(),
                column: c.column.clone().unwrap_or_else(|| c.field.clone()),
                kind,
                required: c.required.unwrap_or(true),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let dedup = dedup(&n, &key)?;
    let password = match n.postgres_password.as_deref() {
        None => None,
        Some(p) => Some(SecretRef::parse(p).ok_or_else(|| {
            bad(format!(
                "postgres_password must be env:NAME or file:PATH, not {:?}",
                p.chars().take(64).collect::<String>()
            ))
        })?),
    };
    if password.is_some() && crate::sink::redact_connection(&n.postgres) != n.postgres {
        return Err(bad(
            "the password is both in the connection string and in postgres_password: give one".into()
        ));
    }
    let def = NewSink {
        name: n.name,
        topics: n.topics,
        postgres: n.postgres,
        table: n.table,
        key,
        value,
        dead_letter_topic: n.dead_letter_topic,
        settings,
        columns,
        dedup,
        password,
    };
    def.check().map_err(refused)?;
    crate::sink::check_connection_string(&def.postgres)
        .map_err(|e| bad(format!("the PostgreSQL connection string does not parse: {e}")))?;
    Ok(def)
}

/// The dedup window of a definition: on when a count or a time is given; the id field is
/// `dedup_field`, else the business key's field.
fn dedup(n: &api::NewSink, key: &SinkKey) -> Result<Option<SinkDedup>, ApiError> {
    if n.dedup_window_records.is_none() && n.dedup_window_ms.is_none() {
        if n.dedup_field.is_some() {
            return Err(ApiError::BadRequest(
                "dedup_field needs a window: dedup_window_records and/or dedup_window_ms".into(),
            ));
        }
        return Ok(None);
    }
    let field = match (&n.dedup_field, key) {
        (Some(f), _) => f.clone(),
        (None, SinkKey::Field(f)) => f.clone(),
        (None, SinkKey::Offset) => {
            return Err(ApiError::BadRequest(
                "a dedup window needs the event id's field: dedup_field, or key = \"field:NAME\"".into(),
            ))
        }
    };
    Ok(Some(SinkDedup {
        field,
        window_records: n.dedup_window_records.unwrap_or(SINK_DEDUP_WINDOW_RECORDS_MAX),
        window_ms: n.dedup_window_ms.unwrap_or(0),
    }))
}

fn info(
    d: &SinkDef,
    partitions: Vec<api::SinkPartitionInfo>,
    warehouse_error: Option<String>,
) -> api::SinkInfo {
    let s = &d.settings;
    api::SinkInfo {
        name: d.name.clone(),
        id: d.id,
        state: match d.state {
            SinkRunState::Running => "running".into(),
            SinkRunState::Paused => "paused".into(),
        },
        topics: d.topics.clone(),
        postgres: crate::sink::redact_connection(&d.postgres),
        table: d.table.clone(),
        key: match &d.key {
            SinkKey::Offset => "offset".into(),
            SinkKey::Field(f) => format!("field:{f}"),
        },
        value: match d.value {
            SinkValue::Bytea => "bytea".into(),
            SinkValue::Jsonb => "jsonb".into(),
        },
        dead_letter_topic: d.dead_letter_topic.clone(),
        group: d.group(),
        settings: api::SinkSettingsInfo {
            batch_records_max: s.batch_records_max,
            buffered_records_max: s.buffered_records_max,
            backoff_base_ms: s.backoff_base_ms,
            backoff_max_ms: s.backoff_max_ms,
            budget_percent: s.budget_percent,
            budget_floor_per_s: s.budget_floor_per_s,
            breaker_failures_max: s.breaker_failures_max,
            breaker_open_ms: s.breaker_open_ms,
        },
        postgres_password: d.password.as_ref().map(SecretRef::show),
        columns: d
            .columns
            .iter()
            .map(|c| api::SinkColumnSpec {
                field: c.field.clone(),
                column: Some(c.column.clone()),
                kind: c.kind.name().into(),
                required: Some(c.required),
            })
            .collect(),
        dedup: d.dedup.as_ref().map(|x| api::SinkDedupInfo {
            field: x.field.clone(),
            window_records: x.window_records,
            window_ms: x.window_ms,
        }),
        partitions,
        warehouse_error,
    }
}

pub(crate) async fn list_sinks(State(s): State<AppState>) -> Response {
    let v = s.meta.view();
    let sinks = v.metadata.sinks().sinks().values().map(|d| info(d, Vec::new(), None)).collect();
    (StatusCode::OK, Json(api::SinkList { sinks })).into_response()
}

pub(crate) async fn create_sink(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    respond(
        async {
            let n = crate::http::json_body::<api::NewSink>(body)?;
            let def = definition(n)?;
            if s.sinks.is_none() {
                return Err(ApiError::Unavailable(
                    "this node runs no log (no kafka_listen configured)".into(),
                ));
            }
            match s.meta.propose(Command::Sink(SinkCommand::Create(Box::new(def)))).await {
                Ok(Outcome::Sink(SinkOutcome::Created(d))) => {
                    Ok((StatusCode::CREATED, Json(info(&d, Vec::new(), None))).into_response())
                }
                Ok(other) => Err(ApiError::Internal(format!("a sink create answered {other:?}"))),
                Err(e) => Err(ApiError::from(e)),
            }
        }
        .await,
    )
}

pub(crate) async fn describe_sink(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    respond(
        async {
            let name = sink_name(name)?;
            let v = s.meta.view();
            let d = v.metadata.sinks().sink(&name).ok_or_else(|| not_found(&name))?.clone();
            let live = match &s.sinks {
                Some(m) => m.cluster_status(&name).await,
                None => Vec::new(),
            };
            let (pg, warehouse_error) = match crate::sink::warehouse_offsets(&d).await {
                Ok(o) => (Some(o), None),
                Err(e) => (None, Some(e)),
            };
            let mut partitions = Vec::new();
            for topic in &d.topics {
                let Some(t) = v.metadata.log().topic(topic) else { continue };
                for (i, p) in t.partitions.iter().enumerate() {
                    let partition = u32::try_from(i).unwrap_or(u32::MAX);
                    let worker = live.iter().find(|w| &w.topic == topic && w.partition == partition);
                    let pg_offset = match &pg {
                        Some(o) => Some(o.get(&(topic.clone(), partition)).copied().unwrap_or(0)),
                        None => worker.and_then(|w| w.pg_offset),
                    };
                    partitions.push(api::SinkPartitionInfo {
                        topic: topic.clone(),
                        partition,
                        owner: worker.and_then(|w| w.owner.clone()),
                        pg_offset,
                        high_watermark: p.next_offset,
                        lag: pg_offset.map(|o| p.next_offset.saturating_sub(o)),
                        written: worker.map_or(0, |w| w.written),
                        retries: worker.map_or(0, |w| w.retries),
                        dead_lettered: worker.map_or(0, |w| w.dead_lettered),
                        breaker: worker.map_or_else(|| "-".into(), |w| w.breaker.clone()),
                        last_error: worker.map(|w| w.last_error.clone()).unwrap_or_default(),
                        deduplicated: worker.map_or(0, |w| w.deduplicated),
                    });
                }
            }
            Ok((StatusCode::OK, Json(info(&d, partitions, warehouse_error))).into_response())
        }
        .await,
    )
}

async fn command(s: &AppState, name: String, c: SinkCommand) -> Result<Outcome, ApiError> {
    if s.meta.view().metadata.sinks().sink(&name).is_none() {
        return Err(not_found(&name));
    }
    s.meta.propose(Command::Sink(c)).await.map_err(ApiError::from)
}

async fn set_state(s: AppState, name: Result<Path<String>, PathRejection>, pause: bool) -> Response {
    respond(
        async {
            let name = sink_name(name)?;
            let c = if pause {
                SinkCommand::Pause { name: name.clone() }
            } else {
                SinkCommand::Resume { name: name.clone() }
            };
            command(&s, name.clone(), c).await?;
            let v = s.meta.view();
            let d = v.metadata.sinks().sink(&name).ok_or_else(|| not_found(&name))?;
            Ok((StatusCode::OK, Json(info(d, Vec::new(), None))).into_response())
        }
        .await,
    )
}

pub(crate) async fn pause_sink(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    set_state(s, name, true).await
}

pub(crate) async fn resume_sink(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    set_state(s, name, false).await
}

pub(crate) async fn delete_sink(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    respond(
        async {
            let name = sink_name(name)?;
            command(&s, name.clone(), SinkCommand::Delete { name: name.clone() }).await?;
            Ok((StatusCode::OK, Json(api::SinkDeleted { name })).into_response())
        }
        .await,
    )
}
