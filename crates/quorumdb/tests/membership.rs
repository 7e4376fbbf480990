//! Online membership changes on real server processes: a committed layout moves the data
//! path (dual writes, streaming, the read switch, retirement) while clients keep writing, and
//! no acknowledged write is lost.

mod common;

use common::Cluster;
use quorumdb_api as api;
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits until the layout's transition to `version` is finished: it is the only live version
/// and reads use it. Returns the layout answer.
async fn wait_transition_done(client: &Client, version: u64, within: Duration) -> api::LayoutHistory {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(l) = client.layout().await {
            let live: Vec<u64> = l.versions.iter().filter(|v| v.live).map(|v| v.version).collect();
            if live == [version] && l.read_version == version {
                return l;
            }
            assert!(Instant::now() < deadline, "transition to v{version} not done within {within:?}: {l:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes unique keys through `clients` round-robin at `w=quorum` until `stop`; returns the
/// keys acknowledged and the number of failed attempts.
async fn write_until(clients: Vec<Client>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) -> usize {
    let mut failed = 0;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{i}");
        let c = &clients[i % clients.len()];
        let opts = WriteOptions { w: Some("quorum".into()), ..Default::default() };
        match c.put("t", &key, &format!("v{i}"), &opts).await {
            Ok(_) => acked.lock().unwrap().push(key),
            Err(_) => failed += 1,
        }
        i += 1;
    }
    failed
}

/// A member leaves a 4-node cluster (3 zones, N = 3) while a client writes: the transition
/// finishes (every member acknowledged, streamed and switched reads), and afterwards every
/// acknowledged key is held by at least 2 (W) of its new replicas — checked per replica with
/// `inspect` after the leaving node is killed, so nothing is read from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_under_load_keeps_every_acknowledged_write() {
    let mut c = Cluster::start("leave", 4, 3, 3);
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer =
        tokio::spawn(write_until((0..3).map(|i| c.client(i)).collect(), stop.clone(), acked.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n4 = c.nodes[3].id.clone();
    let admin = c.client(0);
    let before = admin.layout().await.unwrap().versions.last().unwrap().version;
    admin.stage_change(&api::ChangeInfo::Leave { id: n4.clone() }).await.unwrap();
    admin.commit_layout(before).await.unwrap();
    let started = Instant::now();
    let layout = wait_transition_done(&admin, before + 1, Duration::from_secs(60)).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failed = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 50, "only {} writes acknowledged", acked.len());
    assert!(layout.progress.iter().all(|p| p.id != n4), "the leaver is still tracked: {layout:?}");
    c.kill(3);

    let mut short = Vec::new();
    for key in &acked {
        let view = admin.inspect("t", key, None).await.unwrap();
        let holding = view.replicas.iter().filter(|r| r.values.iter().any(|v| v.starts_with('v'))).count();
        assert!(view.replicas.iter().all(|r| r.node != n4), "{n4} still a replica of {key}: {view:?}");
        if holding < 2 {
            short.push(format!("{key}: {holding} replicas"));
        }
    }
    assert!(short.is_empty(), "acknowledged writes on fewer than W new replicas: {short:?}");
    // And through the normal read path.
    for key in acked.iter().step_by(7) {
        let got = admin.get("t", key, &ReadOptions { r: Some("quorum".into()), ..Default::default() }).await;
        assert!(got.is_ok_and(|g| !g.values.is_empty()), "{key} unreadable after the leave");
    }
    eprintln!(
        "leave under load: {} writes acknowledged, {failed} failed attempts, transition took {:.1} s",
        acked.len(),
        took.as_secs_f64()
    );
}
