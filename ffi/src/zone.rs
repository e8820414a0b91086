//! A zone: one upstream's state and generations in shared memory

use core::ffi::c_void;
use core::sync::atomic::Ordering::Relaxed;

use hab_core::table::Zone;
use hab_core::Error;

use crate::conf::{hab_upstream_conf, with_spec};
use crate::{finish, guard, guard_or, hab_result, hab_zone};
use crate::{HAB_BAD_LAYOUT, HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK};

/// No ledger slot.
pub const HAB_NO_SLOT: u32 = u32::MAX;

/// The zone behind a handle.
///
/// # Safety
///
/// `zone` is non-NULL and came from `hab_zone_init`/`hab_zone_attach`,
/// its memory still mapped.
#[inline]
pub(crate) unsafe fn zone<'a>(zone: *const hab_zone) -> Zone<'a> {
    // SAFETY: forwarded contract.
    unsafe { Zone::from_ptr(zone.cast_mut().cast()) }
}

/// Runs `open` (`Zone::init` or `Zone::attach` on the region at `mem`) on
/// the spec read from `conf`, writing the handle on success.
///
/// # Safety
///
/// As the two exports below.
unsafe fn open_zone(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    out_zone: *mut *mut hab_zone,
    open: impl FnOnce(&hab_core::UpstreamSpec<'_>) -> Result<Zone<'static>, Error>,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out_zone.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract (conf valid for the call).
        unsafe {
            with_spec(conf, |spec| {
                finish(open(spec).map(|z| z.as_ptr().cast()), out_zone)
            })
        }
    })
}

/// Builds a fresh zone in `mem`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for reads and writes of `len`
/// bytes, not used by anyone else during the call and mapped as long as
/// the handle is used; `out_zone` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_init(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_zone: *mut *mut hab_zone,
) -> hab_result {
    // SAFETY: caller contract: `mem` is ours for `len` bytes; the handle is
    // used only while the mapping lives (what `'static` stands for here).
    unsafe {
        open_zone(conf, mem, out_zone, |spec| {
            Zone::init(spec, mem.cast(), len)
        })
    }
}

/// Adopts the zone in `mem` if built for an equal `conf`.
///
/// # Safety
///
/// `conf` as in the header; `mem` valid for reads and writes of `len`
/// bytes while the handle is used; `out_zone` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_attach(
    conf: *const hab_upstream_conf,
    mem: *mut c_void,
    len: usize,
    out_zone: *mut *mut hab_zone,
) -> hab_result {
    // SAFETY: caller contract, as for `hab_zone_init`.
    unsafe {
        open_zone(conf, mem, out_zone, |spec| {
            Zone::attach(spec, mem.cast(), len)
        })
    }
}

/// Carries the state of matching peers from `old` into the fresh `z`;
/// servers new at `now_ms` slow-start.
///
/// # Safety
///
/// `z` and `old` valid zone handles (`old` may be another upstream
/// configuration's, still mapped); `out_carried` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_carry(
    z: *mut hab_zone,
    old: *const hab_zone,
    now_ms: u64,
    out_carried: *mut u32,
) -> hab_result {
    guard(|| {
        if z.is_null() || old.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (caller contract).
        let (z, old) = unsafe { (zone(z), zone(old)) };
        let r = old.root();
        if r.magic != hab_core::table::MAGIC || r.version != hab_core::table::LAYOUT_VERSION {
            return HAB_BAD_LAYOUT;
        }
        let n = z.carry_from(old, now_ms) as u32;
        if !out_carried.is_null() {
            // SAFETY: non-NULL, writable (caller contract).
            unsafe { out_carried.write(n) };
        }
        HAB_OK
    })
}

/// Number of peers in the zone (0 for NULL).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_peers(z: *const hab_zone) -> u32 {
    guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract).
        unsafe { zone(z) }.peers() as u32
    })
}

/// Number of the generation serving (0 for NULL).
///
/// # Safety
///
/// `z` is NULL or a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_generation(z: *const hab_zone) -> u64 {
    guard_or(0, || {
        if z.is_null() {
            return 0;
        }
        // SAFETY: valid handle (caller contract).
        unsafe { zone(z) }.generation()
    })
}

/// In-flight count of one peer.
///
/// # Safety
///
/// `z` a valid zone handle; `out_count` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_in_flight(
    z: *const hab_zone,
    peer: u32,
    out_count: *mut u32,
) -> hab_result {
    guard(|| {
        if z.is_null() || out_count.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone(z) };
        let r = z
            .states()
            .get(peer as usize)
            .map(|s| s.in_flight.load(Relaxed))
            .ok_or(Error::InvalidArgument);
        finish(r, out_count)
    })
}

/// Whether a process is alive, asked of the caller.
pub type hab_alive_fn =
    Option<unsafe extern "C" fn(owner: u64, data: *mut c_void) -> core::ffi::c_int>;

/// `alive` as a Rust closure.
///
/// # Safety
///
/// `alive` must be safe to call with `data` for as long as the closure is.
pub(crate) unsafe fn alive_fn(
    alive: unsafe extern "C" fn(u64, *mut c_void) -> core::ffi::c_int,
    data: *mut c_void,
) -> impl Fn(u64) -> bool {
    // SAFETY: forwarded contract.
    move |o| unsafe { alive(o, data) } != 0
}

/// Claims a ledger slot for `owner`, reconciling dead owners' slots.
///
/// # Safety
///
/// `z` a valid zone handle; `alive` a function safe to call with `data`;
/// `out_slot` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_claim_slot(
    z: *mut hab_zone,
    owner: u64,
    alive: hab_alive_fn,
    data: *mut c_void,
    out_slot: *mut u32,
) -> hab_result {
    guard(|| {
        let Some(alive) = alive else {
            return HAB_NULL_PARAMETER;
        };
        if z.is_null() || out_slot.is_null() {
            return HAB_NULL_PARAMETER;
        }
        if owner == 0 || owner >= u64::MAX - 1 {
            return HAB_INVALID_ARGUMENT;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone(z) };
        // SAFETY: the caller vouches for `alive` with `data`.
        let slot = z.claim_slot(owner, unsafe { alive_fn(alive, data) });
        finish(slot.ok_or(Error::Busy), out_slot)
    })
}

/// Gives back a ledger slot.
///
/// # Safety
///
/// `z` a valid zone handle.
#[no_mangle]
pub unsafe extern "C" fn hab_zone_release_slot(
    z: *mut hab_zone,
    slot: u32,
    owner: u64,
) -> hab_result {
    guard(|| {
        if z.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (caller contract).
        let z = unsafe { zone(z) };
        if slot as usize >= hab_core::table::ledger::LEDGER_SLOTS {
            return HAB_INVALID_ARGUMENT;
        }
        z.release_slot(slot, owner);
        HAB_OK
    })
}
