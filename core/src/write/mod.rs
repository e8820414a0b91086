//! The writers: whatever changes the zone beyond a request's own counts
//!
//! Opening a zone (`open.rs`), building and publishing generations
//! ([`generation`]), membership of resolved servers ([`membership`]),
//! carrying state across a reload (`carry.rs`), the API's changes
//! ([`admin`]) and the servers it adds and removes (`added.rs`). They stand on every floor below: the layout, the
//! algorithms that build frozen sections, the policies and health.

mod added;
pub mod admin;
mod carry;
pub mod generation;
pub mod membership;
mod open;

pub use added::{AddRefusal, Added, RemoveRefusal};
pub use admin::{PeerView, Refusal, ServerChange, ServerState, LEASE_WAIT_MS, MAX_WEIGHT};
pub use carry::Carried;
pub use open::{zone_size, zone_size_with, Room};
