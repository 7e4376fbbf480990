//! `quorumdb cluster ...` and `quorumdb table ...`: the metadata commands.
//!
//! ```text
//!   quorumdb cluster meta                         the metadata group: leader, term, indexes
//!   quorumdb cluster layout                       committed layout versions and staged changes
//!   quorumdb cluster join n6 --zone z3 --peer-address A --http-address H
//!   quorumdb cluster leave n2 | replace n2 n7 --zone z2 --peer-address A --http-address H
//!   quorumdb cluster plan [-o table|json]         what committing the staged changes would do
//!   quorumdb cluster commit                       commit them as the next layout version
//!   quorumdb cluster unstage                      drop the staged changes
//!   quorumdb table create carts --replicas 3 --conflict lww | list | describe carts
//! ```
//!
//! Every command prints the server's error (code and message) and exits 1 when it refuses.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use quorumdb_api as api;

use crate::cli::{EndpointArg, TableOrJson, TextOrJson};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The metadata Raft group as the endpoint sees it.
    Meta {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Committed layout versions (newest last) and the staged changes.
    Layout {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Stage a new member joining.
    Join(MemberArgs),
    /// Stage a member leaving.
    Leave { id: String },
    /// Stage a member being replaced by a new one in the same zone.
    Replace {
        old: String,
        #[command(flatten)]
        new: MemberArgs,
    },
    /// Show what committing the staged changes would do.
    Plan {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Commit the staged changes as the next layout version.
    Commit {
        /// The version the plan was made for (default: the current one, read first).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Drop every staged change.
    Unstage,
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    pub id: String,
    #[arg(long)]
    pub zone: String,
    #[arg(long)]
    pub peer_address: String,
    #[arg(long)]
    pub http_address: String,
}

impl MemberArgs {
    fn info(self) -> api::MemberInfo {
        api::MemberInfo {
            id: self.id,
            zone: self.zone,
            peer_address: self.peer_address,
            http_address: self.http_address,
        }
    }
}

#[derive(Args, Debug)]
pub struct TableArgs {
    #[command(subcommand)]
    pub command: TableCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictArg {
    Siblings,
    Lww,
    CrdtCounter,
    CrdtSet,
    CrdtMap,
}

#[derive(Subcommand, Debug)]
pub enum TableCommand {
    /// Declare a table.
    Create {
        name: String,
        #[arg(long, default_value_t = 3)]
        replicas: u8,
        #[arg(long, value_enum, default_value = "siblings")]
        conflict: ConflictArg,
    },
    /// List the declared tables.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Show one table.
    Describe {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
}

fn change_line(c: &api::ChangeInfo) -> String {
    match c {
        api::ChangeInfo::Join(m) => {
            format!("join {} (zone {}, peer {}, http {})", m.id, m.zone, m.peer_address, m.http_address)
        }
        api::ChangeInfo::Leave { id } => format!("leave {id}"),
        api::ChangeInfo::Replace { old, new } => format!("replace {old} by {} (zone {})", new.id, new.zone),
    }
}

pub async fn cluster(a: ClusterArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        ClusterCommand::Meta { output } => {
            let m = client.meta_status().await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&m)?),
                TextOrJson::Text => {
                    println!(
                        "reporter {} (raft id {}){}",
                        m.reporter,
                        m.raft_id,
                        if m.is_leader { ", the leader" } else { "" }
                    );
                    println!("leader {} · term {}", m.leader.as_deref().unwrap_or("(none known)"), m.term);
                    println!("applied {} · committed {}", m.applied_index, m.commit_index);
                    println!(
                        "voters {} · learners {}",
                        m.voters.join(","),
                        if m.learners.is_empty() { "-".into() } else { m.learners.join(",") }
                    );
                    println!("layout version {} · {} tables", m.layout_version, m.tables);
                }
            }
        }
        ClusterCommand::Layout { output } => {
            let l = client.layout().await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => {
                    for v in &l.versions {
                        let members: Vec<String> =
                            v.members.iter().map(|m| format!("{}@{}", m.id, m.zone)).collect();
                        println!("version {}{}: {}", v.version, version_state(v), members.join(" "));
                        for c in &v.changes {
                            println!("    by {}", change_line(c));
                        }
                    }
                    if l.versions.is_empty() {
                        println!("not bootstrapped yet");
                    }
                    if !l.progress.is_empty() {
                        let live = l.versions.iter().filter(|v| v.live).count();
                        if live > 1 {
                            println!(
                                "transition in progress: writes go to {live} versions, reads use version {}",
                                l.read_version
                            );
                        }
                        println!("member progress (ack / sync / sync_ack):");
                        for p in &l.progress {
                            println!("    {} {} / {} / {}", p.id, p.ack, p.sync, p.sync_ack);
                        }
                    }
                    for c in &l.staged {
                        println!("staged: {}", change_line(c));
                    }
                }
            }
        }
        ClusterCommand::Join(m) => print_staged(client.stage_change(&api::ChangeInfo::Join(m.info())).await?),
        ClusterCommand::Leave { id } => {
            print_staged(client.stage_change(&api::ChangeInfo::Leave { id }).await?)
        }
        ClusterCommand::Replace { old, new } => {
            print_staged(client.stage_change(&api::ChangeInfo::Replace { old, new: new.info() }).await?)
        }
        ClusterCommand::Unstage => print_staged(client.unstage().await?),
        ClusterCommand::Plan { output } => {
            let p = client.plan().await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&p)?),
                TableOrJson::Table => print_plan(&p),
            }
            if p.error.is_some() {
                return Ok(1);
            }
        }
        ClusterCommand::Commit { expected_version } => {
            let version = match expected_version {
                Some(v) => v,
                None => client.plan().await?.from_version,
            };
            let answer = client.commit_layout(version).await?;
            println!("committed layout version {}", answer.layout_version);
        }
    }
    Ok(0)
}

/// ` (live, read)`, ` (retired)` or nothing (an answer of a node without trackers).
fn version_state(v: &api::LayoutInfo) -> String {
    let mut states = Vec::new();
    if v.live {
        states.push("live");
    }
    if v.read {
        states.push("read");
    }
    if v.retired {
        states.push("retired");
    }
    if states.is_empty() {
        String::new()
    } else {
        format!(" ({})", states.join(", "))
    }
}

fn print_staged(answer: api::ChangeAnswer) {
    println!("staged; {} change(s) staged on layout version {}", answer.staged, answer.layout_version);
}

fn print_plan(p: &api::PlanInfo) {
    println!("plan: layout version {} → {}", p.from_version, p.to_version);
    for c in &p.staged {
        println!("  {}", change_line(c));
    }
    println!("{:<12} {:<8} {:>10} {:>10}", "member", "zone", "before", "after");
    for m in &p.members {
        println!(
            "{:<12} {:<8} {:>9.1}% {:>9.1}%",
            m.id,
            m.zone,
            m.ownership_before * 100.0,
            m.ownership_after * 100.0
        );
    }
    let zones: Vec<String> = p.zones_after.iter().map(|(z, s)| format!("{z} {:.0}%", s * 100.0)).collect();
    println!("zones after: {}", zones.join(", "));
    println!(
        "moves {:.1}% of replica placements (~{} item copies) · zone spread {}",
        p.moved_fraction * 100.0,
        p.items_estimated,
        if p.zone_spread_ok { "kept" } else { "BROKEN" }
    );
    if let Some(e) = &p.error {
        println!("cannot commit: {e}");
    }
}

pub async fn table(a: TableArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        TableCommand::Create { name, replicas, conflict } => {
            let conflict = match conflict {
                ConflictArg::Siblings => "siblings",
                ConflictArg::Lww => "lww",
                ConflictArg::CrdtCounter => "crdt-counter",
                ConflictArg::CrdtSet => "crdt-set",
                ConflictArg::CrdtMap => "crdt-map",
            };
            let t =
                client.create_table(&api::TableInfo { name, replicas, conflict: conflict.into() }).await?;
            println!("created table {} ({} replicas, {})", t.name, t.replicas, t.conflict);
        }
        TableCommand::List { output } => {
            let l = client.tables().await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => {
                    for t in &l.tables {
                        println!("{}\t{} replicas\t{}", t.name, t.replicas, t.conflict);
                    }
                    println!("(tables created on first write get {} replicas)", l.default_replicas);
                }
            }
        }
        TableCommand::Describe { name, output } => {
            let t = client.table(&name).await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&t)?),
                TextOrJson::Text => println!("{}\t{} replicas\t{}", t.name, t.replicas, t.conflict),
            }
        }
    }
    Ok(0)
}
