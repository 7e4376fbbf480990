//! `quorumdb demo`: a local cluster of separate `quorumdb server` processes.
//!
//! Contract (other tooling parses it): one line per node
//! `node n<i> zone z<k> http://127.0.0.1:<port> pid <pid>`, then `ready` once every node
//! answers `/readyz`. SIGINT/SIGTERM stop every node and exit 0. Node i listens for HTTP on
//! `base_port + i` and for peers on `base_port + 100 + i`; its config is written to
//! `<data-dir>/n<i>/quorumdb.toml` so it can be restarted by hand with `quorumdb server --config`.

use anyhow::{bail, Context, Result};
use clap::Args;
use quorumdb::launcher::{self, Cleanup, ClusterSpec, LocalCluster, Ports};
use quorumdb_node::config::Durability;
use std::path::PathBuf;
use std::time::Duration;

/// How long the demo waits for every node to become ready.
const READY_TIMEOUT_MS: u64 = 30_000;
/// How long stopping nodes may take before they are killed.
const STOP_TIMEOUT_MS: u64 = 10_000;

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

/// Parses `KEY=VALUE` overrides (TOML values; a bare word is a string) into config fields.
fn parse_overrides(overrides: &[String]) -> Result<toml::Table> {
    let mut table = toml::Table::new();
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
    Ok(table)
}

/// The launcher spec of a demo cluster.
fn cluster_spec(a: &DemoArgs) -> Result<ClusterSpec> {
    if a.nodes == 0 || a.zones == 0 {
        bail!("--nodes and --zones must be at least 1");
    }
    if u32::from(a.base_port) + u32::from(launcher::KAFKA_PORT_OFFSET) + u32::from(a.nodes)
        > u32::from(u16::MAX)
    {
        bail!("--base-port {} leaves no room for {} nodes", a.base_port, a.nodes);
    }
    let mut spec =
        ClusterSpec::new(usize::from(a.nodes), usize::from(a.zones), a.replicas, Ports::Base(a.base_port));
    // The demo is a local playground and `quorumdb nemesis` drives its faults.
    spec.admin_enabled = true;
    let mut settings = parse_overrides(&a.overrides)?;
    if a.durability != Durability::default() && !settings.contains_key("durability") {
        settings.insert("durability".into(), toml::Value::try_from(a.durability)?);
    }
    spec.settings = settings;
    spec.settings_origin = "--set".into();
    Ok(spec)
}

pub async fn run(a: DemoArgs) -> Result<i32> {
    let spec = cluster_spec(&a)?;
    let (dir, cleanup) = match &a.data_dir {
        Some(d) => (d.clone(), Cleanup::Keep),
        None => (LocalCluster::temp_dir("quorumdb-demo"), Cleanup::Remove),
    };
    let exe = std::env::current_exe().context("cannot find the quorumdb executable")?;
    let mut cluster = LocalCluster::create(&exe, &spec, &dir, None, cleanup)?;
    let result = run_in(&mut cluster).await;
    if result.is_err() {
        stop_all(&mut cluster);
    }
    result
}

async fn run_in(cluster: &mut LocalCluster) -> Result<i32> {
    for i in 0..cluster.len() {
        let pid = cluster.spawn(i)?;
        let c = cluster.config(i);
        println!("node {} zone {} http://{} pid {}", c.node_id, c.zone, c.http_listen, pid);
    }
    let all: Vec<usize> = (0..cluster.len()).collect();
    cluster.wait_ready(&all, Duration::from_millis(READY_TIMEOUT_MS)).await?;
    println!("ready");
    let shutdown = crate::cli::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, pid, status) in cluster.reap_exited() {
                    eprintln!("node {} (pid {pid}) exited: {status}; the other nodes keep running", cluster.id(i));
                }
            }
        }
    }
    stop_all(cluster);
    Ok(0)
}

/// SIGTERM every live node, then SIGKILL whatever has not exited after `STOP_TIMEOUT_MS`.
/// Blocks this runtime thread, which has nothing else to do by then.
fn stop_all(cluster: &mut LocalCluster) {
    let _ = cluster.stop_all(Duration::from_millis(STOP_TIMEOUT_MS));
}
