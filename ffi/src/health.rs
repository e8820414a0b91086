//! Health: the health directives, active checks, and the health timer

use hab_core::health::check::{CheckDetail, CheckReason, CheckTransition};
use hab_core::health::grpc::{self, Failure, Verdict};
use hab_core::health::panic::{PanicChange, PanicReport};
use hab_core::spec::HealthSpec;

use crate::{bytes, zone_of};
use crate::{guard, hab_result, hab_zone};
use crate::{HAB_INVALID_ARGUMENT, HAB_NO_SPACE, HAB_NULL_PARAMETER, HAB_OK};

/// `hab_health_conf.flags`: `ha_check` is configured.
pub const HAB_HEALTH_CHECK: u32 = HealthSpec::CHECK;
/// `hab_health_conf.flags`: `mandatory`.
pub const HAB_HEALTH_MANDATORY: u32 = HealthSpec::MANDATORY;
/// `hab_health_conf.flags`: `persistent`.
pub const HAB_HEALTH_PERSISTENT: u32 = HealthSpec::PERSISTENT;
/// `hab_health_conf.flags`: `clear_fails`.
pub const HAB_HEALTH_CLEAR_FAILS: u32 = HealthSpec::CLEAR_FAILS;

/// The health directives of an upstream (times in ms, 0: off).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_health_conf {
    /// `HAB_HEALTH_*`.
    pub flags: u32,
    /// `ha_check interval=`.
    pub interval_ms: u32,
    /// `jitter=`.
    pub jitter_ms: u32,
    /// `timeout=`.
    pub timeout_ms: u32,
    /// `fails=`.
    pub fails: u32,
    /// `passes=`.
    pub passes: u32,
    /// `ha_slow_start`.
    pub slow_start_ms: u32,
    /// `ha_outlier consecutive_5xx=`.
    pub consecutive_5xx: u32,
    /// `consecutive_errors=`.
    pub consecutive_errors: u32,
    /// `base_ejection=`.
    pub base_ejection_ms: u32,
    /// `max_ejection_time=`; 0 for the default.
    pub max_ejection_ms: u32,
    /// `max_ejection=`, percent; 0 for 100.
    pub max_ejection_percent: u32,
    /// `ha_panic`, percent; 0 for off.
    pub panic_percent: u32,
    /// `ha_queue number`: most requests waiting for a server, across all
    /// workers; 0 for none (zeroed memory: no queue), at most
    /// [`HAB_QUEUE_MAX`]. It was the first reserved word.
    pub queue: u32,
    /// Zero.
    pub reserved: [u32; 2],
}

/// Most waiters `hab_health_conf.queue` may ask for.
pub const HAB_QUEUE_MAX: u32 = hab_core::spec::MAX_QUEUE;

impl hab_health_conf {
    pub(crate) fn spec(&self) -> HealthSpec {
        HealthSpec {
            flags: self.flags,
            interval_ms: self.interval_ms,
            jitter_ms: self.jitter_ms,
            timeout_ms: self.timeout_ms,
            fails: self.fails,
            passes: self.passes,
            slow_start_ms: self.slow_start_ms,
            consecutive_5xx: self.consecutive_5xx,
            consecutive_errors: self.consecutive_errors,
            base_ejection_ms: self.base_ejection_ms,
            max_ejection_ms: self.max_ejection_ms,
            max_ejection_percent: self.max_ejection_percent,
            panic_percent: self.panic_percent,
            queue: self.queue,
            reserved: [0; 2],
        }
    }
}

/// `hab_panic_report.change`: nothing.
pub const HAB_PANIC_MODE_NONE: u32 = 0;
/// `hab_panic_report.change`: this call put the upstream in panic.
pub const HAB_PANIC_MODE_ENTERED: u32 = 1;
/// `hab_panic_report.change`: this call ended the panic.
pub const HAB_PANIC_MODE_LEFT: u32 = 2;

/// A panic evaluation.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_panic_report {
    /// `HAB_PANIC_MODE_*`.
    pub change: u32,
    /// Primaries in service and healthy.
    pub healthy: u32,
    /// Primaries in service.
    pub total: u32,
    /// Zero.
    pub reserved: u32,
}

impl From<PanicReport> for hab_panic_report {
    fn from(p: PanicReport) -> Self {
        hab_panic_report {
            change: match p.change {
                PanicChange::None => HAB_PANIC_MODE_NONE,
                PanicChange::Entered => HAB_PANIC_MODE_ENTERED,
                PanicChange::Left => HAB_PANIC_MODE_LEFT,
            },
            healthy: p.healthy,
            total: p.total,
            reserved: 0,
        }
    }
}

/// `hab_check_report.transition`: none.
pub const HAB_CHECK_NONE: u32 = 0;
/// `hab_check_report.transition`: a checking server passed its first check.
pub const HAB_CHECK_UP: u32 = 1;
/// `hab_check_report.transition`: an unhealthy server is healthy again.
pub const HAB_CHECK_HEALTHY: u32 = 2;
/// `hab_check_report.transition`: the server turned unhealthy.
pub const HAB_CHECK_UNHEALTHY: u32 = 3;

/// `hab_check_result.reason`: not told.
pub const HAB_CHECK_REASON_NONE: u32 = CheckReason::None as u32;
/// `hab_check_result.reason`: the check passed.
pub const HAB_CHECK_REASON_PASSED: u32 = CheckReason::Passed as u32;
/// `hab_check_result.reason`: the connection was refused.
pub const HAB_CHECK_REASON_CONNECT_REFUSED: u32 = CheckReason::ConnectRefused as u32;
/// `hab_check_result.reason`: the connection failed otherwise.
pub const HAB_CHECK_REASON_CONNECT_ERROR: u32 = CheckReason::ConnectError as u32;
/// `hab_check_result.reason`: no verdict within the timeout.
pub const HAB_CHECK_REASON_TIMEOUT: u32 = CheckReason::Timeout as u32;
/// `hab_check_result.reason`: sending the request failed.
pub const HAB_CHECK_REASON_SEND_FAILED: u32 = CheckReason::SendFailed as u32;
/// `hab_check_result.reason`: reading the answer failed (a reset).
pub const HAB_CHECK_REASON_RECV_FAILED: u32 = CheckReason::RecvFailed as u32;
/// `hab_check_result.reason`: closed without a byte of answer.
pub const HAB_CHECK_REASON_NO_RESPONSE: u32 = CheckReason::NoResponse as u32;
/// `hab_check_result.reason`: closed within the head.
pub const HAB_CHECK_REASON_INCOMPLETE_HEADER: u32 = CheckReason::IncompleteHeader as u32;
/// `hab_check_result.reason`: a malformed status line.
pub const HAB_CHECK_REASON_INVALID_STATUS_LINE: u32 = CheckReason::InvalidStatusLine as u32;
/// `hab_check_result.reason`: a malformed header line.
pub const HAB_CHECK_REASON_INVALID_HEADER: u32 = CheckReason::InvalidHeader as u32;
/// `hab_check_result.reason`: an invalid or doubled Content-Length.
pub const HAB_CHECK_REASON_INVALID_CONTENT_LENGTH: u32 = CheckReason::InvalidContentLength as u32;
/// `hab_check_result.reason`: a status not passing (in `status`).
pub const HAB_CHECK_REASON_STATUS: u32 = CheckReason::Status as u32;
/// `hab_check_result.reason`: a malformed chunked body.
pub const HAB_CHECK_REASON_INVALID_CHUNKED_BODY: u32 = CheckReason::InvalidChunkedBody as u32;
/// `hab_check_result.reason`: closed within the body.
pub const HAB_CHECK_REASON_INCOMPLETE_BODY: u32 = CheckReason::IncompleteBody as u32;
/// `hab_check_result.reason`: the body did not match.
pub const HAB_CHECK_REASON_BODY_MISMATCH: u32 = CheckReason::BodyMismatch as u32;
/// `hab_check_result.reason`: TLS setup or handshake failed.
pub const HAB_CHECK_REASON_TLS: u32 = CheckReason::Tls as u32;
/// `hab_check_result.reason`: the prober itself failed.
pub const HAB_CHECK_REASON_INTERNAL: u32 = CheckReason::Internal as u32;

/// `hab_check_result.reason`: a gRPC answer not HTTP/2, or broken.
pub const HAB_CHECK_REASON_HTTP2: u32 = CheckReason::Http2 as u32;
/// `hab_check_result.reason`: a gRPC answer's `grpc-status` not 0 (in
/// `status`).
pub const HAB_CHECK_REASON_GRPC_STATUS: u32 = CheckReason::GrpcStatus as u32;
/// `hab_check_result.reason`: a gRPC service not `SERVING` (its serving
/// status in `status`).
pub const HAB_CHECK_REASON_NOT_SERVING: u32 = CheckReason::NotServing as u32;

/// One check's verdict and how it went.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_check_result {
    /// Non-zero: it passed.
    pub passed: u32,
    /// `HAB_CHECK_REASON_*`.
    pub reason: u32,
    /// The answer's HTTP status, 0 without one (kept up to 65535).
    pub status: u32,
    /// From its start to its verdict, ms.
    pub duration_ms: u32,
}

/// What a check result did.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hab_check_report {
    /// `HAB_CHECK_*`.
    pub transition: u32,
    /// Consecutive passes.
    pub rise: u32,
    /// Consecutive failures.
    pub fall: u32,
    /// Zero.
    pub reserved: u32,
    /// The panic evaluation that followed a transition.
    pub panic: hab_panic_report,
}

/// The caller's array of `cap` peer indices (empty when `cap` is 0).
///
/// # Safety
///
/// `out` writable for `cap` elements when `cap` is not 0.
unsafe fn out_slice<'a>(out: *mut u32, cap: usize) -> &'a mut [u32] {
    if cap == 0 {
        &mut []
    } else {
        // SAFETY: forwarded contract.
        unsafe { core::slice::from_raw_parts_mut(out, cap) }
    }
}

/// Takes the checks due for worker `worker` of `workers` at `now_ms`: at
/// most `cap` peer indices into `out_peers`, their number in `out_n`, and
/// in `out_next_ms` when the next one falls due (`UINT64_MAX`: none).
/// `full` non-zero: a full pass (also other workers' overdue peers).
///
/// # Safety
///
/// `z` a valid zone handle; `out_peers` writable for `cap` elements;
/// `out_n` and `out_next_ms` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_check_claim(
    z: *mut hab_zone,
    worker: u32,
    workers: u32,
    now_ms: u64,
    seed: u64,
    full: u32,
    out_peers: *mut u32,
    cap: usize,
    out_n: *mut usize,
    out_next_ms: *mut u64,
) -> hab_result {
    guard(|| {
        if z.is_null()
            || out_n.is_null()
            || out_next_ms.is_null()
            || (out_peers.is_null() && cap != 0)
        {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: a valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: writable for `cap` elements (caller contract).
        let out = unsafe { out_slice(out_peers, cap) };
        let (n, next) = z.claim_checks(worker, workers, now_ms, seed, full != 0, out);
        // SAFETY: non-NULL, writable (caller contract).
        unsafe {
            out_n.write(n);
            out_next_ms.write(next);
        }
        HAB_OK
    })
}

/// Records the result of a check of `peer` that ended at `now_ms`
/// (`result`: its verdict, reason, status and duration), started when the
/// slot's epoch was `epoch`, by the worker of ledger slot `slot`
/// ([`crate::HAB_NO_SLOT`] for none):
/// dropped (no transition) if the slot was reused since.
/// [`HAB_INVALID_ARGUMENT`] for an unknown reason.
///
/// # Safety
///
/// `z` a valid zone handle; `result` readable; `out_report` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn hab_check_done(
    z: *mut hab_zone,
    peer: u32,
    epoch: u32,
    slot: u32,
    result: *const hab_check_result,
    now_ms: u64,
    out_report: *mut hab_check_report,
) -> hab_result {
    guard(|| {
        if z.is_null() || result.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: non-NULL, readable (caller contract).
        let result = unsafe { result.read() };
        let Some(reason) = CheckReason::from_u32(result.reason) else {
            return HAB_INVALID_ARGUMENT;
        };
        let detail = CheckDetail {
            reason,
            status: result.status.min(u32::from(u16::MAX)) as u16,
            duration_ms: result.duration_ms,
        };
        let passed = result.passed != 0;
        // SAFETY: a valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        let ledger = (slot != crate::HAB_NO_SLOT).then_some(slot);
        match z.check_done_detail(peer as usize, epoch, ledger, passed, detail, now_ms) {
            Ok(r) => {
                if !out_report.is_null() {
                    let transition = match r.transition {
                        CheckTransition::None => HAB_CHECK_NONE,
                        CheckTransition::Up => HAB_CHECK_UP,
                        CheckTransition::Healthy => HAB_CHECK_HEALTHY,
                        CheckTransition::Unhealthy => HAB_CHECK_UNHEALTHY,
                    };
                    // SAFETY: non-NULL, writable (caller contract).
                    unsafe {
                        out_report.write(hab_check_report {
                            transition,
                            rise: r.rise,
                            fall: r.fall,
                            reserved: 0,
                            panic: r.panic.into(),
                        })
                    };
                }
                HAB_OK
            }
            Err(e) => e.into(),
        }
    })
}

/// The health timer of one worker at `now_ms`: ends the outlier
/// ejections that are over (at most `cap` of the peers returned into
/// `out_peers`, their number in `out_n`) and, when the health epoch moved
/// since `*epoch` (the worker's last look, updated), re-evaluates the panic
/// flag into `out_panic`. `slot`: the worker's ledger slot
/// ([`crate::HAB_NO_SLOT`]: none, and no ejection ends here).
///
/// # Safety
///
/// `z` a valid zone handle; `epoch`, `out_n`, `out_panic` writable;
/// `out_peers` writable for `cap` elements.
#[no_mangle]
pub unsafe extern "C" fn hab_health_tick(
    z: *mut hab_zone,
    now_ms: u64,
    slot: u32,
    epoch: *mut u64,
    out_peers: *mut u32,
    cap: usize,
    out_n: *mut usize,
    out_panic: *mut hab_panic_report,
) -> hab_result {
    guard(|| {
        if z.is_null()
            || epoch.is_null()
            || out_n.is_null()
            || out_panic.is_null()
            || (out_peers.is_null() && cap != 0)
        {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: a valid handle (caller contract).
        let z = unsafe { zone_of(z) };
        // SAFETY: writable for `cap` elements (caller contract).
        let out = unsafe { out_slice(out_peers, cap) };
        let ledger = (slot != crate::HAB_NO_SLOT).then_some(slot);
        let n = z.end_ejections(now_ms, out, ledger);
        // SAFETY: non-NULL, writable (caller contract).
        let seen = unsafe { &mut *epoch };
        let now_epoch = z.health_epoch();
        // The epoch moved, or (once a second across the workers) whether
        // or not it did: a worker killed between a health change and its
        // epoch bump leaves nothing stale for long.
        let panic = if now_epoch != *seen || z.panic_due(now_ms) {
            *seen = now_epoch;
            z.update_panic()
        } else {
            PanicReport::default()
        };
        // SAFETY: as above.
        unsafe {
            out_n.write(n);
            out_panic.write(panic.into());
        }
        HAB_OK
    })
}

/// Validates a health configuration on its own, for `nginx -t` messages:
/// `HAB_INVALID_ARGUMENT` when the values are inconsistent.
///
/// # Safety
///
/// `conf` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn hab_health_validate(conf: *const hab_health_conf) -> hab_result {
    guard(|| {
        if conf.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: non-NULL, readable (caller contract).
        match unsafe { &*conf }.spec().validate() {
            Ok(()) => HAB_OK,
            Err(_) => HAB_INVALID_ARGUMENT,
        }
    })
}

/// `hab_grpc_answer.verdict`: more of the answer is needed.
pub const HAB_GRPC_AGAIN: u32 = 0;
/// `hab_grpc_answer.verdict`: the check passed.
pub const HAB_GRPC_PASSED: u32 = 1;
/// `hab_grpc_answer.verdict`: the check failed (`reason`, `status`, `why`).
pub const HAB_GRPC_FAILED: u32 = 2;

/// Longest `service` of [`hab_grpc_request`], bytes.
pub const HAB_GRPC_SERVICE_MAX: u32 = grpc::MAX_SERVICE as u32;

/// The verdict on a gRPC check's answer so far.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_grpc_answer {
    /// `HAB_GRPC_AGAIN`, `HAB_GRPC_PASSED` or `HAB_GRPC_FAILED`.
    pub verdict: u32,
    /// Failed: `HAB_CHECK_REASON_*`.
    pub reason: u32,
    /// Failed: the HTTP status, the `grpc-status` or the serving status, as
    /// `reason` says (0 otherwise).
    pub status: u32,
    /// Non-zero: the server's SETTINGS came, to be acknowledged once.
    pub settings: u32,
    /// Failed: what to log, NUL-terminated (`"grpc-status 5"`).
    pub why: [u8; 48],
}

/// The bytes of one gRPC health check (`grpc.health.v1.Health/Check` for
/// `service`, over HTTP/2 from the client preface on), to `out` (`cap`
/// bytes): their number in `*out_len`. [`HAB_NO_SPACE`] when `cap` is too
/// small (also with `out` NULL), the number needed in `*out_len`;
/// [`HAB_INVALID_ARGUMENT`] for an `authority` or `service` longer than
/// 1,024 bytes. `tls` non-zero: `:scheme https`.
///
/// # Safety
///
/// `authority` readable for `authority_len` bytes and `service` for
/// `service_len` (either NULL when its length is 0); `out` NULL or
/// writable for `cap` bytes; `out_len` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_grpc_request(
    authority: *const u8,
    authority_len: usize,
    service: *const u8,
    service_len: usize,
    tls: u32,
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> hab_result {
    guard(|| {
        if out_len.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: NULL or readable for their lengths (caller contract).
        let (authority, service) =
            match unsafe { (bytes(authority, authority_len), bytes(service, service_len)) } {
                (Ok(a), Ok(s)) => (a, s),
                (Err(e), _) | (_, Err(e)) => return e,
            };
        if authority.len() > grpc::MAX_AUTHORITY || service.len() > grpc::MAX_SERVICE {
            return HAB_INVALID_ARGUMENT;
        }
        let mut bytes = Vec::with_capacity(256 + authority.len() + service.len());
        grpc::request(
            &grpc::Request {
                authority,
                service,
                tls: tls != 0,
            },
            &mut bytes,
        );
        // SAFETY: writable (caller contract).
        unsafe { out_len.write(bytes.len()) };
        if out.is_null() || cap < bytes.len() {
            return HAB_NO_SPACE;
        }
        // SAFETY: `out` writable for `cap` >= `bytes.len()` bytes, and not
        // inside `bytes` (a fresh allocation).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
        HAB_OK
    })
}

/// The verdict on `len` bytes of a gRPC check's answer, all the server
/// sent so far (from its first byte), into `*out`. `eof` non-zero: no more
/// will come (closed, or the caller's buffer is full). `pass_status`:
/// `grpc_status=`, a `grpc-status` that passes (0: none).
///
/// # Safety
///
/// `buf` readable for `len` bytes (NULL when `len` is 0); `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_grpc_answer_read(
    buf: *const u8,
    len: usize,
    eof: u32,
    pass_status: u32,
    out: *mut hab_grpc_answer,
) -> hab_result {
    guard(|| {
        if out.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: readable for `len` bytes (caller contract).
        let buf = match unsafe { bytes(buf, len) } {
            Ok(b) => b,
            Err(e) => return e,
        };
        let a = grpc::answer(buf, eof != 0, pass_status);
        let mut r = hab_grpc_answer {
            verdict: HAB_GRPC_AGAIN,
            reason: 0,
            status: 0,
            settings: u32::from(a.settings),
            why: [0; 48],
        };
        match a.verdict {
            Verdict::Again => {}
            Verdict::Passed => r.verdict = HAB_GRPC_PASSED,
            Verdict::Failed(f) => {
                let (reason, status) = match f {
                    Failure::NoResponse => (CheckReason::NoResponse, 0),
                    Failure::IncompleteHeader => (CheckReason::IncompleteHeader, 0),
                    Failure::IncompleteBody => (CheckReason::IncompleteBody, 0),
                    Failure::Protocol => (CheckReason::Http2, 0),
                    Failure::Status(s) => (CheckReason::Status, u32::from(s)),
                    Failure::GrpcStatus(g) => (CheckReason::GrpcStatus, g),
                    Failure::NotServing(s) => (CheckReason::NotServing, s),
                };
                let text = CheckDetail {
                    reason,
                    status: status.min(u32::from(u16::MAX)) as u16,
                    duration_ms: 0,
                }
                .text();
                let n = text.len().min(r.why.len() - 1);
                r.why[..n].copy_from_slice(&text.as_bytes()[..n]);
                r.verdict = HAB_GRPC_FAILED;
                r.reason = reason as u32;
                r.status = status;
            }
        }
        // SAFETY: non-NULL, writable (caller contract).
        unsafe { out.write(r) };
        HAB_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_request_sizes_and_refuses() {
        let mut len = 0usize;
        // SAFETY: (all calls) the pointers are valid for the lengths given,
        // or NULL where the test says so.
        unsafe {
            assert_eq!(
                hab_grpc_request(
                    b"a".as_ptr(),
                    1,
                    core::ptr::null(),
                    0,
                    0,
                    core::ptr::null_mut(),
                    0,
                    core::ptr::null_mut()
                ),
                HAB_NULL_PARAMETER
            );
            assert_eq!(
                hab_grpc_request(
                    core::ptr::null(),
                    1,
                    core::ptr::null(),
                    0,
                    0,
                    core::ptr::null_mut(),
                    0,
                    &mut len
                ),
                HAB_NULL_PARAMETER
            );
            let long = [b'x'; 1025];
            assert_eq!(
                hab_grpc_request(
                    b"a".as_ptr(),
                    1,
                    long.as_ptr(),
                    long.len(),
                    0,
                    core::ptr::null_mut(),
                    0,
                    &mut len
                ),
                HAB_INVALID_ARGUMENT
            );
            assert_eq!(
                hab_grpc_request(
                    b"a".as_ptr(),
                    1,
                    b"svc".as_ptr(),
                    3,
                    0,
                    core::ptr::null_mut(),
                    0,
                    &mut len
                ),
                HAB_NO_SPACE
            );
            let mut out = vec![0u8; len];
            assert_eq!(
                hab_grpc_request(
                    b"a".as_ptr(),
                    1,
                    b"svc".as_ptr(),
                    3,
                    0,
                    out.as_mut_ptr(),
                    len - 1,
                    &mut len
                ),
                HAB_NO_SPACE
            );
            assert_eq!(
                hab_grpc_request(
                    b"a".as_ptr(),
                    1,
                    b"svc".as_ptr(),
                    3,
                    0,
                    out.as_mut_ptr(),
                    out.len(),
                    &mut len
                ),
                HAB_OK
            );
            assert_eq!(len, out.len());
            assert!(out.starts_with(grpc::PREFACE));
            assert!(out.ends_with(b"svc"));
        }
    }

    #[test]
    fn grpc_answers_say_why() {
        let mut a = hab_grpc_answer {
            verdict: 9,
            reason: 9,
            status: 9,
            settings: 9,
            why: [0; 48],
        };
        let http1 = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        // SAFETY: (all calls) the pointers are valid for the lengths given,
        // or NULL where the test says so.
        unsafe {
            assert_eq!(
                hab_grpc_answer_read(core::ptr::null(), 1, 0, 0, &mut a),
                HAB_NULL_PARAMETER
            );
            assert_eq!(
                hab_grpc_answer_read(core::ptr::null(), 0, 0, 0, &mut a),
                HAB_OK
            );
            assert_eq!((a.verdict, a.settings), (HAB_GRPC_AGAIN, 0));
            assert_eq!(
                hab_grpc_answer_read(core::ptr::null(), 0, 1, 0, &mut a),
                HAB_OK
            );
            assert_eq!(
                (a.verdict, a.reason),
                (HAB_GRPC_FAILED, HAB_CHECK_REASON_NO_RESPONSE)
            );
            assert_eq!(
                hab_grpc_answer_read(http1.as_ptr(), http1.len(), 0, 0, &mut a),
                HAB_OK
            );
        }
        assert_eq!(
            (a.verdict, a.reason, a.status),
            (HAB_GRPC_FAILED, HAB_CHECK_REASON_HTTP2, 0)
        );
        let end = a.why.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&a.why[..end], b"HTTP/2 protocol error");
    }
}
