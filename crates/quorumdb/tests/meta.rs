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

/// Stops every node cleanly, then starts them all again with their data.
fn restart_all(c: &mut Cluster) {
    for i in 0..c.nodes.len() {
        c.stop(i);
    }
    for i in 0..c.nodes.len() {
        c.spawn(i);
    }
    c.wait_ready();
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
    restart_all(&mut c);
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

/// Leases, locks and fencing tokens on real processes: a held lock refuses a second lease,
/// revoking frees it, a lease nobody renews expires by the leader's clock and releases its
/// lock, tokens keep growing across a SIGKILLed metadata leader and a full restart, and each
/// bad input gets its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_hand_out_growing_fencing_tokens_across_leader_loss_and_restart() {
    let mut c = Cluster::start("leases", 3, 3, 3);
    wait_layout(&c.client(0), 1).await;
    let a = c.client(0).grant_lease(30_000).await.unwrap();
    let b = c.client(1).grant_lease(30_000).await.unwrap();
    let t1 = c.client(2).acquire("scheduler", a.id, "host-a").await.unwrap().holder.unwrap().token;
    // The holder acquiring again gets its token back; another lease is refused.
    assert_eq!(c.client(0).acquire("scheduler", a.id, "host-a").await.unwrap().holder.unwrap().token, t1);
    assert_eq!(code(c.client(1).acquire("scheduler", b.id, "host-b").await.unwrap_err()), "held");
    c.client(0).revoke_lease(a.id).await.unwrap();
    let t2 = c.client(1).acquire("scheduler", b.id, "host-b").await.unwrap().holder.unwrap().token;
    assert!(t2 > t1, "{t2} after {t1}");

    // A short lease nobody renews expires (within its TTL plus a few ticks) and frees its lock.
    let short = c.client(0).grant_lease(1_000).await.unwrap();
    c.client(0).acquire("cron", short.id, "").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.client(0).lock("cron").await.unwrap().holder.is_some() {
        assert!(Instant::now() < deadline, "a 1 s lease was not expired within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(c.client(0).keepalive_lease(short.id).await.unwrap_err()), "unknown_lease");

    // Bad input.
    assert_eq!(code(c.client(0).grant_lease(10).await.unwrap_err()), "bad_request");
    assert_eq!(code(c.client(0).acquire("x", 999_999, "").await.unwrap_err()), "unknown_lease");
    assert_eq!(code(c.client(0).release("scheduler", t1).await.unwrap_err()), "not_holder");

    // Leader loss, then a full restart: leases survive (a new leader restarts their timers)
    // and the next token is still larger.
    let leader = c.index(&c.client(0).meta_status().await.unwrap().leader.unwrap());
    c.kill(leader);
    let other = (leader + 1) % 3;
    c.client(other).keepalive_lease(b.id).await.ok();
    c.spawn(leader);
    c.wait_ready();
    restart_all(&mut c);
    wait_layout(&c.client(0), 1).await;
    let held = c.client(0).lock("scheduler").await.unwrap().holder.unwrap();
    assert_eq!((held.lease, held.token), (b.id, t2));
    c.client(0).release("scheduler", t2).await.unwrap();
    let l = c.client(1).grant_lease(30_000).await.unwrap();
    let t3 = c.client(2).acquire("scheduler", l.id, "host-c").await.unwrap().holder.unwrap().token;
    assert!(t3 > t2, "{t3} after {t2}");
}

/// Fenced writes over HTTP: the current holder's token is accepted, the previous holder's is
/// refused with code `fenced` naming both tokens, a token never granted is `unknown_fence`, a
/// token of another name is refused too, and a malformed fence is `bad_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_refuse_stale_and_unknown_tokens() {
    use quorumdb_client::WriteOptions;
    let c = Cluster::start("fence", 3, 3, 3);
    wait_layout(&c.client(0), 1).await;
    let a = c.client(0).grant_lease(30_000).await.unwrap();
    let t1 = c.client(0).acquire("sched", a.id, "a").await.unwrap().holder.unwrap().token;
    let with = |fence: String| WriteOptions { fence: Some(fence), ..WriteOptions::default() };
    c.client(1).put("jobs", "p1", "by-a", &with(format!("sched:{t1}"))).await.unwrap();
    c.client(0).revoke_lease(a.id).await.unwrap();
    let b = c.client(1).grant_lease(30_000).await.unwrap();
    let t2 = c.client(1).acquire("sched", b.id, "b").await.unwrap().holder.unwrap().token;
    c.client(2).put("jobs", "p1", "by-b", &with(format!("sched:{t2}"))).await.unwrap();
    // The stale holder, through every node.
    for i in 0..3 {
        let e = c.client(i).put("jobs", "p1", "stale", &with(format!("sched:{t1}"))).await.unwrap_err();
        let message = e.to_string();
        assert_eq!(code(e), "fenced", "node {i}");
        assert!(message.contains(&t1.to_string()) && message.contains(&t2.to_string()), "{message}");
    }
    let e = c.client(0).put("jobs", "p1", "x", &with(format!("sched:{}", t2 + 100))).await.unwrap_err();
    assert_eq!(code(e), "unknown_fence");
    let e = c.client(0).put("jobs", "p1", "x", &with("nolock:1".into())).await.unwrap_err();
    assert_eq!(code(e), "unknown_fence");
    let e = c.client(0).put("jobs", "p1", "x", &with("sched".into())).await.unwrap_err();
    assert_eq!(code(e), "bad_request");
    // A token of another name: above this name's latest grant it was never granted here,
    // below it it is stale; either way the write is refused and the message names both.
    let tc = c.client(1).acquire("cron", b.id, "b").await.unwrap().holder.unwrap().token;
    let e = c.client(0).put("jobs", "p2", "x", &with(format!("sched:{tc}"))).await.unwrap_err();
    let message = e.to_string();
    assert_eq!(code(e), "unknown_fence");
    assert!(message.contains(&tc.to_string()) && message.contains(&t2.to_string()), "{message}");
    let e = c.client(0).put("jobs", "p2", "x", &with(format!("cron:{t2}"))).await.unwrap_err();
    assert_eq!(code(e), "fenced");
    let got = c.client(0).get("jobs", "p1", &Default::default()).await.unwrap();
    assert_eq!(got.values, vec!["by-b".to_string()]);
}
