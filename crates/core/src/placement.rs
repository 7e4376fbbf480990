//! Where keys live while the cluster's layout changes.
//!
//! A [`Placement`] is what a replica consults instead of a single [`Ring`]: the *live* layout
//! versions (one normally, two while data moves from one layout to the next), each with its own
//! ring, over one node directory whose indices ([`NodeId`]) never change during a process's
//! life. The rules follow Garage's layout versions:
//!
//! - **Writes** go to the replica set of the key in *every* live version and need `w` acks in
//!   each ([`Placement::write_sets`]), so a write acknowledged during a transition is on a quorum
//!   of the old owners and a quorum of the new ones.
//! - **Reads** use one version, the *read version* ([`Placement::read_set`]): the newest whose
//!   owners are known (from the metadata's sync trackers) to hold everything written before it.
//!   Until the streaming to the new owners finished, that is the old version, which every
//!   acknowledged write reached.
//! - **Anti-entropy** (and so the streaming itself) runs over the newest version's replica sets
//!   ([`Placement::sync_set`]): a new owner's empty tree differs from an old owner's full one, and
//!   the exchange between them moves the data.
//!
//! The metadata decides which versions are live and which one reads use; this type only
//! computes sets from that decision. It is immutable; the node builds a new one for every
//! metadata change and hands it to each replica shard (`Input::Placement`).

use crate::limits::REPLICATION_FACTOR_MAX;
use crate::ring::{Member, Ring, RingError, MEMBERS_LEN_MAX};
use std::fmt;
use thiserror::Error;

/// Index of a member in the placement's directory: how the replica names nodes. Stable for the
/// life of a process (the directory only grows), so in-flight requests, hints and the failure
/// detector keep meaning the same node across layout changes.
pub type NodeId = usize;

/// Most layout versions live at once: the metadata refuses a commit while a transition is
/// still in progress, so there are at most the old and the new one.
pub const LIVE_LAYOUTS_LEN_MAX: usize = 2;

/// Most replicas one request goes to: a write during a transition goes to the union of two
/// replica sets.
pub const REQUEST_REPLICAS_MAX: usize = LIVE_LAYOUTS_LEN_MAX * REPLICATION_FACTOR_MAX;

/// Why a placement could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error("a placement needs at least one live layout")]
    NoLayout,
    #[error("at most {max} layouts can be live at once, got {got}")]
    TooManyLayouts { got: usize, max: usize },
    #[error("the read version {read} is not one of the live versions {live:?}")]
    BadReadVersion { read: u64, live: Vec<u64> },
    #[error("live versions must be strictly increasing, got {0:?}")]
    Unordered(Vec<u64>),
    #[error("member {id:?} moved from zone {was:?} to {now:?}; a member's zone is fixed")]
    ZoneChanged { id: String, was: String, now: String },
    #[error("the node directory would exceed {max} members")]
    DirectoryFull { max: usize },
    #[error("layout v{version}: {source}")]
    Ring { version: u64, source: RingError },
}

/// One live layout version: its ring, and the directory index of each ring member.
#[derive(Clone)]
struct Version {
    version: u64,
    ring: Ring,
    /// `node_of[i]` is the directory index of `ring.members()[i]`.
    node_of: Vec<NodeId>,
}

/// The live layout versions over a stable node directory. See the module documentation.
#[derive(Clone)]
pub struct Placement {
    /// Every member any placement of this process has named, in the order first seen.
    directory: Vec<Member>,
    /// Live versions, oldest first; never empty.
    versions: Vec<Version>,
    /// Position in `versions` of the read version.
    read: usize,
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("directory", &self.directory.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
            .field("live", &self.live_versions())
            .field("read", &self.read_version())
            .finish()
    }
}

impl Placement {
    /// One layout (version 1) with `ring`'s members as the directory, in ring order: the
    /// placement of a cluster whose layout never changed.
    pub fn single(ring: Ring) -> Placement {
        let node_of = (0..ring.members().len()).collect();
        let directory = ring.members().to_vec();
        Placement { directory, versions: vec![Version { version: 1, ring, node_of }], read: 0 }
    }

    /// The placement for `live` layouts (version and members, oldest first) reading from
    /// `read_version`, keeping this placement's directory indices and appending members it has
    /// not seen yet.
    pub fn next(
        &self,
        live: &[(u64, Vec<Member>)],
        read_version: u64,
        vnodes_per_node: usize,
    ) -> Result<Placement, PlacementError> {
        Placement::build(self.directory.clone(), live, read_version, vnodes_per_node)
    }

    /// Like [`Placement::next`] from an empty directory (a node's first placement).
    pub fn new(
        live: &[(u64, Vec<Member>)],
        read_version: u64,
        vnodes_per_node: usize,
    ) -> Result<Placement, PlacementError> {
        Placement::build(Vec::new(), live, read_version, vnodes_per_node)
    }

    fn build(
        mut directory: Vec<Member>,
        live: &[(u64, Vec<Member>)],
        read_version: u64,
        vnodes_per_node: usize,
    ) -> Result<Placement, PlacementError> {
        if live.is_empty() {
            return Err(PlacementError::NoLayout);
        }
        if live.len() > LIVE_LAYOUTS_LEN_MAX {
            return Err(PlacementError::TooManyLayouts { got: live.len(), max: LIVE_LAYOUTS_LEN_MAX });
        }
        let numbers: Vec<u64> = live.iter().map(|(v, _)| *v).collect();
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PlacementError::Unordered(numbers));
        }
        let read = numbers
            .iter()
            .position(|v| *v == read_version)
            .ok_or(PlacementError::BadReadVersion { read: read_version, live: numbers.clone() })?;
        let mut versions = Vec::with_capacity(live.len());
        for (version, members) in live {
            let ring = Ring::new(members.clone(), vnodes_per_node)
                .map_err(|source| PlacementError::Ring { version: *version, source })?;
            let mut node_of = Vec::with_capacity(members.len());
            for m in ring.members() {
                let node = match directory.iter().position(|d| d.id == m.id) {
                    Some(i) => {
                        let known = &directory[i];
                        if known.zone != m.zone {
                            return Err(PlacementError::ZoneChanged {
                                id: m.id.clone(),
                                was: known.zone.clone(),
                                now: m.zone.clone(),
                            });
                        }
                        i
                    }
                    None => {
                        if directory.len() >= MEMBERS_LEN_MAX {
                            return Err(PlacementError::DirectoryFull { max: MEMBERS_LEN_MAX });
                        }
                        directory.push(m.clone());
                        directory.len() - 1
                    }
                };
                node_of.push(node);
            }
            versions.push(Version { version: *version, ring, node_of });
        }
        Ok(Placement { directory, versions, read })
    }

    /// Every member this placement can name, by [`NodeId`]; includes members of no live layout.
    pub fn directory(&self) -> &[Member] {
        &self.directory
    }

    /// The [`NodeId`] of the member with this id.
    pub fn index_of(&self, id: &str) -> Option<NodeId> {
        self.directory.iter().position(|m| m.id == id)
    }

    /// The member's id, or `#i` for an index no placement named.
    pub fn name(&self, node: NodeId) -> String {
        self.directory.get(node).map(|m| m.id.clone()).unwrap_or_else(|| format!("#{node}"))
    }

    /// The live layout versions, oldest first.
    pub fn live_versions(&self) -> Vec<u64> {
        self.versions.iter().map(|v| v.version).collect()
    }

    /// The version reads use.
    pub fn read_version(&self) -> u64 {
        self.version_at(self.read).version
    }

    /// The newest live version (the one trees and streaming follow).
    pub fn newest_version(&self) -> u64 {
        self.newest().version
    }

    /// Whether data is moving between two live layouts.
    pub fn in_transition(&self) -> bool {
        self.versions.len() > 1
    }

    /// Whether `node` is a member of some live layout.
    pub fn is_live_member(&self, node: NodeId) -> bool {
        self.versions.iter().any(|v| v.node_of.contains(&node))
    }

    /// Members of any live layout, by [`NodeId`], ascending.
    pub fn live_members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.versions.iter().flat_map(|v| v.node_of.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Smallest live layout's member count: the replication factor every live version can give.
    pub fn members_len_min(&self) -> usize {
        self.versions.iter().map(|v| v.ring.members().len()).min().unwrap_or(1)
    }

    /// The read version's replicas of a key with this placement hash, primary first.
    pub fn read_set(&self, hash: u64, n: usize) -> Vec<NodeId> {
        self.set_in(self.version_at(self.read), hash, n)
    }

    /// The newest version's replicas (the trees and exchanges follow these).
    pub fn sync_set(&self, hash: u64, n: usize) -> Vec<NodeId> {
        self.set_in(self.newest(), hash, n)
    }

    /// The replica set of every live version, oldest first, identical sets listed once. A
    /// write needs its quorum in each.
    pub fn write_sets(&self, hash: u64, n: usize) -> Vec<Vec<NodeId>> {
        let mut sets: Vec<Vec<NodeId>> = Vec::with_capacity(self.versions.len());
        for v in &self.versions {
            let set = self.set_in(v, hash, n);
            let mut sorted = set.clone();
            sorted.sort_unstable();
            if !sets.iter().any(|s| {
                let mut t = s.clone();
                t.sort_unstable();
                t == sorted
            }) {
                sets.push(set);
            }
        }
        sets
    }

    /// Every live version's replicas of a key, read set first, each node once: the nodes a
    /// write is sent to and a gateway may forward to.
    pub fn all_homes(&self, hash: u64, n: usize) -> Vec<NodeId> {
        let mut out = self.read_set(hash, n);
        for v in &self.versions {
            for node in self.set_in(v, hash, n) {
                if !out.contains(&node) {
                    out.push(node);
                }
            }
        }
        out
    }

    /// The newest version's whole preference list of a key (every member, ring order): where
    /// sloppy-quorum stand-ins come from.
    pub fn fallbacks(&self, hash: u64) -> Vec<NodeId> {
        let v = self.newest();
        self.set_in(v, hash, v.ring.members().len())
    }

    /// Each directory member's share of replica placements in the read version (0 for members
    /// of no live layout), for status pages.
    pub fn replica_ownership(&self, n: usize) -> Vec<f64> {
        let v = self.version_at(self.read);
        let mut out = vec![0.0; self.directory.len()];
        for (i, share) in v.ring.replica_ownership(n).into_iter().enumerate() {
            if let Some(slot) = v.node_of.get(i).and_then(|node| out.get_mut(*node)) {
                *slot = share;
            }
        }
        out
    }

    /// Each directory member's primary share of the read version's ring.
    pub fn ownership(&self) -> Vec<f64> {
        let v = self.version_at(self.read);
        let mut out = vec![0.0; self.directory.len()];
        for (i, share) in v.ring.ownership().into_iter().enumerate() {
            if let Some(slot) = v.node_of.get(i).and_then(|node| out.get_mut(*node)) {
                *slot = share;
            }
        }
        out
    }

    fn set_in(&self, v: &Version, hash: u64, n: usize) -> Vec<NodeId> {
        v.ring.preference_list(hash, n).into_iter().filter_map(|i| v.node_of.get(i).copied()).collect()
    }

    fn newest(&self) -> &Version {
        self.version_at(self.versions.len() - 1)
    }

    fn version_at(&self, i: usize) -> &Version {
        // `versions` is never empty and `read` is always one of its positions (constructors).
        &self.versions[i.min(self.versions.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::VNODES_PER_NODE_DEFAULT;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter().enumerate().map(|(i, id)| Member::new(*id, format!("z{}", i % 3 + 1))).collect()
    }

    /// Proves a single placement names nodes exactly as its ring does, so a cluster whose
    /// layout never changes places keys as before.
    #[test]
    fn single_matches_the_ring() {
        let ring = Ring::new(members(&["n1", "n2", "n3", "n4"]), VNODES_PER_NODE_DEFAULT).unwrap();
        let p = Placement::single(ring.clone());
        for h in (0..200u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(p.read_set(h, 3), ring.preference_list(h, 3));
            assert_eq!(p.write_sets(h, 3), vec![ring.preference_list(h, 3)]);
            assert_eq!(p.all_homes(h, 3), ring.preference_list(h, 3));
        }
        assert!(!p.in_transition());
        assert_eq!((p.read_version(), p.newest_version()), (1, 1));
    }

    /// Proves that during a join the directory keeps old indices, writes go to both versions'
    /// sets, reads use the read version, the trees follow the newest, and the keys whose set
    /// changes are about 1/N of all.
    #[test]
    fn a_join_keeps_indices_and_writes_to_both_sets() {
        let old = members(&["n1", "n2", "n3"]);
        let new = members(&["n1", "n2", "n3", "n4"]);
        let p1 = Placement::new(&[(1, old.clone())], 1, VNODES_PER_NODE_DEFAULT).unwrap();
        let p2 = p1.next(&[(1, old), (2, new.clone())], 1, VNODES_PER_NODE_DEFAULT).unwrap();
        assert_eq!(p2.index_of("n4"), Some(3));
        assert_eq!(&p2.directory()[..3], p1.directory());
        assert!(p2.in_transition());
        let mut changed = 0;
        let keys = 2_000u64;
        for h in (0..keys).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let sets = p2.write_sets(h, 3);
            assert_eq!(sets[0], p1.read_set(h, 3));
            assert_eq!(p2.read_set(h, 3), p1.read_set(h, 3), "reads stay on v1 until synced");
            assert_eq!(*sets.last().unwrap(), p2.sync_set(h, 3));
            let homes = p2.all_homes(h, 3);
            for s in &sets {
                assert!(s.iter().all(|n| homes.contains(n)));
            }
            if sets.len() == 2 {
                changed += 1;
            }
        }
        // A key's set changes exactly when n4 becomes one of its replicas, so the keys that
        // move are n4's replica share of the new ring: the ideal, nothing else moves.
        let share = p2.next(&[(2, new.clone())], 2, VNODES_PER_NODE_DEFAULT).unwrap().replica_ownership(3)[3];
        let moved = changed as f64 / keys as f64;
        assert!((moved - share).abs() < 0.05, "moved {moved:.3}, n4's share {share:.3}");
        // After the sync, v2 alone.
        let p3 = p2.next(&[(2, new)], 2, VNODES_PER_NODE_DEFAULT).unwrap();
        assert!(!p3.in_transition());
        assert_eq!(p3.index_of("n4"), Some(3));
        assert!(p3.live_members().contains(&3));
    }

    /// Proves a node that left stays in the directory (its index is not reused) but is no longer
    /// a live member, and that bad inputs are refused with an error that names them.
    #[test]
    fn a_leave_keeps_the_index_and_bad_inputs_are_refused() {
        let v1 = members(&["n1", "n2", "n3", "n4"]);
        let v2 = members(&["n1", "n2", "n3"]);
        let p1 = Placement::new(&[(1, v1.clone())], 1, VNODES_PER_NODE_DEFAULT).unwrap();
        let p2 = p1.next(&[(2, v2.clone())], 2, VNODES_PER_NODE_DEFAULT).unwrap();
        assert_eq!(p2.index_of("n4"), Some(3));
        assert!(!p2.is_live_member(3));
        assert_eq!(p2.name(3), "n4");
        let v = VNODES_PER_NODE_DEFAULT;
        assert_eq!(p1.next(&[], 1, v).unwrap_err(), PlacementError::NoLayout);
        assert!(matches!(p1.next(&[(1, v1.clone())], 2, v), Err(PlacementError::BadReadVersion { .. })));
        assert!(matches!(
            p1.next(&[(2, v1.clone()), (1, v2.clone())], 1, v),
            Err(PlacementError::Unordered(_))
        ));
        let three = [(1, v1.clone()), (2, v2.clone()), (3, v2.clone())];
        assert!(matches!(p1.next(&three, 1, v), Err(PlacementError::TooManyLayouts { .. })));
        let moved = vec![Member::new("n1", "elsewhere")];
        assert!(matches!(p1.next(&[(2, moved)], 2, v), Err(PlacementError::ZoneChanged { .. })));
    }
}
