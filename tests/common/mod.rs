//! End-to-end harness: real nginx with the module, real backends, 127.0.0.1
//!
//! Used by `tests/e2e_*.rs` as `mod common;`. Every wait here is bounded in
//! time, every loop in count; processes started here are stopped on `Drop`.
//!
//! - [`nginx_or_skip`]: locate `target/nginx/sbin/nginx` and the module. When
//!   missing, panic under `HAB_REQUIRE_NGINX=1`, else print a visible `SKIP`
//!   line and let the test return.
//! - [`Backend`]: a `hab-backend` process (kill it to simulate death).
//! - [`Nginx`]: a daemonized nginx (master + N workers) in a fresh prefix
//!   under `target/e2e/`, with an access log that records `$upstream_addr`.
//! - [`get`], [`sequence`], [`load`], [`spawn_load`]: HTTP clients.
//!
//! Environment knobs (for people, not CI):
//! - `HAB_NGINX_BIN`, `HAB_MODULE_SO`: use another nginx binary / module.
//! - `HAB_E2E_STOCK=1`: run against stock nginx balancers instead of the
//!   module (no `load_module`; `ha_balance round_robin;` is dropped and
//!   `ha_balance least_conn;` becomes `least_conn;`). Tests that depend on
//!   state shared across workers are expected to fail then, which shows
//!   they test something stock nginx does not do.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use hab_testkit::http;

pub use http::Response;

/// Worker processes the e2e tests run with.
pub const WORKERS: usize = 4;

// ---------------------------------------------------------------------------
// Locating nginx

/// The repository root (`CARGO_MANIFEST_DIR`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => root().join(default),
    }
}

/// Path of the nginx binary the tests run.
pub fn nginx_bin() -> PathBuf {
    env_path("HAB_NGINX_BIN", "target/nginx/sbin/nginx")
}

/// Path of the module `.so` the tests load.
pub fn module_so() -> PathBuf {
    env_path(
        "HAB_MODULE_SO",
        "target/nginx/modules/ngx_http_upstream_ha_module.so",
    )
}

/// Whether the tests run against stock nginx balancers (`HAB_E2E_STOCK=1`).
pub fn stock_mode() -> bool {
    std::env::var("HAB_E2E_STOCK").is_ok_and(|v| v == "1")
}

pub use hab_testkit::skip::say;

/// Returns `true` when nginx and the module are built. Otherwise panics if
/// `HAB_REQUIRE_NGINX=1`, else prints `SKIP <test>: ...` and returns
/// `false` (the caller returns early).
pub fn nginx_or_skip(test: &str) -> bool {
    let bin = nginx_bin();
    let so = module_so();
    let mut missing = Vec::new();
    if !bin.is_file() {
        missing.push(bin.display().to_string());
    }
    if !stock_mode() && !so.is_file() {
        missing.push(so.display().to_string());
    }
    hab_testkit::skip::built_or_skip(test, &missing)
}

/// Like [`nginx_or_skip`] for tests that run stock nginx only
/// ([`Nginx::start_stock`]): the module need not be built.
pub fn stock_nginx_or_skip(test: &str) -> bool {
    let bin = nginx_bin();
    let missing = if bin.is_file() {
        Vec::new()
    } else {
        vec![bin.display().to_string()]
    };
    hab_testkit::skip::built_or_skip(test, &missing)
}

/// Version of the nginx binary the tests run (`nginx -v`), e.g. `(1, 28, 3)`.
pub fn nginx_version() -> Option<(u32, u32, u32)> {
    let out = Command::new(nginx_bin()).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let v = text.split("nginx/").nth(1)?.split_whitespace().next()?;
    let mut n = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((n.next()??, n.next()??, n.next()??))
}

/// `true` when the nginx binary is at least `min`. Otherwise prints
/// `SKIP <test>: ...` and returns `false`, whatever `HAB_REQUIRE_NGINX`
/// says: `make test` also runs the end-to-end tests against Debian's
/// nginx 1.22, which lacks features (`resolve`) the test is about.
pub fn nginx_at_least_or_skip(test: &str, min: (u32, u32, u32), feature: &str) -> bool {
    match nginx_version() {
        Some(v) if v >= min => true,
        v => {
            say(&format!(
                "SKIP {test}: {feature} needs nginx >= {}.{}.{}, {} is {}",
                min.0,
                min.1,
                min.2,
                nginx_bin().display(),
                v.map_or("of unknown version".to_owned(), |v| format!(
                    "{}.{}.{}",
                    v.0, v.1, v.2
                ))
            ));
            false
        }
    }
}

/// Serializes the e2e tests of one test binary: they measure timing and
/// traffic shares, which parallel tests on a 2-core machine would disturb.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Ports and processes

/// A free TCP port on 127.0.0.1, outside the kernel's ephemeral range
/// (32768-60999 by default) so outgoing connections cannot take it between
/// allocation and use, and distinct within this process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = 12_000u32;
    let base = 20_000u32;
    let start = (std::process::id().wrapping_mul(7919)) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (start + n * 7) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {base}..{}", base + span);
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&http::local(port), Duration::from_millis(200)).is_ok()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers; a stale pid only yields ESRCH.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Process state letter from /proc (`None` if the process is gone).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may contain spaces, so split after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Live children of `ppid` as `(pid, cmdline)`.
pub fn children(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().unwrap_or("");
        let parent: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if parent != ppid || state == "Z" || state == "X" {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .trim()
            .to_owned();
        out.push((pid, cmd));
    }
    out
}

// ---------------------------------------------------------------------------
// Backends

/// Counters of a backend (`/_ctl/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub inflight: u64,
    pub max_inflight: u64,
    pub conns: u64,
    /// `/healthz` requests (health checks).
    pub checks: u64,
}

fn parse_stats(s: &str) -> Stats {
    let mut out = Stats::default();
    for kv in s.split_whitespace() {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let v = v.parse().unwrap_or_else(|_| panic!("bad stats line {s:?}"));
        match k {
            "requests" => out.requests = v,
            "inflight" => out.inflight = v,
            "max_inflight" => out.max_inflight = v,
            "conns" => out.conns = v,
            "checks" => out.checks = v,
            _ => {}
        }
    }
    out
}

/// A `hab-backend` process answering `NAME\n` on 127.0.0.1:`port`.
/// Killed on drop; also exits by itself when the test process dies (its
/// stdin is a pipe from us and it runs with `--exit-on-eof`).
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub port: u16,
    child: Option<(Child, ChildStdin)>,
}

impl Backend {
    /// Starts a backend on a fresh port.
    pub fn start(name: &str) -> Backend {
        for _ in 0..5 {
            let port = free_port();
            if let Ok(b) = Backend::try_start_on(name, port) {
                return b;
            }
        }
        panic!("backend {name}: could not start on any port");
    }

    /// Starts `n` backends named `{prefix}1..={prefix}n`.
    pub fn start_many(prefix: &str, n: usize) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend::start(&format!("{prefix}{i}")))
            .collect()
    }

    /// Starts a backend on `port`, retrying for up to 5 s while the port is
    /// busy (e.g. just after the previous process on it died).
    pub fn start_on(name: &str, port: u16) -> Backend {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Backend::try_start_on(name, port) {
                Ok(b) => return b,
                Err(e) if Instant::now() >= deadline => {
                    panic!("backend {name}: cannot start on port {port}: {e}")
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn try_start_on(name: &str, port: u16) -> io::Result<Backend> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hab-backend"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
                "--exit-on-eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        let want = format!("ready {name} {port}");
        if ready.trim() == want {
            return Ok(Backend {
                name: name.to_owned(),
                port,
                child: Some((child, stdin)),
            });
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        let _ = io::Read::read_to_string(&mut io::Read::take(stderr, 4096), &mut err);
        Err(io::Error::other(format!(
            "expected {want:?}, got {ready:?}; stderr: {}",
            err.trim()
        )))
    }

    /// `127.0.0.1:PORT`, as nginx writes it in `$upstream_addr`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(c, _)| c.id())
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the process and reaps it: the port refuses connections
    /// when this returns.
    pub fn kill(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }

    /// Starts a new process with the same name on the same port (counters
    /// start from zero).
    pub fn restart(&mut self) {
        self.kill();
        *self = Backend::start_on(&self.name.clone(), self.port);
    }

    fn ctl(&self, path: &str) -> String {
        let r = http::get(self.port, path)
            .unwrap_or_else(|e| panic!("backend {} {path}: {e}", self.name));
        assert_eq!(r.status, 200, "backend {} {path}: {}", self.name, r.text());
        r.body_trimmed()
    }

    /// Sets the default mode: `ok`, `fail500`, `fail404`, `close`, `delay:MS`.
    pub fn set_mode(&self, mode: &str) {
        assert_eq!(self.ctl(&format!("/_ctl/mode?set={mode}")), mode);
    }

    /// Sets how `/healthz` answers: `ok`, `fail` (503), `sick` (200, body
    /// `sick`), `hang`, `reset`, `delay:MS`.
    pub fn set_health(&self, health: &str) {
        assert_eq!(self.ctl(&format!("/_ctl/health?set={health}")), health);
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        parse_stats(&self.ctl("/_ctl/stats"))
    }

    /// Zeroes `requests`, `max_inflight` and `conns`.
    pub fn reset(&self) {
        self.ctl("/_ctl/reset");
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Requests counted by each backend since start or reset, by name.
pub fn backend_counts(backends: &[Backend]) -> BTreeMap<String, u64> {
    backends
        .iter()
        .map(|b| (b.name.clone(), b.stats().requests))
        .collect()
}

// ---------------------------------------------------------------------------
// nginx

/// Result of `nginx -t` on a generated configuration.
#[derive(Debug)]
pub struct Check {
    pub ok: bool,
    pub status: ExitStatus,
    pub stderr: String,
    /// Absolute path of the tested `nginx.conf`.
    pub conf_path: PathBuf,
    /// Its text.
    pub conf: String,
}

impl Check {
    /// Asserts a clean failure with an `[emerg]` line that names the config
    /// file at the line containing `needle` and contains every `mentions`.
    pub fn assert_emerg(&self, needle: &str, mentions: &[&str]) {
        assert_eq!(
            self.status.signal(),
            None,
            "nginx -t died on a signal:\n{}",
            self.stderr
        );
        assert_eq!(
            self.status.code(),
            Some(1),
            "nginx -t should fail with 1:\n{}\n{}",
            self.stderr,
            self.conf
        );
        assert!(!self.ok);
        let loc = self.location_of(needle);
        let emerg: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.contains("[emerg]"))
            .collect();
        assert!(
            emerg
                .iter()
                .any(|l| l.contains(&loc) && mentions.iter().all(|m| l.contains(m))),
            "want an [emerg] line with {loc:?} and {mentions:?}; stderr:\n{}",
            self.stderr
        );
    }

    /// 1-based line of the first configuration line containing `needle`.
    pub fn line_of(&self, needle: &str) -> usize {
        line_of(&self.conf, needle)
    }

    /// `"<conf path>:<line of needle>"`, as nginx writes it in messages.
    pub fn location_of(&self, needle: &str) -> String {
        format!("{}:{}", self.conf_path.display(), self.line_of(needle))
    }
}

/// 1-based line of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in config:\n{text}"))
}

/// One access log line (see [`LOG_FORMAT`]).
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
pub const LOG_FORMAT: &str = "'$msec $pid $status \"$request_uri\" \
\"$upstream_addr\" \"$upstream_status\" \"$upstream_response_time\"'";

/// Splits `$upstream_addr` / `$upstream_status` values: peers of one
/// upstream are separated by `", "`, internal redirects by `" : "`.
pub fn split_upstream_list(v: &str) -> Vec<String> {
    if v == "-" || v.trim().is_empty() {
        return Vec::new();
    }
    v.split(" : ")
        .flat_map(|group| group.split(", "))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_log_line(line: &str) -> Option<LogEntry> {
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

/// Rewrites module directives for stock nginx (see `HAB_E2E_STOCK`).
fn stockify(http_block: &str) -> String {
    http_block
        .lines()
        .filter_map(|l| {
            let t = l.trim();
            if t.starts_with("ha_balance least_conn") {
                Some(l.replace(t, "least_conn;"))
            } else if t.starts_with("ha_balance") {
                None
            } else {
                Some(l.to_owned())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ports of the `listen` directives in an http block, in order.
fn listen_ports(http_block: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for stmt in http_block.split([';', '{', '}', '\n']) {
        let mut words = stmt.split_whitespace();
        if words.next() != Some("listen") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        if let Some(p) = port {
            ports.push(p);
        }
    }
    ports
}

fn fresh_dir(kind: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let label = thread::current()
        .name()
        .unwrap_or("main")
        .rsplit("::")
        .next()
        .unwrap_or("main")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let dir = root().join("target").join(kind).join(format!(
        "{label}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("logs")).expect("create nginx prefix");
    fs::create_dir_all(dir.join("tmp")).expect("create nginx prefix");
    dir
}

/// The full nginx.conf around `http_block`; `module`: load the module
/// (unless [`stock_mode`]).
fn render_conf(dir: &Path, http_block: &str, workers: usize, module: bool) -> String {
    let d = dir.display();
    let (load, block) = if !module {
        (String::new(), http_block.to_owned())
    } else if stock_mode() {
        (String::new(), stockify(http_block))
    } else {
        (
            format!("load_module {};\n", module_so().display()),
            http_block.to_owned(),
        )
    };
    format!(
        "{load}\
worker_processes {workers};
daemon on;
master_process on;
error_log {d}/error.log info;
pid {d}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    log_format hab {LOG_FORMAT};
    access_log {d}/access.log hab;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

{block}
}}
"
    )
}

/// Runs a command with stdout/stderr to files, bounded by `timeout`
/// (killed after it). Returns the status and stderr.
fn run_bounded(
    cmd: &mut Command,
    dir: &Path,
    tag: &str,
    timeout: Duration,
) -> (ExitStatus, String) {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait nginx") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let s = child.wait().expect("wait nginx");
            let e = fs::read_to_string(&err_path).unwrap_or_default();
            panic!("{cmd:?} did not finish within {timeout:?} (status {s}); stderr:\n{e}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, fs::read_to_string(&err_path).unwrap_or_default())
}

/// A running nginx: daemonized master with `workers` worker processes.
/// Stopped (QUIT, then KILL) on drop.
#[derive(Debug)]
pub struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
    master: i32,
    workers: usize,
    ports: Vec<u16>,
    running: bool,
    /// Workers the test killed on purpose (SIGKILL): not crashes.
    killed: Vec<i32>,
    /// Whether the configuration loads the module.
    module: bool,
}

impl Nginx {
    /// Starts nginx with `http_block` inside `http {}` and `workers` worker
    /// processes; returns once every `listen` port answers and all workers
    /// run. Panics (with the error log) if that takes more than 15 s.
    pub fn start(http_block: &str, workers: usize) -> Nginx {
        Nginx::start_with(http_block, workers, true)
    }

    /// Like [`Nginx::start`], without `load_module`: stock nginx's own
    /// balancers only, whatever [`stock_mode`] says.
    pub fn start_stock(http_block: &str, workers: usize) -> Nginx {
        Nginx::start_with(http_block, workers, false)
    }

    fn start_with(http_block: &str, workers: usize, module: bool) -> Nginx {
        let dir = fresh_dir("e2e");
        let conf = dir.join("nginx.conf");
        fs::write(&conf, render_conf(&dir, http_block, workers, module)).expect("write nginx.conf");
        let ports = listen_ports(http_block);
        assert!(
            !ports.is_empty(),
            "http block has no `listen 127.0.0.1:PORT`:\n{http_block}"
        );

        let (status, stderr) = run_bounded(
            Command::new(nginx_bin())
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf),
            &dir,
            "start",
            Duration::from_secs(15),
        );
        let error_log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        assert!(
            status.success(),
            "nginx failed to start ({status}):\n{stderr}\nerror.log:\n{error_log}\nconfig:\n{}",
            fs::read_to_string(&conf).unwrap_or_default()
        );

        let pid_file = dir.join("nginx.pid");
        let mut master = 0;
        wait_until(Duration::from_secs(10), || {
            master = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            master > 0
        });
        let ngx = Nginx {
            dir,
            conf,
            master,
            workers,
            ports,
            running: master > 0,
            killed: Vec::new(),
            module,
        };
        assert!(
            master > 0,
            "nginx wrote no pid file; error.log:\n{}",
            ngx.error_log()
        );
        ngx.wait_ready(&BTreeSet::new());
        ngx
    }

    /// Waits until `workers` workers not in `old` run and all ports answer.
    fn wait_ready(&self, old: &BTreeSet<i32>) {
        let ok = wait_until(Duration::from_secs(15), || {
            if !alive(self.master) {
                return false;
            }
            let fresh = self
                .worker_pids()
                .iter()
                .filter(|p| !old.contains(p))
                .count();
            fresh == self.workers && self.ports.iter().all(|&p| port_open(p))
        });
        assert!(
            ok,
            "nginx not ready within 15 s (master {} alive: {}, workers {:?}, want {} new); error.log:\n{}",
            self.master,
            alive(self.master),
            self.worker_pids(),
            self.workers,
            self.error_log()
        );
    }

    /// The first `listen` port of the http block.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The prefix directory (config, logs, pid file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The master's pid.
    pub fn master_pid(&self) -> i32 {
        self.master
    }

    /// Pids of the live (not shutting down) worker processes.
    pub fn worker_pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = children(self.master)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("worker process") && !cmd.contains("shutting down"))
            .map(|(p, _)| p)
            .collect();
        v.sort_unstable();
        v
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The access log so far, raw.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The access log so far, parsed.
    pub fn access_entries(&self) -> Vec<LogEntry> {
        self.access_log()
            .lines()
            .filter_map(parse_log_line)
            .collect()
    }

    /// Error log lines reporting a crashed worker (`exited on signal`),
    /// but for the workers the test killed itself.
    pub fn crashes(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| l.contains("exited on signal"))
            .filter(|l| {
                !self
                    .killed
                    .iter()
                    .any(|p| l.contains(&format!(" {p} exited on signal 9")))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Kills worker `pid` with SIGKILL, as a crash would.
    pub fn kill_worker(&mut self, pid: i32) {
        self.killed.push(pid);
        signal(pid, libc::SIGKILL);
    }

    /// `nginx -s reload`, then waits for a full set of new workers.
    pub fn reload(&mut self) {
        let old: BTreeSet<i32> = self.worker_pids().into_iter().collect();
        let (status, stderr) = run_bounded(
            Command::new(nginx_bin())
                .arg("-p")
                .arg(&self.dir)
                .arg("-c")
                .arg(&self.conf)
                .args(["-s", "reload"]),
            &self.dir,
            "reload",
            Duration::from_secs(15),
        );
        assert!(
            status.success(),
            "nginx -s reload failed ({status}):\n{stderr}"
        );
        self.wait_ready(&old);
    }

    /// Binary upgrade, as an operator does it: `USR2` to the master (it
    /// starts a new master from the binary, which reads the configuration
    /// afresh and creates its own shared memory), waits until the new
    /// master's workers run, then `QUIT` to the old master and waits until
    /// it is gone. Afterwards `self` is the new master.
    pub fn binary_upgrade(&mut self) {
        let old = self.master;
        let pid_file = self.dir.join("nginx.pid");
        signal(old, libc::SIGUSR2);
        let mut new = 0;
        let started = wait_until(Duration::from_secs(15), || {
            new = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            new != 0 && new != old && self.dir.join("nginx.pid.oldbin").is_file()
        });
        assert!(
            started,
            "no new master after USR2; error.log:\n{}",
            self.error_log()
        );
        self.master = new;
        self.wait_ready(&BTreeSet::new());
        let old_workers: Vec<i32> = children(old).into_iter().map(|(p, _)| p).collect();
        signal(old, libc::SIGQUIT);
        let gone = wait_until(Duration::from_secs(15), || {
            !alive(old) && old_workers.iter().all(|&p| p == new || !alive(p))
        });
        assert!(
            gone,
            "old master {old} still running; error.log:\n{}",
            self.error_log()
        );
    }

    /// Replaces the http block, then reloads.
    pub fn reload_with(&mut self, http_block: &str) {
        let conf = render_conf(&self.dir, http_block, self.workers, self.module);
        fs::write(&self.conf, conf).expect("write nginx.conf");
        self.ports = listen_ports(http_block);
        self.reload();
    }

    /// Stops nginx (QUIT, up to 10 s, then KILL of master and workers) and
    /// panics if a worker crashed during the test.
    pub fn stop(&mut self) {
        self.shutdown();
        let crashes = self.crashes();
        assert!(
            crashes.is_empty(),
            "nginx worker crashed:\n{}",
            crashes.join("\n")
        );
    }

    fn shutdown(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let workers: Vec<i32> = children(self.master).into_iter().map(|(p, _)| p).collect();
        signal(self.master, libc::SIGQUIT);
        let gone = wait_until(Duration::from_secs(10), || {
            !alive(self.master) && workers.iter().all(|&p| !alive(p))
        });
        if !gone {
            say(&format!(
                "nginx {} did not quit within 10 s; killing it",
                self.dir.display()
            ));
            signal(self.master, libc::SIGKILL);
            for &p in &workers {
                signal(p, libc::SIGKILL);
            }
            wait_until(Duration::from_secs(5), || {
                !alive(self.master) && workers.iter().all(|&p| !alive(p))
            });
        }
    }

    /// Runs `nginx -t` on a configuration with `http_block` (4 workers);
    /// returns success and stderr.
    pub fn check(http_block: &str) -> (bool, String) {
        let c = Nginx::check_detailed(http_block);
        (c.ok, c.stderr)
    }

    /// Like [`Nginx::check`], with exit status, config path and text.
    pub fn check_detailed(http_block: &str) -> Check {
        let dir = fresh_dir("e2e");
        let conf_path = dir.join("nginx.conf");
        let conf = render_conf(&dir, http_block, WORKERS, true);
        fs::write(&conf_path, &conf).expect("write nginx.conf");
        let (status, stderr) = run_bounded(
            Command::new(nginx_bin())
                .arg("-t")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path),
            &dir,
            "check",
            Duration::from_secs(15),
        );
        // Nothing to keep: the text is in the result.
        let _ = fs::remove_dir_all(&dir);
        Check {
            ok: status.success(),
            status,
            stderr,
            conf_path,
            conf,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.shutdown();
        let crashes = self.crashes();
        if !crashes.is_empty() {
            say(&format!(
                "nginx worker crashed ({}):\n{}",
                self.dir.display(),
                crashes.join("\n")
            ));
        }
        if thread::panicking() || !crashes.is_empty() {
            say(&format!(
                "nginx logs and config kept in {}",
                self.dir.display()
            ));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Clients

/// `GET path` with `Connection: close` (see [`http::get`]).
pub fn get(port: u16, path: &str) -> io::Result<Response> {
    http::get(port, path)
}

/// Outcome key of one response: the body (backend name) for a 200,
/// `"HTTP <status>"` otherwise, `"ERR <error>"` on a transport error.
pub fn outcome(r: &io::Result<Response>) -> String {
    match r {
        Ok(r) if r.status == 200 => r.body_trimmed(),
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => format!("ERR {e}"),
    }
}

/// `n` sequential requests; the outcome of each, in order.
pub fn sequence(port: u16, path: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| outcome(&get(port, path))).collect()
}

/// Counts equal strings.
pub fn tally<S: AsRef<str>>(items: &[S]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in items {
        *m.entry(s.as_ref().to_owned()).or_insert(0) += 1;
    }
    m
}

/// Fetches `/?k=key-N` for every N in 0..`keys` with 4 concurrent clients
/// (fresh connection per request), within 30 s; the outcome per key (the
/// backend's name for a 200).
pub fn record_keys(port: u16, keys: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(vec![String::new(); keys]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (next, out) = (Arc::clone(&next), Arc::clone(&out));
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys || Instant::now() >= deadline {
                    return;
                }
                let o = outcome(&get(port, &format!("/?k=key-{i}")));
                out.lock().unwrap()[i] = o;
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread panicked");
    }
    let out = Arc::try_unwrap(out).unwrap().into_inner().unwrap();
    let missing = out.iter().filter(|o| o.is_empty()).count();
    assert_eq!(
        missing, 0,
        "{missing} of {keys} keys not fetched within 30 s"
    );
    out
}

/// Counts of a concurrent load run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// 200 responses by body (backend name).
    pub by_body: BTreeMap<String, usize>,
    /// All responses by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Responses with a status other than 200.
    pub non_200: usize,
    /// Transport errors (connect, reset, timeout).
    pub errors: usize,
    /// Requests attempted.
    pub total: usize,
    /// Up to 10 examples of failures, for assertion messages.
    pub failures: Vec<String>,
}

impl LoadResult {
    fn add(&mut self, r: &io::Result<Response>) {
        self.total += 1;
        match r {
            Ok(resp) => {
                *self.statuses.entry(resp.status).or_insert(0) += 1;
                if resp.status == 200 {
                    *self.by_body.entry(resp.body_trimmed()).or_insert(0) += 1;
                } else {
                    self.non_200 += 1;
                    if self.failures.len() < 10 {
                        self.failures
                            .push(format!("HTTP {} {}", resp.status, resp.body_trimmed()));
                    }
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.failures.len() < 10 {
                    self.failures.push(format!("ERR {e}"));
                }
            }
        }
    }

    fn merge(&mut self, o: LoadResult) {
        for (k, v) in o.by_body {
            *self.by_body.entry(k).or_insert(0) += v;
        }
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
        self.non_200 += o.non_200;
        self.errors += o.errors;
        self.total += o.total;
        for f in o.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
    }

    /// 200 responses from backend `name`.
    pub fn count(&self, name: &str) -> usize {
        self.by_body.get(name).copied().unwrap_or(0)
    }

    /// Non-200 responses plus transport errors.
    pub fn bad(&self) -> usize {
        self.non_200 + self.errors
    }
}

/// Shape of a concurrent load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOpts {
    pub threads: usize,
    /// Requests per thread at most.
    pub per_thread: usize,
    /// Pause between two requests of one thread.
    pub pause: Duration,
    /// Wall-clock bound for the whole load.
    pub max_time: Duration,
}

impl LoadOpts {
    /// `threads` × `per_thread` requests, back to back, at most 60 s.
    pub fn new(threads: usize, per_thread: usize) -> Self {
        LoadOpts {
            threads,
            per_thread,
            pause: Duration::ZERO,
            max_time: Duration::from_secs(60),
        }
    }
}

/// A load running in background threads.
#[derive(Debug)]
pub struct LoadHandle {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<LoadResult>>,
}

impl LoadHandle {
    /// Requests completed so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `n` requests completed.
    pub fn wait_done(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.done() >= n)
    }

    /// Asks the threads to stop after their current request, then joins.
    pub fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the threads to finish their requests (bounded by
    /// `max_time` and the per-request timeouts).
    pub fn join(self) -> LoadResult {
        let mut total = LoadResult::default();
        for t in self.threads {
            total.merge(t.join().expect("load thread panicked"));
        }
        total
    }
}

/// Starts a concurrent load of `GET path` on 127.0.0.1:`port` in the
/// background.
pub fn spawn_load(port: u16, path: &str, opts: LoadOpts) -> LoadHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + opts.max_time;
    let threads = (0..opts.threads)
        .map(|_| {
            let (stop, done, path) = (Arc::clone(&stop), Arc::clone(&done), path.to_owned());
            thread::spawn(move || {
                let mut res = LoadResult::default();
                for _ in 0..opts.per_thread {
                    if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                        break;
                    }
                    res.add(&get(port, &path));
                    done.fetch_add(1, Ordering::Relaxed);
                    if !opts.pause.is_zero() {
                        thread::sleep(opts.pause);
                    }
                }
                res
            })
        })
        .collect();
    LoadHandle {
        stop,
        done,
        threads,
    }
}

/// `threads` × `per_thread` concurrent requests; waits for them all.
pub fn load(port: u16, path: &str, threads: usize, per_thread: usize) -> LoadResult {
    spawn_load(port, path, LoadOpts::new(threads, per_thread)).join()
}

// ---------------------------------------------------------------------------
// TLS

/// Makes a self-signed certificate and key (`CN=localhost`, EC P-256) with
/// the `openssl` CLI in `dir`; returns `(cert, key)` paths.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let (status, stderr) = run_bounded(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        dir,
        "openssl",
        Duration::from_secs(30),
    );
    assert!(status.success(), "openssl req failed ({status}):\n{stderr}");
    (cert, key)
}

/// A fresh scratch directory under `target/e2e/` (for certificates etc.).
pub fn scratch_dir() -> PathBuf {
    fresh_dir("e2e")
}

/// A state file path in a fresh directory the workers can write (they
/// run as an unprivileged user, as with /var/lib/nginx for an operator),
/// and the `ha_state_file` line naming it.
pub fn state_file() -> (PathBuf, String) {
    let dir = scratch_dir();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod state dir");
    let state = dir.join("ha-state.json");
    let line = format!("    ha_state_file {};", state.display());
    (state, line)
}

// ---------------------------------------------------------------------------
// Config helpers

/// `server 127.0.0.1:PORT<params>;` lines, one per backend, with the
/// parameters given per backend (same length as `backends`, or empty).
pub fn server_lines(backends: &[Backend], params: &[&str]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = params.get(i).copied().unwrap_or("");
            let sep = if p.is_empty() { "" } else { " " };
            format!("        server {}{sep}{p};\n", b.addr())
        })
        .collect()
}

/// A typical http block: `upstream up { <upstream_body> }` and a server on
/// `port` proxying `/` to it, with `<location_extra>` in the location.
pub fn proxy_block(port: u16, upstream_body: &str, location_extra: &str) -> String {
    format!(
        "    upstream up {{
{upstream_body}
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
{location_extra}
        }}
    }}
"
    )
}

/// Maps `127.0.0.1:PORT` to backend names.
pub fn addr_names(backends: &[Backend]) -> BTreeMap<String, String> {
    backends
        .iter()
        .map(|b| (b.addr(), b.name.clone()))
        .collect()
}

/// `method path` with `body` on the `ha_api` of nginx at `port`: the
/// status and the JSON body (`Null` for HEAD and non-JSON answers).
pub fn api_call(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = hab_testkit::http::request(port, method, path, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if method != "HEAD" && r.header("content-type") == Some("application/json") {
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: bad JSON {e}: {}", r.text()))
    } else {
        serde_json::Value::Null
    };
    (r.status, v)
}

/// An address on 127.0.0.1 that refuses connections (nobody listens).
pub fn refused_addr() -> String {
    let p = free_port();
    assert!(!port_open(p));
    format!("127.0.0.1:{p}")
}
