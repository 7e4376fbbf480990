//! `quorumdb crdt ...`: operations on CRDT tables (issue #14), over `/v1/tables/{t}/crdt/{key}`.
//!
//! ```text
//!   quorumdb crdt get carts alice [-o text|json]          the joined value and its context
//!   quorumdb crdt incr carts alice --field apple [--by 2]  a counter (or a map's counter field)
//!   quorumdb crdt add carts alice red [--field tags]       a set element (or a map set field's)
//!   quorumdb crdt remove carts alice [red] --field tags [--context TOKEN]
//!   quorumdb crdt assign carts alice gift --field note     a map's register field
//! ```
//!
//! A remove without `--context` reads the item first and removes what that read saw (like a
//! delete without a token); with `--context` it removes only what the read that produced the
//! token saw.

use anyhow::Result;
use clap::{Args, Subcommand};
use quorumdb_api::crdt::{CrdtOpBody, CrdtReadQuery, CrdtResponse, CrdtWriteQuery};

use crate::cli::{EndpointArg, TextOrJson};

#[derive(Args, Debug)]
pub struct CrdtArgs {
    #[command(subcommand)]
    pub command: CrdtCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

/// Where an operation goes and how many replicas must acknowledge it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    pub table: String,
    pub key: String,
    /// The map field the operation is about (map tables only).
    #[arg(long)]
    pub field: Option<String>,
    /// Write quorum: a count or one|quorum|all.
    #[arg(long)]
    pub w: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: TextOrJson,
}

#[derive(Subcommand, Debug)]
pub enum CrdtCommand {
    /// Read an item's CRDT value.
    Get {
        table: String,
        key: String,
        /// Read quorum: a count or one|quorum|all.
        #[arg(long)]
        r: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Add to a counter (or a map's counter field); negative subtracts.
    Incr {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Add an element to a set (or a map's set field).
    Add {
        #[command(flatten)]
        target: Target,
        element: String,
    },
    /// Remove an element (or, in a map without an element, the whole field) as observed.
    Remove {
        #[command(flatten)]
        target: Target,
        element: Option<String>,
        /// The context of the read the remove follows (default: read now and use its context).
        #[arg(long)]
        context: Option<String>,
    },
    /// Assign a map's register field.
    Assign {
        #[command(flatten)]
        target: Target,
        value: String,
    },
}

/// A CRDT value on one line (for `inspect`): the value, then its states and metadata size.
pub fn one_line(c: &quorumdb_api::crdt::CrdtValue) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = c.value {
        parts.push(v.to_string());
    }
    if let Some(e) = &c.elements {
        parts.push(format!("{{{}}}", e.join(",")));
    }
    for (name, f) in c.fields.iter().flatten() {
        if let Some(n) = f.counter {
            parts.push(format!("{name}={n}"));
        }
        if let Some(set) = &f.set {
            parts.push(format!("{name}={{{}}}", set.join(",")));
        }
        if let Some(r) = &f.register {
            parts.push(format!("{name}=[{}]", r.join("|")));
        }
    }
    format!(
        "{} {} ({} states, {} metadata entries, {} bytes)",
        c.kind,
        parts.join(" "),
        c.states,
        c.metadata_entries,
        c.stored_bytes
    )
}

fn print(resp: &CrdtResponse, output: TextOrJson) -> Result<()> {
    if output == TextOrJson::Json {
        println!("{}", serde_json::to_string(resp)?);
        return Ok(());
    }
    let c = &resp.crdt;
    if let Some(v) = c.value {
        println!("{v}");
    }
    for e in c.elements.iter().flatten() {
        println!("{e}");
    }
    for (name, f) in c.fields.iter().flatten() {
        if let Some(n) = f.counter {
            println!("{name}\tcounter\t{n}");
        }
        if let Some(set) = &f.set {
            println!("{name}\tset\t{}", set.join(","));
        }
        if let Some(r) = &f.register {
            println!("{name}\tregister\t{}", r.join(" | "));
        }
    }
    Ok(())
}

pub async fn crdt(a: CrdtArgs) -> Result<i32> {
    let client = a.endpoint.client()?;
    let (target, op) = match a.command {
        CrdtCommand::Get { table, key, r, output } => {
            let resp = client.crdt_get(&table, &key, &CrdtReadQuery { r, ..Default::default() }).await?;
            print(&resp, output)?;
            return Ok(0);
        }
        CrdtCommand::Incr { target, by } => {
            let op = CrdtOpBody {
                op: "incr".into(),
                field: target.field.clone(),
                by: Some(by),
                ..Default::default()
            };
            (target, op)
        }
        CrdtCommand::Add { target, element } => {
            let op = CrdtOpBody {
                op: "add".into(),
                field: target.field.clone(),
                element: Some(element),
                ..Default::default()
            };
            (target, op)
        }
        CrdtCommand::Remove { target, element, context } => {
            let context = match context {
                Some(c) => c,
                None => client.crdt_get(&target.table, &target.key, &CrdtReadQuery::default()).await?.context,
            };
            let op = CrdtOpBody {
                op: "remove".into(),
                field: target.field.clone(),
                element,
                context: Some(context),
                ..Default::default()
            };
            (target, op)
        }
        CrdtCommand::Assign { target, value } => {
            let op = CrdtOpBody {
                op: "assign".into(),
                field: target.field.clone(),
                value: Some(value),
                ..Default::default()
            };
            (target, op)
        }
    };
    let query = CrdtWriteQuery { w: target.w.clone(), ..Default::default() };
    let resp = client.crdt_op(&target.table, &target.key, &query, &op).await?;
    print(&resp, target.output)?;
    Ok(0)
}
