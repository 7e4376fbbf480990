//! Proves that the HTTP API's parsers (query strings, JSON bodies, item keys, causality
//! tokens, consistency levels, write ids) never panic and refuse bad input with a 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quorumdb_node::http::fuzzing::http_inputs(data);
});
