//! Produce v0–v2, which we advertise but refuse.
//!
//! librdkafka before 2.11.1 derives its "can compress" feature flags from the broker
//! advertising Produce v0 (and stops compressing if it does not), so the advertised range
//! starts at 0. We only store v2 record batches, which need Produce v3, so a v0–v2 request is
//! answered, correctly encoded in its own version, with UNSUPPORTED_VERSION on every
//! partition. The codec does not speak these versions, hence the hand-written formats:
//!
//! - request: `acks i16, timeout i32, [topic string, [partition i32, records bytes]]`;
//! - response v0: `[topic string, [partition i32, error_code i16, base_offset i64]]`;
//!   v1 adds `throttle_time_ms i32` at the end, v2 adds `log_append_time i64` per partition.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a legacy Produce request asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct LegacyProduce {
    pub acks: i16,
    /// `(topic, partitions)`.
    pub topics: Vec<(Bytes, Vec<i32>)>,
}

fn need(buf: &Bytes, n: usize) -> Result<(), String> {
    if buf.remaining() < n {
        return Err(format!("{n} bytes wanted, {} left", buf.remaining()));
    }
    Ok(())
}

fn count(buf: &mut Bytes, element_bytes_min: usize) -> Result<usize, String> {
    need(buf, 4)?;
    let n = buf.get_i32();
    let n = usize::try_from(n).map_err(|_| format!("array length {n}"))?;
    if n.checked_mul(element_bytes_min).is_none_or(|b| b > buf.remaining()) {
        return Err(format!("an array of {n} elements in {} bytes", buf.remaining()));
    }
    Ok(n)
}

/// Decodes a Produce v0–v2 request body (after the header).
pub fn decode_produce(mut buf: Bytes) -> Result<LegacyProduce, String> {
    need(&buf, 6)?;
    let acks = buf.get_i16();
    let _timeout = buf.get_i32();
    let mut topics = Vec::new();
    for _ in 0..count(&mut buf, 2 + 4)? {
        need(&buf, 2)?;
        let len = buf.get_i16();
        let len = usize::try_from(len).map_err(|_| format!("topic name length {len}"))?;
        need(&buf, len)?;
        let name = buf.split_to(len);
        let mut partitions = Vec::new();
        for _ in 0..count(&mut buf, 4 + 4)? {
            need(&buf, 8)?;
            partitions.push(buf.get_i32());
            match buf.get_i32() {
                -1 => {}
                n => {
                    let n = usize::try_from(n).map_err(|_| format!("records length {n}"))?;
                    need(&buf, n)?;
                    buf.advance(n);
                }
            }
        }
        topics.push((name, partitions));
    }
    Ok(LegacyProduce { acks, topics })
}

/// Encodes a Produce v0–v2 response body answering `error_code` on every partition.
pub fn encode_produce_error(req: &LegacyProduce, version: i16, error_code: i16) -> Result<BytesMut, String> {
    let mut out = BytesMut::new();
    let len = |n: usize| i32::try_from(n).map_err(|_| "too many elements".to_string());
    out.put_i32(len(req.topics.len())?);
    for (name, partitions) in &req.topics {
        out.put_i16(i16::try_from(name.len()).map_err(|_| "topic name too long".to_string())?);
        out.put_slice(name);
        out.put_i32(len(partitions.len())?);
        for p in partitions {
            out.put_i32(*p);
            out.put_i16(error_code);
            out.put_i64(-1); // base_offset
            if version >= 2 {
                out.put_i64(-1); // log_append_time
            }
        }
    }
    if version >= 1 {
        out.put_i32(0); // throttle_time_ms
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(topics: &[(&str, &[i32])]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(topics.len() as i32);
        for (name, parts) in topics {
            b.put_i16(name.len() as i16);
            b.put_slice(name.as_bytes());
            b.put_i32(parts.len() as i32);
            for p in *parts {
                b.put_i32(*p);
                b.put_i32(3);
                b.put_slice(b"abc");
            }
        }
        b.freeze()
    }

    /// A v0–v2 request decodes to its topics and partitions; the answer has each version's layout.
    #[test]
    fn decodes_and_answers_each_version() {
        let req = decode_produce(request(&[("t", &[0, 1]), ("u", &[2])])).unwrap();
        assert_eq!(req.acks, 1);
        assert_eq!(req.topics.len(), 2);
        assert_eq!(req.topics[0].1, vec![0, 1]);
        // topics(4) + 2 names(2+1 each) + 2 partition counts(4) + 3 partitions × (4+2+8)
        let base = 4 + 2 * 3 + 2 * 4 + 3 * 14;
        assert_eq!(encode_produce_error(&req, 0, 35).unwrap().len(), base);
        assert_eq!(encode_produce_error(&req, 1, 35).unwrap().len(), base + 4);
        assert_eq!(encode_produce_error(&req, 2, 35).unwrap().len(), base + 4 + 3 * 8);
    }

    /// Truncated requests and absurd counts are errors, not panics or huge allocations.
    #[test]
    fn refuses_malformed() {
        let good = request(&[("t", &[0])]);
        for cut in 0..good.len() {
            assert!(decode_produce(good.slice(..cut)).is_err(), "{cut}");
        }
        let mut huge = BytesMut::new();
        huge.put_i16(1);
        huge.put_i32(0);
        huge.put_i32(i32::MAX);
        assert!(decode_produce(huge.freeze()).is_err());
    }
}
