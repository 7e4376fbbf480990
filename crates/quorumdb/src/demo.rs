//! `quorumdb demo`: a local cluster of separate `quorumdb server` processes.
//!
//! Contract (other tooling parses it): one line per node
//! `node n<i> zone z<k> http://127.0.0.1:<port> pid <pid>`, then `ready` once every node
//! answers `/readyz`. SIGINT/SIGTERM stop every node and exit 0. Node i listens for HTTP on
//! `base_port + i` and for peers on `base_port + 100 + i`; its config is written to
//! `<data-dir>/n<i>/quorumdb.toml` so it can be restarted by hand with `quorumdb server --config`.

use anyhow::{bail, Context, Result};
use clap::Args;
use quorumdb_node::config::{Durability, MemberConfig, NodeConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How long the demo waits for every node to become ready.
const READY_TIMEOUT_MS: u64 = 30_000;
/// How long stopping nodes may take before they are killed.
const STOP_TIMEOUT_MS: u64 = 10_000;
/// Peer ports sit this far above the HTTP ports.
pub const PEER_PORT_OFFSET: u16 = 100;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Number of nodes (separate processes).
    #[arg(long, default_value_t = 5)]
    pub nodes: u16,
    /// Number of zones; node i is in zone z((i-1) mod zones + 1).
    #[arg(long, default_value_t = 3)]
    pub zones: u16,
    /// Default replication factor N.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Node i serves HTTP on base-port + i and peers on base-port + 100 + i.
    #[arg(long, default_value_t = 7700)]
    pub base_port: u16,
    /// Keep data here (reused by the next demo with the same dir); default: a temporary dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// fsync (default) or buffered.
    #[arg(long, default_value = "fsync")]
    pub durability: Durability,
    /// Override any node config field, e.g. `--set antientropy=false --set read_repair="async"`
    /// (the value is TOML; a bare word is taken as a string). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Applies `KEY=VALUE` overrides (TOML values) to a config.
fn apply_overrides(c: NodeConfig, overrides: &[String]) -> Result<NodeConfig> {
    if overrides.is_empty() {
        return Ok(c);
    }
    let mut table: toml::Table = toml::from_str(&c.to_toml()).context("config does not round-trip")?;
    for o in overrides {
        let Some((key, raw)) = o.split_once('=') else {
            bail!("--set {o:?}: expected KEY=VALUE");
        };
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
            Err(_) => toml::Value::String(raw.to_owned()),
        };
        table.insert(key.trim().to_owned(), value);
    }
    let c: NodeConfig = toml::Value::Table(table).try_into().map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    c.validate()?;
    Ok(c)
}

/// The configs of a demo cluster, one per node (also used by the lab and tests).
pub fn cluster_configs(a: &DemoArgs, dir: &Path) -> Result<Vec<NodeConfig>> {
    if a.nodes == 0 || a.zones == 0 {
        bail!("--nodes and --zones must be at least 1");
    }
    if u32::from(a.base_port) + u32::from(PEER_PORT_OFFSET) + u32::from(a.nodes) > u32::from(u16::MAX) {
        bail!("--base-port {} leaves no room for {} nodes", a.base_port, a.nodes);
    }
    let http = |i: u16| a.base_port + i;
    let peer = |i: u16| a.base_port + PEER_PORT_OFFSET + i;
    let zone = |i: u16| format!("z{}", (i - 1) % a.zones + 1);
    let members: Vec<MemberConfig> = (1..=a.nodes)
        .map(|i| MemberConfig {
            id: format!("n{i}"),
            zone: zone(i),
            peer: format!("127.0.0.1:{}", peer(i)),
            http: format!("http://127.0.0.1:{}", http(i)),
        })
        .collect();
    (1..=a.nodes)
        .map(|i| {
            let mut c = NodeConfig::with_defaults(
                format!("n{i}"),
                zone(i),
                format!("127.0.0.1:{}", http(i)),
                format!("127.0.0.1:{}", peer(i)),
                dir.join(format!("n{i}")).join("data"),
                members.clone(),
            )?;
            c.replication_factor = a.replicas;
            c.durability = a.durability;
            // The demo is a local playground and `quorumdb nemesis` drives its faults.
            c.admin_enabled = true;
            let c = apply_overrides(c, &a.overrides)?;
            c.validate()?;
            Ok(c)
        })
        .collect()
}

struct Running {
    id: String,
    child: Child,
    pid: u32,
    exited: bool,
}

pub async fn run(a: DemoArgs) -> Result<i32> {
    let (dir, temporary) = match &a.data_dir {
        Some(d) => (d.clone(), false),
        None => {
            let d = std::env::temp_dir().join(format!(
                "quorumdb-demo-{}-{:x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            (d, true)
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&a, &dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(a: &DemoArgs, dir: &Path) -> Result<i32> {
    let configs = cluster_configs(a, dir)?;
    let exe = std::env::current_exe().context("cannot find the quorumdb executable")?;
    let mut nodes: Vec<Running> = Vec::new();
    for c in &configs {
        let node_dir = dir.join(&c.node_id);
        std::fs::create_dir_all(&node_dir)?;
        let config_path = node_dir.join("quorumdb.toml");
        std::fs::write(&config_path, c.to_toml())
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node_dir.join("server.log"))?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {}", c.node_id))?;
        let pid = child.id().unwrap_or(0);
        println!("node {} zone {} http://{} pid {}", c.node_id, c.zone, c.http_listen, pid);
        nodes.push(Running { id: c.node_id.clone(), child, pid, exited: false });
    }
    let started = Instant::now();
    let mut pending: Vec<&NodeConfig> = configs.iter().collect();
    while !pending.is_empty() {
        if started.elapsed() > Duration::from_millis(READY_TIMEOUT_MS) {
            let ids: Vec<&str> = pending.iter().map(|c| c.node_id.as_str()).collect();
            stop_all(&mut nodes).await;
            bail!(
                "nodes {} not ready after {} ms; see their server.log under {}",
                ids.join(", "),
                READY_TIMEOUT_MS,
                dir.display()
            );
        }
        let mut still = Vec::new();
        for c in pending {
            if !http_ok(&c.http_listen, "/readyz").await {
                still.push(c);
            }
        }
        pending = still;
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                let id = n.id.clone();
                stop_all(&mut nodes).await;
                bail!(
                    "node {id} exited during start-up ({status}); see {}",
                    dir.join(&id).join("server.log").display()
                );
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("ready");
    let shutdown = crate::cli::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for n in nodes.iter_mut().filter(|n| !n.exited) {
                    if let Ok(Some(status)) = n.child.try_wait() {
                        n.exited = true;
                        eprintln!("node {} (pid {}) exited: {status}; the other nodes keep running", n.id, n.pid);
                    }
                }
            }
        }
    }
    stop_all(&mut nodes).await;
    Ok(0)
}

/// SIGTERM every live node, then SIGKILL whatever has not exited after `STOP_TIMEOUT_MS`.
async fn stop_all(nodes: &mut [Running]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for n in nodes.iter_mut() {
        if let Ok(None) = n.child.try_wait() {
            let _ = kill(Pid::from_raw(n.pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
    for n in nodes.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, n.child.wait()).await.is_err() {
            let _ = n.child.kill().await;
        }
    }
}

/// A minimal HTTP/1.0 GET used for readiness polling (no client library needed for one line).
pub async fn http_ok(addr: &str, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        let head = std::str::from_utf8(buf.get(..n)?).ok()?;
        Some(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_millis(500), attempt).await.ok().flatten().unwrap_or(false)
}
