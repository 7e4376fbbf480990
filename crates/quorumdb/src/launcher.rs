//! The one local-cluster launcher: `quorumdb server` processes on loopback, used by
//! `quorumdb demo`, the lab's cluster and the multi-process integration tests.
//!
//! [`node_configs`] turns a [`ClusterSpec`] into one [`NodeConfig`] per node (node i, 1-based,
//! is `n<i>` in zone `z((i-1) mod zones + 1)`; HTTP and peer ports from a base port or an
//! explicit list; extra TOML settings merged over the defaults). [`LocalCluster`] writes them to
//! `<dir>/n<i>/quorumdb.toml`, spawns `quorumdb server --config ...`, waits for `/readyz`, and
//! kills (SIGKILL), stops (SIGTERM), pauses (SIGSTOP), resumes (SIGCONT) and restarts single
//! nodes by the pids it started. Dropping it SIGKILLs every process it started and applies its
//! [`Cleanup`] policy to the directory.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorumdb_node::config::{MemberConfig, NodeConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// With [`Ports::Base`], peer ports sit this far above the HTTP ports.
pub const PEER_PORT_OFFSET: u16 = 100;
/// Kafka listener ports sit this far above the HTTP ports.
pub const KAFKA_PORT_OFFSET: u16 = 200;
/// Pause between readiness polls.
const POLL_MS: u64 = 50;
/// Pause between exit checks while stopping.
const STOP_POLL_MS: u64 = 20;
/// Bound on one readiness probe (connect, request, first bytes of the answer).
const PROBE_TIMEOUT_MS: u64 = 500;

/// Where the nodes listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Node i (1-based) serves HTTP on `base + i`, peers on `base + 100 + i` and Kafka
    /// clients on `base + 200 + i`.
    Base(u16),
    /// Index-aligned HTTP, peer and Kafka ports, one each per node.
    Explicit { http: Vec<u16>, peer: Vec<u16>, kafka: Vec<u16> },
}

impl Ports {
    /// Free loopback ports for `nodes` nodes, reserved with [`free_ports`].
    pub fn free(nodes: usize) -> Result<Ports> {
        let mut http = free_ports(nodes * 3)?;
        let mut peer = http.split_off(nodes);
        let kafka = peer.split_off(nodes);
        Ok(Ports::Explicit { http, peer, kafka })
    }

    /// Node `i`'s HTTP, peer and Kafka ports.
    fn of(&self, i: usize) -> Result<(u16, u16, u16)> {
        match self {
            Ports::Base(base) => {
                let n = u16::try_from(i + 1).ok();
                let at = |offset: u16| n.and_then(|n| base.checked_add(offset)?.checked_add(n));
                match (at(0), at(PEER_PORT_OFFSET), at(KAFKA_PORT_OFFSET)) {
                    (Some(h), Some(p), Some(k)) => Ok((h, p, k)),
                    _ => bail!("base port {base} leaves no room for node n{}", i + 1),
                }
            }
            Ports::Explicit { http, peer, kafka } => match (http.get(i), peer.get(i), kafka.get(i)) {
                (Some(&h), Some(&p), Some(&k)) => Ok((h, p, k)),
                _ => bail!("no port given for node n{}", i + 1),
            },
        }
    }
}

/// Lowest port [`free_ports`] hands out, and how many it chooses from: below Linux's default
/// ephemeral range (32768–60999), which the kernel uses for outgoing connections (every node
/// opens several to each peer) and for binds to port 0. A port from that range could be taken by
/// some connection between being chosen and the server binding it; these cannot.
const FREE_PORT_LO: u32 = 20_000;
const FREE_PORT_SPAN: u32 = 12_000;

/// Reserves `n` distinct free loopback ports below the ephemeral range: each is checked by
/// binding it, and all are released before returning. Calls in one process never repeat a
/// port until the range wraps; separate processes start at different offsets. Another process
/// could still take a port between release and the server's bind; the server then exits at
/// start-up and [`LocalCluster::wait_ready`] reports it with the node's log.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let offset = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let mut held = Vec::with_capacity(n);
    let mut tries = 0u32;
    while held.len() < n {
        tries += 1;
        if tries > FREE_PORT_SPAN {
            bail!("no free loopback port in {FREE_PORT_LO}..{}", FREE_PORT_LO + FREE_PORT_SPAN);
        }
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FREE_PORT_LO + offset.wrapping_add(k.wrapping_mul(7_919)) % FREE_PORT_SPAN;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            held.push(listener);
        }
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The shape of a local cluster and every node's settings.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub zones: usize,
    /// Default replication factor N.
    pub replication_factor: usize,
    pub ports: Ports,
    /// Serve `/v1/admin` (fault injection).
    pub admin_enabled: bool,
    /// Top-level config fields merged over the defaults and the fields above (a key given
    /// here wins), e.g. `request_timeout_ms` or `tables`.
    pub settings: toml::Table,
    /// Names where `settings` came from in errors (e.g. `--set`).
    pub settings_origin: String,
}

impl ClusterSpec {
    /// `nodes` nodes in `zones` zones, N = `replication_factor`, no admin API, no settings.
    pub fn new(nodes: usize, zones: usize, replication_factor: usize, ports: Ports) -> ClusterSpec {
        ClusterSpec {
            nodes,
            zones,
            replication_factor,
            ports,
            admin_enabled: false,
            settings: toml::Table::new(),
            settings_origin: "settings".into(),
        }
    }
}

/// The id of node `i` (0-based index).
pub fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

/// The zone of node `i` (0-based index) among `zones` zones: round-robin.
pub fn zone_of(i: usize, zones: usize) -> String {
    format!("z{}", i % zones + 1)
}

/// The config of every node of `spec`, with its data under `<dir>/n<i>/data`.
pub fn node_configs(spec: &ClusterSpec, dir: &Path) -> Result<Vec<NodeConfig>> {
    if spec.nodes == 0 || spec.zones == 0 {
        bail!("a cluster needs at least one node and one zone");
    }
    let ports = (0..spec.nodes).map(|i| spec.ports.of(i)).collect::<Result<Vec<_>>>()?;
    let members: Vec<MemberConfig> = ports
        .iter()
        .enumerate()
        .map(|(i, (http, peer, kafka))| MemberConfig {
            id: node_id(i),
            zone: zone_of(i, spec.zones),
            peer: format!("127.0.0.1:{peer}"),
            http: format!("http://127.0.0.1:{http}"),
            // Advertised to Kafka clients as is: 127.0.0.1, never `localhost` (which may
            // resolve to ::1 first, where nothing listens).
            kafka: format!("127.0.0.1:{kafka}"),
        })
        .collect();
    members
        .iter()
        .zip(&ports)
        .map(|(m, (http, _, _))| {
            let mut c = NodeConfig::with_defaults(
                m.id.clone(),
                m.zone.clone(),
                format!("127.0.0.1:{http}"),
                m.peer.clone(),
                dir.join(&m.id).join("data"),
                members.clone(),
            )?;
            c.kafka_listen = Some(m.kafka.clone());
            c.replication_factor = spec.replication_factor;
            c.admin_enabled = spec.admin_enabled;
            let c = merge_settings(c, &spec.settings, &spec.settings_origin)?;
            c.validate()?;
            Ok(c)
        })
        .collect::<Result<Vec<NodeConfig>>>()
        .map(with_https_members)
}

/// With `[tls]` in the settings every node serves HTTPS, so the members' advertised URLs
/// (what `status` and the CLI follow) are `https://`.
fn with_https_members(mut configs: Vec<NodeConfig>) -> Vec<NodeConfig> {
    if configs.iter().any(|c| c.tls.enabled()) {
        for c in &mut configs {
            for m in &mut c.members {
                if let Some(rest) = m.http.strip_prefix("http://") {
                    m.http = format!("https://{rest}");
                }
            }
        }
    }
    configs
}

/// `c` with the top-level fields of `settings` replacing its own.
fn merge_settings(c: NodeConfig, settings: &toml::Table, origin: &str) -> Result<NodeConfig> {
    if settings.is_empty() {
        return Ok(c);
    }
    let mut table: toml::Table = toml::from_str(&c.to_toml()).context("config does not round-trip")?;
    for (key, value) in settings {
        table.insert(key.clone(), value.clone());
    }
    toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

/// What happens to the cluster directory when the [`LocalCluster`] is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Keep it (a user-chosen data directory).
    Keep,
    /// Remove it.
    Remove,
    /// Remove it unless the thread is panicking (a failed test keeps its logs).
    RemoveUnlessPanicking,
}

/// Whether a node process is running, stopped by SIGSTOP, or not running (never started,
/// killed, stopped or exited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Down,
}

/// One node: its config, files and process.
struct NodeProc {
    config: NodeConfig,
    config_path: PathBuf,
    /// stdout and stderr, appended to across restarts.
    log_path: PathBuf,
    /// The pid of a `Some` child is ours to signal.
    child: Option<Child>,
    state: NodeState,
}

/// Server processes on loopback; dropping it SIGKILLs them and applies the [`Cleanup`].
pub struct LocalCluster {
    exe: PathBuf,
    dir: PathBuf,
    cleanup: Cleanup,
    nodes: Vec<NodeProc>,
}

impl LocalCluster {
    /// Writes every node's config under `dir` (created if missing) without starting anything.
    /// `exe` is the `quorumdb` binary; logs go to `<log_dir>/n<i>.log`, or without a log dir to
    /// `<dir>/n<i>/server.log`.
    pub fn create(
        exe: &Path,
        spec: &ClusterSpec,
        dir: &Path,
        log_dir: Option<&Path>,
        cleanup: Cleanup,
    ) -> Result<LocalCluster> {
        let configs = node_configs(spec, dir)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if let Some(l) = log_dir {
            std::fs::create_dir_all(l).with_context(|| format!("cannot create {}", l.display()))?;
        }
        // The guard exists before anything is written, so an error below still cleans up.
        let mut cluster =
            LocalCluster { exe: exe.to_path_buf(), dir: dir.to_path_buf(), cleanup, nodes: Vec::new() };
        for config in configs {
            let node_dir = dir.join(&config.node_id);
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("cannot create {}", node_dir.display()))?;
            let config_path = node_dir.join("quorumdb.toml");
            std::fs::write(&config_path, config.to_toml())
                .with_context(|| format!("cannot write {}", config_path.display()))?;
            let log_path = match log_dir {
                Some(l) => l.join(format!("{}.log", config.node_id)),
                None => node_dir.join("server.log"),
            };
            cluster.nodes.push(NodeProc {
                config,
                config_path,
                log_path,
                child: None,
                state: NodeState::Down,
            });
        }
        Ok(cluster)
    }

    /// A fresh directory name under the system temp dir: `<prefix>-<pid>-<random>`.
    pub fn temp_dir(prefix: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{prefix}-{}-{:08x}", std::process::id(), rand::random::<u32>()))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self, i: usize) -> &NodeConfig {
        &self.nodes[i].config
    }

    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].config.node_id
    }

    pub fn zone(&self, i: usize) -> &str {
        &self.nodes[i].config.zone
    }

    /// `http://127.0.0.1:<port>`, or `https://` for a node with `[tls]`.
    pub fn http_url(&self, i: usize) -> String {
        let c = &self.nodes[i].config;
        let scheme = if c.tls.enabled() { "https" } else { "http" };
        format!("{scheme}://{}", c.http_listen)
    }

    pub fn config_path(&self, i: usize) -> &Path {
        &self.nodes[i].config_path
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log_path
    }

    pub fn data_path(&self, i: usize) -> &Path {
        &self.nodes[i].config.data_dir
    }

    pub fn state(&self, i: usize) -> NodeState {
        self.nodes[i].state
    }

    /// The pid of node `i`'s process, while it has one.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Starts node `i` (which must not be running) with its config and data; returns its pid.
    /// Does not wait for readiness.
    pub fn spawn(&mut self, i: usize) -> Result<u32> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            bail!("node {} is already running", node.config.node_id);
        }
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
            .with_context(|| format!("cannot start node {}", node.config.node_id))?;
        let pid = child.id();
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(pid)
    }

    /// Starts every node; returns their pids.
    pub fn spawn_all(&mut self) -> Result<Vec<u32>> {
        (0..self.nodes.len()).map(|i| self.spawn(i)).collect()
    }

    /// Starts node `i` again after it was killed, stopped or exited (same config and data).
    pub fn restart(&mut self, i: usize) -> Result<u32> {
        if self.nodes[i].state != NodeState::Down {
            bail!("node {} is not down", self.id(i));
        }
        self.spawn(i)
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let node = &self.nodes[i];
        let Some(child) = &node.child else { bail!("node {} is not running", node.config.node_id) };
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("cannot send {signal} to node {}", node.config.node_id))
    }

    /// SIGKILL and reap, as a crash or a lost machine would: no flush, no goodbye to peers.
    /// A node that is not running is left as it is.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            // Killing an already exited child fails harmlessly; reaping it is what matters.
            // SIGKILL also ends a SIGSTOPped process, so paused nodes need no SIGCONT.
            let _ = child.kill();
            child.wait().with_context(|| format!("cannot reap node {}", node.config.node_id))?;
        }
        node.state = NodeState::Down;
        Ok(())
    }

    /// SIGTERM and wait up to `timeout` for a clean exit, then SIGKILL.
    pub fn stop(&mut self, i: usize, timeout: Duration) -> Result<()> {
        self.stop_many(&[i], timeout)
    }

    /// SIGTERM every running or paused node, then SIGKILL whatever has not exited after
    /// `timeout`.
    pub fn stop_all(&mut self, timeout: Duration) -> Result<()> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.stop_many(&all, timeout)
    }

    fn stop_many(&mut self, which: &[usize], timeout: Duration) -> Result<()> {
        for &i in which {
            if self.nodes[i].child.is_some() {
                // A paused process handles SIGTERM only once continued.
                if self.nodes[i].state == NodeState::Paused {
                    let _ = self.signal(i, Signal::SIGCONT);
                }
                let _ = self.signal(i, Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        for &i in which {
            let node = &mut self.nodes[i];
            let Some(child) = node.child.as_mut() else { continue };
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(STOP_POLL_MS));
            }
            node.child = None;
            node.state = NodeState::Down;
        }
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a GC pause, a hung VM).
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGSTOP)?;
        self.nodes[i].state = NodeState::Paused;
        Ok(())
    }

    /// SIGCONT after [`LocalCluster::pause`].
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::SIGCONT)?;
        self.nodes[i].state = NodeState::Running;
        Ok(())
    }

    /// Reaps nodes whose process exited on its own and returns them with their status; they
    /// are [`NodeState::Down`] afterwards.
    pub fn reap_exited(&mut self) -> Vec<(usize, u32, ExitStatus)> {
        let mut exited = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(child) = node.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((i, child.id(), status));
                node.child = None;
                node.state = NodeState::Down;
            }
        }
        exited
    }

    /// Fails, naming the node and its log, if a node in `pending` is not running or exited.
    fn check_exits(&mut self, pending: &[usize]) -> Result<()> {
        for &i in pending {
            let node = &mut self.nodes[i];
            let Some(child) = node.child.as_mut() else {
                bail!("node {} is not running; see {}", node.config.node_id, node.log_path.display());
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                node.state = NodeState::Down;
                bail!(
                    "node {} exited during start-up ({status}); see {}",
                    node.config.node_id,
                    node.log_path.display()
                );
            }
        }
        Ok(())
    }

    fn not_ready_error(&self, pending: &[usize], timeout: Duration) -> anyhow::Error {
        let what: Vec<String> = pending
            .iter()
            .map(|&i| format!("{} (log {})", self.id(i), self.nodes[i].log_path.display()))
            .collect();
        let noun = if pending.len() == 1 { "node" } else { "nodes" };
        anyhow::anyhow!("{noun} {} not ready after {} ms", what.join(", "), timeout.as_millis())
    }

    /// Waits until each node in `which` answers `/readyz`; fails early, naming the node and
    /// its log, if one exits, and after `timeout` naming those not ready.
    pub async fn wait_ready(&mut self, which: &[usize], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut pending = which.to_vec();
        loop {
            self.check_exits(&pending)?;
            let mut still = Vec::new();
            for &i in &pending {
                if !node_ok(&self.nodes[i].config, "/readyz").await {
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready_error(&pending, timeout));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// [`LocalCluster::wait_ready`] for callers without an async runtime at hand (it blocks
    /// the calling thread).
    pub fn wait_ready_blocking(&mut self, which: &[usize], timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let mut pending = which.to_vec();
        loop {
            self.check_exits(&pending)?;
            pending.retain(|&i| !node_ok_blocking(&self.nodes[i].config, "/readyz"));
            if pending.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.not_ready_error(&pending, timeout));
            }
            std::thread::sleep(Duration::from_millis(POLL_MS));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.kill(i);
        }
        let remove = match self.cleanup {
            Cleanup::Keep => false,
            Cleanup::Remove => true,
            Cleanup::RemoveUnlessPanicking => !std::thread::panicking(),
        };
        if remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether the first bytes of an HTTP answer say 200.
fn is_200(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.0 200") || head.starts_with(b"HTTP/1.1 200")
}

fn get_request(addr: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
}

/// A minimal HTTP/1.0 GET used for readiness polling (no client library needed for one line).
pub async fn http_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(get_request(addr, path).as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(is_200(buf.get(..n)?))
    };
    tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// [`http_ok`] on the calling thread.
pub fn http_ok_blocking(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
    let attempt = || {
        let sock: std::net::SocketAddr = addr.parse().ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.set_write_timeout(Some(timeout)).ok()?;
        s.write_all(get_request(addr, path).as_bytes()).ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).ok()?;
        Some(is_200(buf.get(..n)?))
    };
    attempt().unwrap_or(false)
}

/// Whether a node answers 200 on `path`; a node with `[tls]` is asked over TLS, trusting its
/// CA and presenting its own certificate (node certificates are valid for client use, so this
/// works even where client certificates are required).
pub async fn node_ok(config: &NodeConfig, path: &str) -> bool {
    if !config.tls.enabled() {
        return http_ok(&config.http_listen, path).await;
    }
    let (config, path) = (config.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || node_ok_blocking(&config, &path)).await.unwrap_or(false)
}

/// [`node_ok`] on the calling thread.
pub fn node_ok_blocking(config: &NodeConfig, path: &str) -> bool {
    let Ok(Some(paths)) = config.tls.paths() else {
        return http_ok_blocking(&config.http_listen, path);
    };
    let tls = quorumdb_client::TlsOptions::from_files(&paths.ca, Some((&paths.cert, &paths.key)))
        .and_then(|o| o.rustls_config());
    match tls {
        Ok(tls) => https_ok_blocking(&config.http_listen, path, std::sync::Arc::new(tls)),
        Err(_) => false,
    }
}

/// [`http_ok_blocking`] over TLS with `tls`, checking the certificate against the address.
pub fn https_ok_blocking(addr: &str, path: &str, tls: std::sync::Arc<rustls::ClientConfig>) -> bool {
    use std::io::{Read, Write};
    let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
    let attempt = || {
        let sock: std::net::SocketAddr = addr.parse().ok()?;
        let name = rustls::pki_types::ServerName::IpAddress(sock.ip().into());
        let mut conn = rustls::ClientConnection::new(tls, name).ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.set_write_timeout(Some(timeout)).ok()?;
        let mut stream = rustls::Stream::new(&mut conn, &mut s);
        stream.write_all(get_request(addr, path).as_bytes()).ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).ok()?;
        Some(is_200(buf.get(..n)?))
    };
    attempt().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves config generation: ids, round-robin zones, base-port and explicit ports, member
    /// lists, data dirs, N and admin_enabled, and that settings override fields and defaults.
    #[test]
    fn node_configs_follow_the_spec() {
        let dir = Path::new("/tmp/qdb-launcher-unit");
        let mut spec = ClusterSpec::new(5, 3, 2, Ports::Base(7700));
        spec.admin_enabled = true;
        spec.settings.insert("request_timeout_ms".into(), toml::Value::Integer(1500));
        spec.settings.insert("replication_factor".into(), toml::Value::Integer(3));
        let configs = node_configs(&spec, dir).unwrap();
        assert_eq!(configs.len(), 5);
        let zones: Vec<&str> = configs.iter().map(|c| c.zone.as_str()).collect();
        assert_eq!(zones, ["z1", "z2", "z3", "z1", "z2"]);
        for (i, c) in configs.iter().enumerate() {
            let n = i as u16 + 1;
            assert_eq!(c.node_id, format!("n{n}"));
            assert_eq!(c.http_listen, format!("127.0.0.1:{}", 7700 + n));
            assert_eq!(c.peer_listen, format!("127.0.0.1:{}", 7800 + n));
            assert_eq!(c.data_dir, dir.join(format!("n{n}")).join("data"));
            assert!(c.admin_enabled);
            assert_eq!(c.request_timeout_ms, 1500);
            assert_eq!(c.replication_factor, 3, "a setting wins over the spec's N");
            assert_eq!(c.members, configs[0].members);
        }
        let m = &configs[4].members[4];
        assert_eq!((m.id.as_str(), m.zone.as_str()), ("n5", "z2"));
        assert_eq!((m.peer.as_str(), m.http.as_str()), ("127.0.0.1:7805", "http://127.0.0.1:7705"));

        let spec = ClusterSpec::new(
            2,
            1,
            1,
            Ports::Explicit { http: vec![9001, 9002], peer: vec![9101, 9102], kafka: vec![9201, 9202] },
        );
        let configs = node_configs(&spec, dir).unwrap();
        assert_eq!(configs[1].http_listen, "127.0.0.1:9002");
        assert_eq!(configs[1].peer_listen, "127.0.0.1:9102");
        assert_eq!(configs[1].zone, "z1");
        assert!(!configs[1].admin_enabled);

        let mut bad = ClusterSpec::new(1, 1, 1, Ports::Base(100));
        bad.settings_origin = "--set".into();
        bad.settings.insert("no_such_field".into(), toml::Value::Boolean(true));
        let err = node_configs(&bad, dir).unwrap_err().to_string();
        assert!(err.starts_with("--set: "), "{err}");
        assert!(node_configs(&ClusterSpec::new(1, 1, 1, Ports::Base(u16::MAX - 50)), dir).is_err());
    }
}
