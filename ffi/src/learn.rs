//! Learnt sessions: the table of `ha_sticky learn`, in its own zone

use core::marker::{PhantomData, PhantomPinned};

use hab_core::learn::{self, Sessions};

use crate::buf::buf;
use crate::{bytes, guard, guard_or, hab_buf, hab_result};
use crate::{HAB_BAD_STATE, HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK};

/// Opaque: a learn table inside caller-owned (shared) memory.
#[repr(C)]
#[derive(Debug)]
pub struct hab_learn {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// Longest `timeout=` of a learn table, ms (2^31).
pub const HAB_LEARN_TIMEOUT_MAX: u64 = learn::MAX_TIMEOUT_MS;

/// A learn table's counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_learn_stats {
    /// Sessions held (learnt, not expired).
    pub entries: u64,
    /// Sessions the table holds at most.
    pub capacity: u64,
    /// Sessions created.
    pub created: u64,
    /// Sessions evicted (oldest first) before they expired.
    pub evicted: u64,
    /// Sessions removed after they expired.
    pub expired: u64,
}

/// The table behind a handle.
///
/// # Safety
///
/// `t` must come from `hab_learn_init` or `hab_learn_attach`, its memory
/// still mapped.
unsafe fn table_of<'a>(t: *const hab_learn) -> Sessions<'a> {
    // SAFETY: forwarded contract: a validated table's base.
    unsafe { Sessions::from_ptr(t.cast_mut().cast()) }
}

/// Sessions a table in `bytes` bytes holds; 0 when too small.
#[no_mangle]
pub extern "C" fn hab_learn_capacity(bytes: usize) -> usize {
    guard_or(0, || learn::capacity_for(bytes).unwrap_or(0))
}

/// Bytes a table of `capacity` sessions (a `hab_learn_capacity` result)
/// takes; 0 for an invalid capacity.
#[no_mangle]
pub extern "C" fn hab_learn_size(capacity: usize) -> usize {
    guard_or(0, || learn::size_for(capacity).unwrap_or(0))
}

/// Builds an empty table in `len` bytes at `mem` (64-byte aligned), whose
/// sessions expire `timeout_ms` after they were last learnt.
///
/// # Safety
///
/// `mem` valid for reads and writes of `len` bytes while the handle is
/// used, and nobody else using them during the call; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_init(
    mem: *mut core::ffi::c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut hab_learn,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let t = unsafe { Sessions::init(mem.cast(), len, timeout_ms) };
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { hand_out(t, out) }
    })
}

/// Writes the handle of `t` to `out`, or gives its error.
///
/// # Safety
///
/// `out` non-NULL and writable.
unsafe fn hand_out(
    t: Result<Sessions<'_>, hab_core::Error>,
    out: *mut *mut hab_learn,
) -> hab_result {
    match t {
        Ok(t) => {
            // SAFETY: forwarded contract.
            unsafe { out.write(t.as_ptr().cast()) };
            HAB_OK
        }
        Err(e) => e.into(),
    }
}

/// Adopts the table already in `mem` (a reload that keeps the zone),
/// with `timeout_ms` from now on.
///
/// # Safety
///
/// As `hab_learn_init`, others may use the table concurrently.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_attach(
    mem: *mut core::ffi::c_void,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut hab_learn,
) -> hab_result {
    guard(|| {
        if mem.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let t =
            unsafe { Sessions::attach(mem.cast(), len) }.and_then(|t| t.with_timeout(timeout_ms));
        // SAFETY: checked non-NULL; writable (contract).
        unsafe { hand_out(t, out) }
    })
}

/// The server (its session id's hash, `hab_sid.hash`) session `id` was
/// learnt for, 0 when none (unknown, expired, NULL arguments).
///
/// # Safety
///
/// `t` a valid handle or NULL; `id` NULL or valid for `id_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_lookup(
    t: *const hab_learn,
    id: *const u8,
    id_len: usize,
    now_ms: u64,
) -> u64 {
    guard_or(0, || {
        if t.is_null() {
            return 0;
        }
        // SAFETY: caller contract.
        let Ok(id) = (unsafe { bytes(id, id_len) }) else {
            return 0;
        };
        if id.is_empty() {
            return 0;
        }
        // SAFETY: valid handle (contract).
        let table = unsafe { table_of(t) };
        table.lookup(learn::fingerprint(id), now_ms).unwrap_or(0)
    })
}

/// Learns that session `id` is held by the server whose session id hashes
/// to `sid_hash` (1: a new session the response created; 0: a session the
/// request named, refreshed or moved, never created).
///
/// # Safety
///
/// As `hab_learn_lookup`.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_learn(
    t: *mut hab_learn,
    id: *const u8,
    id_len: usize,
    sid_hash: u64,
    now_ms: u64,
    create: u32,
) -> hab_result {
    guard(|| {
        if t.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let id = match unsafe { bytes(id, id_len) } {
            Ok(id) if !id.is_empty() && sid_hash != 0 && create <= 1 => id,
            Ok(_) => return HAB_INVALID_ARGUMENT,
            Err(rc) => return rc,
        };
        // SAFETY: valid handle (contract).
        let table = unsafe { table_of(t) };
        let _ = table.learn(learn::fingerprint(id), sid_hash, now_ms, create == 1);
        HAB_OK
    })
}

/// Copies the live sessions of `from` (an old cycle's table) into `to`;
/// how many in `out_carried` (may be NULL).
///
/// # Safety
///
/// Both valid handles; `out_carried` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_carry(
    to: *mut hab_learn,
    from: *const hab_learn,
    now_ms: u64,
    out_carried: *mut u64,
) -> hab_result {
    guard(|| {
        if to.is_null() || from.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handles (contract).
        let (to, from) = unsafe { (table_of(to), table_of(from)) };
        let mut n = 0u64;
        from.for_each_live(now_ms, |fp, sid, last| {
            let _ = to.insert_raw(fp, sid, last);
            n += 1;
        });
        if !out_carried.is_null() {
            // SAFETY: non-NULL, writable (contract).
            unsafe { out_carried.write(n) };
        }
        HAB_OK
    })
}

/// The table's counters at `now_ms` (`entries` costs a pass over the
/// table: for the API and metrics, not per request).
///
/// # Safety
///
/// `t` a valid handle; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_learn_stats_get(
    t: *const hab_learn,
    now_ms: u64,
    out: *mut hab_learn_stats,
) -> hab_result {
    guard(|| {
        if t.is_null() || out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid handle (contract).
        let s = unsafe { table_of(t) }.stats(now_ms);
        // SAFETY: checked non-NULL; writable (contract).
        unsafe {
            out.write(hab_learn_stats {
                entries: s.entries,
                capacity: s.capacity,
                created: s.created,
                evicted: s.evicted,
                expired: s.expired,
            })
        };
        HAB_OK
    })
}

/// A learn zone, for the sessions file.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_learn_zone {
    /// The zone's name (not NUL-terminated).
    pub name: *const u8,
    /// Length of `name`.
    pub name_len: usize,
    /// Its table.
    pub table: *const hab_learn,
}

/// The path of the sessions file beside state file `state_file`.
///
/// # Safety
///
/// `state_file` valid for `len` bytes.
unsafe fn sessions_path(state_file: *const u8, len: usize) -> Option<std::path::PathBuf> {
    // SAFETY: caller contract.
    let p = unsafe { bytes(state_file, len) }.ok()?;
    let p = core::str::from_utf8(p).ok().filter(|p| !p.is_empty())?;
    Some(hab_api::sessions::path_for(std::path::Path::new(p)))
}

/// Writes the live sessions of `zones` to the sessions file beside state
/// file `state_file` (`STATE_FILE.sessions`); how many in `*out_saved`
/// (may be NULL). On failure `HAB_BAD_STATE`, why in `*out_error` (when
/// not NULL; free it).
///
/// # Safety
///
/// `state_file` valid for `len` bytes; `zones` NULL or `n` valid entries;
/// outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_sessions_save(
    state_file: *const u8,
    len: usize,
    zones: *const hab_learn_zone,
    n: usize,
    now_ms: u64,
    out_saved: *mut u64,
    out_error: *mut *mut hab_buf,
) -> hab_result {
    guard(|| {
        // SAFETY: caller contract.
        let Some(path) = (unsafe { sessions_path(state_file, len) }) else {
            return HAB_INVALID_ARGUMENT;
        };
        let list: &[hab_learn_zone] = if n == 0 {
            &[]
        } else if zones.is_null() {
            return HAB_NULL_PARAMETER;
        } else {
            // SAFETY: `n` valid entries (caller contract).
            unsafe { core::slice::from_raw_parts(zones, n) }
        };
        let mut tables = Vec::with_capacity(list.len());
        for z in list {
            // SAFETY: valid name bytes (caller contract).
            let name = match unsafe { bytes(z.name, z.name_len) } {
                Ok(b) => String::from_utf8_lossy(b).into_owned(),
                Err(rc) => return rc,
            };
            if z.table.is_null() {
                return HAB_NULL_PARAMETER;
            }
            // SAFETY: a valid handle (caller contract).
            tables.push((name, unsafe { table_of(z.table) }));
        }
        let named: Vec<(&str, Sessions<'_>)> =
            tables.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        match hab_api::sessions::save(&path, &named, now_ms) {
            Ok(saved) => {
                if !out_saved.is_null() {
                    // SAFETY: non-NULL, writable (contract).
                    unsafe { out_saved.write(saved as u64) };
                }
                HAB_OK
            }
            Err(e) => {
                if !out_error.is_null() {
                    let msg = format!("\"{}\": {e}", path.display());
                    // SAFETY: writable (contract).
                    unsafe { out_error.write(buf(msg.into_bytes().into())) };
                }
                HAB_BAD_STATE
            }
        }
    })
}

/// Puts the sessions the sessions file beside state file `state_file`
/// holds for zone `name` into `table` (fresh, at configuration time);
/// how many in `*out_restored` (may be NULL; 0 when the file does not
/// exist). An unreadable or damaged file: `HAB_BAD_STATE`, why in
/// `*out_error` (when not NULL; free it).
///
/// # Safety
///
/// `state_file` valid for `len` bytes, `name` for `name_len`; `table` a
/// valid handle; outputs NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hab_sessions_restore(
    state_file: *const u8,
    len: usize,
    name: *const u8,
    name_len: usize,
    table: *mut hab_learn,
    now_ms: u64,
    out_restored: *mut u64,
    out_error: *mut *mut hab_buf,
) -> hab_result {
    guard(|| {
        if table.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let Some(path) = (unsafe { sessions_path(state_file, len) }) else {
            return HAB_INVALID_ARGUMENT;
        };
        // SAFETY: caller contract.
        let name = match unsafe { bytes(name, name_len) } {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(rc) => return rc,
        };
        let zones = match hab_api::sessions::load(&path) {
            Ok(z) => z.unwrap_or_default(),
            Err(e) => {
                if !out_error.is_null() {
                    let msg = format!("\"{}\" ignored: {e}", path.display());
                    // SAFETY: writable (contract).
                    unsafe { out_error.write(buf(msg.into_bytes().into())) };
                }
                return HAB_BAD_STATE;
            }
        };
        // SAFETY: a valid handle (contract).
        let n = hab_api::sessions::restore(&zones, &name, unsafe { table_of(table) }, now_ms);
        if !out_restored.is_null() {
            // SAFETY: non-NULL, writable (contract).
            unsafe { out_restored.write(n as u64) };
        }
        HAB_OK
    })
}
