//! Proves that no byte string a peer sends (a Hello or a request/response frame) panics the
//! transport's decoder or the driver's conversion to the core's messages.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use quorumdb_core::placement::Placement;
use quorumdb_node::node::fuzzing;

static RING: LazyLock<Placement> = LazyLock::new(fuzzing::ring);

fuzz_target!(|data: &[u8]| {
    fuzzing::peer_frame(&RING, data);
});
