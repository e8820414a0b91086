//! Walker/Vose alias tables: weighted random draws in O(1)
//!
//! Built once at configuration time from the peers' weights; a draw reads
//! one entry: a uniform column, then a biased coin between the column's own
//! peer and its alias. Peers of weight 0 (`down`) are never drawn.

use crate::error::Error;

/// One column of the table (8 bytes, stored in shared memory).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Column {
    /// Keep the column's own peer when the coin (a u32) is below this.
    pub threshold: u32,
    /// The other peer of the column.
    pub alias: u32,
}

/// Fills `out` (one column per weight) for `weights`. All-zero weights
/// give an empty distribution: every column aliases to itself with
/// threshold 0, and [`any`] reports it.
pub fn build(weights: &[u32], out: &mut [Column]) -> Result<(), Error> {
    let n = weights.len();
    if out.len() != n {
        return Err(Error::InvalidArgument);
    }
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        for (i, c) in out.iter_mut().enumerate() {
            *c = Column {
                threshold: 0,
                alias: i as u32,
            };
        }
        return Ok(());
    }
    // Scaled probabilities: p_i * n in units of 2^32, exact integers.
    const ONE: u128 = 1 << 32;
    let mut scaled: Vec<u128> = weights
        .iter()
        .map(|&w| u128::from(w) * n as u128 * ONE / u128::from(total))
        .collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < ONE);
    for (i, c) in out.iter_mut().enumerate() {
        *c = Column {
            threshold: u32::MAX,
            alias: i as u32,
        };
    }
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        out[s] = Column {
            threshold: scaled[s].min(ONE - 1) as u32,
            alias: l as u32,
        };
        scaled[l] -= ONE - scaled[s];
        if scaled[l] < ONE {
            large.pop();
            small.push(l);
        }
    }
    // Leftovers are 1 up to rounding: keep their own peer, unless their
    // weight is 0 (rounding must never make a down peer drawable).
    for i in small.into_iter().chain(large) {
        if weights[i] == 0 {
            let heavy = weights.iter().position(|&w| w > 0).unwrap_or(i);
            out[i] = Column {
                threshold: 0,
                alias: heavy as u32,
            };
        } else {
            out[i] = Column {
                threshold: u32::MAX,
                alias: i as u32,
            };
        }
    }
    Ok(())
}

/// Draws a peer index from `table` with 64 random bits.
#[inline]
pub fn draw(table: &[Column], random: u64) -> usize {
    let n = table.len() as u64;
    // Lemire's multiply-shift on the low half picks the column, the high
    // half is the coin.
    let col = (((random & 0xffff_ffff) * n) >> 32) as usize;
    let coin = (random >> 32) as u32;
    let c = table[col];
    if coin < c.threshold || c.threshold == u32::MAX {
        col
    } else {
        c.alias as usize
    }
}

/// Whether any peer can be drawn.
pub fn any(weights: &[u32]) -> bool {
    weights.iter().any(|&w| w > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(weights: &[u32], draws: usize) -> Vec<f64> {
        let mut t = vec![Column::default(); weights.len()];
        build(weights, &mut t).unwrap();
        let mut counts = vec![0usize; weights.len()];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..draws {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            counts[draw(&t, x)] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn weights_5_1_1_within_2_percent() {
        let s = shares(&[5, 1, 1], 700_000);
        for (got, want) in s.iter().zip([5.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0]) {
            assert!((got - want).abs() / want < 0.02, "{s:?}");
        }
    }

    #[test]
    fn zero_weight_is_never_drawn() {
        let s = shares(&[3, 0, 1, 0], 100_000);
        assert_eq!(s[1], 0.0);
        assert_eq!(s[3], 0.0);
        assert!((s[0] - 0.75).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn many_peers_are_uniform() {
        let w = vec![1u32; 1000];
        let s = shares(&w, 1_000_000);
        let (lo, hi) = s
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(lo > 0.0007 && hi < 0.0013, "{lo} {hi}");
    }
}
