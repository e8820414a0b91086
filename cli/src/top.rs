//! `hab top`: a live view of the upstreams, redrawn every interval
//!
//! Each poll is one `GET URL/upstreams`; [`frame`] turns it, and the poll
//! before, into the text of one screen. Rates are counter deltas over the
//! wall-clock time between the two answers ([`rate`]); a counter that went
//! backwards (statistics reset, nginx restarted) shows 0, and a server is
//! compared with its previous self only when both its id and its address
//! are unchanged (a reload may renumber servers).
//!
//! [`run`] is the loop: poll, draw, sleep until the next tick. A failed
//! poll is drawn as an error line and the loop goes on, so `hab top`
//! rides out an nginx reload or restart; with `--iterations N` it stops
//! after N frames and the last poll decides the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::{Client, Server, Upstream};
use crate::status::{
    active_cell, binds_sessions, count_cell, layout, ms_cell, printable, printable_lines,
    queue_line, sessions_line, state_cell, weight_cell,
};
use crate::Error;

/// Shortest `--interval`, in seconds.
pub const MIN_INTERVAL: f64 = 0.2;
/// Longest `--interval`, in seconds.
pub const MAX_INTERVAL: f64 = 3600.0;

/// Moves the cursor home and clears the screen (only on a terminal).
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// What `hab top` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the ha_api location.
    pub url: String,
    /// Time between polls.
    pub interval: Duration,
    /// Stop after this many frames; `None`: until interrupted.
    pub iterations: Option<u64>,
    /// Show only this upstream.
    pub upstream: Option<String>,
}

/// Per-second rate of a counter that read `prev`, then `now` `secs`
/// seconds later. A counter that went backwards was reset: 0, never
/// negative. `None` when no time passed (or `secs` is not a number).
pub fn rate(prev: u64, now: u64, secs: f64) -> Option<f64> {
    if !(secs.is_finite() && secs > 0.0) {
        return None;
    }
    Some(now.saturating_sub(prev) as f64 / secs)
}

/// [`rate`] of counters the API may not send: `None` if either is absent.
pub fn rate_of(prev: Option<u64>, now: Option<u64>, secs: f64) -> Option<f64> {
    rate(prev?, now?, secs)
}

/// A rate as shown: one decimal, `-` when unknown.
fn rate_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

/// The previous poll and the seconds since it.
#[derive(Debug, Clone, Copy)]
pub struct Before<'a> {
    /// Its upstreams.
    pub upstreams: &'a BTreeMap<String, Upstream>,
    /// Wall-clock seconds between its answer and this one.
    pub secs: f64,
}

/// The same server in the previous poll: same id and same address.
fn previous<'a>(before: Option<Before<'a>>, upstream: &str, s: &Server) -> Option<&'a Server> {
    before?
        .upstreams
        .get(upstream)?
        .peers
        .iter()
        .find(|p| p.id == s.id && p.server == s.server)
}

/// Requests and 5xx per second of `s` since the previous poll.
fn server_rates(
    before: Option<Before<'_>>,
    upstream: &str,
    s: &Server,
) -> (Option<f64>, Option<f64>) {
    let Some(b) = before else {
        return (None, None);
    };
    let Some(p) = previous(before, upstream, s) else {
        return (None, None);
    };
    let r5xx = |x: &Server| x.responses.as_ref().map(|r| r.r5xx);
    (
        rate_of(p.requests, s.requests, b.secs),
        rate_of(r5xx(p), r5xx(s), b.secs),
    )
}

/// Bound requests (a session bound them to `s`) per second since the
/// previous poll.
fn bound_rate(before: Option<Before<'_>>, upstream: &str, s: &Server) -> Option<f64> {
    let p = previous(before, upstream, s)?;
    rate_of(p.bound, s.bound, before?.secs)
}

/// Sum of the known rates; `None` when none is known.
fn sum(rates: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    rates
        .into_iter()
        .flatten()
        .fold(None, |acc, r| Some(acc.unwrap_or(0.0) + r))
}

/// Requests per second of the whole upstream.
fn upstream_rate(before: Option<Before<'_>>, name: &str, u: &Upstream) -> Option<f64> {
    sum(u.peers.iter().map(|s| server_rates(before, name, s).0))
}

/// `HH:MM:SS UTC` of `t`.
pub fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The upstreams a frame shows: all, or the one `only` names. `Err`
/// when that one is not in the answer.
fn shown<'a>(
    upstreams: &'a BTreeMap<String, Upstream>,
    only: Option<&str>,
) -> Result<Vec<(&'a String, &'a Upstream)>, Error> {
    match only {
        None => Ok(upstreams.iter().collect()),
        Some(name) => match upstreams.get_key_value(name) {
            Some(kv) => Ok(vec![kv]),
            None => Err(Error::Input(format!(
                "upstream {name} not found; upstreams: {}",
                if upstreams.is_empty() {
                    "(none)".to_owned()
                } else {
                    upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))),
        },
    }
}

/// One upstream's block: a title line, its sessions line (with `ha_sticky
/// learn`), its queue line (with `ha_queue`) and a row per server, by id; BOUND/S (requests a session bound
/// to the server, per second) only when the upstream binds sessions.
fn block(out: &mut String, before: Option<Before<'_>>, name: &str, u: &Upstream) {
    let _ = writeln!(
        out,
        "upstream {}  policy {}  generation {}  req/s {}",
        printable(name),
        if u.policy.is_empty() {
            "?".into()
        } else {
            printable(&u.policy)
        },
        u.generation,
        rate_cell(upstream_rate(before, name, u))
    );
    out.push_str(&sessions_line(u).unwrap_or_default());
    out.push_str(&queue_line(u).unwrap_or_default());
    if u.peers.is_empty() {
        out.push_str("  (no servers)\n");
        return;
    }
    let mut peers: Vec<&Server> = u.peers.iter().collect();
    peers.sort_by_key(|s| s.id);
    let with_bound = binds_sessions(u);
    let mut header = vec!["ID", "SERVER", "STATE", "ACTIVE", "REQ/S"];
    let mut right = vec![true, false, false, true, true];
    if with_bound {
        header.push("BOUND/S");
        right.push(true);
    }
    header.extend(["5XX/S", "FAILS", "P50_MS", "P95_MS", "P99_MS", "WEIGHT"]);
    right.extend([true, true, true, true, true, false]);
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|s| {
            let (req, r5xx) = server_rates(before, name, s);
            let mut r = vec![
                s.id.to_string(),
                printable(&s.server).into_owned(),
                state_cell(s),
                active_cell(s),
                rate_cell(req),
            ];
            if with_bound {
                r.push(rate_cell(bound_rate(before, name, s)));
            }
            r.extend([
                rate_cell(r5xx),
                count_cell(s.fails),
                ms_cell(s.percentiles.and_then(|p| p.p50)),
                ms_cell(s.percentiles.and_then(|p| p.p95)),
                ms_cell(s.percentiles.and_then(|p| p.p99)),
                weight_cell(s),
            ]);
            r
        })
        .collect();
    out.push_str(&layout(&header, &right, &rows));
}

/// The text of one frame: a header line (time, URL, number of upstreams,
/// requests per second of those shown), then a block per upstream, or
/// the error of this poll. `before` is the last poll that answered.
/// No blank lines inside: frames printed one after another are separated
/// by one.
pub fn frame(
    clock: &str,
    url: &str,
    now: &Result<BTreeMap<String, Upstream>, Error>,
    before: Option<Before<'_>>,
    only: Option<&str>,
) -> String {
    let mut out = String::new();
    let ups = match now {
        Ok(ups) => ups,
        Err(e) => {
            let _ = writeln!(out, "hab top  {clock}  {url}  upstreams -  req/s -");
            let _ = writeln!(out, "  error: {e}");
            return out;
        }
    };
    let shown = shown(ups, only);
    let total = match &shown {
        Ok(list) => sum(list.iter().map(|(n, u)| upstream_rate(before, n, u))),
        Err(_) => None,
    };
    let _ = writeln!(
        out,
        "hab top  {clock}  {url}  upstreams {}  req/s {}",
        ups.len(),
        rate_cell(total)
    );
    match shown {
        Err(e) => {
            let _ = writeln!(out, "  error: {e}");
        }
        Ok(list) if list.is_empty() => out.push_str("  no upstreams with ha_balance\n"),
        Ok(list) => {
            for (name, u) in list {
                block(&mut out, before, name, u);
            }
        }
    }
    out
}

/// Polls and draws until `opts.iterations` frames are out (or forever).
/// On a terminal each frame replaces the last ([`CLEAR`]); otherwise
/// frames follow each other, a blank line apart, without escape codes.
/// The result is that of the last poll: `Ok`, or the error it drew.
pub fn run(opts: &Options, out: &mut dyn Write, terminal: bool) -> Result<(), Error> {
    let client = Client::new(&opts.url)?;
    let mut before: Option<(BTreeMap<String, Upstream>, Instant)> = None;
    let mut tick = Instant::now();
    let mut frames: u64 = 0;
    loop {
        let got = client.upstreams().map_err(Error::from);
        let at = Instant::now();
        let prev = before.as_ref().map(|(u, t)| Before {
            upstreams: u,
            secs: at.duration_since(*t).as_secs_f64(),
        });
        let text = frame(
            &clock(SystemTime::now()),
            client.base(),
            &got,
            prev,
            opts.upstream.as_deref(),
        );
        let lead = match (terminal, frames) {
            (true, _) => CLEAR,
            (false, 0) => "",
            (false, _) => "\n",
        };
        // Names and errors were escaped as they went in; this is the
        // last guard before the terminal.
        let text = printable_lines(&text);
        out.write_all(lead.as_bytes())
            .and_then(|()| out.write_all(text.as_bytes()))
            .and_then(|()| out.flush())
            .map_err(|e| Error::Input(format!("cannot write output: {e}")))?;
        frames += 1;
        let last = match got {
            Ok(ups) => {
                let r = shown(&ups, opts.upstream.as_deref()).map(|_| ());
                before = Some((ups, at));
                r
            }
            Err(e) => Err(e),
        };
        if opts.iterations.is_some_and(|n| frames >= n) {
            return last;
        }
        // The next tick, on schedule unless a slow poll made it late.
        tick += opts.interval;
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        } else {
            tick = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    #[test]
    fn rates() {
        // (prev, now, secs) -> per second
        let cases: &[(u64, u64, f64, Option<f64>)] = &[
            (0, 0, 1.0, Some(0.0)),
            (100, 150, 1.0, Some(50.0)),
            (100, 150, 0.5, Some(100.0)),
            (100, 130, 2.0, Some(15.0)),
            (500, 20, 1.0, Some(0.0)), // reset: 0, not negative
            (u64::MAX, 0, 1.0, Some(0.0)),
            (0, u64::MAX, 1.0, Some(u64::MAX as f64)),
            (1, 2, 0.0, None),
            (1, 2, -1.0, None),
            (1, 2, f64::NAN, None),
            (1, 2, f64::INFINITY, None),
        ];
        for &(p, n, s, want) in cases {
            assert_eq!(rate(p, n, s), want, "{p} -> {n} in {s}s");
        }
        assert_eq!(rate_of(None, Some(5), 1.0), None);
        assert_eq!(rate_of(Some(5), None, 1.0), None);
        assert_eq!(rate_of(Some(5), Some(9), 2.0), Some(2.0));
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 11 * 3600 + 49 * 60 + 7);
        assert_eq!(clock(t), "11:49:07 UTC");
        assert_eq!(clock(UNIX_EPOCH), "00:00:00 UTC");
    }

    #[test]
    fn sums_skip_unknown() {
        assert_eq!(sum([None, None]), None);
        assert_eq!(sum([None, Some(1.5), Some(2.0)]), Some(3.5));
        assert_eq!(sum(std::iter::empty()), None);
    }

    use crate::status::tests::{FIXTURE, FIXTURE_STATS};

    fn parse(json: &str) -> BTreeMap<String, Upstream> {
        serde_json::from_str(json).unwrap()
    }

    /// [`FIXTURE_STATS`] after `requests` and `5xx` of the `app` servers
    /// grew by `add` (negative: a reset to that much less).
    fn later(add: [(i64, i64); 3]) -> BTreeMap<String, Upstream> {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE_STATS).unwrap();
        for (i, (req, r5xx)) in add.iter().enumerate() {
            let p = &mut v["app"]["peers"][i];
            let bump = |x: &mut serde_json::Value, by: i64| {
                *x = (x.as_i64().unwrap() + by).max(0).into();
            };
            bump(&mut p["requests"], *req);
            bump(&mut p["responses"]["5xx"], *r5xx);
        }
        serde_json::from_value(v).unwrap()
    }

    const T: &str = "11:49:07 UTC";
    const URL: &str = "http://127.0.0.1:8080/api";

    /// The old JSON: no counters, so every rate and count is `-`, also
    /// with a previous poll; servers come by id whatever the answer's order.
    #[test]
    fn frame_without_statistics() {
        let mut ups = parse(FIXTURE);
        ups.get_mut("app").unwrap().peers.reverse();
        let before = Before {
            upstreams: &ups.clone(),
            secs: 1.0,
        };
        let f = frame(T, URL, &Ok(ups.clone()), Some(before), None);
        let want = "\
hab top  11:49:07 UTC  http://127.0.0.1:8080/api  upstreams 2  req/s -
upstream api  policy least_conn  generation 1  req/s -
  ID  SERVER         STATE    ACTIVE  REQ/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
   0  10.0.0.1:9000  up            0      -      -      -       -       -       -  1
   1  10.0.0.2:9000  unavail       0      -      -      -       -       -       -  1
upstream app  policy round_robin  generation 3  req/s -
  ID  SERVER          STATE     ACTIVE  REQ/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
   0  127.0.0.1:8081  up             2      -      -      -       -       -       -  5
   1  127.0.0.1:8082  draining  12/100      -      -      -       -       -       -  10 (conf 1)
   2  10.0.0.9:8080   down           0      -      -      -       -       -       -  1
";
        assert_eq!(f, want, "got:\n{f}");
        assert!(!f.contains("\n\n"), "no blank line inside a frame");
    }

    /// The new JSON: first frame without rates, then deltas over the
    /// seconds between the answers; a counter that went back shows 0.
    #[test]
    fn frames_with_statistics() {
        let first = parse(FIXTURE_STATS);
        let f = frame(T, URL, &Ok(first.clone()), None, None);
        let want = "\
hab top  11:49:07 UTC  http://127.0.0.1:8080/api  upstreams 1  req/s -
upstream app  policy round_robin  generation 3  req/s -
  ID  SERVER          STATE     ACTIVE  REQ/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
   0  127.0.0.1:8081  up             2      -      -      3     4.5      23    71.3  5
   1  127.0.0.1:8082  draining  12/100      -      -      0       -       -       -  10 (conf 1)
   2  10.0.0.9:8080   unavail        0      -      -      7       -       -       -  1
";
        assert_eq!(f, want, "got:\n{f}");

        // 2 s later: +300 requests (+10 5xx), +50, and a reset of #2
        // (0 -> 0 stays 0; shown as 0.0, not negative).
        let second = later([(300, 10), (50, 0), (0, 0)]);
        let before = Before {
            upstreams: &first,
            secs: 2.0,
        };
        let f = frame(T, URL, &Ok(second.clone()), Some(before), None);
        let want = "\
hab top  11:49:07 UTC  http://127.0.0.1:8080/api  upstreams 1  req/s 175.0
upstream app  policy round_robin  generation 3  req/s 175.0
  ID  SERVER          STATE     ACTIVE  REQ/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
   0  127.0.0.1:8081  up             2  150.0    5.0      3     4.5      23    71.3  5
   1  127.0.0.1:8082  draining  12/100   25.0    0.0      0       -       -       -  10 (conf 1)
   2  10.0.0.9:8080   unavail        0    0.0    0.0      7       -       -       -  1
";
        assert_eq!(f, want, "got:\n{f}");

        // Statistics reset (DELETE upstreams/app) between polls: 0, not
        // negative.
        let reset = later([(-1200, -20), (-98_765_432, -432), (0, 0)]);
        let before = Before {
            upstreams: &second,
            secs: 1.0,
        };
        let f = frame(T, URL, &Ok(reset), Some(before), None);
        assert!(f.contains("upstreams 1  req/s 0.0\n"), "{f}");
        for l in f
            .lines()
            .filter(|l| l.starts_with("   ") && l.contains(":808"))
        {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(&cells[4..6], ["0.0", "0.0"], "{l}");
        }
        let negative = f
            .split_whitespace()
            .filter_map(|c| c.parse::<f64>().ok())
            .any(|v| v < 0.0);
        assert!(!negative, "{f}");
    }

    /// After a reload a server id may name another address: no rate
    /// across that.
    #[test]
    fn renumbered_server_has_no_rate() {
        let first = parse(FIXTURE_STATS);
        let mut second = later([(100, 0), (100, 0), (0, 0)]);
        second.get_mut("app").unwrap().peers[0].server = "127.0.0.1:9999".into();
        let before = Before {
            upstreams: &first,
            secs: 1.0,
        };
        let f = frame(T, URL, &Ok(second), Some(before), None);
        let row = |addr: &str| {
            f.lines()
                .find(|l| l.contains(addr))
                .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_owned())
        };
        assert_eq!(row("127.0.0.1:9999").as_deref(), Some("-"), "{f}");
        assert_eq!(row("127.0.0.1:8082").as_deref(), Some("100.0"), "{f}");
        assert!(f.contains("upstreams 1  req/s 100.0\n"), "{f}");
    }

    /// An upstream with sessions: its sessions line (zone name escaped)
    /// under the title, and BOUND/S beside REQ/S.
    #[test]
    fn frames_with_sessions() {
        use crate::status::tests::fixture_sticky;
        let first = fixture_sticky();
        let mut second = fixture_sticky();
        for (p, (req, bound)) in
            second
                .get_mut("app")
                .unwrap()
                .peers
                .iter_mut()
                .zip([(300, 200), (50, 50), (0, 0)])
        {
            p.requests = p.requests.map(|n| n + req);
            p.bound = p.bound.map(|n| n + bound);
        }
        let before = Before {
            upstreams: &first,
            secs: 2.0,
        };
        let f = frame(T, URL, &Ok(second), Some(before), None);
        let want = "\
hab top  11:49:07 UTC  http://127.0.0.1:8080/api  upstreams 1  req/s 175.0
upstream app  policy round_robin  generation 3  req/s 175.0
  sessions zone learnt\\x1b[2J  entries 12/1024  created 40  evicted 0  expired 28
  ID  SERVER          STATE     ACTIVE  REQ/S  BOUND/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
   0  127.0.0.1:8081  up             2  150.0    100.0    0.0      3     4.5      23    71.3  5
   1  127.0.0.1:8082  draining  12/100   25.0     25.0    0.0      0       -       -       -  10 (conf 1)
   2  10.0.0.9:8080   unavail        0    0.0      0.0    0.0      7       -       -       -  1
";
        assert_eq!(f, want, "got:\n{f}");
        // The first frame: no rates yet.
        let f = frame(T, URL, &Ok(first), None, None);
        assert!(
            f.contains("  ID  SERVER          STATE     ACTIVE  REQ/S  BOUND/S  5XX/S"),
            "{f}"
        );
        assert!(
            f.contains("   0  127.0.0.1:8081  up             2      -        -      -"),
            "{f}"
        );
    }

    /// An upstream with a queue: its queue line under the title.
    #[test]
    fn frames_with_a_queue() {
        use crate::status::tests::fixture_queue;
        let f = frame(T, URL, &Ok(fixture_queue()), None, None);
        let want = "\
hab top  11:49:07 UTC  http://127.0.0.1:8080/api  upstreams 1  req/s -
upstream app  policy round_robin  generation 3  req/s -
  queue 3/500  p99 40 ms  overflows 12  timeouts 1  abandoned 4  served 1234
  ID  SERVER          STATE     ACTIVE  REQ/S  5XX/S  FAILS  P50_MS  P95_MS  P99_MS  WEIGHT
";
        assert!(f.starts_with(want), "got:\n{f}");
    }

    #[test]
    fn one_upstream() {
        let ups = parse(FIXTURE);
        let f = frame(T, URL, &Ok(ups.clone()), None, Some("api"));
        assert!(
            f.contains("upstream api ") && !f.contains("upstream app "),
            "{f}"
        );
        assert!(f.contains("upstreams 2  req/s -"), "{f}");
        let f = frame(T, URL, &Ok(ups), None, Some("web"));
        assert!(
            f.ends_with("  error: upstream web not found; upstreams: api, app\n"),
            "{f}"
        );
    }

    #[test]
    fn error_frames() {
        let err: Result<BTreeMap<String, Upstream>, Error> = Err(Error::Api(
            ApiError::Unreachable("http://h/api/upstreams: io: Connection refused".into()),
        ));
        assert_eq!(
            frame("11:00:00 UTC", "http://h/api", &err, None, None),
            "hab top  11:00:00 UTC  http://h/api  upstreams -  req/s -\n  \
             error: API unreachable: http://h/api/upstreams: io: Connection refused\n"
        );
        let none: Result<BTreeMap<String, Upstream>, Error> = Ok(BTreeMap::new());
        assert_eq!(
            frame("11:00:00 UTC", "http://h/api", &none, None, Some("app")),
            "hab top  11:00:00 UTC  http://h/api  upstreams 0  req/s -\n  \
             error: upstream app not found; upstreams: (none)\n"
        );
        assert_eq!(
            frame("11:00:00 UTC", "http://h/api", &none, None, None),
            "hab top  11:00:00 UTC  http://h/api  upstreams 0  req/s -\n  \
             no upstreams with ha_balance\n"
        );
    }
}
