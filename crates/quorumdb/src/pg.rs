//! A private PostgreSQL server for tests and the lab: `initdb` and `pg_ctl` in a temporary
//! directory, listening on 127.0.0.1 on a free port with trust authentication, stopped and
//! removed on drop.
//!
//! The binaries come from `QUORUMDB_PG_BINDIR`, `pg_config --bindir`,
//! `/usr/lib/postgresql/*/bin` (Debian's layout, newest first) or `PATH`, in that order.
//! `initdb` refuses to run as root, so as root the directory is handed to the `postgres`
//! user and every PostgreSQL binary runs through `runuser -u postgres --`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use thiserror::Error;

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_S: u32 = 30;

#[derive(Debug, Error)]
pub enum PgError {
    #[error(
        "PostgreSQL is not installed: no initdb in QUORUMDB_PG_BINDIR, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin or PATH (scripts/test.sh installs Debian's postgresql package)"
    )]
    NotInstalled,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
pub fn bindir() -> Result<PathBuf, PgError> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(d) = std::env::var_os("QUORUMDB_PG_BINDIR").map(PathBuf::from) {
        if has_initdb(&d) {
            return Ok(d);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return Ok(d);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> =
            entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        versions.sort();
        if let Some(d) = versions.into_iter().rev().find(|d| has_initdb(d)) {
            return Ok(d);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| has_initdb(d)).ok_or(PgError::NotInstalled)
}

/// One private server.
pub struct PrivatePg {
    dir: PathBuf,
    bindir: PathBuf,
    pub port: u16,
    /// Whether the binaries run as the `postgres` user (we are root).
    as_postgres: bool,
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective uid.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PrivatePg {
    /// Creates and starts a server named `name` (the directory's name) on `port`.
    pub fn start(name: &str, port: u16) -> Result<PrivatePg, PgError> {
        let bindir = bindir()?;
        let dir = std::env::temp_dir().join(format!("qdb-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        let pg = PrivatePg { dir, bindir, port, as_postgres };
        if as_postgres {
            pg.run("chown", Command::new("chown").arg("-R").arg("postgres:").arg(&pg.dir))?;
        }
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(pg.data()).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        pg.run("initdb", &mut initdb)?;
        pg.start_again()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, binary: &str) -> Command {
        let exe = self.bindir.join(binary);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, what: &str, c: &mut Command) -> Result<(), PgError> {
        let out = c.output()?;
        if !out.status.success() {
            return Err(PgError::Command {
                what: what.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) -> Result<(), PgError> {
        // The socket directory is private (the default one may not be writable); fsync is
        // off because these servers are throwaway and never outlive a machine crash.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", &PG_CTL_WAIT_S.to_string(), "start"]);
        self.run("pg_ctl start", &mut c)
    }

    /// Stops the server (`-m fast`: sessions are disconnected, open transactions roll back).
    pub fn stop(&self) -> Result<(), PgError> {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(self.data()).args(["-w", "-t", &PG_CTL_WAIT_S.to_string(), "-m", "fast", "stop"]);
        self.run("pg_ctl stop", &mut c)
    }

    /// A connection string for `tokio-postgres` and the sink.
    pub fn connection_string(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=5", self.port)
    }

    /// Makes `role` log in over TCP with its password only (scram-sha-256), every other role
    /// staying trusted: for tests of password references.
    pub fn require_password(&self, role: &str) -> Result<(), PgError> {
        let hba = self.data().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)?;
        // pg_hba.conf is read top down: the first matching line decides.
        std::fs::write(&hba, format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"))?;
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(self.data()).arg("reload");
        self.run("pg_ctl reload", &mut c)
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` until the server accepts connections.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
