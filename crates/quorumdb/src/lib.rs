//! The `quorumdb` library: what the binary and the multi-process tests share.

pub mod launcher;
pub mod pg;
