//! Node-to-node transport: one persistent, multiplexed TCP connection from each node to each
//! peer, carrying length-prefixed postcard frames with request ids.
//!
//! ```text
//!  caller ──request()──► PeerClient ──(permit: peer_inflight_max)──► Conn.tx ─► writer task ─► TCP
//!     ▲                       │ pending[id] = oneshot                                   │
//!     └──── response ◄────────┴──────────────── reader task ◄─────────────────────────┘
//! ```
//!
//! Every frame sent or received passes [`FaultLayer::on_send`]/[`FaultLayer::on_receive`], the one
//! place where the lab's nemesis drops, delays or cuts messages per peer and direction.
//! Each node dials its peers for its own requests, so a pair of nodes uses two connections,
//! one per direction of requests; responses travel back on the connection of their request.
//!
//! With `[tls]` configured, every connection is mutual TLS (see [`crate::tls`]): the dialer
//! presents its node certificate and checks the listener's, the listener refuses any dialer
//! without a node certificate of the cluster CA before reading its `Hello`.

use crate::tls::{Listener, Tls, NODE_IDENTITY};
use crate::wire::{
    self, Frame, Hello, Request, Response, ERROR_CODE_TOO_LARGE, FRAME_BYTES_MAX, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long a connection attempt may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Frames queued for one connection's writer before senders wait (backpressure to callers).
pub const WRITE_QUEUE_LEN_MAX: usize = 4_096;
/// Read buffer per connection; a few typical frames, so one syscall reads several.
const READ_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    #[error("timeout")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("connection lost")]
    Disconnected,
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Refused before sending: the peer would drop the connection (and every request in flight
    /// on it) on a frame this large.
    #[error("message of {bytes} bytes exceeds the peer frame limit of {bytes_max} bytes")]
    TooLarge { bytes: usize, bytes_max: usize },
}

// ---------------------------------------------------------------------------------------------
// Fault layer

/// What the fault layer does with one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    Deliver,
    Drop,
    Delay(Duration),
}

/// Nemesis rules; the type is the `/v1/admin/faults` wire type, defined in `quorumdb-api`.
pub use quorumdb_api::FaultRules;

#[derive(Default)]
pub struct FaultLayer {
    rules: RwLock<FaultRules>,
    /// Copy of `rules.clock_offset_ms`, read on every wall-clock access without the lock.
    clock_offset_ms: std::sync::atomic::AtomicI64,
}

impl FaultLayer {
    pub fn set(&self, rules: FaultRules) {
        self.clock_offset_ms.store(rules.clock_offset_ms, Ordering::Release);
        if let Ok(mut r) = self.rules.write() {
            *r = rules;
        }
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Acquire)
    }

    pub fn get(&self) -> FaultRules {
        self.rules.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn on_send(&self, peer: &str) -> FaultAction {
        let Ok(r) = self.rules.read() else { return FaultAction::Deliver };
        if r.block_send_to.contains(peer)
            || (r.drop_probability > 0.0 && rand::random::<f64>() < r.drop_probability)
        {
            return FaultAction::Drop;
        }
        if r.delay_ms > 0 || r.delay_jitter_ms > 0 {
            let jitter = if r.delay_jitter_ms > 0 { rand::random_range(0..=r.delay_jitter_ms) } else { 0 };
            return FaultAction::Delay(Duration::from_millis(r.delay_ms + jitter));
        }
        FaultAction::Deliver
    }

    pub fn on_receive(&self, peer: &str) -> FaultAction {
        let Ok(r) = self.rules.read() else { return FaultAction::Deliver };
        if r.block_receive_from.contains(peer) {
            FaultAction::Drop
        } else {
            FaultAction::Deliver
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
    frame_bytes_max: usize,
) -> std::io::Result<()> {
    let len = u32::try_from(frame.len())
        .ok()
        .filter(|l| (*l as usize) <= frame_bytes_max)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(frame).await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, frame_bytes_max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > frame_bytes_max {
        return Err(std::io::Error::other(format!("frame of {len} bytes exceeds {frame_bytes_max}")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Serializes a wire message. postcard fails only on serializer-level errors (types it cannot
/// represent, a failing writer), never on the plain data our wire types hold, so a failure is
/// a bug in this crate: panic with the reason rather than send an empty frame the peer would
/// reject, dropping the connection and every request on it.
fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("wire messages hold only plain data, which postcard always encodes")
}

/// Writes queued frames, flushing when the queue momentarily empties (batches small frames).
async fn writer_loop<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Vec<u8>>,
    half: W,
    frame_bytes_max: usize,
) {
    let mut w = BufWriter::with_capacity(READ_BUFFER_BYTES, half);
    while let Some(frame) = rx.recv().await {
        if write_frame(&mut w, &frame, frame_bytes_max).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if write_frame(&mut w, &frame, frame_bytes_max).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client side

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    /// Requests awaiting their response, by id. The reader task completes them; when the
    /// connection dies the map is cleared, which drops the senders and fails the waiters.
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    alive: AtomicBool,
}

/// Requests to one peer.
pub struct PeerClient {
    my_id: String,
    peer_id: String,
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Bounds requests in flight to this peer; callers wait for a permit (within their timeout).
    inflight: Semaphore,
    next_id: AtomicU64,
    faults: Arc<FaultLayer>,
    /// Largest frame sent or accepted on this client's connections ([`FRAME_BYTES_MAX`] unless
    /// a test lowers it with [`PeerClient::with_frame_bytes_max`]).
    frame_bytes_max: usize,
    /// Mutual TLS on every connection when the node has `[tls]`.
    tls: Option<Arc<Tls>>,
}

impl PeerClient {
    pub fn new(
        my_id: String,
        peer_id: String,
        addr: String,
        inflight_max: usize,
        faults: Arc<FaultLayer>,
    ) -> Self {
        PeerClient {
            my_id,
            peer_id,
            addr,
            conn: tokio::sync::Mutex::new(None),
            inflight: Semaphore::new(inflight_max),
            next_id: AtomicU64::new(1),
            faults,
            frame_bytes_max: FRAME_BYTES_MAX,
            tls: None,
        }
    }

    /// Dials every connection with mutual TLS (the node's certificate, the cluster CA).
    pub fn with_tls(mut self, tls: Option<Arc<Tls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Replaces the frame limit. Both ends of a connection must use the same limit; only tests
    /// change it, to exercise the limit without allocating 64 MiB.
    pub fn with_frame_bytes_max(mut self, frame_bytes_max: usize) -> Self {
        self.frame_bytes_max = frame_bytes_max;
        self
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let stream =
            tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(&self.addr))
                .await
                .map_err(|_| TransportError::Connect(format!("connect to {} timed out", self.addr)))?
                .map_err(|e| TransportError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let conn = match &self.tls {
            None => {
                let (rd, wr) = stream.into_split();
                self.establish(rd, wr).await?
            }
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(NODE_IDENTITY)
                    .map_err(|e| TransportError::Protocol(e.to_string()))?;
                let stream = tokio::time::timeout(
                    Duration::from_millis(CONNECT_TIMEOUT_MS),
                    tls.peer_connector().connect(name, stream),
                )
                .await
                .map_err(|_| TransportError::Connect("TLS handshake timed out".into()))?
                .map_err(|e| TransportError::Connect(format!("TLS handshake with {}: {e}", self.addr)))?;
                let (rd, wr) = tokio::io::split(stream);
                self.establish(rd, wr).await?
            }
        };
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Exchanges `Hello`s on a fresh connection and starts its writer and reader tasks.
    async fn establish<R, W>(&self, mut rd: R, mut wr: W) -> Result<Arc<Conn>, TransportError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let hello = Hello { protocol_version: PROTOCOL_VERSION, node_id: self.my_id.clone() };
        let frame_bytes_max = self.frame_bytes_max;
        let handshake = async {
            write_frame(&mut wr, &encode(&hello), frame_bytes_max).await?;
            read_frame(&mut rd, frame_bytes_max).await
        };
        let reply = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), handshake)
            .await
            .map_err(|_| TransportError::Connect("handshake timed out".into()))?
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let reply: Hello = wire::decode(&reply).map_err(|e| TransportError::Protocol(e.to_string()))?;
        if reply.protocol_version != PROTOCOL_VERSION {
            return Err(TransportError::Protocol(format!(
                "peer speaks protocol {}, we speak {PROTOCOL_VERSION}",
                reply.protocol_version
            )));
        }
        // Buffered reads turn the two read calls per frame (length, body) into about one
        // syscall per batch of frames.
        let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_LEN_MAX);
        let conn = Arc::new(Conn { tx, pending: Mutex::new(HashMap::new()), alive: AtomicBool::new(true) });
        tokio::spawn(writer_loop(rx, wr, frame_bytes_max));
        {
            let conn = conn.clone();
            let faults = self.faults.clone();
            let peer = self.peer_id.clone();
            tokio::spawn(async move {
                while let Ok(buf) = read_frame(&mut rd, frame_bytes_max).await {
                    let Ok(Frame::Response { id, body }) = wire::decode::<Frame>(&buf) else { break };
                    if faults.on_receive(&peer) == FaultAction::Drop {
                        continue;
                    }
                    let waiter = conn.pending.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(body);
                    }
                }
                conn.alive.store(false, Ordering::Release);
                if let Ok(mut p) = conn.pending.lock() {
                    p.clear();
                }
            });
        }
        Ok(conn)
    }

    /// Sends one request and waits for its response, all within `timeout`.
    pub async fn request(&self, body: Request, timeout: Duration) -> Result<Response, TransportError> {
        tokio::time::timeout(timeout, self.request_inner(body)).await.map_err(|_| TransportError::Timeout)?
    }

    async fn request_inner(&self, body: Request) -> Result<Response, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(&Frame::Request { id, body });
        // The peer drops a connection on an oversized frame (it cannot tell a huge message from
        // a garbage length), which would fail every request in flight on it: refuse this one.
        if frame.len() > self.frame_bytes_max {
            return Err(TransportError::TooLarge { bytes: frame.len(), bytes_max: self.frame_bytes_max });
        }
        let _permit = self.inflight.acquire().await.map_err(|_| TransportError::Disconnected)?;
        match self.faults.on_send(&self.peer_id) {
            // A dropped message looks to the sender exactly like a lost one: no answer, ever.
            FaultAction::Drop => std::future::pending::<()>().await,
            FaultAction::Delay(d) => tokio::time::sleep(d).await,
            FaultAction::Deliver => {}
        }
        let conn = self.connection().await?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = conn.pending.lock() {
            p.insert(id, tx);
        }
        // Remove our entry however this future ends (response, timeout, cancellation).
        struct Cleanup<'a>(&'a Conn, u64);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                if let Ok(mut p) = self.0.pending.lock() {
                    p.remove(&self.1);
                }
            }
        }
        let _cleanup = Cleanup(&conn, id);
        conn.tx.send(frame).await.map_err(|_| TransportError::Disconnected)?;
        rx.await.map_err(|_| TransportError::Disconnected)
    }
}

// ---------------------------------------------------------------------------------------------
// Server side

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Handles one inbound request from the named peer.
pub type Handler = Arc<dyn Fn(String, Request) -> BoxFuture<Response> + Send + Sync>;

/// Accepts peer connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    my_id: String,
    handler: Handler,
    inflight_max: usize,
    faults: Arc<FaultLayer>,
    tls: Option<Arc<Tls>>,
) {
    serve_with_frame_bytes_max(listener, my_id, handler, inflight_max, faults, tls, FRAME_BYTES_MAX).await
}

/// [`serve`] with another frame limit than [`FRAME_BYTES_MAX`]; for tests, which exercise the
/// limit without allocating 64 MiB. Clients must use the same limit.
pub async fn serve_with_frame_bytes_max(
    listener: TcpListener,
    my_id: String,
    handler: Handler,
    inflight_max: usize,
    faults: Arc<FaultLayer>,
    tls: Option<Arc<Tls>>,
    frame_bytes_max: usize,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let my_id = my_id.clone();
        let faults = faults.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let ended = match tls {
                None => {
                    let (rd, wr) = stream.into_split();
                    serve_conn(rd, wr, my_id, handler, inflight_max, faults, frame_bytes_max).await
                }
                Some(tls) => {
                    // No node certificate of this cluster: refused (and logged) before its Hello.
                    let Some(stream) = crate::tls::accept(&tls, Listener::Peer, stream).await else { return };
                    let (rd, wr) = tokio::io::split(stream);
                    serve_conn(rd, wr, my_id, handler, inflight_max, faults, frame_bytes_max).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "peer connection ended");
            }
        });
    }
}

/// Encodes a response. One that would exceed the frame limit is replaced by a small
/// `too_large` error: the requester would otherwise drop the connection on reading it, failing
/// every other request in flight there too.
fn response_frame(id: u64, body: Response, frame_bytes_max: usize, peer: &str) -> Vec<u8> {
    let frame = encode(&Frame::Response { id, body });
    if frame.len() <= frame_bytes_max {
        return frame;
    }
    let message =
        format!("response of {} bytes exceeds the peer frame limit of {frame_bytes_max} bytes", frame.len());
    tracing::warn!(peer, "{message}");
    encode(&Frame::Response { id, body: Response::Error { code: ERROR_CODE_TOO_LARGE.into(), message } })
}

async fn serve_conn<R, W>(
    mut rd: R,
    mut wr: W,
    my_id: String,
    handler: Handler,
    inflight_max: usize,
    faults: Arc<FaultLayer>,
    frame_bytes_max: usize,
) -> Result<(), TransportError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let hello =
        tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), read_frame(&mut rd, frame_bytes_max))
            .await
            .map_err(|_| TransportError::Timeout)?
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
    let hello: Hello = wire::decode(&hello).map_err(|e| TransportError::Protocol(e.to_string()))?;
    let mine = Hello { protocol_version: PROTOCOL_VERSION, node_id: my_id };
    write_frame(&mut wr, &encode(&mine), frame_bytes_max)
        .await
        .map_err(|e| TransportError::Protocol(e.to_string()))?;
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(TransportError::Protocol(format!("peer speaks protocol {}", hello.protocol_version)));
    }
    let peer = hello.node_id;
    let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_LEN_MAX);
    tokio::spawn(writer_loop(rx, wr, frame_bytes_max));
    // Acquiring before spawning means a peer that floods us stops being read (TCP backpressure).
    let inflight = Arc::new(Semaphore::new(inflight_max));
    loop {
        let buf = read_frame(&mut rd, frame_bytes_max).await.map_err(|_| TransportError::Disconnected)?;
        let frame: Frame = wire::decode(&buf).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let Frame::Request { id, body } = frame else {
            return Err(TransportError::Protocol("expected a request".into()));
        };
        if faults.on_receive(&peer) == FaultAction::Drop {
            continue;
        }
        let permit = inflight.clone().acquire_owned().await.map_err(|_| TransportError::Disconnected)?;
        let handler = handler.clone();
        let tx = tx.clone();
        let peer = peer.clone();
        let faults = faults.clone();
        tokio::spawn(async move {
            let response = handler(peer.clone(), body).await;
            drop(permit);
            match faults.on_send(&peer) {
                FaultAction::Drop => return,
                FaultAction::Delay(d) => tokio::time::sleep(d).await,
                FaultAction::Deliver => {}
            }
            let _ = tx.send(response_frame(id, response, frame_bytes_max, &peer)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireKey;

    /// A small frame limit, so the tests exceed it without allocating 64 MiB.
    const LIMIT_BYTES: usize = 4 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(3);

    fn key(table: &str) -> WireKey {
        WireKey { table: table.into(), partition: b"p".to_vec(), sort: Vec::new() }
    }

    /// Starts a server whose `Read` of table "big" answers with a state over the limit and of
    /// table "slow" answers after 300 ms (so it is in flight while the other request fails).
    async fn start() -> PeerClient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler: Handler = Arc::new(|_from, req| {
            Box::pin(async move {
                match req {
                    Request::Read { key } if key.table == "big" => {
                        Response::Item { state: vec![7; 2 * LIMIT_BYTES] }
                    }
                    Request::Read { key } if key.table == "slow" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Response::Item { state: vec![1; 16] }
                    }
                    _ => Response::Pong,
                }
            })
        });
        let faults = Arc::new(FaultLayer::default());
        tokio::spawn(serve_with_frame_bytes_max(
            listener,
            "server".into(),
            handler,
            16,
            faults.clone(),
            None,
            LIMIT_BYTES,
        ));
        PeerClient::new("client".into(), "server".into(), addr, 16, faults).with_frame_bytes_max(LIMIT_BYTES)
    }

    async fn connection_now(c: &PeerClient) -> Arc<Conn> {
        c.conn.lock().await.clone().expect("connected")
    }

    fn is_small_item(r: &Result<Response, TransportError>) -> bool {
        matches!(r, Ok(Response::Item { state }) if state.len() == 16)
    }

    /// Proves a response over the frame limit becomes a small `too_large` error for its request alone: a concurrent request and a later one succeed on the same connection.
    #[tokio::test]
    async fn oversized_response_fails_alone() {
        let client = start().await;
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
        let before = connection_now(&client).await;
        let (slow, big) = tokio::join!(
            client.request(Request::Read { key: key("slow") }, TIMEOUT),
            client.request(Request::Read { key: key("big") }, TIMEOUT),
        );
        match &big {
            Ok(Response::Error { code, message }) => {
                assert_eq!(code, "too_large");
                assert!(
                    message.contains(&format!("exceeds the peer frame limit of {LIMIT_BYTES} bytes")),
                    "{message}"
                );
            }
            other => panic!("expected a too_large error response, got {other:?}"),
        }
        assert!(is_small_item(&slow), "the concurrent request must survive: {slow:?}");
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
        assert!(Arc::ptr_eq(&before, &connection_now(&client).await), "the connection must not be replaced");
    }

    /// Proves `block_send_to` on the receiving node is a one-way cut: a request from the blocked
    /// peer is still handled there, but its answer never leaves, so the sender times out.
    #[tokio::test]
    async fn blocked_send_side_handles_requests_but_never_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handled = Arc::new(AtomicU64::new(0));
        let counter = handled.clone();
        let handler: Handler = Arc::new(move |_from, _req| {
            let counter = counter.clone();
            Box::pin(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Response::Pong
            })
        });
        // Separate layers for the two nodes: only the server stops sending to "client".
        let server_faults = Arc::new(FaultLayer::default());
        tokio::spawn(serve(listener, "server".into(), handler, 16, server_faults.clone(), None));
        let client = PeerClient::new("client".into(), "server".into(), addr, 16, Arc::default());
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
        server_faults
            .set(FaultRules { block_send_to: ["client".to_string()].into(), ..FaultRules::default() });
        let answer = client.request(Request::Ping, Duration::from_millis(300)).await;
        assert!(matches!(answer, Err(TransportError::Timeout)), "{answer:?}");
        assert_eq!(handled.load(Ordering::SeqCst), 2, "the cut-off node must still handle the request");
        server_faults.set(FaultRules::default());
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
    }

    /// Proves a request over the frame limit is refused at once with a clear error and is not sent: a concurrent request and a later one succeed on the same connection.
    #[tokio::test]
    async fn oversized_request_is_refused_without_dropping_the_connection() {
        let client = start().await;
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
        let before = connection_now(&client).await;
        let huge = Request::Replicate { key: key("t"), state: vec![0; 2 * LIMIT_BYTES] };
        let (slow, big) = tokio::join!(
            client.request(Request::Read { key: key("slow") }, TIMEOUT),
            client.request(huge, TIMEOUT)
        );
        match &big {
            Err(e @ TransportError::TooLarge { bytes, bytes_max }) => {
                assert!(*bytes > LIMIT_BYTES && *bytes_max == LIMIT_BYTES, "{e}");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("exceeds the peer frame limit of {LIMIT_BYTES} bytes")),
                    "{text}"
                );
            }
            other => panic!("expected TransportError::TooLarge, got {other:?}"),
        }
        assert!(is_small_item(&slow), "the concurrent request must survive: {slow:?}");
        assert!(matches!(client.request(Request::Ping, TIMEOUT).await, Ok(Response::Pong)));
        assert!(Arc::ptr_eq(&before, &connection_now(&client).await), "the connection must not be replaced");
    }
}
