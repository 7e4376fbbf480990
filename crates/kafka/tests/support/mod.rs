//! Test support shared by the integration tests: an in-memory [`Broker`] (a test double, never
//! used by production code), a way to run `serve` on a local port, and a raw Kafka client
//! built from kafka-protocol's own encoders.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use quorumdb_kafka::{
    check_topic_name, rewrite_base_offset, serve, Append, Appended, BatchHeader, Broker, BrokerInfo,
    ClusterInfo, KafkaConfig, LogError, NewTopic, OffsetQuery, PartitionInfo, Records, TopicInfo, Turn,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a test waits for any one answer before failing.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

pub const NODE_ID: i32 = 1;
pub const CLUSTER_ID: &str = "quorumdb-test";

struct Stored {
    header: BatchHeader,
    bytes: Bytes,
}

struct MemTopic {
    info: TopicInfo,
    logs: Vec<Vec<Stored>>,
}

/// An in-memory log: topics in a map, dense offsets, batches stored with their assigned base
/// offset, `appended` bumped after every produce.
pub struct MemBroker {
    topics: Mutex<BTreeMap<String, MemTopic>>,
    appended: watch::Sender<u64>,
    pub auto_create: AtomicBool,
    port: i32,
    next_producer: AtomicI64,
    next_topic: AtomicI64,
    /// `produce` calls so far, and the appends in the last one.
    pub produce_calls: AtomicUsize,
    pub last_produce_appends: AtomicUsize,
    /// Delays of the next pipelined produces before their turn, as storing their bytes would
    /// take (the node's blob writes); empty: none.
    pub store_delays_ms: Mutex<VecDeque<u64>>,
}

impl MemBroker {
    pub fn new(port: u16) -> MemBroker {
        MemBroker {
            topics: Mutex::new(BTreeMap::new()),
            appended: watch::channel(0).0,
            auto_create: AtomicBool::new(true),
            port: i32::from(port),
            next_producer: AtomicI64::new(1000),
            next_topic: AtomicI64::new(1),
            produce_calls: AtomicUsize::new(0),
            last_produce_appends: AtomicUsize::new(0),
            store_delays_ms: Mutex::new(VecDeque::new()),
        }
    }

    /// Headers of the batches stored in a partition, base offsets as assigned.
    pub fn batches(&self, topic: &str, partition: i32) -> Vec<BatchHeader> {
        let topics = self.topics.lock().unwrap();
        let Some(t) = topics.get(topic) else { return Vec::new() };
        t.logs.get(partition as usize).map(|l| l.iter().map(|s| s.header).collect()).unwrap_or_default()
    }

    /// Appends a batch directly (as another connection would), waking long polls.
    pub fn append_now(&self, topic: &str, partition: i32, batch: Bytes) -> Result<Appended, LogError> {
        let header = quorumdb_kafka::split_batches(&batch, usize::MAX).expect("a valid batch")[0].0;
        let r = self.append(&Append { topic: topic.into(), partition, header, batch });
        self.appended.send_modify(|n| *n += 1);
        r
    }

    fn append(&self, a: &Append) -> Result<Appended, LogError> {
        let mut topics = self.topics.lock().unwrap();
        let t = topics.get_mut(&a.topic).ok_or(LogError::UnknownTopicOrPartition)?;
        let idx = usize::try_from(a.partition).map_err(|_| LogError::UnknownTopicOrPartition)?;
        let p = t.info.partitions.get_mut(idx).ok_or(LogError::UnknownTopicOrPartition)?;
        let base = p.high_watermark;
        let mut bytes = a.batch.to_vec();
        rewrite_base_offset(&mut bytes, base);
        let mut header = a.header;
        header.base_offset = base;
        p.high_watermark += i64::from(a.header.records_count);
        let log_start = p.log_start_offset;
        t.logs[idx].push(Stored { header, bytes: Bytes::from(bytes) });
        Ok(Appended { base_offset: base, log_start_offset: log_start })
    }
}

impl Broker for MemBroker {
    fn cluster(&self) -> ClusterInfo {
        ClusterInfo {
            cluster_id: CLUSTER_ID.into(),
            controller_id: NODE_ID,
            brokers: vec![BrokerInfo {
                node_id: NODE_ID,
                host: "127.0.0.1".into(),
                port: self.port,
                rack: Some("zone-a".into()),
            }],
        }
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.topics.lock().unwrap().values().map(|t| t.info.clone()).collect()
    }

    fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.topics.lock().unwrap().get(name).map(|t| t.info.clone())
    }

    fn auto_create_topics(&self) -> bool {
        self.auto_create.load(Ordering::SeqCst)
    }

    async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        _timeout_ms: u64,
    ) -> Vec<Result<TopicInfo, LogError>> {
        let mut map = self.topics.lock().unwrap();
        topics
            .into_iter()
            .map(|t| {
                check_topic_name(&t.name).map_err(LogError::InvalidTopic)?;
                if map.contains_key(&t.name) {
                    return Err(LogError::TopicAlreadyExists(t.name));
                }
                let partitions = t.partitions.unwrap_or(1);
                if !(1..=100).contains(&partitions) {
                    return Err(LogError::InvalidPartitions(format!("{partitions}")));
                }
                let rf = t.replication_factor.unwrap_or(1);
                if rf != 1 {
                    return Err(LogError::InvalidReplicationFactor(format!(
                        "{rf}: this broker has one node"
                    )));
                }
                let n = self.next_topic.fetch_add(1, Ordering::SeqCst);
                let mut id = [0u8; 16];
                id[8..].copy_from_slice(&n.to_be_bytes());
                id[0] = 0x42;
                let info = TopicInfo {
                    name: t.name.clone(),
                    id,
                    partitions: (0..partitions)
                        .map(|p| PartitionInfo {
                            partition: p,
                            leader: NODE_ID,
                            replicas: vec![NODE_ID],
                            log_start_offset: 0,
                            high_watermark: 0,
                        })
                        .collect(),
                    retention_ms: t.retention_ms.unwrap_or(-1),
                    retention_bytes: t.retention_bytes.unwrap_or(-1),
                };
                if !validate_only {
                    let logs = (0..partitions).map(|_| Vec::new()).collect();
                    map.insert(t.name, MemTopic { info: info.clone(), logs });
                }
                Ok(info)
            })
            .collect()
    }

    async fn delete_topics(&self, names: Vec<String>, _timeout_ms: u64) -> Vec<Result<(), LogError>> {
        let mut map = self.topics.lock().unwrap();
        names
            .into_iter()
            .map(|n| map.remove(&n).map(|_| ()).ok_or(LogError::UnknownTopicOrPartition))
            .collect()
    }

    async fn produce(&self, appends: Vec<Append>, _timeout_ms: u64) -> Vec<Result<Appended, LogError>> {
        self.produce_calls.fetch_add(1, Ordering::SeqCst);
        self.last_produce_appends.store(appends.len(), Ordering::SeqCst);
        let out = appends.iter().map(|a| self.append(a)).collect();
        self.appended.send_modify(|n| *n += 1);
        out
    }

    async fn produce_in_turn(
        &self,
        appends: Vec<Append>,
        timeout_ms: u64,
        mut turn: Turn,
    ) -> Vec<Result<Appended, LogError>> {
        let delay = self.store_delays_ms.lock().unwrap().pop_front();
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        turn.wait().await;
        let out = self.produce(appends, timeout_ms).await;
        turn.pass();
        out
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Records, LogError> {
        let topics = self.topics.lock().unwrap();
        let t = topics.get(topic).ok_or(LogError::UnknownTopicOrPartition)?;
        let idx = usize::try_from(partition).map_err(|_| LogError::UnknownTopicOrPartition)?;
        let p = t.info.partitions.get(idx).ok_or(LogError::UnknownTopicOrPartition)?;
        if offset < p.log_start_offset || offset > p.high_watermark {
            return Err(LogError::OffsetOutOfRange);
        }
        let mut records = BytesMut::new();
        for s in t.logs[idx].iter().filter(|s| s.header.last_offset() >= offset) {
            if !records.is_empty() && records.len() + s.bytes.len() > max_bytes {
                break;
            }
            records.put_slice(&s.bytes);
        }
        Ok(Records {
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records: records.freeze(),
        })
    }

    fn list_offset(&self, topic: &str, partition: i32, query: OffsetQuery) -> Result<(i64, i64), LogError> {
        let topics = self.topics.lock().unwrap();
        let t = topics.get(topic).ok_or(LogError::UnknownTopicOrPartition)?;
        let idx = usize::try_from(partition).map_err(|_| LogError::UnknownTopicOrPartition)?;
        let p = t.info.partitions.get(idx).ok_or(LogError::UnknownTopicOrPartition)?;
        Ok(match query {
            OffsetQuery::Earliest => (p.log_start_offset, -1),
            OffsetQuery::Latest => (p.high_watermark, -1),
            OffsetQuery::Timestamp(ts) => t.logs[idx]
                .iter()
                .find(|s| s.header.max_timestamp >= ts)
                .map_or((-1, -1), |s| (s.header.base_offset, s.header.max_timestamp)),
        })
    }

    async fn init_producer_id(&self, _timeout_ms: u64) -> Result<(i64, i16), LogError> {
        Ok((self.next_producer.fetch_add(1, Ordering::SeqCst), 0))
    }

    fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}

/// `serve` on 127.0.0.1 with a [`MemBroker`].
pub struct Running {
    pub addr: SocketAddr,
    pub broker: Arc<MemBroker>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

pub async fn start(config: KafkaConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let broker = Arc::new(MemBroker::new(addr.port()));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(serve(listener, broker.clone(), config, stopped));
    Running { addr, broker, stop, task }
}

/// A raw Kafka client: one connection, requests encoded with kafka-protocol.
pub struct Client {
    pub stream: TcpStream,
    next_correlation: i32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client { stream, next_correlation: 1 }
    }

    /// Sends a request; returns its correlation id.
    pub async fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, req: &R) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let mut body = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("quorumdb-test")));
        header.encode(&mut body, key.request_header_version(version)).expect("encode header");
        req.encode(&mut body, version).unwrap_or_else(|e| panic!("encode {key:?} v{version}: {e}"));
        self.send_frame(&body).await;
        correlation
    }

    /// Sends `body` as one frame.
    pub async fn send_frame(&mut self, body: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_u32(body.len() as u32);
        frame.put_slice(body);
        self.stream.write_all(&frame).await.expect("write");
    }

    /// The next answer frame (without its length); `None` once the server closed.
    pub async fn recv_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await.ok()?;
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            self.stream.read_exact(&mut frame).await.ok()?;
            Some(Bytes::from(frame))
        };
        tokio::time::timeout(ANSWER_WAIT, read).await.expect("no answer and no close in time")
    }

    /// The next answer, decoded as `key` v`version`: `(correlation id, body)`.
    pub async fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, R) {
        let mut frame = self.recv_frame().await.expect("the server closed the connection");
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
            .expect("decode response header");
        let body =
            R::decode(&mut frame, version).unwrap_or_else(|e| panic!("decode {key:?} v{version}: {e}"));
        assert!(frame.is_empty(), "{key:?} v{version}: {} bytes after the response", frame.len());
        (header.correlation_id, body)
    }

    /// Sends a request and waits for its answer.
    pub async fn call<Q: Encodable, R: Decodable>(&mut self, key: ApiKey, version: i16, req: &Q) -> R {
        let correlation = self.send(key, version, req).await;
        let (got, r) = self.recv(key, version).await;
        assert_eq!(got, correlation, "{key:?} v{version}: correlation id");
        r
    }

    /// Whether the server closed the connection (reads EOF within the answer wait).
    pub async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(ANSWER_WAIT, self.stream.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}
