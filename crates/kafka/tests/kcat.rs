//! Unmodified librdkafka (through `kcat`) against the listener and the in-memory broker:
//! metadata, producing (plain, idempotent, compressed) and consuming.
//!
//! kcat must be on PATH (Debian: `apt-get install -y kcat`; the repository's test script
//! installs it). Every kcat run has a deadline and is killed past it, so a hang fails the test.

mod support;

use std::process::Stdio;
use std::time::Duration;

use quorumdb_kafka::KafkaConfig;
use support::{start, Running};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Longest any one kcat run may take.
const KCAT_DEADLINE: Duration = Duration::from_secs(30);

fn kcat_path() -> std::path::PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("kcat")).find(|p| p.is_file()));
    found.unwrap_or_else(|| {
        panic!(
            "kcat is not on PATH: these tests drive librdkafka through it. Install it with \
             `apt-get install -y kcat` (scripts/test.sh installs it before running the tests)"
        )
    })
}

/// Runs kcat with `args`, feeding `stdin`; panics with its output if it fails or overruns.
async fn kcat(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(kcat_path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kcat");
    let mut input = child.stdin.take().expect("kcat stdin");
    input.write_all(stdin.as_bytes()).await.expect("write to kcat");
    drop(input);
    let out = match tokio::time::timeout(KCAT_DEADLINE, child.wait_with_output()).await {
        Ok(out) => out.expect("wait for kcat"),
        // Dropping the child kills it (kill_on_drop).
        Err(_) => panic!("kcat {args:?} did not finish within {KCAT_DEADLINE:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kcat {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

fn brokers(s: &Running) -> String {
    format!("127.0.0.1:{}", s.addr.port())
}

/// Produces `n` keyed messages to `topic` with extra `-X` settings; returns what was sent.
async fn produce(s: &Running, topic: &str, n: usize, extra: &[&str]) -> Vec<(String, String)> {
    let sent: Vec<(String, String)> =
        (0..n).map(|i| (format!("key{i}"), format!("value-{topic}-{i}"))).collect();
    let input: String = sent.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let b = brokers(s);
    let mut args = vec!["-P", "-b", &b, "-t", topic, "-K:", "-X", "linger.ms=20"];
    args.extend_from_slice(extra);
    kcat(&args, &input).await;
    sent
}

/// Consumes `topic` from the beginning to its end: `(key, value, offset)` per message.
async fn consume(s: &Running, topic: &str) -> Vec<(String, String, i64)> {
    let b = brokers(s);
    let out =
        kcat(&["-C", "-b", &b, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k:%s:%o\\n"], "").await;
    out.lines()
        .map(|l| {
            let mut parts = l.splitn(3, ':');
            let (k, v, o) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            (k.to_string(), v.to_string(), o.parse().unwrap_or_else(|_| panic!("bad line {l:?}")))
        })
        .collect()
}

fn check_round_trip(sent: &[(String, String)], got: &[(String, String, i64)]) {
    assert_eq!(got.len(), sent.len(), "every message once");
    for (i, ((k, v), (gk, gv, go))) in sent.iter().zip(got).enumerate() {
        assert_eq!((gk, gv, *go), (k, v, i as i64), "message {i} in order at a dense offset");
    }
}

/// kcat produces keyed messages, lists metadata, and consumes every message once, in order,
/// at dense offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produce_list_consume() {
    let s = start(KafkaConfig::default()).await;
    let sent = produce(&s, "plain", 200, &[]).await;
    let got = consume(&s, "plain").await;
    check_round_trip(&sent, &got);
    let listing = kcat(&["-L", "-b", &brokers(&s)], "").await;
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(listing.contains(&format!("broker 1 at 127.0.0.1:{}", s.addr.port())), "{listing}");
    assert!(listing.contains("topic \"plain\" with 1 partitions:"), "{listing}");
    assert_eq!(s.broker.batches("plain", 0).iter().map(|b| i64::from(b.records_count)).sum::<i64>(), 200);
}

/// An idempotent librdkafka producer gets a producer id and its batches carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_idempotent_producer() {
    let s = start(KafkaConfig::default()).await;
    let sent = produce(&s, "idem", 50, &["-X", "enable.idempotence=true"]).await;
    check_round_trip(&sent, &consume(&s, "idem").await);
    let batches = s.broker.batches("idem", 0);
    assert!(batches.iter().all(|b| b.producer_id >= 0 && b.producer_epoch == 0), "{batches:?}");
    assert_eq!(batches[0].base_sequence, 0);
}

/// Compressed batches (gzip, snappy, lz4, zstd) are stored as produced and consumed back by
/// kcat: the broker never decompresses. (librdkafka enables LZ4 only for brokers that
/// advertise FindCoordinator v0, which the group APIs brought.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_compressed_batches_pass_through() {
    let s = start(KafkaConfig::default()).await;
    for (codec, id) in [("gzip", 1u8), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("c-{codec}");
        let sent = produce(&s, &topic, 100, &["-X", &format!("compression.codec={codec}")]).await;
        let batches = s.broker.batches(&topic, 0);
        assert!(!batches.is_empty() && batches.iter().all(|b| b.compression() == id), "{codec}: {batches:?}");
        check_round_trip(&sent, &consume(&s, &topic).await);
    }
}
