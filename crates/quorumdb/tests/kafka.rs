//! The log through real Kafka clients on a real cluster: kcat (librdkafka 2.0) and the Python
//! clients confluent-kafka (librdkafka 2.16), kafka-python and aiokafka; plus hand-encoded bad
//! requests. `scripts/test.sh` installs the clients; without them these tests fail and say so.

mod common;

use common::Cluster;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest any one client command may run before the test fails instead of hanging.
const CLIENT_TIMEOUT_S: &str = "60";

fn kcat(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("timeout")
        .arg(CLIENT_TIMEOUT_S)
        .arg("kcat")
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run kcat ({e}); run the tests with scripts/test.sh, which installs it")
        });
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn produce(broker: &str, topic: &str, extra: &[&str], lines: &[String]) {
    let mut args = vec!["-P", "-b", broker, "-t", topic, "-K:", "-X", "acks=all"];
    args.extend_from_slice(extra);
    let input = lines.join("\n") + "\n";
    let (ok, _, err) = kcat(&args, Some(&input));
    assert!(ok && !err.contains("ERROR"), "kcat produce to {topic} via {broker} failed: {err}");
}

/// `key:value:offset` lines of a whole partition, read from the beginning.
fn consume(broker: &str, topic: &str) -> Vec<String> {
    let (ok, out, err) =
        kcat(&["-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s:%o\\n"], None);
    assert!(ok, "kcat consume of {topic} via {broker} failed: {err}");
    out.lines().map(str::to_owned).collect()
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}:value-{i}")).collect()
}

fn expected(all: &[String]) -> Vec<String> {
    all.iter().enumerate().map(|(o, l)| format!("{l}:{o}")).collect()
}

/// kcat sees every node as a broker, and what it produces through one node (plain, "lz4" (sent
/// uncompressed by librdkafka until FindCoordinator v0 is advertised, docs/log.md) and
/// gzip-compressed batches, which the broker stores untouched) it consumes through another, in
/// order, once each, with dense offsets; `-o -N` (ListOffsets) starts N from the end.
#[test]
fn kcat_produces_and_consumes_through_any_node() {
    let c = Cluster::start("kafka-kcat", 3, 3, 3);
    let (ok, out, err) = kcat(&["-L", "-b", &c.nodes[0].kafka], None);
    assert!(ok, "{err}");
    assert!(out.contains(" 3 brokers:"), "{out}");
    for n in &c.nodes {
        assert!(out.contains(&format!("at {}", n.kafka)), "broker {} missing: {out}", n.kafka);
    }
    let mut all = lines("a", 0..200);
    produce(&c.nodes[0].kafka, "orders", &[], &all);
    let more = lines("b", 0..300);
    produce(
        &c.nodes[1].kafka,
        "orders",
        &["-X", "compression.codec=lz4", "-X", "enable.idempotence=true"],
        &more,
    );
    all.extend(more);
    let gz = lines("c", 200..400);
    produce(&c.nodes[2].kafka, "orders", &["-X", "compression.codec=gzip"], &gz);
    all.extend(gz);
    assert_eq!(consume(&c.nodes[2].kafka, "orders"), expected(&all));
    let (ok, out, err) =
        kcat(&["-C", "-b", &c.nodes[0].kafka, "-t", "orders", "-o", "-3", "-e", "-f", "%o\\n"], None);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["697", "698", "699"]);
    // A topic name Kafka forbids is refused, and the broker keeps serving.
    let (_, _, err) = kcat(
        &["-P", "-b", &c.nodes[0].kafka, "-t", "bad/name", "-X", "topic.metadata.refresh.interval.ms=100"],
        Some("x\n"),
    );
    assert!(err.to_lowercase().contains("invalid") || err.contains("Broker: "), "{err}");
    assert_eq!(consume(&c.nodes[0].kafka, "orders").len(), 700);
}

/// Records acknowledged with acks=all survive kill -9 of a minority node and then a full
/// restart of the cluster, with the same offsets; producing continues while a node is down.
#[test]
fn acknowledged_records_survive_kill_and_full_restart() {
    let mut c = Cluster::start("kafka-durable", 3, 3, 3);
    let mut all = lines("a", 0..300);
    produce(&c.nodes[0].kafka, "events", &[], &all);
    c.kill(2);
    let more = lines("b", 0..300);
    produce(&c.nodes[0].kafka, "events", &["-X", "enable.idempotence=true"], &more);
    all.extend(more);
    assert_eq!(consume(&c.nodes[1].kafka, "events"), expected(&all));
    for i in 0..2 {
        c.stop(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_ready();
    // The metadata group needs a leader again before offsets are served.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = kcat(
            &["-C", "-b", &c.nodes[2].kafka, "-t", "events", "-o", "beginning", "-e", "-f", "%k:%s:%o\\n"],
            None,
        );
        if got.0 && got.1.lines().count() == all.len() {
            assert_eq!(got.1.lines().map(str::to_owned).collect::<Vec<_>>(), expected(&all));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the restart: {} / {}",
            got.1.lines().count(),
            got.2
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A frame larger than the request limit closes that connection, and the listener keeps
/// serving others.
#[test]
fn oversized_frame_closes_only_its_connection() {
    let c = Cluster::start("kafka-frame", 1, 1, 1);
    let mut s = std::net::TcpStream::connect(&c.nodes[0].kafka).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&(512 * 1024 * 1024u32).to_be_bytes()).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "the connection should be closed");
    let (ok, out, err) = kcat(&["-L", "-b", &c.nodes[0].kafka], None);
    assert!(ok && out.contains(" 1 brokers:"), "{out}{err}");
}

/// The Python interpreter with the test clients, or a failure that says how to get one.
fn python() -> String {
    let python = std::env::var("QUORUMDB_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&python).args(["-c", "import confluent_kafka, kafka, aiokafka"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "{python} lacks confluent-kafka, kafka-python or aiokafka; run the tests with scripts/test.sh, which installs them in a virtualenv"
    );
    python
}

fn run_script(python: &str, script: &str, args: &[&str]) {
    let path = format!("{}/tests/kafka/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout").args(["180", python, &path]).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "OK"),
        "{script}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// confluent-kafka (admin create, idempotent zstd producer, per-partition consumers),
/// kafka-python (gzip producer, consumer) and aiokafka (idempotent gzip producer, consumers
/// with assign() and seek()) work unmodified (see tests/kafka/clients.py and
/// aiokafka_clients.py).
#[test]
fn python_clients_produce_and_consume() {
    let python = python();
    let c = Cluster::start("kafka-python", 3, 3, 3);
    let bootstrap = format!("{},{}", c.nodes[0].kafka, c.nodes[1].kafka);
    run_script(&python, "clients.py", &[&bootstrap]);
    let bootstrap = format!("{},{}", c.nodes[1].kafka, c.nodes[2].kafka);
    run_script(&python, "aiokafka_clients.py", &[&bootstrap]);
}

/// Records the kill test produces, and its pace: about 6 s of production, so that the kill
/// (at a quarter) and the restart (at 60 %) both land while the producer is busy.
const KILL_RECORDS: usize = 6000;
const KILL_RATE: &str = "1000";

/// An idempotent confluent-kafka producer (acks=all, 3 partitions) keeps producing while the
/// metadata leader is killed with SIGKILL and later restarted: every record is acknowledged,
/// and consumers that assign() each partition read each value exactly once, at its
/// acknowledged offset, offsets dense, values in produce order (tests/kafka/idempotent_kill.py).
#[test]
fn idempotent_producer_through_kill_loses_and_duplicates_nothing() {
    use std::io::BufRead;
    let python = python();
    let mut c = Cluster::start("kafka-kill", 3, 3, 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bootstrap = c.nodes.iter().map(|n| n.kafka.as_str()).collect::<Vec<_>>().join(",");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/idempotent_kill.py");
    let records = KILL_RECORDS.to_string();
    let mut child = Command::new("timeout")
        .args(["120", &python, script, &bootstrap, &records, KILL_RATE])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut victim, mut restarted, mut out) = (None, false, Vec::new());
    // `timeout` bounds the script, so this loop ends when the script does.
    for line in stdout.lines() {
        let line = line.unwrap();
        let acked = line.strip_prefix("acked ").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        if victim.is_none() && acked >= KILL_RECORDS / 4 {
            let leader = rt.block_on(c.client(0).meta_status()).unwrap().leader.expect("a metadata leader");
            let i = c.index(&leader);
            c.kill(i);
            victim = Some(i);
        } else if let Some(i) = victim.filter(|_| !restarted && acked >= KILL_RECORDS * 3 / 5) {
            c.spawn(i);
            restarted = true;
        }
        out.push(line);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let out = out.join("\n");
    assert!(victim.is_some() && restarted, "the producer finished before the kill and restart:\n{out}");
    assert!(status.success() && out.lines().any(|l| l == "OK"), "{out}\n{err}");
    eprintln!("{out}");
    // The restarted node catches up and serves the same log.
    c.wait_ready();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let node = &c.nodes[victim.unwrap()].kafka;
    loop {
        let (ok, got, e) =
            kcat(&["-C", "-b", node, "-t", "kill-events", "-o", "beginning", "-e", "-f", "%s\\n"], None);
        if ok && got.lines().count() == KILL_RECORDS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted node serves {} records: {e}",
            got.lines().count()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Hand-encoded Kafka requests for the bad-input test: this crate has no Kafka codec, and
/// the requests must be exactly what a broken client would send. Header v1 (non-flexible)
/// requests, header v0 answers.
mod wire {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub struct Conn {
        s: TcpStream,
        next: i32,
    }

    impl Conn {
        pub fn open(addr: &str) -> Conn {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            Conn { s, next: 1 }
        }

        pub fn send_frame(&mut self, body: &[u8]) {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            self.s.write_all(&f).unwrap();
        }

        /// Sends `key` v`version` with `body`; returns the answer after its correlation id.
        pub fn call(&mut self, key: i16, version: i16, body: &[u8]) -> Reader {
            let c = self.next;
            self.next += 1;
            let mut b = Vec::new();
            b.extend_from_slice(&key.to_be_bytes());
            b.extend_from_slice(&version.to_be_bytes());
            b.extend_from_slice(&c.to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(body);
            self.send_frame(&b);
            let mut len = [0u8; 4];
            self.s.read_exact(&mut len).expect("an answer");
            let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
            self.s.read_exact(&mut f).unwrap();
            let mut r = Reader(f, 0);
            assert_eq!(r.i32(), c, "correlation id");
            r
        }

        /// Whether the broker closed the connection.
        pub fn closed(&mut self) -> bool {
            matches!(self.s.read(&mut [0u8; 1]), Ok(0) | Err(_))
        }
    }

    pub struct Reader(Vec<u8>, usize);

    impl Reader {
        fn take<const N: usize>(&mut self) -> [u8; N] {
            let b = self.0[self.1..self.1 + N].try_into().unwrap();
            self.1 += N;
            b
        }
        pub fn i16(&mut self) -> i16 {
            i16::from_be_bytes(self.take())
        }
        pub fn i32(&mut self) -> i32 {
            i32::from_be_bytes(self.take())
        }
        pub fn i64(&mut self) -> i64 {
            i64::from_be_bytes(self.take())
        }
        pub fn string(&mut self) -> String {
            let n = self.i16();
            let n = usize::try_from(n).unwrap_or(0);
            let s = String::from_utf8_lossy(&self.0[self.1..self.1 + n]).into_owned();
            self.1 += n;
            s
        }
    }

    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// CreateTopics v2 of one topic (partitions, replication factor -1): its error code.
    pub fn create_topic(c: &mut Conn, topic: &str, partitions: i32) -> i16 {
        let mut b = 1i32.to_be_bytes().to_vec();
        string(&mut b, topic);
        b.extend_from_slice(&partitions.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // no assignments, no configs
        b.extend_from_slice(&10_000i32.to_be_bytes());
        b.push(0); // validate_only
        let mut r = c.call(19, 2, &b);
        let _throttle = r.i32();
        assert_eq!(r.i32(), 1);
        assert_eq!(r.string(), topic);
        r.i16()
    }

    /// Metadata v0 for one topic: its error code.
    pub fn metadata(c: &mut Conn, topic: &str) -> i16 {
        let mut b = 1i32.to_be_bytes().to_vec();
        string(&mut b, topic);
        let mut r = c.call(3, 0, &b);
        for _ in 0..r.i32() {
            let (_id, _host, _port) = (r.i32(), r.string(), r.i32());
        }
        assert_eq!(r.i32(), 1, "one topic");
        r.i16()
    }

    /// ApiVersions v`version`: its error code and the number of APIs listed (always answered
    /// in v0's format when the version is not served, KIP-511).
    pub fn api_versions(c: &mut Conn, version: i16) -> (i16, i32) {
        let mut r = c.call(18, version, &[]);
        (r.i16(), r.i32())
    }

    /// Produce v3 (acks=-1) of `records` to one partition: (error code, base offset).
    pub fn produce(c: &mut Conn, topic: &str, partition: i32, records: &[u8]) -> (i16, i64) {
        let mut b = (-1i16).to_be_bytes().to_vec(); // no transactional id
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&10_000i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        string(&mut b, topic);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&partition.to_be_bytes());
        b.extend_from_slice(&(records.len() as i32).to_be_bytes());
        b.extend_from_slice(records);
        let mut r = c.call(0, 3, &b);
        assert_eq!(r.i32(), 1);
        assert_eq!(r.string(), topic);
        assert_eq!(r.i32(), 1);
        assert_eq!(r.i32(), partition);
        (r.i16(), r.i64())
    }

    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// CRC-32C (Castagnoli), bitwise: the batch checksum.
    fn crc32c(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// A valid v2 record batch of one record without key, `value` as its value.
    pub fn batch(value: &[u8]) -> Vec<u8> {
        let mut rec = vec![0u8]; // attributes
        varint(&mut rec, 0); // timestamp delta
        varint(&mut rec, 0); // offset delta
        varint(&mut rec, -1); // no key
        varint(&mut rec, value.len() as i64);
        rec.extend_from_slice(value);
        varint(&mut rec, 0); // no headers
        let mut records = Vec::new();
        varint(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
        // Now, not a fixed old time: retention (7 days by default) would trim the batch.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let now = i64::try_from(now.as_millis()).unwrap();
        let mut tail = Vec::new(); // from attributes on: what the CRC covers
        tail.extend_from_slice(&0i16.to_be_bytes()); // attributes
        tail.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
        tail.extend_from_slice(&now.to_be_bytes()); // first timestamp
        tail.extend_from_slice(&now.to_be_bytes()); // max timestamp
        tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        tail.extend_from_slice(&1i32.to_be_bytes()); // records count
        tail.extend_from_slice(&records);
        let mut b = 0i64.to_be_bytes().to_vec(); // base offset
        b.extend_from_slice(&((tail.len() + 9) as i32).to_be_bytes()); // batch length
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&crc32c(&tail).to_be_bytes());
        b.extend_from_slice(&tail);
        b
    }
}

/// On a real node with auto-create off, each bad input gets its Kafka error code on a
/// connection that stays open — an unknown topic (Metadata and Produce:
/// UNKNOWN_TOPIC_OR_PARTITION), a corrupt CRC (CORRUPT_MESSAGE), a batch over 1 MiB
/// (MESSAGE_TOO_LARGE), an ApiVersions version we do not speak (UNSUPPORTED_VERSION) — while
/// malformed requests and unserved versions close only their own connection; the first
/// connection and kcat keep working and the node keeps its log.
#[test]
fn bad_input_gets_kafka_codes_and_leaves_other_clients_alone() {
    let c = Cluster::start_with("kafka-bad-input", 1, 1, 1, "[log]\nauto_create_topics = false\n");
    let addr = &c.nodes[0].kafka;
    let mut a = wire::Conn::open(addr);
    assert_eq!(wire::metadata(&mut a, "ghost"), 3, "unknown topic, auto-create off");
    assert_eq!(wire::produce(&mut a, "ghost", 0, &wire::batch(b"x")).0, 3);
    assert_eq!(wire::metadata(&mut a, "ghost"), 3, "a produce creates no topic");
    assert_eq!(wire::create_topic(&mut a, "sturdy", 1), 0);
    let good = wire::batch(b"first");
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() ^= 0x20;
    assert_eq!(wire::produce(&mut a, "sturdy", 0, &corrupt), (2, -1), "corrupt CRC");
    let big = wire::batch(&vec![b'b'; 1024 * 1024 + 1]);
    assert_eq!(wire::produce(&mut a, "sturdy", 0, &big), (10, -1), "a batch over 1 MiB");
    assert_eq!(wire::produce(&mut a, "sturdy", 0, &good), (0, 0), "the same connection still produces");
    let (code, apis) = wire::api_versions(&mut a, 99);
    assert!(code == 35 && apis > 0, "ApiVersions v99: {code}, {apis} APIs");

    // Metadata v0, correlation 7, no client id, then a topic count of 2^31 - 1 in a short frame.
    let mut absurd = vec![0, 3, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    absurd.resize(64, 0);
    let malformed: [(&str, Vec<u8>); 4] = [
        ("garbage", vec![0xab; 64]),
        ("an absurd array count", absurd),
        ("Fetch v3 (below the advertised range)", [1i16.to_be_bytes(), 3i16.to_be_bytes()].concat()),
        ("unknown API key 999", [999i16.to_be_bytes(), 0i16.to_be_bytes()].concat()),
    ];
    for (what, body) in malformed {
        let mut b = wire::Conn::open(addr);
        let mut body = body;
        body.resize(body.len().max(12), 0);
        b.send_frame(&body);
        assert!(b.closed(), "{what}: the connection should be closed");
    }
    assert_eq!(wire::api_versions(&mut a, 0).0, 0, "the first connection is still served");
    assert_eq!(wire::produce(&mut a, "sturdy", 0, &wire::batch(b"second")), (0, 1));
    produce(addr, "sturdy", &[], &["k:third".to_string()]);
    let (ok, out, err) =
        kcat(&["-C", "-b", addr, "-t", "sturdy", "-o", "beginning", "-e", "-f", "%s\\n"], None);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["first", "second", "third"]);
}
