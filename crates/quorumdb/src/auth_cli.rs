//! `quorumdb user|role|auth ...`: authentication over the HTTP API (docs/security.md).
//!
//! ```text
//!   quorumdb user create alice [--role admin]...    prints the token, once
//!   quorumdb user list [-o table|json]
//!   quorumdb user delete alice
//!   quorumdb user token-add alice | token-delete alice ID
//!   quorumdb role create carts-rw
//!   quorumdb role grant carts-rw --table carts --permission write
//!   quorumdb role revoke carts-rw --table carts
//!   quorumdb role assign carts-rw alice | unassign carts-rw alice
//!   quorumdb role list [-o table|json] | delete carts-rw
//!   quorumdb auth enable | disable | status | rotate-context-key
//! ```

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use quorumdb_api as api;

use crate::cli::{EndpointArg, TableOrJson};

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: UserCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; its API token is printed once (only a hash is stored).
    Create {
        name: String,
        /// A role to give it (repeatable); `admin` is built in.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Print only the token (for scripts: `export QUORUMDB_TOKEN=$(quorumdb user create ... -q)`).
        #[arg(short, long)]
        quiet: bool,
    },
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    Delete {
        name: String,
    },
    /// Another token for the user (rotation); printed once.
    TokenAdd {
        name: String,
    },
    TokenDelete {
        name: String,
        token_id: String,
    },
}

#[derive(Args, Debug)]
pub struct RoleArgs {
    #[command(subcommand)]
    pub command: RoleCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

/// What a grant or revoke is about: exactly one of these.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResourceFlags {
    /// A table name, `prefix*` or `*`.
    #[arg(long)]
    table: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    lock: Option<String>,
    /// The cluster itself (layout, table and topic lists, users, faults, metrics).
    #[arg(long)]
    cluster: bool,
}

impl ResourceFlags {
    fn resource(&self) -> (String, String) {
        let pick =
            [("table", &self.table), ("topic", &self.topic), ("group", &self.group), ("lock", &self.lock)];
        for (kind, v) in pick {
            if let Some(v) = v {
                return (kind.to_string(), v.clone());
            }
        }
        ("cluster".into(), "*".into())
    }
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    Create {
        name: String,
    },
    List {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: TableOrJson,
    },
    Delete {
        name: String,
    },
    /// Grant a permission (read < write < admin: each implies the ones before it).
    Grant {
        role: String,
        #[command(flatten)]
        resource: ResourceFlags,
        #[arg(long, default_value = "read")]
        permission: String,
    },
    /// Remove the role's grant on a resource.
    Revoke {
        role: String,
        #[command(flatten)]
        resource: ResourceFlags,
    },
    /// Give a role to a user.
    Assign {
        role: String,
        user: String,
    },
    Unassign {
        role: String,
        user: String,
    },
}

#[derive(Args, Debug)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
    #[command(flatten)]
    pub endpoint: EndpointArg,
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Require a token on every request (refused unless some user has the admin role).
    Enable,
    Disable,
    Status,
    /// Sign causality tokens with a new key; tokens signed before stay valid for two more rotations.
    RotateContextKey,
}

fn print_token(t: &api::CreatedToken, quiet: bool) {
    if quiet {
        println!("{}", t.token);
    } else {
        println!("user {} token {} (id {}): shown once; store it now", t.user, t.token, t.token_id);
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn user(a: UserArgs) -> Result<i32> {
    let c = a.endpoint.client()?;
    match a.command {
        UserCommand::Create { name, roles, quiet } => {
            print_token(&c.create_user(&name, &roles).await?, quiet)
        }
        UserCommand::List { output } => {
            let list = c.users().await?;
            if output == TableOrJson::Json {
                print_json(&list)?;
            } else {
                println!("{:<24} {:<32} TOKENS", "USER", "ROLES");
                for u in &list.users {
                    println!("{:<24} {:<32} {}", u.name, u.roles.join(","), u.token_ids.join(","));
                }
            }
        }
        UserCommand::Delete { name } => {
            c.delete_user(&name).await?;
            println!("user {name} deleted; its tokens no longer work");
        }
        UserCommand::TokenAdd { name } => print_token(&c.add_token(&name).await?, false),
        UserCommand::TokenDelete { name, token_id } => {
            c.delete_token(&name, &token_id).await?;
            println!("token {token_id} of {name} deleted");
        }
    }
    Ok(0)
}

fn print_role(r: &api::RoleInfo) {
    let grants: Vec<String> =
        r.grants.iter().map(|g| format!("{} {}:{}", g.permission, g.resource, g.pattern)).collect();
    let grants = if grants.is_empty() { "(no grants)".to_string() } else { grants.join(", ") };
    println!("{:<24} {}{}", r.name, grants, if r.builtin { " (built in)" } else { "" });
}

pub async fn role(a: RoleArgs) -> Result<i32> {
    let c = a.endpoint.client()?;
    match a.command {
        RoleCommand::Create { name } => print_role(&c.create_role(&name).await?),
        RoleCommand::List { output } => {
            let list = c.roles().await?;
            if output == TableOrJson::Json {
                print_json(&list)?;
            } else {
                println!("{:<24} GRANTS", "ROLE");
                list.roles.iter().for_each(print_role);
            }
        }
        RoleCommand::Delete { name } => {
            c.delete_role(&name).await?;
            println!("role {name} deleted");
        }
        RoleCommand::Grant { role, resource, permission } => {
            if !["read", "write", "admin"].contains(&permission.as_str()) {
                bail!("--permission must be read, write or admin, not {permission:?}");
            }
            let (resource, pattern) = resource.resource();
            print_role(&c.grant(&role, &api::GrantInfo { resource, pattern, permission }).await?);
        }
        RoleCommand::Revoke { role, resource } => {
            let (resource, pattern) = resource.resource();
            print_role(
                &c.revoke(&role, &api::GrantInfo { resource, pattern, permission: "read".into() }).await?,
            );
        }
        RoleCommand::Assign { role, user } => {
            let u = c.assign_role(&user, &role).await?;
            println!("user {} has roles {}", u.name, u.roles.join(","));
        }
        RoleCommand::Unassign { role, user } => {
            let u = c.unassign_role(&user, &role).await?;
            println!(
                "user {} has roles {}",
                u.name,
                if u.roles.is_empty() { "none".into() } else { u.roles.join(",") }
            );
        }
    }
    Ok(0)
}

pub async fn auth(a: AuthArgs) -> Result<i32> {
    let c = a.endpoint.client()?;
    let s = match a.command {
        AuthCommand::Enable => c.set_auth(true).await?,
        AuthCommand::Disable => c.set_auth(false).await?,
        AuthCommand::Status => c.auth_status().await?,
        AuthCommand::RotateContextKey => c.rotate_context_key().await?,
    };
    let keys: Vec<String> = s.context_keys.iter().map(|k| k.to_string()).collect();
    println!(
        "authentication {} · {} users · {} roles · causality-token keys {} (signing: {})",
        if s.enabled { "on" } else { "off" },
        s.users,
        s.roles,
        keys.join(","),
        keys.last().map_or("none", String::as_str)
    );
    Ok(0)
}
