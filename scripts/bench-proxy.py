#!/usr/bin/env python3
"""Whole-process load balancer benchmarks, side by side in one run.

    make bench-proxy            (or: python3 scripts/bench-proxy.py)

Every load balancer below proxies the same wrk load to the same local
backends, one after the other in alternating order, for several rounds:

  stock nginx     round robin without a zone, round robin + zone,
                  least_conn + zone, random two least_conn + zone
  HAProxy         roundrobin, leastconn (Debian's haproxy)
  ha_balance      every policy: round_robin, least_conn, p2c, random,
                  ewma, hash, hash consistent, hash maglev; and
                  round_robin and least_conn on resolved servers (", resolved")

The ", resolved" variants balance the same servers, but the upstream has
`zone z 4m; resolver 127.0.0.1:PORT valid=300s; resolver_timeout 120s;` and one
`server service.consul service=web resolve;` line instead of the server
lines: the SRV records of _web._tcp.service.consul are served by
target/debug/hab-dns (cargo build --bins; BIND's named), one record per
server, webK.node.consul -> 127.0.0.1 and the server's port. Beyond 1000
servers the records are split over service=web, web2, ... (one server
line each): 2000 SRV records do not fit in one DNS message, even by TCP.
Each is measured once nginx has resolved all of them (the error log's "servers
changed" line, at most 20 s or 75 ms per server: nginx takes ~20 s for
1000 SRV targets here), so its figures are the request path's cost;
valid=300s keeps re-resolution (one query per server at TTL 0, every
second) out of the measurement. nginx sends the targets' A queries all at
once and named drops part of such a burst: resolver_timeout 120s lets
nginx's resends (every 5 s) get them all, where the default 30 s left a
few hundred of 2000 unresolved. Above 1024 servers the upstream also gets
`ha_resolve_max` (its default is 1024). hab-dns is started once per
scenario when a resolved variant is selected, and stopped after it.

Scenarios:
  throughput      SIZES upstream sizes (default 3 and 2000 servers); the
                  servers are BACKEND_PORTS ports of one stock nginx that
                  answers 200 at once, repeated as often as needed
  slow            3 servers (hab-backend), one answering 20 ms later than
                  the other two: the share of requests it receives and the
                  client's p50/p99
  sticky          sessions bound by a cookie, at the SIZES of the throughput
                  scenario, every server on a port of its own (the cookie
                  names a server by its address, so 2000 servers need 2000
                  addresses: one stock nginx listening on as many ports,
                  answering 200 with `X-Backend: PORT`):
                    ha_balance round_robin + ha_sticky cookie
                        `ha_balance round_robin; ha_sticky cookie srv;`
                    HAProxy roundrobin + cookie
                        `cookie SRV insert indirect nocache`, `cookie sN`
                        on each server line
                  and, under the same load, the same two without binding
                  (what binding costs). Stock nginx 1.28 has no `sticky`
                  (nginx 1.29.6 has, with a scan of every server per bound
                  request, and is not available here): not in this scenario.
                  wrk runs STICKY_CLIENTS threads, each thread one client:
                  it keeps the first Set-Cookie it receives (srv=... or
                  SRV=...) and the X-Backend of that response (its server),
                  and sends the cookie on every later request, with
                  `X-Bound: 1`, which the backends echo. Every response
                  echoing X-Bound whose X-Backend is not the client's server
                  counts as moved; moved requests (warm-up included) fail
                  the run. The few requests each client sends before its
                  first response are unbound (balanced); they are counted
                  apart.
  queue           overload: QUEUE_CONNECTIONS (200) wrk connections to 3
                  servers (hab-backend, answering QUEUE_DELAY_MS = 5 ms
                  late) with at most 4 requests each, so that 12 are served
                  at once and the rest wait or fail:
                    ha_balance round_robin + ha_queue
                        `ha_balance round_robin; ha_queue 500 timeout=30s;`,
                        `max_conns=4` on each server
                    nginx round robin + zone, max_conns=4
                        stock nginx: no queue, a request that finds every
                        server full gets a 502 at once (counted)
                    HAProxy roundrobin, maxconn 4 + queue
                        `maxconn 4` on each server line, `timeout queue
                        30s` (its backend queue: unbounded)
                    HAProxy roundrobin, maxconn 4 + queue, 2 threads
                        the same with `nbthread` QUEUE_WORKERS
                  nginx runs QUEUE_WORKERS (2) workers (the queue is shared
                  by them), HAProxy 1 thread (its best on one CPU) or as
                  many as nginx's workers, all on CPU 0. *2xx/s* counts answered requests only. The
                  backends count the requests they hold at once (each
                  /_ctl/reset before a measurement): more than 4 at one
                  server fails the run, as does any non-2xx or socket
                  error from ha_queue or HAProxy. For ha_queue the
                  module's own queue figures (served, overflows, timeouts,
                  wait p99) are read from its API (`ha_api`) before and
                  after each measurement.

HAB_BENCH_SCENARIOS selects scenarios (default: all four). Those not run
keep their figures of the last run (docs/bench-proxy/results.json): the
report is that file's scenarios with the new ones replaced.

For each load balancer and round: requests/s, non-2xx and socket errors
(from wrk's own counters), the client's p50/p99 latency, and the load
balancer's CPU per request (utime + stime of all its processes from
/proc/PID/stat, divided by the requests answered). Each figure of the
report is the median over the rounds, with min and max.

With two CPUs or more, the load balancer runs on CPU 0 (one worker or
thread) and wrk and the backends on CPU 1 (taskset). Everything listens on
127.0.0.1, below the ephemeral port range; everything started is stopped
at exit; every wait is bounded.

Knobs (environment):
  HAB_BENCH_ROUNDS=5        rounds (medians over them)
  HAB_BENCH_SECONDS=5       seconds per measurement (after 1 s of warm-up)
  HAB_BENCH_SIZES="3 2000"  upstream sizes of the throughput scenario
  HAB_BENCH_CONNECTIONS=32  wrk connections
  HAB_BENCH_KEEPALIVE=256   nginx's idle connections to the backends (keepalive)
  HAB_BENCH_ONLY=REGEX      only the load balancers whose name matches
  HAB_BENCH_SCENARIOS="throughput slow sticky queue"
                            the scenarios to run (e.g. "queue": only that)
  HAB_BENCH_SLOW=1          0 skips the slow-backend scenario
  HAB_BENCH_STICKY=1        0 skips the sticky scenario; "only" runs it alone
                            (HAB_BENCH_SCENARIOS=sticky)
  HAB_BENCH_STICKY_CLIENTS=4  wrk threads = clients of the sticky scenario
                            (each with CONNECTIONS / CLIENTS connections)
  HAB_BENCH_QUEUE_CONNECTIONS=200  wrk connections of the queue scenario
  HAB_BENCH_QUEUE_DELAY_MS=5        the queue scenario's backends' delay
  HAB_BENCH_QUEUE_WORKERS=2         nginx workers / HAProxy threads there
  HAB_BENCH_OUT=docs        where bench-proxy.md and bench-proxy/*.svg go
  HAB_NGINX_BIN, HAB_MODULE_SO, HAB_BACKEND_BIN, HAB_HAPROXY_BIN, HAB_DNS_BIN
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.environ.get("HAB_NGINX_BIN", f"{ROOT}/target/nginx/sbin/nginx")
MODULE = os.environ.get(
    "HAB_MODULE_SO", f"{ROOT}/target/nginx/modules/ngx_http_upstream_ha_module.so"
)
BACKEND = os.environ.get("HAB_BACKEND_BIN", f"{ROOT}/target/release/hab-backend")
HAPROXY = os.environ.get("HAB_HAPROXY_BIN", shutil.which("haproxy") or "/usr/sbin/haproxy")
HABDNS = os.environ.get("HAB_DNS_BIN", f"{ROOT}/target/debug/hab-dns")

ROUNDS = int(os.environ.get("HAB_BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("HAB_BENCH_SECONDS", "5"))
SIZES = [int(s) for s in os.environ.get("HAB_BENCH_SIZES", "3 2000").split()]
CONNECTIONS = int(os.environ.get("HAB_BENCH_CONNECTIONS", "32"))
KEEPALIVE = int(os.environ.get("HAB_BENCH_KEEPALIVE", "256"))
ONLY = re.compile(os.environ.get("HAB_BENCH_ONLY", ""))
SLOW = os.environ.get("HAB_BENCH_SLOW", "1") != "0"
STICKY = os.environ.get("HAB_BENCH_STICKY", "1")
STICKY_CLIENTS = int(os.environ.get("HAB_BENCH_STICKY_CLIENTS", "4"))
ALL_SCENARIOS = ("throughput", "slow", "sticky", "queue")
SCENARIOS = os.environ.get("HAB_BENCH_SCENARIOS", " ".join(ALL_SCENARIOS)).split()
if STICKY == "only":
    SCENARIOS = ["sticky"]
SCENARIOS = [x for x in SCENARIOS
             if not (x == "slow" and not SLOW) and not (x == "sticky" and STICKY == "0")]
QUEUE_CONNECTIONS = int(os.environ.get("HAB_BENCH_QUEUE_CONNECTIONS", "200"))
QUEUE_DELAY_MS = int(os.environ.get("HAB_BENCH_QUEUE_DELAY_MS", "5"))
QUEUE_WORKERS = int(os.environ.get("HAB_BENCH_QUEUE_WORKERS", "2"))
QUEUE_MAX_CONNS = 4
QUEUE_SIZE = 500
QUEUE_TIMEOUT_S = 30
OUT = os.path.join(ROOT, os.environ.get("HAB_BENCH_OUT", "docs"))
WARMUP = 1
BACKEND_PORTS = 20
SLOW_DELAY_MS = 20
RESOLVE_WAIT_S = 20  # or 75 ms per server: 1000 took ~20 s here, 2000 longer
SRV_PER_NAME = 1000  # 2000 SRV records (~78 KB) do not fit one DNS message (64 KB)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name, kind, upstream lines, HAProxy balance; RESOLVE in the upstream
# lines: the servers come from DNS SRV records (hab-dns) instead of server
# lines
RESOLVE = "{resolve}"
LBS = [
    ("nginx round robin", "stock", "", None),
    ("nginx round robin + zone", "stock", "zone z 8m;", None),
    ("nginx least_conn + zone", "stock", "least_conn; zone z 8m;", None),
    ("nginx random two least_conn + zone", "stock", "random two least_conn; zone z 8m;", None),
    ("HAProxy roundrobin", "haproxy", None, "roundrobin"),
    ("HAProxy leastconn", "haproxy", None, "leastconn"),
    ("ha_balance round_robin", "ha", "ha_balance round_robin;", None),
    ("ha_balance least_conn", "ha", "ha_balance least_conn;", None),
    ("ha_balance round_robin, resolved", "ha", "ha_balance round_robin; " + RESOLVE, None),
    ("ha_balance least_conn, resolved", "ha", "ha_balance least_conn; " + RESOLVE, None),
    ("ha_balance p2c", "ha", "ha_balance p2c;", None),
    ("ha_balance random", "ha", "ha_balance random;", None),
    ("ha_balance ewma", "ha", "ha_balance ewma;", None),
    ("ha_balance hash", "ha", "ha_balance hash $request_uri;", None),
    ("ha_balance hash consistent", "ha", "ha_balance hash $request_uri consistent;", None),
    ("ha_balance hash maglev", "ha", "ha_balance hash $request_uri maglev;", None),
]

# Every request asks for one of 100,000 paths, so that the hash policies
# spread their keys; every load balancer gets the same requests. The
# done hook prints wrk's own counters as one JSON line.
WRK_LUA = r"""
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/k" .. ((n * 7919) % 100000))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""

# The sticky scenario: name, kind, upstream lines, HAProxy balance, whether
# it binds sessions (HAProxy: `cookie SRV insert indirect nocache` and
# `cookie sN` per server). The two that do not bind get the same load.
STICKY_LBS = [
    ("ha_balance round_robin + ha_sticky cookie", "ha",
     "ha_balance round_robin; ha_sticky cookie srv;", None, True),
    ("HAProxy roundrobin + cookie", "haproxy", None, "roundrobin", True),
    ("ha_balance round_robin, no binding", "ha", "ha_balance round_robin;", None, False),
    ("HAProxy roundrobin, no binding", "haproxy", None, "roundrobin", False),
]

# The queue scenario: name, kind, upstream lines, HAProxy balance. Every
# server gets max_conns=4 (nginx) or maxconn 4 (HAProxy); stock nginx's
# non-2xx (502s) are expected, the others' fail the run.
QUEUE_LBS = [
    ("ha_balance round_robin + ha_queue", "ha",
     f"ha_balance round_robin; ha_queue {QUEUE_SIZE} timeout={QUEUE_TIMEOUT_S}s;", None),
    ("nginx round robin + zone, max_conns=4", "stock", "zone z 8m;", None),
    ("HAProxy roundrobin, maxconn 4 + queue", "haproxy", None, "roundrobin"),
    ("HAProxy roundrobin, maxconn 4 + queue, 2 threads", "haproxy", None, "roundrobin"),
]
QUEUE_502_EXPECTED = {"nginx round robin + zone, max_conns=4"}
# nginx runs QUEUE_WORKERS workers; HAProxy one thread (its best on one
# CPU), and as many as nginx's workers in the row that says so
QUEUE_THREADS = {"HAProxy roundrobin, maxconn 4 + queue": 1}

# Each wrk thread is one client with a session: the first Set-Cookie it
# receives (whatever its name: srv= from nginx, SRV= from HAProxy) is
# sent back on every later request of the thread, with X-Bound: 1, which
# the backends echo; `home` is the X-Backend of the response that set the
# cookie. A response echoing X-Bound from another backend counts as moved.
# HAProxy writes header names in lower case: compared without case.
STICKY_LUA = r"""
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

bound, moved, unbound, nobackend = 0, 0, 0, 0
home = nil
local cookie = nil
local hdrs = nil
local n = 0
request = function()
  n = n + 1
  local path = "/k" .. ((n * 7919 + (id or 0) * 15485863) % 100000)
  if cookie then
    return wrk.format("GET", path, hdrs)
  end
  return wrk.format("GET", path)
end
response = function(status, headers, body)
  local backend, setc, was_bound
  for k, v in pairs(headers) do
    local l = string.lower(k)
    if l == "x-backend" then backend = v
    elseif l == "set-cookie" then setc = v
    elseif l == "x-bound" then was_bound = true end
  end
  if backend == nil then nobackend = nobackend + 1 end
  if was_bound then
    bound = bound + 1
    if backend ~= home then moved = moved + 1 end
  else
    unbound = unbound + 1
    if cookie == nil and setc ~= nil and backend ~= nil then
      cookie = string.match(setc, "^[^;]*")
      home = backend
      hdrs = {["Cookie"] = cookie, ["X-Bound"] = "1"}
    end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local b, m, u, nb, homes, seen = 0, 0, 0, 0, 0, {}
  for _, t in ipairs(threads) do
    b = b + t:get("bound")
    m = m + t:get("moved")
    u = u + t:get("unbound")
    nb = nb + t:get("nobackend")
    local h = t:get("home")
    if h ~= nil and not seen[h] then
      seen[h] = true
      homes = homes + 1
    end
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,' ..
    '"bound":%d,"moved":%d,"unbound":%d,"nobackend":%d,"homes":%d,"clients":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    b, m, u, nb, homes, #threads))
end
"""


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"bench-proxy: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


class Ports:
    """Consecutive ports below the ephemeral range (32768-), where wrk's
    own connections come from; the first is random so that two runs on
    one machine are unlikely to collide, and each is checked free."""

    def __init__(self):
        self.next = 20000 + int.from_bytes(os.urandom(2), "little") % 8000

    def take(self, n=1):
        for _ in range(200):
            start, self.next = self.next, self.next + n
            if self.next > 32000:
                self.next = 20000
                continue
            if all(port_free(p) for p in range(start, start + n)):
                return start
        die("no free ports below 32000")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pinned(cpu, argv):
    """argv run on one CPU when there are two or more."""
    if PIN:
        return ["taskset", "-c", str(cpu)] + argv
    return argv


class Procs:
    """Everything started here, stopped at exit (also on errors)."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def wait_http(port, deadline_s=10.0, path="/"):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except Exception as e:  # noqa: BLE001 -- any failure means "not yet"
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port}{path} not answering 200 after {deadline_s} s: {last}")


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def tree_pids(pid):
    """pid and its children (nginx's master and workers)."""
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def cpu_ticks(pid):
    """utime + stime of pid's process tree, in clock ticks (threads are
    included in a process's own figures)."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def run_wrk(port, seconds, lua, threads=1, conns=None):
    conns = CONNECTIONS if conns is None else conns
    argv = pinned(1, ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                      "-s", lua, f"http://127.0.0.1:{port}/"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")


class LoadBalancer:
    def __init__(self, procs, ports, workdir, name, kind, upstream, balance, servers, dns=None,
                 cookie=False, maxconn=None, workers=1):
        self.name, self.kind = name, kind
        self.cookie = cookie  # HAProxy: binds sessions by a cookie
        # the queue scenario: max_conns / maxconn per server, several
        # workers (threads), and ours answers its API under /api/
        self.maxconn, self.workers = maxconn, workers
        self.api = maxconn is not None and kind == "ha"
        self.resolved = upstream is not None and RESOLVE in upstream
        self.port = ports.take()
        self.dir = os.path.join(workdir, re.sub(r"[^a-z0-9]+", "-", name.lower()) + f"-{len(servers)}")
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        if kind == "haproxy":
            cfg = self.haproxy_conf(balance, servers)
            path = os.path.join(self.dir, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(cfg)
            check = subprocess.run([HAPROXY, "-c", "-q", "-f", path], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
            argv = [HAPROXY, "-db", "-f", path]
        else:
            cfg = self.nginx_conf(kind, upstream, servers, dns)
            path = os.path.join(self.dir, "nginx.conf")
            with open(path, "w") as f:
                f.write(cfg)
            check = subprocess.run([NGINX, "-t", "-q", "-p", self.dir, "-c", path],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"nginx -t: {check.stderr}")
            argv = [NGINX, "-p", self.dir, "-c", path]
        self.proc = procs.start(pinned(0, argv), stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.dir, "logs", "stderr"), "w"))
        if self.resolved:
            try:
                self.wait_resolved(len(servers))
            except RuntimeError:
                procs.stop(self.proc, signal.SIGQUIT)
                raise
        wait_http(self.port)

    def wait_resolved(self, n):
        """Until the module's last "servers changed: K kept, B back, N new,
        ..." line counts n servers (bounded)."""
        log_path = os.path.join(self.dir, "logs", "error.log")
        pat = re.compile(r"servers changed: (\d+) kept, (\d+) back, (\d+) new")
        wait_s = max(RESOLVE_WAIT_S, 0.075 * n)
        t0 = time.monotonic()
        end = t0 + wait_s
        have = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                with open(log_path) as f:
                    found = pat.findall(f.read())
            except OSError:
                found = []
            if found:
                have = sum(int(x) for x in found[-1])
                if have == n:
                    log(f"  {self.name}: {n} servers resolved in {time.monotonic() - t0:.1f} s")
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{n} servers not resolved after {wait_s:.0f} s "
                           f"(last count: {have}); see {log_path}")

    def nginx_conf(self, kind, upstream, servers, dns=None):
        load = f"load_module {MODULE};\n" if kind == "ha" else ""
        opt = f" max_conns={self.maxconn}" if self.maxconn else ""
        lines = "".join(f"        server 127.0.0.1:{p}{opt};\n" for p in servers)
        api = "        location /api/ { ha_api; }\n" if self.api else ""
        level = "warn"
        if self.resolved:
            if dns is None:
                raise RuntimeError("no DNS server (hab-dns) for a resolved upstream")
            # the module logs each change of the list at notice
            level = "notice"
            lines = ""
            extra = f" ha_resolve_max {len(servers)};" if len(servers) > 1024 else ""
            upstream = upstream.replace(
                RESOLVE, f"zone z 4m; resolver 127.0.0.1:{dns.port} valid=300s; "
                f"resolver_timeout 120s;{extra}\n"
                + "".join(f"        server service.consul service={name} resolve;\n"
                          for name in dns.services))
        return f"""{load}daemon off;
worker_processes {self.workers};
error_log {self.dir}/logs/error.log {level};
pid {self.dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backends {{
        {upstream}
{lines}        keepalive {KEEPALIVE};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
{api}    }}
}}
"""

    def haproxy_conf(self, balance, servers):
        cookie = "    cookie SRV insert indirect nocache\n" if self.cookie else ""
        lines = "".join(f"    server s{i} 127.0.0.1:{p}" + (f" cookie s{i}" if self.cookie else "")
                        + (f" maxconn {self.maxconn}" if self.maxconn else "")
                        + "\n" for i, p in enumerate(servers))
        queue = f"    timeout queue {QUEUE_TIMEOUT_S}s\n" if self.maxconn else ""
        return f"""global
    nbthread {self.workers}
    maxconn 8192
    pidfile {self.dir}/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{queue}    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:{self.port}
    default_backend b
backend b
    balance {balance}
{cookie}{lines}"""

    def queue_stats(self):
        """The module's queue object of the upstream (ha_api)."""
        return json.loads(http_get(self.port, "/api/upstreams/backends?fields=queue"))["queue"]

    def measure(self, lua, threads=1, conns=None, peak_ports=None):
        w = run_wrk(self.port, WARMUP, lua, threads, conns)
        if peak_ports:
            # wrk's exit aborts the requests in flight: nginx frees their
            # slots at once while the backends still hold them (up to the
            # delay); they end before the count starts again
            time.sleep(0.2 + QUEUE_DELAY_MS / 1000)
        for p in peak_ports or []:
            http_get(p, "/_ctl/reset")
        q0 = self.queue_stats() if self.api else None
        window = []
        if peak_ports:
            # the backends' counts 0.3 s before wrk stops: its exit aborts
            # the requests in flight, nginx frees their slots while the
            # backends still hold them, and a woken waiter (whose client
            # has gone too, unnoticed yet) may take one: that tail is
            # counted apart (peak_total)
            timer = threading.Timer(max(0.5, SECONDS - 0.3), lambda: window.extend(
                http_get(p, "/_ctl/stats") for p in peak_ports))
            timer.start()
        before = cpu_ticks(self.proc.pid)
        r = run_wrk(self.port, SECONDS, lua, threads, conns)
        if "moved" in w:
            # sessions must hold during the warm-up too
            r["warmup_moved"] = w["moved"]
            r["warmup_nobackend"] = w["nobackend"]
        r["lb_cpu_s"] = (cpu_ticks(self.proc.pid) - before) / CLK_TCK
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["us_per_request"] = r["lb_cpu_s"] * 1e6 / r["requests"] if r["requests"] else None
        r["errors"] = sum(r[k] for k in ("connect", "read", "write", "timeout"))
        r["lb_busy"] = r["lb_cpu_s"] / (r["duration_us"] / 1e6)
        r["rps_2xx"] = (r["requests"] - r["status"]) / (r["duration_us"] / 1e6)
        if peak_ports:
            # most requests one server held at once, and each one's count
            timer.join(10)
            stats = [http_get(p, "/_ctl/stats") for p in peak_ports]
            if len(window) != len(peak_ports):
                raise RuntimeError("the backends' counts were not read during the measurement")
            r["peak_inflight"] = max(int(re.search(r"max_inflight=(\d+)", x).group(1))
                                     for x in window)
            r["peak_total"] = max(int(re.search(r"max_inflight=(\d+)", x).group(1))
                                  for x in stats)
            r["served"] = [int(re.search(r"requests=(\d+)", x).group(1)) for x in stats]
        if q0 is not None:
            q1 = self.queue_stats()
            r["queue"] = {k: q1.get(k, 0) - q0.get(k, 0)
                          for k in ("served", "overflows", "timeouts", "abandoned")}
            r["queue"]["size_after"] = q1.get("size")
            # the histogram's count and sum over the measurement (warm-up excluded)
            w0, w1 = q0.get("wait_ms", {}), q1.get("wait_ms", {})
            n = w1.get("count", 0) - w0.get("count", 0)
            r["queue"]["wait_mean_ms"] = ((w1.get("sum", 0) - w0.get("sum", 0)) / n) if n else None
            r["queue"]["wait_p99_ms_cumulative"] = w1.get("p99")
        return r


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ver = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    hap = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True).stdout.splitlines()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "nginx": ver.replace("nginx version: ", ""),
        "haproxy": hap[0] if hap else "?",
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].split(" Copyright")[0],
        "commit": commit + (" (with local changes)" if dirty else ""),
        "pinned": PIN,
    }


def start_nginx_backends(procs, ports, workdir):
    base = ports.take(BACKEND_PORTS)
    d = os.path.join(workdir, "backends")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    listens = "".join(f"        listen 127.0.0.1:{base + i} backlog=4096;\n"
                      for i in range(BACKEND_PORTS))
    conf = f"""daemon off;
worker_processes 1;
error_log {d}/logs/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
{listens}        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    procs.start(pinned(1, [NGINX, "-p", d, "-c", os.path.join(d, "nginx.conf")]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for i in range(BACKEND_PORTS):
        wait_http(base + i)
    return [base + i for i in range(BACKEND_PORTS)]


def start_sticky_backends(procs, ports, workdir, n):
    """One stock nginx on n consecutive ports (a cookie names a server by
    its address: every server needs one of its own), answering 200 with
    the port in X-Backend and the request's X-Bound echoed (nginx leaves an
    empty header out)."""
    base = ports.take(n)
    d = os.path.join(workdir, "sticky-backends")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    listens = "".join(f"        listen 127.0.0.1:{base + i} backlog=4096;\n" for i in range(n))
    conf = f"""daemon off;
worker_processes 1;
worker_rlimit_nofile {n + 20000};
error_log {d}/logs/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections {n + 16384}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
{listens}        location / {{
            add_header X-Backend $server_port;
            add_header X-Bound $http_x_bound;
            return 200 "ok\\n";
        }}
    }}
}}
"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    procs.start(pinned(1, [NGINX, "-p", d, "-c", os.path.join(d, "nginx.conf")]),
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "logs", "stderr"), "w"))
    wait_http(base)
    # all of them (bounded: 10 s for the first not answering, 60 s in all)
    end = time.monotonic() + 60
    for i in range(n):
        if time.monotonic() > end:
            raise RuntimeError(f"{n} backend ports not all answering after 60 s")
        wait_http(base + i)
    return [base + i for i in range(n)]


def start_slow_backends(procs, ports):
    base = ports.take(3)
    fast = procs.start(pinned(1, [BACKEND, "--listen", f"127.0.0.1:{base}", "--name", "fast1",
                                  "--listen", f"127.0.0.1:{base + 1}", "--name", "fast2"]),
                       stdout=subprocess.DEVNULL)
    slow = procs.start(pinned(1, [BACKEND, "--listen", f"127.0.0.1:{base + 2}", "--name", "slow",
                                  "--mode", f"delay:{SLOW_DELAY_MS}"]),
                       stdout=subprocess.DEVNULL)
    for p in (base, base + 1, base + 2):
        wait_http(p, path="/_ctl/stats")
    return [base, base + 1, base + 2], (fast, slow)


def start_queue_backends(procs, ports):
    """Three hab-backend listeners (one process, a thread per
    connection) answering QUEUE_DELAY_MS late."""
    base = ports.take(3)
    argv = [BACKEND, "--mode", f"delay:{QUEUE_DELAY_MS}"]
    for i in range(3):
        argv += ["--listen", f"127.0.0.1:{base + i}", "--name", f"q{i + 1}"]
    procs.start(pinned(1, argv), stdout=subprocess.DEVNULL)
    for p in range(base, base + 3):
        wait_http(p, path="/_ctl/stats")
    return [base, base + 1, base + 2]


class Dns:
    """hab-dns serving one SRV record per server: webK.node.consul ->
    127.0.0.1, port of server K. It reads commands on stdin and exits at
    its end (closed by stop, or when this script dies)."""

    def __init__(self, procs, servers, logdir):
        # services web, web2, web3, ...: SRV_PER_NAME records each
        self.services, argv = [], []
        for i in range(0, len(servers), SRV_PER_NAME):
            name = "web" if i == 0 else f"web{i // SRV_PER_NAME + 1}"
            srv = " ".join(f"1 1 {p} web{k}.node.consul"
                           for k, p in enumerate(servers[i:i + SRV_PER_NAME], i + 1))
            self.services.append(name)
            argv += ["--srv", f"_{name}._tcp.service.consul {srv}"]
        self.err = os.path.join(logdir, "hab-dns.err")
        self.proc = subprocess.Popen(
            [HABDNS, "--zone", "consul", "--hosts", str(len(servers))] + argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.err, "w"), text=True)
        procs.procs.append(self.proc)
        self.procs = procs
        # bounded: hab-dns prints "ready PORT" or exits
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            with open(self.err) as f:
                raise RuntimeError(f"hab-dns did not start: {line!r} {f.read()[-500:]}")
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of input: hab-dns stops named and exits
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.procs.stop(self.proc)


def backend_requests(port):
    line = http_get(port, "/_ctl/stats")
    return int(re.search(r"requests=(\d+)", line).group(1))


def median_range(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_scenario(procs, ports, workdir, lua, servers, label, slow_ports=None, specs=None,
                 threads=1, conns=None, maxconn=None, workers=1):
    """Starts every load balancer of `specs` (LBS unless given) on
    `servers`, measures them in alternating order for ROUNDS rounds (wrk
    with `threads` threads and `conns` connections), stops them; returns
    name -> list of rounds. `maxconn`: the queue scenario's limit per
    server (the servers are hab-backends, whose peak is read)."""
    specs = LBS if specs is None else specs
    lbs, skipped = [], {}
    dns, dns_error = None, None
    if any(ONLY.search(n) and u and RESOLVE in u for n, _, u, *_ in specs):
        if not os.access(HABDNS, os.X_OK):
            dns_error = f"no hab-dns at {HABDNS} (cargo build --bins)"
        else:
            try:
                dns = Dns(procs, servers, workdir)
            except Exception as e:  # noqa: BLE001 -- reported with the variants
                dns_error = f"did not start: {e}"
    for name, kind, upstream, balance, *binds in specs:
        if not ONLY.search(name):
            continue
        if kind == "haproxy" and not os.access(HAPROXY, os.X_OK):
            skipped[name] = f"no HAProxy at {HAPROXY} (apt-get install haproxy)"
            continue
        if upstream and RESOLVE in upstream and dns is None:
            skipped[name] = dns_error
            log(f"  {name}: {skipped[name]}")
            continue
        try:
            lbs.append(LoadBalancer(procs, ports, workdir, name, kind, upstream, balance,
                                    servers, dns, cookie=bool(binds and binds[0]),
                                    maxconn=maxconn, workers=QUEUE_THREADS.get(name, workers)))
        except Exception as e:  # noqa: BLE001 -- reported, and the run fails at the end
            skipped[name] = f"did not start: {e}"
            log(f"  {name}: {skipped[name]}")
    results = {lb.name: [] for lb in lbs}
    for rnd in range(ROUNDS):
        # each round starts one further along the list: no load balancer
        # is always measured first, or always right after the same one
        order = lbs[rnd % len(lbs):] + lbs[:rnd % len(lbs)] if lbs else []
        for lb in order:
            before = [backend_requests(p) for p in slow_ports] if slow_ports else None
            r = lb.measure(lua, threads, conns, servers if maxconn else None)
            if slow_ports:
                after = [backend_requests(p) for p in slow_ports]
                served = [a - b for a, b in zip(after, before)]
                r["slow_share"] = served[2] / sum(served) if sum(served) else None
                r["served"] = served
            results[lb.name].append(r)
            extra = f"  slow share {r['slow_share']:.1%}" if slow_ports and r["slow_share"] is not None else ""
            if "moved" in r:
                extra += (f"  bound {r['bound']} moved {r['moved'] + r.get('warmup_moved', 0)}"
                          f" unbound {r['unbound']} servers {r['homes']}/{r['clients']} clients")
                if r["moved"] + r.get("warmup_moved", 0):
                    extra += "  <-- STICKINESS BROKEN: requests moved"
            if "peak_inflight" in r:
                extra += (f"  2xx/s {r['rps_2xx']:.0f}  peak at a server {r['peak_inflight']}"
                          f" (with wrk's exit {r['peak_total']})")
                if r["peak_inflight"] > maxconn:
                    extra += f"  <-- MORE THAN {maxconn} AT ONCE"
                if "queue" in r:
                    q = r["queue"]
                    extra += (f"  queue: served {q['served']} overflows {q['overflows']}"
                              f" timeouts {q['timeouts']} mean wait "
                              + (f"{q['wait_mean_ms']:.1f} ms" if q["wait_mean_ms"] is not None
                                 else "-"))
            cpu = f"{r['us_per_request']:.1f}" if r["us_per_request"] is not None else "-"
            log(f"  [{label} round {rnd + 1}/{ROUNDS}] {lb.name:36s} {r['rps']:9.0f} req/s"
                f"  {cpu:>6s} us/req  p99 {r['p99_us'] / 1000:.2f} ms"
                f"  non-2xx {r['status']} errors {r['errors']}{extra}")
    for lb in lbs:
        procs.stop(lb.proc, signal.SIGQUIT if lb.kind != "haproxy" else signal.SIGUSR1)
        if maxconn and lb.kind == "ha":
            # the queue scenario: our error log must hold no error, crit,
            # alert or emerg line (stock nginx logs its 502s as errors)
            try:
                with open(os.path.join(lb.dir, "logs", "error.log")) as f:
                    bad = [ln.rstrip() for ln in f
                           if re.search(r"\[(error|crit|alert|emerg)\]", ln)]
            except OSError:
                bad = []
            for r in results[lb.name]:
                r["log_problems"] = len(bad)
            if bad:
                log(f"  {lb.name}: {len(bad)} error-log lines, first: {bad[0]}")
    if dns is not None:
        dns.stop()
    return results, skipped


def summarize(rounds):
    for r in rounds:
        r.setdefault("lb_busy", r["lb_cpu_s"] / (r["duration_us"] / 1e6))
    keys = ["rps", "lb_busy", "us_per_request", "p50_us", "p99_us", "slow_share", "rps_2xx"]
    s = {k: median_range([r.get(k) for r in rounds]) for k in keys}
    s["non_2xx"] = sum(r["status"] for r in rounds)
    s["errors"] = sum(r["errors"] for r in rounds)
    s["requests"] = sum(r["requests"] for r in rounds)
    if rounds and "moved" in rounds[0]:
        # the sticky scenario's wrk (STICKY_LUA): moved counts the warm-ups too
        s["bound"] = sum(r["bound"] for r in rounds)
        s["unbound"] = sum(r["unbound"] for r in rounds)
        s["moved"] = sum(r["moved"] + r.get("warmup_moved", 0) for r in rounds)
        s["nobackend"] = sum(r["nobackend"] + r.get("warmup_nobackend", 0) for r in rounds)
        s["homes"] = max(r["homes"] for r in rounds)
        s["clients"] = max(r["clients"] for r in rounds)
    if rounds and "peak_inflight" in rounds[0]:
        s["peak_inflight"] = max(r["peak_inflight"] for r in rounds)
        s["peak_total"] = max(r["peak_total"] for r in rounds)
        s["log_problems"] = max(r.get("log_problems", 0) for r in rounds)
    if rounds and "queue" in rounds[0]:
        s["queue"] = {k: sum(r["queue"][k] for r in rounds)
                      for k in ("served", "overflows", "timeouts", "abandoned")}
        s["queue_wait_mean_ms"] = median_range([r["queue"]["wait_mean_ms"] for r in rounds])
    return s


def fmt(x, spec, scale=1.0):
    return "—" if x is None else format(x["median"] * scale, spec)


def fmt_range(x, spec, scale=1.0):
    if x is None:
        return "—"
    return (f"{format(x['median'] * scale, spec)} "
            f"({format(x['min'] * scale, spec)}–{format(x['max'] * scale, spec)})")


def plots(report, outdir):
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "ha-balancer"
    plt.rcParams["font.size"] = 9
    meta = {"Date": None, "Creator": "scripts/bench-proxy.py (matplotlib)"}
    files = []
    colors = {"stock": "#7f8c8d", "haproxy": "#2e86c1", "ha": "#c0392b"}
    kinds = {n: k for n, k, *_ in LBS + STICKY_LBS + QUEUE_LBS}

    def bars(metric, title, xlabel, fname, scale=1.0, section=None, specs=LBS, width=None):
        # section: size (as text) -> {"summary": ...}; the throughput scenario's
        section = report["throughput"] if section is None else section
        sizes = sorted(int(x) for x in section)
        names = [n for n, *_ in specs if any(n in section[str(x)]["summary"] for x in sizes)]
        if not names:
            return
        fig, axes = plt.subplots(1, len(sizes),
                                 figsize=(width or 4.2 * len(sizes), 0.32 * len(names) + 1.4),
                                 sharey=True, squeeze=False)
        for ax, size in zip(axes[0], sizes):
            summ = section[str(size)]["summary"]
            ys = list(range(len(names)))[::-1]
            med, lo, hi, cs = [], [], [], []
            for n in names:
                v = summ.get(n, {}).get(metric)
                m = v["median"] * scale if v else 0.0
                med.append(m)
                lo.append(m - v["min"] * scale if v else 0.0)
                hi.append(v["max"] * scale - m if v else 0.0)
                cs.append(colors[kinds[n]])
            ax.barh(ys, med, xerr=[lo, hi], color=cs, capsize=2, error_kw={"lw": 0.8})
            for y, m, h in zip(ys, med, hi):
                # right of the error bar, so that the two do not overlap
                ax.text(m + h, y, f" {m:,.1f}" if m < 100 else f" {m:,.0f}", va="center", fontsize=7)
            ax.set_title(f"{size:,} servers")
            ax.set_xlabel(xlabel)
            ax.set_yticks(ys)
            ax.set_yticklabels(names)
            ax.margins(x=0.18)
            ax.grid(axis="x", lw=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, metadata=meta)
        plt.close(fig)
        files.append(path)

    if report["throughput"]:
        bars("rps", f"Requests per second (median of {ROUNDS}; bars: min–max)", "requests/s",
             "throughput.svg")
        bars("us_per_request", f"Load balancer CPU per request (median of {ROUNDS}; bars: min–max)",
             "µs of CPU",
             "cpu-per-request.svg")
    if report.get("sticky"):
        st = report["sticky"]
        bars("rps", f"Sessions bound by a cookie: requests per second (median of {st['rounds']}; "
             "bars: min–max)", "requests/s", "sticky.svg", section=st["sizes"], specs=STICKY_LBS)

    if report.get("queue"):
        q = report["queue"]
        bars("rps_2xx", f"{q['connections']} clients, 3 servers with max_conns={q['max_conns']}: "
             f"answered requests per second\n(median of {q['rounds_n']}; bars: min–max)",
             "2xx responses/s", "queue.svg", section={"3": q}, specs=QUEUE_LBS, width=7.5)

    if report.get("slow"):
        summ = report["slow"]["summary"]
        snames = [n for n, *_ in LBS if n in summ]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.32 * len(snames) + 1.6), sharey=True)
        ys = list(range(len(snames)))[::-1]
        share = [summ[n]["slow_share"]["median"] * 100 if summ[n]["slow_share"] else 0 for n in snames]
        a1.barh(ys, share, color=[colors[kinds[n]] for n in snames])
        a1.axvline(100 / 3, color="k", lw=0.6, ls="--")
        for y, m in zip(ys, share):
            a1.text(m, y, f" {m:.1f}%", va="center", fontsize=7)
        a1.set_xlabel(f"share of requests sent to the server {SLOW_DELAY_MS} ms slower (%)")
        a1.set_yticks(ys)
        a1.set_yticklabels(snames)
        a1.margins(x=0.2)
        p50 = [summ[n]["p50_us"]["median"] / 1000 for n in snames]
        p99 = [summ[n]["p99_us"]["median"] / 1000 for n in snames]
        h = 0.38
        a2.barh([y + h / 2 for y in ys], p50, height=h, color="#95a5a6", label="p50")
        a2.barh([y - h / 2 for y in ys], p99, height=h, color="#34495e", label="p99")
        a2.set_xlabel("client latency (ms)")
        a2.legend(loc="lower right", fontsize=7)
        for a in (a1, a2):
            a.grid(axis="x", lw=0.3)
        fig.suptitle(f"One of 3 servers {SLOW_DELAY_MS} ms slower (median of {ROUNDS})")
        fig.tight_layout()
        path = os.path.join(outdir, "slow-backend.svg")
        fig.savefig(path, metadata=meta)
        plt.close(fig)
        files.append(path)
    return files


def markdown(report):
    m = report["machine"]
    lines = [
        "# Whole-process benchmarks: ha_balance beside stock nginx and HAProxy",
        "",
        "Generated by `make bench-proxy` (`scripts/bench-proxy.py`); do not edit by",
        "hand, rerun instead. What the figures mean and how they were read:",
        f"[benchmarks.md]({os.path.relpath(os.path.join(ROOT, 'docs', 'benchmarks.md'), OUT)}"
        "#whole-process-beside-stock-nginx-and-haproxy).",
        "",
        "## Machine and command",
        "",
        "| | |",
        "|---|---|",
        f"| date | {m['date']} |",
        f"| CPU | `{m['cpu']}`, {m['cpus']} CPUs |",
        f"| kernel | `{m['kernel']}` |",
        f"| nginx | {m['nginx']} (the vendored build, `target/nginx`; stock = the same binary without the module) |",
        f"| HAProxy | {m['haproxy']} |",
        f"| load | {m['wrk']}, 1 thread, {report['connections']} connections, keepalive, "
        f"{report['seconds']} s per measurement after {WARMUP} s of warm-up |",
        f"| code | `{m['commit']}` |",
        f"| placement | {'load balancer on CPU 0 (1 worker / 1 thread); wrk and backends on CPU 1' if m['pinned'] else 'not pinned (one CPU)'} |",
        "",
        "```sh",
        f"HAB_BENCH_ROUNDS={report['rounds']} HAB_BENCH_SECONDS={report['seconds']} "
        f"HAB_BENCH_SIZES=\"{' '.join(map(str, SIZES))}\" "
        + "".join(f"{k}={shlex.quote(str(v))} " for k, v in report.get("knobs", {}).items())
        + "make bench-proxy",
        "```",
        "",
        f"Each figure is the median of {report['rounds']} rounds (min–max in parentheses);",
        "in every round each load balancer is measured once, in an order that",
        "rotates from round to round. *µs/req* is the load balancer's CPU time",
        "(user + system, all its processes, from `/proc/PID/stat`) divided by",
        "the requests it answered; *busy* is that CPU time over the",
        "measurement's duration (100%: the load balancer's core was the limit;",
        "well below: the client side was, or the load balancer was not",
        "scheduled). *vs stock* compares with stock nginx round robin + zone",
        "in the same run: requests/s, and requests per CPU-second (stock's",
        "µs/req over this one's), the figure that other processes on the",
        "machine disturb least.",
        "",
    ]
    if not report["throughput"]:
        lines += ["The throughput scenario has not been run.", ""]
    for size in sorted(int(x) for x in report["throughput"]):
        sc = report["throughput"][str(size)]
        base = sc["summary"].get("nginx round robin + zone")
        lines += [f"## {size:,} servers", "",
                  f"{'Three servers, three ports' if size <= BACKEND_PORTS else f'{BACKEND_PORTS} backend ports of one stock nginx, each listed {size // BACKEND_PORTS:,} times'}"
                  " answering `200 ok` at once.", "",
                  "| load balancer | req/s | vs stock | busy | µs/req | per CPU-s vs stock | p50 ms | p99 ms | non-2xx | socket errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, *_ in LBS:
            s = sc["summary"].get(name)
            if s is None:
                if name in sc["skipped"]:
                    lines.append(f"| {name} | skipped: {sc['skipped'][name]} | | | | | | | | |")
                continue
            ratio = (f"{s['rps']['median'] / base['rps']['median']:.2f}×"
                     if base and s["rps"] else "—")
            cpu_ratio = (f"{base['us_per_request']['median'] / s['us_per_request']['median']:.2f}×"
                         if base and base["us_per_request"] and s["us_per_request"] else "—")
            lines.append(f"| {name} | {fmt_range(s['rps'], ',.0f')} | {ratio} | "
                         f"{fmt(s['lb_busy'], '.0f', 100)}% | "
                         f"{fmt_range(s['us_per_request'], '.1f')} | {cpu_ratio} | {fmt(s['p50_us'], '.2f', 1e-3)} | "
                         f"{fmt(s['p99_us'], '.2f', 1e-3)} | {s['non_2xx']} | {s['errors']} |")
        lines.append("")
    if report["throughput"]:
        lines += ["![requests per second](bench-proxy/throughput.svg)", "",
                  "![CPU per request](bench-proxy/cpu-per-request.svg)", ""]
    if report.get("slow"):
        sc = report["slow"]
        lines += [f"## One server {SLOW_DELAY_MS} ms slower", "",
                  f"Three servers (`hab-backend`, one process per side), the third answering "
                  f"{SLOW_DELAY_MS} ms after the others; *slow share* is the part of the",
                  "requests it received (counted by the backends); an even split is 33.3%.", "",
                  "| load balancer | slow share | req/s | p50 ms | p99 ms | non-2xx | socket errors |",
                  "|---|---|---|---|---|---|---|"]
        for name, *_ in LBS:
            s = sc["summary"].get(name)
            if s is None:
                if name in sc["skipped"]:
                    lines.append(f"| {name} | skipped: {sc['skipped'][name]} | | | | | |")
                continue
            lines.append(f"| {name} | {fmt_range(s['slow_share'], '.1f', 100)}% | "
                         f"{fmt(s['rps'], ',.0f')} | {fmt_range(s['p50_us'], '.2f', 1e-3)} | "
                         f"{fmt_range(s['p99_us'], '.2f', 1e-3)} | {s['non_2xx']} | {s['errors']} |")
        lines += ["", "![slow backend](bench-proxy/slow-backend.svg)", ""]
    if report.get("sticky"):
        lines += sticky_markdown(report["sticky"])
    if report.get("queue"):
        lines += queue_markdown(report["queue"])
    lines += ["The raw figures of every round: [bench-proxy/results.json](bench-proxy/results.json).", ""]
    return "\n".join(lines)


def sticky_markdown(st):
    """The sticky scenario's section of the report."""
    lines = [
        "## Sessions bound by a cookie (sticky)", "",
        f"Measured {st['date']} (code `{st.get('code', '?')}`): {st['rounds']} rounds "
        f"of {st['seconds']} s (after "
        f"{WARMUP} s of warm-up), wrk with {st['clients']} threads and "
        f"{st['connections']} connections; run alone with `HAB_BENCH_STICKY=only`, "
        "left out with `HAB_BENCH_STICKY=0`.", "",
        "- *ha_balance round_robin + ha_sticky cookie*: `ha_balance round_robin;",
        "  ha_sticky cookie srv;` — the response carries `Set-Cookie: srv=<32 hex>`",
        "  (the MD5 of the server's address), a request with it goes to that server.",
        "- *HAProxy roundrobin + cookie*: `balance roundrobin`, `cookie SRV insert",
        "  indirect nocache` and `cookie sN` on each server line.",
        "- *…, no binding*: the same two without the cookie, under the same load:",
        "  what binding costs.",
        "- Stock nginx is not in this scenario: nginx 1.28 (the vendored build)",
        "  has no `sticky`. nginx 1.29.6's `sticky` (not available here) finds a",
        "  bound request's server by comparing its id with every server's, under",
        "  the upstream's lock: O(servers) per request; ha_sticky's lookup is an",
        "  index of the ids, O(1) (`benches/sticky.rs`).",
        "",
        "Each server has a port of its own (a cookie names a server by its",
        "address; the throughput scenario repeats 20 ports): one stock nginx on",
        "as many ports answers `200 ok` with `X-Backend: PORT`. Each wrk thread",
        "is one client: it keeps the first `Set-Cookie` it receives and the",
        "`X-Backend` of that response (its server), then sends `Cookie:` and",
        "`X-Bound: 1` on every request, and the backends echo `X-Bound`.",
        "*bound*: responses to requests that carried the cookie; *moved*: those",
        "of them answered by another server than the client's (warm-ups",
        "included; anything but 0 fails the run); *servers*: how many servers",
        "the clients were bound to (most over the rounds; at most one per",
        "client, so with moved 0 no other server received a bound request);",
        "*unbound*: the requests each client sent before its first response",
        "came back (balanced; a few per connection). The other columns as",
        "above; *vs no binding*: requests/s, and requests per CPU-second, over",
        "those of the same load balancer without binding in the same rounds.",
        "",
        "Reading it: *moved* 0 and *servers* at most the clients is the",
        "check that sessions held. The cost of binding itself is *vs no",
        "binding* at 3 servers (the same connections to the same servers",
        "either way). With 2,000 servers it is mostly something else: without",
        "binding, requests go round 2,000 addresses, more than the idle",
        f"connections nginx keeps (`keepalive {st.get('keepalive', KEEPALIVE)}`; its cache is searched",
        "linearly), so many of them open a new connection to their server,",
        "where HAProxy keeps idle connections per server; bound, the clients'",
        "requests go to a few servers, whose connections are reused. Between",
        "the two sticky rows, at 2,000 servers, lies the cost of finding the",
        "bound server among 2,000.",
        "",
    ]
    refs = {"ha_balance round_robin + ha_sticky cookie": "ha_balance round_robin, no binding",
            "HAProxy roundrobin + cookie": "HAProxy roundrobin, no binding"}
    for size in sorted(int(x) for x in st["sizes"]):
        sc = st["sizes"][str(size)]
        lines += [f"### {size:,} servers", "",
                  "| load balancer | req/s | vs no binding | busy | µs/req | per CPU-s vs no binding "
                  "| p50 ms | p99 ms | bound | moved | servers | unbound | non-2xx | socket errors |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, *_ in STICKY_LBS:
            s = sc["summary"].get(name)
            if s is None:
                if name in sc["skipped"]:
                    lines.append(f"| {name} | skipped: {sc['skipped'][name]} |" + " |" * 12)
                continue
            base = sc["summary"].get(refs.get(name, ""))
            ratio = (f"{s['rps']['median'] / base['rps']['median']:.2f}×"
                     if base and s["rps"] else "—")
            cpu_ratio = (f"{base['us_per_request']['median'] / s['us_per_request']['median']:.2f}×"
                         if base and base["us_per_request"] and s["us_per_request"] else "—")
            lines.append(f"| {name} | {fmt_range(s['rps'], ',.0f')} | {ratio} | "
                         f"{fmt(s['lb_busy'], '.0f', 100)}% | "
                         f"{fmt_range(s['us_per_request'], '.1f')} | {cpu_ratio} | "
                         f"{fmt(s['p50_us'], '.2f', 1e-3)} | {fmt(s['p99_us'], '.2f', 1e-3)} | "
                         f"{s['bound']:,} | {s['moved']} | {s['homes']} of {s['clients']} clients | "
                         f"{s['unbound']:,} | {s['non_2xx']} | {s['errors']} |")
        lines.append("")
    lines += ["![sticky requests per second](bench-proxy/sticky.svg)", ""]
    return lines


def queue_markdown(q):
    """The queue scenario's section of the report."""
    m = q["machine"]
    lines = [
        "## Overload: a queue against 502s (queue)", "",
        f"Measured {q['date']} (code `{m['commit']}`, {m['nginx']}, "
        f"{m['haproxy'].split(' - ')[0]}): {q['rounds_n']} rounds of {q['seconds']} s "
        f"(after {WARMUP} s of warm-up), wrk with 1 thread and {q['connections']} "
        "connections; run alone with `HAB_BENCH_SCENARIOS=queue`:", "",
        "```sh",
        f"HAB_BENCH_ROUNDS={q['rounds_n']} HAB_BENCH_SECONDS={q['seconds']} "
        "HAB_BENCH_SCENARIOS=queue "
        + "".join(f"{k}={shlex.quote(str(v))} " for k, v in q.get("knobs", {}).items())
        + "make bench-proxy",
        "```", "",
        f"Three servers (`hab-backend --mode delay:{q['delay_ms']}`: each request "
        f"answered {q['delay_ms']} ms late), at most {q['max_conns']} requests each:",
        f"{3 * q['max_conns']} served at once, about "
        f"{3 * q['max_conns'] * 1000 / max(1, q['delay_ms']):,.0f} requests/s at most;",
        f"the other {q['connections'] - 3 * q['max_conns']} clients' requests wait, or fail.",
        f"nginx runs {q['workers']} workers (one queue for both), HAProxy 1 thread, or "
        f"{q['workers']} where",
        "the row says so; all on CPU 0, wrk and the backends on CPU 1.", "",
        f"- *ha_balance round_robin + ha_queue*: `ha_balance round_robin; ha_queue "
        f"{q['queue_size']} timeout={q['queue_timeout_s']}s;`",
        f"  and `max_conns={q['max_conns']}` on each server: one queue for both workers.",
        f"- *nginx round robin + zone, max_conns={q['max_conns']}*: stock nginx, `zone z 8m;` "
        "and the same",
        "  `max_conns`: no queue; a request that finds every server full is",
        "  answered 502 at once (*non-2xx*: expected here, and the client's",
        "  latency figures mix those fast 502s with the answered requests).",
        f"- *HAProxy roundrobin, maxconn {q['max_conns']} + queue*: `maxconn "
        f"{q['max_conns']}` on each server line,",
        f"  `timeout queue {q['queue_timeout_s']}s`; requests beyond the servers' maxconn wait "
        "in its",
        "  backend queue. HAProxy's threads are meant one per CPU: *2 threads*",
        "  shows what two on one CPU do.", "",
        "*2xx/s*: answered requests per second (what the clients got); *req/s*:",
        "all responses, 502s included. *peak*: the most requests one server held",
        "at once, counted by the backends from the start of each measurement to",
        f"0.3 s before its end (more than {q['max_conns']} fails the run); *at exit*: the "
        "same",
        "counted to after wrk's exit, which aborts the requests in flight:",
        "nginx closes their connections and frees their slots while the",
        "backends still work on them (stock nginx's `max_conns` counts",
        "connections), and a waiter whose client has gone too, unnoticed yet,",
        "may take one. For ha_queue, from the module's API over the",
        "measurements: *queue served* (requests that waited and then got a",
        "server), overflows and timeouts (both 0, or the run fails), and the",
        "mean wait in the queue (the histogram's sum over its count, per",
        "round; median and range). Non-2xx or socket errors from ha_queue or",
        "HAProxy fail the run, as does any error, crit, alert or emerg line in",
        "ha_queue's error log. Other columns as above; *vs HAProxy*: 2xx/s over",
        "HAProxy's (1 thread) in the same rounds.", "",
        "| load balancer | 2xx/s | vs HAProxy | req/s | busy | µs/req | p50 ms | p99 ms "
        "| non-2xx | socket errors | peak (at exit) | queue served | overflows, timeouts "
        "| mean wait ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = q["summary"].get("HAProxy roundrobin, maxconn 4 + queue")
    for name, *_ in QUEUE_LBS:
        s = q["summary"].get(name)
        if s is None:
            if name in q["skipped"]:
                lines.append(f"| {name} | skipped: {q['skipped'][name]} |" + " |" * 12)
            continue
        ratio = (f"{s['rps_2xx']['median'] / base['rps_2xx']['median']:.2f}×"
                 if base and s["rps_2xx"] and base["rps_2xx"]["median"] else "—")
        qs = s.get("queue")
        lines.append(
            f"| {name} | {fmt_range(s['rps_2xx'], ',.0f')} | {ratio} | "
            f"{fmt_range(s['rps'], ',.0f')} | {fmt(s['lb_busy'], '.0f', 100)}% | "
            f"{fmt_range(s['us_per_request'], '.1f')} | {fmt_range(s['p50_us'], '.2f', 1e-3)} | "
            f"{fmt_range(s['p99_us'], '.2f', 1e-3)} | {s['non_2xx']:,} | {s['errors']} | "
            f"{s.get('peak_inflight', '—')} ({s.get('peak_total', '—')}) | "
            + (f"{qs['served']:,} | {qs['overflows']}, {qs['timeouts']} | "
               f"{fmt_range(s['queue_wait_mean_ms'], '.1f')} |" if qs else "— | — | — |"))
    lines += ["", "![queue: answered requests per second](bench-proxy/queue.svg)", ""]
    return lines


def write_report(report, failed):
    outdir = os.path.join(OUT, "bench-proxy")
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
        f.write("\n")
    try:
        files = plots(report, outdir)
    except ImportError:
        files = []
        log("matplotlib is missing (apt-get install python3-matplotlib): no plots")
    with open(os.path.join(OUT, "bench-proxy.md"), "w") as f:
        f.write(markdown(report))
    log(f"\nwritten: {os.path.join(OUT, 'bench-proxy.md')}, {outdir}/results.json"
        + "".join(f", {p}" for p in files))
    if failed:
        die("client-visible errors, moved sessions or load balancers that did not start:\n  "
            + "\n  ".join(failed))


def replot(path):
    """--report FILE: the markdown and the plots again from a results.json."""
    global ROUNDS, SECONDS, SIZES, CONNECTIONS
    with open(path) as f:
        report = json.load(f)
    ROUNDS, SECONDS, CONNECTIONS = report["rounds"], report["seconds"], report["connections"]
    SIZES = sorted(int(s) for s in report["throughput"])
    for sc in scenarios(report):
        sc["summary"] = {n: summarize(r) for n, r in sc["rounds"].items()}
    write_report(report, [])


def scenarios(report):
    """Every scenario of a report: {"rounds", "skipped", "summary"} each."""
    return (list(report["throughput"].values())
            + ([report["slow"]] if report.get("slow") else [])
            + (list(report["sticky"]["sizes"].values()) if report.get("sticky") else [])
            + ([report["queue"]] if report.get("queue") else []))


def merge_previous(report, ran):
    """The scenarios not run this time, with the machine and command of
    the throughput run when it was not run either, from the last
    results.json: a run of some scenarios replaces only theirs."""
    path = os.path.join(OUT, "bench-proxy", "results.json")
    try:
        with open(path) as f:
            prev = json.load(f)
    except (OSError, ValueError):
        return report
    if "throughput" not in ran:
        for k in ("machine", "rounds", "seconds", "connections", "knobs", "throughput"):
            if k in prev:
                report[k] = prev[k]
            else:
                report.pop(k, None)
        report.setdefault("throughput", {})
    for k in ("slow", "sticky", "queue"):
        if k not in ran and prev.get(k):
            report[k] = prev[k]
    for sc in scenarios(report):
        sc["summary"] = {n: summarize(r) for n, r in sc["rounds"].items()}
    return report


def main():
    global PIN
    if sys.argv[1:2] == ["--report"] and len(sys.argv) == 3:
        return replot(sys.argv[2])
    PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    for path, what in ((NGINX, "nginx (make nginx)"), (MODULE, "the module (make nginx)"),
                       (BACKEND, "hab-backend (cargo build --release --bin hab-backend)")):
        if not os.path.exists(path):
            die(f"{path} is missing: build {what}")
    if shutil.which("wrk") is None:
        die("wrk is missing (apt-get install wrk)")
    if ROUNDS < 1 or SECONDS < 1 or not SIZES:
        die("HAB_BENCH_ROUNDS, HAB_BENCH_SECONDS and HAB_BENCH_SIZES must be positive")
    if STICKY not in ("0", "1", "only"):
        die("HAB_BENCH_STICKY is 1 (default), 0 or only")
    if not SCENARIOS or any(x not in ALL_SCENARIOS for x in SCENARIOS):
        die(f"HAB_BENCH_SCENARIOS: some of {' '.join(ALL_SCENARIOS)}")
    if "queue" in SCENARIOS and (QUEUE_CONNECTIONS < 1 or QUEUE_DELAY_MS < 0
                                 or QUEUE_WORKERS < 1):
        die("HAB_BENCH_QUEUE_CONNECTIONS and _WORKERS must be positive, _DELAY_MS at least 0")
    if STICKY != "0" and not 1 <= STICKY_CLIENTS <= CONNECTIONS:
        die("HAB_BENCH_STICKY_CLIENTS must be between 1 and HAB_BENCH_CONNECTIONS")

    procs, ports = Procs(), Ports()
    workdir = tempfile.mkdtemp(prefix="hab-bench-proxy-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    lua = os.path.join(workdir, "paths.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    sticky_lua = os.path.join(workdir, "sticky.lua")
    with open(sticky_lua, "w") as f:
        f.write(STICKY_LUA)
    # the knobs that differ from their defaults, for the command printed
    knobs = {k: os.environ[k] for k in ("HAB_BENCH_SCENARIOS", "HAB_BENCH_ONLY", "HAB_BENCH_SLOW",
                                         "HAB_BENCH_STICKY", "HAB_BENCH_STICKY_CLIENTS",
                                         "HAB_BENCH_OUT", "HAB_BENCH_CONNECTIONS",
                                         "HAB_BENCH_KEEPALIVE")
             if os.environ.get(k)}
    queue_knobs = {k: os.environ[k] for k in ("HAB_BENCH_ONLY", "HAB_BENCH_QUEUE_CONNECTIONS",
                                               "HAB_BENCH_QUEUE_DELAY_MS",
                                               "HAB_BENCH_QUEUE_WORKERS", "HAB_BENCH_OUT")
                   if os.environ.get(k)}
    report = {"machine": machine(), "rounds": ROUNDS, "seconds": SECONDS,
              "connections": CONNECTIONS, "knobs": knobs, "throughput": {}}
    t0 = time.monotonic()
    failed = []
    try:
        ports_b = start_nginx_backends(procs, ports, workdir) if "throughput" in SCENARIOS else []
        for size in SIZES if "throughput" in SCENARIOS else []:
            servers = [ports_b[i % BACKEND_PORTS] for i in range(size)]
            log(f"throughput, {size} servers")
            res, skipped = run_scenario(procs, ports, workdir, lua, servers, f"{size} servers")
            report["throughput"][str(size)] = {
                "rounds": res, "skipped": skipped,
                "summary": {n: summarize(r) for n, r in res.items()}}
        if "slow" in SCENARIOS:
            log(f"slow backend: one of 3 servers {SLOW_DELAY_MS} ms slower")
            slow_ports, _ = start_slow_backends(procs, ports)
            res, skipped = run_scenario(procs, ports, workdir, lua, slow_ports, "slow", slow_ports)
            report["slow"] = {"rounds": res, "skipped": skipped,
                              "summary": {n: summarize(r) for n, r in res.items()}}
        if "sticky" in SCENARIOS:
            st = report["sticky"] = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": ROUNDS,
                "seconds": SECONDS, "connections": CONNECTIONS, "clients": STICKY_CLIENTS,
                "keepalive": KEEPALIVE, "code": report["machine"]["commit"], "sizes": {}}
            sticky_ports = start_sticky_backends(procs, ports, workdir, max(SIZES))
            for size in SIZES:
                log(f"sticky sessions, {size} servers, {STICKY_CLIENTS} clients")
                res, skipped = run_scenario(procs, ports, workdir, sticky_lua,
                                            sticky_ports[:size], f"sticky {size}",
                                            specs=STICKY_LBS, threads=STICKY_CLIENTS)
                st["sizes"][str(size)] = {"rounds": res, "skipped": skipped,
                                          "summary": {n: summarize(r) for n, r in res.items()}}
        if "queue" in SCENARIOS:
            log(f"queue: {QUEUE_CONNECTIONS} connections, 3 servers answering "
                f"{QUEUE_DELAY_MS} ms late, at most {QUEUE_MAX_CONNS} each")
            queue_ports = start_queue_backends(procs, ports)
            res, skipped = run_scenario(procs, ports, workdir, lua, queue_ports, "queue",
                                        specs=QUEUE_LBS, conns=QUEUE_CONNECTIONS,
                                        maxconn=QUEUE_MAX_CONNS, workers=QUEUE_WORKERS)
            report["queue"] = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine(), "rounds_n": ROUNDS, "seconds": SECONDS,
                "connections": QUEUE_CONNECTIONS, "delay_ms": QUEUE_DELAY_MS,
                "workers": QUEUE_WORKERS, "max_conns": QUEUE_MAX_CONNS,
                "queue_size": QUEUE_SIZE, "queue_timeout_s": QUEUE_TIMEOUT_S,
                "keepalive": KEEPALIVE, "knobs": queue_knobs,
                "rounds": res, "skipped": skipped,
                "summary": {n: summarize(r) for n, r in res.items()}}
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    binds = {n for n, *_, b in STICKY_LBS if b}
    for sc in scenarios(report):
        for name, s in sc["summary"].items():
            if (s["non_2xx"] and name not in QUEUE_502_EXPECTED) or s["errors"]:
                failed.append(f"{name}: {s['non_2xx']} non-2xx, {s['errors']} socket errors")
            if s.get("peak_inflight", 0) > QUEUE_MAX_CONNS:
                failed.append(f"{name}: {s['peak_inflight']} requests at one server at once, "
                              f"more than max_conns={QUEUE_MAX_CONNS}")
            if s.get("log_problems"):
                failed.append(f"{name}: {s['log_problems']} error, crit, alert or emerg lines "
                              "in its error log")
            if s.get("queue") and (s["queue"]["overflows"] or s["queue"]["timeouts"]):
                failed.append(f"{name}: queue overflows {s['queue']['overflows']}, "
                              f"timeouts {s['queue']['timeouts']}")
            if "moved" not in s:
                continue
            # sticky: every bound request on its client's server
            if s["moved"]:
                failed.append(f"{name}: STICKINESS BROKEN: {s['moved']} of {s['bound']} bound "
                              "requests answered by another server than the client's")
            if s["nobackend"]:
                failed.append(f"{name}: {s['nobackend']} responses without X-Backend")
            if name in binds and (not s["bound"] or s["homes"] > s["clients"]):
                failed.append(f"{name}: {s['bound']} bound requests, {s['homes']} servers for "
                              f"{s['clients']} clients: the cookie did not bind")
        for name, why in sc["skipped"].items():
            if "did not start" in why:
                failed.append(f"{name}: {why}")

    log(f"took {time.monotonic() - t0:.0f} s")
    write_report(merge_previous(report, SCENARIOS), failed)


PIN = False

if __name__ == "__main__":
    main()
