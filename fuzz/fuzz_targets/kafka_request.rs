//! Proves that no request frame a Kafka client sends panics the listener's decoder (header,
//! allocation guard, codec, the hand-written Produce v0–v2 decoder), and that no record set
//! panics the batch validator.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quorumdb_kafka::request;

fuzz_target!(|data: &[u8]| {
    let _ = request::decode_frame(Bytes::copy_from_slice(data));
    let _ = quorumdb_kafka::split_batches(&Bytes::copy_from_slice(data), 1 << 20);
});
