//! Consumer groups on a real 3-node cluster: real clients (confluent-kafka, kafka-python and
//! aiokafka from `scripts/test.sh`'s virtualenv) rebalance, die and leave without skipping a
//! record; and, over the raw Kafka protocol, a commit from a stale generation is refused.

mod common;

use bytes::{Buf, BufMut, BytesMut};
use common::Cluster;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, ResponseHeader, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn python() -> String {
    let python = std::env::var("QUORUMDB_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&python).args(["-c", "import confluent_kafka, kafka, aiokafka"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "{python} lacks confluent-kafka, kafka-python or aiokafka; run the tests with scripts/test.sh, which installs them in a virtualenv"
    );
    python
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/groups.py");

fn create_topic(c: &Cluster, name: &str, partitions: u32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(c.client(0).create_topic(&quorumdb_api::NewTopic {
        name: name.into(),
        partitions: Some(partitions),
        ..Default::default()
    }))
    .unwrap();
}

fn json(s: &str) -> serde_json::Value {
    let line =
        s.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON summary in {s}"));
    serde_json::from_str(line).unwrap()
}

/// Members of two client libraries share one group while records keep arriving: joins
/// rebalance, a SIGKILLed member's partitions move after its session timeout, a graceful leave
/// hands over at once, and in the end every record was delivered, no member restarted a
/// partition below an offset already committed, duplicates stay within the killed member's
/// uncommitted records, and the committed offsets are the ends.
#[test]
fn rebalances_with_real_clients_skip_nothing() {
    let python = python();
    let c = Cluster::start("groups-rebalance", 3, 3, 3);
    create_topic(&c, "orders", 4);
    let bootstrap = c.nodes.iter().map(|n| n.kafka.as_str()).collect::<Vec<_>>().join(",");
    let work = c.dir.join("groups-work");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("timeout")
        .args(["240", &python, SCRIPT, "rebalance", &bootstrap, "orders", "4"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rebalance scenario failed:\n{stdout}\n{stderr}");
    let s = json(&stdout);
    eprintln!("rebalance: {s}");
    assert_eq!(s["records"], 4000, "{s}");
    assert!(s["problems"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["assignments"].as_u64().unwrap() >= 6, "joins, a death and a leave each rebalance: {s}");
    assert!(s["duplicates"].as_u64().unwrap() <= s["duplicates_allowed"].as_u64().unwrap(), "{s}");
    assert!(s["takeover_s"].as_f64().unwrap() < 15.0, "a dead member held its partitions: {s}");
    // `quorumdb group` shows the drained group: empty, committed at the ends, no lag.
    let g = cli(&c, &["group", "describe", "orders-sink", "-o", "json"]);
    assert_eq!(g["state"], "Empty", "{g}");
    let offsets = g["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 4, "{g}");
    assert!(offsets.iter().all(|o| o["lag"] == 0 && o["committed"] == o["high_watermark"]), "{g}");
    let l = cli(&c, &["group", "list", "-o", "json"]);
    let listed = l["groups"].as_array().unwrap().iter().find(|g| g["name"] == "orders-sink").cloned();
    assert_eq!(listed.map(|g| g["lag"].clone()), Some(serde_json::json!(0)), "{l}");
}

/// Runs the CLI against node 1 and parses its JSON answer.
fn cli(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let out =
        Command::new(common::BIN).args(args).env("QUORUMDB_ENDPOINT", &c.nodes[0].http).output().unwrap();
    assert!(out.status.success(), "quorumdb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An aiokafka consumer in a group reads every record and commits; the same group started
/// again reads nothing, because the commit held.
#[test]
fn aiokafka_group_commits_hold() {
    let python = python();
    let c = Cluster::start("groups-aiokafka", 3, 3, 3);
    create_topic(&c, "events", 2);
    let mut kcat = Command::new("timeout")
        .args(["60", "kcat", "-P", "-b", &c.nodes[0].kafka, "-t", "events", "-X", "acks=all"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat; run the tests with scripts/test.sh, which installs it");
    let input: String = (0..500).map(|i| format!("e{i}\n")).collect();
    kcat.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success());
    let bootstrap = format!("{},{}", c.nodes[1].kafka, c.nodes[2].kafka);
    let out = Command::new("timeout")
        .args(["120", &python, SCRIPT, "aiokafka", &bootstrap, "events"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let s = json(&stdout);
    assert_eq!((s["first"].as_u64(), s["second"].as_u64()), (Some(500), Some(0)), "{s}");
}

/// A minimal blocking Kafka client for one connection.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn connect(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn { stream, correlation: 0 }
    }

    fn call<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, version: i16, req: &Req) -> Resp {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("groups-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_u32(u32::try_from(body.len()).unwrap());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).unwrap();
        let mut buf = bytes::Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, key.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.correlation);
        let r = Resp::decode(&mut buf, version).unwrap();
        assert_eq!(buf.remaining(), 0, "{key:?} v{version}: trailing bytes");
        r
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn join(conn: &mut Conn, member: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(sb("fenced")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(sb(member))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(sb("range"))]);
    conn.call(ApiKey::JoinGroup, 5, &req)
}

/// A new member's two-step join (MEMBER_ID_REQUIRED, then the rejoin), answered once the
/// rebalance completes.
fn join_new(conn: &mut Conn) -> JoinGroupResponse {
    let first = join(conn, "");
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    join(conn, first.member_id.as_str())
}

fn sync(conn: &mut Conn, j: &JoinGroupResponse, assign: bool) -> SyncGroupResponse {
    let assignments = if assign {
        j.members
            .iter()
            .map(|m| SyncGroupRequestAssignment::default().with_member_id(m.member_id.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let req = SyncGroupRequest::default()
        .with_group_id(GroupId(sb("fenced")))
        .with_generation_id(j.generation_id)
        .with_member_id(j.member_id.clone())
        .with_assignments(assignments);
    conn.call(ApiKey::SyncGroup, 3, &req)
}

fn commit(conn: &mut Conn, generation: i32, member: &str, offset: i64) -> i16 {
    let part = OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset);
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(sb("fenced")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(sb(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(sb("fenced-topic")))
            .with_partitions(vec![part])]);
    let r: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, 5, &req);
    r.topics[0].partitions[0].error_code
}

fn committed(conn: &mut Conn) -> i64 {
    let req = OffsetFetchRequest::default().with_group_id(GroupId(sb("fenced"))).with_topics(Some(vec![
        kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(TopicName(sb("fenced-topic")))
            .with_partition_indexes(vec![0]),
    ]));
    let r: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 5, &req);
    r.topics[0].partitions[0].committed_offset
}

/// Over the Kafka protocol against the coordinator: a member commits in generation 1; a
/// second member's join moves the group to generation 2; the first member's commit with
/// generation 1 is refused ILLEGAL_GENERATION and changes nothing, its heartbeat says
/// REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION, and the generation-2 commit is stored.
#[test]
fn a_stale_generation_commit_is_refused_over_the_wire() {
    let c = Cluster::start("groups-fenced", 3, 3, 3);
    create_topic(&c, "fenced-topic", 1);
    // Find the coordinator through any node.
    let mut any = Conn::connect(&c.nodes[0].kafka);
    let coordinator = loop {
        let r: FindCoordinatorResponse =
            any.call(ApiKey::FindCoordinator, 2, &FindCoordinatorRequest::default().with_key(sb("fenced")));
        if r.error_code == 0 {
            break format!("{}:{}", r.host.as_str(), r.port);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut a = Conn::connect(&coordinator);
    let ja = loop {
        let j = join(&mut a, "");
        if j.error_code == ResponseError::CoordinatorLoadInProgress.code() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(j.error_code, ResponseError::MemberIdRequired.code());
        break join(&mut a, j.member_id.as_str());
    };
    assert_eq!((ja.error_code, ja.generation_id), (0, 1));
    assert_eq!(ja.leader, ja.member_id, "the only member leads");
    assert_eq!(sync(&mut a, &ja, true).error_code, 0);
    let a_id = ja.member_id.as_str().to_string();
    assert_eq!(commit(&mut a, 1, &a_id, 10), 0);
    assert_eq!(committed(&mut a), 10);

    // A second member joins on its own connection; its join waits for a to rejoin.
    let addr = coordinator.clone();
    let b = std::thread::spawn(move || {
        let mut b = Conn::connect(&addr);
        let jb = join_new(&mut b);
        (b, jb)
    });
    // a learns of the rebalance from its heartbeat, then rejoins.
    let mut rebalancing = false;
    for _ in 0..100 {
        let r: HeartbeatResponse = a.call(
            ApiKey::Heartbeat,
            2,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(sb("fenced")))
                .with_generation_id(1)
                .with_member_id(sb(&a_id)),
        );
        if r.error_code == ResponseError::RebalanceInProgress.code() {
            rebalancing = true;
            break;
        }
        assert_eq!(r.error_code, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rebalancing, "the second join never started a rebalance");
    let ja2 = join(&mut a, &a_id);
    let (mut b, jb) = b.join().unwrap();
    assert_eq!((ja2.error_code, ja2.generation_id, jb.generation_id), (0, 2, 2));
    let leader_is_a = ja2.leader.as_str() == a_id;
    let (sa, sb_) = if leader_is_a {
        (sync(&mut a, &ja2, true), sync(&mut b, &jb, false))
    } else {
        (sync(&mut b, &jb, true), sync(&mut a, &ja2, false))
    };
    assert_eq!((sa.error_code, sb_.error_code), (0, 0));

    // The stale generation's commit is refused and changes nothing.
    assert_eq!(commit(&mut a, 1, &a_id, 99), ResponseError::IllegalGeneration.code());
    assert_eq!(committed(&mut a), 10);
    // A member id that is not in the generation is refused too.
    assert_eq!(commit(&mut a, 2, "nobody", 99), ResponseError::UnknownMemberId.code());
    assert_eq!(commit(&mut a, 2, &a_id, 20), 0);
    assert_eq!(committed(&mut a), 20);
    // `quorumdb group describe` names both members of generation 2 and the offset.
    let g = cli(&c, &["group", "describe", "fenced", "-o", "json"]);
    assert_eq!((g["generation"].as_i64(), g["members"].as_array().map(Vec::len)), (Some(2), Some(2)), "{g}");
    assert_eq!(g["protocol"], "range");
    assert_eq!(g["offsets"][0]["committed"], 20, "{g}");
    let out = Command::new(common::BIN)
        .args(["group", "describe", "nope"])
        .env("QUORUMDB_ENDPOINT", &c.nodes[1].http)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// The coordinator is the metadata leader; killing it with SIGKILL mid-stream makes its
/// members find the new leader, which continues the group from the replicated state: every
/// record is delivered, none below a committed offset, and the group drains to the end.
#[test]
fn the_group_survives_its_coordinator_dying() {
    let python = python();
    let mut c = Cluster::start("groups-failover", 3, 3, 3);
    create_topic(&c, "orders", 4);
    let bootstrap = c.nodes.iter().map(|n| n.kafka.as_str()).collect::<Vec<_>>().join(",");
    let work = c.dir.join("failover-work");
    std::fs::create_dir_all(&work).unwrap();
    let child = Command::new("timeout")
        .args(["240", &python, SCRIPT, "failover", &bootstrap, "orders", "4"])
        .arg(&work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !work.join("kill-leader").exists() {
        assert!(std::time::Instant::now() < deadline, "the scenario never asked for the kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let leader = rt.block_on(c.client(0).meta_status()).unwrap().leader.expect("a metadata leader");
    let i = c.index(&leader);
    c.kill(i);
    std::fs::write(work.join("leader-killed"), leader.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "failover scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json(&stdout);
    eprintln!("failover: {s}");
    assert_eq!(s["records"], 3000, "{s}");
    assert!(s["problems"].as_array().unwrap().is_empty(), "{s}");
}
