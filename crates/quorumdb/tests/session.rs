//! Session tokens (`X-QuorumDB-Session`) on real `quorumdb server` processes: read-your-writes
//! at `r=one` against a replica that misses every write, and clear refusals of bad tokens.

mod common;

use common::Cluster;
use quorumdb_client::{ClientError, FaultRules, ReadOptions, Session, WriteOptions};
use std::collections::HashSet;

fn w(level: &str) -> WriteOptions {
    WriteOptions { w: Some(level.into()), ..Default::default() }
}

/// Waits until every node signs the contexts it hands out: the cluster's first key comes from
/// the metadata leader moments after founding, and a node cut off before it learns the key
/// could not verify the session's signed tokens.
async fn wait_for_signing_keys(c: &Cluster) {
    for i in 0..c.nodes.len() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ctx = c.client(i).put("warmup", "k", "v", &WriteOptions::default()).await.unwrap().context;
            if ctx.contains('.') {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{} never learned a signing key", c.nodes[i].id);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn r_one() -> ReadOptions {
    ReadOptions { r: Some("one".into()), ..Default::default() }
}

/// Writes `rounds` values of one key through n1 (which cannot send to n3, so n3 misses each
/// write) and reads each back at r=one through n3; returns how many reads missed the write
/// just acknowledged.
async fn stale_reads(c: &Cluster, key: &str, rounds: usize, session: Option<Session>) -> usize {
    let (mut writer, mut reader) = (c.client(0), c.client(2));
    if let Some(s) = session {
        writer = writer.with_session(s.clone());
        reader = reader.with_session(s);
    }
    let mut stale = 0;
    for i in 0..rounds {
        let value = format!("v{i}");
        writer.put("feed", key, &value, &w("2")).await.unwrap();
        let got = reader.get("feed", key, &r_one()).await.unwrap();
        // Blind writes leave siblings; what matters is whether the read holds this one.
        if !got.values.contains(&value) {
            stale += 1;
        }
    }
    stale
}

/// Proves a session makes an r=one read through a lagging replica return the session's own
/// latest write every time, while the same reads without a session return older values (so
/// the setup really lags); and that the CLI's `--session FILE` keeps the session across
/// commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_its_own_writes_at_r_one_through_a_lagging_replica() {
    let c = Cluster::start("session-ryw", 3, 3, 3);
    wait_for_signing_keys(&c).await;
    let cut = FaultRules { block_send_to: HashSet::from(["n3".to_string()]), ..FaultRules::default() };
    c.client(0).set_fault_rules(&cut).await.unwrap();

    let without = stale_reads(&c, "plain", 10, None).await;
    assert!(
        without >= 5,
        "only {without} of 10 plain r=one reads through the lagging n3 were stale: no lag to test against"
    );
    let with = stale_reads(&c, "session", 10, Some(Session::new())).await;
    assert_eq!(with, 0, "{with} of 10 session reads returned older than the session's own write");

    // The CLI: put through n1, get through n3, one session file.
    let file = c.dir.join("session.token");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let session = file.to_str().unwrap();
    run(&["put", "feed", "cli", "first", "--w", "2", "--session", session, "--endpoint", &c.nodes[0].http]);
    run(&["put", "feed", "cli", "second", "--w", "2", "--session", session, "--endpoint", &c.nodes[0].http]);
    let got =
        run(&["get", "feed", "cli", "--r", "one", "--session", session, "--endpoint", &c.nodes[2].http]);
    assert!(got.lines().any(|l| l == "second"), "the session's own write is missing: {got}");
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("s1."));
}

/// Proves a forged, altered or garbled session token is refused with 400 `malformed_session`
/// (never served, never silently ignored), and an empty one starts a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_tokens_are_refused() {
    let c = Cluster::start("session-bad", 1, 1, 1);
    wait_for_signing_keys(&c).await;
    let session = Session::new();
    let client = c.client(0).with_session(session.clone());
    client.put("t", "k", "v", &WriteOptions::default()).await.unwrap();
    let good = session.token();
    assert!(good.starts_with("s1.") && good.matches('.').count() == 2, "a signed token: {good}");
    let (body, sig) = good.rsplit_once('.').unwrap();
    let altered = format!("{}0.{sig}", body.trim_end_matches('A'));
    for bad in [altered.as_str(), body, "s1.nothex:AQA", "garbage", &format!("{good}x")] {
        let c2 = c.client(0).with_session(Session::from_token(bad));
        match c2.get("t", "k", &ReadOptions::default()).await {
            Err(ClientError::Api { status: 400, code, message, .. }) => {
                assert_eq!(code, "malformed_session", "{bad}: {message}");
                assert!(message.contains("session token"), "{message}");
            }
            other => panic!("token {bad:?} was not refused: {other:?}"),
        }
    }
    let fresh = Session::new();
    let got = c.client(0).with_session(fresh.clone()).get("t", "k", &ReadOptions::default()).await.unwrap();
    assert_eq!(got.values, ["v"]);
    assert!(fresh.token().starts_with("s1."));
}
