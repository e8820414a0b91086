//! Routing one API request to its answer
//!
//! | method | path (relative to the `ha_api` location) | |
//! |---|---|---|
//! | GET | `` | `["upstreams"]` |
//! | GET | `upstreams` | name → upstream |
//! | GET | `upstreams/{name}` | the upstream |
//! | GET | `upstreams/{name}/servers` | its servers |
//! | GET | `upstreams/{name}/servers/{id}` | one server |
//! | PATCH | `upstreams/{name}/servers/{id}` | change it (write only) |
//!
//! HEAD answers as GET. Every refusal has a JSON body (`docs/api.md`).

use std::collections::BTreeMap;

use hab_core::table::{Zone, MAX_WEIGHT};
use hab_core::Error;

use crate::json::{self, ErrorBody, ErrorDetail, Patch};

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
    /// Anything else.
    Other,
}

/// One upstream the caller serves.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its zone.
    pub zone: Zone<'a>,
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path below the location (no query string), e.g. `upstreams/app`.
    pub path: &'a str,
    /// The body (PATCH).
    pub body: &'a [u8],
    /// `ha_api write=on`.
    pub write: bool,
    /// Monotonic time, ms (the zones' clock).
    pub now_ms: u64,
    /// Builder lease owner for a publication (the worker's pid).
    pub owner: u64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// A line for the error log (a refused change), if any.
    pub log: Option<String>,
    /// The admin state changed: the caller saves the state file.
    pub changed: bool,
}

fn ok<T: serde::Serialize>(value: &T) -> Response {
    Response {
        status: 200,
        body: serde_json::to_vec(value).unwrap_or_default(),
        log: None,
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
        body: serde_json::to_vec(&body).unwrap_or_default(),
        log: None,
        changed: false,
    }
}

fn not_found(what: impl Into<String>) -> Response {
    refuse(404, "NotFound", what)
}

fn method_not_allowed(allowed: &str) -> Response {
    refuse(
        405,
        "MethodNotAllowed",
        format!("method not allowed here (allowed: {allowed})"),
    )
}

/// Answers `req` over `upstreams`; `alive` tells whether a lease owner
/// (pid) still runs.
pub fn handle(
    req: &Request<'_>,
    upstreams: &[Upstream<'_>],
    alive: impl Fn(u64) -> bool,
) -> Response {
    let parts: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let read = matches!(req.method, Method::Get | Method::Head);
    let find = |name: &str| upstreams.iter().find(|u| u.name == name);
    match parts.as_slice() {
        [] if read => ok(&["upstreams"]),
        ["upstreams"] if read => {
            let all: BTreeMap<&str, json::UpstreamJson> = upstreams
                .iter()
                .map(|u| (u.name, json::upstream(u.name, u.zone, req.now_ms)))
                .collect();
            ok(&all)
        }
        [] | ["upstreams"] => method_not_allowed("GET, HEAD"),
        ["upstreams", name, rest @ ..] => {
            let Some(u) = find(name) else {
                return not_found(format!("upstream \"{name}\" not found"));
            };
            match rest {
                [] if read => ok(&json::upstream(u.name, u.zone, req.now_ms)),
                ["servers"] if read => ok(&json::upstream(u.name, u.zone, req.now_ms).peers),
                [] | ["servers"] => method_not_allowed("GET, HEAD"),
                ["servers", id] => server(req, u, id, alive),
                _ => not_found(format!("no such resource \"{}\"", req.path)),
            }
        }
        _ => not_found(format!("no such resource \"{}\"", req.path)),
    }
}

fn server(req: &Request<'_>, u: &Upstream<'_>, id: &str, alive: impl Fn(u64) -> bool) -> Response {
    let index = id
        .parse::<u32>()
        .ok()
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|pos| u.zone.by_position(pos));
    let Some(i) = index else {
        return not_found(format!(
            "server \"{id}\" not found in upstream \"{}\"",
            u.name
        ));
    };
    let show = |zone: Zone<'_>| zone.view(i, req.now_ms).map(|v| json::server(&v, zone));
    match req.method {
        Method::Get | Method::Head => ok(&show(u.zone)),
        Method::Patch if !req.write => refuse(
            405,
            "MethodNotAllowed",
            "the API is read-only here: PATCH needs \"ha_api write=on\"",
        ),
        Method::Patch => match patch(req, u, i, alive) {
            Ok(changed) => Response {
                changed,
                ..ok(&show(u.zone))
            },
            Err(r) => r,
        },
        Method::Other => method_not_allowed("GET, HEAD, PATCH"),
    }
}

fn patch(
    req: &Request<'_>,
    u: &Upstream<'_>,
    i: usize,
    alive: impl Fn(u64) -> bool,
) -> Result<bool, Response> {
    if req.body.len() > MAX_BODY {
        return Err(refuse(400, "BadRequest", "request body too large"));
    }
    let p: Patch = serde_json::from_slice(req.body)
        .map_err(|e| refuse(400, "BadRequest", format!("invalid body: {e}")))?;
    if p == Patch::default() {
        return Err(refuse(
            400,
            "BadRequest",
            "nothing to change: give \"drain\", \"down\" or \"weight\"",
        ));
    }
    let weight = match p.weight {
        None => None,
        Some(None) => Some(None),
        Some(Some(w)) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => Some(Some(w as u32)),
        Some(Some(w)) => {
            return Err(refuse(
                400,
                "BadRequest",
                format!(
                    "invalid \"weight\" {w}: it must be from 1 to {}, or null",
                    MAX_WEIGHT
                ),
            ))
        }
    };
    let zone = u.zone;
    if let Some(w) = weight {
        let before = zone.view(i, req.now_ms).and_then(|v| v.weight_override);
        zone.set_weight(i, w)
            .map_err(|_| refuse(400, "BadRequest", "invalid \"weight\""))?;
        if zone.weights_pending() {
            if let Err(e) = zone.publish(req.owner, &alive) {
                // Back to what serves, so the refused change does not sneak
                // in with the next publication.
                let _ = zone.set_weight(i, before);
                return Err(publish_refusal(u.name, e));
            }
        }
    }
    zone.set_admin(i, p.down, p.drain)
        .map_err(|_| not_found("server not found"))?;
    Ok(true)
}

fn publish_refusal(upstream: &str, e: Error) -> Response {
    match e {
        Error::Busy => refuse(
            409,
            "Busy",
            format!("another change of upstream \"{upstream}\" is being applied; retry"),
        ),
        Error::Pinned => refuse(
            409,
            "Busy",
            format!(
                "older table generations of upstream \"{upstream}\" still serve \
                 requests in flight; retry shortly"
            ),
        ),
        Error::NoSpace | Error::TooLarge => {
            let text = format!(
                "the new generation of upstream \"{upstream}\" does not fit in its \
                 shared memory zone ({e}); the current generation keeps serving"
            );
            Response {
                log: Some(text.clone()),
                ..refuse(507, "NoSpace", text)
            }
        }
        e => {
            let text = format!("cannot change upstream \"{upstream}\": {e}");
            Response {
                log: Some(text.clone()),
                ..refuse(500, "Internal", text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hab_core::spec::{PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::OwnedTable;

    fn zone() -> OwnedTable {
        let peers = [
            PeerSpec {
                position: Some(0),
                ..PeerSpec::new(b"app\0a:80\x00127.0.0.1:1")
            },
            PeerSpec {
                backup: true,
                position: Some(1),
                ..PeerSpec::new(b"app\0b:80\x00127.0.0.1:2")
            },
            PeerSpec {
                position: Some(2),
                ..PeerSpec::new(b"app\0c:80\x00127.0.0.1:3")
            },
        ];
        // Primaries first in the table; positions keep configuration order.
        let peers = [peers[0], peers[2], peers[1]];
        OwnedTable::new(&UpstreamSpec {
            policy: Policy::RoundRobin,
            peers: &peers,
        })
        .unwrap()
    }

    fn call(
        t: &OwnedTable,
        method: Method,
        path: &str,
        body: &str,
        write: bool,
    ) -> (u16, serde_json::Value) {
        let ups = [Upstream {
            name: "app",
            zone: t.zone(),
        }];
        let r = handle(
            &Request {
                method,
                path,
                body: body.as_bytes(),
                write,
                now_ms: 1,
                owner: 77,
            },
            &ups,
            |_| true,
        );
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn reads_use_configuration_order_ids() {
        let t = zone();
        let (s, v) = call(&t, Method::Get, "upstreams", "", false);
        assert_eq!(s, 200);
        let peers = v["app"]["peers"].as_array().unwrap();
        let ids: Vec<(u64, &str, bool)> = peers
            .iter()
            .map(|p| {
                (
                    p["id"].as_u64().unwrap(),
                    p["server"].as_str().unwrap(),
                    p["backup"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                (0, "127.0.0.1:1", false),
                (1, "127.0.0.1:2", true),
                (2, "127.0.0.1:3", false)
            ]
        );
        assert_eq!(v["app"]["policy"], "round_robin");
        assert_eq!(v["app"]["generation"], 1);
        let (s, v) = call(&t, Method::Get, "/upstreams/app/servers/1/", "", false);
        assert_eq!((s, v["name"].as_str()), (200, Some("b:80")));
    }

    #[test]
    fn patch_changes_and_refusals() {
        let t = zone();
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/2",
            r#"{"weight":4,"drain":true}"#,
            true,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["weight"].as_u64(), v["configured_weight"].as_u64()),
            (Some(4), Some(1))
        );
        assert_eq!(v["state"], "down", "drained with nothing in flight");
        assert_eq!(
            (v["policy"].as_str(), v["generation"].as_u64()),
            (Some("round_robin"), Some(2))
        );
        assert_eq!(t.zone().generation(), 2);
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/2",
            r#"{"weight":null,"drain":false}"#,
            true,
        );
        assert_eq!(
            (s, v["weight"].as_u64(), v["state"].as_str()),
            (200, Some(1), Some("up"))
        );

        for (method, path, body, write, status, code) in [
            (
                Method::Patch,
                "upstreams/app/servers/0",
                r#"{"down":true}"#,
                false,
                405,
                "MethodNotAllowed",
            ),
            (
                Method::Other,
                "upstreams/app/servers/0",
                "",
                true,
                405,
                "MethodNotAllowed",
            ),
            (
                Method::Patch,
                "upstreams/app",
                "{}",
                true,
                405,
                "MethodNotAllowed",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                "{",
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                "",
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                "{}",
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                r#"{"wieght":2}"#,
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                r#"{"weight":0}"#,
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                r#"{"weight":99999999999}"#,
                true,
                400,
                "BadRequest",
            ),
            (
                Method::Patch,
                "upstreams/app/servers/0",
                r#"{"down":1}"#,
                true,
                400,
                "BadRequest",
            ),
            (Method::Get, "upstreams/nope", "", false, 404, "NotFound"),
            (
                Method::Get,
                "upstreams/app/servers/3",
                "",
                false,
                404,
                "NotFound",
            ),
            (
                Method::Get,
                "upstreams/app/servers/-1",
                "",
                false,
                404,
                "NotFound",
            ),
            (
                Method::Get,
                "upstreams/app/servers/+1",
                "",
                false,
                404,
                "NotFound",
            ),
            (
                Method::Get,
                "upstreams/app/servers/99999999999999999999",
                "",
                false,
                404,
                "NotFound",
            ),
            (Method::Get, "nothing", "", false, 404, "NotFound"),
        ] {
            let (s, v) = call(&t, method, path, body, write);
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (status, Some(code)),
                "{method:?} {path} {body}: {v}"
            );
            assert_eq!(v["error"]["status"].as_u64(), Some(u64::from(status)));
        }
        assert!(
            t.zone().states().iter().all(|s| !s.down()),
            "no refusal changed anything"
        );
    }

    #[test]
    fn busy_builder_is_409_and_no_space_is_507() {
        let t = zone();
        t.zone()
            .sync()
            .builder
            .store(12345, core::sync::atomic::Ordering::Relaxed);
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/0",
            r#"{"weight":3}"#,
            true,
        );
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("Busy")));
        assert_eq!(
            t.zone().view(0, 0).unwrap().weight_override,
            None,
            "reverted"
        );
        t.zone()
            .sync()
            .builder
            .store(0, core::sync::atomic::Ordering::Relaxed);
        // A schedule of a million entries does not fit in the arena.
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/0",
            r#"{"weight":1000000}"#,
            true,
        );
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (507, Some("NoSpace")),
            "{v}"
        );
        assert_eq!(t.zone().generation(), 1);
        assert_eq!(t.zone().view(0, 0).unwrap().weight, 1);
    }
}
