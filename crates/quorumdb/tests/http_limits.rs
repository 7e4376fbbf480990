//! The client HTTP listener against slow and greedy clients (issue #16, "hostile input"):
//! slow headers, slow bodies, too many connections, too many requests. Raw TCP, so the test
//! controls every byte and its timing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Cluster;

fn addr(c: &Cluster) -> String {
    c.nodes[0].http.trim_start_matches("http://").trim_end_matches('/').to_string()
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends one request with `Connection: close` and returns the whole answer ("" if the
/// server closed the connection without one).
fn request(addr: &str, head: &str) -> String {
    let mut s = connect(addr);
    if s.write_all(format!("{head}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

const LIMITS: &str =
    "[http]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nconnections_max = 8\n";

/// Proves a slowloris client trickling header lines is cut off at the header-read timeout,
/// a body that stops arriving gets 408 with a JSON error, and connections beyond
/// `connections_max` are closed at once while the node keeps serving the others.
#[test]
fn slow_clients_and_connection_floods_are_cut_off() {
    let c = Cluster::start_with("http-limits", 1, 1, 1, LIMITS);
    let a = addr(&c);

    // Slow headers: a header line every 300 ms would take for ever; the node closes the
    // connection about 1 s after the first byte.
    let mut s = connect(&a);
    let started = Instant::now();
    s.write_all(b"GET /livez HTTP/1.1\r\n").unwrap();
    let mut closed_after = None;
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        if s.write_all(format!("X-Slow-{i}: x\r\n").as_bytes()).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let read = s.read(&mut buf);
        s.set_nonblocking(false).unwrap();
        if read.is_ok() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the node kept a slowloris connection open for 6 s");
    assert!(closed_after < Duration::from_secs(3), "closed only after {closed_after:?}");

    // Slow body: headers promise 10 bytes, 2 arrive.
    let mut s = connect(&a);
    let started = Instant::now();
    s.write_all(b"PUT /v1/tables/default/items/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());

    // Connection flood: hold 12 idle connections open; at most 8 are kept.
    let held: Vec<TcpStream> = (0..12).map(|_| connect(&a)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut open = 0;
    for mut s in held.iter() {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert!((1..=8).contains(&open), "{open} of 12 connections kept open, at most 8 allowed");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let ok = request(&a, "GET /livez HTTP/1.1");
    assert!(ok.starts_with("HTTP/1.1 200"), "after the flood: {ok}");
    let metrics = request(&a, "GET /metrics HTTP/1.1");
    for reason in ["connections", "slow_body"] {
        assert!(
            metrics.contains(&format!("quorumdb_requests_rejected_total{{reason=\"{reason}\"}}")),
            "no {reason} refusal counted:\n{metrics}"
        );
    }
}

/// Proves a client over its request rate gets 429 with `Retry-After` and a JSON error,
/// is served again once its bucket refills, and the refusals are counted.
#[test]
fn greedy_client_gets_429_then_service() {
    let rate = "[http]\nrequests_per_second_per_client = 5\nrequests_burst_per_client = 5\n";
    let c = Cluster::start_with("http-rate", 1, 1, 1, rate);
    let a = addr(&c);
    let answers: Vec<String> = (0..20).map(|_| request(&a, "GET /livez HTTP/1.1")).collect();
    let limited: Vec<&String> = answers.iter().filter(|r| r.starts_with("HTTP/1.1 429")).collect();
    let served = answers.iter().filter(|r| r.starts_with("HTTP/1.1 200")).count();
    assert!(limited.len() >= 10 && served >= 1, "{served} served, {} limited of 20", limited.len());
    let one = limited[0].to_ascii_lowercase();
    assert!(one.contains("retry-after: 1") && one.contains("\"rate_limited\""), "{}", limited[0]);
    std::thread::sleep(Duration::from_millis(1_200));
    let again = request(&a, "GET /metrics HTTP/1.1");
    assert!(again.starts_with("HTTP/1.1 200"), "after the bucket refilled: {again}");
    assert!(again.contains("quorumdb_requests_rejected_total{reason=\"rate_limited\"}"), "{again}");
}
