//! # quorumdb-node
//!
//! The server shell around `quorumdb-core`: fjall storage with group-committed fsync
//! ([`storage`]), the multiplexed peer transport with its fault layer ([`transport`], [`wire`]),
//! the driver that runs the core replica machines ([`node`]) and the HTTP API ([`http`]).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod context_token;
pub mod error;
pub mod groups;
pub mod http;
pub mod http_auth;
mod http_crdt;
mod http_groups;
pub mod http_guard;
mod http_sinks;
mod http_topics;
pub mod join;
pub mod layout;
pub mod log;
pub mod meta;
pub mod node;
pub mod session_token;
pub mod sink;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod wire;

use config::NodeConfig;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("{0}")]
    Storage(#[from] storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// Latency buckets in seconds: 100 µs to 10 s, roughly ×2.5 per step.
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Result<PrometheusHandle, NodeError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("quorumdb_fsync_batch_writes".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
        })
        .map_err(|e| NodeError::Setup(e.to_string()))?
        .install_recorder()
        .map_err(|e| NodeError::Setup(format!("cannot install metrics recorder: {e}")))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Runs one node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let metrics = metrics_handle()?;
    let config = join::startup_config(config).map_err(NodeError::Setup)?;
    // fjall calls block; run them off the async workers.
    let storage = {
        let (dir, durability) = (config.data_dir.clone(), config.durability);
        tokio::task::spawn_blocking(move || {
            storage::allow_fjall_on_this_thread();
            storage::Storage::open(&dir, durability)
        })
        .await
        .map_err(|e| NodeError::Setup(format!("storage open task failed: {e}")))??
    };
    let peer_listener = tokio::net::TcpListener::bind(&config.peer_listen)
        .await
        .map_err(|source| NodeError::Bind { addr: config.peer_listen.clone(), source })?;
    let http_listener = tokio::net::TcpListener::bind(&config.http_listen)
        .await
        .map_err(|source| NodeError::Bind { addr: config.http_listen.clone(), source })?;
    // Certificates are read before anything listens: a node configured for TLS never serves
    // without it.
    let tls = tls::Tls::from_config(&config.tls).map_err(|e| NodeError::Setup(e.to_string()))?;
    if let Some(tls) = &tls {
        tls.spawn_reloader();
    }
    let started = std::time::Instant::now();
    let node = node::Node::start(config, storage, tls.clone()).await.map_err(NodeError::Setup)?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "replica shards open (hints restored, Merkle trees rebuilt)"
    );
    tracing::info!(
        node = node.id(),
        actor = %node.storage.actor(),
        http = %node.config.http_listen,
        peer = %node.config.peer_listen,
        "node starting"
    );
    let meta = meta::Meta::start(node.config.clone(), node.storage.clone(), node.faults.clone(), tls.clone())
        .await
        .map_err(NodeError::Setup)?;
    // The data path follows the committed layout versions from here on.
    layout::spawn(node.clone(), meta.clone());
    // The groups and the sinks start with the Kafka listener, after the peer transport:
    // peers' group and sink requests find them here once they exist.
    let runtime: Arc<OnceLock<(Arc<groups::Groups>, Arc<sink::SinkManager>)>> = Arc::new(OnceLock::new());
    let handler: transport::Handler = {
        let node = node.clone();
        let meta = meta.clone();
        let runtime = runtime.clone();
        Arc::new(move |from, req| {
            let node = node.clone();
            let meta = meta.clone();
            let runtime = runtime.clone();
            Box::pin(async move {
                match req {
                    wire::Request::Raft { message } => match meta.receive(&message) {
                        Ok(()) => wire::Response::Ack,
                        Err(message) => wire::Response::Error { code: "bad_request".into(), message },
                    },
                    wire::Request::Group(request) => match runtime.get() {
                        Some((groups, _)) => wire::Response::Group(groups.request(request).await),
                        None => wire::Response::Error {
                            code: "unavailable".into(),
                            message: "this node runs no consumer groups (no kafka_listen)".into(),
                        },
                    },
                    wire::Request::SinkStatus { name } => {
                        let parts = runtime.get().map(|(_, s)| s.local_status(&name)).unwrap_or_default();
                        wire::Response::SinkStatus { json: serde_json::to_vec(&parts).unwrap_or_default() }
                    }
                    req => node.handle_peer(from, req).await,
                }
            })
        })
    };
    tokio::spawn(transport::serve(
        peer_listener,
        node.id().to_owned(),
        handler,
        node.config.peer_inflight_max,
        node.faults.clone(),
        tls.clone(),
    ));
    {
        // Counters live in the replica shards; publish them as metrics a few times a second.
        let node = node.clone();
        tokio::spawn(async move {
            loop {
                node.publish_metrics();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
    }
    let (stop_kafka, kafka_stopped) = tokio::sync::watch::channel(false);
    let mut log_for_http = None;
    let mut groups_for_http = None;
    let mut sinks_for_http = None;
    if let Some(addr) = node.config.kafka_listen.clone() {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| NodeError::Bind { addr: addr.clone(), source })?;
        let log = log::Log::start(node.clone(), meta.clone());
        let groups = groups::Groups::start(node.clone(), meta.clone());
        tracing::info!(node = node.id(), kafka = %addr, "kafka listener starting");
        log_for_http = Some(log.clone());
        groups_for_http = Some(groups.clone());
        let broker = Arc::new(groups::NodeBroker { log, groups: groups.clone() });
        let sinks = sink::SinkManager::start(node.clone(), meta.clone(), broker.clone());
        let _ = runtime.set((groups, sinks.clone()));
        sinks_for_http = Some(sinks);
        // SSL / SASL_SSL with `[tls]`: the same certificate as the HTTP listener.
        let handshake = tls.clone().map(|tls| -> quorumdb_kafka::Handshake {
            Arc::new(move |stream| {
                let tls = tls.clone();
                Box::pin(async move {
                    let s = tls::accept(&tls, tls::Listener::Kafka, stream).await?;
                    Some(Box::new(s) as Box<dyn quorumdb_kafka::Stream>)
                })
            })
        });
        tokio::spawn(quorumdb_kafka::serve_with_handshake(
            listener,
            broker,
            quorumdb_kafka::KafkaConfig::default(),
            handshake,
            kafka_stopped,
        ));
    }
    let inflight = Arc::new(tokio::sync::Semaphore::new(node.config.http_inflight_max));
    let app = http::router(http::AppState {
        node: node.clone(),
        meta: meta.clone(),
        metrics,
        inflight,
        log: log_for_http,
        groups: groups_for_http,
        sinks: sinks_for_http.clone(),
    });
    node.ready.store(true, Ordering::Release);
    http_guard::serve(http_listener, app, node.config.http.clone(), tls.clone(), shutdown).await;
    tracing::info!(node = node.id(), "node stopping");
    let _ = stop_kafka.send(true);
    if let Some(s) = &sinks_for_http {
        // Members leave their groups, so their partitions move at once, not a session later.
        s.stop().await;
    }
    // Stop the replica shards first: a peer could still ask this node to coordinate a write,
    // and a dot minted after the clean-shutdown mark would not be covered by it.
    node.stop().await;
    meta.stop().await;
    // Make everything durable before exit even in buffered mode, and record the clean stop.
    let storage = node.storage.clone();
    tokio::task::spawn_blocking(move || {
        storage::allow_fjall_on_this_thread();
        storage.close_cleanly()
    })
    .await
    .map_err(|e| NodeError::Setup(format!("storage close task failed: {e}")))??;
    Ok(())
}
