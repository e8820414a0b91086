//! The C ABI: the checked-in header against the Rust definitions, and a C
//! program driving the ABI as nginx-module/ does.

#[allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/hab_sys.rs"));
}

use core::mem::{align_of, offset_of, size_of};

use hab_ffi as rs;

macro_rules! same_layout {
    ($ty:ident { $($field:ident),* }) => {{
        assert_eq!(size_of::<sys::$ty>(), size_of::<rs::$ty>(), "size of {}", stringify!($ty));
        assert_eq!(align_of::<sys::$ty>(), align_of::<rs::$ty>(), "align of {}", stringify!($ty));
        $(
            assert_eq!(
                offset_of!(sys::$ty, $field),
                offset_of!(rs::$ty, $field),
                "offset of {}.{}", stringify!($ty), stringify!($field)
            );
        )*
    }};
}

#[test]
fn structs_match_the_header() {
    same_layout!(hab_peer_conf {
        id,
        id_len,
        server,
        server_len,
        weight,
        max_conns,
        max_fails,
        flags,
        fail_timeout_ms
    });
    same_layout!(hab_upstream_conf {
        policy,
        hash_mode,
        decay_ms,
        balance_factor,
        peers,
        npeers,
        maglev_size
    });
    same_layout!(hab_pick { peer, flags });
    same_layout!(hab_report { flags, peer });
}

#[test]
fn constants_match_the_header() {
    use rs::hab_result as R;
    use sys::hab_result as C;
    let pairs = [
        (C::HAB_OK as u32, R::HAB_OK as u32),
        (C::HAB_BUSY as u32, R::HAB_BUSY as u32),
        (C::HAB_NULL_PARAMETER as u32, R::HAB_NULL_PARAMETER as u32),
        (C::HAB_PANIC as u32, R::HAB_PANIC as u32),
        (
            C::HAB_INVALID_ARGUMENT as u32,
            R::HAB_INVALID_ARGUMENT as u32,
        ),
        (C::HAB_NO_SPACE as u32, R::HAB_NO_SPACE as u32),
        (C::HAB_BAD_LAYOUT as u32, R::HAB_BAD_LAYOUT as u32),
        (C::HAB_UNKNOWN_POLICY as u32, R::HAB_UNKNOWN_POLICY as u32),
        (C::HAB_TOO_LARGE as u32, R::HAB_TOO_LARGE as u32),
        (
            sys::hab_policy::HAB_POLICY_ROUND_ROBIN as u32,
            rs::HAB_POLICY_ROUND_ROBIN,
        ),
        (
            sys::hab_policy::HAB_POLICY_LEAST_CONN as u32,
            rs::HAB_POLICY_LEAST_CONN,
        ),
        (sys::hab_policy::HAB_POLICY_P2C as u32, rs::HAB_POLICY_P2C),
        (sys::hab_policy::HAB_POLICY_EWMA as u32, rs::HAB_POLICY_EWMA),
        (
            sys::hab_policy::HAB_POLICY_RANDOM as u32,
            rs::HAB_POLICY_RANDOM,
        ),
        (sys::hab_policy::HAB_POLICY_HASH as u32, rs::HAB_POLICY_HASH),
        (sys::hab_hash_mode_HAB_HASH_PLAIN, rs::HAB_HASH_PLAIN),
        (
            sys::hab_hash_mode_HAB_HASH_CONSISTENT,
            rs::HAB_HASH_CONSISTENT,
        ),
        (sys::hab_hash_mode_HAB_HASH_MAGLEV, rs::HAB_HASH_MAGLEV),
        (sys::HAB_NO_SLOT, rs::HAB_NO_SLOT),
        (sys::HAB_PEER_BACKUP, rs::HAB_PEER_BACKUP),
        (sys::HAB_PEER_DOWN, rs::HAB_PEER_DOWN),
        (sys::HAB_PICK_BACKUP, rs::HAB_PICK_BACKUP),
        (sys::HAB_OUTCOME_OK, rs::HAB_OUTCOME_OK),
        (sys::HAB_OUTCOME_FAILED, rs::HAB_OUTCOME_FAILED),
        (sys::HAB_OUTCOME_NEXT, rs::HAB_OUTCOME_NEXT),
        (sys::HAB_REPORT_DISABLED, rs::HAB_REPORT_DISABLED),
        (sys::HAB_REPORT_RECOVERED, rs::HAB_REPORT_RECOVERED),
        (sys::HAB_REPORT_LAST_TRY, rs::HAB_REPORT_LAST_TRY),
    ];
    for (i, (c, r)) in pairs.iter().enumerate() {
        assert_eq!(c, r, "constant #{i}");
    }
}

#[test]
fn every_result_code_has_a_message() {
    for code in 7000..=7008u32 {
        // SAFETY: hab_result_str returns a static NUL-terminated string.
        let s = unsafe { core::ffi::CStr::from_ptr(rs::hab_result_str(code)) };
        assert_ne!(s.to_str().unwrap(), "unknown result code", "code {code}");
    }
}

#[test]
fn c_program_drives_the_abi() {
    // The C side refers to the hab_* symbols of the hab-ffi rlib, which
    // this test links through `rs`.
    assert!(rs::hab_layout_version() >= 1);
    // SAFETY: a self-contained C function without arguments.
    let line = unsafe { ha_balancer::abi_driver::hab_abi_driver_run() };
    assert_eq!(line, 0, "tests/c/abi_driver.c: check at line {line} failed");
}
