#!/usr/bin/env python3
"""ha_queue's wake-up latency, beside a baseline, in one run.

    make bench-queue            (or: python3 scripts/bench-queue-wake.py)

What is timed: the gap between a backend finishing a response and the
next request arriving at it, when the next request is one that waited in
the queue. One server with `max_conns=1` is kept saturated: at most one
request is at the backend, so each next request can only start once the
previous one freed the slot. The backend (in this script, one thread,
one connection at a time) stamps, for every request:

  done  the kernel's transmit time of its response (SO_TIMESTAMPING,
        software stamp, read from the socket's error queue): when the
        bytes left for nginx's socket on loopback; if the kernel gives
        none, CLOCK_REALTIME after send() returned (counted: no_tx);
  rx    the kernel's receive time of the next request's first bytes
        (SO_TIMESTAMPNS on the socket, read with recvmsg: the time the
        packet was queued to the socket, the same clock, whenever the
        backend gets round to it).

gap = rx(next) - done(previous): nginx reads the response, answers its
client, frees the slot, the queue wakes its oldest waiter (an eventfd
write to its worker, or a posted event when the waiter is in the same
worker), that worker takes the slot, connects and sends the request.
The backend's own speed is not in it. The upstream has no keepalive
(nginx's default HTTP/1.0 upstream, `Connection: close`), so every
request is a new connection, the same for every variant. nginx adds
`X-Pid: $pid` (the worker) to each request: a gap whose two requests
went through different workers is a cross-worker wake (eventfd), else a
same-worker one.

Variants, measured one after the other, the order rotating each round:

  ha_queue        nginx + module, `ha_balance round_robin; server ...
                  max_conns=1; ha_queue 500 timeout=30s;`, CLIENTS
                  (16) wrk connections: one request at the backend, the
                  others waiting in the queue
  ha, 1 client    the same nginx and upstream, one wrk connection: the
                  queue is never used; the next request is the client's
                  next one, sent the moment wrk has the response
  stock, 1 client stock nginx (the same binary without the module),
                  `zone z 1m; server ... max_conns=1;`, one wrk
                  connection: the baseline

The 1-client gap is response read + answer to the client + the client's
turn-around (wrk reads, writes its next request) + nginx reads and parses
it + picks + connects + sends: what a client that retried at once after a
502 would get at best, with a warm keepalive connection. The queued gap
replaces "the client's turn-around and a new request" by "free + wake";
queued minus baseline is what the wake costs beyond a client's own
round trip (negative: it is faster).

Last, CPU while requests wait and nothing frees: the same nginx (module,
WORKERS workers) in front of a backend that accepts and never answers;
101 clients send a request each, one holds the slot and 100 wait (the
API's queue size says so); nginx's CPU time (schedstat of every thread
of the master and workers) and context switches over WAIT_SECONDS,
against the same nginx with nothing to do before the clients came.

Two phases: idle (nothing of ours beside it; the machine may be shared:
the CPU time of the whole machine during each measurement is printed,
/proc/stat) and with `stress-ng --cpu N` beside it (STRESS, default 2:
as many CPU hogs as this machine has CPUs). With two CPUs or more, nginx
runs on CPU 0 and wrk and the backend on CPU 1 (taskset); stress-ng is
not pinned. Everything listens on 127.0.0.1; everything started here is
stopped at exit; every wait is bounded.

Knobs (environment):
  HAB_QUEUE_ROUNDS=5        rounds per phase
  HAB_QUEUE_SECONDS=4       seconds per measurement (after 1 s of warm-up)
  HAB_QUEUE_CLIENTS=16      wrk connections of the queued variant
  HAB_QUEUE_WORKERS=2       nginx worker processes (every variant)
  HAB_QUEUE_STRESS=2        stress-ng --cpu N in the second phase; 0: no
                            second phase
  HAB_QUEUE_WAIT_SECONDS=10 the idle-CPU measurement's length; 0 skips it
  HAB_QUEUE_OUT=FILE        also write every figure as JSON to FILE
  HAB_NGINX_BIN, HAB_MODULE_SO
"""

import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
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
ROUNDS = int(os.environ.get("HAB_QUEUE_ROUNDS", "5"))
SECONDS = int(os.environ.get("HAB_QUEUE_SECONDS", "4"))
CLIENTS = int(os.environ.get("HAB_QUEUE_CLIENTS", "16"))
WORKERS = int(os.environ.get("HAB_QUEUE_WORKERS", "2"))
STRESS = int(os.environ.get("HAB_QUEUE_STRESS", "2"))
OUT = os.environ.get("HAB_QUEUE_OUT", "")
WAIT_SECONDS = int(os.environ.get("HAB_QUEUE_WAIT_SECONDS", "10"))
WARMUP = 1
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux, asm-generic
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)
# software transmit stamps, only the stamp on the error queue, with an id
TX_FLAGS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 11)

# name, kind, upstream lines, wrk connections
VARIANTS = [
    ("ha_queue", "ha", "ha_balance round_robin;\n        ha_queue 500 timeout=30s;", CLIENTS),
    ("ha, 1 client", "ha", "ha_balance round_robin;\n        ha_queue 500 timeout=30s;", 1),
    ("stock, 1 client", "stock", "zone z 1m;", 1),
]


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"bench-queue-wake: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def free_port():
    """A port below the ephemeral range (wrk's and nginx's own connections
    come from there), random so that two runs are unlikely to collide."""
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "little") % 12000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    die("no free port below 32000")


def pinned(cpu, argv):
    if PIN:
        return ["taskset", "-c", str(cpu)] + argv
    return argv


class Backend:
    """One thread, one connection at a time: accept, read the request
    (kernel receive time of its first bytes), answer `200 ok`, stamp,
    close. Samples: (rx_ns, done_ns, worker pid) per request, recorded
    while `recording` is set."""

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by accepted sockets; turns the kernel's receive stamps on
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.port = free_port()
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(1024)
        self.sock.settimeout(0.5)
        self.samples, self.recording, self.stop = [], False, False
        self.no_stamp = self.no_tx = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.serve(c)
            except OSError:
                pass
            finally:
                c.close()

    def serve(self, c):
        c.settimeout(5)
        c.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        buf, rx = b"", None
        for _ in range(64):  # bounded: a request is one or two reads
            data, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(16))
            if not data:
                return
            if rx is None:
                for level, typ, val in anc:
                    if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(val) >= 16:
                        sec, nsec = struct.unpack("qq", val[:16])
                        rx = sec * 1_000_000_000 + nsec
            buf += data
            if b"\r\n\r\n" in buf:
                break
        m = re.search(rb"\r\nx-pid: *(\d+)", buf, re.I)
        c.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_FLAGS)
        c.sendall(self.RESPONSE)
        after = time.clock_gettime_ns(time.CLOCK_REALTIME)
        done = None
        for _ in range(20):  # bounded: the stamp is queued during the send on loopback
            try:
                _, anc, _, _ = c.recvmsg(0, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                time.sleep(0.0001)
                continue
            for level, typ, val in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPING and len(val) >= 16:
                    sec, nsec = struct.unpack("qq", val[:16])
                    done = sec * 1_000_000_000 + nsec
            break
        if self.recording:
            if done is None:
                self.no_tx += 1
                done = after
            if rx is None:
                self.no_stamp += 1
            else:
                self.samples.append((rx, done, int(m.group(1)) if m else 0))

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def nginx_conf(d, kind, upstream, port, backend_port, extra=""):
    load = f"load_module {MODULE};\n" if kind == "ha" else ""
    return f"""{load}daemon off;
worker_processes {WORKERS};
error_log {d}/logs/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream backends {{
        {upstream}
        server 127.0.0.1:{backend_port} max_conns=1;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backends;
            proxy_set_header X-Pid $pid;
        }}
{extra}    }}
}}
"""


class Nginx:
    def __init__(self, workdir, name, kind, upstream, backend_port, extra="", ready="/"):
        self.name, self.kind = name, kind
        self.port = free_port()
        self.dir = os.path.join(workdir, re.sub(r"[^a-z0-9]+", "-", name.lower()))
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(nginx_conf(self.dir, kind, upstream, self.port, backend_port, extra))
        check = subprocess.run([NGINX, "-t", "-q", "-p", self.dir, "-c", path],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t: {check.stderr}")
        self.proc = subprocess.Popen(pinned(0, [NGINX, "-p", self.dir, "-c", path]),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "logs", "stderr"), "w"))
        end = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready}",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception as e:  # noqa: BLE001 -- any failure means "not yet"
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"{name}: not answering after 10 s: {e}") from e
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_problems(self):
        """[alert], [crit], [emerg] and [error] lines of its error log."""
        try:
            with open(os.path.join(self.dir, "logs", "error.log")) as f:
                return [ln.rstrip() for ln in f
                        if re.search(r"\[(error|crit|alert|emerg)\]", ln)]
        except OSError:
            return []


def machine_busy():
    """(busy, total) jiffies of the whole machine, /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def proc_ticks(pids):
    """utime + stime of these processes (threads included), clock ticks."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def tree_pids(pid):
    """pid and its children (nginx's master and workers)."""
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def run_wrk(port, conns, seconds, window=None):
    """wrk's counts; `window(on)` is called with True 0.2 s after wrk
    starts and with False 0.3 s before it stops: the samples leave out
    wrk's start and its end, where wrk closing its connections aborts
    the request at the backend (nginx then frees its slot before the
    backend has answered, and the next one overlaps it)."""
    argv = pinned(1, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                      f"http://127.0.0.1:{port}/"])
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    if window:
        time.sleep(0.2)
        window(True, p.pid)
        time.sleep(max(0.1, seconds - 0.5))
        window(False, p.pid)
    try:
        text, _ = p.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=5)
        raise
    m = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"requests": int(m.group(1)) if m else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "errors": sum(int(x) for x in errs.groups()) if errs else 0}


def gaps(samples):
    """Gaps in µs between a response done and the next request's arrival,
    split by same / other worker; overlaps: next request arrived before
    the previous response was sent (more than one at the backend)."""
    s = sorted(samples)
    same, cross, overlaps = [], [], 0
    for (rx0, done0, pid0), (rx1, _, pid1) in zip(s, s[1:]):
        g = (rx1 - done0) / 1000
        if g < 0:
            overlaps += 1
            continue
        (same if pid0 == pid1 else cross).append(g)
    return same, cross, overlaps


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100 * len(v)))]


def measure(nx, backend, conns):
    run_wrk(nx.port, conns, WARMUP)
    backend.samples, backend.no_stamp, backend.no_tx = [], 0, 0
    busy, ours = [], []
    pids = tree_pids(nx.proc.pid) + [os.getpid()]

    def window(on, wrk_pid):
        backend.recording = on
        busy.append(machine_busy())
        ours.append(proc_ticks(pids + [wrk_pid]))

    w = run_wrk(nx.port, conns, SECONDS, window)
    b0, b1 = busy
    total = max(1, b1[1] - b0[1])
    same, cross, overlaps = gaps(backend.samples)
    both = same + cross
    return {"wrk": w, "samples": len(both), "same": same, "cross": cross, "overlaps": overlaps,
            "no_stamp": backend.no_stamp, "no_tx": backend.no_tx,
            "machine_busy": (b1[0] - b0[0]) / total,
            # the CPU time of everything else (the machine's busy time less
            # nginx's, wrk's and this script's), a share of all CPUs
            "others_busy": max(0.0, (b1[0] - b0[0]) - (ours[1] - ours[0])) / total,
            "p50": pct(both, 50), "p99": pct(both, 99)}


def phase(label, workdir, backend, stress):
    log(f"{label}:")
    nxs = []
    try:
        for name, kind, upstream, conns in VARIANTS:
            nxs.append((Nginx(workdir, f"{label}-{name}", kind, upstream, backend.port), conns,
                        name))
        res = {name: [] for *_, name in nxs}
        for rnd in range(ROUNDS):
            order = nxs[rnd % len(nxs):] + nxs[:rnd % len(nxs)]
            for nx, conns, name in order:
                r = measure(nx, backend, conns)
                res[name].append(r)
                log(f"  [{label} round {rnd + 1}/{ROUNDS}] {name:16s} {r['samples']:6d} gaps"
                    f"  p50 {fmt(r['p50'])}  p99 {fmt(r['p99'])} µs"
                    f"  (same worker {len(r['same'])}, other {len(r['cross'])})"
                    f"  non-2xx {r['wrk']['non_2xx']} errors {r['wrk']['errors']}"
                    f"  overlaps {r['overlaps']}  machine busy {r['machine_busy']:.0%}"
                    f" (others {r['others_busy']:.0%})")
        problems = {name: nx.log_problems() for nx, _, name in nxs}
    finally:
        for nx, *_ in nxs:
            nx.stop()
    if stress:
        stress.send_signal(signal.SIGTERM)
    return res, problems


def sched_stats(pids):
    """(ns on CPU, context switches) of these processes' threads
    (/proc/PID/task/*/schedstat: run time, wait time, timeslices;
    /proc/PID/status: voluntary + involuntary switches)."""
    ns = switches = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    ns += int(f.read().split()[0])
            with open(f"/proc/{p}/status") as f:
                for ln in f:
                    if "ctxt_switches:" in ln:
                        switches += int(ln.split()[-1])
        except (OSError, ValueError):
            pass
    return ns, switches


def waiting_cpu(workdir, waiters=100, seconds=10):
    """nginx's CPU time and context switches while `waiters` requests wait
    and nothing frees (a backend that accepts and never answers holds the
    one slot), against the same nginx with nothing to do."""
    hold, conns = socket.socket(), []
    hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hold_port = free_port()
    hold.bind(("127.0.0.1", hold_port))
    hold.listen(16)
    hold.settimeout(0.2)
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set() and len(conns) < 16:
            try:
                conns.append(hold.accept()[0])
            except (socket.timeout, OSError):
                continue

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    nx = Nginx(workdir, "waiting", "ha", "ha_balance round_robin;\n        ha_queue 500 timeout=60s;",
               hold_port, extra="        location /api/ { ha_api; }\n", ready="/api/")
    clients = []

    def size():
        with urllib.request.urlopen(f"http://127.0.0.1:{nx.port}/api/upstreams/backends"
                                    "?fields=queue", timeout=2) as r:
            return json.load(r)["queue"]["size"]

    try:
        pids = tree_pids(nx.proc.pid)
        time.sleep(1)
        a = sched_stats(pids)
        time.sleep(seconds)
        b = sched_stats(pids)
        for _ in range(waiters + 1):  # one at the backend, the others waiting
            c = socket.create_connection(("127.0.0.1", nx.port), timeout=5)
            c.sendall(b"GET / HTTP/1.1\r\nHost: q\r\n\r\n")
            clients.append(c)
        end = time.monotonic() + 10
        while size() < waiters and time.monotonic() < end:
            time.sleep(0.1)
        n = size()
        time.sleep(1)
        c0 = sched_stats(pids)
        time.sleep(seconds)
        c1 = sched_stats(pids)
        n_after = size()
    finally:
        for c in clients:
            c.close()
        nx.stop()
        stop.set()
        acceptor.join(2)
        for c in conns:
            c.close()
        hold.close()
    return {"seconds": seconds, "workers": WORKERS, "waiters": n, "waiters_after": n_after,
            "idle_cpu_ms": (b[0] - a[0]) / 1e6, "idle_switches": b[1] - a[1],
            "waiting_cpu_ms": (c1[0] - c0[0]) / 1e6, "waiting_switches": c1[1] - c0[1],
            "log_problems": nx.log_problems()}


def fmt(x):
    return "—" if x is None else f"{x:,.0f}"


def summary(rounds):
    same = [g for r in rounds for g in r["same"]]
    cross = [g for r in rounds for g in r["cross"]]
    both = same + cross

    def mr(key):
        v = [r[key] for r in rounds if r[key] is not None]
        return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None

    return {"samples": len(both), "p50": pct(both, 50), "p90": pct(both, 90), "p99": pct(both, 99),
            "p999": pct(both, 99.9),
            "same_samples": len(same), "same_p50": pct(same, 50), "same_p99": pct(same, 99),
            "cross_samples": len(cross), "cross_p50": pct(cross, 50), "cross_p99": pct(cross, 99),
            "round_p50": mr("p50"), "round_p99": mr("p99"),
            "requests": sum(r["wrk"]["requests"] for r in rounds),
            "non_2xx": sum(r["wrk"]["non_2xx"] for r in rounds),
            "errors": sum(r["wrk"]["errors"] for r in rounds),
            "overlaps": sum(r["overlaps"] for r in rounds),
            "no_stamp": sum(r["no_stamp"] for r in rounds),
            "no_tx": sum(r["no_tx"] for r in rounds),
            "machine_busy": statistics.median(r["machine_busy"] for r in rounds),
            "others_busy": statistics.median(r["others_busy"] for r in rounds)}


def table(label, summ):
    base = summ.get("stock, 1 client")
    lines = [f"{label}:",
             "| variant | gaps | p50 µs | p99 µs | p99.9 µs | p50 vs stock | per-round p50 | "
             "per-round p99 | same worker: n, p50, p99 | other worker: n, p50, p99 | "
             "non-2xx | errors | overlaps | machine busy | others |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, *_ in VARIANTS:
        s = summ[name]
        ratio = f"{s['p50'] / base['p50']:.2f}×" if base and base["p50"] and s["p50"] else "—"

        def rr(x):
            return "—" if x is None else f"{x['median']:,.0f} ({x['min']:,.0f}–{x['max']:,.0f})"

        lines.append(
            f"| {name} | {s['samples']:,} | {fmt(s['p50'])} | {fmt(s['p99'])} | {fmt(s['p999'])} | "
            f"{ratio} | {rr(s['round_p50'])} | {rr(s['round_p99'])} | "
            f"{s['same_samples']:,}, {fmt(s['same_p50'])}, {fmt(s['same_p99'])} | "
            f"{s['cross_samples']:,}, {fmt(s['cross_p50'])}, {fmt(s['cross_p99'])} | "
            f"{s['non_2xx']} | {s['errors']} | {s['overlaps']} | {s['machine_busy']:.0%} | "
            f"{s['others_busy']:.0%} |")
    return "\n".join(lines)


def main():
    global PIN
    PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    for path, what in ((NGINX, "nginx (make nginx)"), (MODULE, "the module (make nginx)")):
        if not os.path.exists(path):
            die(f"{path} is missing: build {what}")
    if shutil.which("wrk") is None:
        die("wrk is missing (apt-get install wrk)")
    if STRESS and shutil.which("stress-ng") is None:
        die("stress-ng is missing (apt-get install stress-ng), or HAB_QUEUE_STRESS=0")
    if ROUNDS < 1 or SECONDS < 1 or CLIENTS < 2 or WORKERS < 1:
        die("HAB_QUEUE_ROUNDS, _SECONDS, _WORKERS must be positive, HAB_QUEUE_CLIENTS at least 2")
    if PIN:
        os.sched_setaffinity(0, {1})  # the backend thread, with wrk
    workdir = tempfile.mkdtemp(prefix="hab-bench-queue-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    backend = Backend()
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rounds": ROUNDS, "seconds": SECONDS, "clients": CLIENTS, "workers": WORKERS,
              "pinned": PIN, "phases": {}}
    stress = None
    failed = []
    try:
        phases = [("idle", 0)] + ([(f"stress-ng --cpu {STRESS}", STRESS)] if STRESS else [])
        for label, n in phases:
            if n:
                # bounded: it ends by itself after the phase's longest possible time
                limit = ROUNDS * len(VARIANTS) * (SECONDS + WARMUP + 35) + 60
                stress = subprocess.Popen(["stress-ng", "--cpu", str(n), "--timeout", f"{limit}s"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                time.sleep(1)
            res, problems = phase(label, workdir, backend, stress)
            if stress:
                stress.wait(10)
                stress = None
            summ = {name: summary(r) for name, r in res.items()}
            report["phases"][label] = {"summary": summ, "log_problems": problems}
            for name, s in summ.items():
                if s["non_2xx"] or s["errors"] or s["overlaps"] or problems.get(name):
                    failed.append(f"{label}, {name}: {s['non_2xx']} non-2xx, {s['errors']} "
                                  f"socket errors, {s['overlaps']} overlaps, "
                                  f"{len(problems.get(name, []))} error-log lines "
                                  + " | ".join(problems.get(name, [])[:3]))
        if WAIT_SECONDS:
            wc = report["waiting"] = waiting_cpu(workdir, seconds=WAIT_SECONDS)
            log(f"\nwhile {wc['waiters']} requests wait ({wc['waiters_after']} {wc['seconds']} s "
            f"later) and nothing frees: nginx ({WORKERS} workers and the master) "
            f"{wc['waiting_cpu_ms']:.1f} ms of CPU, {wc['waiting_switches']} context switches "
            f"in {wc['seconds']} s; with nothing to do: {wc['idle_cpu_ms']:.1f} ms, "
            f"{wc['idle_switches']} switches")
            if wc["log_problems"] or wc["waiters"] != 100 or wc["waiters_after"] != 100:
                failed.append(f"waiting: {wc['waiters']} waiting, {wc['waiters_after']} after; "
                              + " | ".join(wc["log_problems"][:3]))
    finally:
        if stress is not None and stress.poll() is None:
            stress.send_signal(signal.SIGTERM)
            stress.wait(10)
        backend.close()
        shutil.rmtree(workdir, ignore_errors=True)
    log("")
    for label, ph in report["phases"].items():
        log(table(label, ph["summary"]))
        log("")
    if OUT:
        with open(OUT, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
            f.write("\n")
        log(f"written: {OUT}")
    if failed:
        die("client errors, overlaps or error-log lines:\n  " + "\n  ".join(failed))


PIN = False

if __name__ == "__main__":
    main()
