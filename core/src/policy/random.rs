//! Weighted random
//!
//! One O(1) draw from the primaries' alias table (see [`crate::algo::alias`]),
//! with the attempt's own generator (seeded per worker). A drawn peer that
//! is tried or not eligible costs another draw, up to [`DRAWS`]; then the
//! group is scanned from a random start, so a pick fails only when no peer
//! is eligible.

use super::frozen::{live_weights, Placement};
use crate::algo::alias::{self, Column};
use crate::attempt::Attempt;
use crate::error::Error;
use crate::health::{self, Mode};
use crate::layout::{Table, PRIMARY};
use crate::spec::UpstreamSpec;

/// Draws before falling back to a scan (nginx's random gives up after 20).
pub const DRAWS: usize = 20;

/// Picks a primary and acquires it.
pub fn pick(t: &Table<'_>, attempt: &mut Attempt<'_>, now: u64, mode: Mode) -> Option<usize> {
    let (table, states) = (t.alias(), t.states());
    if table.is_empty() {
        return None;
    }
    // The common case, the first draw taken, outside the loop (whose
    // setup cost as much as the draw).
    let i = alias::draw(table, attempt.random());
    if !attempt.tried(i) && health::acquire_in(t, states, i, now, mode) {
        return Some(i);
    }
    for _ in 1..DRAWS {
        let i = alias::draw(table, attempt.random());
        if !attempt.tried(i) && health::acquire_in(t, states, i, now, mode) {
            return Some(i);
        }
    }
    let start = attempt.random() as usize;
    t.scan_acquire(PRIMARY, attempt, now, mode, start)
}

/// Columns of a generation's alias table (`random`, `p2c`, `ewma`): one
/// per slot, indexed by slot.
pub(crate) fn alias_len(space: usize) -> usize {
    space
}

/// Builds the primaries' alias table into `out` (its planned length);
/// the columns in force: 0 when a sparse generation has no live primary
/// (an all-zero table would draw every column itself), else all of them.
/// A slot that is no primary weighs 0 and is never drawn.
pub(crate) fn build_alias(
    spec: &UpstreamSpec<'_>,
    at: &Placement<'_>,
    out: &mut [Column],
) -> Result<usize, Error> {
    if out.is_empty() {
        return Ok(0);
    }
    let live = live_weights(spec, 0..at.primaries);
    if !at.dense && !alias::any(&live) {
        return Ok(0);
    }
    let mut w = vec![0u32; out.len()];
    for (k, &lw) in live.iter().enumerate() {
        w[at.slot(k)] = lw;
    }
    alias::build(&w, out)?;
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use crate::request::tests::{table, IDS};
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy};
    use crate::testing::OwnedAttempt;

    #[test]
    fn weights_5_1_1_within_2_percent() {
        let peers = [
            PeerSpec::new(IDS[0]).weight(5),
            PeerSpec::new(IDS[1]),
            PeerSpec::new(IDS[2]),
        ];
        let t = table(Policy::Random, &peers);
        let mut counts = [0usize; 3];
        let mut a = OwnedAttempt::new(t.table(), 0);
        let n = 70_000;
        for k in 0..n {
            let mut at = a.attempt();
            at.reset(0);
            at.seed(0x1234_5678 + k as u64 * 0x9e37_79b9);
            let p = t.table().get(&mut at, 0).unwrap();
            counts[p.peer as usize] += 1;
            t.table().free(&mut at, Outcome::Ok, 0).unwrap();
        }
        for (c, w) in counts.iter().zip([5.0, 1.0, 1.0]) {
            let share = *c as f64 / n as f64;
            let want = w / 7.0;
            assert!((share - want).abs() / want < 0.02, "{counts:?}");
        }
    }
}
