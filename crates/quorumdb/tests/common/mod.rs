//! A real cluster of `quorumdb server` processes on loopback, for multi-process tests: a thin
//! test-friendly (panicking, `&self`) face over [`quorumdb::launcher`].
#![allow(dead_code)]

use quorumdb::launcher::{self, Cleanup, ClusterSpec, LocalCluster, NodeState, Ports};
use quorumdb_client::Client;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumdb");

/// How long a started node may take to answer `/readyz`.
const READY_TIMEOUT_MS: u64 = 30_000;
/// How long a SIGTERMed node may take to exit before it is killed.
const STOP_TIMEOUT_MS: u64 = 10_000;

pub struct NodeProc {
    pub id: String,
    pub zone: String,
    pub http: String,
    /// The Kafka listener's `host:port`.
    pub kafka: String,
    pub config: PathBuf,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
    /// The processes; dropping it kills them and removes `dir` unless the test panicked.
    procs: Mutex<LocalCluster>,
}

/// Reserves `n` distinct free loopback ports (bind to port 0, then release).
pub fn free_ports(n: usize) -> Vec<u16> {
    launcher::free_ports(n).unwrap()
}

impl Cluster {
    /// Starts `nodes` servers in `zones` zones (node i in zone z((i-1) mod zones + 1)), N = `n`.
    pub fn start(name: &str, nodes: usize, zones: usize, n: usize) -> Cluster {
        Cluster::start_with(name, nodes, zones, n, "")
    }

    /// Like [`Cluster::start`], with `extra` TOML (e.g. `[[tables]]`) merged into every config.
    pub fn start_with(name: &str, nodes: usize, zones: usize, n: usize, extra: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("qdb-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = ClusterSpec::new(nodes, zones, n, Ports::free(nodes).unwrap());
        // Tests inject faults over /v1/admin, unless the test sets admin_enabled itself.
        spec.admin_enabled = true;
        let int = toml::Value::Integer;
        spec.settings.insert("request_timeout_ms".into(), int(1500));
        // Fast failure detection keeps tests short, unless the test sets its own.
        if !extra.contains("failure_timeout_ms") {
            spec.settings.insert("heartbeat_interval_ms".into(), int(200));
            spec.settings.insert("failure_timeout_ms".into(), int(1000));
        }
        let extra: toml::Table = toml::from_str(extra).expect("extra test settings are not TOML");
        spec.settings.extend(extra);
        spec.settings_origin = "test settings".into();
        let mut procs = LocalCluster::create(BIN.as_ref(), &spec, &dir, None, Cleanup::RemoveUnlessPanicking)
            .unwrap_or_else(|e| panic!("cannot create cluster {name}: {e:#}"));
        let nodes = (0..procs.len())
            .map(|i| NodeProc {
                id: procs.id(i).to_owned(),
                zone: procs.zone(i).to_owned(),
                http: procs.http_url(i),
                kafka: procs.config(i).kafka_listen.clone().unwrap_or_default(),
                config: procs.config_path(i).to_owned(),
            })
            .collect();
        procs.spawn_all().unwrap();
        let c = Cluster { dir, nodes, procs: Mutex::new(procs) };
        c.wait_ready();
        c
    }

    fn procs(&self) -> MutexGuard<'_, LocalCluster> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts node `i` again (it must be down) with its config and data; does not wait.
    pub fn spawn(&mut self, i: usize) {
        self.procs().spawn(i).unwrap();
    }

    /// Waits until every running (not paused) node answers `/readyz`.
    pub fn wait_ready(&self) {
        let mut procs = self.procs();
        let running: Vec<usize> =
            (0..procs.len()).filter(|&i| procs.state(i) == NodeState::Running).collect();
        if let Err(e) = procs.wait_ready_blocking(&running, Duration::from_millis(READY_TIMEOUT_MS)) {
            panic!("{e:#}");
        }
    }

    /// The pid of node `i`'s process (it must be running).
    pub fn pid(&self, i: usize) -> u32 {
        self.procs().pid(i).expect("the node is running")
    }

    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.nodes[i].http).unwrap()
    }

    pub fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// Nodes whose process exited on its own since the last call (they are down now).
    pub fn reap_exited(&self) -> Vec<usize> {
        self.procs().reap_exited().into_iter().map(|(i, _, _)| i).collect()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.procs().kill(i).unwrap();
    }

    /// SIGSTOP: the process stays, but answers nothing (a GC pause, a hung VM).
    pub fn pause(&self, i: usize) {
        self.procs().pause(i).unwrap();
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        self.procs().resume(i).unwrap();
    }

    /// Removes a (stopped) node's data directory, as a replaced disk would.
    pub fn wipe(&self, i: usize) {
        let procs = self.procs();
        assert!(procs.state(i) == NodeState::Down, "stop the node before wiping it");
        std::fs::remove_dir_all(procs.data_path(i)).unwrap();
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self, i: usize) {
        self.procs().stop(i, Duration::from_millis(STOP_TIMEOUT_MS)).unwrap();
    }
}

/// Runs kcat with `args` and `extra` (security settings), feeding `input`; (success, stdout, stderr).
pub fn kcat(args: &[&str], extra: &[String], input: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("timeout")
        .args(["20", "kcat"])
        .args(args)
        .args(extra)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs (scripts/test.sh installs it)");
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}
