//! The wire types of QuorumDB's HTTP/JSON API (see `docs/api.md`), shared by the server
//! (`quorumdb-node`), the Rust client (`quorumdb-client`) and the lab.
//!
//! These are plain data-transfer objects: the field names and shapes *are* the wire format, so a
//! change here is an API change. Core types (`ItemState`, `VersionVector`, ...) stay
//! non-serialisable; the server converts them into these structs at the HTTP boundary.
//!
//! Request types (query strings and bodies) refuse unknown fields, so a typo such as `?W=all` is
//! an error instead of a silently ignored setting. Their values stay strings where the server
//! validates them with its own, more specific messages (levels, timeouts, limits).

pub mod crdt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The error itself. `code` is stable and machine-readable (`bad_request`,
/// `quorum_not_reached`, ...); `message` is one human-readable line. A `quorum_not_reached`
/// error also says how many acknowledgements were needed and received, and what each replica
/// answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Acknowledgements the request needed (quorum errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<usize>,
    /// Acknowledgements it received (quorum errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<usize>,
    /// Each contacted replica's outcome (quorum errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaOutcome>>,
}

/// What one replica answered a request that missed its quorum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaOutcome {
    pub node: String,
    /// `ok`, `timeout`, `down` or `error: <message>`.
    pub outcome: String,
}

impl ErrorBody {
    /// An error body with only a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail::new(code, message) }
    }
}

impl ErrorDetail {
    /// An error with only a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorDetail {
        ErrorDetail {
            code: code.into(),
            message: message.into(),
            needed: None,
            answered: None,
            replicas: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Items

/// Query of `GET /v1/tables/{table}/items/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    /// A replica count or `one`, `quorum`, `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// `quorum` or `linearizable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `blocking`, `async` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<String>,
    /// `strict` or `sloppy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
}

/// Query of `PUT /v1/tables/{table}/items/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    /// A replica count or `one`, `quorum`, `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
    /// `strict` or `sloppy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    /// The write's id (32 hex digits or a UUID), as the `Idempotency-Key` header also gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<String>,
    /// A fencing token, `name:token` (a lock or election and its holder's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
}

/// Query of `DELETE /v1/tables/{table}/items/{key}`: a write's query plus the causality token
/// (a DELETE has no body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<String>,
}

/// Body of a put. `context` may be absent or `null` (a blind write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Answer of a point read. The item exists when `values` is non-empty; more than one value
/// means concurrent writes left siblings, which a write carrying `context` resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResponse {
    pub values: Vec<String>,
    pub context: String,
}

/// The `404` answer of a read of a missing or deleted item: an empty item (whose `context` a
/// later write can carry) plus the usual error envelope with code `not_found`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemNotFound {
    pub values: Vec<String>,
    pub context: String,
    pub error: ErrorDetail,
}

/// Answer of a put or delete: the item's causality token after the write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteResponse {
    pub context: String,
}

// ---------------------------------------------------------------------------------------------
// Inspect

/// Query of `GET /v1/tables/{table}/items/{key}/replicas`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
}

/// What one home replica holds locally for an item (inspection repairs nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub node: String,
    pub zone: String,
    /// `up` or `down` (down also when the replica did not answer the inspection).
    pub state: String,
    pub values: Vec<String>,
    pub tombstone: bool,
    /// Human-readable version vector of the replica's causal context (empty when it did not
    /// answer).
    pub version: String,
    /// Why the replica did not answer, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For CRDT tables: the replica's state, its concurrent states joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crdt: Option<crdt::CrdtValue>,
}

/// Every home replica's local view of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectResponse {
    pub replicas: Vec<ReplicaView>,
}

// ---------------------------------------------------------------------------------------------
// Scan

/// Query of `GET /v1/tables/{table}/partitions/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    /// First sort key of the range, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the range, exclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Most items in the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `true` or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<String>,
    /// The `next` value of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<String>,
}

/// One item of a scan page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanItem {
    pub sort_key: String,
    pub values: Vec<String>,
    pub context: String,
}

/// One page of a partition scan; `next` is the cursor of the following page (`null` on the
/// last page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanPage {
    pub items: Vec<ScanItem>,
    pub next: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Cluster and operations

/// One cluster member as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub zone: String,
    /// The member's HTTP address.
    pub address: String,
    /// `up` or `down`.
    pub state: String,
    /// Fraction of the ring this node owns, 0.0..=1.0.
    pub ownership: f64,
    /// The member's Kafka listener (`host:port`), when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
}

/// Answer of `GET /v1/cluster/status`: membership, zones, liveness and ring ownership as the
/// answering node (`reporter`) sees them, plus its wall clock and hint queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    /// The id of the node that answered.
    #[serde(default)]
    pub reporter: String,
    /// The reporter's wall clock in Unix milliseconds (including any injected clock skew).
    #[serde(default)]
    pub wall_ms: i64,
    /// Hints the reporter holds for unreachable replicas.
    #[serde(default)]
    pub hints_queued: u64,
    /// Total size of those hints in bytes.
    #[serde(default)]
    pub hints_bytes: u64,
}

/// Query of `POST /v1/repair`: optionally one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// Answer of `POST /v1/repair` (`202`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairStarted {
    pub started: bool,
}

/// Answer of `GET /v1/repair`: one node's anti-entropy progress, summed over its shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairProgress {
    pub running: bool,
    pub table: Option<String>,
    pub exchanges_total: usize,
    pub exchanges_done: usize,
    pub exchanges_failed: usize,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    pub item_bytes: u64,
    pub digests_received: u64,
    pub leaves_differing: u64,
    pub passes_completed: u64,
}

/// Answer of `/livez` (`live`) and `/readyz` (`ready`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// Largest [`FaultRules::fsync_delay_ms`] a node accepts. Ten seconds is past every request
/// timeout worth running with, so a longer delay can only be a typo (seconds for ms); a disk
/// that hangs for good is what pausing the process models.
pub const FSYNC_DELAY_MS_MAX: u64 = 10_000;

/// Nemesis rules of `GET`/`PUT /v1/admin/faults`. Empty by default: every message is delivered
/// at once. A `PUT` replaces the node's rules whole; absent fields take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRules {
    /// Peers this node must not send to (one-way partition, outgoing side).
    #[serde(default)]
    pub block_send_to: HashSet<String>,
    /// Peers whose messages this node ignores (one-way partition, incoming side).
    #[serde(default)]
    pub block_receive_from: HashSet<String>,
    /// Probability in [0, 1] that any message is dropped.
    #[serde(default)]
    pub drop_probability: f64,
    /// Added one-way delay of every sent message, plus uniform jitter in [0, delay_jitter_ms].
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub delay_jitter_ms: u64,
    /// Added to this node's wall clock (milliseconds, may be negative): clock skew for the lab.
    /// Only wall-clock consumers (LWW timestamps) see it; timeouts use the monotonic clock.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// Added before each group-commit fsync of this node, ms, at most [`FSYNC_DELAY_MS_MAX`]: a
    /// slow disk for the lab. Every write this node makes durable (as coordinator, replica or
    /// hint holder) waits for it; reads do not. Applies whatever the durability mode.
    #[serde(default)]
    pub fsync_delay_ms: u64,
    /// Make this node's next fsync fail (the node then poisons itself: it refuses writes until
    /// restarted). One-shot: applied when the rules are set, not kept as state.
    #[serde(default, skip_serializing)]
    pub fail_next_fsync: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};

    /// Serialises `v`, checks the JSON equals `expected`, and parses it back to `v`.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T, expected: Value) {
        let text = serde_json::to_string(v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), v);
    }

    /// A plain error is exactly `{"error":{"code","message"}}`, with no null quorum fields.
    #[test]
    fn plain_error_body_round_trips() {
        let e = ErrorBody::new("bad_request", "limit must be an integer");
        round_trip(&e, json!({"error": {"code": "bad_request", "message": "limit must be an integer"}}));
    }

    /// A quorum error carries needed, answered and each replica's outcome.
    #[test]
    fn quorum_error_body_round_trips() {
        let e = ErrorBody {
            error: ErrorDetail {
                needed: Some(3),
                answered: Some(2),
                replicas: Some(vec![
                    ReplicaOutcome { node: "n1".into(), outcome: "ok".into() },
                    ReplicaOutcome { node: "n4".into(), outcome: "timeout".into() },
                ]),
                ..ErrorDetail::new("quorum_not_reached", "needed 3, got 2")
            },
        };
        round_trip(
            &e,
            json!({"error": {"code": "quorum_not_reached", "message": "needed 3, got 2", "needed": 3,
                "answered": 2, "replicas": [{"node": "n1", "outcome": "ok"}, {"node": "n4", "outcome": "timeout"}]}}),
        );
    }

    /// A read answer and the 404 not-found answer keep values, context and the error envelope.
    #[test]
    fn item_responses_round_trip() {
        round_trip(
            &ItemResponse { values: vec!["a".into(), "b".into()], context: "tok".into() },
            json!({"values": ["a", "b"], "context": "tok"}),
        );
        round_trip(
            &ItemNotFound {
                values: vec![],
                context: "tok".into(),
                error: ErrorDetail::new("not_found", "key \"k\" not found"),
            },
            json!({"values": [], "context": "tok", "error": {"code": "not_found", "message": "key \"k\" not found"}}),
        );
        round_trip(&WriteResponse { context: "t2".into() }, json!({"context": "t2"}));
    }

    /// A scan page keeps its items and a `null` next on the last page.
    #[test]
    fn scan_page_round_trips() {
        let page = ScanPage {
            items: vec![ScanItem { sort_key: "a".into(), values: vec!["1".into()], context: "c".into() }],
            next: None,
        };
        round_trip(
            &page,
            json!({"items": [{"sort_key": "a", "values": ["1"], "context": "c"}], "next": null}),
        );
        let page = ScanPage { items: vec![], next: Some("cur".into()) };
        round_trip(&page, json!({"items": [], "next": "cur"}));
    }

    /// An inspect answer has the error field only for replicas that did not answer.
    #[test]
    fn inspect_response_round_trips() {
        let up = ReplicaView {
            node: "n1".into(),
            zone: "z1".into(),
            state: "up".into(),
            values: vec!["v".into()],
            tombstone: false,
            version: "{n1: 1}".into(),
            error: None,
            crdt: None,
        };
        let down = ReplicaView {
            node: "n2".into(),
            zone: "z2".into(),
            state: "down".into(),
            values: vec![],
            tombstone: false,
            version: String::new(),
            error: Some("timeout".into()),
            crdt: None,
        };
        round_trip(
            &InspectResponse { replicas: vec![up, down] },
            json!({"replicas": [
                {"node": "n1", "zone": "z1", "state": "up", "values": ["v"], "tombstone": false, "version": "{n1: 1}"},
                {"node": "n2", "zone": "z2", "state": "down", "values": [], "tombstone": false, "version": "",
                 "error": "timeout"},
            ]}),
        );
    }

    /// Cluster status keeps every field, and an answer with only `nodes` still decodes.
    #[test]
    fn cluster_status_round_trips() {
        let s = ClusterStatus {
            nodes: vec![NodeStatus {
                id: "n1".into(),
                zone: "z1".into(),
                address: "127.0.0.1:7701".into(),
                state: "up".into(),
                ownership: 0.25,
                kafka: Some("127.0.0.1:7901".into()),
            }],
            reporter: "n1".into(),
            wall_ms: -5,
            hints_queued: 2,
            hints_bytes: 40,
        };
        round_trip(
            &s,
            json!({"nodes": [{"id": "n1", "zone": "z1", "address": "127.0.0.1:7701", "state": "up",
                "ownership": 0.25, "kafka": "127.0.0.1:7901"}], "reporter": "n1", "wall_ms": -5, "hints_queued": 2, "hints_bytes": 40}),
        );
        let only_nodes: ClusterStatus = serde_json::from_value(json!({"nodes": []})).unwrap();
        assert_eq!(only_nodes.reporter, "");
    }

    /// Repair progress and the repair-started answer keep their field names.
    #[test]
    fn repair_round_trips() {
        let p = RepairProgress {
            running: true,
            table: Some("t".into()),
            exchanges_total: 4,
            exchanges_done: 2,
            exchanges_failed: 1,
            keys_pushed: 5,
            keys_pulled: 6,
            item_bytes: 7,
            digests_received: 8,
            leaves_differing: 9,
            passes_completed: 10,
        };
        round_trip(
            &p,
            json!({"running": true, "table": "t", "exchanges_total": 4, "exchanges_done": 2,
                "exchanges_failed": 1, "keys_pushed": 5, "keys_pulled": 6, "item_bytes": 7,
                "digests_received": 8, "leaves_differing": 9, "passes_completed": 10}),
        );
        round_trip(&RepairStarted { started: true }, json!({"started": true}));
        round_trip(&Health { status: "ready".into() }, json!({"status": "ready"}));
    }

    /// Fault rules default every absent field (a slow disk included: no fsync delay) and never
    /// echo the one-shot fail_next_fsync.
    #[test]
    fn fault_rules_defaults_and_one_shot_fsync() {
        let rules: FaultRules =
            serde_json::from_value(json!({"block_send_to": ["n2"], "fail_next_fsync": true})).unwrap();
        assert!(rules.block_send_to.contains("n2") && rules.fail_next_fsync);
        assert_eq!((rules.delay_ms, rules.fsync_delay_ms), (0, 0));
        let echoed = serde_json::to_value(&rules).unwrap();
        assert!(echoed.get("fail_next_fsync").is_none(), "{echoed}");
        let plain = FaultRules { clock_offset_ms: -300, drop_probability: 0.5, ..FaultRules::default() };
        round_trip(
            &plain,
            json!({"block_send_to": [], "block_receive_from": [], "drop_probability": 0.5, "delay_ms": 0,
                "delay_jitter_ms": 0, "clock_offset_ms": -300, "fsync_delay_ms": 0}),
        );
    }

    /// A layout answer carries each version's live/read/retired state and each member's
    /// trackers, and an answer of an older node without them still parses (they default).
    #[test]
    fn layout_history_round_trips_and_old_answers_parse() {
        let h = LayoutHistory {
            versions: vec![LayoutInfo {
                version: 2,
                members: vec![],
                changes: vec![ChangeInfo::Leave { id: "n3".into() }],
                live: true,
                read: false,
                retired: false,
            }],
            staged: vec![],
            read_version: 1,
            progress: vec![MemberProgressInfo { id: "n1".into(), ack: 2, sync: 1, sync_ack: 1 }],
        };
        round_trip(
            &h,
            json!({"versions": [{"version": 2, "members": [], "changes": [{"leave": {"id": "n3"}}],
                "live": true, "read": false, "retired": false}], "staged": [], "read_version": 1,
                "progress": [{"id": "n1", "ack": 2, "sync": 1, "sync_ack": 1}]}),
        );
        let old: LayoutHistory = serde_json::from_value(
            json!({"versions": [{"version": 1, "members": [], "changes": []}], "staged": []}),
        )
        .unwrap();
        assert_eq!((old.read_version, old.progress.len()), (0, 0));
        assert!(!old.versions[0].live && !old.versions[0].read && !old.versions[0].retired);
    }

    /// A put body takes value and an optional or null context, and refuses other fields.
    #[test]
    fn put_body_parses_and_refuses_unknown_fields() {
        let b: PutBody = serde_json::from_str(r#"{"value":"v","context":null}"#).unwrap();
        assert_eq!(b, PutBody { value: "v".into(), context: None });
        round_trip(
            &PutBody { value: "v".into(), context: Some("c".into()) },
            json!({"value": "v", "context": "c"}),
        );
        let err = serde_json::from_str::<PutBody>(r#"{"value":"v","ctx":"c"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `ctx`"), "{err}");
    }

    /// Query strings parse into the route's struct, and an unknown parameter is named in the error.
    #[test]
    fn queries_parse_and_name_unknown_parameters() {
        let q: ReadQuery = serde_urlencoded::from_str("sort_key=a+b&r=all&timeout_ms=5").unwrap();
        assert_eq!(q.sort_key.as_deref(), Some("a b"));
        assert_eq!((q.r.as_deref(), q.timeout_ms.as_deref()), (Some("all"), Some("5")));
        assert_eq!(serde_urlencoded::to_string(&q).unwrap(), "sort_key=a+b&r=all&timeout_ms=5");
        let err = serde_urlencoded::from_str::<ReadQuery>("R=all").unwrap_err();
        assert!(err.to_string().contains("unknown field `R`"), "{err}");
        let q: ScanQuery = serde_urlencoded::from_str("from=a&to=z&limit=10&reverse=true&cursor=c").unwrap();
        assert_eq!(q.limit.as_deref(), Some("10"));
        assert!(serde_urlencoded::from_str::<WriteQuery>("context=x").is_err());
        assert_eq!(
            serde_urlencoded::from_str::<DeleteQuery>("context=x").unwrap().context.as_deref(),
            Some("x")
        );
        assert!(serde_urlencoded::from_str::<InspectQuery>("r=all").is_err());
        assert_eq!(serde_urlencoded::from_str::<RepairQuery>("").unwrap(), RepairQuery::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster metadata (the Raft group): members, layout versions, staged changes, tables.

/// One member as the metadata layout records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInfo {
    pub id: String,
    pub zone: String,
    pub peer_address: String,
    pub http_address: String,
}

/// A staged membership change (`POST /v1/cluster/changes` body, and in answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChangeInfo {
    Join(MemberInfo),
    Leave { id: String },
    Replace { old: String, new: MemberInfo },
}

/// One committed layout version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutInfo {
    pub version: u64,
    pub members: Vec<MemberInfo>,
    pub changes: Vec<ChangeInfo>,
    /// Writes still go to this version's replica sets (it is at or after the lowest
    /// `sync_ack`). The newest version is always live; two are live during a transition.
    /// (New fields default, so answers of older nodes still parse.)
    #[serde(default)]
    pub live: bool,
    /// Reads use this version (the lowest `sync` over tracked members).
    #[serde(default)]
    pub read: bool,
    /// Every tracked member reads from a newer version: this one only stays for history.
    #[serde(default)]
    pub retired: bool,
}

/// One tracked member's layout-transition trackers (layout versions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgressInfo {
    pub id: String,
    /// It writes to every live version up to this one.
    pub ack: u64,
    /// It streamed its data to this version's owners.
    pub sync: u64,
    /// It reads from this version.
    pub sync_ack: u64,
}

/// Answer of `GET /v1/cluster/layout`: the kept versions (oldest first) and what is staged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutHistory {
    pub versions: Vec<LayoutInfo>,
    pub staged: Vec<ChangeInfo>,
    /// The version reads use (0 until bootstrapped, or from an older node).
    #[serde(default)]
    pub read_version: u64,
    /// The trackers of every member of a live version, by id.
    #[serde(default)]
    pub progress: Vec<MemberProgressInfo>,
}

/// Answer of `GET /v1/cluster/meta`: the metadata group as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaStatus {
    pub reporter: String,
    pub raft_id: u64,
    pub term: u64,
    pub leader: Option<String>,
    pub is_leader: bool,
    pub applied_index: u64,
    pub commit_index: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// 0 until the metadata is bootstrapped.
    pub layout_version: u64,
    pub tables: usize,
    /// The members the cluster was founded with: metadata raft ids derive from them, so a node
    /// that joins (`server --join`) reads them here.
    #[serde(default)]
    pub founders: Vec<MemberInfo>,
}

/// Per member in a plan: share of replicas before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanMember {
    pub id: String,
    pub zone: String,
    /// Share of all replicas (of the default replication factor) it holds, 0 to 1.
    pub ownership_before: f64,
    pub ownership_after: f64,
}

/// Answer of `GET /v1/cluster/plan`: what committing the staged changes would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// The version the plan applies to; `cluster commit` must name it.
    pub from_version: u64,
    pub to_version: u64,
    pub staged: Vec<ChangeInfo>,
    pub members: Vec<PlanMember>,
    /// Zone → share of replicas after the change.
    pub zones_after: Vec<(String, f64)>,
    /// Fraction of replica placements (key-range × replica slots) that move to another node.
    pub moved_fraction: f64,
    /// `moved_fraction` × the items and bytes the answering node holds, scaled to the cluster.
    pub items_estimated: u64,
    /// Whether every table keeps its replicas in as many distinct zones as before.
    pub zone_spread_ok: bool,
    /// Why the plan cannot be committed, if it cannot.
    pub error: Option<String>,
}

/// `POST /v1/cluster/commit` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub expected_version: u64,
}

/// Answer of a metadata change: the layout version after it (and staged changes left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeAnswer {
    pub layout_version: u64,
    pub staged: usize,
}

/// A declared table (`POST /v1/tables` body, and answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableInfo {
    pub name: String,
    pub replicas: u8,
    /// `siblings` or `lww`.
    pub conflict: String,
}

/// Answer of `GET /v1/tables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableList {
    pub tables: Vec<TableInfo>,
    /// Replication factor of tables created on first write.
    pub default_replicas: u8,
}

// ---------------------------------------------------------------------------------------------
// Topics of the Kafka-compatible log.

/// `POST /v1/topics` body. Omitted fields take the cluster's defaults (`[log]` config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTopic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Replicas of the topic's batches; 1..=N is accepted and stored with the cluster's N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u8>,
    /// `retention.ms`; -1 keeps batches forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// `retention.bytes` per partition; -1 is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
}

/// One partition of a topic, as the answering node's applied metadata has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitionInfo {
    pub partition: u32,
    /// The first offset still readable.
    pub log_start_offset: u64,
    /// The next offset to be assigned (Kafka's high watermark; also the last stable offset).
    pub high_watermark: u64,
    /// Record batches indexed.
    pub batches: u64,
    /// Bytes of those batches, as produced (compressed).
    pub bytes: u64,
    /// Producer ids whose recent batches this partition remembers (idempotence).
    pub producers: u64,
}

/// A topic (answers of `GET /v1/topics[/{name}]` and `POST /v1/topics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    /// The Kafka topic id, as a hyphenated UUID.
    pub id: String,
    pub replication_factor: u8,
    /// `None`: unlimited.
    pub retention_ms: Option<u64>,
    /// Per partition; `None`: unlimited.
    pub retention_bytes: Option<u64>,
    pub partitions: Vec<TopicPartitionInfo>,
}

/// Answer of `GET /v1/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicInfo>,
    /// The Kafka listeners of the members, as configured (`host:port`; empty when a member
    /// runs none).
    pub kafka_addresses: Vec<String>,
}

/// Answer of `DELETE /v1/topics/{name}`: the topic is hidden at once and drained in the
/// background; its name is free again once its batches are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDeleted {
    pub name: String,
    pub deleting: bool,
}

// ---------------------------------------------------------------------------------------------
// Consumer groups of the log.

/// One group in `GET /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    /// Kafka's names: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`.
    pub state: String,
    pub protocol_type: String,
    pub generation: i32,
    pub members: usize,
    /// Records between the committed offsets and the high watermarks, over the partitions
    /// the group has committed.
    pub lag: u64,
}

/// Answer of `GET /v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
}

/// Partitions of one topic assigned to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberInfo {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded from the Kafka consumer protocol's assignment; empty when the group's
    /// protocol is not `consumer` or the bytes do not decode.
    pub assignment: Vec<AssignedPartitions>,
}

/// A committed offset and the lag behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsetInfo {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read.
    pub committed: i64,
    pub high_watermark: u64,
    pub lag: u64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// Answer of `GET /v1/groups/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen for this generation (`range`, `roundrobin`, ...).
    pub protocol: String,
    pub generation: i32,
    pub leader: String,
    pub members: Vec<GroupMemberInfo>,
    pub offsets: Vec<GroupOffsetInfo>,
}

// ---------------------------------------------------------------------------------------------
// Sinks: topics delivered to a warehouse (PostgreSQL) with exactly-once effect.

/// `POST /v1/sinks` body, and the TOML file of `quorumdb sink create --config` (the same
/// fields; flags override the file). Omitted settings take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSink {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub topics: Vec<String>,
    /// PostgreSQL connection string (`host=... user=... dbname=...` or a `postgresql://` URL).
    #[serde(default)]
    pub postgres: String,
    /// `table` or `schema.table`; created if missing.
    #[serde(default)]
    pub table: String,
    /// `offset` (upsert on topic, partition, offset; the default) or `field:NAME` (upsert on
    /// that field of a JSON value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `bytea` (the default) or `jsonb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Default `<name>.dlq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_records_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered_records_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_floor_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_ms: Option<u64>,
    /// The password by reference, `env:NAME` or `file:PATH`, resolved on each node when it
    /// connects: the secret stays out of the metadata (instead of `password=` in `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_password: Option<String>,
    /// The declared schema: JSON fields mapped to their own columns, checked before any write
    /// (a record that fails goes to the dead-letter topic). TOML: `[[columns]]` tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<SinkColumnSpec>,
    /// The JSON field with the event id to deduplicate on (default: the `field:NAME` key's
    /// field when a window is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_field: Option<String>,
    /// Offsets of a partition the dedup window spans (its memory bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_records: Option<u32>,
    /// Event-time bound of the dedup window (record timestamps); alone it spans the largest
    /// count allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window_ms: Option<u64>,
}

/// One mapped column of a sink's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkColumnSpec {
    /// A top-level field of the JSON value.
    pub field: String,
    /// The column (a PostgreSQL identifier); default: the field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// `text`, `bigint`, `double`, `boolean` or `jsonb`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Default true: absent or `null` fails the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// A sink's dedup window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDedupInfo {
    pub field: String,
    pub window_records: u32,
    /// 0: no time bound.
    pub window_ms: u64,
}

/// A sink's delivery settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkSettingsInfo {
    pub batch_records_max: u32,
    pub buffered_records_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub budget_percent: u32,
    pub budget_floor_per_s: u32,
    pub breaker_failures_max: u32,
    pub breaker_open_ms: u64,
}

/// One partition of a sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkPartitionInfo {
    pub topic: String,
    pub partition: u32,
    /// The node whose worker delivers it now (`None`: unassigned, or its node did not answer).
    pub owner: Option<String>,
    /// The next offset to deliver, as the warehouse's offsets table records it (the source
    /// of truth); `None` when the warehouse did not answer.
    pub pg_offset: Option<u64>,
    pub high_watermark: u64,
    /// `high_watermark - pg_offset`.
    pub lag: Option<u64>,
    /// Counters of the owner's current worker.
    pub written: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    /// `closed`, `open` or `half-open` (`-` without an owner).
    pub breaker: String,
    pub last_error: String,
    /// Duplicates the dedup window skipped (the owner's current worker).
    #[serde(default)]
    pub deduplicated: u64,
}

/// Answer of `GET /v1/sinks/{name}` and `POST /v1/sinks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkInfo {
    pub name: String,
    /// The log index of its creation.
    pub id: u64,
    /// `running` or `paused`.
    pub state: String,
    pub topics: Vec<String>,
    /// The connection string, its password shown as `***`.
    pub postgres: String,
    pub table: String,
    pub key: String,
    pub value: String,
    pub dead_letter_topic: String,
    /// The consumer group its workers form (`quorumdb group describe` shows it).
    pub group: String,
    pub settings: SinkSettingsInfo,
    /// Where the password comes from (`env:NAME`, `file:PATH`), if by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_password: Option<String>,
    /// The declared schema (every column with its `column` and `required` filled in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<SinkColumnSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<SinkDedupInfo>,
    pub partitions: Vec<SinkPartitionInfo>,
    /// Why the warehouse's offsets could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse_error: Option<String>,
}

/// Answer of `GET /v1/sinks` (partitions are left out: `GET /v1/sinks/{name}` has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkList {
    pub sinks: Vec<SinkInfo>,
}

/// Answer of `DELETE /v1/sinks/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDeleted {
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Leases, locks and elections (in the metadata group).

/// `POST /v1/leases` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub ttl_ms: u64,
}

/// A lease as granted or renewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: u64,
    pub ttl_ms: u64,
    /// Keep-alives applied so far (in `GET /v1/leases`).
    #[serde(default)]
    pub renewals: u64,
    /// Locks and elections it holds (in `GET /v1/leases`).
    #[serde(default)]
    pub holds: Vec<String>,
}

/// Answer of `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    pub leases: Vec<LeaseInfo>,
}

/// Answer of `DELETE /v1/leases/{id}`: the names released with the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevoked {
    pub released: Vec<String>,
}

/// `POST /v1/locks/{name}` body: take the lock (or lead the election) for `lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    pub lease: u64,
    #[serde(default)]
    pub value: String,
}

/// The holder of a lock or the leader of an election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub lease: u64,
    /// The fencing token: strictly increasing per name across holders, metadata leaders and
    /// restarts.
    pub token: u64,
    pub value: String,
}

/// Answer of `GET /v1/locks/{name}` and of a successful acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub name: String,
    pub holder: Option<HolderInfo>,
    /// The last token ever granted for the name (0 if none).
    pub last_token: u64,
}

/// `DELETE /v1/locks/{name}` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    pub token: u64,
}

// ---------------------------------------------------------------------------------------------
// Heat telemetry

/// `GET /v1/hot` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotQuery {
    /// Only this table's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Most keys in the answer (default 20, at most 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `cluster` (default: every member's view merged) or `node` (the answering node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// One hot partition key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotKeyInfo {
    pub table: String,
    /// The partition key (its first 64 bytes, as UTF-8 with invalid bytes replaced).
    pub key: String,
    /// Operations per second over the window: reads (and scans) and writes handled for this
    /// key, summed over the nodes that answered (each replica counts what it did).
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// Share of all operations the answering scope handled, 0 to 1.
    pub share: f64,
    /// Space-Saving's bound on how much the counts may overstate, per second.
    pub error_per_s: f64,
}

/// Answer of `GET /v1/hot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotReport {
    /// `cluster` or `node`.
    pub scope: String,
    /// Nodes whose views are merged.
    pub nodes: Vec<String>,
    /// Members that did not answer in time, with why.
    pub missing: Vec<(String, String)>,
    /// Length of the counting window, ms.
    pub window_ms: u64,
    /// All operations per second in the scope (every key, hot or not).
    pub reads_per_s: f64,
    pub writes_per_s: f64,
    /// Hottest first.
    pub keys: Vec<HotKeyInfo>,
}

/// `POST /v1/users` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A token, shown once: the answer of `POST /v1/users` and `POST /v1/users/{name}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub user: String,
    pub token_id: String,
    /// `qdb_<id>_<secret>`; only its hash is stored, so it cannot be shown again.
    pub token: String,
}

/// A user as `GET /v1/users` shows it (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub token_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

/// One grant of a role: `resource` is table, topic, group, lock or cluster; `pattern` a name,
/// `prefix*` or `*`; `permission` read, write or admin (each implies the ones before it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInfo {
    pub resource: String,
    pub pattern: String,
    pub permission: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub grants: Vec<GrantInfo>,
    /// True for the built-in `admin` role (every permission, unchangeable).
    pub builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleList {
    pub roles: Vec<RoleInfo>,
}

/// `POST /v1/roles` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub name: String,
}

/// `GET /v1/auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub enabled: bool,
    pub users: usize,
    pub roles: usize,
    /// Ids of the causality-token keys that verify, the signing one last.
    #[serde(default)]
    pub context_keys: Vec<u8>,
}
