//! Item addressing: `table / partition key / sort key`, validation against the named limits,
//! the placement hash and the order-preserving storage key encoding.

use crate::limits::{PARTITION_KEY_BYTES_MAX, SORT_KEY_BYTES_MAX, TABLE_NAME_BYTES_MAX};
use thiserror::Error;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("table name must be 1..={max} bytes of [A-Za-z0-9_.-], got {got:?}")]
    BadTable { got: String, max: usize },
    #[error("partition key must be 1..={max} bytes, got {got} bytes")]
    PartitionKeyLength { got: usize, max: usize },
    #[error("sort key must be at most {max} bytes, got {got} bytes")]
    SortKeyLength { got: usize, max: usize },
    #[error("storage key is malformed")]
    MalformedStorageKey,
}

/// Checks a table name: short, and limited to characters that are safe in URLs, file names and
/// metric labels.
pub fn validate_table(table: &str) -> Result<(), KeyError> {
    let ok = !table.is_empty()
        && table.len() <= TABLE_NAME_BYTES_MAX
        && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadTable { got: table.chars().take(64).collect(), max: TABLE_NAME_BYTES_MAX })
    }
}

/// A fully addressed item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey {
    pub table: String,
    pub partition: Vec<u8>,
    pub sort: Vec<u8>,
}

impl ItemKey {
    /// Builds a key after checking every part against its limit.
    pub fn new(table: &str, partition: &[u8], sort: &[u8]) -> Result<Self, KeyError> {
        validate_table(table)?;
        validate_partition(partition)?;
        validate_sort(sort)?;
        Ok(ItemKey { table: table.to_owned(), partition: partition.to_vec(), sort: sort.to_vec() })
    }

    /// The placement hash: depends on the table and partition key only, so every sort key of a
    /// partition lives on the same replicas and a range scan touches one replica set.
    pub fn placement_hash(&self) -> u64 {
        placement_hash(&self.table, &self.partition)
    }

    /// Storage key: `placement_hash u64 BE | len(table) u8 | table | len(partition) u16 BE |
    /// partition | sort`. Leading with the placement hash orders the disk by ring position, so
    /// every token range (and every anti-entropy leaf) is one contiguous key range. The length
    /// prefixes make the encoding prefix-free per partition, so all items of a partition are
    /// contiguous and ordered by the raw bytes of their sort key.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut out = partition_prefix(&self.table, &self.partition);
        out.extend_from_slice(&self.sort);
        out
    }

    /// Inverse of [`ItemKey::storage_key`].
    pub fn from_storage_key(raw: &[u8]) -> Result<Self, KeyError> {
        let rest = raw.get(8..).ok_or(KeyError::MalformedStorageKey)?;
        let (&tlen, rest) = rest.split_first().ok_or(KeyError::MalformedStorageKey)?;
        let tlen = usize::from(tlen);
        let table = rest.get(..tlen).ok_or(KeyError::MalformedStorageKey)?;
        let rest = rest.get(tlen..).ok_or(KeyError::MalformedStorageKey)?;
        let plen_bytes: [u8; 2] =
            rest.get(..2).and_then(|b| b.try_into().ok()).ok_or(KeyError::MalformedStorageKey)?;
        let plen = usize::from(u16::from_be_bytes(plen_bytes));
        let partition = rest.get(2..2 + plen).ok_or(KeyError::MalformedStorageKey)?;
        let sort = rest.get(2 + plen..).ok_or(KeyError::MalformedStorageKey)?;
        let table = std::str::from_utf8(table).map_err(|_| KeyError::MalformedStorageKey)?;
        Ok(ItemKey { table: table.to_owned(), partition: partition.to_vec(), sort: sort.to_vec() })
    }
}

pub fn validate_partition(partition: &[u8]) -> Result<(), KeyError> {
    if partition.is_empty() || partition.len() > PARTITION_KEY_BYTES_MAX {
        return Err(KeyError::PartitionKeyLength { got: partition.len(), max: PARTITION_KEY_BYTES_MAX });
    }
    Ok(())
}

pub fn validate_sort(sort: &[u8]) -> Result<(), KeyError> {
    if sort.len() > SORT_KEY_BYTES_MAX {
        return Err(KeyError::SortKeyLength { got: sort.len(), max: SORT_KEY_BYTES_MAX });
    }
    Ok(())
}

/// The length-prefixed identity of a partition: `len(table) u8 | table | len(partition) u16 BE |
/// partition`.
fn partition_ident(table: &str, partition: &[u8]) -> Vec<u8> {
    // Limits guarantee both lengths fit their prefixes; assert it so a future limit change
    // cannot silently corrupt the encoding.
    const _: () = assert!(TABLE_NAME_BYTES_MAX <= u8::MAX as usize);
    const _: () = assert!(PARTITION_KEY_BYTES_MAX <= u16::MAX as usize);
    assert!(table.len() <= TABLE_NAME_BYTES_MAX && partition.len() <= PARTITION_KEY_BYTES_MAX);
    let mut out = Vec::with_capacity(3 + table.len() + partition.len());
    out.push(table.len() as u8);
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(partition.len() as u16).to_be_bytes());
    out.extend_from_slice(partition);
    out
}

/// The storage-key prefix shared by every item of one partition: its placement hash, then its
/// identity.
pub fn partition_prefix(table: &str, partition: &[u8]) -> Vec<u8> {
    let ident = partition_ident(table, partition);
    let mut out = Vec::with_capacity(8 + ident.len());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&ident).to_be_bytes());
    out.extend_from_slice(&ident);
    out
}

/// The placement hash stored in the first 8 bytes of a storage key.
pub fn storage_key_hash(raw: &[u8]) -> Option<u64> {
    raw.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

/// Position of a partition on the ring. xxh3 is stable across platforms and releases, which
/// placement needs: every node must compute the same preference list for the same key.
pub fn placement_hash(table: &str, partition: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&partition_ident(table, partition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Proves the storage key round-trips and that, within one partition, storage-key order
        /// equals sort-key order (what range scans rely on).
        #[test]
        fn storage_key_roundtrip_and_order(
            p in proptest::collection::vec(any::<u8>(), 1..40),
            a in proptest::collection::vec(any::<u8>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let ka = ItemKey::new("t", &p, &a).unwrap();
            let kb = ItemKey::new("t", &p, &b).unwrap();
            prop_assert_eq!(ItemKey::from_storage_key(&ka.storage_key()).unwrap(), ka.clone());
            prop_assert_eq!(ka.storage_key().cmp(&kb.storage_key()), a.cmp(&b));
            prop_assert_eq!(storage_key_hash(&ka.storage_key()), Some(ka.placement_hash()));
        }
    }

    /// Proves every limit is enforced with a typed error.
    #[test]
    fn limits_enforced() {
        assert!(ItemKey::new("", b"k", b"").is_err());
        assert!(ItemKey::new("bad/table", b"k", b"").is_err());
        assert!(ItemKey::new("t", b"", b"").is_err());
        assert!(ItemKey::new("t", &vec![0; PARTITION_KEY_BYTES_MAX + 1], b"").is_err());
        assert!(ItemKey::new("t", b"k", &vec![0; SORT_KEY_BYTES_MAX + 1]).is_err());
        assert!(ItemKey::new("t", &vec![0; PARTITION_KEY_BYTES_MAX], b"").is_ok());
    }
}
