//! A node joins a running cluster (`server --join`): the metadata group takes it as a raft
//! learner once a committed layout lists it, it catches up and follows later changes, a node
//! that is not in the layout is refused, and a joined node restarts without `--join`.

mod common;

use common::{free_ports, Cluster, BIN};
use quorumdb_api as api;
use quorumdb_client::Client;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `quorumdb server` for `id` in zone z1 whose config lists only itself, with `--join` when
/// given.
fn server(id: &str, http: u16, peer: u16, data: &Path, join: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["server", "--node-id", id, "--zone", "z1"])
        .args(["--http-listen", &format!("127.0.0.1:{http}"), "--peer-listen", &format!("127.0.0.1:{peer}")])
        .arg("--data-dir")
        .arg(data)
        .args(["--durability", "buffered"])
        .env("QUORUMDB_LOG", "info")
        .env_remove("QUORUMDB_CONFIG")
        .env_remove("QUORUMDB_MEMBERS");
    if let Some(addr) = join {
        cmd.args(["--join", addr]);
    }
    cmd
}

/// A server process, killed if the test ends without stopping it (a failed assertion).
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc(Some(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()))
}

/// Polls `client`'s metadata status until `done` holds (20 s at most).
async fn wait_meta(client: &Client, what: &str, done: impl Fn(&api::MetaStatus) -> bool) -> api::MetaStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        if let Ok(m) = client.meta_status().await {
            if done(&m) {
                return m;
            }
            last = Some(m);
        }
        assert!(Instant::now() < deadline, "{what} within 20 s; last status: {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM and wait: a clean stop.
fn stop(mut proc: Proc) {
    let Some(mut child) = proc.0.take() else { return };
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `--join`: n4 becomes a learner and follows metadata across a restart; n5 (not in the layout)
/// is refused; and the data written before the join streams to n4: once the transition is
/// done, every key is on at least W = 2 of its new replicas and n4 holds its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_cluster_as_a_metadata_learner() {
    let c = Cluster::start("join", 3, 3, 3);
    let seed = c.nodes[0].http.clone();
    let ports = free_ports(4);
    let (http4, peer4, http5, peer5) = (ports[0], ports[1], ports[2], ports[3]);
    wait_meta(&c.client(0), "a bootstrapped layout", |m| m.leader.is_some() && m.layout_version >= 1).await;
    let keys: Vec<String> = (0..200).map(|i| format!("j{i}")).collect();
    let quorum = quorumdb_client::WriteOptions { w: Some("quorum".into()), ..Default::default() };
    for (i, key) in keys.iter().enumerate() {
        c.client(i % 3).put("t", key, "before-join", &quorum).await.unwrap();
    }

    // n5 is not in any layout: refused, and told what to do.
    let data5 = c.dir.join("n5-data");
    let out: Output = server("n5", http5, peer5, &data5, Some(&seed)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "n5 started without being in the layout: {stderr}");
    assert!(
        stderr.contains("not a member of the latest committed layout") && stderr.contains("cluster join n5"),
        "{stderr}"
    );

    // Stage and commit n4 through the API.
    let n4 = api::MemberInfo {
        id: "n4".into(),
        zone: "z1".into(),
        peer_address: format!("127.0.0.1:{peer4}"),
        http_address: format!("http://127.0.0.1:{http4}"),
    };
    c.client(1).stage_change(&api::ChangeInfo::Join(n4)).await.unwrap();
    let committed = c.client(2).commit_layout(1).await.unwrap();
    assert_eq!(committed.layout_version, 2);
    // The leader adds n4 to the group as a learner (it is not running yet).
    wait_meta(&c.client(0), "n4 as a learner", |m| m.learners == ["n4"] && m.voters.len() == 3).await;

    let data4 = c.dir.join("n4-data");
    let n4 = spawn(server("n4", http4, peer4, &data4, Some(&seed)), &c.dir.join("n4.log"));
    let client4 = Client::new(&format!("http://127.0.0.1:{http4}")).unwrap();
    let status = wait_meta(&client4, "n4 catching up to layout 2", |m| m.layout_version >= 2).await;
    assert!(
        status.learners.contains(&"n4".to_string()) && !status.voters.contains(&"n4".into()),
        "{status:?}"
    );
    let layout = client4.layout().await.unwrap();
    let latest = layout.versions.last().unwrap();
    assert_eq!(latest.version, 2);
    assert!(latest.members.iter().any(|m| m.id == "n4"));

    // A table created afterwards reaches the learner.
    let table = api::TableInfo { name: "after_join".into(), replicas: 3, conflict: "lww".into() };
    c.client(0).create_table(&table).await.unwrap();
    wait_meta(&client4, "the new table on n4", |m| m.tables >= 1).await;
    assert_eq!(client4.table("after_join").await.unwrap().name, "after_join");

    // The data path: n4 acknowledges v2, everyone streams, reads move to v2, v1 retires.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = c.client(0).layout().await.unwrap();
        let live: Vec<u64> = l.versions.iter().filter(|v| v.live).map(|v| v.version).collect();
        if live == [2] && l.read_version == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the join's transition did not finish within 60 s: {l:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut on_n4 = 0;
    for key in &keys {
        let view = c.client(0).inspect("t", key, None).await.unwrap();
        let holding: Vec<&str> = view
            .replicas
            .iter()
            .filter(|r| r.values.iter().any(|v| v == "before-join"))
            .map(|r| r.node.as_str())
            .collect();
        assert!(holding.len() >= 2, "{key} on {holding:?} of its new replicas: {view:?}");
        on_n4 += usize::from(holding.contains(&"n4"));
    }
    // N = 3 over three zones puts one replica in each zone, and n4 shares z1 with n1, so n4
    // takes about half of z1's replicas: about half the keys, which it can only have received
    // by the streaming (they were written before it existed).
    let share = on_n4 as f64 / keys.len() as f64;
    assert!((0.3..0.7).contains(&share), "n4 holds {on_n4} of {} keys after the join", keys.len());
    eprintln!("join: n4 received {on_n4} of {} keys", keys.len());

    // Restart without --join: the data directory has the raft state and the join record.
    stop(n4);
    let n4 = spawn(server("n4", http4, peer4, &data4, None), &c.dir.join("n4-restart.log"));
    let status =
        wait_meta(&client4, "n4 back with its metadata", |m| m.layout_version >= 2 && m.tables >= 1).await;
    assert_eq!(status.learners, ["n4"], "{status:?}");
    wait_meta(&client4, "n4 hearing from the leader again", |m| m.leader.is_some()).await;
    // And it keeps following: a second table after the restart.
    let table = api::TableInfo { name: "after_restart".into(), replicas: 3, conflict: "lww".into() };
    c.client(1).create_table(&table).await.unwrap();
    wait_meta(&client4, "the second table on n4", |m| m.tables >= 2).await;
    stop(n4);
}
