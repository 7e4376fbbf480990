//! Causality: version vectors, dotted siblings and the merge that replicas use to converge.
//!
//! Every item is replicated as an [`ItemState`]: a *causal context* (a [`VersionVector`] that
//! summarises every write the state has seen) plus the *siblings* that are still live (each a
//! value tagged with the [`Dot`] of the write that produced it). This is the DVV-set / dot-kernel
//! design of Riak's `dvvset` and of delta-state CRDTs. Writes are concurrent exactly when neither
//! writer had seen the other, and then both values are kept as siblings until a client reads
//! them and writes back with the context it read, which supersedes what it saw.
//!
//! Invariants of every `ItemState` (checked by [`ItemState::decode`], asserted in debug builds):
//! every sibling dot is covered by the context (`ctx[dot.actor] >= dot.counter`), siblings are
//! sorted by dot, and no dot appears twice. Version vectors never store a zero counter.
//!
//! ## The merge and its laws
//!
//! Write `C(a)` for the context of state `a` and `S(a)` for its set of `(dot, value)` siblings.
//! The join `a ⊔ b` ([`ItemState::merge`]) keeps a sibling unless the other side has *seen* its
//! dot (the dot is in the other context) and *dropped* it (it is not among the other's siblings):
//!
//! ```text
//!   S(a ⊔ b) = { s ∈ S(a) | s ∈ S(b) ∨ s.dot ∉ C(b) }  ∪  { s ∈ S(b) | s.dot ∉ C(a) }
//!   C(a ⊔ b) = C(a) ⊔ C(b)                               (pointwise max)
//! ```
//!
//! It is a join semilattice, which is what lets replicas exchange states in any order, any number
//! of times, through any path (read repair, hinted handoff, anti-entropy) and still converge:
//!
//! ```text
//!   a ⊔ b       = b ⊔ a                 (commutative)
//!   (a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)           (associative)
//!   a ⊔ a       = a                     (idempotent)
//!   a ⊒ b       ⇔ a ⊔ b = a             (descends is the order of the lattice)
//!   a ⊔ b ⊒ a  ∧  a ⊔ b ⊒ b
//!   update(a, ctx, v, r) ⊒ a            (a write never loses what its replica knew)
//! ```
//!
//! All of these are property-tested below on *reachable* states, produced by simulating replicas
//! that write with stale and fresh contexts and gossip their states in random order.
//!
//! ## Non-guarantees
//!
//! - Merges only grow contexts. Entries of *retired* actors (earlier incarnations of a data dir
//!   that restarted after a crash) are dropped by [`ItemState::prune_retired`], which replicas
//!   apply whenever they store an item; see [`Retirement`] for why that never loses a write and
//!   what it may bring back. An item written by more than [`VERSION_VECTOR_LEN_MAX`] live actors
//!   refuses writes from new actors.
//! - Tombstones are ordinary siblings here; collecting them is the node's job.
//! - Causality tokens are trusted. A forged token that claims counters an actor has not reached
//!   yet makes that actor's next writes look already seen, and merges then drop them. If clients
//!   are untrusted, the node must authenticate tokens (e.g. a MAC) before calling
//!   [`VersionVector::from_token`].
//! - Value sizes are not checked here: the API layer refuses oversized values before a write
//!   reaches [`ItemState::update`], and this module never refuses stored data for its size.

use crate::limits::{
    APPLIED_WRITES_LEN_MAX, APPLIED_WRITE_AGE_MS_MAX, CONTEXT_TOKEN_CHARS_MAX, REPLICATION_FACTOR_MAX,
    SIBLINGS_LEN_MAX, VERSION_VECTOR_LEN_MAX,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use smallvec::{smallvec, SmallVec};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// First byte of every causality token. A new encoding gets a new number, and old tokens held by
/// clients keep decoding for as long as we choose to support them.
const TOKEN_FORMAT_VERSION: u8 = 1;

/// First byte of every encoded [`ItemState`], on disk and on the wire.
const STATE_FORMAT_VERSION: u8 = 1;
/// The format of states that carry request records (appended after the siblings).
const STATE_FORMAT_VERSION_APPLIED: u8 = 2;
/// Format 3: format 2 (its record list may be empty) followed by the fence records; used only
/// by states that hold fences, so every other state keeps its bytes.
const STATE_FORMAT_VERSION_FENCED: u8 = 3;
/// Most fence names one item keeps.
pub const FENCES_PER_ITEM_MAX: usize = 4;
/// Longest fence name, in bytes.
pub const FENCE_NAME_BYTES_MAX: usize = 255;
/// Fewest bytes of one encoded write record: id (16), version count (1), one dot (9), time (1).
const APPLIED_WRITE_BYTES_MIN: usize = 27;
/// Fewest bytes of one encoded dot: an 8-byte actor and a 1-byte counter.
const DOT_BYTES_MIN: usize = 9;
/// Smallest encoding of one fence record: a 1-byte name length, 1 name byte, token, dot count.
const FENCE_RECORD_BYTES_MIN: usize = 4;

/// Fewest bytes one version vector entry can occupy: an 8-byte actor and a 1-byte counter.
/// Decoders check a claimed entry count against this before allocating anything.
const VERSION_VECTOR_ENTRY_BYTES_MIN: usize = 8 + 1;

/// Fewest bytes one encoded sibling can occupy: actor, 1-byte counter, kind byte.
const SIBLING_BYTES_MIN: usize = 8 + 1 + 1;

/// Longest LEB128 encoding of a `u64`.
const VARINT_BYTES_MAX: usize = 10;

/// Sibling kind byte in the state encoding.
const KIND_TOMBSTONE: u8 = 0;
const KIND_DATA: u8 = 1;

/// Length in characters of the longest token a version vector of `entries` entries can produce
/// (unpadded base64 of version byte, count and entries with worst-case varints).
pub const fn token_chars_len_max(entries: usize) -> usize {
    let bytes = 1 + VARINT_BYTES_MAX + entries * (8 + VARINT_BYTES_MAX);
    (bytes * 4).div_ceil(3)
}

// Every context an accepted write can produce must yield a token the server accepts back,
// otherwise a client could read an item and be unable to write it with the context it was given.
const _: () = assert!(token_chars_len_max(VERSION_VECTOR_LEN_MAX) <= CONTEXT_TOKEN_CHARS_MAX);
// A write must always be able to add its own sibling to an empty item.
const _: () = assert!(SIBLINGS_LEN_MAX >= 1 && VERSION_VECTOR_LEN_MAX >= 1);

/// Why a causality token or item state was refused, or why a write was refused.
///
/// The messages are written for clients: the node returns them verbatim in HTTP 400/409 bodies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CausalityError {
    #[error("malformed causality token: {0}")]
    MalformedToken(String),
    #[error("malformed item state: {0}")]
    MalformedState(String),
    #[error(
        "write refused: the item would have more than {max} concurrent versions (siblings); \
         read it and write back with its causality token to resolve them"
    )]
    TooManySiblings { max: usize },
    #[error(
        "write refused: the item's causality context would name more than {max} writers \
         (replica incarnations)"
    )]
    VersionVectorTooLong { max: usize },
    #[error("malformed write id: {0}")]
    MalformedWriteId(String),
    #[error(
        "write fenced: it carries token {token} of {name:?}, and this item already holds a write \
         under token {current}"
    )]
    Fenced { name: String, token: u64, current: u64 },
    #[error("write refused: an item keeps fencing tokens of at most {max} names")]
    TooManyFences { max: usize },
}

/// Identity of one writer: one incarnation of one node's data dir.
///
/// Layout: the high [`ActorId::UID_BITS`] bits are the data dir's uid, drawn at random when the
/// data dir is created, so a wiped node never reuses the counters of its previous life; the low
/// [`ActorId::STARTED_BITS`] bits are the millisecond (Unix time) the incarnation started. A
/// restart after a crash
/// must not reuse the actor (its last dots may have reached other replicas but not its own disk),
/// so it takes the [`ActorId::successor`]: same uid, a later start. That is what lets any replica
/// see, from an item's context alone, that an actor has retired and since when: an entry of the
/// same uid with a later start proves the older incarnation stopped writing by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(pub u64);

impl ActorId {
    pub const UID_BITS: u32 = 20;
    pub const STARTED_BITS: u32 = 64 - Self::UID_BITS;
    const STARTED_MAX: u64 = (1 << Self::STARTED_BITS) - 1;

    /// The incarnation of data dir `uid` (only its low [`Self::UID_BITS`] bits count) that started
    /// at millisecond `started_ms` (saturated at the field's maximum, some 550 years from 1970).
    /// Two data dirs drawing the same uid (one in a million) cannot lose writes either: pruning
    /// never drops a replica's own actor, and dropping another's entry only shrinks coverage.
    pub fn incarnation(uid: u32, started_ms: u64) -> ActorId {
        let uid = u64::from(uid) & ((1 << Self::UID_BITS) - 1);
        ActorId((uid << Self::STARTED_BITS) | started_ms.min(Self::STARTED_MAX))
    }

    pub fn uid(self) -> u32 {
        // The shift leaves exactly UID_BITS (< 32) bits.
        (self.0 >> Self::STARTED_BITS) as u32
    }

    pub fn started_ms(self) -> u64 {
        self.0 & Self::STARTED_MAX
    }

    /// The actor of the next incarnation of this data dir, started at `now_ms`: same uid, a
    /// start strictly after this one even if the wall clock went back. `None` when the start
    /// field is exhausted (the caller draws a new uid).
    pub fn successor(self, now_ms: u64) -> Option<ActorId> {
        let started = now_ms.max(self.started_ms().checked_add(1)?);
        (started <= Self::STARTED_MAX).then(|| ActorId::incarnation(self.uid(), started))
    }
}

/// Most context entries of retired actors (see [`Retirement`]) an item keeps, however recent
/// their retirement. Together with the live writers this bounds a context under a crash-looping
/// node: without it every unclean restart would add an entry until the item refused writes at
/// [`VERSION_VECTOR_LEN_MAX`].
pub const RETIRED_ENTRIES_LEN_MAX: usize = 16;

// Entries a context may hold without a live writer behind them: retired ones kept by the cap,
// and the (possibly retired) writers of the applied-write records, which pin their entries.
const _: () = assert!(
    RETIRED_ENTRIES_LEN_MAX + APPLIED_WRITES_LEN_MAX + REPLICATION_FACTOR_MAX * 2 <= VERSION_VECTOR_LEN_MAX
);

/// The rule by which a replica drops context entries of actors that will never write again.
///
/// An actor has *retired* when the same context names a later incarnation of its data dir (see
/// [`ActorId`]); it retired at the latest when that successor started. An entry of a retired
/// actor with no live sibling (and no applied-write record) is dropped when it retired more than `grace_ms` ago, and beyond
/// the [`RETIRED_ENTRIES_LEN_MAX`] most recently retired ones whatever their age. The replica's
/// own actor, `keep`, is never dropped: it mints its next counter from that entry.
///
/// Why this never loses a write: dropping an entry only makes the context cover fewer dots, so
/// merges drop fewer siblings, never more; and a retired actor mints no new dot that an old
/// entry could wrongly cover. What it may do is bring back a superseded value: if a replica
/// that lagged for longer than the grace period still holds a sibling the others replaced, a
/// merge keeps it as a sibling again (the tombstone grace period makes the same assumption).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retirement {
    pub now_wall_ms: u64,
    pub grace_ms: u64,
    pub keep: ActorId,
}

impl fmt::Display for ActorId {
    /// Fixed-width hex, so ids line up in logs and sort the same as text and as numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One write event: the `counter`-th write coordinated by `actor`. Dots are globally unique
/// because each actor numbers its own writes 1, 2, 3, … and actors are never shared.
///
/// The derived order (actor, then counter) is the order siblings are kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// A version vector: for each actor, how many of its writes are known. Because every actor's
/// writes are numbered without gaps, `{a: 3}` means "writes a:1, a:2 and a:3 are all known".
///
/// Absent actors mean 0; zero counters are never stored, so structural equality is semantic
/// equality.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    /// Actor → highest known counter (always ≥ 1). A `BTreeMap` keeps entries sorted, which makes
    /// the encoding canonical and `Display` deterministic.
    entries: BTreeMap<ActorId, u64>,
}

impl VersionVector {
    /// The empty vector: knows of no write.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many of `actor`'s writes are known (0 if none).
    pub fn get(&self, actor: ActorId) -> u64 {
        self.entries.get(&actor).copied().unwrap_or(0)
    }

    /// Whether the write `dot` is known.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Pointwise maximum: afterwards `self` knows every write either side knew.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.entries {
            let mine = self.entries.entry(actor).or_insert(counter);
            *mine = (*mine).max(counter);
        }
    }

    /// Whether `self` knows every write `other` knows (`self ⊔ other = self`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(&actor, &counter)| self.get(actor) >= counter)
    }

    /// [`VersionVector::descends`] up to pruning: an entry of `other` that `self` lacks
    /// altogether counts as known when `self` names a later incarnation of the same data dir,
    /// because then it may have been dropped as retired ([`ItemState::prune_retired`]). For
    /// checkers comparing tokens a client saw at different times; merges use `descends`.
    pub fn descends_modulo_pruning(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(&actor, &counter)| match self.entries.get(&actor) {
            Some(&mine) => mine >= counter,
            None => self.names_successor_of(actor),
        })
    }

    /// Whether some entry is a later incarnation of `actor`'s data dir.
    fn names_successor_of(&self, actor: ActorId) -> bool {
        let last_of_uid = ActorId::incarnation(actor.uid(), ActorId::STARTED_MAX);
        actor < last_of_uid && self.entries.range(ActorId(actor.0 + 1)..=last_of_uid).next().is_some()
    }

    /// Number of actors with at least one known write.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for the empty vector, the context of a blind write.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.entries.iter().map(|(&actor, &counter)| (actor, counter))
    }

    /// Forgets `actor`'s entry (see [`Retirement`] for when that is sound).
    fn remove(&mut self, actor: ActorId) {
        self.entries.remove(&actor);
    }

    /// Records that `actor`'s writes up to `counter` are known.
    fn observe(&mut self, dot: Dot) {
        // A zero counter means "nothing known" and is never stored.
        if dot.counter == 0 {
            return;
        }
        self.merge(&VersionVector { entries: BTreeMap::from([(dot.actor, dot.counter)]) });
    }

    /// The opaque token handed to clients with every read and expected back with every write.
    ///
    /// Format: URL-safe base64 without padding of
    /// `version (1) | varint count | count × (actor u64 little-endian, counter varint)`,
    /// entries in actor order. Actors are random 64-bit ids, so a fixed 8 bytes is shorter on
    /// average than a varint; counters are small, so they are varints. The empty vector encodes to
    /// the two bytes `01 00`, token `"AQA"`.
    pub fn to_token(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + self.encoded_len());
        bytes.push(TOKEN_FORMAT_VERSION);
        self.encode_into(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token as the HTTP API hands it out (`<token>.<signature>`, signed by the node) or a
    /// plain one, parsed *without* checking the signature: for analysing recorded histories
    /// offline (the lab), never for input a client controls (the node verifies those).
    pub fn from_recorded_token(s: &str) -> Result<Self, CausalityError> {
        Self::from_token(s.split_once('.').map_or(s, |(body, _signature)| body))
    }

    /// Parses a token made by [`VersionVector::to_token`]. Never panics.
    ///
    /// The encoding is canonical and the decoder strict (minimal varints, sorted unique actors,
    /// no zero counters, no trailing bytes, no padding or stray base64 bits), so a token is
    /// accepted exactly when it is what `to_token` produces for the vector it decodes to.
    ///
    /// The entry count is bounded by the token length (at most [`CONTEXT_TOKEN_CHARS_MAX`]
    /// characters), not by [`VERSION_VECTOR_LEN_MAX`]: a merge can legitimately leave an item's
    /// context longer than the limit a single write may create, and the server must accept back
    /// every token it hands out. [`ItemState::update`] is where the limit is enforced.
    pub fn from_token(s: &str) -> Result<Self, CausalityError> {
        Self::parse_token(s).map_err(CausalityError::MalformedToken)
    }

    fn parse_token(s: &str) -> Result<Self, String> {
        // Check the length first so an oversized token costs nothing to refuse. `len()` counts
        // bytes, which is at least the number of characters; any non-ASCII token is invalid
        // base64 anyway.
        if s.len() > CONTEXT_TOKEN_CHARS_MAX {
            return Err(format!("token is {} bytes long, the limit is {CONTEXT_TOKEN_CHARS_MAX}", s.len()));
        }
        if s.is_empty() {
            return Err("token is empty (send no token at all to write without context)".into());
        }
        let bytes =
            URL_SAFE_NO_PAD.decode(s).map_err(|e| format!("not URL-safe base64 without padding ({e})"))?;
        let mut reader = Reader::new(&bytes);
        let version = reader.u8("format version")?;
        if version != TOKEN_FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this server understands {TOKEN_FORMAT_VERSION})"
            ));
        }
        let vv = Self::decode_from(&mut reader)?;
        reader.finish()?;
        Ok(vv)
    }

    /// Exact length of [`VersionVector::encode_into`]'s output.
    fn encoded_len(&self) -> usize {
        varint_len(self.entries.len() as u64)
            + self.entries.values().map(|&c| 8 + varint_len(c)).sum::<usize>()
    }

    /// `varint count | count × (actor u64 LE, counter varint)`, shared by tokens and states.
    fn encode_into(&self, out: &mut Vec<u8>) {
        write_varint(out, self.entries.len() as u64);
        for (actor, &counter) in &self.entries {
            out.extend_from_slice(&actor.0.to_le_bytes());
            write_varint(out, counter);
        }
    }

    /// Inverse of [`VersionVector::encode_into`], rejecting every non-canonical input.
    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, String> {
        let count = reader.count("version vector", VERSION_VECTOR_ENTRY_BYTES_MIN)?;
        let mut entries = BTreeMap::new();
        let mut previous: Option<ActorId> = None;
        for i in 0..count {
            let actor = ActorId(reader.u64_le("version vector actor")?);
            let counter = reader.varint("version vector counter")?;
            if counter == 0 {
                return Err(format!(
                    "version vector entry {i} (actor {actor}) has counter 0; counters start at 1"
                ));
            }
            if let Some(previous) = previous {
                if actor <= previous {
                    return Err(format!(
                        "version vector entry {i}: actor {actor} does not follow {previous}; \
                         actors must be sorted and unique"
                    ));
                }
            }
            previous = Some(actor);
            entries.insert(actor, counter);
        }
        Ok(VersionVector { entries })
    }
}

/// A version vector from `(actor, counter)` pairs (zero counters dropped); CRDT tables carry
/// their remove contexts as version vectors so they share the signed token format.
impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        VersionVector { entries: iter.into_iter().filter(|(_, c)| *c > 0).collect() }
    }
}

impl fmt::Display for VersionVector {
    /// `{00000000000000ff:1, 3f2a9c01d4e5b6a7:3}` in actor order; `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (actor, counter)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{actor}:{counter}")?;
        }
        f.write_str("}")
    }
}

/// What a write stored: bytes, or the fact that the item was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Data(Vec<u8>),
    /// A delete. It is a sibling like any other so that it supersedes exactly what the deleting
    /// client saw, and a write concurrent with the delete survives it.
    Tombstone,
}

impl Value {
    /// Total order used only to break a tie that correct replicas never produce: the same dot
    /// carrying two different values (a corrupted or forged state). Picking the greater value
    /// keeps merge commutative even then. Tombstone < Data, and data compares by bytes.
    fn tie_break_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Tombstone, Value::Tombstone) => Ordering::Equal,
            (Value::Tombstone, Value::Data(_)) => Ordering::Less,
            (Value::Data(_), Value::Tombstone) => Ordering::Greater,
            (Value::Data(a), Value::Data(b)) => a.cmp(b),
        }
    }
}

/// The replicated state of one item: causal context plus live siblings. See the module docs for
/// the invariants and the merge laws.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemState {
    /// Every write this state has seen, whether its value is still live or was superseded. It is
    /// what lets a merge tell "I dropped this sibling on purpose" from "I never heard of it".
    ctx: VersionVector,
    /// Values not yet superseded, sorted by dot, each dot covered by `ctx`. More than one means
    /// concurrent writes that a client has to resolve.
    siblings: Vec<(Dot, Value)>,
    /// Recently applied client request ids, one record per id (the smallest dot it was applied
    /// as), sorted by id, each dot covered by `ctx`. What makes a retried or hedged write with
    /// the same id idempotent; see [`AppliedWrite`].
    applied: Vec<AppliedWrite>,
    /// Per fence name (sorted), the highest fencing token any write to this item carried and
    /// the live versions written under exactly that token. See [`Fence`].
    fences: Vec<FenceRecord>,
}

/// A fencing token a write carries: `name` is a lock or election, `token` the holder's.
///
/// The rule, per item and name: a write under a token lower than one the item already holds
/// for the name is refused ([`CausalityError::Fenced`]); a write under a higher one supersedes
/// every version written under a lower token of the name; and every merge keeps only the
/// versions written under the highest token of each name that either side knows, so a stale
/// holder's write that reached some replicas before being refused elsewhere never comes back.
/// Versions written without a fence, or under other names, are untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub token: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FenceRecord {
    name: String,
    token: u64,
    /// Sorted, unique, each a live sibling.
    dots: Vec<Dot>,
}

/// A client's id for one logical write (the `Idempotency-Key` of an HTTP put or delete). A
/// retry, a duplicate delivery or a hedged copy of the write carries the same id, and the item
/// then ends up with one version of it, not one per delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteId(pub u128);

impl WriteId {
    /// Parses 32 hex digits, optionally with the hyphens of a UUID.
    pub fn parse(text: &str) -> Result<WriteId, CausalityError> {
        let digits: String = text.chars().filter(|c| *c != '-').collect();
        if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CausalityError::MalformedWriteId(format!(
                "{:?} is not 32 hex digits (a 128-bit id, UUID hyphens allowed)",
                text.chars().take(64).collect::<String>()
            )));
        }
        u128::from_str_radix(&digits, 16)
            .map(WriteId)
            .map_err(|e| CausalityError::MalformedWriteId(e.to_string()))
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// That the write with id `id` was applied as the versions `dots` (usually one; more when
/// several coordinators applied it at once, as a hedged write does), first at wall time
/// `at_ms` of a replica that minted it.
///
/// Records travel with the item state through every path (replication, hints, read repair,
/// anti-entropy) and merge by union. The versions of one write id are one *logical write* to
/// the merge: it survives a merge exactly as a sibling does in a plain dotted merge, lifted to
/// the set of versions (kept unless a side has seen one of its versions and keeps none of
/// them), and a surviving write keeps only its smallest live version. So two coordinators
/// applying the same write converge on one version, and a client that read and superseded
/// either version superseded the write.
///
/// Memory is bounded: a replica drops records older than [`APPLIED_WRITE_AGE_MS_MAX`] and keeps
/// at most [`APPLIED_WRITES_LEN_MAX`] per item (the newest) whenever it stores the item; a write
/// retried after that may be applied twice, as two siblings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppliedWrite {
    pub id: WriteId,
    /// Sorted, unique, at most [`DOTS_PER_WRITE_MAX`].
    pub dots: WriteVersions,
    pub at_ms: u64,
}

/// The versions of one write id. Almost every write has exactly one, so it is stored inline:
/// items keep up to [`APPLIED_WRITES_LEN_MAX`] records and every load, merge and clone of an
/// item copies them, which with a heap list per record was a large share of a write's cost.
pub type WriteVersions = SmallVec<[Dot; 1]>;

/// Most versions recorded for one write id: one per home replica that could coordinate it.
pub const DOTS_PER_WRITE_MAX: usize = REPLICATION_FACTOR_MAX;

/// The outcome of [`ItemState::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The write made this new state.
    New(ItemState),
    /// The state already holds this request (applied as `dot`): nothing changes, and the
    /// caller answers with the current state, whose context covers that version.
    Duplicate { dot: Dot },
}

impl ItemState {
    /// The state of an item nobody has written: no siblings, empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal context: what a client must send back to supersede what it read.
    pub fn context(&self) -> &VersionVector {
        &self.ctx
    }

    /// Every sibling, tombstones included, in dot order.
    pub fn siblings(&self) -> &[(Dot, Value)] {
        &self.siblings
    }

    /// The live data values in dot order. Tombstones are hidden: a read never returns a delete.
    /// The order is deterministic so every replica and coordinator presents siblings alike.
    pub fn values(&self) -> Vec<&[u8]> {
        self.siblings
            .iter()
            .filter(|(dot, _)| !self.is_duplicate_version(*dot))
            .filter_map(|(_, value)| match value {
                Value::Data(bytes) => Some(bytes.as_slice()),
                Value::Tombstone => None,
            })
            .collect()
    }

    /// Whether `dot` is a live version of a write id that has a smaller live version: the same
    /// write applied twice (a hedge), shown to clients once.
    fn is_duplicate_version(&self, dot: Dot) -> bool {
        self.applied.iter().filter(|r| r.dots.len() > 1).any(|r| {
            r.dots.contains(&dot) && r.dots.iter().any(|d| *d < dot && has_sibling(&self.siblings, *d))
        })
    }

    /// No siblings at all (never written, as far as this state knows).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// No live data: never written, or every live sibling is a delete. Reads report "not found".
    pub fn is_deleted(&self) -> bool {
        !self.siblings.iter().any(|(_, value)| matches!(value, Value::Data(_)))
    }

    /// Whether a delete is among the siblings (live data may sit next to it). The node uses it
    /// to find items whose tombstones it may collect.
    pub fn has_tombstone(&self) -> bool {
        self.siblings.iter().any(|(_, value)| matches!(value, Value::Tombstone))
    }

    /// The write `value` by the replica `actor`, for a client that read `client_ctx`.
    ///
    /// Called by the coordinating replica under its per-key lock, on its local state:
    /// - The new dot is `(actor, max(self.ctx[actor], client_ctx[actor]) + 1)`. Taking the max
    ///   with the client's context means that even if this actor's data dir were lost and its
    ///   counter restarted, it would not reissue a dot a client has already seen.
    /// - Siblings whose dots `client_ctx` covers are dropped: the client saw them, so its write
    ///   replaces them. All others stay, as concurrent versions. An empty `client_ctx` (a blind
    ///   write) therefore adds a sibling next to everything present.
    /// - The new context is `self.ctx ⊔ client_ctx ⊔ {new dot}`, which makes the result descend
    ///   `self`: the replica never forgets anything by writing.
    ///
    /// Limits: a write that would leave the item with more than [`SIBLINGS_LEN_MAX`] siblings, or
    /// a context naming more than [`VERSION_VECTOR_LEN_MAX`] actors, is refused with a typed error
    /// instead of growing the item. Only writes that *grow* the item past a limit are refused:
    /// merges of concurrent writes can leave an item above a limit (a merge cannot fail), and such
    /// an item must still accept the writes that shrink it or keep it the same size, else it
    /// could never be repaired. For items that only ever grew by writes the two readings agree.
    pub fn update(
        &self,
        client_ctx: &VersionVector,
        value: Value,
        actor: ActorId,
    ) -> Result<ItemState, CausalityError> {
        self.update_pruning(client_ctx, value, actor, None)
    }

    /// [`ItemState::update`], then [`ItemState::prune_retired`] under `retirement` before the
    /// context's length is checked, so that retired writers' entries (the client's context may
    /// bring them back) never make a write refused.
    pub fn update_pruning(
        &self,
        client_ctx: &VersionVector,
        value: Value,
        actor: ActorId,
        retirement: Option<&Retirement>,
    ) -> Result<ItemState, CausalityError> {
        let local_counter = self.ctx.get(actor);
        let client_counter = client_ctx.get(actor);
        let counter = local_counter.max(client_counter).checked_add(1).ok_or_else(|| {
            // Honest counters grow by one per write and cannot get here; only a forged token or
            // a corrupted state can. Blame whichever one carries the impossible counter.
            let message = format!("counter of actor {actor} is at its maximum");
            if client_counter == u64::MAX {
                CausalityError::MalformedToken(message)
            } else {
                CausalityError::MalformedState(message)
            }
        })?;
        let dot = Dot { actor, counter };

        let mut ctx = self.ctx.clone();
        ctx.merge(client_ctx);
        ctx.observe(dot);
        let too_long = |ctx: &VersionVector| ctx.len() > VERSION_VECTOR_LEN_MAX && ctx.len() > self.ctx.len();
        // Without pruning the check can come before any value is copied.
        if retirement.is_none() && too_long(&ctx) {
            return Err(CausalityError::VersionVectorTooLong { max: VERSION_VECTOR_LEN_MAX });
        }

        // Count before cloning any value, so a refused write copies nothing.
        // A sibling goes if the client saw it, or saw another version of the same write id.
        let saw = |d: &Dot| {
            client_ctx.covers(*d)
                || self.applied.iter().any(|r| {
                    r.dots.len() > 1 && r.dots.contains(d) && r.dots.iter().any(|x| client_ctx.covers(*x))
                })
        };
        let kept = self.siblings.iter().filter(|(d, _)| !saw(d)).count();
        let siblings_len = kept + 1;
        if siblings_len > SIBLINGS_LEN_MAX && siblings_len > self.siblings.len() {
            return Err(CausalityError::TooManySiblings { max: SIBLINGS_LEN_MAX });
        }
        let mut siblings = Vec::with_capacity(siblings_len);
        siblings.extend(self.siblings.iter().filter(|(d, _)| !saw(d)).cloned());
        // The new counter exceeds every counter of `actor` in `self.ctx`, and every sibling is
        // covered by that context, so the new dot is not present yet; insert it in order.
        let position = siblings.partition_point(|(d, _)| *d < dot);
        siblings.insert(position, (dot, value));

        let mut next =
            ItemState { ctx, siblings, applied: self.applied.clone(), fences: self.fences.clone() };
        next.fences_keep_live();
        if let Some(rule) = retirement {
            next.prune_retired(rule);
            if too_long(&next.ctx) {
                return Err(CausalityError::VersionVectorTooLong { max: VERSION_VECTOR_LEN_MAX });
            }
        }
        debug_assert_eq!(next.check_invariants(), Ok(()));
        Ok(next)
    }

    /// A client write, idempotent when it carries a request id: if this state already records
    /// `request`'s id, the answer is [`Applied::Duplicate`] and nothing changes; otherwise the
    /// write is [`ItemState::update_pruning`] and the new version is recorded under the id, at
    /// `request`'s `at_ms` (only the [`APPLIED_WRITES_LEN_MAX`] newest records stay).
    pub fn apply(
        &self,
        client_ctx: &VersionVector,
        value: Value,
        actor: ActorId,
        retirement: Option<&Retirement>,
        write_id: Option<(WriteId, u64)>,
    ) -> Result<Applied, CausalityError> {
        if let Some((id, _)) = write_id {
            if let Some(record) = self.applied_write(id) {
                return Ok(Applied::Duplicate { dot: record.dots[0] });
            }
        }
        let mut next = self.update_pruning(client_ctx, value, actor, retirement)?;
        if let Some((id, at_ms)) = write_id {
            let dot = Dot { actor, counter: next.ctx.get(actor) };
            let position = next.applied.partition_point(|r| r.id < id);
            next.applied.insert(position, AppliedWrite { id, dots: smallvec![dot], at_ms });
            next.trim_applied(None);
        }
        debug_assert_eq!(next.check_invariants(), Ok(()));
        Ok(Applied::New(next))
    }

    /// [`ItemState::apply`] for a write under `fence` (see [`Fence`] for the rule). A duplicate
    /// (same write id) answers as `apply` does, without checking the token again.
    pub fn apply_fenced(
        &self,
        client_ctx: &VersionVector,
        value: Value,
        actor: ActorId,
        retirement: Option<&Retirement>,
        write_id: Option<(WriteId, u64)>,
        fence: &Fence,
    ) -> Result<Applied, CausalityError> {
        if fence.name.is_empty() || fence.name.len() > FENCE_NAME_BYTES_MAX || fence.token == 0 {
            return Err(CausalityError::MalformedToken(format!(
                "a fence needs a name of 1 to {FENCE_NAME_BYTES_MAX} bytes and a token above 0"
            )));
        }
        let held = self.fence_token(&fence.name);
        if let Some(current) = held.filter(|t| *t > fence.token) {
            return Err(CausalityError::Fenced { name: fence.name.clone(), token: fence.token, current });
        }
        if held.is_none() && self.fences.len() >= FENCES_PER_ITEM_MAX {
            return Err(CausalityError::TooManyFences { max: FENCES_PER_ITEM_MAX });
        }
        match self.apply(client_ctx, value, actor, retirement, write_id)? {
            Applied::Duplicate { dot } => Ok(Applied::Duplicate { dot }),
            Applied::New(mut next) => {
                let dot = Dot { actor, counter: next.ctx.get(actor) };
                next.record_fence(fence, dot);
                debug_assert_eq!(next.check_invariants(), Ok(()));
                Ok(Applied::New(next))
            }
        }
    }

    /// Whether this state carries a version written under a fencing token lower than one
    /// `known` holds for the same name: then a replica holding `known` refuses it (the merge
    /// would drop that version), with both tokens.
    pub fn fenced_by(&self, known: &ItemState) -> Option<CausalityError> {
        self.fences.iter().filter(|r| !r.dots.is_empty()).find_map(|r| {
            let current = known.fence_token(&r.name)?;
            (current > r.token).then(|| CausalityError::Fenced {
                name: r.name.clone(),
                token: r.token,
                current,
            })
        })
    }

    /// Whether any write to this item carried a fence.
    pub fn has_fences(&self) -> bool {
        !self.fences.is_empty()
    }

    /// The highest fencing token of `name` this item holds.
    pub fn fence_token(&self, name: &str) -> Option<u64> {
        self.fences.binary_search_by(|r| r.name.as_str().cmp(name)).ok().map(|i| self.fences[i].token)
    }

    /// Records that `dot` was written under `fence` (whose token is not below the item's):
    /// a higher token supersedes the versions of the lower one.
    fn record_fence(&mut self, fence: &Fence, dot: Dot) {
        match self.fences.binary_search_by(|r| r.name.as_str().cmp(&fence.name)) {
            Ok(i) => {
                let r = &mut self.fences[i];
                if fence.token > r.token {
                    let stale = std::mem::replace(&mut r.dots, vec![dot]);
                    r.token = fence.token;
                    self.siblings.retain(|(d, _)| !stale.contains(d));
                } else if let Err(at) = r.dots.binary_search(&dot) {
                    r.dots.insert(at, dot);
                }
            }
            Err(i) => self
                .fences
                .insert(i, FenceRecord { name: fence.name.clone(), token: fence.token, dots: vec![dot] }),
        }
    }

    /// Drops fence dots whose version is gone (superseded or resolved away); the records and
    /// their tokens stay, as the item's memory of the highest token.
    fn fences_keep_live(&mut self) {
        let siblings = &self.siblings;
        for r in &mut self.fences {
            r.dots.retain(|d| has_sibling(siblings, *d));
        }
    }

    /// The record of request `id`, if this state holds one.
    pub fn applied_write(&self, id: WriteId) -> Option<&AppliedWrite> {
        self.applied.binary_search_by_key(&id, |r| r.id).ok().map(|i| &self.applied[i])
    }

    /// The same state without write records: the plain dotted state, whose merges never
    /// treat versions of one write id as one write. For checkers that judge what must be
    /// kept, which write records (trimmed by age and count) cannot promise.
    pub fn without_write_records(&self) -> ItemState {
        ItemState { applied: Vec::new(), ..self.clone() }
    }

    /// The request records, by id.
    pub fn applied_writes(&self) -> &[AppliedWrite] {
        &self.applied
    }

    /// Drops request records older than [`APPLIED_WRITE_AGE_MS_MAX`] at `now_ms` (if given) and
    /// all but the [`APPLIED_WRITES_LEN_MAX`] newest; returns whether anything changed.
    /// Replicas apply it whenever they store an item, as they apply [`ItemState::prune_retired`].
    pub fn trim_applied(&mut self, now_ms: Option<u64>) -> bool {
        let before = self.applied.len();
        if let Some(now_ms) = now_ms {
            self.applied.retain(|r| r.at_ms.saturating_add(APPLIED_WRITE_AGE_MS_MAX) >= now_ms);
        }
        if self.applied.len() > APPLIED_WRITES_LEN_MAX {
            // Records of writes applied more than once first (they link the versions, and
            // losing the link on every replica lets a superseded version come back), then the
            // newest, by a total order, so every replica keeps the same ones.
            let rank = |r: &AppliedWrite| (r.dots.len() > 1, r.at_ms, r.id);
            let mut order: Vec<(bool, u64, WriteId)> = self.applied.iter().map(rank).collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            let cutoff = order[APPLIED_WRITES_LEN_MAX - 1];
            self.applied.retain(|r| rank(r) >= cutoff);
        }
        self.applied.len() != before
    }

    /// Whether [`ItemState::trim_applied`] at `now_ms` would change anything.
    pub fn needs_trimming(&self, now_ms: u64) -> bool {
        self.applied.len() > APPLIED_WRITES_LEN_MAX
            || self.applied.iter().any(|r| r.at_ms.saturating_add(APPLIED_WRITE_AGE_MS_MAX) < now_ms)
    }

    /// Drops the context entries of retired actors that `rule` lets go (see [`Retirement`]);
    /// returns whether anything changed. Deterministic in the state and the rule, so replicas
    /// that apply it converge on the same bytes.
    pub fn prune_retired(&mut self, rule: &Retirement) -> bool {
        let drop = self.retired_to_drop(rule);
        for actor in &drop {
            self.ctx.remove(*actor);
        }
        debug_assert_eq!(self.check_invariants(), Ok(()));
        !drop.is_empty()
    }

    /// [`ItemState::descends`] up to pruning: `self` descends `older` once the context entries
    /// `self` may have dropped as retired (see [`VersionVector::descends_modulo_pruning`]) and
    /// the write records it may have trimmed are restored from `older`. How a checker asks "did this replica keep everything it had?"
    /// across a store that also pruned.
    pub fn descends_modulo_pruning(&self, older: &ItemState) -> bool {
        let mut restored = self.clone();
        // Write records are trimmed by age and count, like pruned entries: compare the plain
        // dotted states.
        restored.applied.clear();
        let mut older = older.clone();
        older.applied.clear();
        let older = &older;
        for (actor, counter) in older.ctx.iter() {
            if self.ctx.get(actor) == 0 && self.ctx.names_successor_of(actor) {
                restored.ctx.entries.insert(actor, counter);
            }
        }
        restored.descends(older)
    }

    /// Whether [`ItemState::prune_retired`] would change anything.
    pub fn needs_pruning(&self, rule: &Retirement) -> bool {
        !self.retired_to_drop(rule).is_empty()
    }

    fn retired_to_drop(&self, rule: &Retirement) -> Vec<ActorId> {
        // Entries are sorted by actor id, that is by uid and then by start: the entry after a
        // retired actor's is its earliest known successor, whose start bounds the retirement.
        // Pairs of neighbouring entries, without collecting them: this runs on every store.
        let pairs = self.ctx.entries.keys().copied().zip(self.ctx.entries.keys().copied().skip(1));
        let mut young: Vec<(u64, ActorId)> = Vec::new();
        let mut drop = Vec::new();
        for (old, successor) in pairs {
            if old.uid() != successor.uid()
                || old == rule.keep
                || self.siblings.iter().any(|(dot, _)| dot.actor == old)
                || self.applied.iter().any(|r| r.dots.iter().any(|d| d.actor == old))
            {
                continue;
            }
            let retired_ms = successor.started_ms();
            if retired_ms.saturating_add(rule.grace_ms) < rule.now_wall_ms {
                drop.push(old);
            } else {
                young.push((retired_ms, old));
            }
        }
        if young.len() > RETIRED_ENTRIES_LEN_MAX {
            young.sort_unstable();
            let excess = young.len() - RETIRED_ENTRIES_LEN_MAX;
            drop.extend(young[..excess].iter().map(|(_, actor)| *actor));
        }
        drop
    }

    /// Joins `other` into `self` (`self ← self ⊔ other`). See the module docs for the definition
    /// and the laws. Linear in the number of siblings: both lists are sorted, so this is a single
    /// merge-join, and `self`'s values are moved rather than copied.
    pub fn merge(&mut self, other: &ItemState) {
        let applied = if other.applied.is_empty() || self.applied == other.applied {
            std::mem::take(&mut self.applied)
        } else {
            merge_applied(&self.applied, &other.applied)
        };
        // The logical-write rule (see `AppliedWrite`), judged on both sides as they were: a
        // side that has seen a version of a write and does not hold it has seen the write
        // superseded, and then no version of it survives. For a write with one version that is
        // the plain dotted rule, which the sibling merge below applies anyway.
        let killed: Vec<&AppliedWrite> = applied
            .iter()
            .filter(|r| r.dots.len() > 1)
            .filter(|r| {
                [&*self, other]
                    .iter()
                    .any(|s| r.dots.iter().any(|d| s.ctx.covers(*d) && !has_sibling(&s.siblings, *d)))
            })
            .collect();
        let mut killed: Vec<Dot> = killed.iter().flat_map(|r| r.dots.iter().copied()).collect();
        let fences = if self.fences.is_empty() && other.fences.is_empty() {
            Vec::new()
        } else {
            let (fences, stale) = merge_fences(&self.fences, &other.fences);
            killed.extend(stale);
            fences
        };
        let mine = std::mem::take(&mut self.siblings);
        let mut out = Vec::with_capacity(mine.len().max(other.siblings.len()));
        let mut left = mine.into_iter().peekable();
        let mut right = other.siblings.iter().peekable();
        loop {
            let order = match (left.peek(), right.peek()) {
                (Some((l, _)), Some((r, _))) => l.cmp(r),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match order {
                // Only on our side: keep it unless the other side saw it and dropped it.
                Ordering::Less => {
                    if let Some(sibling) = left.next() {
                        if !other.ctx.covers(sibling.0) {
                            out.push(sibling);
                        }
                    }
                }
                // Only on their side: take it unless we saw it and dropped it.
                Ordering::Greater => {
                    if let Some(sibling) = right.next() {
                        if !self.ctx.covers(sibling.0) {
                            out.push(sibling.clone());
                        }
                    }
                }
                // On both sides: live for both, so it stays.
                Ordering::Equal => {
                    if let (Some(l), Some(r)) = (left.next(), right.next()) {
                        if r.1.tie_break_cmp(&l.1) == Ordering::Greater {
                            out.push(r.clone());
                        } else {
                            out.push(l);
                        }
                    }
                }
            }
        }
        if !killed.is_empty() {
            out.retain(|(d, _)| !killed.contains(d));
        }
        self.applied = applied;
        self.siblings = out;
        self.fences = fences;
        self.fences_keep_live();
        // Only now: the sibling rules above need each side's context as it was before the join.
        self.ctx.merge(&other.ctx);
        debug_assert_eq!(self.check_invariants(), Ok(()));
    }

    /// The same state with only the siblings `keep` accepts. The context is unchanged, so a
    /// dropped sibling counts as superseded: merges never bring it back. Used by last-writer-wins
    /// tables, which keep only the sibling with the highest timestamp.
    pub fn retain_siblings(&self, keep: impl Fn(&Dot, &Value) -> bool) -> ItemState {
        let siblings = self.siblings.iter().filter(|(d, v)| keep(d, v)).cloned().collect();
        let mut out = ItemState {
            ctx: self.ctx.clone(),
            siblings,
            applied: self.applied.clone(),
            fences: self.fences.clone(),
        };
        out.fences_keep_live();
        out
    }

    /// The same state with every data value passed through `f`, for presenting values to a
    /// client (for example stripping a last-writer-wins timestamp). Not for storing: values
    /// take part in merge tie-breaks.
    pub fn map_values(&self, f: impl Fn(&[u8]) -> Value) -> ItemState {
        let siblings = self
            .siblings
            .iter()
            .map(|(d, v)| {
                let v = match v {
                    Value::Data(bytes) => f(bytes),
                    Value::Tombstone => Value::Tombstone,
                };
                (*d, v)
            })
            .collect();
        ItemState {
            ctx: self.ctx.clone(),
            siblings,
            applied: self.applied.clone(),
            fences: self.fences.clone(),
        }
    }

    /// `a ⊔ b` as a new state.
    pub fn merged(a: &ItemState, b: &ItemState) -> ItemState {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    /// Whether merging `other` into `self` would change nothing (`self ⊔ other = self`), i.e.
    /// `self` already holds all of `other`'s information. A read coordinator uses it to decide
    /// which replicas need a repair. Computed without building the merge: walk both sorted
    /// sibling lists and check that the merge would keep exactly `self`'s siblings.
    pub fn descends(&self, other: &ItemState) -> bool {
        if !self.ctx.descends(&other.ctx) {
            return false;
        }
        // Fenced states are rare; judge them by the merge itself.
        if !self.fences.is_empty() || !other.fences.is_empty() {
            return ItemState::merged(self, other) == *self;
        }
        // With write records the merge also works on logical writes: it changes nothing only
        // if `self` already holds every record of `other` (same versions, no later time) and
        // no write `self` shows is killed by either side (see `merge`).
        if !self.applied.is_empty() || !other.applied.is_empty() {
            let holds = |theirs: &AppliedWrite| {
                self.applied_write(theirs.id).is_some_and(|ours| {
                    ours.at_ms <= theirs.at_ms && theirs.dots.iter().all(|d| ours.dots.contains(d))
                })
            };
            if !other.applied.iter().all(holds) {
                return false;
            }
            let kills = |s: &ItemState, r: &AppliedWrite| {
                r.dots.iter().any(|d| s.ctx.covers(*d) && !has_sibling(&s.siblings, *d))
            };
            let killed_here = self.applied.iter().filter(|r| r.dots.len() > 1).any(|r| {
                r.dots.iter().any(|d| has_sibling(&self.siblings, *d)) && (kills(self, r) || kills(other, r))
            });
            if killed_here {
                return false;
            }
        }
        let mut left = self.siblings.iter().peekable();
        let mut right = other.siblings.iter().peekable();
        loop {
            let order = match (left.peek(), right.peek()) {
                (Some((l, _)), Some((r, _))) => l.cmp(r),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => return true,
            };
            let unchanged = match order {
                // Ours only: the merge would drop it if `other` saw and dropped it.
                Ordering::Less => left.next().is_some_and(|(d, _)| !other.ctx.covers(*d)),
                // Theirs only: the merge would add it unless we saw and dropped it. (With the
                // invariants and `self.ctx ⊒ other.ctx` this always holds; checked regardless.)
                Ordering::Greater => right.next().is_some_and(|(d, _)| self.ctx.covers(*d)),
                // Both: the merge keeps ours unless theirs wins the tie-break.
                Ordering::Equal => match (left.next(), right.next()) {
                    (Some((_, l)), Some((_, r))) => r.tie_break_cmp(l) != Ordering::Greater,
                    _ => false,
                },
            };
            if !unchanged {
                return false;
            }
        }
    }

    /// Exact length of [`ItemState::encode`]'s output, for sizing buffers and batches.
    pub fn encoded_len_hint(&self) -> usize {
        let siblings: usize = self
            .siblings
            .iter()
            .map(|(dot, value)| {
                let value_len = match value {
                    Value::Data(bytes) => varint_len(bytes.len() as u64) + bytes.len(),
                    Value::Tombstone => 0,
                };
                8 + varint_len(dot.counter) + 1 + value_len
            })
            .sum();
        let fenced = !self.fences.is_empty();
        let fences: usize = if fenced {
            varint_len(self.fences.len() as u64)
                + self
                    .fences
                    .iter()
                    .map(|r| {
                        let dots: usize = r.dots.iter().map(|d| 8 + varint_len(d.counter)).sum();
                        varint_len(r.name.len() as u64)
                            + r.name.len()
                            + varint_len(r.token)
                            + varint_len(r.dots.len() as u64)
                            + dots
                    })
                    .sum::<usize>()
        } else {
            0
        };
        let applied = if self.applied.is_empty() && !fenced {
            0
        } else {
            varint_len(self.applied.len() as u64)
                + self
                    .applied
                    .iter()
                    .map(|r| {
                        let dots: usize = r.dots.iter().map(|d| 8 + varint_len(d.counter)).sum();
                        16 + varint_len(r.dots.len() as u64) + dots + varint_len(r.at_ms)
                    })
                    .sum::<usize>()
        };
        1 + self.ctx.encoded_len() + varint_len(self.siblings.len() as u64) + siblings + applied + fences
    }

    /// The storage and wire encoding:
    ///
    /// ```text
    ///   version (1)
    ///   context:  varint n, n × (actor u64 LE, counter varint)       actors ascending
    ///   siblings: varint m, m × (actor u64 LE, counter varint,        dots ascending
    ///                            kind u8: 0 = tombstone, 1 = data,
    ///                            if data: varint len, len bytes)
    /// ```
    ///
    /// Canonical: equal states encode to equal bytes, so replicas can compare states by bytes
    /// or checksums.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        // States without request records keep the first format, byte for byte.
        let fenced = !self.fences.is_empty();
        out.push(if fenced {
            STATE_FORMAT_VERSION_FENCED
        } else if self.applied.is_empty() {
            STATE_FORMAT_VERSION
        } else {
            STATE_FORMAT_VERSION_APPLIED
        });
        self.ctx.encode_into(&mut out);
        write_varint(&mut out, self.siblings.len() as u64);
        for (dot, value) in &self.siblings {
            out.extend_from_slice(&dot.actor.0.to_le_bytes());
            write_varint(&mut out, dot.counter);
            match value {
                Value::Tombstone => out.push(KIND_TOMBSTONE),
                Value::Data(bytes) => {
                    out.push(KIND_DATA);
                    write_varint(&mut out, bytes.len() as u64);
                    out.extend_from_slice(bytes);
                }
            }
        }
        if !self.applied.is_empty() || fenced {
            write_varint(&mut out, self.applied.len() as u64);
            for r in &self.applied {
                out.extend_from_slice(&r.id.0.to_le_bytes());
                write_varint(&mut out, r.dots.len() as u64);
                for d in &r.dots {
                    out.extend_from_slice(&d.actor.0.to_le_bytes());
                    write_varint(&mut out, d.counter);
                }

                write_varint(&mut out, r.at_ms);
            }
        }
        if fenced {
            write_varint(&mut out, self.fences.len() as u64);
            for r in &self.fences {
                write_varint(&mut out, r.name.len() as u64);
                out.extend_from_slice(r.name.as_bytes());
                write_varint(&mut out, r.token);
                write_varint(&mut out, r.dots.len() as u64);
                for d in &r.dots {
                    out.extend_from_slice(&d.actor.0.to_le_bytes());
                    write_varint(&mut out, d.counter);
                }
            }
        }
        debug_assert_eq!(out.len(), self.encoded_len_hint());
        out
    }

    /// Inverse of [`ItemState::encode`]. Never panics, whatever the input; every length prefix
    /// is checked against the bytes that remain before anything is allocated, so memory use is
    /// bounded by the input size. Validates the invariants (zero-free sorted context, sorted
    /// unique dots, every dot covered) and rejects non-canonical input (overlong varints,
    /// unknown kinds, trailing bytes), so `decode(b) = Ok(s)` implies `encode(s) = b`.
    ///
    /// Sibling and context counts are not held to [`SIBLINGS_LEN_MAX`] and
    /// [`VERSION_VECTOR_LEN_MAX`]: those bound what one write may create, while a merge of
    /// concurrent writes may exceed them, and refusing to decode such a state would make stored
    /// data unreadable. The caller bounds the input itself (storage values, message sizes).
    pub fn decode(bytes: &[u8]) -> Result<ItemState, CausalityError> {
        Self::parse(bytes).map_err(CausalityError::MalformedState)
    }

    fn parse(bytes: &[u8]) -> Result<ItemState, String> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("format version")?;
        if ![STATE_FORMAT_VERSION, STATE_FORMAT_VERSION_APPLIED, STATE_FORMAT_VERSION_FENCED]
            .contains(&version)
        {
            return Err(format!(
                "unsupported format version {version} (this build understands {STATE_FORMAT_VERSION} \
                 to {STATE_FORMAT_VERSION_FENCED})"
            ));
        }
        let ctx = VersionVector::decode_from(&mut reader)?;
        let count = reader.count("sibling list", SIBLING_BYTES_MIN)?;
        let mut siblings: Vec<(Dot, Value)> = Vec::with_capacity(count);
        for i in 0..count {
            let actor = ActorId(reader.u64_le("sibling actor")?);
            let counter = reader.varint("sibling counter")?;
            let dot = Dot { actor, counter };
            if counter == 0 {
                return Err(format!("sibling {i} has dot {dot}; counters start at 1"));
            }
            if let Some((previous, _)) = siblings.last() {
                if dot <= *previous {
                    return Err(format!(
                        "sibling {i}: dot {dot} does not follow {previous}; dots must be sorted \
                         and unique"
                    ));
                }
            }
            if !ctx.covers(dot) {
                return Err(format!("sibling {i}: dot {dot} is not covered by the context {ctx}"));
            }
            let value = match reader.u8("sibling kind")? {
                KIND_TOMBSTONE => Value::Tombstone,
                KIND_DATA => {
                    let len = reader.varint("value length")?;
                    Value::Data(reader.bytes(len, "value")?.to_vec())
                }
                other => return Err(format!("sibling {i}: unknown kind byte {other}")),
            };
            siblings.push((dot, value));
        }
        let mut applied: Vec<AppliedWrite> = Vec::new();
        if version == STATE_FORMAT_VERSION_APPLIED || version == STATE_FORMAT_VERSION_FENCED {
            let count = reader.count("request records", APPLIED_WRITE_BYTES_MIN)?;
            if count == 0 && version == STATE_FORMAT_VERSION_APPLIED {
                return Err("an empty request list must use the first format".into());
            }
            applied.reserve(count);
            for i in 0..count {
                let low = reader.u64_le("request id")?;
                let high = reader.u64_le("request id")?;
                let id = WriteId(u128::from(low) | (u128::from(high) << 64));
                let dots_len = reader.count("write versions", DOT_BYTES_MIN)?;
                if dots_len == 0 || dots_len > DOTS_PER_WRITE_MAX {
                    return Err(format!("write record {i}: {dots_len} versions (1 to {DOTS_PER_WRITE_MAX})"));
                }
                let mut dots = WriteVersions::with_capacity(dots_len);
                for _ in 0..dots_len {
                    let actor = ActorId(reader.u64_le("write version actor")?);
                    let counter = reader.varint("write version counter")?;
                    let dot = Dot { actor, counter };
                    if counter == 0 || !ctx.covers(dot) {
                        return Err(format!(
                            "write record {i}: dot {dot} is not covered by the context {ctx}"
                        ));
                    }
                    if dots.last().is_some_and(|previous| *previous >= dot) {
                        return Err(format!("write record {i}: versions must be sorted and unique"));
                    }
                    dots.push(dot);
                }
                let at_ms = reader.varint("write time")?;
                if applied.last().is_some_and(|previous: &AppliedWrite| previous.id >= id) {
                    return Err(format!("write record {i}: ids must be sorted and unique"));
                }
                applied.push(AppliedWrite { id, dots, at_ms });
            }
        }
        let mut fences: Vec<FenceRecord> = Vec::new();
        if version == STATE_FORMAT_VERSION_FENCED {
            let count = reader.count("fence records", FENCE_RECORD_BYTES_MIN)?;
            if count == 0 {
                return Err("an empty fence list must use an earlier format".into());
            }
            for i in 0..count {
                let len = reader.varint("fence name length")?;
                if len == 0 || len > FENCE_NAME_BYTES_MAX as u64 {
                    return Err(format!(
                        "fence record {i}: name of {len} bytes (1 to {FENCE_NAME_BYTES_MAX})"
                    ));
                }
                let name = std::str::from_utf8(reader.bytes(len, "fence name")?)
                    .map_err(|_| format!("fence record {i}: the name is not UTF-8"))?
                    .to_owned();
                if fences.last().is_some_and(|previous| previous.name >= name) {
                    return Err(format!("fence record {i}: names must be sorted and unique"));
                }
                let token = reader.varint("fence token")?;
                if token == 0 {
                    return Err(format!("fence record {i}: tokens start at 1"));
                }
                let dots_len = reader.count("fenced versions", DOT_BYTES_MIN)?;
                let mut dots: Vec<Dot> = Vec::with_capacity(dots_len);
                for _ in 0..dots_len {
                    let actor = ActorId(reader.u64_le("fenced version actor")?);
                    let counter = reader.varint("fenced version counter")?;
                    let dot = Dot { actor, counter };
                    if !has_sibling(&siblings, dot) {
                        return Err(format!("fence record {i}: dot {dot} is not a live version"));
                    }
                    if dots.last().is_some_and(|previous| *previous >= dot) {
                        return Err(format!("fence record {i}: versions must be sorted and unique"));
                    }
                    dots.push(dot);
                }
                fences.push(FenceRecord { name, token, dots });
            }
        }
        reader.finish()?;
        let state = ItemState { ctx, siblings, applied, fences };
        debug_assert_eq!(state.check_invariants(), Ok(()));
        Ok(state)
    }

    /// The structural invariants, as a checkable predicate (used by debug assertions and tests).
    fn check_invariants(&self) -> Result<(), String> {
        if let Some((actor, _)) = self.ctx.iter().find(|&(_, counter)| counter == 0) {
            return Err(format!("context stores a zero counter for {actor}"));
        }
        for pair in self.siblings.windows(2) {
            if let [(a, _), (b, _)] = pair {
                if a >= b {
                    return Err(format!("siblings not strictly sorted: {a} then {b}"));
                }
            }
        }
        if let Some((dot, _)) = self.siblings.iter().find(|(dot, _)| !self.ctx.covers(*dot)) {
            return Err(format!("sibling {dot} not covered by context {}", self.ctx));
        }
        if self.applied.windows(2).any(|pair| pair[0].id >= pair[1].id) {
            return Err("request records not strictly sorted by id".into());
        }
        if self.fences.windows(2).any(|pair| pair[0].name >= pair[1].name) {
            return Err("fence records not strictly sorted by name".into());
        }
        for r in &self.fences {
            if r.token == 0 || r.dots.windows(2).any(|p| p[0] >= p[1]) {
                return Err(format!("fence record {:?} is malformed", r.name));
            }
            if let Some(d) = r.dots.iter().find(|d| !has_sibling(&self.siblings, **d)) {
                return Err(format!("fence record {:?} names {d}, which is not a live version", r.name));
            }
        }
        for r in &self.applied {
            if r.dots.is_empty()
                || r.dots.len() > DOTS_PER_WRITE_MAX
                || r.dots.windows(2).any(|p| p[0] >= p[1])
            {
                return Err(format!("write record {} has malformed versions {:?}", r.id, r.dots));
            }
            if let Some(d) = r.dots.iter().find(|d| !self.ctx.covers(**d)) {
                return Err(format!(
                    "write record {} names dot {d} not covered by context {}",
                    r.id, self.ctx
                ));
            }
        }
        Ok(())
    }
}

/// The union of two write-record lists (each sorted by id): per id, the union of the versions
/// (the smallest [`DOTS_PER_WRITE_MAX`]) and the earlier time.
fn merge_applied(a: &[AppliedWrite], b: &[AppliedWrite]) -> Vec<AppliedWrite> {
    if b.is_empty() {
        return a.to_vec();
    }
    if a.is_empty() {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.id == y.id => {
                let union = |a: &[Dot], b: &[Dot]| {
                    let mut all: WriteVersions = a.iter().chain(b).copied().collect();
                    all.sort_unstable();
                    all.dedup();
                    all
                };
                let mut dots = union(&x.dots, &y.dots);
                dots.truncate(DOTS_PER_WRITE_MAX);
                out.push(AppliedWrite { id: x.id, dots, at_ms: x.at_ms.min(y.at_ms) });
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.id < y.id => {
                out.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                out.push(x.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The join of two fence lists (each sorted by name): per name the higher token, with its
/// versions (both sides' when they hold the same token). Also returns the versions written
/// under a lower token than the join's, which the merge drops.
fn merge_fences(a: &[FenceRecord], b: &[FenceRecord]) -> (Vec<FenceRecord>, Vec<Dot>) {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut stale = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                let (x, y) = (&a[i], &b[j]);
                match x.token.cmp(&y.token) {
                    Ordering::Greater => {
                        stale.extend(&y.dots);
                        out.push(x.clone());
                    }
                    Ordering::Less => {
                        stale.extend(&x.dots);
                        out.push(y.clone());
                    }
                    Ordering::Equal => {
                        let mut dots: Vec<Dot> = x.dots.iter().chain(&y.dots).copied().collect();
                        dots.sort_unstable();
                        dots.dedup();
                        out.push(FenceRecord { name: x.name.clone(), token: x.token, dots });
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    // A version may be tagged on both sides; it goes if either tag is stale.
    (out, stale)
}

/// Whether `dot` is among the sorted `siblings`.
fn has_sibling(siblings: &[(Dot, Value)], dot: Dot) -> bool {
    siblings.binary_search_by(|(d, _)| d.cmp(&dot)).is_ok()
}

/// Appends `value` as an unsigned LEB128 varint (7 bits per byte, low bits first).
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Number of bytes [`write_varint`] writes for `value`.
fn varint_len(value: u64) -> usize {
    let bits = (u64::BITS - value.leading_zeros()).max(1) as usize;
    bits.div_ceil(7)
}

/// A bounds-checked cursor over untrusted bytes. Every method returns a message naming what was
/// being read, for error bodies and logs, instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn truncated(what: &str) -> String {
        format!("truncated: input ends inside the {what}")
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        let (&byte, rest) = self.rest.split_first().ok_or_else(|| Self::truncated(what))?;
        self.rest = rest;
        Ok(byte)
    }

    fn u64_le(&mut self, what: &str) -> Result<u64, String> {
        let (head, rest) = self.rest.split_at_checked(8).ok_or_else(|| Self::truncated(what))?;
        let array: [u8; 8] = head.try_into().map_err(|_| Self::truncated(what))?;
        self.rest = rest;
        Ok(u64::from_le_bytes(array))
    }

    /// A minimal LEB128 `u64`: no overflow past 64 bits and no redundant trailing zero groups,
    /// so that every number has exactly one encoding.
    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut value: u64 = 0;
        for i in 0..VARINT_BYTES_MAX {
            let byte = self.u8(what)?;
            // The tenth byte carries bit 63 only; anything else overflows a u64.
            if i == VARINT_BYTES_MAX - 1 && byte > 1 {
                return Err(format!("{what} overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(format!("{what} is not minimally encoded"));
                }
                return Ok(value);
            }
        }
        // Unreachable: the tenth byte either ends the varint or fails the overflow check.
        Err(format!("{what} overflows 64 bits"))
    }

    /// An element count, checked against the remaining input: each element needs at least
    /// `element_bytes_min` bytes, so a larger count is a lie and is refused before allocating.
    fn count(&mut self, what: &str, element_bytes_min: usize) -> Result<usize, String> {
        let count = self.varint(&format!("{what} length"))?;
        let possible = self.rest.len() / element_bytes_min;
        match usize::try_from(count) {
            Ok(count) if count <= possible => Ok(count),
            _ => Err(format!(
                "truncated: {what} claims {count} entries but only {} bytes remain",
                self.rest.len()
            )),
        }
    }

    fn bytes(&mut self, len: u64, what: &str) -> Result<&'a [u8], String> {
        let split = usize::try_from(len).ok().and_then(|len| self.rest.split_at_checked(len));
        let (head, rest) = split.ok_or_else(|| {
            format!("truncated: {what} claims {len} bytes but only {} remain", self.rest.len())
        })?;
        self.rest = rest;
        Ok(head)
    }

    fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    // ---------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        let mut out = VersionVector::new();
        for &(actor, counter) in entries {
            out.observe(Dot { actor: ActorId(actor), counter });
        }
        out
    }

    fn data(s: &str) -> Value {
        Value::Data(s.as_bytes().to_vec())
    }

    fn write(state: &ItemState, ctx: &VersionVector, value: Value, actor: u64) -> ItemState {
        state.update(ctx, value, ActorId(actor)).expect("write within limits")
    }

    fn values(state: &ItemState) -> Vec<String> {
        state.values().into_iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    }

    fn merge_via_join(a: &VersionVector, b: &VersionVector) -> VersionVector {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    // ---------------------------------------------------------------------------------------
    // Reachable histories: a few replicas write with empty, fresh, stale and combined contexts
    // and gossip full states in random order. Every state in `snapshots` is one that a replica
    // really held, so the laws are tested on states the system can produce.
    // ---------------------------------------------------------------------------------------

    /// Where a simulated client's context comes from.
    #[derive(Debug, Clone)]
    enum CtxSource {
        /// A blind write.
        Empty,
        /// Read from this replica just before writing (a fresh context).
        ReadNow(usize),
        /// The join of a subset (bit mask) of the most recent earlier reads (stale contexts,
        /// and contexts merged from several replicas as a read coordinator does).
        Saved(u16),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { at: usize, ctx: CtxSource, delete: bool, padding: u8 },
        Sync { from: usize, to: usize },
        Read { at: usize },
    }

    /// One acknowledged write: its dot, the value it stored and the context its client sent.
    #[derive(Debug, Clone)]
    struct WriteRecord {
        dot: Dot,
        value: Value,
        client_ctx: VersionVector,
    }

    #[derive(Debug, Clone)]
    struct History {
        replicas: Vec<ItemState>,
        snapshots: Vec<ItemState>,
        writes: Vec<WriteRecord>,
    }

    /// Operations of the hedged-write property: a client write at a replica (with the context
    /// of a read at some replica, or blind), a hedged copy of one of the last three writes at
    /// a replica, and gossip.
    #[derive(Debug, Clone, Copy)]
    enum HedgeOp {
        Write { at: usize, read_from: usize, blind: bool },
        Hedge { which: usize, at: usize },
        Sync { from: usize, to: usize },
    }

    fn hedge_op_strategy() -> impl Strategy<Value = HedgeOp> {
        prop_oneof![
            3 => (0..3usize, 0..3usize, prop::bool::weighted(0.2))
                .prop_map(|(at, read_from, blind)| HedgeOp::Write { at, read_from, blind }),
            2 => (0..3usize, 0..3usize).prop_map(|(which, at)| HedgeOp::Hedge { which, at }),
            4 => (0..3usize, 0..3usize).prop_map(|(from, to)| HedgeOp::Sync { from, to }),
        ]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let ctx = prop_oneof![
            1 => Just(CtxSource::Empty),
            2 => (0..8usize).prop_map(CtxSource::ReadNow),
            2 => any::<u16>().prop_map(CtxSource::Saved),
        ];
        prop_oneof![
            4 => (0..8usize, ctx, prop::bool::weighted(0.2), 0..4u8)
                .prop_map(|(at, ctx, delete, padding)| Op::Write { at, ctx, delete, padding }),
            3 => (0..8usize, 0..8usize).prop_map(|(from, to)| Op::Sync { from, to }),
            2 => (0..8usize).prop_map(|at| Op::Read { at }),
        ]
    }

    fn history_strategy() -> impl Strategy<Value = History> {
        (prop::collection::btree_set(any::<u64>(), 1..=4), prop::collection::vec(op_strategy(), 0..28))
            .prop_map(|(actors, ops)| simulate(&actors.into_iter().map(ActorId).collect::<Vec<_>>(), &ops))
    }

    /// Histories whose writers include several incarnations of one data dir (same uid, later
    /// starts), so that pruning has retired actors to work on.
    fn incarnations_history_strategy() -> impl Strategy<Value = (History, Retirement, Vec<ActorId>)> {
        let actors = prop::collection::btree_set((0..2u32, 0..4u64), 1..=4).prop_map(|set| {
            set.into_iter().map(|(uid, s)| ActorId::incarnation(uid, s * 1000)).collect::<Vec<_>>()
        });
        (actors, prop::collection::vec(op_strategy(), 0..28), 0..6000u64, 0..3000u64).prop_map(
            |(actors, ops, now_wall_ms, grace_ms)| {
                let rule = Retirement { now_wall_ms, grace_ms, keep: ActorId(u64::MAX) };
                (simulate_with(&actors, &ops, Some(rule)), rule, actors)
            },
        )
    }

    fn simulate(actors: &[ActorId], ops: &[Op]) -> History {
        simulate_with(actors, ops, None)
    }

    /// Replicas `0..actors.len()` write as their actor and gossip states; with `prune`, every
    /// replica prunes retired actors (never its own) after each write and merge, as the
    /// shipping replica does whenever it stores an item.
    fn simulate_with(actors: &[ActorId], ops: &[Op], prune: Option<Retirement>) -> History {
        let n = actors.len();
        let mut replicas = vec![ItemState::new(); n];
        let mut reads: Vec<VersionVector> = Vec::new();
        let mut snapshots = vec![ItemState::new()];
        let mut writes: Vec<WriteRecord> = Vec::new();
        for op in ops {
            match op {
                Op::Write { at, ctx, delete, padding } => {
                    let at = at % n;
                    let actor = actors[at];
                    let client_ctx = match ctx {
                        CtxSource::Empty => VersionVector::new(),
                        CtxSource::ReadNow(j) => replicas[j % n].context().clone(),
                        CtxSource::Saved(mask) => {
                            let mut c = VersionVector::new();
                            for (bit, read) in reads.iter().rev().take(16).enumerate() {
                                if mask & (1 << bit) != 0 {
                                    c.merge(read);
                                }
                            }
                            c
                        }
                    };
                    // Values are unique per write so the no-loss property can track each one.
                    let value = if *delete {
                        Value::Tombstone
                    } else {
                        let mut bytes = format!("w{}", writes.len()).into_bytes();
                        bytes.extend(std::iter::repeat_n(0xab, usize::from(*padding)));
                        Value::Data(bytes)
                    };
                    let local = &replicas[at];
                    let counter = local.context().get(actor).max(client_ctx.get(actor)) + 1;
                    let dot = Dot { actor, counter };
                    let rule = prune.map(|r| Retirement { keep: actor, ..r });
                    let next =
                        local.update_pruning(&client_ctx, value.clone(), actor, rule.as_ref()).unwrap();
                    assert!(next.siblings().contains(&(dot, value.clone())));
                    writes.push(WriteRecord { dot, value, client_ctx });
                    replicas[at] = next;
                    snapshots.push(replicas[at].clone());
                }
                Op::Sync { from, to } => {
                    let source = replicas[from % n].clone();
                    replicas[to % n].merge(&source);
                    if let Some(rule) = prune {
                        replicas[to % n].prune_retired(&Retirement { keep: actors[to % n], ..rule });
                    }
                    snapshots.push(replicas[to % n].clone());
                }
                Op::Read { at } => reads.push(replicas[at % n].context().clone()),
            }
        }
        History { replicas, snapshots, writes }
    }

    /// Version vectors with arbitrary actors and counters, including more entries than one
    /// write may create (merges can produce those, and their tokens must round-trip).
    fn version_vector_strategy() -> impl Strategy<Value = VersionVector> {
        prop::collection::btree_map(any::<u64>(), 1..=u64::MAX, 0..80).prop_map(|entries| VersionVector {
            entries: entries.into_iter().map(|(a, c)| (ActorId(a), c)).collect(),
        })
    }

    /// Structurally valid states that no honest history produces: any context over three
    /// actors, any subset of its dots as siblings, and values from a tiny alphabet so that the
    /// same dot sometimes carries different values. The merge must stay a semilattice even on
    /// such input (a corrupted peer), and these states reach the defensive branches of
    /// `descends` that reachable states never take.
    fn arbitrary_valid_state_strategy() -> impl Strategy<Value = ItemState> {
        (prop::collection::vec(0..4u64, 3), prop::collection::vec((any::<bool>(), 0..3u8), 12)).prop_map(
            |(counters, picks)| {
                let mut ctx = VersionVector::new();
                let mut siblings = Vec::new();
                for (actor, &max) in counters.iter().enumerate() {
                    for counter in 1..=max {
                        let dot = Dot { actor: ActorId(actor as u64), counter };
                        ctx.observe(dot);
                        let (keep, value) = picks[actor * 4 + counter as usize - 1];
                        if keep {
                            let value = if value == 0 { Value::Tombstone } else { Value::Data(vec![value]) };
                            siblings.push((dot, value));
                        }
                    }
                }
                ItemState { ctx, siblings, applied: Vec::new(), fences: Vec::new() }
            },
        )
    }

    /// Proves a data dir that restarts uncleanly 200 times (a new incarnation each time, one
    /// second apart) can still write a hot key that three replicas keep exchanging: retired
    /// incarnations are pruned, by age and beyond the cap, so the context stays bounded.
    #[test]
    fn crash_looping_writer_keeps_a_hot_key_writable() {
        // Replicas converge within one round here; the grace period is a few rounds, or so long
        // that only the cap prunes.
        for grace_ms in [5_000, u64::MAX / 2] {
            let others = [ActorId::incarnation(7, 1), ActorId::incarnation(8, 1)];
            let mut replicas = vec![ItemState::new(); 3];
            let mut looping = ActorId::incarnation(5, 1_000_000);
            for restart in 0..200u64 {
                let now_wall_ms = (1_000 + restart) * 1000 + 500;
                let rule = |keep| Retirement { now_wall_ms, grace_ms, keep };
                // The crash-looping node writes with the context a client read from it, then
                // the others write blind, then everyone merges everything.
                let ctx = replicas[0].context().clone();
                replicas[0] = replicas[0]
                    .update_pruning(&ctx, data("loop"), looping, Some(&rule(looping)))
                    .unwrap_or_else(|e| panic!("restart {restart}, grace {grace_ms}: {e}"));
                for (i, actor) in others.iter().enumerate() {
                    let next = replicas[i + 1].update_pruning(
                        &VersionVector::new(),
                        data("o"),
                        *actor,
                        Some(&rule(*actor)),
                    );
                    replicas[i + 1] = next.unwrap();
                }
                let all = replicas.iter().fold(ItemState::new(), |acc, r| ItemState::merged(&acc, r));
                let keeps = [looping, others[0], others[1]];
                for (replica, keep) in replicas.iter_mut().zip(keeps) {
                    replica.merge(&all);
                    replica.prune_retired(&rule(keep));
                    assert!(replica.context().len() <= RETIRED_ENTRIES_LEN_MAX + 3, "{}", replica.context());
                    // Nothing superseded comes back: the latest loop write and the two blind ones.
                    assert_eq!(replica.siblings().len(), 3, "restart {restart}, grace {grace_ms}");
                }
                looping = looping.successor((1_000 + restart + 1) * 1000).unwrap();
            }
        }
    }

    /// Proves write records are bounded: the newest [`APPLIED_WRITES_LEN_MAX`] stay after many
    /// writes, records past their age go when trimmed, and a state without records still
    /// encodes in the first format, byte for byte.
    #[test]
    fn applied_write_records_are_bounded_and_old_format_is_kept() {
        let plain = ItemState::new().update(&VersionVector::new(), data("x"), ActorId(1)).unwrap();
        assert_eq!(plain.encode()[0], STATE_FORMAT_VERSION);
        let mut s = ItemState::new();
        for n in 0..40u64 {
            let ctx = s.context().clone();
            match s.apply(&ctx, data("v"), ActorId(1), None, Some((WriteId(u128::from(n)), n))).unwrap() {
                Applied::New(next) => s = next,
                Applied::Duplicate { .. } => panic!("write {n} is new"),
            }
        }
        assert_eq!(s.applied_writes().len(), APPLIED_WRITES_LEN_MAX);
        assert!(s.applied_write(WriteId(39)).is_some() && s.applied_write(WriteId(23)).is_none());
        assert_eq!(s.encode()[0], STATE_FORMAT_VERSION_APPLIED);
        assert_eq!(ItemState::decode(&s.encode()), Ok(s.clone()));
        // The oldest record kept is write 24's.
        assert!(!s.needs_trimming(24 + APPLIED_WRITE_AGE_MS_MAX));
        assert!(s.needs_trimming(25 + APPLIED_WRITE_AGE_MS_MAX));
        assert!(s.trim_applied(Some(u64::MAX)));
        assert!(s.applied_writes().is_empty());
        assert_eq!(s.encode()[0], STATE_FORMAT_VERSION);
    }

    /// Proves write ids parse from 32 hex digits or a UUID, and anything else is refused.
    #[test]
    fn write_ids_parse() {
        assert_eq!(WriteId::parse("0000000000000000000000000000002a"), Ok(WriteId(42)));
        assert_eq!(
            WriteId::parse("550e8400-e29b-41d4-a716-446655440000").map(|w| w.to_string()),
            Ok("550e8400e29b41d4a716446655440000".to_string())
        );
        for bad in ["", "42", "zz0e8400e29b41d4a716446655440000", "+50e8400e29b41d4a716446655440000"] {
            assert!(matches!(WriteId::parse(bad), Err(CausalityError::MalformedWriteId(_))), "{bad}");
        }
    }

    /// Proves the actor id layout: successors keep the uid and start strictly later, even when
    /// the clock goes back, and the start field saturates into `None` rather than wrapping.
    #[test]
    fn actor_successor_keeps_uid_and_moves_forward() {
        let a = ActorId::incarnation(0xabcde, 50);
        assert_eq!((a.uid(), a.started_ms()), (0xabcde, 50));
        assert_eq!(a.successor(10), Some(ActorId::incarnation(0xabcde, 51)));
        assert_eq!(a.successor(90), Some(ActorId::incarnation(0xabcde, 90)));
        assert_eq!(ActorId::incarnation(1, u64::MAX).successor(0), None);
    }

    /// Proves an entry is pruned only when a later incarnation of its data dir is in the
    /// context, it has no live sibling, it is not the replica's own actor and its retirement is
    /// older than the grace period.
    #[test]
    fn pruning_needs_retirement_no_live_sibling_and_age() {
        let (old, new, other) = (
            ActorId::incarnation(1, 10_000),
            ActorId::incarnation(1, 20_000),
            ActorId::incarnation(2, 5_000),
        );
        let s = ItemState::new().update(&VersionVector::new(), data("a"), old).unwrap();
        let s = s.update(s.context(), data("b"), other).unwrap();
        let s = s.update(&VersionVector::new(), data("c"), new).unwrap();
        let rule = |now_wall_ms, keep| Retirement { now_wall_ms, grace_ms: 1_000, keep };
        // `old`'s write was superseded by `other`'s, and `new` (started at 20 s) retired it.
        assert!(!s.needs_pruning(&rule(21_000, other)), "retired less than the grace period ago");
        assert!(!s.needs_pruning(&rule(22_000, old)), "the replica's own actor");
        let mut pruned = s.clone();
        assert!(pruned.prune_retired(&rule(21_001, other)));
        assert_eq!(pruned.context().get(old), 0);
        assert_eq!((pruned.context().get(other), pruned.context().get(new)), (1, 1));
        // A live sibling keeps its actor's entry.
        let live = ItemState::new().update(&VersionVector::new(), data("a"), old).unwrap();
        let live = live.update(&VersionVector::new(), data("c"), new).unwrap();
        assert!(!live.needs_pruning(&rule(u64::MAX, other)));
    }

    proptest! {
        // -----------------------------------------------------------------------------------
        // Lattice laws
        // -----------------------------------------------------------------------------------

        /// Proves a ⊔ b = b ⊔ a on reachable states.
        #[test]
        fn merge_is_commutative(h in history_strategy(), i in any::<Index>(), j in any::<Index>()) {
            let (a, b) = (i.get(&h.snapshots), j.get(&h.snapshots));
            prop_assert_eq!(ItemState::merged(a, b), ItemState::merged(b, a));
        }

        /// Proves (a ⊔ b) ⊔ c = a ⊔ (b ⊔ c) on reachable states.
        #[test]
        fn merge_is_associative(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(), k in any::<Index>(),
        ) {
            let (a, b, c) = (i.get(&h.snapshots), j.get(&h.snapshots), k.get(&h.snapshots));
            prop_assert_eq!(
                ItemState::merged(&ItemState::merged(a, b), c),
                ItemState::merged(a, &ItemState::merged(b, c))
            );
        }

        /// Proves a ⊔ a = a on reachable states.
        #[test]
        fn merge_is_idempotent(h in history_strategy(), i in any::<Index>()) {
            let a = i.get(&h.snapshots);
            prop_assert_eq!(&ItemState::merged(a, a), a);
        }

        /// Proves the fast `descends` agrees with its definition a ⊒ b ⇔ a ⊔ b = a, for item
        /// states and for version vectors.
        #[test]
        fn descends_matches_merge_definition(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(),
        ) {
            let (a, b) = (i.get(&h.snapshots), j.get(&h.snapshots));
            prop_assert_eq!(a.descends(b), &ItemState::merged(a, b) == a);
            let (x, y) = (a.context(), b.context());
            prop_assert_eq!(x.descends(y), &merge_via_join(x, y) == x);
        }

        /// Proves a merge result descends both inputs and keeps the structural invariants.
        #[test]
        fn merge_result_descends_both_inputs(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(),
        ) {
            let (a, b) = (i.get(&h.snapshots), j.get(&h.snapshots));
            let m = ItemState::merged(a, b);
            prop_assert!(m.descends(a));
            prop_assert!(m.descends(b));
            prop_assert_eq!(m.check_invariants(), Ok(()));
        }

        /// Proves a write never loses what its replica knew: update(s, …) ⊒ s.
        #[test]
        fn update_result_descends_local_state(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(), actor in any::<u64>(),
        ) {
            let local = i.get(&h.snapshots);
            let client_ctx = j.get(&h.snapshots).context();
            let next = local.update(client_ctx, data("new"), ActorId(actor)).unwrap();
            prop_assert!(next.descends(local));
            prop_assert!(next.context().descends(client_ctx));
            prop_assert_eq!(next.check_invariants(), Ok(()));
        }

        /// Proves every lattice law, and descends ⇔ (a ⊔ b = a), also on structurally valid states
        /// that no honest history produces (e.g. one dot carrying two values).
        #[test]
        fn lattice_laws_hold_on_arbitrary_valid_states(
            a in arbitrary_valid_state_strategy(),
            b in arbitrary_valid_state_strategy(),
            c in arbitrary_valid_state_strategy(),
        ) {
            let ab = ItemState::merged(&a, &b);
            prop_assert_eq!(&ab, &ItemState::merged(&b, &a));
            prop_assert_eq!(
                ItemState::merged(&ab, &c),
                ItemState::merged(&a, &ItemState::merged(&b, &c))
            );
            prop_assert_eq!(&ItemState::merged(&a, &a), &a);
            prop_assert_eq!(a.descends(&b), ab == a);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
            prop_assert_eq!(ab.check_invariants(), Ok(()));
            prop_assert_eq!(ItemState::decode(&a.encode()), Ok(a.clone()));
        }

        // -----------------------------------------------------------------------------------
        // No lost writes
        // -----------------------------------------------------------------------------------

        /// Proves no acknowledged concurrent write is lost by a merge: after joining every
        /// replica's final state in any order, the siblings are exactly the writes whose dot no
        /// write's client context covered (tombstones included), and every superseded write is
        /// gone. `values()` then lists the surviving data in dot order.
        #[test]
        fn no_acknowledged_concurrent_write_is_lost(
            (h, order) in history_strategy().prop_flat_map(|h| {
                let n = h.replicas.len();
                (Just(h), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            }),
        ) {
            let mut all = ItemState::new();
            for &r in &order {
                all.merge(&h.replicas[r]);
            }
            let mut expected: Vec<(Dot, Value)> = h
                .writes
                .iter()
                .filter(|w| !h.writes.iter().any(|later| later.client_ctx.covers(w.dot)))
                .map(|w| (w.dot, w.value.clone()))
                .collect();
            expected.sort_by_key(|(dot, _)| *dot);
            prop_assert_eq!(all.siblings(), expected.as_slice());
            let expected_values: Vec<&[u8]> = expected
                .iter()
                .filter_map(|(_, v)| match v { Value::Data(b) => Some(b.as_slice()), _ => None })
                .collect();
            prop_assert_eq!(all.values(), expected_values);
            prop_assert_eq!(all.is_deleted(), !expected.iter().any(|(_, v)| matches!(v, Value::Data(_))));
        }

        // -----------------------------------------------------------------------------------
        // Idempotent writes (write ids)
        // -----------------------------------------------------------------------------------

        /// Proves any number of redeliveries of one write, at any replicas, in any order, leave
        /// one version of it: applied at replica `a`, then redelivered `k` times to `a` and to
        /// replica `b` (which may or may not have seen it) and gossiped, the converged state
        /// holds the value exactly once and equals the join of the states, as after a single
        /// delivery followed by the same gossip.
        #[test]
        fn redelivered_write_leaves_one_version(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(),
            actors in (any::<u64>(), any::<u64>()), k in 1..5usize, b_first in any::<bool>(),
        ) {
            let (a, b) = (i.get(&h.snapshots).clone(), j.get(&h.snapshots).clone());
            let (actor_a, actor_b) = (ActorId(actors.0), ActorId(actors.1 ^ 1 ^ actors.0));
            let id = Some((WriteId(7), 1_000));
            let ctx = a.context().clone();
            let apply = |s: &ItemState, actor| match s.apply(&ctx, data("once"), actor, None, id).unwrap() {
                Applied::New(next) => next,
                Applied::Duplicate { .. } => s.clone(),
            };
            let a1 = apply(&a, actor_a);
            // One delivery: a1, then b learns it by gossip.
            let single = ItemState::merged(&b, &a1);
            // Many: redelivered to a (duplicates) and to b, before or after b heard of a1.
            let mut a2 = a1.clone();
            let mut b2 = if b_first { apply(&b, actor_b) } else { ItemState::merged(&b, &a1) };
            for _ in 0..k {
                a2 = apply(&a2, actor_a);
                b2 = apply(&b2, actor_b);
            }
            prop_assert_eq!(&a2, &a1, "a duplicate changed the state at its coordinator");
            let many = ItemState::merged(&b2, &a2);
            // Both versions may be stored; clients see the write once.
            let count = many.values().iter().filter(|v| **v == b"once").count();
            prop_assert_eq!(count, 1, "{:?}", many);
            // The surviving version may be b's (the smaller dot wins), so compare as sets.
            let (mut got, mut want) = (many.values(), single.values());
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(ItemState::merged(&a2, &b2), many.clone());
            prop_assert_eq!(many.check_invariants(), Ok(()));
            prop_assert_eq!(ItemState::decode(&many.encode()), Ok(many.clone()));
        }

        /// Proves the merge stays a semilattice on states with write records, duplicates
        /// included: commutative, associative, idempotent, and `descends` matches it.
        #[test]
        fn merge_laws_hold_with_write_records(
            h in history_strategy(), i in any::<Index>(), j in any::<Index>(), l in any::<Index>(),
            ids in prop::collection::vec((0..3u128, any::<bool>()), 3),
        ) {
            // Each of three states applies a write with one of three ids, some concurrently.
            let states: Vec<ItemState> = [i, j, l]
                .iter()
                .zip(&ids)
                .enumerate()
                .map(|(n, (x, (id, blind)))| {
                    let s = x.get(&h.snapshots);
                    let ctx = if *blind { VersionVector::new() } else { s.context().clone() };
                    let value = data(&format!("id{id}"));
                    match s.apply(&ctx, value, ActorId(1000 + n as u64), None, Some((WriteId(*id), n as u64))).unwrap() {
                        Applied::New(next) => next,
                        Applied::Duplicate { .. } => s.clone(),
                    }
                })
                .collect();
            let (a, b, c) = (&states[0], &states[1], &states[2]);
            let ab = ItemState::merged(a, b);
            prop_assert_eq!(&ab, &ItemState::merged(b, a));
            prop_assert_eq!(ItemState::merged(&ab, c), ItemState::merged(a, &ItemState::merged(b, c)));
            prop_assert_eq!(&ItemState::merged(a, a), a);
            prop_assert_eq!(a.descends(b), &ab == a);
            prop_assert!(ab.descends(a) && ab.descends(b));
            prop_assert_eq!(ab.check_invariants(), Ok(()));
            prop_assert_eq!(ItemState::decode(&ab.encode()), Ok(ab.clone()));
        }

        /// Proves the write-id rules against an oracle, on histories where writes are applied
        /// more than once (hedged and retried at other replicas) and gossiped in any order,
        /// with clients superseding what they read: in the join of all replicas, every write
        /// no client superseded (no client context covered any of its versions) is seen by
        /// readers exactly once, and every superseded one is gone.
        #[test]
        fn hedged_writes_converge_to_one_version_and_supersede_cleanly(
            ops in prop::collection::vec(hedge_op_strategy(), 0..40),
            order in Just((0..3usize).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let actors = [ActorId(10), ActorId(20), ActorId(30)];
            let mut replicas = vec![ItemState::new(); 3];
            // Per logical write: value, versions minted, contexts of the clients that wrote.
            let mut writes: Vec<(Value, Vec<Dot>, VersionVector)> = Vec::new();
            let mut client_ctxs: Vec<VersionVector> = Vec::new();
            for op in &ops {
                match *op {
                    HedgeOp::Write { at, read_from, blind } => {
                        let ctx = if blind { VersionVector::new() } else { replicas[read_from].context().clone() };
                        let n = writes.len();
                        let value = data(&format!("w{n}"));
                        let id = WriteId(n as u128);
                        let applied = replicas[at]
                            .apply(&ctx, value.clone(), actors[at], None, Some((id, n as u64)))
                            .unwrap();
                        let Applied::New(next) = applied else { panic!("a fresh id is new") };
                        let dot = Dot { actor: actors[at], counter: next.context().get(actors[at]) };
                        replicas[at] = next;
                        client_ctxs.push(ctx.clone());
                        writes.push((value, vec![dot], ctx));
                    }
                    HedgeOp::Hedge { which, at } => {
                        let Some(n) = writes.len().checked_sub(1 + which % 3) else { continue };
                        let (value, _, ctx) = writes[n].clone();
                        match replicas[at].apply(&ctx, value, actors[at], None, Some((WriteId(n as u128), n as u64))).unwrap() {
                            Applied::New(next) => {
                                let dot = Dot { actor: actors[at], counter: next.context().get(actors[at]) };
                                replicas[at] = next;
                                writes[n].1.push(dot);
                            }
                            Applied::Duplicate { .. } => {}
                        }
                    }
                    HedgeOp::Sync { from, to } => {
                        let source = replicas[from].clone();
                        replicas[to].merge(&source);
                    }
                }
            }
            let mut all = ItemState::new();
            for &r in &order {
                all.merge(&replicas[r]);
            }
            prop_assert_eq!(all.check_invariants(), Ok(()));
            for (n, (value, dots, _)) in writes.iter().enumerate() {
                let superseded = client_ctxs.iter().any(|c| dots.iter().any(|d| c.covers(*d)));
                let Value::Data(bytes) = value else { unreachable!("writes store data") };
                let count = all.values().iter().filter(|v| **v == bytes.as_slice()).count();
                if superseded {
                    prop_assert_eq!(count, 0, "write {} (versions {:?}) was superseded but is in {:?}", n, dots, all);
                } else {
                    prop_assert_eq!(count, 1, "write {} (versions {:?}) must be there once: {:?}", n, dots, all);
                }
            }
        }

        // -----------------------------------------------------------------------------------
        // Pruning retired actors
        // -----------------------------------------------------------------------------------

        /// Proves pruning a state never makes a merge drop a sibling it would otherwise keep
        /// (pruning only shrinks what a context covers), keeps the invariants and is idempotent.
        #[test]
        fn pruning_never_drops_a_sibling_a_merge_keeps(
            (h, rule, _) in incarnations_history_strategy(), i in any::<Index>(), j in any::<Index>(),
        ) {
            let (a, b) = (i.get(&h.snapshots), j.get(&h.snapshots));
            let mut pruned = a.clone();
            pruned.prune_retired(&rule);
            prop_assert_eq!(pruned.check_invariants(), Ok(()));
            prop_assert_eq!(pruned.siblings(), a.siblings());
            prop_assert!(!pruned.needs_pruning(&rule));
            let mut again = pruned.clone();
            prop_assert!(!again.prune_retired(&rule));
            for (with, without) in [
                (ItemState::merged(&pruned, b), ItemState::merged(a, b)),
                (ItemState::merged(b, &pruned), ItemState::merged(b, a)),
            ] {
                for sibling in without.siblings() {
                    prop_assert!(with.siblings().contains(sibling), "pruning lost {:?}", sibling);
                }
            }
        }

        /// Proves no acknowledged concurrent write is lost when every replica prunes retired
        /// actors as it writes and merges: each write no client context covered survives the
        /// join of all replicas (pruning may at most keep superseded ones as well).
        #[test]
        fn no_acknowledged_write_is_lost_with_pruning(
            ((h, _, _), order) in incarnations_history_strategy().prop_flat_map(|x| {
                let n = x.0.replicas.len();
                (Just(x), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            }),
        ) {
            let mut all = ItemState::new();
            for &r in &order {
                all.merge(&h.replicas[r]);
            }
            for w in &h.writes {
                if !h.writes.iter().any(|later| later.client_ctx.covers(w.dot)) {
                    prop_assert!(all.siblings().contains(&(w.dot, w.value.clone())), "lost {}", w.dot);
                }
            }
        }

        // -----------------------------------------------------------------------------------
        // Codecs
        // -----------------------------------------------------------------------------------

        /// Proves the state encoding round-trips on reachable states and that the length hint
        /// is exact.
        #[test]
        fn state_codec_roundtrip(h in history_strategy(), i in any::<Index>()) {
            let state = i.get(&h.snapshots);
            let bytes = state.encode();
            prop_assert_eq!(bytes.len(), state.encoded_len_hint());
            prop_assert_eq!(&ItemState::decode(&bytes).unwrap(), state);
        }

        /// Proves tokens round-trip, including vectors longer than one write may create, and that
        /// every vector up to the write limit yields a token within the accepted length.
        #[test]
        fn token_roundtrip(vv in version_vector_strategy()) {
            let token = vv.to_token();
            prop_assert_eq!(VersionVector::from_token(&token).unwrap(), vv.clone());
            if vv.len() <= VERSION_VECTOR_LEN_MAX {
                prop_assert!(token.len() <= CONTEXT_TOKEN_CHARS_MAX);
            }
        }

        /// Proves decode never panics on arbitrary bytes, and whatever it accepts is canonical
        /// (re-encodes to the same bytes) and satisfies the invariants.
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(
            versioned in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut input = bytes;
            if versioned {
                input.insert(0, STATE_FORMAT_VERSION);
            }
            if let Ok(state) = ItemState::decode(&input) {
                prop_assert_eq!(state.encode(), input);
                prop_assert_eq!(state.check_invariants(), Ok(()));
            }
        }

        /// Proves decode never panics on near-valid input (a reachable state's encoding with one
        /// byte changed, inserted or cut off) and accepts only canonical, valid states.
        #[test]
        fn decode_never_panics_on_mutated_encodings(
            h in history_strategy(), i in any::<Index>(), at in any::<Index>(),
            kind in 0..3u8, byte in any::<u8>(),
        ) {
            let mut input = i.get(&h.snapshots).encode();
            let position = at.index(input.len());
            match kind {
                0 => input[position] = byte,
                1 => input.insert(position, byte),
                _ => input.truncate(position),
            }
            if let Ok(state) = ItemState::decode(&input) {
                prop_assert_eq!(state.encode(), input);
                prop_assert_eq!(state.check_invariants(), Ok(()));
            }
        }

        /// Proves from_token never panics on arbitrary text, on arbitrary base64-alphabet text,
        /// or on text that starts like a version-1 token, and accepts only canonical tokens.
        #[test]
        fn from_token_never_panics_on_arbitrary_strings(
            any_text in any::<String>(),
            alphabet in "[A-Za-z0-9_-]{0,80}",
            versioned in "A[Q-Za-f][A-Za-z0-9_-]{0,80}",
        ) {
            for s in [any_text, alphabet, versioned] {
                if let Ok(vv) = VersionVector::from_token(&s) {
                    prop_assert_eq!(vv.to_token(), s);
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Write semantics
    // ---------------------------------------------------------------------------------------

    /// Proves a write carrying the context of a read supersedes exactly what that read saw: a
    /// concurrent write elsewhere survives, the values read do not.
    #[test]
    fn update_supersedes_exactly_the_versions_the_reader_saw() {
        let (a, b) = (1, 2);
        let s = write(&ItemState::new(), &VersionVector::new(), data("v1"), a);
        let s = write(&s, &VersionVector::new(), data("v2"), a); // blind: sibling of v1
        assert_eq!(values(&s), ["v1", "v2"]);

        // Replica b has S and takes a concurrent write W2 that did not see S.
        let mut at_b = s.clone();
        at_b = write(&at_b, &VersionVector::new(), data("w2"), b);

        // Meanwhile a client read S and writes back with S's context at replica a.
        let read_ctx = s.context().clone();
        let at_a = write(&s, &read_ctx, data("resolved"), a);
        assert_eq!(values(&at_a), ["resolved"]);

        let both = ItemState::merged(&at_a, &at_b);
        assert_eq!(values(&both), ["resolved", "w2"]);
        assert_eq!(both, ItemState::merged(&at_b, &at_a));
    }

    /// Proves a blind write (empty context) becomes a sibling of everything present.
    #[test]
    fn blind_write_is_concurrent_with_everything() {
        let s = write(&ItemState::new(), &VersionVector::new(), data("x"), 1);
        let s = write(&s, &VersionVector::new(), data("y"), 2);
        let s = write(&s, &VersionVector::new(), data("z"), 1);
        assert_eq!(values(&s), ["x", "z", "y"]); // dot order: 1:1, 1:2, 2:1
        assert_eq!(s.context(), &vv(&[(1, 2), (2, 1)]));
    }

    /// Proves the new dot outruns the client's context, so an actor whose counter restarted
    /// (wiped data dir) never reissues a dot a client already saw.
    #[test]
    fn new_dot_outruns_client_context_after_counter_restart() {
        let client_ctx = vv(&[(7, 5)]);
        let s = write(&ItemState::new(), &client_ctx, data("after wipe"), 7);
        assert_eq!(s.siblings()[0].0, Dot { actor: ActorId(7), counter: 6 });
    }

    // ---------------------------------------------------------------------------------------
    // Tombstones
    // ---------------------------------------------------------------------------------------

    /// Proves a delete with the read context hides the item and everything it saw.
    #[test]
    fn delete_with_context_marks_item_deleted() {
        let s = write(&ItemState::new(), &VersionVector::new(), data("v"), 1);
        let d = write(&s, &s.context().clone(), Value::Tombstone, 1);
        assert!(d.is_deleted());
        assert!(d.has_tombstone());
        assert!(!d.is_empty());
        assert!(d.values().is_empty());
        assert!(ItemState::new().is_deleted() && ItemState::new().is_empty());
        // A replica that still holds the value converges to the delete.
        assert!(ItemState::merged(&s, &d).is_deleted());
    }

    /// Proves a write concurrent with a delete survives it, and a later write with the merged
    /// context clears the tombstone.
    #[test]
    fn concurrent_write_and_delete_keep_the_write() {
        let s = write(&ItemState::new(), &VersionVector::new(), data("v"), 1);
        let deleted = write(&s, &s.context().clone(), Value::Tombstone, 1);
        let rewritten = write(&s, &s.context().clone(), data("new"), 2);
        let both = ItemState::merged(&deleted, &rewritten);
        assert!(!both.is_deleted());
        assert!(both.has_tombstone());
        assert_eq!(values(&both), ["new"]);

        let resolved = write(&both, &both.context().clone(), data("final"), 1);
        assert!(!resolved.has_tombstone());
        assert_eq!(values(&resolved), ["final"]);
    }

    // ---------------------------------------------------------------------------------------
    // Limits
    // ---------------------------------------------------------------------------------------

    /// Proves a write that would exceed the sibling limit is refused with a typed error and
    /// that writing back with the context resolves the siblings.
    #[test]
    fn too_many_siblings_is_refused_not_grown() {
        let mut s = ItemState::new();
        for i in 0..SIBLINGS_LEN_MAX {
            s = write(&s, &VersionVector::new(), data(&format!("v{i}")), 1);
        }
        assert_eq!(s.siblings().len(), SIBLINGS_LEN_MAX);
        let err = s.update(&VersionVector::new(), data("one more"), ActorId(1)).unwrap_err();
        assert_eq!(err, CausalityError::TooManySiblings { max: SIBLINGS_LEN_MAX });
        assert!(err.to_string().contains("write back with its causality token"));

        let resolved = write(&s, &s.context().clone(), data("merged"), 1);
        assert_eq!(values(&resolved), ["merged"]);
    }

    /// Proves a state that merges pushed past the sibling limit still accepts writes that do not
    /// grow it, and refuses ones that do.
    #[test]
    fn overfull_merged_state_accepts_writes_that_do_not_grow_it() {
        let mut a = ItemState::new();
        let mut b = ItemState::new();
        for i in 0..SIBLINGS_LEN_MAX {
            a = write(&a, &VersionVector::new(), data(&format!("a{i}")), 1);
            b = write(&b, &VersionVector::new(), data(&format!("b{i}")), 2);
        }
        let full = ItemState::merged(&a, &b);
        assert_eq!(full.siblings().len(), 2 * SIBLINGS_LEN_MAX);
        // The merged state is stored and read back, so decode must accept it.
        assert_eq!(ItemState::decode(&full.encode()).unwrap(), full);

        let blind = full.update(&VersionVector::new(), data("x"), ActorId(1));
        assert_eq!(blind, Err(CausalityError::TooManySiblings { max: SIBLINGS_LEN_MAX }));
        // Supersedes all of a's siblings: shrinks the item, so it is accepted.
        let shrink = write(&full, a.context(), data("x"), 1);
        assert_eq!(shrink.siblings().len(), SIBLINGS_LEN_MAX + 1);
    }

    /// Proves a write whose context would name too many actors is refused with a typed error.
    #[test]
    fn version_vector_too_long_is_refused() {
        let entries: Vec<(u64, u64)> = (1..=VERSION_VECTOR_LEN_MAX as u64).map(|a| (a, 1)).collect();
        let client_ctx = vv(&entries);
        // The writing actor is already in the context: the result does not grow, so it is fine.
        assert!(ItemState::new().update(&client_ctx, data("ok"), ActorId(1)).is_ok());
        // A new actor would make it one too many.
        let err = ItemState::new().update(&client_ctx, data("no"), ActorId(0)).unwrap_err();
        assert_eq!(err, CausalityError::VersionVectorTooLong { max: VERSION_VECTOR_LEN_MAX });
    }

    /// Proves an exhausted counter (only reachable with a forged token or state) is a typed
    /// error, not an overflow panic.
    #[test]
    fn counter_overflow_is_a_typed_error() {
        let forged = vv(&[(1, u64::MAX)]);
        let err = ItemState::new().update(&forged, data("x"), ActorId(1)).unwrap_err();
        assert!(matches!(err, CausalityError::MalformedToken(ref m) if m.contains("maximum")));
    }

    /// Proves merge stays deterministic if a corrupted peer sends the same dot with a different
    /// value: both orders pick the same value, and descends agrees.
    #[test]
    fn merge_breaks_conflicting_dot_ties_deterministically() {
        let a = write(&ItemState::new(), &VersionVector::new(), data("a"), 1);
        let b = write(&ItemState::new(), &VersionVector::new(), data("b"), 1);
        assert_eq!(a.siblings()[0].0, b.siblings()[0].0);
        assert_eq!(ItemState::merged(&a, &b), ItemState::merged(&b, &a));
        assert_eq!(values(&ItemState::merged(&a, &b)), ["b"]);
        assert!(!a.descends(&b));
        assert!(b.descends(&a));
    }

    // ---------------------------------------------------------------------------------------
    // Codecs: fixtures and malformed input
    // ---------------------------------------------------------------------------------------

    /// Proves the token format is pinned: a known vector gives known bytes and text, and the
    /// empty vector gives the valid token "AQA".
    #[test]
    fn token_format_is_pinned() {
        assert_eq!(VersionVector::new().to_token(), "AQA");
        assert_eq!(VersionVector::from_token("AQA").unwrap(), VersionVector::new());
        let v = vv(&[(0x0102_0304_0506_0708, 3), (0xff, 1)]);
        let token = v.to_token();
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let expected: &[u8] = &[
            1, 2, // version, count
            0xff, 0, 0, 0, 0, 0, 0, 0, 1, // actor 0xff, counter 1
            8, 7, 6, 5, 4, 3, 2, 1, 3, // actor 0x0102030405060708, counter 3
        ];
        assert_eq!(bytes, expected);
        assert_eq!(token, "AQL_AAAAAAAAAAEIBwYFBAMCAQM");
    }

    /// Proves the state format is pinned, so a change to it cannot slip by unnoticed (stored
    /// data would become unreadable).
    #[test]
    fn state_format_is_pinned() {
        let s = write(&ItemState::new(), &VersionVector::new(), Value::Tombstone, 1);
        let s = write(&s, &VersionVector::new(), data("hi"), 0xff);
        let s = write(&s, &vv(&[(0xff, 1)]), data("hi"), 0xff);
        let expected: &[u8] = &[
            1, // version
            2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 2, // ctx {1:1, ff:2}
            2, // two siblings
            1, 0, 0, 0, 0, 0, 0, 0, 1, 0, // 1:1 tombstone
            0xff, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, b'h', b'i', // ff:2 data "hi"
        ];
        assert_eq!(s.encode(), expected);
        assert_eq!(ItemState::decode(expected).unwrap(), s);
        assert_eq!(ItemState::new().encode(), [1, 0, 0]);
        let empty_value = write(&ItemState::new(), &VersionVector::new(), Value::Data(vec![]), 1);
        assert_eq!(ItemState::decode(&empty_value.encode()).unwrap(), empty_value);
        assert_eq!(empty_value.values(), [&[] as &[u8]]);
    }

    /// Proves from_token rejects each malformed case with a clear message.
    #[test]
    fn from_token_rejects_each_malformed_case() {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let one_entry = |actor: u8, counter: u8| [actor, 0, 0, 0, 0, 0, 0, 0, counter];
        let cases: Vec<(String, &str)> = vec![
            ("A".repeat(CONTEXT_TOKEN_CHARS_MAX + 1), "the limit is 4096"),
            (String::new(), "token is empty"),
            ("AQA=".into(), "not URL-safe base64"),
            ("AQ+A".into(), "not URL-safe base64"),
            ("AQ A".into(), "not URL-safe base64"),
            ("AQB".into(), "not URL-safe base64"), // non-zero trailing bits
            (b64(&[2, 0]), "unsupported format version 2"),
            (b64(&[1]), "truncated"),
            (b64(&[1, 1, 5, 0, 0]), "truncated: version vector claims 1 entries"),
            (b64(&[1, 0, 0]), "1 unexpected trailing bytes"),
            (b64(&[[1, 1].as_slice(), &one_entry(5, 0)].concat()), "has counter 0"),
            (b64(&[[1, 2].as_slice(), &one_entry(5, 1), &one_entry(5, 2)].concat()), "sorted and unique"),
            (b64(&[[1, 2].as_slice(), &one_entry(6, 1), &one_entry(5, 1)].concat()), "sorted and unique"),
            (b64(&[1, 0x80, 0]), "not minimally encoded"),
            (b64(&[[1, 1].as_slice(), &[5, 0, 0, 0, 0, 0, 0, 0], &[0xff; 9], &[2]].concat()), "overflows"),
            (b64(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]), "claims 4294967295 entries"),
        ];
        for (token, expected) in cases {
            let err = VersionVector::from_token(&token).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, CausalityError::MalformedToken(_)), "{token}: {message}");
            assert!(message.starts_with("malformed causality token: "), "{message}");
            assert!(message.contains(expected), "{token:?}: {message:?} lacks {expected:?}");
        }
    }

    /// Proves decode rejects each malformed case with a clear message.
    #[test]
    fn decode_rejects_each_malformed_case() {
        let actor = |a: u8| [a, 0, 0, 0, 0, 0, 0, 0];
        let ctx_1_2: Vec<u8> = [[1u8].as_slice(), &actor(1), &[2]].concat(); // {1:2}
        let cat = |parts: &[&[u8]]| parts.concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated: input ends inside the format version"),
            (vec![9, 0, 0], "unsupported format version 9"),
            (vec![1, 0], "truncated: input ends inside the sibling list length"),
            (vec![1, 0, 0, 0], "1 unexpected trailing bytes"),
            (vec![1, 0, 5], "sibling list claims 5 entries"),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[0, 0]]), "counters start at 1"),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[3, 0]]), "not covered by the context"),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(2), &[1, 0]]), "not covered by the context"),
            (cat(&[&[1], &ctx_1_2, &[2], &actor(1), &[2, 0], &actor(1), &[1, 0]]), "sorted and unique"),
            (cat(&[&[1], &ctx_1_2, &[2], &actor(1), &[1, 0], &actor(1), &[1, 0]]), "sorted and unique"),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[1, 7]]), "unknown kind byte 7"),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[1, 1, 5, b'a']]), "value claims 5 bytes"),
            (
                cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[1, 1], &[0xff; 9], &[1]]),
                "value claims 18446744073709551615 bytes",
            ),
            (cat(&[&[1], &ctx_1_2, &[1], &actor(1), &[1, 1, 0x81, 0]]), "not minimally encoded"),
            (cat(&[&[1, 1], &actor(1), &[0], &[0]]), "has counter 0"),
        ];
        for (bytes, expected) in cases {
            let err = ItemState::decode(&bytes).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, CausalityError::MalformedState(_)), "{bytes:?}: {message}");
            assert!(message.starts_with("malformed item state: "), "{message}");
            assert!(message.contains(expected), "{bytes:?}: {message:?} lacks {expected:?}");
        }
    }

    /// Proves the human-readable forms used in logs and error messages.
    #[test]
    fn display_formats() {
        assert_eq!(ActorId(0xff).to_string(), "00000000000000ff");
        assert_eq!(Dot { actor: ActorId(1), counter: 2 }.to_string(), "0000000000000001:2");
        assert_eq!(VersionVector::new().to_string(), "{}");
        assert_eq!(
            vv(&[(0x3f2a_9c01_d4e5_b6a7, 3), (0xff, 1)]).to_string(),
            "{00000000000000ff:1, 3f2a9c01d4e5b6a7:3}"
        );
    }

    /// Proves varint_len agrees with write_varint at every length boundary.
    #[test]
    fn varint_len_matches_encoding() {
        for shift in 0..64 {
            for value in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1, u64::MAX] {
                let mut out = Vec::new();
                write_varint(&mut out, value);
                assert_eq!(out.len(), varint_len(value), "{value}");
                assert_eq!(Reader::new(&out).varint("v"), Ok(value));
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Fenced writes

    /// One step of a fenced history over three replicas: a write at a replica (under a token
    /// of the one fence name, or unfenced; with the replica's context or blind), or a merge.
    #[derive(Clone, Debug)]
    enum FencedStep {
        Write { at: usize, token: Option<u64>, blind: bool },
        Merge { from: usize, to: usize },
    }

    fn fenced_history_strategy() -> impl Strategy<Value = Vec<FencedStep>> {
        let step = prop_oneof![
            (0..3usize, prop::option::weighted(0.8, 1..5u64), any::<bool>())
                .prop_map(|(at, token, blind)| FencedStep::Write { at, token, blind }),
            (0..3usize, 0..3usize).prop_map(|(from, to)| FencedStep::Merge { from, to }),
        ];
        prop::collection::vec(step, 1..40)
    }

    fn fence(token: u64) -> Fence {
        Fence { name: "scheduler".into(), token }
    }

    proptest! {
        /// Proves, over random fenced histories: the merge stays commutative, associative and
        /// idempotent; a write under a token below the item's is refused; once everything is
        /// merged no version written under a lower token than the highest accepted survives;
        /// and fenced states round-trip through the encoding.
        #[test]
        fn fenced_merges_keep_only_the_highest_token(steps in fenced_history_strategy()) {
            let mut replicas = vec![ItemState::new(); 3];
            let mut written: Vec<(Dot, Option<u64>)> = Vec::new();
            for (n, step) in steps.iter().enumerate() {
                match step {
                    FencedStep::Write { at, token, blind } => {
                        let s = &replicas[*at];
                        let ctx = if *blind { VersionVector::new() } else { s.context().clone() };
                        let actor = ActorId(*at as u64 + 1);
                        let value = Value::Data(vec![n as u8]);
                        let result = match token {
                            Some(t) => s.apply_fenced(&ctx, value, actor, None, None, &fence(*t)),
                            None => s.apply(&ctx, value, actor, None, None),
                        };
                        match (result, token) {
                            (Ok(Applied::New(next)), _) => {
                                written.push((Dot { actor, counter: next.context().get(actor) }, *token));
                                replicas[*at] = next;
                            }
                            (Err(CausalityError::Fenced { current, token: t, .. }), Some(_)) => {
                                prop_assert!(current > t);
                                prop_assert_eq!(s.fence_token("scheduler"), Some(current));
                            }
                            (other, _) => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    FencedStep::Merge { from, to } => {
                        let from_state = replicas[*from].clone();
                        replicas[*to].merge(&from_state);
                    }
                }
                for r in &replicas {
                    prop_assert_eq!(ItemState::decode(&r.encode()), Ok(r.clone()));
                }
            }
            let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
            prop_assert_eq!(ItemState::merged(a, b), ItemState::merged(b, a));
            prop_assert_eq!(
                ItemState::merged(&ItemState::merged(a, b), c),
                ItemState::merged(a, &ItemState::merged(b, c))
            );
            prop_assert_eq!(ItemState::merged(a, a), a.clone());
            let all = ItemState::merged(&ItemState::merged(a, b), c);
            prop_assert!(all.descends(a) && all.descends(b) && all.descends(c));
            let highest = written.iter().filter_map(|(_, t)| *t).max();
            for (dot, token) in &written {
                let live = all.siblings().iter().any(|(d, _)| d == dot);
                if let (Some(t), Some(h)) = (token, highest) {
                    if *t < h {
                        prop_assert!(!live, "{} written under token {} survives token {}", dot, t, h);
                    }
                }
            }
        }
    }

    /// Proves the three rules on a concrete zombie: the new holder's write supersedes the old
    /// holder's, the old holder is refused where the new token is known, and its write that
    /// reached another replica first is dropped by the merge.
    #[test]
    fn a_zombie_holders_write_never_resurfaces() {
        let empty = VersionVector::new();
        let new = |s: &ItemState, t, actor| match s.apply_fenced(
            &empty,
            data("x"),
            ActorId(actor),
            None,
            None,
            &fence(t),
        ) {
            Ok(Applied::New(n)) => n,
            other => panic!("{other:?}"),
        };
        let r1 = new(&ItemState::new(), 7, 1);
        // The zombie (token 5) is refused where token 7 is known...
        assert_eq!(
            r1.apply_fenced(&empty, data("zombie"), ActorId(1), None, None, &fence(5)),
            Err(CausalityError::Fenced { name: "scheduler".into(), token: 5, current: 7 })
        );
        // ...but lands on a replica that has not heard of token 7; the merge drops it.
        let r2 = new(&ItemState::new(), 5, 2);
        let merged = ItemState::merged(&r2, &r1);
        assert_eq!(merged.values(), vec![&b"x"[..]]);
        assert_eq!(merged.fence_token("scheduler"), Some(7));
        assert_eq!(merged, ItemState::merged(&r1, &r2));
        // Unfenced writes are untouched, and a token of 0 is malformed.
        let plain = r1.apply(&empty, data("plain"), ActorId(3), None, None).unwrap();
        let Applied::New(plain) = plain else { panic!("new") };
        assert_eq!(ItemState::merged(&plain, &r2).values().len(), 2);
        assert!(r1.apply_fenced(&empty, data("z"), ActorId(1), None, None, &fence(0)).is_err());
    }
}
