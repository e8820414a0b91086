//! `hab status` tables and the SERVER argument of the admin commands
//!
//! [`table`] renders upstreams as aligned text, one block per upstream;
//! [`resolve`] turns what an operator types (an id, an address, a name)
//! into the server id the API wants, or an error listing the candidates.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::api::{Server, Upstream};

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
fn weight_cell(s: &Server) -> String {
    match s.configured_weight {
        Some(c) if c != s.weight => format!("{} (conf {c})", s.weight),
        _ => s.weight.to_string(),
    }
}

/// One upstream: a title line, then a row per server.
pub fn upstream_table(name: &str, u: &Upstream) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "upstream {name}  policy {}  generation {}",
        if u.policy.is_empty() { "?" } else { &u.policy },
        u.generation
    );
    let header = [
        "ID",
        "SERVER",
        "NAME",
        "STATE",
        "WEIGHT",
        "ACTIVE",
        "MAX_CONNS",
        "BACKUP",
    ];
    let rows: Vec<[String; 8]> = u
        .peers
        .iter()
        .map(|s| {
            [
                s.id.to_string(),
                s.server.clone(),
                if s.name.is_empty() || s.name == s.server {
                    "-".to_owned()
                } else {
                    s.name.clone()
                },
                if s.state.is_empty() {
                    "?".to_owned()
                } else {
                    s.state.clone()
                },
                weight_cell(s),
                s.active.to_string(),
                if s.max_conns == 0 {
                    "-".to_owned()
                } else {
                    s.max_conns.to_string()
                },
                if s.backup { "yes" } else { "-" }.to_owned(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut row = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            // numbers right-aligned: ID, ACTIVE, MAX_CONNS
            if matches!(i, 0 | 5 | 6) {
                let _ = write!(l, "{cell:>w$}");
            } else {
                let _ = write!(l, "{cell:<w$}");
            }
            if i + 1 < cells.len() {
                l.push_str("  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    row(header.to_vec());
    for r in &rows {
        row(r.iter().map(String::as_str).collect());
    }
    if u.peers.is_empty() {
        out.push_str("  (no servers)\n");
    }
    out
}

/// One line about a server after a change.
pub fn server_line(upstream: &str, s: &Server) -> String {
    format!(
        "{upstream} #{} {}: state {}, weight {}, active {}",
        s.id,
        s.server,
        s.state,
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
                format!("#{} {}", s.id, s.server)
            } else {
                format!("#{} {} ({})", s.id, s.server, s.name)
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

    fn fixture() -> BTreeMap<String, Upstream> {
        serde_json::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn table_from_fixture() {
        let t = table(&fixture());
        let want = "\
upstream api  policy least_conn  generation 1
  ID  SERVER         NAME               STATE    WEIGHT  ACTIVE  MAX_CONNS  BACKUP
   0  10.0.0.1:9000  api.internal:9000  up       1            0          -  -
   1  10.0.0.2:9000  api.internal:9000  unavail  1            0          -  -

upstream app  policy round_robin  generation 3
  ID  SERVER          NAME                    STATE     WEIGHT       ACTIVE  MAX_CONNS  BACKUP
   0  127.0.0.1:8081  app1.example.com:8081   up        5                 2          -  -
   1  127.0.0.1:8082  -                       draining  10 (conf 1)      12        100  -
   2  10.0.0.9:8080   spare.example.com:8080  down      1                 0          -  yes
";
        assert_eq!(t, want, "got:\n{t}");
        assert_eq!(table(&BTreeMap::new()), "no upstreams with ha_balance\n");
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
