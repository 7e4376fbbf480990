//! What the worker decides about a record before the warehouse sees it (issue #12, item 4):
//! whether its value meets the sink's declared schema, and whether it duplicates an event of the
//! dedup window. Pure functions of the record and the window, so a restarted worker that replays
//! the window's offsets reaches the same decisions.

use super::*;
use quorumdb_core::sink::DedupWindow;
use quorumdb_meta::sink::{ColumnType, SinkColumn};
use sha2::Digest;

/// The window's key: 16 bytes of the id's SHA-256, so an entry has a fixed size whatever the
/// id's length (a collision of two ids inside one window has probability about n²/2¹²⁹).
pub(super) type EventDigest = [u8; 16];

/// Why `value` fails `columns`, if it does. Only top-level fields are mapped.
pub(super) fn check_schema(columns: &[SinkColumn], value: Option<&serde_json::Value>) -> Result<(), String> {
    let Some(value) = value else { return Err("the value is not JSON".into()) };
    let Some(object) = value.as_object() else {
        return Err(format!("the value is a JSON {}, not an object", kind_of(value)));
    };
    for c in columns {
        let v = object.get(&c.field).filter(|v| !v.is_null());
        let Some(v) = v else {
            if c.required {
                return Err(format!("required field {:?} ({}) is missing", c.field, c.kind.name()));
            }
            continue;
        };
        let ok = match c.kind {
            ColumnType::Text => v.is_string(),
            ColumnType::Bigint => v.is_i64(),
            ColumnType::Double => v.is_number(),
            ColumnType::Boolean => v.is_boolean(),
            ColumnType::Jsonb => true,
        };
        if !ok {
            return Err(format!("field {:?} is a JSON {}, not {}", c.field, kind_of(v), c.kind.name()));
        }
    }
    Ok(())
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The event id of a JSON value: the field's text, as PostgreSQL's `->>` gives it (a string's
/// content, any other value's JSON), digested; `None` when absent or `null`.
pub(super) fn event_digest(value: Option<&serde_json::Value>, field: &str) -> Option<EventDigest> {
    let v = value?.get(field).filter(|v| !v.is_null())?;
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let d = sha2::Sha256::digest(text.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    Some(out)
}

/// The verdicts on one record.
pub(super) struct Verdict {
    /// Refused before any write: dead-letter it with this reason.
    pub(super) rejected: Option<String>,
    /// The dedup window already holds its event id: not written.
    pub(super) duplicate: bool,
}

/// Classifies the record at `offset`, updating the window (rejected records occupy their offset
/// in the window without an id, so the window spans offsets, as a replay rebuilds it).
pub(super) fn judge(
    def: &SinkDef,
    window: Option<&mut DedupWindow<EventDigest>>,
    offset: u64,
    r: &LogRecord,
) -> Verdict {
    if let Some(why) = &r.undecodable {
        if let Some(w) = window {
            w.offer(offset, r.timestamp_ms, None);
        }
        return Verdict { rejected: Some(why.clone()), duplicate: false };
    }
    let json = if def.columns.is_empty() && def.dedup.is_none() {
        None
    } else {
        r.value.as_ref().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
    };
    let rejected = if def.columns.is_empty() {
        None
    } else {
        check_schema(&def.columns, json.as_ref()).err().map(|e| format!("schema: {e}"))
    };
    let duplicate = match (window, &def.dedup) {
        (Some(w), Some(d)) => {
            let id = if rejected.is_some() { None } else { event_digest(json.as_ref(), &d.field) };
            w.offer(offset, r.timestamp_ms, id)
        }
        _ => false,
    };
    Verdict { rejected, duplicate }
}

/// A fresh window for the sink (`None` without dedup).
pub(super) fn new_window(def: &SinkDef) -> Option<DedupWindow<EventDigest>> {
    def.dedup.as_ref().map(|d| DedupWindow::new(u64::from(d.window_records), d.window_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<SinkColumn> {
        let c = |field: &str, kind, required| SinkColumn {
            field: field.into(),
            column: field.into(),
            kind,
            required,
        };
        vec![
            c("id", ColumnType::Text, true),
            c("amount", ColumnType::Bigint, true),
            c("rate", ColumnType::Double, false),
            c("ok", ColumnType::Boolean, false),
            c("extra", ColumnType::Jsonb, false),
        ]
    }

    fn check(text: &str) -> Result<(), String> {
        let v = serde_json::from_str::<serde_json::Value>(text).ok();
        check_schema(&columns(), v.as_ref())
    }

    /// Each kind of violation is refused with a reason naming the field; optional fields may
    /// be absent or null; integers are not doubles' only form.
    #[test]
    fn the_schema_checks_presence_and_types() {
        assert_eq!(check(r#"{"id":"a","amount":1}"#), Ok(()));
        assert_eq!(check(r#"{"id":"a","amount":1,"rate":2,"ok":null,"extra":[1]}"#), Ok(()));
        assert_eq!(check("not json"), Err("the value is not JSON".into()));
        assert_eq!(check("[1]"), Err("the value is a JSON array, not an object".into()));
        assert_eq!(check(r#"{"id":"a"}"#), Err("required field \"amount\" (bigint) is missing".into()));
        assert_eq!(
            check(r#"{"id":"a","amount":null}"#),
            Err("required field \"amount\" (bigint) is missing".into())
        );
        assert_eq!(
            check(r#"{"id":"a","amount":1.5}"#),
            Err("field \"amount\" is a JSON number, not bigint".into())
        );
        assert_eq!(check(r#"{"id":7,"amount":1}"#), Err("field \"id\" is a JSON integer, not text".into()));
        assert_eq!(
            check(r#"{"id":"a","amount":1,"ok":"yes"}"#),
            Err("field \"ok\" is a JSON string, not boolean".into())
        );
    }

    /// Event ids digest as `->>` prints them: the string "7" and the number 7 are one id;
    /// an absent or null field is no id.
    #[test]
    fn event_ids_follow_postgres_text() {
        let v = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
        assert_eq!(
            event_digest(v(r#"{"e":"7"}"#).as_ref(), "e"),
            event_digest(v(r#"{"e":7}"#).as_ref(), "e")
        );
        assert_ne!(
            event_digest(v(r#"{"e":"7"}"#).as_ref(), "e"),
            event_digest(v(r#"{"e":"8"}"#).as_ref(), "e")
        );
        assert_eq!(event_digest(v(r#"{"e":null}"#).as_ref(), "e"), None);
        assert_eq!(event_digest(v(r#"{"f":1}"#).as_ref(), "e"), None);
    }
}
