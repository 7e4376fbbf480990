//! `lab run cart-partition` in its short mode on a real local cluster (issue #14).

use std::process::Command;

/// Proves the short cart-partition run exits 0: the CRDT cart loses no acknowledged add,
/// resurrects no acknowledged remove and keeps 100 % write availability in both regions during
/// the cut, while the report measures the LWW table's lost adds.
#[test]
fn cart_partition_short_run_keeps_every_crdt_item() {
    let out = std::env::temp_dir().join(format!("qdb-lab-cart-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_quorumdb"))
        .args(["lab", "run", "cart-partition", "--duration", "5", "--param", "run.cycles=1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let table = |name: &str| {
        report["tables"].as_array().unwrap().iter().find(|t| t["table"] == name).unwrap().clone()
    };
    let crdt = table("cart_crdt");
    assert_eq!(crdt["lost_adds"], 0, "{crdt}");
    assert_eq!(crdt["resurrected_removes"], 0, "{crdt}");
    assert!(crdt["adds_acknowledged"].as_u64().unwrap() > 0, "{crdt}");
    let lww = table("cart_lww");
    assert!(lww["lost_adds"].as_u64().unwrap() > 0, "LWW overwrote concurrent carts: {lww}");
    let _ = std::fs::remove_dir_all(&out);
}
