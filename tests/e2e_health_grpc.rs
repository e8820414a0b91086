//! End-to-end: gRPC health checks (`ha_check type=grpc`): real nginx with
//! 4 workers against real gRPC health servers on 127.0.0.1
//! ([`hab_testkit::grpc::GrpcHealth`]: `grpc.health.v1.Health/Check` in
//! Debian's python3-grpcio, which records every call it receives).
//!
//! A SERVING server passes (`last_reason` "passed"); the server saw
//! `/grpc.health.v1.Health/Check` with the service of `grpc_service=` (""
//! without it), the `:authority` of `host=` (the server's address without
//! it), each check on a new connection, and `port=` reaches it behind
//! another server's address. A service turned NOT_SERVING,
//! SERVICE_UNKNOWN or UNKNOWN fails with "not serving (...)" and passes
//! again once SERVING; a slow answer is a "timeout". An unknown service
//! fails with "grpc-status 5", a server without the health service with
//! "grpc-status 12", which `grpc_status=12` accepts (and `grpc_status=14`
//! an UNAVAILABLE one; with it a SERVING answer still passes, a
//! NOT_SERVING one still fails). An HTTP/1.1 server (nginx) and an HTTP/2
//! server that breaks the protocol fail with "HTTP/2 protocol error", one
//! that answers `:status 500` with "status 500", one that closes without
//! a byte (hab-backend) with "no response". TLS checks (`tls`) pass
//! against a server with a self-signed certificate. A killed server fails
//! with "connection refused" and passes once restarted. One prober per
//! server across the workers: the checks a server gets over a window are
//! about window / interval, not 4 times that, also after two workers
//! died. A reload that changes `grpc_service=` asks for the new service.
//! And the `nginx -t` errors: `grpc_service=`/`grpc_status=` without
//! type=grpc, HTTP-only parameters and `ha_check_header`/`ha_check_body`
//! with it, and `grpc_status=` out of 1..16 (error texts matched loosely).
//!
//! Time bounds come from the configuration (interval, timeout, fails)
//! plus [`SLACK`]; every loop is bounded.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::api_peer;
use hab_testkit::backend::process::Backend;
use hab_testkit::grpc::{grpc_or_skip, GrpcCall, GrpcHealth, GrpcOptions};
use hab_testkit::nginx::{checked_upstreams, nginx_or_skip, serial, stock_mode, Nginx, WORKERS};
use hab_testkit::port::{free_port, refused_addr};
use hab_testkit::proc::wait_until;
use serde_json::Value;

/// Polling, nginx's timers and a Python server on a loaded machine.
const SLACK: Duration = Duration::from_millis(2500);

const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 500;

/// Checks every 500 ms, a verdict on each one.
const CHECK: &str = "ha_check type=grpc interval=500ms timeout=500ms fails=1 passes=1";

const METHOD: &str = "/grpc.health.v1.Health/Check";

/// A change of verdict: the check under way may have started before the
/// change (an interval and its timeout), then the next one; and the slack.
fn verdict() -> Duration {
    Duration::from_millis(2 * (INTERVAL_MS + TIMEOUT_MS)) + SLACK
}

/// Both nginx with the module and the gRPC server can run.
fn ready_or_skip() -> bool {
    nginx_or_skip() && !stock_mode() && grpc_or_skip()
}

/// Upstreams `(name, ha_check line, server addresses)`, the API at `/api/`.
fn block(port: u16, upstreams: &[(&str, String, Vec<String>)]) -> String {
    checked_upstreams(port, false, upstreams)
}

/// The API's entry of `addr` in `upstream`.
fn peer(port: u16, upstream: &str, addr: &str) -> Value {
    api_peer(port, upstream, addr)
}

/// Waits (at most `limit`) until `addr` is in `state` with `reason` as its
/// last check's reason; panics with what the API and the log said.
fn wait_state(ngx: &Nginx, upstream: &str, addr: &str, state: &str, reason: &str, limit: Duration) {
    let port = ngx.port();
    let t = Instant::now();
    let mut p = Value::Null;
    let seen = wait_until(limit, || {
        p = peer(port, upstream, addr);
        p["state"] == state && p["health_checks"]["last_reason"] == reason
    });
    assert!(
        seen,
        "{upstream} {addr}: want {state} ({reason:?}) within {limit:?}, after {:?}: {p}\n\
         error.log (checks):\n{}",
        t.elapsed(),
        check_lines(ngx)
    );
}

/// The error log's lines about checks and the server states.
fn check_lines(ngx: &Nginx) -> String {
    ngx.error_log()
        .lines()
        .filter(|l| {
            l.contains("check")
                || l.contains("unhealthy")
                || l.contains("healthy")
                || l.contains("[alert]")
                || l.contains("[crit]")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (at most `limit`) until `server` received `n` calls; returns them.
fn wait_calls(server: &GrpcHealth, n: usize, limit: Duration) -> Vec<GrpcCall> {
    let mut calls = Vec::new();
    wait_until(limit, || {
        calls = server.calls();
        calls.len() >= n
    });
    assert!(
        calls.len() >= n,
        "{}: {} calls within {limit:?}, wanted {n}: {calls:?}",
        server.addr(),
        calls.len()
    );
    calls
}

/// Each call is a Check for `service`, with `authority` (`None`: the
/// server's address, `127.0.0.1` with or without its port), each on a
/// connection of its own (a client port used once).
fn assert_calls(calls: &[GrpcCall], service: &str, authority: Option<&str>, port: u16) {
    for c in calls {
        assert_eq!(c.method, METHOD, "{c:?}");
        assert_eq!(c.service.as_deref(), Some(service), "{c:?}");
        // The one encoding of HealthCheckRequest{service}: proto3 leaves
        // an empty string out (`0a 00` decodes the same, allowed too).
        let req = c.request.clone().unwrap_or_default();
        if service.is_empty() {
            assert!(req.is_empty() || req == b"\x0a\x00", "{c:?}");
        } else {
            let mut want = vec![0x0a, service.len() as u8];
            want.extend_from_slice(service.as_bytes());
            assert_eq!(req, want, "{c:?}");
        }
        let got = c.authority.as_deref().unwrap_or("");
        match authority {
            Some(a) => assert_eq!(got, a, "{c:?}"),
            None => assert!(
                got == "127.0.0.1" || got == format!("127.0.0.1:{port}"),
                "authority {got:?}, want the server's address: {c:?}"
            ),
        }
    }
    let peers: BTreeSet<&str> = calls.iter().filter_map(|c| c.peer.as_deref()).collect();
    assert_eq!(
        peers.len(),
        calls.len(),
        "a new connection per gRPC check: {calls:?}"
    );
}

#[test]
fn serving_servers_pass_and_see_the_service_and_authority() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let plain = GrpcHealth::plain();
    let named = GrpcHealth::plain();
    named.set("app.Web", "SERVING");
    let hosted = GrpcHealth::plain();
    // port=: the upstream's server is an HTTP backend, checked on the
    // gRPC server's port.
    let behind = GrpcHealth::plain();
    let http = Backend::start("http");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[
                ("plain", CHECK.to_owned(), vec![plain.addr()]),
                (
                    "named",
                    format!("{CHECK} grpc_service=app.Web"),
                    vec![named.addr()],
                ),
                (
                    "hosted",
                    format!("{CHECK} host=grpc.example"),
                    vec![hosted.addr()],
                ),
                (
                    "ported",
                    format!("{CHECK} port={}", behind.port),
                    vec![http.addr()],
                ),
            ],
        ),
        WORKERS,
    );
    for (u, s) in [("plain", &plain), ("named", &named), ("hosted", &hosted)] {
        wait_state(&ngx, u, &s.addr(), "up", "passed", verdict());
    }
    wait_state(&ngx, "ported", &http.addr(), "up", "passed", verdict());
    let three = Duration::from_millis(3 * INTERVAL_MS) + SLACK;
    assert_calls(&wait_calls(&plain, 3, three), "", None, plain.port);
    assert_calls(&wait_calls(&named, 3, three), "app.Web", None, named.port);
    assert_calls(
        &wait_calls(&hosted, 3, three),
        "",
        Some("grpc.example"),
        hosted.port,
    );
    let calls = wait_calls(&behind, 3, three);
    for c in &calls {
        assert_eq!(c.service.as_deref(), Some(""), "{c:?}");
    }
    // The HTTP backend saw no check.
    assert_eq!(http.stats().checks, 0, "{:?}", http.stats());
    let h = &peer(port, "plain", &plain.addr())["health_checks"];
    assert_eq!(h["last_result"], "passed", "{h}");
    assert_eq!(h["fails"], 0, "{h}");
    assert!(ngx.crashes().is_empty());
}

#[test]
fn a_service_not_serving_fails_and_passes_again_once_serving() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let s = GrpcHealth::plain();
    s.set("app", "SERVING");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[("app", format!("{CHECK} grpc_service=app"), vec![s.addr()])],
        ),
        WORKERS,
    );
    let addr = s.addr();
    wait_state(&ngx, "app", &addr, "up", "passed", verdict());
    for status in ["NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN"] {
        s.set("app", status);
        let reason = format!("not serving ({status})");
        wait_state(&ngx, "app", &addr, "unhealthy", &reason, verdict());
        s.set("app", "SERVING");
        wait_state(&ngx, "app", &addr, "up", "passed", verdict());
    }
    // An answer slower than the timeout.
    s.set("app", &format!("hang {}", 4 * TIMEOUT_MS));
    wait_state(&ngx, "app", &addr, "unhealthy", "timeout", verdict());
    s.set("app", "SERVING");
    wait_state(
        &ngx,
        "app",
        &addr,
        "up",
        "passed",
        verdict() + Duration::from_millis(4 * TIMEOUT_MS),
    );
    let log = ngx.error_log();
    assert!(
        log.lines()
            .any(|l| l.contains("is unhealthy") && l.contains("NOT_SERVING")),
        "no unhealthy line naming NOT_SERVING:\n{}",
        check_lines(&ngx)
    );
    assert!(ngx.crashes().is_empty());
}

#[test]
fn grpc_status_answers_fail_unless_grpc_status_accepts_them() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    // The service asked for is unknown: NOT_FOUND (5).
    let unknown = GrpcHealth::plain();
    // No health service: the grpc library answers UNIMPLEMENTED (12).
    let none = || {
        GrpcHealth::start(GrpcOptions {
            health: false,
            ..GrpcOptions::default()
        })
    };
    let (none1, none2) = (none(), none());
    // UNAVAILABLE (14), accepted by grpc_status=14.
    let unavailable = GrpcHealth::plain();
    unavailable.set("", "abort 14");
    // NOT_FOUND is not what grpc_status=12 accepts.
    let unknown12 = GrpcHealth::plain();
    // With grpc_status=12, a SERVING answer still passes, a NOT_SERVING
    // one (grpc-status 0) still fails.
    let serving12 = GrpcHealth::plain();
    let not_serving12 = GrpcHealth::plain();
    not_serving12.set("", "NOT_SERVING");
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[
                (
                    "unknown",
                    format!("{CHECK} grpc_service=nobody"),
                    vec![unknown.addr()],
                ),
                ("none", CHECK.to_owned(), vec![none1.addr()]),
                (
                    "none12",
                    format!("{CHECK} grpc_status=12"),
                    vec![none2.addr()],
                ),
                (
                    "unavailable14",
                    format!("{CHECK} grpc_status=14"),
                    vec![unavailable.addr()],
                ),
                (
                    "unknown12",
                    format!("{CHECK} grpc_service=nobody grpc_status=12"),
                    vec![unknown12.addr()],
                ),
                (
                    "serving12",
                    format!("{CHECK} grpc_status=12"),
                    vec![serving12.addr()],
                ),
                (
                    "notserving12",
                    format!("{CHECK} grpc_status=12"),
                    vec![not_serving12.addr()],
                ),
            ],
        ),
        WORKERS,
    );
    let v = verdict();
    wait_state(
        &ngx,
        "unknown",
        &unknown.addr(),
        "unhealthy",
        "grpc-status 5",
        v,
    );
    wait_state(
        &ngx,
        "none",
        &none1.addr(),
        "unhealthy",
        "grpc-status 12",
        v,
    );
    wait_state(&ngx, "none12", &none2.addr(), "up", "passed", v);
    wait_state(
        &ngx,
        "unavailable14",
        &unavailable.addr(),
        "up",
        "passed",
        v,
    );
    wait_state(
        &ngx,
        "unknown12",
        &unknown12.addr(),
        "unhealthy",
        "grpc-status 5",
        v,
    );
    wait_state(&ngx, "serving12", &serving12.addr(), "up", "passed", v);
    wait_state(
        &ngx,
        "notserving12",
        &not_serving12.addr(),
        "unhealthy",
        "not serving (NOT_SERVING)",
        v,
    );
    // The unknown service was asked for by its name.
    let calls = wait_calls(&unknown, 1, v);
    assert_eq!(calls[0].service.as_deref(), Some("nobody"), "{calls:?}");
    // Once the service is known and SERVING, it passes.
    unknown.set("nobody", "SERVING");
    wait_state(&ngx, "unknown", &unknown.addr(), "up", "passed", v);
    assert!(ngx.crashes().is_empty());
}

/// An HTTP/2 server in a thread, for answers grpc would not send: after
/// its SETTINGS it reads the client's frames until one ends a stream,
/// then sends `answer(stream id)`, and keeps the connection until the
/// client closes it (or 10 s). Until dropped (or 120 s).
struct H2Raw {
    addr: String,
    stop: Arc<AtomicBool>,
    conns: Arc<AtomicU64>,
}

impl H2Raw {
    fn start(answer: fn(u32) -> Vec<u8>) -> H2Raw {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&conns));
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match l.accept() {
                    Ok((c, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        thread::spawn(move || h2_serve(c, answer));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        H2Raw { addr, stop, conns }
    }
}

impl Drop for H2Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn h2_serve(mut c: TcpStream, answer: fn(u32) -> Vec<u8>) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    // Our SETTINGS (none), as a server starts.
    if c.write_all(&frame(4, 0, 0, &[])).is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut at = 0;
    let mut preface = false;
    // At most 64 KiB before the request's end.
    while buf.len() < 65536 {
        match c.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
        if !preface {
            if buf.len() < 24 {
                continue;
            }
            if &buf[..24] != b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
                return;
            }
            preface = true;
            at = 24;
        }
        let mut ended = None;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            if buf.len() < at + 9 + len {
                break;
            }
            let (kind, flags) = (buf[at + 3], buf[at + 4]);
            let stream = u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                & 0x7fff_ffff;
            // The client's SETTINGS: acknowledged.
            if kind == 4 && flags & 1 == 0 && c.write_all(&frame(4, 1, 0, &[])).is_err() {
                return;
            }
            if (kind == 0 || kind == 1) && flags & 1 != 0 && stream != 0 {
                ended = Some(stream);
            }
            at += 9 + len;
        }
        if let Some(stream) = ended {
            if c.write_all(&answer(stream)).is_err() {
                return;
            }
            // Until the client closes.
            while let Ok(n) = c.read(&mut chunk) {
                if n == 0 {
                    return;
                }
            }
            return;
        }
    }
}

#[test]
fn non_grpc_answers_fail_with_their_reason() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    // HTTP/1.1 servers: nginx answers the HTTP/2 preface with an HTTP/1.1
    // error page; hab-backend closes without a byte (its reader refuses
    // the request line), which is "no response" as for any server.
    let h1 = format!("127.0.0.1:{}", free_port());
    let http = Backend::start("http1");
    // HTTP/2 with `:status 500` (HPACK static index 14), ending the stream.
    let status500 = H2Raw::start(|s| frame(1, 0x5, s, &[0x8e]));
    // HTTP/2 broken: a header block with HPACK index 0, a decoding error
    // (RFC 7541 6.1), a connection error (grpc's client gives up on it).
    let broken = H2Raw::start(|s| frame(1, 0x5, s, &[0x80]));
    let port = free_port();
    let mut conf = block(
        port,
        &[
            ("nginx1", CHECK.to_owned(), vec![h1.clone()]),
            ("http1", CHECK.to_owned(), vec![http.addr()]),
            ("status500", CHECK.to_owned(), vec![status500.addr.clone()]),
            ("broken", CHECK.to_owned(), vec![broken.addr.clone()]),
        ],
    );
    conf.push_str(&format!(
        "    server {{
        listen {h1};
        location / {{ return 200 \"ok\\n\"; }}
    }}
"
    ));
    let ngx = Nginx::start(&conf, WORKERS);
    let v = verdict();
    wait_state(&ngx, "nginx1", &h1, "unhealthy", "HTTP/2 protocol error", v);
    wait_state(&ngx, "http1", &http.addr(), "unhealthy", "no response", v);
    wait_state(
        &ngx,
        "status500",
        &status500.addr,
        "unhealthy",
        "status 500",
        v,
    );
    wait_state(
        &ngx,
        "broken",
        &broken.addr,
        "unhealthy",
        "HTTP/2 protocol error",
        v,
    );
    // Checked at their pace, each on a new connection: a handful of
    // connections, not one a tick.
    thread::sleep(Duration::from_millis(4 * INTERVAL_MS));
    for s in [&status500, &broken] {
        let n = s.conns.load(Ordering::Relaxed);
        assert!(n >= 2, "{}: {n} connections", s.addr);
    }
    assert!(ngx.crashes().is_empty());
}

#[test]
fn tls_checks_pass_against_a_self_signed_server() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let dir = hab_testkit::nginx::scratch_dir();
    let (cert, key) = hab_testkit::nginx::self_signed_cert(&dir);
    let opts = GrpcOptions {
        tls: Some((cert, key)),
        health: true,
    };
    let tls = GrpcHealth::start(opts.clone());
    tls.set("app", "SERVING");
    let tls_host = GrpcHealth::start(opts);
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[
                (
                    "tls",
                    format!("{CHECK} tls grpc_service=app"),
                    vec![tls.addr()],
                ),
                (
                    "tlshost",
                    format!("{CHECK} tls host=localhost"),
                    vec![tls_host.addr()],
                ),
            ],
        ),
        WORKERS,
    );
    wait_state(&ngx, "tls", &tls.addr(), "up", "passed", verdict());
    wait_state(&ngx, "tlshost", &tls_host.addr(), "up", "passed", verdict());
    let three = Duration::from_millis(3 * INTERVAL_MS) + SLACK;
    assert_calls(&wait_calls(&tls, 3, three), "app", None, tls.port);
    assert_calls(
        &wait_calls(&tls_host, 3, three),
        "",
        Some("localhost"),
        tls_host.port,
    );
    // The service turned NOT_SERVING: the verdict comes through TLS too.
    tls.set("app", "NOT_SERVING");
    wait_state(
        &ngx,
        "tls",
        &tls.addr(),
        "unhealthy",
        "not serving (NOT_SERVING)",
        verdict(),
    );
    assert!(ngx.crashes().is_empty());
    drop(ngx);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_server_fails_and_passes_once_restarted() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let mut s = GrpcHealth::plain();
    let other = GrpcHealth::plain();
    let port = free_port();
    let ngx = Nginx::start(
        &block(
            port,
            &[("app", CHECK.to_owned(), vec![s.addr(), other.addr()])],
        ),
        WORKERS,
    );
    let v = verdict();
    wait_state(&ngx, "app", &s.addr(), "up", "passed", v);
    wait_state(&ngx, "app", &other.addr(), "up", "passed", v);
    s.kill();
    wait_state(&ngx, "app", &s.addr(), "unhealthy", "connection refused", v);
    assert_eq!(peer(port, "app", &other.addr())["state"], "up");
    s.restart();
    wait_state(&ngx, "app", &s.addr(), "up", "passed", v);
    assert!(!s.calls().is_empty());
    // Never checked where no server listens: refused from the start.
    let refused = refused_addr();
    let ngx2_port = free_port();
    drop(ngx);
    let ngx2 = Nginx::start(
        &block(
            ngx2_port,
            &[("gone", CHECK.to_owned(), vec![refused.clone()])],
        ),
        WORKERS,
    );
    wait_state(
        &ngx2,
        "gone",
        &refused,
        "unhealthy",
        "connection refused",
        v,
    );
    assert!(ngx2.crashes().is_empty());
}

/// The Check calls `servers` receive over `window`: each about window /
/// interval (half of it less one at least, half again more and two at
/// most), which one prober per server gives and one per worker does not.
fn assert_one_prober(servers: &[(&str, &GrpcHealth)], interval_ms: u64, window: Duration) {
    let before: Vec<usize> = servers.iter().map(|(_, s)| s.count()).collect();
    let t = Instant::now();
    thread::sleep(window);
    let after: Vec<usize> = servers.iter().map(|(_, s)| s.count()).collect();
    let took = t.elapsed().as_millis() as f64;
    let expected = took / interval_ms as f64;
    let (hi, lo) = (expected * 1.5 + 2.0, expected * 0.5 - 1.0);
    for (((name, _), b), a) in servers.iter().zip(&before).zip(&after) {
        let n = (a - b) as f64;
        assert!(
            n <= hi && n >= lo,
            "{name}: {n} checks in {took} ms at interval {interval_ms} ms: want \
             {lo:.0}..={hi:.0} (one prober, not {WORKERS})"
        );
    }
}

#[test]
fn one_prober_per_server_across_the_workers() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let interval_ms: u64 = 200;
    let a = GrpcHealth::plain();
    let b = GrpcHealth::plain();
    b.set("app", "NOT_SERVING");
    let check = format!("ha_check type=grpc interval={interval_ms}ms timeout={interval_ms}ms");
    let port = free_port();
    let mut ngx = Nginx::start(
        &block(
            port,
            &[
                ("ok", format!("{check} fails=3 passes=1"), vec![a.addr()]),
                (
                    "failing",
                    format!("{check} fails=1 passes=1 grpc_service=app"),
                    vec![b.addr()],
                ),
            ],
        ),
        WORKERS,
    );
    wait_state(&ngx, "ok", &a.addr(), "up", "passed", verdict());
    wait_state(
        &ngx,
        "failing",
        &b.addr(),
        "unhealthy",
        "not serving (NOT_SERVING)",
        verdict(),
    );
    let servers = [("ok", &a), ("failing", &b)];
    assert_one_prober(&servers, interval_ms, Duration::from_secs(5));
    // Two workers die (whichever checked): the others and their
    // replacements go on checking, still once per interval.
    let old = ngx.worker_pids();
    for &pid in &old[..2] {
        ngx.kill_worker(pid);
    }
    let replaced = wait_until(Duration::from_secs(15), || {
        let now = ngx.worker_pids();
        now.len() == WORKERS && old[..2].iter().all(|p| !now.contains(p))
    });
    assert!(replaced, "workers {old:?} -> {:?}", ngx.worker_pids());
    thread::sleep(Duration::from_millis(2 * interval_ms));
    assert_one_prober(&servers, interval_ms, Duration::from_secs(3));
    assert_eq!(peer(port, "ok", &a.addr())["state"], "up");
    assert!(ngx.crashes().is_empty());
}

#[test]
fn a_reload_changes_the_service_asked_for() {
    if !ready_or_skip() {
        return;
    }
    let _serial = serial();
    let s = GrpcHealth::plain();
    s.set("a", "SERVING");
    s.set("b", "NOT_SERVING");
    let port = free_port();
    let conf = |service: &str| {
        block(
            port,
            &[(
                "app",
                format!("{CHECK} grpc_service={service}"),
                vec![s.addr()],
            )],
        )
    };
    let mut ngx = Nginx::start(&conf("a"), WORKERS);
    wait_state(&ngx, "app", &s.addr(), "up", "passed", verdict());
    ngx.reload_with(&conf("b"));
    wait_state(
        &ngx,
        "app",
        &s.addr(),
        "unhealthy",
        "not serving (NOT_SERVING)",
        verdict(),
    );
    // Once the old workers are gone, only "b" is asked for.
    thread::sleep(Duration::from_millis(2 * (INTERVAL_MS + TIMEOUT_MS)));
    s.clear();
    let calls = wait_calls(&s, 2, Duration::from_millis(3 * INTERVAL_MS) + SLACK);
    assert_calls(&calls, "b", None, s.port);
    assert!(ngx.crashes().is_empty());
}

#[test]
fn bad_grpc_checks_are_refused_by_nginx_t() {
    if !nginx_or_skip() || stock_mode() {
        return;
    }
    let conf = |lines: &str| {
        format!(
            "    upstream up {{
        ha_balance round_robin;
        {lines}
        server 127.0.0.1:1;
    }}
    server {{
        listen 127.0.0.1:1;
        location / {{ proxy_pass http://up; }}
    }}
"
        )
    };
    const GRPC_ONLY: &str = "\"grpc_service=\" and \"grpc_status=\" need type=grpc";
    const HTTP_ONLY: &str = "\"keepalive_time=\" and \"method=\" need type=http (a gRPC check's";
    const REQUEST: &str = "ha_check_header and ha_check_body need \"ha_check\" with type=http";
    // (lines, the line nginx names, what its [emerg] says)
    let cases: &[(&str, &str, &str)] = &[
        // gRPC parameters without type=grpc
        ("ha_check grpc_service=app;", "ha_check", GRPC_ONLY),
        (
            "ha_check type=http grpc_service=app;",
            "ha_check",
            GRPC_ONLY,
        ),
        ("ha_check type=tcp grpc_status=12;", "ha_check", GRPC_ONLY),
        ("ha_check grpc_status=12;", "ha_check", GRPC_ONLY),
        // HTTP-only parameters with type=grpc
        ("ha_check type=grpc uri=/healthz;", "ha_check", HTTP_ONLY),
        ("ha_check type=grpc status=200;", "ha_check", HTTP_ONLY),
        ("ha_check type=grpc body=ok;", "ha_check", HTTP_ONLY),
        ("ha_check type=grpc method=GET;", "ha_check", HTTP_ONLY),
        (
            "ha_check type=grpc keepalive_time=5s;",
            "ha_check",
            HTTP_ONLY,
        ),
        ("ha_check uri=/healthz type=grpc;", "ha_check", HTTP_ONLY),
        // the check request is gRPC's own
        (
            "ha_check type=grpc;\n        ha_check_header \"X-A: b\";",
            "upstream up {",
            REQUEST,
        ),
        (
            "ha_check type=grpc;\n        ha_check_body \"a\";",
            "upstream up {",
            REQUEST,
        ),
        // grpc_status= is 1..16
        (
            "ha_check type=grpc grpc_status=0;",
            "ha_check",
            "invalid parameter \"grpc_status=0\"",
        ),
        (
            "ha_check type=grpc grpc_status=17;",
            "ha_check",
            "invalid parameter \"grpc_status=17\"",
        ),
        (
            "ha_check type=grpc grpc_status=x;",
            "ha_check",
            "invalid parameter \"grpc_status=x\"",
        ),
        (
            "ha_check type=grpc grpc_status=;",
            "ha_check",
            "invalid parameter \"grpc_status=\"",
        ),
        (
            "ha_check type=grpc grpc_status=-1;",
            "ha_check",
            "invalid parameter \"grpc_status=-1\"",
        ),
    ];
    for (lines, needle, says) in cases {
        Nginx::check_detailed(&conf(lines)).assert_emerg(needle, &[says]);
    }
    // What type=grpc takes.
    for lines in [
        "ha_check type=grpc;",
        "ha_check type=grpc grpc_service=grpc.health.v1.Health;",
        "ha_check type=grpc grpc_status=1;",
        "ha_check type=grpc grpc_status=16;",
        "ha_check type=grpc grpc_service=app grpc_status=12 tls host=grpc.example port=50051 \
         interval=1s timeout=1s fails=2 passes=2;",
    ] {
        let c = Nginx::check_detailed(&conf(lines));
        assert!(c.ok, "{lines}: {}", c.stderr);
    }
}
