//! A buffer: bytes owned by Rust (an API answer, a log line, a reason),
//! in chunks, handed to C and given back with `hab_buf_free`.

use crate::guard_or;

/// Opaque: bytes owned by Rust, in chunks, given back with
/// `hab_buf_free`.
#[derive(Debug)]
pub struct hab_buf {
    body: hab_api::Body,
}

pub(crate) fn buf(body: hab_api::Body) -> *mut hab_buf {
    Box::into_raw(Box::new(hab_buf { body }))
}

/// The bytes of a buffer of at most one chunk, such as a log line (NULL
/// for NULL); for any body, `hab_buf_chunk`.
///
/// # Safety
///
/// `b` is NULL or a buffer not yet freed.
#[no_mangle]
pub unsafe extern "C" fn hab_buf_data(b: *const hab_buf) -> *const u8 {
    guard_or(core::ptr::null(), || {
        if b.is_null() {
            return core::ptr::null();
        }
        // SAFETY: a live buffer (caller contract).
        match unsafe { &*b }.body.chunks().first() {
            Some(c) => c.as_ptr(),
            None => core::ptr::NonNull::<u8>::dangling().as_ptr(),
        }
    })
}

/// Chunk `i` of a buffer: its length, and its bytes in `*out_data`; 0 past
/// the last chunk (chunks are never empty). The bytes stay valid until
/// `hab_buf_free`.
///
/// # Safety
///
/// `b` is NULL or a buffer not yet freed; `out_data` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_buf_chunk(
    b: *const hab_buf,
    i: usize,
    out_data: *mut *const u8,
) -> usize {
    guard_or(0, || {
        if b.is_null() || out_data.is_null() {
            return 0;
        }
        // SAFETY: a live buffer (caller contract).
        let Some(c) = unsafe { &*b }.body.chunks().get(i) else {
            return 0;
        };
        // SAFETY: writable (caller contract).
        unsafe { out_data.write(c.as_ptr()) };
        c.len()
    })
}

/// The length of a buffer (0 for NULL).
///
/// # Safety
///
/// `b` is NULL or a buffer not yet freed.
#[no_mangle]
pub unsafe extern "C" fn hab_buf_len(b: *const hab_buf) -> usize {
    guard_or(0, || {
        if b.is_null() {
            return 0;
        }
        // SAFETY: a live buffer (caller contract).
        unsafe { &*b }.body.len()
    })
}

/// Frees a buffer (NULL does nothing).
///
/// # Safety
///
/// `b` is NULL or a buffer not yet freed; it is invalid afterwards.
#[no_mangle]
pub unsafe extern "C" fn hab_buf_free(b: *mut hab_buf) {
    guard_or((), || {
        if !b.is_null() {
            // SAFETY: made by `Box::into_raw` in `buf`, freed once.
            drop(unsafe { Box::from_raw(b) });
        }
    })
}
