//! A gRPC health server in a process of its own, for the gRPC check tests
//!
//! [`GrpcHealth`] runs `grpc_health.py` (beside this file) with Debian's
//! `/usr/bin/python3` and `python3-grpcio`: the standard
//! `grpc.health.v1.Health/Check` on 127.0.0.1, cleartext HTTP/2 or TLS,
//! the status of each service set at run time, every call recorded (the
//! service asked for, the request bytes, the `:authority`). Without the
//! health service the grpc library itself answers UNIMPLEMENTED.
//!
//! The process talks JSON lines on its stdin and stdout; every answer is
//! awaited for at most [`ANSWER`]. It exits when its stdin closes, so it
//! never outlives the test process, and is killed on `Drop`.
//!
//! [`grpc_or_skip`]: whether `/usr/bin/python3` can import `grpc`, with
//! the policy of [`crate::skip`] (a failure under `make test`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::port::free_port;
use crate::skip;

/// The Python the server runs with: Debian's, where `python3-grpcio` is.
pub const PYTHON: &str = "/usr/bin/python3";

/// The longest wait for the server's ready line or a command's answer.
pub const ANSWER: Duration = Duration::from_secs(10);

/// Path of the server script (`testkit/src/grpc_health.py`).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grpc_health.py")
}

/// `Ok` when [`PYTHON`] imports `grpc`; else why not. Asked once a process.
pub fn grpc_available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            let mut child = Command::new(PYTHON)
                .args(["-c", "import grpc"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{PYTHON}: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(s)) if s.success() => return Ok(()),
                    Ok(Some(s)) => return Err(format!("{PYTHON} cannot import grpc ({s})")),
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("{PYTHON} -c 'import grpc' took over 30 s"));
                    }
                    Err(e) => return Err(format!("{PYTHON}: {e}")),
                }
            }
        })
        .clone()
}

/// `true` when the gRPC health server can run; otherwise the policy of
/// [`skip::present_or_skip`]: a failure under `HAB_REQUIRE_NGINX=1`
/// (`make test` installs `python3-grpcio`), else a visible `SKIP` line
/// and `false` (the caller returns early).
pub fn grpc_or_skip() -> bool {
    match grpc_available() {
        Ok(()) => true,
        Err(why) => skip::present_or_skip(
            "python3-grpcio is not installed",
            "run `make deps` (or apt-get install python3-grpcio)",
            &[why],
        ),
    }
}

/// How a [`GrpcHealth`] server runs.
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// TLS with this certificate and key (PEM paths), else cleartext HTTP/2.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether the health service is registered; without it every call is
    /// answered UNIMPLEMENTED (grpc-status 12).
    pub health: bool,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            tls: None,
            health: true,
        }
    }
}

/// One call the server received, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpcCall {
    /// The request's path, `/grpc.health.v1.Health/Check`.
    pub method: String,
    /// The service of the HealthCheckRequest; `None` when the request was
    /// not read (no health service) or not a valid message.
    pub service: Option<String>,
    /// The request message's bytes (without the gRPC frame header), when read.
    pub request: Option<Vec<u8>>,
    /// The `:authority` the call came with, when the server could see it.
    pub authority: Option<String>,
    /// The client's address as grpc says it (`ipv4:127.0.0.1:PORT`).
    pub peer: Option<String>,
    /// The other request headers (`user-agent`, ...), as grpc passes them.
    pub metadata: Vec<(String, String)>,
    /// When it came, seconds since the epoch.
    pub time: f64,
}

impl GrpcCall {
    fn from_json(v: &Value) -> GrpcCall {
        let s = |k: &str| v[k].as_str().map(str::to_owned);
        GrpcCall {
            method: s("method").unwrap_or_default(),
            service: s("service"),
            request: s("request").map(|h| {
                (0..h.len() / 2)
                    .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect()
            }),
            authority: s("authority"),
            peer: s("peer"),
            metadata: v["metadata"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|kv| {
                            (
                                kv[0].as_str().unwrap_or_default().to_owned(),
                                kv[1].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            time: v["time"].as_f64().unwrap_or(0.0),
        }
    }
}

struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// A gRPC health server process on 127.0.0.1:`port`. At start the
/// service `""` (the server as a whole) is SERVING, every other one is
/// unknown (NOT_FOUND). Killed on drop.
pub struct GrpcHealth {
    pub port: u16,
    opts: GrpcOptions,
    proc: Mutex<Option<Proc>>,
}

impl std::fmt::Debug for GrpcHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcHealth")
            .field("port", &self.port)
            .field("opts", &self.opts)
            .finish()
    }
}

impl GrpcHealth {
    /// Starts a server on a fresh port.
    pub fn start(opts: GrpcOptions) -> GrpcHealth {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(port, &opts) {
                Ok(p) => {
                    return GrpcHealth {
                        port,
                        opts,
                        proc: Mutex::new(Some(p)),
                    }
                }
                Err(e) => last = e,
            }
        }
        panic!("gRPC health server: could not start on any port: {last}");
    }

    /// A cleartext server with the health service.
    pub fn plain() -> GrpcHealth {
        GrpcHealth::start(GrpcOptions::default())
    }

    /// `127.0.0.1:PORT`, as the module's API names the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the process runs (not killed).
    pub fn running(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Proc>> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one command and returns its answer; panics when the server
    /// is not running, does not answer within [`ANSWER`] or refuses it.
    fn command(&self, cmd: Value) -> Value {
        let mut guard = self.lock();
        let p = guard
            .as_mut()
            .unwrap_or_else(|| panic!("gRPC server {}: not running", self.port));
        writeln!(p.stdin, "{cmd}")
            .and_then(|()| p.stdin.flush())
            .unwrap_or_else(|e| panic!("gRPC server {}: {cmd}: {e}", self.port));
        let line = p
            .lines
            .recv_timeout(ANSWER)
            .unwrap_or_else(|e| panic!("gRPC server {}: no answer to {cmd}: {e}", self.port));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("gRPC server {}: {cmd}: {e}: {line:?}", self.port));
        assert_eq!(v["ok"], true, "gRPC server {}: {cmd}: {v}", self.port);
        v
    }

    /// Sets what `service` answers: `SERVING`, `NOT_SERVING`,
    /// `SERVICE_UNKNOWN`, `UNKNOWN`; `absent` (NOT_FOUND, grpc-status 5);
    /// `abort N` (grpc-status N); `hang MS` (SERVING after MS ms).
    pub fn set(&self, service: &str, status: &str) {
        self.command(json!({"cmd": "set", "service": service, "status": status}));
    }

    /// Registers (`true`) or removes the health service at run time.
    pub fn set_health(&self, on: bool) {
        self.command(json!({"cmd": "health", "on": on}));
    }

    /// Every call received since start (or [`GrpcHealth::clear`]), in order.
    pub fn calls(&self) -> Vec<GrpcCall> {
        let v = self.command(json!({"cmd": "calls"}));
        v["calls"]
            .as_array()
            .map(|a| a.iter().map(GrpcCall::from_json).collect())
            .unwrap_or_default()
    }

    /// How many calls were received (see [`GrpcHealth::calls`]).
    pub fn count(&self) -> usize {
        self.calls().len()
    }

    /// Forgets the calls received so far.
    pub fn clear(&self) {
        self.command(json!({"cmd": "clear"}));
    }

    /// SIGKILLs the process and reaps it: the port refuses connections
    /// when this returns. Its calls and statuses are lost.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.lock().take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Starts a new process on the same port with the same options
    /// (statuses back to the start's, no calls), retrying for up to 5 s
    /// while the port is busy.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match spawn(self.port, &self.opts) {
                Ok(p) => {
                    *self.lock() = Some(p);
                    return;
                }
                Err(e) if Instant::now() >= deadline => {
                    panic!("gRPC server: cannot start again on {}: {e}", self.port)
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for GrpcHealth {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the script on `port` and waits for its `ready PORT` line.
fn spawn(port: u16, opts: &GrpcOptions) -> Result<Proc, String> {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script()).args(["--port", &port.to_string()]);
    if let Some((cert, key)) = &opts.tls {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if !opts.health {
        cmd.arg("--no-health");
    }
    // grpc core's own log (handshake failures of the tests' bad clients)
    // is noise here: errors that matter come on stdout.
    let mut child = cmd
        .env("GRPC_VERBOSITY", "NONE")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{PYTHON} {}: {e}", script().display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ready = lines.recv_timeout(ANSWER).unwrap_or_default();
    if ready.trim() == format!("ready {port}") {
        return Ok(Proc {
            child,
            stdin,
            lines,
        });
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "port {port}: expected \"ready {port}\", got {ready:?}"
    ))
}
