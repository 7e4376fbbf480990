//! The CLI contract: `demo` output lines and signals, and the client commands' output and exit
//! codes, run as real processes against a real cluster.

mod common;

use common::{free_ports, BIN};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn quorumdb(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env("QUORUMDB_ENDPOINT", endpoint).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Finds a base port whose HTTP (base+1..) and peer (base+101..) ports are all free.
fn free_base_port(nodes: u16) -> u16 {
    for _ in 0..50 {
        let base = free_ports(1)[0].saturating_sub(200).max(20_000);
        let all_free = (1..=nodes)
            .flat_map(|i| [base + i, base + 100 + i])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

/// Proves `demo` prints exactly one contract line per node then `ready`, that every client
/// command works against it with the documented output and exit codes, and that SIGTERM stops
/// every node and exits 0.
#[test]
fn demo_contract_and_client_commands() {
    let base = free_base_port(3);
    let dir = std::env::temp_dir().join(format!("qdb-cli-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut demo = Command::new(BIN)
        .args(["demo", "--nodes", "3", "--zones", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    let demo_stderr = demo.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(demo_stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut pids = Vec::new();
    for i in 1..=3u16 {
        let line = lines.next().unwrap().unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 7, "{line}");
        assert_eq!(
            &parts[..6],
            [
                "node",
                &format!("n{i}"),
                "zone",
                &format!("z{i}"),
                &format!("http://127.0.0.1:{}", base + i),
                "pid"
            ]
        );
        pids.push(parts[6].parse::<u32>().unwrap());
    }
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    assert!(dir.join("n2").join("quorumdb.toml").exists());

    let ep = format!("http://127.0.0.1:{}", base + 1);
    let (code, out, err) = quorumdb(&ep, &["put", "users", "u1", "hello"]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_string();
    assert!(!token.is_empty());

    let (code, out, _) = quorumdb(&ep, &["get", "users", "u1", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["values"], serde_json::json!(["hello"]));
    assert!(v["context"].is_string());

    let (code, out, _) = quorumdb(&ep, &["get", "users", "missing", "-o", "json"]);
    assert_eq!(code, 1, "a missing key exits 1");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["values"], serde_json::json!([]));

    for sk in ["a", "b", "c"] {
        let (code, _, err) =
            quorumdb(&ep, &["put", "feed", "u1", &format!("e-{sk}"), "--sort-key", sk, "--w", "all"]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = quorumdb(&ep, &["scan", "feed", "u1", "--limit", "2", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["items"][0]["sort_key"], "a");
    assert!(v["next"].is_string());

    let (code, _, err) = quorumdb(&ep, &["delete", "users", "u1"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = quorumdb(&ep, &["get", "users", "u1"]);
    assert_eq!(code, 1);

    let (code, out, _) = quorumdb(&ep, &["status", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let total: f64 = nodes.iter().map(|n| n["ownership"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6);
    assert!(nodes.iter().all(|n| n["state"] == "up"));

    let (code, _, err) = quorumdb(&ep, &["get", "users", "u1", "--r", "7"]);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "one clear line on stderr: {err}");
    assert!(err.contains("r=7"), "{err}");

    let (code, _, err) = quorumdb("http://127.0.0.1:1", &["get", "users", "u1"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach"), "{err}");

    // A node that dies is reported on stderr and the others keep running.
    Command::new("kill").arg("-KILL").arg(pids[2].to_string()).status().unwrap();
    let reported = err_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    assert!(reported.contains("node n3") && reported.contains("exited"), "{reported}");
    assert!(demo.try_wait().unwrap().is_none(), "demo must keep running");
    let (code, _, err) = quorumdb(&ep, &["put", "users", "after", "v", "--w", "quorum"]);
    assert_eq!(code, 0, "two of three nodes still take quorum writes: {err}");

    // Stop the demo: every node stops and the demo exits 0.
    Command::new("kill").arg("-TERM").arg(demo.id().to_string()).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = demo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "node pid {pid} still running"
        );
    }
    // Data is kept with --data-dir.
    assert!(dir.join("n1").join("data").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

/// Proves `quorumdb nemesis partition` cuts a node off (its W=all writes fail naming the
/// unreachable replicas), `show` reports the rules, and `heal` restores service.
#[test]
fn nemesis_partition_and_heal() {
    let c = common::Cluster::start("nemesis", 3, 3, 3);
    let ep = c.nodes[0].http.clone();
    let (code, _, err) = quorumdb(&ep, &["nemesis", "partition", "--from", "n1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = quorumdb(&ep, &["nemesis", "show"]);
    assert_eq!(code, 0);
    assert!(out.contains("n2") && out.contains("block_send_to"), "{out}");
    let (code, _, err) = quorumdb(&ep, &["put", "t", "k", "v", "--w", "all"]);
    assert_ne!(code, 0, "a partitioned node cannot reach W=all");
    assert!(err.contains("quorum not reached") || err.contains("no home replica"), "{err}");
    let (code, _, err) = quorumdb(&ep, &["nemesis", "heal"]);
    assert_eq!(code, 0, "{err}");
    // The failure detector needs one successful heartbeat to see the peers up again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = quorumdb(&ep, &["status", "-o", "json"]);
        if !out.contains("\"down\"") {
            break;
        }
        assert!(Instant::now() < deadline, "peers still down after heal: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = quorumdb(&ep, &["put", "t", "k", "v", "--w", "all"]);
    assert_eq!(code, 0, "after heal: {err}");
    let (code, _, err) = quorumdb(&ep, &["nemesis", "partition", "--from", "n9"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown node"), "{err}");
}
