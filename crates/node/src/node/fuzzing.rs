//! Entry points for the fuzz targets (`fuzz/`): what a peer's bytes meet on the way in.
//! Hidden from the docs; not an API.

use quorumdb_core::placement::Placement;
use quorumdb_core::ring::{Member, Ring};

use crate::wire::{self, Frame, Hello};

/// The placement of three members in three zones, the shape every peer frame is decoded
/// against.
pub fn ring() -> Placement {
    let members =
        ["n1", "n2", "n3"].iter().enumerate().map(|(i, id)| Member::new(*id, format!("z{i}"))).collect();
    Placement::single(Ring::new(members, 16).expect("three members in three zones form a ring"))
}

/// Decodes `bytes` as a peer frame and converts it to the core's message, exactly as the
/// transport and the driver do: the postcard frame, then every embedded item state, causality
/// token, key and tree id. Also tries the bytes as a connection's first frame (`Hello`).
/// Returns whether the frame was accepted; it must never panic.
pub fn peer_frame(ring: &Placement, bytes: &[u8]) -> bool {
    let _ = wire::decode::<Hello>(bytes);
    match wire::decode::<Frame>(bytes) {
        Ok(Frame::Request { body, .. }) => super::request_from_wire(ring, body).is_ok(),
        Ok(Frame::Response { body, .. }) => {
            let _ = super::response_from_wire(body);
            true
        }
        Err(_) => false,
    }
}
