//! The operator API, the buffers it returns, and the state file

use core::ffi::c_void;
use std::path::Path;

use hab_api::route::{NginxInfo, StubCounters};
use hab_api::state::{SaveLock, StateFile};
use hab_api::upstream::Learn;
use hab_api::{ContentType, Method, Request, Upstream};
use hab_core::learn::Sessions;

use crate::buf::{buf, hab_buf};
use crate::learn::hab_learn;
use crate::{alive_fn, hab_alive_fn, zone_of};
use crate::{bytes, guard, guard_or, hab_result, hab_zone};
use crate::{HAB_BAD_STATE, HAB_INVALID_ARGUMENT, HAB_NULL_PARAMETER, HAB_OK};

/// `hab_api_request.method`: anything the API does not serve.
pub const HAB_API_OTHER: u32 = 0;
/// `hab_api_request.method`: GET.
pub const HAB_API_GET: u32 = 1;
/// `hab_api_request.method`: HEAD.
pub const HAB_API_HEAD: u32 = 2;
/// `hab_api_request.method`: PATCH.
pub const HAB_API_PATCH: u32 = 3;
/// `hab_api_request.method`: DELETE.
pub const HAB_API_DELETE: u32 = 4;
/// `hab_api_request.method`: POST.
pub const HAB_API_POST: u32 = 5;
/// `hab_api_request.flags`: `ha_api write=on`.
pub const HAB_API_WRITE: u32 = 0x0001;
/// `hab_api_request.flags`: the client accepts `text/html`.
pub const HAB_API_HTML: u32 = 0x0002;

/// `hab_api_response.type`: JSON.
pub const HAB_API_JSON: u32 = 0;
/// `hab_api_response.type`: Prometheus text exposition 0.0.4.
pub const HAB_API_PROMETHEUS: u32 = 1;
/// `hab_api_response.type`: HTML.
pub const HAB_API_HTML_PAGE: u32 = 2;
/// `hab_api_response.type`: no body (204).
pub const HAB_API_NO_BODY: u32 = 3;

/// One upstream the API shows.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_api_upstream {
    /// Its name (not NUL-terminated).
    pub name: *const u8,
    /// Length of `name`.
    pub name_len: usize,
    /// Its zone.
    pub zone: *mut hab_zone,
    /// Its table of learnt sessions (`ha_sticky learn`); NULL: none.
    pub learn: *const hab_learn,
    /// The name of the zone holding `learn` (not NUL-terminated; may be
    /// NULL when `learn` is).
    pub learn_zone: *const u8,
    /// Length of `learn_zone`.
    pub learn_zone_len: usize,
}

/// nginx's own figures, for the NGINX Plus API's `nginx`, `processes`,
/// `connections` and `http/requests` (zero or empty when unknown).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_api_nginx {
    /// `NGINX_VERSION`, e.g. `1.22.1` (not NUL-terminated).
    pub version: *const u8,
    /// Length of `version`.
    pub version_len: usize,
    /// The connection's local address, without port (may be NULL when
    /// `address_len` is 0).
    pub address: *const u8,
    /// Length of `address`.
    pub address_len: usize,
    /// The worker's pid.
    pub pid: u64,
    /// The master's pid.
    pub ppid: u64,
    /// Configuration loads since nginx started (1: never reloaded).
    pub generation: u64,
    /// When the configuration in force was loaded, ms since the epoch.
    pub load_wall_ms: u64,
    /// Workers started to replace a dead one (0: not known).
    pub respawned: u64,
    /// 1: the counters below are nginx's stub_status ones; 0: none.
    pub stub: u32,
    /// Zero.
    pub reserved: u32,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections handled.
    pub handled: u64,
    /// Connections open, idle ones included.
    pub active: u64,
    /// Requests.
    pub requests: u64,
    /// Connections reading a request header.
    pub reading: u64,
    /// Connections writing an answer.
    pub writing: u64,
    /// Idle keepalive connections.
    pub waiting: u64,
}

/// One API request.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hab_api_request {
    /// `HAB_API_*` method.
    pub method: u32,
    /// `HAB_API_WRITE`.
    pub flags: u32,
    /// The path below the location, without the query string.
    pub path: *const u8,
    /// Length of `path`.
    pub path_len: usize,
    /// The query string without `?` (may be NULL when `query_len` is 0).
    pub query: *const u8,
    /// Length of `query`.
    pub query_len: usize,
    /// The body (may be NULL when `body_len` is 0).
    pub body: *const u8,
    /// Length of `body`.
    pub body_len: usize,
    /// The state file to rewrite after a change (NULL when `ha_state_file`
    /// is not set).
    pub state_file: *const u8,
    /// Length of `state_file`.
    pub state_file_len: usize,
    /// Monotonic time, ms (nginx's `ngx_current_msec`).
    pub now_ms: u64,
    /// Wall-clock time at the same instant, ms since the epoch.
    pub wall_ms: u64,
    /// Builder lease owner (the worker's pid).
    pub owner: u64,
    /// Whether a lease owner is alive.
    pub alive: hab_alive_fn,
    /// Passed to `alive`.
    pub alive_data: *mut c_void,
    /// nginx's `$request_id` (may be NULL when `request_id_len` is 0).
    pub request_id: *const u8,
    /// Length of `request_id`.
    pub request_id_len: usize,
    /// nginx's own figures.
    pub nginx: hab_api_nginx,
}

/// The answer to an API request.
#[repr(C)]
#[derive(Debug)]
pub struct hab_api_response {
    /// HTTP status.
    pub status: u32,
    /// `HAB_API_JSON`, `HAB_API_PROMETHEUS`, `HAB_API_HTML_PAGE`,
    /// `HAB_API_NO_BODY`.
    pub content_type: u32,
    /// The body (never NULL on `HAB_OK`).
    pub body: *mut hab_buf,
    /// NULL, or a line for the error log (a refused change, a state file
    /// that could not be written).
    pub log: *mut hab_buf,
    /// NULL, or a line for the log at notice: the admin change made.
    pub notice: *mut hab_buf,
}

/// The upstreams of a C array (`None` when a name or zone is NULL, or a
/// learn table's zone name is).
///
/// # Safety
///
/// `ups` valid for `n` elements with valid names, zone handles, and
/// learn tables (NULL or from `hab_learn_init` / `hab_learn_attach`, still
/// mapped) with valid zone names.
unsafe fn upstream_list<'a>(ups: *const hab_api_upstream, n: usize) -> Option<Vec<Upstream<'a>>> {
    let list: &[hab_api_upstream] = if n == 0 {
        &[]
    } else {
        // SAFETY: `n` elements (caller contract).
        unsafe { core::slice::from_raw_parts(ups, n) }
    };
    let mut upstreams = Vec::with_capacity(list.len());
    for u in list {
        // SAFETY: valid name bytes (caller contract).
        let name = unsafe { bytes(u.name, u.name_len) }.ok()?;
        if u.zone.is_null() {
            return None;
        }
        let learn = if u.learn.is_null() {
            None
        } else {
            // SAFETY: valid zone name bytes (caller contract).
            let zone = unsafe { bytes(u.learn_zone, u.learn_zone_len) }.ok()?;
            Some(Learn {
                zone: core::str::from_utf8(zone).unwrap_or(""),
                // SAFETY: a learn table's base, still mapped (caller
                // contract), as `hab_learn_*` take it.
                table: unsafe { Sessions::from_ptr(u.learn.cast_mut().cast()) },
            })
        };
        upstreams.push(Upstream {
            name: core::str::from_utf8(name).unwrap_or(""),
            // SAFETY: a valid zone handle (caller contract).
            zone: unsafe { zone_of(u.zone) },
            learn,
        });
    }
    Some(upstreams)
}

/// Text from C: empty when `len` is 0 or the bytes are not UTF-8, an
/// error when NULL with a length.
///
/// # Safety
///
/// `ptr` is NULL or valid for `len` bytes for `'a`.
unsafe fn text<'a>(ptr: *const u8, len: usize) -> Result<&'a str, hab_result> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len) }?;
    Ok(core::str::from_utf8(b).unwrap_or(""))
}

/// nginx's figures as the API takes them.
///
/// # Safety
///
/// `n`'s pointers NULL or valid for their lengths for `'a`.
unsafe fn nginx_info<'a>(n: &hab_api_nginx) -> Result<NginxInfo<'a>, hab_result> {
    Ok(NginxInfo {
        // SAFETY: caller contract.
        version: unsafe { text(n.version, n.version_len) }?,
        // SAFETY: caller contract.
        address: unsafe { text(n.address, n.address_len) }?,
        pid: n.pid,
        ppid: n.ppid,
        generation: n.generation,
        load_wall_ms: n.load_wall_ms,
        respawned: n.respawned,
        stub: (n.stub != 0).then_some(StubCounters {
            accepted: n.accepted,
            handled: n.handled,
            active: n.active,
            requests: n.requests,
            reading: n.reading,
            writing: n.writing,
            waiting: n.waiting,
        }),
    })
}

/// Writes the state file from `upstreams`. Workers write it (each change
/// and health transition is saved by the worker that made it) one at a
/// time under the file's [`SaveLock`], so a capture made before another
/// worker's change is never renamed after that worker's save; a worker
/// whose capture may have missed a change made meanwhile without the lock
/// (a health transition: the upstreams' health epochs moved while it
/// wrote) writes again. The file that stays was captured after every
/// change whose save has returned.
fn save_state(upstreams: &[Upstream<'_>], path: &Path) -> std::io::Result<()> {
    let epochs = || -> u64 {
        upstreams
            .iter()
            .map(|u| u.zone.health_epoch())
            .fold(0, u64::wrapping_add)
    };
    // One saver at a time across workers: see SaveLock. Without the lock
    // (its file cannot be created, e.g. left by another user) the save
    // still happens, as before the lock existed.
    let _lock = SaveLock::acquire(path).ok();
    let mut r = Ok(());
    for _ in 0..4 {
        let before = epochs();
        r = StateFile::capture(upstreams).save(path);
        if r.is_err() || epochs() == before {
            break;
        }
    }
    r
}

/// Rewrites the state file at `path` from the `n` upstreams (after a
/// health transition); on failure, why in `*out_err` (freed by the caller
/// with `hab_buf_free`).
///
/// # Safety
///
/// `ups` valid for `n` elements with valid names and zone handles; `path`
/// valid for `path_len` bytes; `out_err` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_state_save(
    ups: *const hab_api_upstream,
    n: usize,
    path: *const u8,
    path_len: usize,
    out_err: *mut *mut hab_buf,
) -> hab_result {
    guard(|| {
        if out_err.is_null() || (ups.is_null() && n != 0) || path_len == 0 {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let (Some(upstreams), Ok(path)) = (unsafe { upstream_list(ups, n) }, unsafe {
            bytes(path, path_len)
        }) else {
            return HAB_NULL_PARAMETER;
        };
        let path = Path::new(std::ffi::OsStr::new(
            core::str::from_utf8(path).unwrap_or(""),
        ));
        match save_state(&upstreams, path) {
            Ok(()) => HAB_OK,
            Err(e) => {
                let why = format!("cannot write state file \"{}\": {e}", path.display());
                // SAFETY: writable (caller contract, checked non-NULL).
                unsafe { out_err.write(buf(why.into_bytes().into())) };
                HAB_BAD_STATE
            }
        }
    })
}

/// Answers one API request over `n` upstreams.
///
/// # Safety
///
/// `req` valid, its pointers valid for their lengths; `ups` valid for `n`
/// elements with valid names and zone handles; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_api_handle(
    req: *const hab_api_request,
    ups: *const hab_api_upstream,
    n: usize,
    out: *mut hab_api_response,
) -> hab_result {
    guard(|| {
        if req.is_null() || out.is_null() || (ups.is_null() && n != 0) {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: valid (caller contract).
        let req = unsafe { &*req };
        let Some(alive) = req.alive else {
            return HAB_NULL_PARAMETER;
        };
        // SAFETY: caller contract, lengths as given.
        let (path, query, body, state_file) = match unsafe {
            (
                bytes(req.path, req.path_len),
                bytes(req.query, req.query_len),
                bytes(req.body, req.body_len),
                bytes(req.state_file, req.state_file_len),
            )
        } {
            (Ok(p), Ok(q), Ok(b), Ok(s)) => (p, q, b, s),
            _ => return HAB_NULL_PARAMETER,
        };
        // SAFETY: caller contract, lengths as given.
        let (Ok(request_id), Ok(nginx)) = (
            unsafe { text(req.request_id, req.request_id_len) },
            unsafe { nginx_info(&req.nginx) },
        ) else {
            return HAB_NULL_PARAMETER;
        };
        // SAFETY: caller contract.
        let Some(upstreams) = (unsafe { upstream_list(ups, n) }) else {
            return HAB_NULL_PARAMETER;
        };
        let method = match req.method {
            HAB_API_GET => Method::Get,
            HAB_API_HEAD => Method::Head,
            HAB_API_PATCH => Method::Patch,
            HAB_API_DELETE => Method::Delete,
            HAB_API_POST => Method::Post,
            _ => Method::Other,
        };
        let request = Request {
            method,
            path: core::str::from_utf8(path).unwrap_or("\u{fffd}"),
            query: core::str::from_utf8(query).unwrap_or(""),
            html: req.flags & HAB_API_HTML != 0,
            body,
            write: req.flags & HAB_API_WRITE != 0,
            now_ms: req.now_ms,
            wall_ms: req.wall_ms,
            owner: req.owner,
            request_id,
            nginx,
        };
        // SAFETY: the caller vouches for `alive` with `alive_data`.
        let alive = unsafe { alive_fn(alive, req.alive_data) };
        let mut r = hab_api::handle(&request, &upstreams, alive);
        if r.changed && !state_file.is_empty() {
            let path = Path::new(std::ffi::OsStr::new(
                core::str::from_utf8(state_file).unwrap_or(""),
            ));
            if let Err(e) = save_state(&upstreams, path) {
                r.log = Some(format!(
                    "cannot write state file \"{}\": {e}",
                    path.display()
                ));
            }
        }
        // SAFETY: `out` is writable (checked non-NULL).
        unsafe {
            out.write(hab_api_response {
                status: u32::from(r.status),
                content_type: match r.content_type {
                    ContentType::Json => HAB_API_JSON,
                    ContentType::Prometheus => HAB_API_PROMETHEUS,
                    ContentType::Html => HAB_API_HTML_PAGE,
                    ContentType::None => HAB_API_NO_BODY,
                },
                body: buf(r.body),
                log: r
                    .log
                    .map_or(core::ptr::null_mut(), |l| buf(l.into_bytes().into())),
                notice: r
                    .notice
                    .map_or(core::ptr::null_mut(), |l| buf(l.into_bytes().into())),
            })
        };
        HAB_OK
    })
}

/// Opaque: a parsed state file (process-local heap).
#[derive(Debug)]
pub struct hab_state {
    file: StateFile,
}

/// Reads the state file at `path`. `*out_state` is NULL when the file does
/// not exist (a first start). `HAB_BAD_STATE` when it cannot be read or is
/// corrupt, with the reason in `*out_error` (when not NULL; free it).
///
/// # Safety
///
/// `path` valid for `path_len` bytes; `out_state` writable; `out_error`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hab_state_load(
    path: *const u8,
    path_len: usize,
    out_state: *mut *mut hab_state,
    out_error: *mut *mut hab_buf,
) -> hab_result {
    guard(|| {
        if out_state.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let Ok(path) = (unsafe { bytes(path, path_len) }) else {
            return HAB_NULL_PARAMETER;
        };
        let Ok(path) = core::str::from_utf8(path) else {
            return HAB_INVALID_ARGUMENT;
        };
        match StateFile::load(Path::new(path)) {
            Ok(file) => {
                let s = file.map_or(core::ptr::null_mut(), |file| {
                    Box::into_raw(Box::new(hab_state { file }))
                });
                // SAFETY: writable (checked non-NULL).
                unsafe { out_state.write(s) };
                HAB_OK
            }
            Err(e) => {
                if !out_error.is_null() {
                    // SAFETY: writable (caller contract).
                    unsafe { out_error.write(buf(e.into_bytes().into())) };
                }
                HAB_BAD_STATE
            }
        }
    })
}

/// Restores the admin state the file holds for upstream `name` into the
/// fresh zone `z`: the servers restored in `*out_applied`, the file's
/// entries for `name` that match no server in `*out_unmatched`, and, when
/// the weights from the file could not be put in force (they were dropped,
/// the configured weights serve), why in `*out_refused` (else NULL; free
/// it with `hab_buf_free`).
///
/// # Safety
///
/// `s` a live state; `z` a valid zone handle; `name` valid for `name_len`
/// bytes; `out_applied`, `out_unmatched` and `out_refused` each NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn hab_state_apply(
    s: *const hab_state,
    z: *mut hab_zone,
    name: *const u8,
    name_len: usize,
    out_applied: *mut u32,
    out_unmatched: *mut u32,
    out_refused: *mut *mut hab_buf,
) -> hab_result {
    guard(|| {
        if s.is_null() || z.is_null() {
            return HAB_NULL_PARAMETER;
        }
        // SAFETY: caller contract.
        let Ok(name) = (unsafe { bytes(name, name_len) }) else {
            return HAB_NULL_PARAMETER;
        };
        let Ok(name) = core::str::from_utf8(name) else {
            return HAB_INVALID_ARGUMENT;
        };
        // SAFETY: live state, valid zone (caller contract).
        let a = unsafe { &*s }.file.apply(name, unsafe { zone_of(z) });
        if !out_applied.is_null() {
            // SAFETY: writable (caller contract).
            unsafe { out_applied.write(u32::try_from(a.restored).unwrap_or(u32::MAX)) };
        }
        if !out_unmatched.is_null() {
            // SAFETY: writable (caller contract).
            unsafe { out_unmatched.write(u32::try_from(a.unmatched).unwrap_or(u32::MAX)) };
        }
        if !out_refused.is_null() {
            let r = a
                .refused
                .map_or(core::ptr::null_mut(), |t| buf(t.into_bytes().into()));
            // SAFETY: writable (caller contract).
            unsafe { out_refused.write(r) };
        }
        HAB_OK
    })
}

/// Counts the state file's entries whose upstream is none of the `n`
/// upstreams of `ups` (only their names are read): entries in
/// `*out_entries`, upstreams in `*out_upstreams`.
///
/// # Safety
///
/// `s` a live state; `ups` valid for `n` elements with valid names;
/// `out_entries` and `out_upstreams` writable.
#[no_mangle]
pub unsafe extern "C" fn hab_state_unclaimed(
    s: *const hab_state,
    ups: *const hab_api_upstream,
    n: usize,
    out_entries: *mut u32,
    out_upstreams: *mut u32,
) -> hab_result {
    guard(|| {
        if s.is_null()
            || (ups.is_null() && n != 0)
            || out_entries.is_null()
            || out_upstreams.is_null()
        {
            return HAB_NULL_PARAMETER;
        }
        let list: &[hab_api_upstream] = if n == 0 {
            &[]
        } else {
            // SAFETY: `n` elements (caller contract).
            unsafe { core::slice::from_raw_parts(ups, n) }
        };
        let mut names = Vec::with_capacity(list.len());
        for u in list {
            // SAFETY: valid name bytes (caller contract).
            match unsafe { bytes(u.name, u.name_len) } {
                Ok(name) => names.push(name),
                Err(_) => return HAB_NULL_PARAMETER,
            }
        }
        // SAFETY: a live state (caller contract).
        let (entries, upstreams) = unsafe { &*s }.file.unclaimed(&names);
        // SAFETY: writable (checked non-NULL).
        unsafe {
            out_entries.write(u32::try_from(entries).unwrap_or(u32::MAX));
            out_upstreams.write(u32::try_from(upstreams).unwrap_or(u32::MAX));
        }
        HAB_OK
    })
}

/// Frees a state (NULL does nothing).
///
/// # Safety
///
/// `s` is NULL or a state not yet freed.
#[no_mangle]
pub unsafe extern "C" fn hab_state_free(s: *mut hab_state) {
    guard_or((), || {
        if !s.is_null() {
            // SAFETY: made by `Box::into_raw` in `hab_state_load`.
            drop(unsafe { Box::from_raw(s) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{fixtures, hab_peer_conf, hab_upstream_conf};
    use crate::learn::{hab_learn_init, hab_learn_learn, hab_learn_size};
    use crate::{hab_buf_chunk, hab_buf_free, hab_zone_init, hab_zone_size};
    use hab_core::testing::Region;

    unsafe extern "C" fn alive(_: u64, _: *mut c_void) -> core::ffi::c_int {
        1
    }

    /// A zone of one server (`sessions` 1: it binds sessions) in its own
    /// region.
    fn zone(sessions: u32) -> (Region, *mut hab_zone) {
        let id = b"app\0a:80\x00127.0.0.1:1";
        let peer = hab_peer_conf {
            position: 0,
            ..fixtures::peer(id)
        };
        let c = hab_upstream_conf {
            sessions,
            ..fixtures::upstream(core::slice::from_ref(&peer))
        };
        let mut size = 0;
        // SAFETY: `c` and its peer live through the call.
        assert_eq!(unsafe { hab_zone_size(&c, &mut size) }, HAB_OK);
        let region = Region::new(size);
        let mut z = core::ptr::null_mut();
        // SAFETY: the region is ours, `size` bytes, 64-byte aligned.
        let rc = unsafe { hab_zone_init(&c, region.as_ptr().cast(), region.len(), &mut z) };
        assert_eq!(rc, HAB_OK);
        (region, z)
    }

    /// `GET path`, nothing else known.
    fn request(path: &str) -> hab_api_request {
        hab_api_request {
            method: HAB_API_GET,
            flags: 0,
            path: path.as_ptr(),
            path_len: path.len(),
            query: core::ptr::null(),
            query_len: 0,
            body: core::ptr::null(),
            body_len: 0,
            state_file: core::ptr::null(),
            state_file_len: 0,
            now_ms: 2,
            wall_ms: 1_796_126_400_000,
            owner: 1,
            alive: Some(alive),
            alive_data: core::ptr::null_mut(),
            request_id: core::ptr::null(),
            request_id_len: 0,
            nginx: hab_api_nginx {
                version: core::ptr::null(),
                version_len: 0,
                address: core::ptr::null(),
                address_len: 0,
                pid: 0,
                ppid: 0,
                generation: 0,
                load_wall_ms: 0,
                respawned: 0,
                stub: 0,
                reserved: 0,
                accepted: 0,
                handled: 0,
                active: 0,
                requests: 0,
                reading: 0,
                writing: 0,
                waiting: 0,
            },
        }
    }

    /// `GET path` over `ups`: the result, and the body as text.
    fn get(ups: &[hab_api_upstream], path: &str) -> (hab_result, String) {
        send(&request(path), ups)
    }

    /// `req` over `ups`: the result, and the body as text.
    fn send(req: &hab_api_request, ups: &[hab_api_upstream]) -> (hab_result, String) {
        let mut out = core::mem::MaybeUninit::<hab_api_response>::uninit();
        // SAFETY: `req` and `ups` valid (their tables live in the
        // caller's regions); `out` writable.
        let rc = unsafe { hab_api_handle(req, ups.as_ptr(), ups.len(), out.as_mut_ptr()) };
        if rc != HAB_OK {
            return (rc, String::new());
        }
        // SAFETY: written on HAB_OK.
        let out = unsafe { out.assume_init() };
        let mut body = Vec::new();
        for i in 0.. {
            let mut data = core::ptr::null();
            // SAFETY: a live buffer; `data` writable.
            let n = unsafe { hab_buf_chunk(out.body, i, &mut data) };
            if n == 0 {
                break;
            }
            // SAFETY: chunk `i`'s `n` bytes, valid until freed.
            body.extend_from_slice(unsafe { core::slice::from_raw_parts(data, n) });
        }
        // SAFETY: buffers of this answer, freed once.
        unsafe {
            hab_buf_free(out.body);
            hab_buf_free(out.log);
            hab_buf_free(out.notice);
        }
        (rc, String::from_utf8(body).unwrap())
    }

    /// The learn table and its zone's name reach the JSON; a NULL table is
    /// none, a table without its zone's name a NULL argument.
    #[test]
    fn a_learn_table_is_shown_with_its_zone_name() {
        let (_zr, z) = zone(1);
        let len = hab_learn_size(64);
        let lr = Region::new(len);
        let mut t = core::ptr::null_mut();
        // SAFETY: the region is ours, `len` bytes, 64-byte aligned.
        let rc = unsafe { hab_learn_init(lr.as_ptr().cast(), lr.len(), 60_000, &mut t) };
        assert_eq!(rc, HAB_OK);
        // SAFETY: a valid table; the id's bytes live through the call.
        let rc = unsafe { hab_learn_learn(t, b"s1".as_ptr(), 2, 7, 1, 1) };
        assert_eq!(rc, HAB_OK);
        let name = b"app";
        let zone_name = b"learnt";
        let mut up = hab_api_upstream {
            name: name.as_ptr(),
            name_len: name.len(),
            zone: z,
            learn: t,
            learn_zone: zone_name.as_ptr(),
            learn_zone_len: zone_name.len(),
        };
        let (rc, body) = get(&[up], "upstreams/app");
        assert_eq!(rc, HAB_OK);
        assert!(
            body.contains(
                r#""sessions":{"zone":"learnt","entries":1,"capacity":64,"created":1,"evicted":0,"expired":0}"#
            ),
            "{body}"
        );
        assert!(body.contains(r#""requests":0,"bound":0,"#), "{body}");
        up.learn_zone = core::ptr::null();
        assert_eq!(get(&[up], "upstreams/app").0, HAB_NULL_PARAMETER);
        up.learn = core::ptr::null();
        let (rc, body) = get(&[up], "upstreams/app");
        assert_eq!(rc, HAB_OK);
        assert!(!body.contains("sessions"), "{body}");
        // An upstream that binds no sessions: no `bound`.
        let (_zr2, z2) = zone(0);
        up.zone = z2;
        let (_, body) = get(&[up], "upstreams/app");
        assert!(
            !body.contains("bound") && body.contains("\"requests\":0"),
            "{body}"
        );
    }

    /// Each of nginx's figures reaches the API's `NginxInfo`; the counters
    /// only with `stub`; NULL or non-UTF-8 text is empty.
    #[test]
    fn nginx_figures_are_converted_field_by_field() {
        let version = b"1.28.3";
        let address = b"127.0.0.1";
        let mut n = request("").nginx;
        n.version = version.as_ptr();
        n.version_len = version.len();
        n.address = address.as_ptr();
        n.address_len = address.len();
        (n.pid, n.ppid, n.generation, n.load_wall_ms, n.respawned) =
            (11, 12, 3, 1_796_126_400_000, 2);
        (n.accepted, n.handled, n.active, n.requests) = (21, 20, 9, 40);
        (n.reading, n.writing, n.waiting) = (1, 2, 6);
        let stub = StubCounters {
            accepted: 21,
            handled: 20,
            active: 9,
            requests: 40,
            reading: 1,
            writing: 2,
            waiting: 6,
        };
        let mut want = NginxInfo {
            version: "1.28.3",
            address: "127.0.0.1",
            pid: 11,
            ppid: 12,
            generation: 3,
            load_wall_ms: 1_796_126_400_000,
            respawned: 2,
            stub: None,
        };
        // SAFETY: `n`'s text lives through the call.
        assert_eq!(unsafe { nginx_info(&n) }, Ok(want));
        n.stub = 1;
        want.stub = Some(stub);
        // SAFETY: as above.
        assert_eq!(unsafe { nginx_info(&n) }, Ok(want));
        n.address = b"\xff".as_ptr();
        n.address_len = 1;
        n.version = core::ptr::null();
        n.version_len = 0;
        want.address = "";
        want.version = "";
        // SAFETY: as above.
        assert_eq!(unsafe { nginx_info(&n) }, Ok(want));
        n.version_len = 3;
        // SAFETY: NULL with a length, refused before any read.
        assert_eq!(unsafe { nginx_info(&n) }, Err(HAB_NULL_PARAMETER));
    }

    /// The request id and nginx's figures pass through `hab_api_handle`;
    /// NULL with a length is a NULL argument.
    #[test]
    fn a_request_id_and_figures_are_taken() {
        let (_zr, z) = zone(0);
        let name = b"app";
        let up = hab_api_upstream {
            name: name.as_ptr(),
            name_len: name.len(),
            zone: z,
            learn: core::ptr::null(),
            learn_zone: core::ptr::null(),
            learn_zone_len: 0,
        };
        let id = b"0123456789abcdef0123456789abcdef";
        let version = b"1.22.1";
        let mut req = request("upstreams/app");
        req.request_id = id.as_ptr();
        req.request_id_len = id.len();
        req.nginx.version = version.as_ptr();
        req.nginx.version_len = version.len();
        req.nginx.stub = 1;
        assert_eq!(send(&req, &[up]).0, HAB_OK);
        req.request_id = core::ptr::null();
        assert_eq!(send(&req, &[up]).0, HAB_NULL_PARAMETER);
        req.request_id_len = 0;
        req.nginx.address_len = 4;
        assert_eq!(send(&req, &[up]).0, HAB_NULL_PARAMETER);
        req.nginx.address_len = 0;
        assert_eq!(send(&req, &[up]).0, HAB_OK);
    }
}
