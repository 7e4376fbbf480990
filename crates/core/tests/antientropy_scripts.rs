//! Scripted scenarios for Merkle tree exchanges (`quorumdb_core::antientropy`).
//!
//! Each file under `tests/scripts/antientropy/` is a goldenscript: commands, then `---`, then
//! the output they produced when the file was last blessed. Regenerate with
//! `UPDATE_GOLDENFILES=1 cargo test -p quorumdb-core --test antientropy_scripts` and *read* the
//! diff: a blessed bug is worse than no test.
//!
//! The runner plays the node of replica `a`, which runs the exchange, and replica `b`, which
//! answers it. Each replica is a map from key to state plus its `MerkleTree`, kept in sync on
//! every write. A state is a grow-only set of values (merge is union), the simplest join
//! semilattice, so the scripts are about orderings rather than version vectors. Pushes and pulls
//! are applied as soon as the exchange emits them, by merging.
//!
//! A script key `k1` is the storage key of partition `k1` of table `t`, so its leaf is the
//! partition's ring position, as in production, and leaf listings are range scans. Leaves and
//! inner nodes are numbered as in `merkle`: leaf `L` lies under node `L / 16` of level 2 and node
//! `L / 256` of level 1, so `put` prints each key's leaf to make the requests readable.
//!
//! Commands:
//!
//! ```text
//! put a k1 x y                 merge {x,y} into a's state of k1 (prints the key's leaf)
//! remove a k1                  remove k1 from a entirely (lost data, or a collected tombstone)
//! start [deadline=1000] [leaves=64] [keys=1024]
//!                              start an exchange from a with b; prints its first request
//! step                         b answers the request in flight; prints what the exchange does
//! step truncate                … with the last hash missing
//! step level=2                 … claiming to answer for another level
//! step foreign                 … listing a key of another leaf
//! step duplicate               … listing its first key twice
//! fail "connection reset"      the request in flight failed
//! tick 1000                    the node's timer fired
//! run                          step until the exchange finishes
//! diff                         keys whose states differ, and whether the roots agree
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::ops::Bound;

use goldenscript::{Command, Context};

mod support;
use quorumdb_core::antientropy::{self, Exchange, ExchangeLimits, ExchangeStats, LeafItems};
use quorumdb_core::key::ItemKey;
use quorumdb_core::merkle::{item_digest, leaf_key_range, leaf_of, MerkleTree};

/// A grow-only set of values.
type State = BTreeSet<String>;

fn render(state: &State) -> String {
    format!("{{{}}}", state.iter().cloned().collect::<Vec<_>>().join(","))
}

/// The canonical encoding the digest covers: values in order, comma-separated.
fn encode(state: &State) -> Vec<u8> {
    state.iter().cloned().collect::<Vec<_>>().join(",").into_bytes()
}

#[derive(Default)]
struct Replica {
    items: BTreeMap<Vec<u8>, State>,
    tree: MerkleTree,
}

impl Replica {
    /// Merges `state` into the item, keeping the tree in sync the way the node must: the old
    /// digest out, the new digest in.
    fn merge(&mut self, key: &[u8], state: &State) -> State {
        let old = self.items.get(key).map(|s| item_digest(key, &encode(s)));
        let merged: State = self.items.get(key).into_iter().flatten().chain(state).cloned().collect();
        self.tree.update(key, old, Some(item_digest(key, &encode(&merged))));
        self.items.insert(key.to_vec(), merged.clone());
        merged
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        match self.items.remove(key) {
            Some(state) => {
                self.tree.update(key, Some(item_digest(key, &encode(&state))), None);
                true
            }
            None => false,
        }
    }

    /// What the node answers to "list leaf L": the (key, digest) of every item in it, found
    /// with one range scan.
    fn leaf_items(&self, leaf: usize) -> Result<LeafItems, Box<dyn Error>> {
        let (start, end) = leaf_key_range(leaf)?;
        let end = end.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .items
            .range::<Vec<u8>, _>((Bound::Included(start), end))
            .map(|(k, s)| (k.clone(), item_digest(k, &encode(s))))
            .collect())
    }
}

/// The request the exchange is waiting on (after a failure: the one it was waiting on).
#[derive(Clone)]
enum Request {
    Hashes { level: usize, parents: Vec<usize> },
    LeafKeys { leaves: Vec<usize> },
}

#[derive(Default)]
struct Runner {
    a: Replica,
    b: Replica,
    exchange: Option<Exchange>,
    request: Option<Request>,
    echo: bool,
}

/// The storage key of script key `name`: partition `name` of table `t`, empty sort key. Its
/// leaf is the ring position of the partition, as in production.
fn storage_key(name: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    Ok(ItemKey::new("t", name.as_bytes(), b"")?.storage_key())
}

/// The script name of a storage key (its partition).
fn text(key: &[u8]) -> String {
    match ItemKey::from_storage_key(key) {
        Ok(item) => String::from_utf8_lossy(&item.partition).into_owned(),
        Err(_) => format!("{key:?}"),
    }
}

fn render_stats(s: &ExchangeStats) -> String {
    format!(
        "round_trips={} hashes_compared={} leaves_compared={} leaves_differing={} leaves_listed={} \
         leaves_without_key_difference={} digests_received={} keys_pushed={} keys_pulled={} more_remaining={}",
        s.round_trips,
        s.hashes_compared,
        s.leaves_compared,
        s.leaves_differing,
        s.leaves_listed,
        s.leaves_without_key_difference,
        s.digests_received,
        s.keys_pushed,
        s.keys_pulled,
        s.more_remaining
    )
}

impl Runner {
    fn replica(&mut self, name: &str) -> Result<&mut Replica, Box<dyn Error>> {
        match name {
            "a" => Ok(&mut self.a),
            "b" => Ok(&mut self.b),
            _ => Err(format!("no replica {name}: use a or b").into()),
        }
    }

    /// Prints the exchange's commands and carries them out: requests are remembered for the
    /// next `step`, pushes and pulls are merged at once.
    fn execute(
        &mut self,
        commands: Vec<antientropy::Command>,
        out: &mut String,
    ) -> Result<(), Box<dyn Error>> {
        if commands.is_empty() {
            writeln!(out, "no commands")?;
        }
        for command in commands {
            match command {
                antientropy::Command::RequestHashes { level, parents } => {
                    writeln!(out, "request hashes level={level} parents={parents:?}")?;
                    self.request = Some(Request::Hashes { level, parents });
                }
                antientropy::Command::RequestLeafKeys { leaves } => {
                    writeln!(out, "request leaf keys leaves={leaves:?}")?;
                    self.request = Some(Request::LeafKeys { leaves });
                }
                antientropy::Command::Push { keys } => {
                    for key in keys {
                        let state = self.a.items.get(&key).cloned().ok_or("pushing a key a lacks")?;
                        let merged = self.b.merge(&key, &state);
                        writeln!(out, "push {} {} → b = {}", text(&key), render(&state), render(&merged))?;
                    }
                }
                antientropy::Command::Pull { keys } => {
                    for key in keys {
                        let state = self.b.items.get(&key).cloned().ok_or("pulling a key b lacks")?;
                        let merged = self.a.merge(&key, &state);
                        writeln!(out, "pull {} {} → a = {}", text(&key), render(&state), render(&merged))?;
                    }
                }
                antientropy::Command::Done(stats) => {
                    writeln!(out, "done: {}", render_stats(&stats))?;
                    self.request = None;
                }
                antientropy::Command::Failed(error) => {
                    // The request stays, so a script can deliver its (now late) answer.
                    writeln!(out, "failed: {error}")?;
                }
            }
        }
        Ok(())
    }

    /// Answers the request in flight from b, optionally corrupted.
    fn step(
        &mut self,
        corruption: Option<&str>,
        level_override: Option<usize>,
    ) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let request = self.request.clone().ok_or("no request in flight")?;
        let exchange = self.exchange.as_mut().ok_or("no exchange: use start")?;
        let commands = match request {
            Request::Hashes { level, parents } => {
                let mut hashes = self.b.tree.children_batch(level, &parents)?;
                if corruption == Some("truncate") {
                    hashes.pop();
                }
                let level = level_override.unwrap_or(level);
                writeln!(out, "b: {} hashes for level {level}", hashes.len())?;
                exchange.on_hashes(level, &hashes, &mut self.a.tree)
            }
            Request::LeafKeys { leaves } => {
                let mut commands = Vec::new();
                for leaf in leaves {
                    let mut peer = self.b.leaf_items(leaf)?;
                    let local = self.a.leaf_items(leaf)?;
                    match corruption {
                        Some("foreign") => {
                            let key = (0..)
                                .filter_map(|i| storage_key(&format!("foreign{i}")).ok())
                                .find(|k| leaf_of(k) != leaf)
                                .ok_or("no foreign key")?;
                            peer.push((key, 0));
                        }
                        Some("duplicate") => {
                            let first = peer.first().cloned().ok_or("nothing to duplicate")?;
                            peer.push(first);
                        }
                        _ => {}
                    }
                    let keys = |items: &[(Vec<u8>, u64)]| {
                        items.iter().map(|(k, _)| text(k)).collect::<Vec<_>>().join(" ")
                    };
                    writeln!(out, "leaf {leaf}: a has [{}], b has [{}]", keys(&local), keys(&peer))?;
                    commands.extend(exchange.on_leaf_keys(leaf, peer, local));
                }
                commands
            }
        };
        self.execute(commands, &mut out)?;
        Ok(out)
    }

    fn diff(&mut self) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        let keys: BTreeSet<&Vec<u8>> = self.a.items.keys().chain(self.b.items.keys()).collect();
        for key in keys {
            let (ours, theirs) = (self.a.items.get(key), self.b.items.get(key));
            if ours != theirs {
                let show = |s: Option<&State>| s.map_or("absent".to_owned(), render);
                writeln!(out, "{}: a={} b={}", text(key), show(ours), show(theirs))?;
            }
        }
        let equal = self.a.tree.root() == self.b.tree.root();
        if out.is_empty() {
            writeln!(out, "a and b agree on every item ({} in all)", self.a.items.len())?;
        }
        writeln!(out, "roots {}", if equal { "equal" } else { "differ" })?;
        Ok(out)
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let mut out = String::new();
        match command.name.as_str() {
            "put" => {
                let name = args.next_pos().ok_or("replica not given")?;
                let key = storage_key(args.next_pos().ok_or("key not given")?)?;
                let values: State = std::iter::from_fn(|| args.next_pos()).map(str::to_owned).collect();
                args.reject_next()?;
                let merged = self.replica(name)?.merge(&key, &values);
                writeln!(out, "{name}: {} = {} (leaf {})", text(&key), render(&merged), leaf_of(&key))?;
            }
            "remove" => {
                let name = args.next_pos().ok_or("replica not given")?;
                let key = storage_key(args.next_pos().ok_or("key not given")?)?;
                args.reject_next()?;
                let removed = self.replica(name)?.remove(&key);
                writeln!(out, "{name}: {} {}", text(&key), if removed { "removed" } else { "absent" })?;
            }
            "start" => {
                let defaults = ExchangeLimits::default();
                let deadline_ms: u64 = args.take_key("deadline").map_or(Ok(1000), str::parse)?;
                let leaves_max = args.take_key("leaves").map_or(Ok(defaults.leaves_max), str::parse)?;
                let keys_max = args.take_key("keys").map_or(Ok(defaults.keys_max), str::parse)?;
                args.reject_next()?;
                let limits = ExchangeLimits { leaves_max, keys_max };
                let (exchange, commands) = Exchange::start(1, "b", limits, deadline_ms);
                self.exchange = Some(exchange);
                self.execute(commands, &mut out)?;
            }
            "step" => {
                let corruption = args.next_pos();
                let level = args.take_key("level").map(str::parse).transpose()?;
                args.reject_next()?;
                out = self.step(corruption, level)?;
            }
            "run" => {
                args.reject_next()?;
                for _ in 0..10 {
                    let finished = self.exchange.as_ref().is_none_or(Exchange::is_finished);
                    if self.request.is_none() || finished {
                        break;
                    }
                    out.push_str(&self.step(None, None)?);
                }
            }
            "fail" => {
                let message = args.next_pos().ok_or("message not given")?.to_owned();
                args.reject_next()?;
                let exchange = self.exchange.as_mut().ok_or("no exchange: use start")?;
                let commands = exchange.on_error(message);
                self.execute(commands, &mut out)?;
            }
            "tick" => {
                let now_ms: u64 = args.next_pos().ok_or("time not given")?.parse()?;
                args.reject_next()?;
                let exchange = self.exchange.as_mut().ok_or("no exchange: use start")?;
                let commands = exchange.tick(now_ms);
                self.execute(commands, &mut out)?;
            }
            "diff" => {
                args.reject_next()?;
                out = self.diff()?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(support::echo(self.echo, command, out)?)
    }

    fn start_block(&mut self, block: &goldenscript::Block) -> Result<String, Box<dyn Error>> {
        self.echo = support::echo_block(block);
        Ok(String::new())
    }
}

const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/antientropy");

scripts!(
    Runner, SCRIPTS_DIR;
    /// Proves identical replicas finish after one round trip and an empty pair likewise.
    identical_replicas,
    /// Proves a single differing key is found level by level in DEPTH + 1 round trips and repaired both ways.
    one_key_differs,
    /// Proves keys only at a are pushed, only at b pulled, and differing ones both, converging both replicas.
    divergent_both_sides,
    /// Proves a write landing on a mid-exchange is either repaired or missed, and a second exchange converges.
    concurrent_write,
    /// Proves leaf and key bounds cut an exchange short with more_remaining, and repeated exchanges converge.
    limits_more_remaining,
    /// Proves bad peer answers fail the exchange with a typed error, and later answers are ignored.
    bad_peer_input,
    /// Proves the deadline and transport errors fail an exchange, and late answers are ignored.
    timeout_and_errors,
    /// Proves a key removed outright (not tombstoned) on one replica is pulled back from the other.
    removal_is_not_a_delete,
);
