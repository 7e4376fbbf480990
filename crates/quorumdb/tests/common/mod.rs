//! A real cluster of `quorumdb server` processes on loopback, for multi-process tests.
#![allow(dead_code)]

use quorumdb_client::Client;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_quorumdb");

pub struct NodeProc {
    pub id: String,
    pub zone: String,
    pub http: String,
    pub config: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProc>,
}

/// Reserves `n` distinct free loopback ports (bind to port 0, then release).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Cluster {
    /// Starts `nodes` servers in `zones` zones (node i in zone z((i-1) mod zones + 1)), N = `n`.
    pub fn start(name: &str, nodes: usize, zones: usize, n: usize) -> Cluster {
        Cluster::start_with(name, nodes, zones, n, "")
    }

    /// Like [`Cluster::start`], appending `extra` TOML (e.g. `[[tables]]`) to every config.
    pub fn start_with(name: &str, nodes: usize, zones: usize, n: usize, extra: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("qdb-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports(nodes * 2);
        let members: Vec<String> = (0..nodes)
            .map(|i| {
                format!(
                    "[[members]]\nid = \"n{}\"\nzone = \"z{}\"\npeer = \"127.0.0.1:{}\"\nhttp = \"http://127.0.0.1:{}\"\n",
                    i + 1,
                    i % zones + 1,
                    ports[nodes + i],
                    ports[i]
                )
            })
            .collect();
        let mut procs = Vec::new();
        for i in 0..nodes {
            let node_dir = dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(&node_dir).unwrap();
            let config = node_dir.join("quorumdb.toml");
            let text = format!(
                "node_id = \"n{id}\"\nzone = \"z{zone}\"\nhttp_listen = \"127.0.0.1:{http}\"\npeer_listen = \"127.0.0.1:{peer}\"\n\
                 data_dir = \"{data}\"\nreplication_factor = {n}\nrequest_timeout_ms = 1500\n{timing}\n{admin}\n{extra}\n{members}",
                id = i + 1,
                zone = i % zones + 1,
                http = ports[i],
                peer = ports[nodes + i],
                data = node_dir.join("data").display(),
                members = members.join("\n"),
                // Fast failure detection keeps tests short, unless the test sets its own.
                timing = if extra.contains("failure_timeout_ms") {
                    ""
                } else {
                    "heartbeat_interval_ms = 200\nfailure_timeout_ms = 1000"
                },
                // Tests inject faults over /v1/admin, unless the test sets admin_enabled itself.
                admin = if extra.contains("admin_enabled") { "" } else { "admin_enabled = true" },
            );
            std::fs::write(&config, text).unwrap();
            procs.push(NodeProc {
                id: format!("n{}", i + 1),
                zone: format!("z{}", i % zones + 1),
                http: format!("http://127.0.0.1:{}", ports[i]),
                config,
                child: None,
            });
        }
        let mut c = Cluster { dir, nodes: procs };
        for i in 0..nodes {
            c.spawn(i);
        }
        c.wait_ready();
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.parent().unwrap().join("server.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("server")
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let ok = reqwest::blocking_get_ok(&format!("{}/readyz", node.http));
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "node {} not ready; see {}", node.id, self.dir.display());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.nodes[i].http).unwrap()
    }

    pub fn index(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, but answers nothing (a GC pause, a hung VM).
    pub fn pause(&self, i: usize) {
        let pid = self.nodes[i].child.as_ref().unwrap().id();
        assert!(Command::new("kill").arg("-STOP").arg(pid.to_string()).status().unwrap().success());
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&self, i: usize) {
        let pid = self.nodes[i].child.as_ref().unwrap().id();
        assert!(Command::new("kill").arg("-CONT").arg(pid.to_string()).status().unwrap().success());
    }

    /// Removes a (stopped) node's data directory, as a replaced disk would.
    pub fn wipe(&self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "stop the node before wiping it");
        let data = self.nodes[i].config.parent().unwrap().join("data");
        std::fs::remove_dir_all(data).unwrap();
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Tiny blocking readiness probe without pulling reqwest's blocking feature.
mod reqwest {
    use std::io::{Read, Write};
    pub fn blocking_get_ok(url: &str) -> bool {
        let rest = url.trim_start_matches("http://");
        let (addr, path) =
            rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
        if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
    }
}
