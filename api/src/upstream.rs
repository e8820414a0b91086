//! One upstream the caller serves: what every answer is made from.

use hab_core::layout::Zone;
use hab_core::learn::Sessions;

/// One upstream the caller serves.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its zone.
    pub zone: Zone<'a>,
    /// Its table of learnt sessions (`ha_sticky learn`), if it has one.
    pub learn: Option<Learn<'a>>,
}

/// A table of learnt sessions and the shared memory zone that holds it
/// (`ha_sticky learn ... zone=NAME:SIZE`).
#[derive(Debug, Clone, Copy)]
pub struct Learn<'a> {
    /// The zone's name (`NAME`).
    pub zone: &'a str,
    /// The table.
    pub table: Sessions<'a>,
}
