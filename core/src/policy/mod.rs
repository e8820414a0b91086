//! The policies: each file chooses among one group of peers of a
//! generation (its pick), and reads the frozen section built for it
//!
//! They stand on the layout ([`crate::layout`]) and health
//! ([`crate::health`]). Each file also sizes and builds the frozen
//! sections it reads ([`frozen`]). This file is the one dispatch on the
//! decoded [`crate::spec::Policy`]: for the request path
//! ([`crate::request`]) `pick_primary`, `pick` and `learn` (what a try's
//! end teaches), for the generation builder ([`crate::write::generation`])
//! `frozen_lens` and `build_frozen`.

pub mod ewma;
pub mod frozen;
pub mod hash;
pub mod least_conn;
pub mod p2c;
pub mod random;
pub mod round_robin;
pub mod sticky;

pub use frozen::{FrozenLens, FrozenOut, Placement};

use crate::attempt::Attempt;
use crate::error::Error;
use crate::health::Mode;
use crate::layout::{PeerState, Table, PRIMARY};
use crate::spec::{Policy, UpstreamSpec};

/// Picks a primary of `t` for the next try of `attempt` and acquires it
/// (its table-wide index): the dispatch of the request path on the
/// decoded policy. `key`: the request's key (hash policies).
#[inline]
pub(crate) fn pick_primary(
    policy: Policy,
    t: &Table<'_>,
    attempt: &mut Attempt<'_>,
    key: &[u8],
    now: u64,
    mode: Mode<'_>,
) -> Option<usize> {
    match policy {
        Policy::Hash { .. } => hash::pick(t, attempt, key, now, mode),
        _ => pick(policy, t, PRIMARY, attempt, now, mode),
    }
}

/// Picks from group `g` of `t` ([`PRIMARY`] or [`crate::layout::BACKUP`])
/// without a key (hash falls back on round robin) and acquires the peer.
#[inline]
pub(crate) fn pick(
    policy: Policy,
    t: &Table<'_>,
    g: usize,
    attempt: &mut Attempt<'_>,
    now: u64,
    mode: Mode<'_>,
) -> Option<usize> {
    if t.group(g).is_empty() {
        return None;
    }
    match policy {
        Policy::RoundRobin | Policy::Hash { .. } => round_robin::pick(t, g, attempt, now, mode),
        Policy::LeastConn => least_conn::pick(t, g, attempt, now, mode),
        Policy::P2c => p2c::pick(t, attempt, now, mode),
        Policy::Ewma { decay_ms } => ewma::pick(t, attempt, now, mode, decay_ms),
        Policy::Random => random::pick(t, attempt, now, mode),
    }
}

/// What the policy learns from a try that ended after `duration` ms
/// (`ok`: a success): `ewma`, the latency of a success.
#[inline]
pub(crate) fn learn(policy: Policy, state: &PeerState, ok: bool, duration: u64, now: u64) {
    if let (Policy::Ewma { decay_ms }, true) = (policy, ok) {
        ewma::observe(state, duration, now, decay_ms);
    }
}

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
