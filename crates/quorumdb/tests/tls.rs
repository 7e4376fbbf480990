//! TLS on real clusters (issue #16 item 2): certificates from `quorumdb certs`, https with the
//! CA through the client library and the CLI, plain text refused on a TLS port, the peer mesh
//! closed to processes without a node certificate of the cluster CA, Kafka over SASL_SSL with
//! kcat, certificate reload without restart, and `quorumdb demo --secure`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kcat, Cluster, BIN};
use quorumdb::launcher::{self, Cleanup, ClusterSpec, LocalCluster, Ports};
use quorumdb_client::{Client, ReadOptions, TlsOptions, WriteOptions};
use rustls::pki_types::ServerName;

/// Runs `quorumdb args...` with a clean environment for the client flags; (code, stdout, stderr).
fn quorumdb(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for v in ["QUORUMDB_ENDPOINT", "QUORUMDB_TOKEN", "QUORUMDB_CA_CERT", "QUORUMDB_CERTS_DIR"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "the command failed: {}{}", r.1, r.2);
    r.1
}

/// A fresh certs dir with a CA, a node certificate and a client certificate for `alice`, all
/// made by the CLI.
fn make_certs(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qdb-tls-certs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    ok(quorumdb(&["certs", "create-ca", "--certs-dir", d], &[]));
    ok(quorumdb(&["certs", "create-node", "--certs-dir", d, "node.example"], &[]));
    ok(quorumdb(&["certs", "create-client", "--certs-dir", d, "alice"], &[]));
    dir
}

fn tls_settings(certs: &Path, extra: &str) -> String {
    format!("[tls]\ncerts_dir = {:?}\n{extra}", certs.to_str().unwrap())
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_owned()
}

fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    Arc::new(TlsOptions::from_files(ca, identity).unwrap().rustls_config().unwrap())
}

/// A TLS session to `addr` (handshake done), checking the server for `name`.
fn tls_connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

fn ip_name(addr: &str) -> ServerName<'static> {
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    ServerName::IpAddress(sock.ip().into())
}

/// GET `path` over https trusting `ca`, with an optional bearer token; the whole answer.
fn https_get(url: &str, path: &str, ca: &Path, token: Option<&str>) -> String {
    let addr = addr_of(url);
    let mut s = tls_connect(&addr, client_config(ca, None), ip_name(&addr)).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    // rustls reports a peer that closes without close_notify as an error after the data.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the first sample of `metric` whose labels contain `label`, or 0.
fn metric(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0.0)
}

/// Proves https works end to end with the cluster CA — the client library (put, get), the CLI
/// with `--ca-cert`, and a client certificate — and that without the CA the client refuses,
/// plain HTTP to the TLS port gets no HTTP answer, and the refusal is counted.
#[test]
fn https_with_the_ca_and_plain_http_refused() {
    let certs = make_certs("https");
    let c = Cluster::start_with("tls-https", 3, 3, 3, &tls_settings(&certs, ""));
    let ca = certs.join("ca.crt");
    let url = c.nodes[0].http.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls = TlsOptions::from_files(&ca, None).unwrap();
    let client = Client::with_tls(&url, Duration::from_secs(10), Some(&tls)).unwrap();
    rt.block_on(client.put("t", "k", "over tls", &WriteOptions::default())).unwrap();
    // Another node reads it: the write travelled the peer mesh, which is mutual TLS.
    let other = Client::with_tls(&c.nodes[2].http, Duration::from_secs(10), Some(&tls)).unwrap();
    let read = rt.block_on(other.get("t", "k", &ReadOptions::default())).unwrap();
    assert_eq!(read.values, ["over tls"]);

    // A client certificate is offered and accepted (optional by default).
    let alice = (certs.join("client.alice.crt"), certs.join("client.alice.key"));
    let with_cert = TlsOptions::from_files(&ca, Some((&alice.0, &alice.1))).unwrap();
    let client = Client::with_tls(&url, Duration::from_secs(10), Some(&with_cert)).unwrap();
    rt.block_on(client.get("t", "k", &ReadOptions::default())).unwrap();

    // The CLI, by flag and by environment.
    let ca_s = ca.to_str().unwrap();
    ok(quorumdb(&["put", "t", "cli", "v1", "--endpoint", &url, "--ca-cert", ca_s], &[]));
    let got = ok(quorumdb(&["get", "t", "cli"], &[("QUORUMDB_ENDPOINT", &url), ("QUORUMDB_CA_CERT", ca_s)]));
    assert_eq!(got.trim(), "v1");
    let (code, _, err) = quorumdb(&["get", "t", "cli", "--endpoint", &url], &[]);
    assert!(code != 0 && err.contains("--ca-cert"), "without a CA: {code} {err}");
    // A CA that did not sign the node's certificate: the handshake fails.
    let stranger = make_certs("https-stranger");
    let (code, _, err) = quorumdb(
        &["get", "t", "cli", "--endpoint", &url, "--ca-cert", stranger.join("ca.crt").to_str().unwrap()],
        &[],
    );
    assert!(code != 0 && err.contains("cannot reach"), "a foreign CA: {code} {err}");

    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let addr = addr_of(&url);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let plain = Client::new(&format!("http://{addr}")).unwrap();
    assert!(rt.block_on(plain.get("t", "k", &ReadOptions::default())).is_err());
    let metrics = https_get(&url, "/metrics", &ca, None);
    assert!(
        metric(&metrics, "quorumdb_tls_handshake_failures_total", "listener=\"http\"") >= 2.0,
        "refusals not counted: {}",
        metrics.lines().filter(|l| l.contains("tls")).collect::<Vec<_>>().join("\n")
    );
    let _ = std::fs::remove_dir_all(&certs);
    let _ = std::fs::remove_dir_all(&stranger);
}

/// Proves the peer port admits only node certificates of the cluster CA: a node whose
/// certificate comes from another CA is refused by the others (logged and counted) and never
/// joins (they see it down and keep serving quorum writes without it); a client certificate
/// of the cluster's own CA, another CA's node certificate and plain TCP are refused on the
/// peer port, while the cluster's node certificate is let in (so the probe can fail).
#[test]
fn a_peer_without_a_cluster_certificate_is_refused() {
    let certs = make_certs("peer");
    let rogue = make_certs("peer-rogue");
    let dir = std::env::temp_dir().join(format!("qdb-test-tls-peer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, 3, 3, Ports::free(3).unwrap());
    spec.settings = toml::from_str(&tls_settings(&certs, "")).unwrap();
    spec.settings.insert("request_timeout_ms".into(), toml::Value::Integer(1500));
    spec.settings.insert("heartbeat_interval_ms".into(), toml::Value::Integer(200));
    spec.settings.insert("failure_timeout_ms".into(), toml::Value::Integer(1000));
    let mut cluster =
        LocalCluster::create(BIN.as_ref(), &spec, &dir, None, Cleanup::RemoveUnlessPanicking).unwrap();
    // n3 is configured like the others but holds certificates of another CA.
    let n3_config = std::fs::read_to_string(cluster.config_path(2)).unwrap();
    let swapped = n3_config.replace(certs.to_str().unwrap(), rogue.to_str().unwrap());
    assert_ne!(swapped, n3_config);
    std::fs::write(cluster.config_path(2), swapped).unwrap();
    cluster.spawn_all().unwrap();
    cluster.wait_ready_blocking(&[0, 1], Duration::from_secs(30)).unwrap();

    let ca = certs.join("ca.crt");
    let n1 = cluster.http_url(0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls = TlsOptions::from_files(&ca, None).unwrap();
    let client = Client::with_tls(&n1, Duration::from_secs(10), Some(&tls)).unwrap();
    // Quorum writes work with n1 and n2 (W = 2 of N = 3).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rt.block_on(client.put("t", "k", "v", &WriteOptions::default())) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("n1 and n2 could not write: {e}"),
        }
    }
    // n3 never becomes up in n1's view, while it runs (its own /readyz answers).
    let rogue_ca = rogue.join("ca.crt");
    let n3 = cluster.http_url(2);
    assert!(https_get(&n3, "/readyz", &rogue_ca, None).contains("200"), "the rogue node is not running");
    std::thread::sleep(Duration::from_secs(2));
    let status = rt.block_on(client.status()).unwrap();
    let seen: Vec<String> = status.nodes.iter().map(|m| format!("{} {}", m.id, m.state)).collect();
    assert!(seen.iter().any(|m| m == "n3 down"), "n3 joined: {seen:?}");
    assert!(seen.iter().any(|m| m == "n2 up"), "{seen:?}");

    // The peer port of n1, probed directly.
    let peer = cluster.config(0).peer_listen.clone();
    let node_name = ServerName::try_from(quorumdb_node::tls::NODE_IDENTITY).unwrap();
    // Whether n1 keeps a session with this certificate open (waiting for a Hello) instead of
    // ending it at once.
    let admitted = |config: Arc<rustls::ClientConfig>| -> bool {
        let Ok(mut s) = tls_connect(&peer, config, node_name.clone()) else { return false };
        // A refusal (an alert right after the handshake) arrives within milliseconds on
        // loopback; an admitted session stays silent until n1 gives up waiting for our Hello
        // (`transport::CONNECT_TIMEOUT_MS`, 1 s), so listen for less than that.
        s.sock.set_read_timeout(Some(Duration::from_millis(600))).unwrap();
        let mut buf = [0u8; 1];
        match s.read_exact(&mut buf) {
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            Ok(()) => false,
        }
    };
    let node_cert = (certs.join("node.crt"), certs.join("node.key"));
    assert!(
        admitted(client_config(&ca, Some((&node_cert.0, &node_cert.1)))),
        "the cluster's node cert was refused"
    );
    let alice = (certs.join("client.alice.crt"), certs.join("client.alice.key"));
    assert!(
        !admitted(client_config(&ca, Some((&alice.0, &alice.1)))),
        "a client certificate joined the mesh"
    );
    let rogue_node = (rogue.join("node.crt"), rogue.join("node.key"));
    assert!(!admitted(client_config(&ca, Some((&rogue_node.0, &rogue_node.1)))), "another CA's node cert");
    assert!(!admitted(client_config(&ca, None)), "no certificate at all");
    // Plain TCP: a Hello-looking frame gets the connection closed, no reply.
    let mut s = TcpStream::connect(&peer).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 0, 0, 4, 1, 2, b'n', b'9']).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.len() < 8 || answer[0] == 0x15, "plain peer frames got a reply: {answer:?}");

    let metrics = https_get(&n1, "/metrics", &ca, None);
    let refused = metric(&metrics, "quorumdb_tls_handshake_failures_total", "listener=\"peer\"");
    assert!(refused >= 4.0, "peer refusals counted: {refused}");
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(log.contains("peer TLS handshake refused"), "no warning in n1's log");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&certs);
    let _ = std::fs::remove_dir_all(&rogue);
}

/// Proves the Kafka listener speaks SASL_SSL: with authentication on, kcat produces and
/// consumes with SASL/PLAIN over TLS trusting the CA, while a plaintext client, and SASL_SSL
/// with a wrong token, are refused.
#[test]
fn kafka_over_sasl_ssl() {
    let certs = make_certs("kafka");
    let c = Cluster::start_with("tls-kafka", 3, 3, 3, &tls_settings(&certs, ""));
    let ca = certs.join("ca.crt");
    let ca_s = ca.to_str().unwrap().to_owned();
    let ep = c.nodes[0].http.clone();
    let env = [("QUORUMDB_ENDPOINT", ep.as_str()), ("QUORUMDB_CA_CERT", ca_s.as_str())];
    let root = ok(quorumdb(&["user", "create", "root", "--role", "admin", "-q"], &env)).trim().to_owned();
    let with_token: Vec<(&str, &str)> =
        env.iter().copied().chain([("QUORUMDB_TOKEN", root.as_str())]).collect();
    ok(quorumdb(&["auth", "enable"], &with_token));
    let kafka = c.nodes[1].kafka.clone();
    let sasl_ssl = |token: &str| {
        ["security.protocol=SASL_SSL", "sasl.mechanisms=PLAIN", "sasl.username=root"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("sasl.password={token}"), format!("ssl.ca.location={ca_s}")])
            .flat_map(|kv| ["-X".to_string(), kv])
            .collect::<Vec<String>>()
    };
    let (produced, _, err) =
        kcat(&["-P", "-b", &kafka, "-t", "secure-events"], &sasl_ssl(&root), Some("s1\ns2\n"));
    assert!(produced, "SASL_SSL produce failed: {err}");
    let (read, out, err) =
        kcat(&["-C", "-b", &kafka, "-t", "secure-events", "-o", "beginning", "-e"], &sasl_ssl(&root), None);
    assert!(read && out.contains("s1") && out.contains("s2"), "SASL_SSL consume: {out} {err}");
    let (plain, _, _) = kcat(&["-L", "-b", &kafka, "-m", "5"], &[], None);
    assert!(!plain, "a plaintext client listed metadata on the TLS listener");
    let (wrong, _, _) = kcat(&["-L", "-b", &kafka, "-m", "5"], &sasl_ssl("qdb_0000000000000000_nope"), None);
    assert!(!wrong, "a wrong token authenticated over SASL_SSL");
    let metrics = https_get(&c.nodes[1].http, "/metrics", &ca, Some(&root));
    assert!(metric(&metrics, "quorumdb_tls_handshake_failures_total", "listener=\"kafka\"") >= 1.0);
    let _ = std::fs::remove_dir_all(&certs);
}

/// Proves `tls.client_cert_required`: HTTP and Kafka (SSL, auth off) clients without a
/// certificate are refused, with a client certificate of the CA they are served.
#[test]
fn client_certificates_can_be_required() {
    let certs = make_certs("mtls");
    let c = Cluster::start_with("tls-mtls", 1, 1, 1, &tls_settings(&certs, "client_cert_required = true"));
    let ca = certs.join("ca.crt");
    let (crt, key) = (certs.join("client.alice.crt"), certs.join("client.alice.key"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = &c.nodes[0].http;
    let bare =
        Client::with_tls(url, Duration::from_secs(10), Some(&TlsOptions::from_files(&ca, None).unwrap()))
            .unwrap();
    assert!(
        rt.block_on(bare.get("t", "k", &ReadOptions::default())).is_err(),
        "served without a client cert"
    );
    let with = TlsOptions::from_files(&ca, Some((&crt, &key))).unwrap();
    let client = Client::with_tls(url, Duration::from_secs(10), Some(&with)).unwrap();
    rt.block_on(client.put("t", "k", "v", &WriteOptions::default())).unwrap();
    let (ca_s, crt_s, key_s) = (ca.to_str().unwrap(), crt.to_str().unwrap(), key.to_str().unwrap());
    let ssl = |cert: bool| {
        let mut kv = vec!["security.protocol=SSL".to_string(), format!("ssl.ca.location={ca_s}")];
        if cert {
            kv.push(format!("ssl.certificate.location={crt_s}"));
            kv.push(format!("ssl.key.location={key_s}"));
        }
        kv.into_iter().flat_map(|kv| ["-X".to_string(), kv]).collect::<Vec<String>>()
    };
    let kafka = &c.nodes[0].kafka;
    let (listed, out, err) = kcat(&["-L", "-b", kafka, "-m", "5"], &ssl(true), None);
    assert!(listed && out.contains("1 brokers"), "SSL with a client cert: {out} {err}");
    let (listed, _, _) = kcat(&["-L", "-b", kafka, "-m", "5"], &ssl(false), None);
    assert!(!listed, "SSL without a client cert was served");
    let _ = std::fs::remove_dir_all(&certs);
}

/// The DER of the certificate `addr` serves (trusting `ca`).
fn served_certificate(addr: &str, ca: &Path) -> Vec<u8> {
    let s = tls_connect(addr, client_config(ca, None), ip_name(addr)).unwrap();
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

/// Proves certificate reload without restart: after `certs create-node --overwrite`, new
/// connections get the new certificate within a few reload intervals and still verify; an
/// unusable certificate file is refused (counted) and the last good one stays in use; SIGHUP
/// reloads at once.
#[test]
fn certificate_reload_picks_up_a_new_certificate() {
    let certs = make_certs("reload");
    let c = Cluster::start_with("tls-reload", 1, 1, 1, &tls_settings(&certs, "reload_interval_ms = 200"));
    let ca = certs.join("ca.crt");
    let addr = addr_of(&c.nodes[0].http);
    let first = served_certificate(&addr, &ca);
    // An open session survives the reload.
    let mut open = tls_connect(&addr, client_config(&ca, None), ip_name(&addr)).unwrap();
    let d = certs.to_str().unwrap();
    ok(quorumdb(&["certs", "create-node", "--certs-dir", d, "--overwrite", "renewed.example"], &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let now = served_certificate(&addr, &ca);
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "the node still serves the old certificate");
        std::thread::sleep(Duration::from_millis(100));
    };
    write!(open, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = open.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 200"), "the open session broke on reload");

    // A broken certificate file: refused, the renewed certificate stays.
    std::fs::write(certs.join("node.crt"), "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = https_get(&c.nodes[0].http, "/metrics", &ca, None);
        if metric(&m, "quorumdb_tls_reloads_total", "result=\"error\"") >= 1.0 {
            assert!(metric(&m, "quorumdb_tls_reloads_total", "result=\"ok\"") >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the broken file was not noticed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_certificate(&addr, &ca), second, "a broken file replaced the certificate");

    // SIGHUP: a fresh certificate is taken at once, whatever the interval.
    ok(quorumdb(&["certs", "create-node", "--certs-dir", d, "--overwrite"], &[]));
    let pid = c.pid(0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_certificate(&addr, &ca) == second {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&certs);
}

/// Proves `quorumdb demo --secure` reaches `ready` with https node lines and one `secure` line
/// naming the CA and the admin token; with them the cluster serves the CLI, without the token
/// it answers 401 (authentication is on), a read-only role is refused a write (403), and
/// SIGTERM stops it with exit 0.
#[test]
fn demo_secure_reaches_ready() {
    let base = launcher::free_ports(1).unwrap()[0];
    let dir = std::env::temp_dir().join(format!("qdb-test-demo-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base_s = base.to_string();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--secure",
            "--nodes",
            "3",
            "--base-port",
            &base_s,
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("ready") {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("demo --secure not ready: {lines:?}");
            }
        }
    }
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, line) in lines[..3].iter().enumerate() {
        let prefix =
            format!("node n{} zone z{} https://127.0.0.1:{} pid ", i + 1, i + 1, base + 1 + i as u16);
        assert!(line.starts_with(&prefix), "{line:?} does not start with {prefix:?}");
    }
    let secure = &lines[3];
    assert!(secure.starts_with("secure: "), "{secure:?}");
    let certs = dir.join("certs");
    assert!(secure.contains(certs.to_str().unwrap()), "{secure:?}");
    let token = std::fs::read_to_string(certs.join("root.token")).unwrap().trim().to_owned();
    let ca = certs.join("ca.crt");
    let ep = format!("https://127.0.0.1:{}", base + 2);
    let env = [("QUORUMDB_ENDPOINT", ep.as_str()), ("QUORUMDB_CA_CERT", ca.to_str().unwrap())];
    let (code, _, err) = quorumdb(&["put", "t", "k", "v"], &env);
    assert!(code != 0 && err.contains("authentication is on"), "{code} {err}");
    let authed: Vec<(&str, &str)> = env.iter().copied().chain([("QUORUMDB_TOKEN", token.as_str())]).collect();
    ok(quorumdb(&["put", "t", "k", "v"], &authed));
    assert_eq!(ok(quorumdb(&["get", "t", "k"], &authed)).trim(), "v");
    // A wrong-role client over TLS: a reader of `t` may read it, not write it (403).
    ok(quorumdb(&["role", "create", "t-reader"], &authed));
    ok(quorumdb(&["role", "grant", "t-reader", "--table", "t", "--permission", "read"], &authed));
    let reader =
        ok(quorumdb(&["user", "create", "reader", "--role", "t-reader", "-q"], &authed)).trim().to_owned();
    let as_reader: Vec<(&str, &str)> =
        env.iter().copied().chain([("QUORUMDB_TOKEN", reader.as_str())]).collect();
    assert_eq!(ok(quorumdb(&["get", "t", "k"], &as_reader)).trim(), "v");
    let (code, _, err) = quorumdb(&["put", "t", "k", "w"], &as_reader);
    assert!(code != 0 && err.contains("reader"), "a read-only role wrote over TLS: {code} {err}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
