//! The policies: each file chooses among one group of peers of a
//! generation (its pick), and reads the frozen section built for it
//!
//! They stand on the layout ([`crate::layout`]) and health
//! ([`crate::health`]); the request path ([`crate::request`]) dispatches to
//! them on the decoded [`crate::spec::Policy`].

pub mod ewma;
pub mod hash;
pub mod least_conn;
pub mod p2c;
pub mod random;
pub mod round_robin;
