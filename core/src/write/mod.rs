//! The writers: whatever changes the zone beyond a request's own counts
//!
//! Opening a zone (`open.rs`), building and publishing generations
//! ([`generation`]), membership of resolved servers ([`membership`]),
//! carrying state across a reload (`carry.rs`) and the API's changes
//! ([`admin`]). They stand on every floor below: the layout, the
//! algorithms that build frozen sections, the policies and health.

pub mod admin;
mod carry;
pub mod generation;
pub mod membership;
mod open;

pub use admin::{PeerView, Refusal, ServerChange, ServerState, LEASE_WAIT_MS, MAX_WEIGHT};
pub use open::{zone_size, zone_size_with};
