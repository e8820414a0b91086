//! Prometheus text exposition (format 0.0.4) of every upstream
//!
//! Names mirror nginx-prometheus-exporter's `nginxplus_upstream_server_*`
//! with the prefix `ha_` for ours, counters with Prometheus's `_total`
//! suffix (`nginxplus_upstream_server_requests` is
//! `ha_upstream_server_requests_total`); the state is numbered as the
//! exporter numbers it. Labels: `upstream` and `server` (the address), as
//! the exporter's.
//!
//! Rendered metric by metric (each family's HELP and TYPE once, then one
//! sample per server), into a chunked [`Body`]: nothing but one server's
//! figures is held at a time.

use std::io::Write as _;

use hab_core::table::{PeerView, ServerState};

use crate::body::Body;
use crate::json::{self, Clock};
use crate::route::Upstream;

/// The exporter's number for a state.
pub fn state_number(s: ServerState) -> u8 {
    match s {
        ServerState::Up => 1,
        ServerState::Draining => 2,
        ServerState::Down => 3,
        ServerState::Unavail => 4,
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

/// How one family reads a server.
enum Value {
    /// One sample.
    One(fn(&PeerView<'_>) -> Option<f64>),
    /// One sample per status class (`code` label).
    Classes,
}

/// One metric family.
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
        value: Value::One(|v| Some(f64::from(state_number(v.state)))),
    },
    Family {
        name: "ha_upstream_server_active",
        kind: "gauge",
        help: "Requests in flight to the server, all workers",
        value: Value::One(|v| Some(f64::from(v.active))),
    },
    Family {
        name: "ha_upstream_server_limit",
        kind: "gauge",
        help: "max_conns of the server, 0 for unlimited",
        value: Value::One(|v| Some(f64::from(v.max_conns))),
    },
    Family {
        name: "ha_upstream_server_weight",
        kind: "gauge",
        help: "Weight in force",
        value: Value::One(|v| Some(f64::from(v.weight))),
    },
    Family {
        name: "ha_upstream_server_requests_total",
        kind: "counter",
        help: "Tries sent to the server",
        value: Value::One(|v| Some(v.stats.requests as f64)),
    },
    Family {
        name: "ha_upstream_server_responses_total",
        kind: "counter",
        help: "Responses from the server by status class",
        value: Value::Classes,
    },
    Family {
        name: "ha_upstream_server_sent_total",
        kind: "counter",
        help: "Bytes sent to the server",
        value: Value::One(|v| Some(v.stats.sent as f64)),
    },
    Family {
        name: "ha_upstream_server_received_total",
        kind: "counter",
        help: "Bytes received from the server",
        value: Value::One(|v| Some(v.stats.received as f64)),
    },
    Family {
        name: "ha_upstream_server_fails_total",
        kind: "counter",
        help: "Failed tries",
        value: Value::One(|v| Some(v.stats.fails as f64)),
    },
    Family {
        name: "ha_upstream_server_unavail_total",
        kind: "counter",
        help: "Times max_fails made the server unavailable",
        value: Value::One(|v| Some(v.stats.unavail as f64)),
    },
    Family {
        name: "ha_upstream_server_downtime_seconds_total",
        kind: "counter",
        help: "Time the server spent unavailable",
        value: Value::One(|v| Some(v.stats.downtime_ms as f64 / 1000.0)),
    },
    Family {
        name: "ha_upstream_server_header_time",
        kind: "gauge",
        help: "Average time to the response header, milliseconds",
        value: Value::One(|v| v.stats.header_time().map(|t| t as f64)),
    },
    Family {
        name: "ha_upstream_server_response_time",
        kind: "gauge",
        help: "Average time to the whole response, milliseconds",
        value: Value::One(|v| v.stats.response_time().map(|t| t as f64)),
    },
];

/// Every upstream's metrics at `clock`.
pub fn render(upstreams: &[Upstream<'_>], clock: Clock) -> Body {
    let mut out = Body::new();
    let mut sorted: Vec<&Upstream<'_>> = upstreams.iter().collect();
    sorted.sort_by_key(|u| u.name);
    let _ = writeln!(
        out,
        "# HELP ha_upstream_generation Number of the table generation serving\n\
         # TYPE ha_upstream_generation gauge"
    );
    for u in &sorted {
        let _ = writeln!(
            out,
            "ha_upstream_generation{{upstream=\"{}\"}} {}",
            escape(u.name),
            u.zone.generation()
        );
    }
    for f in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for u in &sorted {
            let upstream = escape(u.name);
            for v in json::views(u.zone, clock.now_ms) {
                let (_, addr) = json::names(v.identity);
                let labels = format!("upstream=\"{upstream}\",server=\"{}\"", escape(&addr));
                match f.value {
                    Value::One(get) => {
                        if let Some(x) = get(&v) {
                            let _ = writeln!(out, "{}{{{labels}}} {x}", f.name);
                        }
                    }
                    Value::Classes => {
                        for (k, n) in v.stats.responses.iter().enumerate() {
                            let _ =
                                writeln!(out, "{}{{{labels},code=\"{}xx\"}} {n}", f.name, k + 1);
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
        for f in FAMILIES {
            assert!(legal(f.name), "{}", f.name);
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert_eq!(
                f.kind == "counter",
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert!(!f.help.contains(['\\', '\n']), "{}", f.name);
        }
    }

    #[test]
    fn odd_upstream_names_are_escaped_in_every_sample() {
        let peers = [PeerSpec {
            position: Some(0),
            ..PeerSpec::new(b"odd\0a:80\x00127.0.0.1:1")
        }];
        let t = OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
        })
        .unwrap();
        let ups = [Upstream {
            name: r#"odd"name\x"#,
            zone: t.zone(),
        }];
        let clock = Clock {
            now_ms: 1,
            wall_ms: 1_796_126_400_000,
        };
        let text = String::from_utf8(render(&ups, clock).to_vec()).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // generation, 10 single families, 5 classes; no header or
        // response time before a response
        assert_eq!(samples.len(), 1 + 10 + 5, "{text}");
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
