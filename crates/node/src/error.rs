//! The error every client-facing operation returns, with its HTTP mapping.

use crate::storage::StorageError;
use quorumdb_core::causality::CausalityError;
use quorumdb_core::consistency::LevelError;
use quorumdb_core::coordinator::QuorumError;
use quorumdb_core::key::KeyError;
use quorumdb_core::replica::ReplicaError;
use quorumdb_meta::auth::AuthError;
use quorumdb_meta::group::GroupError;
use quorumdb_meta::layout::LayoutError;
use quorumdb_meta::log::LogError;
use quorumdb_meta::sink::SinkError;
use quorumdb_meta::{MetaError, ProposeError};
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidConsistency(String),
    #[error("{0}")]
    MalformedContext(String),
    /// A session token (`X-QuorumDB-Session`) that does not parse or verify.
    #[error("{0}")]
    MalformedSession(String),
    #[error("{0}")]
    KeyTooLarge(String),
    #[error("{0}")]
    ValueTooLarge(String),
    /// The write would make the item's stored state exceed its byte limit.
    #[error("{0}")]
    ItemTooLarge(String),
    #[error("{0}")]
    TooManySiblings(String),
    #[error("{0}")]
    TooManyWriters(String),
    #[error("{0}")]
    Fenced(String),
    #[error("{0}")]
    Quorum(QuorumDetails),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Poisoned(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    AdminDisabled(String),
    /// A client over its request rate (`[http] requests_per_second_per_client`).
    #[error("{0}")]
    RateLimited(String),
    /// No valid bearer token while authentication is on (401, `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthenticated(String),
    /// A known user whose roles do not grant what the request needs.
    #[error("{0}")]
    Forbidden(String),
    /// A request body that did not arrive within `[http] body_read_timeout_ms`.
    #[error("{0}")]
    SlowRequest(String),
    /// A metadata change refused by the metadata state machine (committed, and refused alike
    /// on every node), with its own code: `duplicate_member`, `stale_plan`, ...
    #[error("{message}")]
    Metadata { code: &'static str, status: u16, message: String },
    #[error("{0}")]
    Internal(String),
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        let message = e.to_string();
        match e {
            ProposeError::Refused(refused) => {
                let (code, status) = match refused {
                    MetaError::AlreadyBootstrapped { .. } => ("already_bootstrapped", 409),
                    MetaError::NotBootstrapped => ("not_bootstrapped", 503),
                    MetaError::DuplicateMember { .. } => ("duplicate_member", 409),
                    MetaError::UnknownMember { .. } => ("unknown_member", 404),
                    MetaError::Invalid { .. } => ("bad_request", 400),
                    MetaError::BreaksZoneSpread { .. } => ("breaks_zone_spread", 409),
                    MetaError::NothingStaged => ("nothing_staged", 409),
                    MetaError::StalePlan { .. } => ("stale_plan", 409),
                    MetaError::TableExists { .. } => ("table_exists", 409),
                    MetaError::Limit { .. } => ("limit_reached", 409),
                    MetaError::UnknownLease { .. } => ("unknown_lease", 404),
                    MetaError::Held { .. } => ("held", 409),
                    MetaError::NotHolder { .. } => ("not_holder", 409),
                    MetaError::Log(e) => match e {
                        LogError::TopicExists { .. } => ("topic_exists", 409),
                        LogError::UnknownTopic { .. } | LogError::UnknownPartition { .. } => {
                            ("unknown_topic", 404)
                        }
                        LogError::InvalidName { .. } | LogError::Invalid { .. } => ("bad_request", 400),
                        LogError::Limit { .. } => ("limit_reached", 409),
                    },
                    MetaError::Group(e) => match e {
                        GroupError::StaleGeneration { .. } => ("stale_generation", 409),
                        GroupError::IllegalGeneration { .. } => ("illegal_generation", 409),
                        GroupError::UnknownMember { .. } => ("unknown_member", 409),
                        GroupError::RebalanceInProgress { .. } => ("rebalance_in_progress", 409),
                        GroupError::UnknownGroup { .. } => ("unknown_group", 404),
                        GroupError::NotEmpty { .. } => ("group_not_empty", 409),
                        GroupError::Invalid { .. } => ("bad_request", 400),
                        GroupError::Limit { .. } => ("limit_reached", 409),
                    },
                    MetaError::Auth(e) => match e {
                        AuthError::UserExists(_) => ("user_exists", 409),
                        AuthError::UnknownUser(_) => ("unknown_user", 404),
                        AuthError::RoleExists(_) => ("role_exists", 409),
                        AuthError::UnknownRole(_) => ("unknown_role", 404),
                        AuthError::UnknownToken(_) => ("unknown_token", 404),
                        AuthError::BuiltinRole => ("builtin_role", 409),
                        AuthError::RoleInUse { .. } => ("role_in_use", 409),
                        AuthError::NoAdmin => ("no_admin", 409),
                        AuthError::LastAdmin { .. } => ("last_admin", 409),
                        AuthError::Invalid { .. } => ("bad_request", 400),
                        AuthError::Limit { .. } => ("limit_reached", 409),
                    },
                    MetaError::Layout(e) => match e {
                        LayoutError::NotTracked { .. } => ("unknown_member", 404),
                        LayoutError::AheadOfLayout { .. } => ("bad_request", 400),
                        LayoutError::TooEarly { .. } => ("progress_too_early", 409),
                        LayoutError::TransitionInProgress { .. } | LayoutError::HistoryFull { .. } => {
                            ("transition_in_progress", 409)
                        }
                    },
                    MetaError::Sink(e) => match e {
                        SinkError::Invalid { .. } => ("bad_request", 400),
                        SinkError::Exists { .. } => ("sink_exists", 409),
                        SinkError::Unknown { .. } => ("unknown_sink", 404),
                        SinkError::Limit { .. } => ("limit_reached", 409),
                    },
                };
                ApiError::Metadata { code, status, message }
            }
            ProposeError::NoLeader => ApiError::Unavailable(message),
            ProposeError::Busy { .. } => ApiError::Overloaded(message),
            ProposeError::Timeout { .. } => ApiError::Timeout(message),
            ProposeError::TooLarge { .. } => ApiError::BadRequest(message),
        }
    }
}

/// A quorum failure as it crosses the wire and reaches the client.
#[derive(Debug, Clone)]
pub struct QuorumDetails {
    pub needed: usize,
    pub got: usize,
    /// (replica, outcome text: "ok", "timeout", "down", "error: ...").
    pub outcomes: Vec<(String, String)>,
    pub message: String,
    /// The replies arrived but none held what the request's session had seen (code
    /// `session_behind`, still 503: another try, or one after the lagging replica caught up,
    /// can succeed).
    pub session_behind: bool,
}

impl std::fmt::Display for QuorumDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<QuorumError> for ApiError {
    fn from(e: QuorumError) -> Self {
        use quorumdb_core::coordinator::Outcome;
        let outcomes = e
            .outcomes
            .iter()
            .map(|(node, o)| {
                let text = match o {
                    Outcome::Ok => "ok".to_string(),
                    Outcome::Pending | Outcome::Timeout => "timeout".to_string(),
                    Outcome::Skipped => "down".to_string(),
                    Outcome::Error(m) => format!("error: {m}"),
                };
                (node.clone(), text)
            })
            .collect();
        ApiError::Quorum(QuorumDetails {
            needed: e.needed,
            got: e.got,
            outcomes,
            message: e.to_string(),
            session_behind: e.session_behind,
        })
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Poisoned(_) => ApiError::Poisoned(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

// Key, consistency and causality errors are classified once, by the replica's error type, so
// a bad key means the same code whether the HTTP layer or the replica finds it.
impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        ReplicaError::from(e).into()
    }
}

impl From<LevelError> for ApiError {
    fn from(e: LevelError) -> Self {
        ReplicaError::from(e).into()
    }
}

impl From<CausalityError> for ApiError {
    fn from(e: CausalityError) -> Self {
        ReplicaError::from(e).into()
    }
}

/// The HTTP-facing error of a replica error.
impl From<ReplicaError> for ApiError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::Quorum(q) => ApiError::from(q),
            ReplicaError::RemoteQuorum { needed, got, outcomes, message } => {
                ApiError::Quorum(QuorumDetails { needed, got, outcomes, message, session_behind: false })
            }
            ReplicaError::BadRequest(m) => ApiError::BadRequest(m),
            ReplicaError::InvalidConsistency(m) => ApiError::InvalidConsistency(m),
            ReplicaError::MalformedContext(m) => ApiError::MalformedContext(m),
            ReplicaError::KeyTooLarge(m) => ApiError::KeyTooLarge(m),
            ReplicaError::ValueTooLarge(m) => ApiError::ValueTooLarge(m),
            ReplicaError::ItemTooLarge(m) => ApiError::ItemTooLarge(m),
            ReplicaError::TooManySiblings(m) => ApiError::TooManySiblings(m),
            ReplicaError::TooManyWriters(m) => ApiError::TooManyWriters(m),
            ReplicaError::Fenced(m) => ApiError::Fenced(m),
            ReplicaError::Timeout(m) => ApiError::Timeout(m),
            ReplicaError::Poisoned(m) => ApiError::Poisoned(m),
            ReplicaError::Unavailable(m) => ApiError::Unavailable(m),
            ReplicaError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl ApiError {
    /// Stable snake_case code for clients and the wire.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidConsistency(_) => "invalid_consistency",
            ApiError::MalformedContext(_) => "malformed_context",
            ApiError::MalformedSession(_) => "malformed_session",
            ApiError::KeyTooLarge(_) => "key_too_large",
            ApiError::ValueTooLarge(_) => "value_too_large",
            ApiError::ItemTooLarge(_) => "item_too_large",
            ApiError::TooManySiblings(_) => "too_many_siblings",
            ApiError::TooManyWriters(_) => "too_many_writers",
            ApiError::Fenced(_) => "fenced",
            ApiError::Quorum(d) if d.session_behind => "session_behind",
            ApiError::Quorum(_) => "quorum_not_reached",
            ApiError::Timeout(_) => "timeout",
            ApiError::Poisoned(_) => "node_poisoned",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::AdminDisabled(_) => "admin_disabled",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::SlowRequest(_) => "request_timeout",
            ApiError::Metadata { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_)
            | ApiError::InvalidConsistency(_)
            | ApiError::MalformedContext(_)
            | ApiError::MalformedSession(_) => 400,
            ApiError::KeyTooLarge(_) | ApiError::ValueTooLarge(_) | ApiError::ItemTooLarge(_) => 413,
            ApiError::TooManySiblings(_) | ApiError::TooManyWriters(_) | ApiError::Fenced(_) => 409,
            ApiError::AdminDisabled(_) => 403,
            ApiError::RateLimited(_) => 429,
            ApiError::Unauthenticated(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::SlowRequest(_) => 408,
            ApiError::Quorum(_)
            | ApiError::Poisoned(_)
            | ApiError::Unavailable(_)
            | ApiError::Overloaded(_) => 503,
            ApiError::Timeout(_) => 504,
            ApiError::Metadata { status, .. } => *status,
            ApiError::Internal(_) => 500,
        }
    }

    /// Rebuilds an error from its wire form (code + message).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "bad_request" => ApiError::BadRequest(message),
            "invalid_consistency" => ApiError::InvalidConsistency(message),
            "malformed_context" => ApiError::MalformedContext(message),
            "malformed_session" => ApiError::MalformedSession(message),
            "key_too_large" => ApiError::KeyTooLarge(message),
            "value_too_large" => ApiError::ValueTooLarge(message),
            "item_too_large" => ApiError::ItemTooLarge(message),
            "too_many_siblings" => ApiError::TooManySiblings(message),
            "too_many_writers" => ApiError::TooManyWriters(message),
            "fenced" => ApiError::Fenced(message),
            "timeout" => ApiError::Timeout(message),
            "node_poisoned" => ApiError::Poisoned(message),
            "unavailable" => ApiError::Unavailable(message),
            "overloaded" => ApiError::Overloaded(message),
            "admin_disabled" => ApiError::AdminDisabled(message),
            "rate_limited" => ApiError::RateLimited(message),
            "unauthenticated" => ApiError::Unauthenticated(message),
            "forbidden" => ApiError::Forbidden(message),
            "request_timeout" => ApiError::SlowRequest(message),
            _ => ApiError::Internal(message),
        }
    }
}
