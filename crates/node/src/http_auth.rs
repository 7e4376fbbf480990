//! Authentication and authorization of client HTTP requests, and the user, role and auth
//! routes (issue #16). The users, roles and token hashes live in the replicated metadata
//! (`quorumdb_meta::auth`), so every node checks a request against its own applied copy; a
//! change (a deleted user, a revoked grant) takes effect on a node once it applied it,
//! normally within milliseconds.
//!
//! While authentication is off, every request is let in (the cluster as it always was); this
//! is also how the first admin user is created before `POST /v1/auth/enable`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use quorumdb_api as api;
use quorumdb_meta::auth::{
    secret_hash, AuthCommand, AuthState, Grant, Permission, Refusal, ResourceKind, ADMIN_ROLE,
};
use quorumdb_meta::Command;

use crate::error::ApiError;
use crate::http::{json_body, AppState};

/// What a request needs: `None` for the health routes anyone may call.
fn requirement(method: &Method, path: &str) -> Option<(ResourceKind, String, Permission)> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let read_or =
        |p: Permission| if method == Method::GET || method == Method::HEAD { Permission::Read } else { p };
    let cluster = |p| Some((ResourceKind::Cluster, "*".to_string(), p));
    match seg.as_slice() {
        ["livez"] | ["readyz"] => None,
        ["metrics"] => cluster(Permission::Read),
        ["v1", "tables", t, "items", ..]
        | ["v1", "tables", t, "partitions", ..]
        | ["v1", "tables", t, "crdt", ..] => {
            Some((ResourceKind::Table, t.to_string(), read_or(Permission::Write)))
        }
        ["v1", "tables", t] => Some((ResourceKind::Table, t.to_string(), read_or(Permission::Admin))),
        ["v1", "topics", t] => Some((ResourceKind::Topic, t.to_string(), read_or(Permission::Admin))),
        ["v1", "groups", g, ..] => Some((ResourceKind::Group, g.to_string(), read_or(Permission::Admin))),
        ["v1", "locks", name] => Some((ResourceKind::Lock, name.to_string(), read_or(Permission::Write))),
        // Leases are the handles locks are held with: anyone who may take a lock needs one.
        ["v1", "leases", ..] => cluster(read_or(Permission::Write)),
        // Users, roles and the switch itself: admin only, reads included (they list who
        // may do what).
        ["v1", "users", ..] | ["v1", "roles", ..] | ["v1", "auth", ..] => cluster(Permission::Admin),
        // Everything else (cluster layout, table and topic lists, repair, hot keys, faults,
        // sinks): reads need cluster read, changes cluster admin. Unknown paths too, so that a
        // 404 does not tell an unauthenticated client which routes exist.
        _ => cluster(read_or(Permission::Admin)),
    }
}

fn refuse(reason: &'static str, e: ApiError) -> Response {
    metrics::counter!("quorumdb_auth_refused_total", "reason" => reason).increment(1);
    let mut r = e.into_response();
    if reason == "unauthenticated" {
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"quorumdb\""),
        );
    }
    r
}

/// The user of a request that passed [`gate`] (absent while authentication is off).
#[derive(Clone, Debug)]
pub struct AuthUser(pub String);

/// Lets a request in only with a valid bearer token whose user holds what the route needs.
pub async fn gate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let metadata = s.meta.metadata();
    let auth = metadata.auth();
    if !auth.enabled() {
        return next.run(req).await;
    }
    let Some((kind, name, permission)) = requirement(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return refuse(
            "unauthenticated",
            ApiError::Unauthenticated(
                "authentication is on: send Authorization: Bearer <token> (the CLI: --token or QUORUMDB_TOKEN)".into(),
            ),
        );
    };
    let user = match auth.authenticate(token.trim()) {
        Ok(u) => u.to_string(),
        Err(Refusal::Unauthenticated(why)) | Err(Refusal::Forbidden { user: why, .. }) => {
            return refuse("unauthenticated", ApiError::Unauthenticated(why));
        }
    };
    match auth.authorize(&user, kind, &name, permission) {
        Ok(()) => {}
        Err(Refusal::Forbidden { user, roles }) => {
            let what = if kind == ResourceKind::Cluster {
                "the cluster".to_string()
            } else {
                format!("{} {name:?}", kind.name())
            };
            return refuse(
                "forbidden",
                ApiError::Forbidden(format!(
                    "user {user:?} (roles: {}) lacks {} on {what}",
                    if roles.is_empty() { "none".to_string() } else { roles.join(", ") },
                    permission.name()
                )),
            );
        }
        Err(Refusal::Unauthenticated(why)) => {
            return refuse("unauthenticated", ApiError::Unauthenticated(why))
        }
    }
    drop(metadata);
    req.extensions_mut().insert(AuthUser(user));
    next.run(req).await
}

/// A fresh token: 8 random bytes of id, 32 of secret.
fn new_token() -> (String, String, [u8; 32]) {
    let id = format!("{:016x}", rand::random::<u64>());
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = secret_hash(&secret);
    (format!("qdb_{id}_{secret}"), id, hash)
}

async fn propose(s: &AppState, c: AuthCommand) -> Result<(), ApiError> {
    let timeout = std::time::Duration::from_millis(s.node.config.request_timeout_ms);
    s.meta.propose_waiting(Command::Auth(c), timeout).await.map(|_| ()).map_err(ApiError::from)
}

fn done(status: StatusCode, r: Result<impl serde::Serialize, ApiError>) -> Response {
    match r {
        Ok(body) => (status, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn no_content(r: Result<(), ApiError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(x)| x).map_err(|_| ApiError::BadRequest("invalid name in the path".into()))
}

fn path2(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    p.map(|Path(x)| x).map_err(|_| ApiError::BadRequest("invalid names in the path".into()))
}

fn user_info(name: &str, a: &AuthState) -> Option<api::UserInfo> {
    let u = a.users().get(name)?;
    Some(api::UserInfo {
        name: name.to_string(),
        roles: u.roles.iter().cloned().collect(),
        token_ids: u.tokens.keys().cloned().collect(),
    })
}

pub async fn create_user(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = async {
        let u: api::CreateUser = json_body(body)?;
        let (token, token_id, token_hash) = new_token();
        let name = u.name.clone();
        propose(
            &s,
            AuthCommand::CreateUser { name: u.name, roles: u.roles, token_id: token_id.clone(), token_hash },
        )
        .await?;
        Ok(api::CreatedToken { user: name, token_id, token })
    };
    done(StatusCode::CREATED, r.await)
}

pub async fn list_users(State(s): State<AppState>) -> Response {
    let m = s.meta.metadata();
    let users = m.auth().users().keys().filter_map(|n| user_info(n, m.auth())).collect();
    (StatusCode::OK, Json(api::UserList { users })).into_response()
}

pub async fn delete_user(State(s): State<AppState>, name: Result<Path<String>, PathRejection>) -> Response {
    no_content(async { propose(&s, AuthCommand::DeleteUser { name: path(name)? }).await }.await)
}

pub async fn add_token(State(s): State<AppState>, name: Result<Path<String>, PathRejection>) -> Response {
    let r = async {
        let user = path(name)?;
        let (token, token_id, token_hash) = new_token();
        propose(&s, AuthCommand::AddToken { user: user.clone(), token_id: token_id.clone(), token_hash })
            .await?;
        Ok(api::CreatedToken { user, token_id, token })
    };
    done(StatusCode::CREATED, r.await)
}

pub async fn delete_token(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let r = async {
        let (user, token_id) = path2(p)?;
        propose(&s, AuthCommand::DeleteToken { user, token_id }).await
    };
    no_content(r.await)
}

async fn user_role(s: AppState, p: Result<Path<(String, String)>, PathRejection>, assign: bool) -> Response {
    let r = async {
        let (user, role) = path2(p)?;
        let c = if assign {
            AuthCommand::AssignRole { user: user.clone(), role }
        } else {
            AuthCommand::UnassignRole { user: user.clone(), role }
        };
        propose(&s, c).await?;
        user_info(&user, s.meta.metadata().auth())
            .ok_or_else(|| ApiError::Internal("the user vanished".into()))
    };
    done(StatusCode::OK, r.await)
}

pub async fn assign_role(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    user_role(s, p, true).await
}

pub async fn unassign_role(
    State(s): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    user_role(s, p, false).await
}

fn role_info(name: &str, a: &AuthState) -> Option<api::RoleInfo> {
    if name == ADMIN_ROLE {
        let grant = api::GrantInfo { resource: "*".into(), pattern: "*".into(), permission: "admin".into() };
        return Some(api::RoleInfo { name: name.into(), grants: vec![grant], builtin: true });
    }
    let r = a.roles().get(name)?;
    let grants = r
        .grants
        .iter()
        .map(|g| api::GrantInfo {
            resource: g.kind.name().into(),
            pattern: g.pattern.clone(),
            permission: g.permission.name().into(),
        })
        .collect();
    Some(api::RoleInfo { name: name.into(), grants, builtin: false })
}

fn role_answer(s: &AppState, name: &str) -> Result<api::RoleInfo, ApiError> {
    role_info(name, s.meta.metadata().auth()).ok_or_else(|| ApiError::Internal("the role vanished".into()))
}

pub async fn create_role(State(s): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = async {
        let c: api::CreateRole = json_body(body)?;
        propose(&s, AuthCommand::CreateRole { name: c.name.clone() }).await?;
        role_answer(&s, &c.name)
    };
    done(StatusCode::CREATED, r.await)
}

pub async fn list_roles(State(s): State<AppState>) -> Response {
    let m = s.meta.metadata();
    let names = std::iter::once(ADMIN_ROLE).chain(m.auth().roles().keys().map(String::as_str));
    let roles = names.filter_map(|n| role_info(n, m.auth())).collect();
    (StatusCode::OK, Json(api::RoleList { roles })).into_response()
}

pub async fn delete_role(State(s): State<AppState>, name: Result<Path<String>, PathRejection>) -> Response {
    no_content(async { propose(&s, AuthCommand::DeleteRole { name: path(name)? }).await }.await)
}

fn grant_of(g: &api::GrantInfo) -> Result<Grant, ApiError> {
    let kind = ResourceKind::parse(&g.resource).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "resource must be table, topic, group, lock or cluster, not {:?}",
            g.resource
        ))
    })?;
    let permission = Permission::parse(&g.permission).ok_or_else(|| {
        ApiError::BadRequest(format!("permission must be read, write or admin, not {:?}", g.permission))
    })?;
    Ok(Grant { kind, pattern: g.pattern.clone(), permission })
}

async fn grant_change(
    s: AppState,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    grant: bool,
) -> Response {
    let r = async {
        let role = path(name)?;
        let g = grant_of(&json_body::<api::GrantInfo>(body)?)?;
        let c = if grant {
            AuthCommand::Grant { role: role.clone(), grant: g }
        } else {
            AuthCommand::Revoke { role: role.clone(), kind: g.kind, pattern: g.pattern }
        };
        propose(&s, c).await?;
        role_answer(&s, &role)
    };
    done(StatusCode::OK, r.await)
}

pub async fn grant(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    grant_change(s, name, body, true).await
}

/// `DELETE /v1/roles/{name}/grants` with the grant as the body (its permission is ignored).
pub async fn revoke(
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    grant_change(s, name, body, false).await
}

/// `POST /v1/auth/context-keys`: a new causality-token signing key. Tokens signed with the
/// previous keys stay valid until they fall out of the kept set (docs/security.md).
pub async fn rotate_context_key(State(s): State<AppState>) -> Response {
    let r = async {
        propose(&s, AuthCommand::RotateContextKey { key: rand::random() }).await?;
        Ok(status_of(s.meta.metadata().auth()))
    };
    done(StatusCode::OK, r.await)
}

fn status_of(a: &AuthState) -> api::AuthStatus {
    api::AuthStatus {
        enabled: a.enabled(),
        users: a.users().len(),
        roles: a.roles().len() + 1,
        context_keys: a.context_keys().iter().map(|k| k.id).collect(),
    }
}

pub async fn auth_status(State(s): State<AppState>) -> Response {
    (StatusCode::OK, Json(status_of(s.meta.metadata().auth()))).into_response()
}

async fn switch(s: AppState, c: AuthCommand) -> Response {
    let r = async {
        propose(&s, c).await?;
        Ok(status_of(s.meta.metadata().auth()))
    };
    done(StatusCode::OK, r.await)
}

pub async fn enable(State(s): State<AppState>) -> Response {
    switch(s, AuthCommand::Enable).await
}

pub async fn disable(State(s): State<AppState>) -> Response {
    switch(s, AuthCommand::Disable).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves each route family maps to the resource and permission the docs promise, and health routes need nothing.
    #[test]
    fn routes_map_to_permissions() {
        let r = |m: Method, p: &str| requirement(&m, p);
        assert_eq!(r(Method::GET, "/livez"), None);
        assert_eq!(r(Method::GET, "/readyz"), None);
        assert_eq!(
            r(Method::GET, "/v1/tables/carts/items/k1"),
            Some((ResourceKind::Table, "carts".into(), Permission::Read))
        );
        assert_eq!(
            r(Method::PUT, "/v1/tables/carts/items/k1"),
            Some((ResourceKind::Table, "carts".into(), Permission::Write))
        );
        assert_eq!(
            r(Method::DELETE, "/v1/tables/carts/items/k1"),
            Some((ResourceKind::Table, "carts".into(), Permission::Write))
        );
        assert_eq!(
            r(Method::POST, "/v1/tables"),
            Some((ResourceKind::Cluster, "*".into(), Permission::Admin))
        );
        assert_eq!(r(Method::GET, "/v1/tables"), Some((ResourceKind::Cluster, "*".into(), Permission::Read)));
        assert_eq!(r(Method::GET, "/v1/users"), Some((ResourceKind::Cluster, "*".into(), Permission::Admin)));
        assert_eq!(
            r(Method::PUT, "/v1/admin/faults"),
            Some((ResourceKind::Cluster, "*".into(), Permission::Admin))
        );
        assert_eq!(
            r(Method::POST, "/v1/locks/jobs"),
            Some((ResourceKind::Lock, "jobs".into(), Permission::Write))
        );
        assert_eq!(r(Method::GET, "/nope"), Some((ResourceKind::Cluster, "*".into(), Permission::Read)));
    }
}
