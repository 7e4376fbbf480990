//! Placement: consistent hashing with virtual nodes and zone-aware preference lists.
//!
//! Every member owns [`VNODES_PER_NODE_DEFAULT`] tokens, pseudo-random points on the 2^64 hash
//! circle (`xxh3(member id, vnode index)`). A key's placement hash falls into the arc that ends at
//! the first token clockwise of it; that token's owner is the key's *primary*. The *preference
//! list* is the primary followed by the next distinct members clockwise, chosen so the replicas
//! land in as many distinct zones as possible:
//!
//! ```text
//!   hash(key)
//!     │   walk clockwise from hash(key), one token at a time
//!     ▼
//!   ──┼─●───────────●───────────●───────────●───────────●─────────────►  (wraps from 2^64 to 0)
//!       t7:a(z1)    t8:b(z1)    t9:c(z2)    t10:a(z1)   t11:d(z3)
//!       take        skip        take        -           take
//!       z1 is new   z1 used     z2 is new   a seen      z3 is new
//!
//!   preference_list(hash, 3) = [a, c, d]      primary(hash) = a, the owner of t7
//!   preference_list(hash, 4) = [a, c, d, b]   every zone is used, so skipped b fills slot 4
//! ```
//!
//! The rule, for `n` replicas: walk clockwise over distinct members; take a member only if its
//! zone is not used yet, until every zone is used; then fill the remaining slots with the skipped
//! members, in ring order. The list for `n` is therefore always a prefix of the list for `n + 1`,
//! which is what lets [`Ring`] precompute one list per token and answer lookups with a binary
//! search.
//!
//! The ring is immutable and built from the static member list. It is a pure function of the
//! *set* of members: every node computes the same ring from the same configuration, whatever
//! order the configuration lists them in.
//!
//! ## Load balance, and what zones cost
//!
//! With equal zones, virtual nodes spread both primary ownership and replica load evenly (see the
//! tests `balance_with_default_vnodes` and `equal_zones_balance_replicas`). With *unequal* zones,
//! replica load is unequal by construction, and no choice of tokens can fix it: if every key must
//! have a replica in every zone (`n >= zones`), a zone's replicas together hold a copy of the whole
//! key space, so a member in a small zone carries more. With 5 nodes in 3 zones (2 + 2 + 1) and
//! `n = 3`, the lone node of the third zone holds a replica of *every* key (ownership 1.0), while
//! the four others hold about half each. Operators should size zones equally; QuorumDB does not
//! trade zone spread for balance.
//!
//! Non-goals: the ring does not support membership changes (no token handoff, no rebalancing
//! plan); a changed member list builds a new ring and data moves by anti-entropy.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use crate::limits::REPLICATION_FACTOR_MAX;

/// Virtual nodes per member. The balance property we promise (with 5 members, no member is
/// primary for more than 1.25 × its fair share of the hash space) must hold for *any* member ids,
/// so the value is chosen from the tail of the distribution, not the mean. Measured over 20 000
/// random 5-member id sets (`max/fair` = most-loaded member's ownership ÷ 0.2; `cargo run --release -p quorumdb-core --example measure_vnode_balance` reproduces this; build time is release mode and includes one
/// `ownership()` call):
///
/// ```text
///   vnodes   mean max/fair   p99     p99.99   worst    sets over 1.25   build time
///      128          1.105   1.240     1.341   1.345      133 / 20 000      0.06 ms
///      256          1.074   1.166     1.237   1.258        1 / 20 000      0.12 ms
///      512          1.052   1.116     1.161   1.171        0 / 20 000      0.24 ms
///     1024          1.037   1.082     1.117   1.118        0 / 20 000      0.47 ms
///     2048          1.026   1.057     1.080   1.083        0 / 20 000      1.03 ms
/// ```
///
/// 256 is not enough: about one id set in 20 000 breaks the bound (a flaky property test, and an
/// unlucky production cluster). 512 holds in every sample but with the worst case only 0.08 below
/// the bound; 1024 keeps the worst case at 1.12, about halfway between fair share and the bound,
/// for 0.5 ms of build time. Going further buys little: the spread shrinks with the square root of the
/// token count while memory and build time grow linearly. Larger rings stay cheap too: 30 members
/// in 3 zones build in 4 ms, [`MEMBERS_LEN_MAX`] members in 60 ms (once, at startup).
pub const VNODES_PER_NODE_DEFAULT: usize = 1024;

/// Most virtual nodes per member a ring accepts. Tokens are kept in memory with a precomputed
/// preference list each; beyond this the memory buys no measurable balance.
pub const VNODES_PER_NODE_MAX: usize = 4096;

/// Most members a ring accepts. QuorumDB's membership is a static list in configuration; tens of
/// nodes is the target, and this bound keeps the ring (members × vnodes tokens, each with a
/// precomputed list) within a few tens of megabytes.
pub const MEMBERS_LEN_MAX: usize = 256;

/// Longest member id or zone name. Both appear in logs, error messages and metric labels.
pub const MEMBER_NAME_BYTES_MAX: usize = 64;

// Member indexes are stored as u32 to halve the size of the precomputed preference lists.
const _: () = assert!(MEMBERS_LEN_MAX <= u32::MAX as usize);
// The token index arithmetic in `Ring::new` multiplies these; keep it far from overflow.
const _: () = assert!(MEMBERS_LEN_MAX * VNODES_PER_NODE_MAX <= u32::MAX as usize);
const _: () = assert!(VNODES_PER_NODE_DEFAULT <= VNODES_PER_NODE_MAX);

/// One node of the cluster, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable node id; tokens derive from it, so renaming a node moves its data.
    pub id: String,
    /// Failure domain (rack, availability zone). Replicas of one key spread over zones.
    pub zone: String,
}

impl Member {
    /// Convenience constructor.
    pub fn new(id: impl Into<String>, zone: impl Into<String>) -> Self {
        Member { id: id.into(), zone: zone.into() }
    }
}

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    #[error("the ring needs at least one member")]
    Empty,
    #[error("duplicate member id {0:?}")]
    DuplicateId(String),
    #[error("bad member: {0}")]
    BadMember(String),
    #[error("vnodes per node must be between 1 and {max}, got {got}")]
    BadVnodes { got: usize, max: usize },
    #[error("the ring accepts at most {max} members, got {got}")]
    TooManyMembers { got: usize, max: usize },
}

/// An immutable consistent-hash ring. See the module documentation.
#[derive(Clone)]
pub struct Ring {
    /// Members in the order they were given; all indexes below refer to this order.
    members: Vec<Member>,
    /// Token positions, sorted ascending. `tokens[i]` closes the arc `(tokens[i-1], tokens[i]]`
    /// (wrapping around 2^64 for `i = 0`).
    tokens: Vec<u64>,
    /// `owners[i]` is the member index owning `tokens[i]`.
    owners: Vec<u32>,
    /// Zone number of each member. Only equality matters; numbers follow zone-name order.
    zone_of: Vec<u32>,
    /// Number of distinct zones.
    zones_len: usize,
    /// Precomputed preference lists: for token `i`, entries `i * stride .. (i + 1) * stride`.
    /// A key in the arc closed by token `i` gets exactly this list (or a prefix of it).
    prefs: Vec<u32>,
    /// Length of each precomputed list: `min(members, REPLICATION_FACTOR_MAX)`. Longer lists,
    /// which no table can ask for, are computed by walking the ring on demand.
    stride: usize,
}

impl fmt::Debug for Ring {
    // The token and preference tables are large and unreadable; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("zones_len", &self.zones_len)
            .field("tokens_len", &self.tokens.len())
            .finish()
    }
}

impl Ring {
    /// Builds the ring. The result depends only on the set of members (not their order) and on
    /// `vnodes_per_node`.
    pub fn new(members: Vec<Member>, vnodes_per_node: usize) -> Result<Ring, RingError> {
        if members.is_empty() {
            return Err(RingError::Empty);
        }
        if members.len() > MEMBERS_LEN_MAX {
            return Err(RingError::TooManyMembers { got: members.len(), max: MEMBERS_LEN_MAX });
        }
        if vnodes_per_node == 0 || vnodes_per_node > VNODES_PER_NODE_MAX {
            return Err(RingError::BadVnodes { got: vnodes_per_node, max: VNODES_PER_NODE_MAX });
        }
        let mut ids = HashSet::with_capacity(members.len());
        for member in &members {
            validate_name("id", &member.id)?;
            validate_name("zone", &member.zone)?;
            if !ids.insert(member.id.as_str()) {
                return Err(RingError::DuplicateId(member.id.clone()));
            }
        }

        // Number zones by name so the numbering is independent of member order.
        let mut zone_numbers: BTreeMap<&str, u32> = BTreeMap::new();
        for member in &members {
            zone_numbers.insert(member.zone.as_str(), 0);
        }
        for (number, slot) in (0u32..).zip(zone_numbers.values_mut()) {
            *slot = number;
        }
        let zone_of: Vec<u32> =
            members.iter().map(|m| zone_numbers.get(m.zone.as_str()).copied().unwrap_or(0)).collect();
        let zones_len = zone_numbers.len();

        // Tokens. Two tokens can collide (astronomically unlikely with 64-bit hashes, but cheap to
        // make harmless): ties are broken by member id, then vnode index, never by the position
        // in the input list, so any order of the same members sorts identically.
        let mut placed: Vec<(u64, &str, u32, u32)> = Vec::with_capacity(members.len() * vnodes_per_node);
        for (index, member) in (0u32..).zip(&members) {
            for vnode in 0..vnodes_per_node as u32 {
                placed.push((token_of(&member.id, vnode), member.id.as_str(), vnode, index));
            }
        }
        placed.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let tokens = placed.iter().map(|p| p.0).collect();
        let owners = placed.iter().map(|p| p.3).collect();

        let stride = members.len().min(REPLICATION_FACTOR_MAX);
        let mut ring = Ring { members, tokens, owners, zone_of, zones_len, prefs: Vec::new(), stride };
        let mut walker = Walker::new(ring.members.len(), ring.zones_len);
        let mut prefs = Vec::with_capacity(ring.tokens.len() * stride);
        for start in 0..ring.tokens.len() {
            let list = walker.walk(&ring, start, stride);
            debug_assert_eq!(list.len(), stride);
            prefs.extend_from_slice(list);
        }
        ring.prefs = prefs;
        Ok(ring)
    }

    /// The members, in the order given to [`Ring::new`].
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Index of the member with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The replicas of a key with this placement hash: `min(n, members)` distinct member indexes,
    /// primary first, spread over as many zones as possible (see the module documentation).
    pub fn preference_list(&self, hash: u64, n: usize) -> Vec<usize> {
        let len = n.min(self.members.len());
        let token = self.token_index(hash);
        if len <= self.stride {
            let start = token * self.stride;
            let list = self.prefs.get(start..start + len).unwrap_or_default();
            list.iter().map(|&m| m as usize).collect()
        } else {
            let mut walker = Walker::new(self.members.len(), self.zones_len);
            walker.walk(self, token, len).iter().map(|&m| m as usize).collect()
        }
    }

    /// The primary replica: the owner of the first token clockwise of `hash` (a token equal to
    /// `hash` counts).
    pub fn primary(&self, hash: u64) -> usize {
        self.owners.get(self.token_index(hash)).map_or(0, |&m| m as usize)
    }

    /// For each member (in member order), the fraction of the hash space for which it is the
    /// primary. Sums to 1.0 up to floating-point rounding.
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u128; self.members.len()];
        for (token, &owner) in self.owners.iter().enumerate() {
            if let Some(slot) = owned.get_mut(owner as usize) {
                *slot += self.arc_len(token);
            }
        }
        owned.into_iter().map(fraction_of_space).collect()
    }

    /// For each member (in member order), the fraction of the hash space of which it holds a
    /// replica when keys have `n` replicas. Sums to `min(n, members)` up to rounding.
    pub fn replica_ownership(&self, n: usize) -> Vec<f64> {
        let mut held = vec![0u128; self.members.len()];
        for token in 0..self.tokens.len() {
            // Every hash in the arc closed by `token` gets that token's preference list.
            let Some(&first) = self.tokens.get(token) else { continue };
            for member in self.preference_list(first, n) {
                if let Some(slot) = held.get_mut(member) {
                    *slot += self.arc_len(token);
                }
            }
        }
        held.into_iter().map(fraction_of_space).collect()
    }

    /// Index of the first token clockwise of `hash` (inclusive), wrapping to 0 past the last.
    fn token_index(&self, hash: u64) -> usize {
        let i = self.tokens.partition_point(|&t| t < hash);
        if i == self.tokens.len() {
            0
        } else {
            i
        }
    }

    /// Length of the arc closed by `tokens[token]`, in hash units. Computed in u128 so that a
    /// ring with a single token owns exactly 2^64 and the arcs always sum to exactly 2^64.
    fn arc_len(&self, token: usize) -> u128 {
        let position = |i: usize| self.tokens.get(i).copied().map_or(0, u128::from);
        match token.checked_sub(1) {
            Some(previous) => position(token) - position(previous),
            // The first arc wraps: it starts at the last token, one full turn (2^64) back.
            None => position(0) + (1u128 << 64) - position(self.tokens.len().saturating_sub(1)),
        }
    }
}

/// Position of one virtual node. The vnode index is appended as 4 fixed bytes, so the encoding is
/// unambiguous for any id. xxh3 is stable across platforms and releases, which placement needs.
fn token_of(id: &str, vnode: u32) -> u64 {
    let mut buf = Vec::with_capacity(id.len() + 4);
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(&vnode.to_be_bytes());
    xxh3_64(&buf)
}

/// Member ids and zones: 1..=MEMBER_NAME_BYTES_MAX bytes of `[A-Za-z0-9_.:-]`, so they are safe
/// in logs, metric labels, and comma-separated lists.
fn validate_name(what: &str, name: &str) -> Result<(), RingError> {
    let ok = !name.is_empty()
        && name.len() <= MEMBER_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RingError::BadMember(format!(
            "{what} must be 1..={MEMBER_NAME_BYTES_MAX} bytes of [A-Za-z0-9_.:-], got {:?}",
            name.chars().take(MEMBER_NAME_BYTES_MAX).collect::<String>()
        )))
    }
}

fn fraction_of_space(units: u128) -> f64 {
    units as f64 / (1u128 << 64) as f64
}

/// Scratch state for computing preference lists, reused across tokens so that building a ring
/// does not allocate per token. "Seen" marks are generation-stamped: bumping `generation` clears
/// them all in O(1).
struct Walker {
    generation: u32,
    member_seen: Vec<u32>,
    zone_used: Vec<u32>,
    chosen: Vec<u32>,
    skipped: Vec<u32>,
}

impl Walker {
    fn new(members_len: usize, zones_len: usize) -> Self {
        Walker {
            generation: 0,
            member_seen: vec![0; members_len],
            zone_used: vec![0; zones_len],
            chosen: Vec::with_capacity(members_len),
            skipped: Vec::with_capacity(members_len),
        }
    }

    /// The first `len` entries of the preference list for keys in the arc closed by token
    /// `start`. `len` must not exceed the member count.
    fn walk(&mut self, ring: &Ring, start: usize, len: usize) -> &[u32] {
        debug_assert!(len <= ring.members.len());
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: stale stamps could now collide with the new generation; clear them.
            self.member_seen.fill(0);
            self.zone_used.fill(0);
            self.generation = 1;
        }
        self.chosen.clear();
        self.skipped.clear();
        let mut zones_used = 0;
        let tokens_len = ring.owners.len();
        // Bounded by one full turn of the ring: by then every member has been seen.
        for step in 0..tokens_len {
            if self.chosen.len() == len
                || (zones_used == ring.zones_len && self.chosen.len() + self.skipped.len() >= len)
            {
                break;
            }
            let Some(&member) = ring.owners.get((start + step) % tokens_len) else { break };
            let m = member as usize;
            let Some(seen) = self.member_seen.get_mut(m) else { break };
            if *seen == self.generation {
                continue;
            }
            *seen = self.generation;
            let zone = ring.zone_of.get(m).copied().unwrap_or(0) as usize;
            match self.zone_used.get_mut(zone) {
                // A zone not used yet: this member is the next choice.
                Some(used) if *used != self.generation => {
                    *used = self.generation;
                    zones_used += 1;
                    self.chosen.push(member);
                }
                // Zone already used: keep the member, in ring order, for filling in later. Once all
                // zones are used, every further member lands here too, still in ring order.
                _ => self.skipped.push(member),
            }
        }
        self.chosen.extend_from_slice(&self.skipped);
        self.chosen.truncate(len);
        &self.chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Reference model of the placement rule, written differently from `Walker`: list the
    /// distinct members clockwise from `hash`, then put the first member of each zone first.
    fn reference_list(ring: &Ring, hash: u64, n: usize) -> Vec<usize> {
        let start = ring.token_index(hash);
        let mut clockwise: Vec<usize> = Vec::new();
        for step in 0..ring.tokens.len() {
            let m = ring.owners[(start + step) % ring.tokens.len()] as usize;
            if !clockwise.contains(&m) {
                clockwise.push(m);
            }
        }
        let mut zones_seen = BTreeSet::new();
        let (firsts, rest): (Vec<usize>, Vec<usize>) =
            clockwise.iter().partition(|&&m| zones_seen.insert(ring.members[m].zone.clone()));
        let mut list: Vec<usize> = firsts.into_iter().chain(rest).collect();
        list.truncate(n.min(ring.members.len()));
        list
    }

    /// Members with the given ids, zone `z{i % zones}`.
    fn members_in_zones(ids: &[String], zones: &[usize]) -> Vec<Member> {
        ids.iter().zip(zones).map(|(id, z)| Member::new(id.clone(), format!("z{z}"))).collect()
    }

    fn distinct_zones(ring: &Ring, list: &[usize]) -> usize {
        list.iter().map(|&m| ring.members()[m].zone.as_str()).collect::<BTreeSet<_>>().len()
    }

    /// Strategy: 1..=9 members with distinct random ids, each in one of 1..=4 zones.
    fn member_lists() -> impl Strategy<Value = Vec<Member>> {
        (prop::collection::btree_set("[a-z0-9]{1,8}", 1..=9), 1usize..=4)
            .prop_flat_map(|(ids, zones)| {
                let ids: Vec<String> = ids.into_iter().collect();
                let len = ids.len();
                (Just(ids), prop::collection::vec(0..zones, len))
            })
            .prop_map(|(ids, zones)| members_in_zones(&ids, &zones))
            .prop_shuffle()
    }

    proptest! {
        /// Proves preference lists hold min(n, members) distinct members over the maximal number
        /// of distinct zones, start at the primary, match the reference model, and nest (n ⊂ n+1).
        #[test]
        fn zone_spread_is_maximal(
            members in member_lists(),
            n in 1usize..=9,
            hashes in prop::collection::vec(any::<u64>(), 8),
        ) {
            // Few vnodes make long same-zone runs common, which is what the rule must handle.
            let ring = Ring::new(members.clone(), 8).unwrap();
            let zones_len = members.iter().map(|m| m.zone.as_str()).collect::<BTreeSet<_>>().len();
            for hash in hashes {
                let list = ring.preference_list(hash, n);
                let expected_len = n.min(members.len());
                prop_assert_eq!(list.len(), expected_len);
                prop_assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), expected_len, "distinct");
                prop_assert_eq!(distinct_zones(&ring, &list), n.min(zones_len), "zones maximal");
                prop_assert_eq!(list[0], ring.primary(hash));
                prop_assert_eq!(&list, &reference_list(&ring, hash, n));
                let longer = ring.preference_list(hash, n + 1);
                prop_assert_eq!(&longer[..list.len()], &list[..], "prefix");
            }
        }

        /// Proves that with 5 members and the default vnodes, whatever their ids, no member is
        /// primary for more than 1.25 × its fair share of the hash space.
        #[test]
        fn balance_with_default_vnodes(ids in prop::collection::btree_set("[a-z0-9-]{1,12}", 5)) {
            let members: Vec<Member> = ids.into_iter().map(|id| Member::new(id, "z")).collect();
            let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).unwrap();
            let ownership = ring.ownership();
            let max = ownership.iter().copied().fold(0.0, f64::max);
            prop_assert!(max <= 1.25 * 0.2, "max ownership {max} in {ownership:?}");
        }

        /// Proves the ring depends only on the set of members: a shuffled member list yields the
        /// same preference lists (compared by id) and the same ownership per id.
        #[test]
        fn member_order_does_not_matter(
            (members, shuffled) in
                member_lists().prop_flat_map(|m| (Just(m.clone()), Just(m).prop_shuffle())),
            n in 1usize..=9,
            hashes in prop::collection::vec(any::<u64>(), 8),
        ) {
            let a = Ring::new(members, 16).unwrap();
            let b = Ring::new(shuffled, 16).unwrap();
            let ids = |ring: &Ring, list: Vec<usize>| -> Vec<String> {
                list.into_iter().map(|m| ring.members()[m].id.clone()).collect()
            };
            for hash in hashes {
                prop_assert_eq!(ids(&a, a.preference_list(hash, n)), ids(&b, b.preference_list(hash, n)));
            }
            let by_id = |ring: &Ring| -> Vec<(String, f64)> {
                let ids = ring.members().iter().map(|m| m.id.clone());
                let mut v: Vec<_> = ids.zip(ring.ownership()).collect();
                v.sort_by(|x, y| x.0.cmp(&y.0));
                v
            };
            prop_assert_eq!(by_id(&a), by_id(&b));
        }

        /// Proves ownership sums to 1 and replica ownership to min(n, members).
        #[test]
        fn ownership_sums(members in member_lists(), n in 1usize..=9) {
            let ring = Ring::new(members.clone(), 8).unwrap();
            let total: f64 = ring.ownership().iter().sum();
            prop_assert!((total - 1.0).abs() < 1e-9, "{total}");
            let total: f64 = ring.replica_ownership(n).iter().sum();
            let expected = n.min(members.len()) as f64;
            prop_assert!((total - expected).abs() < 1e-9, "{total} vs {expected}");
        }
    }

    /// Proves that with equal zones (3 zones × 2 nodes) and n = 3, replica load is balanced: each
    /// key has one replica per zone, and each node holds about half of its zone's keys.
    #[test]
    fn equal_zones_balance_replicas() {
        let members = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .zip(["z1", "z1", "z2", "z2", "z3", "z3"])
            .map(|(id, zone)| Member::new(*id, zone))
            .collect();
        let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).unwrap();
        let load = ring.replica_ownership(3);
        let mean = 3.0 / 6.0;
        for (member, share) in ring.members().iter().zip(&load) {
            assert!(*share <= 1.25 * mean, "{} holds {share}, mean {mean}: {load:?}", member.id);
        }
    }

    /// Documents an inherent cost of zone-aware placement: with unequal zones (2 + 2 + 1 nodes)
    /// and n = 3, the lone node of the small zone holds a replica of every key.
    #[test]
    fn unequal_zones_concentrate_replicas() {
        let members = ["a", "b", "c", "d", "e"]
            .iter()
            .zip(["z1", "z1", "z2", "z2", "z3"])
            .map(|(id, zone)| Member::new(*id, zone))
            .collect();
        let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).unwrap();
        let load = ring.replica_ownership(3);
        let lone = ring.index_of("e").unwrap();
        assert!((load[lone] - 1.0).abs() < 1e-12, "{load:?}");
        for (i, share) in load.iter().enumerate().filter(|(i, _)| *i != lone) {
            assert!((share - 0.5).abs() < 0.1, "member {i} holds {share}: {load:?}");
        }
    }

    /// Proves the primary is the owner of the first token at or after the hash, wrapping past
    /// the last token to the first.
    #[test]
    fn primary_is_first_token_clockwise() {
        let members = vec![Member::new("a", "z"), Member::new("b", "z"), Member::new("c", "z")];
        let ring = Ring::new(members, 4).unwrap();
        for (i, &token) in ring.tokens.iter().enumerate() {
            assert_eq!(ring.primary(token), ring.owners[i] as usize, "a token is owned by its owner");
            if token > 0 && (i == 0 || ring.tokens[i - 1] != token - 1) {
                assert_eq!(ring.primary(token - 1), ring.owners[i] as usize, "just before a token");
            }
        }
        let last = *ring.tokens.last().unwrap();
        if last < u64::MAX {
            assert_eq!(ring.primary(last + 1), ring.owners[0] as usize, "wraps around");
        }
        assert_eq!(ring.primary(u64::MAX), ring.preference_list(u64::MAX, 1)[0]);
    }

    /// Proves small rings behave: one member gets everything, and n larger than the member count
    /// yields every member once.
    #[test]
    fn small_rings() {
        let ring = Ring::new(vec![Member::new("solo", "z")], 1).unwrap();
        assert_eq!(ring.ownership(), vec![1.0]);
        assert_eq!(ring.preference_list(42, 3), vec![0]);
        assert_eq!(ring.replica_ownership(3), vec![1.0]);
        let ring = Ring::new(vec![Member::new("a", "z1"), Member::new("b", "z1")], 2).unwrap();
        let list = ring.preference_list(7, 5);
        assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), 2);
        assert!(ring.preference_list(7, 0).is_empty());
        assert_eq!(ring.index_of("b"), Some(1));
        assert_eq!(ring.index_of("x"), None);
    }

    /// Proves bad configurations are refused with a typed error.
    #[test]
    fn bad_configurations_refused() {
        assert_eq!(Ring::new(vec![], 8).unwrap_err(), RingError::Empty);
        let dup = vec![Member::new("a", "z1"), Member::new("a", "z2")];
        assert_eq!(Ring::new(dup, 8).unwrap_err(), RingError::DuplicateId("a".into()));
        assert!(matches!(Ring::new(vec![Member::new("", "z")], 8), Err(RingError::BadMember(_))));
        assert!(matches!(Ring::new(vec![Member::new("a", "")], 8), Err(RingError::BadMember(_))));
        assert!(matches!(Ring::new(vec![Member::new("a b", "z")], 8), Err(RingError::BadMember(_))));
        let long = "x".repeat(MEMBER_NAME_BYTES_MAX + 1);
        assert!(matches!(Ring::new(vec![Member::new(long, "z")], 8), Err(RingError::BadMember(_))));
        let one = || vec![Member::new("a", "z")];
        assert!(matches!(Ring::new(one(), 0), Err(RingError::BadVnodes { .. })));
        assert!(matches!(Ring::new(one(), VNODES_PER_NODE_MAX + 1), Err(RingError::BadVnodes { .. })));
        let many = (0..=MEMBERS_LEN_MAX).map(|i| Member::new(format!("n{i}"), "z")).collect();
        assert!(matches!(Ring::new(many, 1), Err(RingError::TooManyMembers { .. })));
    }

    /// Pins the token function: placement must never change between releases, or every node's
    /// data would silently move. Changing this value is a data-format change.
    #[test]
    fn token_function_is_stable() {
        assert_eq!(token_of("n1", 0), xxh3_64(b"n1\0\0\0\0"));
        assert_ne!(token_of("n1", 0), token_of("n1", 1));
    }
}
