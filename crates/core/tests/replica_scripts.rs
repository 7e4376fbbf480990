//! Scripted whole-protocol scenarios for the replica (`quorumdb_core::replica`), in the style
//! of toyDB's Raft scripts: a small cluster of replica machines over a network the script
//! controls message by message.
//!
//! Each file under `tests/scripts/replica/` is a goldenscript. Regenerate with
//! `UPDATE_GOLDENFILES=1 cargo test -p quorumdb-core --test replica_scripts` and *read* the
//! diff: a blessed bug is worse than no test.
//!
//! The runner is a driver like the server's and the simulator's: it carries effects. Peer
//! messages wait in a queue until `deliver`; group commits complete only on `sync`; time moves
//! only on `tick`. Storage is `MemStore`, whose `crash` loses what was not synced.
//!
//! ```text
//! cluster nodes=3 n=3                 fresh cluster n0..n2 (zones z0..z2), replication factor n
//! put n0 k v [w=quorum] [ctx=TOKEN]   client write of table t, key k at gateway n0
//! delete n0 k [w=..] [ctx=TOKEN]
//! get n0 k [r=quorum] [repair=blocking|async|off|writeback]
//! deliver [from=n0] [to=n1]           deliver the queued messages (those matching), in order,
//!                                     and everything they cause, until the queue is quiet
//! sync n1|all                         complete the pending group commits of a node
//! tick 100                            advance every node's clock by 100 ms and tick
//! partition n2 / heal                 messages to or from n2 are dropped at delivery
//! crash n1 / restart n1               lose unsynced data and in-flight state / reopen (new actor)
//! state k                             every node's current and durable state of t/k
//! hints                               every node's hint queue
//! ```
//! Client answers print as `c3: ...` when they happen; dropped messages as `drop ...`.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;

use goldenscript::{Command, Context};

mod support;
use quorumdb_core::causality::{ActorId, Fence, ItemState, Value, VersionVector, WriteId};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_core::replica::{
    shard_of, ClientRequest, ClientResponse, Effect, Input, MemStore, Now, PeerRequest, PeerResponse,
    QuorumMode, ReadRepair, Replica, ReplicaConfig, Shared, SHARDS_LEN,
};
use quorumdb_core::ring::{Member, Ring};

const TABLE: &str = "t";
const WALL_EPOCH_MS: u64 = 1_700_000_000_000;

enum Msg {
    Req { id: u64, req: PeerRequest },
    Resp { id: u64, resp: PeerResponse },
}

struct Envelope {
    from: usize,
    to: usize,
    msg: Msg,
}

struct Node {
    up: bool,
    generation: u64,
    shards: Vec<Option<Replica<MemStore>>>,
    stores: Vec<MemStore>,
    /// Highest sync each shard asked for since the last `sync`.
    sync_wanted: Vec<Option<u64>>,
}

#[derive(Default)]
struct Runner {
    nodes: Vec<Node>,
    shared_config: Option<(Ring, ReplicaConfig)>,
    net: VecDeque<Envelope>,
    /// Run-unique message id → (node, shard, the replica's own request id).
    sent: BTreeMap<u64, (usize, usize, u64)>,
    next_id: u64,
    isolated: Vec<usize>,
    now_ms: u64,
    out: String,
    echo: bool,
}

fn node_arg(s: &str) -> Result<usize, Box<dyn Error>> {
    Ok(s.strip_prefix('n').ok_or("nodes look like n0")?.parse()?)
}

fn key(name: &str) -> Result<ItemKey, Box<dyn Error>> {
    Ok(ItemKey::new(TABLE, name.as_bytes(), b"")?)
}

fn show_state(state: &ItemState) -> String {
    let values: Vec<String> = state
        .siblings()
        .iter()
        .map(|(_, v)| match v {
            Value::Data(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Tombstone => "⌫".into(),
        })
        .collect();
    format!("[{}] {}", values.join(" "), state.context())
}

fn show_req(req: &PeerRequest) -> String {
    match req {
        PeerRequest::Ping => "Ping".into(),
        PeerRequest::CoordinateWrite { key, w, .. } => {
            format!("CoordinateWrite {} w={w}", text(&key.partition))
        }
        PeerRequest::Replicate { key, state } => {
            format!("Replicate {} {}", text(&key.partition), show_state(state))
        }
        PeerRequest::StoreHint { target, key, .. } => {
            format!("StoreHint {} for n{target}", text(&key.partition))
        }
        PeerRequest::Read { key } => format!("Read {}", text(&key.partition)),
        PeerRequest::Scan { partition, .. } => format!("Scan {}", text(partition)),
        PeerRequest::AeHashes { level, parents, .. } => {
            format!("AeHashes level={level} parents={}", parents.len())
        }
        PeerRequest::AeLeafKeys { leaves, .. } => format!("AeLeafKeys leaves={leaves:?}"),
        PeerRequest::TombstoneHeld { key, .. } => format!("TombstoneHeld {}", text(&key.partition)),
        PeerRequest::StartRepair { .. } => "StartRepair".into(),
    }
}

fn show_resp(resp: &PeerResponse) -> String {
    match resp {
        PeerResponse::Pong => "Pong".into(),
        PeerResponse::Ack => "Ack".into(),
        PeerResponse::Written(s) => format!("Written {}", show_state(s)),
        PeerResponse::Item(s) => format!("Item {}", show_state(s)),
        PeerResponse::Page { items, exhausted } => format!("Page len={} exhausted={exhausted}", items.len()),
        PeerResponse::Hashes(h) => format!("Hashes len={}", h.len()),
        PeerResponse::LeafKeys(l) => format!("LeafKeys len={}", l.len()),
        PeerResponse::Held(h) => format!("Held {h}"),
        PeerResponse::Failed(e) => format!("Failed {}: {e}", e.code()),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Runner {
    fn now(&self) -> Now {
        Now { mono_ms: self.now_ms, wall_ms: WALL_EPOCH_MS + self.now_ms }
    }

    fn cluster(&mut self, nodes: usize, n: usize) -> Result<(), Box<dyn Error>> {
        let members = (0..nodes).map(|i| Member::new(format!("n{i}"), format!("z{i}"))).collect();
        let ring = Ring::new(members, 16)?;
        // Anti-entropy and GC off: scripts deliver every message by hand, so only the messages
        // a scenario is about should appear. Heartbeats every 500 ms (the detector needs them
        // to see a node come back). Timeouts are short so `tick` reaches them.
        let config = ReplicaConfig {
            request_timeout_ms: 300,
            failure_timeout_ms: 300,
            heartbeat_interval_ms: 500,
            antientropy_interval_ms: 0,
            tombstone_gc_interval_ms: 0,
            handoff_tick_ms: 100,
            ..ReplicaConfig::with_defaults(n)
        };
        self.shared_config = Some((ring, config));
        self.nodes = (0..nodes)
            .map(|_| Node {
                up: false,
                generation: 0,
                shards: (0..SHARDS_LEN).map(|_| None).collect(),
                stores: (0..SHARDS_LEN).map(|_| MemStore::new()).collect(),
                sync_wanted: vec![None; SHARDS_LEN],
            })
            .collect();
        for i in 0..nodes {
            self.open(i)?;
        }
        self.net.clear();
        self.sent.clear();
        self.isolated.clear();
        self.now_ms = 0;
        Ok(())
    }

    fn open(&mut self, idx: usize) -> Result<(), Box<dyn Error>> {
        let (ring, config) = self.shared_config.clone().ok_or("no cluster: start with `cluster`")?;
        let now = self.now();
        let node = &mut self.nodes[idx];
        let shared = Arc::new(Shared::new(config, ring, idx));
        let actor = ActorId(((idx as u64 + 1) << 8) | node.generation);
        for shard in 0..SHARDS_LEN {
            let store = std::mem::take(&mut node.stores[shard]);
            node.shards[shard] = Some(Replica::open(shared.clone(), store, shard, actor, now)?);
        }
        node.up = true;
        node.sync_wanted = vec![None; SHARDS_LEN];
        for shard in 0..SHARDS_LEN {
            self.collect(idx, shard);
        }
        Ok(())
    }

    fn step(&mut self, node: usize, shard: usize, input: Input) {
        let now = self.now();
        let Some(Some(r)) = self.nodes.get_mut(node).map(|n| &mut n.shards[shard]) else { return };
        r.step(now, input);
        self.collect(node, shard);
    }

    fn collect(&mut self, node: usize, shard: usize) {
        let Some(Some(r)) = self.nodes.get_mut(node).map(|n| &mut n.shards[shard]) else { return };
        for effect in r.drain_effects() {
            match effect {
                Effect::Send { to, id, req, .. } => {
                    self.next_id += 1;
                    self.sent.insert(self.next_id, (node, shard, id));
                    self.net.push_back(Envelope { from: node, to, msg: Msg::Req { id: self.next_id, req } });
                }
                Effect::Respond { to, id, resp } => {
                    self.net.push_back(Envelope { from: node, to, msg: Msg::Resp { id, resp } })
                }
                Effect::Reply { id, result } => {
                    let answer = match result {
                        Ok(ClientResponse::Written(s)) => format!("ok {}", show_state(&s)),
                        Ok(ClientResponse::Read(s)) => format!("read {}", show_state(&s)),
                        Ok(other) => format!("{other:?}"),
                        Err(e) => format!("error {}: {e}", e.code()),
                    };
                    let _ = writeln!(self.out, "c{id}: {answer}");
                }
                Effect::Sync { upto } => {
                    let w = &mut self.nodes[node].sync_wanted[shard];
                    *w = Some(w.map_or(upto, |x| x.max(upto)));
                }
            }
        }
    }

    fn client(&mut self, gateway: usize, k: &ItemKey, req: ClientRequest) {
        self.next_id += 1;
        let id = self.next_id;
        let _ = writeln!(self.out, "c{id} → n{gateway}");
        self.step(gateway, shard_of(k.placement_hash()), Input::Client { id, req });
    }

    fn deliver(&mut self, from: Option<usize>, to: Option<usize>) {
        let mut rounds = 0;
        loop {
            let pos = self
                .net
                .iter()
                .position(|e| from.is_none_or(|f| f == e.from) && to.is_none_or(|t| t == e.to));
            let Some(pos) = pos else { return };
            rounds += 1;
            if rounds > 10_000 {
                let _ = writeln!(self.out, "BUG: messages keep coming");
                return;
            }
            let Some(env) = self.net.remove(pos) else { return };
            let dropped = !self.nodes[env.to].up
                || self.isolated.contains(&env.from)
                || self.isolated.contains(&env.to);
            let desc = match &env.msg {
                Msg::Req { req, .. } => show_req(req),
                Msg::Resp { resp, .. } => show_resp(resp),
            };
            if dropped {
                let _ = writeln!(self.out, "drop n{}→n{} {desc}", env.from, env.to);
                continue;
            }
            let _ = writeln!(self.out, "n{}→n{} {desc}", env.from, env.to);
            match env.msg {
                Msg::Req { id, req } => {
                    let shard = req.shard().unwrap_or(0);
                    self.step(env.to, shard, Input::Peer { from: env.from, id, req });
                }
                Msg::Resp { id, resp } => {
                    if let Some((node, shard, rid)) = self.sent.remove(&id) {
                        if node == env.to {
                            self.step(node, shard, Input::Response { id: rid, result: Ok(resp) });
                        }
                    }
                }
            }
        }
    }

    fn sync(&mut self, node: usize) {
        for shard in 0..SHARDS_LEN {
            let Some(r) = self.nodes[node].shards[shard].as_mut() else { continue };
            r.store_mut().sync();
            if let Some(upto) = self.nodes[node].sync_wanted[shard].take() {
                self.step(node, shard, Input::Synced { upto });
            }
        }
    }

    fn crash(&mut self, idx: usize) {
        let node = &mut self.nodes[idx];
        node.up = false;
        node.generation += 1;
        for shard in 0..SHARDS_LEN {
            if let Some(r) = node.shards[shard].take() {
                let mut store = r.into_store();
                store.crash();
                node.stores[shard] = store;
            }
        }
        self.sent.retain(|_, (n, _, _)| *n != idx);
    }

    fn state_of(&self, k: &ItemKey) -> String {
        let shard = shard_of(k.placement_hash());
        let sk = k.storage_key();
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let store = match &node.shards[shard] {
                Some(r) => r.store(),
                None => &node.stores[shard],
            };
            let decode = |b: Option<&Vec<u8>>| b.and_then(|b| ItemState::decode(b).ok()).unwrap_or_default();
            let current = decode(store.items().get(&sk));
            let durable = decode(store.durable_item(&sk));
            let mark = if current == durable {
                String::new()
            } else {
                format!(" (durable {})", show_state(&durable))
            };
            let _ = writeln!(out, "n{i}: {}{mark}", show_state(&current));
        }
        out
    }
}

fn level(cmd: &Command, name: &str) -> Result<Level, Box<dyn Error>> {
    match keyed(cmd, name) {
        Some(v) => Ok(Level::parse("level", v)?),
        None => Ok(Level::Quorum),
    }
}

fn ctx(cmd: &Command) -> Result<VersionVector, Box<dyn Error>> {
    match keyed(cmd, "ctx") {
        Some(v) => Ok(VersionVector::from_token(v)?),
        None => Ok(VersionVector::new()),
    }
}

fn positional(cmd: &Command) -> Vec<&str> {
    cmd.args
        .iter()
        .filter_map(|a| match a {
            goldenscript::Argument::Positional(v) => Some(v.as_str()),
            _ => None,
        })
        .collect()
}

fn keyed<'a>(cmd: &'a Command, name: &str) -> Option<&'a str> {
    cmd.args.iter().find_map(|a| match a {
        goldenscript::Argument::KeyValue(k, v) if k == name => Some(v.as_str()),
        _ => None,
    })
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, cmd: &Command, _context: &Context) -> Result<String, Box<dyn Error>> {
        self.out.clear();
        let pos = positional(cmd);
        match cmd.name.as_str() {
            "cluster" => {
                let nodes = keyed(cmd, "nodes").unwrap_or("3").parse()?;
                let n = keyed(cmd, "n").unwrap_or("3").parse()?;
                self.cluster(nodes, n)?;
                let (ring, _) = self.shared_config.clone().ok_or("no cluster")?;
                for k in ["a", "b", "c"] {
                    let pref = ring.preference_list(key(k)?.placement_hash(), n);
                    let names: Vec<String> = pref.iter().map(|p| format!("n{p}")).collect();
                    let _ = writeln!(self.out, "{k}: home replicas {}", names.join(" "));
                }
            }
            "put" | "delete" => {
                let [gw, k, rest @ ..] = pos.as_slice() else { return Err("put NODE KEY VALUE".into()) };
                let value = match (cmd.name.as_str(), rest) {
                    ("put", [v, ..]) => Some(v.as_bytes().to_vec()),
                    ("put", []) => return Err("put needs a value".into()),
                    _ => None,
                };
                let k = key(k)?;
                let req = ClientRequest::Write {
                    key: k.clone(),
                    value,
                    ctx: ctx(cmd)?,
                    w: level(cmd, "w")?,
                    mode: QuorumMode::Strict,
                    timeout_ms: 300,
                    write_id: keyed(cmd, "id").map(|id| id.parse().map(WriteId)).transpose()?,
                    fence: match (keyed(cmd, "fence"), keyed(cmd, "token")) {
                        (Some(name), Some(token)) => {
                            Some(Fence { name: name.to_owned(), token: token.parse()? })
                        }
                        (None, None) => None,
                        _ => return Err("a fenced write needs fence=NAME token=N".into()),
                    },
                };
                self.client(node_arg(gw)?, &k, req);
            }
            "get" => {
                let [gw, k] = pos.as_slice() else { return Err("get NODE KEY".into()) };
                let repair = match keyed(cmd, "repair").unwrap_or("blocking") {
                    "blocking" => ReadRepair::Blocking,
                    "async" => ReadRepair::Async,
                    "off" => ReadRepair::Off,
                    "writeback" => ReadRepair::WriteBack,
                    other => return Err(format!("unknown repair mode {other}").into()),
                };
                let k = key(k)?;
                let req = ClientRequest::Read {
                    key: k.clone(),
                    r: level(cmd, "r")?,
                    repair,
                    mode: QuorumMode::Strict,
                    timeout_ms: 300,
                    floor: None,
                };
                self.client(node_arg(gw)?, &k, req);
            }
            "deliver" => {
                let from = keyed(cmd, "from").map(node_arg).transpose()?;
                let to = keyed(cmd, "to").map(node_arg).transpose()?;
                self.deliver(from, to);
            }
            "sync" => match pos.as_slice() {
                ["all"] => (0..self.nodes.len()).for_each(|i| self.sync(i)),
                [n] => self.sync(node_arg(n)?),
                _ => return Err("sync NODE|all".into()),
            },
            "tick" => {
                let [ms] = pos.as_slice() else { return Err("tick MS".into()) };
                self.now_ms += ms.parse::<u64>()?;
                let now = self.now();
                for node in 0..self.nodes.len() {
                    for shard in 0..SHARDS_LEN {
                        if let Some(r) = self.nodes[node].shards[shard].as_mut() {
                            r.tick(now);
                            self.collect(node, shard);
                        }
                    }
                }
            }
            "partition" => {
                let [n] = pos.as_slice() else { return Err("partition NODE".into()) };
                self.isolated.push(node_arg(n)?);
            }
            "heal" => self.isolated.clear(),
            "crash" => {
                let [n] = pos.as_slice() else { return Err("crash NODE".into()) };
                self.crash(node_arg(n)?);
            }
            "restart" => {
                let [n] = pos.as_slice() else { return Err("restart NODE".into()) };
                self.open(node_arg(n)?)?;
            }
            "state" => {
                let [k] = pos.as_slice() else { return Err("state KEY".into()) };
                self.out = self.state_of(&key(k)?);
            }
            "hints" => {
                for (i, node) in self.nodes.iter().enumerate() {
                    let queued: usize = node.shards.iter().flatten().map(|r| r.hint_stats().len).sum();
                    let _ = writeln!(self.out, "n{i}: {queued} hints");
                }
            }
            other => return Err(format!("unknown command {other}").into()),
        }
        let out = std::mem::take(&mut self.out);
        Ok(support::echo(self.echo, cmd, out)?)
    }

    fn start_block(&mut self, block: &goldenscript::Block) -> Result<String, Box<dyn Error>> {
        self.echo = support::echo_block(block);
        Ok(String::new())
    }
}

const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/replica");

scripts! { Runner, SCRIPTS_DIR;
    /// Proves a write is answered only after W replicas synced it, and replicates to every home.
    write_and_read,
    /// Proves a gateway that is not a home replica forwards to the first home replica.
    forward,
    /// Proves a replica that missed a write gets a hint, delivered once it is reachable again.
    hint_and_handoff,
    /// Proves a blocking read repairs a stale replica before answering.
    read_repair,
    /// Proves a crash loses only what was not synced, and an acknowledged write survives it.
    crash_keeps_acknowledged,
    /// Proves a retried write with the same write id, at the same or another home replica,
    /// yields no second version, while the same value without an id does.
    idempotent,
    /// Fenced writes: refused where a higher token is known, dropped by merges elsewhere.
    fenced,
}
