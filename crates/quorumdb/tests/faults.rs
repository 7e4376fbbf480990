//! The fault layer's server side through the admin API, on real `quorumdb server` processes:
//! what the lab's nemesis relies on when it asks a node for a slow disk.

mod common;

use common::Cluster;
use quorumdb_client::{ClientError, FaultRules, WriteOptions};
use std::time::{Duration, Instant};

fn w(level: &str) -> WriteOptions {
    WriteOptions { w: Some(level.into()), ..Default::default() }
}

/// Proves `fsync_delay_ms` set over `PUT /v1/admin/faults` slows every write that needs that
/// node's fsync by at least the delay, is echoed by `GET`, ends when the rules are replaced, and
/// an out-of-range delay is refused with a 400 that names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_delay_makes_a_slow_disk_until_cleared() {
    let c = Cluster::start("slow-disk", 3, 3, 3);
    let slow = c.client(0);
    let delay = Duration::from_millis(300);
    let rules = FaultRules { fsync_delay_ms: 300, ..FaultRules::default() };
    slow.set_fault_rules(&rules).await.unwrap();
    assert_eq!(slow.fault_rules().await.unwrap().fsync_delay_ms, 300);
    // With N = 3 of 3 nodes every node is a home replica, so w=all waits for n1's fsync.
    let started = Instant::now();
    c.client(1).put("t", "k", "v1", &w("all")).await.unwrap();
    assert!(started.elapsed() >= delay, "w=all did not wait for the slow disk: {:?}", started.elapsed());

    let err = slow.set_fault_rules(&FaultRules { fsync_delay_ms: 10_001, ..FaultRules::default() }).await;
    match err {
        Err(ClientError::Api { status: 400, message, .. }) => {
            assert!(message.contains("fsync_delay_ms must be at most 10000"), "{message}")
        }
        other => panic!("expected a 400, got {other:?}"),
    }

    slow.set_fault_rules(&FaultRules::default()).await.unwrap();
    assert_eq!(slow.fault_rules().await.unwrap().fsync_delay_ms, 0);
    // A group commit that began under the old rules (a background metadata or hint write) still
    // sleeps its full delay, and the next write queues behind it; one settling write drains it so
    // the timed write below sees only the new rules.
    c.client(1).put("t", "settle", "v", &w("all")).await.unwrap();
    let started = Instant::now();
    c.client(1).put("t", "k2", "v2", &w("all")).await.unwrap();
    assert!(started.elapsed() < delay, "the slow disk outlived its rules: {:?}", started.elapsed());
}
