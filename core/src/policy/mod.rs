//! The policies: each file chooses among one group of peers of a
//! generation (its pick), and reads the frozen section built for it
//!
//! They stand on the layout ([`crate::layout`]) and health
//! ([`crate::health`]); the request path ([`crate::request`]) dispatches to
//! them on the decoded [`crate::spec::Policy`]. Each policy file also
//! sizes and builds the frozen sections it reads ([`frozen`]): the
//! dispatch is `frozen_lens` and `build_frozen`.

pub mod ewma;
pub mod frozen;
pub mod hash;
pub mod least_conn;
pub mod p2c;
pub mod random;
pub mod round_robin;

pub use frozen::{FrozenLens, FrozenOut, Placement};

use crate::error::Error;
use crate::spec::{Policy, UpstreamSpec};

/// The frozen sections a generation of `spec` needs for its policy, in a
/// slot space of `space` slots.
pub(crate) fn frozen_lens(spec: &UpstreamSpec<'_>, space: usize) -> Result<FrozenLens, Error> {
    let mut lens = FrozenLens {
        sched: round_robin::schedule_lens(spec)?,
        ..FrozenLens::default()
    };
    match spec.policy {
        Policy::P2c | Policy::Ewma { .. } | Policy::Random => lens.alias = random::alias_len(space),
        Policy::Hash { .. } => hash::frozen_lens(spec, space, &mut lens)?,
        Policy::RoundRobin | Policy::LeastConn => {}
    }
    Ok(lens)
}

/// Builds the frozen sections of a generation of `spec` (all but the
/// ring: [`hash::ring`]) into `out`, carved at the lengths
/// [`frozen_lens`] gave. The alias table's columns in force.
pub(crate) fn build_frozen(
    spec: &UpstreamSpec<'_>,
    at: &Placement<'_>,
    out: FrozenOut<'_>,
) -> Result<usize, Error> {
    let alias = random::build_alias(spec, at, out.alias)?;
    hash::build_maglev(spec, at, out.maglev);
    hash::build_chains(spec, at, out.chain);
    round_robin::build_schedules(spec, at, out.sched)?;
    Ok(alias)
}
