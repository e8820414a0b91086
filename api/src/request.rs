//! One API request and its answer: what the caller hands in (method,
//! path, body, clocks, nginx's own figures) and what it gets back.

use crate::body::Body;
use crate::json::{Clock, ErrorBody, ErrorDetail};

/// Largest PATCH body accepted, bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// HTTP methods the API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: as GET.
    Head,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// POST.
    Post,
    /// Anything else.
    Other,
}

/// What a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/json`.
    Json,
    /// Prometheus text exposition, `text/plain; version=0.0.4`.
    Prometheus,
    /// `text/html`.
    Html,
    /// No body (204).
    None,
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path below the location (no query string), e.g. `upstreams/app`,
    /// as sent: each segment is percent-decoded here.
    pub path: &'a str,
    /// The query string, without `?` (empty when none).
    pub query: &'a str,
    /// The client accepts HTML (`Accept` names `text/html`).
    pub html: bool,
    /// The body (PATCH).
    pub body: &'a [u8],
    /// `ha_api write=on`.
    pub write: bool,
    /// Monotonic time, ms (the zones' clock).
    pub now_ms: u64,
    /// Wall-clock time at `now_ms`, ms since the epoch (0: unknown).
    pub wall_ms: u64,
    /// Builder lease owner for a publication (the worker's pid).
    pub owner: u64,
    /// nginx's `$request_id` (32 hex digits; empty when unknown): the
    /// NGINX Plus API's error bodies carry it.
    pub request_id: &'a str,
    /// nginx's own figures, for the NGINX Plus API's `nginx`,
    /// `processes`, `connections` and `http/requests`.
    pub nginx: NginxInfo<'a>,
}

/// What nginx knows of itself (zero or empty when unknown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NginxInfo<'a> {
    /// `NGINX_VERSION`, e.g. `1.22.1`.
    pub version: &'a str,
    /// The local address the request came in on, without port.
    pub address: &'a str,
    /// The worker's pid.
    pub pid: u64,
    /// The master's pid.
    pub ppid: u64,
    /// Configuration loads since nginx started (1: never reloaded).
    pub generation: u64,
    /// Wall-clock time the current configuration was loaded, ms since
    /// the epoch (0: unknown).
    pub load_wall_ms: u64,
    /// Workers started to replace one that died.
    pub respawned: u64,
    /// nginx's stub_status counters, when nginx has them
    /// (`--with-http_stub_status_module`).
    pub stub: Option<StubCounters>,
}

/// nginx's stub_status counters (`ngx_stat_*`), shared by all workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StubCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections handled (accepted minus those dropped).
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

impl Request<'_> {
    pub(crate) fn clock(&self) -> Clock {
        Clock {
            now_ms: self.now_ms,
            wall_ms: self.wall_ms,
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// What the body is.
    pub content_type: ContentType,
    /// The body.
    pub body: Body,
    /// A line for the error log (a refused change), if any.
    pub log: Option<String>,
    /// A line for the log at `notice`: the admin change made (what, from
    /// what to what), if any.
    pub notice: Option<String>,
    /// The admin state changed: the caller saves the state file.
    pub changed: bool,
}

pub(crate) fn ok<T: serde::Serialize>(value: &T) -> Response {
    let mut body = Body::new();
    // Writing into a Body cannot fail; serializing our types neither.
    let _ = serde_json::to_writer(&mut body, value);
    Response {
        status: 200,
        content_type: ContentType::Json,
        body,
        log: None,
        notice: None,
        changed: false,
    }
}

/// A refusal with its JSON body.
pub fn refuse(status: u16, code: &str, text: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            status,
            code: code.to_owned(),
            text: text.into(),
        },
    };
    Response {
        status,
        ..ok(&body)
    }
}

pub(crate) fn not_found(what: impl Into<String>) -> Response {
    refuse(404, "NotFound", what)
}

/// A 200 JSON answer written by `write`.
pub(crate) fn json_with(write: impl FnOnce(&mut Body)) -> Response {
    let mut body = Body::new();
    write(&mut body);
    Response {
        status: 200,
        content_type: ContentType::Json,
        body,
        log: None,
        notice: None,
        changed: false,
    }
}
