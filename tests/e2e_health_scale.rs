//! End-to-end: 10,000 servers checked every second by 4 workers (issue 8):
//! the checks keep their schedule (one per server per second in total,
//! whatever the number of workers), none is marked down, and the CPU the
//! workers spend on it is measured from `/proc` and printed (the figures
//! are in docs/benchmarks.md, "Active health checks").
//!
//! The 10,000 `server` lines point at 20 listeners of this test process
//! (500 lines each: nginx allows the same address on several lines, and
//! each line is a server of its own with its own checks); each listener
//! answers `/healthz` and counts.
//!
//! The second test measures what kept connections save (issue 24): the
//! same 10,000 servers against listeners that keep connections, with
//! checks keeping theirs (the default) and with `keepalive_time=0`, one
//! after the other in the same run; both figures are printed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hab_testkit::api::api_call;
use hab_testkit::nginx::{nginx_or_skip, serial, Nginx, WORKERS};
use hab_testkit::port::free_port;
use hab_testkit::proc::wait_until;
use hab_testkit::skip::say;

const SERVERS: usize = 10_000;
const LISTENERS: usize = 20;

/// A listener answering every request `200 healthy` and closing, served
/// by two threads (so that this side is not what limits the rate); counts.
/// The threads block in `accept` (a thread that polled and slept lost its
/// turn for a whole time slice on a busy machine: 179 checks a second with
/// `stress-ng --cpu 2` beside it); they answer until the test process
/// ends, so that the servers stay up while the test reads their state.
fn listener(count: Arc<AtomicU64>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    for _ in 0..2 {
        serve(l.try_clone().expect("clone"), Arc::clone(&count));
    }
    port
}

fn serve(l: TcpListener, count: Arc<AtomicU64>) {
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((mut s, _)) = l.accept() else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            count.fetch_add(1, Ordering::Relaxed);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhealthy\n",
            );
        }
    });
}

/// (user + nice + system, total) clock ticks of the whole machine, from
/// `/proc/stat` (irq, softirq and steal are in the total only).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = f.iter().take(3).sum();
    (busy, f.iter().take(8).sum())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; here 11 and 12.
    n(11) + n(12)
}

#[test]
fn ten_thousand_servers_keep_their_schedule() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let count = Arc::new(AtomicU64::new(0));
    let ports: Vec<u16> = (0..LISTENERS)
        .map(|_| listener(Arc::clone(&count)))
        .collect();
    let servers: String = (0..SERVERS)
        .map(|i| format!("        server 127.0.0.1:{};\n", ports[i % LISTENERS]))
        .collect();
    let port = free_port();
    let http = format!(
        "    upstream big {{
        ha_balance round_robin;
        ha_check interval=1s timeout=900ms fails=2 uri=/healthz;
{servers}    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
        location / {{ proxy_pass http://big; }}
    }}
"
    );
    let ngx = Nginx::start(&http, WORKERS);
    // The first checks are spread over the first interval; then measure.
    thread::sleep(Duration::from_millis(2500));
    let workers = ngx.worker_pids();
    let ticks = |ws: &[i32]| ws.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let self0 = cpu_ticks(std::process::id() as i32);
    let (c0, t0, m0, start) = (
        count.load(Ordering::Relaxed),
        ticks(&workers),
        machine_ticks(),
        Instant::now(),
    );
    thread::sleep(Duration::from_secs(10));
    let (c1, t1, m1, secs) = (
        count.load(Ordering::Relaxed),
        ticks(&workers),
        machine_ticks(),
        start.elapsed().as_secs_f64(),
    );
    // What processes other than nginx's workers and this test (its
    // listeners) took of the machine during the window.
    let own = (t1 - t0) + (cpu_ticks(std::process::id() as i32) - self0);
    let other = (m1.0 - m0.0).saturating_sub(own) as f64 / (m1.1 - m0.1).max(1) as f64;
    let per_sec = (c1 - c0) as f64 / secs;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (t1 - t0) as f64 / hz / secs;
    eprintln!(
        "{SERVERS} servers, 1 s checks, {WORKERS} workers: {per_sec:.0} checks/s, \
         workers' CPU {:.1}% of one core ({:.1} µs per check), other processes {:.0}% of the machine",
        cpu * 100.0,
        cpu * 1e6 / per_sec,
        other * 100.0
    );
    // Never more than one check per server per second, all workers
    // together (the measuring window's edges are worth one check per
    // server, 1/10 of the window, and 5% for the listeners' own timing).
    let slack = SERVERS as f64 * 0.05 + SERVERS as f64 / secs;
    assert!(
        per_sec <= SERVERS as f64 + slack,
        "{per_sec:.0} checks/s: more than one per server per second"
    );
    // And that many, unless other work took the CPU: 10,000 connections a
    // second take about a core (nginx) and half of one (the listeners
    // here), most of a 2-vCPU machine. When other processes took more
    // than a tenth of the machine during the window, a quarter is required
    // (the scheduler did not stall) and the shortfall is reported.
    // Under AddressSanitizer (`make asan`) a check costs more CPU than the
    // machine may have: memory is what that run judges, not the rate.
    let asan = std::env::var_os("HAB_ASAN_NGINX").is_some();
    if other <= 0.10 && !asan {
        assert!(
            per_sec >= SERVERS as f64 - slack,
            "{per_sec:.0} checks/s for {SERVERS} servers checked every second \
             (other processes took {:.0}% of the machine)",
            other * 100.0
        );
    } else {
        hab_testkit::skip::say(&format!(
            "ten_thousand_servers_keep_their_schedule: {}: {per_sec:.0} of {SERVERS} \
             checks/s; only a quarter is required",
            if asan {
                "AddressSanitizer build".to_owned()
            } else {
                format!("other processes took {:.0}% of the machine", other * 100.0)
            }
        ));
        assert!(per_sec >= SERVERS as f64 / 4.0, "{per_sec:.0} checks/s");
    }
    let (status, v) = api_call(port, "GET", "/api/upstreams/big?fields=state", "");
    assert_eq!(status, 200);
    let down = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "up")
        .count();
    assert_eq!(down, 0, "servers not up after 12 s of checks");
    assert!(wait_until(Duration::from_secs(1), || !ngx
        .error_log()
        .contains("is unhealthy")));
    assert!(ngx.crashes().is_empty());
}

/// Listeners that keep connections: `n` of them on two event-loop threads
/// (epoll), answering each request `200 healthy` (Content-Length, no
/// `Connection: close`) and counting requests in `count` and accepted
/// connections in `accepts`. The threads serve until the test process
/// ends.
fn kept_listeners(n: usize, count: &Arc<AtomicU64>, accepts: &Arc<AtomicU64>) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .collect();
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut halves: [Vec<TcpListener>; 2] = [Vec::new(), Vec::new()];
    for (i, l) in listeners.into_iter().enumerate() {
        halves[i % 2].push(l);
    }
    for half in halves {
        let (count, accepts) = (Arc::clone(count), Arc::clone(accepts));
        thread::spawn(move || event_loop(half, &count, &accepts));
    }
    ports
}

fn epoll_add(ep: RawFd, fd: RawFd) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: ep is an epoll descriptor and fd an open socket, both owned
    // by the calling loop; ev is a live epoll_event.
    let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    assert_eq!(rc, 0, "epoll_ctl");
}

fn event_loop(listeners: Vec<TcpListener>, count: &AtomicU64, accepts: &AtomicU64) {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n";
    // SAFETY: epoll_create1 has no preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let by_fd: HashMap<RawFd, TcpListener> =
        listeners.into_iter().map(|l| (l.as_raw_fd(), l)).collect();
    for &fd in by_fd.keys() {
        epoll_add(ep, fd);
    }
    let mut conns: HashMap<RawFd, (TcpStream, Vec<u8>)> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: events has room for the 512 entries passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 512, 1000) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as RawFd;
            if let Some(l) = by_fd.get(&fd) {
                while let Ok((s, _)) = l.accept() {
                    accepts.fetch_add(1, Ordering::Relaxed);
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    epoll_add(ep, s.as_raw_fd());
                    conns.insert(s.as_raw_fd(), (s, Vec::new()));
                }
                continue;
            }
            let Some((s, pending)) = conns.get_mut(&fd) else {
                continue;
            };
            let close = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(k) => pending.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                count.fetch_add(1, Ordering::Relaxed);
                let _ = s.write_all(ANSWER);
            }
            if close {
                // Dropping the stream closes it (and takes it out of epoll).
                conns.remove(&fd);
            }
        }
    }
}

/// One 10 s window of 10,000 servers checked every second with `params`
/// added to `ha_check`: (checks per second, connections accepted per
/// second, workers' CPU in % of one core, other processes' share of the
/// machine).
fn measure(ports: &[u16], params: &str, count: &AtomicU64, accepts: &AtomicU64) -> [f64; 4] {
    let servers: String = (0..SERVERS)
        .map(|i| format!("        server 127.0.0.1:{};\n", ports[i % ports.len()]))
        .collect();
    let port = free_port();
    let http = format!(
        "    upstream big {{
        ha_balance round_robin;
        ha_check interval=1s timeout=900ms fails=2 uri=/healthz{params};
{servers}    }}

    server {{
        listen 127.0.0.1:{port};
        location /api/ {{ ha_api; }}
    }}
"
    );
    // Room for a quarter of the servers kept by each worker: the checks'
    // cap is a quarter of worker_connections.
    let mut ngx = Nginx::start_connections(&http, WORKERS, 16384);
    thread::sleep(Duration::from_millis(2500));
    let workers = ngx.worker_pids();
    let ticks = |ws: &[i32]| ws.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let me = std::process::id() as i32;
    let (c0, a0, t0, s0, m0, start) = (
        count.load(Ordering::Relaxed),
        accepts.load(Ordering::Relaxed),
        ticks(&workers),
        cpu_ticks(me),
        machine_ticks(),
        Instant::now(),
    );
    thread::sleep(Duration::from_secs(10));
    let (c1, a1, t1, s1, m1, secs) = (
        count.load(Ordering::Relaxed),
        accepts.load(Ordering::Relaxed),
        ticks(&workers),
        cpu_ticks(me),
        machine_ticks(),
        start.elapsed().as_secs_f64(),
    );
    let own = (t1 - t0) + (s1 - s0);
    let other = (m1.0 - m0.0).saturating_sub(own) as f64 / (m1.1 - m0.1).max(1) as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (status, v) = api_call(port, "GET", "/api/upstreams/big?fields=state", "");
    assert_eq!(status, 200);
    let down = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "up")
        .count();
    assert_eq!(down, 0, "{params}: servers not up after 12 s of checks");
    assert!(ngx.crashes().is_empty());
    ngx.stop();
    [
        (c1 - c0) as f64 / secs,
        (a1 - a0) as f64 / secs,
        (t1 - t0) as f64 / hz / secs * 100.0,
        other * 100.0,
    ]
}

#[test]
fn kept_connections_cut_the_cost_of_checks() {
    if !nginx_or_skip() {
        return;
    }
    let _serial = serial();
    let count = Arc::new(AtomicU64::new(0));
    let accepts = Arc::new(AtomicU64::new(0));
    let ports = kept_listeners(LISTENERS, &count, &accepts);
    let kept = measure(&ports, "", &count, &accepts);
    let fresh = measure(&ports, " keepalive_time=0", &count, &accepts);
    for (label, [per_sec, conns, cpu, other]) in
        [("kept (default)", kept), ("keepalive_time=0", fresh)]
    {
        eprintln!(
            "{SERVERS} servers, 1 s checks, {WORKERS} workers, {label}: {per_sec:.0} checks/s, \
             {conns:.0} connections/s, workers' CPU {cpu:.1}% of one core ({:.1} µs per check), \
             other processes {other:.0}% of the machine",
            cpu * 1e4 / per_sec.max(1.0)
        );
    }
    let [per_sec, conns, cpu, other] = kept;
    // Kept: the same schedule, next to no new connections once every
    // server has its own (a worker taking over another's server opens one).
    assert!(
        per_sec <= SERVERS as f64 * 1.15,
        "{per_sec:.0} checks/s: more than one per server per second"
    );
    assert!(
        conns <= per_sec / 20.0,
        "{conns:.0} connections/s for {per_sec:.0} checks/s"
    );
    let asan = std::env::var_os("HAB_ASAN_NGINX").is_some();
    if other <= 0.10 * 100.0 && !asan {
        assert!(per_sec >= SERVERS as f64 * 0.85, "{per_sec:.0} checks/s");
        // At most half the cost of a connection per check (measured: about
        // a tenth, docs/benchmarks.md).
        assert!(
            cpu * 2.0 <= fresh[2],
            "kept: {cpu:.1}% of a core, keepalive_time=0: {:.1}%",
            fresh[2]
        );
    } else {
        say(&format!(
            "kept_connections_cut_the_cost_of_checks: other processes took {other:.0}% \
             of the machine (or AddressSanitizer): rates and costs not compared"
        ));
        assert!(per_sec >= SERVERS as f64 / 4.0, "{per_sec:.0} checks/s");
    }
}
