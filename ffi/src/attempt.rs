//! One request: its attempt state, its tries, its end

use core::ffi::c_void;

use hab_core::attempt::{self, Attempt};
use hab_core::health::outlier::Reason;
use hab_core::health::Transition;
use hab_core::layout::queue::Wake;
use hab_core::layout::stats::TryInfo;
use hab_core::layout::Zone;
use hab_core::{Binding, Outcome};

use crate::conf::HAB_SID_MAX;

use crate::{bytes, finish, guard, guard_or, hab_attempt, hab_result, hab_zone};
use crate::{zone_of, HAB_NO_SLOT};
use crate::{HAB_INVALID_ARGUMENT, HAB_NO_SPACE, HAB_NULL_PARAMETER, HAB_OK};

/// `hab_pick.flags`: the peer is a backup.
pub const HAB_PICK_BACKUP: u32 = 0x0001;
/// `hab_pick.flags`: the peer is the server the request is bound to.
pub const HAB_PICK_BOUND: u32 = 0x0002;
/// `hab_attempt_release` outcome: accepted.
pub const HAB_OUTCOME_OK: u32 = 0;
/// `hab_attempt_release` outcome: failed, counts toward max_fails.
pub const HAB_OUTCOME_FAILED: u32 = 1;
/// `hab_attempt_release` outcome: passed on without blame.
pub const HAB_OUTCOME_NEXT: u32 = 2;
/// `hab_report.flags`: this failure disabled the peer.
pub const HAB_REPORT_DISABLED: u32 = 0x0001;
/// `hab_report.flags`: this success re-enabled the peer.
pub const HAB_REPORT_RECOVERED: u32 = 0x0002;
/// `hab_report.flags`: single peer, do not retry.
pub const HAB_REPORT_LAST_TRY: u32 = 0x0004;
/// `hab_report.flags`: this try ejected the peer as an outlier.
pub const HAB_REPORT_EJECTED: u32 = 0x0008;

/// `hab_report.eject_reason`: consecutive 5xx responses.
pub const HAB_EJECT_5XX: u32 = 1;
/// `hab_report.eject_reason`: consecutive gateway errors.
pub const HAB_EJECT_ERRORS: u32 = 2;

/// `hab_wake.channel`: the woken worker registered no channel.
pub const HAB_NO_CHANNEL: u32 = u32::MAX;

/// A worker to wake: the queue's head belongs to ledger slot `slot`
/// (`HAB_NO_SLOT`: nobody to wake). The caller must deliver every wake
/// it gets: until that worker calls `hab_queue_woken`, no other wake of
/// it is given.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct hab_wake {
    /// The ledger slot of the worker to wake; `HAB_NO_SLOT`: none.
    pub slot: u32,
    /// Its wake channel (`hab_queue_set_wake`); `HAB_NO_CHANNEL`: none.
    pub channel: u32,
}

impl hab_wake {
    /// Nobody to wake.
    pub const NONE: hab_wake = hab_wake {
        slot: HAB_NO_SLOT,
        channel: HAB_NO_CHANNEL,
    };
}

impl Default for hab_wake {
    fn default() -> Self {
        hab_wake::NONE
    }
}

impl From<Option<Wake>> for hab_wake {
    fn from(w: Option<Wake>) -> Self {
        w.map_or(hab_wake::NONE, |w| hab_wake {
            slot: w.slot,
            channel: w.channel.unwrap_or(HAB_NO_CHANNEL),
        })
    }
}

/// The peer chosen for one try.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_pick {
    /// Index into the configuration's peers.
    pub peer: u32,
    /// `HAB_PICK_*`.
    pub flags: u32,
}

/// What `hab_attempt_release` reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_report {
    /// `HAB_REPORT_*`.
    pub flags: u32,
    /// The peer of the finished try.
    pub peer: u32,
    /// With `HAB_REPORT_RECOVERED`: how long the peer was unavailable, ms.
    pub down_ms: u64,
    /// With `HAB_REPORT_EJECTED`: `HAB_EJECT_*`.
    pub eject_reason: u32,
    /// With `HAB_REPORT_EJECTED`: how many in a row.
    pub eject_count: u32,
    /// With `HAB_REPORT_EJECTED`: for how long, ms.
    pub eject_ms: u64,
    /// The panic evaluation that followed an ejection.
    pub panic: crate::health::hab_panic_report,
    /// The queue's head to wake, now that a server has room (appended in
    /// increment 3 of the queue; `hab_wake::NONE` without a queue).
    pub wake: hab_wake,
}

/// `hab_try.flags`: `header_ms` is known.
pub const HAB_TRY_HEADER_TIME: u32 = 0x0001;

/// What the caller knows of a finished try, for the statistics.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_try {
    /// HTTP status; 0 when no response header came.
    pub status: u32,
    /// `HAB_TRY_*`.
    pub flags: u32,
    /// Time to the response header, ms.
    pub header_ms: u64,
    /// Bytes sent to the server.
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
}

impl hab_try {
    /// The core's view of it.
    fn info(&self) -> TryInfo {
        TryInfo {
            status: self.status,
            header_ms: (self.flags & HAB_TRY_HEADER_TIME != 0).then_some(self.header_ms),
            sent: self.sent,
            received: self.received,
        }
    }
}

/// Bytes of per-request state for this zone (0 for NULL).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_size(z: *const hab_zone) -> usize {
    guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract); arithmetic only.
        attempt::words(unsafe { zone_of(z) }.peers()) * 8
    })
}

/// The attempt words behind a handle.
///
/// # Safety
///
/// `a` is non-NULL, 8-byte aligned and was prepared by `hab_attempt_init`
/// for zone `z`, and nothing else accesses it during `'a`.
#[inline]
pub(crate) unsafe fn attempt_words<'a>(z: Zone<'_>, a: *mut hab_attempt) -> &'a mut [u64] {
    // SAFETY: forwarded contract: `words(peers)` words were set up at init.
    unsafe { core::slice::from_raw_parts_mut(a.cast::<u64>(), attempt::words(z.peers())) }
}

/// Prepares per-request state in `mem` and pins the serving generation.
///
/// # Safety
///
/// `z` a valid zone handle; `mem` valid for writes of `len` bytes until
/// `hab_attempt_end`; `out_attempt` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_init(
    z: *mut hab_zone,
    mem: *mut c_void,
    len: usize,
    now_ms: u64,
    seed: u64,
    slot: u32,
    out_attempt: *mut *mut hab_attempt,
) -> hab_result {
    guard(|| {
        if z.is_null() || mem.is_null() || out_attempt.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let words = attempt::words(z.peers());
        if len < words * 8 || mem as usize % 8 != 0 {
            return HAB_NO_SPACE;
        }
        // SAFETY: aligned, long enough, writable (checked / contract).
        let w = unsafe { core::slice::from_raw_parts_mut(mem.cast::<u64>(), words) };
        let mut a = Attempt::init(w, now_ms);
        a.seed(seed);
        a.set_slot((slot != HAB_NO_SLOT).then_some(slot));
        if let Err(e) = z.begin(&mut a) {
            return e.into();
        }
        // SAFETY: checked non-NULL above.
        unsafe { out_attempt.write(mem.cast()) };
        HAB_OK
    })
}

/// Picks a peer for the next try, on the attempt's generation.
///
/// # Safety
///
/// `z` a valid zone handle; `a` prepared by `hab_attempt_init` for `z`;
/// `key` NULL or valid for `key_len` bytes; `out_pick` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_pick(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    key: *const u8,
    key_len: usize,
    now_ms: u64,
    out_pick: *mut hab_pick,
) -> hab_result {
    // SAFETY: forwarded contract (no session id: not bound).
    unsafe {
        hab_attempt_pick_bound(
            z,
            a,
            key,
            key_len,
            core::ptr::null(),
            0,
            0,
            now_ms,
            out_pick,
        )
    }
}

pub(crate) fn pick_of(p: hab_core::Pick) -> hab_pick {
    hab_pick {
        peer: p.peer,
        flags: if p.backup { HAB_PICK_BACKUP } else { 0 }
            | if p.bound { HAB_PICK_BOUND } else { 0 },
    }
}

/// As `hab_attempt_pick`, for a request bound to a server (`ha_sticky`):
/// by its session id (`sid`, `sid_len` bytes: a cookie's or a route
/// variable's value) or, when `sid` is NULL, by the hash of one
/// (`sid_hash`, from a learnt session; 0 for none). While that server
/// can take the try (a draining one can) it gets it, with
/// `HAB_PICK_BOUND`; otherwise the policy picks as for an unbound request.
///
/// # Safety
///
/// As `hab_attempt_pick`; `sid` NULL or valid for `sid_len` bytes.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hab_attempt_pick_bound(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    key: *const u8,
    key_len: usize,
    sid: *const u8,
    sid_len: usize,
    sid_hash: u64,
    now_ms: u64,
    out_pick: *mut hab_pick,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || out_pick.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: `key` is NULL or valid for `key_len` bytes (contract).
        let key = match unsafe { bytes(key, key_len) } {
            Ok(k) => k,
            Err(rc) => return rc,
        };
        let binding = if sid.is_null() {
            if sid_hash == 0 {
                Binding::None
            } else {
                Binding::Hash(sid_hash)
            }
        } else {
            // SAFETY: `sid` is valid for `sid_len` bytes (contract).
            match unsafe { bytes(sid, sid_len) } {
                Ok(s) => Binding::Sid(s),
                Err(rc) => return rc,
            }
        };
        // SAFETY: valid handles (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(z, a) });
        let r = z.get_bound(&mut attempt, key, binding, now_ms).map(pick_of);
        finish(r, out_pick)
    })
}

/// A server's session id, as `hab_zone_sid` gives it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_sid {
    /// Its hash (what a learnt session keeps); 0 when the upstream binds
    /// no sessions.
    pub hash: u64,
    /// Bytes used in `data`.
    pub len: u32,
    /// Zero.
    pub reserved: u32,
    /// The id (not NUL-terminated).
    pub data: [u8; HAB_SID_MAX],
}

/// The session id of `peer`, the peer of a pick of the request `a` (whose
/// pin keeps the peer's slot from being given to another server), into
/// `out`.
///
/// # Safety
///
/// `z` a valid zone handle; `a` prepared by `hab_attempt_init` for `z`;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_sid(
    z: *const hab_zone,
    a: *mut hab_attempt,
    peer: u32,
    out: *mut hab_sid,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let zone = unsafe { zone_of(z.cast_mut()) };
        let i = peer as usize;
        if i >= zone.peers() {
            return HAB_INVALID_ARGUMENT;
        }
        let sid = zone.sid(i);
        let mut v = hab_sid {
            hash: 0,
            len: sid.len().min(HAB_SID_MAX) as u32,
            reserved: 0,
            data: [0; HAB_SID_MAX],
        };
        v.data[..v.len as usize].copy_from_slice(&sid[..v.len as usize]);
        if v.len != 0 {
            v.hash = zone.colds()[i]
                .sid_hash
                .load(core::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out.write(v) };
        HAB_OK
    })
}

/// Ends the current try with a `HAB_OUTCOME_*` and what `info` (NULL:
/// nothing) says of it; `out_report.wake` names the queue's head to wake.
///
/// # Safety
///
/// As `hab_attempt_pick`; `info` is NULL or readable; `out_report` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_release(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    outcome: u32,
    info: *const hab_try,
    now_ms: u64,
    out_report: *mut hab_report,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() {
            return HAB_NULL_PARAMETER;
        }
        let outcome = match outcome {
            HAB_OUTCOME_OK => Outcome::Ok,
            HAB_OUTCOME_FAILED => Outcome::Failed,
            HAB_OUTCOME_NEXT => Outcome::Next,
            _ => return HAB_INVALID_ARGUMENT,
        };
        let info = if info.is_null() {
            TryInfo::NONE
        } else {
            // SAFETY: non-NULL and readable (caller contract).
            unsafe { &*info }.info()
        };
        // SAFETY: valid handles (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(z, a) });
        match z.free_with(&mut attempt, outcome, &info, now_ms) {
            Ok(r) => {
                if !out_report.is_null() {
                    let mut flags = match r.transition {
                        Transition::None => 0,
                        Transition::Disabled => HAB_REPORT_DISABLED,
                        Transition::Recovered => HAB_REPORT_RECOVERED,
                    };
                    if r.last_try {
                        flags |= HAB_REPORT_LAST_TRY;
                    }
                    let (mut eject_reason, mut eject_count, mut eject_ms) = (0, 0, 0);
                    if let Some(e) = r.ejection {
                        flags |= HAB_REPORT_EJECTED;
                        eject_reason = match e.reason {
                            Reason::Consecutive5xx => HAB_EJECT_5XX,
                            Reason::ConsecutiveErrors => HAB_EJECT_ERRORS,
                        };
                        eject_count = e.count;
                        eject_ms = e.ms;
                    }
                    // SAFETY: non-NULL, writable (caller contract).
                    unsafe {
                        out_report.write(hab_report {
                            flags,
                            peer: r.peer,
                            down_ms: r.down_ms,
                            eject_reason,
                            eject_count,
                            eject_ms,
                            panic: r.panic.into(),
                            wake: r.wake.into(),
                        })
                    };
                }
                HAB_OK
            }
            Err(e) => e.into(),
        }
    })
}

/// Ends the try in progress as if it had not been made: it leaves
/// flight, stays tried, and nothing is counted. The wake the release
/// produces is dropped: a caller with a queue uses
/// `hab_attempt_abandon_wake`.
///
/// # Safety
///
/// As `hab_attempt_pick`.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_abandon(z: *mut hab_zone, a: *mut hab_attempt) -> hab_result {
    let mut w = hab_wake::NONE;
    // SAFETY: forwarded contract; `w` is writable.
    unsafe { hab_attempt_abandon_wake(z, a, &mut w) }
}

/// As `hab_attempt_abandon`, and the wake the release produces into
/// `out_wake` (`HAB_NO_SLOT` in its slot when nobody is to be woken).
///
/// # Safety
///
/// As `hab_attempt_pick`; `out_wake` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_abandon_wake(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    out_wake: *mut hab_wake,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || out_wake.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(z, a) });
        finish(z.abandon(&mut attempt).map(|r| r.wake.into()), out_wake)
    })
}

/// The source of the generation the attempt runs on now.
///
/// # Safety
///
/// `z` a valid zone handle; `a` prepared by `hab_attempt_init` for `z`
/// and not used elsewhere during the call; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_source(
    z: *const hab_zone,
    a: *const hab_attempt,
    out: *mut crate::zone::hab_source,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: as above; only read here (the words are borrowed
        // mutably because that is the attempt's one view).
        let attempt = Attempt::from_words(unsafe { attempt_words(z, a.cast_mut()) });
        finish(z.attempt_source(&attempt).map(Into::into), out)
    })
}

/// Ends the request: drops its hold on its generation. Idempotent. The
/// wake a try still in progress produces is dropped: a caller with a
/// queue uses `hab_attempt_end_wake`.
///
/// # Safety
///
/// As `hab_attempt_pick`.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_end(z: *mut hab_zone, a: *mut hab_attempt) -> hab_result {
    let mut w = hab_wake::NONE;
    // SAFETY: forwarded contract; `w` is writable.
    unsafe { hab_attempt_end_wake(z, a, &mut w) }
}

/// As `hab_attempt_end`, and the wake that releasing a try still in
/// progress produces into `out_wake` (`HAB_NO_SLOT` in its slot: none).
///
/// # Safety
///
/// As `hab_attempt_pick`; `out_wake` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_end_wake(
    z: *mut hab_zone,
    a: *mut hab_attempt,
    out_wake: *mut hab_wake,
) -> hab_result {
    guard(|| {
        if z.is_null() || a.is_null() || out_wake.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(z, a) });
        let w = z.end(&mut attempt).into();
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { out_wake.write(w) };
        HAB_OK
    })
}
