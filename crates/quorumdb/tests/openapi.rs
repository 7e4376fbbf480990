//! schemathesis (property-based HTTP fuzzing from the OpenAPI description) against a live,
//! private one-node cluster: every answer must be documented in docs/openapi.yaml, with the
//! documented content type and a body that matches its schema exactly, and none may be a 5xx.
//! schemathesis comes from `scripts/test.sh`'s virtualenv (`QUORUMDB_TEST_PYTHON`).

mod common;

use common::Cluster;
use std::process::Command;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");

/// Test cases per operation and phase: with about 55 operations this is a few hundred requests
/// per phase, well under a minute on the 2-core CI machine.
const EXAMPLES_PER_OPERATION: &str = "8";

/// The whole run's bound, seconds (`timeout` kills schemathesis past it, failing the test).
const RUN_SECONDS_MAX: &str = "150";

/// Operations left out, each because it would sabotage the node under test rather than test
/// it (docs/openapi.yaml says so on each):
/// - `putFaults`: fault rules partition, slow down (fsync delay) or poison the node;
/// - `enableAuth`: schemathesis can create an admin user, and once authentication is on
///   every later request is a 401 that tests nothing;
/// - `clusterCommit`: a layout committed with made-up members takes the node out of its ring;
/// - `createSink`: the node would connect to whatever host a generated connection string names
///   (tests send traffic only to loopback).
const EXCLUDED: [&str; 4] = ["putFaults", "enableAuth", "clusterCommit", "createSink"];

/// The interpreter with schemathesis, or `None` (the test is skipped) without
/// `QUORUMDB_TEST_PYTHON`.
fn python() -> Option<String> {
    let Ok(python) = std::env::var("QUORUMDB_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: QUORUMDB_TEST_PYTHON is unset; scripts/test.sh sets it to a virtualenv with schemathesis"
        );
        return None;
    };
    let check = Command::new(&python).args(["-c", "import schemathesis"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "{python} lacks schemathesis; run the tests with scripts/test.sh, which installs it in its virtualenv"
    );
    Some(python)
}

/// Every operation of docs/openapi.yaml but the excluded ones, in positive and negative
/// mode: no 5xx, only documented status codes and content types, and bodies that match
/// their schemas.
#[test]
fn schemathesis_finds_the_api_as_described() {
    let Some(python) = python() else { return };
    let c = Cluster::start("openapi", 1, 1, 1);
    let url = &c.nodes[0].http;
    let seed = std::env::var("QUORUMDB_SCHEMATHESIS_SEED").unwrap_or_else(|_| "42".into());
    let report = c.dir.join("schemathesis");
    let mut cmd = Command::new("timeout");
    // schemathesis keeps a cache in `.schemathesis/` under its working directory: the
    // cluster's scratch directory, not the source tree.
    cmd.current_dir(&c.dir);
    cmd.args([RUN_SECONDS_MAX, &python, "-m", "schemathesis.cli", "run", SPEC, "--url", url])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", EXAMPLES_PER_OPERATION])
        .args(["--seed", &seed, "--workers", "1", "--request-timeout", "10", "--no-color"])
        .args(["--generation-database", "none", "--report", "junit", "--report-dir"])
        .arg(&report);
    for op in EXCLUDED {
        cmd.args(["--exclude-operation-id", op]);
    }
    let out = cmd.output().expect("cannot run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis (seed {seed}) found the node at odds with docs/openapi.yaml (status {:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Not vacuous: the run must have generated and sent a few hundred test cases.
    let generated = stdout
        .lines()
        .find_map(|l| l.trim().strip_suffix(" passed")?.split_once(" generated, ")?.0.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(generated >= GENERATED_MIN, "only {generated} test cases ran:\n{stdout}");
    println!("{stdout}");
}

/// Fewest test cases a run may generate before it counts as having tested nothing.
const GENERATED_MIN: u64 = 300;

/// A table name that no item route can address is refused when the table is declared (the
/// schemathesis run found `..` accepted): `.` and `..` (URL normalisation drops them), names
/// outside the data plane's `[A-Za-z0-9_.-]{1,128}`, and the reserved `__` prefix.
#[test]
fn unaddressable_table_names_are_refused() {
    let c = Cluster::start("openapi-tables", 1, 1, 1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = c.client(0);
    for name in [".", "..", "a/b", "caf\u{e9}", "__log2", ""] {
        let t = quorumdb_api::TableInfo { name: name.into(), replicas: 1, conflict: "lww".into() };
        match rt.block_on(client.create_table(&t)) {
            Err(quorumdb_client::ClientError::Api { status: 400, .. }) => {}
            other => panic!("table {name:?}: expected 400, got {other:?}"),
        }
    }
    let t = quorumdb_api::TableInfo { name: "ok.name-1".into(), replicas: 1, conflict: "lww".into() };
    rt.block_on(client.create_table(&t)).unwrap();
}
