//! The HTTP/JSON API (axum). Architecture invariant: this is the only module that knows HTTP or
//! JSON; it translates requests into [`Node`] calls and [`ApiError`]s into status codes with a
//! JSON body `{"error": {"code": ..., "message": ...}}`.

use crate::config::{QuorumMode, ReadRepair};
use crate::error::ApiError;
use crate::node::Node;
use crate::transport::FaultRules;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use quorumdb_core::causality::{ItemState, VersionVector};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_core::limits::{
    CONTEXT_TOKEN_CHARS_MAX, SCAN_PAGE_LEN_DEFAULT, SCAN_PAGE_LEN_MAX, VALUE_BYTES_MAX,
};
use serde_json::{json, Value as Json_};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body. A value may be `VALUE_BYTES_MAX` bytes and JSON escaping can grow a
/// string up to 6× (`\u0000`), so the body limit leaves room for that and the envelope; the
/// value itself is checked against `VALUE_BYTES_MAX` after decoding.
pub const REQUEST_BODY_BYTES_MAX: usize = 6 * VALUE_BYTES_MAX + 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Bounds client requests in flight (`http_inflight_max`). A request that finds no permit
    /// is refused at once with 503 `overloaded` rather than queued: queueing would only turn
    /// overload into timeouts for everyone.
    pub inflight: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: AppState) -> Router {
    // Fault injection lets any HTTP client partition or poison the node, so it is only served
    // when the config asks for it (`admin_enabled`). Repair is not under /v1/admin: it is an
    // operator action that only runs the rate-limited anti-entropy the node runs anyway.
    let admin = Router::new()
        .route("/v1/admin/faults", get(get_faults).put(put_faults))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin_gate));
    Router::new()
        .route("/v1/tables/{table}/items/{key}", get(get_item).put(put_item).delete(delete_item))
        .route("/v1/tables/{table}/items/{key}/replicas", get(inspect_item))
        .route("/v1/tables/{table}/partitions/{key}", get(scan_partition))
        .route("/v1/cluster/status", get(status))
        .route("/v1/repair", get(repair_progress).post(start_repair))
        .merge(admin)
        .route("/metrics", get(metrics_route))
        .route("/livez", get(|| async { (StatusCode::OK, Json(json!({"status": "live"}))) }))
        .route("/readyz", get(readyz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admission))
        .with_state(state)
}

/// Admission control: every request holds an in-flight permit until its response is built.
async fn admission(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = s.inflight.clone().try_acquire_owned() else {
        metrics::counter!("quorumdb_requests_rejected_total", "reason" => "overloaded").increment(1);
        return ApiError::Overloaded(format!(
            "node {} has {} requests in flight (http_inflight_max); retry with backoff",
            s.node.id(),
            s.node.config.http_inflight_max
        ))
        .into_response();
    };
    next.run(req).await
}

/// Refuses every `/v1/admin/*` route unless the node's config has `admin_enabled = true`.
async fn admin_gate(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !s.node.config.admin_enabled {
        return ApiError::AdminDisabled(format!(
            "{} is an admin (fault-injection) endpoint and admin endpoints are disabled on node {}; \
             set admin_enabled = true in its config to enable them (only where no untrusted client \
             can reach the HTTP port: there is no authentication)",
            req.uri().path(),
            s.node.id()
        ))
        .into_response();
    }
    next.run(req).await
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::Quorum(d) = &self {
            error["needed"] = json!(d.needed);
            error["answered"] = json!(d.got);
            error["replicas"] =
                d.outcomes.iter().map(|(node, outcome)| json!({"node": node, "outcome": outcome})).collect();
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

async fn unknown_route(uri: axum::http::Uri) -> Response {
    let msg = format!("no route for {}; see docs/api.md", uri.path());
    (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "unknown_route", "message": msg}}))).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let msg = format!("method {method} is not allowed on {}", uri.path());
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"error": {"code": "method_not_allowed", "message": msg}})))
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Parameter parsing

type Params = HashMap<String, String>;

fn path2(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v).map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
}

/// Parses the query string and refuses parameters the route does not know, so a typo such as
/// `?W=all` is an error instead of a silently ignored setting.
fn params(q: Result<Query<Params>, QueryRejection>, allowed: &[&str]) -> Result<Params, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))?;
    if let Some(bad) = p.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter {bad:?}; this route accepts: {}",
            allowed.join(", ")
        )));
    }
    Ok(p)
}

fn level(p: &Params, name: &'static str) -> Result<Level, ApiError> {
    match p.get(name) {
        None => Ok(Level::Quorum),
        Some(s) => Ok(Level::parse(name, s)?),
    }
}

fn timeout(node: &Node, p: &Params) -> Result<Duration, ApiError> {
    let max = crate::config::REQUEST_TIMEOUT_MS_MAX;
    match p.get("timeout_ms") {
        None => Ok(Duration::from_millis(node.config.request_timeout_ms)),
        Some(s) => match s.parse::<u64>() {
            Ok(ms) if (1..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(ApiError::BadRequest(format!("timeout_ms must be an integer in 1..={max}, got {s:?}"))),
        },
    }
}

fn quorum_mode(node: &Node, p: &Params) -> Result<QuorumMode, ApiError> {
    match p.get("quorum") {
        None => Ok(node.config.quorum),
        Some(m) => m.parse().map_err(ApiError::BadRequest),
    }
}

fn context(token: Option<&str>) -> Result<VersionVector, ApiError> {
    match token {
        None | Some("") => Ok(VersionVector::new()),
        Some(t) if t.len() > CONTEXT_TOKEN_CHARS_MAX => Err(ApiError::MalformedContext(format!(
            "malformed causality token: longer than {CONTEXT_TOKEN_CHARS_MAX} characters"
        ))),
        Some(t) => Ok(VersionVector::from_token(t)?),
    }
}

fn item_key(table: &str, key: &str, p: &Params) -> Result<ItemKey, ApiError> {
    let sort = p.get("sort_key").map(String::as_str).unwrap_or("");
    Ok(ItemKey::new(table, key.as_bytes(), sort.as_bytes())?)
}

fn values_json(state: &ItemState) -> Vec<String> {
    state.values().into_iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// Records the request metrics and turns the result into a response.
fn finish(op: &'static str, lvl: &str, started: Instant, result: Result<Response, ApiError>) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("quorumdb_requests_total", "op" => op, "level" => lvl.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("quorumdb_request_duration_seconds", "op" => op, "level" => lvl.to_owned())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The metrics label for a request's consistency level. Only valid levels become labels (a
/// client sending garbage must not create unbounded label values); the rest are "invalid".
fn level_label(p: &Result<Params, ApiError>, name: &'static str) -> String {
    let Ok(p) = p else { return "invalid".into() };
    if p.get("consistency").is_some_and(|c| c == "linearizable") {
        return "linearizable".into();
    }
    match p.get(name).map(|s| Level::parse(name, s)) {
        None => "quorum".into(),
        Some(Ok(Level::Count(c))) if c <= quorumdb_core::limits::REPLICATION_FACTOR_MAX => c.to_string(),
        Some(Ok(Level::Count(_))) | Some(Err(_)) => "invalid".into(),
        Some(Ok(level)) => level.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Item routes

async fn get_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Params>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let p = params(q, &["sort_key", "r", "read_repair", "quorum", "consistency", "timeout_ms"]);
    let lvl = level_label(&p, "r");
    let result = async {
        let (table, key) = path2(path)?;
        let p = p?;
        let item = item_key(&table, &key, &p)?;
        let repair = match p.get("read_repair") {
            None => s.node.config.read_repair,
            Some(m) => m.parse::<ReadRepair>().map_err(ApiError::BadRequest)?,
        };
        let mut r = level(&p, "r")?;
        let mut repair = repair;
        match p.get("consistency").map(String::as_str) {
            None | Some("quorum") => {}
            // Quorum read plus a blocking write-back of what it returns to the read quorum
            // (ABD-style): a later read cannot return an older value than this one did.
            Some("linearizable") => {
                if p.contains_key("r") || p.contains_key("read_repair") {
                    return Err(ApiError::BadRequest(
                        "consistency=linearizable sets r=quorum and its own write-back; drop r and read_repair".into(),
                    ));
                }
                r = Level::Quorum;
                repair = ReadRepair::WriteBack;
            }
            Some(other) => {
                return Err(ApiError::BadRequest(format!("consistency must be quorum or linearizable, got {other:?}")))
            }
        }
        let state = s.node.read(item, r, repair, quorum_mode(&s.node, &p)?, timeout(&s.node, &p)?).await?;
        let view = s.node.client_view(&table, &state);
        let body = json!({"values": values_json(&view), "context": state.context().to_token()});
        if view.is_deleted() {
            let mut body = body;
            body["error"] =
                json!({"code": "not_found", "message": format!("key {key:?} not found in table {table:?}")});
            return Ok((StatusCode::NOT_FOUND, Json(body)).into_response());
        }
        Ok((StatusCode::OK, Json(body)).into_response())
    }
    .await;
    finish("get", &lvl, started, result)
}

async fn put_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Params>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let p = params(q, &["sort_key", "w", "quorum", "timeout_ms"]);
    let lvl = level_label(&p, "w");
    let result = async {
        let (table, key) = path2(path)?;
        let p = p?;
        let body = body.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::ValueTooLarge(format!("request body exceeds {REQUEST_BODY_BYTES_MAX} bytes"))
            }
            _ => ApiError::BadRequest(format!("cannot read body: {}", e.body_text())),
        })?;
        let doc: Json_ = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be JSON like {{\"value\": \"...\", \"context\": \"...\"}}: {e}"
            ))
        })?;
        let obj = doc.as_object().ok_or_else(|| ApiError::BadRequest("body must be a JSON object".into()))?;
        if let Some(bad) = obj.keys().find(|k| *k != "value" && *k != "context") {
            return Err(ApiError::BadRequest(format!(
                "unknown body field {bad:?}; expected \"value\" and optional \"context\""
            )));
        }
        let value = obj
            .get("value")
            .and_then(Json_::as_str)
            .ok_or_else(|| ApiError::BadRequest("body field \"value\" must be a string".into()))?;
        let ctx = match obj.get("context") {
            None | Some(Json_::Null) => VersionVector::new(),
            Some(Json_::String(t)) => context(Some(t))?,
            Some(_) => {
                return Err(ApiError::BadRequest("body field \"context\" must be a string or null".into()))
            }
        };
        let item = item_key(&table, &key, &p)?;
        let state = s
            .node
            .write(
                item,
                Some(value.as_bytes().to_vec()),
                ctx,
                level(&p, "w")?,
                quorum_mode(&s.node, &p)?,
                timeout(&s.node, &p)?,
            )
            .await?;
        Ok((StatusCode::OK, Json(json!({"context": state.context().to_token()}))).into_response())
    }
    .await;
    finish("put", &lvl, started, result)
}

async fn delete_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Params>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let p = params(q, &["sort_key", "w", "context", "quorum", "timeout_ms"]);
    let lvl = level_label(&p, "w");
    let result = async {
        let (table, key) = path2(path)?;
        let p = p?;
        let item = item_key(&table, &key, &p)?;
        let w = level(&p, "w")?;
        let mode = quorum_mode(&s.node, &p)?;
        let timeout = timeout(&s.node, &p)?;
        let ctx = match p.get("context") {
            Some(t) => context(Some(t))?,
            // A delete without a token deletes what a quorum of replicas holds now: read the
            // context first. Without this, a blind tombstone would only be one more sibling.
            None => s
                .node
                .read(item.clone(), Level::Quorum, ReadRepair::Off, mode, timeout)
                .await?
                .context()
                .clone(),
        };
        let state = s.node.write(item, None, ctx, w, mode, timeout).await?;
        Ok((StatusCode::OK, Json(json!({"context": state.context().to_token()}))).into_response())
    }
    .await;
    finish("delete", &lvl, started, result)
}

async fn inspect_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Params>, QueryRejection>,
) -> Response {
    let result = async {
        let (table, key) = path2(path)?;
        let p = params(q, &["sort_key", "timeout_ms"])?;
        let item = item_key(&table, &key, &p)?;
        let views = s.node.inspect(item, timeout(&s.node, &p)?).await;
        let replicas: Vec<Json_> = views
            .into_iter()
            .map(|(idx, result)| {
                let member = &s.node.config.members[idx];
                match result {
                    Ok(raw) => {
                        let state = s.node.client_view(&table, &raw);
                        json!({
                            "node": member.id,
                            "zone": member.zone,
                            "state": if s.node.is_up(idx) { "up" } else { "down" },
                            "values": values_json(&state),
                            "tombstone": state.has_tombstone() && state.is_deleted(),
                            "version": state.context().to_string(),
                        })
                    }
                    Err(e) => json!({
                        "node": member.id,
                        "zone": member.zone,
                        "state": "down",
                        "values": [],
                        "tombstone": false,
                        "version": "",
                        "error": e,
                    }),
                }
            })
            .collect();
        Ok::<_, ApiError>((StatusCode::OK, Json(json!({ "replicas": replicas }))).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn scan_partition(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<Params>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let p = params(q, &["from", "to", "limit", "reverse", "cursor", "r", "timeout_ms"]);
    let lvl = level_label(&p, "r");
    let result = async {
        let (table, key) = path2(path)?;
        let p = p?;
        let limit = match p.get("limit") {
            None => SCAN_PAGE_LEN_DEFAULT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=SCAN_PAGE_LEN_MAX).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be an integer in 1..={SCAN_PAGE_LEN_MAX}, got {l:?}"
                    )))
                }
            },
        };
        let reverse = match p.get("reverse").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(ApiError::BadRequest(format!("reverse must be true or false, got {other:?}"))),
        };
        for name in ["from", "to"] {
            if let Some(v) = p.get(name) {
                quorumdb_core::key::validate_sort(v.as_bytes())?;
            }
        }
        let from = p.get("from").map(|s| s.as_bytes().to_vec());
        let to = p.get("to").map(|s| s.as_bytes().to_vec());
        let result = s
            .node
            .scan(&table, key.as_bytes(), from, to, limit, reverse, p.get("cursor").map(String::as_str), level(&p, "r")?, timeout(&s.node, &p)?)
            .await?;
        let items: Vec<Json_> = result
            .items
            .iter()
            .filter_map(|(sk, st)| {
                let view = s.node.client_view(&table, st);
                // An LWW delete is a timestamped value, only recognisable in the client view.
                (!view.is_deleted()).then(|| {
                    json!({"sort_key": String::from_utf8_lossy(sk), "values": values_json(&view), "context": st.context().to_token()})
                })
            })
            .collect();
        Ok((StatusCode::OK, Json(json!({"items": items, "next": result.next}))).into_response())
    }
    .await;
    finish("scan", &lvl, started, result)
}

// ---------------------------------------------------------------------------------------------
// Cluster and operations routes

async fn status(State(s): State<AppState>) -> Response {
    let node = &s.node;
    let ownership = node.ring.ownership();
    let nodes: Vec<Json_> = node
        .config
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "id": m.id,
                "zone": m.zone,
                "address": m.http,
                "state": if node.is_up(i) { "up" } else { "down" },
                "ownership": ownership.get(i).copied().unwrap_or(0.0),
            })
        })
        .collect();
    let hints = node.hint_stats();
    let body = json!({
        "nodes": nodes,
        "reporter": node.id(),
        "wall_ms": node.wall_ms(),
        "hints_queued": hints.len,
        "hints_bytes": hints.bytes,
    });
    (StatusCode::OK, Json(body)).into_response()
}

async fn get_faults(State(s): State<AppState>) -> Response {
    (StatusCode::OK, Json(s.node.faults.get())).into_response()
}

async fn put_faults(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = (|| {
        let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let rules: FaultRules = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid fault rules: {e}")))?;
        if !(0.0..=1.0).contains(&rules.drop_probability) {
            return Err(ApiError::BadRequest("drop_probability must be within [0, 1]".into()));
        }
        if rules.fail_next_fsync {
            s.node.storage.inject_fsync_failure();
        }
        s.node.faults.set(rules.clone());
        Ok((StatusCode::OK, Json(rules)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn start_repair(State(s): State<AppState>, q: Result<Query<Params>, QueryRejection>) -> Response {
    let result = (|| {
        let p = params(q, &["table"])?;
        let table = p.get("table").cloned();
        if let Some(t) = &table {
            quorumdb_core::key::validate_table(t)?;
        }
        if !s.node.config.antientropy {
            return Err(ApiError::Unavailable(
                "anti-entropy is disabled on this node (antientropy = false)".into(),
            ));
        }
        Ok(table)
    })();
    match result {
        Ok(table) => match s.node.start_repair(table).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({"started": true}))).into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

async fn repair_progress(State(s): State<AppState>) -> Response {
    let p = s.node.repair_progress();
    let body = json!({
        "running": p.running,
        "table": p.table,
        "exchanges_total": p.exchanges_total,
        "exchanges_done": p.exchanges_done,
        "exchanges_failed": p.exchanges_failed,
        "keys_pushed": p.keys_pushed,
        "keys_pulled": p.keys_pulled,
        "item_bytes": p.item_bytes,
        "digests_received": p.digests_received,
        "leaves_differing": p.leaves_differing,
        "passes_completed": p.passes_completed,
    });
    (StatusCode::OK, Json(body)).into_response()
}

async fn metrics_route(State(s): State<AppState>) -> Response {
    metrics::gauge!("quorumdb_storage_items").set(s.node.items_approx() as f64);
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.node.storage.is_poisoned() {
        return ApiError::Poisoned("storage is poisoned after a failed fsync".into()).into_response();
    }
    if !s.node.ready.load(Ordering::Acquire) {
        return ApiError::Unavailable("node is starting".into()).into_response();
    }
    (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
}
