//! The status page, rendered on the server with every figure
//!
//! The handler answers the page (`status.html`, compiled in) with every
//! upstream and server already in it, so the first paint shows them, with
//! or without the page's script; the script then adopts these elements
//! and refreshes them from `upstreams` every second.
//!
//! Each upstream is rendered from its JSON, the same bytes `GET
//! upstreams` answers ([`Render`], limited by `?fields=` to what the page
//! shows), read back into [`PageUpstream`]: the page shows what the API
//! says, under the API's names, and a key the API gains (a figure
//! added to a server) needs only its field here and its cell, as in the
//! script. Fields whose shape is not settled are kept as JSON values and
//! shown when they are there.
//!
//! The columns and the formats of the figures are those of the script
//! (`COLUMNS` and the format functions of `status.html`): the end-to-end
//! test compares both renders cell by cell.
//!
//! Every text from the API is escaped ([`esc`]) before it goes into the
//! HTML, in text and in attributes.
//!
//! Cost: one serialization, one parse and one render per server; an
//! upstream of 10,000 servers renders in about 50 ms (release build; its
//! JSON alone takes 5 ms) into 16.6 MB of HTML, 1.7 KB per server (250 KB
//! gzipped); the test `ten_thousand_servers_render_in_bounded_time`
//! bounds it. Not capped: every server is in the first paint (the
//! browser takes seconds over such a page: docs/api.md, "The status
//! page").

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use crate::body::Body;
use crate::json::{iso8601, Clock, Fields, Render, Totals};
use crate::upstream::Upstream;

/// The page, with its markers (see the comment at its top).
pub const TEMPLATE: &str = include_str!("status.html");

/// Where the upstreams go.
const MARK: &str = "<!--HAB_UPSTREAMS-->";

/// The keys the page shows, as the script asks for them (`FIELDS`).
const FIELDS: &str = "fields=state,name,server,backup,weight,configured_weight,active,\
    drain,down,requests,bound,responses,sent,received,fails,unavail,downtime,\
    response_time,percentiles,health_checks,state_since,policy,generation,totals,\
    sessions,queue";

/// A column: key (the cells' class), label, class, shown only when
/// (`bound`: the upstream binds sessions; `health`: it has active
/// checks), title. As `COLUMNS` and `TITLES` of the script.
type Column = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
);

const COLUMNS: [Column; 20] = [
    ("id", "ID", "num", None, ""),
    ("server", "Server", "", None, ""),
    ("state", "State", "", None, ""),
    ("since", "For", "num", None, "Time in the current state"),
    ("weight", "Weight", "num", None, ""),
    ("active", "Active", "num", None, ""),
    ("rps", "Req/s", "num", None, ""),
    ("requests", "Requests", "num", None, ""),
    (
        "bound",
        "Bound",
        "num",
        Some("bound"),
        "Share of the server's requests of the last second sent to it \
         because a session was bound to it (ha_sticky)",
    ),
    (
        "err",
        "5xx",
        "num",
        None,
        "Share of 5xx among the responses of the last second",
    ),
    ("fails", "Fails", "num", None, "Failed tries"),
    (
        "unavail",
        "Unavail",
        "num",
        None,
        "Times max_fails made it unavailable",
    ),
    (
        "downtime",
        "Downtime",
        "num",
        None,
        "Time spent unavailable",
    ),
    ("sent", "Sent", "num", None, "Bytes sent to the server"),
    (
        "received",
        "Received",
        "num",
        None,
        "Bytes received from it",
    ),
    ("rt", "Resp ms", "num", None, "Average response time"),
    (
        "percentiles",
        "p50/95/99 ms",
        "num",
        None,
        "Response time percentiles over the last 30 to 60 s",
    ),
    (
        "checks",
        "Checks / fails / unhealthy",
        "num",
        Some("health"),
        "Health checks made / failed / times the server turned unhealthy",
    ),
    (
        "last",
        "Last check",
        "",
        Some("health"),
        "The last health check",
    ),
    ("spark", "Req/s, last 60 s", "", None, ""),
];

/// The admin buttons: action, label, disabled when the server's `drain`
/// or `down` (first) is the second.
const ACTIONS: [(&str, &str, (&str, bool)); 4] = [
    ("drain", "Drain", ("drain", true)),
    ("undrain", "Undrain", ("drain", false)),
    ("down", "Down", ("down", true)),
    ("up", "Up", ("down", false)),
];

/// The states that have a colour.
const STATES: [&str; 6] = ["up", "draining", "down", "unavail", "checking", "unhealthy"];

/// An upstream as the page reads it from its JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageUpstream {
    /// `policy`.
    pub policy: Option<String>,
    /// `generation`.
    pub generation: Option<u64>,
    /// `peers`.
    pub peers: Vec<PageServer>,
    /// `totals`.
    pub totals: Option<Totals>,
    /// `sessions` (an upstream with a learn zone).
    pub sessions: Option<Value>,
    /// `queue` (an upstream with `ha_queue`).
    pub queue: Option<Value>,
}

/// A server as the page reads it from its JSON; absent keys are `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageServer {
    /// `id`.
    pub id: u64,
    /// `server`: the address.
    pub server: String,
    /// `name`: the `server` line's name.
    pub name: Option<String>,
    /// `backup`.
    pub backup: bool,
    /// `weight`.
    pub weight: Option<u64>,
    /// `configured_weight`.
    pub configured_weight: Option<u64>,
    /// `state`.
    pub state: String,
    /// `state_since`: when it entered its state (an ISO 8601 date).
    pub state_since: Option<Value>,
    /// `active`.
    pub active: Option<u64>,
    /// `drain`.
    pub drain: Option<bool>,
    /// `down`.
    pub down: Option<bool>,
    /// `requests`.
    pub requests: Option<u64>,
    /// `bound` (an upstream that binds sessions).
    pub bound: Option<u64>,
    /// `sent`.
    pub sent: Option<u64>,
    /// `received`.
    pub received: Option<u64>,
    /// `fails`.
    pub fails: Option<u64>,
    /// `unavail`.
    pub unavail: Option<u64>,
    /// `downtime`, ms.
    pub downtime: Option<u64>,
    /// `response_time`, ms.
    pub response_time: Option<u64>,
    /// `percentiles`: `{"window", "responses", "p50", "p95", "p99"}`
    /// (ms).
    pub percentiles: Option<Value>,
    /// `health_checks` (an upstream with `ha_check`).
    pub health_checks: Option<Value>,
}

/// The page with every upstream of `upstreams` rendered, at `clock`;
/// `write`: the location takes changes (`ha_api write=on`).
pub fn render(upstreams: &[Upstream<'_>], clock: Clock, write: bool) -> Body {
    let (head, tail) = TEMPLATE.split_once(MARK).unwrap_or((TEMPLATE, ""));
    let head = head
        .replace("__HAB_NOW__", &clock.wall_ms.to_string())
        .replace(
            "<span id=\"updated\">never</span>",
            &format!("<span id=\"updated\">{}</span>", as_of(clock.wall_ms)),
        );
    let tail = tail.replace("__HAB_WRITE__", if write { "true" } else { "false" });
    let mut out = Body::new();
    out.push(head.as_bytes());
    let fields = Fields::from_query(FIELDS);
    let mut sorted: Vec<&Upstream<'_>> = upstreams.iter().collect();
    sorted.sort_by_key(|u| u.name);
    for u in sorted {
        let mut json = Body::new();
        Render {
            name: u.name,
            zone: u.zone,
            learn: u.learn,
            clock,
            fields: fields.as_ref(),
            plus: false,
        }
        .write(&mut json);
        match serde_json::from_slice::<PageUpstream>(&json.to_vec()) {
            Ok(p) => section(&mut out, u.name, &p, clock.wall_ms, write),
            Err(e) => unrendered(&mut out, u.name, &e.to_string()),
        }
    }
    out.push(tail.as_bytes());
    out
}

/// The time of the figures, for the header: `2026-12-07 20:11:50 UTC`.
fn as_of(wall_ms: u64) -> String {
    if wall_ms == 0 {
        return "never".to_owned();
    }
    let d = iso8601(wall_ms);
    format!("{} {} UTC", &d[..10], &d[11..19])
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped: safe in text and in
/// quoted attribute values.
pub fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The columns of an upstream's table.
fn columns(bound: bool, health: bool) -> Vec<&'static Column> {
    COLUMNS
        .iter()
        .filter(|c| match c.3 {
            None => true,
            Some("bound") => bound,
            Some(_) => health,
        })
        .collect()
}

/// An upstream whose JSON could not be read: its title and why; the
/// script renders it on its first refresh.
fn unrendered(out: &mut Body, name: &str, why: &str) {
    let mut s = String::new();
    let _ = write!(
        s,
        "<section data-upstream=\"{n}\"><h2><span class=\"title\">{n}</span></h2>\
         <div class=\"note\">not rendered: {}</div></section>",
        esc(why),
        n = esc(name),
    );
    out.push(s.as_bytes());
}

fn section(out: &mut Body, name: &str, u: &PageUpstream, wall: u64, write: bool) {
    let bound = u.peers.iter().any(|s| s.bound.is_some());
    let health = u.peers.iter().any(|s| s.health_checks.is_some());
    let cols = columns(bound, health);
    let keys: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let name = esc(name);
    let mut s = String::with_capacity(4096);
    let _ = write!(
        s,
        "<section data-upstream=\"{name}\" data-cols=\"{}\"><h2><span class=\"title\">{name}\
         </span><span class=\"sub\">policy {}, generation {}</span></h2><dl class=\"totals\">",
        keys.join(" "),
        esc(u.policy.as_deref().unwrap_or(fmt::DASH)),
        u.generation.map_or(fmt::DASH.to_owned(), |g| g.to_string()),
    );
    for (key, label, text) in fmt::totals(&u.totals.unwrap_or_default()) {
        let _ = write!(
            s,
            "<div data-key=\"{key}\"><dt>{label}</dt><dd>{}</dd></div>",
            esc(&text)
        );
    }
    s.push_str("</dl>");
    for (class, line) in [
        ("sessions", u.sessions.as_ref().map(fmt::sessions)),
        ("queue", u.queue.as_ref().map(fmt::queue)),
    ] {
        match line {
            Some(line) => {
                let _ = write!(s, "<div class=\"{class}\">{}</div>", esc(&line));
            }
            None => {
                let _ = write!(s, "<div class=\"{class}\" hidden></div>");
            }
        }
    }
    s.push_str("<div class=\"scroll\"><table><thead><tr>");
    for (key, label, class, _, title) in &cols {
        let class = format!("{class} c-{key}");
        let _ = write!(s, "<th class=\"{}\"", class.trim());
        if !title.is_empty() {
            let _ = write!(s, " title=\"{}\"", esc(title));
        }
        let _ = write!(s, ">{label}</th>");
    }
    if write {
        s.push_str("<th class=\"c-actions\">Actions</th>");
    }
    s.push_str("</tr></thead><tbody>");
    out.push(s.as_bytes());
    let mut peers: Vec<&PageServer> = u.peers.iter().collect();
    peers.sort_by_key(|p| p.id);
    for p in peers {
        s.clear();
        row(&mut s, &name, p, &cols, wall, write);
        out.push(s.as_bytes());
    }
    out.push(b"</tbody></table></div></section>");
}

/// One server's row; `name` is escaped already.
fn row(s: &mut String, name: &str, p: &PageServer, cols: &[&Column], wall: u64, write: bool) {
    let _ = write!(
        s,
        "<tr data-upstream=\"{name}\" data-id=\"{}\" data-state=\"{}\">",
        p.id,
        esc(&p.state)
    );
    for &&(key, label, class, _, _) in cols {
        let class = match key {
            "state" => {
                let st = if STATES.contains(&p.state.as_str()) {
                    p.state.as_str()
                } else {
                    "unknown"
                };
                format!("state st-{st}")
            }
            "last" if p.health_checks.as_ref().is_some_and(fmt::last_failed) => {
                "last failed".to_owned()
            }
            _ => format!("{class} {key}").trim().to_owned(),
        };
        let _ = write!(s, "<td class=\"{class}\" data-label=\"{label}\">");
        cell(s, key, p, wall, write);
        s.push_str("</td>");
    }
    if write {
        s.push_str("<td class=\"actions\" data-label=\"Actions\">");
        for (action, label, (field, when)) in ACTIONS {
            let value = if field == "drain" { p.drain } else { p.down };
            let disabled = if value == Some(when) { " disabled" } else { "" };
            let _ = write!(
                s,
                "<button type=\"button\" data-action=\"{action}\"{disabled}>{label}</button>"
            );
        }
        s.push_str("</td>");
    }
    s.push_str("</tr>");
}

/// The inside of one cell (the script's `updateRow`).
fn cell(s: &mut String, key: &str, p: &PageServer, wall: u64, write: bool) {
    let text: Cow<'_, str> = match key {
        "id" => p.id.to_string().into(),
        "server" => {
            s.push_str(&esc(&p.server));
            if let Some(n) = p.name.as_deref().filter(|n| *n != p.server) {
                let _ = write!(s, "<span class=\"name\">{}</span>", esc(n));
            }
            if p.backup {
                s.push_str("<span class=\"tag\">backup</span>");
            }
            return;
        }
        "state" => {
            let _ = write!(s, "<span>{}</span>", esc(&p.state));
            return;
        }
        "since" => fmt::since(p.state_since.as_ref(), wall).into(),
        "weight" => {
            let w = fmt::count_u(p.weight);
            let conf = fmt::configured(p.weight, p.configured_weight);
            if write {
                let _ = write!(
                    s,
                    "<form class=\"setw\"><input type=\"number\" name=\"weight\" min=\"1\" \
                     max=\"1000000\" required title=\"Weight of server {}\" value=\"{w}\">\
                     <button type=\"submit\" data-action=\"weight\">Set</button></form>\
                     <span class=\"conf\">{conf}</span><button type=\"button\" \
                     data-action=\"weight-reset\" title=\"Back to the configured weight\"{}>\
                     Reset</button>",
                    p.id,
                    if conf.is_empty() { " hidden" } else { "" }
                );
            } else {
                let _ = write!(
                    s,
                    "<span class=\"w\">{w}</span><span class=\"conf\">{conf}</span>"
                );
            }
            return;
        }
        "active" => fmt::count_u(p.active).into(),
        "requests" => fmt::count_u(p.requests).into(),
        // Rates: from two polls of the script.
        "rps" | "err" | "bound" => fmt::DASH.into(),
        "fails" => fmt::count_u(p.fails).into(),
        "unavail" => fmt::count_u(p.unavail).into(),
        "downtime" => p
            .downtime
            .map_or(fmt::DASH.to_owned(), fmt::duration)
            .into(),
        "sent" => fmt::bytes(p.sent).into(),
        "received" => fmt::bytes(p.received).into(),
        "rt" => fmt::count_u(p.response_time).into(),
        "percentiles" => fmt::percentiles(p.percentiles.as_ref()).into(),
        "checks" => fmt::checks(p.health_checks.as_ref()).into(),
        "last" => fmt::last_check(p.health_checks.as_ref(), wall).into(),
        "spark" => {
            s.push_str(
                "<svg class=\"spark\" width=\"120\" height=\"22\" viewBox=\"0 0 120 22\">\
                 <polyline></polyline></svg>",
            );
            return;
        }
        _ => fmt::DASH.into(),
    };
    s.push_str(&esc(&text));
}

/// The formats of the figures, as the script's (`count`, `tenths`,
/// `bytes`, `duration`, ...): the same input gives the same text.
pub mod fmt {
    use serde_json::Value;

    use crate::json::Totals;

    /// What an absent figure reads.
    pub const DASH: &str = "\u{2013}";

    /// A JSON number as the script's `String(v)` writes it.
    pub fn number(v: &Value) -> Option<String> {
        if let Some(n) = v.as_u64() {
            return Some(n.to_string());
        }
        if let Some(n) = v.as_i64() {
            return Some(n.to_string());
        }
        let f = v.as_f64().filter(|f| f.is_finite())?;
        Some(if f.fract() == 0.0 && f.abs() < 1e15 {
            format!("{}", f as i64)
        } else {
            format!("{f}")
        })
    }

    /// A count (`count`).
    pub fn count(v: Option<&Value>) -> String {
        v.and_then(number).unwrap_or_else(|| DASH.to_owned())
    }

    /// A count we hold as a number.
    pub fn count_u(v: Option<u64>) -> String {
        v.map_or(DASH.to_owned(), |n| n.to_string())
    }

    /// One decimal, rounded half up on tenths (`tenths`).
    pub fn tenths(v: f64) -> String {
        if !v.is_finite() {
            return DASH.to_owned();
        }
        // Half away from zero: half up for the figures shown (>= 0), as
        // the script's Math.round.
        let t = (v * 10.0).round() as i64;
        let sign = if t < 0 { "-" } else { "" };
        let a = t.unsigned_abs();
        format!("{sign}{}.{}", a / 10, a % 10)
    }

    /// Bytes in B, KiB, MiB, ... (`bytes`).
    pub fn bytes(v: Option<u64>) -> String {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        let Some(v) = v else {
            return DASH.to_owned();
        };
        if v < 1024 {
            return format!("{v} B");
        }
        let (mut unit, mut k) = (1024u64, 0);
        while v >= unit * 1024 && k < UNITS.len() - 1 {
            unit *= 1024;
            k += 1;
        }
        format!("{} {}", tenths(v as f64 / unit as f64), UNITS[k])
    }

    /// A duration in ms as `850 ms`, `12 s`, `4m 5s`, `3h 2m`, `2d 3h`
    /// (`duration`).
    pub fn duration(ms: u64) -> String {
        if ms < 1000 {
            return format!("{ms} ms");
        }
        let s = ms / 1000;
        match s {
            0..=59 => format!("{s} s"),
            60..=3599 => format!("{}m {}s", s / 60, s % 60),
            3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
            _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        }
    }

    /// The time from `date` (an ISO 8601 date as the API writes them,
    /// or ms since the epoch) to `now` (`since`; 0: unknown).
    pub fn since(date: Option<&Value>, now: u64) -> String {
        let t = match date {
            Some(Value::String(s)) => epoch_ms(s),
            Some(v) => v.as_u64(),
            None => None,
        };
        match t {
            Some(t) if now > 0 => duration(now.saturating_sub(t)),
            _ => DASH.to_owned(),
        }
    }

    /// `YYYY-MM-DDThh:mm:ss.mmmZ` (the API's dates, [`crate::json::iso8601`])
    /// as ms since the epoch.
    pub fn epoch_ms(date: &str) -> Option<u64> {
        let b = date.as_bytes();
        let shape = b"0000-00-00T00:00:00.000Z";
        let fits = b.len() == shape.len()
            && b.iter().zip(shape).all(|(c, s)| {
                if *s == b'0' {
                    c.is_ascii_digit()
                } else {
                    c == s
                }
            });
        if !fits {
            return None;
        }
        let n = |at: usize, width: usize| -> i64 {
            b[at..at + width]
                .iter()
                .fold(0, |v, c| v * 10 + i64::from(c - b'0'))
        };
        let (y, m, d) = (n(0, 4), n(5, 2), n(8, 2));
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        // Days since 1970-01-01 of a civil date (Howard Hinnant's
        // days_from_civil), the inverse of iso8601's.
        let y = y - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + n(11, 2) * 3600 + n(14, 2) * 60 + n(17, 2);
        u64::try_from(secs * 1000 + n(20, 3)).ok()
    }

    /// `percentiles`: `p50 / p95 / p99` (ms); a dash without responses.
    pub fn percentiles(p: Option<&Value>) -> String {
        let Some(p @ Value::Object(_)) = p else {
            return DASH.to_owned();
        };
        let ps = ["p50", "p95", "p99"].map(|k| p.get(k).and_then(Value::as_f64));
        if ps.iter().all(Option::is_none) {
            return DASH.to_owned();
        }
        ps.map(|v| v.map_or(DASH.to_owned(), tenths)).join(" / ")
    }

    /// ` (configured)` when the weight in force is another (`weight`).
    pub fn configured(weight: Option<u64>, configured: Option<u64>) -> String {
        match configured {
            Some(c) if Some(c) != weight => format!(" ({c})"),
            _ => String::new(),
        }
    }

    /// `checks / fails / unhealthy` of `health_checks` (`checks`).
    pub fn checks(h: Option<&Value>) -> String {
        match h {
            Some(h @ Value::Object(_)) => format!(
                "{} / {} / {}",
                count(h.get("checks")),
                count(h.get("fails")),
                count(h.get("unhealthy"))
            ),
            _ => DASH.to_owned(),
        }
    }

    /// The last check: result, reason, how many such in a row (`rise` or
    /// `fall`, from 2), duration, how long ago (`lastCheck`).
    pub fn last_check(h: Option<&Value>, now: u64) -> String {
        let Some(h @ Value::Object(_)) = h else {
            return DASH.to_owned();
        };
        let result = match h.get("last_result").filter(|r| !r.is_null()) {
            Some(r) => r.clone(),
            None => match h.get("last_passed") {
                Some(Value::Bool(true)) => Value::from("passed"),
                Some(Value::Bool(false)) => Value::from("failed"),
                _ => return DASH.to_owned(),
            },
        };
        let mut text = match &result {
            Value::Bool(true) => "passed".to_owned(),
            Value::Bool(false) => "failed".to_owned(),
            Value::String(s) => s.clone(),
            Value::Number(_) => count(Some(&result)),
            other => other.to_string(),
        };
        // A reason that only repeats the result ("passed") is left out.
        if let Some(r) = h.get("last_reason").and_then(Value::as_str) {
            if !r.is_empty() && r != text {
                text.push_str(": ");
                text.push_str(r);
            }
        }
        let streak = h.get(if last_failed(h) { "fall" } else { "rise" });
        if let Some(n) = streak.and_then(Value::as_u64).filter(|&n| n >= 2) {
            text.push_str(&format!(" ({n} in a row)"));
        }
        if let Some(d) = h.get("last_duration").and_then(number) {
            text.push_str(&format!(", {d} ms"));
        }
        let ago = since(h.get("last_check"), now);
        if ago != DASH {
            text.push_str(&format!(", {ago} ago"));
        }
        text
    }

    /// Whether the last check failed (`lastFailed`).
    pub fn last_failed(h: &Value) -> bool {
        h.get("last_passed") == Some(&Value::Bool(false))
            || h.get("last_result") == Some(&Value::Bool(false))
            || h.get("last_result").and_then(Value::as_str) == Some("failed")
    }

    fn text(v: Option<&Value>) -> String {
        match v {
            None | Some(Value::Null) => DASH.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => number(v).unwrap_or_else(|| v.to_string()),
        }
    }

    /// The learn zone's line (`sessionsLine`).
    pub fn sessions(s: &Value) -> String {
        format!(
            "Sessions (zone {}): {} / {}, evicted {}, expired {}, created {}",
            text(s.get("zone")),
            count(s.get("entries")),
            count(s.get("capacity")),
            count(s.get("evicted")),
            count(s.get("expired")),
            count(s.get("created")),
        )
    }

    /// The queue's line (`queueLine`).
    pub fn queue(q: &Value) -> String {
        let p99 = q
            .get("wait_ms")
            .and_then(|w| w.get("p99"))
            .and_then(Value::as_f64)
            .map_or(DASH.to_owned(), |v| format!("{} ms", tenths(v)));
        format!(
            "Queue {}/{} \u{b7} p99 {p99} \u{b7} overflows {} \u{b7} timeouts {} \u{b7} \
             abandoned {} \u{b7} served {}",
            count(q.get("size")),
            count(q.get("max_size")),
            count(q.get("overflows")),
            count(q.get("timeouts")),
            count(q.get("abandoned")),
            count(q.get("served")),
        )
    }

    /// `(key, label, text)` of an upstream's totals (`totalsItems`).
    pub fn totals(t: &Totals) -> Vec<(&'static str, &'static str, String)> {
        let r = &t.responses;
        let mut items = vec![("requests", "Requests", t.requests.to_string())];
        if let Some(b) = t.bound {
            items.push(("bound", "Bound", b.to_string()));
        }
        for (k, v) in [
            ("1xx", r.r1xx),
            ("2xx", r.r2xx),
            ("3xx", r.r3xx),
            ("4xx", r.r4xx),
            ("5xx", r.r5xx),
        ] {
            items.push((k, k, v.to_string()));
        }
        items.extend([
            ("fails", "Fails", t.fails.to_string()),
            ("unavail", "Unavail", t.unavail.to_string()),
            ("sent", "Sent", bytes(Some(t.sent))),
            ("received", "Received", bytes(Some(t.received))),
            ("active", "Active", t.active.to_string()),
        ]);
        if let Some(p) = &t.percentiles {
            let p = serde_json::to_value(p).ok();
            items.push(("percentiles", "p50/95/99 ms", percentiles(p.as_ref())));
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hab_core::layout::stats::TryInfo;
    use hab_core::spec::{PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::{OwnedAttempt, OwnedTable};
    use hab_core::Outcome;

    const CLOCK: Clock = Clock {
        now_ms: 100_000,
        wall_ms: 1_796_126_400_000,
    };

    fn table(ids: &[Vec<u8>]) -> OwnedTable {
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| PeerSpec {
                position: Some(k as u32),
                weight: 1 + k as u32 % 3,
                ..PeerSpec::new(id)
            })
            .collect();
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    /// `n` tries through the zone, each answered `status` with `sent` and
    /// `received` bytes.
    fn traffic(t: &OwnedTable, n: u64, status: u32, sent: u64, received: u64) {
        for k in 0..n {
            let mut a = OwnedAttempt::new(t.zone(), k);
            a.pick(k).unwrap();
            let info = TryInfo {
                status,
                header_ms: Some(3),
                sent,
                received,
            };
            a.release_with(Outcome::Ok, &info, k + 5).unwrap();
            a.end();
        }
    }

    fn html(ups: &[Upstream<'_>], write: bool) -> String {
        String::from_utf8(render(ups, CLOCK, write).to_vec()).unwrap()
    }

    /// What the server put between the template's two halves.
    fn rendered(page: &str) -> &str {
        let start = page.find("<main id=\"upstreams\"").unwrap();
        let start = start + page[start..].find('>').unwrap() + 1;
        &page[start..page.rfind("</main>").unwrap()]
    }

    #[test]
    fn the_template_has_each_marker_once() {
        for mark in [MARK, "__HAB_NOW__", "__HAB_WRITE__"] {
            assert_eq!(TEMPLATE.matches(mark).count(), 1, "{mark}");
        }
        let page = html(&[], true);
        assert!(!page.contains("__HAB_") && !page.contains(MARK), "{page}");
        assert!(page.contains("WRITE = true === true"));
        assert!(page.contains("data-now=\"1796126400000\""));
        assert!(page.contains("<span id=\"updated\">2026-12-01 12:00:00 UTC</span>"));
        assert!(html(&[], false).contains("WRITE = false === true"));
    }

    /// Every upstream (in name order) and every server (by id), with
    /// its figures and the upstream's totals, in the HTML itself.
    #[test]
    fn every_upstream_and_server_is_rendered_with_its_figures() {
        let ids: Vec<Vec<u8>> = (0..3)
            .map(|k| format!("app\0s{k}:80\x00127.0.0.1:{}", 8000 + k).into_bytes())
            .collect();
        let app = table(&ids);
        traffic(&app, 6, 200, 100, 2000);
        traffic(&app, 3, 503, 10, 20);
        app.zone().set_admin(1, None, Some(true), 0).unwrap();
        let other = table(&[b"b\0x:1\x00127.0.0.2:1".to_vec()]);
        let ups = [
            Upstream {
                name: "zeta",
                zone: other.zone(),
                learn: None,
            },
            Upstream {
                name: "app",
                zone: app.zone(),
                learn: None,
            },
        ];
        let page = html(&ups, false);
        let body = rendered(&page);
        let app_at = body.find("<section data-upstream=\"app\"").unwrap();
        let zeta_at = body.find("<section data-upstream=\"zeta\"").unwrap();
        assert!(app_at < zeta_at, "name order");
        assert_eq!(body.matches("<tr data-upstream=\"app\"").count(), 3);
        assert_eq!(body.matches("<tr data-upstream=\"zeta\"").count(), 1);
        for k in 0..3 {
            let row = body
                .split(&format!("<tr data-upstream=\"app\" data-id=\"{k}\""))
                .nth(1)
                .unwrap();
            let row = &row[..row.find("</tr>").unwrap()];
            assert!(row.contains(&format!(
                "127.0.0.1:{}<span class=\"name\">s{k}:80",
                8000 + k
            )));
            // 9 tries round robin over weights 1, 2, 3: 1.5, 3, 4.5 of each
            // 3 → requests 3 (1.5 × 2 rounds)... read them from the JSON.
            let v = app.zone().view(k, CLOCK.now_ms).unwrap();
            let requests = format!("data-label=\"Requests\">{}</td>", v.stats.requests);
            assert!(row.contains(&requests), "{row}");
            let sent = format!(
                "data-label=\"Sent\">{}</td>",
                fmt::bytes(Some(v.stats.sent))
            );
            assert!(row.contains(&sent), "{row}");
            let w = format!("<span class=\"w\">{}</span>", 1 + k % 3);
            assert!(row.contains(&w), "{row}");
        }
        assert!(body.contains("data-id=\"1\" data-state=\"draining\""));
        assert!(body.contains(
            "<td class=\"state st-draining\" data-label=\"State\"><span>draining</span>"
        ));
        // The totals: 9 requests, 6 2xx, 3 5xx, 630 bytes sent.
        for (key, text) in [
            ("requests", "9"),
            ("2xx", "6"),
            ("5xx", "3"),
            ("sent", "630 B"),
            ("received", "11.8 KiB"),
            ("active", "0"),
        ] {
            let item = format!("<div data-key=\"{key}\"><dt>");
            let at = body[app_at..]
                .find(&item)
                .unwrap_or_else(|| panic!("{key}"));
            let dd = &body[app_at + at..];
            let dd = &dd[dd.find("<dd>").unwrap() + 4..dd.find("</dd>").unwrap()];
            assert_eq!(dd, text, "{key}");
        }
        // Read only: no form, no buttons.
        assert!(!body.contains("<form") && !body.contains("<button"));
        assert!(
            !body.contains("c-checks"),
            "no health column without ha_check"
        );
    }

    /// With write=on: a weight form per server holding its weight, the
    /// admin buttons disabled as the state says, Reset shown only with an
    /// override.
    #[test]
    fn a_writable_page_has_the_weight_form_and_buttons() {
        let ids: Vec<Vec<u8>> = (0..2)
            .map(|k| format!("app\0s{k}\x00127.0.0.1:{k}").into_bytes())
            .collect();
        let app = table(&ids);
        app.zone().set_weight(1, Some(9)).unwrap();
        app.zone().publish(1, |_| true).unwrap();
        app.zone().set_admin(0, Some(true), None, 0).unwrap();
        let ups = [Upstream {
            name: "app",
            zone: app.zone(),
            learn: None,
        }];
        let body = html(&ups, true);
        let rows: Vec<&str> = body.split("<tr data-upstream=").skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].contains("name=\"weight\" min=\"1\" max=\"1000000\" required title=\"Weight of server 0\" value=\"1\""));
        assert!(rows[0].contains(
            "data-action=\"weight-reset\" title=\"Back to the configured weight\" hidden>"
        ));
        assert!(rows[0].contains("data-action=\"down\" disabled>Down"));
        assert!(rows[0].contains("data-action=\"up\">Up"));
        assert!(rows[1].contains("value=\"9\""), "{}", rows[1]);
        assert!(rows[1].contains("<span class=\"conf\"> (2)</span>"));
        assert!(rows[1].contains("title=\"Back to the configured weight\">Reset"));
        assert!(body.contains("<th class=\"c-actions\">Actions</th>"));
    }

    /// Names with `<&"'` (the upstream's, the server's and its address)
    /// are escaped in text and in attributes: no markup comes from them.
    #[test]
    fn names_are_escaped() {
        let evil = "x<b>&\"'</b><script>alert(1)</script>";
        let id = format!("{evil}\0{evil}\0{evil}:80");
        let t = table(&[id.into_bytes()]);
        let ups = [Upstream {
            name: evil,
            zone: t.zone(),
            learn: None,
        }];
        for write in [false, true] {
            let page = html(&ups, write);
            let body = rendered(&page);
            let e = "x&lt;b&gt;&amp;&quot;&#39;&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;";
            assert!(!body.contains("<script") && !body.contains("<b>"), "{body}");
            assert!(!body.contains("'"), "{body}");
            assert!(body.contains(&format!("<section data-upstream=\"{e}\"")));
            assert!(body.contains(&format!("<span class=\"title\">{e}</span>")));
            assert!(body.contains(&format!("<tr data-upstream=\"{e}\" data-id=\"0\"")));
            assert!(body.contains(&format!(">{e}:80<span class=\"name\">{e}</span>")));
            // Every quote in the render delimits an attribute: an even
            // count per tag.
            for tag in body.split('<').skip(1) {
                let tag = &tag[..tag.find('>').unwrap_or_else(|| panic!("{tag}"))];
                assert_eq!(tag.matches('"').count() % 2, 0, "{tag}");
            }
        }
        assert_eq!(esc("plain"), "plain");
        assert_eq!(esc("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    }

    /// The formats, as the script's (status.html) give them.
    #[test]
    fn formats() {
        use serde_json::json;
        for (v, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1280, "1.3 KiB"),
            (1_048_575, "1024.0 KiB"),
            (1_048_576, "1.0 MiB"),
            (5 << 30, "5.0 GiB"),
            (3 << 50, "3.0 PiB"),
            (1 << 62, "4096.0 PiB"),
        ] {
            assert_eq!(fmt::bytes(Some(v)), want, "{v}");
        }
        assert_eq!(fmt::bytes(None), fmt::DASH);
        for (ms, want) in [
            (0, "0 ms"),
            (999, "999 ms"),
            (1000, "1 s"),
            (59_999, "59 s"),
            (60_000, "1m 0s"),
            (3_599_999, "59m 59s"),
            (3_600_000, "1h 0m"),
            (86_399_999, "23h 59m"),
            (90_000_000, "1d 1h"),
        ] {
            assert_eq!(fmt::duration(ms), want, "{ms}");
        }
        for (v, want) in [
            (0.0, "0.0"),
            (0.25, "0.3"),
            (1.24, "1.2"),
            (49.5, "49.5"),
            (12.05, "12.1"),
        ] {
            assert_eq!(fmt::tenths(v), want, "{v}");
        }
        assert_eq!(fmt::tenths(f64::NAN), fmt::DASH);
        let now = 1_000_000;
        assert_eq!(fmt::since(Some(&json!(995_000)), now), "5 s");
        assert_eq!(
            fmt::since(Some(&json!(1_000_500)), now),
            "0 ms",
            "clock skew: 0"
        );
        assert_eq!(fmt::since(Some(&json!("x")), now), fmt::DASH);
        assert_eq!(fmt::since(None, now), fmt::DASH);
        assert_eq!(fmt::since(Some(&json!(1)), 0), fmt::DASH);
        let wall = CLOCK.wall_ms;
        let date = json!(crate::json::iso8601(wall - 125_000));
        assert_eq!(fmt::since(Some(&date), wall), "2m 5s");
        for ms in [
            0,
            951_782_400_000,
            1_796_126_400_123,
            4_107_542_399_999,
            253_402_300_799_999,
        ] {
            assert_eq!(fmt::epoch_ms(&crate::json::iso8601(ms)), Some(ms), "{ms}");
        }
        for bad in [
            "",
            "2026-12-01T12:00:00Z",
            "2026-13-01T12:00:00.000Z",
            "2026-12-01 12:00:00.000Z",
        ] {
            assert_eq!(fmt::epoch_ms(bad), None, "{bad}");
        }
        assert_eq!(
            fmt::percentiles(Some(&json!({"window": 41250, "responses": 812, "p50": 1,
                "p95": 2.25, "p99": 30.04}))),
            "1.0 / 2.3 / 30.0"
        );
        let none = json!({"window": 100, "responses": 0, "p50": null, "p95": null, "p99": null});
        assert_eq!(fmt::percentiles(Some(&none)), fmt::DASH);
        assert_eq!(fmt::percentiles(None), fmt::DASH);
        assert_eq!(fmt::configured(Some(3), Some(3)), "");
        assert_eq!(fmt::configured(Some(7), Some(3)), " (3)");
        // Health checks: today's object, and the one with the last check.
        let today = json!({"checks": 12, "fails": 3, "unhealthy": 1, "last_passed": false,
            "rise": 0, "fall": 2});
        assert_eq!(fmt::checks(Some(&today)), "12 / 3 / 1");
        assert_eq!(fmt::last_check(Some(&today), now), "failed (2 in a row)");
        assert!(fmt::last_failed(&today));
        let first = json!({"checks": 0, "fails": 0, "unhealthy": 0, "rise": 0, "fall": 0});
        assert_eq!(fmt::last_check(Some(&first), now), fmt::DASH);
        let full = json!({"checks": 5, "fails": 1, "last_passed": false,
            "last_result": "failed", "last_reason": "status 503", "last_duration": 4,
            "last_check": 998_000, "rise": 0, "fall": 1});
        assert_eq!(
            fmt::last_check(Some(&full), now),
            "failed: status 503, 4 ms, 2 s ago"
        );
        let passed = json!({"last_passed": true, "last_result": "passed", "last_reason": "",
            "last_duration": 1.5, "rise": 7, "fall": 0});
        assert_eq!(
            fmt::last_check(Some(&passed), now),
            "passed (7 in a row), 1.5 ms"
        );
        let again = json!({"last_passed": true, "last_result": "passed", "last_reason": "passed",
            "last_duration": 2, "last_check": 999_000, "rise": 1, "fall": 0});
        assert_eq!(fmt::last_check(Some(&again), now), "passed, 2 ms, 1 s ago");
        assert!(!fmt::last_failed(&passed));
        assert_eq!(fmt::number(&json!(3.0)).as_deref(), Some("3"));
        assert_eq!(fmt::number(&json!(-4)).as_deref(), Some("-4"));
        assert_eq!(
            fmt::queue(
                &json!({"size": 1, "max_size": 3, "overflows": 1, "timeouts": 1,
                "abandoned": 1, "served": 2, "wait_ms": {"p99": 49.5}})
            ),
            "Queue 1/3 \u{b7} p99 49.5 ms \u{b7} overflows 1 \u{b7} timeouts 1 \u{b7} \
             abandoned 1 \u{b7} served 2"
        );
        assert_eq!(
            fmt::sessions(&json!({"zone": "learnt", "entries": 2, "capacity": 64,
                "created": 2, "evicted": 0, "expired": 0})),
            "Sessions (zone learnt): 2 / 64, evicted 0, expired 0, created 2"
        );
    }

    /// Figures only some servers have (`state_since`, `percentiles`, the
    /// last check's reason, duration and time) are rendered when the
    /// JSON has them.
    #[test]
    fn figures_are_shown_when_the_json_has_them() {
        let u: PageUpstream = serde_json::from_str(
            r#"{"name": "a", "policy": "p2c", "generation": 4, "peers": [
                {"id": 0, "server": "10.0.0.1:80", "name": "a:80", "state": "unhealthy",
                 "state_since": "2026-12-01T11:59:55.000Z", "weight": 1, "configured_weight": 1,
                 "percentiles": {"window": 41250, "responses": 812, "p50": 1.5,
                   "p95": 4, "p99": 9.96},
                 "health_checks": {"checks": 3, "fails": 2, "unhealthy": 1,
                   "last_passed": false, "rise": 0, "fall": 2,
                   "last_result": "failed", "last_reason": "timed out",
                   "last_duration": 1000, "last_check": "2026-12-01T11:59:59.000Z"},
                 "an_unknown_key": [1, 2]}],
             "totals": {"requests": 0, "responses": {"1xx": 0, "2xx": 0, "3xx": 0,
                "4xx": 0, "5xx": 0, "total": 0}, "sent": 0, "received": 0,
                "fails": 0, "unavail": 0, "active": 0, "percentiles": {"window": 41250,
                "responses": 812, "p50": 1.5, "p95": 4.0, "p99": 10.0}}}"#,
        )
        .unwrap();
        let mut out = Body::new();
        section(&mut out, "a", &u, CLOCK.wall_ms, false);
        let s = String::from_utf8(out.to_vec()).unwrap();
        for want in [
            "data-label=\"For\">5 s</td>",
            "data-label=\"p50/95/99 ms\">1.5 / 4.0 / 10.0</td>",
            "<div data-key=\"percentiles\"><dt>p50/95/99 ms</dt><dd>1.5 / 4.0 / 10.0</dd></div>",
            "data-label=\"Checks / fails / unhealthy\">3 / 2 / 1</td>",
            "<td class=\"last failed\" data-label=\"Last check\">failed: timed out (2 in a row), \
             1000 ms, 1 s ago</td>",
            "data-cols=\"id server state since weight active rps requests err fails unavail \
             downtime sent received rt percentiles checks last spark\"",
            "<span class=\"sub\">policy p2c, generation 4</span>",
        ] {
            assert!(s.contains(want), "{want}\n{s}");
        }
    }

    /// 10,000 servers: the page renders in bounded time (generous for a
    /// debug build on a shared machine; the release figure is in the
    /// module note) and its size grows linearly.
    #[test]
    fn ten_thousand_servers_render_in_bounded_time() {
        let ids: Vec<Vec<u8>> = (0..10_000u32)
            .map(|k| {
                format!(
                    "big\0s{k}\x0010.{}.{}.{}:80",
                    k >> 16,
                    (k >> 8) & 255,
                    k & 255
                )
                .into_bytes()
            })
            .collect();
        let t = table(&ids);
        let ups = [Upstream {
            name: "big",
            zone: t.zone(),
            learn: None,
        }];
        let best = (0..3)
            .map(|_| {
                let t0 = std::time::Instant::now();
                let b = render(&ups, CLOCK, true);
                (t0.elapsed(), b.len())
            })
            .min()
            .unwrap();
        let (took, len) = best;
        let t0 = std::time::Instant::now();
        let mut json = Body::new();
        Render {
            name: "big",
            zone: t.zone(),
            learn: None,
            clock: CLOCK,
            fields: None,
            plus: false,
        }
        .write(&mut json);
        let json_took = t0.elapsed();
        eprintln!(
            "10,000 servers: page {took:?}, {len} bytes; JSON {json_took:?}, {} bytes",
            json.len()
        );
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        assert!(len < 10_000 * 3_000 + TEMPLATE.len(), "{len} bytes");
        let page = String::from_utf8(render(&ups, CLOCK, true).to_vec()).unwrap();
        assert_eq!(page.matches("<tr data-upstream=\"big\"").count(), 10_000);
    }
}
