//! Prometheus text exposition (format 0.0.4) of every upstream
//!
//! Names mirror nginx-prometheus-exporter's `nginxplus_upstream_server_*`
//! with the prefix `ha_` for ours, counters with Prometheus's `_total`
//! suffix (`nginxplus_upstream_server_requests` is
//! `ha_upstream_server_requests_total`); the state is numbered as the
//! exporter numbers it. Labels: `upstream` and `server` (the address), as
//! the exporter's. A table of learnt sessions (`ha_sticky learn`) has its
//! own `ha_upstream_sessions*` families, labelled `upstream` and `zone`;
//! a request queue (`ha_queue`) its `ha_upstream_queue_*` families and
//! the histogram `ha_upstream_queue_wait_seconds`, labelled `upstream`.
//!
//! Rendered metric by metric (each family's HELP and TYPE once, then one
//! sample per server), into a chunked [`Body`]: nothing but one server's
//! figures is held at a time.

use std::io::Write as _;

use hab_core::layout::queue::{Counters, Queue, Waits, WAIT_BOUNDS_MS, WAIT_BUCKETS};
use hab_core::learn;
use hab_core::spec::{Buckets, MAX_BUCKETS};
use hab_core::write::{PeerView, ServerState};

use crate::body::Body;
use crate::json::{self, Clock};
use crate::upstream::Upstream;

/// The exporter's number for a state.
pub fn state_number(s: ServerState) -> u8 {
    match s {
        ServerState::Up => 1,
        ServerState::Draining => 2,
        ServerState::Down => 3,
        ServerState::Unavail => 4,
        ServerState::Checking => 5,
        ServerState::Unhealthy => 6,
    }
}

/// A label value escaped for the text format: `\`, `"` and newline.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One server's figures, read from the zone once per scrape.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Where its labels (`upstream="..",server=".."`) are in its block's
    /// label bytes, and how long.
    label: (u32, u32),
    state: u8,
    active: u32,
    limit: u32,
    weight: u32,
    requests: u64,
    /// Tries bound by a session, for an upstream that binds sessions.
    bound: Option<u64>,
    responses: [u64; 5],
    sent: u64,
    received: u64,
    fails: u64,
    unavail: u64,
    downtime_ms: u64,
    header_time: Option<u64>,
    response_time: Option<u64>,
    /// Sums of the times, ms.
    header_ms: u64,
    response_ms: u64,
    /// The histograms, cumulative, for the upstream's bounds.
    response_hist: [u64; MAX_BUCKETS],
    header_hist: [u64; MAX_BUCKETS],
    checks: Option<hab_core::health::check::CheckStats>,
}

impl Sample {
    /// `sessions`: whether the upstream binds sessions; `buckets`: its
    /// latency histograms' bounds.
    fn of(v: &PeerView<'_>, sessions: bool, buckets: &Buckets) -> Sample {
        let st = &v.stats;
        Sample {
            label: (0, 0),
            state: state_number(v.state),
            active: v.active,
            limit: v.max_conns,
            weight: v.weight,
            requests: st.requests,
            bound: sessions.then_some(st.bound),
            responses: st.responses,
            sent: st.sent,
            received: st.received,
            fails: st.fails,
            unavail: st.unavail,
            downtime_ms: st.downtime_ms,
            header_time: st.header_time(),
            response_time: st.response_time(),
            header_ms: st.header_ms,
            response_ms: st.response_ms,
            response_hist: st.cumulative(buckets, false),
            header_hist: st.cumulative(buckets, true),
            checks: v.checks,
        }
    }
}

/// A sample's value: a count, or seconds from milliseconds.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(u64),
    Millis(u64),
}

/// How one family reads a server.
#[derive(Debug, Clone, Copy)]
enum Value {
    /// One sample (none when `None`).
    One(fn(&Sample) -> Option<Num>),
    /// One sample per status class (`code` label).
    Classes,
    /// A histogram of times (`_bucket` per bound and `+Inf`, `_sum`,
    /// `_count`): of the header (`true`) or the whole response.
    Histogram(bool),
}

/// One metric family.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: Value,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "ha_upstream_server_state",
        kind: "gauge",
        help: "Current state: up=1, draining=2, down=3, unavail=4, checking=5, unhealthy=6",
        value: Value::One(|s| Some(Num::Int(u64::from(s.state)))),
    },
    Family {
        name: "ha_upstream_server_active",
        kind: "gauge",
        help: "Requests in flight to the server, all workers",
        value: Value::One(|s| Some(Num::Int(u64::from(s.active)))),
    },
    Family {
        name: "ha_upstream_server_limit",
        kind: "gauge",
        help: "max_conns of the server, 0 for unlimited",
        value: Value::One(|s| Some(Num::Int(u64::from(s.limit)))),
    },
    Family {
        name: "ha_upstream_server_weight",
        kind: "gauge",
        help: "Weight in force",
        value: Value::One(|s| Some(Num::Int(u64::from(s.weight)))),
    },
    Family {
        name: "ha_upstream_server_requests_total",
        kind: "counter",
        help: "Tries sent to the server",
        value: Value::One(|s| Some(Num::Int(s.requests))),
    },
    Family {
        name: "ha_upstream_server_bound_requests_total",
        kind: "counter",
        help:
            "Tries sent to the server because a session was bound to it (upstreams with ha_sticky)",
        value: Value::One(|s| s.bound.map(Num::Int)),
    },
    Family {
        name: "ha_upstream_server_responses_total",
        kind: "counter",
        help: "Responses from the server by status class",
        value: Value::Classes,
    },
    Family {
        name: "ha_upstream_server_sent_bytes_total",
        kind: "counter",
        help: "Bytes sent to the server",
        value: Value::One(|s| Some(Num::Int(s.sent))),
    },
    Family {
        name: "ha_upstream_server_received_bytes_total",
        kind: "counter",
        help: "Bytes received from the server",
        value: Value::One(|s| Some(Num::Int(s.received))),
    },
    Family {
        name: "ha_upstream_server_response_seconds",
        kind: "histogram",
        help: "Time from the pick to the end of the response, responses only (ha_latency_buckets)",
        value: Value::Histogram(false),
    },
    Family {
        name: "ha_upstream_server_header_seconds",
        kind: "histogram",
        help: "Time from the pick to the response header, responses only (ha_latency_buckets)",
        value: Value::Histogram(true),
    },
    Family {
        name: "ha_upstream_server_sent_total",
        kind: "counter",
        help: "Bytes sent to the server (deprecated: ha_upstream_server_sent_bytes_total)",
        value: Value::One(|s| Some(Num::Int(s.sent))),
    },
    Family {
        name: "ha_upstream_server_received_total",
        kind: "counter",
        help:
            "Bytes received from the server (deprecated: ha_upstream_server_received_bytes_total)",
        value: Value::One(|s| Some(Num::Int(s.received))),
    },
    Family {
        name: "ha_upstream_server_fails_total",
        kind: "counter",
        help: "Failed tries",
        value: Value::One(|s| Some(Num::Int(s.fails))),
    },
    Family {
        name: "ha_upstream_server_unavail_total",
        kind: "counter",
        help: "Times max_fails made the server unavailable",
        value: Value::One(|s| Some(Num::Int(s.unavail))),
    },
    Family {
        name: "ha_upstream_server_downtime_seconds_total",
        kind: "counter",
        help: "Time the server spent unavailable",
        value: Value::One(|s| Some(Num::Millis(s.downtime_ms))),
    },
    Family {
        name: "ha_upstream_server_health_checks_checks_total",
        kind: "counter",
        help: "Active health checks made (servers of upstreams with ha_check)",
        value: Value::One(|s| s.checks.map(|c| Num::Int(c.checks))),
    },
    Family {
        name: "ha_upstream_server_health_checks_fails_total",
        kind: "counter",
        help: "Active health checks failed",
        value: Value::One(|s| s.checks.map(|c| Num::Int(c.fails))),
    },
    Family {
        name: "ha_upstream_server_health_checks_unhealthy_total",
        kind: "counter",
        help: "Times the server turned unhealthy",
        value: Value::One(|s| s.checks.map(|c| Num::Int(c.unhealthy))),
    },
    Family {
        name: "ha_upstream_server_health_checks_last_passed",
        kind: "gauge",
        help: "Whether the last health check passed (1) or failed (0)",
        value: Value::One(|s| {
            s.checks
                .and_then(|c| c.last_passed)
                .map(|p| Num::Int(u64::from(p)))
        }),
    },
    Family {
        name: "ha_upstream_server_health_checks_last_duration_seconds",
        kind: "gauge",
        help: "How long the last health check took",
        value: Value::One(|s| {
            s.checks
                .and_then(|c| c.last)
                .map(|d| Num::Millis(u64::from(d.duration_ms)))
        }),
    },
    Family {
        name: "ha_upstream_server_header_time",
        kind: "gauge",
        help: "Average time to the response header, milliseconds",
        value: Value::One(|s| s.header_time.map(Num::Int)),
    },
    Family {
        name: "ha_upstream_server_response_time",
        kind: "gauge",
        help: "Average time to the whole response, milliseconds",
        value: Value::One(|s| s.response_time.map(Num::Int)),
    },
];

/// One family of a table of learnt sessions: a sample per table,
/// labelled `upstream` and `zone`.
#[derive(Debug)]
struct SessionFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&learn::Stats) -> u64,
}

const SESSION_FAMILIES: &[SessionFamily] = &[
    SessionFamily {
        name: "ha_upstream_sessions",
        kind: "gauge",
        help: "Learnt sessions held (ha_sticky learn), not expired",
        value: |s| s.entries,
    },
    SessionFamily {
        name: "ha_upstream_sessions_capacity",
        kind: "gauge",
        help: "Learnt sessions the zone holds at most",
        value: |s| s.capacity,
    },
    SessionFamily {
        name: "ha_upstream_sessions_created_total",
        kind: "counter",
        help: "Learnt sessions created",
        value: |s| s.created,
    },
    SessionFamily {
        name: "ha_upstream_sessions_evicted_total",
        kind: "counter",
        help: "Learnt sessions evicted, oldest first, before they expired (the zone was full)",
        value: |s| s.evicted,
    },
    SessionFamily {
        name: "ha_upstream_sessions_expired_total",
        kind: "counter",
        help: "Learnt sessions removed after they expired",
        value: |s| s.expired,
    },
];

/// An upstream's request queue, read once per scrape.
#[derive(Debug, Clone, Copy)]
struct QueueSample {
    size: u32,
    max: u32,
    counters: Counters,
    waits: Waits,
}

impl QueueSample {
    fn of(q: Queue<'_>) -> QueueSample {
        QueueSample {
            size: q.waiting(),
            max: q.max(),
            counters: q.counters(),
            waits: q.waits(),
        }
    }
}

/// One family of a request queue (`ha_queue`): a sample per upstream
/// with a queue, labelled `upstream`.
#[derive(Debug)]
struct QueueFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&QueueSample) -> u64,
}

const QUEUE_FAMILIES: &[QueueFamily] = &[
    QueueFamily {
        name: "ha_upstream_queue_size",
        kind: "gauge",
        help: "Requests waiting in the queue (ha_queue), all workers",
        value: |q| u64::from(q.size),
    },
    QueueFamily {
        name: "ha_upstream_queue_max_size",
        kind: "gauge",
        help: "Requests the queue holds at most (ha_queue number)",
        value: |q| u64::from(q.max),
    },
    QueueFamily {
        name: "ha_upstream_queue_overflows_total",
        kind: "counter",
        help: "Requests refused because the queue was full",
        value: |q| u64::from(q.counters.overflows),
    },
    QueueFamily {
        name: "ha_upstream_queue_timeouts_total",
        kind: "counter",
        help: "Waiters whose queue timeout passed",
        value: |q| u64::from(q.counters.timeouts),
    },
    QueueFamily {
        name: "ha_upstream_queue_abandoned_total",
        kind: "counter",
        help: "Waiters whose client went away",
        value: |q| u64::from(q.counters.abandoned),
    },
    QueueFamily {
        name: "ha_upstream_queue_served_total",
        kind: "counter",
        help: "Waiters that got a server",
        value: |q| u64::from(q.counters.served),
    },
];

/// The queue's wait histogram.
const QUEUE_WAIT: (&str, &str, &str) = (
    "ha_upstream_queue_wait_seconds",
    "histogram",
    "Time the served waiters waited in the queue",
);

/// A bound in ms as seconds, shortest: `0.001`, `2.5`, `60`.
fn seconds(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:03}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

/// Samples per block of the scratch store.
const BLOCK: usize = 512;

/// Samples of one upstream in a block, with their label bytes.
#[derive(Debug, Default)]
struct Block {
    samples: Vec<Sample>,
    labels: Vec<u8>,
}

/// One upstream's samples, read once, kept in blocks of [`BLOCK`].
struct Upstream1<'a> {
    upstream: &'a Upstream<'a>,
    /// The upstream's name, escaped.
    label: String,
    /// Its learn table's zone name, escaped, and figures.
    sessions: Option<(String, learn::Stats)>,
    /// Its request queue's figures.
    queue: Option<QueueSample>,
    /// Its latency histograms' bounds as `le` label values, seconds.
    les: Vec<String>,
    blocks: Vec<Block>,
}

/// Appends `v` in decimal.
fn put_u64(line: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at..]);
}

/// Appends `n`.
fn put_num(line: &mut Vec<u8>, n: Num) {
    match n {
        Num::Int(v) => put_u64(line, v),
        Num::Millis(ms) => {
            put_u64(line, ms / 1000);
            let frac = ms % 1000;
            line.extend_from_slice(&[
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
        }
    }
}

/// Appends `upstream="U",server="ADDR"` for peer `i` to `out`.
fn put_labels(out: &mut Vec<u8>, upstream: &str, u: &Upstream<'_>, i: usize) {
    let (_, addr) = json::names(u.zone.identity(i));
    out.extend_from_slice(b"upstream=\"");
    out.extend_from_slice(upstream.as_bytes());
    out.extend_from_slice(b"\",server=\"");
    if addr.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(escape(&addr).as_bytes());
    } else {
        out.extend_from_slice(addr.as_bytes());
    }
    out.push(b'"');
}

/// Every upstream's metrics at `clock`.
pub fn render(upstreams: &[Upstream<'_>], clock: Clock) -> Body {
    let mut out = Body::new();
    let mut sorted: Vec<&Upstream<'_>> = upstreams.iter().collect();
    sorted.sort_by_key(|u| u.name);
    // One pass over each zone; every family is then written from these.
    let read: Vec<Upstream1<'_>> = sorted
        .iter()
        .map(|u| {
            let label = escape(u.name);
            let mut blocks: Vec<Block> = Vec::new();
            for i in json::order(u.zone) {
                // As the JSON: listed slots only, a reused one skipped.
                let Some(mark) = u.zone.listed(i as usize) else {
                    continue;
                };
                let Some(v) = u.zone.view(i as usize, clock.now_ms) else {
                    continue;
                };
                if blocks.last().is_none_or(|b| b.samples.len() >= BLOCK) {
                    blocks.push(Block {
                        samples: Vec::with_capacity(BLOCK),
                        labels: Vec::with_capacity(BLOCK * 48),
                    });
                }
                let b = blocks.last_mut().expect("a block was just ensured");
                let at = b.labels.len();
                put_labels(&mut b.labels, &label, u, i as usize);
                if !u.zone.slot_unchanged(i as usize, mark) {
                    b.labels.truncate(at);
                    continue;
                }
                let mut s = Sample::of(&v, u.zone.sessions(), u.zone.buckets());
                s.label = (at as u32, (b.labels.len() - at) as u32);
                b.samples.push(s);
            }
            Upstream1 {
                upstream: u,
                label,
                sessions: u
                    .learn
                    .map(|l| (escape(l.zone), l.table.stats(clock.now_ms))),
                queue: u.zone.queue().map(QueueSample::of),
                les: u
                    .zone
                    .buckets()
                    .bounds()
                    .iter()
                    .map(|&b| seconds(u64::from(b)))
                    .collect(),
                blocks,
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "# HELP ha_upstream_generation Number of the table generation serving\n\
         # TYPE ha_upstream_generation gauge"
    );
    for u in &read {
        let _ = writeln!(
            out,
            "ha_upstream_generation{{upstream=\"{}\"}} {}",
            u.label,
            u.upstream.zone.generation()
        );
    }
    for f in SESSION_FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for u in &read {
            if let Some((zone, stats)) = &u.sessions {
                let _ = writeln!(
                    out,
                    "{}{{upstream=\"{}\",zone=\"{}\"}} {}",
                    f.name,
                    u.label,
                    zone,
                    (f.value)(stats)
                );
            }
        }
    }
    for f in QUEUE_FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for u in &read {
            if let Some(q) = &u.queue {
                let _ = writeln!(
                    out,
                    "{}{{upstream=\"{}\"}} {}",
                    f.name,
                    u.label,
                    (f.value)(q)
                );
            }
        }
    }
    let (name, kind, help) = QUEUE_WAIT;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for u in &read {
        if let Some(q) = &u.queue {
            let w = &q.waits;
            for i in 0..WAIT_BUCKETS {
                let le = WAIT_BOUNDS_MS
                    .get(i)
                    .map_or("+Inf".to_owned(), |&b| seconds(b));
                let _ = writeln!(
                    out,
                    "{name}_bucket{{upstream=\"{}\",le=\"{le}\"}} {}",
                    u.label,
                    w.cumulative(i)
                );
            }
            let mut sum = Vec::with_capacity(24);
            put_num(&mut sum, Num::Millis(w.sum_ms));
            let _ = writeln!(
                out,
                "{name}_sum{{upstream=\"{}\"}} {}\n{name}_count{{upstream=\"{}\"}} {}",
                u.label,
                String::from_utf8_lossy(&sum),
                u.label,
                w.count()
            );
        }
    }
    for f in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for u in &read {
            for b in &u.blocks {
                for s in &b.samples {
                    let labels = &b.labels[s.label.0 as usize..(s.label.0 + s.label.1) as usize];
                    let sample = |line: &mut Vec<u8>, code: Option<usize>, n: Num| {
                        line.extend_from_slice(f.name.as_bytes());
                        line.push(b'{');
                        line.extend_from_slice(labels);
                        if let Some(k) = code {
                            line.extend_from_slice(b",code=\"");
                            line.push(b'1' + k as u8);
                            line.extend_from_slice(b"xx\"");
                        }
                        line.extend_from_slice(b"} ");
                        put_num(line, n);
                        line.push(b'\n');
                    };
                    // A line: name, labels, code, value (20 digits at most).
                    let room = f.name.len() + labels.len() + 64;
                    match f.value {
                        Value::One(get) => {
                            if let Some(n) = get(s) {
                                out.append_with(room, |line| sample(line, None, n));
                            }
                        }
                        Value::Classes => {
                            for (k, n) in s.responses.iter().enumerate() {
                                out.append_with(room, |line| sample(line, Some(k), Num::Int(*n)));
                            }
                        }
                        Value::Histogram(header) => {
                            let (hist, sum) = if header {
                                (&s.header_hist, s.header_ms)
                            } else {
                                (&s.response_hist, s.response_ms)
                            };
                            // Read a moment apart from the classes: a
                            // response counted in between shows in a
                            // bucket first; +Inf is never below it.
                            let last = hist[..u.les.len()].last().copied().unwrap_or(0);
                            let count = s.responses.iter().sum::<u64>().max(last);
                            let buckets =
                                u.les.iter().map(String::as_str).zip(hist.iter().copied());
                            for (le, n) in buckets.chain([("+Inf", count)]) {
                                out.append_with(room + 8, |line| {
                                    line.extend_from_slice(f.name.as_bytes());
                                    line.extend_from_slice(b"_bucket{");
                                    line.extend_from_slice(labels);
                                    line.extend_from_slice(b",le=\"");
                                    line.extend_from_slice(le.as_bytes());
                                    line.extend_from_slice(b"\"} ");
                                    put_u64(line, n);
                                    line.push(b'\n');
                                });
                            }
                            for (suffix, n) in
                                [("_sum", Num::Millis(sum)), ("_count", Num::Int(count))]
                            {
                                out.append_with(room, |line| {
                                    line.extend_from_slice(f.name.as_bytes());
                                    line.extend_from_slice(suffix.as_bytes());
                                    line.push(b'{');
                                    line.extend_from_slice(labels);
                                    line.extend_from_slice(b"} ");
                                    put_num(line, n);
                                    line.push(b'\n');
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hab_core::spec::{PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::OwnedTable;

    #[test]
    fn label_values_are_escaped() {
        for (raw, escaped) in [
            ("app", "app"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:80", "[::1]:80"),
            (r#"a"b"#, r#"a\"b"#),
            (r"a\b", r"a\\b"),
            (r#"odd"name\x"#, r#"odd\"name\\x"#),
            ("x\ny", "x\\ny"),
            (r#"\""#, r#"\\\""#),
            ("tab\tand\u{e9}", "tab\tand\u{e9}"),
            ("", ""),
        ] {
            assert_eq!(escape(raw), escaped, "{raw:?}");
        }
    }

    /// Every family has a legal, unique name, counters and only counters
    /// end in `_total`, and no HELP text needs escaping.
    #[test]
    fn families_are_well_formed() {
        let legal = |n: &str| {
            n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let mut seen = std::collections::BTreeSet::new();
        let all = FAMILIES
            .iter()
            .map(|f| (f.name, f.kind, f.help))
            .chain(SESSION_FAMILIES.iter().map(|f| (f.name, f.kind, f.help)))
            .chain(QUEUE_FAMILIES.iter().map(|f| (f.name, f.kind, f.help)))
            .chain([QUEUE_WAIT, ("ha_upstream_generation", "gauge", "")]);
        for (name, kind, help) in all {
            assert!(legal(name), "{name}");
            assert!(seen.insert(name), "{name} twice");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(!help.contains(['\\', '\n']), "{name}");
        }
    }

    /// An upstream that binds sessions has a bound count per server, and
    /// one with a learn table its `ha_upstream_sessions*` samples; the
    /// others have neither.
    #[test]
    fn bound_requests_and_learnt_sessions() {
        use hab_core::learn::{fingerprint, size_for, Sessions};
        use hab_core::testing::{OwnedAttempt, Region};
        use hab_core::{Binding, Outcome};

        let ids: [&[u8]; 2] = [b"s\0a:80\x00127.0.0.1:1", b"s\0b:80\x00127.0.0.1:2"];
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| PeerSpec {
                position: Some(k as u32),
                sid: [b"r0".as_slice(), b"r1"][k],
                ..PeerSpec::new(id)
            })
            .collect();
        let spec = |sessions| UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions,
        };
        let sticky = OwnedTable::new(&spec(true)).unwrap();
        let plain = OwnedTable::new(&spec(false)).unwrap();
        // 3 tries bound to r1, 2 balanced.
        for (k, bind) in [true, true, false, true, false].into_iter().enumerate() {
            let mut a = OwnedAttempt::new(sticky.zone(), k as u64);
            let b = if bind {
                Binding::Sid(b"r1")
            } else {
                Binding::None
            };
            assert_eq!(a.pick_bound(b, 1).unwrap().bound, bind);
            a.release(Outcome::Ok, 1).unwrap();
            a.end();
        }
        let region = Region::new(size_for(64).unwrap());
        // SAFETY: the region is ours, `len` bytes, alive past every use
        // of the table (this test).
        let table = unsafe { Sessions::init(region.as_ptr(), region.len(), 10_000) }.unwrap();
        for k in 0..3u64 {
            table.learn(fingerprint(&k.to_le_bytes()), 7, 1, true);
        }
        let ups = [
            Upstream {
                name: "plain",
                zone: plain.zone(),
                learn: None,
            },
            Upstream {
                name: "s",
                zone: sticky.zone(),
                learn: Some(crate::upstream::Learn {
                    zone: "sess\"ions",
                    table,
                }),
            },
        ];
        let clock = Clock {
            now_ms: 2,
            wall_ms: 1_796_126_400_000,
        };
        let text = String::from_utf8(render(&ups, clock).to_vec()).unwrap();
        let bound: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ha_upstream_server_bound_requests_total{"))
            .collect();
        assert_eq!(
            bound,
            [
                "ha_upstream_server_bound_requests_total{upstream=\"s\",server=\"127.0.0.1:1\"} 0",
                "ha_upstream_server_bound_requests_total{upstream=\"s\",server=\"127.0.0.1:2\"} 3",
            ],
            "{text}"
        );
        let labels = r#"{upstream="s",zone="sess\"ions"}"#;
        for (name, value) in [
            ("ha_upstream_sessions", 3),
            ("ha_upstream_sessions_capacity", 64),
            ("ha_upstream_sessions_created_total", 3),
            ("ha_upstream_sessions_evicted_total", 0),
            ("ha_upstream_sessions_expired_total", 0),
        ] {
            let line = format!("{name}{labels} {value}\n");
            assert_eq!(text.matches(&line).count(), 1, "{line}{text}");
        }
        assert!(!text.contains("upstream=\"plain\",zone"), "{text}");
        for f in SESSION_FAMILIES {
            let kind = format!(
                "# HELP {} {}\n# TYPE {} {}\n",
                f.name, f.help, f.name, f.kind
            );
            assert_eq!(text.matches(&kind).count(), 1, "{}", f.name);
        }
        // Past the timeout the entries are gone; counters stay.
        let later = Clock {
            now_ms: 20_000,
            ..clock
        };
        let text = String::from_utf8(render(&ups, later).to_vec()).unwrap();
        assert!(
            text.contains(&format!("ha_upstream_sessions{labels} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("ha_upstream_sessions_created_total{labels} 3\n")),
            "{text}"
        );
    }

    #[test]
    fn bounds_in_seconds() {
        let all: Vec<String> = WAIT_BOUNDS_MS.iter().map(|&b| seconds(b)).collect();
        assert_eq!(
            all,
            [
                "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                "10", "30", "60"
            ]
        );
        assert_eq!(seconds(1234), "1.234");
    }

    /// An upstream with a queue has its `ha_upstream_queue_*` samples and
    /// its wait histogram (cumulative buckets, sum in seconds, count),
    /// exactly; one without has none; each family's HELP and TYPE once.
    #[test]
    fn the_queue_and_its_wait_histogram() {
        use crate::json::fixtures::{busy_queue, queue_zone};
        let (queued, plain) = (busy_queue(), queue_zone(0));
        let ups = [
            Upstream {
                name: "plain",
                zone: plain.zone(),
                learn: None,
            },
            Upstream {
                name: "q",
                zone: queued.zone(),
                learn: None,
            },
        ];
        let clock = Clock {
            now_ms: 2,
            wall_ms: 1_796_126_400_000,
        };
        let text = String::from_utf8(render(&ups, clock).to_vec()).unwrap();
        let queue: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ha_upstream_queue"))
            .collect();
        let b = |le: &str, n: u32| {
            format!("ha_upstream_queue_wait_seconds_bucket{{upstream=\"q\",le=\"{le}\"}} {n}")
        };
        let mut want: Vec<String> = [
            "ha_upstream_queue_size{upstream=\"q\"} 1",
            "ha_upstream_queue_max_size{upstream=\"q\"} 3",
            "ha_upstream_queue_overflows_total{upstream=\"q\"} 1",
            "ha_upstream_queue_timeouts_total{upstream=\"q\"} 1",
            "ha_upstream_queue_abandoned_total{upstream=\"q\"} 1",
            "ha_upstream_queue_served_total{upstream=\"q\"} 2",
        ]
        .map(String::from)
        .to_vec();
        // Waits of 2 ms and 40 ms.
        for (le, n) in [
            ("0.001", 0),
            ("0.005", 1),
            ("0.01", 1),
            ("0.025", 1),
            ("0.05", 2),
            ("0.1", 2),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("2.5", 2),
            ("5", 2),
            ("10", 2),
            ("30", 2),
            ("60", 2),
            ("+Inf", 2),
        ] {
            want.push(b(le, n));
        }
        want.push("ha_upstream_queue_wait_seconds_sum{upstream=\"q\"} 0.042".into());
        want.push("ha_upstream_queue_wait_seconds_count{upstream=\"q\"} 2".into());
        assert_eq!(queue, want, "{text}");
        assert!(!text.contains("{upstream=\"plain\",le"), "{text}");
        for (name, help, kind) in QUEUE_FAMILIES
            .iter()
            .map(|f| (f.name, f.help, f.kind))
            .chain([(QUEUE_WAIT.0, QUEUE_WAIT.2, QUEUE_WAIT.1)])
        {
            let head = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            assert_eq!(text.matches(&head).count(), 1, "{name}");
        }
    }

    #[test]
    fn latency_histograms_are_cumulative_in_seconds() {
        use hab_core::layout::stats::TryInfo;
        use hab_core::testing::OwnedAttempt;
        use hab_core::Outcome;
        let peers = [PeerSpec {
            position: Some(0),
            ..PeerSpec::new(b"u\0a:80\x00127.0.0.1:1")
        }];
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        let room = hab_core::write::Room {
            capacity: 1,
            api_max: 0,
            buckets: Buckets::new(&[5, 50, 2500]).unwrap(),
        };
        let t = OwnedTable::with_room(&spec, &room).unwrap();
        let z = t.zone();
        let slot = z.claim_slot(1, |_| true).unwrap();
        // Response times 3, 5, 40, 3000 ms; headers 1, 1, 1, 60 ms; and a
        // try without a response (not in the histograms).
        for (ms, head) in [(3, 1), (5, 1), (40, 1), (3000, 60)] {
            let mut a = OwnedAttempt::with_slot(z, 100, Some(slot));
            a.pick(100).unwrap();
            let info = TryInfo {
                status: 200,
                header_ms: Some(head),
                ..TryInfo::NONE
            };
            a.release_with(Outcome::Ok, &info, 100 + ms).unwrap();
            a.end();
        }
        let mut a = OwnedAttempt::with_slot(z, 100, Some(slot));
        a.pick(100).unwrap();
        a.release_with(Outcome::Failed, &TryInfo::NONE, 200)
            .unwrap();
        a.end();
        let ups = [Upstream {
            name: "u",
            zone: z,
            learn: None,
        }];
        let clock = Clock {
            now_ms: 5000,
            wall_ms: 1_796_126_400_000,
        };
        let text = String::from_utf8(render(&ups, clock).to_vec()).unwrap();
        let l = r#"upstream="u",server="127.0.0.1:1""#;
        let want = format!(
            "ha_upstream_server_response_seconds_bucket{{{l},le=\"0.005\"}} 2\n\
             ha_upstream_server_response_seconds_bucket{{{l},le=\"0.05\"}} 3\n\
             ha_upstream_server_response_seconds_bucket{{{l},le=\"2.5\"}} 3\n\
             ha_upstream_server_response_seconds_bucket{{{l},le=\"+Inf\"}} 4\n\
             ha_upstream_server_response_seconds_sum{{{l}}} 3.048\n\
             ha_upstream_server_response_seconds_count{{{l}}} 4\n"
        );
        assert!(text.contains(&want), "{text}");
        let want = format!(
            "ha_upstream_server_header_seconds_bucket{{{l},le=\"0.005\"}} 3\n\
             ha_upstream_server_header_seconds_bucket{{{l},le=\"0.05\"}} 3\n\
             ha_upstream_server_header_seconds_bucket{{{l},le=\"2.5\"}} 4\n\
             ha_upstream_server_header_seconds_bucket{{{l},le=\"+Inf\"}} 4\n\
             ha_upstream_server_header_seconds_sum{{{l}}} 0.063\n\
             ha_upstream_server_header_seconds_count{{{l}}} 4\n"
        );
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("# TYPE ha_upstream_server_response_seconds histogram\n"));
        assert!(text.contains(&format!("ha_upstream_server_sent_bytes_total{{{l}}} 0\n")));
    }

    #[test]
    fn odd_upstream_names_are_escaped_in_every_sample() {
        let peers = [PeerSpec {
            position: Some(0),
            ..PeerSpec::new(b"odd\0a:80\x00127.0.0.1:1")
        }];
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        let ups = [Upstream {
            name: r#"odd"name\x"#,
            zone: t.zone(),
            learn: None,
        }];
        let clock = Clock {
            now_ms: 1,
            wall_ms: 1_796_126_400_000,
        };
        let text = String::from_utf8(render(&ups, clock).to_vec()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // generation, 12 single families, 5 classes, two histograms of
        // 14 bounds, +Inf, sum and count; no average header or response
        // time before a response
        assert_eq!(samples.len(), 1 + 12 + 5 + 2 * 17, "{text}");
        for l in &samples {
            assert!(l.contains(r#"{upstream="odd\"name\\x""#), "unescaped: {l}");
        }
        assert!(
            text.contains(
                "ha_upstream_server_state{upstream=\"odd\\\"name\\\\x\",server=\"127.0.0.1:1\"} 1\n"
            ),
            "{text}"
        );
        for f in FAMILIES {
            let help = format!("# HELP {} ", f.name);
            let kind = format!("# TYPE {} {}\n", f.name, f.kind);
            assert_eq!(text.matches(&help).count(), 1, "{}", f.name);
            assert_eq!(text.matches(&kind).count(), 1, "{}", f.name);
        }
    }
}
