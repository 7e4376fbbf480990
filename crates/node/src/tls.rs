//! TLS on the client HTTP listener, the Kafka listener and between nodes (issue #16), with
//! rustls and its `ring` provider.
//!
//! One [`Tls`] per node holds what `[tls]` in the config names: the node's certificate and key
//! and the cluster CA. From them it builds four rustls configs at once (HTTP, Kafka, the peer
//! listener, the peer client) and swaps all four when a file changes: every new connection
//! takes the configs current at its accept or dial, while open sessions keep theirs.
//!
//! ```text
//!   files (node.crt, node.key, ca.crt) ──load──► Loaded { http, kafka, peer_server, peer_client }
//!        ▲ mtime poll every reload_interval_ms, or SIGHUP            │ RwLock<Arc<Loaded>>
//!        └──────────────── reloader task ───────────────────────────► swapped whole
//! ```
//!
//! **The peer mesh is mutual TLS with a node identity.** Both ends present certificates, both
//! verify them against the cluster CA, and both require the other's to be a *node*
//! certificate: valid for the DNS name [`NODE_IDENTITY`] with the server-auth usage, which
//! `quorumdb certs create-node` puts in every node certificate and `create-client` in none. So
//! a client certificate from the same CA opens the HTTP and Kafka listeners but not the peer
//! port, and a process without a CA-signed node certificate cannot send a `Hello`, a replica
//! write or a Raft message. The peer client checks the server against the fixed name rather
//! than its address, so node certificates need not list every peer address.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpStream;

/// The DNS name every node certificate carries and every peer connection checks, whatever
/// the node's address: "holds a node certificate of this cluster's CA".
pub const NODE_IDENTITY: &str = "quorumdb-node";
/// A TLS handshake on any listener must finish within this long, so a client that opens a
/// connection and sends nothing (or trickles a ClientHello) cannot hold it.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default pause between checks of the certificate files' modification times.
pub const RELOAD_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// The file names inside a certs directory, as `quorumdb certs` writes them.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";

/// `[tls]` in the node config. TLS is off unless `certs_dir` or `cert` is set; then every
/// listener (HTTP, Kafka, peer) speaks TLS only, and the peer mesh is mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A directory with `ca.crt`, `node.crt` and `node.key` (what `quorumdb certs` writes);
    /// `cert`, `key` and `ca` override single files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    /// The node's certificate chain (PEM, the node's certificate first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The node certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The cluster CA's certificate(s) (PEM): what peers' and clients' certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// HTTP and Kafka clients must present a certificate signed by the CA (mutual TLS); by
    /// default one is asked for but optional. Peers always must.
    #[serde(default)]
    pub client_cert_required: bool,
    /// How often the files' modification times are checked for a reload (SIGHUP reloads at
    /// once too).
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certs_dir: None,
            cert: None,
            key: None,
            ca: None,
            client_cert_required: false,
            reload_interval_ms: RELOAD_INTERVAL_MS_DEFAULT,
        }
    }
}

fn default_reload_interval_ms() -> u64 {
    RELOAD_INTERVAL_MS_DEFAULT
}

/// The three files a TLS node reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.certs_dir.is_some() || self.cert.is_some()
    }

    /// The files to read, or why they are not all named; `None` when TLS is off.
    pub fn paths(&self) -> Result<Option<TlsPaths>, String> {
        if !self.enabled() {
            if self.key.is_some() || self.ca.is_some() {
                return Err("tls.key and tls.ca need tls.cert or tls.certs_dir".into());
            }
            return Ok(None);
        }
        let pick = |one: &Option<PathBuf>, file: &str, key: &str| match (one, &self.certs_dir) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(d)) => Ok(d.join(file)),
            (None, None) => Err(format!("tls.{key} is missing (or set tls.certs_dir)")),
        };
        if self.reload_interval_ms == 0 {
            return Err("tls.reload_interval_ms must be at least 1".into());
        }
        Ok(Some(TlsPaths {
            cert: pick(&self.cert, NODE_CERT_FILE, "cert")?,
            key: pick(&self.key, NODE_KEY_FILE, "key")?,
            ca: pick(&self.ca, CA_CERT_FILE, "ca")?,
        }))
    }
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Which listener a session belongs to (metric labels, and which config it takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Http,
    Kafka,
    Peer,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Kafka => "kafka",
            Listener::Peer => "peer",
        }
    }
}

/// The rustls configs built from one reading of the files.
struct Loaded {
    http: Arc<ServerConfig>,
    kafka: Arc<ServerConfig>,
    peer_server: Arc<ServerConfig>,
    peer_client: Arc<ClientConfig>,
}

/// A node's TLS material, reloaded when its files change.
pub struct Tls {
    paths: TlsPaths,
    client_cert_required: bool,
    reload_interval: Duration,
    /// Swapped whole on reload; readers clone the `Arc` and drop the lock at once.
    current: RwLock<Arc<Loaded>>,
    /// Modification times of (cert, key, ca) at the last successful load.
    stamps: std::sync::Mutex<[Option<SystemTime>; 3]>,
    /// Successful loads, the first included: lets tests and the log tell a reload happened.
    generation: AtomicU64,
}

/// The crypto provider of every TLS config: rustls's `ring` backend. rustls 0.23.48 marks it
/// deprecated because it lacks post-quantum key exchange (X25519MLKEM768, aws-lc-rs only); we
/// keep it because aws-lc-rs needs cmake and minutes of C build on every machine, and say so
/// in docs/security.md.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read { path: path.to_owned(), message: e.to_string() })
}

/// Every certificate of a PEM file; at least one.
pub fn certs_from_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let invalid = |message: String| TlsError::Invalid { path: path.to_owned(), message };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no certificate".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn key_from_pem(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::Invalid { path: path.to_owned(), message: format!("no private key: {e}") })
}

/// A root store holding every certificate of a PEM file.
pub fn roots_from_pem(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn setup<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> TlsError + '_ {
    move |e| TlsError::Setup(format!("{what}: {e}"))
}

/// Accepts a peer's client certificate only if it chains to the CA *and* is a node
/// certificate (valid for [`NODE_IDENTITY`] as a server), so client certificates of the same
/// CA cannot join the mesh.
#[derive(Debug)]
struct NodeCertVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    identity: Arc<WebPkiServerVerifier>,
}

impl ClientCertVerifier for NodeCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain.verify_client_cert(end_entity, intermediates, now)?;
        let name = ServerName::try_from(NODE_IDENTITY)
            .map_err(|e| rustls::Error::General(format!("bad node identity: {e}")))?;
        self.identity.verify_server_cert(end_entity, intermediates, &name, &[], now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

fn load(paths: &TlsPaths, client_cert_required: bool) -> Result<Loaded, TlsError> {
    let chain = certs_from_pem(&paths.cert)?;
    let key = key_from_pem(&paths.key)?;
    let roots = roots_from_pem(&paths.ca)?;
    let provider = provider();
    // Refuse a key that does not belong to the certificate here, with the file names, rather
    // than in every handshake.
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
        TlsError::Invalid {
            path: paths.key.clone(),
            message: format!("does not match {}: {e}", paths.cert.display()),
        }
    })?;
    let server = |verifier: Arc<dyn ClientCertVerifier>| -> Result<ServerConfig, TlsError> {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup("protocol versions"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Invalid { path: paths.cert.clone(), message: e.to_string() })
    };
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let clients = if client_cert_required { clients } else { clients.allow_unauthenticated() };
    let clients = clients.build().map_err(setup("client verifier"))?;
    let mut http = server(clients.clone())?;
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    let kafka = server(clients)?;
    let peers = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(setup("peer verifier"))?;
    let identity = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(setup("peer identity verifier"))?;
    let peer_server = server(Arc::new(NodeCertVerifier { chain: peers, identity }))?;
    let peer_client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(setup("protocol versions"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Invalid { path: paths.cert.clone(), message: e.to_string() })?;
    Ok(Loaded {
        http: Arc::new(http),
        kafka: Arc::new(kafka),
        peer_server: Arc::new(peer_server),
        peer_client: Arc::new(peer_client),
    })
}

fn stamps(paths: &TlsPaths) -> [Option<SystemTime>; 3] {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [m(&paths.cert), m(&paths.key), m(&paths.ca)]
}

impl Tls {
    /// Reads the files `config` names; `None` when TLS is off.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        let Some(paths) = config.paths().map_err(TlsError::Setup)? else { return Ok(None) };
        let before = stamps(&paths);
        let loaded = load(&paths, config.client_cert_required)?;
        Ok(Some(Arc::new(Tls {
            paths,
            client_cert_required: config.client_cert_required,
            reload_interval: Duration::from_millis(config.reload_interval_ms),
            current: RwLock::new(Arc::new(loaded)),
            stamps: std::sync::Mutex::new(before),
            generation: AtomicU64::new(1),
        })))
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many times the files were loaded (1 before any reload).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The acceptor for a new connection on `listener`, with the current certificate.
    pub fn acceptor(&self, listener: Listener) -> tokio_rustls::TlsAcceptor {
        let l = self.current();
        let config = match listener {
            Listener::Http => l.http.clone(),
            Listener::Kafka => l.kafka.clone(),
            Listener::Peer => l.peer_server.clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// The connector for a new connection to a peer, with the current certificate.
    pub fn peer_connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.current().peer_client.clone())
    }

    /// Loads the files again and swaps the configs in; on error the old ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let before = stamps(&self.paths);
        let loaded = load(&self.paths, self.client_cert_required)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = before;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::info!(generation, cert = %self.paths.cert.display(), "TLS certificates reloaded");
        Ok(())
    }

    /// Reloads if a file's modification time differs from the last successful load. A failed
    /// load (say the certificate is written and the key not yet) is retried next time.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.paths);
        if *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    fn count_reload(result: &Result<(), TlsError>) {
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("quorumdb_tls_reloads_total", "result" => label).increment(1);
        if let Err(e) = result {
            tracing::warn!(error = %e, "TLS reload failed; the previous certificates stay in use");
        }
    }

    /// Watches the files (every `reload_interval_ms`) and SIGHUP, reloading on a change.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let tls = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = signal(SignalKind::hangup()).ok();
            loop {
                let hup_fired = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(tls.reload_interval) => {
                        match tls.reload_if_changed() {
                            Ok(false) => {}
                            Ok(true) => Tls::count_reload(&Ok(())),
                            Err(e) => Tls::count_reload(&Err(e)),
                        }
                    }
                    true = hup_fired => Tls::count_reload(&tls.reload()),
                }
            }
        });
    }
}

/// The server side of a handshake on `listener`, within [`HANDSHAKE_TIMEOUT_MS`]; a failure
/// (plain text on a TLS port, an unknown or missing client certificate, a timeout) is counted
/// in `quorumdb_tls_handshake_failures_total{listener}` and ends the connection.
pub async fn accept(
    tls: &Tls,
    listener: Listener,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    let handshake = tls.acceptor(listener).accept(stream);
    let error = match tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), handshake).await {
        Ok(Ok(s)) => return Some(s),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT_MS} ms"),
    };
    metrics::counter!("quorumdb_tls_handshake_failures_total", "listener" => listener.label()).increment(1);
    if listener == Listener::Peer {
        // Someone without a node certificate knocked on the peer port: an operator wants to know.
        tracing::warn!(?peer, %error, "peer TLS handshake refused");
    } else {
        tracing::debug!(?peer, listener = listener.label(), %error, "TLS handshake failed");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `[tls]` resolution: off by default; a certs dir names the three files; single
    /// files override it; a key without a cert, and a zero reload interval, are refused.
    #[test]
    fn paths_follow_the_config() {
        assert_eq!(TlsConfig::default().paths(), Ok(None));
        let dir = TlsConfig { certs_dir: Some("/c".into()), ..TlsConfig::default() };
        let p = dir.paths().unwrap().unwrap();
        assert_eq!((p.cert, p.key, p.ca), ("/c/node.crt".into(), "/c/node.key".into(), "/c/ca.crt".into()));
        let one = TlsConfig { cert: Some("/x.pem".into()), ..dir.clone() };
        assert_eq!(one.paths().unwrap().unwrap().cert, PathBuf::from("/x.pem"));
        let lone = TlsConfig { cert: Some("/x.pem".into()), ..TlsConfig::default() };
        assert!(lone.paths().unwrap_err().contains("tls.key"));
        let key_only = TlsConfig { key: Some("/k".into()), ..TlsConfig::default() };
        assert!(key_only.paths().is_err());
        assert!(TlsConfig { reload_interval_ms: 0, ..dir }.paths().is_err());
    }
}
