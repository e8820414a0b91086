//! One upstream the caller serves: what every answer is made from.

use hab_core::layout::Zone;

/// One upstream the caller serves.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its zone.
    pub zone: Zone<'a>,
}
