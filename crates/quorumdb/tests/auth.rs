//! Authentication and roles on a real 3-node cluster (issue #16): users and tokens created
//! with the CLI, `auth enable`, then every request checked on every node — over HTTP, the
//! CLI and the Kafka listener (kcat with SASL/PLAIN).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{kcat, Cluster, BIN};
use quorumdb_client::{Client, ClientError, ReadOptions, WriteOptions};

/// Runs the CLI against `endpoint` with `token` (none: no QUORUMDB_TOKEN at all).
fn cli(endpoint: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("QUORUMDB_ENDPOINT", endpoint).env_remove("QUORUMDB_TOKEN");
    if let Some(t) = token {
        cmd.env("QUORUMDB_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// GET `path` with a bearer token over a plain socket; the whole answer.
fn raw_get(base: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "the command failed: {}{}", r.1, r.2);
    r.1
}

fn api_code(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, code, .. } => (status, code),
        other => panic!("expected an API error, got {other}"),
    }
}

/// Proves the whole flow: enabling needs an admin; with auth on, no token is 401, a wrong
/// role 403, a forged or deleted user's token 401 on every node; the admin's token works over
/// HTTP and the CLI; Kafka clients need SASL/PLAIN with a token, and topic grants apply to
/// them; bad input gets its code; disabling lets everyone in again.
#[test]
fn tokens_and_roles_guard_every_node() {
    let c = Cluster::start("auth", 3, 3, 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ep = c.nodes[0].http.clone();

    // No admin yet: enabling would lock everyone out.
    let (code, _, err) = cli(&ep, None, &["auth", "enable"]);
    assert!(code != 0 && err.contains("no user holds the admin role"), "{code} {err}");

    let root = ok(cli(&ep, None, &["user", "create", "root", "--role", "admin", "-q"])).trim().to_string();
    assert!(root.starts_with("qdb_") && root.len() == 64, "{root}");
    ok(cli(&ep, None, &["role", "create", "carts-reader"]));
    ok(cli(&ep, None, &["role", "grant", "carts-reader", "--table", "carts", "--permission", "read"]));
    let app =
        ok(cli(&ep, None, &["user", "create", "app", "--role", "carts-reader", "-q"])).trim().to_string();
    // Bad input, each with its code.
    let (code, _, err) = cli(&ep, None, &["user", "create", "app"]);
    assert!(code != 0 && err.contains("user \"app\" already exists"), "{err}");
    let (code, _, err) = cli(&ep, None, &["user", "create", "x", "--role", "nope"]);
    assert!(code != 0 && err.contains("role \"nope\" does not exist"), "{err}");
    let (code, _, err) = cli(&ep, None, &["role", "grant", "carts-reader", "--table", "a*b*"]);
    assert!(code != 0 && err.contains("is invalid"), "{err}");
    ok(cli(&ep, None, &["auth", "enable"]));

    rt.block_on(async {
        let wo = WriteOptions::default();
        let ro = ReadOptions::default();
        // Every node enforces it (each checks its own applied copy of the users).
        for n in &c.nodes {
            let anonymous = Client::new(&n.http).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match anonymous.get("carts", "k", &ro).await {
                    Err(e) => {
                        assert_eq!(api_code(e), (401, "unauthenticated".into()), "node {}", n.id);
                        break;
                    }
                    Ok(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Ok(_) => panic!("node {} still lets anonymous reads in", n.id),
                }
            }
        }
        let admin = Client::new(&c.nodes[1].http).unwrap().with_token(Some(root.clone()));
        admin.put("carts", "k", "v1", &wo).await.unwrap();
        let reader = Client::new(&c.nodes[2].http).unwrap().with_token(Some(app.clone()));
        assert_eq!(reader.get("carts", "k", &ro).await.unwrap().values, vec!["v1".to_string()]);
        assert_eq!(
            api_code(reader.put("carts", "k", "v2", &wo).await.unwrap_err()),
            (403, "forbidden".into())
        );
        assert_eq!(api_code(reader.get("other", "k", &ro).await.unwrap_err()), (403, "forbidden".into()));
        assert_eq!(api_code(reader.users().await.unwrap_err()), (403, "forbidden".into()));
        // A forged token: the right shape, a changed secret.
        let mut forged = app.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let forger = Client::new(&c.nodes[0].http).unwrap().with_token(Some(forged));
        assert_eq!(
            api_code(forger.get("carts", "k", &ro).await.unwrap_err()),
            (401, "unauthenticated".into())
        );
        // The last admin cannot be deleted while authentication is on.
        assert_eq!(api_code(admin.delete_user("root").await.unwrap_err()), (409, "last_admin".into()));
        // A deleted user's token stops working on every node.
        admin.delete_user("app").await.unwrap();
        for n in &c.nodes {
            let gone = Client::new(&n.http).unwrap().with_token(Some(app.clone()));
            let deadline = Instant::now() + Duration::from_secs(5);
            while gone.get("carts", "k", &ro).await.is_ok() {
                assert!(Instant::now() < deadline, "node {} still accepts a deleted user's token", n.id);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The forbidden requests went to node 2.
        let metrics = raw_get(&c.nodes[2].http, "/metrics", &root);
        for reason in ["unauthenticated", "forbidden"] {
            assert!(
                metrics.contains(&format!("quorumdb_auth_refused_total{{reason=\"{reason}\"}}")),
                "{reason}"
            );
        }
    });

    // The CLI: without a token a clear error and a non-zero exit; with it, it works.
    let (code, _, err) = cli(&ep, None, &["get", "carts", "k"]);
    assert!(
        code != 0 && err.contains("authentication is on") && err.contains("QUORUMDB_TOKEN"),
        "{code} {err}"
    );
    assert!(ok(cli(&ep, Some(&root), &["get", "carts", "k"])).contains("v1"));
    let listed = ok(cli(&ep, Some(&root), &["user", "list"]));
    assert!(listed.contains("root") && !listed.contains("app"), "{listed}");

    // The Kafka listener: without SASL nothing; SASL/PLAIN with a user's token as password
    // works, and topic grants apply.
    let kafka = c.nodes[0].kafka.clone();
    let (ok_plain, _, _) = kcat(&["-L", "-b", &kafka, "-m", "5"], &[], None);
    assert!(!ok_plain, "kcat listed metadata without authenticating");
    let sasl = |user: &str, token: &str| {
        vec![
            "-X".to_string(),
            "security.protocol=SASL_PLAINTEXT".into(),
            "-X".into(),
            "sasl.mechanisms=PLAIN".into(),
            "-X".into(),
            format!("sasl.username={user}"),
            "-X".into(),
            format!("sasl.password={token}"),
        ]
    };
    let as_root = sasl("root", &root);
    let (produced, _, err) = kcat(&["-P", "-b", &kafka, "-t", "events"], &as_root, Some("e1\ne2\n"));
    assert!(produced, "root could not produce: {err}");
    ok(cli(&ep, Some(&root), &["role", "create", "events-reader"]));
    ok(cli(
        &ep,
        Some(&root),
        &["role", "grant", "events-reader", "--topic", "events", "--permission", "read"],
    ));
    let reader = ok(cli(&ep, Some(&root), &["user", "create", "consumer", "--role", "events-reader", "-q"]));
    let as_reader = sasl("consumer", reader.trim());
    let (read, out, err) =
        kcat(&["-C", "-b", &kafka, "-t", "events", "-o", "beginning", "-e"], &as_reader, None);
    assert!(read && out.contains("e1") && out.contains("e2"), "{out} {err}");
    let (denied, _, err) = kcat(&["-P", "-b", &kafka, "-t", "events"], &as_reader, Some("e3\n"));
    assert!(!denied && err.contains("uthorization"), "a reader produced: {err}");
    let (wrong, _, err) = kcat(&["-L", "-b", &kafka, "-m", "5"], &sasl("root", reader.trim()), None);
    assert!(!wrong, "another user's token authenticated root: {err}");

    // Off again: anonymous clients are back.
    ok(cli(&ep, Some(&root), &["auth", "disable"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cli(&c.nodes[2].http, None, &["get", "carts", "k"]).0 != 0 {
        assert!(Instant::now() < deadline, "authentication still on after disable");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Proves causality tokens are signed per item and per cluster key: any node verifies
/// another's token; a token replayed on another item, altered, or stripped of its signature is
/// 400 `malformed_context` and supersedes nothing; a rotation keeps older tokens valid until
/// their key falls out of the kept three.
#[test]
fn causality_tokens_are_signed_and_bound_to_their_item() {
    let c = Cluster::start("ctx-sign", 3, 3, 3);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (n0, n1, n2) = (c.client(0), c.client(1), c.client(2));
        let with = |ctx: &str| WriteOptions { context: Some(ctx.to_string()), ..WriteOptions::default() };
        let ro = ReadOptions::default();
        n0.put("t", "a", "a1", &WriteOptions::default()).await.unwrap();
        n0.put("t", "b", "b1", &WriteOptions::default()).await.unwrap();
        let ctx_a = n1.get("t", "a", &ro).await.unwrap().context;
        assert!(ctx_a.contains('.'), "a token is <context>.<signature>: {ctx_a}");
        let refused = |e: ClientError| {
            let (status, code) = api_code(e);
            assert_eq!((status, code.as_str()), (400, "malformed_context"));
        };
        // Replayed on another item.
        refused(n2.put("t", "b", "b2", &with(&ctx_a)).await.unwrap_err());
        // Stripped of its signature (what a forger can build from any version vector).
        let (body, sig) = ctx_a.rsplit_once('.').unwrap();
        refused(n2.put("t", "a", "a2", &with(body)).await.unwrap_err());
        // Altered: one signature character changed.
        let mut altered_sig: Vec<char> = sig.chars().collect();
        altered_sig[3] = if altered_sig[3] == 'A' { 'B' } else { 'A' };
        let altered = format!("{body}.{}", altered_sig.into_iter().collect::<String>());
        refused(n2.put("t", "a", "a2", &with(&altered)).await.unwrap_err());
        // Nothing was superseded by the refused writes.
        assert_eq!(n0.get("t", "b", &ro).await.unwrap().values, vec!["b1".to_string()]);
        // The genuine token works through a third node and supersedes a1.
        n2.put("t", "a", "a2", &with(&ctx_a)).await.unwrap();
        assert_eq!(n0.get("t", "a", &ro).await.unwrap().values, vec!["a2".to_string()]);
        // Rotation: a token of the first key survives two rotations, not three.
        let old = n0.get("t", "a", &ro).await.unwrap().context;
        for _ in 0..2 {
            n0.rotate_context_key().await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            let s = n2.auth_status().await.unwrap();
            if s.context_keys.len() == 3 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.context_keys.len(), 3, "{status:?}");
        let newer = n2.put("t", "a", "a3", &with(&old)).await.unwrap().context;
        assert_ne!(newer.rsplit_once('.').unwrap().1.get(..2), old.rsplit_once('.').unwrap().1.get(..2));
        n0.rotate_context_key().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match n1.put("t", "a", "a4", &with(&old)).await {
                Err(e) => {
                    refused(e);
                    break;
                }
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(_) => panic!("a token of a rotated-out key still verifies"),
            }
        }
    });
}
