//! The lab's own local cluster: real `quorumdb server` processes on loopback, and the nemesis
//! that the scenario drivers use against them.
//!
//! Process faults (SIGKILL, restart, SIGSTOP/SIGCONT) act on processes this module started, by
//! their pid; network and clock faults go through each node's `/v1/admin/faults`. The driver
//! keeps the whole fault state of every node ([`NodeFaults`]) and always sends it complete,
//! because `PUT /v1/admin/faults` replaces a node's rules rather than amending them.
//!
//! [`LabCluster`] is the teardown guard: dropping it (normal return, `?` error or panic unwind)
//! SIGKILLs every process it started and removes the temporary data directory, so a failed run
//! never leaves servers behind.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorumdb_client::Client;
use quorumdb_node::config::{MemberConfig, NodeConfig, TableConfig};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started or restarted node may take to answer `/readyz`. Start-up opens fjall and
/// binds two sockets: well under a second in release, a few seconds in a loaded debug build.
pub const READY_TIMEOUT_MS: u64 = 30_000;
/// How long the lab waits for every running node to see every other running node as up.
/// The failure detector needs one successful heartbeat (`HEARTBEAT_INTERVAL_MS`).
pub const ALL_UP_TIMEOUT_MS: u64 = 20_000;
/// How long one full anti-entropy pass on every node may take before the lab gives up. The
/// lab's key sets are tiny (at most a few hundred keys), so a pass takes well under a second;
/// the bound only stops a stuck pass from hanging the run.
pub const REPAIR_TIMEOUT_MS: u64 = 60_000;
/// Heartbeat period of lab clusters. Shorter than the server default (500 ms) so that a killed
/// zone is detected, and a restarted one readmitted, within a small fraction of a phase.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
/// Failure-detector timeout of lab clusters (server default 3000 ms), for the same reason.
pub const FAILURE_TIMEOUT_MS: u64 = 1_000;
/// Default server-side quorum timeout of lab clusters. Requests pass their own `timeout_ms`
/// anyway; this covers internal reads (deletes without a token) and repair traffic.
pub const SERVER_REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Client-side bound on one HTTP call: the server's quorum timeout plus slack for a loaded
/// machine. A paused (SIGSTOP) node accepts connections but never answers; this is what ends
/// such a call.
pub const CLIENT_TIMEOUT_MS: u64 = 3_000;
/// Pause between polls while waiting for readiness, liveness or repair.
const POLL_MS: u64 = 50;

/// The shape of a lab cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub zones: usize,
    /// Default replication factor N.
    pub replication_factor: usize,
    /// Tables whose settings differ from the defaults (e.g. `lww` conflict mode).
    pub tables: Vec<TableConfig>,
}

/// Network and clock faults of one node, as the driver wants them. Sent whole on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFaults {
    /// Peers this node neither sends to nor accepts messages from (a two-way cut).
    pub cut_from: BTreeSet<String>,
    /// Added to the node's wall clock.
    pub clock_offset_ms: i64,
}

impl NodeFaults {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "block_send_to": self.cut_from,
            "block_receive_from": self.cut_from,
            "clock_offset_ms": self.clock_offset_ms,
        })
    }
}

/// Whether a node process is running, stopped by SIGSTOP, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Paused,
    Killed,
}

/// One server process and what the lab knows about it.
struct NodeProc {
    id: String,
    zone: String,
    /// `host:port` of the HTTP listener (readiness probes).
    http_addr: String,
    config_path: PathBuf,
    /// The node's stdout and stderr, appended to across restarts.
    log_path: PathBuf,
    /// `None` once killed; the pid of a `Some` child is ours to signal.
    child: Option<Child>,
    state: ProcState,
    /// The faults the driver last sent to this node.
    faults: NodeFaults,
}

/// A running lab cluster; dropping it kills every node and removes the data directory.
pub struct LabCluster {
    exe: PathBuf,
    /// Temporary directory with each node's config and data; removed on drop.
    data_dir: PathBuf,
    nodes: Vec<NodeProc>,
    /// One client per node (index-aligned); clones share a connection pool.
    clients: Vec<Client>,
}

/// Reserves `n` distinct free loopback ports: bind each to port 0, read it, release them all.
/// Another process could take a port between release and the server's bind; the server then
/// exits at start-up and [`LabCluster::start`] reports it with the node's log.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("cannot reserve a loopback port"))
        .collect::<Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl LabCluster {
    /// Writes the configs, starts every node and waits until all answer `/readyz` and see each
    /// other up. Node logs go to `log_dir/<id>.log`.
    pub async fn start(spec: &ClusterSpec, log_dir: &Path) -> Result<LabCluster> {
        if spec.nodes == 0 || spec.zones == 0 || spec.zones > spec.nodes {
            bail!("a lab cluster needs 1 <= zones <= nodes (got {} zones, {} nodes)", spec.zones, spec.nodes);
        }
        let exe = std::env::current_exe().context("cannot find the quorumdb executable")?;
        let data_dir = std::env::temp_dir().join(format!(
            "quorumdb-lab-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let ports = free_ports(spec.nodes * 2)?;
        let zone = |i: usize| format!("z{}", i % spec.zones + 1);
        let members: Vec<MemberConfig> = (0..spec.nodes)
            .map(|i| MemberConfig {
                id: format!("n{}", i + 1),
                zone: zone(i),
                peer: format!("127.0.0.1:{}", ports[spec.nodes + i]),
                http: format!("http://127.0.0.1:{}", ports[i]),
            })
            .collect();
        // The guard exists before the first spawn, so an error below still tears down
        // whatever did start.
        let mut cluster =
            LabCluster { exe, data_dir: data_dir.clone(), nodes: Vec::new(), clients: Vec::new() };
        for (i, member) in members.iter().enumerate() {
            let node_dir = data_dir.join(&member.id);
            std::fs::create_dir_all(&node_dir)?;
            let mut config = NodeConfig::with_defaults(
                member.id.clone(),
                member.zone.clone(),
                format!("127.0.0.1:{}", ports[i]),
                member.peer.clone(),
                node_dir.join("data"),
                members.clone(),
            )?;
            config.replication_factor = spec.replication_factor;
            config.request_timeout_ms = SERVER_REQUEST_TIMEOUT_MS;
            config.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS;
            config.failure_timeout_ms = FAILURE_TIMEOUT_MS;
            config.tables = spec.tables.clone();
            config.admin_enabled = true; // the nemesis injects faults over /v1/admin/faults
            config.validate()?;
            let config_path = node_dir.join("quorumdb.toml");
            std::fs::write(&config_path, config.to_toml())
                .with_context(|| format!("cannot write {}", config_path.display()))?;
            cluster
                .clients
                .push(Client::with_timeout(&member.http, Duration::from_millis(CLIENT_TIMEOUT_MS))?);
            cluster.nodes.push(NodeProc {
                id: member.id.clone(),
                zone: member.zone.clone(),
                http_addr: config.http_listen.clone(),
                config_path,
                log_path: log_dir.join(format!("{}.log", member.id)),
                child: None,
                state: ProcState::Killed,
                faults: NodeFaults::default(),
            });
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        let all: Vec<usize> = (0..cluster.nodes.len()).collect();
        cluster.wait_ready(&all).await?;
        cluster.wait_all_up().await?;
        Ok(cluster)
    }

    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// Indices of the nodes in `zone`.
    pub fn zone_members(&self, zone: &str) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].zone == zone).collect()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .with_context(|| format!("cannot open {}", node.log_path.display()))?;
        let child = Command::new(&self.exe)
            .arg("server")
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {}", node.id))?;
        node.child = Some(child);
        node.state = ProcState::Running;
        Ok(())
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let node = &self.nodes[i];
        let Some(child) = &node.child else { bail!("node {} is not running", node.id) };
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("cannot send {signal} to node {}", node.id))
    }

    /// SIGKILL, as a crash or a lost machine would: no flush, no goodbye to peers.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            // Killing an already exited child fails harmlessly; reaping it is what matters.
            let _ = child.kill();
            child.wait().with_context(|| format!("cannot reap node {}", self.nodes[i].id))?;
        }
        self.nodes[i].state = ProcState::Killed;
        Ok(())
    }

    /// Starts killed nodes again with their configs and data directories, and waits until
    /// all of them are ready.
    pub async fn restart(&mut self, which: &[usize]) -> Result<()> {
        for &i in which {
            if self.nodes[i].state != ProcState::Killed {
                bail!("node {} is not killed", self.nodes[i].id);
            }
            self.spawn(i)?;
        }
        self.wait_ready(which).await
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a GC pause, a hung VM).
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGSTOP)?;
        self.nodes[i].state = ProcState::Paused;
        Ok(())
    }

    /// SIGCONT after [`LabCluster::pause`].
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGCONT)?;
        self.nodes[i].state = ProcState::Running;
        Ok(())
    }

    /// Waits until each node in `which` answers `/readyz`; fails early if one exits.
    pub async fn wait_ready(&mut self, which: &[usize]) -> Result<()> {
        let started = Instant::now();
        let mut pending: Vec<usize> = which.to_vec();
        while !pending.is_empty() {
            for &i in &pending {
                let node = &mut self.nodes[i];
                if let Some(child) = node.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        node.child = None;
                        node.state = ProcState::Killed;
                        bail!(
                            "node {} exited during start-up ({status}); see {}",
                            node.id,
                            node.log_path.display()
                        );
                    }
                }
            }
            let mut still = Vec::new();
            for &i in &pending {
                if !crate::demo::http_ok(&self.nodes[i].http_addr, "/readyz").await {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if started.elapsed() > Duration::from_millis(READY_TIMEOUT_MS) {
                let ids: Vec<&str> = pending.iter().map(|&i| self.nodes[i].id.as_str()).collect();
                bail!("nodes {} not ready after {READY_TIMEOUT_MS} ms; see their logs", ids.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
        Ok(())
    }

    /// Waits until every running node reports every running node `up` in its status, so a
    /// phase that expects a healthy cluster does not start while the failure detector still
    /// skips a node that just came back.
    pub async fn wait_all_up(&self) -> Result<()> {
        let started = Instant::now();
        let running: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].state == ProcState::Running).collect();
        loop {
            let mut missing = None;
            for &i in &running {
                match self.clients[i].status().await {
                    Ok(status) => {
                        let up = |id: &str| status.nodes.iter().any(|n| n.id == id && n.state == "up");
                        if let Some(&j) = running.iter().find(|&&j| !up(&self.nodes[j].id)) {
                            missing =
                                Some(format!("{} does not see {} up", self.nodes[i].id, self.nodes[j].id));
                        }
                    }
                    Err(e) => missing = Some(format!("{} does not answer status: {e}", self.nodes[i].id)),
                }
                if missing.is_some() {
                    break;
                }
            }
            let Some(why) = missing else { return Ok(()) };
            if started.elapsed() > Duration::from_millis(ALL_UP_TIMEOUT_MS) {
                bail!("cluster not healthy after {ALL_UP_TIMEOUT_MS} ms: {why}");
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Sends node `i` the faults in `faults` (replacing whatever it had).
    pub async fn set_faults(&mut self, i: usize, faults: NodeFaults) -> Result<()> {
        self.clients[i]
            .set_faults(&faults.to_json())
            .await
            .with_context(|| format!("cannot set faults on node {}", self.nodes[i].id))?;
        self.nodes[i].faults = faults;
        Ok(())
    }

    /// Cuts the network between the nodes in `side` and every other node, both directions.
    /// Only peer traffic is cut; the nodes' HTTP APIs stay reachable from the lab.
    pub async fn partition(&mut self, side: &[usize]) -> Result<()> {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        for i in 0..self.nodes.len() {
            if self.nodes[i].state != ProcState::Running {
                continue;
            }
            let inside = side.contains(&i);
            let mut faults = self.nodes[i].faults.clone();
            for (j, id) in ids.iter().enumerate() {
                if side.contains(&j) != inside {
                    faults.cut_from.insert(id.clone());
                }
            }
            self.set_faults(i, faults).await?;
        }
        Ok(())
    }

    /// Skews node `i`'s wall clock by `offset_ms`, keeping its other faults.
    pub async fn set_clock_offset(&mut self, i: usize, offset_ms: i64) -> Result<()> {
        let mut faults = self.nodes[i].faults.clone();
        faults.clock_offset_ms = offset_ms;
        self.set_faults(i, faults).await
    }

    /// Removes every network cut, keeping clock offsets.
    pub async fn heal_network(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].state == ProcState::Running && !self.nodes[i].faults.cut_from.is_empty() {
                let faults = NodeFaults { cut_from: BTreeSet::new(), ..self.nodes[i].faults.clone() };
                self.set_faults(i, faults).await?;
            }
        }
        Ok(())
    }

    /// Undoes every fault: resumes paused nodes, restarts killed ones, clears network and clock
    /// faults everywhere, and waits until the cluster is healthy.
    pub async fn heal_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            match self.nodes[i].state {
                ProcState::Paused => self.resume(i)?,
                ProcState::Killed => self.restart(&[i]).await?,
                ProcState::Running => {}
            }
        }
        for i in 0..self.nodes.len() {
            self.set_faults(i, NodeFaults::default()).await?;
        }
        self.wait_all_up().await
    }

    /// Runs one full anti-entropy pass on every node and waits until all finished. Returns the
    /// number of keys the passes moved (pushed plus pulled) and of failed exchanges.
    pub async fn repair_all(&self) -> Result<(u64, usize)> {
        let mut before = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            let p = c.repair_progress().await.with_context(|| format!("node {}", self.nodes[i].id))?;
            before.push(p.passes_completed);
            c.start_repair(None).await.with_context(|| format!("node {}", self.nodes[i].id))?;
        }
        let started = Instant::now();
        loop {
            let mut done = true;
            let mut moved = 0u64;
            let mut failed = 0usize;
            for (i, c) in self.clients.iter().enumerate() {
                let p = c.repair_progress().await.with_context(|| format!("node {}", self.nodes[i].id))?;
                done &= !p.running && p.passes_completed > before[i];
                moved += p.keys_pushed + p.keys_pulled;
                failed += p.exchanges_failed;
            }
            if done {
                return Ok((moved, failed));
            }
            if started.elapsed() > Duration::from_millis(REPAIR_TIMEOUT_MS) {
                bail!("anti-entropy repair did not finish on every node within {REPAIR_TIMEOUT_MS} ms");
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS * 4)).await;
        }
    }

    /// `(id, zone)` of every node.
    pub fn members(&self) -> Vec<(String, String)> {
        self.nodes.iter().map(|n| (n.id.clone(), n.zone.clone())).collect()
    }

    /// The `nodes` entry of a run's `cluster` description in `report.json` (id and zone of
    /// each node): one function so every scenario reports its cluster in the same shape.
    pub fn members_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.members().iter().map(|(id, zone)| serde_json::json!({"id": id, "zone": zone})).collect(),
        )
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL also ends a SIGSTOPped process, so paused nodes need no SIGCONT.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
