//! The Kafka listener: connections, framing, version negotiation and dispatch.
//!
//! A request is a 4-byte big-endian length and that many bytes: the request header (API key,
//! version, correlation id, client id, and tagged fields in flexible versions) then the body.
//! The answer is framed the same way, its header carrying the correlation id.
//!
//! Answers on one connection go out in request order, and every request but Produce is served
//! alone, after the answers to all earlier requests, as Kafka's broker serves a connection.
//! Produce requests (v3+) are pipelined: up to [`PIPELINED_PRODUCES_MAX`] of one connection
//! run at once, so the next request's batches are stored while the previous one's are being
//! sequenced. Their order still holds where it matters: each request gets a [`Turn`] chained
//! to the previous one, and the log sequences a request's batches only after the previous
//! request's (an idempotent producer's sequences arrive in the order it sent them). As with
//! Kafka and `max.in.flight > 1`, a request that fails does not stop the next one: an
//! idempotent producer's next batch then gets OUT_OF_ORDER_SEQUENCE_NUMBER and is retried in
//! order; a non-idempotent producer may see its retried batch land after a later one.
//! Concurrency otherwise comes from connections (clients open one per broker), which run as
//! separate tasks.
//!
//! We advertise exactly what we implement (see [`APIS`]), with one deliberate exception:
//! Produce is advertised from v0 although v0–v2 are refused with UNSUPPORTED_VERSION, because
//! librdkafka before 2.11.1 stops compressing unless the broker advertises Produce v0 (see
//! `legacy`). The consumer-group APIs (`groups`) are served too; advertising FindCoordinator
//! also matters to librdkafka's compression: it enables LZ4 only for brokers that advertise
//! FindCoordinator v0 (its feature map dates LZ4 by the 0.8.2 group coordinator).
//!
//! Misbehaving clients cannot hurt the node: frame lengths are checked before anything is
//! allocated, array counts are checked against the frame before decoding (see `bounds`),
//! decoding never panics, a request we cannot parse closes its connection, idle connections
//! are closed after [`KafkaConfig::idle_ms_max`], a frame must arrive within
//! [`KafkaConfig::io_ms_max`], and the number of connections is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use crate::api::{self, Ctx};
use crate::broker::{Broker, Turn, TurnWait};
use crate::groups;
use crate::legacy::{self, LegacyProduce};
use crate::request::{self, PrefixError, Request, PRODUCE_VERSION_MIN_SERVED, REQUEST_HEADER_FIXED_BYTES};

/// The APIs and versions we advertise: `(key, min, max)`. Each range lies within what
/// kafka-protocol 0.18 decodes and encodes, except Produce v0–v2 (see the module docs), whose
/// refusal is hand-encoded. CreateTopics starts at v2 and DeleteTopics at v1 because the codec
/// has nothing older; every client since Kafka 2.0 uses newer versions.
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // SASL/PLAIN (the password is the user's API token). Handshake v0 is advertised because
    // librdkafka's feature check wants it, but its legacy exchange (raw SASL bytes after the
    // handshake) is not served: the raw bytes close the connection. Every client since Kafka
    // 1.0 uses v1 and SaslAuthenticate.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The only SASL mechanism served.
const SASL_PLAIN: &str = "PLAIN";

/// A connection's SASL state.
#[derive(Default)]
struct Session {
    /// The mechanism a handshake chose; SaslAuthenticate is refused without one.
    handshake: bool,
    principal: Option<Arc<str>>,
}

/// Produce requests of one connection served at once (librdkafka keeps up to 5 in flight with
/// idempotence, `max.in.flight.requests.per.connection`); more wait in the socket.
const PIPELINED_PRODUCES_MAX: usize = 5;
/// An accept error (e.g. out of file descriptors) pauses accepting this long.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// The advertised `(min, max)` versions of `key`.
pub fn advertised(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|(k, _, _)| *k == key).map(|(_, min, max)| (*min, *max))
}

/// Limits of the listener. The defaults follow Kafka's where Kafka has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Largest request frame; a bigger one closes the connection (Kafka's
    /// `socket.request.max.bytes` is 100 MiB).
    pub request_bytes_max: usize,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub connections_max: usize,
    /// Largest record batch a producer may send (Kafka's `message.max.bytes`, 1 MiB).
    pub batch_bytes_max: usize,
    /// Cap on a fetch's `max_wait_ms` (its long poll).
    pub fetch_wait_ms_max: u64,
    /// A connection without a request for this long is closed (Kafka's
    /// `connections.max.idle.ms`, 10 min).
    pub idle_ms_max: u64,
    /// Longest time to receive the rest of a frame once it began, and to send an answer.
    pub io_ms_max: u64,
    /// The log operation timeout when a request gives none (`timeout_ms` ≤ 0), and for
    /// InitProducerId, whose request has no timeout.
    pub request_timeout_ms_default: u64,
    /// Cap on a request's `timeout_ms`.
    pub request_timeout_ms_max: u64,
    /// How long a Metadata request waits for a topic it auto-creates.
    pub auto_create_timeout_ms: u64,
    /// After shutdown, how long to let connections finish their current request.
    pub shutdown_drain_ms_max: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            request_bytes_max: 64 * 1024 * 1024,
            connections_max: 1024,
            batch_bytes_max: 1024 * 1024,
            fetch_wait_ms_max: 30_000,
            idle_ms_max: 10 * 60 * 1000,
            io_ms_max: 30_000,
            request_timeout_ms_default: 30_000,
            request_timeout_ms_max: 120_000,
            auto_create_timeout_ms: 10_000,
            shutdown_drain_ms_max: 5_000,
        }
    }
}

impl KafkaConfig {
    /// A request's `timeout_ms` as a log operation timeout.
    pub fn timeout_ms(&self, requested: i32) -> u64 {
        match u64::try_from(requested) {
            Ok(ms) if ms > 0 => ms.min(self.request_timeout_ms_max),
            _ => self.request_timeout_ms_default,
        }
    }
}

/// A byte stream a connection can be served on (a TLS session over the accepted socket).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// What turns an accepted connection into the stream the listener speaks on: the TLS
/// handshake of an `SSL` / `SASL_SSL` listener. `None` ends the connection (the hook logs and
/// counts why). It runs in the connection's task, holding its connection slot.
pub type Handshake =
    Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = Option<Box<dyn Stream>>> + Send>> + Send + Sync>;

/// Serves Kafka clients on `listener` until `shutdown` turns true (or its sender is dropped),
/// then lets connections finish their current request for up to
/// [`KafkaConfig::shutdown_drain_ms_max`] and returns.
pub async fn serve<B: Broker>(
    listener: TcpListener,
    broker: Arc<B>,
    config: KafkaConfig,
    shutdown: watch::Receiver<bool>,
) {
    serve_with_handshake(listener, broker, config, None, shutdown).await
}

/// [`serve`] with every connection first passed through `handshake` (TLS), when given.
pub async fn serve_with_handshake<B: Broker>(
    listener: TcpListener,
    broker: Arc<B>,
    config: KafkaConfig,
    handshake: Option<Handshake>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let config = Arc::new(config);
    let mut connections = JoinSet::new();
    let local = listener.local_addr().ok();
    tracing::debug!(addr = ?local, "kafka listener serving");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = config.connections_max, "kafka connection refused: too many connections");
            drop(stream);
            continue;
        };
        let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
        let handshake = handshake.clone();
        connections.spawn(async move {
            let _slot = slot;
            // Answers are written whole; Nagle would only delay them.
            let _ = stream.set_nodelay(true);
            let served = match handshake {
                None => {
                    let (rd, wr) = stream.into_split();
                    connection(rd, wr, peer, broker, config, shutdown).await
                }
                Some(handshake) => match handshake(stream).await {
                    Some(stream) => {
                        let (rd, wr) = tokio::io::split(stream);
                        connection(rd, wr, peer, broker, config, shutdown).await
                    }
                    None => Ok(()),
                },
            };
            match served {
                Ok(()) => tracing::trace!(%peer, "kafka connection closed"),
                Err(Close::Quiet(why)) => tracing::debug!(%peer, %why, "kafka connection closed"),
                Err(Close::Loud(why)) => tracing::warn!(%peer, %why, "kafka connection closed"),
            }
        });
    }
    drop(listener);
    let drain = tokio::time::timeout(Duration::from_millis(config.shutdown_drain_ms_max), async {
        while connections.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        tracing::info!(left = connections.len(), "kafka listener stopping: closing connections still busy");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    tracing::debug!(addr = ?local, "kafka listener stopped");
}

/// Why a connection was closed: `Quiet` for the ordinary (peer gone, idle, garbage from a
/// port scanner: logged at debug), `Loud` for what an operator should see (warn).
#[derive(Debug)]
enum Close {
    Quiet(String),
    Loud(String),
}

/// What one request frame gives.
enum Reply {
    Frame(BytesMut),
    /// Nothing to send (Produce with acks=0).
    Nothing,
    /// Close the connection (the request cannot be answered in its format).
    Close(Close),
}

/// What the answer writer of a connection takes, in request order.
enum Outgoing {
    /// The answer to the next request, once its handler has it.
    Answer(oneshot::Receiver<Reply>),
    /// Signalled once every earlier answer is written.
    Barrier(oneshot::Sender<()>),
}

async fn connection<B: Broker, R: AsyncRead + Unpin + Send, W: AsyncWrite + Unpin + Send + 'static>(
    mut rd: R,
    wr: W,
    peer: SocketAddr,
    broker: Arc<B>,
    config: Arc<KafkaConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Close> {
    let io = Duration::from_millis(config.io_ms_max);
    // The writer holds at most this many answers it waits for, so a connection never has more
    // than that many produce requests in flight (the sends below wait for room).
    let (out, answers) = mpsc::channel(PIPELINED_PRODUCES_MAX);
    let mut writer = AbortOnDrop(tokio::spawn(write_answers(wr, answers, io)));
    // Pipelined produce requests run as tasks of the connection, aborted with it.
    let mut tasks = JoinSet::new();
    let mut last_turn: Option<TurnWait> = None;
    let mut session = Session::default();
    loop {
        while tasks.try_join_next().is_some() {}
        let frame = tokio::select! {
            r = read_frame(&mut rd, &config) => match r? {
                Some(frame) => frame,
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
            w = &mut writer.0 => return w.unwrap_or_else(|e| Err(Close::Loud(format!("the answer writer failed: {e}")))),
        };
        let (answer, answered) = oneshot::channel();
        if pipelined(&frame) {
            let (turn, next) = Turn::after(last_turn.take());
            last_turn = Some(next);
            let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
            let principal = session.principal.clone();
            tasks.spawn(async move {
                let cx = Ctx { broker: &*broker, config: &config, shutdown, principal };
                let _ = answer.send(handle(&cx, peer, frame, turn, None).await);
            });
        } else {
            // Anything else is served alone, after every earlier answer went out, as Kafka's
            // broker serves all requests: what a client sends after a produce sees its effect.
            if last_turn.take().is_some() {
                let (done, written) = oneshot::channel();
                if out.send(Outgoing::Barrier(done)).await.is_err() || written.await.is_err() {
                    break;
                }
            }
            let principal = session.principal.clone();
            let cx = Ctx { broker: &*broker, config: &config, shutdown: shutdown.clone(), principal };
            let _ = answer.send(handle(&cx, peer, frame, Turn::alone(), Some(&mut session)).await);
        }
        if out.send(Outgoing::Answer(answered)).await.is_err() {
            break;
        }
    }
    // Let the writer send what is still owed (bounded by the request timeouts and io_ms_max;
    // a shutdown's drain aborts it), then report how the connection ended.
    drop(out);
    match (&mut writer.0).await {
        Ok(r) => r,
        Err(e) => Err(Close::Loud(format!("the answer writer failed: {e}"))),
    }
}

/// Splits a SASL/PLAIN message, `[authzid] NUL authcid NUL passwd` (RFC 4616). An authzid
/// naming someone else is refused: nobody may act as another user.
fn plain(bytes: &[u8]) -> Result<(&str, &str), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the PLAIN message is not UTF-8".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the PLAIN message is not authzid NUL user NUL password".into());
    };
    if !authzid.is_empty() && authzid != user {
        return Err(format!("{user:?} may not act as {authzid:?}"));
    }
    Ok((user, password))
}

/// Aborts a task when dropped (a connection's writer, with the connection).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a request frame is a Produce we serve pipelined (v3 and later; v0–v2 are refused
/// by hand and answered alone).
fn pipelined(frame: &[u8]) -> bool {
    matches!(frame.first_chunk::<4>(), Some(&[k0, k1, v0, v1])
        if i16::from_be_bytes([k0, k1]) == ApiKey::Produce as i16
            && i16::from_be_bytes([v0, v1]) >= PRODUCE_VERSION_MIN_SERVED)
}

/// Writes a connection's answers in request order; ends at the first answer that closes the
/// connection or cannot be written, or when the connection has nothing more to answer.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut answers: mpsc::Receiver<Outgoing>,
    io: Duration,
) -> Result<(), Close> {
    while let Some(next) = answers.recv().await {
        let answer = match next {
            Outgoing::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            Outgoing::Answer(answer) => answer,
        };
        let out = match answer.await {
            Ok(Reply::Frame(out)) => out,
            Ok(Reply::Nothing) => continue,
            Ok(Reply::Close(why)) => return Err(why),
            Err(_) => return Err(Close::Loud("a request was dropped without an answer".into())),
        };
        match tokio::time::timeout(io, wr.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Close::Quiet(format!("write failed: {e}"))),
            Err(_) => {
                return Err(Close::Quiet(format!("the answer was not taken within {} ms", io.as_millis())))
            }
        }
    }
    Ok(())
}

/// Reads the next request frame (without its length): `None` when the client closed.
async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R, config: &KafkaConfig) -> Result<Option<Bytes>, Close> {
    let idle = Duration::from_millis(config.idle_ms_max);
    let io = Duration::from_millis(config.io_ms_max);
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(Close::Quiet(format!("read failed: {e}"))),
        Err(_) => return Err(Close::Quiet(format!("idle for {} ms", config.idle_ms_max))),
    }
    let n = i32::from_be_bytes(len);
    let n = match usize::try_from(n) {
        Ok(n) if n > config.request_bytes_max => {
            let hint = if &len == b"GET " || &len == b"POST" || &len == b"PUT " {
                " (an HTTP request on the Kafka port?)"
            } else if len[0] == 0x16 && len[1] == 0x03 {
                " (a TLS handshake? the Kafka listener speaks plaintext)"
            } else {
                ""
            };
            return Err(Close::Loud(format!(
                "request frame of {n} bytes exceeds request_bytes_max {}{hint}",
                config.request_bytes_max
            )));
        }
        Ok(n) if n >= REQUEST_HEADER_FIXED_BYTES => n,
        _ => return Err(Close::Quiet(format!("request frame length {n}"))),
    };
    let mut frame = vec![0u8; n];
    match tokio::time::timeout(io, rd.read_exact(&mut frame)).await {
        Ok(Ok(_)) => Ok(Some(Bytes::from(frame))),
        Ok(Err(e)) => Err(Close::Quiet(format!("read failed inside a frame: {e}"))),
        Err(_) => {
            Err(Close::Quiet(format!("a frame of {n} bytes did not arrive within {} ms", config.io_ms_max)))
        }
    }
}

/// Serves one request frame (header and body, without the length). `session` is the
/// connection's SASL state, for requests served alone (pipelined produces get none).
async fn handle<B: Broker>(
    cx: &Ctx<'_, B>,
    peer: SocketAddr,
    frame: Bytes,
    turn: Turn,
    session: Option<&mut Session>,
) -> Reply {
    let p = match request::prefix(&frame) {
        Ok(p) => p,
        Err(PrefixError::Short(n)) => {
            return Reply::Close(Close::Quiet(format!("a request frame of {n} bytes")))
        }
        Err(PrefixError::Unserved(name)) => {
            // Kafka closes the connection too: the request's format (and so its answer's) is
            // unknown. Clients that read our ApiVersions never send these.
            tracing::info!(%peer, api = %name, "kafka request for an API we do not serve: closing the connection");
            return Reply::Close(Close::Quiet(format!("{name} is not served")));
        }
        Err(PrefixError::Version { key: ApiKey::ApiVersions, correlation, .. }) => {
            // KIP-511: an ApiVersions we do not speak gets UNSUPPORTED_VERSION and our list,
            // in v0 (whose header only needs the correlation id), so the client can retry
            // with a version we list.
            let r = api::api_versions(ResponseError::UnsupportedVersion.code());
            return reply(correlation, ApiKey::ApiVersions, 0, &r);
        }
        Err(PrefixError::Version { key, version, .. }) => {
            tracing::info!(%peer, api = ?key, version, "kafka request of a version we do not advertise: closing the connection");
            return Reply::Close(Close::Quiet(format!("{key:?} v{version} is not served")));
        }
    };
    let (key, version) = (p.key, p.version);
    let sasl = matches!(key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if !sasl && cx.principal.is_none() && cx.broker.authentication_required() {
        // Kafka closes the connection too: a client must authenticate first. This is checked
        // before the body is decoded, so an unauthenticated client's bytes meet only the
        // fixed header.
        return Reply::Close(Close::Loud(format!(
            "authentication is on: {key:?} from {peer} before SASL authentication (use SASL_PLAINTEXT with mechanism PLAIN, the user name and its API token as the password)"
        )));
    }
    let (header, request) = match request::decode(p, frame) {
        Ok(decoded) => decoded,
        Err(why) => return malformed(peer, key, version, why),
    };
    let c = header.correlation_id;
    match request {
        Request::ApiVersions => reply(c, key, version, &api::api_versions(0)),
        Request::LegacyProduce(req) => legacy_produce_reply(peer, c, version, &req),
        Request::SaslHandshake(req) => {
            let Some(session) = session else {
                return Reply::Close(Close::Quiet("SASL in a pipeline".into()));
            };
            let mut r = SaslHandshakeResponse::default();
            r.mechanisms = vec![StrBytes::from_static_str(SASL_PLAIN)];
            if req.mechanism.as_str() == SASL_PLAIN {
                session.handshake = true;
            } else {
                r.error_code = ResponseError::UnsupportedSaslMechanism.code();
            }
            reply(c, key, version, &r)
        }
        Request::SaslAuthenticate(req) => {
            let Some(session) = session else {
                return Reply::Close(Close::Quiet("SASL in a pipeline".into()));
            };
            let mut r = SaslAuthenticateResponse::default();
            if !session.handshake || session.principal.is_some() {
                r.error_code = ResponseError::IllegalSaslState.code();
                r.error_message =
                    Some(StrBytes::from_static_str("SaslAuthenticate needs a SaslHandshake first, once"));
                return reply(c, key, version, &r);
            }
            match plain(&req.auth_bytes)
                .and_then(|(user, password)| cx.broker.authenticate_plain(user, password))
            {
                Ok(principal) => {
                    tracing::debug!(%peer, %principal, "kafka client authenticated");
                    session.principal = Some(Arc::from(principal.as_str()));
                }
                Err(why) => {
                    tracing::info!(%peer, %why, "kafka SASL authentication failed");
                    r.error_code = ResponseError::SaslAuthenticationFailed.code();
                    r.error_message = Some(StrBytes::from_string(format!("authentication failed: {why}")));
                }
            }
            reply(c, key, version, &r)
        }
        Request::Metadata(req) => reply(c, key, version, &api::metadata(cx, version, req).await),
        Request::CreateTopics(req) => reply(c, key, version, &api::create_topics(cx, version, req).await),
        Request::DeleteTopics(req) => reply(c, key, version, &api::delete_topics(cx, version, req).await),
        Request::Produce(req) => {
            let acks = req.acks;
            let produced = api::produce(cx, version, *req, turn).await;
            if acks != 0 {
                return reply(c, key, version, &produced.response);
            }
            if produced.failed {
                // acks=0 gets no answer; Kafka closes the connection on a failure so the
                // producer notices (and refreshes its metadata).
                return Reply::Close(Close::Quiet("acks=0 produce failed".into()));
            }
            Reply::Nothing
        }
        Request::Fetch(req) => reply(c, key, version, &api::fetch(cx, version, *req).await),
        Request::ListOffsets(req) => reply(c, key, version, &api::list_offsets(cx, req).await),
        Request::InitProducerId(req) => reply(c, key, version, &api::init_producer_id(cx, req).await),
        Request::FindCoordinator(req) => reply(c, key, version, &groups::find_coordinator(cx, version, req)),
        Request::JoinGroup(req) => {
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            // Kafka reports the client host as "/address".
            let host = format!("/{}", peer.ip());
            reply(c, key, version, &groups::join_group(cx, version, req, client_id, &host).await)
        }
        Request::SyncGroup(req) => reply(c, key, version, &groups::sync_group(cx, version, req).await),
        Request::Heartbeat(req) => reply(c, key, version, &groups::heartbeat(cx, req).await),
        Request::LeaveGroup(req) => reply(c, key, version, &groups::leave_group(cx, version, req).await),
        Request::OffsetCommit(req) => reply(c, key, version, &groups::offset_commit(cx, version, *req).await),
        Request::OffsetFetch(req) => reply(c, key, version, &groups::offset_fetch(cx, version, req).await),
        Request::ListGroups(req) => reply(c, key, version, &groups::list_groups(cx, version, req)),
        Request::DescribeGroups(req) => reply(c, key, version, &groups::describe_groups(cx, version, req)),
        Request::DeleteGroups(req) => reply(c, key, version, &groups::delete_groups(cx, req).await),
    }
}

fn malformed(peer: SocketAddr, key: ApiKey, version: i16, why: String) -> Reply {
    tracing::debug!(%peer, api = ?key, version, %why, "kafka request malformed: closing the connection");
    Reply::Close(Close::Quiet(format!("malformed {key:?} v{version} request: {why}")))
}

fn legacy_produce_reply(peer: SocketAddr, correlation: i32, version: i16, req: &LegacyProduce) -> Reply {
    tracing::info!(%peer, version, "kafka Produce below v3 refused (only v2 record batches are stored)");
    if req.acks == 0 {
        return Reply::Close(Close::Quiet(format!("Produce v{version} with acks=0 refused")));
    }
    match legacy::encode_produce_error(req, version, ResponseError::UnsupportedVersion.code()) {
        Ok(body) => frame(correlation, 0, |out| {
            out.put_slice(&body);
            Ok(())
        }),
        Err(e) => Reply::Close(Close::Loud(format!("encoding a Produce v{version} refusal: {e}"))),
    }
}

/// Frames `body` as the answer to request `correlation`.
fn reply<M: Encodable>(correlation: i32, key: ApiKey, version: i16, body: &M) -> Reply {
    frame(correlation, key.response_header_version(version), |out| {
        body.encode(out, version).map_err(|e| format!("encoding {key:?} v{version}: {e}"))
    })
}

fn frame(
    correlation: i32,
    header_version: i16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Reply {
    let mut out = BytesMut::with_capacity(256);
    out.put_u32(0); // the length, set below
    let header = ResponseHeader::default().with_correlation_id(correlation);
    let encoded = header
        .encode(&mut out, header_version)
        .map_err(|e| format!("encoding a response header: {e}"))
        .and_then(|()| body(&mut out));
    if let Err(e) = encoded {
        // A bug of ours (a field set that the version lacks): say so, and close rather than
        // send a broken frame.
        return Reply::Close(Close::Loud(e));
    }
    let Ok(len) = u32::try_from(out.len() - 4) else {
        return Reply::Close(Close::Loud(format!("a response of {} bytes does not fit a frame", out.len())));
    };
    out[..4].copy_from_slice(&len.to_be_bytes());
    Reply::Frame(out)
}
