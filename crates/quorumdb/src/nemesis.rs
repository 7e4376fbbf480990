//! `quorumdb nemesis`: fault injection on a running cluster through each node's
//! `/v1/admin/faults` endpoint. The member list (and every node's HTTP address) comes from
//! `status` on the given endpoint, so one endpoint is enough to reach the whole cluster.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quorumdb_client::{Client, FaultRules};

#[derive(Args, Debug)]
pub struct NemesisArgs {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub endpoint: crate::cli::EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Cut the network between two sets of nodes (both directions unless --one-way).
    Partition {
        /// Comma-separated node ids on one side.
        #[arg(long, value_delimiter = ',', required = true)]
        from: Vec<String>,
        /// Comma-separated node ids on the other side (default: every other node).
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
        /// Only messages from `from` to `to` are lost.
        #[arg(long)]
        one_way: bool,
    },
    /// Drop each message sent by the nodes with this probability.
    Drop {
        #[arg(long)]
        probability: f64,
        /// Nodes to affect (default: all).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Delay each message sent by the nodes.
    Delay {
        #[arg(long)]
        ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Skew one node's wall clock by an offset (negative = behind).
    Clock {
        #[arg(long)]
        node: String,
        #[arg(long, allow_hyphen_values = true)]
        offset_ms: i64,
    },
    /// Remove every fault on every node.
    Heal,
    /// Print every node's fault rules.
    Show,
}

pub async fn run(a: NemesisArgs) -> Result<i32> {
    let seed = a.endpoint.client()?;
    let status = seed.status().await.context("cannot read the member list")?;
    let nodes: Vec<(String, Client)> = status
        .nodes
        .iter()
        .map(|n| {
            Ok((n.id.clone(), a.endpoint.client_for(&n.address).with_context(|| format!("node {}", n.id))?))
        })
        .collect::<Result<_>>()?;
    let ids: Vec<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
    let check = |list: &[String]| -> Result<()> {
        if let Some(bad) = list.iter().find(|n| !ids.contains(n)) {
            bail!("unknown node {bad:?}; members are {}", ids.join(", "));
        }
        Ok(())
    };
    let targets = |list: &[String]| -> Vec<String> {
        if list.is_empty() {
            ids.clone()
        } else {
            list.to_vec()
        }
    };
    match a.action {
        Action::Partition { from, to, one_way } => {
            check(&from)?;
            check(&to)?;
            let to =
                if to.is_empty() { ids.iter().filter(|i| !from.contains(i)).cloned().collect() } else { to };
            for (id, client) in &nodes {
                let mut rules = client.fault_rules().await.with_context(|| format!("node {id}"))?;
                if from.contains(id) {
                    rules.block_send_to.extend(to.iter().cloned());
                    if !one_way {
                        rules.block_receive_from.extend(to.iter().cloned());
                    }
                }
                if to.contains(id) {
                    rules.block_receive_from.extend(from.iter().cloned());
                    if !one_way {
                        rules.block_send_to.extend(from.iter().cloned());
                    }
                }
                client.set_fault_rules(&rules).await.with_context(|| format!("node {id}"))?;
            }
        }
        Action::Drop { probability, nodes: list } => {
            check(&list)?;
            update(&nodes, &targets(&list), |r| r.drop_probability = probability).await?;
        }
        Action::Delay { ms, jitter_ms, nodes: list } => {
            check(&list)?;
            update(&nodes, &targets(&list), |r| {
                r.delay_ms = ms;
                r.delay_jitter_ms = jitter_ms;
            })
            .await?;
        }
        Action::Clock { node, offset_ms } => {
            check(std::slice::from_ref(&node))?;
            update(&nodes, &[node], |r| r.clock_offset_ms = offset_ms).await?;
        }
        Action::Heal => {
            for (id, client) in &nodes {
                client.set_fault_rules(&FaultRules::default()).await.with_context(|| format!("node {id}"))?;
            }
        }
        Action::Show => {
            for (id, client) in &nodes {
                match client.faults().await {
                    Ok(rules) => println!("{id}\t{rules}"),
                    Err(e) => println!("{id}\tunreachable: {e}"),
                }
            }
        }
    }
    Ok(0)
}

async fn update(nodes: &[(String, Client)], which: &[String], f: impl Fn(&mut FaultRules)) -> Result<()> {
    for (id, client) in nodes.iter().filter(|(id, _)| which.contains(id)) {
        let mut rules = client.fault_rules().await.with_context(|| format!("node {id}"))?;
        f(&mut rules);
        client.set_fault_rules(&rules).await.with_context(|| format!("node {id}"))?;
    }
    Ok(())
}
