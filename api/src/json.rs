//! JSON shapes of the API, with NGINX Plus names where the meaning is the
//! same

use std::borrow::Cow;

use hab_core::layout::queue::Queue;
use hab_core::layout::stats::{PeerStats, Recent};
use hab_core::layout::Zone;
use hab_core::spec::Buckets;
use hab_core::write::PeerView;

use crate::body::Body;
use crate::upstream::Learn;
use hab_core::Policy;
use serde::{Deserialize, Deserializer, Serialize};

/// The two clocks of a request: the zones' monotonic ms and the wall clock
/// (ms since the Unix epoch) at the same instant, to show times as dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time, ms (the zones' clock).
    pub now_ms: u64,
    /// Wall-clock time, ms since the epoch; 0 when unknown.
    pub wall_ms: u64,
}

impl Clock {
    /// A monotonic instant as a date (NGINX Plus's format for `selected`
    /// and `downstart`).
    pub fn date(&self, mono_ms: u64) -> Date {
        Date(
            self.wall_ms
                .saturating_sub(self.now_ms.saturating_sub(mono_ms)),
        )
    }
}

/// A wall-clock instant, ms since the epoch, serialized as an ISO 8601 UTC
/// date with milliseconds (formatted on the stack, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub u64);

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let b = iso8601_bytes(self.0);
        ser.serialize_str(core::str::from_utf8(&b).unwrap_or("1970-01-01T00:00:00.000Z"))
    }
}

/// `ms` since the epoch as `YYYY-MM-DDThh:mm:ss.mmmZ`.
pub fn iso8601(ms: u64) -> String {
    String::from_utf8_lossy(&iso8601_bytes(ms)).into_owned()
}

/// [`iso8601`] into 24 bytes (years past 9999 are clamped to 9999).
fn iso8601_bytes(ms: u64) -> [u8; 24] {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian), after
    // Howard Hinnant's days_from_civil inverse.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999) as u64;
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for k in (at..at + width).rev() {
            b[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, milli);
    b
}

/// Responses by status class, as NGINX Plus names them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Responses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub r1xx: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub r2xx: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub r3xx: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub r4xx: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub r5xx: u64,
    /// All of them.
    pub total: u64,
}

impl Responses {
    fn of(s: &PeerStats) -> Responses {
        let [r1xx, r2xx, r3xx, r4xx, r5xx] = s.responses;
        Responses {
            r1xx,
            r2xx,
            r3xx,
            r4xx,
            r5xx,
            total: s.responses_total(),
        }
    }
}

/// An upstream's totals over its servers (ours).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Tries sent.
    pub requests: u64,
    /// Tries sent because the request was bound to the server by a
    /// session; only for an upstream that binds sessions (`ha_sticky`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<u64>,
    /// Responses by class.
    pub responses: Responses,
    /// Bytes sent to the servers.
    pub sent: u64,
    /// Bytes received from them.
    pub received: u64,
    /// Failed tries.
    pub fails: u64,
    /// Times a server was made unavailable.
    pub unavail: u64,
    /// Requests in flight.
    pub active: u64,
    /// Percentiles of the servers' recent response times together (ours;
    /// absent when their histograms' bounds are unknown to the reader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<Percentiles>,
}

/// One server, as `GET .../servers/{id}` shows it (serialized by
/// [`Filtered`], in this order; absent options are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Server<'a> {
    /// Position in the upstream, configuration order, backups included.
    pub id: u32,
    /// The address.
    pub server: Cow<'a, str>,
    /// The `server` line's name as written.
    pub name: Cow<'a, str>,
    /// A backup server.
    pub backup: bool,
    /// Weight in force.
    pub weight: u32,
    /// Weight in the configuration.
    pub configured_weight: u32,
    /// `up`, `draining`, `down`, `unavail`, `checking`, `unhealthy`.
    pub state: &'static str,
    /// Requests in flight, all workers.
    pub active: u32,
    /// `max_conns`, 0 for unlimited.
    pub max_conns: u32,
    /// Set down (configuration or API).
    pub down: bool,
    /// Draining.
    pub drain: bool,
    /// Tries sent to the server (counted as they end).
    pub requests: u64,
    /// Of those, tries sent to it because the request was bound to it by
    /// a session (`requests - bound` were balanced); only for an upstream
    /// that binds sessions (`ha_sticky`) (ours).
    pub bound: Option<u64>,
    /// Responses by status class.
    pub responses: Responses,
    /// Bytes sent to the server.
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
    /// Failed tries.
    pub fails: u64,
    /// Times `max_fails` made it unavailable.
    pub unavail: u64,
    /// Ms spent unavailable.
    pub downtime: u64,
    /// Start of the current unavailable spell, while there is one.
    pub downstart: Option<Date>,
    /// When it was last picked.
    pub selected: Option<Date>,
    /// Average time to the response header, ms.
    pub header_time: Option<u64>,
    /// Average time to the whole response, ms.
    pub response_time: Option<u64>,
    /// The latency estimate (EWMA), ms (ours).
    pub latency: Option<f64>,
    /// Percentiles of the recent response times (ours).
    pub percentiles: Percentiles,
    /// Since when the server has been in its state, when something changed
    /// it since its zone was built (ours).
    pub state_since: Option<Date>,
    /// Active health checks, when `ha_check` is configured.
    pub health_checks: Option<HealthChecks>,
    /// When its outlier ejection ends, while it is ejected (ours).
    pub ejected_until: Option<Date>,
    /// Its slow-start share in percent of its weight, while it ramps
    /// (ours).
    pub slow_start: Option<u32>,
    /// The upstream is in panic: health ignored (ours).
    pub panic: bool,
    /// The upstream's balancing policy (ours).
    pub policy: &'static str,
    /// Number of the generation serving the upstream (ours).
    pub generation: u64,
}

/// Percentiles of a server's recent response times: the responses of the
/// last 30 to 60 seconds, from the latency histogram's buckets
/// (`ha_latency_buckets`) as Prometheus's `histogram_quantile` estimates
/// them (linear within a bucket).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// The window, ms.
    pub window: u64,
    /// Responses in it.
    pub responses: u64,
    /// Median response time, ms (`null` without responses).
    pub p50: Option<f64>,
    /// 95th percentile, ms.
    pub p95: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// Of `recent` under `buckets`.
    pub fn of(recent: &Recent, buckets: &Buckets) -> Percentiles {
        let q = |q| {
            recent
                .quantile(buckets, q)
                .map(|v| (v * 10.0).round() / 10.0)
        };
        Percentiles {
            window: recent.window_ms,
            responses: recent.responses(),
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// NGINX Plus's `health_checks` object, with the consecutive counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthChecks {
    /// Checks made.
    pub checks: u64,
    /// Checks failed.
    pub fails: u64,
    /// Times the server turned unhealthy.
    pub unhealthy: u64,
    /// Whether the last check passed (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_passed: Option<bool>,
    /// Consecutive passed checks (ours; HAProxy's `rise`).
    pub rise: u32,
    /// Consecutive failed checks (ours; HAProxy's `fall`).
    pub fall: u32,
    /// The last check's verdict, `passed` or `failed` (absent before the
    /// first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<CheckResult>,
    /// Why the last check ended as it did: `"status 503"`, `"timeout"`,
    /// `"connection refused"`, `"passed"`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<CheckReasonText>,
    /// How long the last check took, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration: Option<u64>,
    /// When the last check ended, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<u64>,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    /// It passed.
    Passed,
    /// It failed.
    Failed,
}

/// A check's reason, written as a short text (`"status 503"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReasonText(pub hab_core::health::check::CheckDetail);

impl Serialize for CheckReasonText {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&self.0.text())
    }
}

impl<'de> Deserialize<'de> for CheckReasonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hab_core::health::check::CheckDetail::parse(&text)
            .map(CheckReasonText)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown check reason {text:?}")))
    }
}

/// An upstream's table of learnt sessions (`ha_sticky learn`), as
/// `sessions` of the upstream shows it (ours).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionTable<'a> {
    /// The name of the shared memory zone that holds it.
    pub zone: &'a str,
    /// Sessions held now (learnt, not expired).
    pub entries: u64,
    /// Sessions it holds at most.
    pub capacity: u64,
    /// Sessions created.
    pub created: u64,
    /// Sessions evicted (oldest first) before they expired.
    pub evicted: u64,
    /// Sessions removed after they expired.
    pub expired: u64,
}

impl<'a> SessionTable<'a> {
    /// The figures of `learn` at `now_ms` (a pass over the table).
    pub fn of(learn: &Learn<'a>, now_ms: u64) -> SessionTable<'a> {
        let s = learn.table.stats(now_ms);
        SessionTable {
            zone: learn.zone,
            entries: s.entries,
            capacity: s.capacity,
            created: s.created,
            evicted: s.evicted,
            expired: s.expired,
        }
    }
}

/// An upstream's request queue (`ha_queue`), as `queue` of the upstream
/// shows it: NGINX Plus's `size`, `max_size` and `overflows`, then ours.
/// Counters since the zone was built (carried over a reload that
/// rebuilds it), mod 2^32; `DELETE` does not reset them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct QueueStats {
    /// Requests waiting now, all workers (exact).
    pub size: u32,
    /// Requests it holds at most (`ha_queue number`).
    pub max_size: u32,
    /// Requests refused because it was full (answered 502).
    pub overflows: u32,
    /// Waiters whose `timeout` passed (ours).
    pub timeouts: u32,
    /// Waiters whose client went away (ours).
    pub abandoned: u32,
    /// Waiters that got a server (ours).
    pub served: u32,
    /// How long the served waiters waited (ours).
    pub wait_ms: WaitMs,
}

/// The wait of the served waiters, ms: percentiles estimated from the
/// histogram that `ha_upstream_queue_wait_seconds` exposes (as
/// Prometheus's `histogram_quantile` would, to 0.1 ms; absent before
/// the first), the sum and the count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WaitMs {
    /// Median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 90th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    /// 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Sum of the waits.
    pub sum: u64,
    /// Waiters timed (served).
    pub count: u64,
}

impl QueueStats {
    /// The figures of `q` now.
    pub fn of(q: Queue<'_>) -> QueueStats {
        let c = q.counters();
        let w = q.waits();
        let p = |q: f64| w.quantile(q).map(|ms| (ms * 10.0).round() / 10.0);
        QueueStats {
            size: q.waiting(),
            max_size: q.max(),
            overflows: c.overflows,
            timeouts: c.timeouts,
            abandoned: c.abandoned,
            served: c.served,
            wait_ms: WaitMs {
                p50: p(0.5),
                p90: p(0.9),
                p99: p(0.99),
                sum: w.sum_ms,
                count: w.count(),
            },
        }
    }
}

/// An older generation that requests in flight still hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retiring {
    /// Its number.
    pub generation: u64,
    /// Requests in flight holding it, all workers.
    pub requests: u64,
}

/// An error body: `{"error": {"status", "code", "text"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// HTTP status.
    pub status: u16,
    /// Stable code, e.g. `BadRequest`.
    pub code: String,
    /// For people.
    pub text: String,
}

/// A `PATCH` body: any combination of the three fields, nothing else.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// Drain (`true`) or stop draining.
    pub drain: Option<bool>,
    /// Set down (`true`) or up.
    pub down: Option<bool>,
    /// Absent: unchanged; `null`: back to the configured weight; a number:
    /// the override (checked by the caller).
    #[serde(default, deserialize_with = "present")]
    pub weight: Option<Option<u64>>,
}

/// Tells an absent field (`None`, by `default`) from `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The policy's name in the configuration.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::RoundRobin => "round_robin",
        Policy::LeastConn => "least_conn",
        Policy::P2c => "p2c",
        Policy::Ewma { .. } => "ewma",
        Policy::Random => "random",
        Policy::Hash { .. } => "hash",
    }
}

/// `(name, address)` of a peer from its identity: nginx's module writes
/// `upstream\0server\0address`; anything else is shown whole as both.
pub fn names(identity: &[u8]) -> (Cow<'_, str>, Cow<'_, str>) {
    let text = String::from_utf8_lossy;
    let mut parts = identity.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(server), Some(addr)) => (text(server), text(addr)),
        _ => (text(identity), text(identity)),
    }
}

/// The JSON of one server of `zone`.
pub fn server<'a>(v: &PeerView<'a>, zone: Zone<'_>, clock: Clock) -> Server<'a> {
    server_with(v, zone, clock, &zone.recent(v.index, clock.now_ms))
}

/// [`server`], its recent responses read already.
fn server_with<'a>(v: &PeerView<'a>, zone: Zone<'_>, clock: Clock, recent: &Recent) -> Server<'a> {
    let (name, addr) = names(v.identity);
    let st = &v.stats;
    Server {
        id: v.position,
        server: addr,
        name,
        backup: v.backup,
        weight: v.weight,
        configured_weight: v.configured_weight,
        state: v.state.name(),
        active: v.active,
        max_conns: v.max_conns,
        down: v.down,
        drain: v.drain,
        requests: st.requests,
        bound: zone.sessions().then_some(st.bound),
        responses: Responses::of(st),
        sent: st.sent,
        received: st.received,
        fails: st.fails,
        unavail: st.unavail,
        downtime: st.downtime_ms,
        downstart: st.downstart_ms.map(|t| clock.date(t)),
        selected: st.selected_ms.map(|t| clock.date(t)),
        header_time: st.header_time(),
        response_time: st.response_time(),
        latency: v.latency_ms.map(|l| (l * 1000.0).round() / 1000.0),
        percentiles: Percentiles::of(recent, zone.buckets()),
        state_since: zone
            .state_since(v.index, clock.now_ms)
            .map(|t| clock.date(t)),
        health_checks: v.checks.map(|c| HealthChecks {
            checks: c.checks,
            fails: c.fails,
            unhealthy: c.unhealthy,
            last_passed: c.last_passed,
            rise: c.rise,
            fall: c.fall,
            last_result: c.last_passed.map(|p| {
                if p {
                    CheckResult::Passed
                } else {
                    CheckResult::Failed
                }
            }),
            last_reason: c.last.map(CheckReasonText),
            last_duration: c.last.map(|d| u64::from(d.duration_ms)),
            last_check: c.last_ms.map(|t| clock.date(t).0),
        }),
        ejected_until: v.ejected_until_ms.map(|t| clock.date(t)),
        slow_start: v.slow_start_percent,
        panic: v.panic,
        policy: policy_name(zone.policy()),
        generation: zone.generation(),
    }
}

/// Peer indices of `zone` in configuration order.
pub fn order(zone: Zone<'_>) -> Vec<u32> {
    let colds = zone.colds();
    let mut order: Vec<u32> = (0..zone.peers() as u32).collect();
    order.sort_by_key(|&i| {
        colds[i as usize]
            .position
            .load(core::sync::atomic::Ordering::Relaxed)
    });
    order
}

/// `?fields=`: the keys a reader wants. Server objects keep `id` and
/// these; upstream objects keep `name`, `peers` and these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<String>);

impl Fields {
    /// The `fields` parameter of a query string, if any (`None` when it
    /// is absent or empty: everything).
    pub fn from_query(query: &str) -> Option<Fields> {
        let value = query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == "fields")?
            .1;
        let keys: Vec<String> = value
            .split([',', '+', ' '])
            .map(|k| k.replace("%2C", ",").replace("%2c", ","))
            .filter(|k| !k.is_empty())
            .collect();
        (!keys.is_empty()).then_some(Fields(keys))
    }

    fn keeps(&self, key: &str, always: &[&str]) -> bool {
        always.contains(&key) || self.0.iter().any(|k| k == key)
    }
}

/// A server with only the keys `fields` keeps (all without).
#[derive(Debug, Clone, Copy)]
pub struct Filtered<'s, 'a> {
    /// The server.
    pub server: &'s Server<'a>,
    /// `?fields=`, if given.
    pub fields: Option<&'s Fields>,
    /// For the NGINX Plus API: `responses` gains `codes` (empty: the
    /// module counts classes, not codes).
    pub plus: bool,
}

/// [`Responses`] with NGINX Plus's `codes` object, empty.
struct PlusResponses<'r>(&'r Responses);

impl Serialize for PlusResponses<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let mut m = ser.serialize_map(Some(7))?;
        m.serialize_entry("1xx", &r.r1xx)?;
        m.serialize_entry("2xx", &r.r2xx)?;
        m.serialize_entry("3xx", &r.r3xx)?;
        m.serialize_entry("4xx", &r.r4xx)?;
        m.serialize_entry("5xx", &r.r5xx)?;
        m.serialize_entry("codes", &serde_json::Map::new())?;
        m.serialize_entry("total", &r.total)?;
        m.end()
    }
}

impl Serialize for Server<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        Filtered {
            server: self,
            fields: None,
            plus: false,
        }
        .serialize(ser)
    }
}

impl Serialize for Filtered<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let s = self.server;
        let keep = |k: &str| self.fields.is_none_or(|f| f.keeps(k, &["id"]));
        let mut m = ser.serialize_map(None)?;
        macro_rules! field {
            ($key:literal, $value:expr) => {
                if keep($key) {
                    m.serialize_entry($key, $value)?;
                }
            };
        }
        macro_rules! optional {
            ($key:literal, $value:expr) => {
                if let Some(v) = $value {
                    field!($key, &v);
                }
            };
        }
        field!("id", &s.id);
        field!("server", &s.server);
        field!("name", &s.name);
        field!("backup", &s.backup);
        field!("weight", &s.weight);
        field!("configured_weight", &s.configured_weight);
        field!("state", s.state);
        field!("active", &s.active);
        field!("max_conns", &s.max_conns);
        field!("down", &s.down);
        field!("drain", &s.drain);
        field!("requests", &s.requests);
        optional!("bound", s.bound);
        if self.plus {
            field!("responses", &PlusResponses(&s.responses));
        } else {
            field!("responses", &s.responses);
        }
        field!("sent", &s.sent);
        field!("received", &s.received);
        field!("fails", &s.fails);
        field!("unavail", &s.unavail);
        field!("downtime", &s.downtime);
        optional!("downstart", s.downstart);
        optional!("selected", s.selected);
        optional!("header_time", s.header_time);
        optional!("response_time", s.response_time);
        optional!("latency", s.latency);
        field!("percentiles", &s.percentiles);
        optional!("state_since", s.state_since);
        optional!("health_checks", s.health_checks);
        optional!("ejected_until", s.ejected_until);
        optional!("slow_start", s.slow_start);
        if s.panic {
            field!("panic", &s.panic);
        }
        field!("policy", s.policy);
        field!("generation", &s.generation);
        m.end()
    }
}

/// One upstream to render.
#[derive(Debug, Clone, Copy)]
pub struct Render<'a> {
    /// The upstream's name.
    pub name: &'a str,
    /// Its zone.
    pub zone: Zone<'a>,
    /// Its table of learnt sessions, if it has one.
    pub learn: Option<Learn<'a>>,
    /// The request's clocks.
    pub clock: Clock,
    /// `?fields=`.
    pub fields: Option<&'a Fields>,
    /// For the NGINX Plus API (`crate::plus`): Plus's `zone`,
    /// `keepalive` and `zombies` besides ours, and `codes` in each
    /// server's `responses`.
    pub plus: bool,
}

/// Appends `value` as JSON.
fn put<T: Serialize + ?Sized>(out: &mut Body, value: &T) {
    // Our types always serialize, and a Body never refuses bytes.
    let _ = serde_json::to_writer(out, value);
}

impl Render<'_> {
    /// Writes the servers as a JSON array, one at a time: each is
    /// serialized into a small scratch buffer and appended, so nothing
    /// but one server is held besides the body.
    /// Returns the servers' totals, summed on the way.
    pub fn write_peers(&self, out: &mut Body) -> Totals {
        let mut scratch = Vec::with_capacity(1024);
        let mut totals = Totals {
            bound: self.zone.sessions().then_some(0),
            ..Totals::default()
        };
        let mut recent = Recent::default();
        out.push(b"[");
        let mut first = true;
        for i in order(self.zone) {
            let i = i as usize;
            // FREE slots and idle RETIRING ones are not listed; a slot
            // reused while its row was written is skipped (its identity
            // bytes may be the next occupant's).
            let Some(mark) = self.zone.listed(i) else {
                continue;
            };
            // NGINX Plus counts a removed server whose requests still run
            // in `zombies`, never among `peers`.
            if self.plus && mark.status == hab_core::write::membership::RETIRING {
                continue;
            }
            let Some(v) = self.zone.view(i, self.clock.now_ms) else {
                continue;
            };
            let peer_recent = self.zone.recent(i, self.clock.now_ms);
            let s = server_with(&v, self.zone, self.clock, &peer_recent);
            scratch.clear();
            if !first {
                scratch.push(b',');
            }
            let _ = serde_json::to_writer(
                &mut scratch,
                &Filtered {
                    server: &s,
                    fields: self.fields,
                    plus: self.plus,
                },
            );
            if !self.zone.slot_unchanged(i, mark) {
                continue;
            }
            first = false;
            totals = add_totals(totals, &v);
            recent.add(&peer_recent);
            out.push(&scratch);
        }
        out.push(b"]");
        recent.window_ms = hab_core::layout::stats::window_ms(self.clock.now_ms);
        totals.percentiles = Some(Percentiles::of(&recent, self.zone.buckets()));
        totals
    }

    /// Writes the upstream as a JSON object.
    pub fn write(&self, out: &mut Body) {
        let z = self.zone;
        let keep = |k: &str| self.fields.is_none_or(|f| f.keeps(k, &["name", "peers"]));
        out.push(b"{\"name\":");
        put(out, self.name);
        if keep("policy") {
            out.push(b",\"policy\":");
            put(out, policy_name(z.policy()));
        }
        if keep("generation") {
            out.push(b",\"generation\":");
            put(out, &z.generation());
        }
        out.push(b",\"peers\":");
        let totals = self.write_peers(out);
        if keep("totals") {
            out.push(b",\"totals\":");
            put(out, &totals);
        }
        if let Some(learn) = self.learn.filter(|_| keep("sessions")) {
            out.push(b",\"sessions\":");
            put(out, &SessionTable::of(&learn, self.clock.now_ms));
        }
        if let Some(q) = z.queue().filter(|_| keep("queue")) {
            out.push(b",\"queue\":");
            put(out, &QueueStats::of(q));
        }
        if keep("retiring") {
            out.push(b",\"retiring\":");
            put(out, &retiring(z));
        }
        if self.plus {
            // The module holds no idle connections of its own
            // (nginx's keepalive module does, uncounted here).
            if keep("zone") {
                out.push(b",\"zone\":");
                put(out, self.name);
            }
            if keep("keepalive") {
                out.push(b",\"keepalive\":0");
            }
            if keep("zombies") {
                out.push(b",\"zombies\":");
                put(out, &zombies(z));
            }
        }
        out.push(b"}");
    }
}

fn add_totals(mut t: Totals, v: &PeerView<'_>) -> Totals {
    let s = &v.stats;
    t.requests += s.requests;
    if let Some(bound) = &mut t.bound {
        *bound += s.bound;
    }
    let r = Responses::of(s);
    t.responses.r1xx += r.r1xx;
    t.responses.r2xx += r.r2xx;
    t.responses.r3xx += r.r3xx;
    t.responses.r4xx += r.r4xx;
    t.responses.r5xx += r.r5xx;
    t.responses.total += r.total;
    t.sent += s.sent;
    t.received += s.received;
    t.fails += s.fails;
    t.unavail += s.unavail;
    t.active += u64::from(v.active);
    t
}

/// Servers gone from the upstream whose requests in flight have not all
/// ended (NGINX Plus's `zombies`).
pub fn zombies(zone: Zone<'_>) -> u32 {
    (0..zone.peers())
        .filter_map(|i| zone.listed(i))
        .filter(|m| m.status == hab_core::write::membership::RETIRING)
        .count() as u32
}

fn retiring(zone: Zone<'_>) -> Vec<Retiring> {
    zone.generations()
        .into_iter()
        .filter(|g| !g.3 && g.2 > 0)
        .map(|g| Retiring {
            generation: g.1,
            requests: g.2,
        })
        .collect()
}

/// Zones for the tests of the crate.
#[cfg(test)]
pub(crate) mod fixtures {
    use hab_core::layout::queue::{Enter, Leave, Ticket, Try};
    use hab_core::spec::{HealthSpec, PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::OwnedTable;

    fn queued(e: Enter) -> Ticket {
        match e {
            Enter::Queued { ticket, .. } => ticket,
            Enter::Full => panic!("full"),
        }
    }

    /// Upstream `q` of two servers with `ha_queue number` (0: none).
    pub(crate) fn queue_zone(number: u32) -> OwnedTable {
        let peers = [
            PeerSpec {
                position: Some(0),
                ..PeerSpec::new(b"q\0a:80\x00127.0.0.1:1")
            },
            PeerSpec {
                position: Some(1),
                ..PeerSpec::new(b"q\0b:80\x00127.0.0.1:2")
            },
        ];
        OwnedTable::new(&UpstreamSpec {
            health: HealthSpec {
                queue: number,
                ..Default::default()
            },
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    /// `queue_zone(3)` after, through the core's queue: two waiters
    /// served after 40 ms (slot 0) and 2 ms (slot 1), one timed out, one
    /// abandoned, one refused (the queue full) and one still waiting.
    /// JSON: size 1, max_size 3, overflows 1, timeouts 1, abandoned 1,
    /// served 2; waits 2 (≤ 5 ms) and 40 (≤ 50 ms): p50 5, p90 45, p99
    /// 49.5, sum 42, count 2.
    pub(crate) fn busy_queue() -> OwnedTable {
        let t = queue_zone(3);
        let q = t.zone().queue().unwrap();
        let a = queued(q.enter(0, 10));
        let b = queued(q.enter(1, 10));
        let c = queued(q.enter(2, 20));
        assert_eq!(q.enter(3, 20), Enter::Full);
        assert!(matches!(q.try_pick(a, 50, || Some(())), Try::Picked((), _)));
        assert!(matches!(q.try_pick(b, 12, || Some(())), Try::Picked((), _)));
        q.leave(c, Leave::Timeout);
        let d = queued(q.enter(0, 100));
        q.leave(d, Leave::Abandoned);
        let _waits = queued(q.enter(3, 100));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_tells_absent_from_null() {
        let p: Patch = serde_json::from_str(r#"{"drain":true}"#).unwrap();
        assert_eq!(p.weight, None);
        let p: Patch = serde_json::from_str(r#"{"weight":null}"#).unwrap();
        assert_eq!(p.weight, Some(None));
        let p: Patch = serde_json::from_str(r#"{"weight":3,"down":false}"#).unwrap();
        assert_eq!((p.weight, p.down), (Some(Some(3)), Some(false)));
        assert!(serde_json::from_str::<Patch>(r#"{"wieght":3}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"weight":-1}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"weight":1.5}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"{"drain":"yes"}"#).is_err());
        assert!(serde_json::from_str::<Patch>(r#"[1]"#).is_err());
    }

    #[test]
    fn dates_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_796_126_400_123), "2026-12-01T12:00:00.123Z");
        assert_eq!(iso8601(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        let c = Clock {
            now_ms: 10_000,
            wall_ms: 1_796_126_400_000,
        };
        assert_eq!(
            serde_json::to_string(&c.date(9_000)).unwrap(),
            "\"2026-12-01T11:59:59.000Z\""
        );
    }

    /// The queue object, exact, from a zone driven through the core.
    #[test]
    fn queue_stats_of_a_busy_queue() {
        let t = fixtures::busy_queue();
        let v = QueueStats::of(t.zone().queue().unwrap());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "{\"size\":1,\"max_size\":3,\"overflows\":1,\"timeouts\":1,\"abandoned\":1,\
             \"served\":2,\"wait_ms\":{\"p50\":5.0,\"p90\":45.0,\"p99\":49.5,\"sum\":42,\"count\":2}}"
        );
        // Before anybody was served: no percentiles.
        let t = fixtures::queue_zone(500);
        let v = QueueStats::of(t.zone().queue().unwrap());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "{\"size\":0,\"max_size\":500,\"overflows\":0,\"timeouts\":0,\"abandoned\":0,\
             \"served\":0,\"wait_ms\":{\"sum\":0,\"count\":0}}"
        );
    }

    #[test]
    fn names_from_identity() {
        assert_eq!(
            names(b"app\0backend:80\x00127.0.0.1:80"),
            ("backend:80".into(), "127.0.0.1:80".into())
        );
        assert_eq!(names(b"a"), ("a".into(), "a".into()));
    }
}
