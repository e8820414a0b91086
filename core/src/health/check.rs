//! Active health checks: one prober per server across all workers
//!
//! The caller (nginx's event loop) makes the checks; the core decides who
//! makes which and when, and what a result means.
//!
//! # Who checks
//!
//! Each peer's health row holds `due_ms`, when its next check is due. A
//! worker takes a check by moving `due_ms` forward one interval (plus
//! jitter) with a compare-and-swap: however many workers look, one check
//! per interval goes out, and a check in flight when its worker dies is
//! simply taken again at the next due time. Worker `w` of `W` looks after
//! the peers `i` with `i % W == w` and takes them as soon as they are due;
//! it takes any other peer only once it is overdue by an interval plus the
//! timeout — its own worker is dead, exiting or starved — so a dead
//! worker's peers are checked again within two intervals, and during a
//! reload old and new workers share the schedule instead of doubling it.
//! A worker that took a peer over keeps it on schedule (a full pass, which
//! looks at every peer, comes twice per interval) until its own worker
//! takes it back at a due time. Peers `down` by configuration or through
//! the API are not checked (a check is due as soon as they return);
//! draining ones are.
//!
//! The first check of a peer is spread over the first interval by its
//! index (so 10,000 servers do not all connect at once), except under
//! `mandatory`, where a `checking` peer is due at once.
//!
//! # What a result means
//!
//! `fails` consecutive failures make a peer `unhealthy`; `passes`
//! consecutive passes make it healthy again (then it slow-starts). A
//! `checking` peer (`mandatory`) is decided by its first check: up if it
//! passes, unhealthy if it fails. Each transition is reported once, to the
//! caller whose flag update made it, so it logs one line however many
//! workers there are. Passive health is independent: a passing check does
//! not clear a `max_fails` window unless `clear_fails` is set (a check
//! URI passing says less about the server than the requests that failed on
//! it, and nginx's `fail_timeout` keeps its documented meaning).

use core::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::panic::PanicReport;
use crate::crash::crash_point;
use crate::error::Error;
use crate::layout::health::RAMP_ON_FIRST_PASS;
use crate::layout::{PeerState, Zone};
use crate::spec::HealthSpec;

/// A change of a peer's health made by one check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckTransition {
    /// No change.
    #[default]
    None,
    /// A `checking` peer passed its first check: in service.
    Up,
    /// An unhealthy peer passed `passes` checks in a row: in service.
    Healthy,
    /// The peer failed `fails` checks in a row (or its first check under
    /// `mandatory`): out of service.
    Unhealthy,
}

/// What [`Zone::check_done`] tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckReport {
    /// The transition this result made, if any.
    pub transition: CheckTransition,
    /// Consecutive passes after this result.
    pub rise: u32,
    /// Consecutive failures after this result.
    pub fall: u32,
    /// The panic evaluation that followed a transition.
    pub panic: PanicReport,
}

/// Why a check ended as it did, as its health row keeps it (the C ABI's
/// `HAB_CHECK_REASON_*`: the same numbers, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u16)]
pub enum CheckReason {
    /// No check yet, or a prober that did not say.
    #[default]
    None = 0,
    /// The check passed.
    Passed = 1,
    /// The server refused the connection.
    ConnectRefused = 2,
    /// The connection failed otherwise (unreachable, reset while opening).
    ConnectError = 3,
    /// No verdict within the check's timeout.
    Timeout = 4,
    /// Sending the request failed.
    SendFailed = 5,
    /// Reading the answer failed (a reset).
    RecvFailed = 6,
    /// The server closed the connection without a byte of answer.
    NoResponse = 7,
    /// The server closed the connection within the head.
    IncompleteHeader = 8,
    /// A malformed status line.
    InvalidStatusLine = 9,
    /// A malformed header line.
    InvalidHeader = 10,
    /// An invalid or doubled Content-Length.
    InvalidContentLength = 11,
    /// A status outside the passing ones (the status kept beside).
    Status = 12,
    /// A malformed chunked body.
    InvalidChunkedBody = 13,
    /// The server closed the connection within the body.
    IncompleteBody = 14,
    /// The body did not match `body=`.
    BodyMismatch = 15,
    /// TLS setup or handshake failed.
    Tls = 16,
    /// The prober itself failed (out of memory, a regex error).
    Internal = 17,
    /// A gRPC check's answer is not HTTP/2 or breaks the protocol.
    Http2 = 18,
    /// A gRPC check's `grpc-status` is not 0 (the code kept as the status).
    GrpcStatus = 19,
    /// A gRPC check's service is not `SERVING` (its status kept as the
    /// status: 0 `UNKNOWN`, 2 `NOT_SERVING`, 3 `SERVICE_UNKNOWN`).
    NotServing = 20,
}

impl CheckReason {
    /// Every reason, by number.
    const ALL: [CheckReason; 21] = [
        CheckReason::None,
        CheckReason::Passed,
        CheckReason::ConnectRefused,
        CheckReason::ConnectError,
        CheckReason::Timeout,
        CheckReason::SendFailed,
        CheckReason::RecvFailed,
        CheckReason::NoResponse,
        CheckReason::IncompleteHeader,
        CheckReason::InvalidStatusLine,
        CheckReason::InvalidHeader,
        CheckReason::InvalidContentLength,
        CheckReason::Status,
        CheckReason::InvalidChunkedBody,
        CheckReason::IncompleteBody,
        CheckReason::BodyMismatch,
        CheckReason::Tls,
        CheckReason::Internal,
        CheckReason::Http2,
        CheckReason::GrpcStatus,
        CheckReason::NotServing,
    ];

    /// The reason numbered `n`; `None` for an unknown number.
    pub fn from_u32(n: u32) -> Option<CheckReason> {
        Self::ALL.get(n as usize).copied()
    }

    /// A short human text; a status is written by [`CheckDetail::text`].
    pub fn as_str(self) -> &'static str {
        match self {
            CheckReason::None => "none",
            CheckReason::Passed => "passed",
            CheckReason::ConnectRefused => "connection refused",
            CheckReason::ConnectError => "connection failed",
            CheckReason::Timeout => "timeout",
            CheckReason::SendFailed => "send failed",
            CheckReason::RecvFailed => "connection reset",
            CheckReason::NoResponse => "no response",
            CheckReason::IncompleteHeader => "incomplete header",
            CheckReason::InvalidStatusLine => "invalid status line",
            CheckReason::InvalidHeader => "invalid header",
            CheckReason::InvalidContentLength => "invalid Content-Length",
            CheckReason::Status => "status",
            CheckReason::InvalidChunkedBody => "invalid chunked body",
            CheckReason::IncompleteBody => "incomplete body",
            CheckReason::BodyMismatch => "body does not match",
            CheckReason::Tls => "TLS failed",
            CheckReason::Internal => "internal error",
            CheckReason::Http2 => "HTTP/2 protocol error",
            CheckReason::GrpcStatus => "grpc-status",
            CheckReason::NotServing => "not serving",
        }
    }
}

/// The names of `grpc.health.v1.HealthCheckResponse.ServingStatus`, by
/// number (1, `SERVING`, never fails a check).
const SERVING_STATUS: [&str; 4] = ["UNKNOWN", "", "NOT_SERVING", "SERVICE_UNKNOWN"];

/// How one check went, beside its verdict: the reason, the answer's HTTP
/// status (0 without one) and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckDetail {
    /// Why it ended as it did.
    pub reason: CheckReason,
    /// The answer's status, 0 without one.
    pub status: u16,
    /// From its start to its verdict, ms.
    pub duration_ms: u32,
}

impl CheckDetail {
    /// The row's `last_reason` word.
    fn pack(self) -> u32 {
        self.reason as u32 | u32::from(self.status) << 16
    }

    /// From the row's `last_reason` word and `last_duration_ms`.
    fn unpack(word: u32, duration_ms: u32) -> CheckDetail {
        CheckDetail {
            reason: CheckReason::from_u32(word & 0xffff).unwrap_or_default(),
            status: (word >> 16) as u16,
            duration_ms,
        }
    }

    /// A short human text: `"status 503"`, `"timeout"`, `"passed"`.
    pub fn text(&self) -> String {
        match self.reason {
            CheckReason::Status => format!("status {}", self.status),
            CheckReason::GrpcStatus => format!("grpc-status {}", self.status),
            CheckReason::NotServing => match SERVING_STATUS.get(usize::from(self.status)) {
                Some(name) if !name.is_empty() => format!("not serving ({name})"),
                _ => format!("not serving ({})", self.status),
            },
            r => r.as_str().to_owned(),
        }
    }

    /// The reason (and status) of a [`CheckDetail::text`]; no duration.
    pub fn parse(text: &str) -> Option<CheckDetail> {
        let with = |reason, status| {
            Some(CheckDetail {
                reason,
                status,
                duration_ms: 0,
            })
        };
        if let Some(n) = text.strip_prefix("status ") {
            return with(CheckReason::Status, n.parse().ok()?);
        }
        if let Some(n) = text.strip_prefix("grpc-status ") {
            return with(CheckReason::GrpcStatus, n.parse().ok()?);
        }
        if let Some(s) = text
            .strip_prefix("not serving (")
            .and_then(|s| s.strip_suffix(')'))
        {
            let status = match SERVING_STATUS.iter().position(|n| !n.is_empty() && *n == s) {
                Some(k) => k as u16,
                None => s.parse().ok()?,
            };
            return with(CheckReason::NotServing, status);
        }
        let reason = CheckReason::ALL.into_iter().find(|r| {
            !matches!(
                r,
                CheckReason::Status | CheckReason::GrpcStatus | CheckReason::NotServing
            ) && r.as_str() == text
        })?;
        Some(CheckDetail {
            reason,
            ..CheckDetail::default()
        })
    }
}

/// A peer's check counters, as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckStats {
    /// Checks made.
    pub checks: u64,
    /// Checks failed.
    pub fails: u64,
    /// Times the peer turned unhealthy.
    pub unhealthy: u64,
    /// Whether the last check passed; `None` before the first.
    pub last_passed: Option<bool>,
    /// Consecutive passes.
    pub rise: u32,
    /// Consecutive failures.
    pub fall: u32,
    /// How the last check went; `None` before the first.
    pub last: Option<CheckDetail>,
    /// When the last check ended (the zone's monotonic clock); `None`
    /// before the first.
    pub last_ms: Option<u64>,
}

/// splitmix64: the jitter of one claim from the caller's seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Zone<'_> {
    /// The health directives the zone was built with.
    #[inline]
    pub fn health_spec(&self) -> &HealthSpec {
        &self.root().health
    }

    /// Takes the checks due at `now` for worker `worker` of `workers` (see
    /// the module note), at most `out.len()`, writing their peer indices
    /// to `out`; returns how many, and when the next one this worker would
    /// take falls due (`u64::MAX`: none). `seed` varies the jitter.
    ///
    /// With `full` unset only the worker's own peers are looked at (a
    /// stride of `workers`: a tick costs `n / workers`); a full pass, which
    /// also takes over overdue peers of other workers, is needed about
    /// once per interval.
    ///
    /// A check's next due time is its due time plus the interval (plus
    /// jitter), not the time it was taken plus the interval: a late tick
    /// does not stretch the schedule. A peer more than an interval behind
    /// (its worker was gone, or it was down) starts afresh from `now`.
    pub fn claim_checks(
        &self,
        worker: u32,
        workers: u32,
        now: u64,
        seed: u64,
        full: bool,
        out: &mut [u32],
    ) -> (usize, u64) {
        let hs = self.health_spec();
        if !hs.checks() {
            return (0, u64::MAX);
        }
        let (interval, jitter) = (u64::from(hs.interval_ms), u64::from(hs.jitter_ms));
        let grace = interval + u64::from(hs.timeout_ms);
        let workers = workers.max(1);
        let n = self.peers();
        let (states, rows) = (self.states(), self.health_rows());
        let mut taken = 0;
        let mut next = u64::MAX;
        let (first, step) = if full {
            (0, 1)
        } else {
            (worker as usize, workers as usize)
        };
        let mut i = first;
        while i < n {
            let k = i;
            i += step;
            let flags = states[k].flags.load(Relaxed);
            if flags & (PeerState::DOWN | PeerState::ADMIN_DOWN | PeerState::RETIRED) != 0 {
                continue;
            }
            let row = &rows[k];
            // Its own, or one it took over (until its owner takes it back).
            let owned = k as u32 % workers == worker || row.prober.load(Relaxed) == worker + 1;
            let mut due = row.due_ms.load(Relaxed);
            if due == 0 {
                if !owned {
                    continue;
                }
                // The first check: at once when checking, else spread.
                let at = if flags & PeerState::CHECKING != 0 {
                    now
                } else {
                    now + (k as u64 * interval) / n as u64
                }
                .max(1);
                due = match row.due_ms.compare_exchange(0, at, Relaxed, Relaxed) {
                    Ok(_) => at,
                    Err(d) => d,
                };
            }
            let at = if owned {
                due
            } else {
                due.saturating_add(grace)
            };
            if now < at || taken == out.len() {
                next = next.min(at.max(now));
                continue;
            }
            let extra = if jitter == 0 {
                0
            } else {
                mix(seed ^ ((k as u64) << 20) ^ now) % (jitter + 1)
            };
            let base = if due + interval > now { due } else { now };
            let then = base + interval + extra;
            if row
                .due_ms
                .compare_exchange(due, then, Relaxed, Relaxed)
                .is_ok()
            {
                crash_point("claim.taken");
                row.prober.store(worker + 1, Relaxed);
                out[taken] = k as u32;
                taken += 1;
                next = next.min(if owned { then } else { then + grace });
            } else {
                // Someone else took it: its new due time.
                let d = row.due_ms.load(Relaxed);
                next = next.min(if owned { d } else { d.saturating_add(grace) }.max(now));
            }
        }
        (taken, next)
    }

    /// [`Zone::check_done`] for a check of slot `i` that started when the
    /// slot's epoch was `epoch`, by the worker of ledger slot `ledger`: if
    /// the slot has been given to another server since (another epoch, or
    /// FREE), the verdict is dropped and the report says nothing changed.
    ///
    /// In a zone whose slots are reused (servers resolved at run time),
    /// the comparison and the writes must not straddle a reuse: the worker
    /// announces itself in the row's writers mask (its ledger slot's bit)
    /// before it compares, and clears the bit after its writes; a builder
    /// stores FREE before it reads the mask and fills a slot only when the
    /// mask is empty (`Zone::apply_membership`). Both sides `SeqCst`: the
    /// verdict sees FREE, or the builder sees the bit. A killed worker's
    /// bit is cleared by the reconciliation of its ledger slot. A worker
    /// without a ledger slot (more than 32 alive) writes under the builder
    /// lease instead, and drops the verdict when a build holds it.
    pub fn check_done_epoch(
        &self,
        i: usize,
        epoch: u32,
        ledger: Option<u32>,
        passed: bool,
        now: u64,
    ) -> Result<CheckReport, Error> {
        self.check_done_detail(i, epoch, ledger, passed, CheckDetail::default(), now)
    }

    /// [`Zone::check_done_epoch`] with how the check went (kept in the
    /// peer's row, shown by the API).
    pub fn check_done_detail(
        &self,
        i: usize,
        epoch: u32,
        ledger: Option<u32>,
        passed: bool,
        detail: CheckDetail,
        now: u64,
    ) -> Result<CheckReport, Error> {
        let row = self.health_rows().get(i).ok_or(Error::InvalidArgument)?;
        // The status first: a slot seen LIVE again after a reuse has its
        // new epoch already (the builder bumps it before it stores LIVE).
        let same = || {
            self.slot_status_seq(i) != Some(crate::layout::FREE)
                && self.slot_epoch_seq(i) == Some(epoch)
        };
        if !self.dynamic() {
            // Slots are never reused: the epoch is 0 for good.
            if !same() {
                return Ok(CheckReport::default());
            }
            crash_point("check.compared");
            return self.check_done_with(i, passed, detail, now);
        }
        match ledger {
            Some(s) if (s as usize) < crate::layout::LEDGER_SLOTS => {
                let bit = 1u64 << s;
                row.writers.fetch_or(bit, SeqCst);
                let report = if same() {
                    crash_point("check.compared");
                    self.check_done_with(i, passed, detail, now)
                } else {
                    Ok(CheckReport::default())
                };
                row.writers.fetch_and(!bit, SeqCst);
                report
            }
            _ => {
                // Reuse happens under the lease only.
                let owner = u64::from(std::process::id());
                let Ok(_lease) = self.lease_guard(owner, &|_| true) else {
                    return Ok(CheckReport::default());
                };
                if !same() {
                    return Ok(CheckReport::default());
                }
                crash_point("check.compared");
                self.check_done_with(i, passed, detail, now)
            }
        }
    }

    /// Records the result of a check of peer `i` that ended at `now`.
    pub fn check_done(&self, i: usize, passed: bool, now: u64) -> Result<CheckReport, Error> {
        self.check_done_with(i, passed, CheckDetail::default(), now)
    }

    /// [`Zone::check_done`] with how the check went.
    pub fn check_done_with(
        &self,
        i: usize,
        passed: bool,
        detail: CheckDetail,
        now: u64,
    ) -> Result<CheckReport, Error> {
        let hs = *self.health_spec();
        let (Some(s), Some(row)) = (self.states().get(i), self.health_rows().get(i)) else {
            return Err(Error::InvalidArgument);
        };
        if !hs.checks() {
            return Err(Error::InvalidArgument);
        }
        row.checks.fetch_add(1, Relaxed);
        crash_point("check.counted");
        row.last_ms.store(now, Relaxed);
        row.last_reason.store(detail.pack(), Relaxed);
        row.last_duration_ms.store(detail.duration_ms, Relaxed);
        let (rise, fall) = if passed {
            row.last.store(1, Relaxed);
            row.fall.store(0, Relaxed);
            let r = row.rise.load(Relaxed).saturating_add(1);
            row.rise.store(r, Relaxed);
            (r, 0)
        } else {
            row.last.store(2, Relaxed);
            row.fails.fetch_add(1, Relaxed);
            row.rise.store(0, Relaxed);
            let f = row.fall.load(Relaxed).saturating_add(1);
            row.fall.store(f, Relaxed);
            (0, f)
        };
        let flags = s.flags.load(Relaxed);
        let mut transition = CheckTransition::None;
        if flags & PeerState::CHECKING != 0 {
            if passed {
                let old = s.flags.fetch_and(!PeerState::CHECKING, Relaxed);
                if old & PeerState::CHECKING != 0 {
                    transition = CheckTransition::Up;
                    if row.ramp_from_ms.load(Relaxed) == RAMP_ON_FIRST_PASS {
                        self.begin_slow_start(i, now);
                    }
                }
            } else {
                // Unhealthy first, then no longer checking: never eligible
                // in between.
                s.flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
                crash_point("check.unhealthy_first");
                let old = s.flags.fetch_and(!PeerState::CHECKING, Relaxed);
                if old & PeerState::CHECKING != 0 {
                    transition = CheckTransition::Unhealthy;
                }
            }
        } else if flags & PeerState::UNHEALTHY != 0 {
            if passed && rise >= hs.passes {
                let old = s.flags.fetch_and(!PeerState::UNHEALTHY, Relaxed);
                if old & PeerState::UNHEALTHY != 0 {
                    transition = CheckTransition::Healthy;
                    crate::policy::ewma::forget(s);
                    self.begin_slow_start(i, now);
                }
            }
        } else if !passed && fall >= hs.fails {
            let old = s.flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
            if old & PeerState::UNHEALTHY == 0 {
                transition = CheckTransition::Unhealthy;
            }
        }
        crash_point("check.flagged");
        if passed && hs.flags & HealthSpec::CLEAR_FAILS != 0 {
            s.fails.store(0, Relaxed);
        }
        // The health bits may have moved (another prober's too).
        self.lc_refresh(i);
        let mut panic = PanicReport::default();
        if transition != CheckTransition::None {
            if transition == CheckTransition::Unhealthy {
                row.unhealthy.fetch_add(1, Relaxed);
            }
            self.state_changed(i, now);
            self.health_changed();
            panic = self.update_panic();
        }
        Ok(CheckReport {
            transition,
            rise,
            fall,
            panic,
        })
    }

    /// Check counters of peer `i` (zeros past the end).
    pub fn check_stats(&self, i: usize) -> CheckStats {
        let Some(row) = self.health_rows().get(i) else {
            return CheckStats::default();
        };
        CheckStats {
            checks: row.checks.load(Relaxed),
            fails: row.fails.load(Relaxed),
            unhealthy: row.unhealthy.load(Relaxed),
            last_passed: match row.last.load(Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            rise: row.rise.load(Relaxed),
            fall: row.fall.load(Relaxed),
            last: (row.last.load(Relaxed) != 0).then(|| {
                CheckDetail::unpack(
                    row.last_reason.load(Relaxed),
                    row.last_duration_ms.load(Relaxed),
                )
            }),
            last_ms: (row.last.load(Relaxed) != 0).then(|| row.last_ms.load(Relaxed)),
        }
    }

    /// The health active checks found for peer `i`: `Some(true)` up,
    /// `Some(false)` unhealthy, `None` unknown (no checks, or checking).
    pub fn known_health(&self, i: usize) -> Option<bool> {
        let s = self.states().get(i)?;
        if !self.health_spec().checks() {
            return None;
        }
        let f = s.flags.load(Relaxed);
        if f & PeerState::CHECKING != 0 {
            None
        } else {
            Some(f & PeerState::UNHEALTHY == 0)
        }
    }

    /// Restores the health a state file recorded for peer `i` of a fresh
    /// zone: an unhealthy server stays out until `passes` checks pass; a
    /// healthy one skips `checking` only under `mandatory persistent`
    /// (NGINX Plus's `persistent`); otherwise nothing changes.
    pub fn restore_health(&self, i: usize, healthy: bool) {
        let (Some(s), hs) = (self.states().get(i), self.health_spec()) else {
            return;
        };
        if !hs.checks() {
            return;
        }
        if !healthy {
            s.flags.fetch_or(PeerState::UNHEALTHY, Relaxed);
            s.flags.fetch_and(!PeerState::CHECKING, Relaxed);
        } else if hs.flags & HealthSpec::PERSISTENT != 0 {
            s.flags.fetch_and(!PeerState::CHECKING, Relaxed);
        }
        self.lc_refresh(i);
        self.health_changed();
        self.update_panic();
    }

    /// Zeroes the check counters of peer `i` (the API's reset); the
    /// consecutive counts, which decide health, stay.
    pub(crate) fn reset_check_stats(&self, i: usize) {
        if let Some(row) = self.health_rows().get(i) {
            row.checks.store(0, Relaxed);
            row.fails.store(0, Relaxed);
            row.unhealthy.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PeerSpec, Policy, UpstreamSpec};
    use crate::testing::OwnedTable;

    fn spec_with(flags: u32, peers: usize) -> (Vec<Vec<u8>>, HealthSpec, usize) {
        let ids = (0..peers).map(|i| format!("p{i}").into_bytes()).collect();
        (
            ids,
            HealthSpec {
                flags: HealthSpec::CHECK | flags,
                interval_ms: 1_000,
                timeout_ms: 500,
                fails: 3,
                passes: 2,
                ..HealthSpec::default()
            },
            peers,
        )
    }

    fn table(flags: u32, peers: usize) -> OwnedTable {
        let (ids, health, _) = spec_with(flags, peers);
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
            health,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    /// Simulates `workers` workers (those `alive`) ticking every `tick` ms
    /// for `ms` ms from 1,000 ms: checks per peer.
    fn simulate(z: Zone<'_>, workers: u32, alive: &[bool], tick: u64, ms: u64) -> Vec<u32> {
        simulate_from(z, workers, alive, tick, 1_000, ms)
    }

    /// [`simulate`] from `from` ms; every worker's tick at a multiple of
    /// 500 ms is a full pass.
    fn simulate_from(
        z: Zone<'_>,
        workers: u32,
        alive: &[bool],
        tick: u64,
        from: u64,
        ms: u64,
    ) -> Vec<u32> {
        let mut counts = vec![0u32; z.peers()];
        let mut out = [0u32; 64];
        let mut now = from;
        while now < from + ms {
            for w in (0..workers).filter(|&w| alive[w as usize]) {
                let full = now % 500 == 0;
                let (n, _) = z.claim_checks(w, workers, now, now ^ u64::from(w), full, &mut out);
                for &i in &out[..n] {
                    counts[i as usize] += 1;
                    z.check_done(i as usize, true, now).unwrap();
                }
            }
            now += tick;
        }
        counts
    }

    #[test]
    fn one_check_per_interval_whatever_the_workers() {
        let t = table(0, 10);
        let counts = simulate(t.zone(), 4, &[true; 4], 10, 30_000);
        for (i, c) in counts.iter().enumerate() {
            assert!((29..=31).contains(c), "peer {i}: {c} checks in 30 s");
        }
        // Spread: each peer made by its own worker.
        for i in 0..10 {
            assert_eq!(
                t.zone().health_rows()[i].prober.load(Relaxed),
                i as u32 % 4 + 1
            );
        }
    }

    #[test]
    fn a_dead_workers_peers_are_taken_within_two_intervals() {
        let t = table(0, 8);
        let z = t.zone();
        simulate(z, 4, &[true; 4], 10, 5_000);
        let before: Vec<u64> = z
            .health_rows()
            .iter()
            .map(|r| r.checks.load(Relaxed))
            .collect();
        // Worker 1 dies: its peers (1, 5) are taken over by the others.
        let counts = simulate_from(z, 4, &[true, false, true, true], 10, 6_000, 10_000);
        for i in [1usize, 5] {
            assert!(
                counts[i] >= 4,
                "peer {i}: {} checks after its worker died",
                counts[i]
            );
            assert_ne!(z.health_rows()[i].prober.load(Relaxed), 2);
        }
        assert!(before.iter().all(|&c| c >= 4));
    }

    #[test]
    fn fails_then_passes_with_one_report_each() {
        let t = table(0, 2);
        let z = t.zone();
        let r: Vec<CheckTransition> = [true, false, false, false, false, true, true, true]
            .iter()
            .map(|&p| z.check_done(0, p, 10).unwrap().transition)
            .collect();
        use CheckTransition::*;
        assert_eq!(r, [None, None, None, Unhealthy, None, None, Healthy, None]);
        let st = z.check_stats(0);
        assert_eq!((st.checks, st.fails, st.unhealthy), (8, 4, 1));
        assert_eq!(st.last_passed, Some(true));
    }

    #[test]
    fn the_last_checks_reason_status_and_duration_are_kept() {
        let t = table(0, 2);
        let z = t.zone();
        assert_eq!(z.check_stats(0).last, None);
        assert_eq!(z.check_stats(0).last_ms, None);
        let cases = [
            (true, CheckReason::Passed, 200, 3, "passed"),
            (false, CheckReason::Status, 503, 12, "status 503"),
            (false, CheckReason::Timeout, 0, 1000, "timeout"),
            (
                false,
                CheckReason::ConnectRefused,
                0,
                0,
                "connection refused",
            ),
            (true, CheckReason::Passed, 599, u32::MAX, "passed"),
            (false, CheckReason::GrpcStatus, 12, 3, "grpc-status 12"),
            (
                false,
                CheckReason::NotServing,
                2,
                3,
                "not serving (NOT_SERVING)",
            ),
            (
                false,
                CheckReason::NotServing,
                0,
                3,
                "not serving (UNKNOWN)",
            ),
            (
                false,
                CheckReason::NotServing,
                3,
                3,
                "not serving (SERVICE_UNKNOWN)",
            ),
            (false, CheckReason::NotServing, 7, 3, "not serving (7)"),
            (false, CheckReason::Http2, 0, 3, "HTTP/2 protocol error"),
        ];
        for (k, (passed, reason, status, duration_ms, text)) in cases.into_iter().enumerate() {
            let detail = CheckDetail {
                reason,
                status,
                duration_ms,
            };
            let now = 100 + k as u64;
            z.check_done_detail(0, 0, None, passed, detail, now)
                .unwrap();
            let st = z.check_stats(0);
            assert_eq!(st.last, Some(detail));
            assert_eq!(st.last_ms, Some(now));
            assert_eq!(st.last_passed, Some(passed));
            assert_eq!(detail.text(), text);
            let back = CheckDetail::parse(text).unwrap();
            assert_eq!(
                (back.reason, back.status),
                (
                    reason,
                    if matches!(
                        reason,
                        CheckReason::Status | CheckReason::GrpcStatus | CheckReason::NotServing
                    ) {
                        status
                    } else {
                        0
                    }
                )
            );
            // Peer 1 untouched.
            assert_eq!(z.check_stats(1).last, None);
        }
        // The plain entry point keeps no reason.
        z.check_done(0, false, 200).unwrap();
        assert_eq!(z.check_stats(0).last, Some(CheckDetail::default()));
        // Numbers are the ABI's: every one maps back, past the end none.
        for n in 0..21 {
            assert_eq!(CheckReason::from_u32(n).map(|r| r as u32), Some(n));
        }
        assert_eq!(CheckReason::from_u32(21), None);
        for r in CheckReason::ALL {
            if !matches!(
                r,
                CheckReason::Status | CheckReason::GrpcStatus | CheckReason::NotServing
            ) {
                assert_eq!(CheckDetail::parse(r.as_str()).map(|d| d.reason), Some(r));
            }
        }
        assert_eq!(CheckDetail::parse("status x"), None);
        assert_eq!(CheckDetail::parse("nonsense"), None);
    }

    #[test]
    fn mandatory_starts_checking_and_the_first_check_decides() {
        let t = table(HealthSpec::MANDATORY, 2);
        let z = t.zone();
        assert!(z
            .states()
            .iter()
            .all(|s| s.flags.load(Relaxed) & PeerState::CHECKING != 0));
        // Checking peers are due at once.
        let mut out = [0u32; 4];
        let (n, _) = z.claim_checks(0, 1, 5, 0, false, &mut out);
        assert_eq!(&out[..n], &[0, 1]);
        assert_eq!(
            z.check_done(0, true, 6).unwrap().transition,
            CheckTransition::Up
        );
        assert_eq!(
            z.check_done(1, false, 6).unwrap().transition,
            CheckTransition::Unhealthy
        );
        assert_eq!(
            z.states()[1].flags.load(Relaxed) & PeerState::HEALTH,
            PeerState::UNHEALTHY
        );
    }

    #[test]
    fn down_peers_are_not_checked_and_first_checks_spread() {
        let t = table(0, 4);
        let z = t.zone();
        z.set_admin(2, Some(true), None, 0).unwrap();
        let mut out = [0u32; 8];
        let (n, next) = z.claim_checks(0, 1, 1_000, 0, false, &mut out);
        // Spread over the first interval: peer 0 at once, 1, 3 later.
        assert_eq!(&out[..n], &[0]);
        assert_eq!(next, 1_250);
        let (n, _) = z.claim_checks(0, 1, 2_000, 0, false, &mut out);
        assert_eq!(&out[..n], &[0, 1, 3]);
    }

    #[test]
    fn clear_fails_is_off_by_default() {
        for (flags, left) in [(0, 1), (HealthSpec::CLEAR_FAILS, 0)] {
            let t = table(flags, 2);
            let z = t.zone();
            z.states()[0].fails.store(1, Relaxed);
            z.check_done(0, true, 1).unwrap();
            assert_eq!(z.states()[0].fails.load(Relaxed), left);
        }
    }
}
