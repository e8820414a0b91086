//! The NGINX Plus API's paths and shapes, under the `ha_api` location
//!
//! Tools written for NGINX Plus (Debian's `prometheus-nginx-exporter
//! -nginx.plus`, the `nginx-plus-go-client` library and what is built on
//! it) ask `GET {location}` for the API versions, then `{location}/N/...`.
//! A first path segment made of digits lands here; `1` to `9` are served,
//! all alike (the later versions only add what older clients ignore),
//! anything else is 404 `UnknownVersion`.
//!
//! | path below `N/` | answer |
//! |---|---|
//! | `` | the root endpoints (`workers` too for 9; no `stream`) |
//! | `nginx`, `processes`, `connections`, `http/requests` | nginx's own figures ([`NginxInfo`]; zeros when unknown) |
//! | `slabs`, `resolvers`, `http/server_zones`, `http/location_zones`, `http/caches`, `http/limit_reqs`, `http/limit_conns` | `{}`: nothing of theirs is configured here |
//! | `ssl` | zeros; `workers` (9) `[]` |
//! | `http` | the http endpoints |
//! | `http/upstreams[/{u}]` | the statistics objects (GET; DELETE `{u}` resets) |
//! | `http/upstreams/{u}/servers[/{id}]` | the configuration objects (GET; PATCH `{id}`) |
//! | anything else (`stream/...`, `http/keyvals`, `license`) | 404 `PathNotFound` |
//!
//! Errors carry Plus's body: `{"error":{"status","text","code"},
//! "request_id","href"}`; the `PathNotFound` code is what keeps Debian's
//! exporter scraping when it asks for `stream/...` (docs/plus-api-design.md
//! §1.2). What is served and what is not, and why: docs/api.md "NGINX
//! Plus API".

use hab_core::spec::{PeerSpec, MAX_FAIL_TIMEOUT_MS};
use hab_core::write::membership::{SlotMark, LIVE};
use hab_core::write::{AddRefusal, PeerView, RemoveRefusal, ServerChange, MAX_WEIGHT};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::body::Body;
use crate::change::{self, Admin};
use crate::json::{self, Clock, Date, Fields, Render};
use crate::request::{self, json_with, ok, ContentType, Method, NginxInfo, Request, Response};
use crate::upstream::Upstream;

/// The versions served, as `GET {location}` lists them.
pub const VERSIONS: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

/// Where Plus's error bodies point.
const HREF: &str = "https://nginx.org/en/docs/http/ngx_http_api_module.html";

/// `build` of the `nginx` object: never `...-rNN`, which newer clients
/// take for an NGINX Plus release and then ask for its licence.
const BUILD: &str = "ha-balancer";

/// Whether a first path segment asks for the Plus API (all digits).
pub fn is_version(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Serialize)]
struct PlusError<'a> {
    error: PlusErrorDetail<'a>,
    request_id: &'a str,
    href: &'a str,
}

#[derive(Serialize)]
struct PlusErrorDetail<'a> {
    status: u16,
    text: &'a str,
    code: &'a str,
}

/// A refusal with NGINX Plus's body.
fn refuse(req: &Request<'_>, status: u16, code: &str, text: &str) -> Response {
    let mut r = ok(&PlusError {
        error: PlusErrorDetail { status, text, code },
        request_id: req.request_id,
        href: HREF,
    });
    r.status = status;
    r
}

fn path_not_found(req: &Request<'_>) -> Response {
    refuse(req, 404, "PathNotFound", "path not found")
}

fn not_supported(req: &Request<'_>) -> Response {
    refuse(req, 405, "MethodNotSupported", "method not supported")
}

fn disabled(req: &Request<'_>) -> Response {
    refuse(req, 405, "MethodDisabled", "method disabled")
}

/// A refusal of ours (`{"error":{"status","code","text"}}`, from
/// `route`) with Plus's body and the code Plus gives for it.
fn as_plus(req: &Request<'_>, r: Response) -> Response {
    let Ok(e) = serde_json::from_slice::<json::ErrorBody>(&r.body.to_vec()) else {
        return r;
    };
    let code = match e.error.code.as_str() {
        "NotFound" => "UpstreamServerNotFound",
        "BadRequest" => "UpstreamConfFormatError",
        "ConfiguredDown" => "UpstreamServerImmutable",
        other => other,
    };
    Response {
        log: r.log,
        ..refuse(req, e.error.status, code, &e.error.text)
    }
}

/// Answers `req` for version segment `v` (all digits) and the path
/// segments after it.
pub(crate) fn handle(
    req: &Request<'_>,
    v: &str,
    rest: &[&str],
    upstreams: &[Upstream<'_>],
    fields: Option<&Fields>,
    alive: impl Fn(u64) -> bool,
) -> Response {
    let version = match v.parse::<u32>() {
        Ok(n) if VERSIONS.contains(&n) && v.len() == 1 => n,
        _ => return refuse(req, 404, "UnknownVersion", "unknown version"),
    };
    let read = matches!(req.method, Method::Get | Method::Head);
    let info = &req.nginx;
    // Paths that only read: GET and HEAD, else 405.
    let answer = match rest {
        [] => Some(ok(&root(version))),
        ["nginx"] => Some(ok(&nginx(info, req.clock()))),
        ["processes"] => Some(ok(&Processes {
            respawned: info.respawned,
        })),
        ["connections"] => Some(ok(&Connections::of(info))),
        ["ssl"] => Some(ok(&Ssl::default())),
        ["slabs"] | ["resolvers"] => Some(ok(&Map::new())),
        ["workers"] if version >= 9 => Some(ok(&[(); 0])),
        ["http"] => Some(ok(&HTTP_ENDPOINTS)),
        ["http", "requests"] => Some(ok(&HttpRequests::of(info))),
        ["http", "server_zones" | "location_zones" | "caches" | "limit_reqs" | "limit_conns"] => {
            Some(ok(&Map::new()))
        }
        ["http", "upstreams"] => Some(json_with(|out| {
            upstreams_map(out, upstreams, req.clock(), fields)
        })),
        ["http", "upstreams", ..] => None,
        _ => return path_not_found(req),
    };
    if let Some(answer) = answer {
        return if read { answer } else { not_supported(req) };
    }
    let ["http", "upstreams", name, rest @ ..] = rest else {
        return path_not_found(req);
    };
    let Some(u) = upstreams.iter().find(|u| u.name == *name) else {
        return refuse(req, 404, "UpstreamNotFound", "upstream not found");
    };
    match rest {
        [] => match req.method {
            Method::Get | Method::Head => json_with(|out| {
                render(u, req.clock(), fields).write(out);
            }),
            Method::Delete if !req.write => disabled(req),
            Method::Delete => {
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
            _ => not_supported(req),
        },
        ["servers"] => match req.method {
            Method::Get | Method::Head => json_with(|out| conf_servers(out, u, req.now_ms)),
            Method::Post if !req.write => disabled(req),
            Method::Post => add(req, u, alive),
            _ => not_supported(req),
        },
        ["servers", id] => server(req, u, id, alive),
        _ => path_not_found(req),
    }
}

/// The root endpoints of version `version`.
fn root(version: u32) -> Vec<&'static str> {
    let mut v = vec![
        "nginx",
        "processes",
        "connections",
        "slabs",
        "http",
        "resolvers",
        "ssl",
    ];
    if version >= 9 {
        v.push("workers");
    }
    v
}

/// The http endpoints (no `keyvals`: there are none here).
const HTTP_ENDPOINTS: [&str; 7] = [
    "requests",
    "server_zones",
    "location_zones",
    "caches",
    "limit_conns",
    "limit_reqs",
    "upstreams",
];

/// The `nginx` object.
#[derive(Debug, Serialize)]
struct Nginx<'a> {
    version: &'a str,
    build: &'a str,
    address: &'a str,
    generation: u64,
    load_timestamp: Date,
    timestamp: Date,
    pid: u64,
    ppid: u64,
}

fn nginx<'a>(info: &NginxInfo<'a>, clock: Clock) -> Nginx<'a> {
    Nginx {
        version: info.version,
        build: BUILD,
        address: info.address,
        generation: info.generation,
        load_timestamp: Date(info.load_wall_ms),
        timestamp: Date(clock.wall_ms),
        pid: info.pid,
        ppid: info.ppid,
    }
}

#[derive(Debug, Serialize)]
struct Processes {
    respawned: u64,
}

/// Client connections, from nginx's stub_status counters.
#[derive(Debug, Default, Serialize)]
struct Connections {
    accepted: u64,
    dropped: u64,
    active: u64,
    idle: u64,
}

impl Connections {
    fn of(info: &NginxInfo<'_>) -> Connections {
        info.stub
            .map(|s| Connections {
                accepted: s.accepted,
                dropped: s.accepted.saturating_sub(s.handled),
                active: s.active.saturating_sub(s.waiting),
                idle: s.waiting,
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Default, Serialize)]
struct HttpRequests {
    total: u64,
    current: u64,
}

impl HttpRequests {
    fn of(info: &NginxInfo<'_>) -> HttpRequests {
        info.stub
            .map(|s| HttpRequests {
                total: s.requests,
                current: s.reading + s.writing,
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Default, Serialize)]
struct Ssl {
    handshakes: u64,
    handshakes_failed: u64,
    session_reuses: u64,
}

fn render<'a>(u: &Upstream<'a>, clock: Clock, fields: Option<&'a Fields>) -> Render<'a> {
    Render {
        name: u.name,
        zone: u.zone,
        learn: u.learn,
        clock,
        fields,
        plus: true,
    }
}

/// `name → upstream` in name order.
fn upstreams_map(
    out: &mut Body,
    upstreams: &[Upstream<'_>],
    clock: Clock,
    fields: Option<&Fields>,
) {
    let mut sorted: Vec<&Upstream<'_>> = upstreams.iter().collect();
    sorted.sort_by_key(|u| u.name);
    out.push(b"{");
    for (k, u) in sorted.into_iter().enumerate() {
        if k > 0 {
            out.push(b",");
        }
        let _ = serde_json::to_writer(&mut *out, u.name);
        out.push(b":");
        render(u, clock, fields).write(out);
    }
    out.push(b"}");
}

/// A server's configuration object (`NginxHTTPUpstreamConfServer`):
/// every key NGINX Plus prints, so that a client comparing it with
/// what it wants (nginx-plus-go-client's `haveSameParameters`) finds a
/// server with default parameters equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfServer {
    /// The server's id (its position, as on our paths).
    pub id: u32,
    /// Its address.
    pub server: String,
    /// Weight in force.
    pub weight: u32,
    /// `max_conns`, 0 for none.
    pub max_conns: u32,
    /// `max_fails`.
    pub max_fails: u32,
    /// `fail_timeout`, as nginx writes a time (`"10s"`, `"500ms"`).
    pub fail_timeout: String,
    /// Always `"0s"`: slow start is the upstream's (`ha_slow_start`).
    pub slow_start: String,
    /// Always `""`.
    pub route: String,
    /// A backup server.
    pub backup: bool,
    /// Set down (configuration or API).
    pub down: bool,
    /// Draining.
    pub drain: bool,
}

/// `ms` as nginx writes a time: whole seconds as `"Ns"`, else `"Nms"`.
pub fn time_text(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// An nginx time (`10`, `10s`, `500ms`, `1m`, `1h30m`) in ms.
pub fn parse_time(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let b = text.as_bytes();
    let mut k = 0;
    if b.is_empty() {
        return None;
    }
    while k < b.len() {
        let start = k;
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        let n: u64 = text[start..k].parse().ok()?;
        let unit_start = k;
        while k < b.len() && b[k].is_ascii_alphabetic() {
            k += 1;
        }
        let scale = match &text[unit_start..k] {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "M" => 2_592_000_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
    }
    Some(total)
}

fn conf_server(u: &Upstream<'_>, i: usize, v: &PeerView<'_>) -> ConfServer {
    let (_, addr) = json::names(v.identity);
    let st = &u.zone.states()[i];
    ConfServer {
        id: v.position,
        server: addr.into_owned(),
        weight: v.weight,
        max_conns: v.max_conns,
        max_fails: st.max_fails(),
        fail_timeout: time_text(st.fail_timeout_ms()),
        slow_start: "0s".to_owned(),
        route: String::new(),
        backup: v.backup,
        down: v.down,
        drain: v.drain,
    }
}

/// Server `i`'s configuration object, if it is still the server `mark`
/// saw.
fn read_conf(u: &Upstream<'_>, i: usize, mark: SlotMark, now_ms: u64) -> Option<ConfServer> {
    let v = u.zone.view(i, now_ms)?;
    let c = conf_server(u, i, &v);
    u.zone.slot_unchanged(i, mark).then_some(c)
}

/// The configuration objects of `u`'s servers, in configuration order
/// (servers gone from the upstream whose requests still run are not
/// listed: they are `zombies`).
fn conf_servers(out: &mut Body, u: &Upstream<'_>, now_ms: u64) {
    let list: Vec<ConfServer> = json::order(u.zone)
        .into_iter()
        .filter_map(|i| {
            let i = i as usize;
            let mark = u.zone.listed(i).filter(|m| m.status == LIVE)?;
            read_conf(u, i, mark, now_ms)
        })
        .collect();
    let _ = serde_json::to_writer(out, &list);
}

fn server(req: &Request<'_>, u: &Upstream<'_>, id: &str, alive: impl Fn(u64) -> bool) -> Response {
    let Some(pos) = id
        .parse::<u32>()
        .ok()
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
    else {
        return refuse(req, 400, "UpstreamBadServerId", "invalid server id");
    };
    let not_found = || {
        refuse(
            req,
            404,
            "UpstreamServerNotFound",
            &format!("server with ID \"{pos}\" does not exist"),
        )
    };
    let Some((i, mark)) = u.zone.by_position(pos).filter(|(_, m)| m.status == LIVE) else {
        return not_found();
    };
    let show = || match read_conf(u, i, mark, req.now_ms) {
        Some(c) => ok(&c),
        None => not_found(),
    };
    match req.method {
        Method::Get | Method::Head => show(),
        Method::Patch if !req.write => disabled(req),
        Method::Patch => {
            let Some(current) = read_conf(u, i, mark, req.now_ms) else {
                return not_found();
            };
            let change = match patch_body(req, u, &current) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if change == ServerChange::default() {
                return show();
            }
            let before = Admin::read(u, i, req.now_ms);
            match change::apply(req, u, i, mark, change, alive) {
                Ok(changed) => Response {
                    changed,
                    notice: before.and_then(|b| b.notice(u, i, req.now_ms)),
                    ..show()
                },
                Err(r) => as_plus(req, r),
            }
        }
        Method::Delete if !req.write => disabled(req),
        Method::Delete => remove(req, u, i, mark, alive),
        Method::Post | Method::Other => not_supported(req),
    }
}

/// A 400 refusal with `code` and `text`.
fn bad<T>(req: &Request<'_>, code: &str, text: String) -> Result<T, Response> {
    Err(refuse(req, 400, code, &text))
}

/// The request's body as a JSON object (`example` shows one in the
/// refusal); Plus's refusals otherwise.
fn json_object(req: &Request<'_>, example: &str) -> Result<Map<String, Value>, Response> {
    if req.body.len() > request::MAX_BODY {
        return bad(
            req,
            "UpstreamConfFormatError",
            "request body too large".into(),
        );
    }
    match serde_json::from_slice(req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bad(
            req,
            "UpstreamConfFormatError",
            format!("a JSON object is expected, e.g. {example}"),
        ),
        Err(e) => Err(refuse(req, 415, "JsonError", &format!("invalid JSON: {e}"))),
    }
}

/// A PATCH body (a configuration object, whole or in part) as the change
/// it asks for. `weight`, `down` and `drain` change; the other keys of
/// the configuration object are accepted when they repeat the current
/// value (clients send the whole object), refused otherwise.
fn patch_body(
    req: &Request<'_>,
    u: &Upstream<'_>,
    current: &ConfServer,
) -> Result<ServerChange, Response> {
    let map = json_object(req, "{\"drain\":true}")?;
    let mut change = ServerChange::default();
    let immutable = |key: &str, why: &str| {
        Err(refuse(
            req,
            400,
            "UpstreamServerImmutable",
            &format!(
                "\"{key}\" of server with ID \"{}\" of upstream \"{}\" cannot be changed \
                 at run time ({why}); the API changes \"weight\", \"down\" and \"drain\"",
                current.id, u.name
            ),
        ))
    };
    let from_conf = "it is set in the configuration";
    for (key, v) in &map {
        if v.is_object() || v.is_array() {
            return bad(
                req,
                "UpstreamConfFormatError",
                format!("invalid \"{key}\": a nested value"),
            );
        }
        let as_bool = |code: &str| match v {
            Value::Bool(b) => Ok(*b),
            _ => bad(
                req,
                code,
                format!("invalid \"{key}\": true or false is expected"),
            ),
        };
        match key.as_str() {
            "id" => {
                if v.as_u64() != Some(u64::from(current.id)) {
                    return immutable(key, "an id is given by the API");
                }
            }
            "server" => {
                if v.as_str() != Some(current.server.as_str()) {
                    return immutable(key, "a server's address is its identity");
                }
            }
            "weight" => match v.as_u64() {
                Some(w) if (1..=u64::from(MAX_WEIGHT)).contains(&w) => {
                    if w as u32 != current.weight {
                        change.weight = Some(Some(w as u32));
                    }
                }
                _ => {
                    return bad(
                        req,
                        "UpstreamBadWeight",
                        format!("invalid \"weight\": it must be from 1 to {MAX_WEIGHT}"),
                    )
                }
            },
            "down" => change.down = Some(as_bool("UpstreamConfFormatError")?),
            "drain" => change.drain = Some(as_bool("UpstreamConfFormatError")?),
            "backup" => {
                if as_bool("UpstreamConfFormatError")? != current.backup {
                    return immutable(key, from_conf);
                }
            }
            "max_conns" | "max_fails" => {
                let now = if key == "max_conns" {
                    current.max_conns
                } else {
                    current.max_fails
                };
                let code = if key == "max_conns" {
                    "UpstreamBadMaxConns"
                } else {
                    "UpstreamBadMaxFails"
                };
                match v.as_u64() {
                    Some(n) if n == u64::from(now) => {}
                    Some(_) => return immutable(key, from_conf),
                    None => return bad(req, code, format!("invalid \"{key}\"")),
                }
            }
            "fail_timeout" => match v.as_str().and_then(parse_time) {
                Some(ms) if time_text(ms) == current.fail_timeout => {}
                Some(_) => return immutable(key, from_conf),
                None => return bad(req, "UpstreamBadFailTimeout", format!("invalid \"{key}\"")),
            },
            "slow_start" => match v.as_str().and_then(parse_time) {
                Some(0) => {}
                Some(_) => return immutable(key, "slow start is the upstream's: ha_slow_start"),
                None => return bad(req, "UpstreamBadSlowStart", format!("invalid \"{key}\"")),
            },
            "route" => {
                if v.as_str() != Some("") {
                    return bad(
                        req,
                        "UpstreamBadRoute",
                        "invalid \"route\": none is set here".into(),
                    );
                }
            }
            "service" => {
                if v.as_str() != Some("") {
                    return bad(
                        req,
                        "UpstreamBadService",
                        "invalid \"service\": this server has none".into(),
                    );
                }
            }
            _ => {
                return bad(
                    req,
                    "UpstreamConfFormatError",
                    format!("unknown parameter \"{key}\""),
                )
            }
        }
    }
    // Plus's PATCH sets, it does not toggle: a value equal to the
    // current one is no change (and no log line).
    if change.down == Some(current.down) {
        change.down = None;
    }
    if change.drain == Some(current.drain) {
        change.drain = None;
    }
    Ok(change)
}

/// A POST body: the new server's configuration object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    /// The address as given (`10.0.0.5:8080`, `[::1]:8080`, `10.0.0.5`).
    pub server: String,
    /// The address as nginx prints it (port 80 when none was given).
    pub address: String,
    /// `weight`, 1 by default.
    pub weight: u32,
    /// `max_conns`, 0 (none) by default.
    pub max_conns: u32,
    /// `max_fails`, 1 by default.
    pub max_fails: u32,
    /// `fail_timeout`, 10 s by default.
    pub fail_timeout_ms: u64,
    /// `backup`.
    pub backup: bool,
    /// `down`.
    pub down: bool,
    /// `drain`.
    pub drain: bool,
}

/// `text` as an IP address with a port (80 when none), printed as nginx
/// prints addresses; `None` when it is not one (a name, `unix:`, junk).
pub fn parse_address(text: &str) -> Option<String> {
    use std::net::{IpAddr, SocketAddr};
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a.to_string());
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 80).to_string())
}

/// Parses a POST body (see [`NewServer`]); the refusal otherwise.
fn new_server(req: &Request<'_>, u: &Upstream<'_>) -> Result<NewServer, Response> {
    let map = json_object(req, "{\"server\":\"10.0.0.5:8080\"}")?;
    let mut s = NewServer {
        server: String::new(),
        address: String::new(),
        weight: 1,
        max_conns: 0,
        max_fails: 1,
        fail_timeout_ms: 10_000,
        backup: false,
        down: false,
        drain: false,
    };
    let mut server = None;
    for (key, v) in &map {
        if v.is_object() || v.is_array() {
            return bad(
                req,
                "UpstreamConfFormatError",
                format!("invalid \"{key}\": a nested value"),
            );
        }
        let as_bool = || match v {
            Value::Bool(b) => Ok(*b),
            _ => bad(
                req,
                "UpstreamConfFormatError",
                format!("invalid \"{key}\": true or false is expected"),
            ),
        };
        let as_u32 = |code: &str, min: u64, max: u64| match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n as u32),
            _ => bad(
                req,
                code,
                format!("invalid \"{key}\": it must be from {min} to {max}"),
            ),
        };
        match key.as_str() {
            "server" => match v.as_str() {
                Some(t) => server = Some(t.to_owned()),
                None => return bad(req, "UpstreamBadAddress", "invalid \"server\"".into()),
            },
            "weight" => s.weight = as_u32("UpstreamBadWeight", 1, u64::from(MAX_WEIGHT))?,
            "max_conns" => s.max_conns = as_u32("UpstreamBadMaxConns", 0, u64::from(u32::MAX))?,
            "max_fails" => s.max_fails = as_u32("UpstreamBadMaxFails", 0, u64::from(u32::MAX))?,
            "fail_timeout" => match v.as_str().and_then(parse_time) {
                Some(ms) if ms <= u64::from(MAX_FAIL_TIMEOUT_MS) => s.fail_timeout_ms = ms,
                _ => {
                    return bad(
                        req,
                        "UpstreamBadFailTimeout",
                        "invalid \"fail_timeout\"".into(),
                    )
                }
            },
            "slow_start" => match v.as_str().and_then(parse_time) {
                Some(0) => {}
                _ => {
                    return bad(
                        req,
                        "UpstreamBadSlowStart",
                        "invalid \"slow_start\": slow start is the upstream's here \
                         (ha_slow_start); give \"0s\" or leave it out"
                            .into(),
                    )
                }
            },
            "route" => {
                if v.as_str() != Some("") {
                    return bad(req, "UpstreamBadRoute", "invalid \"route\"".into());
                }
            }
            "service" => {
                return bad(
                    req,
                    "UpstreamBadService",
                    "\"service\" is not taken here: add an address".into(),
                )
            }
            "backup" => s.backup = as_bool()?,
            "down" => s.down = as_bool()?,
            "drain" => s.drain = as_bool()?,
            _ => {
                return bad(
                    req,
                    "UpstreamConfFormatError",
                    format!("unknown parameter \"{key}\""),
                )
            }
        }
    }
    let Some(server) = server else {
        return bad(
            req,
            "UpstreamConfFormatError",
            "\"server\" is required".into(),
        );
    };
    let Some(address) = parse_address(&server) else {
        return bad(
            req,
            "UpstreamBadAddress",
            format!(
                "invalid \"server\" \"{server}\": give an IP address with a port \
                 (a name needs a \"server ... resolve\" line in the configuration)"
            ),
        );
    };
    if s.backup && !u.zone.policy().allows_backup() {
        return bad(
            req,
            "UpstreamNoBackup",
            format!(
                "upstream \"{}\" uses \"{}\", which has no backup servers",
                u.name,
                json::policy_name(u.zone.policy())
            ),
        );
    }
    s.server = server;
    s.address = address;
    Ok(s)
}

/// POST `.../servers`: adds a server.
fn add(req: &Request<'_>, u: &Upstream<'_>, alive: impl Fn(u64) -> bool) -> Response {
    let s = match new_server(req, u) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let identity = [u.name.as_bytes(), s.server.as_bytes(), s.address.as_bytes()].join(&0u8);
    let spec = PeerSpec {
        weight: s.weight,
        max_conns: s.max_conns,
        max_fails: s.max_fails,
        fail_timeout_ms: s.fail_timeout_ms,
        backup: s.backup,
        ..PeerSpec::new(&identity)
    };
    let spec = PeerSpec {
        server: s.server.as_bytes(),
        ..spec
    };
    let added = match u.zone.add_server(&spec, req.now_ms, req.owner, &alive) {
        Ok(a) => a,
        Err(AddRefusal::Exists) => {
            return refuse(
                req,
                409,
                "EntryExists",
                &format!(
                    "server \"{}\" is already in upstream \"{}\"",
                    s.server, u.name
                ),
            )
        }
        Err(AddRefusal::Full { max: 0 }) => {
            return refuse(
                req,
                400,
                "UpstreamStatic",
                &format!(
                    "upstream \"{}\" takes no servers at run time: give it \"ha_api_max N\"",
                    u.name
                ),
            )
        }
        Err(AddRefusal::Full { max }) => {
            return refuse(
                req,
                400,
                "UpstreamOutOfMemory",
                &format!(
                    "upstream \"{}\" has no room for another server: ha_api_max {max} \
                     servers added through the API already (raise \"ha_api_max\" and reload)",
                    u.name
                ),
            )
        }
        Err(AddRefusal::Publish(hab_core::Error::NoSpace)) => {
            return refuse(
                req,
                400,
                "UpstreamOutOfMemory",
                &format!(
                    "upstream \"{}\" has no free slot now: servers removed from it still \
                     have requests in flight, or its shared memory is full; retry shortly",
                    u.name
                ),
            )
        }
        Err(AddRefusal::Publish(e)) => {
            return as_plus(
                req,
                change::publish_refusal(u.name, e, None, u.zone.schedule_room()),
            )
        }
    };
    let mut notice = format!(
        "upstream \"{}\": added server {} id {}",
        u.name, s.address, added.position
    );
    if s.down || s.drain {
        // Added, then set down or drained through the API (so that the
        // API can undo it: a configured `down` it could not), before
        // the answer.
        if let Some(mark) = u.zone.listed(added.slot) {
            let change = ServerChange {
                down: s.down.then_some(true),
                drain: s.drain.then_some(true),
                ..ServerChange::default()
            };
            if change::apply(req, u, added.slot, mark, change, &alive).is_ok() {
                notice.push_str(match (s.down, s.drain) {
                    (true, true) => " (down, draining)",
                    (true, false) => " (down)",
                    _ => " (draining)",
                });
            }
        }
    }
    let conf = u
        .zone
        .listed(added.slot)
        .and_then(|mark| read_conf(u, added.slot, mark, req.now_ms));
    let mut r = match conf {
        Some(c) => ok(&c),
        None => ok(&Map::new()),
    };
    r.status = 201;
    r.changed = true;
    r.notice = Some(notice);
    r
}

/// DELETE `.../servers/{id}`: removes a server added through the API.
fn remove(
    req: &Request<'_>,
    u: &Upstream<'_>,
    i: usize,
    mark: SlotMark,
    alive: impl Fn(u64) -> bool,
) -> Response {
    let Some(current) = read_conf(u, i, mark, req.now_ms) else {
        return refuse(req, 404, "UpstreamServerNotFound", "server not found");
    };
    match u.zone.remove_server(i, mark, req.now_ms, req.owner, &alive) {
        Ok(()) => {}
        Err(RemoveRefusal::NotApi) => {
            return refuse(
                req,
                400,
                "UpstreamServerImmutable",
                &format!(
                    "server with ID \"{}\" of upstream \"{}\" is in the configuration: \
                     remove it there and reload, or set \"drain\" or \"down\" \
                     (only servers added through the API are removed through it)",
                    current.id, u.name
                ),
            )
        }
        Err(RemoveRefusal::Gone) => {
            return refuse(req, 404, "UpstreamServerNotFound", "server not found")
        }
        Err(RemoveRefusal::Publish(e)) => {
            return as_plus(
                req,
                change::publish_refusal(u.name, e, None, u.zone.schedule_room()),
            )
        }
    }
    let mut r = json_with(|out| conf_servers(out, u, req.now_ms));
    r.changed = true;
    r.notice = Some(format!(
        "upstream \"{}\": removed server {} id {}",
        u.name, current.server, current.id
    ));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::fixtures::busy_queue;
    use crate::route::{handle as route, StubCounters};
    use hab_core::spec::{HealthSpec, PeerSpec, Policy, UpstreamSpec};
    use hab_core::testing::OwnedTable;
    use serde::Deserialize;

    /// `app`: a, b (weight 5, max_conns 10), and backup c; with checks.
    fn app() -> OwnedTable {
        let peers = [
            PeerSpec {
                position: Some(0),
                ..PeerSpec::new(b"app\0a:80\x00127.0.0.1:1")
            },
            PeerSpec {
                position: Some(1),
                weight: 5,
                max_conns: 10,
                ..PeerSpec::new(b"app\0b:80\x00127.0.0.1:2")
            },
            PeerSpec {
                position: Some(2),
                backup: true,
                ..PeerSpec::new(b"app\0c:80\x00127.0.0.1:3")
            },
        ];
        OwnedTable::new(&UpstreamSpec {
            health: HealthSpec {
                flags: HealthSpec::CHECK,
                interval_ms: 1000,
                timeout_ms: 1000,
                fails: 1,
                passes: 1,
                ..Default::default()
            },
            policy: Policy::RoundRobin,
            peers: &peers,
            schedule_room: 0,
            sessions: false,
        })
        .unwrap()
    }

    const INFO: NginxInfo<'static> = NginxInfo {
        version: "1.22.1",
        address: "127.0.0.1",
        pid: 42,
        ppid: 41,
        generation: 3,
        load_wall_ms: 1_796_126_000_000,
        respawned: 1,
        stub: Some(StubCounters {
            accepted: 10,
            handled: 9,
            active: 4,
            requests: 30,
            reading: 1,
            writing: 2,
            waiting: 1,
        }),
    };

    fn raw(
        ts: &[(&str, &OwnedTable)],
        method: Method,
        path: &str,
        body: &str,
        write: bool,
    ) -> Response {
        let ups: Vec<Upstream<'_>> = ts
            .iter()
            .map(|(name, t)| Upstream {
                name,
                zone: t.zone(),
                learn: None,
            })
            .collect();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        route(
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
                request_id: "0e2b0b0ad7d2ee3a2ba08f1a3cae6d80",
                nginx: INFO,
            },
            &ups,
            |_| true,
        )
    }

    fn call(t: &OwnedTable, method: Method, path: &str, body: &str, write: bool) -> (u16, Value) {
        let r = raw(&[("app", t)], method, path, body, write);
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body.to_vec()).unwrap()
        };
        (r.status, v)
    }

    fn get(t: &OwnedTable, path: &str) -> (u16, Value) {
        call(t, Method::Get, path, "", false)
    }

    /// Asserts `v` is Plus's error body with `status` and `code`.
    fn is_error(status: u16, v: &Value, want_status: u16, code: &str) {
        assert_eq!(status, want_status, "{v}");
        assert_eq!(v["error"]["status"], want_status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["text"].is_string(), "{v}");
        assert_eq!(v["request_id"], "0e2b0b0ad7d2ee3a2ba08f1a3cae6d80");
        assert_eq!(v["href"], HREF);
    }

    #[test]
    fn root_lists_versions() {
        let t = app();
        assert_eq!(
            get(&t, "").1,
            serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9])
        );
        let r = raw(&[("app", &t)], Method::Get, "", "", false);
        assert_eq!(r.content_type, ContentType::Json);
    }

    #[test]
    fn plus_paths_answer_as_plus() {
        let t = app();
        for n in 1..=9 {
            let p = |path: &str| get(&t, &format!("{n}/{path}"));
            let mut want_root = vec![
                "nginx",
                "processes",
                "connections",
                "slabs",
                "http",
                "resolvers",
                "ssl",
            ];
            if n == 9 {
                want_root.push("workers");
            }
            assert_eq!(p(""), (200, serde_json::json!(want_root)));
            assert_eq!(
                p("http").1,
                serde_json::json!([
                    "requests",
                    "server_zones",
                    "location_zones",
                    "caches",
                    "limit_conns",
                    "limit_reqs",
                    "upstreams"
                ])
            );
            for empty in [
                "slabs",
                "resolvers",
                "http/server_zones",
                "http/location_zones",
                "http/caches",
                "http/limit_reqs",
                "http/limit_conns",
            ] {
                assert_eq!(p(empty), (200, serde_json::json!({})), "{n}/{empty}");
            }
            assert_eq!(
                p("ssl").1,
                serde_json::json!({"handshakes":0,"handshakes_failed":0,"session_reuses":0})
            );
            assert_eq!(
                p("connections").1,
                serde_json::json!({"accepted":10,"dropped":1,"active":3,"idle":1})
            );
            assert_eq!(
                p("http/requests").1,
                serde_json::json!({"total":30,"current":3})
            );
            assert_eq!(p("processes").1, serde_json::json!({"respawned":1}));
            let nginx = p("nginx").1;
            assert_eq!(nginx["version"], "1.22.1");
            assert_eq!(nginx["build"], "ha-balancer");
            assert_eq!(nginx["address"], "127.0.0.1");
            assert_eq!(nginx["generation"], 3);
            assert_eq!(nginx["pid"], 42);
            assert_eq!(nginx["ppid"], 41);
            assert_eq!(nginx["load_timestamp"], "2026-12-01T11:53:20.000Z");
            assert_eq!(nginx["timestamp"], "2026-12-01T12:00:00.000Z");
            if n == 9 {
                assert_eq!(p("workers"), (200, serde_json::json!([])));
            } else {
                let (s, v) = p("workers");
                is_error(s, &v, 404, "PathNotFound");
            }
            // What the exporter asks and may be told is not there: the
            // code exactly PathNotFound.
            for missing in [
                "stream",
                "stream/upstreams",
                "stream/server_zones",
                "stream/zone_sync",
                "stream/limit_conns",
                "license",
                "http/keyvals",
                "http/upstreams/app/nope",
                "nope",
            ] {
                let (s, v) = p(missing);
                is_error(s, &v, 404, "PathNotFound");
            }
            let (s, v) = p("http/upstreams/nope");
            is_error(s, &v, 404, "UpstreamNotFound");
            let (s, v) = p("http/upstreams/app/servers/x1");
            is_error(s, &v, 400, "UpstreamBadServerId");
            let (s, v) = p("http/upstreams/app/servers/7");
            is_error(s, &v, 404, "UpstreamServerNotFound");
        }
        for bad in ["0", "10", "08", "123"] {
            let (s, v) = get(&t, &format!("{bad}/nginx"));
            is_error(s, &v, 404, "UnknownVersion");
        }
        // "9a" is not a version: our own tree's 404.
        assert_eq!(get(&t, "9a/nginx").0, 404);
    }

    #[test]
    fn nginx_without_stub_status_reads_zeros() {
        let t = app();
        let ups = [Upstream {
            name: "app",
            zone: t.zone(),
            learn: None,
        }];
        let r = route(
            &Request {
                method: Method::Get,
                path: "8/connections",
                query: "",
                html: false,
                body: b"",
                write: false,
                now_ms: 1,
                wall_ms: 0,
                owner: 1,
                request_id: "",
                nginx: NginxInfo::default(),
            },
            &ups,
            |_| true,
        );
        let v: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"accepted":0,"dropped":0,"active":0,"idle":0})
        );
    }

    #[test]
    fn upstreams_have_plus_keys_and_ours() {
        let t = app();
        let (s, v) = get(&t, "8/http/upstreams");
        assert_eq!(s, 200);
        let app = &v["app"];
        assert_eq!(app["zone"], "app");
        assert_eq!(app["keepalive"], 0);
        assert_eq!(app["zombies"], 0);
        let peers = app["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers[0]["responses"]["codes"], serde_json::json!({}));
        assert_eq!(peers[1]["weight"], 5);
        assert_eq!(peers[2]["backup"], true);
        // Our own paths keep their shape: no codes, no zone.
        let (_, ours) = get(&t, "upstreams/app");
        assert!(ours["peers"][0]["responses"].get("codes").is_none());
        assert!(ours.get("zone").is_none());
        assert_eq!(get(&t, "9/http/upstreams/app").1, v["app"]);
    }

    #[test]
    fn conf_servers_have_every_key() {
        let t = app();
        let (s, v) = get(&t, "8/http/upstreams/app/servers");
        assert_eq!(s, 200);
        assert_eq!(
            v[1],
            serde_json::json!({"id":1,"server":"127.0.0.1:2","weight":5,"max_conns":10,
                "max_fails":1,"fail_timeout":"10s","slow_start":"0s","route":"",
                "backup":false,"down":false,"drain":false})
        );
        assert_eq!(get(&t, "8/http/upstreams/app/servers/2").1, v[2]);
        assert_eq!(v[2]["backup"], true);
    }

    /// nginx-plus-go-client v0.10.0's `haveSameParameters` after its
    /// defaulting (client/nginx.go L31-37, L700-732): a server printed
    /// with default parameters compares equal to `{server}` alone.
    #[test]
    fn conf_servers_compare_equal_for_defaults() {
        #[derive(Deserialize, Default, PartialEq, Debug, Clone)]
        #[serde(default)]
        struct UpstreamServer {
            id: i64,
            server: String,
            max_conns: Option<i64>,
            max_fails: Option<i64>,
            fail_timeout: String,
            slow_start: String,
            route: String,
            backup: Option<bool>,
            down: Option<bool>,
            drain: bool,
            weight: Option<i64>,
            service: String,
        }
        fn defaults(mut s: UpstreamServer) -> UpstreamServer {
            s.max_conns.get_or_insert(0);
            s.max_fails.get_or_insert(1);
            if s.fail_timeout.is_empty() {
                s.fail_timeout = "10s".into();
            }
            if s.slow_start.is_empty() {
                s.slow_start = "0s".into();
            }
            s.backup.get_or_insert(false);
            s.down.get_or_insert(false);
            s.weight.get_or_insert(1);
            s
        }
        fn same(a: &UpstreamServer, b: &UpstreamServer) -> bool {
            let (a, b) = (defaults(a.clone()), defaults(b.clone()));
            a.server == b.server
                && a.max_conns == b.max_conns
                && a.max_fails == b.max_fails
                && a.fail_timeout == b.fail_timeout
                && a.slow_start == b.slow_start
                && a.route == b.route
                && a.backup == b.backup
                && a.down == b.down
                && a.weight == b.weight
        }
        let t = app();
        let (_, v) = get(&t, "8/http/upstreams/app/servers");
        let listed: Vec<UpstreamServer> = serde_json::from_value(v).unwrap();
        let want = |server: &str| UpstreamServer {
            server: server.into(),
            ..Default::default()
        };
        assert!(same(&listed[0], &want("127.0.0.1:1")));
        assert!(
            !same(&listed[1], &want("127.0.0.1:2")),
            "weight 5, max_conns 10"
        );
    }

    #[test]
    fn patch_sets_what_the_api_changes_and_refuses_the_rest() {
        let t = app();
        let path = "8/http/upstreams/app/servers/1";
        // The whole object, as nginx-plus-go-client sends it (no id).
        let whole = r#"{"server":"127.0.0.1:2","max_conns":10,"max_fails":1,
            "fail_timeout":"10s","slow_start":"0s","route":"","backup":false,
            "down":false,"drain":true,"weight":7,"service":""}"#;
        let r = raw(&[("app", &t)], Method::Patch, path, whole, true);
        assert_eq!(r.status, 200);
        assert!(r.changed);
        let notice = r.notice.unwrap();
        assert!(notice.contains("drain false -> true"), "{notice}");
        assert!(notice.contains("weight 5 (configured) -> 7"), "{notice}");
        let v: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
        assert_eq!(
            (v["drain"].clone(), v["weight"].clone()),
            (true.into(), 7.into())
        );
        // The same again: no change, no notice.
        let r = raw(&[("app", &t)], Method::Patch, path, whole, true);
        assert_eq!((r.status, r.notice.is_none()), (200, true));
        // Our own path sees it.
        assert_eq!(get(&t, "upstreams/app/servers/1").1["state"], "draining");
        let refused = |body: &str, status: u16, code: &str| {
            let (s, v) = call(&t, Method::Patch, path, body, true);
            is_error(s, &v, status, code);
        };
        refused(
            r#"{"server":"127.0.0.1:9"}"#,
            400,
            "UpstreamServerImmutable",
        );
        refused(r#"{"max_conns":11}"#, 400, "UpstreamServerImmutable");
        refused(r#"{"fail_timeout":"11s"}"#, 400, "UpstreamServerImmutable");
        refused(r#"{"slow_start":"5s"}"#, 400, "UpstreamServerImmutable");
        refused(r#"{"backup":true}"#, 400, "UpstreamServerImmutable");
        refused(r#"{"weight":0}"#, 400, "UpstreamBadWeight");
        refused(r#"{"weight":1.5}"#, 400, "UpstreamBadWeight");
        refused(r#"{"max_fails":-1}"#, 400, "UpstreamBadMaxFails");
        refused(r#"{"fail_timeout":"soon"}"#, 400, "UpstreamBadFailTimeout");
        refused(r#"{"route":"r1"}"#, 400, "UpstreamBadRoute");
        refused(r#"{"service":"_http._tcp"}"#, 400, "UpstreamBadService");
        refused(r#"{"colour":"red"}"#, 400, "UpstreamConfFormatError");
        refused(r#"{"down":{"x":1}}"#, 400, "UpstreamConfFormatError");
        refused(r#"{"down":"yes"}"#, 400, "UpstreamConfFormatError");
        refused(r#"[true]"#, 400, "UpstreamConfFormatError");
        refused(r#"{"down":"#, 415, "JsonError");
        // Equal values of the fixed keys pass; "1m" is fail_timeout 60s.
        assert_eq!(
            call(
                &t,
                Method::Patch,
                path,
                r#"{"fail_timeout":"10000ms","max_conns":10}"#,
                true
            )
            .0,
            200
        );
        // A read-only location, and methods a path does not take.
        let (s, v) = call(&t, Method::Patch, path, r#"{"down":true}"#, false);
        is_error(s, &v, 405, "MethodDisabled");
        let (s, v) = call(&t, Method::Delete, "8/http/upstreams/app", "", false);
        is_error(s, &v, 405, "MethodDisabled");
        let (s, v) = call(&t, Method::Patch, "8/nginx", "{}", true);
        is_error(s, &v, 405, "MethodNotSupported");
        let (s, v) = call(
            &t,
            Method::Post,
            "8/http/upstreams/app/servers",
            r#"{"server":"127.0.0.1:9"}"#,
            true,
        );
        is_error(s, &v, 400, "UpstreamStatic");
        let (s, v) = call(&t, Method::Delete, path, "", true);
        is_error(s, &v, 400, "UpstreamServerImmutable");
    }

    /// `app` of two configured servers with room for two added ones.
    fn roomy(policy: Policy) -> OwnedTable {
        let peers = [
            PeerSpec {
                position: Some(0),
                ..PeerSpec::new(b"app\0a:80\x00127.0.0.1:1")
            },
            PeerSpec {
                position: Some(1),
                ..PeerSpec::new(b"app\0b:80\x00127.0.0.1:2")
            },
        ];
        OwnedTable::with_api(
            &UpstreamSpec {
                health: Default::default(),
                policy,
                peers: &peers,
                schedule_room: 0,
                sessions: false,
            },
            4,
            2,
        )
        .unwrap()
    }

    fn servers(t: &OwnedTable) -> Vec<String> {
        let (s, v) = get(t, "9/http/upstreams/app/servers");
        assert_eq!(s, 200);
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["server"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn post_adds_a_server_and_delete_removes_it() {
        let t = roomy(Policy::RoundRobin);
        let path = "9/http/upstreams/app/servers";
        let r = raw(
            &[("app", &t)],
            Method::Post,
            path,
            r#"{"server":"127.0.0.1:9","weight":3,"max_conns":5}"#,
            true,
        );
        assert_eq!(r.status, 201);
        assert!(r.changed);
        let v: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
        assert_eq!(v["server"], "127.0.0.1:9");
        assert_eq!(
            (v["weight"].clone(), v["max_conns"].clone()),
            (3.into(), 5.into())
        );
        let id = v["id"].as_u64().unwrap();
        assert!(id >= 2, "a new id, never a configured one's: {id}");
        let notice = r.notice.unwrap();
        assert!(notice.contains("added server 127.0.0.1:9"), "{notice}");
        assert_eq!(servers(&t), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:9"]);
        assert_eq!(get(&t, &format!("{path}/{id}")).1, v);
        // Our own tree lists it too, up.
        let (_, ours) = get(&t, &format!("upstreams/app/servers/{id}"));
        assert_eq!(ours["state"], "up");
        // The same address again; an IPv6 one without port: :80.
        let (s, e) = call(&t, Method::Post, path, r#"{"server":"127.0.0.1:9"}"#, true);
        is_error(s, &e, 409, "EntryExists");
        let (s, v6) = call(
            &t,
            Method::Post,
            path,
            r#"{"server":"[::1]","drain":true}"#,
            true,
        );
        assert_eq!(s, 201, "{v6}");
        assert_eq!(
            (v6["server"].clone(), v6["drain"].clone()),
            ("[::1]:80".into(), true.into())
        );
        // Down through the API, so that the API can bring it up.
        let v6id = v6["id"].as_u64().unwrap();
        let (s, up) = call(
            &t,
            Method::Patch,
            &format!("{path}/{v6id}"),
            r#"{"down":true}"#,
            true,
        );
        assert_eq!((s, up["down"].clone()), (200, true.into()));
        let (s, up) = call(
            &t,
            Method::Patch,
            &format!("{path}/{v6id}"),
            r#"{"down":false,"drain":false}"#,
            true,
        );
        assert_eq!(
            (s, up["down"].clone(), up["drain"].clone()),
            (200, false.into(), false.into())
        );
        // Full: two added already.
        let (s, e) = call(&t, Method::Post, path, r#"{"server":"127.0.0.1:10"}"#, true);
        is_error(s, &e, 400, "UpstreamOutOfMemory");
        assert!(
            e["error"]["text"]
                .as_str()
                .unwrap()
                .contains("ha_api_max 2"),
            "{e}"
        );
        // DELETE: configured ones stay; added ones go.
        let (s, e) = call(&t, Method::Delete, &format!("{path}/0"), "", true);
        is_error(s, &e, 400, "UpstreamServerImmutable");
        let r = raw(
            &[("app", &t)],
            Method::Delete,
            &format!("{path}/{id}"),
            "",
            true,
        );
        assert_eq!(r.status, 200);
        assert!(r.changed);
        assert!(r.notice.unwrap().contains("removed server 127.0.0.1:9"));
        let left: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
        assert_eq!(left.as_array().unwrap().len(), 3);
        assert_eq!(servers(&t), ["127.0.0.1:1", "127.0.0.1:2", "[::1]:80"]);
        let (s, e) = call(&t, Method::Delete, &format!("{path}/{id}"), "", true);
        is_error(s, &e, 404, "UpstreamServerNotFound");
        // Read-only location.
        let (s, e) = call(
            &t,
            Method::Post,
            path,
            r#"{"server":"127.0.0.1:11"}"#,
            false,
        );
        is_error(s, &e, 405, "MethodDisabled");
    }

    #[test]
    fn post_refuses_what_it_cannot_add() {
        let t = roomy(Policy::P2c);
        let path = "9/http/upstreams/app/servers";
        let refused = |body: &str, status: u16, code: &str| {
            let (s, v) = call(&t, Method::Post, path, body, true);
            is_error(s, &v, status, code);
        };
        refused(r#"{"server":"app.example:80"}"#, 400, "UpstreamBadAddress");
        refused(r#"{"server":"unix:/tmp/s"}"#, 400, "UpstreamBadAddress");
        refused(r#"{"server":"127.0.0.1:99999"}"#, 400, "UpstreamBadAddress");
        refused(
            r#"{"server":"127.0.0.1:9","backup":true}"#,
            400,
            "UpstreamNoBackup",
        );
        refused(
            r#"{"server":"127.0.0.1:9","weight":0}"#,
            400,
            "UpstreamBadWeight",
        );
        refused(
            r#"{"server":"127.0.0.1:9","slow_start":"10s"}"#,
            400,
            "UpstreamBadSlowStart",
        );
        refused(
            r#"{"server":"127.0.0.1:9","service":"http"}"#,
            400,
            "UpstreamBadService",
        );
        refused(
            r#"{"server":"127.0.0.1:9","colour":1}"#,
            400,
            "UpstreamConfFormatError",
        );
        refused(r#"{"weight":2}"#, 400, "UpstreamConfFormatError");
        // Added down: the API can bring it up again.
        let (s, v) = call(
            &t,
            Method::Post,
            path,
            r#"{"server":"127.0.0.1:7","down":true}"#,
            true,
        );
        assert_eq!((s, v["down"].clone()), (201, true.into()), "{v}");
        let id = v["id"].as_u64().unwrap();
        let (s, v) = call(
            &t,
            Method::Patch,
            &format!("{path}/{id}"),
            r#"{"down":false}"#,
            true,
        );
        assert_eq!((s, v["down"].clone()), (200, false.into()), "{v}");
        let (s, _) = call(&t, Method::Delete, &format!("{path}/{id}"), "", true);
        assert_eq!(s, 200);
        refused(r#"{"server":"#, 415, "JsonError");
        // An upstream without ha_api_max names the directive.
        let (s, e) = call(
            &app(),
            Method::Post,
            path,
            r#"{"server":"127.0.0.1:9"}"#,
            true,
        );
        is_error(s, &e, 400, "UpstreamStatic");
        assert!(
            e["error"]["text"].as_str().unwrap().contains("ha_api_max"),
            "{e}"
        );
        assert_eq!(servers(&t).len(), 2, "nothing was added");
    }

    #[test]
    fn added_servers_are_picked_by_every_policy() {
        for policy in [
            Policy::RoundRobin,
            Policy::LeastConn,
            Policy::P2c,
            Policy::Random,
            Policy::Ewma { decay_ms: 10_000 },
        ] {
            let t = roomy(policy);
            let (s, v) = call(
                &t,
                Method::Post,
                "9/http/upstreams/app/servers",
                r#"{"server":"127.0.0.1:9","weight":100}"#,
                true,
            );
            assert_eq!(s, 201, "{policy:?}: {v}");
            let id = v["id"].as_u64().unwrap() as u32;
            let (slot, _) = t.zone().by_position(id).unwrap();
            assert!(t.zone().added_through_api(slot));
            assert_eq!(t.zone().api_servers(), (1, 2), "{policy:?}");
        }
    }

    #[test]
    fn delete_resets_statistics() {
        let t = app();
        let (s, _) = call(&t, Method::Delete, "8/http/upstreams/app", "", true);
        assert_eq!(s, 204);
    }

    #[test]
    fn times_as_nginx_writes_them() {
        assert_eq!(time_text(10_000), "10s");
        assert_eq!(time_text(1500), "1500ms");
        assert_eq!(time_text(0), "0s");
        assert_eq!(parse_time("10"), Some(10_000));
        assert_eq!(parse_time("1m30s"), Some(90_000));
        assert_eq!(parse_time("500ms"), Some(500));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("5x"), None);
        assert_eq!(parse_time("s"), None);
    }

    // Mirrors of nginx-plus-go-client v0.10.0's types (client/nginx.go):
    // Go's uint64 and int take JSON integers only, string a string, bool
    // a bool; unknown keys are ignored, missing ones zero.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct GoNginxInfo {
        version: String,
        build: String,
        address: String,
        generation: u64,
        load_timestamp: String,
        timestamp: String,
        pid: u64,
        ppid: u64,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct GoConnections {
        accepted: u64,
        dropped: u64,
        active: u64,
        idle: u64,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct GoUpstream {
        #[serde(default)]
        peers: Vec<GoPeer>,
        #[serde(default)]
        keepalives: i64,
        #[serde(default)]
        zombies: i64,
        #[serde(default)]
        zone: String,
        #[serde(default)]
        queue: Option<GoQueue>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct GoQueue {
        size: i64,
        max_size: i64,
        overflows: u64,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    #[allow(dead_code)]
    struct GoResponses {
        #[serde(rename = "1xx")]
        r1: u64,
        #[serde(rename = "2xx")]
        r2: u64,
        #[serde(rename = "3xx")]
        r3: u64,
        #[serde(rename = "4xx")]
        r4: u64,
        #[serde(rename = "5xx")]
        r5: u64,
        total: u64,
        codes: std::collections::BTreeMap<String, u64>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    #[allow(dead_code)]
    struct GoHealthChecks {
        checks: u64,
        fails: u64,
        unhealthy: u64,
        last_passed: bool,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    #[allow(dead_code)]
    struct GoPeer {
        id: i64,
        server: String,
        service: String,
        name: String,
        backup: bool,
        weight: i64,
        state: String,
        active: u64,
        max_conns: i64,
        requests: u64,
        responses: GoResponses,
        sent: u64,
        received: u64,
        fails: u64,
        unavail: u64,
        health_checks: GoHealthChecks,
        downtime: u64,
        downstart: String,
        selected: String,
        header_time: u64,
        response_time: u64,
    }

    /// The keys of every object of `v`, lower-cased as Go matches them;
    /// panics when two keys of one object are equal that way.
    fn go_keys(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    let lower = k.to_ascii_lowercase();
                    assert!(
                        out.insert(lower.clone(), go_keys(x)).is_none(),
                        "two keys \"{lower}\" for Go in {v}"
                    );
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(go_keys).collect()),
            x => x.clone(),
        }
    }

    #[test]
    fn answers_decode_as_go_does() {
        let t = app();
        let q = busy_queue();
        for path in ["8/http/upstreams", "9/http/upstreams"] {
            let r = raw(&[("app", &t), ("q", &q)], Method::Get, path, "", false);
            let v: Value = serde_json::from_slice(&r.body.to_vec()).unwrap();
            let ups: std::collections::BTreeMap<String, GoUpstream> =
                serde_json::from_value(go_keys(&v)).unwrap();
            assert_eq!(ups["app"].peers.len(), 3);
            assert_eq!(ups["q"].queue.as_ref().unwrap().max_size, 3);
            assert_eq!(ups["q"].queue.as_ref().unwrap().overflows, 1);
        }
        let _: GoNginxInfo = serde_json::from_value(go_keys(&get(&t, "8/nginx").1)).unwrap();
        let _: GoConnections =
            serde_json::from_value(go_keys(&get(&t, "8/connections").1)).unwrap();
    }
}
