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

// Compile-time relations between limits.
const _: () = assert!(SCAN_PAGE_LEN_DEFAULT <= SCAN_PAGE_LEN_MAX);
const _: () = assert!(REPLICATION_FACTOR_MAX <= VERSION_VECTOR_LEN_MAX);
