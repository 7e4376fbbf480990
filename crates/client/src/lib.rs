//! Async Rust client for QuorumDB's HTTP/JSON API (see `docs/api.md`).
//!
//! The client is a thin, typed layer over the wire format: one method per route, options structs
//! that map one-to-one onto query parameters, and a single error type whose `Display` is the
//! server's own one-line message, so a command-line tool can print errors as they are.
//!
//! Table names and keys travel in the URL path. They are percent-encoded segment by segment, so
//! keys may contain `/`, `?`, `#`, `%`, spaces or any Unicode text. The only keys that cannot be
//! addressed are the empty string, `.` and `..` (and their percent-encoded forms `%2e`): URL
//! normalisation treats those as "this directory" / "parent directory" and would silently send
//! the request to another route, so the client refuses them before sending anything.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorumdb_client::ClientError> {
//! use quorumdb_client::{Client, ReadOptions, WriteOptions};
//! let client = Client::new("http://127.0.0.1:7701")?;
//! let written = client.put("users", "alice", "hello", &WriteOptions::default()).await?;
//! let read = client.get("users", "alice", &ReadOptions::default()).await?;
//! // Write back with the context to resolve any concurrent siblings.
//! let opts = WriteOptions { context: Some(read.context), ..WriteOptions::default() };
//! client.put("users", "alice", "hello again", &opts).await?;
//! # let _ = written;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Request timeout used by [`Client::new`]. Generous because the server enforces its own,
/// shorter quorum timeout (`timeout_ms`) and answers with a clear error when it expires; this
/// one only guards against a node that stopped answering altogether.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many characters of a non-JSON error body are kept in the error message: enough to
/// recognise a proxy's or load balancer's error page, short enough for one terminal line.
const RAW_BODY_CHARS_MAX: usize = 200;

/// Options of a write (`put` or `delete`). `None` leaves the server default in place.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Write consistency: a replica count or `one`, `quorum` (server default), `all`.
    pub w: Option<String>,
    /// Causality token from an earlier read or write of this item. With it the write supersedes
    /// every version the token saw; without it the write is "blind" and may add a sibling.
    pub context: Option<String>,
    /// Sort key within the partition; absent means the empty sort key.
    pub sort_key: Option<String>,
    /// Server-side quorum timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `strict` (server default) or `sloppy`: whether stand-in nodes may count toward W.
    pub quorum: Option<String>,
    /// The write's id (32 hex digits or a UUID), sent as the `Idempotency-Key` header. Sending
    /// the same write again with the same id (a retry after a timeout) yields one version of it,
    /// not two. When absent the client draws a fresh one for each call.
    pub write_id: Option<String>,
    /// A fencing token, `name:token` (the holder's token of a lock or election): replicas
    /// refuse the write (code `fenced`) once the item holds a higher token of the name.
    pub fence: Option<String>,
}

/// A fresh random write id: 32 hex digits.
pub fn new_write_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// TLS for an `https://` endpoint: the cluster CA and, for a listener that requires client
/// certificates, this client's (all PEM; see `quorumdb certs`).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca_pem: Vec<u8>,
    /// (certificate chain, private key).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsOptions {
    /// Reads the CA and, when given, a client certificate and key from PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        client_cert: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<TlsOptions, ClientError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| tls_error(&format!("cannot read {}: {e}", p.display())))
        };
        let client_cert = match client_cert {
            Some((c, k)) => Some((read(c)?, read(k)?)),
            None => None,
        };
        Ok(TlsOptions { ca_pem: read(ca)?, client_cert })
    }

    /// rustls's `ring` backend, as the server uses (see `quorumdb_node::tls::provider` for why,
    /// despite its deprecation for lacking post-quantum key exchange), TLS 1.2 and 1.3.
    fn config_builder(
    ) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ClientError> {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&format!("protocol versions: {e}")))
    }

    /// The rustls config: only the CA as root (no system roots), TLS 1.2 and 1.3, HTTP/1.1.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &str, e: &dyn std::fmt::Display| tls_error(&format!("{what}: {e}"));
        let certs = |pem: &[u8], what: &str| {
            CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(what, &e))
        };
        let mut roots = rustls::RootCertStore::empty();
        let ca = certs(&self.ca_pem, "the CA certificate")?;
        if ca.is_empty() {
            return Err(tls_error("the CA file holds no certificate"));
        }
        for c in ca {
            roots.add(c).map_err(|e| bad("the CA certificate", &e))?;
        }
        let builder = TlsOptions::config_builder()?.with_root_certificates(roots);
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certs(cert, "the client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("the client key", &e))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| bad("the client certificate", &e))?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A TLS set-up error, reported as a transport error (no request could be sent); the
/// endpoint is filled in by [`ClientError::at`] where known.
fn tls_error(detail: &str) -> ClientError {
    ClientError::Transport { endpoint: String::new(), detail: format!("TLS: {detail}") }
}

/// Options of a point read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Read consistency: a replica count or `one`, `quorum` (server default), `all`.
    pub r: Option<String>,
    /// Sort key within the partition; absent means the empty sort key.
    pub sort_key: Option<String>,
    /// Server-side quorum timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `linearizable`: quorum read plus a blocking write-back of the result to the read quorum.
    pub consistency: Option<String>,
    /// `blocking`, `async` or `off` (server default: the node's `read_repair`).
    pub read_repair: Option<String>,
    /// `strict` (server default) or `sloppy`: whether stand-in nodes may answer.
    pub quorum: Option<String>,
}

/// Options of a partition scan (one page).
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// First sort key of the range, inclusive.
    pub from: Option<String>,
    /// End of the range, exclusive.
    pub to: Option<String>,
    /// Most items in this page (the server caps it).
    pub limit: Option<usize>,
    /// Walk the range from high to low sort keys.
    pub reverse: bool,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
    /// Read consistency for the scan.
    pub r: Option<String>,
}

// The wire types are defined once, in `quorumdb-api`, and shared with the server. They are
// re-exported here under the names this crate has always used.
pub use quorumdb_api as api;
pub use quorumdb_api::{
    ErrorBody, ErrorDetail, FaultRules, InspectResponse, NodeStatus, RepairProgress, RepairStarted,
    ReplicaOutcome, ReplicaView, ScanItem, WriteResponse,
};

/// Result of a point read. The item exists when `values` is non-empty; more than one value
/// means concurrent writes left siblings, which a write carrying `context` resolves.
pub type GetResponse = quorumdb_api::ItemResponse;

/// One page of a partition scan; `next` is the cursor of the following page, if any.
pub type ScanResponse = quorumdb_api::ScanPage;

/// Cluster membership as the answering node sees it.
pub type StatusResponse = quorumdb_api::ClusterStatus;

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. `Display` is the server's message alone, so
    /// callers can print it verbatim; `code` is the stable machine-readable reason and `body`
    /// the whole JSON answer (for example the per-replica outcomes of `quorum_not_reached`).
    #[error("{message}")]
    Api { status: u16, code: String, message: String, body: serde_json::Value },
    /// No HTTP answer: connection refused, DNS failure, reset, or the client timeout expired.
    #[error("cannot reach {endpoint}: {detail}")]
    Transport { endpoint: String, detail: String },
    /// The endpoint given to [`Client::new`] is not a usable base URL.
    #[error(
        "invalid endpoint {0:?}: expected an http:// or https:// URL with a host, such as http://127.0.0.1:7701"
    )]
    BadEndpoint(String),
    /// The server answered with a success status but a body this client cannot read, which
    /// usually means the endpoint is not a QuorumDB node or runs an incompatible version.
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    /// This error with `endpoint` filled into a transport error that has none.
    fn at(self, endpoint: &str) -> ClientError {
        match self {
            ClientError::Transport { endpoint: e, detail } if e.is_empty() => {
                ClientError::Transport { endpoint: endpoint.to_owned(), detail }
            }
            other => other,
        }
    }

    /// The server's error code (`not_found`, `quorum_not_reached`, ...) when the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A handle to one QuorumDB node. Cheap to clone: clones share one connection pool.
///
/// Any node can coordinate any request, so a client bound to one endpoint can use the whole
/// cluster; spread load by making one client per node.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    endpoint: String,
    /// Sent as `Authorization: Bearer` on every request when set.
    token: Option<String>,
    /// Sent as `X-QuorumDB-Session` and updated from every answer that carries one.
    session: Option<Session>,
}

/// The header carrying a session token, both ways.
pub const SESSION_HEADER: &str = "x-quorumdb-session";

/// A session (read-your-writes and monotonic reads, see docs/api.md): the token the server
/// hands back with every item read and write, which the next request presents. Clones share
/// one token, so every clone of a client made [`with_session`](Client::with_session) is one
/// session.
#[derive(Debug, Clone, Default)]
pub struct Session(std::sync::Arc<std::sync::Mutex<String>>);

impl Session {
    /// A new session (the first request sends an empty token).
    pub fn new() -> Session {
        Session::default()
    }

    /// A session resumed from a token an earlier one handed out (e.g. saved in a file).
    pub fn from_token(token: impl Into<String>) -> Session {
        Session(std::sync::Arc::new(std::sync::Mutex::new(token.into())))
    }

    /// The current token, to save and resume later.
    pub fn token(&self) -> String {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, token: &str) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = token.to_owned();
    }
}

impl Client {
    /// A client for the node at `endpoint` (e.g. `http://127.0.0.1:7701`) with the default
    /// 30-second request timeout.
    pub fn new(endpoint: &str) -> Result<Client, ClientError> {
        Client::with_timeout(endpoint, DEFAULT_TIMEOUT)
    }

    /// A client with an explicit whole-request timeout (connect, send and read the answer).
    ///
    /// The endpoint must be an `http://` URL with a host; a path prefix is kept (for a node
    /// behind a reverse proxy). `https://` needs [`Client::with_tls`], since the client trusts
    /// no system roots, only the cluster's CA; failing here is clearer than a handshake error
    /// on the first request. Proxy environment variables are ignored: cluster traffic goes
    /// straight to the nodes.
    pub fn with_timeout(endpoint: &str, timeout: Duration) -> Result<Client, ClientError> {
        Client::with_tls(endpoint, timeout, None)
    }

    /// A client that speaks `https://` trusting the CA of `tls` (and presenting its client
    /// certificate, if any); with `None`, as [`Client::with_timeout`].
    pub fn with_tls(
        endpoint: &str,
        timeout: Duration,
        tls: Option<&TlsOptions>,
    ) -> Result<Client, ClientError> {
        let trimmed = endpoint.trim();
        let bad = || ClientError::BadEndpoint(endpoint.to_owned());
        let base = Url::parse(trimmed).map_err(|_| bad())?;
        if base.scheme() == "https" && tls.is_none() {
            return Err(tls_error(
                "this is an https endpoint: give the cluster CA certificate (--ca-cert or QUORUMDB_CA_CERT)",
            )
            .at(trimmed));
        }
        let usable = (base.scheme() == "http" || base.scheme() == "https")
            && base.host_str().is_some_and(|h| !h.is_empty())
            && base.query().is_none()
            && base.fragment().is_none()
            && !base.cannot_be_a_base();
        if !usable {
            return Err(bad());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .user_agent(concat!("quorumdb-client/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(tls.rustls_config().map_err(|e| e.at(trimmed))?);
        }
        let http = builder.build().map_err(|e| ClientError::Transport {
            endpoint: trimmed.to_owned(),
            detail: format!("cannot build HTTP client: {}", error_chain(&e)),
        })?;
        Ok(Client {
            http,
            base,
            endpoint: trimmed.trim_end_matches('/').to_owned(),
            token: None,
            session: None,
        })
    }

    /// Sends `token` (`qdb_...`, from `quorumdb user create`) with every request, as a
    /// cluster with authentication on requires. `None` sends none.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Makes every item read and write part of `session`: reads then never return an item
    /// older than what this session last wrote or read of it.
    pub fn with_session(mut self, session: Session) -> Client {
        self.session = Some(session);
        self
    }

    /// The endpoint this client talks to, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Writes `value` under `table`/`key` (and `opts.sort_key`).
    pub async fn put(
        &self,
        table: &str,
        key: &str,
        value: &str,
        opts: &WriteOptions,
    ) -> Result<WriteResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "items", key])?;
        write_query(&mut url, opts, false);
        // `context` is left out rather than sent as `null` when there is none.
        let body = api::PutBody { value: value.to_owned(), context: opts.context.clone() };
        let request = self.http.request(Method::PUT, url).header(IDEMPOTENCY_KEY, write_id(opts)).json(&body);
        let (status, bytes) = self.send(request).await?;
        self.decode(status, &bytes)
    }

    /// Reads `table`/`key`. A missing or deleted item is not an error: it comes back with no
    /// values and a context that a later write can carry.
    pub async fn get(&self, table: &str, key: &str, opts: &ReadOptions) -> Result<GetResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "items", key])?;
        let query = api::ReadQuery {
            sort_key: opts.sort_key.clone(),
            r: opts.r.clone(),
            consistency: opts.consistency.clone(),
            read_repair: opts.read_repair.clone(),
            quorum: opts.quorum.clone(),
            timeout_ms: opts.timeout_ms.map(|ms| ms.to_string()),
        };
        set_query(&mut url, &query);
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        if status == StatusCode::NOT_FOUND {
            let err = api_error(status, &bytes);
            if let ClientError::Api { code, body, .. } = &err {
                if code == "not_found" {
                    let context = serde_json::from_value::<api::ItemNotFound>(body.clone())
                        .map(|nf| nf.context)
                        .unwrap_or_default();
                    return Ok(GetResponse { values: Vec::new(), context });
                }
            }
            return Err(err);
        }
        self.decode(status, &bytes)
    }

    /// Deletes `table`/`key`. Pass the context of an earlier read in `opts.context` so the
    /// delete supersedes exactly the versions that read saw.
    pub async fn delete(
        &self,
        table: &str,
        key: &str,
        opts: &WriteOptions,
    ) -> Result<WriteResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "items", key])?;
        write_query(&mut url, opts, true);
        let request = self.http.request(Method::DELETE, url).header(IDEMPOTENCY_KEY, write_id(opts));
        let (status, bytes) = self.send(request).await?;
        self.decode(status, &bytes)
    }

    /// Reads one page of the items of partition `table`/`key`, ordered by sort key.
    pub async fn scan(
        &self,
        table: &str,
        key: &str,
        opts: &ScanOptions,
    ) -> Result<ScanResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "partitions", key])?;
        let query = api::ScanQuery {
            from: opts.from.clone(),
            to: opts.to.clone(),
            limit: opts.limit.map(|l| l.to_string()),
            reverse: opts.reverse.then(|| "true".to_owned()),
            cursor: opts.cursor.clone(),
            r: opts.r.clone(),
            timeout_ms: None,
        };
        set_query(&mut url, &query);
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// Cluster membership, zones, liveness and ring ownership as the node sees them.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let url = self.url(&["v1", "cluster", "status"])?;
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// What each home replica of `table`/`key` holds locally, without repairing anything.
    pub async fn inspect(
        &self,
        table: &str,
        key: &str,
        sort_key: Option<&str>,
    ) -> Result<InspectResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "items", key, "replicas"])?;
        set_query(&mut url, &api::InspectQuery { sort_key: sort_key.map(str::to_owned), timeout_ms: None });
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// The CRDT value of an item of a CRDT table, with the context a remove must carry.
    pub async fn crdt_get(
        &self,
        table: &str,
        key: &str,
        query: &api::crdt::CrdtReadQuery,
    ) -> Result<api::crdt::CrdtResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "crdt", key])?;
        set_query(&mut url, query);
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// Applies one CRDT operation; answers the item's value after it, as its coordinator holds it.
    pub async fn crdt_op(
        &self,
        table: &str,
        key: &str,
        query: &api::crdt::CrdtWriteQuery,
        op: &api::crdt::CrdtOpBody,
    ) -> Result<api::crdt::CrdtResponse, ClientError> {
        let mut url = self.url(&["v1", "tables", table, "crdt", key])?;
        set_query(&mut url, query);
        let (status, bytes) = self.send(self.http.request(Method::POST, url).json(op)).await?;
        self.decode(status, &bytes)
    }

    /// The node's fault-injection rules (the lab's nemesis).
    pub async fn fault_rules(&self) -> Result<FaultRules, ClientError> {
        self.faults().await.and_then(|v| {
            serde_json::from_value(v).map_err(|e| ClientError::Decode(format!("fault rules: {e}")))
        })
    }

    /// Replaces the node's fault-injection rules; returns the rules now in force.
    pub async fn set_fault_rules(&self, rules: &FaultRules) -> Result<FaultRules, ClientError> {
        let v = serde_json::to_value(rules).map_err(|e| ClientError::Decode(format!("fault rules: {e}")))?;
        self.set_faults(&v).await.and_then(|v| {
            serde_json::from_value(v).map_err(|e| ClientError::Decode(format!("fault rules: {e}")))
        })
    }

    /// The node's fault-injection rules as raw JSON (see [`Client::fault_rules`] for the typed
    /// form), for callers that edit single fields.
    pub async fn faults(&self) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["v1", "admin", "faults"])?;
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// Replaces the node's fault-injection rules with raw JSON; returns the rules now in force.
    pub async fn set_faults(&self, rules: &serde_json::Value) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["v1", "admin", "faults"])?;
        let (status, bytes) = self.send(self.http.request(Method::PUT, url).json(rules)).await?;
        self.decode(status, &bytes)
    }

    /// Starts a full anti-entropy pass on this node (optionally for one table).
    pub async fn start_repair(&self, table: Option<&str>) -> Result<RepairStarted, ClientError> {
        let mut url = self.url(&["v1", "repair"])?;
        set_query(&mut url, &api::RepairQuery { table: table.map(str::to_owned) });
        let (status, bytes) = self.send(self.http.request(Method::POST, url)).await?;
        self.decode(status, &bytes)
    }

    /// Progress of this node's current or last repair pass.
    pub async fn repair_progress(&self) -> Result<RepairProgress, ClientError> {
        let url = self.url(&["v1", "repair"])?;
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    /// The metadata group as this node sees it (leader, term, indexes, layout version).
    pub async fn meta_status(&self) -> Result<api::MetaStatus, ClientError> {
        self.get_json(&["v1", "cluster", "meta"]).await
    }

    /// The kept layout versions and the staged changes.
    pub async fn layout(&self) -> Result<api::LayoutHistory, ClientError> {
        self.get_json(&["v1", "cluster", "layout"]).await
    }

    /// Stages one membership change.
    pub async fn stage_change(&self, change: &api::ChangeInfo) -> Result<api::ChangeAnswer, ClientError> {
        self.send_json(Method::POST, &["v1", "cluster", "changes"], change).await
    }

    /// Drops every staged change.
    pub async fn unstage(&self) -> Result<api::ChangeAnswer, ClientError> {
        let url = self.url(&["v1", "cluster", "changes"])?;
        let (status, bytes) = self.send(self.http.request(Method::DELETE, url)).await?;
        self.decode(status, &bytes)
    }

    /// What committing the staged changes would do.
    pub async fn plan(&self) -> Result<api::PlanInfo, ClientError> {
        self.get_json(&["v1", "cluster", "plan"]).await
    }

    /// Commits the staged changes as the version after `expected_version`.
    pub async fn commit_layout(&self, expected_version: u64) -> Result<api::ChangeAnswer, ClientError> {
        self.send_json(Method::POST, &["v1", "cluster", "commit"], &api::CommitRequest { expected_version })
            .await
    }

    /// The declared tables.
    pub async fn tables(&self) -> Result<api::TableList, ClientError> {
        self.get_json(&["v1", "tables"]).await
    }

    /// Declares a table.
    pub async fn create_table(&self, table: &api::TableInfo) -> Result<api::TableInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "tables"], table).await
    }

    /// One declared table.
    pub async fn table(&self, name: &str) -> Result<api::TableInfo, ClientError> {
        self.get_json(&["v1", "tables", name]).await
    }

    /// The log's topics, with offsets per partition.
    pub async fn topics(&self) -> Result<api::TopicList, ClientError> {
        self.get_json(&["v1", "topics"]).await
    }

    /// Creates a topic of the Kafka-compatible log.
    pub async fn create_topic(&self, topic: &api::NewTopic) -> Result<api::TopicInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "topics"], topic).await
    }

    /// One topic, with offsets per partition.
    pub async fn topic(&self, name: &str) -> Result<api::TopicInfo, ClientError> {
        self.get_json(&["v1", "topics", name]).await
    }

    /// Deletes a topic: it is hidden at once and drained in the background.
    pub async fn delete_topic(&self, name: &str) -> Result<api::TopicDeleted, ClientError> {
        let url = self.url(&["v1", "topics", name])?;
        let (status, bytes) = self.send(self.http.request(Method::DELETE, url)).await?;
        self.decode(status, &bytes)
    }

    /// The log's consumer groups, with their total lag.
    pub async fn groups(&self) -> Result<api::GroupList, ClientError> {
        self.get_json(&["v1", "groups"]).await
    }

    /// One consumer group: members, assignments, committed offsets and lag.
    pub async fn group(&self, name: &str) -> Result<api::GroupInfo, ClientError> {
        self.get_json(&["v1", "groups", name]).await
    }

    /// Creates a sink (`POST /v1/sinks`).
    pub async fn create_sink(&self, sink: &api::NewSink) -> Result<api::SinkInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "sinks"], sink).await
    }

    /// Every sink's definition and state.
    pub async fn sinks(&self) -> Result<api::SinkList, ClientError> {
        self.get_json(&["v1", "sinks"]).await
    }

    /// One sink, with each partition's owner, warehouse offset, lag, retries and breaker.
    pub async fn sink(&self, name: &str) -> Result<api::SinkInfo, ClientError> {
        self.get_json(&["v1", "sinks", name]).await
    }

    /// Pauses (`pause = true`) or resumes a sink.
    pub async fn set_sink_paused(&self, name: &str, pause: bool) -> Result<api::SinkInfo, ClientError> {
        let action = if pause { "pause" } else { "resume" };
        let url = self.url(&["v1", "sinks", name, action])?;
        let (status, bytes) = self.send(self.http.request(Method::POST, url)).await?;
        self.decode(status, &bytes)
    }

    pub async fn delete_sink(&self, name: &str) -> Result<api::SinkDeleted, ClientError> {
        let url = self.url(&["v1", "sinks", name])?;
        let (status, bytes) = self.send(self.http.request(Method::DELETE, url)).await?;
        self.decode(status, &bytes)
    }

    /// The hottest partition keys over the last window (`GET /v1/hot`).
    pub async fn hot(&self, q: &api::HotQuery) -> Result<api::HotReport, ClientError> {
        let mut url = self.url(&["v1", "hot"])?;
        set_query(&mut url, q);
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    /// Grants a lease of `ttl_ms`.
    pub async fn grant_lease(&self, ttl_ms: u64) -> Result<api::LeaseInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "leases"], &api::LeaseRequest { ttl_ms }).await
    }

    /// Renews a lease for another TTL.
    pub async fn keepalive_lease(&self, id: u64) -> Result<api::LeaseInfo, ClientError> {
        let id = id.to_string();
        let url = self.url(&["v1", "leases", &id, "keepalive"])?;
        let (status, bytes) = self.send(self.http.request(Method::POST, url)).await?;
        self.decode(status, &bytes)
    }

    /// Ends a lease; the locks and elections it held are released.
    pub async fn revoke_lease(&self, id: u64) -> Result<api::LeaseRevoked, ClientError> {
        let id = id.to_string();
        let url = self.url(&["v1", "leases", &id])?;
        let (status, bytes) = self.send(self.http.request(Method::DELETE, url)).await?;
        self.decode(status, &bytes)
    }

    /// The live leases.
    pub async fn leases(&self) -> Result<api::LeaseList, ClientError> {
        self.get_json(&["v1", "leases"]).await
    }

    /// Takes lock (or leads election) `name` for `lease`, publishing `value`; the answer holds
    /// the fencing token. Fails with code `held` while another lease holds it.
    pub async fn acquire(&self, name: &str, lease: u64, value: &str) -> Result<api::LockInfo, ClientError> {
        let body = api::AcquireRequest { lease, value: value.to_owned() };
        self.send_json(Method::POST, &["v1", "locks", name], &body).await
    }

    /// Gives lock `name` up; `token` must be the holder's.
    pub async fn release(&self, name: &str, token: u64) -> Result<api::LockInfo, ClientError> {
        let mut url = self.url(&["v1", "locks", name])?;
        set_query(&mut url, &api::ReleaseQuery { token });
        let (status, bytes) = self.send(self.http.request(Method::DELETE, url)).await?;
        self.decode(status, &bytes)
    }

    /// Who holds lock (or leads election) `name`.
    pub async fn lock(&self, name: &str) -> Result<api::LockInfo, ClientError> {
        self.get_json(&["v1", "locks", name]).await
    }

    /// Users (authentication, docs/security.md).
    pub async fn users(&self) -> Result<api::UserList, ClientError> {
        self.get_json(&["v1", "users"]).await
    }

    /// Creates a user with `roles`; the answer holds its token, shown only this once.
    pub async fn create_user(&self, name: &str, roles: &[String]) -> Result<api::CreatedToken, ClientError> {
        let body = api::CreateUser { name: name.to_owned(), roles: roles.to_vec() };
        self.send_json(Method::POST, &["v1", "users"], &body).await
    }

    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.send_empty(Method::DELETE, &["v1", "users", name]).await
    }

    /// Another token for `user` (rotation: add the new token, move clients, delete the old).
    pub async fn add_token(&self, user: &str) -> Result<api::CreatedToken, ClientError> {
        self.send_json(Method::POST, &["v1", "users", user, "tokens"], &serde_json::json!({})).await
    }

    pub async fn delete_token(&self, user: &str, token_id: &str) -> Result<(), ClientError> {
        self.send_empty(Method::DELETE, &["v1", "users", user, "tokens", token_id]).await
    }

    pub async fn assign_role(&self, user: &str, role: &str) -> Result<api::UserInfo, ClientError> {
        self.send_json(Method::PUT, &["v1", "users", user, "roles", role], &serde_json::json!({})).await
    }

    pub async fn unassign_role(&self, user: &str, role: &str) -> Result<api::UserInfo, ClientError> {
        self.send_json(Method::DELETE, &["v1", "users", user, "roles", role], &serde_json::json!({})).await
    }

    pub async fn roles(&self) -> Result<api::RoleList, ClientError> {
        self.get_json(&["v1", "roles"]).await
    }

    pub async fn create_role(&self, name: &str) -> Result<api::RoleInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "roles"], &api::CreateRole { name: name.to_owned() }).await
    }

    pub async fn delete_role(&self, name: &str) -> Result<(), ClientError> {
        self.send_empty(Method::DELETE, &["v1", "roles", name]).await
    }

    pub async fn grant(&self, role: &str, grant: &api::GrantInfo) -> Result<api::RoleInfo, ClientError> {
        self.send_json(Method::POST, &["v1", "roles", role, "grants"], grant).await
    }

    pub async fn revoke(&self, role: &str, grant: &api::GrantInfo) -> Result<api::RoleInfo, ClientError> {
        self.send_json(Method::DELETE, &["v1", "roles", role, "grants"], grant).await
    }

    pub async fn auth_status(&self) -> Result<api::AuthStatus, ClientError> {
        self.get_json(&["v1", "auth"]).await
    }

    /// Turns authentication on (refused with `no_admin` unless some user has the admin role).
    pub async fn set_auth(&self, enabled: bool) -> Result<api::AuthStatus, ClientError> {
        let what = if enabled { "enable" } else { "disable" };
        self.send_json(Method::POST, &["v1", "auth", what], &serde_json::json!({})).await
    }

    /// A new causality-token signing key (older tokens verify for two more rotations).
    pub async fn rotate_context_key(&self) -> Result<api::AuthStatus, ClientError> {
        self.send_json(Method::POST, &["v1", "auth", "context-keys"], &serde_json::json!({})).await
    }

    /// A request whose success answer has no body (204).
    async fn send_empty(&self, method: Method, segments: &[&str]) -> Result<(), ClientError> {
        let url = self.url(segments)?;
        let (status, bytes) = self.send(self.http.request(method, url)).await?;
        if status.is_success() {
            return Ok(());
        }
        self.decode::<serde_json::Value>(status, &bytes).map(|_| ())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let url = self.url(segments)?;
        let (status, bytes) = self.send(self.http.request(Method::GET, url)).await?;
        self.decode(status, &bytes)
    }

    async fn send_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(segments)?;
        let (status, bytes) = self.send(self.http.request(method, url).json(body)).await?;
        self.decode(status, &bytes)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        if let Some(bad) = segments.iter().find(|s| !addressable(s)) {
            let message = format!(
                "{bad:?} cannot be used as a table name or key: empty, \".\" and \"..\" \
                 cannot be addressed in a URL path"
            );
            let body = serde_json::json!({"error": {"code": "bad_request", "message": message}});
            return Err(ClientError::Api { status: 400, code: "bad_request".to_owned(), message, body });
        }
        let mut url = self.base.clone();
        // `with_timeout` refused cannot-be-a-base URLs, so this branch is unreachable in
        // practice; it still maps to an error instead of panicking.
        url.path_segments_mut()
            .map_err(|()| ClientError::BadEndpoint(self.endpoint.clone()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends a request and reads the whole answer; any failure before a full answer arrives
    /// is a transport error naming this endpoint.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let transport = |e: reqwest::Error| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            detail: transport_detail(&e),
        };
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let request = match &self.session {
            Some(session) => request.header(SESSION_HEADER, session.token()),
            None => request,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if let Some(session) = &self.session {
            if let Some(token) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
                session.set(token);
            }
        }
        let bytes = response.bytes().await.map_err(transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// Decodes a success body into `T`, or turns an error status into [`ClientError::Api`].
    fn decode<T: DeserializeOwned>(&self, status: StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
        if !status.is_success() {
            return Err(api_error(status, bytes));
        }
        serde_json::from_slice(bytes).map_err(|e| {
            ClientError::Decode(format!(
                "{} answered HTTP {} with a body that is not the expected JSON ({e}): {}",
                self.endpoint,
                status.as_u16(),
                truncate(&String::from_utf8_lossy(bytes), RAW_BODY_CHARS_MAX)
            ))
        })
    }
}

/// The header naming a write; see [`WriteOptions::write_id`].
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The id to send with a write: the caller's, or a fresh one.
fn write_id(opts: &WriteOptions) -> String {
    opts.write_id.clone().unwrap_or_else(new_write_id)
}

/// Adds the query parameters of a write; `delete` carries its context in the query because a
/// DELETE has no body.
fn write_query(url: &mut Url, opts: &WriteOptions, context_in_query: bool) {
    let timeout_ms = opts.timeout_ms.map(|ms| ms.to_string());
    if context_in_query {
        let query = api::DeleteQuery {
            sort_key: opts.sort_key.clone(),
            w: opts.w.clone(),
            context: opts.context.clone(),
            timeout_ms,
            quorum: opts.quorum.clone(),
            write_id: None,
            fence: opts.fence.clone(),
        };
        set_query(url, &query);
    } else {
        let query = api::WriteQuery {
            sort_key: opts.sort_key.clone(),
            w: opts.w.clone(),
            timeout_ms,
            quorum: opts.quorum.clone(),
            write_id: None,
            fence: opts.fence.clone(),
        };
        set_query(url, &query);
    }
}

/// Sets the URL's query string to the form encoding of one of the API's query structs; an
/// empty query leaves no bare `?` behind, so URLs in logs stay clean.
fn set_query<T: Serialize>(url: &mut Url, query: &T) {
    match serde_urlencoded::to_string(query) {
        Ok(q) if !q.is_empty() => url.set_query(Some(&q)),
        // The query structs are flat maps of optional strings, which always encode.
        _ => url.set_query(None),
    }
}

/// Whether a string survives as its own URL path segment. WHATWG URL parsing treats `.`, `..`
/// and their percent-encoded spellings as dot segments and removes them, and an empty segment
/// matches no route.
fn addressable(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    !matches!(lower.as_str(), "" | "." | ".." | "%2e" | "%2e." | ".%2e" | "%2e%2e")
}

/// Turns an error answer into [`ClientError::Api`], keeping the server's code and message when
/// the body is the standard `{"error": {"code", "message"}}` envelope.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let status_u16 = status.as_u16();
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Ok(ErrorBody { error }) = serde_json::from_value::<ErrorBody>(body.clone()) {
            return ClientError::Api { status: status_u16, code: error.code, message: error.message, body };
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = truncate(text.trim(), RAW_BODY_CHARS_MAX);
    ClientError::Api {
        status: status_u16,
        code: "http_error".to_owned(),
        message: format!("HTTP {status_u16}: {text}"),
        body: serde_json::Value::String(text),
    }
}

/// The first `max` characters of `text` (not bytes, so multi-byte characters stay whole).
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A one-line description of a transport failure: what kind it was and the root cause, without
/// the request URL (the error already names the endpoint).
fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the answer"
    } else if e.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    if e.is_timeout() || root.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {root}")
    }
}

/// The error and all its sources joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A request as the canned server saw it.
    #[derive(Debug)]
    struct Seen {
        request_line: String,
        body: String,
    }

    /// Serves exactly one connection on 127.0.0.1 with a canned status and body, and reports
    /// the request it received.
    async fn canned(status: u16, content_type: &str, body: &str) -> (String, tokio::task::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        let handle = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let header_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before sending headers");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            while buf.len() < header_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
            Seen {
                request_line: head.lines().next().unwrap_or_default().to_owned(),
                body: String::from_utf8_lossy(&buf[header_end..header_end + len]).to_string(),
            }
        });
        (format!("http://{addr}"), handle)
    }

    fn client() -> Client {
        Client::new("http://127.0.0.1:7701/").unwrap()
    }

    /// Keys with `/`, `?`, `#`, `%`, spaces and Unicode each stay one encoded path segment.
    #[test]
    fn url_encodes_awkward_keys_as_one_segment() {
        let url = client().url(&["v1", "tables", "t", "items", "a/b?c#d%e f/é"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:7701/v1/tables/t/items/a%2Fb%3Fc%23d%25e%20f%2F%C3%A9");
    }

    /// A path prefix in the endpoint is kept and a trailing slash does not double up.
    #[test]
    fn url_keeps_base_path_prefix() {
        let c = Client::new("http://proxy.local/db/").unwrap();
        assert_eq!(c.endpoint(), "http://proxy.local/db");
        let url = c.url(&["v1", "cluster", "status"]).unwrap();
        assert_eq!(url.as_str(), "http://proxy.local/db/v1/cluster/status");
    }

    /// Keys that URL normalisation would swallow are refused before sending, as bad_request.
    #[test]
    fn url_refuses_dot_and_empty_segments() {
        for key in ["", ".", "..", "%2E", "%2e%2E", ".%2e"] {
            let err = client().url(&["v1", "tables", "t", "items", key]).unwrap_err();
            assert_eq!(err.code(), Some("bad_request"), "key {key:?}");
            assert_eq!(err.status(), Some(400));
        }
        assert!(client().url(&["v1", "tables", "t", "items", "..."]).is_ok());
    }

    /// Write options become form-encoded query parameters and an empty query leaves no `?`.
    #[test]
    fn write_query_encodes_options() {
        let mut url = client().url(&["v1", "tables", "t", "items", "k"]).unwrap();
        let opts = WriteOptions {
            w: Some("all".into()),
            context: Some("ab+/=".into()),
            sort_key: Some("2024 &x".into()),
            timeout_ms: Some(250),
            quorum: Some("sloppy".into()),
            write_id: None,
            fence: None,
        };
        write_query(&mut url, &opts, true);
        assert_eq!(
            url.query(),
            Some("sort_key=2024+%26x&w=all&context=ab%2B%2F%3D&timeout_ms=250&quorum=sloppy")
        );
        let mut url = client().url(&["v1", "tables", "t", "items", "k"]).unwrap();
        write_query(&mut url, &opts, false);
        assert_eq!(url.query(), Some("sort_key=2024+%26x&w=all&timeout_ms=250&quorum=sloppy"));
        let mut url = client().url(&["v1", "tables", "t", "items", "k"]).unwrap();
        write_query(&mut url, &WriteOptions::default(), true);
        assert_eq!(url.as_str(), "http://127.0.0.1:7701/v1/tables/t/items/k");
    }

    /// Only http and https URLs with a host are accepted as endpoints; https only with a CA.
    #[test]
    fn endpoint_validation() {
        let err = Client::new("https://host").unwrap_err();
        assert!(
            matches!(&err, ClientError::Transport { detail, .. } if detail.contains("--ca-cert")),
            "{err:?}"
        );
        for bad in
            ["", "127.0.0.1:7701", "localhost:7701", "ftp://host", "http://", "http://h/?q=1", "mailto:a@b"]
        {
            let err = Client::new(bad).unwrap_err();
            assert!(matches!(err, ClientError::BadEndpoint(_)), "{bad:?} gave {err:?}");
        }
        assert!(Client::new(" http://[::1]:7701 ").is_ok());
        assert!(Client::new("http://node-1.internal:7701").is_ok());
    }

    /// The standard error envelope decodes to Api with the server's code, message and body.
    #[test]
    fn api_error_decodes_envelope() {
        let body = r#"{"error":{"code":"quorum_not_reached","message":"quorum not reached: needed 3 acks, got 2 (n4: timeout)","needed":3,"answered":2,"replicas":[{"node":"n4","outcome":"timeout"}]}}"#;
        let err = api_error(StatusCode::SERVICE_UNAVAILABLE, body.as_bytes());
        assert_eq!(err.to_string(), "quorum not reached: needed 3 acks, got 2 (n4: timeout)");
        match err {
            ClientError::Api { status, code, body, .. } => {
                assert_eq!(status, 503);
                assert_eq!(code, "quorum_not_reached");
                assert_eq!(body["error"]["replicas"][0]["node"], "n4");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A non-JSON error body becomes "HTTP <status>: <first 200 chars>".
    #[test]
    fn api_error_non_json_body() {
        let html = format!("<html>{}</html>", "x".repeat(500));
        let err = api_error(StatusCode::BAD_GATEWAY, html.as_bytes());
        let msg = err.to_string();
        assert!(msg.starts_with("HTTP 502: <html>xxx"), "{msg}");
        assert_eq!(msg.chars().count(), "HTTP 502: ".len() + 200);
        assert_eq!(err.code(), Some("http_error"));
        // JSON without the envelope is treated as opaque text too.
        let err = api_error(StatusCode::INTERNAL_SERVER_ERROR, br#"{"oops":1}"#);
        assert_eq!(err.to_string(), r#"HTTP 500: {"oops":1}"#);
    }

    /// A put sends PUT with the encoded path, the query and a JSON body, and decodes the token.
    #[tokio::test]
    async fn put_round_trip() {
        let (endpoint, seen) = canned(200, "application/json", r#"{"context":"tok1"}"#).await;
        let c = Client::new(&endpoint).unwrap();
        let opts =
            WriteOptions { w: Some("2".into()), context: Some("tok0".into()), ..WriteOptions::default() };
        let resp = c.put("t", "k/1", "v\"1", &opts).await.unwrap();
        assert_eq!(resp, WriteResponse { context: "tok1".into() });
        let seen = seen.await.unwrap();
        assert_eq!(seen.request_line, "PUT /v1/tables/t/items/k%2F1?w=2 HTTP/1.1");
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(body, serde_json::json!({"value": "v\"1", "context": "tok0"}));
    }

    /// A blind put leaves the context out of the body entirely.
    #[tokio::test]
    async fn blind_put_omits_context() {
        let (endpoint, seen) = canned(200, "application/json", r#"{"context":"c"}"#).await;
        let c = Client::new(&endpoint).unwrap();
        c.put("t", "k", "v", &WriteOptions::default()).await.unwrap();
        assert_eq!(seen.await.unwrap().body, r#"{"value":"v"}"#);
    }

    /// A 404 not_found read is Ok with no values and the server's context.
    #[tokio::test]
    async fn get_not_found_is_ok_empty() {
        let body = r#"{"values":[],"context":"ctx","error":{"code":"not_found","message":"no item"}}"#;
        let (endpoint, seen) = canned(404, "application/json", body).await;
        let c = Client::new(&endpoint).unwrap();
        let opts = ReadOptions {
            r: Some("one".into()),
            sort_key: Some("s".into()),
            timeout_ms: None,
            consistency: None,
            read_repair: None,
            quorum: None,
        };
        let resp = c.get("t", "k", &opts).await.unwrap();
        assert_eq!(resp, GetResponse { values: vec![], context: "ctx".into() });
        assert_eq!(seen.await.unwrap().request_line, "GET /v1/tables/t/items/k?sort_key=s&r=one HTTP/1.1");
    }

    /// A 404 for an unknown route stays an error.
    #[tokio::test]
    async fn get_unknown_route_is_error() {
        let body = r#"{"error":{"code":"unknown_route","message":"no route GET /v1/x"}}"#;
        let (endpoint, _seen) = canned(404, "application/json", body).await;
        let err = Client::new(&endpoint).unwrap().get("t", "k", &ReadOptions::default()).await;
        assert_eq!(err.unwrap_err().code(), Some("unknown_route"));
    }

    /// A 409 too_many_siblings on put surfaces as Api with code and status.
    #[tokio::test]
    async fn put_conflict_is_api_error() {
        let body = r#"{"error":{"code":"too_many_siblings","message":"item has 64 siblings"}}"#;
        let (endpoint, _seen) = canned(409, "application/json", body).await;
        let err =
            Client::new(&endpoint).unwrap().put("t", "k", "v", &WriteOptions::default()).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(409), Some("too_many_siblings")));
        assert_eq!(err.to_string(), "item has 64 siblings");
    }

    /// Scan options map to from/to/limit/reverse/cursor/r and the page decodes.
    #[tokio::test]
    async fn scan_round_trip() {
        let body = r#"{"items":[{"sort_key":"a","values":["1"],"context":"c"}],"next":"cur2"}"#;
        let (endpoint, seen) = canned(200, "application/json", body).await;
        let c = Client::new(&endpoint).unwrap();
        let opts = ScanOptions {
            from: Some("a".into()),
            to: Some("z".into()),
            limit: Some(10),
            reverse: true,
            cursor: Some("cur1".into()),
            r: Some("all".into()),
        };
        let page = c.scan("t", "p k", &opts).await.unwrap();
        assert_eq!(page.next.as_deref(), Some("cur2"));
        assert_eq!(page.items[0].sort_key, "a");
        assert_eq!(
            seen.await.unwrap().request_line,
            "GET /v1/tables/t/partitions/p%20k?from=a&to=z&limit=10&reverse=true&cursor=cur1&r=all HTTP/1.1"
        );
    }

    /// Delete carries its context in the query string.
    #[tokio::test]
    async fn delete_sends_context_in_query() {
        let (endpoint, seen) = canned(200, "application/json", r#"{"context":"after"}"#).await;
        let c = Client::new(&endpoint).unwrap();
        let opts = WriteOptions { context: Some("before".into()), ..WriteOptions::default() };
        assert_eq!(c.delete("t", "k", &opts).await.unwrap().context, "after");
        assert_eq!(seen.await.unwrap().request_line, "DELETE /v1/tables/t/items/k?context=before HTTP/1.1");
    }

    /// Cluster status decodes node entries.
    #[tokio::test]
    async fn status_decodes() {
        let body = r#"{"nodes":[{"id":"n1","zone":"z1","address":"http://127.0.0.1:7701","state":"up","ownership":0.21}]}"#;
        let (endpoint, _seen) = canned(200, "application/json", body).await;
        let status = Client::new(&endpoint).unwrap().status().await.unwrap();
        assert_eq!(status.nodes[0].id, "n1");
        assert!((status.nodes[0].ownership - 0.21).abs() < 1e-9);
    }

    /// Typed fault rules go out as the API's JSON and the rules in force come back typed.
    #[tokio::test]
    async fn set_fault_rules_round_trip() {
        let answer = r#"{"block_send_to":["n2"],"block_receive_from":[],"drop_probability":0.0,"delay_ms":5,"delay_jitter_ms":0,"clock_offset_ms":0}"#;
        let (endpoint, seen) = canned(200, "application/json", answer).await;
        let rules = FaultRules {
            block_send_to: ["n2".to_string()].into(),
            delay_ms: 5,
            fail_next_fsync: true,
            ..FaultRules::default()
        };
        let now = Client::new(&endpoint).unwrap().set_fault_rules(&rules).await.unwrap();
        assert_eq!(now, FaultRules { fail_next_fsync: false, ..rules });
        let seen = seen.await.unwrap();
        assert_eq!(seen.request_line, "PUT /v1/admin/faults HTTP/1.1");
        let sent: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(sent["block_send_to"], serde_json::json!(["n2"]));
        assert_eq!(sent["delay_ms"], 5);
    }

    /// An inspect answer decodes, including the error of a replica that did not answer.
    #[tokio::test]
    async fn inspect_decodes_unanswered_replica() {
        let body = r#"{"replicas":[{"node":"n3","zone":"z3","state":"down","values":[],"tombstone":false,"version":"","error":"timed out"}]}"#;
        let (endpoint, seen) = canned(200, "application/json", body).await;
        let view = Client::new(&endpoint).unwrap().inspect("t", "k", Some("s 1")).await.unwrap();
        assert_eq!(view.replicas[0].error.as_deref(), Some("timed out"));
        assert_eq!(
            seen.await.unwrap().request_line,
            "GET /v1/tables/t/items/k/replicas?sort_key=s+1 HTTP/1.1"
        );
    }

    /// A success status with a body that is not the expected JSON is a Decode error.
    #[tokio::test]
    async fn success_with_garbage_is_decode_error() {
        let (endpoint, _seen) = canned(200, "text/plain", "hello").await;
        let err = Client::new(&endpoint).unwrap().status().await.unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
    }

    /// A refused connection is a Transport error that names the endpoint.
    #[tokio::test]
    async fn refused_connection_is_transport_error() {
        // Bind then drop to get a port that is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let err = Client::new(&endpoint).unwrap().status().await.unwrap_err();
        match &err {
            ClientError::Transport { endpoint: e, detail } => {
                assert_eq!(e, &endpoint);
                assert!(detail.starts_with("connection failed"), "{detail}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with(&format!("cannot reach {endpoint}: ")));
    }

    /// The client timeout turns a silent server into a Transport timeout, not a hang.
    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(sock);
        });
        let c = Client::with_timeout(&endpoint, Duration::from_millis(200)).unwrap();
        let err = c.status().await.unwrap_err();
        assert!(err.to_string().ends_with("request timed out"), "{err}");
        hold.abort();
    }
}
