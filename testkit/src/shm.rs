//! A shared anonymous mapping, as nginx's shared memory zones are made:
//! `MAP_SHARED | MAP_ANONYMOUS`, mapped before fork, so that forked
//! children (the tests' "workers") see the same bytes at the same address.

/// A shared anonymous mapping of `len` bytes (zeroed, page aligned),
/// unmapped on drop.
#[derive(Debug)]
pub struct Shared {
    /// Start of the mapping.
    pub ptr: *mut u8,
    /// Bytes mapped.
    pub len: usize,
}

impl Shared {
    /// Maps `len` bytes; panics if the system refuses.
    pub fn new(len: usize) -> Shared {
        // SAFETY: plain anonymous mapping request; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        Shared {
            ptr: ptr.cast(),
            len,
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
