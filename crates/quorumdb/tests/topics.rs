//! `quorumdb topic` and `/v1/topics` on a real cluster: topics created over HTTP are the ones
//! Kafka clients see, offsets shown match what kcat produced, and every refusal is a clear
//! error with a non-zero exit (CLI: the server's message) or a 4xx JSON body (HTTP: its code).

mod common;

use common::{Cluster, BIN};
use std::io::Write;
use std::process::{Command, Stdio};

fn quorumdb(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env("QUORUMDB_ENDPOINT", endpoint).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Produces `n` records to one partition with kcat, acks=all.
fn kcat_produce(broker: &str, topic: &str, partition: u32, n: usize) {
    let mut child = Command::new("timeout")
        .args(["60", "kcat", "-P", "-b", broker, "-t", topic, "-p", &partition.to_string(), "-X", "acks=all"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run kcat ({e}); run the tests with scripts/test.sh, which installs it")
        });
    let input: String = (0..n).map(|i| format!("record-{i}\n")).collect();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("ERROR"), "kcat produce failed: {err}");
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Proves the topic commands round-trip through the cluster: create with settings, list and
/// describe show kcat's records as exact high watermarks on every node, refusals exit non-zero
/// with the server's message, and a deleted topic disappears; `status` names each Kafka listener.
#[test]
fn topic_commands_create_describe_list_delete() {
    let c = Cluster::start("topics", 3, 3, 3);
    let (http0, http2) = (&c.nodes[0].http, &c.nodes[2].http);

    let (code, out, err) = quorumdb(
        http0,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--retention-ms",
            "3600000",
            "--retention-bytes",
            "-1",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created topic orders (3 partitions"), "{out}");
    assert!(out.contains("retention 3600000 ms / unlimited"), "{out}");

    kcat_produce(&c.nodes[1].kafka, "orders", 1, 40);
    kcat_produce(&c.nodes[2].kafka, "orders", 2, 7);

    // Every node's applied view reaches the same offsets (the produce was acknowledged only
    // after its offsets committed; a follower applies them within a heartbeat or two).
    let mut last = String::new();
    for _ in 0..50 {
        let (code, out, err) = quorumdb(http2, &["topic", "describe", "orders", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let t = json(&out);
        let hw: Vec<u64> = t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["high_watermark"].as_u64().unwrap())
            .collect();
        if hw == [0, 40, 7] {
            assert_eq!(t["retention_ms"], 3_600_000);
            assert!(t["retention_bytes"].is_null(), "{out}");
            assert_eq!(t["partitions"][1]["log_start_offset"], 0);
            assert!(t["partitions"][1]["bytes"].as_u64().unwrap() > 40 * 8, "{out}");
            last.clear();
            break;
        }
        last = out;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(last.is_empty(), "high watermarks never reached [0, 40, 7]: {last}");

    let (code, out, _) = quorumdb(http0, &["topic", "describe", "orders"]);
    assert_eq!(code, 0);
    // PARTITION LOG_START HIGH_WATERMARK RECORDS ...: kcat may send its 40 records in one batch
    // or several, so only the first four columns are checked.
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().take(4).collect()).collect();
    assert!(rows.iter().any(|r| r == &["1", "0", "40", "40"]), "{out}");

    let (code, out, _) = quorumdb(http0, &["topic", "list"]);
    assert_eq!(code, 0);
    let row: Vec<&str> = out.lines().find(|l| l.starts_with("orders ")).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["orders", "3", "3", "47"], "{out}");
    assert!(out.contains(&format!("Kafka bootstrap servers: {}", c.nodes[0].kafka)), "{out}");

    let (code, out, _) = quorumdb(http0, &["topic", "list", "-o", "json"]);
    assert_eq!(code, 0);
    let l = json(&out);
    assert_eq!(l["topics"].as_array().unwrap().len(), 1);
    assert_eq!(l["kafka_addresses"][2], c.nodes[2].kafka.as_str());

    // Refusals: each exits non-zero and names the server's code.
    let (code, _, err) = quorumdb(http0, &["topic", "create", "orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "create", "bad/name"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid topic"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "create", "zero", "--partitions", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid partitions"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "create", "wide", "--replication-factor", "9"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid replication factor"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "create", "neg", "--retention-ms", "-7"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid config"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "describe", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");

    // `status` shows where Kafka clients connect.
    let (code, out, _) = quorumdb(http0, &["status"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().contains("KAFKA"), "{out}");
    for n in &c.nodes {
        assert!(out.contains(&n.kafka), "{} missing from status: {out}", n.kafka);
    }

    let (code, out, err) = quorumdb(http0, &["topic", "delete", "orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleting topic orders"), "{out}");
    let (code, _, err) = quorumdb(http0, &["topic", "describe", "orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = quorumdb(http0, &["topic", "delete", "orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
}

/// Proves `/v1/topics` refuses malformed bodies with a 400 JSON error, not a 500 or a panic.
#[test]
fn topics_http_refuses_bad_bodies() {
    let c = Cluster::start("topics-http", 3, 3, 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/topics", c.nodes[0].http);
        for body in [
            r#"{"name": "t", "partitons": 3}"#,
            "not json",
            r#"{"partitions": 3}"#,
            r#"{"name": "t", "partitions": -1}"#,
        ] {
            let r =
                http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(r.status(), 400, "{body}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "bad_request", "{body}: {v}");
        }
        let r = http.get(format!("{url}/none")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unknown_topic");
    });
}
