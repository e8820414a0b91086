//! Per-server statistics, exact and global across workers, cheap to count
//!
//! Every try adds to a handful of counters when it ends: requests,
//! responses by class, failures, header and response time (their sums,
//! and a bucket of each latency histogram, see [`crate::spec::Buckets`]),
//! bytes, and the time it was picked (a try in flight shows in `active`,
//! and in `requests` once it ends). Counting them with locked read-modify-writes on a line shared by
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
//! Recent latency: each worker row also counts its responses by
//! response-time bucket in a window of [`WINDOW_MS`] and keeps the window
//! before it; a reader sums the current and the previous window of every
//! row, the responses of the last 30 to 60 seconds, for percentiles
//! ([`Recent::quantile`]). The writer moves its row to a new window when
//! a response ends past the current one's end: no timer, no lock.
//!
//! All accesses are `Relaxed`: every counter is independent, published
//! nothing else, and a reader only needs each value eventually.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use core::sync::atomic::{AtomicU32, AtomicU64};

use super::{Zone, ALIGN, LEDGER_SLOTS};
use crate::crash::crash_point;
use crate::spec::{Buckets, MAX_BUCKETS};

/// Row index of the shared row, after the [`LEDGER_SLOTS`] worker rows.
pub const SHARED: usize = LEDGER_SLOTS;

/// Rows per peer: one per ledger slot and the shared one.
pub const ROWS: usize = LEDGER_SLOTS + 1;

/// One writer's counters for one peer: eight cache lines, the first
/// holding everything a try that gets a 2xx touches (its pick and its
/// end, the end of its window) but its latency buckets, so that a typical
/// try writes three lines of the worker's own: the counters, a pair of
/// histogram buckets and its bucket of the window.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct StatsRow {
    /// Tries sent (counted when they end).
    pub requests: AtomicU64,
    /// Time of the last pick, ms (a maximum, not a sum; never reset).
    pub selected_ms: AtomicU64,
    /// 2xx responses.
    pub ok: AtomicU64,
    /// Sum over responses of the time to the response header, ms.
    pub header_ms: AtomicU64,
    /// Sum over responses of the time to the end of the try, ms.
    pub response_ms: AtomicU64,
    /// Bytes sent to the server.
    pub sent: AtomicU64,
    /// Bytes received from the server.
    pub received: AtomicU64,
    /// End of the window `recent` counts in, ms (a multiple of
    /// [`WINDOW_MS`]; 0 before the first response).
    pub window_end_ms: AtomicU64,
    /// 1xx, 3xx, 4xx and 5xx responses.
    pub other: [AtomicU64; 4],
    /// Tries that went to the server because the request was bound to it
    /// (`ha_sticky`); the others were balanced.
    pub bound: AtomicU64,
    /// Failed tries.
    pub fails: AtomicU64,
    /// Zero.
    pub reserved: [u64; 2],
    /// Responses by latency bucket ([`crate::spec::Buckets`], finite
    /// bounds only: the last bucket is the responses less the others):
    /// `[response time, header time]` per bucket, side by side since a
    /// response usually falls in the same bucket for both.
    pub hist: [[AtomicU64; 2]; MAX_BUCKETS + 1],
    /// Responses by response-time bucket (the one above the last bound
    /// included) in the window ending at `window_end_ms`.
    pub recent: [AtomicU32; MAX_BUCKETS + 1],
    /// The same in the window before it (zero if this row counted
    /// nothing then).
    pub earlier: [AtomicU32; MAX_BUCKETS + 1],
}

/// How long the window of recent responses is at `now`, ms: the current
/// [`WINDOW_MS`] so far and the one before.
pub fn window_ms(now: u64) -> u64 {
    WINDOW_MS + now % WINDOW_MS
}

/// The length of the windows of recent latency, ms: a reader sums the
/// current window and the one before, the responses of the last 30 to 60
/// seconds.
pub const WINDOW_MS: u64 = 30_000;

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
    /// When something last changed the peer's state (a failure window
    /// began or ended, a check or an ejection moved its health, its admin
    /// state changed), ms; 0: never since the slot got its server.
    pub changed_ms: AtomicU64,
    /// Zero.
    pub reserved: [u64; 1],
}

const _: () = {
    assert!(core::mem::size_of::<StatsRow>() == 512);
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
    /// Responses by response-time bucket, for the zone's finite bounds
    /// ([`Zone::buckets`]; the others zero): not cumulative, the
    /// responses above the last bound are the rest of `responses`.
    pub response_hist: [u64; MAX_BUCKETS],
    /// The same by header time.
    pub header_hist: [u64; MAX_BUCKETS],
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
        for (a, b) in self.response_hist.iter_mut().zip(o.response_hist) {
            *a += b;
        }
        for (a, b) in self.header_hist.iter_mut().zip(o.header_hist) {
            *a += b;
        }
        self.selected_ms = self.selected_ms.max(o.selected_ms);
    }

    /// The histogram of response (`header`: header) times as Prometheus
    /// has it: for each of `buckets`' bounds, the responses at most that
    /// long; the responses of every duration (`le="+Inf"`) are
    /// [`PeerStats::responses_total`].
    pub fn cumulative(&self, buckets: &Buckets, header: bool) -> [u64; MAX_BUCKETS] {
        let h = if header {
            &self.header_hist
        } else {
            &self.response_hist
        };
        let mut out = [0; MAX_BUCKETS];
        let mut sum = 0u64;
        for (o, n) in out.iter_mut().zip(h).take(buckets.bounds().len()) {
            sum += n;
            *o = sum;
        }
        out
    }
}

/// The response times of one peer's recent responses (the last 30 to 60
/// seconds, see [`WINDOW_MS`]), by bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recent {
    /// How long the window is, ms.
    pub window_ms: u64,
    /// Responses by bucket, the one above the last bound included.
    pub counts: [u64; MAX_BUCKETS + 1],
}

impl Recent {
    /// Responses in the window.
    pub fn responses(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `o`'s responses (the same window) to `self`.
    pub fn add(&mut self, o: &Recent) {
        self.window_ms = self.window_ms.max(o.window_ms);
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
    }

    /// The `q` quantile (0 to 1) of the window's response times, ms, as
    /// Prometheus's `histogram_quantile` estimates it: linear within the
    /// bucket it falls in (from 0 in the first), the last bound when it
    /// falls above it. `None` without responses.
    pub fn quantile(&self, buckets: &Buckets, q: f64) -> Option<f64> {
        let total = self.responses();
        if total == 0 {
            return None;
        }
        let bounds = buckets.bounds();
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (k, &n) in self.counts.iter().enumerate().take(bounds.len() + 1) {
            if n != 0 && (below + n) as f64 >= rank {
                let Some(&upper) = bounds.get(k) else {
                    return Some(f64::from(bounds[bounds.len() - 1]));
                };
                let lower = if k == 0 {
                    0.0
                } else {
                    f64::from(bounds[k - 1])
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (f64::from(upper) - lower) * within);
            }
            below += n;
        }
        bounds.last().map(|&b| f64::from(b))
    }
}

/// Raw sums of a peer's rows (before the baseline).
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    v: [u64; 12],
    hist: [u64; HIST_FIELDS],
    selected: u64,
}

/// Histogram counters of a row: both times' finite buckets.
const HIST_FIELDS: usize = 2 * MAX_BUCKETS;

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

    /// The histogram counters, in a fixed order: bucket by bucket, the
    /// response time's then the header time's.
    #[inline]
    fn hist_fields(&self) -> impl Iterator<Item = &AtomicU64> {
        self.hist[..MAX_BUCKETS].iter().flatten()
    }

    /// Zeroes every counter of the row.
    fn clear(&self) {
        for f in self.fields().into_iter().chain(self.hist_fields()) {
            f.store(0, Relaxed);
        }
        self.selected_ms.store(0, Relaxed);
        self.window_end_ms.store(0, Relaxed);
        for c in self.recent.iter().chain(&self.earlier) {
            c.store(0, Relaxed);
        }
    }
}

/// Adds `n` to a counter with one writer: a load and a store.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counts the end of a try in `row` with `add` (a plain or an atomic
/// add); the response-time bucket of a response, for the window.
#[inline(always)]
fn count_end_in(
    row: &StatsRow,
    failed: bool,
    bound: bool,
    info: &TryInfo,
    duration: u64,
    buckets: &Buckets,
    add: impl Fn(&AtomicU64, u64),
) -> Option<usize> {
    add(&row.requests, 1);
    crash_point("stats.requests");
    if bound {
        add(&row.bound, 1);
    }
    if failed {
        add(&row.fails, 1);
    }
    let mut bucket = None;
    if let 100..=599 = info.status {
        let class = match info.status / 100 {
            2 => &row.ok,
            1 => &row.other[0],
            k => &row.other[(k - 2) as usize],
        };
        add(class, 1);
        let header = info.header_ms.unwrap_or(duration).min(duration);
        add(&row.header_ms, header);
        add(&row.response_ms, duration);
        let r = buckets.index(duration);
        let h = if header == duration {
            r
        } else {
            buckets.index(header)
        };
        if let Some([c, _]) = row.hist[..MAX_BUCKETS].get(r) {
            add(c, 1);
        }
        if let Some([_, c]) = row.hist[..MAX_BUCKETS].get(h) {
            add(c, 1);
        }
        crash_point("stats.histogram");
        bucket = Some(r);
    }
    if info.sent != 0 {
        add(&row.sent, info.sent);
    }
    if info.received != 0 {
        add(&row.received, info.received);
    }
    bucket
}

/// Counts a response of bucket `b` that ended at `now` in the window of
/// `row`, which has one writer: moves to a new window first when `now`
/// is past the current one's end (the current one becomes the earlier
/// one if they are adjacent). A reader that races the move, or a writer
/// killed in the middle of it, makes one poll's figures off by what the
/// window held; nothing outlives the next move.
#[inline(always)]
fn count_recent(row: &StatsRow, b: usize, now: u64) {
    let end = row.window_end_ms.load(Relaxed);
    if now >= end {
        let next = (now / WINDOW_MS + 1) * WINDOW_MS;
        let adjacent = end != 0 && end + WINDOW_MS == next;
        for (e, r) in row.earlier.iter().zip(&row.recent) {
            e.store(if adjacent { r.load(Relaxed) } else { 0 }, Relaxed);
            r.store(0, Relaxed);
        }
        crash_point("stats.window");
        row.window_end_ms.store(next, Relaxed);
    }
    if let Some(c) = row.recent.get(b) {
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
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
            row.clear();
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
        let buckets = &self.root().buckets;
        if shared {
            // Several writers: no window (it moves with plain stores).
            row.selected_ms.fetch_max(start, Relaxed);
            count_end_in(row, failed, bound, info, duration, buckets, |c, n| {
                c.fetch_add(n, Relaxed);
            });
        } else {
            row.selected_ms.store(start, Relaxed);
            if let Some(b) = count_end_in(row, failed, bound, info, duration, buckets, bump) {
                count_recent(row, b, start.saturating_add(duration));
            }
        }
    }

    /// Records that peer `i` became unavailable at `now`.
    pub(crate) fn count_disabled(&self, i: usize, now: u64) {
        let e = &self.events()[i];
        e.unavail.fetch_add(1, Relaxed);
        e.downstart_ms.store(now, Relaxed);
        e.down.store(1, Relaxed);
        e.changed_ms.fetch_max(now, Relaxed);
    }

    /// Records that something changed peer `i`'s state at `now`.
    pub(crate) fn state_changed(&self, i: usize, now: u64) {
        if let Some(e) = self.events().get(i) {
            e.changed_ms.fetch_max(now, Relaxed);
        }
    }

    /// Since when peer `i` has been in its current state, as far as the
    /// zone knows at `now`: the last change recorded, or the end of a
    /// failure window that ran out without a request since. `None` when
    /// nothing changed since the slot got its server (or the zone was
    /// built).
    pub fn state_since(&self, i: usize, now: u64) -> Option<u64> {
        let e = self.events().get(i)?;
        let mut since = e.changed_ms.load(Relaxed);
        if e.down.load(Relaxed) != 0 {
            let end = self.spell_end(i, now);
            if end < now {
                since = since.max(end);
            }
        }
        (since != 0).then_some(since)
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
        let end = self.spell_end(i, now);
        let spell = end.saturating_sub(e.downstart_ms.load(Relaxed));
        e.downtime_ms.fetch_add(spell, Relaxed);
        e.changed_ms.fetch_max(end, Relaxed);
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
            for (a, f) in s.hist.iter_mut().zip(row.hist_fields()) {
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
        let mut hist = [0u64; HIST_FIELDS];
        for ((out, sum), b) in hist.iter_mut().zip(s.hist).zip(base.hist_fields()) {
            *out = sum.saturating_sub(b.load(Relaxed));
        }
        let (mut response_hist, mut header_hist) = ([0; MAX_BUCKETS], [0; MAX_BUCKETS]);
        for (k, pair) in hist.chunks_exact(2).enumerate() {
            response_hist[k] = pair[0];
            header_hist[k] = pair[1];
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
            response_hist,
            header_hist,
        })
    }

    /// The latency histograms' bounds.
    #[inline]
    pub fn buckets(&self) -> &'a Buckets {
        &self.root().buckets
    }

    /// The response times of peer `i`'s recent responses at `now` (the
    /// current window of [`WINDOW_MS`] and the one before; the counts of
    /// workers without a ledger slot are not in them).
    pub fn recent(&self, i: usize, now: u64) -> Recent {
        let end = (now / WINDOW_MS + 1) * WINDOW_MS;
        let mut out = Recent {
            window_ms: window_ms(now),
            counts: [0; MAX_BUCKETS + 1],
        };
        if i >= self.peers() {
            return out;
        }
        let used = self.sync().rows_used.load(Acquire);
        for r in (0..LEDGER_SLOTS).filter(|&r| used & (1 << r) != 0) {
            let row = &self.stats_rows(r)[i];
            let row_end = row.window_end_ms.load(Relaxed);
            let windows: &[&[AtomicU32]] = if row_end == end {
                &[&row.recent, &row.earlier]
            } else if row_end + WINDOW_MS == end {
                &[&row.recent]
            } else {
                &[]
            };
            for w in windows {
                for (c, n) in out.counts.iter_mut().zip(w.iter()) {
                    *c += u64::from(n.load(Relaxed));
                }
            }
        }
        out
    }

    /// Resets the statistics of every peer at `now`: from here they count
    /// from zero (the last pick time is kept).
    pub fn reset_stats(&self, now: u64) {
        for i in 0..self.peers() {
            let s = self.sums(i);
            let base = &self.baselines()[i];
            for (b, v) in base.fields().into_iter().zip(s.v) {
                b.store(v, Relaxed);
            }
            for (b, v) in base.hist_fields().zip(s.hist) {
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
            self.stats_rows(r)[i].clear();
        }
        self.baselines()[i].clear();
        let e = &self.events()[i];
        for f in [
            &e.unavail,
            &e.downtime_ms,
            &e.downstart_ms,
            &e.down,
            &e.base_unavail,
            &e.base_downtime_ms,
            &e.changed_ms,
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
        let (base, old_base) = (&self.baselines()[i], &old.baselines()[j]);
        for (b, ob) in base.fields().into_iter().zip(old_base.fields()) {
            b.store(ob.load(Relaxed), Relaxed);
        }
        // The buckets mean something only under the same bounds; under
        // new ones they start from zero (new `le` labels to Prometheus).
        if old.buckets() == self.buckets() {
            for (f, v) in row.hist_fields().zip(s.hist) {
                f.fetch_add(v, Relaxed);
            }
            for (b, ob) in base.hist_fields().zip(old_base.hist_fields()) {
                b.store(ob.load(Relaxed), Relaxed);
            }
        }
        let PeerEvents {
            unavail,
            downtime_ms,
            downstart_ms,
            down,
            base_unavail,
            base_downtime_ms,
            changed_ms,
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
        e.changed_ms.store(changed_ms.load(Relaxed), Relaxed);
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

    /// One try of the peer picked, by `slot`, started at `start`, ending
    /// `ms` later with a 200 whose header came after `header` ms.
    fn timed(z: Zone<'_>, slot: Option<u32>, start: u64, ms: u64, header: u64) -> usize {
        let mut a = OwnedAttempt::with_slot(z, start, slot);
        let p = a.pick(start).unwrap().peer as usize;
        let info = TryInfo {
            header_ms: Some(header),
            ..ok(200)
        };
        a.release_with(Outcome::Ok, &info, start + ms).unwrap();
        a.end();
        p
    }

    #[test]
    fn latency_lands_in_the_bucket_of_its_bound_in_every_row() {
        let t = table(&[PeerSpec::new(b"a")]);
        let z = t.zone();
        assert_eq!(z.buckets(), &Buckets::default());
        let s1 = z.claim_slot(1, |_| true).unwrap();
        let s2 = z.claim_slot(2, |_| true).unwrap();
        // On a bound, just above it, 0, past the last bound; by two
        // slots and the shared row.
        let times = [5, 6, 0, 50, 51, 10_000, 10_001, 99_999];
        for (k, &ms) in times.iter().enumerate() {
            let slot = [Some(s1), Some(s2), None][k % 3];
            timed(z, slot, 1000 + k as u64, ms, ms / 2);
        }
        let st = z.stats(0, 200_000).unwrap();
        let b = Buckets::default();
        let resp = st.cumulative(&b, false);
        // le: 5 10 25 50 75 100 250 500 750 1000 2500 5000 7500 10000
        assert_eq!(&resp[..14], &[2, 3, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6]);
        assert_eq!(resp[14], 0, "no 15th bound");
        assert_eq!(st.responses_total(), 8);
        // Header times 2, 3, 0, 25, 25, 5000, 5000, 49999.
        let head = st.cumulative(&b, true);
        assert_eq!(&head[..14], &[3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7]);
        assert_eq!(st.response_ms, times.iter().sum::<u64>());
    }

    #[test]
    fn configured_buckets_are_kept_and_a_reset_starts_them_again() {
        let peers = [PeerSpec::new(b"a")];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let buckets = Buckets::new(&[1, 2, 1000]).unwrap();
        let room = crate::write::Room {
            capacity: 1,
            api_max: 0,
            buckets,
        };
        let t = OwnedTable::with_room(&spec, &room).unwrap();
        let z = t.zone();
        assert_eq!(z.buckets().bounds(), &[1, 2, 1000]);
        let s = z.claim_slot(1, |_| true).unwrap();
        for ms in [1, 2, 3, 1000, 1001] {
            timed(z, Some(s), 10, ms, 0);
        }
        assert_eq!(
            &z.stats(0, 50).unwrap().cumulative(&buckets, false)[..3],
            &[1, 2, 4]
        );
        assert_eq!(
            &z.stats(0, 50).unwrap().cumulative(&buckets, true)[..3],
            &[5, 5, 5]
        );
        z.reset_stats(60);
        assert_eq!(z.stats(0, 60).unwrap().response_hist, [0; MAX_BUCKETS]);
        timed(z, Some(s), 70, 2, 0);
        assert_eq!(
            &z.stats(0, 80).unwrap().cumulative(&buckets, false)[..3],
            &[0, 1, 1]
        );
        // The same spec with other bounds is another zone.
        assert_ne!(
            spec.digest_with_room(1, 0, &buckets),
            spec.digest_with_room(1, 0, &Buckets::default())
        );
        assert_eq!(
            spec.digest_with_room(1, 0, &Buckets::default()),
            spec.digest_with_api(1, 0)
        );
    }

    #[test]
    fn buckets_refuse_what_is_not_strictly_increasing() {
        assert!(Buckets::new(&[]).is_err());
        assert!(Buckets::new(&[0, 5]).is_err());
        assert!(Buckets::new(&[5, 5]).is_err());
        assert!(Buckets::new(&[10, 5]).is_err());
        assert!(Buckets::new(&[1; 16]).is_err());
        let many: Vec<u32> = (1..=15).collect();
        assert_eq!(Buckets::new(&many).unwrap().bounds(), &many[..]);
        assert_eq!(Buckets::new(&many).unwrap().index(15), 14);
        assert_eq!(Buckets::new(&many).unwrap().index(16), 15);
    }

    #[test]
    fn the_window_holds_the_last_30_to_60_seconds() {
        let t = table(&[PeerSpec::new(b"a")]);
        let z = t.zone();
        let s1 = z.claim_slot(1, |_| true).unwrap();
        let s2 = z.claim_slot(2, |_| true).unwrap();
        let w = WINDOW_MS;
        // Window [w, 2w): 3 fast responses in slot 1, 1 slow in slot 2.
        for k in 0..3 {
            timed(z, Some(s1), w + k, 3, 1);
        }
        timed(z, Some(s2), w + 10, 600, 1);
        let r = z.recent(0, w + 1000);
        assert_eq!(r.responses(), 4);
        assert_eq!(r.window_ms, w + 1000);
        // Next window: both still seen; slot 1 moves on, slot 2 does not.
        timed(z, Some(s1), 2 * w + 5, 80, 1);
        let r = z.recent(0, 2 * w + 100);
        assert_eq!(r.responses(), 5);
        assert_eq!(r.counts[0], 3);
        assert_eq!(r.counts[8], 1, "600 ms: le 750");
        assert_eq!(r.counts[5], 1, "80 ms: le 100");
        // Two windows on: the first one's responses are gone, in both
        // the row that moved and the one that did not.
        let r = z.recent(0, 3 * w + 1);
        assert_eq!(r.responses(), 1);
        assert_eq!(r.window_ms, w + 1);
        assert_eq!(z.recent(0, 4 * w).responses(), 0);
        // A gap of more than a window: nothing earlier is kept.
        timed(z, Some(s1), 6 * w, 3, 1);
        assert_eq!(z.recent(0, 6 * w + 1).responses(), 1);
        // The lifetime histogram kept everything.
        assert_eq!(z.stats(0, 6 * w + 1).unwrap().responses_total(), 6);
        // The shared row counts no window.
        timed(z, None, 6 * w + 2, 3, 1);
        assert_eq!(z.recent(0, 6 * w + 3).responses(), 1);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket_as_prometheus_does() {
        let b = Buckets::new(&[10, 20, 40]).unwrap();
        let mut r = Recent {
            window_ms: 1,
            counts: [0; MAX_BUCKETS + 1],
        };
        assert_eq!(r.quantile(&b, 0.5), None);
        // 10 in (0,10], 10 in (10,20], 0 in (20,40], 0 above.
        r.counts[0] = 10;
        r.counts[1] = 10;
        assert_eq!(r.quantile(&b, 0.5), Some(10.0));
        assert_eq!(r.quantile(&b, 0.25), Some(5.0));
        assert_eq!(r.quantile(&b, 0.75), Some(15.0));
        assert_eq!(r.quantile(&b, 1.0), Some(20.0));
        // Above the last bound: the last bound.
        r.counts[3] = 80;
        assert_eq!(r.quantile(&b, 0.99), Some(40.0));
        let q = |v: &[u64], q| {
            let mut r = Recent::default();
            r.counts[..v.len()].copy_from_slice(v);
            r.quantile(&b, q).unwrap()
        };
        assert_eq!(q(&[0, 0, 4], 0.5), 30.0);
        assert_eq!(q(&[1, 0, 0, 0], 0.99), 9.9);
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
