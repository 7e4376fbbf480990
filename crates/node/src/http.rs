//! The HTTP/JSON API (axum). Architecture invariant: this is the only module that knows HTTP or
//! JSON; it translates requests into [`Node`] calls and [`ApiError`]s into status codes with a
//! JSON body `{"error": {"code": ..., "message": ...}}`. Every request and response shape is a
//! `quorumdb-api` type: query strings and bodies parse into its structs (which refuse unknown
//! fields) and answers are built from them, so the server, the client and the docs share one
//! definition of the wire format.

use crate::config::{QuorumMode, ReadRepair};
use crate::error::ApiError;
use crate::node::{Node, WriteSettings};
use crate::session_token::{Session, SESSION_HEADER};
use crate::transport::FaultRules;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::{Json, Router};
use quorumdb_api as api;
use quorumdb_core::causality::{Fence, ItemState, VersionVector, WriteId, FENCE_NAME_BYTES_MAX};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_core::limits::{
    CONTEXT_TOKEN_CHARS_MAX, SCAN_PAGE_LEN_DEFAULT, SCAN_PAGE_LEN_MAX, VALUE_BYTES_MAX,
};
use quorumdb_core::ring::{Member, Ring, VNODES_PER_NODE_DEFAULT};
use quorumdb_meta::auth::ContextKey;
use quorumdb_meta::{
    Change, Command, Conflict as MetaConflict, Layout, MemberSpec, Outcome, ProposeError, TableDef,
};
use serde::de::DeserializeOwned;
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
    /// This node's metadata group member.
    pub meta: crate::meta::Meta,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Bounds client requests in flight (`http_inflight_max`). A request that finds no permit
    /// is refused at once with 503 `overloaded` rather than queued: queueing would only turn
    /// overload into timeouts for everyone.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// The Kafka-compatible log, when this node runs a Kafka listener.
    pub log: Option<Arc<crate::log::Log>>,
    /// Its consumer-group coordinator, likewise.
    pub groups: Option<Arc<crate::groups::Groups>>,
    /// Its sink manager, likewise.
    pub sinks: Option<Arc<crate::sink::SinkManager>>,
}

/// One route of the client API: its method and its path as axum writes it (`{param}`).
pub type RouteEntry = (Method, &'static str);

/// A router that records every (method, path) it is built with, so that the list of routes
/// is the very table the router serves (docs/openapi.yaml is checked against it).
pub struct Routes<S = AppState> {
    router: Router<S>,
    table: Vec<RouteEntry>,
}

/// `Routes::get(path, handler)` and its siblings: one (method, path) entry each.
macro_rules! route_method {
    ($name:ident, $method:ident) => {
        fn $name<H: axum::handler::Handler<T, S>, T: 'static>(self, path: &'static str, h: H) -> Self {
            self.on((Method::$method, MethodFilter::$method), path, h)
        }
    };
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    fn new() -> Self {
        Routes { router: Router::new(), table: Vec::new() }
    }

    fn on<H, T>(mut self, method: (Method, MethodFilter), path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        // A path registered again gains the method: axum merges the method routers.
        self.router = self.router.route(path, axum::routing::on(method.1, handler));
        self.table.push((method.0, path));
        self
    }

    route_method!(get, GET);
    route_method!(put, PUT);
    route_method!(post, POST);
    route_method!(delete, DELETE);

    /// The (method, path) pairs registered, in registration order.
    pub fn table(&self) -> &[RouteEntry] {
        &self.table
    }
}

/// Every client route but the admin ones. Handlers of some families live in their own
/// modules (`http_topics`, `http_sinks`, ...); their routes are registered here all the same,
/// so this one list is the API.
fn api_routes() -> Routes {
    use crate::{http_auth as auth, http_groups as groups, http_sinks as sinks, http_topics as topics};
    Routes::new()
        .get("/v1/tables/{table}/items/{key}", get_item)
        .put("/v1/tables/{table}/items/{key}", put_item)
        .delete("/v1/tables/{table}/items/{key}", delete_item)
        .get("/v1/tables/{table}/items/{key}/replicas", inspect_item)
        .get("/v1/tables/{table}/crdt/{key}", crate::http_crdt::get_crdt)
        .post("/v1/tables/{table}/crdt/{key}", crate::http_crdt::post_crdt)
        .get("/v1/tables/{table}/partitions/{key}", scan_partition)
        .get("/v1/cluster/status", status)
        .get("/v1/cluster/meta", meta_status)
        .get("/v1/cluster/layout", layout)
        .post("/v1/cluster/changes", stage_change)
        .delete("/v1/cluster/changes", unstage)
        .get("/v1/cluster/plan", plan)
        .post("/v1/cluster/commit", commit)
        .get("/v1/tables", list_tables)
        .post("/v1/tables", create_table)
        .get("/v1/tables/{table}", describe_table)
        .get("/v1/topics", topics::list_topics)
        .post("/v1/topics", topics::create_topic)
        .get("/v1/topics/{topic}", topics::describe_topic)
        .delete("/v1/topics/{topic}", topics::delete_topic)
        .get("/v1/groups", groups::list_groups)
        .get("/v1/groups/{group}", groups::describe_group)
        .get("/v1/sinks", sinks::list_sinks)
        .post("/v1/sinks", sinks::create_sink)
        .get("/v1/sinks/{sink}", sinks::describe_sink)
        .delete("/v1/sinks/{sink}", sinks::delete_sink)
        .post("/v1/sinks/{sink}/pause", sinks::pause_sink)
        .post("/v1/sinks/{sink}/resume", sinks::resume_sink)
        .get("/v1/leases", list_leases)
        .post("/v1/leases", grant_lease)
        .delete("/v1/leases/{id}", revoke_lease)
        .post("/v1/leases/{id}/keepalive", keepalive_lease)
        .get("/v1/locks/{name}", show_lock)
        .post("/v1/locks/{name}", acquire_lock)
        .delete("/v1/locks/{name}", release_lock)
        .get("/v1/repair", repair_progress)
        .post("/v1/repair", start_repair)
        .get("/v1/hot", hot)
        .get("/v1/users", auth::list_users)
        .post("/v1/users", auth::create_user)
        .delete("/v1/users/{name}", auth::delete_user)
        .post("/v1/users/{name}/tokens", auth::add_token)
        .delete("/v1/users/{name}/tokens/{id}", auth::delete_token)
        .put("/v1/users/{name}/roles/{role}", auth::assign_role)
        .delete("/v1/users/{name}/roles/{role}", auth::unassign_role)
        .get("/v1/roles", auth::list_roles)
        .post("/v1/roles", auth::create_role)
        .delete("/v1/roles/{name}", auth::delete_role)
        .post("/v1/roles/{name}/grants", auth::grant)
        .delete("/v1/roles/{name}/grants", auth::revoke)
        .get("/v1/auth", auth::auth_status)
        .post("/v1/auth/enable", auth::enable)
        .post("/v1/auth/disable", auth::disable)
        .post("/v1/auth/context-keys", auth::rotate_context_key)
        .get("/metrics", metrics_route)
        .get("/livez", livez)
        .get("/readyz", readyz)
}

/// Fault injection lets any HTTP client partition or poison the node, so it is only served
/// when the config asks for it (`admin_enabled`, see [`admin_gate`]). Repair is not under
/// /v1/admin: it is an operator action that only runs the rate-limited anti-entropy the node
/// runs anyway.
fn admin_routes() -> Routes {
    Routes::new().get("/v1/admin/faults", get_faults).put("/v1/admin/faults", put_faults)
}

/// Every (method, path) the HTTP API serves: what [`router`] is built from.
pub fn route_table() -> Vec<RouteEntry> {
    [api_routes(), admin_routes()].iter().flat_map(|r| r.table().iter().cloned()).collect()
}

pub fn router(state: AppState) -> Router {
    let admin =
        admin_routes().router.route_layer(axum::middleware::from_fn_with_state(state.clone(), admin_gate));
    api_routes()
        .router
        .merge(admin)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admission))
        // Outermost: an unauthenticated request is refused before it takes an in-flight permit.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::http_auth::gate))
        .with_state(state)
}

async fn livez() -> Response {
    (StatusCode::OK, Json(api::Health { status: "live".into() })).into_response()
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
        (status, Json(api::ErrorBody { error: error_detail(&self) })).into_response()
    }
}

/// The wire form of an error; quorum failures also carry what each replica answered.
fn error_detail(e: &ApiError) -> api::ErrorDetail {
    let mut detail = api::ErrorDetail::new(e.code(), e.to_string());
    if let ApiError::Quorum(d) = e {
        detail.needed = Some(d.needed);
        detail.answered = Some(d.got);
        detail.replicas = Some(
            d.outcomes
                .iter()
                .map(|(node, outcome)| api::ReplicaOutcome { node: node.clone(), outcome: outcome.clone() })
                .collect(),
        );
    }
    detail
}

async fn unknown_route(uri: axum::http::Uri) -> Response {
    let msg = format!("no route for {}; see docs/api.md", uri.path());
    (StatusCode::NOT_FOUND, Json(api::ErrorBody::new("unknown_route", msg))).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let msg = format!("method {method} is not allowed on {}", uri.path());
    (StatusCode::METHOD_NOT_ALLOWED, Json(api::ErrorBody::new("method_not_allowed", msg))).into_response()
}

// ---------------------------------------------------------------------------------------------
// Parameter parsing

pub(crate) fn path2(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v).map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
}

/// Parses the query string into the route's `quorumdb-api` query struct. Those structs refuse
/// unknown fields, so a typo such as `?W=all` is an error naming the parameter instead of a
/// silently ignored setting.
pub(crate) fn query<T: DeserializeOwned>(raw: &Option<String>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|e| {
        let msg = e.to_string();
        // serde says "unknown field `R`, expected one of `sort_key`, `r`, ..."; say it in the
        // API's own terms.
        ApiError::BadRequest(match msg.strip_prefix("unknown field ") {
            Some(rest) => {
                let rest = rest.replacen(", expected one of ", "; this route accepts: ", 1);
                format!(
                    "unknown query parameter {}",
                    rest.replacen(", expected ", "; this route accepts: ", 1)
                )
            }
            None => format!("invalid query string: {msg}"),
        })
    })
}

pub(crate) fn level(v: Option<&str>, name: &'static str) -> Result<Level, ApiError> {
    match v {
        None => Ok(Level::Quorum),
        Some(s) => Ok(Level::parse(name, s)?),
    }
}

pub(crate) fn timeout(node: &Node, v: Option<&str>) -> Result<Duration, ApiError> {
    let max = crate::config::REQUEST_TIMEOUT_MS_MAX;
    match v {
        None => Ok(Duration::from_millis(node.config.request_timeout_ms)),
        Some(s) => match s.parse::<u64>() {
            Ok(ms) if (1..=max).contains(&ms) => Ok(Duration::from_millis(ms)),
            _ => Err(ApiError::BadRequest(format!("timeout_ms must be an integer in 1..={max}, got {s:?}"))),
        },
    }
}

pub(crate) fn quorum_mode(node: &Node, v: Option<&str>) -> Result<QuorumMode, ApiError> {
    match v {
        None => Ok(node.config.quorum),
        Some(m) => m.parse().map_err(ApiError::BadRequest),
    }
}

/// The context a client sent with a write of `item`: none (a blind write), or a token this
/// cluster signed for that item (see `context_token`).
pub(crate) fn context(
    keys: &[ContextKey],
    item: &ItemKey,
    token: Option<&str>,
) -> Result<VersionVector, ApiError> {
    match token {
        None | Some("") => Ok(VersionVector::new()),
        Some(t) if t.len() > CONTEXT_TOKEN_CHARS_MAX => Err(ApiError::MalformedContext(format!(
            "malformed causality token: longer than {CONTEXT_TOKEN_CHARS_MAX} characters"
        ))),
        Some(t) if keys.is_empty() => Ok(VersionVector::from_token(t)?),
        Some(t) => crate::context_token::verify(keys, item, t),
    }
}

/// How long a request waits for the cluster's first causality-token key (a cluster gets it
/// from its first metadata leader, moments after founding) before it goes on without one.
const CONTEXT_KEY_WAIT: Duration = Duration::from_millis(500);

/// The causality-token keys. Empty only on a node that has not heard of any key since the
/// cluster was founded (it was cut off at birth): such a node hands out and accepts unsigned
/// tokens rather than refusing every read and write; nodes that know a key refuse those
/// tokens, so the client reads again there. Nobody can make a node that knows a key forget it.
pub(crate) async fn context_keys(s: &AppState) -> Vec<ContextKey> {
    let keys = |v: &crate::meta::MetaView| v.metadata.auth().context_keys().to_vec();
    let now = keys(&s.meta.view());
    if !now.is_empty() {
        return now;
    }
    keys(&s.meta.wait_until(CONTEXT_KEY_WAIT, |v| !v.metadata.auth().context_keys().is_empty()).await)
}

/// The token for `vv` of `item`: signed, or plain on a node without a key yet.
pub(crate) fn signed(keys: &[ContextKey], item: &ItemKey, vv: &VersionVector) -> String {
    crate::context_token::sign(keys, item, vv).unwrap_or_else(|| vv.to_token())
}

pub(crate) fn item_key(table: &str, key: &str, sort_key: Option<&str>) -> Result<ItemKey, ApiError> {
    if table.starts_with("__") {
        return Err(ApiError::BadRequest(format!(
            "table {table:?}: names beginning with \"__\" are reserved for QuorumDB's internal tables (the log's batches live in {:?})",
            crate::log::LOG_TABLE
        )));
    }
    Ok(ItemKey::new(table, key.as_bytes(), sort_key.unwrap_or("").as_bytes())?)
}

/// The session the request presented in `X-QuorumDB-Session` (empty: a new one), if any.
fn session_in(headers: &HeaderMap, keys: &[ContextKey]) -> Result<Option<Session>, ApiError> {
    let Some(v) = headers.get(SESSION_HEADER) else { return Ok(None) };
    let v = v.to_str().map_err(|_| {
        ApiError::MalformedSession(format!(
            "malformed session token: the {SESSION_HEADER} header is not ASCII"
        ))
    })?;
    Session::decode(keys, v).map(Some)
}

/// `answer` with the session, updated with what the request saw of `item`, in its header.
fn with_session(
    mut answer: Response,
    session: Option<&mut Session>,
    item: &ItemKey,
    seen: &VersionVector,
    keys: &[ContextKey],
) -> Response {
    if let Some(session) = session {
        session.observe(item, seen);
        let token = session.encode(keys);
        // Tokens are base64url, hex, dots, colons and commas: always a valid header value.
        if let Ok(v) = axum::http::HeaderValue::from_str(&token) {
            answer.headers_mut().insert(SESSION_HEADER, v);
        }
    }
    answer
}

fn values_json(state: &ItemState) -> Vec<String> {
    state.values().into_iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// Records the request metrics and turns the result into a response.
pub(crate) fn finish(
    op: &'static str,
    lvl: &str,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
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
pub(crate) fn level_label<T>(
    q: &Result<T, ApiError>,
    name: &'static str,
    fields: impl Fn(&T) -> (Option<&str>, Option<&str>),
) -> String {
    let Ok(q) = q else { return "invalid".into() };
    let (consistency, level) = fields(q);
    if consistency == Some("linearizable") {
        return "linearizable".into();
    }
    match level.map(|s| Level::parse(name, s)) {
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
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let q = query::<api::ReadQuery>(&raw);
    let lvl = level_label(&q, "r", |q| (q.consistency.as_deref(), q.r.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let mut repair = match q.read_repair.as_deref() {
            None => s.node.config.read_repair,
            Some(m) => m.parse::<ReadRepair>().map_err(ApiError::BadRequest)?,
        };
        let mut r = level(q.r.as_deref(), "r")?;
        match q.consistency.as_deref() {
            None | Some("quorum") => {}
            // Quorum read plus a blocking write-back of what it returns to the read quorum
            // (ABD-style): a later read cannot return an older value than this one did.
            Some("linearizable") => {
                if q.r.is_some() || q.read_repair.is_some() {
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
        let mode = quorum_mode(&s.node, q.quorum.as_deref())?;
        let keys = context_keys(&s).await;
        let mut session = session_in(&headers, &keys)?;
        let floor = session.as_ref().and_then(|ses| ses.floor(&item));
        let timeout = timeout(&s.node, q.timeout_ms.as_deref())?;
        let state = s.node.read_with_floor(item.clone(), r, repair, mode, timeout, floor).await?;
        let view = s.node.client_view(&table, &state);
        let values = values_json(&view);
        let context = signed(&keys, &item, state.context());
        let answer = if view.is_deleted() {
            let error = api::ErrorDetail::new("not_found", format!("key {key:?} not found in table {table:?}"));
            (StatusCode::NOT_FOUND, Json(api::ItemNotFound { values, context, error })).into_response()
        } else {
            (StatusCode::OK, Json(api::ItemResponse { values, context })).into_response()
        };
        Ok(with_session(answer, session.as_mut(), &item, state.context(), &keys))
    }
    .await;
    finish("get", &lvl, started, result)
}

/// The header that names a write (as in the IETF draft of the same name); the `write_id` query
/// parameter is the same thing for clients that cannot set headers.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The write id of a put or delete, from the `Idempotency-Key` header or the `write_id`
/// parameter (both only if they agree).
fn write_id(headers: &HeaderMap, param: Option<&str>) -> Result<Option<WriteId>, ApiError> {
    let header = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::BadRequest("the Idempotency-Key header must be 32 hex digits or a UUID".into())
        })?),
        None => None,
    };
    let parse = |t: &str| WriteId::parse(t).map_err(|e| ApiError::BadRequest(e.to_string()));
    match (header.map(parse).transpose()?, param.map(parse).transpose()?) {
        (Some(h), Some(p)) if h != p => Err(ApiError::BadRequest(format!(
            "the Idempotency-Key header ({h}) and the write_id parameter ({p}) name different writes"
        ))),
        (h, p) => Ok(h.or(p)),
    }
}

async fn put_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let q = query::<api::WriteQuery>(&raw);
    let lvl = level_label(&q, "w", |q| (None, q.w.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let body = body.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::ValueTooLarge(format!("request body exceeds {REQUEST_BODY_BYTES_MAX} bytes"))
            }
            _ => ApiError::BadRequest(format!("cannot read body: {}", e.body_text())),
        })?;
        let doc: api::PutBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be a JSON object like {{\"value\": \"...\", \"context\": \"...\"}} (\"context\" \
                 optional or null, no other fields): {e}"
            ))
        })?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let keys = context_keys(&s).await;
        let mut session = session_in(&headers, &keys)?;
        let ctx = context(&keys, &item, doc.context.as_deref())?;
        let id = write_id(&headers, q.write_id.as_deref())?;
        let state = s
            .node
            .write(
                item.clone(),
                Some(doc.value.into_bytes()),
                ctx,
                WriteSettings {
                    w: level(q.w.as_deref(), "w")?,
                    mode: quorum_mode(&s.node, q.quorum.as_deref())?,
                    timeout: timeout(&s.node, q.timeout_ms.as_deref())?,
                    write_id: id,
                    fence: fence(&s, q.fence.as_deref()).await?,
                },
            )
            .await?;
        let context = signed(&keys, &item, state.context());
        let answer = (StatusCode::OK, Json(api::WriteResponse { context })).into_response();
        Ok(with_session(answer, session.as_mut(), &item, state.context(), &keys))
    }
    .await;
    finish("put", &lvl, started, result)
}

/// Parses `fence=name:token` and checks it against this node's metadata: a token that was
/// never granted is refused (`unknown_fence`), one older than the name's latest grant is
/// fenced here already; replicas check it against what each item holds.
/// How long a write whose fencing token is newer than this node knows waits for the node's
/// metadata to catch up (the grant may have committed through another node moments ago).
const FENCE_CATCH_UP_MS: u64 = 1_000;

async fn fence(s: &AppState, raw: Option<&str>) -> Result<Option<Fence>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let malformed =
        || ApiError::BadRequest(format!("fence must be NAME:TOKEN with a token above 0, got {raw:?}"));
    let (name, token) = raw.rsplit_once(':').ok_or_else(malformed)?;
    let token: u64 = token.parse().map_err(|_| malformed())?;
    if name.is_empty() || name.len() > FENCE_NAME_BYTES_MAX || token == 0 {
        return Err(malformed());
    }
    let mut last = s.meta.last_token(name);
    if token > last {
        let wait = Duration::from_millis(FENCE_CATCH_UP_MS);
        last =
            s.meta.wait_until(wait, |v| v.metadata.last_token(name) >= token).await.metadata.last_token(name);
    }
    if token > last {
        let message = if last == 0 {
            format!(
                "fencing token {token} of {name:?} was never granted: no lock or election {name:?} exists"
            )
        } else {
            format!("fencing token {token} of {name:?} was never granted (the latest grant is {last})")
        };
        return Err(ApiError::Metadata { code: "unknown_fence", status: 409, message });
    }
    if token < last {
        return Err(ApiError::Fenced(format!(
            "write fenced: it carries token {token} of {name:?}, and {name:?} was granted again with token {last}"
        )));
    }
    Ok(Some(Fence { name: name.to_owned(), token }))
}

async fn delete_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let q = query::<api::DeleteQuery>(&raw);
    let lvl = level_label(&q, "w", |q| (None, q.w.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let w = level(q.w.as_deref(), "w")?;
        let mode = quorum_mode(&s.node, q.quorum.as_deref())?;
        let timeout = timeout(&s.node, q.timeout_ms.as_deref())?;
        let id = write_id(&headers, q.write_id.as_deref())?;
        let keys = context_keys(&s).await;
        let mut session = session_in(&headers, &keys)?;
        let ctx = match q.context.as_deref() {
            Some(t) => context(&keys, &item, Some(t))?,
            // A delete without a token deletes what a quorum of replicas holds now: read the
            // context first. Without this, a blind tombstone would only be one more sibling.
            None => s
                .node
                .read(item.clone(), Level::Quorum, ReadRepair::Off, mode, timeout)
                .await?
                .context()
                .clone(),
        };
        let settings =
            WriteSettings { w, mode, timeout, write_id: id, fence: fence(&s, q.fence.as_deref()).await? };
        let state = s.node.write(item.clone(), None, ctx, settings).await?;
        let context = signed(&keys, &item, state.context());
        let answer = (StatusCode::OK, Json(api::WriteResponse { context })).into_response();
        Ok(with_session(answer, session.as_mut(), &item, state.context(), &keys))
    }
    .await;
    finish("delete", &lvl, started, result)
}

async fn inspect_item(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let result = async {
        let (table, key) = path2(path)?;
        let q = query::<api::InspectQuery>(&raw)?;
        let item = item_key(&table, &key, q.sort_key.as_deref())?;
        let views = s.node.inspect(item, timeout(&s.node, q.timeout_ms.as_deref())?).await;
        // Replicas are named by the placement's directory, which grows with joins; the
        // static config may not list them.
        let placement = s.node.placement();
        let replicas = views
            .into_iter()
            .map(|(idx, result)| {
                let member = placement.directory().get(idx).cloned().unwrap_or_else(|| {
                    quorumdb_core::ring::Member { id: placement.name(idx), zone: String::new() }
                });
                match result {
                    Ok(raw) => {
                        let state = s.node.client_view(&table, &raw);
                        api::ReplicaView {
                            node: member.id.clone(),
                            zone: member.zone.clone(),
                            state: if s.node.is_up(idx) { "up" } else { "down" }.into(),
                            values: values_json(&state),
                            tombstone: state.has_tombstone() && state.is_deleted(),
                            version: state.context().to_string(),
                            error: None,
                            crdt: crate::http_crdt::inspect_view(&s, &table, &raw),
                        }
                    }
                    Err(e) => api::ReplicaView {
                        node: member.id.clone(),
                        zone: member.zone.clone(),
                        state: "down".into(),
                        values: Vec::new(),
                        tombstone: false,
                        version: String::new(),
                        error: Some(e),
                        crdt: None,
                    },
                }
            })
            .collect();
        Ok::<_, ApiError>((StatusCode::OK, Json(api::InspectResponse { replicas })).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn scan_partition(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = Instant::now();
    let q = query::<api::ScanQuery>(&raw);
    let lvl = level_label(&q, "r", |q| (None, q.r.as_deref()));
    let result = async {
        let (table, key) = path2(path)?;
        let q = q?;
        let limit = match q.limit.as_deref() {
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
        let reverse = match q.reverse.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("reverse must be true or false, got {other:?}")))
            }
        };
        for v in [&q.from, &q.to].into_iter().flatten() {
            quorumdb_core::key::validate_sort(v.as_bytes())?;
        }
        let from = q.from.map(String::into_bytes);
        let to = q.to.map(String::into_bytes);
        let r = level(q.r.as_deref(), "r")?;
        let timeout = timeout(&s.node, q.timeout_ms.as_deref())?;
        let keys = context_keys(&s).await;
        let result = s
            .node
            .scan(&table, key.as_bytes(), from, to, limit, reverse, q.cursor.as_deref(), r, timeout)
            .await?;
        let items = result
            .items
            .iter()
            .filter_map(|(sk, st)| {
                let view = s.node.client_view(&table, st);
                // An LWW delete is a timestamped value, only recognisable in the client view.
                let item =
                    ItemKey { table: table.clone(), partition: key.as_bytes().to_vec(), sort: sk.clone() };
                (!view.is_deleted()).then(|| api::ScanItem {
                    sort_key: String::from_utf8_lossy(sk).into_owned(),
                    values: values_json(&view),
                    context: signed(&keys, &item, st.context()),
                })
            })
            .collect();
        Ok((StatusCode::OK, Json(api::ScanPage { items, next: result.next })).into_response())
    }
    .await;
    finish("scan", &lvl, started, result)
}

// ---------------------------------------------------------------------------------------------
// Cluster and operations routes

async fn status(State(s): State<AppState>) -> Response {
    let node = &s.node;
    let placement = node.placement();
    let ownership = placement.ownership();
    let nodes = node
        .config
        .members
        .iter()
        .map(|m| (placement.index_of(&m.id), m))
        .map(|(i, m)| api::NodeStatus {
            id: m.id.clone(),
            zone: m.zone.clone(),
            address: m.http.clone(),
            state: if i.is_some_and(|i| node.is_up(i)) { "up" } else { "down" }.into(),
            ownership: i.and_then(|i| ownership.get(i).copied()).unwrap_or(0.0),
            kafka: Some(m.kafka.clone()).filter(|k| !k.is_empty()),
        })
        .collect();
    let hints = node.hint_stats();
    let body = api::ClusterStatus {
        nodes,
        reporter: node.id().to_owned(),
        wall_ms: node.wall_ms(),
        hints_queued: hints.len as u64,
        hints_bytes: hints.bytes,
    };
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
        if rules.fsync_delay_ms > api::FSYNC_DELAY_MS_MAX {
            return Err(ApiError::BadRequest(format!(
                "fsync_delay_ms must be at most {} (ms), got {}",
                api::FSYNC_DELAY_MS_MAX,
                rules.fsync_delay_ms
            )));
        }
        if rules.fail_next_fsync {
            s.node.storage.inject_fsync_failure();
        }
        // Set on every PUT, so rules without the field end a slow disk like any other fault.
        s.node.storage.set_fsync_delay_ms(rules.fsync_delay_ms);
        s.node.faults.set(rules.clone());
        Ok((StatusCode::OK, Json(rules)).into_response())
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn start_repair(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let result = (|| {
        let table = query::<api::RepairQuery>(&raw)?.table;
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
            Ok(()) => (StatusCode::ACCEPTED, Json(api::RepairStarted { started: true })).into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// Keys `GET /v1/hot` returns unless `limit` says otherwise.
const HOT_LIMIT_DEFAULT: usize = 20;

/// `GET /v1/hot`: the hottest partition keys over the last window, of this node or of every
/// member (each replica counts the reads and writes it handled; see `quorumdb_core::heat`).
async fn hot(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = match query::<api::HotQuery>(&raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let checked = (|| {
        if let Some(t) = &q.table {
            quorumdb_core::key::validate_table(t)?;
        }
        let limit = q.limit.unwrap_or(HOT_LIMIT_DEFAULT);
        if limit == 0 || limit > quorumdb_core::heat::HEAT_KEYS_LEN_MAX {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1 to {}, got {limit}",
                quorumdb_core::heat::HEAT_KEYS_LEN_MAX
            )));
        }
        let cluster = match q.scope.as_deref() {
            None | Some("cluster") => true,
            Some("node") => false,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("scope must be cluster or node, got {other:?}")))
            }
        };
        Ok((limit, cluster))
    })();
    let (limit, cluster) = match checked {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let me = s.node.id().to_owned();
    let (report, missing) =
        if cluster { s.node.heat_cluster().await } else { (s.node.heat_local(), Vec::new()) };
    let nodes: Vec<String> = s
        .node
        .placement()
        .live_members()
        .into_iter()
        .map(|i| s.node.placement().name(i))
        .filter(|id| *id == me || (cluster && !missing.iter().any(|(m, _)| m == id)))
        .collect();
    let per_s =
        |n: u64| if report.window_ms == 0 { 0.0 } else { n as f64 * 1000.0 / report.window_ms as f64 };
    let total = report.reads_total + report.writes_total;
    let keys = report
        .keys
        .iter()
        .filter(|k| q.table.as_ref().is_none_or(|t| *t == k.table))
        .take(limit)
        .map(|k| api::HotKeyInfo {
            table: k.table.clone(),
            key: String::from_utf8_lossy(&k.partition).into_owned(),
            reads_per_s: per_s(k.reads),
            writes_per_s: per_s(k.writes),
            share: if total == 0 { 0.0 } else { (k.reads + k.writes) as f64 / total as f64 },
            error_per_s: per_s(k.reads_error + k.writes_error),
        })
        .collect();
    let body = api::HotReport {
        scope: if cluster { "cluster" } else { "node" }.into(),
        nodes,
        missing,
        window_ms: report.window_ms,
        reads_per_s: per_s(report.reads_total),
        writes_per_s: per_s(report.writes_total),
        keys,
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn repair_progress(State(s): State<AppState>) -> Response {
    let p = s.node.repair_progress();
    let body = api::RepairProgress {
        running: p.running,
        table: p.table,
        exchanges_total: p.exchanges_total,
        exchanges_done: p.exchanges_done,
        exchanges_failed: p.exchanges_failed,
        keys_pushed: p.keys_pushed,
        keys_pulled: p.keys_pulled,
        item_bytes: p.item_bytes,
        digests_received: p.digests_received,
        leaves_differing: p.leaves_differing,
        passes_completed: p.passes_completed,
    };
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
    (StatusCode::OK, Json(api::Health { status: "ready".into() })).into_response()
}

// -----------------------------------------------------------------------------------------------
// Cluster metadata

/// Parses a JSON body into an API type (which refuses unknown fields).
pub(crate) fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

fn member_info(m: &MemberSpec) -> api::MemberInfo {
    api::MemberInfo {
        id: m.id.clone(),
        zone: m.zone.clone(),
        peer_address: m.peer_address.clone(),
        http_address: m.http_address.clone(),
    }
}

fn member_spec(m: api::MemberInfo) -> MemberSpec {
    MemberSpec { id: m.id, zone: m.zone, peer_address: m.peer_address, http_address: m.http_address }
}

fn change_info(c: &Change) -> api::ChangeInfo {
    match c {
        Change::Join(m) => api::ChangeInfo::Join(member_info(m)),
        Change::Leave { id } => api::ChangeInfo::Leave { id: id.clone() },
        Change::Replace { old, new } => api::ChangeInfo::Replace { old: old.clone(), new: member_info(new) },
    }
}

fn table_info(t: &TableDef) -> api::TableInfo {
    api::TableInfo { name: t.name.clone(), replicas: t.replicas, conflict: t.conflict.name().into() }
}

/// The metadata for a read that must see every change acknowledged before it, by any node
/// (a table created through another node, a staged change): raft's ReadIndex, then this
/// node's applied view. Without a metadata leader it fails (503) rather than answer stale.
pub(crate) async fn metadata_read(s: &AppState) -> Result<crate::meta::MetaView, ApiError> {
    let timeout = Duration::from_millis(s.node.config.request_timeout_ms);
    s.meta.linearizable_view(timeout).await.map_err(ApiError::from)
}

/// Proposes a metadata change, waiting out an election up to the request timeout (docs/api.md:
/// `NoLeader` means nothing was proposed, so retrying it is safe) rather than answering 503
/// in the moment a cluster starts or its leader changes.
async fn propose(s: &AppState, command: Command) -> Result<Outcome, ProposeError> {
    let timeout = Duration::from_millis(s.node.config.request_timeout_ms);
    s.meta.propose_waiting(command, timeout).await
}

/// [`metadata_read`] inside a handler: the view, or the handler returns the error response.
macro_rules! read_view {
    ($s:expr) => {
        match $crate::http::metadata_read(&$s).await {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
}
pub(crate) use read_view;

fn meta_answer(s: &AppState, result: Result<Outcome, ProposeError>) -> Response {
    match result {
        Ok(_) => {
            let v = s.meta.view();
            let body = api::ChangeAnswer {
                layout_version: v.metadata.layout().map_or(0, |l| l.version),
                staged: v.metadata.staged().len(),
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn meta_status(State(s): State<AppState>) -> Response {
    let v = s.meta.view();
    let body = api::MetaStatus {
        reporter: s.node.id().to_owned(),
        raft_id: v.raft_id,
        term: v.term,
        leader: v.leader.clone(),
        is_leader: v.is_leader,
        applied_index: v.applied_index,
        commit_index: v.commit_index,
        voters: v.voters.clone(),
        learners: v.learners.clone(),
        layout_version: v.metadata.layout().map_or(0, |l| l.version),
        tables: v.metadata.tables().len(),
        founders: s
            .node
            .config
            .founding_members()
            .iter()
            .map(|m| api::MemberInfo {
                id: m.id.clone(),
                zone: m.zone.clone(),
                peer_address: m.peer.clone(),
                http_address: if m.http.is_empty() { "-".into() } else { m.http.clone() },
            })
            .collect(),
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn layout(State(s): State<AppState>) -> Response {
    let v = read_view!(s);
    let live_from = v.metadata.min_sync_ack();
    let read_version = v.metadata.read_version();
    let versions = v
        .metadata
        .layouts()
        .iter()
        .map(|l| api::LayoutInfo {
            version: l.version,
            members: l.members.values().map(member_info).collect(),
            changes: l.changes.iter().map(change_info).collect(),
            live: l.version >= live_from,
            read: l.version == read_version,
            retired: l.version < live_from,
        })
        .collect();
    let progress = v
        .metadata
        .trackers()
        .members()
        .iter()
        .map(|(id, p)| api::MemberProgressInfo {
            id: id.clone(),
            ack: p.ack,
            sync: p.sync,
            sync_ack: p.sync_ack,
        })
        .collect();
    let body = api::LayoutHistory {
        versions,
        staged: v.metadata.staged().iter().map(change_info).collect(),
        read_version,
        progress,
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn stage_change(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let change = match json_body::<api::ChangeInfo>(body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let change = match change {
        api::ChangeInfo::Join(m) => Change::Join(member_spec(m)),
        api::ChangeInfo::Leave { id } => Change::Leave { id },
        api::ChangeInfo::Replace { old, new } => Change::Replace { old, new: member_spec(new) },
    };
    let result = propose(&s, Command::Stage(change)).await;
    meta_answer(&s, result)
}

async fn unstage(State(s): State<AppState>) -> Response {
    let result = propose(&s, Command::Unstage).await;
    meta_answer(&s, result)
}

async fn commit(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let req = match json_body::<api::CommitRequest>(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let result = propose(&s, Command::Commit { expected_version: req.expected_version }).await;
    meta_answer(&s, result)
}

/// Key-range samples a plan compares placements on: enough for a 0.1 % resolution.
const PLAN_SAMPLES_LEN: u64 = 16_384;

async fn plan(State(s): State<AppState>) -> Response {
    let v = read_view!(s);
    let Some(current) = v.metadata.layout() else {
        return ApiError::Unavailable("the cluster metadata is not bootstrapped yet".into()).into_response();
    };
    let planned = v.metadata.plan(current, v.metadata.staged());
    let (next, error) = match planned {
        Ok(next) => (next, None),
        Err(e) => (current.clone(), Some(e.to_string())),
    };
    let n = usize::from(v.metadata.default_replicas()).max(1);
    let ring_of = |l: &Layout| {
        let members = l.members.values().map(|m| Member { id: m.id.clone(), zone: m.zone.clone() }).collect();
        Ring::new(members, VNODES_PER_NODE_DEFAULT)
    };
    let (before, after) = match (ring_of(current), ring_of(&next)) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => {
            return ApiError::Internal(format!("cannot build the ring: {e}")).into_response()
        }
    };
    let own_before = before.replica_ownership(n);
    let own_after = after.replica_ownership(n);
    let share = |ring: &Ring, own: &[f64], id: &str| {
        ring.index_of(id).and_then(|i| own.get(i).copied()).unwrap_or(0.0)
    };
    let mut ids: Vec<&String> = current.members.keys().chain(next.members.keys()).collect();
    ids.sort();
    ids.dedup();
    let zone_of = |id: &str| {
        next.members.get(id).or_else(|| current.members.get(id)).map(|m| m.zone.clone()).unwrap_or_default()
    };
    let members = ids
        .iter()
        .map(|id| api::PlanMember {
            id: (*id).clone(),
            zone: zone_of(id),
            ownership_before: share(&before, &own_before, id),
            ownership_after: share(&after, &own_after, id),
        })
        .collect::<Vec<_>>();
    let mut zones: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for m in &members {
        *zones.entry(m.zone.clone()).or_default() += m.ownership_after;
    }
    // Replica slots whose node changes, over evenly spaced key hashes.
    let mut moved = 0u64;
    for i in 0..PLAN_SAMPLES_LEN {
        let hash = i.wrapping_mul(u64::MAX / PLAN_SAMPLES_LEN);
        let old: Vec<&str> =
            before.preference_list(hash, n).into_iter().map(|m| before.members()[m].id.as_str()).collect();
        let new = after.preference_list(hash, n);
        moved += new.iter().filter(|m| !old.contains(&after.members()[**m].id.as_str())).count() as u64;
    }
    let moved_fraction = moved as f64 / (PLAN_SAMPLES_LEN * n as u64) as f64;
    // This node holds about n / members of all items.
    let items_total = s.node.items_approx() as f64 * current.members.len() as f64 / n as f64;
    let body = api::PlanInfo {
        from_version: current.version,
        to_version: current.version + 1,
        staged: v.metadata.staged().iter().map(change_info).collect(),
        members,
        zones_after: zones.into_iter().collect(),
        moved_fraction,
        items_estimated: (moved_fraction * items_total * n as f64).round() as u64,
        zone_spread_ok: !matches!(error, Some(ref e) if e.contains("distinct zones")),
        error,
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn list_tables(State(s): State<AppState>) -> Response {
    let v = read_view!(s);
    let body = api::TableList {
        tables: v.metadata.tables().values().map(table_info).collect(),
        default_replicas: v.metadata.default_replicas(),
    };
    (StatusCode::OK, Json(body)).into_response()
}

async fn create_table(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let t = match json_body::<api::TableInfo>(body) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    // The metadata accepts any name without spaces; a table must also be one that items can
    // be addressed in: a data-plane table name (what every item route checks), not reserved,
    // and not `.` or `..`, which URL normalisation drops from a path.
    if let Err(e) = item_key(&t.name, "k", None) {
        return e.into_response();
    }
    if t.name == "." || t.name == ".." {
        return ApiError::BadRequest(format!(
            "table {:?}: a table cannot be named . or .. (no URL path can address it)",
            t.name
        ))
        .into_response();
    }
    let Some(conflict) = MetaConflict::from_name(&t.conflict) else {
        return ApiError::BadRequest(format!(
            "conflict must be siblings, lww, crdt-counter, crdt-set or crdt-map, not {:?}",
            t.conflict
        ))
        .into_response();
    };
    let def = TableDef { name: t.name, replicas: t.replicas, conflict };
    let result = propose(&s, Command::CreateTable(def.clone())).await;
    match result {
        Ok(_) => (StatusCode::CREATED, Json(table_info(&def))).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn describe_table(State(s): State<AppState>, table: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(name)) = table else {
        return ApiError::BadRequest("invalid table name in the path".into()).into_response();
    };
    let v = read_view!(s);
    match v.metadata.tables().get(&name) {
        Some(t) => (StatusCode::OK, Json(table_info(t))).into_response(),
        None => ApiError::Metadata {
            code: "table_not_found",
            status: 404,
            message: format!("table {name:?} is not declared"),
        }
        .into_response(),
    }
}

fn lock_info(v: &crate::meta::MetaView, name: &str) -> api::LockInfo {
    api::LockInfo {
        name: name.to_owned(),
        holder: v.metadata.holders().get(name).map(|h| api::HolderInfo {
            lease: h.lease,
            token: h.token,
            value: h.value.clone(),
        }),
        last_token: v.metadata.last_token(name),
    }
}

fn lease_id(id: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Ok(Path(id)) = id else { return Err(ApiError::BadRequest("invalid lease id in the path".into())) };
    id.parse().map_err(|_| ApiError::BadRequest(format!("lease id {id:?} is not a number")))
}

async fn list_leases(State(s): State<AppState>) -> Response {
    let v = read_view!(s);
    let leases = v
        .metadata
        .leases()
        .values()
        .map(|l| api::LeaseInfo {
            id: l.id,
            ttl_ms: l.ttl_ms,
            renewals: l.renewals,
            holds: v
                .metadata
                .holders()
                .iter()
                .filter(|(_, h)| h.lease == l.id)
                .map(|(n, _)| n.clone())
                .collect(),
        })
        .collect();
    (StatusCode::OK, Json(api::LeaseList { leases })).into_response()
}

async fn grant_lease(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let req = match json_body::<api::LeaseRequest>(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match propose(&s, Command::LeaseGrant { ttl_ms: req.ttl_ms }).await {
        Ok(Outcome::LeaseGranted { id, ttl_ms }) => {
            (StatusCode::CREATED, Json(api::LeaseInfo { id, ttl_ms, renewals: 0, holds: vec![] }))
                .into_response()
        }
        Ok(other) => ApiError::Internal(format!("unexpected outcome {other:?}")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn keepalive_lease(State(s): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match lease_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match propose(&s, Command::LeaseKeepAlive { id }).await {
        Ok(Outcome::LeaseKept { id, ttl_ms }) => {
            (StatusCode::OK, Json(api::LeaseInfo { id, ttl_ms, renewals: 0, holds: vec![] })).into_response()
        }
        Ok(other) => ApiError::Internal(format!("unexpected outcome {other:?}")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn revoke_lease(State(s): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match lease_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match propose(&s, Command::LeaseRevoke { id }).await {
        Ok(Outcome::LeaseEnded { released }) => {
            (StatusCode::OK, Json(api::LeaseRevoked { released })).into_response()
        }
        Ok(other) => ApiError::Internal(format!("unexpected outcome {other:?}")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn show_lock(State(s): State<AppState>, name: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(name)) = name else {
        return ApiError::BadRequest("invalid lock name in the path".into()).into_response();
    };
    (StatusCode::OK, Json(lock_info(&read_view!(s), &name))).into_response()
}

async fn acquire_lock(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(name)) = name else {
        return ApiError::BadRequest("invalid lock name in the path".into()).into_response();
    };
    let req = match json_body::<api::AcquireRequest>(body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match propose(&s, Command::Acquire { name: name.clone(), lease: req.lease, value: req.value }).await {
        Ok(Outcome::Acquired { .. }) => {
            (StatusCode::OK, Json(lock_info(&s.meta.view(), &name))).into_response()
        }
        Ok(other) => ApiError::Internal(format!("unexpected outcome {other:?}")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn release_lock(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Ok(Path(name)) = name else {
        return ApiError::BadRequest("invalid lock name in the path".into()).into_response();
    };
    let q = match query::<api::ReleaseQuery>(&raw) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match propose(&s, Command::Release { name: name.clone(), token: q.token }).await {
        Ok(_) => (StatusCode::OK, Json(lock_info(&s.meta.view(), &name))).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_request(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(m) => m,
            other => panic!("expected bad_request, got {other:?}"),
        }
    }

    /// An unknown query parameter is a bad_request naming it and the parameters the route accepts.
    #[test]
    fn unknown_query_parameter_is_named() {
        let msg = bad_request(query::<api::ReadQuery>(&Some("r=all&R=all".into())).unwrap_err());
        assert!(msg.starts_with("unknown query parameter `R`; this route accepts: `sort_key`, `r`"), "{msg}");
        let msg = bad_request(query::<api::RepairQuery>(&Some("tabel=t".into())).unwrap_err());
        assert_eq!(msg, "unknown query parameter `tabel`; this route accepts: `table`");
    }

    /// A known parameter given twice is refused rather than silently taking one of the values.
    #[test]
    fn duplicate_query_parameter_is_refused() {
        let msg = bad_request(query::<api::WriteQuery>(&Some("w=one&w=all".into())).unwrap_err());
        assert!(msg.contains("duplicate field `w`"), "{msg}");
    }

    /// No query string and a well-formed one both parse into the route's struct.
    #[test]
    fn query_parses_known_parameters() {
        assert_eq!(query::<api::ScanQuery>(&None).unwrap(), api::ScanQuery::default());
        let q = query::<api::DeleteQuery>(&Some("context=ab%2B&sort_key=a+b".into())).unwrap();
        assert_eq!((q.context.as_deref(), q.sort_key.as_deref()), (Some("ab+"), Some("a b")));
    }
}

#[doc(hidden)]
pub mod fuzzing;
