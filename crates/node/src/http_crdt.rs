//! `GET|POST /v1/tables/{table}/crdt/{key}`: the CRDT tables' operations (issue #14).
//!
//! A read returns the item's CRDT value (the join of the concurrent states the replicas hold)
//! and a `context`: the CRDT's clock as a causality token, signed like the item routes' tokens
//! but over the address `{table}/crdt` (a name no table can have), so neither kind of token is
//! accepted as the other. A `POST` sends one operation; the gateway encodes it and writes it like
//! a put, and the home replica that coordinates the write applies it to what it holds
//! (`quorumdb_core::replica::crdt_table`). A remove removes only what its context observed.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quorumdb_api::crdt::{CrdtField, CrdtOpBody, CrdtReadQuery, CrdtResponse, CrdtValue, CrdtWriteQuery};
use quorumdb_core::causality::{ActorId, ItemState, Value, VersionVector};
use quorumdb_core::crdt::{CrdtKind, CrdtOp, CrdtState, FieldValue};
use quorumdb_core::key::ItemKey;
use quorumdb_core::replica::{crdt_table, Conflict};
use quorumdb_meta::auth::ContextKey;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::ApiError;
use crate::http::{
    context, context_keys, finish, item_key, level, level_label, path2, query, quorum_mode, signed, timeout,
    AppState,
};
use crate::node::WriteSettings;

/// The table's CRDT type, or a 400 naming how to declare one.
fn kind_of(s: &AppState, table: &str) -> Result<CrdtKind, ApiError> {
    match s.node.config.conflict_of(table).replica() {
        Conflict::Crdt(kind) => Ok(kind),
        _ => Err(ApiError::BadRequest(format!(
            "table {table:?} is not a CRDT table (conflict {}); declare it with conflict = \"crdt-counter\", \
             \"crdt-set\" or \"crdt-map\" in the [[tables]] config",
            s.node.config.conflict_of(table).name()
        ))),
    }
}

/// The address a CRDT context is signed for: the item's, under a table name no real table can
/// have (table names exclude `/`), so an item token never verifies as a CRDT context.
fn context_address(item: &ItemKey) -> ItemKey {
    ItemKey {
        table: format!("{}/crdt", item.table),
        partition: item.partition.clone(),
        sort: item.sort.clone(),
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The JSON form of a joined state.
pub(crate) fn value_json(raw: &ItemState, state: &CrdtState) -> CrdtValue {
    let mut out = CrdtValue {
        kind: state.kind().as_str().into(),
        states: raw.siblings().iter().filter(|(_, v)| matches!(v, Value::Data(_))).count(),
        metadata_entries: state.metadata_len(),
        stored_bytes: raw.encode().len(),
        ..CrdtValue::default()
    };
    match state {
        CrdtState::Counter(c) => out.value = Some(clamp(c.value())),
        CrdtState::Set(set) => out.elements = Some(set.elements().cloned().collect()),
        CrdtState::Map(m) => {
            let mut fields: BTreeMap<String, CrdtField> = BTreeMap::new();
            for ((name, _), v) in m.fields() {
                let f = fields.entry(name).or_default();
                match v {
                    FieldValue::Counter(n) => f.counter = Some(clamp(n)),
                    FieldValue::Set(e) => f.set = Some(e),
                    FieldValue::Register(vals) => {
                        f.register =
                            Some(vals.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect())
                    }
                }
            }
            out.fields = Some(fields);
        }
    }
    out
}

fn joined(raw: &ItemState, kind: CrdtKind) -> Result<CrdtState, ApiError> {
    crdt_table::joined(raw, kind).map_err(|e| ApiError::Internal(format!("stored CRDT state: {e}")))
}

fn respond(
    keys: &[ContextKey],
    item: &ItemKey,
    raw: &ItemState,
    kind: CrdtKind,
) -> Result<Response, ApiError> {
    let state = joined(raw, kind)?;
    let vv: VersionVector = state.context().into_iter().map(|(a, c)| (ActorId(a), c)).collect();
    let context = signed(keys, &context_address(item), &vv);
    Ok((StatusCode::OK, Json(CrdtResponse { crdt: value_json(raw, &state), context })).into_response())
}

/// What `inspect` shows for a replica's raw state of a CRDT table (`None` for other tables, or
/// a state that does not decode).
pub(crate) fn inspect_view(s: &AppState, table: &str, raw: &ItemState) -> Option<CrdtValue> {
    let kind = kind_of(s, table).ok()?;
    let state = crdt_table::joined(raw, kind).ok()?;
    Some(value_json(raw, &state))
}

pub(crate) async fn get_crdt(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let q = query::<CrdtReadQuery>(&raw);
    let lvl = level_label(&q, "r", |q| (None, q.r.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let kind = kind_of(&s, &table)?;
        let r = level(q.r.as_deref(), "r")?;
        let mode = quorum_mode(&s.node, q.quorum.as_deref())?;
        let keys = context_keys(&s).await;
        let state = s
            .node
            .read(
                item.clone(),
                r,
                s.node.config.read_repair,
                mode,
                timeout(&s.node, q.timeout_ms.as_deref())?,
            )
            .await?;
        respond(&keys, &item, &state, kind)
    }
    .await;
    finish("crdt_get", &lvl, started, result)
}

/// Turns the body into an operation, checking that it names what its kind needs.
fn op_of(keys: &[ContextKey], item: &ItemKey, kind: CrdtKind, b: CrdtOpBody) -> Result<CrdtOp, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let unexpected = |what: &str, name: &str| bad(format!("{what} takes no {name:?}"));
    let field = match (kind, b.field) {
        (CrdtKind::Map, None) => return Err(bad("an operation on a map table names its \"field\"".into())),
        (CrdtKind::Map, Some(f)) => Some(f),
        (_, Some(_)) => return Err(bad(format!("a {} table has no fields; drop \"field\"", kind.as_str()))),
        (_, None) => None,
    };
    let op = match b.op.as_str() {
        "incr" => {
            if b.element.is_some() || b.value.is_some() || b.context.is_some() {
                return Err(bad("incr takes \"by\" (and \"field\" in a map) only".into()));
            }
            CrdtOp::Incr { field, by: b.by.unwrap_or(1) }
        }
        "add" => {
            if b.by.is_some() || b.value.is_some() || b.context.is_some() {
                return Err(bad("add takes \"element\" (and \"field\" in a map) only".into()));
            }
            let elem = b.element.ok_or_else(|| bad("add needs an \"element\"".into()))?;
            CrdtOp::Add { field, elem }
        }
        "remove" => {
            if let Some(by) = b.by {
                return Err(unexpected("remove", &format!("by={by}")));
            }
            if b.value.is_some() {
                return Err(unexpected("remove", "value"));
            }
            let token = b.context.ok_or_else(|| {
                bad("a remove carries the \"context\" of the read it follows (it removes only what that read saw)"
                    .into())
            })?;
            let vv = context(keys, &context_address(item), Some(&token))?;
            let ctx = vv.iter().map(|(a, c)| (a.0, c)).collect();
            if kind == CrdtKind::Set && b.element.is_none() {
                return Err(bad("remove from a set table needs an \"element\"".into()));
            }
            CrdtOp::Remove { field, elem: b.element, ctx }
        }
        "assign" => {
            if b.by.is_some() || b.element.is_some() || b.context.is_some() {
                return Err(bad("assign takes \"field\" and \"value\" only".into()));
            }
            let value = b.value.ok_or_else(|| bad("assign needs a \"value\"".into()))?;
            let field = field.ok_or_else(|| bad("assign needs a \"field\"".into()))?;
            CrdtOp::Assign { field, value: value.into_bytes() }
        }
        other => return Err(bad(format!("op must be incr, add, remove or assign, not {other:?}"))),
    };
    // The op's fit to the table's type is also checked by the replica; checking here answers
    // the common mistakes before any replica is involved.
    CrdtState::empty(kind).apply(0, op.clone()).map_err(|e| match e {
        // Too many removes waiting for adds this replica has not seen: a conflict the client
        // resolves by reading again (and waiting for replication), not a server fault.
        quorumdb_core::crdt::CrdtError::TooManyDeferred { .. } => {
            ApiError::Metadata { code: "too_many_deferred_removes", status: 409, message: e.to_string() }
        }
        other => bad(other.to_string()),
    })?;
    op.validate().map_err(|e| bad(e.to_string()))?;
    Ok(op)
}

pub(crate) async fn post_crdt(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let q = query::<CrdtWriteQuery>(&raw);
    let lvl = level_label(&q, "w", |q| (None, q.w.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let kind = kind_of(&s, &table)?;
        let body: CrdtOpBody = crate::http::json_body(body)?;
        let keys = context_keys(&s).await;
        let op = op_of(&keys, &item, kind, body)?;
        let settings = WriteSettings {
            w: level(q.w.as_deref(), "w")?,
            mode: quorum_mode(&s.node, q.quorum.as_deref())?,
            timeout: timeout(&s.node, q.timeout_ms.as_deref())?,
            // No write id: see `crdt_table` (a retried operation is applied again).
            write_id: None,
            fence: None,
        };
        let state = s.node.write(item.clone(), Some(op.encode()), VersionVector::new(), settings).await?;
        respond(&keys, &item, &state, kind)
    }
    .await;
    finish("crdt_post", &lvl, started, result)
}
