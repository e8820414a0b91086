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
        fail_timeout_ms,
        position,
        reserved,
        sid,
        sid_len
    });
    same_layout!(hab_upstream_conf {
        policy,
        hash_mode,
        decay_ms,
        balance_factor,
        peers,
        npeers,
        maglev_size,
        schedule_room,
        health,
        capacity,
        sessions,
        api_max,
        buckets,
        nbuckets
    });
    same_layout!(hab_sid {
        hash,
        len,
        reserved,
        data
    });
    same_layout!(hab_source { list, config });
    same_layout!(hab_resolve_report {
        generation,
        source,
        built,
        refused,
        kept,
        revived,
        added,
        retired,
        reused,
        deferred
    });
    same_layout!(hab_slot_info { status, epoch });
    same_layout!(hab_slot_peer {
        status,
        epoch,
        flags,
        weight,
        max_conns,
        max_fails,
        fail_timeout_ms,
        server_len,
        address_len
    });
    same_layout!(hab_health_conf {
        flags,
        interval_ms,
        jitter_ms,
        timeout_ms,
        fails,
        passes,
        slow_start_ms,
        consecutive_5xx,
        consecutive_errors,
        base_ejection_ms,
        max_ejection_ms,
        max_ejection_percent,
        panic_percent,
        queue,
        reserved
    });
    same_layout!(hab_wake { slot, channel });
    same_layout!(hab_ticket {
        ticket,
        slot,
        flags
    });
    same_layout!(hab_queue_stats {
        size,
        max_size,
        overflows,
        timeouts,
        abandoned,
        served,
        reserved
    });
    same_layout!(hab_panic_report {
        change,
        healthy,
        total,
        reserved
    });
    same_layout!(hab_check_result {
        passed,
        reason,
        status,
        duration_ms
    });
    same_layout!(hab_grpc_answer {
        verdict,
        reason,
        status,
        settings,
        why
    });
    same_layout!(hab_check_report {
        transition,
        rise,
        fall,
        reserved,
        panic
    });
    same_layout!(hab_learn_zone {
        name,
        name_len,
        table
    });
    same_layout!(hab_learn_stats {
        entries,
        capacity,
        created,
        evicted,
        expired
    });
    same_layout!(hab_pick { peer, flags });
    same_layout!(hab_report {
        flags,
        peer,
        down_ms,
        eject_reason,
        eject_count,
        eject_ms,
        panic,
        wake
    });
    same_layout!(hab_try {
        status,
        flags,
        header_ms,
        sent,
        received
    });
    same_layout!(hab_api_upstream {
        name,
        name_len,
        zone,
        learn,
        learn_zone,
        learn_zone_len
    });
    same_layout!(hab_api_request {
        method,
        flags,
        path,
        path_len,
        query,
        query_len,
        body,
        body_len,
        state_file,
        state_file_len,
        now_ms,
        wall_ms,
        owner,
        alive,
        alive_data,
        request_id,
        request_id_len,
        nginx
    });
    same_layout!(hab_api_nginx {
        version,
        version_len,
        address,
        address_len,
        pid,
        ppid,
        generation,
        load_wall_ms,
        respawned,
        stub,
        reserved,
        accepted,
        handled,
        active,
        requests,
        reading,
        writing,
        waiting
    });
    same_layout!(hab_api_response {
        status,
        content_type,
        body,
        log,
        notice
    });
}

/// The header's functions, over the Rust types (second bindgen pass).
// Pointers to the opaque handles (`hab_buf`, `hab_state`) are what the
// header passes; their Rust layout is never seen by C.
#[allow(dead_code, non_camel_case_types, improper_ctypes, clippy::all)]
mod fns {
    use hab_ffi::*;
    include!(concat!(env!("OUT_DIR"), "/hab_fns.rs"));
}

fn same<T>(_: T, _: T) {}

/// `same_signature!(name/arity, ...)`: the header's `name` and the Rust
/// export have the same type (a mismatch does not compile); the names of
/// all functions checked.
macro_rules! same_signature {
    ($($name:ident / $n:tt),* $(,)?) => {{
        $( same_signature!(@one $name $n); )*
        vec![$(stringify!($name)),*]
    }};
    (@one $name:ident 0) => { same(fns::$name as unsafe extern "C" fn() -> _, rs::$name as unsafe extern "C" fn() -> _) };
    (@one $name:ident 1) => { same(fns::$name as unsafe extern "C" fn(_) -> _, rs::$name as unsafe extern "C" fn(_) -> _) };
    (@one $name:ident 2) => { same(fns::$name as unsafe extern "C" fn(_, _) -> _, rs::$name as unsafe extern "C" fn(_, _) -> _) };
    (@one $name:ident 3) => { same(fns::$name as unsafe extern "C" fn(_, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _) -> _) };
    (@one $name:ident 4) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _) -> _) };
    (@one $name:ident 5) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _) -> _) };
    (@one $name:ident 6) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _) -> _) };
    (@one $name:ident 7) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _, _) -> _) };
    (@one $name:ident 11) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _, _, _) -> _) };
    (@one $name:ident 10) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _, _) -> _) };
    (@one $name:ident 8) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _) -> _) };
    (@one $name:ident 9) => { same(fns::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _) -> _, rs::$name as unsafe extern "C" fn(_, _, _, _, _, _, _, _, _) -> _) };
}

#[test]
fn functions_match_the_header() {
    let checked = same_signature!(
        hab_result_str / 1,
        hab_layout_version / 0,
        hab_zone_size / 2,
        hab_conf_digest / 2,
        hab_conf_explain / 2,
        hab_zone_init / 4,
        hab_zone_attach / 4,
        hab_zone_carry / 5,
        hab_zone_peers / 1,
        hab_zone_generation / 1,
        hab_zone_in_flight / 3,
        hab_zone_claim_slot / 5,
        hab_zone_release_slot / 3,
        hab_zone_reap / 5,
        hab_attempt_size / 1,
        hab_attempt_init / 7,
        hab_attempt_pick / 6,
        hab_attempt_release / 6,
        hab_attempt_end / 2,
        hab_attempt_pick_bound / 9,
        hab_attempt_sid / 4,
        hab_learn_capacity / 1,
        hab_learn_size / 1,
        hab_learn_init / 4,
        hab_learn_attach / 4,
        hab_learn_lookup / 4,
        hab_learn_learn / 6,
        hab_learn_carry / 4,
        hab_learn_stats_get / 3,
        hab_sessions_save / 7,
        hab_sessions_restore / 8,
        hab_check_claim / 10,
        hab_check_done / 7,
        hab_zone_resolve / 11,
        hab_zone_source / 3,
        hab_zone_slot / 3,
        hab_zone_slot_peer / 5,
        hab_attempt_abandon / 2,
        hab_attempt_source / 3,
        hab_health_tick / 8,
        hab_grpc_request / 8,
        hab_grpc_answer_read / 5,
        hab_health_validate / 1,
        hab_api_handle / 4,
        hab_buf_chunk / 3,
        hab_buf_data / 1,
        hab_buf_len / 1,
        hab_buf_free / 1,
        hab_state_load / 4,
        hab_state_apply / 7,
        hab_state_unclaimed / 5,
        hab_state_free / 1,
        hab_state_save / 5,
        hab_attempt_abandon_wake / 3,
        hab_attempt_end_wake / 3,
        hab_queue_waiting / 1,
        hab_queue_enter / 4,
        hab_queue_try / 8,
        hab_queue_leave / 4,
        hab_queue_woken / 3,
        hab_queue_kick / 2,
        hab_queue_set_wake / 3,
        hab_queue_stats_get / 2,
    );
    // Every function the header declares is in the list above.
    let header = include_str!("../ffi/include/ha_balancer.h");
    let mut declared: Vec<&str> = header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('/'))
        .filter_map(|l| {
            let end = l.find('(')?;
            let start = l[..end].rfind(|c: char| !(c.is_alphanumeric() || c == '_'))? + 1;
            let name = &l[start..end];
            name.starts_with("hab_").then_some(name)
        })
        .collect();
    declared.sort_unstable();
    declared.dedup();
    let mut checked = checked;
    checked.sort_unstable();
    assert_eq!(declared, checked, "functions in the header vs checked here");
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
        (C::HAB_BAD_STATE as u32, R::HAB_BAD_STATE as u32),
        (C::HAB_QUEUE_FULL as u32, R::HAB_QUEUE_FULL as u32),
        (sys::HAB_API_OTHER, rs::HAB_API_OTHER),
        (sys::HAB_API_GET, rs::HAB_API_GET),
        (sys::HAB_API_HEAD, rs::HAB_API_HEAD),
        (sys::HAB_API_PATCH, rs::HAB_API_PATCH),
        (sys::HAB_API_WRITE, rs::HAB_API_WRITE),
        (sys::HAB_API_DELETE, rs::HAB_API_DELETE),
        (sys::HAB_API_HTML, rs::HAB_API_HTML),
        (sys::HAB_API_JSON, rs::HAB_API_JSON),
        (sys::HAB_API_PROMETHEUS, rs::HAB_API_PROMETHEUS),
        (sys::HAB_API_HTML_PAGE, rs::HAB_API_HTML_PAGE),
        (sys::HAB_API_NO_BODY, rs::HAB_API_NO_BODY),
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
        (sys::HAB_PEER_API, rs::HAB_PEER_API),
        (sys::HAB_PICK_BACKUP, rs::HAB_PICK_BACKUP),
        (sys::HAB_PICK_BOUND, rs::HAB_PICK_BOUND),
        (sys::HAB_SID_MAX, rs::HAB_SID_MAX as u32),
        (sys::HAB_LEARN_TIMEOUT_MAX, rs::HAB_LEARN_TIMEOUT_MAX as u32),
        (sys::HAB_OUTCOME_OK, rs::HAB_OUTCOME_OK),
        (sys::HAB_OUTCOME_FAILED, rs::HAB_OUTCOME_FAILED),
        (sys::HAB_OUTCOME_NEXT, rs::HAB_OUTCOME_NEXT),
        (sys::HAB_REPORT_DISABLED, rs::HAB_REPORT_DISABLED),
        (sys::HAB_REPORT_RECOVERED, rs::HAB_REPORT_RECOVERED),
        (sys::HAB_REPORT_LAST_TRY, rs::HAB_REPORT_LAST_TRY),
        (sys::HAB_TRY_HEADER_TIME, rs::HAB_TRY_HEADER_TIME),
        (sys::HAB_REPORT_EJECTED, rs::HAB_REPORT_EJECTED),
        (sys::HAB_EJECT_5XX, rs::HAB_EJECT_5XX),
        (sys::HAB_EJECT_ERRORS, rs::HAB_EJECT_ERRORS),
        (sys::HAB_PANIC_MODE_NONE, rs::HAB_PANIC_MODE_NONE),
        (sys::HAB_PANIC_MODE_ENTERED, rs::HAB_PANIC_MODE_ENTERED),
        (sys::HAB_PANIC_MODE_LEFT, rs::HAB_PANIC_MODE_LEFT),
        (sys::HAB_HEALTH_CHECK, rs::HAB_HEALTH_CHECK),
        (sys::HAB_HEALTH_MANDATORY, rs::HAB_HEALTH_MANDATORY),
        (sys::HAB_HEALTH_PERSISTENT, rs::HAB_HEALTH_PERSISTENT),
        (sys::HAB_HEALTH_CLEAR_FAILS, rs::HAB_HEALTH_CLEAR_FAILS),
        (sys::HAB_CHECK_NONE, rs::HAB_CHECK_NONE),
        (sys::HAB_CHECK_UP, rs::HAB_CHECK_UP),
        (sys::HAB_CHECK_HEALTHY, rs::HAB_CHECK_HEALTHY),
        (sys::HAB_CHECK_UNHEALTHY, rs::HAB_CHECK_UNHEALTHY),
        (sys::HAB_CHECK_REASON_NONE, rs::HAB_CHECK_REASON_NONE),
        (sys::HAB_CHECK_REASON_PASSED, rs::HAB_CHECK_REASON_PASSED),
        (
            sys::HAB_CHECK_REASON_CONNECT_REFUSED,
            rs::HAB_CHECK_REASON_CONNECT_REFUSED,
        ),
        (
            sys::HAB_CHECK_REASON_CONNECT_ERROR,
            rs::HAB_CHECK_REASON_CONNECT_ERROR,
        ),
        (sys::HAB_CHECK_REASON_TIMEOUT, rs::HAB_CHECK_REASON_TIMEOUT),
        (
            sys::HAB_CHECK_REASON_SEND_FAILED,
            rs::HAB_CHECK_REASON_SEND_FAILED,
        ),
        (
            sys::HAB_CHECK_REASON_RECV_FAILED,
            rs::HAB_CHECK_REASON_RECV_FAILED,
        ),
        (
            sys::HAB_CHECK_REASON_NO_RESPONSE,
            rs::HAB_CHECK_REASON_NO_RESPONSE,
        ),
        (
            sys::HAB_CHECK_REASON_INCOMPLETE_HEADER,
            rs::HAB_CHECK_REASON_INCOMPLETE_HEADER,
        ),
        (
            sys::HAB_CHECK_REASON_INVALID_STATUS_LINE,
            rs::HAB_CHECK_REASON_INVALID_STATUS_LINE,
        ),
        (
            sys::HAB_CHECK_REASON_INVALID_HEADER,
            rs::HAB_CHECK_REASON_INVALID_HEADER,
        ),
        (
            sys::HAB_CHECK_REASON_INVALID_CONTENT_LENGTH,
            rs::HAB_CHECK_REASON_INVALID_CONTENT_LENGTH,
        ),
        (sys::HAB_CHECK_REASON_STATUS, rs::HAB_CHECK_REASON_STATUS),
        (
            sys::HAB_CHECK_REASON_INVALID_CHUNKED_BODY,
            rs::HAB_CHECK_REASON_INVALID_CHUNKED_BODY,
        ),
        (
            sys::HAB_CHECK_REASON_INCOMPLETE_BODY,
            rs::HAB_CHECK_REASON_INCOMPLETE_BODY,
        ),
        (
            sys::HAB_CHECK_REASON_BODY_MISMATCH,
            rs::HAB_CHECK_REASON_BODY_MISMATCH,
        ),
        (sys::HAB_CHECK_REASON_TLS, rs::HAB_CHECK_REASON_TLS),
        (
            sys::HAB_CHECK_REASON_INTERNAL,
            rs::HAB_CHECK_REASON_INTERNAL,
        ),
        (sys::HAB_CHECK_REASON_HTTP2, rs::HAB_CHECK_REASON_HTTP2),
        (
            sys::HAB_CHECK_REASON_GRPC_STATUS,
            rs::HAB_CHECK_REASON_GRPC_STATUS,
        ),
        (
            sys::HAB_CHECK_REASON_NOT_SERVING,
            rs::HAB_CHECK_REASON_NOT_SERVING,
        ),
        (sys::HAB_GRPC_AGAIN, rs::HAB_GRPC_AGAIN),
        (sys::HAB_GRPC_PASSED, rs::HAB_GRPC_PASSED),
        (sys::HAB_GRPC_FAILED, rs::HAB_GRPC_FAILED),
        (sys::HAB_GRPC_SERVICE_MAX, rs::HAB_GRPC_SERVICE_MAX),
        (sys::HAB_NO_PEER, rs::HAB_NO_PEER),
        (sys::HAB_POSITION_NONE, rs::HAB_POSITION_NONE),
        (
            sys::HAB_SCHEDULE_ROOM_DEFAULT,
            rs::HAB_SCHEDULE_ROOM_DEFAULT,
        ),
        (sys::HAB_SCHEDULE_ROOM_MAX, rs::HAB_SCHEDULE_ROOM_MAX),
        (sys::HAB_API_MAX, rs::HAB_API_MAX),
        (sys::HAB_BUCKETS_MAX, rs::HAB_BUCKETS_MAX),
        (sys::HAB_SLOT_FREE, rs::HAB_SLOT_FREE),
        (sys::HAB_SLOT_LIVE, rs::HAB_SLOT_LIVE),
        (sys::HAB_SLOT_RETIRING, rs::HAB_SLOT_RETIRING),
        (sys::HAB_SLOT_TEXT_MAX, rs::HAB_SLOT_TEXT_MAX),
        (sys::HAB_QUEUE_MAX, rs::HAB_QUEUE_MAX),
        (sys::HAB_NO_CHANNEL, rs::HAB_NO_CHANNEL),
        (sys::HAB_TICKET_HEAD, rs::HAB_TICKET_HEAD),
        (sys::HAB_QUEUE_TIMEOUT, rs::HAB_QUEUE_TIMEOUT),
        (sys::HAB_QUEUE_ABANDONED, rs::HAB_QUEUE_ABANDONED),
    ];
    for (i, (c, r)) in pairs.iter().enumerate() {
        assert_eq!(c, r, "constant #{i}");
    }
}

#[test]
fn every_result_code_has_a_message() {
    for code in 7000..=7010u32 {
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

/// nginx-module/config refuses a 32-bit platform at configure time, with
/// a message (nginx's auto/unix has set `ngx_ptr_size` when module
/// configs are read); on 64 bits it goes on.
#[test]
fn configure_refuses_32_bit_platforms() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/nginx-module");
    let run = |size: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ngx_addon_dir={dir}; ngx_ptr_size={size}; ngx_module_link=; . {dir}/config; echo configured"
            ))
            .output()
            .expect("sh")
    };
    let out = run("4");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("needs a 64-bit platform (pointers here are 4 bytes)"),
        "{err}"
    );
    let out = run("8");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("configured"));
}
