#!/usr/bin/env bash
# What scraping the balancer costs the traffic: wrk through nginx with the
# ha module, alternating runs without and with a scrape of the metrics and
# the JSON every second (as Prometheus and the status page do), median
# requests/s of each side, and their ratio.
#
#   scripts/bench-scrape.sh [RUNS] [SECONDS] [SERVERS]
#
# Defaults: 5 runs per side of 10 s, an upstream of 100 servers (the 100
# servers are 4 ports of one local nginx server block, repeated). Needs
# `make nginx` and wrk (apt-get install wrk). Everything on 127.0.0.1;
# everything started here is stopped on exit.

set -euo pipefail

RUNS=${1:-5}
SECS=${2:-10}
SERVERS=${3:-100}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=${HAB_NGINX_BIN:-$ROOT/target/nginx/sbin/nginx}
MODULE=${HAB_MODULE_SO:-$ROOT/target/nginx/modules/ngx_http_upstream_ha_module.so}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
[[ -x $NGINX && -f $MODULE ]] || { echo "run make nginx first" >&2; exit 1; }

RUN=$(mktemp -d /tmp/hab-bench-scrape-XXXXXX)
mkdir -p "$RUN/logs"
# below the ephemeral range (32768-), where wrk's and curl's own ports come from
PORT=$((20000 + RANDOM % 10000))
B0=$((PORT + 1))
SCRAPER=
cleanup() {
    [[ -n $SCRAPER ]] && { pkill -P "$SCRAPER"; kill "$SCRAPER"; } 2>/dev/null || true
    [[ -s $RUN/nginx.pid ]] && kill -QUIT "$(cat "$RUN/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$RUN"
}
trap cleanup EXIT

servers=
for ((i = 0; i < SERVERS; i++)); do
    servers+="        server 127.0.0.1:$((B0 + i % 4)) max_fails=0;"$'\n'
done
cat >"$RUN/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 2;
error_log $RUN/logs/error.log warn;
pid $RUN/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    upstream app {
        ha_balance round_robin;
$servers        keepalive 64;
    }
    server {
        listen 127.0.0.1:$PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /api/ { ha_api; }
    }
    server {
        listen 127.0.0.1:$B0; listen 127.0.0.1:$((B0 + 1));
        listen 127.0.0.1:$((B0 + 2)); listen 127.0.0.1:$((B0 + 3));
        location / { return 200 "ok\n"; }
    }
}
CONF
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf"
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break; sleep 0.1; done

scrape_loop() {
    # one metrics and one JSON scrape a second, each from one long-lived
    # curl (no process started per scrape), bounded by the run's length
    local n=$((SECS + 2))
    curl -fsS --rate 1/s "http://127.0.0.1:$PORT/api/metrics?[1-$n]" >/dev/null &
    curl -fsS --rate 1/s "http://127.0.0.1:$PORT/api/upstreams?[1-$n]" >/dev/null &
    wait
}

rps() { wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ { print $2 }'; }

metrics_bytes=$(curl -fsS "http://127.0.0.1:$PORT/api/metrics" | wc -c)
json_bytes=$(curl -fsS "http://127.0.0.1:$PORT/api/upstreams" | wc -c)
echo "upstream of $SERVERS servers; a scrape = metrics ($metrics_bytes bytes) + JSON ($json_bytes bytes)"
wrk -t2 -c64 -d2s "http://127.0.0.1:$PORT/" >/dev/null   # warm-up
without=() with=()
for ((r = 1; r <= RUNS; r++)); do
    without+=("$(rps)")
    scrape_loop & SCRAPER=$!
    with+=("$(rps)")
    pkill -P "$SCRAPER" 2>/dev/null || true; kill "$SCRAPER" 2>/dev/null || true
    wait "$SCRAPER" 2>/dev/null || true; SCRAPER=
    echo "run $r: without ${without[-1]} req/s, with scrapes ${with[-1]} req/s"
done
# CPU the workers spend per scrape, measured directly (the throughput
# ratio above is limited by the noise of a shared machine): utime + stime
# of every worker before and after 200 back-to-back scrapes.
worker_ticks() {
    local t=0 pid
    for pid in $(pgrep -P "$(cat "$RUN/nginx.pid")"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$t"
}
t0=$(worker_ticks)
for _ in $(seq 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/metrics"
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/api/upstreams"
done
t1=$(worker_ticks)
hz=$(getconf CLK_TCK)
per_ms=$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.3f", d * 1000 / hz / 200 }')
echo "worker CPU per scrape (metrics + JSON): $per_ms ms, i.e. $(awk -v m="$per_ms" 'BEGIN { printf "%.3f", m / 10 }')% of one core at one scrape a second"

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
m0=$(median "${without[@]}") m1=$(median "${with[@]}")
echo "median without: $m0 req/s; with a scrape every second: $m1 req/s; ratio with/without: $(awk -v a="$m1" -v b="$m0" 'BEGIN { printf "%.4f", a / b }')"
