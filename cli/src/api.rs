//! Client of the `ha_api` JSON API (docs/api.md): types and HTTP calls
//!
//! HTTP is done with `ureq` (default features off: plain http, no TLS, no
//! gzip, so only a few small dependencies). It is a well-kept blocking
//! client that already handles what a hand-written `TcpStream` client would
//! have to get right — chunked and `Content-Length` bodies, keep-alive,
//! connect and overall timeouts, redirects — while `hab` only ever needs
//! a couple of requests per run, so blocking I/O is the right fit. The API
//! lives on an nginx location the operator reaches on a local or private
//! network (docs/api.md recommends `allow 127.0.0.1`), hence no TLS.
//!
//! Every call returns [`ApiError`]: [`ApiError::Unreachable`] (connection
//! refused or reset, timeout, DNS) maps to exit code 2, [`ApiError::Refused`]
//! (the API answered 4xx/5xx; its JSON `error.text` is kept),
//! [`ApiError::BadAnswer`] (not HTTP, not UTF-8, not the documented JSON,
//! too large) and [`ApiError::BadUrl`] to exit code 1.
//!
//! The overall deadline is kept by `Deadline`, a transport wrapped
//! around ureq's TCP one: ureq's own `timeout_global` waits at least 1 s
//! for each read once it has expired, so a peer that sends a byte every
//! half second kept a call alive for ever. (ureq's `unversioned`
//! transport API is outside its semver promise: a ureq upgrade must
//! re-check it; `a_dripping_answer_ends_at_the_call_timeout` would fail.)

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, TcpConnector, Transport,
};

/// Connect timeout of every call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-call timeout (connect, send, receive).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read: 1 GiB, about 1,000 bytes for each of the
/// 1,048,576 servers an upstream may have (a server with every statistic
/// takes about 360 bytes, `?fields=` fewer).
pub const MAX_ANSWER: u64 = 1 << 30;

/// The fields `hab status` and `hab top` draw, asked with `?fields=` so a
/// large upstream's answer stays small.
pub const TABLE_FIELDS: &str = "policy,generation,server,name,backup,weight,\
configured_weight,state,active,max_conns,down,drain,requests,bound,responses,\
fails,unavail,response_time,percentiles,sessions,queue";

/// One upstream as `GET upstreams/{name}` answers it.
///
/// Every field has a default and unknown fields are ignored, so an older
/// or newer `ha_api` still parses; the statistics (`totals`, and those of
/// [`Server`]) are `None` when the API does not send them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Upstream {
    /// Upstream name.
    #[serde(default)]
    pub name: String,
    /// Balancing policy.
    #[serde(default)]
    pub policy: String,
    /// Table generation now serving.
    #[serde(default)]
    pub generation: u64,
    /// Servers in id order.
    #[serde(default)]
    pub peers: Vec<Server>,
    /// Statistics of all servers together.
    #[serde(default, deserialize_with = "lenient")]
    pub totals: Option<Totals>,
    /// Its table of learnt sessions (`ha_sticky learn`), if it has one.
    #[serde(default, deserialize_with = "lenient")]
    pub sessions: Option<Sessions>,
    /// Its request queue (`ha_queue`), if it has one.
    #[serde(default, deserialize_with = "lenient")]
    pub queue: Option<Queue>,
}

/// `queue` of an upstream: its request queue (`ha_queue`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Queue {
    /// Requests waiting now.
    #[serde(default, deserialize_with = "lenient")]
    pub size: Option<u64>,
    /// Requests it holds at most.
    #[serde(default, deserialize_with = "lenient")]
    pub max_size: Option<u64>,
    /// Requests refused: the queue was full.
    #[serde(default, deserialize_with = "lenient")]
    pub overflows: Option<u64>,
    /// Waiters whose timeout passed.
    #[serde(default, deserialize_with = "lenient")]
    pub timeouts: Option<u64>,
    /// Waiters whose client went away.
    #[serde(default, deserialize_with = "lenient")]
    pub abandoned: Option<u64>,
    /// Waiters that got a server.
    #[serde(default, deserialize_with = "lenient")]
    pub served: Option<u64>,
    /// How long the served waiters waited.
    #[serde(default, deserialize_with = "lenient")]
    pub wait_ms: Option<WaitMs>,
}

/// `wait_ms` of a queue: percentiles (absent before the first served
/// waiter), sum and count, ms.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct WaitMs {
    /// Median.
    #[serde(default, deserialize_with = "lenient")]
    pub p50: Option<f64>,
    /// 90th percentile.
    #[serde(default, deserialize_with = "lenient")]
    pub p90: Option<f64>,
    /// 99th percentile.
    #[serde(default, deserialize_with = "lenient")]
    pub p99: Option<f64>,
    /// Sum of the waits.
    #[serde(default, deserialize_with = "lenient")]
    pub sum: Option<u64>,
    /// Waiters timed.
    #[serde(default, deserialize_with = "lenient")]
    pub count: Option<u64>,
}

/// `sessions` of an upstream: its table of learnt sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Sessions {
    /// The name of the zone holding the table.
    #[serde(default)]
    pub zone: String,
    /// Sessions held now.
    #[serde(default, deserialize_with = "lenient")]
    pub entries: Option<u64>,
    /// Sessions the table holds at most.
    #[serde(default, deserialize_with = "lenient")]
    pub capacity: Option<u64>,
    /// Sessions created.
    #[serde(default, deserialize_with = "lenient")]
    pub created: Option<u64>,
    /// Sessions evicted before they expired (the table was full).
    #[serde(default, deserialize_with = "lenient")]
    pub evicted: Option<u64>,
    /// Sessions removed after they expired.
    #[serde(default, deserialize_with = "lenient")]
    pub expired: Option<u64>,
}

/// Responses by status class (`responses` of a server or of `totals`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Responses {
    /// 1xx answers.
    #[serde(rename = "1xx", default)]
    pub r1xx: u64,
    /// 2xx answers.
    #[serde(rename = "2xx", default)]
    pub r2xx: u64,
    /// 3xx answers.
    #[serde(rename = "3xx", default)]
    pub r3xx: u64,
    /// 4xx answers.
    #[serde(rename = "4xx", default)]
    pub r4xx: u64,
    /// 5xx answers.
    #[serde(rename = "5xx", default)]
    pub r5xx: u64,
    /// All answers.
    #[serde(default)]
    pub total: u64,
}

/// `totals` of an upstream: its servers' counters summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Totals {
    /// Tries sent.
    #[serde(default, deserialize_with = "lenient")]
    pub requests: Option<u64>,
    /// Tries sent because a session was bound to the server (only for an
    /// upstream that binds sessions).
    #[serde(default, deserialize_with = "lenient")]
    pub bound: Option<u64>,
    /// Answers by status class.
    #[serde(default, deserialize_with = "lenient")]
    pub responses: Option<Responses>,
    /// Failed tries.
    #[serde(default, deserialize_with = "lenient")]
    pub fails: Option<u64>,
    /// Times a server became unavailable.
    #[serde(default, deserialize_with = "lenient")]
    pub unavail: Option<u64>,
    /// Requests in flight.
    #[serde(default, deserialize_with = "lenient")]
    pub active: Option<u64>,
}

/// An optional statistic: absent, `null`, or of an unexpected type all
/// read as `None`, so a change in the API's statistics never makes `hab`
/// refuse an answer whose core fields are fine.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Server {
    /// Position in the upstream, from 0.
    pub id: u32,
    /// The address.
    pub server: String,
    /// The `server` line's name as written.
    #[serde(default)]
    pub name: String,
    /// A backup server.
    #[serde(default)]
    pub backup: bool,
    /// Weight in force.
    #[serde(default)]
    pub weight: u32,
    /// Weight from the configuration.
    #[serde(default)]
    pub configured_weight: Option<u32>,
    /// `up`, `draining`, `down`, `unavail`, ...
    #[serde(default)]
    pub state: String,
    /// Requests in flight, all workers together.
    #[serde(default)]
    pub active: u64,
    /// 0 for unlimited.
    #[serde(default)]
    pub max_conns: u64,
    /// Admin down.
    #[serde(default)]
    pub down: bool,
    /// Admin drain.
    #[serde(default)]
    pub drain: bool,
    /// Tries sent to this server (counted as they end).
    #[serde(default, deserialize_with = "lenient")]
    pub requests: Option<u64>,
    /// Of those, tries sent because a session was bound to it; absent
    /// unless the upstream binds sessions (`ha_sticky`).
    #[serde(default, deserialize_with = "lenient")]
    pub bound: Option<u64>,
    /// Answers by status class.
    #[serde(default, deserialize_with = "lenient")]
    pub responses: Option<Responses>,
    /// Failed tries (errors, timeouts, `proxy_next_upstream` statuses).
    #[serde(default, deserialize_with = "lenient")]
    pub fails: Option<u64>,
    /// Times `max_fails` made it unavailable.
    #[serde(default, deserialize_with = "lenient")]
    pub unavail: Option<u64>,
    /// Milliseconds spent unavailable.
    #[serde(default, deserialize_with = "lenient")]
    pub downtime: Option<u64>,
    /// Last time it was picked (RFC 3339), absent if never.
    #[serde(default, deserialize_with = "lenient")]
    pub selected: Option<String>,
    /// Average milliseconds to the response header.
    #[serde(default, deserialize_with = "lenient")]
    pub header_time: Option<f64>,
    /// Average milliseconds to the whole response.
    #[serde(default, deserialize_with = "lenient")]
    pub response_time: Option<f64>,
    /// Bytes sent to the server.
    #[serde(default, deserialize_with = "lenient")]
    pub sent: Option<u64>,
    /// Bytes received from the server.
    #[serde(default, deserialize_with = "lenient")]
    pub received: Option<u64>,
    /// The EWMA latency estimate in milliseconds.
    #[serde(default, deserialize_with = "lenient")]
    pub latency: Option<f64>,
    /// Percentiles of the recent response times (the last 30 to 60 s).
    #[serde(default, deserialize_with = "lenient")]
    pub percentiles: Option<Percentiles>,
}

/// Percentiles of a server's recent response times, ms (`null` without
/// responses in the window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Percentiles {
    /// The window, ms.
    #[serde(default)]
    pub window: u64,
    /// Responses in it.
    #[serde(default)]
    pub responses: u64,
    /// Median.
    #[serde(default)]
    pub p50: Option<f64>,
    /// 95th percentile.
    #[serde(default)]
    pub p95: Option<f64>,
    /// 99th percentile.
    #[serde(default)]
    pub p99: Option<f64>,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Nothing answered: connection refused, timeout, unknown host.
    Unreachable(String),
    /// The API answered with an error status.
    Refused {
        /// HTTP status.
        status: u16,
        /// `error.code` of the JSON body, when there was one.
        code: Option<String>,
        /// `error.text` of the JSON body, or the body itself.
        text: String,
    },
    /// The answer is not what docs/api.md describes.
    BadAnswer(String),
    /// The URL cannot be used (not `http://`, no host).
    BadUrl(String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unreachable(m) => write!(f, "API unreachable: {m}"),
            ApiError::Refused { status, code, text } => {
                write!(f, "API refused ({status}")?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                write!(f, "): {text}")
            }
            ApiError::BadAnswer(m) | ApiError::BadUrl(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApiError {}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// The refusal for an error `status` and its `body` (docs/api.md Errors).
pub fn refusal(status: u16, body: &str) -> ApiError {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) => ApiError::Refused {
            status,
            code: b.error.code,
            text: b.error.text.unwrap_or_else(|| "(no text)".to_owned()),
        },
        Err(_) => {
            let t = body.trim();
            let mut text: String = t.chars().take(200).collect();
            if text.is_empty() {
                text = "(empty body)".to_owned();
            } else if text.len() < t.len() {
                text.push_str("...");
            }
            ApiError::Refused {
                status,
                code: None,
                text,
            }
        }
    }
}

/// Percent-encodes a path segment (an upstream name) for the URL.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The end of the call under way, shared by a [`Client`] and the
/// transports its agent opens (`None` between calls).
type Due = Arc<Mutex<Option<Instant>>>;

/// A connector that wraps ureq's TCP transport in a [`Deadline`].
#[derive(Debug)]
struct DeadlineConnector(Due);

impl<In: Transport> Connector<In> for DeadlineConnector {
    type Out = Deadline<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| Deadline {
            inner,
            due: Arc::clone(&self.0),
        }))
    }
}

/// A transport whose every wait ends at the call's deadline: past it, a
/// read or write fails with a timeout whatever ureq asked for.
#[derive(Debug)]
struct Deadline<T> {
    inner: T,
    due: Due,
}

impl<T: Transport> Deadline<T> {
    /// `timeout` cut to what is left of the call; an error when nothing is.
    fn cut(&self, timeout: NextTimeout) -> Result<NextTimeout, ureq::Error> {
        let due = *self.due.lock().unwrap_or_else(|e| e.into_inner());
        let Some(due) = due else {
            return Ok(timeout);
        };
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ureq::Error::Timeout(ureq::Timeout::Global));
        }
        let left = ureq::unversioned::transport::time::Duration::from(left);
        Ok(NextTimeout {
            after: timeout.after.min(left),
            reason: timeout.reason,
        })
    }
}

impl<T: Transport> Transport for Deadline<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = self.cut(timeout)?;
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = self.cut(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

/// A client for one `ha_api` location. A client and its clones share one
/// call deadline: make the calls of one from one thread at a time (as
/// `hab` does).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    due: Due,
}

impl Client {
    /// A client for the API whose location is `base`, e.g.
    /// `http://127.0.0.1:8080/api` (a trailing slash is fine).
    pub fn new(base: &str) -> Result<Client, ApiError> {
        let trimmed = base.trim().trim_end_matches('/');
        let rest = if let Some(rest) = trimmed.strip_prefix("http://") {
            rest
        } else if trimmed.starts_with("https://") {
            return Err(ApiError::BadUrl(format!(
                "{base}: https is not supported; hab speaks plain http to the ha_api location"
            )));
        } else {
            return Err(ApiError::BadUrl(format!(
                "{base}: the URL must start with http:// (e.g. http://127.0.0.1:8080/api)"
            )));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ApiError::BadUrl(format!("{base}: the URL has no host")));
        }
        check_authority(base, trimmed)?;
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .http_status_as_error(false)
            .build();
        let due: Due = Arc::default();
        let connector =
            ().chain(TcpConnector::default())
                .chain(DeadlineConnector(Arc::clone(&due)));
        let agent = ureq::Agent::with_parts(
            config,
            connector,
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        Ok(Client {
            base: trimmed.to_owned(),
            agent,
            due,
        })
    }

    /// The base URL without trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Full URL of `path` (relative to the location).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// `GET upstreams?fields=...`: every upstream by name, with the
    /// fields of [`TABLE_FIELDS`] (what `hab status` and `hab top` draw:
    /// about a third of the whole answer).
    pub fn upstreams(&self) -> Result<BTreeMap<String, Upstream>, ApiError> {
        let path = format!("upstreams?fields={TABLE_FIELDS}");
        let body = self.call("GET", &path, None)?;
        let mut map: BTreeMap<String, Upstream> = parse_json(&body, "upstreams")?;
        drop(body);
        name_upstreams(&mut map);
        Ok(map)
    }

    /// `GET upstreams`: the answer as the API sent it (every field, also
    /// those `hab` does not know), checked to be a JSON object.
    pub fn upstreams_json(&self) -> Result<serde_json::Value, ApiError> {
        let body = self.call("GET", "upstreams", None)?;
        let raw: serde_json::Value = parse_json(&body, "upstreams")?;
        if !raw.is_object() {
            return Err(ApiError::BadAnswer(
                "unexpected answer to upstreams: not a JSON object".to_owned(),
            ));
        }
        Ok(raw)
    }

    /// `GET upstreams`: every upstream by name, and the answer as the API
    /// sent it (every field, also those `hab` does not know).
    pub fn upstreams_with_json(
        &self,
    ) -> Result<(BTreeMap<String, Upstream>, serde_json::Value), ApiError> {
        let body = self.call("GET", "upstreams", None)?;
        let raw: serde_json::Value = parse_json(&body, "upstreams")?;
        drop(body);
        let mut map: BTreeMap<String, Upstream> = serde_json::from_value(raw.clone())
            .map_err(|e| ApiError::BadAnswer(format!("unexpected answer to upstreams: {e}")))?;
        name_upstreams(&mut map);
        Ok((map, raw))
    }

    /// `GET upstreams/{name}`.
    pub fn upstream(&self, name: &str) -> Result<Upstream, ApiError> {
        let path = format!("upstreams/{}", segment(name));
        let mut u: Upstream = parse_json(&self.call("GET", &path, None)?, &path)?;
        if u.name.is_empty() {
            u.name = name.to_owned();
        }
        Ok(u)
    }

    /// `GET upstreams/{name}/servers/{id}`.
    pub fn server(&self, upstream: &str, id: u32) -> Result<Server, ApiError> {
        let path = format!("upstreams/{}/servers/{id}", segment(upstream));
        parse_json(&self.call("GET", &path, None)?, &path)
    }

    /// `PATCH upstreams/{name}/servers/{id}` with `body` (a JSON object);
    /// returns the server after the change.
    pub fn patch_server(
        &self,
        upstream: &str,
        id: u32,
        body: &serde_json::Value,
    ) -> Result<Server, ApiError> {
        let path = format!("upstreams/{}/servers/{id}", segment(upstream));
        // 409: another change is being applied, or older table generations
        // still serve requests in flight; both pass in moments. A few
        // bounded retries (about 1.5 s in all), then the refusal is shown.
        let mut wait = std::time::Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match self.call("PATCH", &path, Some(&body.to_string())) {
                Err(ApiError::Refused { status: 409, .. }) if tries < 5 => {
                    std::thread::sleep(wait);
                    wait *= 2;
                    tries += 1;
                }
                r => return parse_json(&r?, &path),
            }
        }
    }

    /// `POST 9/http/upstreams/{name}/servers` (the NGINX Plus API) with
    /// `body`: adds a server; returns its configuration object.
    pub fn add_server(
        &self,
        upstream: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let path = format!("9/http/upstreams/{}/servers", segment(upstream));
        self.retry_busy(|| self.call("POST", &path, Some(&body.to_string())))
            .and_then(|b| parse_json(&b, &path))
    }

    /// `DELETE 9/http/upstreams/{name}/servers/{id}` (the NGINX Plus
    /// API): removes a server added through the API; returns the servers
    /// left.
    pub fn remove_server(&self, upstream: &str, id: u32) -> Result<serde_json::Value, ApiError> {
        let path = format!("9/http/upstreams/{}/servers/{id}", segment(upstream));
        self.retry_busy(|| self.call("DELETE", &path, None))
            .and_then(|b| parse_json(&b, &path))
    }

    /// `call` again after a 409 (another change is being applied, or
    /// older generations still serve requests in flight: both pass in
    /// moments), a few bounded times (about 1.5 s in all).
    fn retry_busy(&self, call: impl Fn() -> Result<String, ApiError>) -> Result<String, ApiError> {
        let mut wait = std::time::Duration::from_millis(50);
        let mut tries = 0;
        loop {
            match call() {
                Err(ApiError::Refused {
                    status: 409, code, ..
                }) if tries < 5 && code.as_deref() != Some("EntryExists") => {
                    std::thread::sleep(wait);
                    wait *= 2;
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// One request, whole within [`CALL_TIMEOUT`]; the body of a 2xx
    /// answer, or the error.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, ApiError> {
        let url = self.url(path);
        let set = |v| *self.due.lock().unwrap_or_else(|e| e.into_inner()) = v;
        set(Some(Instant::now() + CALL_TIMEOUT));
        let result = self.call_inner(&url, method, body);
        set(None);
        result
    }

    fn call_inner(&self, url: &str, method: &str, body: Option<&str>) -> Result<String, ApiError> {
        let result = match (method, body) {
            ("PATCH", Some(b)) => self
                .agent
                .patch(url)
                .content_type("application/json")
                .send(b),
            ("POST", Some(b)) => self
                .agent
                .post(url)
                .content_type("application/json")
                .send(b),
            ("DELETE", _) => self.agent.delete(url).call(),
            _ => self.agent.get(url).call(),
        };
        let mut resp = result.map_err(|e| transport_error(url, e))?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        resp.body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| transport_error(url, ureq::Error::from(e)))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| ApiError::BadAnswer(format!("unexpected answer from {url}: {e}")))?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(refusal(status, &text))
        }
    }
}

/// Names each upstream after its key when the answer left `name` out.
fn name_upstreams(map: &mut BTreeMap<String, Upstream>) {
    for (name, u) in map {
        if u.name.is_empty() {
            u.name.clone_from(name);
        }
    }
}

/// Refuses a URL ureq would misread or fail on only at the first call:
/// one `http::Uri` rejects, or a port that is not 1..=65535 (ureq reads
/// `:99999` as another port).
fn check_authority(base: &str, url: &str) -> Result<(), ApiError> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| ApiError::BadUrl(format!("{base}: bad URL: {e}")))?;
    let Some(auth) = uri.authority() else {
        return Err(ApiError::BadUrl(format!("{base}: the URL has no host")));
    };
    let host_end = auth.as_str().rfind(']').unwrap_or(0);
    if let Some((_, port)) = auth.as_str()[host_end..].rsplit_once(':') {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(ApiError::BadUrl(format!(
                    "{base}: bad port {port:?}: give 1 to 65535"
                )))
            }
        }
    }
    if auth.host().is_empty() {
        return Err(ApiError::BadUrl(format!("{base}: the URL has no host")));
    }
    Ok(())
}

/// What a failed call is: unreachable (exit code 2) only when no answer
/// came (refused, reset, timeout, unknown host); a URL ureq cannot use is
/// [`ApiError::BadUrl`], an answer that is not HTTP or too large
/// [`ApiError::BadAnswer`] (exit code 1, as docs/hab.md says).
fn transport_error(url: &str, e: ureq::Error) -> ApiError {
    match e {
        ureq::Error::BadUri(m) => ApiError::BadUrl(format!("{url}: bad URL: {m}")),
        ureq::Error::Http(m) => ApiError::BadUrl(format!("{url}: bad URL: {m}")),
        ureq::Error::Timeout(_) => ApiError::Unreachable(format!(
            "{url}: no answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
        ureq::Error::BodyExceedsLimit(n) => {
            ApiError::BadAnswer(format!("{url}: answer larger than {n} bytes"))
        }
        ureq::Error::Protocol(m) => {
            ApiError::BadAnswer(format!("{url}: the answer is not HTTP: {m}"))
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            ApiError::BadAnswer(format!("{url}: unexpected answer: {io}"))
        }
        other
        @ (ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed) => {
            ApiError::Unreachable(format!("{url}: {other}"))
        }
        other => ApiError::BadAnswer(format!("{url}: {other}")),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(body)
        .map_err(|e| ApiError::BadAnswer(format!("unexpected answer to {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reads_the_json_error() {
        let e = refusal(
            400,
            r#"{"error": {"status": 400, "code": "BadRequest", "text": "unknown field \"wieght\""}}"#,
        );
        assert_eq!(
            e.to_string(),
            "API refused (400 BadRequest): unknown field \"wieght\""
        );
        let e = refusal(502, "<html>bad gateway</html>");
        assert_eq!(e.to_string(), "API refused (502): <html>bad gateway</html>");
        assert_eq!(
            refusal(500, "").to_string(),
            "API refused (500): (empty body)"
        );
    }

    #[test]
    fn base_urls() {
        let c = Client::new("http://127.0.0.1:8080/api/").unwrap();
        assert_eq!(c.url("upstreams"), "http://127.0.0.1:8080/api/upstreams");
        let c = Client::new("http://127.0.0.1:8080/api").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8080/api");
        for bad in ["https://x/api", "127.0.0.1:8080/api", "http://", "ftp://x"] {
            assert!(
                matches!(Client::new(bad), Err(ApiError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn statistics_are_optional_and_lenient() {
        let s: Server = serde_json::from_str(r#"{"id": 0, "server": "a:1"}"#).unwrap();
        assert_eq!(
            (s.requests, s.responses, s.response_time),
            (None, None, None)
        );
        let s: Server = serde_json::from_str(
            r#"{"id": 0, "server": "a:1", "requests": null, "fails": "many",
                "responses": {"5xx": 2}, "response_time": 1.5, "unavail": 3,
                "something_new": {"x": [1]}}"#,
        )
        .unwrap();
        assert_eq!(s.requests, None);
        assert_eq!(s.fails, None);
        assert_eq!(s.unavail, Some(3));
        assert_eq!(s.response_time, Some(1.5));
        let r = s.responses.unwrap();
        assert_eq!((r.r5xx, r.total), (2, 0));
        let u: Upstream =
            serde_json::from_str(r#"{"peers": [], "totals": {"requests": 9, "active": -1}}"#)
                .unwrap();
        let t = u.totals.unwrap();
        assert_eq!((t.requests, t.active), (Some(9), None));
        // the core of a server is still required
        assert!(serde_json::from_str::<Server>(r#"{"server": "a:1"}"#).is_err());
    }

    #[test]
    fn names_are_encoded() {
        assert_eq!(segment("app"), "app");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn connection_refused_is_unreachable() {
        // Bind then drop a listener: the port is free and refuses.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Client::new(&format!("http://127.0.0.1:{port}/api")).unwrap();
        match c.upstreams() {
            Err(ApiError::Unreachable(m)) => assert!(m.contains("upstreams"), "{m}"),
            other => panic!("want Unreachable, got {other:?}"),
        }
    }
}
