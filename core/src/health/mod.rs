//! Health: the one eligibility function every policy goes through, and
//! passive health (nginx's `max_fails` / `fail_timeout`, and `max_conns`)
//!
//! A peer is out of rotation when any of these holds, checked in this
//! order on its one hot cache line:
//!
//! - it is `down` (configured), set down or draining through the API;
//! - its health bits say so — `checking` or `unhealthy` from active checks
//!   ([`check`]), `ejected` as an outlier ([`outlier`]) — unless the
//!   upstream is in panic ([`mod@panic`]), which ignores health;
//! - it is full (`max_conns`);
//! - it is inside its passive failure window.
//!
//! Slow start ([`slow_start`]) does not take a peer out: it thins the picks
//! a ramping peer gets (or, for `least_conn`, scales its weight).
//!
//! Passive health keeps nginx's rules (ngx_http_upstream_round_robin.c)
//! exactly, but on counters shared by all workers and with millisecond
//! times:
//!
//! - a peer with `fails >= max_fails` is skipped while
//!   `now - checked <= fail_timeout`;
//! - after that, one request may probe it: the pick that finds the window
//!   expired sets `checked = now`, closing it again for everyone else (here a
//!   compare-and-swap, so exactly one worker wins the probe);
//! - a failure does `fails++`, `accessed = checked = now`;
//! - a success clears `fails` only if `accessed < checked`, i.e. a pick
//!   opened a new window since the last failure;
//! - `max_fails=0` never disables; a single peer ignores failures.
//!
//! Ordering: every field is an independent counter or timestamp and no
//! other memory is published through it, so `Relaxed` suffices; the
//! compare-and-swaps make the one-probe rule and `max_conns` exact. The
//! one exception: the changes of `in_flight` are `SeqCst`, so that the
//! least_conn tree's refresh after them needs no fence of its own.

pub mod check;
pub mod grpc;
pub mod outlier;
pub mod panic;
pub mod slow_start;

use core::sync::atomic::Ordering::Relaxed;

use crate::layout::flight::{self, Hold};
use crate::layout::{PeerState, Table};

/// What the whole pick knows before it looks at peers: read once per pick.
///
/// Two words (flags, the worker's ledger row), so that it travels in
/// registers through the policies to [`acquire`]. The default: no
/// single-peer rules, no slow start, no panic, no ledger slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode<'a> {
    /// [`Mode::SINGLE`] | [`Mode::RAMP`] | [`Mode::PANIC`].
    bits: u32,
    /// The worker's ledger row, where its part of every in-flight count
    /// is kept ([`crate::layout::flight`]); `None` without a slot.
    pub hold: Option<Hold<'a>>,
}

impl<'a> Mode<'a> {
    const SINGLE: u32 = 1;
    const RAMP: u32 = 2;
    const PANIC: u32 = 4;
    const BOUND: u32 = 8;

    /// The mode of a pick on `t` by the worker holding `hold`.
    #[inline]
    pub fn of(t: &Table<'_>, hold: Option<Hold<'a>>) -> Mode<'a> {
        let z = t.zone();
        let h = &z.root().health;
        let panic = h.panic_percent != 0 && z.health_line().panic.load(Relaxed) != 0;
        Mode {
            bits: u32::from(t.single())
                | u32::from(h.slow_start_ms != 0) << 1
                | u32::from(panic) << 2,
            hold,
        }
    }

    #[inline]
    fn with(self, bit: u32, on: bool) -> Self {
        Mode {
            bits: if on {
                self.bits | bit
            } else {
                self.bits & !bit
            },
            ..self
        }
    }

    /// nginx's single-peer rules apply (one primary, no backup).
    #[inline]
    pub fn single(&self) -> bool {
        self.bits & Self::SINGLE != 0
    }

    /// This mode with nginx's single-peer rules on or off.
    #[inline]
    pub fn with_single(self, on: bool) -> Self {
        self.with(Self::SINGLE, on)
    }

    /// Slow start thins the picks of ramping peers (every policy that
    /// picks by position or draw; `least_conn` scales weights instead, and
    /// hash policies keep their keys).
    #[inline]
    pub fn ramp(&self) -> bool {
        self.bits & Self::RAMP != 0
    }

    /// This mode with slow start's thinning on or off.
    #[inline]
    pub fn with_ramp(self, on: bool) -> Self {
        self.with(Self::RAMP, on)
    }

    /// This mode for a request bound to its server (`ha_sticky`) or not:
    /// a draining server still takes bound requests.
    #[inline]
    pub fn with_bound(self, on: bool) -> Self {
        self.with(Self::BOUND, on)
    }

    /// This mode in panic (health ignored) or not.
    #[inline]
    pub fn with_panic(self, on: bool) -> Self {
        self.with(Self::PANIC, on)
    }

    /// The flag bits that keep a peer out: [`PeerState::OUT`], and
    /// [`PeerState::HEALTH`] unless the upstream is in panic.
    #[inline]
    pub fn out(&self) -> u32 {
        let out = if self.panic() {
            PeerState::OUT
        } else {
            PeerState::OUT | PeerState::HEALTH
        };
        if self.bits & Self::BOUND != 0 {
            out & !PeerState::DRAIN
        } else {
            out
        }
    }

    /// Whether health is ignored (panic).
    #[inline]
    pub fn panic(&self) -> bool {
        self.bits & Self::PANIC != 0
    }
}

/// What a pick may do with a peer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Not now: down, full, or inside its failure window.
    No,
    /// Yes.
    Yes,
    /// Its failure window expired: one probe may go, to whoever claims it.
    Probe {
        /// The `checked_ms` value the claim must replace.
        checked: u64,
    },
}

/// Whether `state` may be picked at `now` (ignoring `tried`): the one
/// eligibility function every policy goes through. Configured `down`, the
/// API's `down` and `drain`, health (outside panic), `max_conns` and the
/// failure window all count.
#[inline]
pub fn eligibility(state: &PeerState, now: u64, mode: Mode) -> Eligibility {
    eligibility_flags(state, state.flags.load(Relaxed), now, mode)
}

#[inline]
fn eligibility_flags(state: &PeerState, flags: u32, now: u64, mode: Mode) -> Eligibility {
    if flags & mode.out() != 0 {
        return Eligibility::No;
    }
    let single = mode.single();
    let max_conns = state.max_conns();
    if max_conns != 0 && state.in_flight.load(Relaxed) >= max_conns {
        return Eligibility::No;
    }
    let max_fails = state.max_fails();
    if single || max_fails == 0 || state.fails.load(Relaxed) < max_fails {
        return Eligibility::Yes;
    }
    let checked = state.checked_ms.load(Relaxed);
    if now.saturating_sub(checked) <= state.fail_timeout_ms() {
        Eligibility::No
    } else {
        Eligibility::Probe { checked }
    }
}

/// Claims peer `i` of `t` for one request: counts it in flight (within
/// `max_conns`) and, for a probe, wins the window. `false` when another
/// worker got there first, or slow start held the pick back.
#[inline(always)]
pub fn acquire(t: &Table<'_>, i: usize, now: u64, mode: Mode<'_>) -> bool {
    acquire_in(t, t.states(), i, now, mode)
}

/// [`acquire`] with the zone's peer states at hand (`states` is
/// `t.states()`, hoisted out of a caller's loop).
#[inline(always)]
pub fn acquire_in(t: &Table<'_>, states: &[PeerState], i: usize, now: u64, mode: Mode<'_>) -> bool {
    let state = &states[i];
    let flags = state.flags.load(Relaxed);
    let e = eligibility_flags(state, flags, now, mode);
    if e == Eligibility::No {
        return false;
    }
    if mode.ramp() && flags & PeerState::SLOW != 0 && !ramp_admits(t, i, now) {
        return false;
    }
    acquire_state(state, e, now, mode.hold, i)
}

/// [`slow_start::admit`], off the hot path: only ramping peers get here.
#[cold]
#[inline(never)]
fn ramp_admits(t: &Table<'_>, i: usize, now: u64) -> bool {
    slow_start::admit(t.zone(), i, now)
}

/// The counting part of [`acquire`], once peer `i` was found eligible:
/// counted in flight and in `hold`'s ledger row ([`flight::acquire`]).
#[inline(always)]
fn acquire_state(
    state: &PeerState,
    e: Eligibility,
    now: u64,
    hold: Option<Hold<'_>>,
    i: usize,
) -> bool {
    // `SeqCst` inside (the same locked instruction as `Relaxed` on x86):
    // the least_conn tree's refresh that follows relies on it being
    // ordered before its own loads (see `lc_tree`).
    if !flight::acquire(state.in_flight.word(), state.max_conns(), hold, i) {
        return false;
    }
    match e {
        Eligibility::Probe { checked } => {
            if state
                .checked_ms
                .compare_exchange(checked, now, Relaxed, Relaxed)
                .is_err()
            {
                release(state, hold, i);
                return false;
            }
        }
        _ => {
            // nginx: a pick after the window expired starts a new one.
            let checked = state.checked_ms.load(Relaxed);
            if now.saturating_sub(checked) > state.fail_timeout_ms() {
                let _ = state
                    .checked_ms
                    .compare_exchange(checked, now, Relaxed, Relaxed);
            }
        }
    }
    true
}

/// Takes one request off peer `i`'s in-flight count (and off `hold`'s
/// ledger row), never below zero.
#[inline]
pub fn release(state: &PeerState, hold: Option<Hold<'_>>, i: usize) {
    flight::release(state.in_flight.word(), hold, i);
}

/// How a finished try changed the peer's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth logging.
    None,
    /// This failure reached `max_fails`: the peer is now disabled.
    Disabled,
    /// This success cleared a disabled peer's failures.
    Recovered,
}

/// Records a failed try at `now`.
pub fn record_failure(state: &PeerState, now: u64) -> Transition {
    let fails = state.fails.fetch_add(1, Relaxed).saturating_add(1);
    state.accessed_ms.store(now, Relaxed);
    state.checked_ms.fetch_max(now, Relaxed);
    let max_fails = state.max_fails();
    if max_fails != 0 && fails == max_fails {
        Transition::Disabled
    } else {
        Transition::None
    }
}

/// Records a successful (or passed-on) try.
pub fn record_success(state: &PeerState) -> Transition {
    if state.fails.load(Relaxed) == 0 {
        return Transition::None;
    }
    if state.accessed_ms.load(Relaxed) < state.checked_ms.load(Relaxed) {
        let old = state.fails.swap(0, Relaxed);
        let max_fails = state.max_fails();
        if max_fails != 0 && old >= max_fails {
            return Transition::Recovered;
        }
    }
    Transition::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU32, AtomicU64};

    fn mode(single: bool) -> Mode<'static> {
        Mode::default().with_single(single)
    }

    /// [`super::eligibility`] outside panic.
    fn eligibility(s: &PeerState, now: u64, single: bool) -> Eligibility {
        super::eligibility(s, now, mode(single))
    }

    /// [`super::acquire`] on a peer outside any table.
    fn acquire(s: &PeerState, now: u64, single: bool) -> bool {
        let e = super::eligibility(s, now, mode(single));
        e != Eligibility::No && acquire_state(s, e, now, None, 0)
    }

    fn peer(max_fails: u32, fail_timeout_ms: u64) -> PeerState {
        PeerState {
            in_flight: crate::layout::Flight::new(0),
            fails: AtomicU32::new(0),
            checked_ms: AtomicU64::new(0),
            accessed_ms: AtomicU64::new(0),
            ewma_bits: AtomicU64::new(0),
            ewma_stamp_ms: AtomicU64::new(0),
            weight: AtomicU32::new(1),
            max_conns: AtomicU32::new(0),
            max_fails: AtomicU32::new(max_fails),
            flags: AtomicU32::new(0),
            fail_timeout_ms: AtomicU32::new(fail_timeout_ms as u32),
        }
    }

    /// nginx's timeline for max_fails=2 fail_timeout=10s.
    #[test]
    fn max_fails_timeline() {
        let s = peer(2, 10_000);
        let t0 = 1_000_000;
        assert!(acquire(&s, t0, false));
        release(&s, None, 0);
        assert_eq!(record_failure(&s, t0), Transition::None);
        // One failure: still eligible.
        assert_eq!(eligibility(&s, t0 + 1, false), Eligibility::Yes);
        assert!(acquire(&s, t0 + 1, false));
        release(&s, None, 0);
        assert_eq!(record_failure(&s, t0 + 1), Transition::Disabled);
        // Disabled for fail_timeout after the last failure (inclusive).
        assert_eq!(eligibility(&s, t0 + 1 + 10_000, false), Eligibility::No);
        // Then exactly one probe.
        let t1 = t0 + 1 + 10_001;
        assert!(matches!(
            eligibility(&s, t1, false),
            Eligibility::Probe { .. }
        ));
        assert!(acquire(&s, t1, false));
        assert!(!acquire(&s, t1, false), "second probe must wait");
        assert!(!acquire(&s, t1 + 5_000, false));
        // The probe succeeds: failures cleared, peer back.
        release(&s, None, 0);
        assert_eq!(record_success(&s), Transition::Recovered);
        assert_eq!(s.fails.load(Relaxed), 0);
        assert!(acquire(&s, t1 + 1, false));
        release(&s, None, 0);
    }

    #[test]
    fn failed_probe_closes_the_window_again() {
        let s = peer(1, 1_000);
        record_failure(&s, 5_000);
        assert!(!acquire(&s, 5_500, false));
        assert!(acquire(&s, 6_001, false));
        release(&s, None, 0);
        record_failure(&s, 6_010);
        assert!(!acquire(&s, 7_000, false));
        assert!(acquire(&s, 7_011, false));
    }

    #[test]
    fn success_inside_window_keeps_fails() {
        // nginx clears fails only when a new window was opened since the
        // last failure (accessed < checked).
        let s = peer(3, 10_000);
        record_failure(&s, 100_000);
        assert!(acquire(&s, 100_500, false));
        release(&s, None, 0);
        assert_eq!(record_success(&s), Transition::None);
        assert_eq!(s.fails.load(Relaxed), 1);
        // A pick after the window opens a new one; the next success clears.
        assert!(acquire(&s, 110_001, false));
        release(&s, None, 0);
        record_success(&s);
        assert_eq!(s.fails.load(Relaxed), 0);
    }

    #[test]
    fn max_fails_zero_and_single_never_disable() {
        let s = peer(0, 10_000);
        for t in 0..10 {
            record_failure(&s, 1000 + t);
        }
        assert_eq!(eligibility(&s, 1010, false), Eligibility::Yes);
        let s = peer(1, 10_000);
        record_failure(&s, 1000);
        assert_eq!(eligibility(&s, 1001, true), Eligibility::Yes);
        assert_eq!(eligibility(&s, 1001, false), Eligibility::No);
    }

    #[test]
    fn max_conns_is_a_hard_bound() {
        let s = peer(1, 10_000);
        s.max_conns.store(2, Relaxed);
        assert!(acquire(&s, 1, false));
        assert!(acquire(&s, 1, false));
        assert!(!acquire(&s, 1, false));
        release(&s, None, 0);
        assert!(acquire(&s, 1, false));
        release(&s, None, 0);
        release(&s, None, 0);
        release(&s, None, 0);
        assert_eq!(s.in_flight.load(Relaxed), 0, "never below zero");
    }

    #[test]
    fn down_is_never_eligible() {
        let s = peer(1, 10_000);
        s.flags.store(crate::layout::PeerState::DOWN, Relaxed);
        assert!(!acquire(&s, 1, false));
        assert!(!acquire(&s, 1, true));
    }
}
