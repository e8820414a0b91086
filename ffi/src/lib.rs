//! C ABI of ha-balancer: the only crate with `extern "C"`.
//!
//! A thin translation layer over `hab-core`, mirrored by the checked-in
//! header `ffi/include/ha_balancer.h` (the root package's tests fail when
//! the two drift apart). Conventions, after rustls-ffi:
//!
//! - every function returns a [`hab_result`] (or a plain value where it
//!   cannot fail), checks every pointer, and writes out-parameters only on
//!   [`hab_result::HAB_OK`];
//! - every export runs inside one panic boundary ([`guard`]): a panic
//!   becomes [`hab_result::HAB_PANIC`], never unwinds into C;
//! - tables and attempts are opaque handles into caller-owned memory; the
//!   per-request path never allocates.
//!
//! Non-camel-case type names match the C header on purpose.

#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};
use core::marker::{PhantomData, PhantomPinned};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hab_core::attempt::{self, Attempt};
use hab_core::table::{self, Table, LAYOUT_VERSION};
use hab_core::{Error, Outcome, PeerSpec, Policy, UpstreamSpec};

/// Result codes; explicit and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hab_result {
    /// Success.
    HAB_OK = 7000,
    /// No eligible peer.
    HAB_BUSY = 7001,
    /// A required pointer was NULL.
    HAB_NULL_PARAMETER = 7002,
    /// The core panicked (a bug); the panic was caught.
    HAB_PANIC = 7003,
    /// An argument is out of range.
    HAB_INVALID_ARGUMENT = 7004,
    /// The memory region is too small or misaligned.
    HAB_NO_SPACE = 7005,
    /// The region holds no matching table.
    HAB_BAD_LAYOUT = 7006,
    /// Unknown policy number.
    HAB_UNKNOWN_POLICY = 7007,
    /// Too many peers or total weight too large.
    HAB_TOO_LARGE = 7008,
}

use hab_result::*;

impl From<Error> for hab_result {
    fn from(e: Error) -> hab_result {
        match e {
            Error::Busy => HAB_BUSY,
            Error::InvalidArgument => HAB_INVALID_ARGUMENT,
            Error::NoSpace => HAB_NO_SPACE,
            Error::BadLayout => HAB_BAD_LAYOUT,
            Error::UnknownPolicy => HAB_UNKNOWN_POLICY,
            Error::TooLarge => HAB_TOO_LARGE,
        }
    }
}

/// `hab_policy`: round robin.
pub const HAB_POLICY_ROUND_ROBIN: u32 = 1;
/// `hab_policy`: least connections.
pub const HAB_POLICY_LEAST_CONN: u32 = 2;
/// `hab_policy`: power of two choices.
pub const HAB_POLICY_P2C: u32 = 3;
/// `hab_policy`: peak-EWMA.
pub const HAB_POLICY_EWMA: u32 = 4;
/// `hab_policy`: weighted random.
pub const HAB_POLICY_RANDOM: u32 = 5;
/// `hab_policy`: key hashing.
pub const HAB_POLICY_HASH: u32 = 6;
/// `hab_hash_mode`: nginx's plain hash.
pub const HAB_HASH_PLAIN: u32 = 0;
/// `hab_hash_mode`: nginx's consistent hash (ketama).
pub const HAB_HASH_CONSISTENT: u32 = 1;
/// `hab_hash_mode`: Maglev.
pub const HAB_HASH_MAGLEV: u32 = 2;

/// `hab_peer_conf.flags`: backup server.
pub const HAB_PEER_BACKUP: u32 = 0x0001;
/// `hab_peer_conf.flags`: marked down.
pub const HAB_PEER_DOWN: u32 = 0x0002;
/// `hab_pick.flags`: the peer is a backup.
pub const HAB_PICK_BACKUP: u32 = 0x0001;
/// `hab_free` outcome: accepted.
pub const HAB_OUTCOME_OK: u32 = 0;
/// `hab_free` outcome: failed, counts toward max_fails.
pub const HAB_OUTCOME_FAILED: u32 = 1;
/// `hab_free` outcome: passed on without blame.
pub const HAB_OUTCOME_NEXT: u32 = 2;
/// `hab_report.flags`: this failure disabled the peer.
pub const HAB_REPORT_DISABLED: u32 = 0x0001;
/// `hab_report.flags`: this success re-enabled the peer.
pub const HAB_REPORT_RECOVERED: u32 = 0x0002;
/// No ledger slot.
pub const HAB_NO_SLOT: u32 = u32::MAX;
/// `hab_report.flags`: single peer, do not retry.
pub const HAB_REPORT_LAST_TRY: u32 = 0x0004;

/// One server line.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_peer_conf {
    /// Identity bytes (may be NULL when `id_len` is 0).
    pub id: *const u8,
    /// Length of `id`.
    pub id_len: usize,
    /// The server directive's address (may be NULL when `server_len` is 0).
    pub server: *const u8,
    /// Length of `server`.
    pub server_len: usize,
    /// `weight=`, at least 1.
    pub weight: u32,
    /// `max_conns=`, 0 for unlimited.
    pub max_conns: u32,
    /// `max_fails=`, 0 for never.
    pub max_fails: u32,
    /// `HAB_PEER_*`.
    pub flags: u32,
    /// `fail_timeout=` in ms.
    pub fail_timeout_ms: u64,
}

/// An upstream block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_upstream_conf {
    /// `hab_policy`.
    pub policy: u32,
    /// `hab_hash_mode`, for `HAB_POLICY_HASH`.
    pub hash_mode: u32,
    /// `HAB_POLICY_EWMA` decay, ms; 0 for the default.
    pub decay_ms: u32,
    /// `HAB_POLICY_HASH` bounded load, percent; 0 for none.
    pub balance_factor: u32,
    /// `npeers` peers, primaries first.
    pub peers: *const hab_peer_conf,
    /// Number of peers.
    pub npeers: usize,
    /// `HAB_HASH_MAGLEV` table size (a prime); 0 for the default.
    pub maglev_size: u32,
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

/// What `hab_free` reports.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_report {
    /// `HAB_REPORT_*`.
    pub flags: u32,
    /// The peer of the finished try.
    pub peer: u32,
}

/// Opaque: a table in caller-owned shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct hab_table {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Opaque: per-request state in caller-owned memory.
#[repr(C)]
#[derive(Debug)]
pub struct hab_attempt {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Runs `f` inside the panic boundary.
#[inline]
fn guard(f: impl FnOnce() -> hab_result) -> hab_result {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(HAB_PANIC)
}

/// Converts a result of the core, writing `value` through `out` on success.
#[inline]
fn finish<T>(r: Result<T, Error>, out: *mut T) -> hab_result {
    match r {
        Ok(v) => {
            // SAFETY: every caller checked `out` for NULL; C guarantees it
            // points to a writable T.
            unsafe { out.write(v) };
            HAB_OK
        }
        Err(e) => e.into(),
    }
}

/// Reads a C configuration into peer specs (config time: allocation is fine).
///
/// # Safety
///
/// `conf` must be a valid pointer whose `peers` array has `npeers` valid
/// elements, each `id` valid for `id_len` bytes, for the call's duration.
unsafe fn read_conf<'a>(
    conf: *const hab_upstream_conf,
) -> Result<(Policy, Vec<PeerSpec<'a>>), hab_result> {
    // SAFETY: non-NULL checked by callers; valid per the function contract.
    let conf = unsafe { &*conf };
    let policy = Policy::from_parts(
        conf.policy,
        [
            conf.decay_ms,
            conf.hash_mode,
            conf.balance_factor,
            conf.maglev_size,
        ],
    )
    .map_err(hab_result::from)?;
    if conf.npeers == 0 {
        return Ok((policy, Vec::new()));
    }
    if conf.peers.is_null() {
        return Err(HAB_NULL_PARAMETER);
    }
    // SAFETY: `peers` holds `npeers` elements (function contract).
    let peers = unsafe { core::slice::from_raw_parts(conf.peers, conf.npeers) };
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        // SAFETY: `id` is valid for `id_len` bytes (function contract).
        let id = unsafe { bytes(p.id, p.id_len) }?;
        // SAFETY: `server` is valid for `server_len` bytes (contract).
        let server = unsafe { bytes(p.server, p.server_len) }?;
        if p.flags & !(HAB_PEER_BACKUP | HAB_PEER_DOWN) != 0 {
            return Err(HAB_INVALID_ARGUMENT);
        }
        out.push(PeerSpec {
            id,
            server,
            weight: p.weight,
            max_conns: p.max_conns,
            max_fails: p.max_fails,
            fail_timeout_ms: p.fail_timeout_ms,
            backup: p.flags & HAB_PEER_BACKUP != 0,
            down: p.flags & HAB_PEER_DOWN != 0,
        });
    }
    Ok((policy, out))
}

/// A byte string from C: empty when `len` is 0, an error when NULL.
///
/// # Safety
///
/// `ptr` is NULL or valid for `len` bytes for `'a`.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], hab_result> {
    if len == 0 {
        Ok(&[])
    } else if ptr.is_null() {
        Err(HAB_NULL_PARAMETER)
    } else {
        // SAFETY: forwarded contract.
        Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
    }
}

/// Runs `f` on the upstream spec read from `conf`.
///
/// # Safety
///
/// As [`read_conf`].
unsafe fn with_spec(
    conf: *const hab_upstream_conf,
    f: impl FnOnce(&UpstreamSpec<'_>) -> hab_result,
) -> hab_result {
    if conf.is_null() {
        return HAB_NULL_PARAMETER;
    }
    // SAFETY: forwarded contract.
    match unsafe { read_conf(conf) } {
        Ok((policy, peers)) => f(&UpstreamSpec {
            policy,
            peers: &peers,
        }),
        Err(rc) => rc,
    }
}

/// A static, NUL-terminated description of a result code.
#[no_mangle]
pub extern "C" fn hab_result_str(rc: u32) -> *const c_char {
    let s: &'static [u8] = match rc {
        7000 => b"ok\0",
        7001 => b"no eligible peer\0",
        7002 => b"a required pointer argument was NULL\0",
        7003 => b"internal error: a panic was caught\0",
        7004 => b"invalid argument\0",
        7005 => b"memory region too small or misaligned\0",
        7006 => b"memory region holds no matching table\0",
        7007 => b"unknown balancing policy\0",
        7008 => b"too many peers or total weight too large\0",
        _ => b"unknown result code\0",
    };
    s.as_ptr().cast()
}

/// Layout version of tables this library builds.
#[no_mangle]
pub extern "C" fn hab_layout_version() -> u32 {
    LAYOUT_VERSION
}

/// Bytes of shared memory a table for `conf` needs.
///
/// # Safety
///
/// `conf` as in the header; `out_size` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_size(
    conf: *const hab_upstream_conf,
    out_size: *mut usize,
) -> hab_result {
    guard(|| {
        if out_size.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        unsafe { with_spec(conf, |spec| finish(table::table_size(spec), out_size)) }
    })
}

/// Digest of `conf`: equal digests, adoptable table.
///
/// # Safety
///
/// `conf` as in the header; `out_digest` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_conf_digest(
    conf: *const hab_upstream_conf,
    out_digest: *mut u64,
) -> hab_result {
    guard(|| {
        if out_digest.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec| {
                spec.validate()
                    .map(|()| spec.digest())
                    .map_or_else(hab_result::from, |d| {
                        out_digest.write(d);
                        HAB_OK
                    })
            })
        }
    })
}

/// Builds a fresh table in `mem`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for writes of `len` bytes and not
/// used by anyone else during the call; `out_table` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_init(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_table: *mut *mut hab_table,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out_table.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: `mem` is valid for `len` bytes, exclusively ours now.
        let region = unsafe { core::slice::from_raw_parts_mut(mem.cast::<u8>(), len) };
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec| {
                finish(
                    Table::init(spec, region).map(|t| t.as_ptr().cast()),
                    out_table,
                )
            })
        }
    })
}

/// Adopts the table in `mem` if built for an equal `conf`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for reads of `len` bytes;
/// `out_table` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_attach(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_table: *mut *mut hab_table,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out_table.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: `mem` is valid for reads of `len` bytes.
        let region = unsafe { core::slice::from_raw_parts(mem.cast::<u8>(), len) };
        // SAFETY: caller contract.
        unsafe {
            with_spec(conf, |spec| {
                finish(
                    Table::attach(spec, region).map(|t| t.as_ptr().cast()),
                    out_table,
                )
            })
        }
    })
}

/// The table behind a handle.
///
/// # Safety
///
/// `table` is non-NULL and came from `hab_table_init`/`hab_table_attach`,
/// its memory still mapped.
#[inline]
unsafe fn table<'a>(table: *const hab_table) -> Table<'a> {
    // SAFETY: forwarded contract.
    unsafe { Table::from_ptr(table.cast_mut().cast()) }
}

/// Carries health of matching peers from `old` into `t`.
///
/// # Safety
///
/// `t` and `old` valid table handles (`old` may be another upstream
/// generation's, still mapped); `out_carried` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_inherit(
    t: *mut hab_table,
    old: *const hab_table,
    out_carried: *mut u32,
) -> hab_result {
    guard(|| {
        if t.is_null() || old.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (caller contract).
        let (t, old) = unsafe { (table(t), table(old)) };
        let h = old.header();
        if h.magic != table::MAGIC || h.version != LAYOUT_VERSION {
            return HAB_BAD_LAYOUT;
        }
        let n = t.inherit(old) as u32;
        if !out_carried.is_null() {
            // SAFETY: non-NULL, writable (caller contract).
            unsafe { out_carried.write(n) };
        }
        HAB_OK
    })
}

/// Number of peers in the table (0 for NULL).
///
/// # Safety
///
/// `t` is NULL or a valid table handle.
#[no_mangle]
pub unsafe extern "C" fn hab_table_peers(t: *const hab_table) -> u32 {
    if t.is_null() {
        return 0;
    }
    // SAFETY: valid handle (caller contract); reading the header cannot panic.
    unsafe { table(t) }.peers() as u32
}

/// In-flight count of one peer.
///
/// # Safety
///
/// `t` a valid table handle; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_in_flight(
    t: *const hab_table,
    peer: u32,
    out_count: *mut u32,
) -> hab_result {
    guard(|| {
        if t.is_null() || out_count.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let t = unsafe { table(t) };
        let r = t
            .states()
            .get(peer as usize)
            .map(|s| s.in_flight.load(core::sync::atomic::Ordering::Relaxed))
            .ok_or(Error::InvalidArgument);
        finish(r, out_count)
    })
}

/// Whether a process is alive, asked of the caller.
pub type hab_alive_fn =
    Option<unsafe extern "C" fn(owner: u64, data: *mut c_void) -> core::ffi::c_int>;

/// Claims a ledger slot for `owner`, reconciling dead owners' slots.
///
/// # Safety
///
/// `t` a valid table handle; `alive` a function safe to call with `data`;
/// `out_slot` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_table_claim_slot(
    t: *mut hab_table,
    owner: u64,
    alive: hab_alive_fn,
    data: *mut c_void,
    out_slot: *mut u32,
) -> hab_result {
    guard(|| {
        let Some(alive) = alive else {
            return HAB_NULL_PARAMETER;
        };
        if t.is_null() || out_slot.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if owner == 0 || owner == u64::MAX {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let t = unsafe { table(t) };
        // SAFETY: the caller vouches for `alive` with `data`.
        let slot = t.claim_slot(owner, |o| unsafe { alive(o, data) } != 0);
        finish(slot.ok_or(Error::Busy), out_slot)
    })
}

/// Gives back a ledger slot.
///
/// # Safety
///
/// `t` a valid table handle.
#[no_mangle]
pub unsafe extern "C" fn hab_table_release_slot(
    t: *mut hab_table,
    slot: u32,
    owner: u64,
) -> hab_result {
    guard(|| {
        if t.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let t = unsafe { table(t) };
        if slot as usize >= hab_core::table::ledger::LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        t.release_slot(slot, owner);
        HAB_OK
    })
}

/// Bytes of per-request state for this table (0 for NULL).
///
/// # Safety
///
/// `t` is NULL or a valid table handle.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_size(t: *const hab_table) -> usize {
    if t.is_null() {
        return 0;
    }
    // SAFETY: valid handle (caller contract); arithmetic only.
    attempt::words(unsafe { table(t) }) * 8
}

/// The attempt words behind a handle.
///
/// # Safety
///
/// `a` is non-NULL, 8-byte aligned and was prepared by `hab_attempt_init`
/// for table `t`, and nothing else accesses it during `'a`.
#[inline]
unsafe fn attempt_words<'a>(t: Table<'_>, a: *mut hab_attempt) -> &'a mut [u64] {
    // SAFETY: forwarded contract: `words(t)` words were set up at init.
    unsafe { core::slice::from_raw_parts_mut(a.cast::<u64>(), attempt::words(t)) }
}

/// Prepares per-request state in `mem`.
///
/// # Safety
///
/// `t` a valid table handle; `mem` valid for writes of `len` bytes;
/// `out_attempt` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_attempt_init(
    t: *const hab_table,
    mem: *mut c_void,
    len: usize,
    now_ms: u64,
    seed: u64,
    slot: u32,
    out_attempt: *mut *mut hab_attempt,
) -> hab_result {
    guard(|| {
        if t.is_null() || mem.is_null() || out_attempt.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let t = unsafe { table(t) };
        let words = attempt::words(t);
        if len < words * 8 || mem as usize % 8 != 0 {
            return HAB_NO_SPACE;
        }
        // SAFETY: aligned, long enough, writable (checked / contract).
        let w = unsafe { core::slice::from_raw_parts_mut(mem.cast::<u64>(), words) };
        let mut a = Attempt::init(w, now_ms);
        a.seed(seed);
        a.set_slot((slot != HAB_NO_SLOT).then_some(slot));
        // SAFETY: checked non-NULL above.
        unsafe { out_attempt.write(mem.cast()) };
        HAB_OK
    })
}

/// Picks a peer for the next try.
///
/// # Safety
///
/// `t` a valid table handle; `a` prepared by `hab_attempt_init` for `t`;
/// `out_pick` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_get(
    t: *mut hab_table,
    a: *mut hab_attempt,
    key: *const u8,
    key_len: usize,
    now_ms: u64,
    out_pick: *mut hab_pick,
) -> hab_result {
    guard(|| {
        if t.is_null() || a.is_null() || out_pick.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: `key` is NULL or valid for `key_len` bytes (contract).
        let key = match unsafe { bytes(key, key_len) } {
            Ok(k) => k,
            Err(rc) => return rc,
        };
        // SAFETY: valid handles (caller contract).
        let t = unsafe { table(t) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(t, a) });
        let r = t.get_keyed(&mut attempt, key, now_ms).map(|p| hab_pick {
            peer: p.peer,
            flags: if p.backup { HAB_PICK_BACKUP } else { 0 },
        });
        finish(r, out_pick)
    })
}

/// Ends the current try with a `HAB_OUTCOME_*`.
///
/// # Safety
///
/// As `hab_get`; `out_report` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_free(
    t: *mut hab_table,
    a: *mut hab_attempt,
    outcome: u32,
    now_ms: u64,
    out_report: *mut hab_report,
) -> hab_result {
    guard(|| {
        if t.is_null() || a.is_null() {
            return HAB_NULL_PARAMETER;
        }
        let outcome = match outcome {
            HAB_OUTCOME_OK => Outcome::Ok,
            HAB_OUTCOME_FAILED => Outcome::Failed,
            HAB_OUTCOME_NEXT => Outcome::Next,
            _ => return HAB_INVALID_ARGUMENT,
        };
        // SAFETY: valid handles (caller contract).
        let t = unsafe { table(t) };
        // SAFETY: as above.
        let mut attempt = Attempt::from_words(unsafe { attempt_words(t, a) });
        match t.free(&mut attempt, outcome, now_ms) {
            Ok(r) => {
                if !out_report.is_null() {
                    let mut flags = match r.transition {
                        hab_core::health::Transition::None => 0,
                        hab_core::health::Transition::Disabled => HAB_REPORT_DISABLED,
                        hab_core::health::Transition::Recovered => HAB_REPORT_RECOVERED,
                    };
                    if r.last_try {
                        flags |= HAB_REPORT_LAST_TRY;
                    }
                    // SAFETY: non-NULL, writable (caller contract).
                    unsafe {
                        out_report.write(hab_report {
                            flags,
                            peer: r.peer,
                        })
                    };
                }
                HAB_OK
            }
            Err(e) => e.into(),
        }
    })
}
