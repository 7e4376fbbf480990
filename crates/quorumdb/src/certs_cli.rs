//! `quorumdb certs ...`: a development certificate authority, as `cockroach cert` makes one
//! (docs/security.md).
//!
//! ```text
//!   quorumdb certs create-ca     --certs-dir certs           ca.crt, ca.key
//!   quorumdb certs create-node   --certs-dir certs [HOST]... node.crt, node.key
//!   quorumdb certs create-client --certs-dir certs USER      client.USER.crt, client.USER.key
//! ```
//!
//! Keys are ECDSA P-256, written with mode 0600. A node certificate is valid for
//! `127.0.0.1`, `localhost`, the given hosts and [`NODE_IDENTITY`] (the name the peer mesh
//! checks), for both server and client use; a client certificate names its user as common
//! name and is for client use only, so it cannot join the peer mesh. The CA's name is fixed,
//! so signing needs only `ca.key` (kept elsewhere with `--ca-key` in production-like setups).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use quorumdb_node::tls::{CA_CERT_FILE, NODE_CERT_FILE, NODE_IDENTITY, NODE_KEY_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// The CA key's file name inside a certs dir (unless `--ca-key` puts it elsewhere).
pub const CA_KEY_FILE: &str = "ca.key";
/// The development CA's common name. Fixed, so node and client certificates can be signed
/// with the CA key alone (their issuer name is this).
const CA_COMMON_NAME: &str = "QuorumDB development CA";
const ORGANIZATION: &str = "QuorumDB";
/// Lifetimes, as `cockroach cert` has them: the CA 10 years, node and client certificates 5.
const CA_LIFETIME_DAYS_DEFAULT: u32 = 3_650;
const CERT_LIFETIME_DAYS_DEFAULT: u32 = 1_825;

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Args, Debug, Clone)]
pub struct CertsDir {
    /// Where the certificates and keys go (created if missing).
    #[arg(long, env = "QUORUMDB_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// The CA key; default <certs-dir>/ca.key.
    #[arg(long)]
    pub ca_key: Option<PathBuf>,
    /// Replace files that exist (refused by default).
    #[arg(long)]
    pub overwrite: bool,
    /// Validity from today, in days.
    #[arg(long)]
    pub lifetime_days: Option<u32>,
}

impl CertsDir {
    fn ca_key(&self) -> PathBuf {
        self.ca_key.clone().unwrap_or_else(|| self.certs_dir.join(CA_KEY_FILE))
    }
}

/// The subcommands are `cockroach cert`'s names, hence the shared prefix.
#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)]
pub enum CertsCommand {
    /// Create the CA: ca.crt (give it to every node and client) and ca.key (keep it safe).
    CreateCa {
        #[command(flatten)]
        dir: CertsDir,
    },
    /// Create node.crt/node.key for the hosts a node is reached at (127.0.0.1 and localhost
    /// are always included).
    CreateNode {
        #[command(flatten)]
        dir: CertsDir,
        /// Host names or IP addresses clients reach this node at.
        hosts: Vec<String>,
    },
    /// Create client.<user>.crt/key for mutual TLS to the HTTP and Kafka listeners.
    CreateClient {
        #[command(flatten)]
        dir: CertsDir,
        user: String,
    },
}

pub fn certs(a: CertsArgs) -> Result<i32> {
    let written = match a.command {
        CertsCommand::CreateCa { dir } => create_ca(&dir)?,
        CertsCommand::CreateNode { dir, hosts } => create_node(&dir, &hosts)?,
        CertsCommand::CreateClient { dir, user } => create_client(&dir, &user)?,
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(0)
}

/// The (proleptic Gregorian) date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Validity from yesterday (so a clock slightly behind still accepts it) for `lifetime_days`.
fn validity(params: &mut CertificateParams, lifetime_days: u32) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    let date = |days: i64| {
        let (y, m, d) = civil_from_days(days);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = date(today - 1);
    params.not_after = date(today + i64::from(lifetime_days));
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Writes `contents` to `path`, refusing to replace a file unless `overwrite`; keys get 0600.
fn write(path: &Path, contents: &str, secret: bool, overwrite: bool) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !overwrite {
        bail!("{} exists; pass --overwrite to replace it", path.display());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // A new name then a rename: a node reloading certificates never reads a half-written file.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_owned())
}

/// Creates `ca.crt` and the CA key.
pub fn create_ca(dir: &CertsDir) -> Result<Vec<PathBuf>> {
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = ca_params();
    validity(&mut params, dir.lifetime_days.unwrap_or(CA_LIFETIME_DAYS_DEFAULT));
    let cert = params.self_signed(&key).context("cannot sign the CA certificate")?;
    let ca_key = dir.ca_key();
    let ca_crt = dir.certs_dir.join(CA_CERT_FILE);
    // Both checked before either is written, so a refusal leaves no half-made CA.
    for p in [&ca_key, &ca_crt] {
        if p.exists() && !dir.overwrite {
            bail!("{} exists; pass --overwrite to replace it", p.display());
        }
    }
    Ok(vec![
        write(&ca_key, &key.serialize_pem(), true, dir.overwrite)?,
        write(&ca_crt, &cert.pem(), false, dir.overwrite)?,
    ])
}

/// Signs `params` (with a fresh key) by the CA of `dir`; returns (certificate PEM, key PEM).
fn sign(dir: &CertsDir, mut params: CertificateParams) -> Result<(String, String)> {
    let ca_key_path = dir.ca_key();
    let pem = std::fs::read_to_string(&ca_key_path).with_context(|| {
        format!("cannot read the CA key {} (run `quorumdb certs create-ca` first)", ca_key_path.display())
    })?;
    let ca_key =
        KeyPair::from_pem(&pem).with_context(|| format!("{} is not a key", ca_key_path.display()))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    validity(&mut params, dir.lifetime_days.unwrap_or(CERT_LIFETIME_DAYS_DEFAULT));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params.signed_by(&key, &issuer).context("cannot sign the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_pair(
    dir: &CertsDir,
    crt: &str,
    key: &str,
    (cert_pem, key_pem): (String, String),
) -> Result<Vec<PathBuf>> {
    let (crt, key) = (dir.certs_dir.join(crt), dir.certs_dir.join(key));
    for p in [&crt, &key] {
        if p.exists() && !dir.overwrite {
            bail!("{} exists; pass --overwrite to replace it", p.display());
        }
    }
    // The key first: a node that reloads between the two renames sees a new key with the old
    // certificate, refuses the pair, keeps its old one, and retries at the next change.
    Ok(vec![write(&key, &key_pem, true, true)?, write(&crt, &cert_pem, false, true)?])
}

/// Creates `node.crt`/`node.key`: server and client use, for the loopback names, `hosts` and
/// the peer identity.
pub fn create_node(dir: &CertsDir, hosts: &[String]) -> Result<Vec<PathBuf>> {
    let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned(), NODE_IDENTITY.to_owned()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut params =
        CertificateParams::new(names).context("a host is neither an IP address nor a DNS name")?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "node");
    params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    write_pair(dir, NODE_CERT_FILE, NODE_KEY_FILE, sign(dir, params)?)
}

/// Creates `client.<user>.crt`/`.key`: client use only, the user as common name.
pub fn create_client(dir: &CertsDir, user: &str) -> Result<Vec<PathBuf>> {
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("user {user:?}: use letters, digits, '-', '_' and '.'");
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, user);
    params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    write_pair(dir, &format!("client.{user}.crt"), &format!("client.{user}.key"), sign(dir, params)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the civil-date conversion at the epoch, a leap day and a year boundary.
    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_453), (2025, 12, 31));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
