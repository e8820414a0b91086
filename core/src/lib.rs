//! ha-balancer core: backend selection, health (passive, active checks'
//! scheduling and verdicts, slow start, outlier ejection, panic), table
//! generations, membership of resolved servers and statistics, laid out in a
//! caller-given memory region (nginx shared memory) shared by every worker
//! process.
//!
//! The core knows nothing of nginx or C. It works on a memory region the
//! caller hands in (pointer + length) and on caller-given monotonic time in
//! milliseconds. Nothing on the per-request path allocates, locks or makes a
//! system call.
//!
//! # Atomics across processes
//!
//! The table lives in a `MAP_SHARED` mapping created before the worker
//! processes fork, so every worker sees the same physical memory. Rust's
//! atomics of lock-free widths compile to plain `lock`-prefixed (or LL/SC)
//! instructions on that memory; they carry no process-private state and are
//! therefore valid across processes. They do not interoperate with nginx's own
//! locks (`ngx_rwlock`, `ngx_shmtx`): nothing here takes or honours those.
//! `std` and `parking_lot` locks are process-private and are never placed in
//! the table.

#![warn(missing_docs)]

// Floors, each importing only those below it (tests/layers.rs checks it):
pub mod algo;
pub mod crash;
pub mod error;
pub mod spec;

pub mod attempt;
pub mod layout;
pub mod learn;

pub mod health;
pub mod policy;

pub mod write;

pub mod request;
pub mod testing;

pub use attempt::Attempt;
pub use error::Error;
pub use layout::Table;
pub use request::{Binding, Outcome, Pick, Released, Report};
pub use spec::{PeerSpec, Policy, UpstreamSpec};
