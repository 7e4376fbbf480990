//! The metadata Raft group on real server processes over loopback TCP: founding from the
//! configured members, staged membership changes and tables through the HTTP API, the bad
//! inputs refused with their codes, and the layout surviving crashes and a full restart.

mod common;

use common::Cluster;
use quorumdb_api as api;
use quorumdb_client::{Client, ClientError};
use std::time::{Duration, Instant};

/// Waits until `client`'s node reports a leader and a bootstrapped layout at `version` or
/// later; returns its status.
async fn wait_layout(client: &Client, version: u64) -> api::MetaStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(m) = client.meta_status().await {
            if m.leader.is_some() && m.layout_version >= version {
                return m;
            }
        }
        assert!(Instant::now() < deadline, "no leader with layout version {version} within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member(id: &str, zone: &str) -> api::MemberInfo {
    api::MemberInfo {
        id: id.into(),
        zone: zone.into(),
        peer_address: format!("127.0.0.1:1{id}"),
        http_address: format!("http://127.0.0.1:2{id}"),
    }
}

fn code(e: ClientError) -> String {
    e.code().unwrap_or("(no code)").to_owned()
}

/// A fresh cluster founds its metadata from the configured members (5 voters over 3 zones),
/// accepts staged changes and tables through any node, refuses each bad input with its code,
/// and keeps layout and tables across a SIGKILLed node and a full clean restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_and_tables_commit_through_raft_and_survive_restarts() {
    let mut c = Cluster::start("meta", 5, 3, 3);
    let status = wait_layout(&c.client(0), 1).await;
    assert_eq!(status.voters.len(), 5, "{status:?}");
    let layout = c.client(1).layout().await.unwrap();
    assert_eq!(layout.versions.len(), 1);
    assert_eq!(layout.versions[0].members.len(), 5);

    // A change staged through one node, committed through another.
    let staged = c.client(2).stage_change(&api::ChangeInfo::Join(member("n6", "z3"))).await.unwrap();
    assert_eq!((staged.layout_version, staged.staged), (1, 1));
    let plan = c.client(3).plan().await.unwrap();
    assert_eq!((plan.from_version, plan.to_version), (1, 2));
    assert!(plan.zone_spread_ok && plan.error.is_none(), "{plan:?}");
    // A sixth node takes about 1/6 of the replica placements.
    assert!((0.12..0.22).contains(&plan.moved_fraction), "{plan:?}");

    // Bad inputs: each refused with its code, nothing applied.
    let dup = c.client(0).stage_change(&api::ChangeInfo::Join(member("n2", "z2"))).await.unwrap_err();
    assert_eq!(code(dup), "duplicate_member");
    let stale = c.client(0).commit_layout(7).await.unwrap_err();
    assert_eq!(code(stale), "stale_plan");
    let committed = c.client(4).commit_layout(1).await.unwrap();
    assert_eq!((committed.layout_version, committed.staged), (2, 0));
    let nothing = c.client(0).commit_layout(2).await.unwrap_err();
    assert_eq!(code(nothing), "nothing_staged");
    // z2 holds n2 and n5: with both gone, 3 replicas cannot find 3 zones.
    c.client(0).stage_change(&api::ChangeInfo::Leave { id: "n2".into() }).await.unwrap();
    let spread = c.client(0).stage_change(&api::ChangeInfo::Leave { id: "n5".into() }).await.unwrap_err();
    assert_eq!(code(spread), "breaks_zone_spread");
    let unknown = c.client(0).stage_change(&api::ChangeInfo::Leave { id: "n9".into() }).await.unwrap_err();
    assert_eq!(code(unknown), "unknown_member");
    c.client(0).unstage().await.unwrap();

    let table = api::TableInfo { name: "carts".into(), replicas: 3, conflict: "lww".into() };
    c.client(1).create_table(&table).await.unwrap();
    let exists = c.client(2).create_table(&table).await.unwrap_err();
    assert_eq!(code(exists), "table_exists");
    let bad = api::TableInfo { name: "x".into(), replicas: 9, conflict: "siblings".into() };
    assert_eq!(code(c.client(2).create_table(&bad).await.unwrap_err()), "bad_request");

    // A crashed node catches up from its durable log; then the whole cluster restarts.
    let leader = c.index(&c.client(0).meta_status().await.unwrap().leader.unwrap());
    c.kill(leader);
    c.spawn(leader);
    c.wait_ready();
    for i in 0..5 {
        c.stop(i);
    }
    for i in 0..5 {
        c.spawn(i);
    }
    c.wait_ready();
    for i in 0..5 {
        let m = wait_layout(&c.client(i), 2).await;
        assert_eq!(m.layout_version, 2, "node {i}: {m:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.client(i).table("carts").await {
                Ok(t) => break assert_eq!(t, table),
                Err(e) => {
                    assert!(Instant::now() < deadline, "node {i} lacks the table after the restart: {e}")
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let layout = c.client(0).layout().await.unwrap();
    assert_eq!(layout.versions.last().unwrap().members.len(), 6);
    assert!(layout.staged.is_empty());
}
