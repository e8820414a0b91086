//! nginx's access log as the harness writes it, parsed

use std::time::{SystemTime, UNIX_EPOCH};

/// One access log line: `$msec $pid $status "$request_uri" "$upstream_addr"
/// "$upstream_status" "$upstream_response_time"`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `$msec`: seconds since the epoch, millisecond resolution.
    pub msec: f64,
    pub pid: i32,
    pub status: u16,
    pub uri: String,
    /// `$upstream_addr` split into the peers tried, in order.
    pub upstream_addr: Vec<String>,
    /// `$upstream_status` split likewise.
    pub upstream_status: Vec<String>,
}

/// The access log format of the harness' nginx.
pub(super) const LOG_FORMAT: &str = "'$msec $pid $status \"$request_uri\" \
\"$upstream_addr\" \"$upstream_status\" \"$upstream_response_time\"'";

/// Splits `$upstream_addr` / `$upstream_status` values: peers of one
/// upstream are separated by `", "`, internal redirects by `" : "`.
fn split_upstream_list(v: &str) -> Vec<String> {
    if v == "-" || v.trim().is_empty() {
        return Vec::new();
    }
    v.split(" : ")
        .flat_map(|group| group.split(", "))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(super) fn parse_log_line(line: &str) -> Option<LogEntry> {
    // msec pid status "uri" "addr" "status" "time"
    let mut it = line.splitn(4, ' ');
    let msec = it.next()?.parse().ok()?;
    let pid = it.next()?.parse().ok()?;
    let status = it.next()?.parse().ok()?;
    let rest = it.next()?;
    let quoted: Vec<&str> = rest.split('"').skip(1).step_by(2).collect();
    Some(LogEntry {
        msec,
        pid,
        status,
        uri: (*quoted.first()?).to_owned(),
        upstream_addr: split_upstream_list(quoted.get(1)?),
        upstream_status: split_upstream_list(quoted.get(2)?),
    })
}

/// Seconds since the epoch, comparable with [`LogEntry::msec`].
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
