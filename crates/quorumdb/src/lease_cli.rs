//! `quorumdb lease ...`, `quorumdb lock ...`, `quorumdb elect ...`: leases and what binds to
//! them, in the metadata group.
//!
//! ```text
//!   quorumdb lease grant --ttl 10s            prints the lease id and TTL
//!   quorumdb lease keepalive 42               renews every TTL/3 until interrupted
//!   quorumdb lease revoke 42 | list
//!   quorumdb lock acquire jobs --lease 42 [--wait]     prints the fencing token
//!   quorumdb lock release jobs --token 57 | show jobs
//!   quorumdb elect campaign scheduler --lease 42 --value host-a   waits until leader; prints the token
//!   quorumdb elect leader scheduler | observe scheduler | resign scheduler --token 57
//! ```
//!
//! A lock and an election are the same object: one holder per name, bound to a lease, with a
//! fencing token that grows with every new holder.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use quorumdb_api as api;
use quorumdb_client::Client;
use std::time::Duration;

use crate::cli::{EndpointArg, TextOrJson};

/// How often `--wait`, `campaign` and `observe` look again.
const POLL_MS: u64 = 200;

#[derive(Args, Debug)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease.
    Grant {
        /// Time to live: 500ms, 10s, 2m (1 s to 1 h).
        #[arg(long, value_parser = parse_duration_ms)]
        ttl: u64,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Keep a lease alive (renews every TTL/3) until interrupted or the lease is gone.
    Keepalive { id: u64 },
    /// End a lease and release what it holds.
    Revoke { id: u64 },
    /// List the live leases.
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
}

#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(subcommand)]
    pub command: LockCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Take a lock for a lease; prints the fencing token.
    Acquire {
        name: String,
        #[arg(long)]
        lease: u64,
        /// Wait until the lock is free instead of failing with `held`.
        #[arg(long)]
        wait: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Give a lock up.
    Release {
        name: String,
        #[arg(long)]
        token: u64,
    },
    /// Show who holds a lock.
    Show {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    #[command(subcommand)]
    pub command: ElectCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum ElectCommand {
    /// Campaign until leader; prints the fencing token.
    Campaign {
        name: String,
        #[arg(long)]
        lease: u64,
        #[arg(long, default_value = "")]
        value: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Show the current leader.
    Leader {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Print every change of leader until interrupted.
    Observe { name: String },
    /// Step down.
    Resign {
        name: String,
        #[arg(long)]
        token: u64,
    },
}

/// `500ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let (digits, unit) =
        text.trim().split_at(text.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(text.trim().len()));
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit {unit:?} in {text:?}; use ms, s, m or h")),
    };
    ms.ok_or_else(|| format!("{text:?} is too long"))
}

fn holder_line(l: &api::LockInfo) -> String {
    match &l.holder {
        Some(h) => format!(
            "{}: held by lease {} with token {}{}",
            l.name,
            h.lease,
            h.token,
            if h.value.is_empty() { String::new() } else { format!(" ({})", h.value) }
        ),
        None => format!("{}: free (last token {})", l.name, l.last_token),
    }
}

pub async fn lease(a: LeaseArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        LeaseCommand::Grant { ttl, output } => {
            let l = client.grant_lease(ttl).await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => println!("lease {} granted, ttl {} ms", l.id, l.ttl_ms),
            }
        }
        LeaseCommand::Keepalive { id } => loop {
            let l = client.keepalive_lease(id).await?;
            println!("lease {} renewed for {} ms", l.id, l.ttl_ms);
            tokio::time::sleep(Duration::from_millis((l.ttl_ms / 3).max(100))).await;
        },
        LeaseCommand::Revoke { id } => {
            let r = client.revoke_lease(id).await?;
            println!(
                "lease {id} revoked; released: {}",
                if r.released.is_empty() { "-".into() } else { r.released.join(", ") }
            );
        }
        LeaseCommand::List { output } => {
            let l = client.leases().await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => {
                    for x in &l.leases {
                        println!(
                            "{}\tttl {} ms\t{} renewals\t{}",
                            x.id,
                            x.ttl_ms,
                            x.renewals,
                            x.holds.join(",")
                        );
                    }
                }
            }
        }
    }
    Ok(0)
}

/// Acquires `name`, waiting (polling) while another lease holds it if `wait`.
async fn acquire(client: &Client, name: &str, lease: u64, value: &str, wait: bool) -> Result<api::LockInfo> {
    loop {
        match client.acquire(name, lease, value).await {
            Ok(l) => return Ok(l),
            Err(e) if wait && e.code() == Some("held") => {
                // Wait by reading, not by proposing: every refused acquire is a log entry.
                while client.lock(name).await?.holder.is_some_and(|h| h.lease != lease) {
                    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
                }
            }
            Err(e) => bail!(e),
        }
    }
}

fn print_token(l: &api::LockInfo, output: TextOrJson) -> Result<()> {
    match output {
        TextOrJson::Json => println!("{}", serde_json::to_string(l)?),
        TextOrJson::Text => println!("{}", l.holder.as_ref().map_or(0, |h| h.token)),
    }
    Ok(())
}

pub async fn lock(a: LockArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        LockCommand::Acquire { name, lease, wait, output } => {
            print_token(&acquire(&client, &name, lease, "", wait).await?, output)?
        }
        LockCommand::Release { name, token } => {
            println!("{}", holder_line(&client.release(&name, token).await?))
        }
        LockCommand::Show { name, output } => {
            let l = client.lock(&name).await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => println!("{}", holder_line(&l)),
            }
        }
    }
    Ok(0)
}

pub async fn elect(a: ElectArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    match a.command {
        ElectCommand::Campaign { name, lease, value, output } => {
            print_token(&acquire(&client, &name, lease, &value, true).await?, output)?
        }
        ElectCommand::Leader { name, output } => {
            let l = client.lock(&name).await?;
            match output {
                TextOrJson::Json => println!("{}", serde_json::to_string(&l)?),
                TextOrJson::Text => match &l.holder {
                    Some(h) => println!("{}\ttoken {}\tlease {}", h.value, h.token, h.lease),
                    None => {
                        eprintln!("{name}: no leader");
                        return Ok(1);
                    }
                },
            }
        }
        ElectCommand::Observe { name } => {
            let mut last: Option<Option<api::HolderInfo>> = None;
            loop {
                let l = client.lock(&name).await?;
                if last.as_ref() != Some(&l.holder) {
                    println!("{}", holder_line(&l));
                    last = Some(l.holder);
                }
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        }
        ElectCommand::Resign { name, token } => {
            println!("{}", holder_line(&client.release(&name, token).await?))
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    /// Durations parse with their units; garbage is an error.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("3"), Ok(3_000));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5d").is_err());
        assert!(parse_duration_ms("").is_err());
    }
}
