//! Command-line interface. The client commands' output formats are a contract that other
//! tooling depends on (see README and docs/api.md); change them only deliberately.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use quorumdb_client::{Client, ReadOptions, ScanOptions, WriteOptions};
use quorumdb_node::config::{ConfigOverrides, Durability, NodeConfig};
use std::io::Read;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "quorumdb",
    version,
    about = "A Dynamo-style replicated data platform and distributed-systems lab"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node.
    Server(ServerArgs),
    /// Start a local cluster of separate server processes.
    Demo(crate::demo::DemoArgs),
    /// Write a value; prints the new causality token.
    Put(PutArgs),
    /// Read a key; one line per sibling (text) or {"values": [...], "context": ...} (json).
    Get(GetArgs),
    /// Delete a key (a tombstone that supersedes what the context, or a quorum read, saw).
    Delete(DeleteArgs),
    /// Read a range of sort keys inside one partition.
    Scan(ScanArgs),
    /// Show the cluster's members, their state and ring ownership.
    Status(StatusArgs),
    /// Show what each replica of a key holds locally (repairs nothing).
    Inspect(InspectArgs),
    /// Run a full anti-entropy pass on every node and show its progress.
    Repair(RepairArgs),
    /// YCSB-style load generator.
    Bench(crate::bench::BenchArgs),
    /// Inject faults into a running cluster: partitions, drops, delays, clock skew.
    Nemesis(crate::nemesis::NemesisArgs),
    /// The lab: fault-injection scenarios on a real local cluster, and seeded simulation.
    Lab(crate::lab::LabArgs),
    /// Cluster metadata: the Raft group, layout versions, staged membership changes.
    Cluster(crate::cluster_cli::ClusterArgs),
    /// Declared tables: create, list, describe.
    Table(crate::cluster_cli::TableArgs),
    /// Topics of the Kafka-compatible log: create, list, describe, delete.
    Topic(crate::topic_cli::TopicArgs),
    /// CRDT tables: get, incr, add, remove, assign (docs/api.md, "CRDT tables").
    Crdt(crate::crdt_cli::CrdtArgs),
    /// Consumer groups of the log: list, describe (members, assignment, lag).
    Group(crate::group_cli::GroupArgs),
    /// Users and their API tokens (authentication: docs/security.md).
    User(crate::auth_cli::UserArgs),
    /// Roles and their grants.
    Role(crate::auth_cli::RoleArgs),
    /// Turn authentication on or off, or show whether it is on.
    Auth(crate::auth_cli::AuthArgs),
    /// Sinks: deliver topics to PostgreSQL with exactly-once effect (create, list, describe,
    /// pause, resume, delete).
    Sink(crate::sink_cli::SinkArgs),
    /// Leases: grant, keepalive, revoke, list.
    Lease(crate::lease_cli::LeaseArgs),
    /// Locks bound to a lease, with fencing tokens.
    Lock(crate::lease_cli::LockArgs),
    /// Leader elections bound to a lease, with fencing tokens.
    Elect(crate::lease_cli::ElectArgs),
    /// The hottest partition keys over the last second, every node's view merged.
    Hot(HotArgs),
    /// A development certificate authority: create-ca, create-node, create-client.
    Certs(crate::certs_cli::CertsArgs),
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "QUORUMDB_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "QUORUMDB_NODE_ID")]
    pub node_id: Option<String>,
    #[arg(long, env = "QUORUMDB_ZONE")]
    pub zone: Option<String>,
    /// HTTP API listen address, e.g. 127.0.0.1:7701.
    #[arg(long, env = "QUORUMDB_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Peer (node-to-node) listen address, e.g. 127.0.0.1:7801.
    #[arg(long, env = "QUORUMDB_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    #[arg(long, env = "QUORUMDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Default replication factor N of tables.
    #[arg(long, env = "QUORUMDB_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
    /// fsync (default) or buffered.
    #[arg(long, env = "QUORUMDB_DURABILITY")]
    pub durability: Option<Durability>,
    #[arg(long, env = "QUORUMDB_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Static members: id@zone@peer_addr@http_url, comma-separated.
    #[arg(long, env = "QUORUMDB_MEMBERS")]
    pub members: Option<String>,
    // TLS (`[tls]`, docs/security.md): with a certs dir or a cert, every listener is TLS.
    /// Directory with ca.crt, node.crt and node.key (from `quorumdb certs`).
    #[arg(long, env = "QUORUMDB_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The node's certificate (PEM); overrides <certs-dir>/node.crt.
    #[arg(long, env = "QUORUMDB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The node certificate's key (PEM); overrides <certs-dir>/node.key.
    #[arg(long, env = "QUORUMDB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM); overrides <certs-dir>/ca.crt.
    #[arg(long, env = "QUORUMDB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// HTTP and Kafka clients must present a certificate signed by the CA.
    #[arg(long, env = "QUORUMDB_TLS_CLIENT_CERT_REQUIRED")]
    pub tls_client_cert_required: Option<bool>,
    /// Join a running cluster through this existing node's HTTP address (e.g.
    /// http://127.0.0.1:7701). The node must be in the latest committed layout (`cluster join`
    /// then `cluster commit`); the config need list only this node. Needed at the first start
    /// only: later starts use what the data directory recorded.
    #[arg(long, env = "QUORUMDB_JOIN")]
    pub join: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct EndpointArg {
    /// Node to talk to.
    /// Accepted before or after a subcommand (`quorumdb topic list --endpoint URL`).
    #[arg(long, global = true, env = "QUORUMDB_ENDPOINT", default_value = "http://127.0.0.1:7701")]
    pub endpoint: String,
    /// API token (`qdb_...`, from `quorumdb user create`) for a cluster with authentication on.
    #[arg(long, global = true, env = "QUORUMDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS for `https://` endpoints (docs/security.md).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// The cluster CA certificate (PEM), for https:// endpoints.
    #[arg(long, global = true, env = "QUORUMDB_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate (PEM, from `quorumdb certs create-client`), for listeners that
    /// require one; needs --client-key.
    #[arg(long, global = true, env = "QUORUMDB_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "QUORUMDB_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client's TLS options, read from the files; `None` without a CA.
    pub fn options(&self) -> Result<Option<quorumdb_client::TlsOptions>> {
        let Some(ca) = &self.ca_cert else { return Ok(None) };
        let identity = self.client_cert.as_deref().zip(self.client_key.as_deref());
        Ok(Some(quorumdb_client::TlsOptions::from_files(ca, identity)?))
    }

    /// A client for `endpoint` with these TLS options.
    pub fn client(&self, endpoint: &str) -> Result<Client> {
        let tls = self.options()?;
        Ok(Client::with_tls(endpoint, quorumdb_client::DEFAULT_TIMEOUT, tls.as_ref())?)
    }
}

impl EndpointArg {
    /// A client for `endpoint`, carrying the token.
    pub fn client(&self) -> Result<Client> {
        self.client_for(&self.endpoint)
    }

    /// A client for another node of the same cluster, carrying the token.
    pub fn client_for(&self, endpoint: &str) -> Result<Client> {
        Ok(self.tls.client(endpoint)?.with_token(self.token.clone()))
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    pub table: String,
    pub key: String,
    /// The value; `-` reads it from stdin.
    pub value: String,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub session: SessionArg,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

/// `--session FILE`: read-your-writes and monotonic reads across commands.
#[derive(Args, Debug)]
pub struct SessionArg {
    /// A file holding a session token (created if missing): this command presents it and
    /// saves the token the node hands back, so a later `get --session FILE` never reads an
    /// item older than what earlier commands with the same file wrote or read of it.
    #[arg(long, value_name = "FILE")]
    pub session: Option<std::path::PathBuf>,
}

impl SessionArg {
    /// `client` joined to the session in the file, if one was named.
    fn join(&self, client: Client) -> Result<(Client, Option<quorumdb_client::Session>)> {
        let Some(path) = &self.session else { return Ok((client, None)) };
        let token = match std::fs::read_to_string(path) {
            Ok(t) => t.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(anyhow::anyhow!("cannot read the session file {}: {e}", path.display())),
        };
        let session = quorumdb_client::Session::from_token(token);
        Ok((client.with_session(session.clone()), Some(session)))
    }

    /// Saves the session's token back to its file (through a temporary file and a rename, so
    /// a crash leaves the old token or the new one, never half of one).
    fn save(&self, session: Option<quorumdb_client::Session>) -> Result<()> {
        let (Some(path), Some(session)) = (&self.session, session) else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, session.token() + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot save the session file {}", path.display()))
    }
}

/// The flags every write (put or delete) takes.
#[derive(Args, Debug)]
pub struct WriteFlags {
    #[arg(long)]
    pub sort_key: Option<String>,
    /// Write consistency: a number or one|quorum|all.
    #[arg(long)]
    pub w: Option<String>,
    /// Causality token from an earlier read: the write supersedes what that read saw.
    #[arg(long)]
    pub context: Option<String>,
    /// `strict` (default: only home replicas count) or `sloppy` (stand-ins count while home
    /// replicas are down).
    #[arg(long, value_parser = ["strict", "sloppy"])]
    pub quorum: Option<String>,
    /// The write's id (32 hex digits or a UUID). Running the command again with the same id
    /// (say, after a timeout) yields one version of the write, not two. Default: a fresh id.
    #[arg(long)]
    pub write_id: Option<String>,
    /// A fencing token NAME:TOKEN (from `lock acquire` or `elect campaign`): the write is
    /// refused (`fenced`) where a higher token of NAME is known.
    #[arg(long)]
    pub fence: Option<String>,
}

impl WriteFlags {
    fn options(self) -> WriteOptions {
        WriteOptions {
            w: self.w,
            context: self.context,
            sort_key: self.sort_key,
            timeout_ms: None,
            quorum: self.quorum,
            write_id: self.write_id,
            fence: self.fence,
        }
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub table: String,
    pub key: String,
    #[arg(long)]
    pub sort_key: Option<String>,
    /// Read consistency: a number or one|quorum|all.
    #[arg(long, conflicts_with = "linearizable")]
    pub r: Option<String>,
    /// Quorum read that writes what it returns back to the read quorum before answering.
    #[arg(long)]
    pub linearizable: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: TextOrJson,
    /// `strict` (default: only home replicas count) or `sloppy` (stand-ins count while home
    /// replicas are down).
    #[arg(long, value_parser = ["strict", "sloppy"])]
    pub quorum: Option<String>,
    #[command(flatten)]
    pub session: SessionArg,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub table: String,
    pub key: String,
    #[command(flatten)]
    pub write: WriteFlags,
    #[command(flatten)]
    pub session: SessionArg,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    pub table: String,
    pub key: String,
    /// First sort key (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// Last sort key (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub reverse: bool,
    /// Continue after the page whose `next` this is.
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long)]
    pub r: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: TextOrJson,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub table: String,
    pub key: String,
    #[arg(long)]
    pub sort_key: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: TextOrJson,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Only this table's trees.
    #[arg(long)]
    pub table: Option<String>,
    /// Wait until every node finished its pass, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Only the node at --endpoint runs a pass (exchanging with each of its peers), instead of
    /// every node: one exchange per tree and peer, which makes the cost easy to attribute.
    #[arg(long)]
    pub local: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: TextOrJson,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: TableOrJson,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Args, Debug)]
pub struct HotArgs {
    /// Only this table's keys.
    #[arg(long)]
    pub table: Option<String>,
    /// Most keys shown (1 to 256).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only the node at --endpoint, not every member.
    #[arg(long)]
    pub node_only: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: TableOrJson,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

/// Runs a command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Server(a) => server(a).await.map(|()| 0),
        Command::Demo(a) => crate::demo::run(a).await,
        Command::Put(a) => put(a).await,
        Command::Get(a) => get(a).await,
        Command::Delete(a) => delete(a).await,
        Command::Scan(a) => scan(a).await,
        Command::Status(a) => status(a).await,
        Command::Inspect(a) => inspect(a).await,
        Command::Repair(a) => repair(a).await,
        Command::Bench(a) => crate::bench::run(a).await.map(|()| 0),
        Command::Nemesis(a) => crate::nemesis::run(a).await,
        Command::Lab(a) => crate::lab::run(a).await,
        Command::Cluster(a) => crate::cluster_cli::cluster(a).await,
        Command::Table(a) => crate::cluster_cli::table(a).await,
        Command::Topic(a) => crate::topic_cli::topic(a).await,
        Command::Crdt(a) => crate::crdt_cli::crdt(a).await,
        Command::Group(a) => crate::group_cli::group(a).await,
        Command::User(a) => crate::auth_cli::user(a).await,
        Command::Role(a) => crate::auth_cli::role(a).await,
        Command::Auth(a) => crate::auth_cli::auth(a).await,
        Command::Sink(a) => crate::sink_cli::sink(a).await,
        Command::Lease(a) => crate::lease_cli::lease(a).await,
        Command::Lock(a) => crate::lease_cli::lock(a).await,
        Command::Elect(a) => crate::lease_cli::elect(a).await,
        Command::Hot(a) => hot(a).await,
        Command::Certs(a) => crate::certs_cli::certs(a),
    }
}

async fn hot(a: HotArgs) -> Result<i32> {
    let q = quorumdb_api::HotQuery {
        table: a.table.clone(),
        limit: Some(a.limit),
        scope: Some(if a.node_only { "node" } else { "cluster" }.into()),
    };
    let r = client(&a.endpoint)?.hot(&q).await?;
    match a.output {
        TableOrJson::Json => println!("{}", serde_json::to_string(&r)?),
        TableOrJson::Table => {
            println!(
                "{} over {} ms on {}: {:.0} reads/s, {:.0} writes/s",
                r.scope,
                r.window_ms,
                r.nodes.join(","),
                r.reads_per_s,
                r.writes_per_s
            );
            for (id, why) in &r.missing {
                eprintln!("{id} did not answer: {why}");
            }
            println!(
                "{:<16} {:<32} {:>10} {:>10} {:>7} {:>8}",
                "TABLE", "KEY", "READS/S", "WRITES/S", "SHARE", "±/S"
            );
            for k in &r.keys {
                println!(
                    "{:<16} {:<32} {:>10.1} {:>10.1} {:>6.1}% {:>8.1}",
                    k.table,
                    k.key,
                    k.reads_per_s,
                    k.writes_per_s,
                    k.share * 100.0,
                    k.error_per_s
                );
            }
        }
    }
    Ok(0)
}

async fn server(a: ServerArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUORUMDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let overrides = ConfigOverrides {
        node_id: a.node_id,
        zone: a.zone,
        http_listen: a.http_listen,
        peer_listen: a.peer_listen,
        data_dir: a.data_dir,
        replication_factor: a.replication_factor,
        durability: a.durability,
        request_timeout_ms: a.request_timeout_ms,
        members: a.members,
        tls_certs_dir: a.certs_dir,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        tls_ca: a.tls_ca,
        tls_client_cert_required: a.tls_client_cert_required,
    };
    let mut overrides = overrides;
    // A joining (or joined) node's config may list no member at all: it is told the members,
    // so its own flags stand for its entry.
    let joined_before = overrides.data_dir.as_deref().is_some_and(|d| quorumdb_node::join::path(d).exists());
    if let (true, None, Some(id), Some(zone), Some(peer)) = (
        a.join.is_some() || joined_before,
        &overrides.members,
        &overrides.node_id,
        &overrides.zone,
        &overrides.peer_listen,
    ) {
        overrides.members = Some(format!("{id}@{zone}@{peer}"));
    }
    let config = NodeConfig::load(a.config.as_deref(), overrides)?;
    if let Some(addr) = &a.join {
        join_cluster(&config, addr).await?;
    }
    quorumdb_node::run(config, shutdown_signal()).await?;
    Ok(())
}

/// `server --join ADDR`: asks the existing node at `addr` for the latest committed layout and
/// the founding members, checks that this node is in that layout, and records both in the data
/// directory (`quorumdb_node::join`). A node that already joined keeps its record: its raft
/// state on disk is what it restarts from.
async fn join_cluster(config: &NodeConfig, addr: &str) -> Result<()> {
    use quorumdb_node::config::MemberConfig;
    use quorumdb_node::join::{self, Joined};
    if let Some(j) = join::load(&config.data_dir).map_err(anyhow::Error::msg)? {
        tracing::info!(via = %j.via, layout_version = j.layout_version, "already joined; --join is not needed on restart");
        return Ok(());
    }
    let c = Client::new(addr).with_context(|| format!("cannot reach {addr} to join the cluster"))?;
    let layouts = c.layout().await.with_context(|| format!("cannot read the cluster layout from {addr}"))?;
    let status =
        c.meta_status().await.with_context(|| format!("cannot read the metadata status from {addr}"))?;
    let Some(latest) = layouts.versions.last() else {
        anyhow::bail!("{addr} has no committed layout yet (its cluster is not bootstrapped); retry shortly");
    };
    let me = &config.node_id;
    if !latest.members.iter().any(|m| &m.id == me) {
        anyhow::bail!(
            "node {me} is not a member of the latest committed layout (version {}) of the cluster at {addr}; \
             add it first: `quorumdb cluster join {me} --zone <zone> --peer-address <addr> --http-address <url> \
             --endpoint {addr}`, then `quorumdb cluster commit --endpoint {addr}`, and start this node again",
            latest.version
        );
    }
    if status.founders.is_empty() {
        anyhow::bail!("{addr} does not report the cluster's founding members (an older version?)");
    }
    let member = |id: &str, zone: &str, peer: &str, http: &str| MemberConfig {
        id: id.into(),
        zone: zone.into(),
        peer: peer.into(),
        http: if http == "-" { String::new() } else { http.into() },
        kafka: String::new(),
    };
    let joined = Joined {
        via: addr.into(),
        layout_version: latest.version,
        founders: status
            .founders
            .iter()
            .map(|m| member(&m.id, &m.zone, &m.peer_address, &m.http_address))
            .collect(),
        members: latest
            .members
            .iter()
            .map(|m| member(&m.id, &m.zone, &m.peer_address, &m.http_address))
            .collect(),
    };
    join::save(&config.data_dir, &joined).map_err(anyhow::Error::msg)?;
    tracing::info!(via = %addr, layout_version = latest.version, "joining the cluster as a metadata learner");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn client(e: &EndpointArg) -> Result<Client> {
    e.client()
}

async fn put(a: PutArgs) -> Result<i32> {
    let value = if a.value == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the value from stdin")?;
        s
    } else {
        a.value
    };
    let opts = a.write.options();
    let (c, session) = a.session.join(client(&a.endpoint)?)?;
    let r = c.put(&a.table, &a.key, &value, &opts).await?;
    a.session.save(session)?;
    println!("{}", r.context);
    Ok(0)
}

async fn get(a: GetArgs) -> Result<i32> {
    let consistency = a.linearizable.then(|| "linearizable".to_string());
    let opts = ReadOptions {
        r: a.r,
        sort_key: a.sort_key,
        timeout_ms: None,
        consistency,
        read_repair: None,
        quorum: a.quorum,
    };
    let (c, session) = a.session.join(client(&a.endpoint)?)?;
    let r = c.get(&a.table, &a.key, &opts).await?;
    a.session.save(session)?;
    let found = !r.values.is_empty();
    match a.output {
        TextOrJson::Json => println!("{}", serde_json::to_string(&r)?),
        TextOrJson::Text => {
            if found {
                for v in &r.values {
                    println!("{v}");
                }
                if r.values.len() > 1 {
                    eprintln!("{} siblings; context {}", r.values.len(), r.context);
                }
            } else {
                eprintln!("not found: {}/{}", a.table, a.key);
            }
        }
    }
    Ok(if found { 0 } else { 1 })
}

async fn delete(a: DeleteArgs) -> Result<i32> {
    let opts = a.write.options();
    let (c, session) = a.session.join(client(&a.endpoint)?)?;
    let r = c.delete(&a.table, &a.key, &opts).await?;
    a.session.save(session)?;
    println!("{}", r.context);
    Ok(0)
}

async fn scan(a: ScanArgs) -> Result<i32> {
    let opts =
        ScanOptions { from: a.from, to: a.to, limit: a.limit, reverse: a.reverse, cursor: a.cursor, r: a.r };
    let r = client(&a.endpoint)?.scan(&a.table, &a.key, &opts).await?;
    match a.output {
        TextOrJson::Json => println!("{}", serde_json::to_string(&r)?),
        TextOrJson::Text => {
            for item in &r.items {
                println!("{}\t{}", item.sort_key, item.values.join("\t"));
            }
            if let Some(next) = &r.next {
                eprintln!("more: --cursor {next}");
            }
        }
    }
    Ok(0)
}

async fn status(a: StatusArgs) -> Result<i32> {
    let r = client(&a.endpoint)?.status().await?;
    match a.output {
        TableOrJson::Json => println!("{}", serde_json::to_string(&r)?),
        TableOrJson::Table => {
            println!(
                "{:<8} {:<6} {:<28} {:<22} {:<6} {:>9}",
                "ID", "ZONE", "ADDRESS", "KAFKA", "STATE", "OWNERSHIP"
            );
            for n in &r.nodes {
                println!(
                    "{:<8} {:<6} {:<28} {:<22} {:<6} {:>8.1}%",
                    n.id,
                    n.zone,
                    n.address,
                    n.kafka.as_deref().unwrap_or("-"),
                    n.state,
                    n.ownership * 100.0
                );
            }
        }
    }
    Ok(0)
}

async fn inspect(a: InspectArgs) -> Result<i32> {
    let r = client(&a.endpoint)?.inspect(&a.table, &a.key, a.sort_key.as_deref()).await?;
    match a.output {
        TextOrJson::Json => println!("{}", serde_json::to_string(&r)?),
        TextOrJson::Text => {
            println!(
                "{:<8} {:<6} {:<6} {:<9} {:<40} VALUES",
                "NODE", "ZONE", "STATE", "TOMBSTONE", "VERSION"
            );
            for rep in &r.replicas {
                println!(
                    "{:<8} {:<6} {:<6} {:<9} {:<40} {}",
                    rep.node,
                    rep.zone,
                    rep.state,
                    rep.tombstone,
                    rep.version,
                    match &rep.crdt {
                        // CRDT tables: the replica's state, its concurrent states joined.
                        Some(c) => crate::crdt_cli::one_line(c),
                        None => rep.values.join(" | "),
                    }
                );
            }
        }
    }
    Ok(0)
}

/// The id of the node answering at `client` (its status names itself as `reporter`).
async fn status_reporter(client: &Client) -> Option<String> {
    // The typed status response does not carry `reporter`; the inspect of our own member list
    // does not either, so match on the address instead.
    let status = client.status().await.ok()?;
    let me = client.endpoint().trim_end_matches('/');
    status.nodes.iter().find(|n| n.address.trim_end_matches('/') == me).map(|n| n.id.clone())
}

/// How long `repair --wait` waits for every node's pass before giving up.
const REPAIR_WAIT_MS_MAX: u64 = 3_600_000;

async fn repair(a: RepairArgs) -> Result<i32> {
    use std::io::IsTerminal;
    let seed = client(&a.endpoint)?;
    let status = seed.status().await?;
    let mut nodes = Vec::new();
    let reporter = status_reporter(&seed).await;
    for n in status.nodes.iter().filter(|n| n.state == "up") {
        if a.local && reporter.as_deref() != Some(n.id.as_str()) {
            continue;
        }
        let c = a.endpoint.client_for(&n.address)?;
        let before = c.repair_progress().await.with_context(|| format!("node {}", n.id))?.passes_completed;
        c.start_repair(a.table.as_deref()).await.with_context(|| format!("node {}", n.id))?;
        nodes.push((n.id.clone(), c, before));
    }
    let skipped: Vec<&str> = status.nodes.iter().filter(|n| n.state != "up").map(|n| n.id.as_str()).collect();
    if !skipped.is_empty() {
        eprintln!("skipping nodes that are down: {}", skipped.join(", "));
    }
    if !a.wait {
        println!("repair started on {} nodes", nodes.len());
        return Ok(0);
    }
    let tty = std::io::stderr().is_terminal() && a.output == TextOrJson::Text;
    let bar = if tty { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
    if let Ok(style) = indicatif::ProgressStyle::with_template("exchanges {pos}/{len} {wide_bar} {msg}") {
        bar.set_style(style);
    }
    let started = std::time::Instant::now();
    let mut last_line = String::new();
    let totals = loop {
        let mut done = 0usize;
        let mut total = 0usize;
        let mut finished = true;
        let mut sum = quorumdb_client::RepairProgress::default();
        for (id, c, before) in &nodes {
            let p = c.repair_progress().await.with_context(|| format!("node {id}"))?;
            finished &= !p.running && p.passes_completed > *before;
            done += p.exchanges_done;
            total += p.exchanges_total;
            sum.keys_pushed += p.keys_pushed;
            sum.keys_pulled += p.keys_pulled;
            sum.item_bytes += p.item_bytes;
            sum.exchanges_failed += p.exchanges_failed;
            sum.exchanges_total += p.exchanges_total;
            sum.exchanges_done += p.exchanges_done;
            sum.digests_received += p.digests_received;
            sum.leaves_differing += p.leaves_differing;
        }
        let msg =
            format!("{} keys pushed, {} pulled, {} bytes", sum.keys_pushed, sum.keys_pulled, sum.item_bytes);
        if tty {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(msg.clone());
        } else if a.output == TextOrJson::Text {
            let line = format!("exchanges {done}/{total}: {msg}");
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        if finished {
            break sum;
        }
        if started.elapsed().as_millis() as u64 > REPAIR_WAIT_MS_MAX {
            anyhow::bail!("repair did not finish within {} s", REPAIR_WAIT_MS_MAX / 1000);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    match a.output {
        TextOrJson::Json => println!("{}", serde_json::to_string(&totals)?),
        TextOrJson::Text => println!(
            "repair complete: {} keys pushed, {} pulled, {} bytes of item data, {} failed exchanges",
            totals.keys_pushed, totals.keys_pulled, totals.item_bytes, totals.exchanges_failed
        ),
    }
    Ok(if totals.exchanges_failed > 0 { 1 } else { 0 })
}
