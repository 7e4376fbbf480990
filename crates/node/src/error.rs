//! The error every client-facing operation returns, with its HTTP mapping.

use crate::storage::StorageError;
use quorumdb_core::causality::CausalityError;
use quorumdb_core::consistency::LevelError;
use quorumdb_core::coordinator::QuorumError;
use quorumdb_core::key::KeyError;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidConsistency(String),
    #[error("{0}")]
    MalformedContext(String),
    #[error("{0}")]
    KeyTooLarge(String),
    #[error("{0}")]
    ValueTooLarge(String),
    #[error("{0}")]
    TooManySiblings(String),
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
    #[error("{0}")]
    Internal(String),
}

/// A quorum failure as it crosses the wire and reaches the client.
#[derive(Debug, Clone)]
pub struct QuorumDetails {
    pub needed: usize,
    pub got: usize,
    /// (replica, outcome text: "ok", "timeout", "down", "error: ...").
    pub outcomes: Vec<(String, String)>,
    pub message: String,
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
        ApiError::Quorum(QuorumDetails { needed: e.needed, got: e.got, outcomes, message: e.to_string() })
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

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::PartitionKeyLength { got: 0, .. } => ApiError::BadRequest(e.to_string()),
            KeyError::PartitionKeyLength { .. } | KeyError::SortKeyLength { .. } => {
                ApiError::KeyTooLarge(e.to_string())
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<LevelError> for ApiError {
    fn from(e: LevelError) -> Self {
        ApiError::InvalidConsistency(e.to_string())
    }
}

impl From<CausalityError> for ApiError {
    fn from(e: CausalityError) -> Self {
        match e {
            CausalityError::MalformedToken(_) => ApiError::MalformedContext(e.to_string()),
            CausalityError::TooManySiblings { .. } | CausalityError::VersionVectorTooLong { .. } => {
                ApiError::TooManySiblings(e.to_string())
            }
            CausalityError::MalformedState(_) => ApiError::Internal(e.to_string()),
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
            ApiError::KeyTooLarge(_) => "key_too_large",
            ApiError::ValueTooLarge(_) => "value_too_large",
            ApiError::TooManySiblings(_) => "too_many_siblings",
            ApiError::Quorum(_) => "quorum_not_reached",
            ApiError::Timeout(_) => "timeout",
            ApiError::Poisoned(_) => "node_poisoned",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::AdminDisabled(_) => "admin_disabled",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidConsistency(_) | ApiError::MalformedContext(_) => 400,
            ApiError::KeyTooLarge(_) | ApiError::ValueTooLarge(_) => 413,
            ApiError::TooManySiblings(_) => 409,
            ApiError::AdminDisabled(_) => 403,
            ApiError::Quorum(_)
            | ApiError::Poisoned(_)
            | ApiError::Unavailable(_)
            | ApiError::Overloaded(_) => 503,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
        }
    }

    /// Rebuilds an error from its wire form (code + message).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "bad_request" => ApiError::BadRequest(message),
            "invalid_consistency" => ApiError::InvalidConsistency(message),
            "malformed_context" => ApiError::MalformedContext(message),
            "key_too_large" => ApiError::KeyTooLarge(message),
            "value_too_large" => ApiError::ValueTooLarge(message),
            "too_many_siblings" => ApiError::TooManySiblings(message),
            "timeout" => ApiError::Timeout(message),
            "node_poisoned" => ApiError::Poisoned(message),
            "unavailable" => ApiError::Unavailable(message),
            "overloaded" => ApiError::Overloaded(message),
            "admin_disabled" => ApiError::AdminDisabled(message),
            _ => ApiError::Internal(message),
        }
    }
}
