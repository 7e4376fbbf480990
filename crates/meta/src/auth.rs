//! Users, roles and API tokens, replicated through the metadata log (issue #16).
//!
//! Like etcd: the cluster starts with authentication off; an operator creates a user with
//! the built-in `admin` role, then enables authentication. From then on every client request
//! carries `Authorization: Bearer <token>` and is checked against the roles of its user.
//!
//! **Tokens** are `qdb_<id>_<secret>`: `id` (16 hex digits) names the token, `secret` is 32
//! random bytes in base64url. Only SHA-256 of the secret is stored, so the metadata (and its
//! snapshots on every node's disk) cannot be replayed as credentials. The node that creates a
//! token draws it and shows it once; the command carries the hash. A plain hash suffices
//! because the secret is random and 256 bits long; passwords would need a slow KDF.
//!
//! **Roles** hold grants: a resource kind (table, topic, group, lock, cluster), a name pattern
//! (exact, `prefix*`, or `*`) and a permission. Permissions imply each other: `admin` ⊇
//! `write` ⊇ `read`. The built-in `admin` role grants `admin` on everything and cannot be
//! changed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Users the cluster holds.
pub const USERS_LEN_MAX: usize = 1024;
/// Roles besides `admin`.
pub const ROLES_LEN_MAX: usize = 256;
pub const GRANTS_PER_ROLE_MAX: usize = 64;
pub const ROLES_PER_USER_MAX: usize = 16;
/// Tokens one user may hold at once (rotation: create the new one, then delete the old).
pub const TOKENS_PER_USER_MAX: usize = 8;
/// User and role names, and grant patterns.
pub const AUTH_NAME_BYTES_MAX: usize = 128;
/// Causality-token signing keys kept: the newest signs, every kept one verifies, so a token
/// survives `CONTEXT_KEYS_KEPT - 1` rotations (the grace period).
pub const CONTEXT_KEYS_KEPT: usize = 3;
/// The built-in role with every permission.
pub const ADMIN_ROLE: &str = "admin";
/// A token's id: 16 hex digits.
pub const TOKEN_ID_LEN: usize = 16;
/// A token's secret: 32 bytes, 43 characters of unpadded base64url.
pub const TOKEN_SECRET_LEN: usize = 43;
/// The whole token: `qdb_` + id + `_` + secret.
pub const TOKEN_LEN: usize = 4 + TOKEN_ID_LEN + 1 + TOKEN_SECRET_LEN;
const _: () = assert!(TOKEN_LEN == 64);
const _: () = assert!(USERS_LEN_MAX * TOKENS_PER_USER_MAX <= 16_384, "the token index stays small");

/// What a grant is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    Table,
    Topic,
    Group,
    Lock,
    /// The cluster itself: layout, tables and topics as a whole, users, faults, metrics.
    Cluster,
}

impl ResourceKind {
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Table => "table",
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Lock => "lock",
            ResourceKind::Cluster => "cluster",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceKind> {
        [
            ResourceKind::Table,
            ResourceKind::Topic,
            ResourceKind::Group,
            ResourceKind::Lock,
            ResourceKind::Cluster,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// Ordered so that a higher permission implies the lower ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        [Permission::Read, Permission::Write, Permission::Admin].into_iter().find(|p| p.name() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub kind: ResourceKind,
    /// An exact name, `prefix*`, or `*`. Ignored for [`ResourceKind::Cluster`] (always `*`).
    pub pattern: String,
    pub permission: Permission,
}

impl Grant {
    fn covers(&self, kind: ResourceKind, name: &str, permission: Permission) -> bool {
        if self.kind != kind || self.permission < permission {
            return false;
        }
        match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.pattern == name,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub grants: Vec<Grant>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub roles: BTreeSet<String>,
    /// Token id → SHA-256 of its secret.
    pub tokens: BTreeMap<String, [u8; 32]>,
}

/// A cluster key that signs causality tokens (HMAC-SHA256), named by a small id that tokens
/// carry so that verification picks the right key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextKey {
    pub id: u8,
    pub key: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// The first causality-token key, drawn by the metadata leader; ignored once a key exists
    /// (two leaders racing at startup leave one key).
    EnsureContextKey {
        key: [u8; 32],
    },
    /// A new signing key; the oldest beyond [`CONTEXT_KEYS_KEPT`] stops verifying.
    RotateContextKey {
        key: [u8; 32],
    },
    /// A user with one token (created by the proposing node, which shows it once).
    CreateUser {
        name: String,
        roles: Vec<String>,
        token_id: String,
        token_hash: [u8; 32],
    },
    DeleteUser {
        name: String,
    },
    /// Another token for an existing user (rotation).
    AddToken {
        user: String,
        token_id: String,
        token_hash: [u8; 32],
    },
    DeleteToken {
        user: String,
        token_id: String,
    },
    CreateRole {
        name: String,
    },
    DeleteRole {
        name: String,
    },
    Grant {
        role: String,
        grant: Grant,
    },
    /// Removes the role's grants on `kind`/`pattern` (every permission).
    Revoke {
        role: String,
        kind: ResourceKind,
        pattern: String,
    },
    AssignRole {
        user: String,
        role: String,
    },
    UnassignRole {
        user: String,
        role: String,
    },
    /// Refused unless some user holds the `admin` role, so a cluster cannot lock itself out.
    Enable,
    Disable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthError {
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("role {0:?} already exists")]
    RoleExists(String),
    #[error("role {0:?} does not exist")]
    UnknownRole(String),
    #[error("token {0:?} does not exist")]
    UnknownToken(String),
    #[error("the built-in role \"admin\" cannot be changed or deleted")]
    BuiltinRole,
    #[error("role {role:?} is still assigned to {users:?}; unassign it first")]
    RoleInUse { role: String, users: Vec<String> },
    #[error("no user holds the admin role: enabling authentication now would lock everyone out")]
    NoAdmin,
    #[error("deleting {user:?} would leave no admin while authentication is on")]
    LastAdmin { user: String },
    #[error("{what} is invalid: {why}")]
    Invalid { what: String, why: String },
    #[error("a limit is reached: {what} (at most {max})")]
    Limit { what: String, max: usize },
}

/// What an applied command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOutcome {
    Done,
}

/// Why a request is not let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, a malformed one, or one the cluster does not know.
    Unauthenticated(String),
    /// A known user whose roles do not grant the permission.
    Forbidden { user: String, roles: Vec<String> },
}

/// Users, roles and whether authentication is on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    enabled: bool,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Token id → user, for the lookup on every request.
    token_index: BTreeMap<String, String>,
    /// Causality-token keys, newest last.
    context_keys: Vec<ContextKey>,
}

fn check_auth_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= AUTH_NAME_BYTES_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c));
    if ok {
        return Ok(());
    }
    Err(AuthError::Invalid {
        what: format!("{what} {:?}", name.chars().take(64).collect::<String>()),
        why: format!("must be 1 to {AUTH_NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ . - @"),
    })
}

fn check_pattern(kind: ResourceKind, pattern: &str) -> Result<(), AuthError> {
    if kind == ResourceKind::Cluster && pattern != "*" {
        return Err(AuthError::Invalid {
            what: format!("the cluster grant pattern {pattern:?}"),
            why: "cluster grants cover the whole cluster: use \"*\"".into(),
        });
    }
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    let ok = pattern.len() <= AUTH_NAME_BYTES_MAX
        && (pattern == "*" || !body.is_empty())
        && !body.contains('*')
        && !body.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        return Ok(());
    }
    Err(AuthError::Invalid {
        what: format!("the pattern {:?}", pattern.chars().take(64).collect::<String>()),
        why: "must be a name, a prefix followed by *, or *".into(),
    })
}

fn check_token_id(id: &str) -> Result<(), AuthError> {
    if id.len() == TOKEN_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err(AuthError::Invalid {
        what: format!("the token id {id:?}"),
        why: format!("must be {TOKEN_ID_LEN} hex digits"),
    })
}

/// SHA-256 of a token's secret, as stored.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `qdb_<id>_<secret>`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("qdb_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == TOKEN_ID_LEN && secret.len() == TOKEN_SECRET_LEN).then_some((id, secret))
}

/// Equal without an early exit, so the time taken says nothing about where two hashes differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthState {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The causality-token keys, newest (the signing one) last; empty until the first leader
    /// proposed one.
    pub fn context_keys(&self) -> &[ContextKey] {
        &self.context_keys
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    /// Custom roles (the built-in `admin` is not listed).
    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    fn role_exists(&self, name: &str) -> bool {
        name == ADMIN_ROLE || self.roles.contains_key(name)
    }

    fn admins(&self) -> impl Iterator<Item = &String> {
        self.users.iter().filter(|(_, u)| u.roles.contains(ADMIN_ROLE)).map(|(n, _)| n)
    }

    /// The user a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<&str, Refusal> {
        let unknown =
            || Refusal::Unauthenticated("the token is not valid (unknown, deleted or mistyped)".into());
        let (id, secret) = parse_token(token).ok_or_else(|| {
            Refusal::Unauthenticated("the token is malformed: expected qdb_<id>_<secret>".into())
        })?;
        let user_name = self.token_index.get(id).ok_or_else(unknown)?;
        let user = self.users.get(user_name).ok_or_else(unknown)?;
        let stored = user.tokens.get(id).ok_or_else(unknown)?;
        if !same(stored, &secret_hash(secret)) {
            return Err(unknown());
        }
        Ok(user_name)
    }

    /// Whether `user` may do `permission` on `kind`/`name`.
    pub fn authorize(
        &self,
        user: &str,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> Result<(), Refusal> {
        let u = self
            .users
            .get(user)
            .ok_or_else(|| Refusal::Unauthenticated(format!("user {user:?} was deleted")))?;
        let allowed = u.roles.iter().any(|r| {
            r == ADMIN_ROLE
                || self
                    .roles
                    .get(r)
                    .is_some_and(|role| role.grants.iter().any(|g| g.covers(kind, name, permission)))
        });
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden { user: user.to_string(), roles: u.roles.iter().cloned().collect() })
        }
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: &AuthCommand) -> Result<AuthOutcome, AuthError> {
        match command {
            AuthCommand::EnsureContextKey { key } => {
                if self.context_keys.is_empty() {
                    self.context_keys.push(ContextKey { id: 0, key: *key });
                }
            }
            AuthCommand::RotateContextKey { key } => {
                let id = self.context_keys.last().map_or(0, |k| k.id.wrapping_add(1));
                self.context_keys.push(ContextKey { id, key: *key });
                if self.context_keys.len() > CONTEXT_KEYS_KEPT {
                    self.context_keys.remove(0);
                }
            }
            AuthCommand::CreateUser { name, roles, token_id, token_hash } => {
                check_auth_name("the user name", name)?;
                check_token_id(token_id)?;
                if self.users.contains_key(name) {
                    return Err(AuthError::UserExists(name.clone()));
                }
                if self.users.len() >= USERS_LEN_MAX {
                    return Err(AuthError::Limit { what: "users".into(), max: USERS_LEN_MAX });
                }
                if roles.len() > ROLES_PER_USER_MAX {
                    return Err(AuthError::Limit {
                        what: "roles of one user".into(),
                        max: ROLES_PER_USER_MAX,
                    });
                }
                if let Some(r) = roles.iter().find(|r| !self.role_exists(r)) {
                    return Err(AuthError::UnknownRole(r.clone()));
                }
                if self.token_index.contains_key(token_id) {
                    return Err(AuthError::Invalid {
                        what: format!("the token id {token_id:?}"),
                        why: "is taken".into(),
                    });
                }
                let user = User {
                    roles: roles.iter().cloned().collect(),
                    tokens: BTreeMap::from([(token_id.clone(), *token_hash)]),
                };
                self.users.insert(name.clone(), user);
                self.token_index.insert(token_id.clone(), name.clone());
            }
            AuthCommand::DeleteUser { name } => {
                let user = self.users.get(name).ok_or_else(|| AuthError::UnknownUser(name.clone()))?;
                if self.enabled && user.roles.contains(ADMIN_ROLE) && self.admins().count() == 1 {
                    return Err(AuthError::LastAdmin { user: name.clone() });
                }
                let user = self.users.remove(name).expect("checked above");
                for id in user.tokens.keys() {
                    self.token_index.remove(id);
                }
            }
            AuthCommand::AddToken { user, token_id, token_hash } => {
                check_token_id(token_id)?;
                if self.token_index.contains_key(token_id) {
                    return Err(AuthError::Invalid {
                        what: format!("the token id {token_id:?}"),
                        why: "is taken".into(),
                    });
                }
                let u = self.users.get_mut(user).ok_or_else(|| AuthError::UnknownUser(user.clone()))?;
                if u.tokens.len() >= TOKENS_PER_USER_MAX {
                    return Err(AuthError::Limit {
                        what: format!("tokens of {user:?}"),
                        max: TOKENS_PER_USER_MAX,
                    });
                }
                u.tokens.insert(token_id.clone(), *token_hash);
                self.token_index.insert(token_id.clone(), user.clone());
            }
            AuthCommand::DeleteToken { user, token_id } => {
                let u = self.users.get_mut(user).ok_or_else(|| AuthError::UnknownUser(user.clone()))?;
                u.tokens.remove(token_id).ok_or_else(|| AuthError::UnknownToken(token_id.clone()))?;
                self.token_index.remove(token_id);
            }
            AuthCommand::CreateRole { name } => {
                check_auth_name("the role name", name)?;
                if self.role_exists(name) {
                    return Err(AuthError::RoleExists(name.clone()));
                }
                if self.roles.len() >= ROLES_LEN_MAX {
                    return Err(AuthError::Limit { what: "roles".into(), max: ROLES_LEN_MAX });
                }
                self.roles.insert(name.clone(), Role::default());
            }
            AuthCommand::DeleteRole { name } => {
                if name == ADMIN_ROLE {
                    return Err(AuthError::BuiltinRole);
                }
                if !self.roles.contains_key(name) {
                    return Err(AuthError::UnknownRole(name.clone()));
                }
                let users: Vec<String> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.roles.contains(name))
                    .map(|(n, _)| n.clone())
                    .collect();
                if !users.is_empty() {
                    return Err(AuthError::RoleInUse { role: name.clone(), users });
                }
                self.roles.remove(name);
            }
            AuthCommand::Grant { role, grant } => {
                if role == ADMIN_ROLE {
                    return Err(AuthError::BuiltinRole);
                }
                check_pattern(grant.kind, &grant.pattern)?;
                let r = self.roles.get_mut(role).ok_or_else(|| AuthError::UnknownRole(role.clone()))?;
                if let Some(g) =
                    r.grants.iter_mut().find(|g| g.kind == grant.kind && g.pattern == grant.pattern)
                {
                    g.permission = grant.permission;
                } else {
                    if r.grants.len() >= GRANTS_PER_ROLE_MAX {
                        return Err(AuthError::Limit {
                            what: format!("grants of role {role:?}"),
                            max: GRANTS_PER_ROLE_MAX,
                        });
                    }
                    r.grants.push(grant.clone());
                }
            }
            AuthCommand::Revoke { role, kind, pattern } => {
                if role == ADMIN_ROLE {
                    return Err(AuthError::BuiltinRole);
                }
                let r = self.roles.get_mut(role).ok_or_else(|| AuthError::UnknownRole(role.clone()))?;
                r.grants.retain(|g| !(g.kind == *kind && g.pattern == *pattern));
            }
            AuthCommand::AssignRole { user, role } => {
                if !self.role_exists(role) {
                    return Err(AuthError::UnknownRole(role.clone()));
                }
                let u = self.users.get_mut(user).ok_or_else(|| AuthError::UnknownUser(user.clone()))?;
                if !u.roles.contains(role) && u.roles.len() >= ROLES_PER_USER_MAX {
                    return Err(AuthError::Limit {
                        what: format!("roles of {user:?}"),
                        max: ROLES_PER_USER_MAX,
                    });
                }
                u.roles.insert(role.clone());
            }
            AuthCommand::UnassignRole { user, role } => {
                let last_admin = self.enabled && role == ADMIN_ROLE && self.admins().count() == 1;
                let u = self.users.get_mut(user).ok_or_else(|| AuthError::UnknownUser(user.clone()))?;
                if last_admin && u.roles.contains(ADMIN_ROLE) {
                    return Err(AuthError::LastAdmin { user: user.clone() });
                }
                u.roles.remove(role);
            }
            AuthCommand::Enable => {
                if self.admins().next().is_none() {
                    return Err(AuthError::NoAdmin);
                }
                self.enabled = true;
            }
            AuthCommand::Disable => self.enabled = false,
        }
        Ok(AuthOutcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> (String, [u8; 32]) {
        let secret = "A".repeat(TOKEN_SECRET_LEN);
        (format!("qdb_{id}_{secret}"), secret_hash(&secret))
    }

    fn with_admin() -> (AuthState, String) {
        let mut a = AuthState::default();
        let (t, h) = token("00000000000000aa");
        let create = AuthCommand::CreateUser {
            name: "root".into(),
            roles: vec![ADMIN_ROLE.into()],
            token_id: "00000000000000aa".into(),
            token_hash: h,
        };
        a.apply(&create).unwrap();
        (a, t)
    }

    /// Proves a token authenticates its user and a wrong secret, a malformed token or a deleted user's token does not.
    #[test]
    fn tokens_authenticate_only_their_user() {
        let (mut a, t) = with_admin();
        assert_eq!(a.authenticate(&t), Ok("root"));
        let wrong = format!("qdb_00000000000000aa_{}", "B".repeat(TOKEN_SECRET_LEN));
        assert!(matches!(a.authenticate(&wrong), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(a.authenticate("Bearer nonsense"), Err(Refusal::Unauthenticated(_))));
        let (t2, h2) = token("00000000000000bb");
        a.apply(&AuthCommand::CreateUser {
            name: "bob".into(),
            roles: vec![],
            token_id: "00000000000000bb".into(),
            token_hash: h2,
        })
        .unwrap();
        assert_eq!(a.authenticate(&t2), Ok("bob"));
        a.apply(&AuthCommand::DeleteUser { name: "bob".into() }).unwrap();
        assert!(a.authenticate(&t2).is_err(), "a deleted user's token must stop working");
    }

    /// Proves grants cover exact names and prefixes, higher permissions imply lower ones, and nothing else is allowed.
    #[test]
    fn grants_and_implied_permissions() {
        let (mut a, _) = with_admin();
        a.apply(&AuthCommand::CreateRole { name: "carts-rw".into() }).unwrap();
        let grant = |kind, pattern: &str, permission| Grant { kind, pattern: pattern.into(), permission };
        a.apply(&AuthCommand::Grant {
            role: "carts-rw".into(),
            grant: grant(ResourceKind::Table, "carts", Permission::Write),
        })
        .unwrap();
        a.apply(&AuthCommand::Grant {
            role: "carts-rw".into(),
            grant: grant(ResourceKind::Topic, "events.*", Permission::Read),
        })
        .unwrap();
        let (_, h) = token("00000000000000cc");
        a.apply(&AuthCommand::CreateUser {
            name: "app".into(),
            roles: vec!["carts-rw".into()],
            token_id: "00000000000000cc".into(),
            token_hash: h,
        })
        .unwrap();
        assert!(
            a.authorize("app", ResourceKind::Table, "carts", Permission::Read).is_ok(),
            "write implies read"
        );
        assert!(a.authorize("app", ResourceKind::Table, "carts", Permission::Write).is_ok());
        assert!(a.authorize("app", ResourceKind::Table, "carts", Permission::Admin).is_err());
        assert!(
            a.authorize("app", ResourceKind::Table, "carts2", Permission::Read).is_err(),
            "exact names are exact"
        );
        assert!(a.authorize("app", ResourceKind::Topic, "events.clicks", Permission::Read).is_ok());
        assert!(a.authorize("app", ResourceKind::Topic, "events.clicks", Permission::Write).is_err());
        assert!(a.authorize("app", ResourceKind::Cluster, "*", Permission::Read).is_err());
        assert!(a.authorize("root", ResourceKind::Cluster, "*", Permission::Admin).is_ok());
        a.apply(&AuthCommand::Revoke {
            role: "carts-rw".into(),
            kind: ResourceKind::Table,
            pattern: "carts".into(),
        })
        .unwrap();
        assert!(a.authorize("app", ResourceKind::Table, "carts", Permission::Read).is_err(), "revoked");
    }

    /// Proves the cluster cannot lock itself out: enabling needs an admin, and the last admin cannot be removed while on.
    #[test]
    fn no_lockout() {
        let mut a = AuthState::default();
        assert_eq!(a.apply(&AuthCommand::Enable), Err(AuthError::NoAdmin));
        let (mut a, _) = with_admin();
        a.apply(&AuthCommand::Enable).unwrap();
        assert!(a.enabled());
        assert_eq!(
            a.apply(&AuthCommand::DeleteUser { name: "root".into() }),
            Err(AuthError::LastAdmin { user: "root".into() })
        );
        assert_eq!(
            a.apply(&AuthCommand::UnassignRole { user: "root".into(), role: ADMIN_ROLE.into() }),
            Err(AuthError::LastAdmin { user: "root".into() })
        );
        assert_eq!(
            a.apply(&AuthCommand::DeleteRole { name: ADMIN_ROLE.into() }),
            Err(AuthError::BuiltinRole)
        );
    }

    /// Proves the first key is set once however many leaders propose it, and rotation keeps the newest keys with distinct ids.
    #[test]
    fn context_keys_ensure_once_and_rotate() {
        let mut a = AuthState::default();
        a.apply(&AuthCommand::EnsureContextKey { key: [1; 32] }).unwrap();
        a.apply(&AuthCommand::EnsureContextKey { key: [2; 32] }).unwrap();
        assert_eq!(a.context_keys(), &[ContextKey { id: 0, key: [1; 32] }]);
        for k in 3..=6u8 {
            a.apply(&AuthCommand::RotateContextKey { key: [k; 32] }).unwrap();
        }
        let ids: Vec<u8> = a.context_keys().iter().map(|k| k.id).collect();
        assert_eq!(ids, vec![2, 3, 4]);
        assert_eq!(a.context_keys().last().unwrap().key, [6; 32]);
    }

    /// Proves bad names, patterns and token ids are refused with typed errors, and limits hold.
    #[test]
    fn bad_input_is_refused() {
        let (mut a, _) = with_admin();
        assert!(matches!(
            a.apply(&AuthCommand::CreateRole { name: "has space".into() }),
            Err(AuthError::Invalid { .. })
        ));
        a.apply(&AuthCommand::CreateRole { name: "r".into() }).unwrap();
        for pattern in ["", "a*b*", "x y", "**"] {
            let grant =
                Grant { kind: ResourceKind::Table, pattern: pattern.into(), permission: Permission::Read };
            assert!(
                matches!(
                    a.apply(&AuthCommand::Grant { role: "r".into(), grant }),
                    Err(AuthError::Invalid { .. })
                ),
                "{pattern:?}"
            );
        }
        let grant = Grant { kind: ResourceKind::Cluster, pattern: "x".into(), permission: Permission::Read };
        assert!(matches!(
            a.apply(&AuthCommand::Grant { role: "r".into(), grant }),
            Err(AuthError::Invalid { .. })
        ));
        let bad_id =
            AuthCommand::AddToken { user: "root".into(), token_id: "xyz".into(), token_hash: [0; 32] };
        assert!(matches!(a.apply(&bad_id), Err(AuthError::Invalid { .. })));
        for i in 1..TOKENS_PER_USER_MAX {
            let add = AuthCommand::AddToken {
                user: "root".into(),
                token_id: format!("{i:016x}"),
                token_hash: [0; 32],
            };
            a.apply(&add).unwrap();
        }
        let add = AuthCommand::AddToken {
            user: "root".into(),
            token_id: "ffffffffffffffff".into(),
            token_hash: [0; 32],
        };
        assert!(matches!(a.apply(&add), Err(AuthError::Limit { .. })));
        assert_eq!(
            a.apply(&AuthCommand::DeleteRole { name: "nope".into() }),
            Err(AuthError::UnknownRole("nope".into()))
        );
    }
}
