//! `hab status` tables and the SERVER argument of the admin commands
//!
//! [`table`] renders upstreams as aligned text, one block per upstream;
//! [`resolve`] turns what an operator types (an id, an address, a name)
//! into the server id the API wants, or an error listing the candidates.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::api::{Server, Upstream};

/// Whether `c` must not reach a terminal as it is: C0 controls (but
/// `\n` where `keep_newline`), DEL, C1 controls (U+0080 to U+009F: a lone
/// U+009B starts a sequence on some terminals) and the bidirectional
/// overrides and isolates that reorder what is shown.
fn unsafe_char(c: char, keep_newline: bool) -> bool {
    (c.is_control() && !(keep_newline && c == '\n'))
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_with(s: &str, keep_newline: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_newline)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c, keep_newline) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// `s` safe to print on a terminal: every control character (C0 with
/// tab and newline, DEL, C1) and bidirectional override written as an
/// escape (`\x1b`, `\u{9b}`), so a name from the API cannot move the
/// cursor, retitle the window or hide text. Everything else is kept.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// [`printable`] for whole lines of output: newlines are kept.
pub fn printable_lines(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// JSON text safe to print: serde_json writes C0 controls as `\u00XX`
/// already; DEL, C1 controls and bidirectional overrides (only ever inside
/// strings) are written as `\uXXXX` too, which reads back the same.
pub fn printable_json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, true)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c, true) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The terminal table of `upstreams` (in name order).
pub fn table(upstreams: &BTreeMap<String, Upstream>) -> String {
    if upstreams.is_empty() {
        return "no upstreams with ha_balance\n".to_owned();
    }
    let mut out = String::new();
    for (i, (name, u)) in upstreams.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&upstream_table(name, u));
    }
    out
}

/// The weight column: `5`, or `5 (conf 1)` when overridden.
pub(crate) fn weight_cell(s: &Server) -> String {
    match s.configured_weight {
        Some(c) if c != s.weight => format!("{} (conf {c})", s.weight),
        _ => s.weight.to_string(),
    }
}

/// The state column (`?` when the API sent none).
pub(crate) fn state_cell(s: &Server) -> String {
    if s.state.is_empty() {
        "?".to_owned()
    } else {
        printable(&s.state).into_owned()
    }
}

/// The active column: in flight, and `/max_conns` when limited (`12/100`).
pub(crate) fn active_cell(s: &Server) -> String {
    if s.max_conns == 0 {
        s.active.to_string()
    } else {
        format!("{}/{}", s.active, s.max_conns)
    }
}

/// A counter, `-` when the API did not send it.
pub(crate) fn count_cell(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Milliseconds: whole numbers as they are, others to 0.1; `-` if absent.
pub(crate) fn ms_cell(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v.is_finite() && v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "-".to_owned(),
    }
}

/// Whether `u` binds sessions (`ha_sticky`): its servers carry `bound`.
pub(crate) fn binds_sessions(u: &Upstream) -> bool {
    u.peers.iter().any(|s| s.bound.is_some())
}

/// The line of an upstream's learnt sessions (`ha_sticky learn`), under
/// its title: `  sessions zone NAME  entries 12/1024  created 40  evicted
/// 0  expired 28`; `None` without a learn table.
pub(crate) fn sessions_line(u: &Upstream) -> Option<String> {
    let s = u.sessions.as_ref()?;
    Some(format!(
        "  sessions zone {}  entries {}/{}  created {}  evicted {}  expired {}\n",
        if s.zone.is_empty() {
            "?".into()
        } else {
            printable(&s.zone)
        },
        count_cell(s.entries),
        count_cell(s.capacity),
        count_cell(s.created),
        count_cell(s.evicted),
        count_cell(s.expired)
    ))
}

/// The line of an upstream's request queue (`ha_queue`), under its
/// title: `  queue 3/500  p99 40 ms  overflows 12  timeouts 1  abandoned
/// 0  served 1234` (the wait's 99th percentile of the served waiters,
/// `-` before the first); `None` without a queue.
pub(crate) fn queue_line(u: &Upstream) -> Option<String> {
    let q = u.queue.as_ref()?;
    let p99 = q.wait_ms.as_ref().and_then(|w| w.p99);
    Some(format!(
        "  queue {}/{}  p99 {}  overflows {}  timeouts {}  abandoned {}  served {}\n",
        count_cell(q.size),
        count_cell(q.max_size),
        p99.map_or_else(|| "-".to_owned(), |ms| format!("{} ms", ms_cell(Some(ms)))),
        count_cell(q.overflows),
        count_cell(q.timeouts),
        count_cell(q.abandoned),
        count_cell(q.served)
    ))
}

/// Longest NAME shown; longer names are cut and end in `~`.
pub const NAME_WIDTH: usize = 18;

/// The NAME column: `None` when it says nothing the address does not
/// (empty, or equal to it); the port is dropped when it is the address'
/// (`app1.example.com:8081` beside `127.0.0.1:8081` shows
/// `app1.example.com`); at most [`NAME_WIDTH`] characters.
pub(crate) fn name_cell(s: &Server) -> Option<String> {
    if s.name.is_empty() || s.name == s.server {
        return None;
    }
    let port = |a: &str| a.rsplit_once(':').map(|(_, p)| p.to_owned());
    let mut name = s.name.as_str();
    if let (Some((host, p)), Some(sp)) = (s.name.rsplit_once(':'), port(&s.server)) {
        if p == sp && !host.is_empty() && !host.ends_with(':') {
            name = host;
        }
    }
    let name = printable(name);
    if name.chars().count() > NAME_WIDTH {
        let cut: String = name.chars().take(NAME_WIDTH - 1).collect();
        return Some(cut + "~");
    }
    Some(name.into_owned())
}

/// Aligned rows under `header`, each line indented by two spaces and
/// columns two spaces apart; `right` marks right-aligned (number)
/// columns. Trailing spaces are trimmed.
pub(crate) fn layout(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from("  ");
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(l, "{cell:>w$}");
            } else {
                let _ = write!(l, "{cell:<w$}");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// One upstream: a title line, its sessions line (with `ha_sticky
/// learn`), its queue line (with `ha_queue`), then a row per server. The NAME column is left out when no
/// server's name adds to its address; BOUND (requests a session bound to
/// the server) shows only when the upstream binds sessions.
pub fn upstream_table(name: &str, u: &Upstream) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "upstream {}  policy {}  generation {}",
        printable(name),
        if u.policy.is_empty() {
            "?".into()
        } else {
            printable(&u.policy)
        },
        u.generation
    );
    out.push_str(&sessions_line(u).unwrap_or_default());
    out.push_str(&queue_line(u).unwrap_or_default());
    let with_name = u.peers.iter().any(|s| name_cell(s).is_some());
    let with_bound = binds_sessions(u);
    let mut header = vec!["ID", "SERVER"];
    let mut right = vec![true, false];
    if with_name {
        header.push("NAME");
        right.push(false);
    }
    header.extend(["STATE", "WEIGHT", "ACTIVE", "BACKUP", "REQUESTS"]);
    right.extend([false, false, true, false, true]);
    if with_bound {
        header.push("BOUND");
        right.push(true);
    }
    header.extend(["5XX", "FAILS", "UNAVAIL", "RESP_MS"]);
    right.extend([true, true, true, true]);
    let rows: Vec<Vec<String>> = u
        .peers
        .iter()
        .map(|s| {
            let mut r = vec![s.id.to_string(), printable(&s.server).into_owned()];
            if with_name {
                r.push(name_cell(s).unwrap_or_else(|| "-".to_owned()));
            }
            r.extend([
                state_cell(s),
                weight_cell(s),
                active_cell(s),
                if s.backup { "yes" } else { "-" }.to_owned(),
                count_cell(s.requests),
            ]);
            if with_bound {
                r.push(count_cell(s.bound));
            }
            r.extend([
                count_cell(s.responses.as_ref().map(|r| r.r5xx)),
                count_cell(s.fails),
                count_cell(s.unavail),
                ms_cell(s.response_time),
            ]);
            r
        })
        .collect();
    out.push_str(&layout(&header, &right, &rows));
    if u.peers.is_empty() {
        out.push_str("  (no servers)\n");
    }
    out
}

/// One line about a server after a change.
pub fn server_line(upstream: &str, s: &Server) -> String {
    format!(
        "{} #{} {}: state {}, weight {}, active {}",
        printable(upstream),
        s.id,
        printable(&s.server),
        printable(&s.state),
        weight_cell(s),
        s.active
    )
}

/// Why a SERVER argument did not pick one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError(pub String);

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResolveError {}

fn describe(servers: &[&Server]) -> String {
    servers
        .iter()
        .map(|s| {
            if s.name.is_empty() || s.name == s.server {
                format!("#{} {}", s.id, printable(&s.server))
            } else {
                let (server, name) = (printable(&s.server), printable(&s.name));
                format!("#{} {server} ({name})", s.id)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The host part of `host:port` / `[v6]:port` (the whole string if none).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => addr,
    }
}

/// The id of the server `sel` means in `u`: a number is an id; otherwise
/// an exact match of `server` (address) or `name`, and failing that a
/// match of their host part (`10.0.0.1` for `10.0.0.1:8080`). No match or
/// several matches: an error listing the candidates.
pub fn resolve(u: &Upstream, sel: &str) -> Result<u32, ResolveError> {
    let sel = sel.trim();
    let all: Vec<&Server> = u.peers.iter().collect();
    if let Ok(id) = sel.parse::<u32>() {
        if u.peers.iter().any(|s| s.id == id) {
            return Ok(id);
        }
        return Err(ResolveError(format!(
            "upstream {} has no server with id {id}; servers: {}",
            u.name,
            describe(&all)
        )));
    }
    let exact: Vec<&Server> = all
        .iter()
        .copied()
        .filter(|s| s.server == sel || s.name == sel)
        .collect();
    let found = if exact.is_empty() {
        all.iter()
            .copied()
            .filter(|s| host_of(&s.server) == sel || host_of(&s.name) == sel)
            .collect()
    } else {
        exact
    };
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => Err(ResolveError(format!(
            "no server of upstream {} matches {sel:?}; servers: {}",
            u.name,
            if all.is_empty() {
                "(none)".to_owned()
            } else {
                describe(&all)
            }
        ))),
        many => Err(ResolveError(format!(
            "{sel:?} is ambiguous in upstream {}: {}; give the id",
            u.name,
            describe(many)
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `GET upstreams` body shaped like docs/api.md.
    pub(crate) const FIXTURE: &str = r#"{
      "app": {
        "name": "app", "policy": "round_robin", "generation": 3,
        "peers": [
          {"id": 0, "server": "127.0.0.1:8081", "name": "app1.example.com:8081",
           "backup": false, "weight": 5, "configured_weight": 5, "state": "up",
           "active": 2, "max_conns": 0, "down": false, "drain": false},
          {"id": 1, "server": "127.0.0.1:8082", "name": "127.0.0.1:8082",
           "backup": false, "weight": 10, "configured_weight": 1, "state": "draining",
           "active": 12, "max_conns": 100, "down": false, "drain": true},
          {"id": 2, "server": "10.0.0.9:8080", "name": "spare.example.com:8080",
           "backup": true, "weight": 1, "configured_weight": 1, "state": "down",
           "active": 0, "max_conns": 0, "down": true, "drain": false, "future_field": 1}
        ]
      },
      "api": {"name": "api", "policy": "least_conn", "generation": 1, "peers": [
          {"id": 0, "server": "10.0.0.1:9000", "name": "api.internal:9000", "backup": false,
           "weight": 1, "configured_weight": 1, "state": "up", "active": 0, "max_conns": 0,
           "down": false, "drain": false},
          {"id": 1, "server": "10.0.0.2:9000", "name": "api.internal:9000", "backup": false,
           "weight": 1, "configured_weight": 1, "state": "unavail", "active": 0, "max_conns": 0,
           "down": false, "drain": false}
      ]}
    }"#;

    /// The `app` upstream of [`FIXTURE`] as an API with the statistics
    /// of docs/api.md answers it (issue 7's contract): counters,
    /// `responses`, times, `totals`, `retiring`, and fields `hab` does not
    /// know or gets in an unexpected type (`latency` as text).
    pub(crate) const FIXTURE_STATS: &str = r#"{
      "app": {
        "name": "app", "policy": "round_robin", "generation": 3,
        "peers": [
          {"id": 0, "server": "127.0.0.1:8081", "name": "app1.example.com:8081",
           "backup": false, "weight": 5, "configured_weight": 5, "state": "up",
           "active": 2, "max_conns": 0, "down": false, "drain": false,
           "requests": 1200, "responses": {"1xx": 0, "2xx": 1000, "3xx": 0, "4xx": 180,
           "5xx": 20, "total": 1200}, "sent": 12345, "received": 67890, "fails": 3,
           "unavail": 1, "downtime": 10000, "selected": "2026-12-01T11:00:05.001Z",
           "header_time": 3, "response_time": 5, "latency": 4.2,
           "percentiles": {"window": 41000, "responses": 800, "p50": 4.5, "p95": 23,
           "p99": 71.3}, "policy": "round_robin", "generation": 3},
          {"id": 1, "server": "127.0.0.1:8082", "name": "127.0.0.1:8082",
           "backup": false, "weight": 10, "configured_weight": 1, "state": "draining",
           "active": 12, "max_conns": 100, "down": false, "drain": true,
           "requests": 98765432, "responses": {"1xx": 0, "2xx": 98765000, "3xx": 0,
           "4xx": 0, "5xx": 432, "total": 98765432}, "sent": 1, "received": 2,
           "fails": 0, "unavail": 0, "downtime": 0, "header_time": 1.25,
           "response_time": 12.5, "latency": "n/a", "percentiles": {"window": 41000,
           "responses": 0, "p50": null, "p95": null, "p99": null}},
          {"id": 2, "server": "10.0.0.9:8080", "name": "spare.example.com:8080",
           "backup": true, "weight": 1, "configured_weight": 1, "state": "unavail",
           "active": 0, "max_conns": 0, "down": false, "drain": false,
           "requests": 0, "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0,
           "total": 0}, "fails": 7, "unavail": 2, "downtime": 61000,
           "downstart": "2026-12-01T11:00:00.123Z", "checking_something_new": [1, 2]}
        ],
        "totals": {"requests": 98766632, "responses": {"1xx": 0, "2xx": 98766000,
          "3xx": 0, "4xx": 180, "5xx": 452, "total": 98766632}, "sent": 12346,
          "received": 67892, "fails": 10, "unavail": 3, "active": 14},
        "retiring": [{"generation": 2, "requests": 5}]
      }
    }"#;

    fn fixture() -> BTreeMap<String, Upstream> {
        serde_json::from_str(FIXTURE).unwrap()
    }

    /// [`FIXTURE_STATS`] of an upstream that binds sessions and learns
    /// them: `bound` on every server and in `totals`, and `sessions` (its
    /// zone named with an escape sequence in it).
    pub(crate) fn fixture_sticky() -> BTreeMap<String, Upstream> {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE_STATS).unwrap();
        let app = &mut v["app"];
        for (p, bound) in [(0, 1000), (1, 98_765_000), (2, 0)] {
            app["peers"][p]["bound"] = bound.into();
        }
        app["totals"]["bound"] = 98_766_000.into();
        app["sessions"] = serde_json::json!({"zone": "learnt\u{1b}[2J", "entries": 12,
            "capacity": 1024, "created": 40, "evicted": 0, "expired": 28});
        serde_json::from_value(v).unwrap()
    }

    /// [`FIXTURE_STATS`] of an upstream with `ha_queue 500`: its
    /// `queue` as docs/api.md shows it.
    pub(crate) fn fixture_queue() -> BTreeMap<String, Upstream> {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE_STATS).unwrap();
        v["app"]["queue"] = serde_json::json!({"size": 3, "max_size": 500,
            "overflows": 12, "timeouts": 1, "abandoned": 4, "served": 1234,
            "wait_ms": {"p50": 2.5, "p90": 22.5, "p99": 40.0, "sum": 5120, "count": 1234}});
        serde_json::from_value(v).unwrap()
    }

    pub(crate) fn fixture_stats() -> BTreeMap<String, Upstream> {
        serde_json::from_str(FIXTURE_STATS).unwrap()
    }

    /// The old JSON (no statistics): every statistic is `-`.
    #[test]
    fn table_from_fixture() {
        let t = table(&fixture());
        let want = "\
upstream api  policy least_conn  generation 1
  ID  SERVER         NAME          STATE    WEIGHT  ACTIVE  BACKUP  REQUESTS  5XX  FAILS  UNAVAIL  RESP_MS
   0  10.0.0.1:9000  api.internal  up       1            0  -              -    -      -        -        -
   1  10.0.0.2:9000  api.internal  unavail  1            0  -              -    -      -        -        -

upstream app  policy round_robin  generation 3
  ID  SERVER          NAME               STATE     WEIGHT       ACTIVE  BACKUP  REQUESTS  5XX  FAILS  UNAVAIL  RESP_MS
   0  127.0.0.1:8081  app1.example.com   up        5                 2  -              -    -      -        -        -
   1  127.0.0.1:8082  -                  draining  10 (conf 1)  12/100  -              -    -      -        -        -
   2  10.0.0.9:8080   spare.example.com  down      1                 0  yes            -    -      -        -        -
";
        assert_eq!(t, want, "got:\n{t}");
        assert_eq!(table(&BTreeMap::new()), "no upstreams with ha_balance\n");
    }

    /// The new JSON: the statistics columns filled; unknown fields and a
    /// statistic of an unexpected type (`latency: "n/a"`) do not matter.
    #[test]
    fn table_with_statistics() {
        let ups = fixture_stats();
        let app = &ups["app"];
        assert_eq!(app.peers[0].latency, Some(4.2));
        assert_eq!(app.peers[1].latency, None);
        assert_eq!(app.peers[2].responses.as_ref().map(|r| r.r5xx), Some(0));
        assert_eq!(
            app.totals.as_ref().and_then(|t| t.requests),
            Some(98_766_632)
        );
        let t = table(&ups);
        let want = "\
upstream app  policy round_robin  generation 3
  ID  SERVER          NAME               STATE     WEIGHT       ACTIVE  BACKUP  REQUESTS  5XX  FAILS  UNAVAIL  RESP_MS
   0  127.0.0.1:8081  app1.example.com   up        5                 2  -           1200   20      3        1        5
   1  127.0.0.1:8082  -                  draining  10 (conf 1)  12/100  -       98765432  432      0        0     12.5
   2  10.0.0.9:8080   spare.example.com  unavail   1                 0  yes            0    0      7        2        -
";
        assert_eq!(t, want, "got:\n{t}");
    }

    /// 120 columns hold the widest fixture rows; NAME is cut beyond
    /// [`NAME_WIDTH`] and left out when it adds nothing.
    #[test]
    fn tables_fit_120_columns() {
        for t in [table(&fixture()), table(&fixture_stats())] {
            for l in t.lines() {
                assert!(l.chars().count() <= 120, "{} columns: {l}", l.len());
            }
        }
        let mut ups = fixture_stats();
        ups.get_mut("app").unwrap().peers[0].name =
            "a-very-long-host-name.of.some.example.com:8081".into();
        let t = table(&ups);
        assert!(t.contains("  a-very-long-host-~  "), "{t}");
        assert!(t.lines().all(|l| l.chars().count() <= 120), "{t}");
        for p in &mut ups.get_mut("app").unwrap().peers {
            p.name = p.server.clone();
        }
        let t = table(&ups);
        assert!(!t.contains("NAME"), "{t}");
        assert!(t.contains("  ID  SERVER          STATE     WEIGHT"), "{t}");
    }

    /// Sessions: the BOUND column and the sessions line, the zone's name
    /// escaped; neither for an upstream without them.
    #[test]
    fn table_with_sessions() {
        let ups = fixture_sticky();
        let app = &ups["app"];
        assert_eq!(app.peers[1].bound, Some(98_765_000));
        assert_eq!(app.totals.as_ref().and_then(|t| t.bound), Some(98_766_000));
        assert_eq!(app.sessions.as_ref().and_then(|s| s.capacity), Some(1024));
        let t = table(&ups);
        let want = "\
upstream app  policy round_robin  generation 3
  sessions zone learnt\\x1b[2J  entries 12/1024  created 40  evicted 0  expired 28
  ID  SERVER          NAME               STATE     WEIGHT       ACTIVE  BACKUP  REQUESTS     BOUND  5XX  FAILS  UNAVAIL  RESP_MS
   0  127.0.0.1:8081  app1.example.com   up        5                 2  -           1200      1000   20      3        1        5
   1  127.0.0.1:8082  -                  draining  10 (conf 1)  12/100  -       98765432  98765000  432      0        0     12.5
   2  10.0.0.9:8080   spare.example.com  unavail   1                 0  yes            0         0    0      7        2        -
";
        assert_eq!(t, want, "got:\n{t}");
        // An older API, or a learn table without figures: still a line.
        let mut ups = fixture_sticky();
        let app = ups.get_mut("app").unwrap();
        app.sessions = Some(Default::default());
        assert!(
            table(&ups)
                .contains("\n  sessions zone ?  entries -/-  created -  evicted -  expired -\n"),
            "{}",
            table(&ups)
        );
        for t in [table(&fixture()), table(&fixture_stats())] {
            assert!(!t.contains("BOUND") && !t.contains("sessions"), "{t}");
        }
    }

    /// The queue: its line under the title, with the 99th percentile
    /// wait; `-` for what an older API or a fresh queue does not send;
    /// no line for an upstream without a queue.
    #[test]
    fn table_with_a_queue() {
        let ups = fixture_queue();
        let q = ups["app"].queue.as_ref().unwrap();
        assert_eq!(q.wait_ms.as_ref().and_then(|w| w.p90), Some(22.5));
        let t = table(&ups);
        let want = "\
upstream app  policy round_robin  generation 3
  queue 3/500  p99 40 ms  overflows 12  timeouts 1  abandoned 4  served 1234
  ID  SERVER          NAME               STATE     WEIGHT       ACTIVE  BACKUP  REQUESTS  5XX  FAILS  UNAVAIL  RESP_MS
";
        assert!(t.starts_with(want), "got:\n{t}");
        let mut ups = fixture_queue();
        let app = ups.get_mut("app").unwrap();
        app.queue.as_mut().unwrap().wait_ms.as_mut().unwrap().p99 = Some(0.5);
        assert!(table(&ups).contains("\n  queue 3/500  p99 0.5 ms  overflows"));
        // Nobody served yet (no percentiles), then an API without figures.
        let mut ups = fixture_queue();
        let app = ups.get_mut("app").unwrap();
        app.queue.as_mut().unwrap().wait_ms = Some(Default::default());
        assert!(table(&ups).contains("\n  queue 3/500  p99 -  overflows 12"));
        ups.get_mut("app").unwrap().queue = Some(Default::default());
        assert!(
            table(&ups)
                .contains("\n  queue -/-  p99 -  overflows -  timeouts -  abandoned -  served -\n"),
            "{}",
            table(&ups)
        );
        for t in [
            table(&fixture()),
            table(&fixture_stats()),
            table(&fixture_sticky()),
        ] {
            assert!(!t.contains("queue"), "{t}");
        }
    }

    #[test]
    fn name_cells() {
        let mut s = fixture()["app"].peers[0].clone();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("127.0.0.1:8081", "", None),
            ("127.0.0.1:8081", "127.0.0.1:8081", None),
            ("127.0.0.1:8081", "app1:8081", Some("app1")),
            ("127.0.0.1:8081", "app1:9999", Some("app1:9999")),
            ("[::1]:8081", "app1:8081", Some("app1")),
            ("127.0.0.1:8081", "app1", Some("app1")),
            ("unix:/tmp/s", "unix:/tmp/s", None),
        ];
        for (server, name, want) in cases {
            s.server = (*server).into();
            s.name = (*name).into();
            assert_eq!(name_cell(&s).as_deref(), *want, "{server} {name}");
        }
    }

    #[test]
    fn milliseconds() {
        assert_eq!(ms_cell(None), "-");
        assert_eq!(ms_cell(Some(5.0)), "5");
        assert_eq!(ms_cell(Some(12.25)), "12.2");
        assert_eq!(ms_cell(Some(f64::NAN)), "-");
    }

    #[test]
    fn resolution() {
        let ups = fixture();
        let app = &ups["app"];
        let api = &ups["api"];
        let ok: &[(&Upstream, &str, u32)] = &[
            (app, "1", 1),
            (app, "127.0.0.1:8082", 1),
            (app, "app1.example.com:8081", 0),
            (app, "app1.example.com", 0),
            (app, "spare.example.com", 2),
            (app, "10.0.0.9", 2),
            (api, "10.0.0.2:9000", 1),
        ];
        for (u, sel, id) in ok {
            assert_eq!(resolve(u, sel), Ok(*id), "{sel}");
        }
        let err = resolve(app, "7").unwrap_err().0;
        assert!(
            err.contains("no server with id 7") && err.contains("#2 10.0.0.9:8080"),
            "{err}"
        );
        let err = resolve(app, "nope").unwrap_err().0;
        assert!(
            err.contains("matches \"nope\"") && err.contains("#0 127.0.0.1:8081"),
            "{err}"
        );
        // both api servers share the name: ambiguous, candidates listed
        let err = resolve(api, "api.internal:9000").unwrap_err().0;
        assert!(
            err.contains("ambiguous")
                && err.contains("#0 10.0.0.1:9000")
                && err.contains("#1 10.0.0.2:9000"),
            "{err}"
        );
        // 127.0.0.1 is the host of two servers
        let err = resolve(app, "127.0.0.1").unwrap_err().0;
        assert!(err.contains("ambiguous"), "{err}");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("unix:/tmp/s"), "unix:/tmp/s");
        assert_eq!(host_of("name"), "name");
    }
}
