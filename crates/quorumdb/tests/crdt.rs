//! CRDT tables on a real cluster of `quorumdb server` processes (issue #14).

mod common;

use common::Cluster;
use quorumdb_api::crdt::{CrdtOpBody, CrdtReadQuery, CrdtResponse, CrdtWriteQuery};
use quorumdb_client::{Client, ClientError};
use std::time::{Duration, Instant};

const TABLES: &str = "[[tables]]\nname = \"carts\"\nconflict = \"crdt-map\"\n\
                      [[tables]]\nname = \"likes\"\nconflict = \"crdt-counter\"\n\
                      [[tables]]\nname = \"tags\"\nconflict = \"crdt-set\"\n";

fn op(op: &str, field: Option<&str>, element: Option<&str>, context: Option<String>) -> CrdtOpBody {
    CrdtOpBody {
        op: op.into(),
        field: field.map(Into::into),
        element: element.map(Into::into),
        context,
        ..Default::default()
    }
}

fn w(level: &str) -> CrdtWriteQuery {
    CrdtWriteQuery { w: Some(level.into()), ..Default::default() }
}

async fn get(c: &Client, table: &str, key: &str, r: &str) -> CrdtResponse {
    c.crdt_get(table, key, &CrdtReadQuery { r: Some(r.into()), ..Default::default() }).await.unwrap()
}

fn items(r: &CrdtResponse) -> Vec<(String, i64)> {
    r.crdt.fields.iter().flatten().filter_map(|(k, f)| f.counter.map(|n| (k.clone(), n))).collect()
}

fn status(e: &ClientError) -> u16 {
    match e {
        ClientError::Api { status, .. } => *status,
        other => panic!("expected an API error, got {other}"),
    }
}

/// Proves the three CRDT types over HTTP: counter increments from several nodes add up, a set
/// remove removes what its read saw, a cart keeps items added concurrently on both sides of a
/// partition (adds win over a concurrent remove), and after healing every replica converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crdt_tables_merge_across_a_partition() {
    let c = Cluster::start_with("crdt", 3, 3, 3, TABLES);
    for i in 0..3 {
        let body = CrdtOpBody { op: "incr".into(), by: Some(i as i64 + 1), ..Default::default() };
        c.client(i).crdt_op("likes", "post1", &w("quorum"), &body).await.unwrap();
    }
    assert_eq!(get(&c.client(0), "likes", "post1", "all").await.crdt.value, Some(6));

    c.client(0).crdt_op("tags", "t", &w("all"), &op("add", None, Some("red"), None)).await.unwrap();
    let seen = get(&c.client(1), "tags", "t", "all").await;
    c.client(2).crdt_op("tags", "t", &w("all"), &op("add", None, Some("blue"), None)).await.unwrap();
    let after = c
        .client(1)
        .crdt_op("tags", "t", &w("all"), &op("remove", None, Some("red"), Some(seen.context)))
        .await;
    assert_eq!(after.unwrap().crdt.elements, Some(vec!["blue".to_string()]));

    // A cart: apple added everywhere, then n1 cut off from n2 and n3.
    let cart = |f: &str| op("incr", Some(f), None, None);
    c.client(0).crdt_op("carts", "alice", &w("all"), &cart("apple")).await.unwrap();
    let before_cut = get(&c.client(0), "carts", "alice", "all").await;
    let http = reqwest::Client::new();
    let faults = |i: usize, rules: serde_json::Value| {
        let req = http.put(format!("{}/v1/admin/faults", c.nodes[i].http)).json(&rules);
        async move { assert!(req.send().await.unwrap().status().is_success()) }
    };
    let cut = serde_json::json!({"block_send_to": ["n2", "n3"], "block_receive_from": ["n2", "n3"]});
    faults(0, cut).await;
    // Side A (n1, w=one): adds pear and removes apple as it saw it. Side B: re-adds apple.
    c.client(0).crdt_op("carts", "alice", &w("one"), &cart("pear")).await.unwrap();
    c.client(0)
        .crdt_op("carts", "alice", &w("one"), &op("remove", Some("apple"), None, Some(before_cut.context)))
        .await
        .unwrap();
    c.client(1).crdt_op("carts", "alice", &w("quorum"), &cart("apple")).await.unwrap();
    c.client(1).crdt_op("carts", "alice", &w("quorum"), &cart("fig")).await.unwrap();
    faults(0, serde_json::json!({})).await;
    // Every replica converges on apple (the re-add wins), pear and fig.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = c.client(2).inspect("carts", "alice", None).await.unwrap();
        let states: Vec<_> = view.replicas.iter().map(|r| r.crdt.clone()).collect();
        let want = |s: &Option<quorumdb_api::crdt::CrdtValue>| {
            s.as_ref()
                .and_then(|v| v.fields.as_ref())
                .is_some_and(|f| f.keys().cloned().collect::<Vec<_>>() == ["apple", "fig", "pear"])
        };
        if states.iter().all(want) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas never converged: {states:?}");
        // Reads repair; anti-entropy and hints do the rest.
        let _ = c
            .client(2)
            .crdt_get("carts", "alice", &CrdtReadQuery { r: Some("all".into()), ..Default::default() })
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = get(&c.client(0), "carts", "alice", "all").await;
    let got = items(&end);
    assert_eq!(got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["apple", "fig", "pear"], "{end:?}");
}

/// Proves bad input gets a clear 4xx: an operation that does not fit the table's type, a
/// malformed or foreign context, a remove without a context, a plain put to a CRDT table, and
/// a CRDT operation on a table that is not a CRDT table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crdt_bad_input_is_refused_with_4xx() {
    let c = Cluster::start_with("crdt-bad", 3, 3, 3, TABLES);
    let cl = c.client(0);
    let q = CrdtWriteQuery::default();
    let e = cl.crdt_op("likes", "k", &q, &op("add", None, Some("x"), None)).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    assert!(e.to_string().contains("does not fit a counter table"), "{e}");
    let e = cl.crdt_op("carts", "k", &q, &op("incr", None, None, None)).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    let e = cl
        .crdt_op("tags", "k", &q, &op("remove", None, Some("x"), Some("garbage!".into())))
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    assert!(e.to_string().contains("malformed"), "{e}");
    let e = cl.crdt_op("tags", "k", &q, &op("remove", None, Some("x"), None)).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    assert!(e.to_string().contains("context"), "{e}");
    // An item token is not a CRDT context (signed for another address).
    let token = cl.put("plain", "k", "v", &Default::default()).await.unwrap().context;
    let e = cl.crdt_op("tags", "k", &q, &op("remove", None, Some("x"), Some(token))).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    let e = cl.put("carts", "k", "plain value", &Default::default()).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    let e = cl.crdt_op("plain", "k", &q, &op("incr", None, None, None)).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
    assert!(e.to_string().contains("not a CRDT table"), "{e}");
    let e = cl.crdt_op("carts", "k", &q, &op("explode", Some("f"), None, None)).await.unwrap_err();
    assert_eq!(status(&e), 400, "{e}");
}
