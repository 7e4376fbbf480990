//! `lab run cart-partition`: shopping carts edited in two regions that get cut apart (issue #14).
//!
//! Three tables side by side, the same operations on each:
//! - `cart_lww` (`conflict = "lww"`): the cart is a JSON object `item → quantity`, read, changed
//!   and written back with the read's context;
//! - `cart_sib` (siblings): the same, and the application merges concurrent siblings by union
//!   (what Dynamo's cart did);
//! - `cart_crdt` (`conflict = "crdt-map"`): `incr` of the item's counter field, and a remove
//!   with the context of the read it follows.
//!
//! Every add adds a **new** item id, and a remove removes an item the client's read showed, so
//! the judgement needs no interleaving: at the end, an item whose add was acknowledged and that
//! nobody tried to remove must be in the cart (else a *lost add*), and an item whose remove was
//! acknowledged must not (else a *resurrected remove*). Writes whose outcome is unknown (an
//! error or timeout) are left out of both counts.
//!
//! Clients write and read in their own region only (`w` and `r` of the file, a quorum of the
//! region's replicas); write availability is acknowledged / attempted writes per region during
//! the cut. After each heal the lab polls every replica of every cart (`inspect`, which repairs
//! nothing) until they agree: the time from heal to agreement per cart gives the convergence
//! p99. Metadata bytes per CRDT cart (stored bytes of the item minus its item names and
//! quantities) are measured after each cycle.

use super::cluster::{ClusterSpec, LabCluster};
use super::scenario::Dur;
use anyhow::{bail, Context, Result};
use quorumdb_api::crdt::{CrdtOpBody, CrdtReadQuery, CrdtWriteQuery};
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use quorumdb_node::config::{ConflictMode, TableConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `kind` that marks a cart scenario file.
pub const KIND: &str = "cart";
/// Cart scenarios shipped with QuorumDB (name, text).
pub const EMBEDDED: [(&str, &str); 1] =
    [("cart-partition", include_str!("../../../../scenarios/cart-partition.toml"))];
const SECTIONS: [&str; 2] = ["cluster", "run"];
/// Bounds of the file's numbers: every client is a task on a small box.
const CARTS_MAX: usize = 1_000;
const CLIENTS_MAX: usize = 16;
const CYCLES_MAX: usize = 20;
/// Floor of a scaled cut: shorter and the failure detector has not noticed it yet.
const CUT_MIN: Duration = Duration::from_secs(3);
/// Pause between a client's operations, so a 2-core box keeps up with every client.
const OP_PAUSE: Duration = Duration::from_millis(20);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

const TABLES: [&str; 3] = ["cart_lww", "cart_sib", "cart_crdt"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)]
    kind: String,
    name: String,
    description: String,
    cluster: FileCluster,
    run: FileRun,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    nodes: usize,
    zones: usize,
    replicas: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRun {
    carts: usize,
    clients_per_region: usize,
    cycles: usize,
    warmup: Dur,
    cut: Dur,
    between: Dur,
    w: usize,
    r: usize,
    remove_fraction: f64,
    converge_wait_max: Dur,
}

pub fn is_cart(text: &str) -> bool {
    super::scenario_kind(text).as_deref() == Some(KIND)
}

/// The name and description, for `lab list`.
pub fn describe(origin: &str, text: &str) -> Result<(String, String)> {
    let f = load(origin, text, &[], None)?;
    Ok((f.name, f.description))
}

/// Parses and checks a file; `--duration SECONDS` sets the cut length (at least [`CUT_MIN`]).
fn load(origin: &str, text: &str, params: &[(String, toml::Value)], duration_s: Option<f64>) -> Result<File> {
    let mut f: File = super::parse_special(origin, text, &SECTIONS, params)?;
    if let Some(d) = duration_s {
        if !(d.is_finite() && d > 0.0 && d <= 3_600.0) {
            bail!("{origin}: --duration must be 0 < seconds <= 3600");
        }
        f.run.cut = Dur(Duration::from_secs_f64(d).max(CUT_MIN));
    }
    let (c, r) = (&f.cluster, &f.run);
    if c.nodes < 2 || c.zones < 2 || c.zones > c.nodes || c.replicas < 2 || c.replicas > c.nodes {
        bail!("{origin}: [cluster] needs 2 <= zones <= nodes and 2 <= replicas <= nodes");
    }
    if r.carts == 0 || r.carts > CARTS_MAX {
        bail!("{origin}: [run] carts must be 1..={CARTS_MAX}");
    }
    if r.clients_per_region == 0 || r.clients_per_region > CLIENTS_MAX {
        bail!("{origin}: [run] clients_per_region must be 1..={CLIENTS_MAX}");
    }
    if r.cycles == 0 || r.cycles > CYCLES_MAX {
        bail!("{origin}: [run] cycles must be 1..={CYCLES_MAX}");
    }
    if r.w == 0 || r.w > c.replicas || r.r == 0 || r.r > c.replicas {
        bail!("{origin}: [run] w and r must be 1..=replicas");
    }
    if !(0.0..=1.0).contains(&r.remove_fraction) {
        bail!("{origin}: [run] remove_fraction must be within 0..=1");
    }
    Ok(f)
}

/// What the clients did to one table.
#[derive(Debug, Default)]
struct TableLog {
    /// Items whose add was acknowledged.
    added: BTreeSet<(usize, String)>,
    /// Items whose remove was attempted (acknowledged or not).
    remove_tried: BTreeSet<(usize, String)>,
    /// Items whose remove was acknowledged.
    removed: BTreeSet<(usize, String)>,
    /// During a cut, per region: (acknowledged, attempted) writes.
    cut_writes: [(u64, u64); 2],
}

/// One table's figures in the report.
#[derive(Debug, Serialize)]
struct TableReport {
    table: String,
    conflict: String,
    adds_acknowledged: usize,
    removes_acknowledged: usize,
    lost_adds: usize,
    resurrected_removes: usize,
    /// Percent of writes acknowledged during the cuts, per region (east, west).
    write_availability_pct: [f64; 2],
    converge_ms_p50: u64,
    converge_ms_p99: u64,
    /// Carts whose replicas did not agree within `converge_wait_max`.
    carts_not_converged: usize,
    /// Mean metadata bytes per cart after each cycle (CRDT table only).
    metadata_bytes_per_cart: Vec<f64>,
    /// Mean stored bytes per cart at the end (CRDT table only).
    stored_bytes_per_cart: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: String,
    seed: u64,
    command: String,
    cycles: usize,
    cut_s: f64,
    tables: Vec<TableReport>,
    passed: bool,
}

type Logs = Arc<Mutex<BTreeMap<&'static str, TableLog>>>;

fn cart_key(c: usize) -> String {
    format!("cart{c}")
}

/// A JSON cart (`item → quantity`) from a stored value; garbage reads as empty.
fn parse_cart(v: &str) -> BTreeMap<String, i64> {
    serde_json::from_str(v).unwrap_or_default()
}

/// One client's operation on one table (a read, then a write): returns `Some(acknowledged)` for a write attempt, `None`
/// when the read before it failed or there was nothing to remove.
#[allow(clippy::too_many_arguments)]
async fn op_kv(
    c: &Client,
    table: &'static str,
    cart: usize,
    item: Option<String>,
    remove: bool,
    rng_pick: usize,
    (r, w): (usize, usize),
    logs: &Logs,
) -> Option<bool> {
    let key = cart_key(cart);
    let read =
        c.get(table, &key, &ReadOptions { r: Some(r.to_string()), ..Default::default() }).await.ok()?;
    // Union of the siblings: the application merge (for LWW there is one value).
    let mut items: BTreeMap<String, i64> = BTreeMap::new();
    for v in &read.values {
        items.extend(parse_cart(v));
    }
    let touched = if remove {
        let present: Vec<String> = items.keys().cloned().collect();
        if present.is_empty() {
            return None;
        }
        let it = present[rng_pick % present.len()].clone();
        items.remove(&it);
        logs.lock().ok()?.entry(table).or_default().remove_tried.insert((cart, it.clone()));
        it
    } else {
        let it = item?;
        items.insert(it.clone(), 1);
        it
    };
    let body = serde_json::to_string(&items).ok()?;
    let opts = WriteOptions { w: Some(w.to_string()), context: Some(read.context), ..Default::default() };
    let ok = c.put(table, &key, &body, &opts).await.is_ok();
    if ok {
        let mut l = logs.lock().ok()?;
        let l = l.entry(table).or_default();
        if remove {
            l.removed.insert((cart, touched));
        } else {
            l.added.insert((cart, touched));
        }
    }
    Some(ok)
}

async fn op_crdt(
    c: &Client,
    cart: usize,
    item: Option<String>,
    remove: bool,
    rng_pick: usize,
    (r, w): (usize, usize),
    logs: &Logs,
) -> Option<bool> {
    let table = "cart_crdt";
    let key = cart_key(cart);
    let wq = CrdtWriteQuery { w: Some(w.to_string()), ..Default::default() };
    if !remove {
        let it = item?;
        let body =
            CrdtOpBody { op: "incr".into(), field: Some(it.clone()), by: Some(1), ..Default::default() };
        let ok = c.crdt_op(table, &key, &wq, &body).await.is_ok();
        if ok {
            logs.lock().ok()?.entry(table).or_default().added.insert((cart, it));
        }
        return Some(ok);
    }
    let read = c
        .crdt_get(table, &key, &CrdtReadQuery { r: Some(r.to_string()), ..Default::default() })
        .await
        .ok()?;
    let present: Vec<String> = read.crdt.fields.unwrap_or_default().into_keys().collect();
    if present.is_empty() {
        return None;
    }
    let it = present[rng_pick % present.len()].clone();
    logs.lock().ok()?.entry(table).or_default().remove_tried.insert((cart, it.clone()));
    let body = CrdtOpBody {
        op: "remove".into(),
        field: Some(it.clone()),
        context: Some(read.context),
        ..Default::default()
    };
    let ok = c.crdt_op(table, &key, &wq, &body).await.is_ok();
    if ok {
        logs.lock().ok()?.entry(table).or_default().removed.insert((cart, it));
    }
    Some(ok)
}

/// One client: edits random carts of every table until `stop`; counts writes while `cut` is set.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    c: Client,
    (region, id, cycle): (usize, usize, usize),
    seed: u64,
    run: Arc<FileRun>,
    logs: Logs,
    cut: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = rng.random_range(0..run.carts);
        let remove = rng.random_bool(run.remove_fraction);
        let pick = rng.random_range(0..1_000_000usize);
        seq += 1;
        // Unique across cycles too: a new client of the next cycle must not reuse a removed name.
        let item = (!remove).then(|| format!("k{cycle}r{region}c{id}i{seq}"));
        let levels = (run.r, run.w);
        for table in TABLES {
            let during_cut = cut.load(Ordering::Relaxed);
            let outcome = if table == "cart_crdt" {
                op_crdt(&c, cart, item.clone(), remove, pick, levels, &logs).await
            } else {
                op_kv(&c, table, cart, item.clone(), remove, pick, levels, &logs).await
            };
            // A read that failed before a write counts as an unavailable write.
            let attempted = outcome.is_some() || !remove;
            if during_cut && attempted {
                if let Ok(mut l) = logs.lock() {
                    let e = &mut l.entry(table).or_default().cut_writes[region];
                    e.1 += 1;
                    e.0 += u64::from(outcome == Some(true));
                }
            }
        }
        tokio::time::sleep(OP_PAUSE).await;
    }
}

/// What every replica of `cart` holds in `table`, as comparable text (CRDT: the joined value).
async fn replica_views(c: &Client, table: &str, cart: usize) -> Option<Vec<String>> {
    let v = c.inspect(table, &cart_key(cart), None).await.ok()?;
    v.replicas
        .iter()
        .map(|r| {
            if r.error.is_some() {
                return None;
            }
            Some(match &r.crdt {
                Some(c) => serde_json::to_string(&c.fields).unwrap_or_default(),
                None => {
                    let mut vals = r.values.clone();
                    vals.sort();
                    vals.join("\u{1}")
                }
            })
        })
        .collect()
}

/// Polls until every replica of every cart agrees; per table the ms each cart took (`None`:
/// did not converge in time).
async fn converge(c: &Client, carts: usize, wait_max: Duration) -> BTreeMap<&'static str, Vec<Option<u64>>> {
    let healed = Instant::now();
    let mut out: BTreeMap<&'static str, Vec<Option<u64>>> =
        TABLES.iter().map(|t| (*t, vec![None; carts])).collect();
    loop {
        let mut pending = 0;
        for table in TABLES {
            for cart in 0..carts {
                if out[table][cart].is_some() {
                    continue;
                }
                match replica_views(c, table, cart).await {
                    Some(v) if v.windows(2).all(|p| p[0] == p[1]) => {
                        if let Some(slot) = out.get_mut(table) {
                            slot[cart] = Some(healed.elapsed().as_millis() as u64);
                        }
                    }
                    _ => pending += 1,
                }
            }
        }
        if pending == 0 || healed.elapsed() > wait_max {
            return out;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Mean metadata bytes per CRDT cart: stored bytes minus item names and 8 bytes per quantity.
async fn crdt_metadata(c: &Client, carts: usize) -> (f64, f64) {
    let (mut meta, mut stored, mut n) = (0f64, 0f64, 0f64);
    for cart in 0..carts {
        let Ok(r) = c.crdt_get("cart_crdt", &cart_key(cart), &CrdtReadQuery::default()).await else {
            continue;
        };
        let payload: usize = r.crdt.fields.iter().flatten().map(|(k, _)| k.len() + 8).sum();
        stored += r.crdt.stored_bytes as f64;
        meta += r.crdt.stored_bytes.saturating_sub(payload) as f64;
        n += 1.0;
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    (meta / n, stored / n)
}

/// Items in `cart` of `table` as a reader ends up with them (siblings: their union).
async fn final_items(c: &Client, table: &str, cart: usize) -> Result<BTreeSet<String>> {
    let key = cart_key(cart);
    if table == "cart_crdt" {
        let r =
            c.crdt_get(table, &key, &CrdtReadQuery { r: Some("all".into()), ..Default::default() }).await?;
        return Ok(r.crdt.fields.unwrap_or_default().into_keys().collect());
    }
    let r = c.get(table, &key, &ReadOptions { r: Some("all".into()), ..Default::default() }).await?;
    Ok(r.values.iter().flat_map(|v| parse_cart(v).into_keys()).collect())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(
    origin: &str,
    text: &str,
    params: &[(String, toml::Value)],
    duration_s: Option<f64>,
    seed: u64,
    out: &Path,
    command: String,
) -> Result<i32> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = load(origin, text, params, duration_s)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tables = vec![
        TableConfig {
            name: "cart_lww".into(),
            replication_factor: f.cluster.replicas,
            conflict: ConflictMode::Lww,
        },
        TableConfig {
            name: "cart_crdt".into(),
            replication_factor: f.cluster.replicas,
            conflict: ConflictMode::CrdtMap,
        },
    ];
    let spec = ClusterSpec {
        nodes: f.cluster.nodes,
        zones: f.cluster.zones,
        replication_factor: f.cluster.replicas,
        tables,
        server_timeouts: false,
    };
    eprintln!("starting {} nodes in {} zones (two regions)", f.cluster.nodes, f.cluster.zones);
    let mut cluster = LabCluster::start(&spec, out).await?;
    let east: Vec<usize> = (0..f.cluster.nodes / 2).collect();
    let west: Vec<usize> = (f.cluster.nodes / 2..f.cluster.nodes).collect();
    let run = Arc::new(f.run);
    let logs: Logs = Arc::new(Mutex::new(BTreeMap::new()));
    let cut = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (region, nodes) in [&east, &west].into_iter().enumerate() {
        for k in 0..run.clients_per_region {
            let node = nodes[k % nodes.len()];
            let id = region * run.clients_per_region + k;
            tasks.push(tokio::spawn(client_loop(
                cluster.client(node).clone(),
                (region, id, 0),
                seed,
                run.clone(),
                logs.clone(),
                cut.clone(),
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(run.warmup.0).await;
    let observer = cluster.client(0).clone();
    let mut converge_ms: BTreeMap<&'static str, Vec<Option<u64>>> = BTreeMap::new();
    let mut metadata = Vec::new();
    for cycle in 1..=run.cycles {
        eprintln!("cycle {cycle}: cutting east {east:?} from west {west:?} for {:?}", run.cut.0);
        cluster.partition(&east).await?;
        cut.store(true, Ordering::Relaxed);
        tokio::time::sleep(run.cut.0).await;
        cut.store(false, Ordering::Relaxed);
        // The clients stop while the lab measures convergence, so the replicas can agree.
        stop.store(true, Ordering::Relaxed);
        for t in tasks.drain(..) {
            let _ = t.await;
        }
        cluster.heal_network().await?;
        eprintln!("cycle {cycle}: healed; waiting for every replica of every cart to agree");
        for (table, ms) in converge(&observer, run.carts, run.converge_wait_max.0).await {
            converge_ms.entry(table).or_default().extend(ms);
        }
        metadata.push(crdt_metadata(&observer, run.carts).await);
        if cycle < run.cycles {
            stop.store(false, Ordering::Relaxed);
            for (region, nodes) in [&east, &west].into_iter().enumerate() {
                for k in 0..run.clients_per_region {
                    let id = region * run.clients_per_region + k;
                    tasks.push(tokio::spawn(client_loop(
                        cluster.client(nodes[k % nodes.len()]).clone(),
                        (region, id, cycle),
                        seed.wrapping_add(cycle as u64),
                        run.clone(),
                        logs.clone(),
                        cut.clone(),
                        stop.clone(),
                    )));
                }
            }
            tokio::time::sleep(run.between.0).await;
        }
    }
    let mut reports = Vec::new();
    let logs = std::mem::take(&mut *logs.lock().map_err(|_| anyhow::anyhow!("a client panicked"))?);
    for table in TABLES {
        let empty = TableLog::default();
        let l = logs.get(table).unwrap_or(&empty);
        let mut finals: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for cart in 0..run.carts {
            finals.insert(cart, final_items(&observer, table, cart).await.unwrap_or_default());
        }
        let has = |(cart, it): &(usize, String)| finals.get(cart).is_some_and(|s| s.contains(it));
        let lost = l.added.iter().filter(|a| !l.remove_tried.contains(*a) && !has(a)).count();
        let resurrected = l.removed.iter().filter(|r| has(r)).count();
        let pct = |(ok, all): (u64, u64)| if all == 0 { 100.0 } else { ok as f64 * 100.0 / all as f64 };
        let ms = converge_ms.get(table).cloned().unwrap_or_default();
        let mut done: Vec<u64> = ms.iter().flatten().copied().collect();
        done.sort_unstable();
        let crdt = table == "cart_crdt";
        reports.push(TableReport {
            table: table.into(),
            conflict: match table {
                "cart_lww" => "lww",
                "cart_sib" => "siblings + union merge",
                _ => "crdt-map",
            }
            .into(),
            adds_acknowledged: l.added.len(),
            removes_acknowledged: l.removed.len(),
            lost_adds: lost,
            resurrected_removes: resurrected,
            write_availability_pct: [pct(l.cut_writes[0]), pct(l.cut_writes[1])],
            converge_ms_p50: percentile(&done, 0.5),
            converge_ms_p99: percentile(&done, 0.99),
            carts_not_converged: ms.iter().filter(|m| m.is_none()).count(),
            metadata_bytes_per_cart: if crdt { metadata.iter().map(|m| m.0).collect() } else { Vec::new() },
            stored_bytes_per_cart: crdt.then(|| metadata.last().map_or(0.0, |m| m.1)),
        });
    }
    let crdt = reports.iter().find(|t| t.table == "cart_crdt");
    let passed = crdt.is_some_and(|t| {
        t.lost_adds == 0
            && t.resurrected_removes == 0
            && t.write_availability_pct.iter().all(|p| *p >= 100.0)
            && t.carts_not_converged == 0
    });
    let report = Report {
        scenario: f.name.clone(),
        seed,
        command,
        cycles: run.cycles,
        cut_s: run.cut.0.as_secs_f64(),
        tables: reports,
        passed,
    };
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)
        .context("cannot write report.json")?;
    println!(
        "scenario {} (seed {seed}, {} cycles of a {:.0} s cut)",
        report.scenario, report.cycles, report.cut_s
    );
    println!(
        "{:<10} {:<24} {:>6} {:>6} {:>6} {:>6} {:>14} {:>10} {:>10} {:>16}",
        "TABLE",
        "CONFLICT",
        "ADDS",
        "REMS",
        "LOST",
        "RESUR",
        "AVAIL E/W %",
        "CONV p50",
        "CONV p99",
        "META B/CART"
    );
    for t in &report.tables {
        println!(
            "{:<10} {:<24} {:>6} {:>6} {:>6} {:>6} {:>14} {:>8}ms {:>8}ms {:>16}",
            t.table,
            t.conflict,
            t.adds_acknowledged,
            t.removes_acknowledged,
            t.lost_adds,
            t.resurrected_removes,
            format!("{:.1}/{:.1}", t.write_availability_pct[0], t.write_availability_pct[1]),
            t.converge_ms_p50,
            t.converge_ms_p99,
            if t.metadata_bytes_per_cart.is_empty() {
                "-".to_string()
            } else {
                t.metadata_bytes_per_cart.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(",")
            },
        );
        if t.carts_not_converged > 0 {
            println!("  {} carts of {} did not converge in time", t.carts_not_converged, t.table);
        }
    }
    println!("report: {}", out.join("report.json").display());
    Ok(if passed { 0 } else { super::EXIT_VIOLATED })
}
