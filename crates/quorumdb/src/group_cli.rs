//! `quorumdb group ...`: the log's consumer groups, over the HTTP API.
//!
//! ```text
//!   quorumdb group list [-o table|json]             state, generation, members, total lag
//!   quorumdb group describe orders-sink [-o ...]    members with their partitions; per
//!                                                    partition: committed offset, high
//!                                                    watermark, lag
//! ```
//!
//! The committed offset is Kafka's: the next offset the group will read, so lag = high
//! watermark − committed.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::{EndpointArg, TableOrJson};

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: GroupCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the consumer groups.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Show one group: members, assignment and lag per partition.
    Describe {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
}

pub async fn group(a: GroupArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        GroupCommand::List { output } => {
            let l = client.groups().await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TableOrJson::Table => {
                    println!(
                        "{:<32} {:<20} {:>10} {:>7} {:>12}",
                        "GROUP", "STATE", "GENERATION", "MEMBERS", "LAG"
                    );
                    for g in &l.groups {
                        println!(
                            "{:<32} {:<20} {:>10} {:>7} {:>12}",
                            g.name, g.state, g.generation, g.members, g.lag
                        );
                    }
                }
            }
        }
        GroupCommand::Describe { name, output } => {
            let g = client.group(&name).await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&g)?),
                TableOrJson::Table => {
                    println!(
                        "group {} state {} generation {} protocol {}/{} leader {}",
                        g.name,
                        g.state,
                        g.generation,
                        g.protocol_type,
                        if g.protocol.is_empty() { "-" } else { &g.protocol },
                        if g.leader.is_empty() { "-" } else { &g.leader }
                    );
                    println!("{:<48} {:<24} {:<18} ASSIGNMENT", "MEMBER", "CLIENT", "HOST");
                    for m in &g.members {
                        let assignment: Vec<String> = m
                            .assignment
                            .iter()
                            .map(|a| {
                                let p: Vec<String> = a.partitions.iter().map(i32::to_string).collect();
                                format!("{}[{}]", a.topic, p.join(","))
                            })
                            .collect();
                        println!(
                            "{:<48} {:<24} {:<18} {}",
                            m.id,
                            m.client_id,
                            m.client_host,
                            assignment.join(" ")
                        );
                    }
                    println!(
                        "{:<32} {:>9} {:>12} {:>14} {:>10}",
                        "TOPIC", "PARTITION", "COMMITTED", "HIGH_WATERMARK", "LAG"
                    );
                    for o in &g.offsets {
                        println!(
                            "{:<32} {:>9} {:>12} {:>14} {:>10}",
                            o.topic, o.partition, o.committed, o.high_watermark, o.lag
                        );
                    }
                }
            }
        }
    }
    Ok(0)
}
