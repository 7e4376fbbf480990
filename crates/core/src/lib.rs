//! # quorumdb-core
//!
//! The deterministic heart of QuorumDB. Everything in this crate is a pure function or a plain
//! state machine: no sockets, no threads, no async, and no clock. Time enters only as a number
//! handed to `tick(now_ms)`, and randomness only as a seed handed in by the caller. That is what
//! lets the node shell, the scripted tests and the seeded simulator drive exactly the same code.
//!
//! ```text
//!   HTTP request ──► node shell ──► coordinator::{WriteCoordinator, ReadCoordinator}
//!                        ▲                 │ step(response) / tick(now) → decision
//!                        │                 ▼
//!                    transport ◄──── ring::Ring::preference_list(hash(key))
//!                        │
//!                        ▼
//!                 replica: causality::ItemState::update / merge  ──► storage (node)
//! ```
//!
//! Architecture invariant: this crate performs no I/O and never reads the clock.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod antientropy;
pub mod causality;
pub mod consistency;
pub mod coordinator;
pub mod crdt;
pub mod handoff;
pub mod heat;
pub mod key;
pub mod limits;
pub mod merkle;
pub mod placement;
pub mod replica;
pub mod ring;
pub mod sink;
