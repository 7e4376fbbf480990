//! `quorumdb topic ...`: the Kafka-compatible log's topics, over the HTTP API.
//!
//! ```text
//!   quorumdb topic create orders --partitions 6 [--replication-factor 3] [--retention-ms 86400000]
//!   quorumdb topic list [-o table|json]           name, partitions, records, bytes, retention
//!   quorumdb topic describe orders [-o table|json] offsets per partition
//!   quorumdb topic delete orders
//! ```
//!
//! Offsets are the answering node's applied view; a node that lags the metadata leader shows
//! slightly older high watermarks, never newer ones.

use anyhow::Result;
use clap::{Args, Subcommand};
use quorumdb_api as api;

use crate::cli::{EndpointArg, TableOrJson};

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: TopicCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic (defaults from the cluster's `[log]` config).
    Create {
        name: String,
        #[arg(long)]
        partitions: Option<u32>,
        /// Accepted from 1 to N; batches are stored with the cluster's N.
        #[arg(long)]
        replication_factor: Option<u8>,
        /// Keep batches this long (by their newest record's timestamp); -1: forever.
        #[arg(long, allow_negative_numbers = true)]
        retention_ms: Option<i64>,
        /// Keep at most this many bytes per partition; -1: unlimited.
        #[arg(long, allow_negative_numbers = true)]
        retention_bytes: Option<i64>,
    },
    /// List the topics with their totals.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Show one topic's partitions: log start, high watermark, batches, bytes.
    Describe {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    /// Delete a topic: hidden at once, its batches removed in the background.
    Delete { name: String },
}

fn limit(v: Option<u64>, unit: &str) -> String {
    v.map_or_else(|| "unlimited".to_string(), |v| format!("{v}{unit}"))
}

/// Records a partition holds: offsets are dense, so this is an exact count.
fn records(p: &api::TopicPartitionInfo) -> u64 {
    p.high_watermark.saturating_sub(p.log_start_offset)
}

pub async fn topic(a: TopicArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        TopicCommand::Create { name, partitions, replication_factor, retention_ms, retention_bytes } => {
            let t = client
                .create_topic(&api::NewTopic {
                    name,
                    partitions,
                    replication_factor,
                    retention_ms,
                    retention_bytes,
                })
                .await?;
            println!(
                "created topic {} ({} partitions, replication factor {}, retention {} / {} per partition, id {})",
                t.name,
                t.partitions.len(),
                t.replication_factor,
                limit(t.retention_ms, " ms"),
                limit(t.retention_bytes, " bytes"),
                t.id
            );
        }
        TopicCommand::List { output } => {
            let l = client.topics().await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TableOrJson::Table => {
                    println!(
                        "{:<32} {:>10} {:>3} {:>12} {:>14} {:>16} {:>16}",
                        "TOPIC", "PARTITIONS", "RF", "RECORDS", "BYTES", "RETENTION_MS", "RETENTION_BYTES"
                    );
                    for t in &l.topics {
                        println!(
                            "{:<32} {:>10} {:>3} {:>12} {:>14} {:>16} {:>16}",
                            t.name,
                            t.partitions.len(),
                            t.replication_factor,
                            t.partitions.iter().map(records).sum::<u64>(),
                            t.partitions.iter().map(|p| p.bytes).sum::<u64>(),
                            limit(t.retention_ms, ""),
                            limit(t.retention_bytes, ""),
                        );
                    }
                    let brokers: Vec<&str> =
                        l.kafka_addresses.iter().map(String::as_str).filter(|a| !a.is_empty()).collect();
                    if !brokers.is_empty() {
                        println!("(Kafka bootstrap servers: {})", brokers.join(","));
                    }
                }
            }
        }
        TopicCommand::Describe { name, output } => {
            let t = client.topic(&name).await?;
            match output {
                TableOrJson::Json => println!("{}", serde_json::to_string(&t)?),
                TableOrJson::Table => {
                    println!(
                        "topic {} id {} replication factor {} retention {} / {} per partition",
                        t.name,
                        t.id,
                        t.replication_factor,
                        limit(t.retention_ms, " ms"),
                        limit(t.retention_bytes, " bytes")
                    );
                    println!(
                        "{:>9} {:>12} {:>14} {:>12} {:>10} {:>14} {:>9}",
                        "PARTITION",
                        "LOG_START",
                        "HIGH_WATERMARK",
                        "RECORDS",
                        "BATCHES",
                        "BYTES",
                        "PRODUCERS"
                    );
                    for p in &t.partitions {
                        println!(
                            "{:>9} {:>12} {:>14} {:>12} {:>10} {:>14} {:>9}",
                            p.partition,
                            p.log_start_offset,
                            p.high_watermark,
                            records(p),
                            p.batches,
                            p.bytes,
                            p.producers
                        );
                    }
                }
            }
        }
        TopicCommand::Delete { name } => {
            let d = client.delete_topic(&name).await?;
            println!("deleting topic {}: hidden now, its batches are removed in the background", d.name);
        }
    }
    Ok(0)
}
