//! Wire types of the CRDT routes, `GET|POST /v1/tables/{table}/crdt/{key}` (issue #14).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Query of `GET /v1/tables/{table}/crdt/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdtReadQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    /// A replica count or `one`, `quorum`, `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// `strict` or `sloppy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
}

/// Query of `POST /v1/tables/{table}/crdt/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdtWriteQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    /// A replica count or `one`, `quorum`, `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
    /// `strict` or `sloppy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
}

/// Body of `POST /v1/tables/{table}/crdt/{key}`: one operation.
///
/// - counter tables: `{"op":"incr","by":-2}`
/// - set tables: `{"op":"add","element":"e"}`, `{"op":"remove","element":"e","context":"..."}`
/// - map tables: `{"op":"incr","field":"apple","by":1}` (counter field),
///   `{"op":"add","field":"tags","element":"red"}` (set field),
///   `{"op":"assign","field":"note","value":"gift"}` (register field),
///   `{"op":"remove","field":"apple","context":"..."}` (the whole field),
///   `{"op":"remove","field":"tags","element":"red","context":"..."}` (one set element).
///
/// A remove must carry the `context` of the read it follows: it removes only what that read saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdtOpBody {
    /// `incr`, `add`, `remove` or `assign`.
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// A map field's value, by kind (a name can hold one field of each kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
    /// Concurrent assigns side by side (one value when there was no conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<Vec<String>>,
}

/// An item's CRDT value (`GET`, and the answer of a `POST`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtValue {
    /// `counter`, `set` or `map`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Counter tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    /// Set tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<Vec<String>>,
    /// Map tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, CrdtField>>,
    /// Concurrent states the replicas held and this answer joined (1 when there was no
    /// conflict, 0 for an item never written).
    #[serde(default)]
    pub states: usize,
    /// Metadata size in (actor, counter) pairs: clock, dots, deferred removes.
    #[serde(default)]
    pub metadata_entries: usize,
    /// Bytes of the stored encoding (all concurrent states).
    #[serde(default)]
    pub stored_bytes: usize,
}

/// `GET /v1/tables/{table}/crdt/{key}` and `POST` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtResponse {
    #[serde(flatten)]
    pub crdt: CrdtValue,
    /// What a remove following this read carries (signed like causality tokens).
    pub context: String,
}
