//! Test backend server: answers `NAME\n`, misbehaves on request
//!
//! One thread per connection, HTTP/1.1 keep-alive, `Content-Length` bodies.
//!
//! - Normal answer: `200`, header `X-Backend: NAME`, body `NAME\n`.
//! - Per-request overrides in the query string: `delay=MS` (sleep first),
//!   `status=CODE`, `close=1` (close the connection without answering),
//!   `linger=MS` (sleep after answering, before reading the next request
//!   or closing: a backend thread slow to come back), `body_delay=MS`
//!   (send the header at once, the body MS later), `setsid=V` (answer
//!   with `Set-Cookie: sid=V; Path=/`, a session the application starts).
//! - `inflight` counts a request from its arrival to just before its
//!   answer is written (or the connection closed): once nginx has the
//!   answer it may free the peer and send the next request at once, so a
//!   later decrement would count that next request as concurrent (seen on
//!   a loaded machine as 2 in flight on a `max_conns=1` server).
//! - Control endpoints, answered whatever the mode and not counted:
//!   - `GET /_ctl/mode?set=ok|fail500|fail404|close|delay:MS` sets the
//!     default behaviour of later requests (`GET /_ctl/mode` shows it);
//!   - `GET /_ctl/stats` answers `requests=N inflight=M max_inflight=K conns=C`;
//!   - `GET /_ctl/reset` zeroes `requests`, `max_inflight` and `conns`;
//!   - `GET /_ctl/health?set=ok|fail|sick|hang|reset|delay:MS` sets how
//!     `/healthz` answers (see [`Health`]) independently of the traffic.
//! - `GET /healthz`: the health check endpoint, counted in `checks` (not in
//!   `requests`): `200 healthy` by default. A connection whose first
//!   request is `/healthz` is counted in `check_conns` (what kept check
//!   connections save); a request that arrives after the backend shut its
//!   side of the connection (`halfclose`) in `late`.

pub mod process;

use std::fmt;
use std::io::{self, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::http::{read_request, write_response, Request};

/// Idle keep-alive connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest delay a request or mode may ask for.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Default behaviour of a backend for requests without overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer 200.
    Ok,
    /// Answer 500.
    Fail500,
    /// Answer 404.
    Fail404,
    /// Close the connection without answering.
    Close,
    /// Sleep this many milliseconds, then answer 200.
    Delay(u64),
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ok" => Mode::Ok,
            "fail500" => Mode::Fail500,
            "fail404" => Mode::Fail404,
            "close" => Mode::Close,
            _ => match s.strip_prefix("delay:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= MAX_DELAY_MS => Mode::Delay(ms),
                _ => return Err(format!("invalid mode {s:?}")),
            },
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Ok => f.write_str("ok"),
            Mode::Fail500 => f.write_str("fail500"),
            Mode::Fail404 => f.write_str("fail404"),
            Mode::Close => f.write_str("close"),
            Mode::Delay(ms) => write!(f, "delay:{ms}"),
        }
    }
}

/// How `/healthz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `200`, body `healthy`.
    Ok,
    /// `503`, body `unhealthy`.
    Fail,
    /// `200`, body `sick` (for body checks).
    Sick,
    /// Reads the request and never answers (until the checker gives up).
    Hang,
    /// Resets the connection (RST) without answering.
    Reset,
    /// Sleeps this many milliseconds, then answers `200 healthy`.
    Delay(u64),
    /// `200 healthy`, keep-alive, then closes the connection (FIN) without
    /// having said so.
    CloseAfter,
    /// `200 healthy`, keep-alive, for the first check on a connection;
    /// resets (RST) the connection on any later one, without answering.
    ResetNext,
    /// `200 healthy`, keep-alive, then shuts its side of the connection
    /// (FIN) and counts the requests still received on it in `late`.
    HalfClose,
    /// `200 healthy` with `Connection: close`, but keeps the connection
    /// open and serves what comes on it.
    OkClose,
    /// `HTTP/1.0 200` without keep-alive, the connection kept open.
    Http10,
    /// `200` with a chunked body `healthy\n`, keep-alive.
    Chunked,
}

impl FromStr for Health {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ok" => Health::Ok,
            "fail" => Health::Fail,
            "sick" => Health::Sick,
            "hang" => Health::Hang,
            "reset" => Health::Reset,
            "closeafter" => Health::CloseAfter,
            "resetnext" => Health::ResetNext,
            "halfclose" => Health::HalfClose,
            "okclose" => Health::OkClose,
            "http10" => Health::Http10,
            "chunked" => Health::Chunked,
            _ => match s.strip_prefix("delay:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms <= MAX_DELAY_MS => Health::Delay(ms),
                _ => return Err(format!("invalid health {s:?}")),
            },
        })
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Ok => f.write_str("ok"),
            Health::Fail => f.write_str("fail"),
            Health::Sick => f.write_str("sick"),
            Health::Hang => f.write_str("hang"),
            Health::Reset => f.write_str("reset"),
            Health::Delay(ms) => write!(f, "delay:{ms}"),
            Health::CloseAfter => f.write_str("closeafter"),
            Health::ResetNext => f.write_str("resetnext"),
            Health::HalfClose => f.write_str("halfclose"),
            Health::OkClose => f.write_str("okclose"),
            Health::Http10 => f.write_str("http10"),
            Health::Chunked => f.write_str("chunked"),
        }
    }
}

/// Counters of one backend. All `Relaxed`: they are independent statistics
/// read only for reporting, and no other memory is published through them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received (control requests excluded), monotonic until reset.
    pub requests: AtomicU64,
    /// Requests being handled now.
    pub inflight: AtomicU64,
    /// Highest `inflight` seen since start or reset.
    pub max_inflight: AtomicU64,
    /// Connections accepted since start or reset.
    pub conns: AtomicU64,
    /// `/healthz` requests since start or reset.
    pub checks: AtomicU64,
    /// Connections whose first request was `/healthz`, since start or reset.
    pub check_conns: AtomicU64,
    /// Requests received after this side shut the connection (`halfclose`).
    pub late: AtomicU64,
    /// Connections counted in `check_conns` open now (not reset).
    pub open_checks: AtomicU64,
}

impl Stats {
    /// The `/_ctl/stats` line.
    pub fn line(&self) -> String {
        format!(
            "requests={} inflight={} max_inflight={} conns={} checks={} check_conns={} late={} open_checks={}",
            self.requests.load(Ordering::Relaxed),
            self.inflight.load(Ordering::Relaxed),
            self.max_inflight.load(Ordering::Relaxed),
            self.conns.load(Ordering::Relaxed),
            self.checks.load(Ordering::Relaxed),
            self.check_conns.load(Ordering::Relaxed),
            self.late.load(Ordering::Relaxed),
            self.open_checks.load(Ordering::Relaxed),
        )
    }
}

/// Parsed `/_ctl/stats` answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub inflight: u64,
    pub max_inflight: u64,
    pub conns: u64,
    pub checks: u64,
    pub check_conns: u64,
    pub late: u64,
    pub open_checks: u64,
}

impl FromStr for StatsSnapshot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = StatsSnapshot::default();
        for kv in s.split_whitespace() {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("bad stats {s:?}"))?;
            let v: u64 = v.parse().map_err(|_| format!("bad stats {s:?}"))?;
            match k {
                "requests" => out.requests = v,
                "inflight" => out.inflight = v,
                "max_inflight" => out.max_inflight = v,
                "conns" => out.conns = v,
                "checks" => out.checks = v,
                "check_conns" => out.check_conns = v,
                "late" => out.late = v,
                "open_checks" => out.open_checks = v,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Shared state of one backend.
#[derive(Debug)]
pub struct Backend {
    name: String,
    mode: Mutex<Mode>,
    health: Mutex<Health>,
    stats: Stats,
}

/// Decrements `inflight` when a request ends, however it ends.
struct Inflight<'a>(&'a Stats);

impl<'a> Inflight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = stats.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_inflight.fetch_max(now, Ordering::Relaxed);
        Inflight(stats)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    delay_ms: u64,
    status: u16,
    close: bool,
    linger_ms: u64,
    body_delay_ms: u64,
}

impl Backend {
    /// A backend answering as `name`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Backend {
            name: name.to_owned(),
            mode: Mutex::new(Mode::Ok),
            health: Mutex::new(Health::Ok),
            stats: Stats::default(),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current default mode.
    pub fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the default mode.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// How `/healthz` answers now.
    pub fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how `/healthz` answers.
    pub fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Accepts connections on `listener` forever on a new thread, one
    /// thread per connection.
    pub fn spawn(self: &Arc<Self>, listener: TcpListener) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let me = Arc::clone(self);
        thread::Builder::new()
            .name(format!("accept-{}", self.name))
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else {
                        // EMFILE and friends: back off briefly, keep serving.
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    me.stats.conns.fetch_add(1, Ordering::Relaxed);
                    let conn = Arc::clone(&me);
                    let spawned = thread::Builder::new()
                        .name(format!("conn-{}", me.name))
                        .spawn(move || {
                            let _ = conn.serve(stream);
                        });
                    if spawned.is_err() {
                        // Out of threads: the stream was dropped, i.e. closed.
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            })?;
        Ok(addr)
    }

    fn plan(&self, req: &Request) -> Plan {
        let mode = self.mode();
        let mut plan = match mode {
            Mode::Ok => Plan {
                delay_ms: 0,
                status: 200,
                close: false,
                linger_ms: 0,
                body_delay_ms: 0,
            },
            Mode::Fail500 => Plan {
                delay_ms: 0,
                status: 500,
                close: false,
                linger_ms: 0,
                body_delay_ms: 0,
            },
            Mode::Fail404 => Plan {
                delay_ms: 0,
                status: 404,
                close: false,
                linger_ms: 0,
                body_delay_ms: 0,
            },
            Mode::Close => Plan {
                delay_ms: 0,
                status: 200,
                close: true,
                linger_ms: 0,
                body_delay_ms: 0,
            },
            Mode::Delay(ms) => Plan {
                delay_ms: ms,
                status: 200,
                close: false,
                linger_ms: 0,
                body_delay_ms: 0,
            },
        };
        if let Some(ms) = req.query("delay").and_then(|v| v.parse::<u64>().ok()) {
            plan.delay_ms = ms.min(MAX_DELAY_MS);
        }
        if let Some(code) = req.query("status").and_then(|v| v.parse::<u16>().ok()) {
            if (200..600).contains(&code) {
                plan.status = code;
            }
        }
        if req.query("close") == Some("1") {
            plan.close = true;
        }
        if let Some(ms) = req.query("linger").and_then(|v| v.parse::<u64>().ok()) {
            plan.linger_ms = ms.min(MAX_DELAY_MS);
        }
        if let Some(ms) = req.query("body_delay").and_then(|v| v.parse::<u64>().ok()) {
            plan.body_delay_ms = ms.min(MAX_DELAY_MS);
        }
        plan
    }

    /// Answers a control request: `(status, body)`.
    fn control(&self, req: &Request) -> (u16, String) {
        match req.path() {
            "/_ctl/mode" => match req.query("set") {
                None => (200, format!("{}\n", self.mode())),
                Some(v) => match v.parse::<Mode>() {
                    Ok(m) => {
                        self.set_mode(m);
                        (200, format!("{m}\n"))
                    }
                    Err(e) => (400, format!("{e}\n")),
                },
            },
            "/_ctl/health" => match req.query("set") {
                None => (200, format!("{}\n", self.health())),
                Some(v) => match v.parse::<Health>() {
                    Ok(h) => {
                        self.set_health(h);
                        (200, format!("{h}\n"))
                    }
                    Err(e) => (400, format!("{e}\n")),
                },
            },
            "/_ctl/stats" => (200, format!("{}\n", self.stats.line())),
            "/_ctl/reset" => {
                self.stats.requests.store(0, Ordering::Relaxed);
                self.stats.conns.store(0, Ordering::Relaxed);
                self.stats.checks.store(0, Ordering::Relaxed);
                self.stats.check_conns.store(0, Ordering::Relaxed);
                self.stats.late.store(0, Ordering::Relaxed);
                let now = self.stats.inflight.load(Ordering::Relaxed);
                self.stats.max_inflight.store(now, Ordering::Relaxed);
                (200, format!("{}\n", self.stats.line()))
            }
            _ => (404, "unknown control endpoint\n".to_owned()),
        }
    }

    /// The `/healthz` answers about keeping connections: whether `health`
    /// was one of them (then answered, and the connection closed when it
    /// says so: an `Err` ends [`Backend::serve`]).
    fn keepalive_health(
        &self,
        health: Health,
        checks_here: u64,
        stream: &TcpStream,
        reader: &mut BufReader<&TcpStream>,
    ) -> io::Result<bool> {
        let closed = || Err(io::Error::other("closed by the backend"));
        let name_hdr = [("X-Backend", self.name.as_str())];
        match health {
            Health::CloseAfter => {
                write_response(&mut &*stream, 200, &name_hdr, b"healthy\n", true)?;
                closed()
            }
            Health::ResetNext if checks_here > 1 => {
                reset(stream);
                closed()
            }
            Health::ResetNext => {
                write_response(&mut &*stream, 200, &name_hdr, b"healthy\n", true)?;
                Ok(true)
            }
            Health::HalfClose => {
                write_response(&mut &*stream, 200, &name_hdr, b"healthy\n", true)?;
                let _ = stream.shutdown(std::net::Shutdown::Write);
                while let Ok(Some(_)) = read_request(reader) {
                    self.stats.late.fetch_add(1, Ordering::Relaxed);
                }
                closed()
            }
            Health::OkClose => {
                write_response(&mut &*stream, 200, &name_hdr, b"healthy\n", false)?;
                Ok(true)
            }
            Health::Http10 => {
                io::Write::write_all(
                    &mut &*stream,
                    b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n",
                )?;
                Ok(true)
            }
            Health::Chunked => {
                io::Write::write_all(
                    &mut &*stream,
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      8\r\nhealthy\n\r\n0\r\n\r\n",
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Serves requests on one connection until it closes, errs or idles;
    /// counts it in `open_checks` meanwhile if it is a check connection.
    fn serve(&self, stream: TcpStream) -> io::Result<()> {
        let mut check_conn = false;
        let r = self.serve_on(stream, &mut check_conn);
        if check_conn {
            self.stats.open_checks.fetch_sub(1, Ordering::Relaxed);
        }
        r
    }

    fn serve_on(&self, stream: TcpStream, check_conn: &mut bool) -> io::Result<()> {
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(&stream);
        let name_hdr = [("X-Backend", self.name.as_str())];
        let mut checks_here = 0u64;
        while let Some(req) = read_request(&mut reader)? {
            let keep = req.keep_alive();
            if checks_here == 0 && !*check_conn && req.path() == "/healthz" {
                *check_conn = true;
                self.stats.check_conns.fetch_add(1, Ordering::Relaxed);
                self.stats.open_checks.fetch_add(1, Ordering::Relaxed);
            }
            if req.path().starts_with("/_ctl/") {
                let (status, body) = self.control(&req);
                write_response(&mut &stream, status, &name_hdr, body.as_bytes(), keep)?;
            } else if req.path() == "/healthz" {
                self.stats.checks.fetch_add(1, Ordering::Relaxed);
                checks_here += 1;
                let health = self.health();
                if self.keepalive_health(health, checks_here, &stream, &mut reader)? {
                    if !keep {
                        let _ = stream.shutdown(std::net::Shutdown::Write);
                        return Ok(());
                    }
                    continue;
                }
                let (status, body) = match health {
                    Health::Ok => (200, "healthy\n"),
                    Health::Fail => (503, "unhealthy\n"),
                    Health::Sick => (200, "sick\n"),
                    Health::Delay(ms) => {
                        thread::sleep(Duration::from_millis(ms));
                        (200, "healthy\n")
                    }
                    Health::Hang => {
                        // Until the checker closes (or the idle timeout).
                        let mut buf = [0u8; 64];
                        while matches!(io::Read::read(&mut &stream, &mut buf), Ok(n) if n > 0) {}
                        return Ok(());
                    }
                    Health::Reset => {
                        reset(&stream);
                        return Ok(());
                    }
                    _ => return Ok(()),
                };
                write_response(&mut &stream, status, &name_hdr, body.as_bytes(), keep)?;
            } else {
                let inflight = Inflight::enter(&self.stats);
                let plan = self.plan(&req);
                if plan.delay_ms > 0 {
                    thread::sleep(Duration::from_millis(plan.delay_ms));
                }
                // Out of flight just before nginx can see the end of the
                // request (the answer or the close): it may free the peer
                // and send the next one at once (see the module note).
                if plan.close {
                    drop(inflight);
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
                let body = format!("{}\n", self.name);
                let body = if req.method == "HEAD" {
                    ""
                } else {
                    body.as_str()
                };
                drop(inflight);
                // `?setsid=V`: the server starts a session (`sid=V`), as an
                // application issuing its own session cookie would.
                let cookie = req.query("setsid").map(|v| format!("sid={v}; Path=/"));
                let mut headers = name_hdr.to_vec();
                if let Some(c) = &cookie {
                    headers.push(("Set-Cookie", c.as_str()));
                }
                if plan.body_delay_ms > 0 {
                    // The head now, the body later.
                    let mut answer = Vec::new();
                    write_response(&mut answer, plan.status, &headers, body.as_bytes(), keep)?;
                    let (head, rest) = answer.split_at(answer.len() - body.len());
                    (&stream).write_all(head)?;
                    thread::sleep(Duration::from_millis(plan.body_delay_ms));
                    (&stream).write_all(rest)?;
                } else {
                    write_response(&mut &stream, plan.status, &headers, body.as_bytes(), keep)?;
                }
                if plan.linger_ms > 0 {
                    thread::sleep(Duration::from_millis(plan.linger_ms));
                }
            }
            if !keep {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Makes the close of `stream` a reset (RST) instead of a FIN: linger
/// on, 0 s (the reset is sent when the last handle is dropped).
pub fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor owned by `stream`, and a pointer to
    // a live `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            core::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
