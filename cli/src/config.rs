//! The `hab render` input: a YAML description of backends, parsed and checked
//!
//! [`parse`] turns YAML text into a [`Config`] (syntax and type errors carry
//! `line L column C`), then [`Config::validate`] checks what types cannot
//! say (names, references, ranges) and names the offending backend and
//! field. Every struct denies unknown fields, so a misspelt key is an error
//! rather than a silent default. The schema, with every field and default,
//! is documented in `docs/hab.md`.
//!
//! The original design's files are read as written: a backend may stand at
//! the top level (`http-backend: { servers: [...] }`: a top-level key that
//! is not a setting and holds a mapping with `servers`), `default_backend`
//! may be a list paired with `forwarded_protocols` by position, and a bare
//! top-level `servers:` list (with `connections`) is one backend named
//! [`SHORT_BACKEND`]. Telling top-level backends from misspelt settings
//! takes a first pass over the YAML ([`top_level_backends`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de;
use serde::Deserialize;

/// Largest weight `ha_api` accepts; the renderer keeps to the same range.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// Default `load_module` path, relative to the nginx prefix as nginx's
/// own `modules/` directory is.
pub const DEFAULT_MODULE: &str = "modules/ngx_http_upstream_ha_module.so";

/// The whole file (read by [`parse`], which also takes backends from the
/// top level).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// After writing `-o OUT`, run `nginx -t` on it and then `nginx -s
    /// reload` (see `docs/hab.md`).
    pub reload: bool,
    /// Path given to `load_module`.
    pub module: Option<String>,
    /// `worker_processes`: a count or `auto` (the default).
    pub worker_processes: Option<WorkerProcesses>,
    /// `pid` file path; nginx's default when absent.
    pub pid: Option<String>,
    /// `error_log` arguments, e.g. `/var/log/nginx/error.log warn`.
    pub error_log: Option<String>,
    /// `access_log` arguments, e.g. `off` or a path.
    pub access_log: Option<String>,
    /// Protocols clients use; each gets a listener. Default `[http]`.
    pub forwarded_protocols: Vec<Protocol>,
    /// Where the listeners listen.
    pub listen: Listen,
    /// Certificate and key for `https`.
    pub tls: Option<Tls>,
    /// Proxy timeouts applied to every backend.
    pub proxy: Proxy,
    /// The `ha_api` location, when wanted.
    pub api: Option<Api>,
    /// Backend that takes every request no `hosts` entry claims, or one
    /// per entry of `forwarded_protocols`. May be left out when there is
    /// exactly one backend.
    pub default_backend: Option<DefaultBackend>,
    /// Backends by name (the name becomes the nginx upstream's name): those
    /// under `backends:`, at the top level, and the short form's.
    pub backends: BTreeMap<String, Backend>,
    /// Where each backend stands in the file (`backends.web`,
    /// `http-backend`, or empty for the short form's top-level `servers`),
    /// for messages; a name missing here is under `backends:`.
    pub paths: BTreeMap<String, String>,
}

/// Name of the backend a bare top-level `servers:` list forms.
pub const SHORT_BACKEND: &str = "backend";

/// `default_backend`: one name, or a list paired with
/// `forwarded_protocols` by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultBackend {
    /// `default_backend: web`
    One(String),
    /// `default_backend: [http-backend, https-backend]`
    PerProtocol(Vec<String>),
}

struct DefaultBackendVisitor;

impl<'de> de::Visitor<'de> for DefaultBackendVisitor {
    type Value = DefaultBackend;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a backend name or a list of them, one per forwarded protocol")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DefaultBackend, E> {
        Ok(DefaultBackend::One(v.to_owned()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<DefaultBackend, A::Error> {
        let mut names = Vec::new();
        while let Some(n) = seq.next_element::<String>()? {
            names.push(n);
        }
        Ok(DefaultBackend::PerProtocol(names))
    }
}

impl<'de> Deserialize<'de> for DefaultBackend {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DefaultBackendVisitor)
    }
}

/// The top-level settings, in the order `unknown field` errors list them.
const SETTINGS: &[&str] = &[
    "reload",
    "module",
    "worker_processes",
    "pid",
    "error_log",
    "access_log",
    "forwarded_protocols",
    "listen",
    "tls",
    "proxy",
    "api",
    "default_backend",
    "backends",
    "servers",
    "connections",
    "or a backend (a mapping with servers)",
];

/// Reads the top level with `backend_keys` (from [`top_level_backends`])
/// taken as backends; any other key that is not a setting is an unknown
/// field, at its line and column.
struct ConfigSeed<'a> {
    backend_keys: &'a BTreeSet<String>,
}

impl<'de> de::DeserializeSeed<'de> for ConfigSeed<'_> {
    type Value = Config;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Config, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> de::Visitor<'de> for ConfigSeed<'_> {
    type Value = Config;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of settings and backends")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Config, A::Error> {
        use de::Error as _;
        let mut c = Config {
            forwarded_protocols: default_protocols(),
            ..Config::default()
        };
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut under: Option<BTreeMap<String, Backend>> = None;
        let mut top: Vec<(String, Backend)> = Vec::new();
        let mut short_servers: Option<Vec<ServerEntry>> = None;
        let mut short_connections: Option<u32> = None;
        while let Some(key) = map.next_key::<String>()? {
            let setting = SETTINGS[..SETTINGS.len() - 1].contains(&key.as_str());
            if setting && !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("duplicate field `{key}`")));
            }
            match key.as_str() {
                "reload" => c.reload = map.next_value()?,
                "module" => c.module = map.next_value()?,
                "worker_processes" => c.worker_processes = map.next_value()?,
                "pid" => c.pid = map.next_value()?,
                "error_log" => c.error_log = map.next_value()?,
                "access_log" => c.access_log = map.next_value()?,
                "forwarded_protocols" => c.forwarded_protocols = map.next_value()?,
                "listen" => c.listen = map.next_value()?,
                "tls" => c.tls = map.next_value()?,
                "proxy" => c.proxy = map.next_value()?,
                "api" => c.api = map.next_value()?,
                "default_backend" => c.default_backend = map.next_value()?,
                "backends" => under = Some(map.next_value()?),
                "servers" => short_servers = Some(map.next_value()?),
                "connections" => short_connections = map.next_value()?,
                k if self.backend_keys.contains(k) => {
                    let b: Backend = map.next_value()?;
                    top.push((key, b));
                }
                k => return Err(A::Error::unknown_field(k, SETTINGS)),
            }
        }
        let dup = |name: &str, path: String, c: &mut Config, b: Backend| {
            if c.backends.insert(name.to_owned(), b).is_some() {
                return Err(A::Error::custom(format!(
                    "backend {name} is defined twice (at the top level and under backends)"
                )));
            }
            c.paths.insert(name.to_owned(), path);
            Ok(())
        };
        for (name, b) in under.unwrap_or_default() {
            let path = format!("backends.{name}");
            dup(&name, path, &mut c, b)?;
        }
        for (name, b) in top {
            let path = name.clone();
            dup(&name, path, &mut c, b)?;
        }
        match short_servers {
            Some(servers) => {
                let b = Backend {
                    servers,
                    connections: short_connections,
                    ..Backend::default()
                };
                dup(SHORT_BACKEND, String::new(), &mut c, b)?;
            }
            None if short_connections.is_some() => {
                return Err(A::Error::custom(
                    "connections: at the top level it goes with a top-level servers list \
                     (a backend's connections go inside the backend)",
                ))
            }
            None => {}
        }
        Ok(c)
    }
}

/// The first pass of [`parse`]: the top-level keys that name backends,
/// i.e. that are not settings and hold a mapping with a `servers` key.
/// A file the first pass cannot read (bad YAML) is its error; a repeated
/// key is let by here and reported by the second pass with its position.
pub fn top_level_backends(text: &str) -> Result<BTreeSet<String>, serde_saphyr::Error> {
    struct Top;
    struct HasServers;
    struct KeyName;

    impl<'de> de::Visitor<'de> for KeyName {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
            while s.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            while m.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    struct Key(Option<String>);
    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(KeyName).map(Key)
        }
    }

    impl<'de> de::Visitor<'de> for HasServers {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("anything")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<bool, A::Error> {
            while s.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(false)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(Key(k)) = m.next_key::<Key>()? {
                found |= k.as_deref() == Some("servers");
                m.next_value::<de::IgnoredAny>()?;
            }
            Ok(found)
        }
    }

    struct Servers(bool);
    impl<'de> Deserialize<'de> for Servers {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(HasServers).map(Servers)
        }
    }

    impl<'de> de::Visitor<'de> for Top {
        type Value = BTreeSet<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut keys = BTreeSet::new();
            while let Some(Key(k)) = m.next_key::<Key>()? {
                let Servers(s) = m.next_value::<Servers>()?;
                if let (Some(k), true) = (k, s) {
                    if !SETTINGS.contains(&k.as_str()) {
                        keys.insert(k);
                    }
                }
            }
            Ok(keys)
        }
    }

    struct TopKeys(BTreeSet<String>);
    impl<'de> Deserialize<'de> for TopKeys {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(Top).map(TopKeys)
        }
    }

    // A repeated key is the second pass's error, reported with its
    // position; here it must not hide the backends.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::FirstWins,
    };
    serde_saphyr::from_str_with_options::<TopKeys>(text, options).map(|t| t.0)
}

fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Http]
}

/// `worker_processes auto` or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProcesses {
    /// A fixed number of workers.
    Count(u32),
    /// The word `auto`.
    Auto(Auto),
}

/// The literal `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auto {
    /// One worker per core.
    Auto,
}

/// A protocol clients speak to nginx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS (needs `tls`).
    Https,
}

impl Protocol {
    /// The protocol's name in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// Listen addresses of the two protocols.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Port or `address:port` of the http listener (default 80).
    #[serde(default = "default_http")]
    pub http: ListenAddr,
    /// Port or `address:port` of the https listener (default 443).
    #[serde(default = "default_https")]
    pub https: ListenAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: default_http(),
            https: default_https(),
        }
    }
}

fn default_http() -> ListenAddr {
    ListenAddr::Port(80)
}

fn default_https() -> ListenAddr {
    ListenAddr::Port(443)
}

/// What a `listen` directive takes: a port, or `address:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A port on every address.
    Port(u16),
    /// `address:port`, e.g. `127.0.0.1:8080` or `[::1]:8080`.
    Address(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Port(p) => write!(f, "{p}"),
            ListenAddr::Address(a) => f.write_str(a),
        }
    }
}

/// Certificate and key files for the https listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate (chain) path: `ssl_certificate`.
    pub certificate: String,
    /// PEM private key path: `ssl_certificate_key`.
    pub key: String,
}

/// Proxy settings common to all backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// `proxy_connect_timeout` (nginx time, e.g. `2s`); nginx's default
    /// (60s) when absent.
    #[serde(default)]
    pub connect_timeout: Option<String>,
    /// `proxy_read_timeout`; nginx's default (60s) when absent.
    #[serde(default)]
    pub read_timeout: Option<String>,
    /// `proxy_next_upstream_tries`; 0 or absent: unlimited.
    #[serde(default)]
    pub next_upstream_tries: Option<u32>,
}

/// The `ha_api` location in the default server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Location path (default `/api/`).
    #[serde(default = "default_api_location")]
    pub location: String,
    /// `ha_api write=on` (default false: read only).
    #[serde(default)]
    pub write: bool,
    /// Addresses allowed (`allow` lines; everything else is denied).
    /// Default: `127.0.0.1` and `::1`.
    #[serde(default = "default_api_allow")]
    pub allow: Vec<String>,
}

fn default_api_location() -> String {
    "/api/".to_owned()
}

fn default_api_allow() -> Vec<String> {
    vec!["127.0.0.1".to_owned(), "::1".to_owned()]
}

/// The balancing policy of a backend (`ha_balance`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Smooth weighted round robin (the default).
    #[default]
    RoundRobin,
    /// Fewest in-flight requests per weight.
    LeastConn,
    /// Power of two choices.
    P2c,
    /// Weighted random.
    Random,
    /// Peak-EWMA latency.
    Ewma,
    /// By a hashed key (needs `key`).
    Hash,
}

impl Policy {
    /// The policy's name in `ha_balance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastConn => "least_conn",
            Policy::P2c => "p2c",
            Policy::Random => "random",
            Policy::Ewma => "ewma",
            Policy::Hash => "hash",
        }
    }

    /// Whether nginx allows `backup` servers with this policy.
    pub fn allows_backup(self) -> bool {
        matches!(self, Policy::RoundRobin | Policy::LeastConn)
    }
}

/// How `hash` maps keys to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashMethod {
    /// nginx's ketama ring (`hash KEY consistent`).
    Consistent,
    /// A Maglev table.
    Maglev,
}

/// One backend: an nginx upstream and, through `hosts`, its routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Balancing policy (default `round_robin`).
    #[serde(default)]
    pub policy: Policy,
    /// `hash` only: the key, e.g. `$remote_addr` or `$request_uri`.
    #[serde(default)]
    pub key: Option<String>,
    /// `hash` only: `consistent` or `maglev`; absent: nginx's plain hash.
    #[serde(default)]
    pub method: Option<HashMethod>,
    /// `hash` with `method` only: bounded-load percentage (>= 100).
    #[serde(default)]
    pub balance_factor: Option<u32>,
    /// `round_robin`, `least_conn`, `hash`: the schedule entries weight
    /// changes at run time may always reach (1 to 4,194,304).
    #[serde(default)]
    pub schedule_room: Option<u32>,
    /// `ewma` only: the decay time (nginx time, e.g. `10s`).
    #[serde(default)]
    pub decay: Option<String>,
    /// Default `max_conns` of the servers (0 or absent: unlimited).
    #[serde(default)]
    pub connections: Option<u32>,
    /// Default `max_fails` of the servers.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// Default `fail_timeout` of the servers (nginx time).
    #[serde(default)]
    pub fail_timeout: Option<String>,
    /// `server_name` values routed to this backend.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The servers, in order (their position is the API's server id).
    pub servers: Vec<ServerEntry>,
    /// Proxy to the servers over TLS (`proxy_pass https://`, SNI on);
    /// absent: when every server's port is 443.
    #[serde(default)]
    pub https: Option<bool>,
    /// Session persistence: `ha_sticky`.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// Server address → route: one `ha_route` line each (needs `sticky`).
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    /// Requests wait for a server instead of failing: `ha_queue`.
    #[serde(default)]
    pub queue: Option<QueueEntry>,
}

/// `ha_queue NUMBER [timeout=TIME]`, written as the number alone or as a
/// mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEntry {
    /// `queue: 500`
    Number(u32),
    /// `queue: { number: 500, timeout: 30s }`
    Full(Queue),
}

impl QueueEntry {
    /// The queue with every field, a bare number having no timeout.
    pub fn to_queue(&self) -> Queue {
        match self {
            QueueEntry::Number(n) => Queue {
                number: *n,
                timeout: None,
            },
            QueueEntry::Full(q) => q.clone(),
        }
    }
}

/// The `ha_queue` line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Requests that may wait, the workers' together (1 to [`MAX_QUEUE`]).
    pub number: u32,
    /// `timeout=`: the longest wait (nginx time, 1ms to 24d; module's
    /// default 60s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Largest `ha_queue` number the module accepts (`HAB_QUEUE_MAX`).
pub const MAX_QUEUE: u32 = 262_144;

/// Longest `ha_queue` timeout the module accepts, in ms (2^31 - 1, about
/// 24 days and 20 hours).
pub const MAX_QUEUE_TIMEOUT_MS: u64 = 0x7fff_ffff;

/// `ha_sticky`: exactly one of `cookie`, `route`, `learn`; the cookie
/// attributes go with `cookie` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// `ha_sticky cookie NAME`: the cookie's name.
    #[serde(default)]
    pub cookie: Option<String>,
    /// `ha_sticky route $a $b ...`: variables naming a server's route.
    #[serde(default)]
    pub route: Option<Vec<String>>,
    /// `ha_sticky learn ...`: sessions learnt from responses.
    #[serde(default)]
    pub learn: Option<Learn>,
    /// `cookie` only: `expires=` (nginx time in seconds, or `max`).
    #[serde(default)]
    pub expires: Option<String>,
    /// `cookie` only: `domain=`.
    #[serde(default)]
    pub domain: Option<String>,
    /// `cookie` only: `path=`.
    #[serde(default)]
    pub path: Option<String>,
    /// `cookie` only: `httponly`.
    #[serde(default)]
    pub httponly: bool,
    /// `cookie` only: `secure`.
    #[serde(default)]
    pub secure: bool,
    /// `cookie` only: `samesite=`: `strict`, `lax` or `none`.
    #[serde(default)]
    pub samesite: Option<String>,
}

/// `ha_sticky learn create=$v lookup=$v zone=NAME:SIZE [timeout=T] [header]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learn {
    /// The variable that starts a session (e.g. `$upstream_cookie_sid`).
    pub create: String,
    /// The variable that names a session (e.g. `$cookie_sid`).
    pub lookup: String,
    /// `NAME:SIZE`, e.g. `sessions:1m` (at least 32k, 8 pages).
    pub zone: String,
    /// Time an unused session is kept (nginx time; module's default 10m).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Learn when the response header is sent, not when the request ends.
    #[serde(default)]
    pub header: bool,
}

/// The smallest learn zone nginx accepts: 8 pages of 4 KiB.
pub const MIN_LEARN_ZONE: u64 = 8 * 4096;

/// Longest learn `timeout` the module accepts, in ms (2^31, about 24 days).
pub const MAX_LEARN_TIMEOUT_MS: u64 = 1 << 31;

/// Longest route (`ha_route`) the module accepts.
pub const MAX_ROUTE: usize = 32;

/// A server written as a bare address or as a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEntry {
    /// `10.0.0.1:8080`
    Address(String),
    /// `{ address: 10.0.0.1:8080, weight: 5, ... }`
    Full(Server),
}

impl ServerEntry {
    /// The server with every field, a bare address having none set.
    pub fn to_server(&self) -> Server {
        match self {
            ServerEntry::Address(a) => Server {
                address: a.clone(),
                ..Server::default()
            },
            ServerEntry::Full(s) => s.clone(),
        }
    }
}

/// One `server` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `host:port`, `ip:port` or `unix:/path`.
    pub address: String,
    /// `weight` (1..=1000000; default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// `max_conns`; overrides the backend's `connections`.
    #[serde(default)]
    pub connections: Option<u32>,
    /// `max_fails`; overrides the backend's.
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// `fail_timeout`; overrides the backend's.
    #[serde(default)]
    pub fail_timeout: Option<String>,
    /// `backup`: used only when no primary server is eligible.
    #[serde(default)]
    pub backup: bool,
    /// `down`: never used.
    #[serde(default)]
    pub down: bool,
}

// Hand-written deserializers for the "scalar or ..." fields: serde's
// `untagged` would report only "data did not match any variant", while
// these keep the inner error (and its position) and say what is expected.

struct ServerEntryVisitor;

impl<'de> de::Visitor<'de> for ServerEntryVisitor {
    type Value = ServerEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address (host:port) or a mapping with address, weight, connections, ...")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerEntry, E> {
        Ok(ServerEntry::Address(v.to_owned()))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ServerEntry, A::Error> {
        Server::deserialize(de::value::MapAccessDeserializer::new(map)).map(ServerEntry::Full)
    }
}

impl<'de> Deserialize<'de> for ServerEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServerEntryVisitor)
    }
}

struct QueueVisitor;

impl<'de> de::Visitor<'de> for QueueVisitor {
    type Value = QueueEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of waiting requests or a mapping with number and timeout")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<QueueEntry, E> {
        u32::try_from(v)
            .map(QueueEntry::Number)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<QueueEntry, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<QueueEntry, A::Error> {
        Queue::deserialize(de::value::MapAccessDeserializer::new(map)).map(QueueEntry::Full)
    }
}

impl<'de> Deserialize<'de> for QueueEntry {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QueueVisitor)
    }
}

struct WorkersVisitor;

impl de::Visitor<'_> for WorkersVisitor {
    type Value = WorkerProcesses;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of worker processes or auto")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerProcesses, E> {
        u32::try_from(v)
            .map(WorkerProcesses::Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerProcesses, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerProcesses, E> {
        match v {
            "auto" => Ok(WorkerProcesses::Auto(Auto::Auto)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerProcesses {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WorkersVisitor)
    }
}

struct ListenVisitor;

impl de::Visitor<'_> for ListenVisitor {
    type Value = ListenAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port (1-65535) or address:port")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ListenAddr, E> {
        u16::try_from(v)
            .map(ListenAddr::Port)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ListenAddr, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddr, E> {
        Ok(ListenAddr::Address(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListenVisitor)
    }
}

/// A problem with the YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Syntax or type error at a place in the text.
    Yaml {
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
        /// What the parser said.
        message: String,
    },
    /// The file parses but means something impossible.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Yaml {
                line: Some(l),
                column: Some(c),
                message,
            } => write!(f, "line {l} column {c}: {message}"),
            ConfigError::Yaml {
                line: Some(l),
                message,
                ..
            } => write!(f, "line {l}: {message}"),
            ConfigError::Yaml { message, .. } => f.write_str(message),
            ConfigError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses and validates YAML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    // A file the first pass cannot read is reported as the first pass
    // saw it, if the second fails too: read without its backends, the
    // second pass would name the first backend an unknown field, before
    // the syntax error it never reaches.
    let (keys, first_error) = match top_level_backends(text) {
        Ok(keys) => (keys, None),
        Err(e) => (BTreeSet::new(), Some(e)),
    };
    let config = serde_saphyr::with_deserializer_from_str(text, |d| {
        de::DeserializeSeed::deserialize(
            ConfigSeed {
                backend_keys: &keys,
            },
            d,
        )
    })
    .map_err(|e| yaml_error(first_error.as_ref().unwrap_or(&e)))?;
    config.validate()?;
    Ok(config)
}

/// Turns a serde-saphyr error into one line with its position. The
/// crate's `Display` may draw a multi-line source snippet; the position is
/// taken from [`serde_saphyr::Error::location`] so it is always printed the
/// same way, and the message is the first line of the crate's text without
/// the position it repeats there.
fn yaml_error(e: &serde_saphyr::Error) -> ConfigError {
    let loc = e.location();
    let text = e.to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML");
    // The crate writes "error: line L column C: MESSAGE"; keep MESSAGE
    // only, the position is printed from `loc`.
    let mut message = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(l) = loc {
        let prefix = format!("line {} column {}: ", l.line(), l.column());
        message = message.strip_prefix(prefix.as_str()).unwrap_or(message);
    }
    let message = message.to_owned();
    ConfigError::Yaml {
        line: loc.map(|l| l.line()),
        column: loc.map(|l| l.column()),
        message,
    }
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

/// Whether `name` can be an nginx upstream name (and a `proxy_pass` host).
pub fn valid_upstream_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Whether `s` can be written as one nginx configuration word: not empty,
/// no whitespace, quotes, braces, `;`, `#` or backslash.
fn plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(c, ';' | '{' | '}' | '"' | '\'' | '#' | '\\')
        })
}

/// Whether `s` can go inside double quotes in nginx configuration.
fn quotable(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| !c.is_control() && c != '"' && c != '\\')
}

/// Whether `s` is an nginx time: one or more `NUMBER[UNIT]` groups with
/// units `ms s m h d w M y` (e.g. `500ms`, `10s`, `1m30s`, `30`).
pub fn valid_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
        if b[i..].starts_with(b"ms") {
            i += 2;
        } else if i < b.len() && matches!(b[i], b's' | b'm' | b'h' | b'd' | b'w' | b'M' | b'y') {
            i += 1;
        }
    }
    true
}

/// Milliseconds of an nginx time as `ngx_parse_time(s, 0)` reads one
/// (the module's times in ms: `ha_queue timeout=`, `ha_sticky learn
/// timeout=`): a bare number is seconds; units from the largest to
/// the smallest, each at most once (`1m30s`, not `30s1m`); `w d h m s ms`
/// only (`y` and `M` are refused there); at most `i64::MAX`. `None` when
/// nginx would refuse it, or when it is not a [`valid_time`] word.
pub fn time_ms(s: &str) -> Option<u64> {
    if !valid_time(s) {
        return None;
    }
    let b = s.as_bytes();
    // `rank` orders the units as nginx's `step` does; a trailing bare
    // number (seconds) may follow any unit, as in nginx.
    let (mut i, mut total, mut last_rank) = (0, 0i64, 0u8);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[start..i].parse().ok()?;
        let (rank, unit): (u8, i64) = if b[i..].starts_with(b"ms") {
            (6, 1)
        } else {
            match b.get(i) {
                None => (0, 1000),
                Some(b'w') => (1, 7 * 86_400_000),
                Some(b'd') => (2, 86_400_000),
                Some(b'h') => (3, 3_600_000),
                Some(b'm') => (4, 60_000),
                Some(b's') => (5, 1000),
                _ => return None,
            }
        };
        i += match rank {
            0 => 0,
            6 => 2,
            _ => 1,
        };
        if rank != 0 {
            if rank <= last_rank {
                return None;
            }
            last_rank = rank;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    u64::try_from(total).ok()
}

/// Bytes of an nginx size (`ngx_parse_size`: digits, then `k`, `m` or
/// `g` in either case, or nothing); `None` when it is not one.
pub fn size_bytes(s: &str) -> Option<u64> {
    let (digits, scale) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

/// Whether `s` is an nginx variable as `ha_sticky` takes it: `$` and a
/// name of letters, digits and `_`.
pub fn valid_variable(s: &str) -> bool {
    s.strip_prefix('$')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// Whether `s` is a cookie name nginx accepts and can be written as a
/// plain configuration word: printable ASCII without `=`, `;`, `,`.
fn valid_cookie_name(s: &str) -> bool {
    plain_word(s)
        && s.bytes()
            .all(|c| c > b' ' && c < 0x7f && !matches!(c, b'=' | b';' | b','))
}

/// Whether `s` is a route `ha_route` accepts (at most [`MAX_ROUTE`]
/// characters of a cookie value) and a plain configuration word.
fn valid_route(s: &str) -> bool {
    s.len() <= MAX_ROUTE
        && plain_word(s)
        && s.bytes()
            .all(|c| c > b' ' && c < 0x7f && !matches!(c, b';' | b','))
}

fn check_variable(field: &str, v: &str) -> Result<(), ConfigError> {
    if valid_variable(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field}: {v:?} is not a variable ('$' then letters, digits or '_', e.g. $cookie_route)"
        )))
    }
}

/// Certificate the https listener uses when the file has no `tls`:
/// Debian's self-signed pair (package `ssl-cert`).
pub const SNAKEOIL_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Key of [`SNAKEOIL_CERT`].
pub const SNAKEOIL_KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

impl Config {
    /// The backend that takes unclaimed requests of the first protocol
    /// (validated to exist).
    pub fn default_backend_name(&self) -> &str {
        self.default_backends()
            .first()
            .map_or("", |&(_, name)| name)
    }

    /// Each protocol's default backend, http before https: the one
    /// `default_backend`, the list's entry at the protocol's position in
    /// `forwarded_protocols`, or the only backend.
    pub fn default_backends(&self) -> Vec<(Protocol, &str)> {
        let only = self.backends.keys().next().map_or("", String::as_str);
        let mut pairs: Vec<(Protocol, &str)> = match &self.default_backend {
            Some(DefaultBackend::One(n)) => self
                .forwarded_protocols
                .iter()
                .map(|&p| (p, n.as_str()))
                .collect(),
            Some(DefaultBackend::PerProtocol(list)) => self
                .forwarded_protocols
                .iter()
                .zip(list)
                .map(|(&p, n)| (p, n.as_str()))
                .collect(),
            None => self
                .forwarded_protocols
                .iter()
                .map(|&p| (p, only))
                .collect(),
        };
        pairs.sort();
        pairs.dedup_by_key(|&mut (p, _)| p);
        pairs
    }

    /// Path of a backend in the file, for messages: `backends.NAME`,
    /// `NAME` at the top level, empty for the short form.
    pub fn path_of<'a>(&'a self, name: &str) -> std::borrow::Cow<'a, str> {
        match self.paths.get(name) {
            Some(p) => p.as_str().into(),
            None => format!("backends.{name}").into(),
        }
    }

    /// Certificate and key of the https listener: `tls`, else Debian's
    /// snakeoil pair.
    pub fn tls_files(&self) -> (&str, &str) {
        match &self.tls {
            Some(t) => (&t.certificate, &t.key),
            None => (SNAKEOIL_CERT, SNAKEOIL_KEY),
        }
    }

    /// The protocols, each once, http before https.
    pub fn protocols(&self) -> Vec<Protocol> {
        let mut p = self.forwarded_protocols.clone();
        p.sort();
        p.dedup();
        p
    }

    /// Checks everything types cannot; the error names backend and field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(invalid(
                "backends: at least one backend is required (under backends:, at the top \
                 level as NAME: { servers: [...] }, or a top-level servers: list)"
                    .into(),
            ));
        }
        let names = || self.backends.keys().cloned().collect::<Vec<_>>().join(", ");
        match &self.default_backend {
            Some(DefaultBackend::One(d)) if !self.backends.contains_key(d) => {
                return Err(invalid(format!(
                    "default_backend: {d:?} is not a backend (backends: {})",
                    names()
                )))
            }
            Some(DefaultBackend::One(_)) => {}
            Some(DefaultBackend::PerProtocol(list)) => {
                if list.len() != self.forwarded_protocols.len() {
                    return Err(invalid(format!(
                        "default_backend: {} backends for {} forwarded_protocols (the list \
                         pairs with forwarded_protocols by position)",
                        list.len(),
                        self.forwarded_protocols.len()
                    )));
                }
                for (i, d) in list.iter().enumerate() {
                    if !self.backends.contains_key(d) {
                        return Err(invalid(format!(
                            "default_backend[{i}]: {d:?} is not a backend (backends: {})",
                            names()
                        )));
                    }
                }
                for (i, (p, d)) in self.forwarded_protocols.iter().zip(list).enumerate() {
                    let clash = self.forwarded_protocols[..i]
                        .iter()
                        .zip(list)
                        .find(|&(q, e)| q == p && e != d);
                    if let Some((_, e)) = clash {
                        return Err(invalid(format!(
                            "default_backend[{i}]: {} already goes to {e:?}, not {d:?}",
                            p.as_str()
                        )));
                    }
                }
            }
            None if self.backends.len() > 1 => {
                return Err(invalid(
                    "default_backend: required when there is more than one backend".into(),
                ))
            }
            None => {}
        }
        if self.forwarded_protocols.is_empty() {
            return Err(invalid(
                "forwarded_protocols: at least one of http, https is required".into(),
            ));
        }
        let protocols = self.protocols();
        check_listen("listen.http", &self.listen.http)?;
        check_listen("listen.https", &self.listen.https)?;
        if protocols.len() == 2 && self.listen.http == self.listen.https {
            return Err(invalid(format!(
                "listen: http and https both listen on {}",
                self.listen.http
            )));
        }
        if let Some(tls) = &self.tls {
            check_word("tls.certificate", &tls.certificate)?;
            check_word("tls.key", &tls.key)?;
        }
        if let Some(m) = &self.module {
            check_word("module", m)?;
        }
        if let Some(WorkerProcesses::Count(0)) = self.worker_processes {
            return Err(invalid(
                "worker_processes: must be at least 1 (or auto)".into(),
            ));
        }
        if let Some(p) = &self.pid {
            check_word("pid", p)?;
        }
        for (field, v) in [
            ("error_log", &self.error_log),
            ("access_log", &self.access_log),
        ] {
            if let Some(v) = v {
                if v.split_whitespace().next().is_none() || !v.split_whitespace().all(plain_word) {
                    return Err(invalid(format!("{field}: {v:?} is not a valid value")));
                }
            }
        }
        for (field, t) in [
            ("proxy.connect_timeout", &self.proxy.connect_timeout),
            ("proxy.read_timeout", &self.proxy.read_timeout),
        ] {
            check_time(field, t.as_deref())?;
        }
        if let Some(api) = &self.api {
            if !api.location.starts_with('/') || !plain_word(&api.location) {
                return Err(invalid(format!(
                    "api.location: {:?} must be a path starting with /",
                    api.location
                )));
            }
            for a in &api.allow {
                check_word("api.allow", a)?;
            }
        }
        let mut hosts_seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut zones_seen: BTreeMap<&str, &str> = BTreeMap::new();
        let defaults: BTreeSet<&str> = self
            .default_backends()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        for (name, b) in &self.backends {
            let path = self.path_of(name);
            if !valid_upstream_name(name) {
                return Err(invalid(format!(
                    "backends: {name:?} is not a valid upstream name \
                     (letters, digits, '_', '-', '.', starting with a letter or digit)"
                )));
            }
            b.validate(&path)?;
            if let Some(l) = b.sticky.as_ref().and_then(|s| s.learn.as_ref()) {
                let zone = l.zone.split(':').next().unwrap_or_default();
                if let Some(other) = zones_seen.insert(zone, name) {
                    return Err(invalid(format!(
                        "{path}.sticky.learn.zone: {:?}: zone {zone} is already \
                         used by backend {other} (one zone per backend)",
                        l.zone
                    )));
                }
            }
            for h in &b.hosts {
                if let Some(other) = hosts_seen.insert(h, name) {
                    return Err(invalid(format!(
                        "{path}.hosts: {h:?} is already routed to backend {other}"
                    )));
                }
            }
            if b.hosts.is_empty() && !defaults.contains(name.as_str()) {
                return Err(invalid(format!(
                    "{path}: unreachable: it is not default_backend and has no hosts"
                )));
            }
        }
        Ok(())
    }
}

fn check_word(field: &str, v: &str) -> Result<(), ConfigError> {
    if plain_word(v) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field}: {v:?} must be one word without spaces, quotes, braces, ';' or '#'"
        )))
    }
}

fn check_time(field: &str, v: Option<&str>) -> Result<(), ConfigError> {
    match v {
        Some(t) if !valid_time(t) => Err(invalid(format!(
            "{field}: {t:?} is not an nginx time (e.g. 500ms, 10s, 1m30s)"
        ))),
        _ => Ok(()),
    }
}

fn check_listen(field: &str, l: &ListenAddr) -> Result<(), ConfigError> {
    match l {
        ListenAddr::Port(0) => Err(invalid(format!("{field}: port 0 is not allowed"))),
        ListenAddr::Port(_) => Ok(()),
        ListenAddr::Address(a) => check_word(field, a),
    }
}

/// Host and port of a server address (`host:port`, `[v6]:port`); `None`
/// for `unix:` paths and addresses without a port.
pub fn host_port(address: &str) -> Option<(&str, &str)> {
    if address.starts_with("unix:") {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    if host.contains(':') && !host.starts_with('[') {
        return None; // a bare IPv6 address, no port
    }
    Some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

impl Backend {
    /// Whether requests go to the servers over TLS: `https`, else when
    /// every server's port is 443.
    pub fn over_tls(&self) -> bool {
        self.https.unwrap_or_else(|| {
            self.servers
                .iter()
                .all(|e| host_port(&e.to_server().address).is_some_and(|(_, p)| p == "443"))
        })
    }

    /// The TLS server name (SNI) for `proxy_ssl_name`: the servers' host
    /// when they share one, else the client's `$host`.
    pub fn tls_name(&self) -> String {
        let hosts: BTreeSet<String> = self
            .servers
            .iter()
            .map(|e| {
                let a = e.to_server().address;
                host_port(&a).map_or(a.clone(), |(h, _)| h.to_owned())
            })
            .collect();
        match hosts.len() {
            1 => hosts.into_iter().next().unwrap_or_default(),
            _ => "$host".to_owned(),
        }
    }

    /// `path` is where the backend stands in the file (`backends.web`,
    /// `http-backend`, or empty for the top-level `servers` list).
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let f = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        if self.servers.is_empty() {
            return Err(invalid(format!(
                "{}: at least one server is required",
                f("servers")
            )));
        }
        match (self.policy, &self.key) {
            (Policy::Hash, None) => {
                return Err(invalid(format!(
                    "{}: policy hash needs a key (e.g. key: $remote_addr)",
                    f("key")
                )))
            }
            (Policy::Hash, Some(k)) if !quotable(k) => {
                return Err(invalid(format!(
                    "{}: {k:?} cannot be written in nginx configuration",
                    f("key")
                )))
            }
            (Policy::Hash, Some(_)) => {}
            (p, Some(_)) => {
                return Err(invalid(format!(
                    "{}: only policy hash takes a key (policy is {})",
                    f("key"),
                    p.as_str()
                )))
            }
            (_, None) => {}
        }
        if self.policy != Policy::Hash && self.method.is_some() {
            return Err(invalid(format!(
                "{}: only policy hash takes a method",
                f("method")
            )));
        }
        if let Some(bf) = self.balance_factor {
            if self.method.is_none() {
                return Err(invalid(format!(
                    "{}: needs policy hash with method consistent or maglev",
                    f("balance_factor")
                )));
            }
            if bf < 100 {
                return Err(invalid(format!(
                    "{}: {bf} is below 100 (a percentage of the mean load)",
                    f("balance_factor")
                )));
            }
        }
        if let Some(n) = self.schedule_room {
            if !matches!(
                self.policy,
                Policy::RoundRobin | Policy::LeastConn | Policy::Hash
            ) {
                return Err(invalid(format!(
                    "{}: only policies round_robin, least_conn and hash walk a schedule \
                     (policy is {})",
                    f("schedule_room"),
                    self.policy.as_str()
                )));
            }
            if !(1..=4_194_304).contains(&n) {
                return Err(invalid(format!(
                    "{}: {n} is not from 1 to 4194304 entries",
                    f("schedule_room")
                )));
            }
        }
        if self.decay.is_some() && self.policy != Policy::Ewma {
            return Err(invalid(format!(
                "{}: only policy ewma takes a decay",
                f("decay")
            )));
        }
        check_time(&f("decay"), self.decay.as_deref())?;
        check_time(&f("fail_timeout"), self.fail_timeout.as_deref())?;
        for h in &self.hosts {
            check_word(&f("hosts"), h)?;
        }
        for (i, entry) in self.servers.iter().enumerate() {
            let s = entry.to_server();
            let sf = |field: &str| f(&format!("servers[{i}].{field}"));
            if s.address.trim().is_empty() {
                return Err(invalid(format!("{}: must not be empty", sf("address"))));
            }
            if let Some((_, port)) = host_port(&s.address) {
                if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(invalid(format!(
                        "{}: port {port:?} of {:?} is not from 1 to 65535",
                        sf("address"),
                        s.address
                    )));
                }
            }
            check_word(&sf("address"), &s.address)?;
            if let Some(w) = s.weight {
                if !(1..=MAX_WEIGHT).contains(&w) {
                    return Err(invalid(format!(
                        "{}: {w} is out of range 1..={MAX_WEIGHT} ({})",
                        sf("weight"),
                        s.address
                    )));
                }
            }
            check_time(&sf("fail_timeout"), s.fail_timeout.as_deref())?;
            if s.backup && !self.policy.allows_backup() {
                return Err(invalid(format!(
                    "{}: backup servers need policy round_robin or least_conn (policy is {})",
                    sf("backup"),
                    self.policy.as_str()
                )));
            }
        }
        if self.servers.iter().all(|e| e.to_server().backup) {
            return Err(invalid(format!(
                "{}: at least one server must not be a backup",
                f("servers")
            )));
        }
        match &self.sticky {
            Some(st) => st.validate(&f("sticky"))?,
            None if !self.routes.is_empty() => {
                return Err(invalid(format!(
                    "{}: routes need sticky (ha_route without ha_sticky is refused)",
                    f("routes")
                )))
            }
            None => {}
        }
        for (server, route) in &self.routes {
            let rf = f(&format!("routes[{server:?}]"));
            if !self
                .servers
                .iter()
                .any(|e| e.to_server().address == *server)
            {
                return Err(invalid(format!(
                    "{rf}: {server:?} is not one of the servers' addresses"
                )));
            }
            if route.is_empty() {
                return Err(invalid(format!("{rf}: the route must not be empty")));
            }
            if !valid_route(route) {
                return Err(invalid(format!(
                    "{rf}: {route:?} is not a route (at most {MAX_ROUTE} printable ASCII \
                     characters, no spaces, ';', ',', quotes, braces, '#' or '\\')"
                )));
            }
        }
        if let Some(q) = &self.queue {
            // As `ngx_http_upstream_ha_queue` checks them for `nginx -t`.
            let number = match q {
                QueueEntry::Number(_) => f("queue"),
                QueueEntry::Full(_) => f("queue.number"),
            };
            let q = q.to_queue();
            if !(1..=MAX_QUEUE).contains(&q.number) {
                return Err(invalid(format!(
                    "{number}: {} is not from 1 to {MAX_QUEUE} waiting requests",
                    q.number
                )));
            }
            if let Some(t) = &q.timeout {
                match time_ms(t) {
                    Some(ms) if (1..=MAX_QUEUE_TIMEOUT_MS).contains(&ms) => {}
                    _ => {
                        return Err(invalid(format!(
                            "{}: {t:?} is not an nginx time from 1ms to 24d (e.g. 500ms, 30s, 1m)",
                            f("queue.timeout")
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

impl Sticky {
    /// `path` is the YAML path of this mapping (`backends.web.sticky`).
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let f = |field: &str| format!("{path}.{field}");
        let modes: Vec<&str> = [
            ("cookie", self.cookie.is_some()),
            ("route", self.route.is_some()),
            ("learn", self.learn.is_some()),
        ]
        .into_iter()
        .filter_map(|(m, set)| set.then_some(m))
        .collect();
        if modes.len() != 1 {
            let found = if modes.is_empty() {
                "none".to_owned()
            } else {
                modes.join(", ")
            };
            return Err(invalid(format!(
                "{path}: exactly one of cookie, route, learn is required (found {found})"
            )));
        }
        if let Some(c) = &self.cookie {
            if !valid_cookie_name(c) {
                return Err(invalid(format!(
                    "{}: {c:?} is not a cookie name (printable ASCII without spaces, \
                     '=', ';', ',', quotes, braces, '#' or '\\')",
                    f("cookie")
                )));
            }
            if let Some(e) = &self.expires {
                if e != "max" && (!valid_time(e) || e.contains("ms")) {
                    return Err(invalid(format!(
                        "{}: {e:?} is not max or an nginx time in seconds (e.g. 1h, 30d)",
                        f("expires")
                    )));
                }
            }
            if let Some(d) = &self.domain {
                check_word(&f("domain"), d)?;
            }
            if let Some(p) = &self.path {
                check_word(&f("path"), p)?;
            }
            if let Some(s) = &self.samesite {
                let known = ["strict", "lax", "none"]
                    .iter()
                    .any(|k| s.eq_ignore_ascii_case(k));
                if !known {
                    return Err(invalid(format!(
                        "{}: {s:?} is not strict, lax or none",
                        f("samesite")
                    )));
                }
            }
        } else {
            let mode = modes[0];
            for (field, set) in [
                ("expires", self.expires.is_some()),
                ("domain", self.domain.is_some()),
                ("path", self.path.is_some()),
                ("httponly", self.httponly),
                ("secure", self.secure),
                ("samesite", self.samesite.is_some()),
            ] {
                if set {
                    return Err(invalid(format!(
                        "{}: only cookie takes {field} (this sticky is {mode})",
                        f(field)
                    )));
                }
            }
        }
        if let Some(vars) = &self.route {
            if vars.is_empty() {
                return Err(invalid(format!(
                    "{}: at least one variable is required (e.g. [$cookie_route])",
                    f("route")
                )));
            }
            for (i, v) in vars.iter().enumerate() {
                check_variable(&f(&format!("route[{i}]")), v)?;
            }
        }
        if let Some(l) = &self.learn {
            check_variable(&f("learn.create"), &l.create)?;
            check_variable(&f("learn.lookup"), &l.lookup)?;
            let z = &l.zone;
            let bad_zone = |why: &str| invalid(format!("{}: {z:?} {why}", f("learn.zone")));
            let Some((zname, size)) = z.split_once(':') else {
                return Err(bad_zone("has no size (NAME:SIZE, e.g. sessions:1m)"));
            };
            if zname.is_empty() || !plain_word(zname) {
                return Err(bad_zone("has no zone name (NAME:SIZE)"));
            }
            match size_bytes(size) {
                None => return Err(bad_zone("has no valid size (e.g. 1m, 64k)")),
                Some(n) if n < MIN_LEARN_ZONE => {
                    return Err(bad_zone("is too small: at least 32k (8 pages)"))
                }
                Some(_) => {}
            }
            if let Some(t) = &l.timeout {
                match time_ms(t) {
                    Some(ms) if (1..=MAX_LEARN_TIMEOUT_MS).contains(&ms) => {}
                    _ => {
                        return Err(invalid(format!(
                            "{}: {t:?} is not an nginx time from 1ms to 24d",
                            f("learn.timeout")
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = "\
reload: false
forwarded_protocols: [http, https]
listen: { http: 8080, https: \"127.0.0.1:8443\" }
tls: { certificate: /etc/ssl/x.pem, key: /etc/ssl/x.key }
module: /usr/lib/nginx/modules/ngx_http_upstream_ha_module.so
worker_processes: 4
default_backend: web
backends:
  web:
    policy: least_conn
    connections: 100
    servers:
      - 10.0.0.1:8080
      - { address: 10.0.0.2:8080, weight: 5, connections: 50, backup: true }
  api:
    policy: hash
    key: $remote_addr
    method: consistent
    hosts: [api.example.com]
    servers: [10.0.1.1:9000, 10.0.1.2:9000]
";

    #[test]
    fn server_ports_are_checked() {
        for (bad, port) in [
            ("a.example:99999", "99999"),
            ("a.example:0", "0"),
            ("a.example:http", "http"),
        ] {
            let yaml = format!("backends:\n  web:\n    servers: [\"{bad}\"]\n");
            let e = parse(&yaml).unwrap_err().to_string();
            assert!(
                e.contains(&format!("port \"{port}\"")) && e.contains("servers[0]"),
                "{e}"
            );
        }
        assert!(
            parse("backends:\n  web:\n    servers: [\"a.example:65535\", \"[::1]:80\"]\n").is_ok()
        );
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.default_backend_name(), "web");
        assert_eq!(c.protocols(), vec![Protocol::Http, Protocol::Https]);
        assert_eq!(c.listen.http, ListenAddr::Port(8080));
        assert_eq!(c.listen.https, ListenAddr::Address("127.0.0.1:8443".into()));
        assert_eq!(c.worker_processes, Some(WorkerProcesses::Count(4)));
        let web = &c.backends["web"];
        assert_eq!(web.policy, Policy::LeastConn);
        assert_eq!(web.connections, Some(100));
        assert_eq!(web.servers[0], ServerEntry::Address("10.0.0.1:8080".into()));
        let s = web.servers[1].to_server();
        assert_eq!(
            (s.address.as_str(), s.weight, s.connections, s.backup),
            ("10.0.0.2:8080", Some(5), Some(50), true)
        );
        let api = &c.backends["api"];
        assert_eq!(api.policy, Policy::Hash);
        assert_eq!(api.method, Some(HashMethod::Consistent));
        assert_eq!(api.hosts, vec!["api.example.com".to_owned()]);
    }

    #[test]
    fn defaults() {
        let c = parse("backends: { web: { servers: [127.0.0.1:1] } }").unwrap();
        assert!(!c.reload);
        assert_eq!(c.protocols(), vec![Protocol::Http]);
        assert_eq!(c.listen, Listen::default());
        assert_eq!(c.default_backend_name(), "web");
        assert_eq!(c.backends["web"].policy, Policy::RoundRobin);
        let c = parse("worker_processes: auto\nbackends: { w: { servers: [a:1] } }").unwrap();
        assert_eq!(c.worker_processes, Some(WorkerProcesses::Auto(Auto::Auto)));
    }

    fn yaml_err(text: &str) -> (Option<u64>, Option<u64>, String) {
        match parse(text) {
            Err(ConfigError::Yaml {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("want a YAML error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_field_is_an_error_with_its_position() {
        let text = "backends:\n  web:\n    servers: [a:1]\n    wieght: 3\n";
        let (line, column, message) = yaml_err(text);
        assert!(message.contains("wieght"), "{message}");
        assert_eq!(line, Some(4), "{message}");
        assert!(column.is_some());
        let shown = parse(text).unwrap_err().to_string();
        assert!(shown.starts_with("line 4 column "), "{shown}");
    }

    #[test]
    fn type_error_has_line_and_column() {
        let text = "backends:\n  web:\n    connections: lots\n    servers: [a:1]\n";
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("line 3 column 18"), "{shown}");
        let (line, column, _) = yaml_err(text);
        assert_eq!((line, column), (Some(3), Some(18)));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let shown = parse("backends:\n  web: {servers: [a:1]\n")
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("line ") && shown.contains(" column "),
            "{shown}"
        );
    }

    #[test]
    fn semantic_errors_name_backend_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "default_backend: nope\nbackends: { web: { servers: [a:1] } }",
                "default_backend: \"nope\" is not a backend (backends: web)",
            ),
            (
                "backends: { web: { servers: [a:1] }, api: { servers: [b:1], hosts: [x] } }",
                "default_backend: required",
            ),
            ("backends: {}", "at least one backend"),
            ("backends: { \"we b\": { servers: [a:1] } }", "\"we b\" is not a valid upstream name"),
            ("backends: { web: { servers: [] } }", "backends.web.servers: at least one"),
            (
                "backends: { web: { servers: [{address: \"\"}] } }",
                "backends.web.servers[0].address: must not be empty",
            ),
            (
                "backends: { web: { servers: [a:1, {address: b:1, weight: 0}] } }",
                "backends.web.servers[1].weight: 0 is out of range",
            ),
            ("backends: { web: { policy: fastest, servers: [a:1] } }", "fastest"),
            ("backends: { web: { policy: hash, servers: [a:1] } }", "backends.web.key"),
            (
                "backends: { web: { policy: p2c, servers: [a:1, {address: b:1, backup: true}] } }",
                "backends.web.servers[1].backup",
            ),
            (
                "forwarded_protocols: [https]\nbackends: { web: { servers: [a:1] } }\n\
                 listen: { https: 0 }",
                "listen.https: port 0 is not allowed",
            ),
            (
                "backends: { web: { fail_timeout: soon, servers: [a:1] } }",
                "backends.web.fail_timeout: \"soon\" is not an nginx time",
            ),
            (
                "default_backend: web\nbackends: { web: { servers: [a:1] }, api: { servers: [b:1] } }",
                "backends.api: unreachable",
            ),
            (
                "backends: { web: { servers: [\"a:1; evil\"] } }",
                "backends.web.servers[0].address",
            ),
            (
                "backends: { web: { policy: p2c, schedule_room: 1000, servers: [a:1] } }",
                "backends.web.schedule_room: only policies round_robin",
            ),
            (
                "backends: { web: { schedule_room: 0, servers: [a:1] } }",
                "backends.web.schedule_room: 0 is not from 1 to 4194304",
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
        }
    }

    /// The original design's `core-config.yaml`, verbatim (issue 23).
    pub(crate) const SEED: &str = "\
reload: true
forwarded_protocols: [\"http\", \"https\"]
default_backend: [\"http-backend\", \"https-backend\"]

http-backend:
  servers: [\"server1.example.com:80\"]
  connections: 1024

https-backend:
  servers: [\"server2.example.com:443\"]
  connections: 1024
";

    /// The design's short `config.yaml`: a bare top-level `servers` list.
    pub(crate) const SHORT: &str = "\
servers:
  - server1.example.com:80
  - server2.example.com:80
connections: 512
";

    #[test]
    fn the_seed_file_verbatim() {
        let c = parse(SEED).unwrap();
        assert!(c.reload);
        assert_eq!(
            c.backends.keys().collect::<Vec<_>>(),
            ["http-backend", "https-backend"]
        );
        assert_eq!(
            c.default_backends(),
            [
                (Protocol::Http, "http-backend"),
                (Protocol::Https, "https-backend")
            ]
        );
        let (h, s) = (&c.backends["http-backend"], &c.backends["https-backend"]);
        assert_eq!((h.connections, s.connections), (Some(1024), Some(1024)));
        assert!(!h.over_tls() && s.over_tls());
        assert_eq!(s.tls_name(), "server2.example.com");
        // No tls: Debian's snakeoil pair.
        assert_eq!(c.tls_files(), (SNAKEOIL_CERT, SNAKEOIL_KEY));
        assert_eq!(c.path_of("http-backend"), "http-backend");

        // Pairing follows forwarded_protocols, not name order.
        let c = parse(
            "forwarded_protocols: [https, http]\ndefault_backend: [b, a]\n\
             a: { servers: [x:1] }\nb: { servers: [y:1] }\n",
        )
        .unwrap();
        assert_eq!(
            c.default_backends(),
            [(Protocol::Http, "a"), (Protocol::Https, "b")]
        );
        // Top-level and backends: together; one name as before.
        let c = parse(
            "default_backend: web\nweb: { servers: [a:1] }\n\
             backends: { api: { hosts: [api], servers: [b:1] } }\n",
        )
        .unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.path_of("api"), "backends.api");
        // A :443 backend may opt out, a mixed one opt in; SNI is the
        // client's host when the servers' hosts differ.
        let c = parse("backends: { w: { servers: [\"a:443\"], https: false } }").unwrap();
        assert!(!c.backends["w"].over_tls());
        let c = parse("backends: { w: { servers: [\"a:443\", \"b:8443\"] } }").unwrap();
        assert!(!c.backends["w"].over_tls());
        assert_eq!(c.backends["w"].tls_name(), "$host");
        let c = parse("backends: { w: { servers: [\"[::1]:443\"] } }").unwrap();
        assert!(c.backends["w"].over_tls());
        assert_eq!(c.backends["w"].tls_name(), "::1");
        // https without tls renders with the snakeoil pair.
        let c =
            parse("forwarded_protocols: [https]\nbackends: { web: { servers: [a:1] } }").unwrap();
        assert_eq!(c.tls_files().0, SNAKEOIL_CERT);
    }

    #[test]
    fn the_short_file() {
        let c = parse(SHORT).unwrap();
        assert_eq!(c.backends.keys().collect::<Vec<_>>(), [SHORT_BACKEND]);
        let b = &c.backends[SHORT_BACKEND];
        assert_eq!(b.servers.len(), 2);
        assert_eq!(b.connections, Some(512));
        assert_eq!(c.default_backend_name(), SHORT_BACKEND);
        let c = parse("servers: [a:1]").unwrap();
        assert_eq!(c.backends[SHORT_BACKEND].connections, None);
        // Its messages name the top-level field.
        let got = parse("servers: [a:1, {address: b:1, weight: 0}]")
            .unwrap_err()
            .to_string();
        assert!(
            got.starts_with("servers[1].weight: 0 is out of range"),
            "{got}"
        );
    }

    #[test]
    fn seed_shape_refusals() {
        // Misspellings stay YAML errors at the key's line and column.
        for (text, line, column, key) in [
            (
                SEED.replace("reload:", "relaod:"),
                1,
                1,
                "unknown field `relaod`",
            ),
            (
                SEED.replacen("  connections", "  conections", 1),
                7,
                3,
                "unknown field `conections`",
            ),
            // A backend whose `servers` is misspelt is no backend: its name
            // is the unknown field, and the message says what a backend is.
            (
                SEED.replacen("  servers", "  sevrers", 1),
                5,
                1,
                "unknown field `http-backend`",
            ),
            (
                SEED.replace("forwarded_protocols", "forwarded_protocol"),
                2,
                1,
                "unknown field `forwarded_protocol`",
            ),
            (
                "servers: [a:1]\nconection: 3\n".to_owned(),
                2,
                1,
                "unknown field `conection`",
            ),
        ] {
            let (l, c, message) = yaml_err(&text);
            assert!(message.contains(key), "{text}: {message}");
            // Top-level misspellings list the settings and what a backend is.
            let top_level = column == 1;
            assert_eq!(
                message.contains("or a backend (a mapping with servers)"),
                top_level,
                "{message}"
            );
            assert_eq!((l, c), (Some(line), Some(column)), "{text}: {message}");
        }
        // A backend given twice: the repeated key, at its place.
        let (l, _, message) = yaml_err("web: {servers: [a:1]}\nweb: {servers: [b:1]}\n");
        assert!(message.contains("duplicate mapping key: web"), "{message}");
        assert_eq!(l, Some(2), "{message}");
        let cases: &[(&str, &str)] = &[
            (
                "default_backend: [a]\nforwarded_protocols: [http, https]\n\
                 a: { servers: [x:1] }\n",
                "default_backend: 1 backends for 2 forwarded_protocols (the list pairs",
            ),
            (
                "default_backend: [a, b]\nforwarded_protocols: [http, https]\n\
                 a: { servers: [x:1] }\n",
                "default_backend[1]: \"b\" is not a backend (backends: a)",
            ),
            (
                "default_backend: [a, b]\nforwarded_protocols: [http, http]\n\
                 a: { servers: [x:1] }\nb: { servers: [x:1] }\n",
                "default_backend[1]: http already goes to \"a\", not \"b\"",
            ),
            (
                "default_backend: [a, a]\nforwarded_protocols: [http, https]\n\
                 a: { servers: [x:1] }\nb: { servers: [x:1] }\n",
                "b: unreachable",
            ),
            (
                "a: { servers: [x:1] }\nbackends: { a: { servers: [y:1] } }\n",
                "backend a is defined twice",
            ),
            (
                "servers: [x:1]\nbackend: { servers: [y:1] }\n",
                "backend backend is defined twice",
            ),
            (
                "connections: 5\nw: { servers: [x:1] }\n",
                "connections: at the top level",
            ),
            (
                "a: { servers: [] }\n",
                "a.servers: at least one server is required",
            ),
            (
                "reload: true\n",
                "backends: at least one backend is required",
            ),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
        }
    }

    #[test]
    fn sticky_parses() {
        let c = parse(
            "backends:\n  web:\n    servers: [\"a:1\", \"b:1\"]\n    sticky:\n      cookie: srv\n      \
             expires: 1h\n      httponly: true\n      samesite: lax\n    routes: {\"a:1\": x}\n",
        )
        .unwrap();
        let web = &c.backends["web"];
        let st = web.sticky.as_ref().unwrap();
        assert_eq!(st.cookie.as_deref(), Some("srv"));
        assert_eq!(st.expires.as_deref(), Some("1h"));
        assert!(st.httponly && !st.secure);
        assert_eq!(web.routes["a:1"], "x");
        let c = parse(
            "backends: { w: { servers: [a:1], sticky: { learn: { create: $upstream_cookie_sid, \
             lookup: $cookie_sid, zone: \"s:1m\" } } } }",
        )
        .unwrap();
        let l = c.backends["w"]
            .sticky
            .as_ref()
            .unwrap()
            .learn
            .as_ref()
            .unwrap();
        assert_eq!(
            (l.zone.as_str(), l.timeout.as_deref(), l.header),
            ("s:1m", None, false)
        );
    }

    #[test]
    fn sticky_refusals_name_path_value_and_why() {
        let w = |sticky: &str| {
            format!("backends: {{ web: {{ servers: [a:1, b:1], sticky: {sticky} }} }}")
        };
        let cases: Vec<(String, &str)> = vec![
            (
                w("{}"),
                "backends.web.sticky: exactly one of cookie, route, learn is required (found none)",
            ),
            (
                w("{ cookie: srv, route: [$arg_r] }"),
                "backends.web.sticky: exactly one of cookie, route, learn is required (found cookie, route)",
            ),
            (
                w("{ cookie: \"a=b\" }"),
                "backends.web.sticky.cookie: \"a=b\" is not a cookie name",
            ),
            (
                w("{ cookie: \"a b\" }"),
                "backends.web.sticky.cookie: \"a b\" is not a cookie name",
            ),
            (
                w("{ cookie: \"sé\" }"),
                "backends.web.sticky.cookie: \"sé\" is not a cookie name",
            ),
            (
                w("{ cookie: srv, samesite: loose }"),
                "backends.web.sticky.samesite: \"loose\" is not strict, lax or none",
            ),
            (
                w("{ cookie: srv, expires: 500ms }"),
                "backends.web.sticky.expires: \"500ms\" is not max or an nginx time in seconds",
            ),
            (
                w("{ cookie: srv, expires: soon }"),
                "backends.web.sticky.expires: \"soon\" is not max",
            ),
            (
                w("{ cookie: srv, domain: \"a;b\" }"),
                "backends.web.sticky.domain: \"a;b\" must be one word",
            ),
            (
                w("{ route: [$arg_r], httponly: true }"),
                "backends.web.sticky.httponly: only cookie takes httponly (this sticky is route)",
            ),
            (
                w("{ route: [] }"),
                "backends.web.sticky.route: at least one variable is required",
            ),
            (
                w("{ route: [$arg_r, cookie_route] }"),
                "backends.web.sticky.route[1]: \"cookie_route\" is not a variable",
            ),
            (
                w("{ learn: { create: upstream_cookie_sid, lookup: $cookie_sid, zone: \"s:1m\" } }"),
                "backends.web.sticky.learn.create: \"upstream_cookie_sid\" is not a variable",
            ),
            (
                w("{ learn: { create: $u, lookup: \"$\", zone: \"s:1m\" } }"),
                "backends.web.sticky.learn.lookup: \"$\" is not a variable",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: s } }"),
                "backends.web.sticky.learn.zone: \"s\" has no size (NAME:SIZE, e.g. sessions:1m)",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \":1m\" } }"),
                "backends.web.sticky.learn.zone: \":1m\" has no zone name",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \"s:big\" } }"),
                "backends.web.sticky.learn.zone: \"s:big\" has no valid size",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \"s:31k\" } }"),
                "backends.web.sticky.learn.zone: \"s:31k\" is too small: at least 32k",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \"s:1m\", timeout: 25d } }"),
                "backends.web.sticky.learn.timeout: \"25d\" is not an nginx time from 1ms to 24d",
            ),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \"s:1m\", timeout: 0s } }"),
                "backends.web.sticky.learn.timeout: \"0s\" is not an nginx time",
            ),
            (
                "default_backend: a\nbackends: { a: { servers: [a:1], sticky: { learn: \
                 { create: $u, lookup: $c, zone: \"s:1m\" } } }, b: { hosts: [b], servers: [b:1], \
                 sticky: { learn: { create: $u, lookup: $c, zone: \"s:64k\" } } } }"
                    .to_owned(),
                "backends.b.sticky.learn.zone: \"s:64k\": zone s is already used by backend a",
            ),
            (
                "backends: { web: { servers: [a:1], routes: { \"a:1\": x } } }".to_owned(),
                "backends.web.routes: routes need sticky",
            ),
            (
                "backends: { web: { servers: [a:1], sticky: { cookie: s }, routes: { \"c:1\": x } } }"
                    .to_owned(),
                "backends.web.routes[\"c:1\"]: \"c:1\" is not one of the servers' addresses",
            ),
            (
                format!(
                    "backends: {{ web: {{ servers: [a:1], sticky: {{ cookie: s }}, \
                     routes: {{ \"a:1\": {} }} }} }}",
                    "r".repeat(33)
                ),
                "backends.web.routes[\"a:1\"]: \"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\" is not a route \
                 (at most 32",
            ),
            (
                "backends: { web: { servers: [a:1], sticky: { cookie: s }, routes: { \"a:1\": \"x,y\" } } }"
                    .to_owned(),
                "backends.web.routes[\"a:1\"]: \"x,y\" is not a route",
            ),
            (
                "backends: { web: { servers: [a:1], sticky: { cookie: s }, routes: { \"a:1\": \"\" } } }"
                    .to_owned(),
                "backends.web.routes[\"a:1\"]: the route must not be empty",
            ),
        ];
        for (text, want) in &cases {
            let got = parse(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
        }
        // Unknown keys stay errors, with their position.
        for (text, key) in [
            (w("{ cookie: s, expire: 1h }"), "expire"),
            (
                w("{ learn: { create: $u, lookup: $c, zone: \"s:1m\", headers: true } }"),
                "headers",
            ),
        ] {
            let (line, _, message) = yaml_err(&text);
            assert!(message.contains(key) && line.is_some(), "{text}: {message}");
        }
        // The limits themselves are accepted.
        parse(&format!(
            "backends: {{ web: {{ servers: [a:1], sticky: {{ cookie: s, expires: max, samesite: Strict }}, \
             routes: {{ \"a:1\": {} }} }} }}",
            "r".repeat(32)
        ))
        .unwrap();
        parse(&w(
            "{ learn: { create: $u, lookup: $c, zone: \"s:32k\", timeout: 24d } }",
        ))
        .unwrap();
    }

    #[test]
    fn queue_parses() {
        let q = |yaml: &str| {
            let c = parse(&format!(
                "backends: {{ web: {{ servers: [a:1], queue: {yaml} }} }}"
            ))
            .unwrap();
            c.backends["web"].queue.clone()
        };
        assert_eq!(q("500"), Some(QueueEntry::Number(500)));
        assert_eq!(
            q("{ number: 500, timeout: 30s }"),
            Some(QueueEntry::Full(Queue {
                number: 500,
                timeout: Some("30s".into())
            }))
        );
        assert_eq!(
            q("{ number: 500 }").unwrap().to_queue(),
            Queue {
                number: 500,
                timeout: None
            }
        );
        assert_eq!(
            q("7").unwrap().to_queue(),
            Queue {
                number: 7,
                timeout: None
            }
        );
        // A bare number of seconds, as nginx reads it.
        assert_eq!(
            q("{ number: 1, timeout: 30 }").unwrap().to_queue().timeout,
            Some("30".into())
        );
        // The limits themselves are accepted.
        for (yaml, number) in [
            ("1", 1),
            ("262144", MAX_QUEUE),
            ("{ number: 262144, timeout: 1ms }", MAX_QUEUE),
            ("{ number: 1, timeout: 24d }", 1),
            ("{ number: 1, timeout: 24d20h31m23s647ms }", 1),
        ] {
            assert_eq!(q(yaml).unwrap().to_queue().number, number, "{yaml}");
        }
        // Block style, and no queue unless asked.
        let c = parse(
            "backends:\n  web:\n    servers: [a:1]\n    queue:\n      number: 64\n      \
             timeout: 1m\n",
        )
        .unwrap();
        let got = c.backends["web"].queue.as_ref().unwrap().to_queue();
        assert_eq!((got.number, got.timeout.as_deref()), (64, Some("1m")));
        let c = parse("backends: { web: { servers: [a:1] } }").unwrap();
        assert_eq!(c.backends["web"].queue, None);
    }

    #[test]
    fn queue_refusals_name_path_value_and_why() {
        let w = |queue: &str| format!("backends: {{ web: {{ servers: [a:1], queue: {queue} }} }}");
        let cases = [
            (
                "0",
                "backends.web.queue: 0 is not from 1 to 262144 waiting requests",
            ),
            (
                "262145",
                "backends.web.queue: 262145 is not from 1 to 262144 waiting requests",
            ),
            (
                "4294967295",
                "backends.web.queue: 4294967295 is not from 1 to 262144",
            ),
            (
                "{ number: 0, timeout: 1s }",
                "backends.web.queue.number: 0 is not from 1 to 262144 waiting requests",
            ),
            (
                "{ number: 300000 }",
                "backends.web.queue.number: 300000 is not from 1 to 262144",
            ),
        ];
        for (queue, want) in cases {
            let text = w(queue);
            let got = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
        }
        // Every timeout `ngx_parse_time(s, 0)` or the module's range refuses.
        for t in [
            "0",
            "0s",
            "0ms",
            "25d",
            "24d20h31m23s648ms",
            "2147483648ms",
            "4w",
            "1M",
            "1y",
            "1s1m",
            "30s30s",
            "1ms1ms",
            "soon",
            "1.5s",
            "10sec",
            "-1s",
            "\"30 s\"",
            "\"\"",
            "\"1s;\"",
        ] {
            let text = w(&format!("{{ number: 500, timeout: {t} }}"));
            let shown = t.trim_matches('"');
            let want = format!(
                "backends.web.queue.timeout: {shown:?} is not an nginx time from 1ms to 24d"
            );
            let got = parse(&text).map(|_| ()).unwrap_err().to_string();
            assert!(got.contains(&want), "{text:?}: want {want:?} in {got:?}");
        }
        // Type errors and unknown keys: the YAML error with its position.
        for (queue, key) in [
            ("-1", "-1"),
            ("lots", "lots"),
            ("1.5", "1.5"),
            ("4294967296", "4294967296"),
            ("{ number: 5, timeot: 1s }", "timeot"),
            ("{ timeout: 1s }", "number"),
            ("{ number: -5 }", "u32"),
        ] {
            let text = w(queue);
            let (line, column, message) = yaml_err(&text);
            assert!(
                message.contains(key) && line.is_some() && column.is_some(),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn sizes_and_times_in_ms() {
        assert_eq!(size_bytes("1m"), Some(1 << 20));
        assert_eq!(size_bytes("32K"), Some(32 << 10));
        assert_eq!(size_bytes("4096"), Some(4096));
        for s in ["", "k", "1.5m", "1mb", "-1k"] {
            assert_eq!(size_bytes(s), None, "{s}");
        }
        assert_eq!(time_ms("10m"), Some(600_000));
        assert_eq!(time_ms("1m30s"), Some(90_000));
        assert_eq!(time_ms("30"), Some(30_000));
        assert_eq!(time_ms("250ms"), Some(250));
        assert_eq!(time_ms("soon"), None);
        // As ngx_parse_time(s, 0): largest unit first, each once, a
        // trailing bare number is seconds, no y or M, at most i64::MAX.
        assert_eq!(time_ms("1w1d"), Some(8 * 86_400_000));
        assert_eq!(time_ms("1h30m"), Some(5_400_000));
        assert_eq!(time_ms("1m5"), Some(65_000));
        assert_eq!(time_ms("1s500ms"), Some(1500));
        assert_eq!(time_ms("24d20h31m23s647ms"), Some(0x7fff_ffff));
        assert_eq!(time_ms("9223372036854775807ms"), Some(i64::MAX as u64));
        for s in [
            "1s1m",
            "30s30s",
            "1ms1s",
            "1ms1ms",
            "1d1w",
            "1y",
            "1M",
            "9223372036854775808ms",
            "9223372036854775807s",
            "",
            "1 s",
        ] {
            assert_eq!(time_ms(s), None, "{s}");
        }
    }

    #[test]
    fn times() {
        for t in ["1", "10s", "500ms", "1m30s", "2h", "1d"] {
            assert!(valid_time(t), "{t}");
        }
        for t in ["", "s", "10 s", "1.5s", "10sec", "-1s"] {
            assert!(!valid_time(t), "{t}");
        }
    }

    #[test]
    fn upstream_names() {
        for n in ["web", "api-v2", "a.b_c", "9lives"] {
            assert!(valid_upstream_name(n), "{n}");
        }
        for n in ["", "-x", "a b", "a;b", "a/b", "é"] {
            assert!(!valid_upstream_name(n), "{n}");
        }
    }
}
