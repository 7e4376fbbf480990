//! Records in and out of the log: decoding fetched v2 batches, encoding dead-letter batches
//! (one record with headers, CRC-32C).

use super::*;
use quorumdb_kafka::batch::{put_varint, read_varint};

/// One record read from the log.
#[derive(Clone, Debug)]
pub(super) struct LogRecord {
    pub(super) timestamp_ms: i64,
    pub(super) key: Option<Bytes>,
    pub(super) value: Option<Bytes>,
    /// The batch could not be decoded (compressed): the record is dead-lettered unwritten.
    pub(super) undecodable: Option<String>,
    /// The dedup window holds its event id already: it is not written.
    pub(super) duplicate: bool,
}

pub(super) fn read_bytes(b: &mut &[u8]) -> Option<Option<Bytes>> {
    let len = read_varint(b)?;
    if len < 0 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let v = Bytes::copy_from_slice(b.get(..len)?);
    *b = &b[len..];
    Some(Some(v))
}

/// The records of a fetched record set at or after `from`, by offset. Compressed batches
/// (the broker never decompresses, nor does the sink) yield undecodable records.
pub(super) fn decode_records(set: &[u8], from: u64) -> BTreeMap<u64, LogRecord> {
    let mut out = BTreeMap::new();
    let mut rest = set;
    while let Some(h) = quorumdb_kafka::BatchHeader::parse(rest) {
        let Some(total) = h.total_bytes().filter(|t| *t <= rest.len() && *t >= 61) else { break };
        let batch = &rest[61..total];
        rest = &rest[total..];
        if h.compression() != 0 {
            for o in h.base_offset..=h.last_offset() {
                if let Ok(o) = u64::try_from(o) {
                    if o >= from {
                        out.insert(
                            o,
                            LogRecord {
                                timestamp_ms: h.max_timestamp,
                                key: None,
                                value: None,
                                undecodable: Some(format!("compressed batch (codec {})", h.compression())),
                                duplicate: false,
                            },
                        );
                    }
                }
            }
            continue;
        }
        let mut body = batch;
        for _ in 0..h.records_count.max(0) {
            let parsed = (|| {
                let len = usize::try_from(read_varint(&mut body)?).ok()?;
                let mut r = body.get(..len)?;
                body = &body[len..];
                r = r.get(1..)?;
                let ts_delta = read_varint(&mut r)?;
                let offset_delta = read_varint(&mut r)?;
                let key = read_bytes(&mut r)?;
                let value = read_bytes(&mut r)?;
                Some((
                    h.base_offset.checked_add(offset_delta)?,
                    h.first_timestamp.saturating_add(ts_delta),
                    key,
                    value,
                ))
            })();
            let Some((offset, timestamp_ms, key, value)) = parsed else { break };
            if let Ok(o) = u64::try_from(offset) {
                if o >= from {
                    out.insert(
                        o,
                        LogRecord { timestamp_ms, key, value, undecodable: None, duplicate: false },
                    );
                }
            }
        }
    }
    out
}

pub(super) fn put_field(out: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            put_varint(out, v.len() as i64);
            out.put_slice(v);
        }
        None => put_varint(out, -1),
    }
}

/// A v2 record batch of one uncompressed record with headers (CRC-32C over attributes..end,
/// as Kafka defines it).
pub fn dead_letter_batch(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Vec<u8>)],
    timestamp_ms: i64,
) -> Bytes {
    let mut r = BytesMut::new();
    r.put_i8(0);
    put_varint(&mut r, 0);
    put_varint(&mut r, 0);
    put_field(&mut r, key);
    put_field(&mut r, value);
    put_varint(&mut r, headers.len() as i64);
    for (k, v) in headers {
        put_field(&mut r, Some(k.as_bytes()));
        put_field(&mut r, Some(v));
    }
    let mut crc_part = BytesMut::new();
    crc_part.put_i16(0); // attributes: no compression, create time
    crc_part.put_i32(0); // last offset delta
    crc_part.put_i64(timestamp_ms);
    crc_part.put_i64(timestamp_ms);
    crc_part.put_i64(-1); // no producer id
    crc_part.put_i16(-1);
    crc_part.put_i32(-1);
    crc_part.put_i32(1);
    put_varint(&mut crc_part, r.len() as i64);
    crc_part.put_slice(&r);
    let mut out = BytesMut::new();
    out.put_i64(0);
    out.put_i32(i32::try_from(4 + 1 + 4 + crc_part.len()).unwrap_or(i32::MAX));
    out.put_i32(-1);
    out.put_i8(2);
    out.put_u32(crc32c::crc32c(&crc_part));
    out.put_slice(&crc_part);
    out.freeze()
}
