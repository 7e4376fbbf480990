//! `quorumdb demo`: a local cluster of separate `quorumdb server` processes.
//!
//! Contract (other tooling parses it): one line per node
//! `node n<i> zone z<k> http://127.0.0.1:<port> pid <pid>`, then `ready` once every node
//! answers `/readyz`. SIGINT/SIGTERM stop every node and exit 0. Node i listens for HTTP on
//! `base_port + i` and for peers on `base_port + 100 + i`; its config is written to
//! `<data-dir>/n<i>/quorumdb.toml` so it can be restarted by hand with `quorumdb server --config`.
//!
//! `--secure` starts the same cluster with TLS on every listener and authentication on: it
//! first makes a development CA, a node certificate and a client certificate for `root` in
//! `<data-dir>/certs` (`quorumdb certs`), then, once every node is ready, creates the admin
//! user `root`, writes its token to `<data-dir>/certs/root.token` and enables authentication.
//! Node lines then read `https://127.0.0.1:<port>`, and one `secure ...` line before `ready`
//! says where the CA and the token are.

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
    /// TLS on every listener and authentication on, with a development CA and an admin token
    /// made for the demo (under <data-dir>/certs).
    #[arg(long)]
    pub secure: bool,
}

/// The user `--secure` creates with the admin role.
const SECURE_ADMIN_USER: &str = "root";
/// How long `--secure` retries creating the admin while the metadata elects its first leader.
const SECURE_SETUP_TIMEOUT_MS: u64 = 20_000;

/// The dev CA, node and admin client certificates of `--secure`, in `<dir>/certs`. A kept
/// data dir keeps its certificates: a second run reuses them.
fn secure_certs(dir: &std::path::Path) -> Result<PathBuf> {
    use crate::certs_cli::{create_ca, create_client, create_node, CertsDir};
    let certs = dir.join("certs");
    let d = CertsDir { certs_dir: certs.clone(), ca_key: None, overwrite: false, lifetime_days: None };
    if !certs.join(quorumdb_node::tls::CA_CERT_FILE).exists() {
        create_ca(&d)?;
        create_node(&d, &[])?;
        create_client(&d, SECURE_ADMIN_USER)?;
    }
    Ok(certs)
}

/// Creates the admin user (once), writes its token next to the certificates, enables
/// authentication. Retries while the cluster has no metadata leader yet.
async fn secure_setup(cluster: &LocalCluster, certs: &std::path::Path) -> Result<PathBuf> {
    let token_path = certs.join(format!("{SECURE_ADMIN_USER}.token"));
    let tls = quorumdb_client::TlsOptions::from_files(&certs.join(quorumdb_node::tls::CA_CERT_FILE), None)?;
    let client = quorumdb_client::Client::with_tls(
        &cluster.http_url(0),
        quorumdb_client::DEFAULT_TIMEOUT,
        Some(&tls),
    )?;
    let deadline = std::time::Instant::now() + Duration::from_millis(SECURE_SETUP_TIMEOUT_MS);
    if !token_path.exists() {
        let created = loop {
            match client.create_user(SECURE_ADMIN_USER, &["admin".to_owned()]).await {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() < deadline && e.status() != Some(409) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("cannot create the demo's admin user"),
            }
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_path)
            .with_context(|| format!("cannot write {}", token_path.display()))?;
        writeln!(f, "{}", created.token)?;
    }
    let token = std::fs::read_to_string(&token_path)?.trim().to_owned();
    client.with_token(Some(token)).set_auth(true).await.context("cannot enable authentication")?;
    Ok(token_path)
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
    let mut spec = spec;
    let certs = if a.secure {
        let certs = secure_certs(&dir)?;
        let mut tls = toml::Table::new();
        tls.insert("certs_dir".into(), certs.to_string_lossy().into_owned().into());
        spec.settings.insert("tls".into(), tls.into());
        Some(certs)
    } else {
        None
    };
    let mut cluster = LocalCluster::create(&exe, &spec, &dir, None, cleanup)?;
    let result = run_in(&mut cluster, certs.as_deref()).await;
    if result.is_err() {
        stop_all(&mut cluster);
    }
    result
}

async fn run_in(cluster: &mut LocalCluster, certs: Option<&std::path::Path>) -> Result<i32> {
    for i in 0..cluster.len() {
        let pid = cluster.spawn(i)?;
        let c = cluster.config(i);
        println!("node {} zone {} {} pid {}", c.node_id, c.zone, cluster.http_url(i), pid);
    }
    let all: Vec<usize> = (0..cluster.len()).collect();
    cluster.wait_ready(&all, Duration::from_millis(READY_TIMEOUT_MS)).await?;
    if let Some(certs) = certs {
        let token = secure_setup(cluster, certs).await?;
        let ca = certs.join(quorumdb_node::tls::CA_CERT_FILE);
        println!(
            "secure: CA, node and {SECURE_ADMIN_USER} client certificates in {}; admin token in {} \
             (export QUORUMDB_CA_CERT={} QUORUMDB_TOKEN=$(cat {}))",
            certs.display(),
            token.display(),
            ca.display(),
            token.display()
        );
    }
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
