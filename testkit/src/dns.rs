//! A real DNS server for tests: BIND's `named` on 127.0.0.1, changed at run time by `nsupdate`
//!
//! [`Named::start`] runs `named` (Debian package `bind9`) in the
//! foreground on 127.0.0.1 and a random free port below 32768, with one
//! primary zone (e.g. `consul`) that accepts dynamic updates from
//! 127.0.0.1. Records are served with TTL 0 and the zone's negative TTL is
//! 0, as Consul's DNS interface does by default, so nothing is cached
//! downstream. A name that has no record is NXDOMAIN.
//!
//! Changes go through `nsupdate` (package `bind9-dnsutils`) as RFC 2136
//! UPDATE messages: every call of [`Named::update`] is one message, which
//! `named` applies atomically and acknowledges only once the new records
//! are served. There is no reload and no restart, so no window in which
//! the server does not answer or answers with half a change (a reader sees
//! the old record set or the new one). `named` keeps serving throughout.
//!
//! Why not `dnsmasq`: it serves SRV records only from `--srv-host` lines
//! of its command line or configuration file, which SIGHUP does not re-read
//! (only hosts-format files: `/etc/hosts`, `--addn-hosts`, `--hostsdir`,
//! which hold A/AAAA records). Changing an SRV record would mean a restart,
//! during which queries are refused or time out.
//!
//! [`Named`] stops the server on drop (SIGTERM, then SIGKILL if it has not
//! exited within 5 s) and removes its directory. [`dns_or_skip`] applies
//! the project's convention when the programs are missing (see
//! [`crate::skip`]).

pub mod wire;

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use wire::{Reply, Srv};

/// Time to live of every record served (seconds).
pub const TTL: u32 = 0;

/// How long [`Named::start`] waits for the server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one `nsupdate` run may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query waits for its reply.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// The `named` binary (`HAB_NAMED`, default `/usr/sbin/named`).
pub fn named_bin() -> PathBuf {
    env_path("HAB_NAMED", "/usr/sbin/named")
}

/// The `nsupdate` binary (`HAB_NSUPDATE`, default `/usr/bin/nsupdate`).
pub fn nsupdate_bin() -> PathBuf {
    env_path("HAB_NSUPDATE", "/usr/bin/nsupdate")
}

/// The programs the fixture needs that are not installed.
pub fn missing() -> Vec<String> {
    [named_bin(), nsupdate_bin()]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect()
}

/// `true` when `named` and `nsupdate` are installed; otherwise the
/// project's convention (a failure under `HAB_REQUIRE_NGINX=1`, else a
/// `SKIP` line and `false`).
pub fn dns_or_skip() -> bool {
    crate::skip::present_or_skip(
        "the DNS server is not installed",
        "run `make deps` (packages bind9 and bind9-dnsutils)",
        &missing(),
    )
}

/// A record the zone serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `NAME A ADDR`.
    A {
        /// Owner name, absolute, with or without the trailing dot.
        name: String,
        /// The address.
        addr: Ipv4Addr,
    },
    /// `NAME SRV PRIORITY WEIGHT PORT TARGET`.
    Srv {
        /// Owner name (`_web._tcp.service.consul`).
        name: String,
        /// The record's data.
        srv: Srv,
    },
}

impl Record {
    /// An A record.
    pub fn a(name: &str, addr: Ipv4Addr) -> Record {
        Record::A {
            name: name.to_owned(),
            addr,
        }
    }

    /// An SRV record.
    pub fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::Srv {
            name: name.to_owned(),
            srv: Srv {
                priority,
                weight,
                port,
                target: target.trim_end_matches('.').to_owned(),
            },
        }
    }

    fn name(&self) -> &str {
        match self {
            Record::A { name, .. } | Record::Srv { name, .. } => name,
        }
    }

    /// Type and data in zone-file syntax.
    fn rdata(&self) -> String {
        match self {
            Record::A { addr, .. } => format!("A {addr}"),
            Record::Srv { srv, .. } => format!("SRV {srv}"),
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        check_name(self.name())?;
        if let Record::Srv { srv, .. } = self {
            check_name(&srv.target)?;
        }
        Ok(())
    }
}

/// One change of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds a record (a duplicate of one served is ignored).
    Add(Record),
    /// Removes every record of a name: it becomes NXDOMAIN unless names
    /// below it have records.
    RemoveName(String),
    /// Removes the records of one type (`wire::A`, `wire::SRV`) of a name.
    RemoveType(String, u16),
}

impl Change {
    fn line(&self) -> Result<String, String> {
        Ok(match self {
            Change::Add(r) => {
                r.check()?;
                format!("update add {} {TTL} {}", abs(r.name()), r.rdata())
            }
            Change::RemoveName(n) => {
                check_name(n)?;
                format!("update delete {}", abs(n))
            }
            Change::RemoveType(n, t) => {
                check_name(n)?;
                let t = match *t {
                    wire::A => "A",
                    wire::SRV => "SRV",
                    wire::AAAA => "AAAA",
                    other => return Err(format!("cannot remove type {other}")),
                };
                format!("update delete {} {t}", abs(n))
            }
        })
    }
}

/// Only what DNS names in tests need; keeps zone files and `nsupdate`
/// scripts free of anything they would interpret.
fn check_name(name: &str) -> Result<(), String> {
    let n = name.trim_end_matches('.');
    let ok = !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid DNS name {name:?}"))
    }
}

/// `name` with its trailing dot.
fn abs(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// A UDP and TCP port on 127.0.0.1 below 32768 (outside the kernel's
/// ephemeral range) that nobody holds now; pseudo-random so parallel tests
/// and processes rarely try the same one.
fn free_port() -> Option<u16> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    x ^= SEQ.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503);
    let (base, span) = (10_000u32, 22_000u32);
    for i in 0..span {
        let port = (base + (x.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if udp && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Some(port);
        }
    }
    None
}

fn fresh_dir() -> Result<PathBuf, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hab-named-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Whether this `named` limits the records of one name and type (BIND
/// 9.18.28 and later: 100 by default, `max-records-per-type`); tests put
/// 1,000 SRV records under one name.
fn limits_records() -> bool {
    let Ok(out) = Command::new(named_bin()).arg("-v").output() else {
        return false;
    };
    // "BIND 9.18.49-1~deb12u3-Debian (Extended Support Version) <id:>"
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .filter_map(|p| p.parse().ok())
        .collect();
    matches!(version[..], [9, minor, patch] if (minor, patch) >= (18, 28))
        || matches!(version[..], [major, ..] if major > 9)
}

fn named_conf(dir: &Path, port: u16, zone: &str) -> String {
    let d = dir.display();
    let unlimited = if limits_records() {
        "\n    max-records-per-type 0;"
    } else {
        ""
    };
    format!(
        r#"options {{
    directory "{d}";{unlimited}
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    querylog no;
}};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{d}/{zone}.zone";
    journal "{d}/{zone}.zone.jnl";
    allow-update {{ 127.0.0.1; }};
}};
"#
    )
}

fn zone_file(zone: &str, records: &[Record]) -> String {
    // negative TTL (SOA minimum) 0: NXDOMAIN is not cached either
    let mut z = format!(
        "$TTL {TTL}\n\
         @ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 0\n\
         @ IN NS ns.{zone}.\n\
         ns IN A 127.0.0.1\n"
    );
    for r in records {
        z.push_str(&format!("{} {TTL} IN {}\n", abs(r.name()), r.rdata()));
    }
    z
}

/// Sends SIGTERM, waits up to `grace` for the exit, then SIGKILLs and
/// reaps.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers; `pid` is our own child,
        // not reaped yet (try_wait above), so it cannot name another
        // process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `named` serving one zone on 127.0.0.1. Stopped on drop.
#[derive(Debug)]
pub struct Named {
    child: Child,
    port: u16,
    zone: String,
    dir: PathBuf,
}

/// Why a start attempt failed: worth another port, or not.
enum StartError {
    PortTaken(String),
    Fatal(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::PortTaken(s) | StartError::Fatal(s) => f.write_str(s),
        }
    }
}

impl Named {
    /// Starts `named` serving `zone` (e.g. `"consul"`) with `records`
    /// (names absolute, inside the zone); returns once it answers queries
    /// for the zone. Tries another port if the chosen one was taken in
    /// between.
    pub fn start(zone: &str, records: &[Record]) -> Result<Named, String> {
        check_name(zone)?;
        for r in records {
            r.check()?;
        }
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().ok_or("no free port on 127.0.0.1 below 32768")?;
            match Named::try_start(&zone, records, port) {
                Ok(n) => return Ok(n),
                Err(StartError::PortTaken(e)) => last = e,
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(format!("named: no port could be used; last: {last}"))
    }

    fn try_start(zone: &str, records: &[Record], port: u16) -> Result<Named, StartError> {
        let dir = fresh_dir().map_err(StartError::Fatal)?;
        let conf = dir.join("named.conf");
        let write = |p: PathBuf, s: String| {
            fs::write(&p, s).map_err(|e| StartError::Fatal(format!("{}: {e}", p.display())))
        };
        write(conf.clone(), named_conf(&dir, port, zone))?;
        write(dir.join(format!("{zone}.zone")), zone_file(zone, records))?;
        let log = fs::File::create(dir.join("named.log"))
            .map_err(|e| StartError::Fatal(format!("named.log: {e}")))?;
        let err = log
            .try_clone()
            .map_err(|e| StartError::Fatal(format!("named.log: {e}")))?;
        // -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker
        // thread (the machine is shared).
        let child = Command::new(named_bin())
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| StartError::Fatal(format!("cannot run {}: {e}", named_bin().display())))?;
        let mut named = Named {
            child,
            port,
            zone: zone.to_owned(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = named.child.try_wait() {
                let log = named.log();
                let msg = format!("named exited ({status}) on port {port}; log:\n{log}");
                return Err(if log.contains("address in use") {
                    StartError::PortTaken(msg)
                } else {
                    StartError::Fatal(msg)
                });
            }
            let soa = wire::query(named.addr(), zone, wire::SOA, Duration::from_millis(200));
            if soa.is_ok_and(|r| r.rcode == wire::NOERROR && !r.answers.is_empty()) {
                return Ok(named);
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(format!(
                    "named did not answer on port {port} within {START_TIMEOUT:?}; log:\n{}",
                    named.log()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port (UDP and TCP) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The zone served.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What `named` logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    /// Applies `changes` as one dynamic update: all or nothing, served
    /// when this returns `Ok`.
    pub fn update(&self, changes: &[Change]) -> Result<(), String> {
        let mut script = format!("server 127.0.0.1 {}\nzone {}.\n", self.port, self.zone);
        for c in changes {
            script.push_str(&c.line()?);
            script.push('\n');
        }
        script.push_str("send\nanswer\n");
        self.nsupdate(&script)
    }

    /// Replaces the A records of `name` with `addrs` (none: removes them).
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) -> Result<(), String> {
        let mut c = vec![Change::RemoveType(name.to_owned(), wire::A)];
        c.extend(addrs.iter().map(|&a| Change::Add(Record::a(name, a))));
        self.update(&c)
    }

    /// Replaces the SRV records of `name` with `srvs` (none: removes them).
    pub fn set_srv(&self, name: &str, srvs: &[Srv]) -> Result<(), String> {
        let mut c = vec![Change::RemoveType(name.to_owned(), wire::SRV)];
        c.extend(srvs.iter().map(|s| {
            Change::Add(Record::Srv {
                name: name.to_owned(),
                srv: s.clone(),
            })
        }));
        self.update(&c)
    }

    /// Removes every record of `name`.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        self.update(&[Change::RemoveName(name.to_owned())])
    }

    /// Asks the server (UDP) for `name`, type `qtype`.
    pub fn query(&self, name: &str, qtype: u16) -> std::io::Result<Reply> {
        wire::query(self.addr(), name, qtype, QUERY_TIMEOUT)
    }

    fn nsupdate(&self, script: &str) -> Result<(), String> {
        // -t: overall timeout, -u: UDP retry interval, -r: retries (s)
        let mut child = Command::new(nsupdate_bin())
            .args(["-t", "5", "-u", "1", "-r", "3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", nsupdate_bin().display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("nsupdate stdin: {e}"))?;
        }
        let deadline = Instant::now() + UPDATE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "nsupdate did not finish within {UPDATE_TIMEOUT:?}:\n{script}"
                    ));
                }
            }
        };
        let read = |r: Option<&mut dyn std::io::Read>| {
            let mut s = String::new();
            if let Some(r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        };
        let out = read(child.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
        let err = read(child.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
        // `answer` prints the server's reply: the update's own rcode
        if status.success() && out.contains("status: NOERROR") {
            Ok(())
        } else {
            Err(format!(
                "nsupdate failed ({status}):\n{script}\nstdout:\n{out}\nstderr:\n{err}\nnamed log:\n{}",
                self.log()
            ))
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
    }
}
