//! Kafka record batches (magic 2): header parsing and validation.
//!
//! The broker never decompresses or re-encodes a batch. It checks the fixed 61-byte header and
//! the CRC, stores the bytes as the producer sent them, and on fetch rewrites only the base
//! offset. The base offset lies outside the CRC (which covers `attributes` to the end of the
//! batch), so a compressed batch passes through untouched and stays valid; this is also why
//! the codec needs no compression libraries.
//!
//! Layout of the header (big-endian):
//!
//! | offset | field                |
//! |-------:|----------------------|
//! |      0 | baseOffset i64       |
//! |      8 | batchLength i32      |
//! |     12 | partitionLeaderEpoch i32 |
//! |     16 | magic i8             |
//! |     17 | crc u32 (CRC-32C)    |
//! |     21 | attributes i16       |
//! |     23 | lastOffsetDelta i32  |
//! |     27 | firstTimestamp i64   |
//! |     35 | maxTimestamp i64     |
//! |     43 | producerId i64       |
//! |     51 | producerEpoch i16    |
//! |     53 | baseSequence i32     |
//! |     57 | recordsCount i32     |

use bytes::Bytes;
use kafka_protocol::ResponseError;
use thiserror::Error;

/// Bytes of the fixed v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `batchLength` counts the bytes after itself: the batch is this much longer.
const LENGTH_PREFIX_BYTES: usize = 12;
/// Where the magic byte is, the same in every message format.
const MAGIC_AT: usize = 16;
/// Where the CRC-covered part begins (`attributes`).
const CRC_START: usize = 21;
/// `attributes` bits 0–2: the compression codec.
const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// `attributes` bits we refuse: transactional (4) and control (5) batches need transactions.
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
/// The highest codec id Kafka defines (zstd).
pub const COMPRESSION_ZSTD: u8 = 4;

/// The fixed header of a v2 record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `b`; `None` if `b` is shorter than a header.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        let b: &[u8; BATCH_HEADER_BYTES] = b.get(..BATCH_HEADER_BYTES)?.try_into().ok()?;
        Some(BatchHeader {
            base_offset: i64::from_be_bytes(field(b, 0)),
            batch_length: i32::from_be_bytes(field(b, 8)),
            partition_leader_epoch: i32::from_be_bytes(field(b, 12)),
            magic: i8::from_be_bytes(field(b, MAGIC_AT)),
            crc: u32::from_be_bytes(field(b, 17)),
            attributes: i16::from_be_bytes(field(b, CRC_START)),
            last_offset_delta: i32::from_be_bytes(field(b, 23)),
            first_timestamp: i64::from_be_bytes(field(b, 27)),
            max_timestamp: i64::from_be_bytes(field(b, 35)),
            producer_id: i64::from_be_bytes(field(b, 43)),
            producer_epoch: i16::from_be_bytes(field(b, 51)),
            base_sequence: i32::from_be_bytes(field(b, 53)),
            records_count: i32::from_be_bytes(field(b, 57)),
        })
    }

    /// The whole batch's length in bytes, header included (`None` if `batch_length` is
    /// negative).
    pub fn total_bytes(&self) -> Option<usize> {
        usize::try_from(self.batch_length).ok()?.checked_add(LENGTH_PREFIX_BYTES)
    }

    /// The compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        // Masked to three bits, so the cast cannot truncate.
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Whether the batch belongs to an idempotent producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// `N` bytes of the header at `at`; the header is a fixed-size array, so the bounds are static.
fn field<const N: usize>(b: &[u8; BATCH_HEADER_BYTES], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Why a produced record set was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The record set ends inside a batch (or is empty).
    #[error("the record set is truncated: {0}")]
    Truncated(String),
    /// Message format v0/v1 (before Kafka 0.11), or garbage.
    #[error("record batch magic {0} is not supported (only v2 batches, Kafka 0.11 and later)")]
    Magic(i8),
    #[error("record batch CRC mismatch: header says {expected:#010x}, content has {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    /// A header field is inconsistent (length, record count, codec).
    #[error("the record batch is invalid: {0}")]
    Invalid(String),
    #[error("record batch of {bytes} bytes is larger than {max}")]
    TooLarge { bytes: usize, max: usize },
    /// Transactional or control batch: QuorumDB's log has no transactions.
    #[error("transactional and control batches are not supported (QuorumDB has no transactions)")]
    Transactional,
}

impl BatchError {
    /// The Kafka error code a Produce partition answers with.
    ///
    /// Old message formats get UNSUPPORTED_FOR_MESSAGE_FORMAT, which names the problem (the
    /// client speaks a format the broker does not) instead of blaming corruption. Transactional
    /// batches get INVALID_REQUEST: Kafka has no code for "transactions are unavailable", and
    /// this one is non-retriable and documented as "sent to an incompatible broker" (see
    /// `server` for the same choice on InitProducerId).
    pub fn error_code(&self) -> i16 {
        match self {
            BatchError::Truncated(_) | BatchError::Crc { .. } | BatchError::Invalid(_) => {
                ResponseError::CorruptMessage.code()
            }
            BatchError::Magic(_) => ResponseError::UnsupportedForMessageFormat.code(),
            BatchError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
            BatchError::Transactional => ResponseError::InvalidRequest.code(),
        }
    }
}

/// Splits a Produce partition's record set into validated batches, each at most
/// `batch_bytes_max` bytes.
///
/// Every batch must be magic 2, complete (no trailing partial batch), CRC-32C-valid, hold
/// `recordsCount ≥ 1` records with `lastOffsetDelta == recordsCount - 1`, use a known codec,
/// and be neither transactional nor a control batch. The returned slices share `records`'
/// buffer.
pub fn split_batches(
    records: &Bytes,
    batch_bytes_max: usize,
) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        // The magic byte sits at the same place in every format: check it first, so an old
        // client gets "unsupported format" rather than "truncated" for its shorter header.
        let Some(&magic) = rest.get(MAGIC_AT) else {
            return Err(BatchError::Truncated(format!(
                "{} bytes left, a batch header needs {BATCH_HEADER_BYTES}",
                rest.len()
            )));
        };
        let magic = i8::from_be_bytes([magic]);
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        let Some(h) = BatchHeader::parse(rest) else {
            return Err(BatchError::Truncated(format!(
                "{} bytes left, a batch header needs {BATCH_HEADER_BYTES}",
                rest.len()
            )));
        };
        let Some(total) = h.total_bytes().filter(|t| *t >= BATCH_HEADER_BYTES) else {
            return Err(BatchError::Invalid(format!("batch length {}", h.batch_length)));
        };
        if total > batch_bytes_max {
            return Err(BatchError::TooLarge { bytes: total, max: batch_bytes_max });
        }
        let Some(batch) = rest.get(..total) else {
            return Err(BatchError::Truncated(format!(
                "the batch says {total} bytes, {} are left",
                rest.len()
            )));
        };
        let actual = crc32c::crc32c(&batch[CRC_START..]);
        if actual != h.crc {
            return Err(BatchError::Crc { expected: h.crc, actual });
        }
        if h.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
            return Err(BatchError::Transactional);
        }
        if h.compression() > COMPRESSION_ZSTD {
            return Err(BatchError::Invalid(format!("unknown compression codec {}", h.compression())));
        }
        if h.records_count < 1 || i64::from(h.last_offset_delta) != i64::from(h.records_count) - 1 {
            return Err(BatchError::Invalid(format!(
                "{} records with last offset delta {}",
                h.records_count, h.last_offset_delta
            )));
        }
        out.push((h, records.slice(at..at + total)));
        at += total;
    }
    if out.is_empty() {
        return Err(BatchError::Truncated("no record batch".into()));
    }
    Ok(out)
}

/// Sets a batch's base offset. The base offset is outside the CRC, so the batch stays valid.
/// A slice shorter than 8 bytes is left alone.
pub fn rewrite_base_offset(batch: &mut [u8], base: i64) {
    if let Some(head) = batch.get_mut(..8) {
        head.copy_from_slice(&base.to_be_bytes());
    }
}

/// The longest prefix of `records` (whole batches, as the log returns them) of at most
/// `limit` bytes; with `keep_first` the first batch is kept even if it alone is larger (Kafka's
/// KIP-74 rule for the first partition of a fetch). A trailing partial batch is dropped.
pub fn whole_batches_within(records: &Bytes, limit: usize, keep_first: bool) -> Bytes {
    let mut end = 0usize;
    while end < records.len() {
        let len = records
            .get(end + 8..end + LENGTH_PREFIX_BYTES)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .and_then(|l| usize::try_from(l).ok())
            .and_then(|l| l.checked_add(LENGTH_PREFIX_BYTES));
        let Some(next) = len.and_then(|l| end.checked_add(l)).filter(|n| *n <= records.len()) else {
            break;
        };
        if next > limit && !(keep_first && end == 0) {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

/// Builders and readers of uncompressed batches, for tests in this and other crates (not used
/// by the listener).
/// Appends `v` as a zigzag varint, the integer encoding inside v2 records.
pub fn put_varint(out: &mut bytes::BytesMut, v: i64) {
    use bytes::BufMut;
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// Reads a zigzag varint off the front of `b`; `None` if it is cut off or longer than 64 bits.
pub fn read_varint(b: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        z |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

pub mod testing {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::{read_varint, BatchHeader, BATCH_HEADER_BYTES, CRC_START};

    fn varint(out: &mut BytesMut, v: i64) {
        super::put_varint(out, v);
    }

    /// An uncompressed v2 batch (base offset 0) of `records` (key, value), all at
    /// `timestamp_ms`, optionally of an idempotent producer `(id, epoch, base sequence)`.
    /// Panics on an empty `records` (a batch holds at least one record).
    pub fn batch(records: &[(&[u8], &[u8])], timestamp_ms: i64, producer: Option<(i64, i16, i32)>) -> Bytes {
        assert!(!records.is_empty(), "a record batch holds at least one record");
        let count = i32::try_from(records.len()).expect("record count fits i32");
        let mut body = BytesMut::new();
        for (i, (k, v)) in records.iter().enumerate() {
            let mut r = BytesMut::new();
            r.put_i8(0); // record attributes
            varint(&mut r, 0); // timestamp delta
            varint(&mut r, i as i64); // offset delta
            varint(&mut r, k.len() as i64);
            r.put_slice(k);
            varint(&mut r, v.len() as i64);
            r.put_slice(v);
            varint(&mut r, 0); // headers
            varint(&mut body, r.len() as i64);
            body.put_slice(&r);
        }
        let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
        let mut crc_part = BytesMut::new();
        crc_part.put_i16(0); // attributes: no compression, create time
        crc_part.put_i32(count - 1);
        crc_part.put_i64(timestamp_ms);
        crc_part.put_i64(timestamp_ms);
        crc_part.put_i64(pid);
        crc_part.put_i16(epoch);
        crc_part.put_i32(seq);
        crc_part.put_i32(count);
        crc_part.put_slice(&body);
        let mut out = BytesMut::new();
        out.put_i64(0);
        out.put_i32((4 + 1 + 4 + crc_part.len()) as i32);
        out.put_i32(-1);
        out.put_i8(2);
        out.put_u32(crc32c::crc32c(&crc_part));
        out.put_slice(&crc_part);
        out.freeze()
    }

    /// `batch` with its `attributes` replaced and the CRC recomputed (e.g. to mark a batch
    /// transactional, or to claim a codec without compressing).
    pub fn with_attributes(batch: &Bytes, attributes: i16) -> Bytes {
        let mut b = batch.to_vec();
        b[CRC_START..CRC_START + 2].copy_from_slice(&attributes.to_be_bytes());
        reseal(&mut b);
        Bytes::from(b)
    }

    /// Recomputes the CRC of one batch in place.
    pub fn reseal(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    /// One record read back by [`records`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Record {
        pub offset: i64,
        pub timestamp: i64,
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
    }

    /// Reads the records of uncompressed batches (as a fetch returns them); `None` if the bytes
    /// are not well-formed uncompressed v2 batches. A trailing partial batch is ignored, as
    /// clients do.
    pub fn records(mut set: &[u8]) -> Option<Vec<Record>> {
        let mut out = Vec::new();
        while let Some(h) = BatchHeader::parse(set) {
            let total = h.total_bytes()?;
            if total > set.len() {
                break;
            }
            if h.compression() != 0 || total < BATCH_HEADER_BYTES {
                return None;
            }
            let mut body = &set[BATCH_HEADER_BYTES..total];
            for _ in 0..h.records_count {
                let len = usize::try_from(read_varint(&mut body)?).ok()?;
                let mut r = body.get(..len)?;
                body = &body[len..];
                r = r.get(1..)?; // attributes
                let ts_delta = read_varint(&mut r)?;
                let offset_delta = read_varint(&mut r)?;
                let key = read_field(&mut r)?;
                let value = read_field(&mut r)?;
                out.push(Record {
                    offset: h.base_offset.checked_add(offset_delta)?,
                    timestamp: h.first_timestamp.checked_add(ts_delta)?,
                    key,
                    value,
                });
            }
            set = &set[total..];
        }
        Some(out)
    }

    fn read_field(b: &mut &[u8]) -> Option<Option<Vec<u8>>> {
        let len = read_varint(b)?;
        if len < 0 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        let v = b.get(..len)?.to_vec();
        *b = &b[len..];
        Some(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn set(parts: &[Bytes]) -> Bytes {
        Bytes::from(parts.concat())
    }

    /// A record set of two batches splits into both, with their parsed headers and exact bytes.
    #[test]
    fn splits_valid_batches() {
        let a = testing::batch(&[(b"k", b"v"), (b"k2", b"v2")], 1000, None);
        let b = testing::batch(&[(b"x", b"y")], 2000, Some((7, 3, 5)));
        let got = split_batches(&set(&[a.clone(), b.clone()]), MAX).unwrap();
        assert_eq!(got.len(), 2);
        let h = got[0].0;
        assert_eq!((h.magic, h.records_count, h.last_offset_delta), (2, 2, 1));
        assert_eq!((h.first_timestamp, h.max_timestamp, h.producer_id), (1000, 1000, -1));
        assert_eq!(h.total_bytes(), Some(a.len()));
        assert_eq!(got[0].1, a);
        let h = got[1].0;
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 3, 5));
        assert!(h.is_idempotent());
        assert_eq!(got[1].1, b);
    }

    /// A flipped bit in the records fails the CRC check.
    #[test]
    fn refuses_bad_crc() {
        let mut bad = testing::batch(&[(b"k", b"value")], 1, None).to_vec();
        *bad.last_mut().unwrap() ^= 1;
        let err = split_batches(&Bytes::from(bad), MAX).unwrap_err();
        assert!(matches!(err, BatchError::Crc { .. }), "{err:?}");
        assert_eq!(err.error_code(), 2);
    }

    /// A record set ending inside a batch, or inside a header, or empty, is truncated.
    #[test]
    fn refuses_truncated() {
        let good = testing::batch(&[(b"k", b"value")], 1, None);
        for cut in [good.slice(..good.len() - 1), good.slice(..30), good.slice(..10), Bytes::new()] {
            let err = split_batches(&cut, MAX).unwrap_err();
            assert!(matches!(err, BatchError::Truncated(_)), "{} bytes: {err:?}", cut.len());
            assert_eq!(err.error_code(), 2);
        }
        let trailing = set(&[good.clone(), good.slice(..good.len() - 3)]);
        assert!(matches!(split_batches(&trailing, MAX), Err(BatchError::Truncated(_))));
    }

    /// Message formats v0 and v1 are refused as unsupported, not as corrupt.
    #[test]
    fn refuses_old_magic() {
        for magic in [0u8, 1] {
            let mut old = testing::batch(&[(b"k", b"value")], 1, None).to_vec();
            old[16] = magic;
            let err = split_batches(&Bytes::from(old), MAX).unwrap_err();
            assert_eq!(err, BatchError::Magic(magic as i8));
            assert_eq!(err.error_code(), 43);
        }
    }

    /// recordsCount must be at least 1 and equal lastOffsetDelta + 1.
    #[test]
    fn refuses_count_mismatch() {
        let good = testing::batch(&[(b"a", b"1"), (b"b", b"2")], 1, None);
        for (delta, count) in [(0i32, 2i32), (1, 3), (-1, 0), (i32::MAX, i32::MIN)] {
            let mut b = good.to_vec();
            b[23..27].copy_from_slice(&delta.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            testing::reseal(&mut b);
            let err = split_batches(&Bytes::from(b), MAX).unwrap_err();
            assert!(matches!(err, BatchError::Invalid(_)), "delta {delta} count {count}: {err:?}");
        }
    }

    /// Transactional and control batches are refused with INVALID_REQUEST.
    #[test]
    fn refuses_transactional_and_control() {
        let good = testing::batch(&[(b"k", b"value")], 1, None);
        for attributes in [1 << 4, 1 << 5, (1 << 4) | (1 << 5)] {
            let b = testing::with_attributes(&good, attributes);
            let err = split_batches(&b, MAX).unwrap_err();
            assert_eq!(err, BatchError::Transactional);
            assert_eq!(err.error_code(), 42);
        }
    }

    /// Batches larger than the limit are refused with MESSAGE_TOO_LARGE; at the limit they pass.
    #[test]
    fn refuses_too_large() {
        let good = testing::batch(&[(b"k", &[7u8; 100][..])], 1, None);
        let err = split_batches(&good, good.len() - 1).unwrap_err();
        assert_eq!(err, BatchError::TooLarge { bytes: good.len(), max: good.len() - 1 });
        assert_eq!(err.error_code(), 10);
        assert!(split_batches(&good, good.len()).is_ok());
    }

    /// Negative or too-short batch lengths and unknown codecs are invalid.
    #[test]
    fn refuses_bad_lengths_and_codecs() {
        let good = testing::batch(&[(b"k", b"value")], 1, None);
        for len in [-1i32, 0, 48, i32::MIN] {
            let mut b = good.to_vec();
            b[8..12].copy_from_slice(&len.to_be_bytes());
            assert!(matches!(split_batches(&Bytes::from(b), MAX), Err(BatchError::Invalid(_))), "{len}");
        }
        let b = testing::with_attributes(&good, 5);
        assert!(matches!(split_batches(&b, MAX), Err(BatchError::Invalid(_))));
        // A known codec passes: the broker never looks inside.
        let b = testing::with_attributes(&good, 3);
        assert_eq!(split_batches(&b, MAX).unwrap()[0].0.compression(), 3);
    }

    /// Rewriting the base offset keeps the CRC valid and the records readable at new offsets.
    #[test]
    fn rewrite_keeps_crc() {
        let mut b = testing::batch(&[(b"k", b"v"), (b"k2", b"v2")], 1, None).to_vec();
        rewrite_base_offset(&mut b, 12345);
        let b = Bytes::from(b);
        let got = split_batches(&b, MAX).unwrap();
        assert_eq!(got[0].0.base_offset, 12345);
        assert_eq!(got[0].0.last_offset(), 12346);
        let records = testing::records(&b).unwrap();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [12345, 12346]);
        assert_eq!(records[1].key.as_deref(), Some(&b"k2"[..]));
        let mut short = [1u8; 4];
        rewrite_base_offset(&mut short, 9);
        assert_eq!(short, [1u8; 4]);
    }

    /// Trimming to whole batches keeps what fits, and the first batch when asked to.
    #[test]
    fn trims_to_whole_batches() {
        let a = testing::batch(&[(b"k", &[1u8; 50][..])], 1, None);
        let b = testing::batch(&[(b"k", &[2u8; 50][..])], 1, None);
        let both = set(&[a.clone(), b.clone()]);
        assert_eq!(whole_batches_within(&both, both.len(), false), both);
        assert_eq!(whole_batches_within(&both, both.len() - 1, false), a);
        assert_eq!(whole_batches_within(&both, 1, false), Bytes::new());
        assert_eq!(whole_batches_within(&both, 1, true), a);
        let partial = set(&[a.clone(), b.slice(..20)]);
        assert_eq!(whole_batches_within(&partial, usize::MAX, false), a);
    }

    /// Random bytes never panic the splitter.
    #[test]
    fn garbage_does_not_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300usize {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if len > 16 {
                v[16] = 2;
            }
            let v = Bytes::from(v);
            let _ = split_batches(&v, MAX);
            let _ = whole_batches_within(&v, 100, true);
            let _ = testing::records(&v);
        }
    }
}
