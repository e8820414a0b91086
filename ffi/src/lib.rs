//! C ABI of ha-balancer: the only crate with `extern "C"`.
//!
//! A thin translation layer over `hab-core` and `hab-api`, mirrored by the
//! checked-in header `ffi/include/ha_balancer.h` (the root package's tests
//! fail when the two drift apart: layouts, constants and every function's
//! signature). Conventions, after rustls-ffi:
//!
//! - every function returns a [`hab_result`] (or a plain value where it
//!   cannot fail), checks every pointer, and writes out-parameters only on
//!   [`hab_result::HAB_OK`];
//! - every export runs inside one panic boundary (`guard`, or
//!   `guard_or` for the few that return a plain value): a panic becomes
//!   [`hab_result::HAB_PANIC`] (or the stated default), never unwinds into
//!   C. This relies on `panic = "unwind"` in every profile the module is
//!   built with;
//! - zones and attempts are opaque handles into caller-owned memory; the
//!   per-request path never allocates. Buffers the API returns are owned
//!   by Rust and given back with `hab_buf_free`.
//!
//! One file per object: [`conf`] (what C describes), [`zone`] (a zone in
//! shared memory), [`attempt`] (one request), [`health`] (checks and the
//! health timer), [`api`] (the operator API and the state file), [`buf`]
//! (bytes handed to C), [`queue`] (requests waiting for a server); here,
//! what they all use (results, the panic boundary, the zone handle, the
//! liveness callback).
//!
//! Non-camel-case type names match the C header on purpose.

#![allow(non_camel_case_types)]

pub mod api;
pub mod attempt;
pub mod buf;
pub mod conf;
pub mod health;
pub mod learn;
pub mod queue;
pub mod zone;

use core::ffi::{c_char, c_void};
use core::marker::{PhantomData, PhantomPinned};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hab_core::layout::Zone;
use hab_core::Error;

pub use api::*;
pub use attempt::*;
pub use buf::*;
pub use conf::*;
pub use health::*;
pub use learn::*;
pub use queue::*;
pub use zone::*;

/// Result codes; explicit and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hab_result {
    /// Success.
    HAB_OK = 7000,
    /// No eligible peer, or another builder holds the lease.
    HAB_BUSY = 7001,
    /// A required pointer was NULL.
    HAB_NULL_PARAMETER = 7002,
    /// The core panicked (a bug); the panic was caught.
    HAB_PANIC = 7003,
    /// An argument is out of range.
    HAB_INVALID_ARGUMENT = 7004,
    /// The memory region is too small or misaligned, or a new generation
    /// does not fit in the zone.
    HAB_NO_SPACE = 7005,
    /// The region holds no matching zone.
    HAB_BAD_LAYOUT = 7006,
    /// Unknown policy number.
    HAB_UNKNOWN_POLICY = 7007,
    /// Too many peers or total weight too large.
    HAB_TOO_LARGE = 7008,
    /// The state file cannot be read or is corrupt.
    HAB_BAD_STATE = 7009,
    /// The request queue is full (`ha_queue number` waiters): a 502.
    HAB_QUEUE_FULL = 7010,
}

pub use hab_result::*;

impl From<Error> for hab_result {
    fn from(e: Error) -> hab_result {
        match e {
            Error::Busy => HAB_BUSY,
            Error::InvalidArgument => HAB_INVALID_ARGUMENT,
            Error::NoSpace => HAB_NO_SPACE,
            Error::BadLayout => HAB_BAD_LAYOUT,
            Error::UnknownPolicy => HAB_UNKNOWN_POLICY,
            Error::TooLarge => HAB_TOO_LARGE,
            Error::Pinned => HAB_BUSY,
        }
    }
}

/// Opaque: an upstream's zone in caller-owned shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct hab_zone {
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
pub(crate) fn guard(f: impl FnOnce() -> hab_result) -> hab_result {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(HAB_PANIC)
}

/// Runs `f` inside the panic boundary; `default` if it panicked.
#[inline]
pub(crate) fn guard_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// Converts a result of the core, writing `value` through `out` on success.
#[inline]
pub(crate) fn finish<T>(r: Result<T, Error>, out: *mut T) -> hab_result {
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

/// A byte string from C: empty when `len` is 0, an error when NULL.
///
/// # Safety
///
/// `ptr` is NULL or valid for `len` bytes for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], hab_result> {
    if len == 0 {
        Ok(&[])
    } else if ptr.is_null() {
        Err(HAB_NULL_PARAMETER)
    } else {
        // SAFETY: forwarded contract.
        Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
    }
}

/// A static, NUL-terminated description of a result code.
#[no_mangle]
pub extern "C" fn hab_result_str(rc: hab_result_code) -> *const c_char {
    guard_or(c"internal error".as_ptr(), || {
        let s: &'static core::ffi::CStr = match rc {
            7000 => c"ok",
            7001 => c"no eligible peer, or busy",
            7002 => c"a required pointer argument was NULL",
            7003 => c"internal error: a panic was caught",
            7004 => c"invalid argument",
            7005 => c"not enough shared memory",
            7006 => c"memory region holds no matching table",
            7007 => c"unknown balancing policy",
            7008 => c"too many peers or total weight too large",
            7009 => c"bad state file",
            7010 => c"the request queue is full",
            _ => c"unknown result code",
        };
        s.as_ptr()
    })
}

/// A result code as C passes it: the header's `hab_result` is an enum of
/// `unsigned int` width, taken as an integer so that an out-of-range value
/// from C is not undefined behaviour here.
pub type hab_result_code = core::ffi::c_uint;

/// Layout version of zones this library builds.
#[no_mangle]
pub extern "C" fn hab_layout_version() -> u32 {
    hab_core::layout::LAYOUT_VERSION
}

/// No ledger slot.
pub const HAB_NO_SLOT: u32 = u32::MAX;

/// The zone behind a handle.
///
/// # Safety
///
/// `zone` is non-NULL and came from `hab_zone_init`/`hab_zone_attach`,
/// its memory still mapped.
#[inline]
pub(crate) unsafe fn zone_of<'a>(zone: *const hab_zone) -> Zone<'a> {
    // SAFETY: forwarded contract.
    unsafe { Zone::from_ptr(zone.cast_mut().cast()) }
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
