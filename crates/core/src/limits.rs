//! Named limits. Every bound a client can run into lives here, with the reason for its value.
//! Units come last in each name (`_bytes_max`, `_len_max`), as in TigerStyle.

/// Longest table name. Table names appear in every storage key, so they are kept short.
pub const TABLE_NAME_BYTES_MAX: usize = 128;

/// Longest partition key. 1 KiB covers composite ids (user:bucket:date) with room to spare and
/// keeps per-item overhead on disk and on the wire predictable.
pub const PARTITION_KEY_BYTES_MAX: usize = 1024;

/// Longest sort key. Same reasoning as the partition key.
pub const SORT_KEY_BYTES_MAX: usize = 1024;

/// Largest value. 1 MiB: values are stored inline in the LSM tree and copied to every replica on
/// every write and read repair; larger blobs belong in an object store with a pointer here.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most items one scan page returns. Larger pages would hold a replica's read path (and the
/// coordinator's merge buffers, N times over) for too long.
pub const SCAN_PAGE_LEN_MAX: usize = 1000;

/// Default scan page size when the client gives no limit.
pub const SCAN_PAGE_LEN_DEFAULT: usize = 100;

/// Most siblings kept for one item. Blind writes to one key without a causality token each add a
/// sibling; past this bound a write is refused with a clear error instead of growing the item
/// without bound (Riak's "sibling explosion"). Reading and writing back with the token resolves them.
pub const SIBLINGS_LEN_MAX: usize = 64;

/// Largest replication factor a table may ask for.
pub const REPLICATION_FACTOR_MAX: usize = 7;

/// Most entries in one version vector (distinct actors that ever wrote one item). Bounded by the
/// number of replicas an item ever had; each data-dir incarnation of a node is one actor.
pub const VERSION_VECTOR_LEN_MAX: usize = 64;

/// Longest causality token accepted from a client, in characters of its text form.
pub const CONTEXT_TOKEN_CHARS_MAX: usize = 4096;

/// Most request records (ids of recently applied client writes, see
/// `causality::AppliedWrite`) one item keeps; the newest stay. 16 records cost about 0.5 KiB on
/// a hot item, and a write retried after 16 newer writes to the same item is rare.
pub const APPLIED_WRITES_LEN_MAX: usize = 16;

/// How long a request record is kept: a retry, hedge or redelivery of the same write within
/// this time is recognised. Far beyond any request timeout (at most
/// `REQUEST_TIMEOUT_MS_MAX`), so a client retrying after a timeout is always in time.
pub const APPLIED_WRITE_AGE_MS_MAX: u64 = 10 * 60 * 1000;

/// Longest request timeout a client may ask for (`timeout_ms`); the node config refers to it.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;

// Compile-time relations between limits.
const _: () = assert!(APPLIED_WRITE_AGE_MS_MAX >= 5 * REQUEST_TIMEOUT_MS_MAX);
const _: () = assert!(APPLIED_WRITES_LEN_MAX >= 1);
const _: () = assert!(SCAN_PAGE_LEN_DEFAULT <= SCAN_PAGE_LEN_MAX);
const _: () = assert!(REPLICATION_FACTOR_MAX <= VERSION_VECTOR_LEN_MAX);

/// Largest stored state of one item that a write may create (all siblings, context and
/// framing). A write that would grow an item past it is refused with `item_too_large`; merges
/// of concurrent writes accepted at different replicas can still exceed it, by at most the
/// replication factor times over, which the peer frame limit accounts for.
pub const ITEM_STATE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most bytes of item states in one replica's scan page. A page ends early (and the client gets
/// a `next` cursor) rather than building a peer message beyond the frame limit: 100 items of
/// 1 MiB are read as pages of four items instead of one 100 MiB message. 4 MiB keeps a page
/// (N replicas' copies of it, merged at the coordinator, then JSON) well within the request
/// timeout even on a slow machine.
pub const SCAN_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Largest peer message. Must hold the largest item state a merge can produce (see
/// [`ITEM_STATE_BYTES_MAX`]) and a scan page whose first item alone exceeds
/// [`SCAN_PAGE_BYTES_MAX`].
pub const PEER_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Room for keys, contexts and message framing around the item states in one peer message.
pub const PEER_FRAME_OVERHEAD_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(ITEM_STATE_BYTES_MAX >= VALUE_BYTES_MAX + 64 * 1024);
const _: () = assert!(
    REPLICATION_FACTOR_MAX * ITEM_STATE_BYTES_MAX + PEER_FRAME_OVERHEAD_BYTES_MAX <= PEER_FRAME_BYTES_MAX
);
const _: () = assert!(
    SCAN_PAGE_BYTES_MAX + REPLICATION_FACTOR_MAX * ITEM_STATE_BYTES_MAX + PEER_FRAME_OVERHEAD_BYTES_MAX
        <= 2 * PEER_FRAME_BYTES_MAX
);
