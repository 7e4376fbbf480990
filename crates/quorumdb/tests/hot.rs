//! Heat telemetry on real processes: `GET /v1/hot` and `quorumdb hot` find the partition key
//! that carries 1 % of the load among 500 evenly used ones, within 5 s, merged over every node,
//! and `/metrics` publishes the top keys' rates.

mod common;

use common::Cluster;
use quorumdb_api::HotQuery;
use quorumdb_client::WriteOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A key with 1 % of the writes and reads shows up as the hottest within 5 s of the load
/// starting, with a share near 1 % and every node's view merged; bad queries are 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_key_is_found_within_five_seconds() {
    let c = Cluster::start("hot", 3, 3, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let client = c.client(worker as usize % 3);
        let stop = stop.clone();
        load.spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                // Op i is on the celebrity when i % 100 == 0, else on one of 500 keys.
                let key = if i % 100 == 0 { "celebrity".to_string() } else { format!("user-{}", i % 500) };
                if (i / 4) % 2 == 0 {
                    let _ = client.put("feed", &key, "v", &WriteOptions::default()).await;
                } else {
                    let _ = client.get("feed", &key, &Default::default()).await;
                }
                i += 4;
            }
        });
    }
    let started = Instant::now();
    let found = loop {
        let r =
            c.client(1).hot(&HotQuery { table: Some("feed".into()), ..HotQuery::default() }).await.unwrap();
        if r.keys.first().is_some_and(|k| k.key == "celebrity") {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the 1 % key was not the hottest within 5 s: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The node's metrics publish the top keys' rates by rank (a few times a second).
    let metrics = reqwest::get(format!("{}/metrics", c.nodes[1].http)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("quorumdb_hot_key_share{rank=\"1\"}"), "{metrics}");
    assert!(metrics.contains("quorumdb_hot_key_ops_per_second{rank=\"1\",op=\"write\"}"), "{metrics}");
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert_eq!(found.scope, "cluster");
    assert_eq!(found.nodes.len(), 3, "{found:#?}");
    let top = &found.keys[0];
    assert!((0.004..0.03).contains(&top.share), "share {} should be near 1 %: {found:#?}", top.share);
    assert!(top.writes_per_s > 0.0 && top.reads_per_s > 0.0, "{top:?}");

    // One node's view alone, and bad input.
    let node =
        c.client(0).hot(&HotQuery { scope: Some("node".into()), ..HotQuery::default() }).await.unwrap();
    assert_eq!(node.nodes.len(), 1);
    for bad in [
        HotQuery { limit: Some(0), ..HotQuery::default() },
        HotQuery { limit: Some(10_000), ..HotQuery::default() },
        HotQuery { scope: Some("galaxy".into()), ..HotQuery::default() },
    ] {
        let e = c.client(0).hot(&bad).await.unwrap_err();
        assert_eq!(e.code(), Some("bad_request"), "{bad:?}: {e}");
    }
    let out = std::process::Command::new(common::BIN)
        .args(["hot", "--endpoint", &c.nodes[0].http, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["scope"], "cluster");
}
