//! End-to-end harness: real nginx with the module, real backends, 127.0.0.1
//!
//! Used by the root package's `tests/e2e_*.rs`. Every wait here is bounded
//! in time, every loop in count; processes started here are stopped on
//! `Drop`.
//!
//! - [`nginx_or_skip`]: locate `target/nginx/sbin/nginx` and the module. When
//!   missing, panic under `HAB_REQUIRE_NGINX=1`, else print a visible `SKIP`
//!   line and let the test return.
//! - [`Nginx`]: a daemonized nginx (master + N workers) in a fresh prefix
//!   under `target/e2e/`, with an access log that records `$upstream_addr`.
//! - [`proxy_block`], [`server_lines`]: the usual pieces of an http block.
//!
//! Beside it: [`crate::backend::process::Backend`], a `hab-backend`
//! process (kill it to simulate death); [`crate::load`], the HTTP clients;
//! [`crate::api`], calls to the module's API.
//!
//! Environment knobs (for people, not CI):
//! - `HAB_NGINX_BIN`, `HAB_MODULE_SO`: use another nginx binary / module.
//! - `HAB_E2E_STOCK=1`: run against stock nginx balancers instead of the
//!   module (no `load_module`; `ha_balance round_robin;` is dropped and
//!   `ha_balance least_conn;` becomes `least_conn;`). Tests that depend on
//!   state shared across workers are expected to fail then, which shows
//!   they test something stock nginx does not do.

mod conf;
mod log;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

pub use conf::{checked_upstreams, proxy_block, server_lines};
pub use log::{now_epoch, LogEntry};

use crate::port::port_open;
use crate::proc::{alive, children, run_bounded, signal, wait_until};
use crate::skip::{self, say};
use conf::{listen_ports, render_conf, CONNECTIONS};
use log::parse_log_line;

/// Worker processes the e2e tests run with.
pub const WORKERS: usize = 4;

// ---------------------------------------------------------------------------
// Locating nginx

/// The workspace root (this crate is `testkit/` in it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_path_buf()
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

/// Returns `true` when nginx and the module are built. Otherwise panics if
/// `HAB_REQUIRE_NGINX=1`, else prints `SKIP <test>: ...` (the running
/// test's name, see [`skip::test_name`]) and returns `false` (the caller
/// returns early).
pub fn nginx_or_skip() -> bool {
    let bin = nginx_bin();
    let so = module_so();
    let mut missing = Vec::new();
    if !bin.is_file() {
        missing.push(bin.display().to_string());
    }
    if !stock_mode() && !so.is_file() {
        missing.push(so.display().to_string());
    }
    skip::built_or_skip(&missing)
}

/// Like [`nginx_or_skip`] for tests that run stock nginx only
/// ([`Nginx::start_stock`]): the module need not be built.
pub fn stock_nginx_or_skip() -> bool {
    let bin = nginx_bin();
    let missing = if bin.is_file() {
        Vec::new()
    } else {
        vec![bin.display().to_string()]
    };
    skip::built_or_skip(&missing)
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
pub fn nginx_at_least_or_skip(min: (u32, u32, u32), feature: &str) -> bool {
    match nginx_version() {
        Some(v) if v >= min => true,
        v => {
            say(&format!(
                "SKIP {}: {feature} needs nginx >= {}.{}.{}, {} is {}",
                skip::test_name(),
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

    /// `"<conf path>:<line of needle>"`, as nginx writes it in messages.
    fn location_of(&self, needle: &str) -> String {
        format!(
            "{}:{}",
            self.conf_path.display(),
            line_of(&self.conf, needle)
        )
    }
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in config:\n{text}"))
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
    /// `worker_connections`.
    connections: usize,
}

impl Nginx {
    /// Starts nginx with `http_block` inside `http {}` and `workers` worker
    /// processes; returns once every `listen` port answers and all workers
    /// run. Panics (with the error log) if that takes more than 15 s.
    pub fn start(http_block: &str, workers: usize) -> Nginx {
        Nginx::start_with(http_block, workers, CONNECTIONS, true)
    }

    /// Like [`Nginx::start`] with `worker_connections connections`.
    pub fn start_connections(http_block: &str, workers: usize, connections: usize) -> Nginx {
        Nginx::start_with(http_block, workers, connections, true)
    }

    /// Like [`Nginx::start`], without `load_module`: stock nginx's own
    /// balancers only, whatever [`stock_mode`] says.
    pub fn start_stock(http_block: &str, workers: usize) -> Nginx {
        Nginx::start_with(http_block, workers, CONNECTIONS, false)
    }

    fn start_with(http_block: &str, workers: usize, connections: usize, module: bool) -> Nginx {
        let dir = fresh_dir("e2e");
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            render_conf(&dir, http_block, workers, connections, module),
        )
        .expect("write nginx.conf");
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
            connections,
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
        let conf = render_conf(
            &self.dir,
            http_block,
            self.workers,
            self.connections,
            self.module,
        );
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
        let conf = render_conf(&dir, http_block, WORKERS, CONNECTIONS, true);
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

/// Whether a user other than the owner may pass through every directory
/// above `dir` (their execute bit for others).
fn others_can_enter(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .skip(1)
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A fresh scratch directory under `target/e2e/` (for certificates etc.).
pub fn scratch_dir() -> PathBuf {
    fresh_dir("e2e")
}

/// A state file path in a fresh directory the workers can write (they
/// run as an unprivileged user, as with /var/lib/nginx for an operator),
/// and the `ha_state_file` line naming it.
///
/// Under `target/e2e/` when every directory above it lets others in (the
/// workers must reach the file); else (a checkout in a private directory,
/// such as `mktemp -d` makes) in a fresh directory under the system's
/// temporary directory.
pub fn state_file() -> (PathBuf, String) {
    let mut dir = scratch_dir();
    if !others_can_enter(&dir) {
        dir = std::env::temp_dir().join(dir.file_name().expect("a named scratch dir"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create state dir");
    }
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod state dir");
    let state = dir.join("ha-state.json");
    let line = format!("    ha_state_file {};", state.display());
    (state, line)
}
