//! A test backend in a process of its own: `hab-backend`, killed to die
//!
//! The end-to-end tests run backends as processes, not threads, so that a
//! test can kill one (SIGKILL, the port refuses at once) and start it again
//! on the same port. The program is the `hab-backend` binary of the
//! workspace's root package ([`crate::backend`] in a `main`); cargo builds
//! it beside the test binaries that use this.

use std::collections::BTreeMap;
use std::env;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::StatsSnapshot;
use crate::http;
use crate::port::free_port;

/// Path of the `hab-backend` binary: beside the running test binary's
/// directory (`target/<profile>/deps/..`), as cargo lays them out, unless
/// `HAB_BACKEND_BIN` says otherwise.
pub fn backend_bin() -> PathBuf {
    if let Some(p) = env::var_os("HAB_BACKEND_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = env::current_exe().expect("path of the running test binary");
    let mut dir = exe
        .parent()
        .expect("the test binary has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("hab-backend{}", env::consts::EXE_SUFFIX))
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
        let mut child = Command::new(backend_bin())
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
    /// `sick`), `hang`, `reset`, `delay:MS`, and about kept connections
    /// `closeafter`, `resetnext`, `halfclose`, `okclose`, `http10`,
    /// `chunked` (see [`crate::backend::Health`]).
    pub fn set_health(&self, health: &str) {
        assert_eq!(self.ctl(&format!("/_ctl/health?set={health}")), health);
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        let line = self.ctl("/_ctl/stats");
        line.parse()
            .unwrap_or_else(|e| panic!("backend {}: {e}", self.name))
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

/// Maps `127.0.0.1:PORT` to backend names.
pub fn addr_names(backends: &[Backend]) -> BTreeMap<String, String> {
    backends
        .iter()
        .map(|b| (b.addr(), b.name.clone()))
        .collect()
}
