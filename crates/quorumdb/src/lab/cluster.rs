//! The lab's own local cluster: real `quorumdb server` processes on loopback, and the nemesis
//! that the scenario drivers use against them.
//!
//! The processes are started, signalled and reaped by [`quorumdb::launcher`]: process faults
//! (SIGKILL, restart, SIGSTOP/SIGCONT) act on processes it started, by their pid; network and
//! clock faults go through each node's `/v1/admin/faults`. The driver keeps the whole fault
//! state of every node ([`NodeFaults`]) and always sends it complete, because
//! `PUT /v1/admin/faults` replaces a node's rules rather than amending them.
//!
//! [`LabCluster`] is the teardown guard: dropping it (normal return, `?` error or panic unwind)
//! SIGKILLs every process it started and removes the temporary data directory, so a failed run
//! never leaves servers behind.

use anyhow::{bail, Context, Result};
use quorumdb::launcher::{self, Cleanup, LocalCluster, NodeState, Ports};
use quorumdb_client::{Client, FaultRules};
use quorumdb_node::config::TableConfig;
use std::collections::BTreeSet;
use std::path::Path;
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
/// Starts of a lab cluster tried before giving up, when a chosen port was taken meanwhile.
pub const START_ATTEMPTS_MAX: usize = 3;
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
    /// Run with the server's default heartbeat, failure and request timeouts instead of the
    /// lab's faster ones ([`HEARTBEAT_INTERVAL_MS`] and the constants next to it).
    pub server_timeouts: bool,
}

/// Network, clock and disk faults of one node, as the driver wants them. Sent whole on every
/// change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFaults {
    /// Peers this node neither sends to nor accepts messages from (a two-way cut).
    pub cut_from: BTreeSet<String>,
    /// Peers this node does not send to but still hears (a one-way cut, this node's side).
    pub send_cut_to: BTreeSet<String>,
    /// Chance that each peer message this node sends is dropped.
    pub drop_probability: f64,
    /// Added to every peer message this node sends, ms.
    pub delay_ms: u64,
    /// Added to the node's wall clock.
    pub clock_offset_ms: i64,
    /// Slept before each of the node's fsyncs, ms (a slow disk).
    pub fsync_delay_ms: u64,
}

impl NodeFaults {
    /// The node's admin rules for these faults.
    pub fn to_rules(&self) -> FaultRules {
        FaultRules {
            block_send_to: self.cut_from.union(&self.send_cut_to).cloned().collect(),
            block_receive_from: self.cut_from.iter().cloned().collect(),
            drop_probability: self.drop_probability,
            delay_ms: self.delay_ms,
            clock_offset_ms: self.clock_offset_ms,
            fsync_delay_ms: self.fsync_delay_ms,
            ..FaultRules::default()
        }
    }

    /// Whether any network fault is set (what [`LabCluster::heal_network`] removes).
    fn has_network_fault(&self) -> bool {
        !self.cut_from.is_empty()
            || !self.send_cut_to.is_empty()
            || self.drop_probability > 0.0
            || self.delay_ms > 0
    }
}

/// Whether a node process is running, stopped by SIGSTOP, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    Paused,
    Killed,
}

/// A running lab cluster; dropping it kills every node and removes the data directory.
pub struct LabCluster {
    /// The server processes, configs and data (a temporary directory, removed on drop).
    procs: LocalCluster,
    /// The faults the driver last sent to each node (index-aligned).
    faults: Vec<NodeFaults>,
    /// One client per node (index-aligned); clones share a connection pool.
    clients: Vec<Client>,
}

impl LabCluster {
    /// Writes the configs, starts every node and waits until all answer `/readyz` and see each
    /// other up. Node logs go to `log_dir/<id>.log`.
    ///
    /// A port chosen free can be taken by another process before the node binds it (parallel
    /// lab runs probe ports too); a start that fails that way is retried on fresh ports, up to
    /// [`START_ATTEMPTS_MAX`] times.
    pub async fn start(spec: &ClusterSpec, log_dir: &Path) -> Result<LabCluster> {
        let mut attempt = 1;
        loop {
            match Self::start_once(spec, log_dir).await {
                Err(e) if attempt < START_ATTEMPTS_MAX && port_taken(log_dir) => {
                    eprintln!(
                        "a node's port was taken before it could bind it ({e:#}); retrying on other ports"
                    );
                    attempt += 1;
                    // Node logs are appended to; start the next attempt's afresh.
                    for e in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
                        if e.file_name().to_string_lossy().ends_with(".log") {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                result => return result,
            }
        }
    }

    async fn start_once(spec: &ClusterSpec, log_dir: &Path) -> Result<LabCluster> {
        if spec.nodes == 0 || spec.zones == 0 || spec.zones > spec.nodes {
            bail!("a lab cluster needs 1 <= zones <= nodes (got {} zones, {} nodes)", spec.zones, spec.nodes);
        }
        let exe = std::env::current_exe().context("cannot find the quorumdb executable")?;
        let mut launch = launcher::ClusterSpec::new(
            spec.nodes,
            spec.zones,
            spec.replication_factor,
            Ports::free(spec.nodes)?,
        );
        launch.admin_enabled = true; // the nemesis injects faults over /v1/admin/faults
        let settings = &mut launch.settings;
        if !spec.server_timeouts {
            settings.insert("request_timeout_ms".into(), toml_int(SERVER_REQUEST_TIMEOUT_MS));
            settings.insert("heartbeat_interval_ms".into(), toml_int(HEARTBEAT_INTERVAL_MS));
            settings.insert("failure_timeout_ms".into(), toml_int(FAILURE_TIMEOUT_MS));
        }
        if !spec.tables.is_empty() {
            settings.insert("tables".into(), toml::Value::try_from(&spec.tables).context("lab tables")?);
        }
        launch.settings_origin = "lab cluster settings".into();
        // The guard exists before the first spawn, so an error below still tears down
        // whatever did start.
        let procs = LocalCluster::create(
            &exe,
            &launch,
            &LocalCluster::temp_dir("quorumdb-lab"),
            Some(log_dir),
            Cleanup::Remove,
        )?;
        let clients = (0..procs.len())
            .map(|i| Client::with_timeout(&procs.http_url(i), Duration::from_millis(CLIENT_TIMEOUT_MS)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cluster = LabCluster { faults: vec![NodeFaults::default(); procs.len()], procs, clients };
        cluster.procs.spawn_all()?;
        let all: Vec<usize> = (0..cluster.procs.len()).collect();
        cluster.wait_ready(&all).await?;
        cluster.wait_all_up().await?;
        Ok(cluster)
    }

    pub fn id(&self, i: usize) -> &str {
        self.procs.id(i)
    }

    /// Node `i`'s client API base URL (for processes the lab starts besides the nodes).
    pub fn http_url(&self, i: usize) -> String {
        self.procs.http_url(i)
    }

    /// Node `i`'s Kafka listener, `host:port` (the lab's Kafka clients connect there).
    pub fn kafka_addr(&self, i: usize) -> Result<String> {
        self.procs
            .config(i)
            .kafka_listen
            .clone()
            .with_context(|| format!("node {} has no Kafka listener", self.id(i)))
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// Indices of the nodes in `zone`.
    pub fn zone_members(&self, zone: &str) -> Vec<usize> {
        (0..self.procs.len()).filter(|&i| self.procs.zone(i) == zone).collect()
    }

    fn state(&self, i: usize) -> ProcState {
        match self.procs.state(i) {
            NodeState::Running => ProcState::Running,
            NodeState::Paused => ProcState::Paused,
            NodeState::Down => ProcState::Killed,
        }
    }

    /// SIGKILL, as a crash or a lost machine would: no flush, no goodbye to peers.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.procs.kill(i)
    }

    /// Starts killed nodes again with their configs and data directories, and waits until
    /// all of them are ready.
    pub async fn restart(&mut self, which: &[usize]) -> Result<()> {
        for &i in which {
            if self.state(i) != ProcState::Killed {
                bail!("node {} is not killed", self.id(i));
            }
            self.procs.restart(i)?;
        }
        self.wait_ready(which).await
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a GC pause, a hung VM).
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.procs.pause(i)
    }

    /// SIGCONT after [`LabCluster::pause`].
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.procs.resume(i)
    }

    /// Waits until each node in `which` answers `/readyz`; fails early if one exits.
    pub async fn wait_ready(&mut self, which: &[usize]) -> Result<()> {
        self.procs.wait_ready(which, Duration::from_millis(READY_TIMEOUT_MS)).await
    }

    /// Waits until every running node reports every running node `up` in its status, so a
    /// phase that expects a healthy cluster does not start while the failure detector still
    /// skips a node that just came back.
    pub async fn wait_all_up(&self) -> Result<()> {
        let started = Instant::now();
        let running: Vec<usize> =
            (0..self.procs.len()).filter(|&i| self.state(i) == ProcState::Running).collect();
        loop {
            let mut missing = None;
            for &i in &running {
                match self.clients[i].status().await {
                    Ok(status) => {
                        let up = |id: &str| status.nodes.iter().any(|n| n.id == id && n.state == "up");
                        if let Some(&j) = running.iter().find(|&&j| !up(self.id(j))) {
                            missing = Some(format!("{} does not see {} up", self.id(i), self.id(j)));
                        }
                    }
                    Err(e) => missing = Some(format!("{} does not answer status: {e}", self.id(i))),
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
            .set_fault_rules(&faults.to_rules())
            .await
            .with_context(|| format!("cannot set faults on node {}", self.id(i)))?;
        self.faults[i] = faults;
        Ok(())
    }

    /// Changes the faults of each running node in `which` with `edit`. A node that is not
    /// running is an error: a paused one could not take the rules, a killed one would forget
    /// them on restart, so the fault would silently not happen.
    async fn edit_faults(&mut self, which: &[usize], edit: impl Fn(&mut NodeFaults)) -> Result<()> {
        for &i in which {
            if self.state(i) != ProcState::Running {
                bail!("node {} is not running ({:?}); cannot change its faults", self.id(i), self.state(i));
            }
            let mut faults = self.faults[i].clone();
            edit(&mut faults);
            self.set_faults(i, faults).await?;
        }
        Ok(())
    }

    /// The nodes in `side` stop sending peer messages to every other node; they still receive.
    pub async fn one_way_partition(&mut self, side: &[usize]) -> Result<()> {
        let others: BTreeSet<String> =
            (0..self.procs.len()).filter(|j| !side.contains(j)).map(|j| self.id(j).to_owned()).collect();
        self.edit_faults(side, |f| f.send_cut_to.extend(others.iter().cloned())).await
    }

    /// Each node in `which` drops every peer message it sends with probability `p`.
    pub async fn set_loss(&mut self, which: &[usize], p: f64) -> Result<()> {
        self.edit_faults(which, |f| f.drop_probability = p).await
    }

    /// Each node in `which` holds back every peer message it sends by `ms`.
    pub async fn set_delay(&mut self, which: &[usize], ms: u64) -> Result<()> {
        self.edit_faults(which, |f| f.delay_ms = ms).await
    }

    /// Each node in `which` sleeps `ms` before every fsync (0: a healthy disk again).
    pub async fn set_fsync_delay(&mut self, which: &[usize], ms: u64) -> Result<()> {
        self.edit_faults(which, |f| f.fsync_delay_ms = ms).await
    }

    /// Indices of the nodes whose processes are running (not paused, not killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.procs.len()).filter(|&i| self.state(i) == ProcState::Running).collect()
    }

    /// Cuts the network between the nodes in `side` and every other node, both directions.
    /// Only peer traffic is cut; the nodes' HTTP APIs stay reachable from the lab.
    pub async fn partition(&mut self, side: &[usize]) -> Result<()> {
        let ids: Vec<String> = (0..self.procs.len()).map(|i| self.id(i).to_owned()).collect();
        for i in 0..self.procs.len() {
            if self.state(i) != ProcState::Running {
                continue;
            }
            let inside = side.contains(&i);
            let mut faults = self.faults[i].clone();
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
        let mut faults = self.faults[i].clone();
        faults.clock_offset_ms = offset_ms;
        self.set_faults(i, faults).await
    }

    /// Removes every network fault (cuts both ways and one way, loss, delays), keeping clock
    /// offsets and disk delays.
    pub async fn heal_network(&mut self) -> Result<()> {
        for i in 0..self.procs.len() {
            if self.state(i) == ProcState::Running && self.faults[i].has_network_fault() {
                let faults = NodeFaults {
                    clock_offset_ms: self.faults[i].clock_offset_ms,
                    fsync_delay_ms: self.faults[i].fsync_delay_ms,
                    ..NodeFaults::default()
                };
                self.set_faults(i, faults).await?;
            }
        }
        Ok(())
    }

    /// Undoes every fault: resumes paused nodes, restarts killed ones, clears network and clock
    /// faults everywhere, and waits until the cluster is healthy.
    pub async fn heal_all(&mut self) -> Result<()> {
        for i in 0..self.procs.len() {
            match self.state(i) {
                ProcState::Paused => self.resume(i)?,
                ProcState::Killed => self.restart(&[i]).await?,
                ProcState::Running => {}
            }
        }
        for i in 0..self.procs.len() {
            self.set_faults(i, NodeFaults::default()).await?;
        }
        self.wait_all_up().await
    }

    /// Runs one full anti-entropy pass on every node and waits until all finished. Returns the
    /// number of keys the passes moved (pushed plus pulled) and of failed exchanges.
    pub async fn repair_all(&self) -> Result<(u64, usize)> {
        let mut before = Vec::new();
        for (i, c) in self.clients.iter().enumerate() {
            let p = c.repair_progress().await.with_context(|| format!("node {}", self.id(i)))?;
            before.push(p.passes_completed);
            c.start_repair(None).await.with_context(|| format!("node {}", self.id(i)))?;
        }
        let started = Instant::now();
        loop {
            let mut done = true;
            let mut moved = 0u64;
            let mut failed = 0usize;
            for (i, c) in self.clients.iter().enumerate() {
                let p = c.repair_progress().await.with_context(|| format!("node {}", self.id(i)))?;
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
        (0..self.procs.len()).map(|i| (self.id(i).to_owned(), self.procs.zone(i).to_owned())).collect()
    }

    /// The `nodes` entry of a run's `cluster` description in `report.json` (id and zone of
    /// each node): one function so every scenario reports its cluster in the same shape.
    pub fn members_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.members().iter().map(|(id, zone)| serde_json::json!({"id": id, "zone": zone})).collect(),
        )
    }
}

/// Whether a node log in `log_dir` says a listen address was in use.
fn port_taken(log_dir: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir(log_dir) else { return false };
    dir.flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("Address already in use")))
}

fn toml_int(v: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the lab's node faults become the admin rules the server applies: a two-way cut on
    /// both sides, a one-way cut on the send side only, and loss, delays and a slow disk as given.
    #[test]
    fn node_faults_map_to_admin_rules() {
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        let faults = NodeFaults {
            cut_from: set(&["n2"]),
            send_cut_to: set(&["n3", "n4"]),
            drop_probability: 0.05,
            delay_ms: 7,
            clock_offset_ms: -5,
            fsync_delay_ms: 200,
        };
        let rules = faults.to_rules();
        assert_eq!(rules.block_send_to, ["n2", "n3", "n4"].map(String::from).into());
        assert_eq!(rules.block_receive_from, ["n2"].map(String::from).into());
        assert_eq!(
            (rules.drop_probability, rules.delay_ms, rules.clock_offset_ms, rules.fsync_delay_ms),
            (0.05, 7, -5, 200)
        );
        assert!(faults.has_network_fault());
        let disk_only = NodeFaults { fsync_delay_ms: 200, clock_offset_ms: 3, ..NodeFaults::default() };
        assert!(!disk_only.has_network_fault());
        assert_eq!(NodeFaults::default().to_rules(), FaultRules::default());
    }
}
