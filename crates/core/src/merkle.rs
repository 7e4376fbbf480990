//! An incrementally maintained Merkle tree over a fixed number of hash buckets, the summary two
//! replicas compare during anti-entropy (see [`crate::antientropy`]).
//!
//! Every item (storage key + encoded state) has a 64-bit [`item_digest`] and falls into one of
//! [`LEAVES`] leaf buckets by its ring position: the top 12 bits of its storage key, which leads
//! with the item's placement hash ([`leaf_of`]). A leaf's hash is the XOR of the digests of its
//! items; an inner node's hash is the xxh3 of its [`FANOUT`] children's hashes. Two replicas
//! holding the same items have the same tree, and a subtree whose hashes agree needs no further
//! look.
//!
//! ```text
//!   level 0                         root = xxh3(c0 | c1 | … | c15)
//!                        ┌─────────────┬──┴─────────── … ────────┐
//!   level 1             n0            n1          …             n15        16 nodes
//!                   ┌───┴── … ──┐
//!   level 2        n0    …     n15                                         256 nodes
//!               ┌──┴─ … ─┐
//!   level 3    L0   …   L15   …   …   …   …   …   …   …   …   L4095        4096 leaves
//!              │
//!              leaf hash = d(k1) ⊕ d(k7) ⊕ …   over the items whose leaf_of(key) is 0
//! ```
//!
//! ## Why the leaves are XOR sums
//!
//! A write changes one item from digest `old` to digest `new` (either may be absent). Because XOR
//! is its own inverse, the leaf becomes `leaf ⊕ old ⊕ new` in O(1), without reading the other
//! items of the bucket from storage — which is what lets the node keep the tree in sync on every
//! put and merge for the cost of two hashes. Inner nodes are then marked dirty and recomputed
//! lazily, only when an exchange reads them, so a burst of writes costs one recomputation of
//! each touched inner node, not one per write. Inner nodes hash their children (rather than XOR
//! them) so that equal differences in two sibling subtrees cannot cancel out.
//!
//! ## Why leaves follow the ring
//!
//! Since storage keys lead with the placement hash, a leaf is one contiguous range of storage
//! keys ([`leaf_key_range`]): a replica lists a leaf with one range scan of its data, and needs
//! no secondary leaf → keys index that every write would have to maintain (and that could drift
//! from the data). The price is granularity. Each replica set has its own tree, and its items
//! occupy only the leaves overlapping its ring arcs; and all items of one partition share a leaf,
//! so a very wide partition makes one wide leaf. Hashing the whole storage key would spread items
//! evenly over all leaves, at the cost of that index.
//!
//! ## Why 16 × 16 × 16 = 4096 leaves
//!
//! Measured with 1 000 000 single-item partitions, replication factor 3 and the default virtual
//! nodes (`cargo run --release -p quorumdb-core --example measure_leaf_occupancy` reproduces it):
//!
//! ```text
//!   members/zones   items per replica set   leaves it uses   items per used leaf (mean / max)
//!        5 / 5             ~100 000            ~620 of 4096             ~165 / ~290
//!        5 / 3             ~250 000           ~1480 of 4096             ~170 / ~300
//!        9 / 3              ~37 000            ~350 of 4096             ~105 / ~290
//! ```
//!
//! - A one-item difference costs three rounds of 16 hashes (384 bytes) and one leaf listing of
//!   ~165 `(storage key, digest)` pairs, ~10 KiB. Ten times the items make it ~100 KiB, still
//!   cheap for a background task.
//! - Memory is 4096 × 8 bytes of leaves plus 273 inner hashes and their dirty flags, about
//!   35 KiB per tree; a node keeps one tree per replica set it belongs to, a few dozen at most.
//! - Depth 3 means an exchange takes 4 round trips (three levels of hashes, then the keys), and
//!   a level-2 request carries at most 256 parents (32 KiB of hashes in reply).
//!
//! One more level (65 536 leaves) would cut listings ~16-fold for 16 times the memory
//! (~550 KiB per tree) and a fifth round trip; worth it only at far more items per replica set.
//!
//! ## Protocol stability
//!
//! [`FANOUT`], [`DEPTH`], the leaf function, the digest seed and the hash functions are part of
//! the peer protocol: two nodes compare trees built by possibly different binaries, so changing
//! any of them (or the storage key layout) needs a protocol version bump. The digest covers the
//! *encoded* state, so it relies on `ItemState::encode` being canonical (equal states encode to
//! equal bytes), which it is: contexts and siblings are encoded in sorted order.
//!
//! Non-goals: the tree does not list the keys of a leaf. The node answers "which items are in
//! leaf L" by scanning [`leaf_key_range`] in its own storage; the tree never touches storage.

use std::fmt;

use thiserror::Error;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Children per inner node. A power of two, so each level's position is a bit field of the key.
pub const FANOUT: usize = 16;

/// Levels below the root. Leaves live at level `DEPTH`, the root at level 0.
pub const DEPTH: usize = 3;

/// Number of leaf buckets: `FANOUT^DEPTH`. See the module docs for why 4096.
pub const LEAVES: usize = level_width(DEPTH);

/// Nodes at one level of the tree: `FANOUT^level`.
pub const fn level_width(level: usize) -> usize {
    let mut width = 1;
    let mut i = 0;
    while i < level {
        width *= FANOUT;
        i += 1;
    }
    width
}

/// Index of the first node of `level` in the flat node array (levels are stored root first).
const fn level_offset(level: usize) -> usize {
    let mut offset = 0;
    let mut i = 0;
    while i < level {
        offset += level_width(i);
        i += 1;
    }
    offset
}

/// Inner nodes (levels `0..DEPTH`), each with a dirty flag.
const INNER_LEN: usize = level_offset(DEPTH);

/// All nodes, inner and leaves.
const NODES_LEN: usize = level_offset(DEPTH + 1);

/// Leading bits of a storage key that select its leaf.
const LEAF_BITS: u32 = LEAVES.trailing_zeros();

/// Bytes of a storage key that determine its leaf.
const LEAF_PREFIX_BYTES: usize = (LEAF_BITS as usize).div_ceil(8);

/// Seed of the item digest, so a digest is not the unseeded xxh3 used elsewhere of the same bytes.
const DIGEST_SEED: u64 = 0x6974_656d_5f71_6462; // "item_qdb"

const _: () = assert!(FANOUT.is_power_of_two() && FANOUT >= 2);
const _: () = assert!(DEPTH >= 1);
const _: () = assert!(LEAVES == 1 << LEAF_BITS);
const _: () = assert!(LEAF_BITS <= 32, "leaf index is taken from the top bits of a 64-bit prefix");
const _: () = assert!(NODES_LEN == INNER_LEN + LEAVES);

/// The digest of one item: xxh3 of the storage key's length, the key, and the encoded state.
/// The length prefix keeps `(key, state)` pairs from colliding by shifting bytes between them.
pub fn item_digest(storage_key: &[u8], encoded_state: &[u8]) -> u64 {
    let mut hasher = Xxh3::with_seed(DIGEST_SEED);
    hasher.update(&(storage_key.len() as u64).to_le_bytes());
    hasher.update(storage_key);
    hasher.update(encoded_state);
    hasher.digest()
}

/// The leaf bucket of an item: the top 12 bits of its storage key, read as a big-endian number
/// (keys shorter than 8 bytes are zero-padded). Storage keys lead with the item's placement hash
/// (see [`crate::key::ItemKey::storage_key`]), so this is the item's ring position, and each leaf
/// is one contiguous range of storage keys: [`leaf_key_range`].
pub fn leaf_of(storage_key: &[u8]) -> usize {
    let mut prefix = [0u8; 8];
    for (slot, byte) in prefix.iter_mut().zip(storage_key) {
        *slot = *byte;
    }
    (u64::from_be_bytes(prefix) >> (64 - LEAF_BITS)) as usize
}

/// The storage keys of `leaf`: every key `k` with `start <= k` and, if `end` is given,
/// `k < end`, byte-wise — exactly the keys with `leaf_of(k) == leaf`. A replica answers a leaf
/// listing with one range scan over these bounds (keeping the items of the replica set asked
/// about: a leaf can hold items of several replica sets).
pub fn leaf_key_range(leaf: usize) -> Result<(Vec<u8>, Option<Vec<u8>>), MerkleError> {
    if leaf >= LEAVES {
        return Err(MerkleError::NoSuchNode { level: DEPTH, index: leaf, width: LEAVES });
    }
    // The shortest byte string that is the big-endian prefix of the leaf's first position: trailing
    // zero bytes are dropped so that short keys (zero-padded by `leaf_of`) also sort inside.
    let bound = |leaf: usize| {
        let bytes = ((leaf as u64) << (64 - LEAF_BITS)).to_be_bytes();
        let mut out = bytes.get(..LEAF_PREFIX_BYTES).unwrap_or_default().to_vec();
        while out.last() == Some(&0) {
            out.pop();
        }
        out
    };
    let end = (leaf + 1 < LEAVES).then(|| bound(leaf + 1));
    Ok((bound(leaf), end))
}

/// The hash a leaf holding items with these digests has: their XOR. The node uses it to rebuild
/// a leaf from storage with [`MerkleTree::set_leaf`].
pub fn leaf_hash_of(digests: impl IntoIterator<Item = u64>) -> u64 {
    digests.into_iter().fold(0, |acc, digest| acc ^ digest)
}

/// Why a tree lookup was refused. Lookups come from peers, so bad indices are errors, not panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    #[error("no node {index} at level {level} (levels 0..{DEPTH} have children; level has {width} nodes)")]
    NoSuchNode { level: usize, index: usize, width: usize },
    #[error("{got} parents requested at level {level}, at most {max}")]
    TooManyParents { level: usize, got: usize, max: usize },
}

/// The hash tree of one replica set. See the module docs for the shape and the reasoning.
///
/// Levels are numbered from the root (level 0) to the leaves (level [`DEPTH`]). Node `i` of
/// level `l` has the children `i·FANOUT .. (i+1)·FANOUT` at level `l + 1`.
#[derive(Clone)]
pub struct MerkleTree {
    /// Every node's hash, root first, level by level, leaves last. Leaf hashes are always
    /// current; inner hashes are current unless their dirty flag is set.
    nodes: Vec<u64>,
    /// One flag per inner node: a leaf below it changed since its hash was last computed.
    dirty: Vec<bool>,
    /// Whether any flag in `dirty` is set, so reads of a clean tree skip the refresh scan.
    any_dirty: bool,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MerkleTree {
    /// Brief on purpose: 4369 hashes help nobody reading a test failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nonzero = self.leaves().iter().filter(|h| **h != 0).count();
        write!(f, "MerkleTree {{ leaves: {LEAVES}, nonzero leaves: {nonzero}, dirty: {} }}", self.any_dirty)
    }
}

impl MerkleTree {
    /// The tree of an empty replica set. Every empty tree has the same root.
    pub fn new() -> Self {
        let mut tree =
            MerkleTree { nodes: vec![0; NODES_LEN], dirty: vec![true; INNER_LEN], any_dirty: true };
        tree.refresh();
        tree
    }

    /// Builds a tree from every `(storage key, digest)` of a replica set, e.g. from a scan at
    /// startup. Equivalent to inserting them one by one with [`MerkleTree::update`].
    pub fn from_items<K: AsRef<[u8]>>(items: impl IntoIterator<Item = (K, u64)>) -> Self {
        let mut tree = MerkleTree::new();
        for (key, digest) in items {
            tree.update(key.as_ref(), None, Some(digest));
        }
        tree
    }

    /// Records that the item at `storage_key` changed from digest `old` to digest `new` (`None`:
    /// absent). O(1): the leaf is patched in place and its ancestors marked dirty.
    ///
    /// The caller must pass the digest the tree last saw for this key as `old`, so updates of one
    /// key must be serialised (the node does it under the per-key lock that serialises the
    /// storage write). A wrong `old` corrupts the leaf until it is rebuilt with
    /// [`MerkleTree::set_leaf`]; anti-entropy then finds that leaf different on every exchange
    /// but no key in it to repair (see `ExchangeStats::leaves_without_key_difference`).
    pub fn update(&mut self, storage_key: &[u8], old: Option<u64>, new: Option<u64>) {
        if old == new {
            return;
        }
        let delta = old.unwrap_or(0) ^ new.unwrap_or(0);
        self.patch_leaf(leaf_of(storage_key), delta);
    }

    /// Replaces the hash of `leaf`, e.g. with [`leaf_hash_of`] the digests found by scanning it.
    pub fn set_leaf(&mut self, leaf: usize, hash: u64) -> Result<(), MerkleError> {
        let old = self.leaf_hash(leaf)?;
        self.patch_leaf(leaf, old ^ hash);
        Ok(())
    }

    /// The current hash of one leaf.
    pub fn leaf_hash(&self, leaf: usize) -> Result<u64, MerkleError> {
        self.leaves().get(leaf).copied().ok_or(MerkleError::NoSuchNode {
            level: DEPTH,
            index: leaf,
            width: LEAVES,
        })
    }

    /// The root hash: equal on two replicas exactly when they hold the same items (up to hash
    /// collisions).
    pub fn root(&mut self) -> u64 {
        self.refresh();
        self.nodes.first().copied().unwrap_or_default()
    }

    /// The hashes of the [`FANOUT`] children of node `parent` at `level` (children live at
    /// `level + 1`; for `level == DEPTH - 1` they are leaves). `level` must be below [`DEPTH`].
    pub fn children(&mut self, level: usize, parent: usize) -> Result<[u64; FANOUT], MerkleError> {
        let width = level_width(level);
        if level >= DEPTH || parent >= width {
            return Err(MerkleError::NoSuchNode { level, index: parent, width });
        }
        self.refresh();
        let start = level_offset(level + 1) + parent * FANOUT;
        let mut out = [0; FANOUT];
        let children = self.nodes.get(start..start + FANOUT).ok_or(MerkleError::NoSuchNode {
            level,
            index: parent,
            width,
        })?;
        out.copy_from_slice(children);
        Ok(out)
    }

    /// What a replica answers to a peer's `RequestHashes { level, parents }`: the children of
    /// every parent, concatenated in request order (`parents.len() · FANOUT` hashes). Validates
    /// the request, which comes from the network: every parent must exist, and at most
    /// `level_width(level)` parents may be asked for, which bounds the reply.
    pub fn children_batch(&mut self, level: usize, parents: &[usize]) -> Result<Vec<u64>, MerkleError> {
        let max = level_width(level);
        if parents.len() > max {
            return Err(MerkleError::TooManyParents { level, got: parents.len(), max });
        }
        let mut out = Vec::with_capacity(parents.len() * FANOUT);
        for &parent in parents {
            out.extend_from_slice(&self.children(level, parent)?);
        }
        Ok(out)
    }

    /// Empties the tree (e.g. before rebuilding it from storage).
    pub fn clear(&mut self) {
        *self = MerkleTree::new();
    }

    fn leaves(&self) -> &[u64] {
        self.nodes.get(INNER_LEN..).unwrap_or_default()
    }

    /// XORs `delta` into `leaf` and marks its ancestors dirty.
    fn patch_leaf(&mut self, leaf: usize, delta: u64) {
        if delta == 0 {
            return;
        }
        // `leaf` comes from `leaf_of` or a checked index, so it is in range; `get_mut` keeps a
        // violated assumption from panicking in production.
        debug_assert!(leaf < LEAVES);
        if let Some(hash) = self.nodes.get_mut(INNER_LEN + leaf) {
            *hash ^= delta;
        }
        let mut index = leaf;
        for level in (0..DEPTH).rev() {
            index /= FANOUT;
            if let Some(flag) = self.dirty.get_mut(level_offset(level) + index) {
                *flag = true;
            }
        }
        self.any_dirty = true;
    }

    /// Recomputes every dirty inner node, deepest level first so each node reads clean children.
    /// Scans the 273 flags; the work is proportional to the dirty nodes.
    fn refresh(&mut self) {
        if !self.any_dirty {
            return;
        }
        for level in (0..DEPTH).rev() {
            let offset = level_offset(level);
            let child_offset = level_offset(level + 1);
            for index in 0..level_width(level) {
                if !self.dirty.get(offset + index).copied().unwrap_or(false) {
                    continue;
                }
                let start = child_offset + index * FANOUT;
                let hash = match self.nodes.get(start..start + FANOUT) {
                    Some(children) => hash_children(children),
                    None => continue,
                };
                if let Some(slot) = self.nodes.get_mut(offset + index) {
                    *slot = hash;
                }
                if let Some(flag) = self.dirty.get_mut(offset + index) {
                    *flag = false;
                }
            }
        }
        self.any_dirty = false;
    }
}

/// An inner node's hash: xxh3 of its children's hashes, little-endian, in order.
fn hash_children(children: &[u64]) -> u64 {
    let mut bytes = [0u8; FANOUT * 8];
    for (chunk, child) in bytes.chunks_exact_mut(8).zip(children) {
        chunk.copy_from_slice(&child.to_le_bytes());
    }
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A realistic storage key (placement hash first) for partition `p{i}`.
    fn key(i: u32) -> Vec<u8> {
        crate::key::ItemKey::new("t", format!("p{i}").as_bytes(), b"").unwrap().storage_key()
    }

    /// Every leaf hash of a tree, for whole-tree comparisons.
    fn all_leaves(tree: &MerkleTree) -> Vec<u64> {
        (0..LEAVES).map(|leaf| tree.leaf_hash(leaf).unwrap()).collect()
    }

    /// Every hash of every level, read through the public API (which refreshes dirty nodes).
    fn all_levels(tree: &mut MerkleTree) -> Vec<u64> {
        let mut out = vec![tree.root()];
        for level in 0..DEPTH {
            for parent in 0..level_width(level) {
                out.extend_from_slice(&tree.children(level, parent).unwrap());
            }
        }
        out
    }

    /// Proves the shape constants are what the module docs claim.
    #[test]
    fn shape() {
        assert_eq!(LEAVES, 4096);
        assert_eq!(INNER_LEN, 1 + 16 + 256);
        assert_eq!(NODES_LEN, 4369);
        assert_eq!(level_offset(DEPTH), INNER_LEN);
    }

    /// Proves all empty trees agree, and that inserting then removing an item restores the root.
    #[test]
    fn empty_tree_and_inverse_update() {
        let mut a = MerkleTree::new();
        let mut b = MerkleTree::default();
        let empty = a.root();
        assert_eq!(empty, b.root());
        let d = item_digest(b"k", b"state");
        b.update(b"k", None, Some(d));
        assert_ne!(b.root(), empty);
        b.update(b"k", Some(d), None);
        assert_eq!(b.root(), empty);
        b.update(b"k", Some(d), Some(d));
        assert_eq!(b.root(), empty, "an update to the same digest changes nothing");
        b.update(b"k", None, Some(d));
        b.clear();
        assert_eq!(b.root(), empty);
        assert_eq!(all_levels(&mut a), all_levels(&mut b));
    }

    /// Proves the digest separates key from state: moving bytes across the boundary changes it.
    #[test]
    fn digest_is_length_separated() {
        assert_ne!(item_digest(b"ab", b"c"), item_digest(b"a", b"bc"));
        assert_ne!(item_digest(b"k", b"v1"), item_digest(b"k", b"v2"));
        assert_eq!(item_digest(b"k", b"v"), item_digest(b"k", b"v"));
    }

    /// Proves the leaf of a storage key is its ring position (the top bits of the placement hash
    /// it starts with), so every sort key of a partition shares its leaf, and partitions spread
    /// over the leaves.
    #[test]
    fn leaf_is_ring_position() {
        use crate::key::ItemKey;
        let mut used = BTreeSet::new();
        for i in 0..10_000u32 {
            let item = ItemKey::new("t", format!("p{i}").as_bytes(), b"sort").unwrap();
            let leaf = leaf_of(&item.storage_key());
            assert_eq!(leaf as u64, item.placement_hash() >> (64 - LEAF_BITS));
            let other_sort = ItemKey::new("t", format!("p{i}").as_bytes(), b"zzz").unwrap();
            assert_eq!(leaf_of(&other_sort.storage_key()), leaf);
            used.insert(leaf);
        }
        // 10 000 balls into 4096 bins leave about 4096·e^(-2.44) ≈ 357 bins empty.
        assert!(used.len() > 3500, "only {} leaves used", used.len());
    }

    /// Proves the range bounds of the first, a middle and the last leaf, and that a leaf index
    /// past the end is an error.
    #[test]
    fn leaf_key_range_bounds() {
        assert_eq!(leaf_key_range(0).unwrap(), (vec![], Some(vec![0x00, 0x10])));
        assert_eq!(leaf_key_range(0x6b3).unwrap(), (vec![0x6b, 0x30], Some(vec![0x6b, 0x40])));
        assert_eq!(leaf_key_range(0x6bf).unwrap(), (vec![0x6b, 0xf0], Some(vec![0x6c])));
        assert_eq!(leaf_key_range(LEAVES - 1).unwrap(), (vec![0xff, 0xf0], None));
        assert!(leaf_key_range(LEAVES).is_err());
    }

    /// Proves out-of-range lookups, as a bad peer request would make, are errors, not panics.
    #[test]
    fn bad_indices_are_errors() {
        let mut tree = MerkleTree::new();
        assert!(tree.children(0, 0).is_ok());
        assert!(tree.children(DEPTH - 1, level_width(DEPTH - 1) - 1).is_ok());
        assert_eq!(tree.children(0, 1), Err(MerkleError::NoSuchNode { level: 0, index: 1, width: 1 }));
        assert!(matches!(tree.children(DEPTH, 0), Err(MerkleError::NoSuchNode { .. })));
        assert!(matches!(tree.children(1, usize::MAX), Err(MerkleError::NoSuchNode { .. })));
        assert!(matches!(tree.leaf_hash(LEAVES), Err(MerkleError::NoSuchNode { .. })));
        assert!(matches!(tree.set_leaf(LEAVES, 1), Err(MerkleError::NoSuchNode { .. })));
        assert_eq!(
            tree.children_batch(1, &[0; 17]),
            Err(MerkleError::TooManyParents { level: 1, got: 17, max: 16 })
        );
        assert!(matches!(tree.children_batch(1, &[0, 16]), Err(MerkleError::NoSuchNode { .. })));
        assert_eq!(tree.children_batch(1, &[3, 4]).unwrap().len(), 2 * FANOUT);
    }

    /// Proves `set_leaf` with the XOR of a leaf's digests repairs a leaf corrupted by a wrong
    /// `old` digest, and that `from_items` equals one-by-one insertion.
    #[test]
    fn set_leaf_repairs_a_corrupted_leaf() {
        let items: Vec<(Vec<u8>, u64)> = (0..500).map(|i| (key(i), item_digest(&key(i), b"s"))).collect();
        let mut good = MerkleTree::from_items(items.iter().map(|(k, d)| (k.as_slice(), *d)));
        let mut bad = good.clone();
        let (k, d) = &items[7];
        bad.update(k, Some(d ^ 1), Some(d ^ 2)); // the caller lied about `old`
        assert_ne!(bad.root(), good.root());
        let leaf = leaf_of(k);
        let digests = items.iter().filter(|(k, _)| leaf_of(k) == leaf).map(|(_, d)| *d);
        bad.set_leaf(leaf, leaf_hash_of(digests)).unwrap();
        assert_eq!(bad.root(), good.root());
        assert_eq!(all_levels(&mut bad), all_levels(&mut good));
    }

    /// One operation on the item set in the property tests below.
    #[derive(Clone, Debug)]
    enum Op {
        Put(u32, u8),
        Delete(u32),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0u32..300, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0u32..300).prop_map(Op::Delete),
        ];
        proptest::collection::vec(op, 0..400)
    }

    /// Applies `ops` to a model (key → state) and to a tree, reading the root now and then so
    /// lazy refreshes interleave with updates.
    fn apply(ops: &[Op], model: &mut BTreeMap<Vec<u8>, Vec<u8>>, tree: &mut MerkleTree) {
        for (i, op) in ops.iter().enumerate() {
            let (k, new_state) = match op {
                Op::Put(k, v) => (key(*k), Some(vec![*v])),
                Op::Delete(k) => (key(*k), None),
            };
            let old = model.get(&k).map(|s| item_digest(&k, s));
            let new = new_state.as_ref().map(|s| item_digest(&k, s));
            tree.update(&k, old, new);
            match new_state {
                Some(s) => model.insert(k, s),
                None => model.remove(&k),
            };
            if i % 37 == 0 {
                tree.root();
            }
        }
    }

    fn rebuild(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> MerkleTree {
        MerkleTree::from_items(model.iter().map(|(k, s)| (k.as_slice(), item_digest(k, s))))
    }

    proptest! {
        /// Proves every byte string lies in the key range of its leaf, and that leaves are
        /// monotone in byte order (so each leaf is one contiguous range), short keys included.
        #[test]
        fn leaf_is_a_contiguous_key_range(
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            for k in [&a, &b] {
                let (start, end) = leaf_key_range(leaf_of(k)).unwrap();
                prop_assert!(start.as_slice() <= k.as_slice());
                prop_assert!(end.is_none_or(|end| k.as_slice() < end.as_slice()));
            }
            if a <= b {
                prop_assert!(leaf_of(&a) <= leaf_of(&b));
            }
        }

        /// Proves a tree maintained incrementally through random puts, overwrites and deletes
        /// equals, at every level, the tree built from scratch from the final item set.
        #[test]
        fn incremental_equals_rebuild(ops in ops()) {
            let mut model = BTreeMap::new();
            let mut tree = MerkleTree::new();
            apply(&ops, &mut model, &mut tree);
            let mut fresh = rebuild(&model);
            prop_assert_eq!(all_levels(&mut tree), all_levels(&mut fresh));
        }

        /// Proves two trees differ at exactly the leaves whose item sets differ (no false
        /// positives, and no false negatives short of a 64-bit collision), and that every
        /// ancestor of a differing leaf differs while every other inner node agrees.
        #[test]
        fn trees_differ_exactly_at_differing_leaves(base in ops(), a_ops in ops(), b_ops in ops()) {
            let mut a_model = BTreeMap::new();
            let mut a = MerkleTree::new();
            apply(&base, &mut a_model, &mut a);
            let mut b_model = a_model.clone();
            let mut b = a.clone();
            apply(&a_ops, &mut a_model, &mut a);
            apply(&b_ops, &mut b_model, &mut b);

            let keys: BTreeSet<&Vec<u8>> = a_model.keys().chain(b_model.keys()).collect();
            let expected: BTreeSet<usize> = keys
                .into_iter()
                .filter(|k| a_model.get(*k) != b_model.get(*k))
                .map(|k| leaf_of(k))
                .collect();
            let (la, lb) = (all_leaves(&a), all_leaves(&b));
            let differing: BTreeSet<usize> = (0..LEAVES).filter(|&l| la[l] != lb[l]).collect();
            prop_assert_eq!(&differing, &expected);
            prop_assert_eq!(a.root() == b.root(), expected.is_empty());
            for level in 0..DEPTH {
                for parent in 0..level_width(level) {
                    let span = LEAVES / level_width(level + 1);
                    let (ca, cb) = (a.children(level, parent).unwrap(), b.children(level, parent).unwrap());
                    for c in 0..FANOUT {
                        let child = parent * FANOUT + c;
                        let below = (child * span..(child + 1) * span).any(|l| expected.contains(&l));
                        prop_assert_eq!(ca[c] != cb[c], below);
                    }
                }
            }
        }
    }
}
