//! The basement: algorithms with no state of their own, over plain
//! slices (they import nothing of the crate but its error type)
//!
//! The policies' frozen sections are built with them (alias tables,
//! ketama rings, Maglev tables, smooth schedules, CRC32 as nginx hashes),
//! and MD5 for the session ids nginx gives servers.

pub mod alias;
pub mod crc32;
pub mod hpack;
pub mod ketama;
pub mod maglev;
pub mod md5;
pub mod schedule;
