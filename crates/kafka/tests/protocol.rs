//! The listener over real TCP, driven by kafka-protocol's own encoders and decoders as the
//! client, against the in-memory broker.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request, delete_topics_request, fetch_request, list_offsets_request, metadata_request,
    produce_request, ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use quorumdb_kafka::{testing, KafkaConfig, APIS};
use support::{start, Client, Running, CLUSTER_ID, NODE_ID};

fn name(n: &str) -> TopicName {
    TopicName(StrBytes::from_string(n.to_string()))
}

fn metadata_req(topics: Option<&[&str]>, auto: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(topics.map(|t| {
            t.iter()
                .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(auto)
}

fn create_req(topic: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    let configs = configs
        .iter()
        .map(|(k, v)| {
            create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let t = create_topics_request::CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(configs);
    CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(5000)
}

async fn create(c: &mut Client, topic: &str, partitions: i32) {
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create_req(topic, partitions, &[])).await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

fn produce_req(acks: i16, parts: &[(&str, i32, Bytes)]) -> ProduceRequest {
    let mut topics: Vec<produce_request::TopicProduceData> = Vec::new();
    for (topic, partition, records) in parts {
        let p = produce_request::PartitionProduceData::default()
            .with_index(*partition)
            .with_records(Some(records.clone()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == *topic) {
            Some(t) => t.partition_data.push(p),
            None => topics.push(
                produce_request::TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(vec![p]),
            ),
        }
    }
    ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(topics)
}

fn fetch_req(parts: &[(&str, i32, i64)], max_wait_ms: i32, min_bytes: i32, max_bytes: i32) -> FetchRequest {
    let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
    for (topic, partition, offset) in parts {
        let p = fetch_request::FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(*offset)
            .with_partition_max_bytes(1 << 20);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == *topic) {
            Some(t) => t.partitions.push(p),
            None => topics
                .push(fetch_request::FetchTopic::default().with_topic(name(topic)).with_partitions(vec![p])),
        }
    }
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(topics)
}

fn list_req(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    let p = list_offsets_request::ListOffsetsPartition::default()
        .with_partition_index(partition)
        .with_timestamp(timestamp);
    ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default().with_name(name(topic)).with_partitions(vec![p]),
    ])
}

fn kv(n: usize, tag: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n).map(|i| (format!("k{i}").into_bytes(), format!("{tag}-{i}").into_bytes())).collect()
}

fn batch_of(records: &[(Vec<u8>, Vec<u8>)], ts: i64) -> Bytes {
    let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    testing::batch(&refs, ts, None)
}

async fn server() -> Running {
    start(KafkaConfig::default()).await
}

/// ApiVersions v0–v3 list exactly the advertised APIs.
#[tokio::test]
async fn api_versions_lists_what_is_served() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    for v in 0..=3 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, v, &req).await;
        assert_eq!(r.error_code, 0);
        let got: Vec<(i16, i16, i16)> =
            r.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        let want: Vec<(i16, i16, i16)> = APIS.iter().map(|(k, a, b)| (*k as i16, *a, *b)).collect();
        assert_eq!(got, want, "v{v}");
        assert!(got.iter().any(|(k, _, _)| *k == ApiKey::JoinGroup as i16), "group APIs are listed");
    }
}

/// An ApiVersions version we do not serve gets UNSUPPORTED_VERSION and our list, in v0 (KIP-511).
#[tokio::test]
async fn api_versions_of_unknown_version_answers_in_v0() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    // v4 is encodable (a newer client's first request); 127 is made up, with a v3 body.
    for version in [4i16, 127] {
        let mut body = BytesMut::new();
        body.put_i16(ApiKey::ApiVersions as i16);
        body.put_i16(version);
        body.put_i32(77);
        body.put_i16(4);
        body.put_slice(b"test");
        body.put_u8(0); // header tagged fields
        body.put_slice(&[5, b'x', b'x', b'x', b'x', 2, b'1', 0]);
        c.send_frame(&body).await;
        let mut frame = c.recv_frame().await.expect("an answer");
        let correlation = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(correlation, 77);
        let _ = frame.split_to(4);
        let r = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
        assert_eq!(r.error_code, 35, "v{version}");
        assert_eq!(r.api_keys.len(), APIS.len());
        assert!(frame.is_empty());
    }
    // The connection stays usable.
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
}

/// Metadata lists brokers and topics, auto-creates unknown topics when allowed, and refuses
/// invalid names, in every advertised version.
#[tokio::test]
async fn metadata_lists_and_auto_creates() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    // Not allowed by the request: unknown.
    let r: MetadataResponse = c.call(ApiKey::Metadata, 4, &metadata_req(Some(&["m1"]), false)).await;
    assert_eq!(r.topics[0].error_code, 3);
    assert!(s.broker.batches("m1", 0).is_empty());
    // Allowed: created with the defaults.
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_req(Some(&["m1"]), true)).await;
    let t = &r.topics[0];
    assert_eq!((t.error_code, t.partitions.len()), (0, 1));
    assert_eq!(t.topic_authorized_operations, i32::MIN);
    let info = quorumdb_kafka::Broker::topic(&*s.broker, "m1").expect("created");
    assert_eq!(t.topic_id.as_bytes(), &info.id);
    assert_eq!(r.cluster_id.as_deref(), Some(CLUSTER_ID));
    assert_eq!((r.controller_id.0, r.brokers.len()), (NODE_ID, 1));
    assert_eq!((r.brokers[0].host.as_str(), r.brokers[0].port), ("127.0.0.1", s.addr.port() as i32));
    // Invalid names: INVALID_TOPIC_EXCEPTION, never created.
    let r: MetadataResponse = c.call(ApiKey::Metadata, 9, &metadata_req(Some(&["bad name"]), true)).await;
    assert_eq!(r.topics[0].error_code, 17);
    // Every version, named and all-topics forms.
    for v in 0..=12 {
        let r: MetadataResponse = c.call(ApiKey::Metadata, v, &metadata_req(Some(&["m1"]), true)).await;
        assert_eq!(r.topics.len(), 1, "v{v}");
        let p = &r.topics[0].partitions[0];
        assert_eq!((r.topics[0].error_code, p.leader_id.0), (0, NODE_ID), "v{v}");
        assert_eq!(p.isr_nodes, p.replica_nodes);
        let all = if v == 0 { metadata_req(Some(&[]), true) } else { metadata_req(None, true) };
        let r: MetadataResponse = c.call(ApiKey::Metadata, v, &all).await;
        assert_eq!(r.topics.len(), 1, "v{v} all topics");
        if v >= 1 {
            let r: MetadataResponse = c.call(ApiKey::Metadata, v, &metadata_req(Some(&[]), true)).await;
            assert!(r.topics.is_empty(), "v{v}: an empty list asks for no topic");
        }
    }
    // Pre-v4 requests have no flag (the codec's default, true, is not sent): created when the
    // broker auto-creates.
    let r: MetadataResponse = c.call(ApiKey::Metadata, 1, &metadata_req(Some(&["m2"]), true)).await;
    assert_eq!(r.topics[0].error_code, 0);
    s.broker.auto_create.store(false, Ordering::SeqCst);
    let r: MetadataResponse = c.call(ApiKey::Metadata, 1, &metadata_req(Some(&["m3"]), true)).await;
    assert_eq!(r.topics[0].error_code, 3);
}

/// CreateTopics honours partitions and retention configs, refuses other configs, manual
/// assignments and duplicates, supports validate_only; DeleteTopics deletes by name and by id.
#[tokio::test]
async fn create_and_delete_topics() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    let r: CreateTopicsResponse =
        c.call(ApiKey::CreateTopics, 7, &create_req("c1", 3, &[("retention.ms", "60000")])).await;
    let t = &r.topics[0];
    assert_eq!((t.error_code, t.num_partitions, t.replication_factor), (0, 3, 1));
    let configs = t.configs.as_ref().unwrap();
    let retention = configs.iter().find(|c| c.name.as_str() == "retention.ms").unwrap();
    assert_eq!((retention.value.as_deref(), retention.config_source), (Some("60000"), 1));
    let bytes = configs.iter().find(|c| c.name.as_str() == "retention.bytes").unwrap();
    assert_eq!((bytes.value.as_deref(), bytes.config_source), (Some("-1"), 5));
    let info = quorumdb_kafka::Broker::topic(&*s.broker, "c1").unwrap();
    assert_eq!((info.partitions.len(), info.retention_ms), (3, 60000));
    assert_eq!(t.topic_id.as_bytes(), &info.id);

    let cases: Vec<(CreateTopicsRequest, i16)> = vec![
        (create_req("c1", 1, &[]), 36),
        (create_req("c2", 1, &[("cleanup.policy", "compact")]), 40),
        (create_req("c2", 1, &[("retention.ms", "soon")]), 40),
        (create_req("c2", 0, &[]), 37),
        (create_req("bad/name", 1, &[]), 17),
    ];
    for (req, code) in cases {
        let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).await;
        assert_eq!(r.topics[0].error_code, code, "{:?}", r.topics[0].error_message);
        assert!(r.topics[0].error_message.is_some());
    }
    let mut manual = create_req("c2", -1, &[]);
    manual.topics[0].assignments = vec![create_topics_request::CreatableReplicaAssignment::default()
        .with_partition_index(0)
        .with_broker_ids(vec![1.into()])];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 4, &manual).await;
    assert_eq!(r.topics[0].error_code, 42);
    let mut twice = create_req("c3", 1, &[]);
    twice.topics.push(twice.topics[0].clone());
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &twice).await;
    assert_eq!((r.topics[0].error_code, r.topics[1].error_code), (42, 42));
    let validate = create_req("c4", 2, &[]).with_validate_only(true);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 2, &validate).await;
    assert_eq!(r.topics[0].error_code, 0);
    assert!(quorumdb_kafka::Broker::topic(&*s.broker, "c4").is_none(), "validate_only creates nothing");
    for v in 2..=7 {
        let r: CreateTopicsResponse =
            c.call(ApiKey::CreateTopics, v, &create_req(&format!("v{v}"), -1, &[])).await;
        assert_eq!(r.topics[0].error_code, 0, "v{v}");
    }

    let by_name =
        DeleteTopicsRequest::default().with_topic_names(vec![name("v2"), name("nope")]).with_timeout_ms(1000);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 1, &by_name).await;
    assert_eq!((r.responses[0].error_code, r.responses[1].error_code), (0, 3));
    let id = quorumdb_kafka::Broker::topic(&*s.broker, "v3").unwrap().id;
    let by_id = DeleteTopicsRequest::default()
        .with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_topic_id(uuid_of(id)),
            delete_topics_request::DeleteTopicState::default().with_topic_id(uuid_of([9; 16])),
            delete_topics_request::DeleteTopicState::default().with_name(Some(name("v4"))),
        ])
        .with_timeout_ms(1000);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &by_id).await;
    let codes: Vec<i16> = r.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [0, 100, 0]);
    assert_eq!(r.responses[0].name.as_ref().map(|n| n.0.as_str()), Some("v3"));
    for t in ["v2", "v3", "v4"] {
        assert!(quorumdb_kafka::Broker::topic(&*s.broker, t).is_none(), "{t} deleted");
    }
}

fn uuid_of<T: TryFrom<Vec<u8>>>(id: [u8; 16]) -> T {
    T::try_from(id.to_vec()).ok().unwrap()
}

/// Produce acks=1 appends every partition's batches in one log call and answers base offsets;
/// Fetch (v4 and v12) reads them back with dense offsets.
#[tokio::test]
async fn produce_then_fetch_round_trip() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "p", 2).await;
    let a = kv(3, "a");
    let b = kv(2, "b");
    let d = kv(4, "d");
    let req = produce_req(
        1,
        &[("p", 0, Bytes::from([batch_of(&a, 10), batch_of(&b, 20)].concat())), ("p", 1, batch_of(&d, 30))],
    );
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).await;
    let parts = &r.responses[0].partition_responses;
    assert_eq!((parts[0].error_code, parts[0].base_offset), (0, 0));
    assert_eq!((parts[1].error_code, parts[1].base_offset, parts[1].log_start_offset), (0, 0, 0));
    assert_eq!(s.broker.produce_calls.load(Ordering::SeqCst), 1);
    assert_eq!(s.broker.last_produce_appends.load(Ordering::SeqCst), 3, "all batches in one call");
    let r: ProduceResponse =
        c.call(ApiKey::Produce, 3, &produce_req(-1, &[("p", 0, batch_of(&kv(1, "e"), 40))])).await;
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 5);

    for v in [4i16, 7, 11, 12] {
        let r: FetchResponse =
            c.call(ApiKey::Fetch, v, &fetch_req(&[("p", 0, 0), ("p", 1, 2)], 100, 1, 1 << 20)).await;
        assert_eq!(r.error_code, 0);
        let p0 = &r.responses[0].partitions[0];
        assert_eq!((p0.error_code, p0.high_watermark, p0.last_stable_offset), (0, 6, 6), "v{v}");
        let got = testing::records(p0.records.as_ref().unwrap()).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>(), "v{v}");
        assert_eq!(got[3].value.as_deref(), Some(&b"b-0"[..]));
        assert_eq!(got[3].timestamp, 20);
        let p1 = &r.responses[0].partitions[1];
        // The batch holding offset 2 starts at 0: clients skip what they did not ask for.
        let got = testing::records(p1.records.as_ref().unwrap()).unwrap();
        assert_eq!((p1.high_watermark, got.len(), got[0].offset), (4, 4, 0), "v{v}");
    }
}

/// Produce with acks=0 gets no answer; the next request's answer comes first.
#[tokio::test]
async fn produce_acks_zero_sends_no_answer() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "z", 1).await;
    c.send(ApiKey::Produce, 7, &produce_req(0, &[("z", 0, batch_of(&kv(2, "z"), 1))])).await;
    let correlation = c.send(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default()).await;
    let (got, _r): (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 2).await;
    assert_eq!(got, correlation);
    assert_eq!(s.broker.batches("z", 0).len(), 1);
    // A failing acks=0 produce closes the connection (Kafka's only signal).
    c.send(ApiKey::Produce, 7, &produce_req(0, &[("missing", 0, batch_of(&kv(1, "z"), 1))])).await;
    assert!(c.closed().await);
}

/// Produce refusals: corrupt CRC, oversized batch, bad acks, transactional id, unknown topic,
/// zstd before v7, and Produce v0–v2 answered UNSUPPORTED_VERSION in their own format.
#[tokio::test]
async fn produce_refusals() {
    let config = KafkaConfig { batch_bytes_max: 200, ..KafkaConfig::default() };
    let s = start(config).await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "r", 1).await;
    let good = batch_of(&kv(1, "r"), 1);
    let mut corrupt = good.to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    let big = batch_of(&[(b"k".to_vec(), vec![0u8; 300])], 1);
    let zstd = testing::with_attributes(&good, 4);
    let cases: Vec<(i16, ProduceRequest, i16)> = vec![
        (9, produce_req(1, &[("r", 0, Bytes::from(corrupt))]), 2),
        (9, produce_req(1, &[("r", 0, big)]), 10),
        (9, produce_req(2, &[("r", 0, good.clone())]), 21),
        (
            9,
            produce_req(1, &[("r", 0, good.clone())])
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx")))),
            42,
        ),
        (9, produce_req(1, &[("unknown", 0, good.clone())]), 3),
        (9, produce_req(1, &[("r", 7, good.clone())]), 3),
        (6, produce_req(1, &[("r", 0, zstd.clone())]), 76),
        (9, produce_req(1, &[("r", 0, Bytes::new())]), 2),
    ];
    for (v, req, code) in cases {
        let r: ProduceResponse = c.call(ApiKey::Produce, v, &req).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (code, -1), "{:?}", p.error_message);
        assert_eq!(p.error_message.is_some(), v >= 8, "error messages from v8");
    }
    assert!(s.broker.batches("r", 0).is_empty());
    // zstd passes through from v7 (never decompressed).
    let r: ProduceResponse = c.call(ApiKey::Produce, 7, &produce_req(1, &[("r", 0, zstd)])).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    assert_eq!(s.broker.batches("r", 0)[0].compression(), 4);

    // Produce v0–v2 (hand-built): acks 1, one topic "r", partition 0, some records.
    for version in 0..=2i16 {
        let mut body = BytesMut::new();
        body.put_i16(ApiKey::Produce as i16);
        body.put_i16(version);
        body.put_i32(500 + i32::from(version));
        body.put_i16(-1); // client id
        body.put_i16(1);
        body.put_i32(1000);
        body.put_i32(1);
        body.put_i16(1);
        body.put_slice(b"r");
        body.put_i32(1);
        body.put_i32(0);
        body.put_i32(good.len() as i32);
        body.put_slice(&good);
        c.send_frame(&body).await;
        let f = c.recv_frame().await.expect("an answer");
        let mut want = BytesMut::new();
        want.put_i32(500 + i32::from(version));
        want.put_i32(1);
        want.put_i16(1);
        want.put_slice(b"r");
        want.put_i32(1);
        want.put_i32(0);
        want.put_i16(35);
        want.put_i64(-1);
        if version >= 2 {
            want.put_i64(-1);
        }
        if version >= 1 {
            want.put_i32(0);
        }
        assert_eq!(f, want.freeze(), "v{version}");
    }
    assert_eq!(s.broker.batches("r", 0).len(), 1);
}

/// A long-polling fetch answers as soon as data arrives, well before max_wait.
#[tokio::test]
async fn fetch_long_poll_returns_when_data_arrives() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "lp", 1).await;
    let broker = s.broker.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.append_now("lp", 0, batch_of(&kv(1, "late"), 5)).unwrap();
    });
    let started = Instant::now();
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req(&[("lp", 0, 0)], 10_000, 1, 1 << 20)).await;
    let took = started.elapsed();
    appender.await.unwrap();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(3), "{took:?}");
    let got = testing::records(r.responses[0].partitions[0].records.as_ref().unwrap()).unwrap();
    assert_eq!(got.len(), 1);
}

/// With nothing arriving, a fetch waits max_wait_ms (capped by fetch_wait_ms_max) and answers
/// empty; min_bytes 0 answers at once.
#[tokio::test]
async fn fetch_waits_max_wait_when_nothing_arrives() {
    let s = start(KafkaConfig { fetch_wait_ms_max: 600, ..KafkaConfig::default() }).await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "w", 1).await;
    for (max_wait, low, high) in [(300, 290, 1500), (60_000, 590, 2000)] {
        let started = Instant::now();
        let r: FetchResponse =
            c.call(ApiKey::Fetch, 11, &fetch_req(&[("w", 0, 0)], max_wait, 1, 1 << 20)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(low) && took < Duration::from_millis(high),
            "{max_wait}: {took:?}"
        );
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 0));
        assert!(p.records.as_ref().unwrap().is_empty());
        assert_eq!(p.preferred_read_replica.0, -1);
    }
    let started = Instant::now();
    let _: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch_req(&[("w", 0, 0)], 5000, 0, 1 << 20)).await;
    assert!(started.elapsed() < Duration::from_millis(250));
}

/// Fetch errors and sessions: out of range, unknown topic, incremental session refused,
/// session creation answered with session id 0 and data.
#[tokio::test]
async fn fetch_errors_and_sessions() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "f", 1).await;
    s.broker.append_now("f", 0, batch_of(&kv(2, "f"), 1)).unwrap();
    let started = Instant::now();
    let r: FetchResponse =
        c.call(ApiKey::Fetch, 12, &fetch_req(&[("f", 0, 9), ("nope", 0, 0)], 5000, 1, 1 << 20)).await;
    assert!(started.elapsed() < Duration::from_secs(1), "an error answers at once");
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    assert_eq!(r.responses[1].partitions[0].error_code, 3);
    let incremental = fetch_req(&[("f", 0, 0)], 100, 1, 1 << 20).with_session_id(12).with_session_epoch(3);
    let r: FetchResponse = c.call(ApiKey::Fetch, 7, &incremental).await;
    assert_eq!(r.error_code, 70);
    assert!(r.responses.is_empty());
    let open = fetch_req(&[("f", 0, 0)], 100, 1, 1 << 20).with_session_id(0).with_session_epoch(0);
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &open).await;
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(testing::records(r.responses[0].partitions[0].records.as_ref().unwrap()).unwrap().len(), 2);
}

/// A fetch's max_bytes bounds the answer to whole batches, but the first batch is always
/// returned (KIP-74), and partitions left out still report their high watermark.
#[tokio::test]
async fn fetch_respects_max_bytes() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "mb", 2).await;
    let big = batch_of(&[(b"k".to_vec(), vec![1u8; 1000])], 1);
    for p in 0..2 {
        s.broker.append_now("mb", p, big.clone()).unwrap();
        s.broker.append_now("mb", p, big.clone()).unwrap();
    }
    let r: FetchResponse =
        c.call(ApiKey::Fetch, 12, &fetch_req(&[("mb", 0, 0), ("mb", 1, 0)], 0, 1, 10)).await;
    let p0 = &r.responses[0].partitions[0];
    let p1 = &r.responses[0].partitions[1];
    assert_eq!(p0.records.as_ref().unwrap().len(), big.len(), "only the first batch");
    assert!(p1.records.as_ref().unwrap().is_empty());
    assert_eq!((p1.error_code, p1.high_watermark), (0, 2));
    let max = (3 * big.len()) as i32;
    let r: FetchResponse =
        c.call(ApiKey::Fetch, 12, &fetch_req(&[("mb", 0, 0), ("mb", 1, 0)], 0, 1, max)).await;
    let sizes: Vec<usize> =
        r.responses[0].partitions.iter().map(|p| p.records.as_ref().unwrap().len()).collect();
    assert_eq!(sizes, [2 * big.len(), big.len()]);
}

/// ListOffsets resolves earliest, latest and timestamps, and refuses max-timestamp (-3).
#[tokio::test]
async fn list_offsets_earliest_latest_timestamp() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "lo", 1).await;
    s.broker.append_now("lo", 0, batch_of(&kv(3, "x"), 1000)).unwrap();
    s.broker.append_now("lo", 0, batch_of(&kv(2, "y"), 2000)).unwrap();
    for v in 1..=7 {
        let cases = [(-2i64, 0i64, -1i64), (-1, 5, -1), (1500, 3, 2000), (0, 0, 1000), (3000, -1, -1)];
        for (ts, offset, timestamp) in cases {
            let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &list_req("lo", 0, ts)).await;
            let p = &r.topics[0].partitions[0];
            assert_eq!((p.error_code, p.offset, p.timestamp), (0, offset, timestamp), "v{v} ts {ts}");
        }
    }
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &list_req("lo", 0, -3)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 35);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 5, &list_req("nope", 0, -1)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 3);
}

/// InitProducerId hands out fresh ids in every version and refuses transactional ids.
#[tokio::test]
async fn init_producer_id() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    let mut ids = Vec::new();
    for v in 0..=4 {
        let req =
            InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
        let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, v, &req).await;
        assert_eq!((r.error_code, r.producer_epoch), (0, 0), "v{v}");
        ids.push(r.producer_id.0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 5);
    for id in ["t", ""] {
        let tx = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(id))));
        let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &tx).await;
        assert_eq!((r.error_code, r.producer_id.0), (42, -1), "{id:?}");
    }
}

/// Malformed frames, unserved APIs and versions, oversized frames and absurd array counts close
/// their connection; the server keeps serving others.
#[tokio::test]
async fn bad_requests_close_only_their_connection() {
    let s = start(KafkaConfig { request_bytes_max: 1024, ..KafkaConfig::default() }).await;
    let mut huge_array = BytesMut::new();
    huge_array.put_i16(ApiKey::Metadata as i16);
    huge_array.put_i16(4);
    huge_array.put_i32(1);
    huge_array.put_i16(-1);
    huge_array.put_i32(i32::MAX); // topics
    huge_array.put_u8(1);
    let mut truncated = BytesMut::new();
    truncated.put_i16(ApiKey::CreateTopics as i16);
    truncated.put_i16(3);
    truncated.put_i32(1);
    truncated.put_i16(-1);
    truncated.put_i32(1);
    truncated.put_i16(10);
    truncated.put_slice(b"abc");
    let mut unknown_key = BytesMut::new();
    unknown_key.put_i16(999);
    unknown_key.put_i16(0);
    unknown_key.put_i32(1);
    let mut old_fetch = BytesMut::new();
    old_fetch.put_i16(ApiKey::Fetch as i16);
    old_fetch.put_i16(3);
    old_fetch.put_i32(1);
    let frames: Vec<Vec<u8>> = vec![
        huge_array.to_vec(),
        truncated.to_vec(),
        unknown_key.to_vec(),
        old_fetch.to_vec(),
        vec![0, 3],
        vec![0xff; 40],
    ];
    for body in frames {
        let mut c = Client::connect(s.addr).await;
        c.send_frame(&body).await;
        assert!(c.closed().await, "{body:?}");
    }
    for raw in [&[0x7f, 0xff, 0xff, 0xff][..], &[0xff, 0xff, 0xff, 0xff], b"GET / HTTP/1.1\r\n\r\n"] {
        let mut c = Client::connect(s.addr).await;
        tokio::io::AsyncWriteExt::write_all(&mut c.stream, raw).await.unwrap();
        assert!(c.closed().await, "{raw:?}");
    }
    let mut c = Client::connect(s.addr).await;
    c.send(ApiKey::DescribeConfigs, 1, &kafka_protocol::messages::DescribeConfigsRequest::default()).await;
    assert!(c.closed().await, "an API we do not advertise");
    let mut c = Client::connect(s.addr).await;
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    assert_eq!(r.error_code, 0);
}

/// Idle connections are closed after idle_ms_max, and connections beyond connections_max are
/// refused.
#[tokio::test]
async fn idle_and_excess_connections_are_closed() {
    let s = start(KafkaConfig { idle_ms_max: 200, connections_max: 1, ..KafkaConfig::default() }).await;
    let mut first = Client::connect(s.addr).await;
    let _: ApiVersionsResponse = first.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
    let mut second = Client::connect(s.addr).await;
    assert!(second.closed().await, "over connections_max");
    let started = Instant::now();
    assert!(first.closed().await, "idle");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The slot is free again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = Client::connect(s.addr).await;
    let _: ApiVersionsResponse = third.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default()).await;
}

/// Shutdown ends serve promptly, even with a long-polling fetch in flight, which is answered.
#[tokio::test]
async fn shutdown_ends_serve_and_long_polls() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "sd", 1).await;
    let correlation = c.send(ApiKey::Fetch, 12, &fetch_req(&[("sd", 0, 0)], 30_000, 1, 1 << 20)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    s.stop.send(true).unwrap();
    let (got, _r): (i32, FetchResponse) = c.recv(ApiKey::Fetch, 12).await;
    assert_eq!(got, correlation);
    tokio::time::timeout(Duration::from_secs(3), s.task).await.expect("serve returned").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err(), "no longer listening");
}

/// A header with an API key, a version and a correlation id, and no body.
fn bare_request(key: i16, version: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(9);
    b.put_i16(-1); // client id
    b.to_vec()
}

/// Bad input on one connection — a malformed frame, a version outside every advertised range
/// (each API just below and above its range), an unknown API key — closes that connection
/// only: another client's long-polling fetch, in flight all the while, still answers with the
/// batch a third connection then produces, and both connections keep serving.
#[tokio::test]
async fn bad_input_never_disturbs_other_connections() {
    let s = server().await;
    let mut producer = Client::connect(s.addr).await;
    create(&mut producer, "calm", 1).await;
    let mut poller = Client::connect(s.addr).await;
    let correlation = poller.send(ApiKey::Fetch, 12, &fetch_req(&[("calm", 0, 0)], 20_000, 1, 1 << 20)).await;
    let mut frames: Vec<(String, Vec<u8>)> = vec![
        ("garbage".into(), vec![0xff; 40]),
        ("a truncated header".into(), vec![0, 3, 0]),
        ("an unknown API key".into(), bare_request(999, 0)),
        ("a Produce with a truncated body".into(), {
            let mut b = bare_request(ApiKey::Produce as i16, 3);
            b.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0]);
            b
        }),
    ];
    for (key, min, max) in APIS.iter().filter(|(k, _, _)| *k != ApiKey::ApiVersions) {
        frames.push((format!("{key:?} v{}", max + 1), bare_request(*key as i16, max + 1)));
        if *min > 0 {
            frames.push((format!("{key:?} v{}", min - 1), bare_request(*key as i16, min - 1)));
        }
    }
    for (what, body) in &frames {
        let mut c = Client::connect(s.addr).await;
        c.send_frame(body).await;
        assert!(c.closed().await, "{what}: the connection should be closed");
    }
    let r: ProduceResponse =
        producer.call(ApiKey::Produce, 9, &produce_req(-1, &[("calm", 0, batch_of(&kv(3, "c"), 1))])).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let (got, r): (i32, FetchResponse) = poller.recv(ApiKey::Fetch, 12).await;
    assert_eq!(got, correlation);
    let records = testing::records(r.responses[0].partitions[0].records.as_ref().unwrap()).unwrap();
    assert_eq!(records.len(), 3, "the long poll was answered with the new batch");
    for c in [&mut producer, &mut poller] {
        let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
        assert_eq!(r.error_code, 0);
    }
}

/// In one Produce request a corrupt-CRC batch, an oversized batch and a topic that does not
/// exist (auto-create off) each fail with their own code (CORRUPT_MESSAGE, MESSAGE_TOO_LARGE,
/// UNKNOWN_TOPIC_OR_PARTITION) while the request's good partition is appended, nothing is
/// created, and the connection keeps serving.
#[tokio::test]
async fn bad_partitions_fail_alone_in_a_produce() {
    let s = start(KafkaConfig { batch_bytes_max: 200, ..KafkaConfig::default() }).await;
    s.broker.auto_create.store(false, Ordering::SeqCst);
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "mixed", 4).await;
    let good = batch_of(&kv(2, "g"), 1);
    let mut corrupt = good.to_vec();
    corrupt[good.len() / 2] ^= 0x01;
    let big = batch_of(&[(b"k".to_vec(), vec![7u8; 300])], 1);
    let r: MetadataResponse = c.call(ApiKey::Metadata, 12, &metadata_req(Some(&["absent"]), true)).await;
    assert_eq!(r.topics[0].error_code, 3, "auto-create is off");
    let req = produce_req(
        -1,
        &[
            ("mixed", 0, Bytes::from(corrupt)),
            ("mixed", 1, big),
            ("mixed", 2, good.clone()),
            ("absent", 0, good.clone()),
        ],
    );
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).await;
    let codes: Vec<(String, i32, i16, i64)> = r
        .responses
        .iter()
        .flat_map(|t| {
            t.partition_responses.iter().map(|p| (t.name.0.to_string(), p.index, p.error_code, p.base_offset))
        })
        .collect();
    let want = [("mixed", 0, 2, -1), ("mixed", 1, 10, -1), ("mixed", 2, 0, 0), ("absent", 0, 3, -1)];
    let want: Vec<(String, i32, i16, i64)> =
        want.iter().map(|(t, p, e, o)| (t.to_string(), *p, *e, *o)).collect();
    assert_eq!(codes, want);
    assert_eq!(s.broker.batches("mixed", 2).len(), 1);
    assert!((0..2).all(|p| s.broker.batches("mixed", p).is_empty()));
    assert!(quorumdb_kafka::Broker::topic(&*s.broker, "absent").is_none(), "produce never creates topics");
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req(&[("absent", 0, 0)], 0, 1, 1 << 20)).await;
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &list_req("absent", 0, -1)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 3);
}

/// Produce requests pipelined on one connection are served at once (storing their bytes
/// overlaps) yet appended and answered in request order even when the later ones finish
/// storing first, and a request of another kind sent after them is answered after them.
#[tokio::test]
async fn pipelined_produces_keep_their_order() {
    let s = server().await;
    let mut c = Client::connect(s.addr).await;
    create(&mut c, "pipe", 1).await;
    // The first request stores slowest, the last fastest: only the turns keep them in order.
    *s.broker.store_delays_ms.lock().unwrap() = [300, 200, 100, 0].into();
    let started = Instant::now();
    let mut sent = Vec::new();
    for i in 0..4 {
        let req = produce_req(-1, &[("pipe", 0, batch_of(&kv(1, &format!("r{i}")), 1))]);
        sent.push(c.send(ApiKey::Produce, 9, &req).await);
    }
    let metadata = c.send(ApiKey::Metadata, 12, &metadata_req(Some(&["pipe"]), false)).await;
    for (i, correlation) in sent.into_iter().enumerate() {
        let (got, r): (i32, ProduceResponse) = c.recv(ApiKey::Produce, 9).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((got, p.error_code, p.base_offset), (correlation, 0, i as i64));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(550), "the stores did not overlap: {took:?} (600 ms in turn)");
    let (got, r): (i32, MetadataResponse) = c.recv(ApiKey::Metadata, 12).await;
    assert_eq!((got, r.topics[0].error_code), (metadata, 0));
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req(&[("pipe", 0, 0)], 0, 1, 1 << 20)).await;
    let values: Vec<Vec<u8>> = testing::records(r.responses[0].partitions[0].records.as_ref().unwrap())
        .unwrap()
        .into_iter()
        .map(|r| r.value.unwrap().to_vec())
        .collect();
    assert_eq!(values, [&b"r0-0"[..], b"r1-0", b"r2-0", b"r3-0"]);
}
