//! Per-server statistics, exact and global across workers, cheap to count
//!
//! Every try adds to a handful of counters when it ends: requests,
//! responses by class, failures, header and response time, bytes, and the
//! time it was picked (a try in flight shows in `active`, and in
//! `requests` once it ends). Counting them with locked read-modify-writes on a line shared by
//! all workers would make every try bounce that line between cores, so each
//! worker counts in its own rows instead: ledger slot `s` owns one
//! [`StatsRow`] per peer, written only by that slot's owner with a load and
//! a store (no locked instruction, as the in-flight ledger). A reader sums
//! the rows of every slot ever used. Rows are never cleared when a worker
//! dies: whoever claims the slot next keeps counting on top, so a death
//! neither loses counts nor makes a counter step back.
//!
//! A slot's rows are zeroed by its first owner, not by the zone's
//! initialisation: pages of slots never claimed stay untouched (with 4
//! workers, 5 of the 33 row blocks are resident).
//!
//! One more row per peer, [`SHARED`], takes the counts of workers without a
//! ledger slot (with atomic adds, as several may write it) and what a fresh
//! zone carries over from the one it replaces on reload.
//!
//! A spell of unavailability runs from the failure that reached
//! `max_fails` to `fail_timeout` after the last failure (a failed probe
//! extends it); `downtime` sums the spells.
//!
//! Events that happen once per health transition (a server becoming
//! unavailable, coming back) are counted in [`PeerEvents`], one line per
//! peer, with atomics: they are rare, and each transition is reported to
//! exactly one worker (see [`crate::health`]), which therefore also logs it
//! once.
//!
//! A reset (`DELETE` on the upstream) does not touch the workers' rows: it
//! records the current sums as a baseline, and readers report sums minus
//! baseline. Counters only ever grow between resets.
//!
//! All accesses are `Relaxed`: every counter is independent, published
//! nothing else, and a reader only needs each value eventually.

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::{Zone, ALIGN, LEDGER_SLOTS};
use crate::crash::crash_point;

/// Row index of the shared row, after the [`LEDGER_SLOTS`] worker rows.
pub const SHARED: usize = LEDGER_SLOTS;

/// Rows per peer: one per ledger slot and the shared one.
pub const ROWS: usize = LEDGER_SLOTS + 1;

/// One writer's counters for one peer: two cache lines, the first holding
/// everything a try that gets a 2xx touches (its pick and its end), so
/// that a typical try writes one line of the worker's own.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct StatsRow {
    /// Tries sent (counted when they end).
    pub requests: AtomicU64,
    /// Time of the last pick, ms (a maximum, not a sum; never reset).
    pub selected_ms: AtomicU64,
    /// 2xx responses.
    pub ok: AtomicU64,
    /// Failed tries.
    pub fails: AtomicU64,
    /// Sum over responses of the time to the response header, ms.
    pub header_ms: AtomicU64,
    /// Sum over responses of the time to the end of the try, ms.
    pub response_ms: AtomicU64,
    /// Bytes sent to the server.
    pub sent: AtomicU64,
    /// Bytes received from the server.
    pub received: AtomicU64,
    /// 1xx, 3xx, 4xx and 5xx responses.
    pub other: [AtomicU64; 4],
    /// Tries that went to the server because the request was bound to it
    /// (`ha_sticky`); the others were balanced.
    pub bound: AtomicU64,
    /// Zero.
    pub reserved: [u64; 3],
}

/// Health transitions of one peer, and the baseline of the last reset.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct PeerEvents {
    /// Times `max_fails` made the peer unavailable.
    pub unavail: AtomicU64,
    /// Ms spent unavailable in spells that ended.
    pub downtime_ms: AtomicU64,
    /// Start of the spell in progress, ms (valid while `down` is 1).
    pub downstart_ms: AtomicU64,
    /// 1 while a spell is in progress.
    pub down: AtomicU64,
    /// `unavail` at the last reset.
    pub base_unavail: AtomicU64,
    /// Downtime (spell in progress included) at the last reset.
    pub base_downtime_ms: AtomicU64,
    /// Zero.
    pub reserved: [u64; 2],
}

const _: () = {
    assert!(core::mem::size_of::<StatsRow>() == 128);
    assert!(core::mem::size_of::<PeerEvents>() == 64);
};

/// What one finished try reports, beyond its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TryInfo {
    /// HTTP status of the response, 0 when no response header came (a
    /// connection error, a timeout before the header).
    pub status: u32,
    /// Time to the response header, ms, when one came; `None` takes the
    /// try's whole duration.
    pub header_ms: Option<u64>,
    /// Bytes sent to the server.
    pub sent: u64,
    /// Bytes received from the server.
    pub received: u64,
}

impl TryInfo {
    /// Nothing known beyond the outcome.
    pub const NONE: TryInfo = TryInfo {
        status: 0,
        header_ms: None,
        sent: 0,
        received: 0,
    };
}

/// One peer's statistics, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Tries sent.
    pub requests: u64,
    /// Responses by class, 1xx to 5xx.
    pub responses: [u64; 5],
    /// Failed tries.
    pub fails: u64,
    /// Times made unavailable by `max_fails`.
    pub unavail: u64,
    /// Ms spent unavailable, the spell in progress included.
    pub downtime_ms: u64,
    /// Start of the spell in progress, while the peer is inside its
    /// failure window.
    pub downstart_ms: Option<u64>,
    /// Last pick.
    pub selected_ms: Option<u64>,
    /// Sum of header times over responses, ms.
    pub header_ms: u64,
    /// Sum of response times over responses, ms.
    pub response_ms: u64,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// Tries sent to the server because the request was bound to it
    /// (`requests - bound` were balanced).
    pub bound: u64,
}

impl PeerStats {
    /// Responses of every class.
    pub fn responses_total(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Average time to the response header, ms (`None` before the first).
    pub fn header_time(&self) -> Option<u64> {
        let n = self.responses_total();
        (n != 0).then(|| self.header_ms / n)
    }

    /// Average response time, ms (`None` before the first response).
    pub fn response_time(&self) -> Option<u64> {
        let n = self.responses_total();
        (n != 0).then(|| self.response_ms / n)
    }

    /// Adds `o` to `self` (totals of an upstream); times take the latest.
    pub fn add(&mut self, o: &PeerStats) {
        self.requests += o.requests;
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a += b;
        }
        self.fails += o.fails;
        self.unavail += o.unavail;
        self.downtime_ms += o.downtime_ms;
        self.header_ms += o.header_ms;
        self.response_ms += o.response_ms;
        self.sent += o.sent;
        self.received += o.received;
        self.bound += o.bound;
        self.selected_ms = self.selected_ms.max(o.selected_ms);
    }
}

/// Raw sums of a peer's rows (before the baseline).
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    v: [u64; 12],
    selected: u64,
}

impl StatsRow {
    /// The summed fields, in a fixed order (`selected_ms` apart):
    /// requests, responses 1xx to 5xx, fails, header and response time,
    /// sent, received, bound.
    #[inline]
    fn fields(&self) -> [&AtomicU64; 12] {
        let [r1, r3, r4, r5] = &self.other;
        [
            &self.requests,
            r1,
            &self.ok,
            r3,
            r4,
            r5,
            &self.fails,
            &self.header_ms,
            &self.response_ms,
            &self.sent,
            &self.received,
            &self.bound,
        ]
    }
}

/// Adds `n` to a counter with one writer: a load and a store.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counts the end of a try in `row` with `add` (a plain or an atomic add).
#[inline(always)]
fn count_end_in(
    row: &StatsRow,
    failed: bool,
    bound: bool,
    info: &TryInfo,
    duration: u64,
    add: impl Fn(&AtomicU64, u64),
) {
    add(&row.requests, 1);
    crash_point("stats.requests");
    if bound {
        add(&row.bound, 1);
    }
    if failed {
        add(&row.fails, 1);
    }
    if let 100..=599 = info.status {
        let class = match info.status / 100 {
            2 => &row.ok,
            1 => &row.other[0],
            k => &row.other[(k - 2) as usize],
        };
        add(class, 1);
        add(
            &row.header_ms,
            info.header_ms.unwrap_or(duration).min(duration),
        );
        add(&row.response_ms, duration);
    }
    if info.sent != 0 {
        add(&row.sent, info.sent);
    }
    if info.received != 0 {
        add(&row.received, info.received);
    }
}

impl<'a> Zone<'a> {
    /// Health transitions of every peer.
    #[inline]
    pub fn events(&self) -> &'a [PeerEvents] {
        // SAFETY: `peers` event lines at stats_off (layout contract),
        // zero-initialised atomics.
        unsafe { self.section(self.root().stats_off, self.peers()) }
    }

    /// The reset baselines of every peer.
    #[inline]
    fn baselines(&self) -> &'a [StatsRow] {
        let off = self.root().stats_off as usize + self.peers() * size_of_events();
        // SAFETY: `peers` rows follow the event lines (layout contract).
        unsafe { self.section(off as u64, self.peers()) }
    }

    /// Row `r` (a ledger slot, or [`SHARED`]) of every peer.
    #[inline]
    pub(crate) fn stats_rows(&self, r: usize) -> &'a [StatsRow] {
        let root = self.root();
        // The shared block first, then the slots' blocks in order.
        let off = root.stats_rows_off as usize + ((r + 1) % ROWS) * root.stats_row_bytes as usize;
        // SAFETY: ROWS blocks of `stats_row_bytes` bytes, each `peers`
        // rows, start at stats_rows_off (layout contract); the index is
        // reduced into range.
        unsafe { self.section(off as u64, self.peers()) }
    }

    /// The row a request of ledger slot `slot` counts peer `i` in, and
    /// whether it is the shared one (`None` past the end). The request
    /// path's one lookup: two loads from the root and some arithmetic.
    #[inline(always)]
    fn row(&self, slot: Option<u32>, i: usize) -> Option<(&'a StatsRow, bool)> {
        let root = self.root();
        if i >= root.peers as usize {
            return None;
        }
        let (block, shared) = match slot {
            Some(s) if (s as usize) < LEDGER_SLOTS => (s as usize + 1, false),
            _ => (0, true),
        };
        let off = root.stats_rows_off as usize
            + block * root.stats_row_bytes as usize
            + i * core::mem::size_of::<StatsRow>();
        // SAFETY: block < ROWS and i < peers: inside the row blocks
        // (layout contract), 64-byte aligned; atomics.
        Some((
            unsafe { &*self.base.as_ptr().add(off).cast::<StatsRow>() },
            shared,
        ))
    }

    /// Marks ledger slot `s`'s rows as used (readers sum only those),
    /// zeroing them first the first time: the zone leaves the row blocks
    /// of slots never claimed untouched, so that their pages need not be
    /// resident. Called by the slot's new owner, the rows' one writer,
    /// before it counts anything.
    pub(crate) fn mark_rows_used(&self, s: u32) {
        let bit = 1u64 << s;
        if (s as usize) >= LEDGER_SLOTS || self.sync().rows_used.load(Acquire) & bit != 0 {
            return;
        }
        for row in self.stats_rows(s as usize) {
            for f in row.fields() {
                f.store(0, Relaxed);
            }
            row.selected_ms.store(0, Relaxed);
        }
        self.sync().rows_used.fetch_or(bit, Release);
    }

    /// Counts a try of peer `i` by a request of `slot`, picked at `start`
    /// and ended `duration` ms later: everything about a try is counted
    /// when it ends, with one row lookup.
    #[inline]
    pub(crate) fn count_try(
        &self,
        slot: Option<u32>,
        i: usize,
        (failed, bound): (bool, bool),
        info: &TryInfo,
        start: u64,
        duration: u64,
    ) {
        let Some((row, shared)) = self.row(slot, i) else {
            return;
        };
        if shared {
            row.selected_ms.fetch_max(start, Relaxed);
            count_end_in(row, failed, bound, info, duration, |c, n| {
                c.fetch_add(n, Relaxed);
            });
        } else {
            row.selected_ms.store(start, Relaxed);
            count_end_in(row, failed, bound, info, duration, bump);
        }
    }

    /// Records that peer `i` became unavailable at `now`.
    pub(crate) fn count_disabled(&self, i: usize, now: u64) {
        let e = &self.events()[i];
        e.unavail.fetch_add(1, Relaxed);
        e.downstart_ms.store(now, Relaxed);
        e.down.store(1, Relaxed);
    }

    /// When peer `i`'s spell in progress ends, or ended, if nothing
    /// changes: `fail_timeout` after its last failure, or `now`.
    fn spell_end(&self, i: usize, now: u64) -> u64 {
        let s = &self.states()[i];
        now.min(
            s.accessed_ms
                .load(Relaxed)
                .saturating_add(s.fail_timeout_ms()),
        )
    }

    /// Records that peer `i` came back at `now` (a success after its
    /// window); how long it was unavailable, ms: from the failure that
    /// disabled it to `fail_timeout` after its last failure (the time
    /// between the window's end and the successful probe does not count).
    pub(crate) fn count_recovered(&self, i: usize, now: u64) -> u64 {
        let e = &self.events()[i];
        if e.down.swap(0, Relaxed) == 0 {
            return 0;
        }
        let spell = self
            .spell_end(i, now)
            .saturating_sub(e.downstart_ms.load(Relaxed));
        e.downtime_ms.fetch_add(spell, Relaxed);
        spell
    }

    /// Raw sums of peer `i`'s rows: the shared one and every slot used.
    fn sums(&self, i: usize) -> Sums {
        let used = self.sync().rows_used.load(Acquire);
        let mut s = Sums::default();
        let rows = (0..LEDGER_SLOTS)
            .filter(|&r| used & (1 << r) != 0)
            .chain([SHARED]);
        for r in rows {
            let row = &self.stats_rows(r)[i];
            for (a, f) in s.v.iter_mut().zip(row.fields()) {
                *a = a.wrapping_add(f.load(Relaxed));
            }
            s.selected = s.selected.max(row.selected_ms.load(Relaxed));
        }
        s
    }

    /// Downtime of peer `i` at `now`, the spell in progress included, and
    /// that spell's start while the peer is still inside its window.
    fn downtime(&self, i: usize, now: u64) -> (u64, Option<u64>) {
        let e = &self.events()[i];
        let closed = e.downtime_ms.load(Relaxed);
        if e.down.load(Relaxed) == 0 {
            return (closed, None);
        }
        let start = e.downstart_ms.load(Relaxed);
        let end = self.spell_end(i, now);
        (
            closed + end.saturating_sub(start),
            (end == now).then_some(start),
        )
    }

    /// Statistics of peer `i` at `now` since the last reset (`None` past
    /// the end).
    pub fn stats(&self, i: usize, now: u64) -> Option<PeerStats> {
        let base = self.baselines().get(i)?;
        let e = &self.events()[i];
        let s = self.sums(i);
        let mut v = [0u64; 12];
        for ((out, sum), b) in v.iter_mut().zip(s.v).zip(base.fields()) {
            *out = sum.saturating_sub(b.load(Relaxed));
        }
        let (downtime, downstart) = self.downtime(i, now);
        let [requests, r1, r2, r3, r4, r5, fails, header_ms, response_ms, sent, received, bound] =
            v;
        Some(PeerStats {
            requests,
            responses: [r1, r2, r3, r4, r5],
            fails,
            unavail: e
                .unavail
                .load(Relaxed)
                .saturating_sub(e.base_unavail.load(Relaxed)),
            downtime_ms: downtime.saturating_sub(e.base_downtime_ms.load(Relaxed)),
            downstart_ms: downstart,
            selected_ms: (s.selected != 0).then_some(s.selected),
            header_ms,
            response_ms,
            sent,
            received,
            bound,
        })
    }

    /// Resets the statistics of every peer at `now`: from here they count
    /// from zero (the last pick time is kept).
    pub fn reset_stats(&self, now: u64) {
        for i in 0..self.peers() {
            let s = self.sums(i);
            for (b, v) in self.baselines()[i].fields().into_iter().zip(s.v) {
                b.store(v, Relaxed);
            }
            let e = &self.events()[i];
            e.base_unavail.store(e.unavail.load(Relaxed), Relaxed);
            e.base_downtime_ms.store(self.downtime(i, now).0, Relaxed);
            self.reset_check_stats(i);
        }
    }

    /// Zeroes every statistic of slot `i`, which a membership change gives
    /// to a new identity. Only for a slot no request is on (FREE, nothing
    /// in flight, named by no generation): nobody writes its rows.
    pub(crate) fn clear_slot_stats(&self, i: usize) {
        if i >= self.peers() {
            return;
        }
        let used = self.sync().rows_used.load(Acquire);
        let rows = (0..LEDGER_SLOTS)
            .filter(|&r| used & (1 << r) != 0)
            .chain([SHARED]);
        for r in rows {
            let row = &self.stats_rows(r)[i];
            for f in row.fields() {
                f.store(0, Relaxed);
            }
            row.selected_ms.store(0, Relaxed);
        }
        for b in self.baselines()[i].fields() {
            b.store(0, Relaxed);
        }
        let e = &self.events()[i];
        for f in [
            &e.unavail,
            &e.downtime_ms,
            &e.downstart_ms,
            &e.down,
            &e.base_unavail,
            &e.base_downtime_ms,
        ] {
            f.store(0, Relaxed);
        }
    }

    /// Carries peer `j` of `old` into peer `i` of this fresh zone: its raw
    /// sums land in the shared row, baselines and transitions as they are,
    /// so that every reported figure is unchanged. (The tries in flight end
    /// in the old workers, which count them in the old zone: the new
    /// figures lack them.)
    pub(crate) fn carry_stats(&self, i: usize, old: Zone<'_>, j: usize) {
        let s = old.sums(j);
        let row = &self.stats_rows(SHARED)[i];
        for (f, v) in row.fields().into_iter().zip(s.v) {
            f.fetch_add(v, Relaxed);
        }
        row.selected_ms.fetch_max(s.selected, Relaxed);
        for (b, ob) in self.baselines()[i]
            .fields()
            .into_iter()
            .zip(old.baselines()[j].fields())
        {
            b.store(ob.load(Relaxed), Relaxed);
        }
        let PeerEvents {
            unavail,
            downtime_ms,
            downstart_ms,
            down,
            base_unavail,
            base_downtime_ms,
            reserved: _,
        } = &old.events()[j];
        let e = &self.events()[i];
        e.unavail.store(unavail.load(Relaxed), Relaxed);
        e.downtime_ms.store(downtime_ms.load(Relaxed), Relaxed);
        e.downstart_ms.store(downstart_ms.load(Relaxed), Relaxed);
        e.down.store(down.load(Relaxed), Relaxed);
        e.base_unavail.store(base_unavail.load(Relaxed), Relaxed);
        e.base_downtime_ms
            .store(base_downtime_ms.load(Relaxed), Relaxed);
    }
}

fn size_of_events() -> usize {
    core::mem::size_of::<PeerEvents>()
}

/// Bytes of `peers` rows, rounded to whole lines.
pub(crate) fn round_up_rows(peers: usize) -> usize {
    super::round_up(peers * core::mem::size_of::<StatsRow>(), ALIGN)
}

/// Offset of the row blocks in the statistics section.
pub(crate) fn rows_off(peers: usize) -> usize {
    peers * size_of_events() + round_up_rows(peers)
}

/// Bytes at the start of the statistics section that a fresh zone zeroes:
/// all but the slots' row blocks, which their first owner zeroes.
pub(crate) fn zeroed_len(peers: usize) -> usize {
    peers * size_of_events() + 2 * round_up_rows(peers)
}

/// Bytes of the statistics section for `peers` peers.
pub(crate) fn section_len(peers: usize) -> usize {
    peers * size_of_events() + (ROWS + 1) * round_up_rows(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Outcome;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::{OwnedAttempt, OwnedTable};

    fn table(peers: &[PeerSpec<'_>]) -> OwnedTable {
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    fn ok(status: u32) -> TryInfo {
        TryInfo {
            status,
            header_ms: Some(2),
            sent: 100,
            received: 1000,
        }
    }

    #[test]
    fn counts_are_exact_across_slots_and_the_shared_row() {
        let never = |id| PeerSpec {
            max_fails: 0,
            ..PeerSpec::new(id)
        };
        let t = table(&[never(b"a"), never(b"b")]);
        let z = t.zone();
        let s1 = z.claim_slot(1, |_| true).unwrap();
        let s2 = z.claim_slot(2, |_| true).unwrap();
        let mut picks = [0u64; 2];
        for (k, slot) in [Some(s1), Some(s2), None]
            .into_iter()
            .cycle()
            .take(30)
            .enumerate()
        {
            let now = 100 + k as u64;
            let mut a = OwnedAttempt::with_slot(z, now, slot);
            let p = a.pick(now).unwrap().peer as usize;
            picks[p] += 1;
            let status = if k % 3 == 0 { 503 } else { 200 };
            let outcome = if status == 503 {
                Outcome::Failed
            } else {
                Outcome::Ok
            };
            a.release_with(outcome, &ok(status), now + 5).unwrap();
            a.end();
        }
        let (a, b) = (z.stats(0, 200).unwrap(), z.stats(1, 200).unwrap());
        assert_eq!([a.requests, b.requests], picks);
        assert_eq!(a.requests + b.requests, 30);
        assert_eq!(a.responses_total() + b.responses_total(), 30);
        assert_eq!(a.responses[4] + b.responses[4], 10);
        assert_eq!(a.fails + b.fails, 10);
        assert_eq!(a.sent + b.sent, 3000);
        assert_eq!(a.received + b.received, 30_000);
        assert_eq!(a.header_time(), Some(2));
        assert_eq!(a.response_time(), Some(5));
        assert!(a.selected_ms.is_some_and(|t| (100..130).contains(&t)));
        assert_eq!(z.stats(2, 0), None);
    }

    #[test]
    fn a_dead_workers_counts_stay_and_its_successor_adds() {
        let t = table(&[PeerSpec::new(b"a")]);
        let z = t.zone();
        let s = z.claim_slot(10, |_| true).unwrap();
        for _ in 0..3 {
            let mut a = OwnedAttempt::with_slot(z, 0, Some(s));
            a.pick(0).unwrap();
            a.end();
        }
        // Worker 10 dies; 11 takes its slot.
        let s2 = z.claim_slot(11, |pid| pid != 10).unwrap();
        assert_eq!(s2, s);
        assert_eq!(z.stats(0, 0).unwrap().requests, 3);
        let mut a = OwnedAttempt::with_slot(z, 0, Some(s2));
        a.pick(0).unwrap();
        a.end();
        assert_eq!(z.stats(0, 0).unwrap().requests, 4);
    }

    #[test]
    fn unavailable_spells_downtime_and_reset() {
        let peers = [
            PeerSpec {
                max_fails: 1,
                fail_timeout_ms: 1000,
                ..PeerSpec::new(b"a")
            },
            PeerSpec::new(b"b"),
        ];
        let t = table(&peers);
        let z = t.zone();
        let fail_a = |now| loop {
            let mut a = OwnedAttempt::new(z, now);
            if a.pick(now).unwrap().peer == 0 {
                let r = a.release_with(Outcome::Failed, &TryInfo::NONE, now);
                a.end();
                return r.unwrap();
            }
            a.release(Outcome::Ok, now).unwrap();
            a.end();
        };
        let r = fail_a(1000);
        assert_eq!(r.transition, crate::health::Transition::Disabled);
        let st = z.stats(0, 1500).unwrap();
        assert_eq!(
            (st.unavail, st.downtime_ms, st.downstart_ms),
            (1, 500, Some(1000))
        );
        // The window ends at 2000: no start shown, downtime stops growing.
        let st = z.stats(0, 2300).unwrap();
        assert_eq!((st.downtime_ms, st.downstart_ms), (1000, None));
        // The probe succeeds at 2500.
        let r = loop {
            let mut a = OwnedAttempt::new(z, 2500);
            let p = a.pick(2500).unwrap().peer;
            let r = a.release_with(Outcome::Ok, &ok(200), 2500).unwrap();
            a.end();
            if p == 0 {
                break r;
            }
        };
        assert_eq!(r.transition, crate::health::Transition::Recovered);
        assert_eq!(r.down_ms, 1000, "from the failure to the window's end");
        let st = z.stats(0, 9000).unwrap();
        assert_eq!(
            (st.unavail, st.downtime_ms, st.downstart_ms),
            (1, 1000, None)
        );
        // Reset in the middle of a second spell.
        fail_a(10_000);
        z.reset_stats(10_400);
        let st = z.stats(0, 10_500).unwrap();
        assert_eq!((st.requests, st.fails, st.unavail), (0, 0, 0));
        assert_eq!(st.downtime_ms, 100);
        assert!(st.selected_ms.is_some(), "the last pick survives a reset");
        let mut a = OwnedAttempt::new(z, 20_000);
        a.pick(20_000).unwrap();
        a.end();
        assert_eq!(
            z.stats(0, 20_000).unwrap().requests + z.stats(1, 20_000).unwrap().requests,
            1
        );
    }

    #[test]
    fn a_slots_rows_are_zeroed_by_its_first_owner() {
        use crate::testing::Region;
        let peers = [PeerSpec::new(b"a"), PeerSpec::new(b"b")];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let size = crate::write::zone_size(&spec).unwrap();
        let region = Region::new(size);
        // SAFETY: the region is ours and `size` bytes long.
        unsafe { core::ptr::write_bytes(region.as_ptr(), 0x5a, size) };
        // SAFETY: as above; the zone lives as long as `region`.
        let z = unsafe { Zone::init(&spec, region.as_ptr(), size) }.unwrap();
        assert_eq!(z.stats(0, 0).unwrap(), PeerStats::default());
        let s = z.claim_slot(3, |_| true).unwrap();
        assert_eq!(z.stats(1, 0).unwrap(), PeerStats::default());
        let mut a = OwnedAttempt::with_slot(z, 0, Some(s));
        a.pick(0).unwrap();
        a.end();
        // Another owner of the same slot keeps the counts.
        z.release_slot(s, 3);
        assert_eq!(z.claim_slot(4, |_| true), Some(s));
        let total: u64 = (0..2).map(|i| z.stats(i, 0).unwrap().requests).sum();
        assert_eq!(total, 1);
    }

    #[test]
    fn statistics_carry_into_a_fresh_zone() {
        let old = table(&[PeerSpec::new(b"x\0a"), PeerSpec::new(b"x\0b")]);
        let oz = old.zone();
        let s = oz.claim_slot(5, |_| true).unwrap();
        for k in 0..7 {
            let mut a = OwnedAttempt::with_slot(oz, k, Some(s));
            a.pick(k).unwrap();
            a.release_with(Outcome::Ok, &ok(204), k + 1).unwrap();
            a.end();
        }
        oz.reset_stats(3);
        for k in 0..2 {
            let mut a = OwnedAttempt::new(oz, 50 + k);
            a.pick(50 + k).unwrap();
            a.end();
        }
        let before: Vec<_> = (0..2).map(|i| oz.stats(i, 60).unwrap()).collect();
        let new = table(&[
            PeerSpec::new(b"x\0b"),
            PeerSpec::new(b"x\0c"),
            PeerSpec::new(b"x\0a"),
        ]);
        let nz = new.zone();
        nz.carry_from(oz, 0);
        assert_eq!(nz.stats(2, 60).unwrap(), before[0]);
        assert_eq!(nz.stats(0, 60).unwrap(), before[1]);
        assert_eq!(nz.stats(1, 60).unwrap(), PeerStats::default());
    }
}
