//! tests

/// The C program of `tests/c/abi_driver.c`, compiled by `build.rs`.
pub mod abi_driver {
    extern "C" {
        /// Runs every check; 0 on success, else the line of the first
        /// failed check.
        pub fn hab_abi_driver_run() -> core::ffi::c_int;
    }
}
