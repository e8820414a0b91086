//! Routing one API request to its answer
//!
//! | method | path (relative to the `ha_api` location) | |
//! |---|---|---|
//! | GET | `` | `[1,2,3,4,5,6,7,8,9]` (the NGINX Plus API versions served), or with `Accept: text/html` the status page |
//! | any | `{1..9}/...` | the NGINX Plus API ([`crate::plus`]) |
//! | GET | `status.html` | the live status page |
//! | GET | `metrics` | Prometheus text exposition |
//! | GET | `upstreams` | name → upstream |
//! | GET | `upstreams/{name}` | the upstream |
//! | DELETE | `upstreams/{name}` | reset its statistics (write only) |
//! | GET | `upstreams/{name}/servers` | its servers |
//! | GET | `upstreams/{name}/servers/{id}` | one server |
//! | PATCH | `upstreams/{name}/servers/{id}` | change it (write only) |
//!
//! HEAD answers as GET. `?fields=a,b` limits the keys of server and
//! upstream objects. Every refusal has a JSON body (`docs/api.md`).

use std::borrow::Cow;

use hab_core::layout::Zone;
use hab_core::write::membership::SlotMark;
use hab_core::write::{ServerChange, MAX_WEIGHT};

use crate::body::Body;
use crate::change::{apply, Admin};
use crate::json::{self, Clock, Fields, Patch, Render};
use crate::request::{json_with, not_found, ok};
pub use crate::request::{
    refuse, ContentType, Method, NginxInfo, Request, Response, StubCounters, MAX_BODY,
};
pub use crate::upstream::Upstream;

/// The status page's template ([`crate::page`] renders it).
pub const STATUS_PAGE: &str = crate::page::TEMPLATE;

fn method_not_allowed(allowed: &str) -> Response {
    refuse(
        405,
        "MethodNotAllowed",
        format!("method not allowed here (allowed: {allowed})"),
    )
}

fn read_only(what: &str) -> Response {
    refuse(
        405,
        "MethodNotAllowed",
        format!("the API is read-only here: {what} needs \"ha_api write=on\""),
    )
}

/// The status page, with every upstream and server rendered in it.
fn page(upstreams: &[Upstream<'_>], clock: Clock, write: bool) -> Response {
    Response {
        status: 200,
        content_type: ContentType::Html,
        body: crate::page::render(upstreams, clock, write),
        log: None,
        notice: None,
        changed: false,
    }
}

/// `name → upstream` for every upstream, in name order.
fn write_all(out: &mut Body, upstreams: &[Upstream<'_>], clock: Clock, fields: Option<&Fields>) {
    let mut sorted: Vec<&Upstream<'_>> = upstreams.iter().collect();
    sorted.sort_by_key(|u| u.name);
    out.push(b"{");
    for (k, u) in sorted.into_iter().enumerate() {
        if k > 0 {
            out.push(b",");
        }
        let _ = serde_json::to_writer(&mut *out, u.name);
        out.push(b":");
        Render {
            name: u.name,
            zone: u.zone,
            learn: u.learn,
            clock,
            fields,
            plus: false,
        }
        .write(out);
    }
    out.push(b"}");
}

/// Answers `req` over `upstreams`; `alive` tells whether a lease owner
/// (pid) still runs.
pub fn handle(
    req: &Request<'_>,
    upstreams: &[Upstream<'_>],
    alive: impl Fn(u64) -> bool,
) -> Response {
    let decoded: Vec<Cow<'_, str>> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
    let read = matches!(req.method, Method::Get | Method::Head);
    let find = |name: &str| upstreams.iter().find(|u| u.name == name);
    let fields = Fields::from_query(req.query);
    let clock = req.clock();
    match parts.as_slice() {
        [] if read && req.html => page(upstreams, clock, req.write),
        // The NGINX Plus API's answer for its location: the versions it
        // serves (Plus clients check theirs is listed).
        [] if read => ok(&crate::plus::VERSIONS),
        [v, rest @ ..] if crate::plus::is_version(v) => {
            crate::plus::handle(req, v, rest, upstreams, fields.as_ref(), alive)
        }
        ["status.html"] if read => page(upstreams, clock, req.write),
        ["metrics"] if read => Response {
            status: 200,
            content_type: ContentType::Prometheus,
            body: crate::metrics::render(upstreams, clock),
            log: None,
            notice: None,
            changed: false,
        },
        ["upstreams"] if read => json_with(|out| write_all(out, upstreams, clock, fields.as_ref())),
        [] | ["upstreams"] | ["status.html"] | ["metrics"] => method_not_allowed("GET, HEAD"),
        ["upstreams", name, rest @ ..] => {
            let Some(u) = find(name) else {
                return not_found(format!("upstream \"{name}\" not found"));
            };
            let render = Render {
                name: u.name,
                zone: u.zone,
                learn: u.learn,
                clock,
                fields: fields.as_ref(),
                plus: false,
            };
            match rest {
                [] if read => json_with(|out| render.write(out)),
                [] if req.method == Method::Delete && !req.write => read_only("DELETE"),
                [] if req.method == Method::Delete => {
                    u.zone.reset_stats(req.now_ms);
                    Response {
                        status: 204,
                        content_type: ContentType::None,
                        body: Body::new(),
                        log: None,
                        notice: None,
                        changed: false,
                    }
                }
                [] => method_not_allowed("GET, HEAD, DELETE"),
                ["servers"] if read => json_with(|out| {
                    render.write_peers(out);
                }),
                ["servers"] => method_not_allowed("GET, HEAD"),
                ["servers", id] => server(req, u, id, fields.as_ref(), alive),
                _ => not_found(format!("no such resource \"{}\"", req.path)),
            }
        }
        _ => not_found(format!("no such resource \"{}\"", req.path)),
    }
}

/// One path segment with its `%XX` escapes decoded (so an upstream named
/// `a/b` is addressed as `a%2Fb`); a `%` not followed by two hex digits
/// stays as it is.
pub fn percent_decode(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let b = segment.as_bytes();
    let hex = |k: usize| b.get(k).and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        match (b[k], hex(k + 1), hex(k + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                k += 3;
            }
            (c, _, _) => {
                out.push(c);
                k += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn server(
    req: &Request<'_>,
    u: &Upstream<'_>,
    id: &str,
    fields: Option<&Fields>,
    alive: impl Fn(u64) -> bool,
) -> Response {
    let index = id
        .parse::<u32>()
        .ok()
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|pos| u.zone.by_position(pos));
    let Some((i, mark)) = index else {
        return not_found(format!(
            "server \"{id}\" not found in upstream \"{}\"",
            u.name
        ));
    };
    let show = |zone: Zone<'_>| {
        let s = zone
            .view(i, req.now_ms)
            .map(|v| json::server(&v, zone, req.clock()));
        match s {
            Some(s) => ok(&json::Filtered {
                server: &s,
                fields,
                plus: false,
            }),
            None => ok(&s),
        }
    };
    match req.method {
        Method::Get | Method::Head => show(u.zone),
        Method::Patch if !req.write => read_only("PATCH"),
        Method::Patch => {
            let before = Admin::read(u, i, req.now_ms);
            match patch(req, u, i, mark, alive) {
                Ok(changed) => {
                    let notice = before.and_then(|b| b.notice(u, i, req.now_ms));
                    Response {
                        changed,
                        notice,
                        ..show(u.zone)
                    }
                }
                Err(r) => r,
            }
        }
        Method::Delete | Method::Post | Method::Other => method_not_allowed("GET, HEAD, PATCH"),
    }
}

fn patch(
    req: &Request<'_>,
    u: &Upstream<'_>,
    i: usize,
    mark: SlotMark,
    alive: impl Fn(u64) -> bool,
) -> Result<bool, Response> {
    if req.body.len() > MAX_BODY {
        return Err(refuse(400, "BadRequest", "request body too large"));
    }
    // A JSON object only: serde would also fill the fields from an array
    // in their order (`[false,false,3]` set the weight to 3).
    if req.body.trim_ascii_start().first() != Some(&b'{') {
        return Err(refuse(
            400,
            "BadRequest",
            "invalid body: a JSON object is expected, e.g. {\"drain\":true}",
        ));
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
    let change = ServerChange {
        down: p.down,
        drain: p.drain,
        weight,
    };
    apply(req, u, i, mark, change, alive)
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
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
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
        let r = raw(t, method, path, body, write);
        let v = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&r.body.to_vec()).unwrap()
        };
        (r.status, v)
    }

    fn raw(t: &OwnedTable, method: Method, path: &str, body: &str, write: bool) -> Response {
        let ups = [Upstream {
            name: "app",
            zone: t.zone(),
            learn: None,
        }];
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        handle(
            &Request {
                method,
                path,
                query,
                html: false,
                body: body.as_bytes(),
                write,
                now_ms: 1,
                wall_ms: 1_796_126_400_000,
                owner: 77,
                request_id: "",
                nginx: Default::default(),
            },
            &ups,
            |_| true,
        )
    }

    /// A resolvable upstream: one configured server ("a", position 0)
    /// and 4 slots; "r1" and "r2" resolved into slots 1 and 2.
    fn dynamic() -> OwnedTable {
        let peers = [PeerSpec {
            position: Some(0),
            ..PeerSpec::new(b"app\0a:80\x00127.0.0.1:1")
        }];
        let t = OwnedTable::with_capacity(
            &UpstreamSpec {
                health: Default::default(),
                policy: Policy::RoundRobin,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            },
            4,
        )
        .unwrap();
        resolve(&t, &[b"app\0a:80\x00127.0.0.1:1", R1, R2], 1);
        t
    }

    const R1: &[u8] = b"app\0r:80\x00127.0.0.2:80";
    const R2: &[u8] = b"app\0r:80\x00127.0.0.3:80";
    const R3: &[u8] = b"app\0r:80\x00127.0.0.4:80";

    fn resolve(t: &OwnedTable, ids: &[&[u8]], config: u64) {
        let peers: Vec<PeerSpec<'_>> = ids.iter().map(|id| PeerSpec::new(id)).collect();
        let spec = UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        };
        t.zone()
            .apply_membership(&spec, [1, config], 9, |_| true, 0)
            .unwrap();
    }

    fn listed(t: &OwnedTable) -> Vec<(u64, String, String)> {
        let (status, v) = call(t, Method::Get, "upstreams/app/servers", "", false);
        assert_eq!(status, 200);
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_u64().unwrap(),
                    s["server"].as_str().unwrap().to_owned(),
                    s["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn resolved_servers_are_listed_by_slot_draining_ones_until_idle() {
        let t = dynamic();
        let z = t.zone();
        // FREE slot 3 is not listed; resolved ones are 1 configured + slot.
        assert_eq!(
            listed(&t),
            [
                (0, "127.0.0.1:1".to_owned(), "up".to_owned()),
                (2, "127.0.0.2:80".to_owned(), "up".to_owned()),
                (3, "127.0.0.3:80".to_owned(), "up".to_owned()),
            ]
        );
        assert_eq!(
            call(&t, Method::Get, "upstreams/app/servers/4", "", false).0,
            404
        );
        assert_eq!(
            call(
                &t,
                Method::Patch,
                "upstreams/app/servers/4",
                r#"{"drain":true}"#,
                true
            )
            .0,
            404,
            "a FREE slot"
        );
        // "r1" leaves with a request in flight: draining, then gone.
        let mut held = loop {
            let mut a = hab_core::testing::OwnedAttempt::new(z, 0);
            if a.pick(0).unwrap().peer == 1 {
                break a;
            }
        };
        resolve(&t, &[b"app\0a:80\x00127.0.0.1:1", R2], 2);
        let l = listed(&t);
        assert_eq!(l[1], (2, "127.0.0.2:80".to_owned(), "draining".to_owned()));
        let m =
            String::from_utf8(raw(&t, Method::Get, "metrics", "", false).body.to_vec()).unwrap();
        assert!(m.contains("server=\"127.0.0.2:80\""), "{m}");
        held.release(hab_core::Outcome::Ok, 1).unwrap();
        held.end();
        assert_eq!(listed(&t).len(), 2);
        assert_eq!(
            call(&t, Method::Get, "upstreams/app/servers/2", "", false).0,
            404
        );
        assert_eq!(
            call(
                &t,
                Method::Patch,
                "upstreams/app/servers/2",
                r#"{"down":true}"#,
                true
            )
            .0,
            404
        );
        let m =
            String::from_utf8(raw(&t, Method::Get, "metrics", "", false).body.to_vec()).unwrap();
        assert!(!m.contains("127.0.0.2:80"), "{m}");
        assert!(m.contains("server=\"127.0.0.3:80\""), "{m}");
        // A new one takes the never-used slot 3; the PATCH reaches it.
        resolve(&t, &[b"app\0a:80\x00127.0.0.1:1", R2, R3], 3);
        assert_eq!(
            listed(&t)[2],
            (4, "127.0.0.4:80".to_owned(), "up".to_owned())
        );
        assert_eq!(
            call(
                &t,
                Method::Patch,
                "upstreams/app/servers/4",
                r#"{"drain":true}"#,
                true
            )
            .0,
            200
        );
        assert!(z.view(3, 0).unwrap().drain);
        let (_, u) = call(&t, Method::Get, "upstreams/app", "", false);
        assert_eq!(u["peers"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn statistics_fields_and_reset() {
        use hab_core::layout::stats::TryInfo;
        use hab_core::testing::OwnedAttempt;
        let t = zone();
        for k in 0..6u64 {
            let mut a = OwnedAttempt::new(t.zone(), 1);
            a.pick(1).unwrap();
            let status = if k == 0 { 503 } else { 200 };
            let info = TryInfo {
                status,
                header_ms: Some(0),
                sent: 10,
                received: 20,
            };
            a.release_with(hab_core::Outcome::Ok, &info, 1).unwrap();
            a.end();
        }
        let (_, v) = call(&t, Method::Get, "upstreams/app", "", false);
        let totals = &v["totals"];
        assert_eq!(totals["requests"], 6);
        assert_eq!(totals["responses"]["total"], 6);
        assert_eq!(totals["responses"]["5xx"], 1);
        assert_eq!(totals["sent"], 60);
        let sum: u64 = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, 6);
        assert_eq!(v["peers"][0]["selected"], "2026-12-01T12:00:00.000Z");
        assert_eq!(
            v["peers"][1]["selected"],
            serde_json::Value::Null,
            "a backup"
        );

        // ?fields= keeps id (server) and name/peers (upstream).
        let (_, v) = call(
            &t,
            Method::Get,
            "upstreams/app?fields=requests,state",
            "",
            false,
        );
        let keys = |o: &serde_json::Value| {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["name", "peers"]);
        assert_eq!(keys(&v["peers"][0]), ["id", "requests", "state"]);
        let (_, v) = call(
            &t,
            Method::Get,
            "upstreams/app/servers/0?fields=fails",
            "",
            false,
        );
        assert_eq!(keys(&v), ["fails", "id"]);
        let (_, v) = call(&t, Method::Get, "upstreams?fields=totals", "", false);
        assert_eq!(keys(&v["app"]), ["name", "peers", "totals"]);

        // Reset: write only.
        assert_eq!(call(&t, Method::Delete, "upstreams/app", "", false).0, 405);
        assert_eq!(call(&t, Method::Delete, "upstreams/nope", "", true).0, 404);
        let r = raw(&t, Method::Delete, "upstreams/app", "", true);
        assert_eq!((r.status, r.content_type), (204, ContentType::None));
        let (_, v) = call(&t, Method::Get, "upstreams/app", "", false);
        assert_eq!(v["totals"]["requests"], 0);
        assert_eq!(v["peers"][0]["responses"]["total"], 0);
        assert_eq!(
            call(&t, Method::Delete, "upstreams/app/servers/0", "", true).0,
            405
        );
    }

    #[test]
    fn metrics_and_page() {
        let t = zone();
        let r = raw(&t, Method::Get, "metrics", "", false);
        assert_eq!((r.status, r.content_type), (200, ContentType::Prometheus));
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(text.contains("# TYPE ha_upstream_server_requests_total counter\n"));
        assert!(
            text.contains("ha_upstream_server_state{upstream=\"app\",server=\"127.0.0.1:2\"} 1\n")
        );
        assert!(text.contains(
            "ha_upstream_server_responses_total{upstream=\"app\",server=\"127.0.0.1:3\",code=\"5xx\"} 0\n"
        ));
        let r = raw(&t, Method::Get, "status.html", "", true);
        assert_eq!((r.status, r.content_type), (200, ContentType::Html));
        let html = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(!html.contains("__HAB_WRITE__"));
        assert_eq!(
            raw(&t, Method::Get, "", "", false).content_type,
            ContentType::Json
        );
        assert_eq!(raw(&t, Method::Patch, "metrics", "", true).status, 405);
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
    fn an_admin_change_is_told_once_for_the_log() {
        let t = zone();
        let notice = |path: &str, body: &str| raw(&t, Method::Patch, path, body, true).notice;
        let (_, v) = call(&t, Method::Get, "upstreams/app/servers/2", "", false);
        let who = format!(
            "upstream \"app\" server {} ({}) id 2",
            v["server"].as_str().unwrap(),
            v["name"].as_str().unwrap()
        );
        assert_eq!(
            notice("upstreams/app/servers/2", r#"{"drain":true,"weight":4}"#),
            Some(format!(
                "{who}: drain false -> true, weight 1 (configured) -> 4"
            ))
        );
        assert_eq!(
            notice("upstreams/app/servers/2", r#"{"drain":true}"#),
            Some(format!("{who}: no change"))
        );
        assert_eq!(
            notice("upstreams/app/servers/2", r#"{"weight":null,"down":true}"#),
            Some(format!(
                "{who}: down false -> true, weight 4 -> 1 (configured)"
            ))
        );
        // Refused or read only: nothing to tell.
        assert_eq!(notice("upstreams/app/servers/2", r#"{"weight":0}"#), None);
        assert_eq!(
            raw(&t, Method::Get, "upstreams/app/servers/2", "", true).notice,
            None
        );
        assert_eq!(
            raw(
                &t,
                Method::Patch,
                "upstreams/app/servers/2",
                r#"{"drain":false}"#,
                false
            )
            .notice,
            None
        );
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
        assert_eq!(
            v["state"], "draining",
            "drained with nothing in flight: draining until undrained"
        );
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
    fn patch_takes_an_object_only() {
        let t = zone();
        for body in [
            "[false,false,3]",
            "[true]",
            "[]",
            "3",
            "\"down\"",
            "null",
            "true",
            r#"{"down":true,"down":false}"#,
        ] {
            let (s, v) = call(&t, Method::Patch, "upstreams/app/servers/0", body, true);
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (400, Some("BadRequest")),
                "{body}: {v}"
            );
            let text = v["error"]["text"].as_str().unwrap();
            assert!(text.contains("invalid body"), "{body}: {text}");
        }
        let v = t.zone().view(0, 0).unwrap();
        assert_eq!((v.weight, v.admin_down, v.drain), (1, false, false));
    }

    #[test]
    fn up_on_a_server_down_in_the_configuration_is_refused() {
        let peers = [
            PeerSpec {
                position: Some(0),
                ..PeerSpec::new(b"app\0a:80\x00127.0.0.1:1")
            },
            PeerSpec {
                position: Some(1),
                down: true,
                ..PeerSpec::new(b"app\0b:80\x00127.0.0.1:2")
            },
        ];
        let t = OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap();
        for body in [r#"{"down":false}"#, r#"{"down":false,"drain":true}"#] {
            let (s, v) = call(&t, Method::Patch, "upstreams/app/servers/1", body, true);
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (409, Some("ConfiguredDown")),
                "{v}"
            );
            let text = v["error"]["text"].as_str().unwrap();
            assert!(text.contains("\"down\" in the configuration"), "{text}");
            assert!(!t.zone().view(1, 0).unwrap().drain, "nothing changed");
        }
        // What it can do: drain it, set it down (a no-op kept), weigh it.
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/1",
            r#"{"down":true}"#,
            true,
        );
        assert_eq!((s, v["state"].as_str()), (200, Some("down")), "{v}");
        // Back up through the API: still down, as configured -> refused.
        let (s, _) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/1",
            r#"{"down":false}"#,
            true,
        );
        assert_eq!(s, 409);
        // A server up in the configuration comes back up.
        call(
            &t,
            Method::Patch,
            "upstreams/app/servers/0",
            r#"{"down":true}"#,
            true,
        );
        let (s, v) = call(
            &t,
            Method::Patch,
            "upstreams/app/servers/0",
            r#"{"down":false}"#,
            true,
        );
        assert_eq!((s, v["state"].as_str()), (200, Some("up")), "{v}");
    }

    /// PATCH server `id` of `t` to weight `w`.
    fn patch(t: &OwnedTable, id: usize, w: u64) -> (u16, serde_json::Value) {
        call(
            t,
            Method::Patch,
            &format!("upstreams/app/servers/{id}"),
            &format!("{{\"weight\":{w}}}"),
            true,
        )
    }

    fn table_of(policy: Policy, weights: &[u32]) -> OwnedTable {
        table_with_room(policy, weights, 0)
    }

    fn table_with_room(policy: Policy, weights: &[u32], schedule_room: u32) -> OwnedTable {
        let ids: Vec<Vec<u8>> = (0..weights.len())
            .map(|k| format!("app\0s{k}:80\x00127.0.0.1:{}", k + 1).into_bytes())
            .collect();
        let peers: Vec<PeerSpec<'_>> = ids
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(k, (id, &w))| PeerSpec {
                position: Some(k as u32),
                ..PeerSpec::new(id).weight(w)
            })
            .collect();
        OwnedTable::new(&UpstreamSpec {
            health: Default::default(),
            policy,
            peers: &peers,
            schedule_room,
            sessions: false,
        })
        .unwrap()
    }

    /// Two clients change weights of one upstream at once (issue "Floors"):
    /// A alternates weights that fit with one whose schedule does not (507),
    /// B sets weights that always fit. Before a change held the builder
    /// lease from its override to its publication, B's publication could
    /// build A's refused weight (B refused 507 for A's weight, or A's
    /// refused weight served while A was told no). Now B is never refused,
    /// and right after each refusal A's server serves A's last accepted
    /// weight.
    #[test]
    fn concurrent_weight_changes_never_serve_a_refused_one() {
        let t = table_of(Policy::RoundRobin, &[1, 1, 1, 1]);
        let zone = t.zone();
        let patch = |owner: u64, id: usize, w: u32| -> u16 {
            let path = format!("upstreams/app/servers/{id}");
            let body = format!("{{\"weight\":{w}}}");
            let req = Request {
                method: Method::Patch,
                path: &path,
                query: "",
                html: false,
                body: body.as_bytes(),
                write: true,
                now_ms: 10,
                wall_ms: 0,
                owner,
                request_id: "",
                nginx: Default::default(),
            };
            handle(
                &req,
                &[Upstream {
                    name: "app",
                    zone,
                    learn: None,
                }],
                |_| true,
            )
            .status
        };
        let serving = |i: usize| zone.read(None).unwrap().table().confs()[i].weight;
        let rounds = 300;
        std::thread::scope(|s| {
            let a = s.spawn(|| {
                let mut last = 1;
                let mut refused = 0;
                for k in 0..rounds {
                    if k % 2 == 0 {
                        let w = 2 + (k % 7) as u32;
                        assert_eq!(patch(101, 0, w), 200, "A {k}: {w}");
                        last = w;
                    } else {
                        assert_eq!(patch(101, 0, 1_000_000), 507, "A {k}");
                        refused += 1;
                        let now = serving(0);
                        assert_eq!(now, last, "A {k}: serving {now} after a refusal");
                    }
                }
                refused
            });
            let b = s.spawn(|| {
                for k in 0..rounds {
                    let w = 1 + (k % 5) as u32;
                    let status = patch(202, 1, w);
                    assert_eq!(status, 200, "B {k}: weight {w} refused");
                }
            });
            assert_eq!(a.join().unwrap(), rounds / 2);
            b.join().unwrap();
        });
        assert!(!zone.weights_pending());
    }

    /// `schedule_room=` reserves room for longer schedules (the whole
    /// weight range with the largest), and the 507 names the room kept.
    #[test]
    fn the_schedule_room_is_the_configurations() {
        let hash = Policy::Hash {
            mode: hab_core::spec::HashMode::Plain,
            balance_factor: 0,
            maglev_size: 0,
        };
        for policy in [Policy::RoundRobin, Policy::LeastConn, hash] {
            let t = table_with_room(policy, &[1, 1, 1, 1], 4_194_304);
            assert_eq!(t.zone().schedule_room(), 4_194_304);
            // 1,000,000 + 999,999 + 999,998 + 1: 3,000,000 entries.
            for (id, w) in [(0, 1_000_000), (1, 999_999), (2, 999_998)] {
                let (s, v) = patch(&t, id, w);
                assert_eq!(s, 200, "{policy:?} server {id} to {w}: {v}");
            }
            let (s, v) = patch(&t, 3, 1_000_000);
            assert_eq!(s, 200, "{v}");
            // The default room refuses the first of them.
            let t = table_of(policy, &[1, 1, 1, 1]);
            let (s, v) = patch(&t, 0, 1_000_000);
            assert_eq!(s, 507, "{v}");
        }
        // A smaller room: the 507 says which.
        let t = table_with_room(Policy::RoundRobin, &[1, 1, 1, 1], 1000);
        let (s, v) = patch(&t, 1, 1_000_000);
        let text = v["error"]["text"].as_str().unwrap_or_default();
        assert!(
            s == 507 && text.contains("room is kept for 1000 (ha_balance ... schedule_room=)"),
            "{s} {v}"
        );
        // Not for a policy without a schedule, nor beyond the longest.
        for (policy, room) in [(Policy::P2c, 1000), (Policy::RoundRobin, 4_194_305)] {
            let ids = [b"a".as_slice()];
            let peers = [PeerSpec::new(ids[0])];
            let spec = UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: room,
                sessions: false,
            };
            assert!(OwnedTable::new(&spec).is_err(), "{policy:?} {room}");
        }
    }

    /// The weights docs/api.md promises for policies with a schedule:
    /// any group whose total weight / common divisor is at most
    /// SCHEDULE_ROOM; past it a 507 that says why, with the figures.
    #[test]
    fn weights_up_to_the_schedule_room_are_accepted() {
        for policy in [Policy::RoundRobin, Policy::LeastConn] {
            for weights in [&[1, 1, 1, 1][..], &[5, 1, 1, 1]] {
                let t = table_of(policy, weights);
                for (id, w) in [(0, 100_000), (1, 100_000), (2, 30_000), (0, 1)] {
                    let (s, v) = patch(&t, id, w);
                    assert_eq!((s, v["weight"].as_u64()), (200, Some(w)), "{weights:?} {v}");
                }
                let (s, v) = patch(&t, 3, 250_000);
                assert_eq!(s, 200, "{v}");
                let (s, v) = patch(&t, 1, 1_000_000);
                assert_eq!(
                    (s, v["error"]["code"].as_str()),
                    (507, Some("NoSpace")),
                    "{v}"
                );
                let text = v["error"]["text"].as_str().unwrap();
                assert!(
                    text.contains("would have 1280001 entries") && text.contains("262144"),
                    "{text}"
                );
            }
        }
        // The documented edge: 4 × 1 with one server at 262,141 (262,144
        // entries), then more changes at that size.
        let t = table_of(Policy::RoundRobin, &[1, 1, 1, 1]);
        for (id, w) in [(0, 262_141), (1, 1), (0, 262_140), (0, 262_141), (2, 1)] {
            assert_eq!(patch(&t, id, w).0, 200, "server {id} to {w}");
        }
        // Policies without a schedule take the whole range.
        let t = table_of(Policy::P2c, &[1, 1, 1, 1]);
        for id in 0..4 {
            assert_eq!(patch(&t, id, 1_000_000 - id as u64).0, 200);
        }
    }

    #[test]
    fn names_with_a_slash_are_addressed_percent_encoded() {
        let t = zone();
        let ups = [
            Upstream {
                name: "a/b",
                zone: t.zone(),
                learn: None,
            },
            Upstream {
                name: "100%",
                zone: t.zone(),
                learn: None,
            },
        ];
        let get = |path: &str| {
            handle(
                &Request {
                    method: Method::Get,
                    path,
                    query: "",
                    html: false,
                    body: b"",
                    write: false,
                    now_ms: 1,
                    wall_ms: 1,
                    owner: 1,
                    request_id: "",
                    nginx: Default::default(),
                },
                &ups,
                |_| true,
            )
        };
        for (path, status) in [
            ("upstreams/a%2Fb", 200),
            ("upstreams/a%2fb/servers/0", 200),
            ("upstreams/%61%2Fb/servers", 200),
            ("upstreams/100%25", 200),
            ("upstreams/a/b", 404),
            // A lone "%" stays as it is (nginx refuses it first anyway).
            ("upstreams/100%", 200),
            ("upstreams/%zz", 404),
            ("upstreams/%ff%fe", 404),
        ] {
            let r = get(path);
            assert_eq!(
                r.status,
                status,
                "{path}: {:?}",
                String::from_utf8_lossy(&r.body.to_vec())
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&get("upstreams").body.to_vec()).unwrap();
        assert!(v["a/b"].is_object() && v["100%"].is_object(), "{v}");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%C3%A9"), "\u{e9}");
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

    /// An upstream that binds sessions shows `bound` per server and in
    /// its totals, one with a learn table its `sessions`; `?fields=`
    /// selects them as any other key; an upstream without sessions has
    /// neither.
    #[test]
    fn bound_requests_and_learnt_sessions() {
        use crate::upstream::Learn;
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
        // 3 tries bound to r1, 2 balanced (one to each server).
        for (k, bind) in [true, false, true, false, true].into_iter().enumerate() {
            for z in [sticky.zone(), plain.zone()] {
                let mut a = OwnedAttempt::new(z, k as u64);
                let b = if bind {
                    Binding::Sid(b"r1")
                } else {
                    Binding::None
                };
                a.pick_bound(b, 1).unwrap();
                a.release(Outcome::Ok, 1).unwrap();
                a.end();
            }
        }
        let region = Region::new(size_for(64).unwrap());
        // SAFETY: the region is ours, `len` bytes, alive past every use
        // of the table (this test).
        let table = unsafe { Sessions::init(region.as_ptr(), region.len(), 10_000) }.unwrap();
        for k in 0..2u64 {
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
                learn: Some(Learn {
                    zone: "learnt",
                    table,
                }),
            },
        ];
        let get = |path: &str, method: Method| {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let r = handle(
                &Request {
                    method,
                    path,
                    query,
                    html: false,
                    body: b"",
                    write: true,
                    now_ms: 2,
                    wall_ms: 1_796_126_400_000,
                    owner: 77,
                    request_id: "",
                    nginx: Default::default(),
                },
                &ups,
                |_| true,
            );
            let text = String::from_utf8(r.body.to_vec()).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            (text, v)
        };
        let (text, v) = get("upstreams", Method::Get);
        let s = &v["s"];
        let bound: Vec<u64> = s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["bound"].as_u64().unwrap())
            .collect();
        let requests: Vec<u64> = s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .collect();
        assert_eq!((bound, requests), (vec![0, 3], vec![1, 4]), "{text}");
        assert_eq!(s["totals"]["bound"], 3);
        assert_eq!(s["totals"]["requests"], 5);
        assert_eq!(
            s["sessions"],
            serde_json::json!({"zone": "learnt", "entries": 2, "capacity": 64,
                "created": 2, "evicted": 0, "expired": 0})
        );
        // The file's order: `bound` after `requests`, `sessions` after
        // `totals`.
        let at = |k: &str| text.rfind(k).unwrap();
        assert!(at("\"requests\":") < at("\"bound\":") && at("\"bound\":") < at("\"responses\":"));
        assert!(
            at("\"totals\":") < at("\"sessions\":") && at("\"sessions\":") < at("\"retiring\":")
        );
        // Without sessions: neither key, anywhere.
        let p = serde_json::to_string(&v["plain"]).unwrap();
        assert!(!p.contains("bound") && !p.contains("sessions"), "{p}");
        assert_eq!(v["plain"]["totals"]["requests"], 5);

        let keys = |o: &serde_json::Value| {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let (_, v) = get("upstreams/s?fields=requests", Method::Get);
        assert_eq!(keys(&v), ["name", "peers"]);
        assert_eq!(keys(&v["peers"][1]), ["id", "requests"]);
        let (_, v) = get("upstreams/s?fields=bound,sessions", Method::Get);
        assert_eq!(keys(&v), ["name", "peers", "sessions"]);
        assert_eq!(keys(&v["peers"][1]), ["bound", "id"]);
        assert_eq!(v["sessions"]["entries"], 2);
        let (_, v) = get("upstreams/s/servers/1", Method::Get);
        assert_eq!((&v["requests"], &v["bound"]), (&4.into(), &3.into()));
        let (_, v) = get("upstreams/plain/servers/1", Method::Get);
        assert!(v.get("bound").is_none(), "{v}");

        // DELETE resets `bound` with the other statistics; the sessions
        // table is not the upstream's statistics and keeps its figures.
        let (_, _) = get("upstreams/s", Method::Delete);
        let (_, v) = get("upstreams/s", Method::Get);
        assert_eq!(v["totals"]["bound"], 0);
        assert_eq!(v["peers"][1]["bound"], 0);
        assert_eq!(v["sessions"]["created"], 2);
    }

    /// An upstream with `ha_queue` shows `queue` (after `totals`, before
    /// `retiring`) with the figures of its zone's queue; one without has
    /// no such key; `?fields=queue` selects it; `DELETE` leaves it.
    #[test]
    fn the_queue_of_an_upstream() {
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
        let get = |path: &str, method: Method| {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let r = handle(
                &Request {
                    method,
                    path,
                    query,
                    html: false,
                    body: b"",
                    write: true,
                    now_ms: 2,
                    wall_ms: 1_796_126_400_000,
                    owner: 77,
                    request_id: "",
                    nginx: Default::default(),
                },
                &ups,
                |_| true,
            );
            let text = String::from_utf8(r.body.to_vec()).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            (text, v)
        };
        let want = serde_json::json!({"size": 1, "max_size": 3, "overflows": 1,
            "timeouts": 1, "abandoned": 1, "served": 2,
            "wait_ms": {"p50": 5.0, "p90": 45.0, "p99": 49.5, "sum": 42, "count": 2}});
        let (text, v) = get("upstreams", Method::Get);
        assert_eq!(v["q"]["queue"], want, "{text}");
        assert!(v["plain"].get("queue").is_none(), "{text}");
        assert_eq!(text.matches("\"queue\":").count(), 1, "{text}");
        let at = |k: &str| text.rfind(k).unwrap();
        assert!(at("\"totals\":") < at("\"queue\":") && at("\"queue\":") < at("\"retiring\":"));
        let (_, v) = get("upstreams/q", Method::Get);
        assert_eq!(v["queue"], want);
        let (_, v) = get("upstreams/q?fields=queue", Method::Get);
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["name", "peers", "queue"]);
        assert_eq!(v["queue"], want);
        let (_, v) = get("upstreams/q?fields=requests", Method::Get);
        assert!(v.get("queue").is_none(), "{v}");
        let (_, v) = get("upstreams/plain?fields=queue", Method::Get);
        assert!(v.get("queue").is_none(), "{v}");
        // DELETE resets the servers' statistics, not the queue's.
        assert_eq!(get("upstreams/q", Method::Delete).0, "");
        assert_eq!(get("upstreams/q", Method::Get).1["queue"], want);
    }
}
