#!/usr/bin/env bash
# ha-balancer demo: nginx + ngx_http_upstream_ha_module balancing three local
# backends, one of which dies and comes back while traffic flows, then is
# drained and brought back through the operator API with `hab`; then one
# whose health check starts failing is taken out by the active checks before
# any client is hurt, and slow-starts back when its checks pass again.
#
# Run by `make demo` (which builds nginx, the module and hab-backend first).
# Everything listens on 127.0.0.1 only; every loop is bounded; everything
# started here is stopped on exit. Takes about 45 seconds; run from a
# terminal, it first waits (up to 15 s, Enter to go on) so that the live
# status page it prints can be opened, and keeps nginx up for 20 s at the
# end. HAB_DEMO_PORT picks nginx's port (default: 8080 if free, else any);
# HAB_DEMO_WAIT=0 skips both waits.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=${HAB_NGINX_BIN:-$ROOT/target/nginx/sbin/nginx}
MODULE=${HAB_MODULE_SO:-$ROOT/target/nginx/modules/ngx_http_upstream_ha_module.so}
BACKEND=$ROOT/target/debug/hab-backend
HAB=$ROOT/target/debug/hab

WORKERS=4
FAIL_TIMEOUT=3
SLOW_START=8       # seconds
CLIENTS=4          # parallel curl clients per second
PER_CLIENT=50      # requests per client per second (keep-alive to nginx)
NAMES=(app1 app2 app3)

if [[ -t 1 ]]; then
    B=$'\e[1m' D=$'\e[2m' R=$'\e[31m' G=$'\e[32m' Y=$'\e[33m' C=$'\e[36m' N=$'\e[0m'
else
    B= D= R= G= Y= C= N=
fi

say()  { printf '%s\n' "$*"; }
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die()  { printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

for f in "$NGINX" "$MODULE" "$BACKEND" "$HAB"; do
    [[ -x $f || -f $f ]] || die "missing $f (run: make demo)"
done
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

RUN=$ROOT/target/demo/run-$$
rm -rf "$ROOT"/target/demo/run-*   # logs of earlier runs
mkdir -p "$RUN/logs" "$RUN/tmp"

# --- cleanup ---------------------------------------------------------------

declare -A PID PORT
NGINX_MASTER=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $NGINX_MASTER ]] && kill -0 "$NGINX_MASTER" 2>/dev/null; then
        kill -QUIT "$NGINX_MASTER" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$NGINX_MASTER" 2>/dev/null || break
            [[ $(awk '{print $3}' "/proc/$NGINX_MASTER/stat" 2>/dev/null) != Z ]] || break
            sleep 0.1
        done
        kill -KILL "$NGINX_MASTER" 2>/dev/null || true
    fi
    for n in "${!PID[@]}"; do
        kill "${PID[$n]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exec 9>&- 2>/dev/null || true
    printf '\n%sstopped nginx and the backends; logs kept in %s%s\n' "$D" "$RUN" "$N"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Backends read this FIFO with --exit-on-eof: if this script dies without
# cleaning up, the FIFO closes and they exit by themselves. Children are
# started with 9>&-: one holding the script's read-write end would keep
# every backend's input open.
mkfifo "$RUN/alive"
exec 9<>"$RUN/alive"

# --- helpers -----------------------------------------------------------------

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        port_taken "$p" || { echo "$p"; return; }
    done
    die "no free port found"
}

start_backend() {   # name port
    local name=$1 port=$2 out=$RUN/logs/$1.out
    : >"$out"
    "$BACKEND" --listen "127.0.0.1:$port" --name "$name" --exit-on-eof \
        <"$RUN/alive" >"$out" 2>&1 9>&- &
    PID[$name]=$!
    for _ in $(seq 100); do
        grep -q "^ready $name $port" "$out" && return
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    die "backend $name did not start: $(cat "$out")"
}

# One second of traffic: CLIENTS curls in parallel, each PER_CLIENT requests
# on one keep-alive connection. Writes "status backend" lines to $1.
traffic() {
    local out=$1 url="http://127.0.0.1:$NGINX_PORT/" i args=()
    for _ in $(seq "$PER_CLIENT"); do args+=(-o /dev/null "$url"); done
    for i in $(seq "$CLIENTS"); do
        curl -s --max-time 5 -w '%{http_code} %header{x-backend}\n' "${args[@]}" \
            >"$out.$i" 2>/dev/null &
    done
    wait_jobs_curl
    cat "$out".* >"$out"
    rm -f "$out".*
}

wait_jobs_curl() {
    local j
    for j in $(jobs -p); do
        # Only curl jobs; backends are waited for in cleanup.
        [[ " ${PID[*]} " == *" $j "* ]] || wait "$j" 2>/dev/null || true
    done
}

declare -A TOTAL
TOTAL_REQ=0
TOTAL_ERR=0

if [[ ${LC_ALL:-${LC_CTYPE:-${LANG:-}}} == *[Uu][Tt][Ff]-8* || ${LC_ALL:-${LC_CTYPE:-${LANG:-}}} == *[Uu][Tt][Ff]8* ]]; then
    FULL='█' EMPTY='·'
else
    FULL='#' EMPTY='.'
fi

bar() {   # share(0-100) width
    local n=$(($1 * $2 / 100)) i out=
    for ((i = 0; i < $2; i++)); do
        if ((i < n)); then out+=$FULL; else out+=$EMPTY; fi
    done
    printf '%s' "$out"
}

connect_failures() { grep -c 'connect() failed' "$RUN/logs/error.log" 2>/dev/null || true; }
LAST_FAILS=0
LAST_COUNT=0   # requests app2 answered in the last tick
LAST_NOTE=

# One line per second: time, requests/s, share of each backend, client
# errors, and upstream attempts that failed and were retried elsewhere.
tick() {   # second note
    local t=$1 note=${2:-} f=$RUN/tick.out start end ms total errs line n c share fails
    start=$(date +%s%N)
    traffic "$f"
    end=$(date +%s%N)
    total=$(wc -l <"$f")
    errs=$(awk '$1 != 200' "$f" | wc -l)
    TOTAL_REQ=$((TOTAL_REQ + total))
    TOTAL_ERR=$((TOTAL_ERR + errs))
    ms=$(((end - start) / 1000000))
    line=$(printf '%s%3ss%s %4s req/s' "$D" "$t" "$N" "$total")
    for n in "${NAMES[@]}"; do
        c=$(awk -v n="$n" '$1 == 200 && $2 == n' "$f" | wc -l)
        TOTAL[$n]=$((${TOTAL[$n]:-0} + c))
        [[ $n != app2 ]] || LAST_COUNT=$c
        share=$((total > 0 ? c * 100 / total : 0))
        if ((c == 0)); then
            line+=$(printf '  %s%s %s %3d%%%s' "$R" "$n" "$(bar 0 8)" 0 "$N")
        else
            line+=$(printf '  %s %s%s%s %3d%%' "$n" "$G" "$(bar "$share" 8)" "$N" "$share")
        fi
    done
    fails=$(connect_failures)
    if ((errs == 0)); then
        line+=$(printf '  %serrors 0%s' "$G" "$N")
    else
        line+=$(printf '  %serrors %d%s' "$R" "$errs" "$N")
    fi
    line+=$(printf '  retried %d' $((fails - LAST_FAILS)))
    LAST_FAILS=$fails
    printf '%s\n' "$line"
    if [[ -n $note && $note != "$LAST_NOTE" ]]; then
        printf '      %s%s%s\n' "$Y" "$note" "$N"
    fi
    LAST_NOTE=$note
    # Keep a steady one tick per second.
    if ((ms < 1000)); then sleep "$(printf '0.%03d' $((1000 - ms)))"; fi
    return 0
}

# --- start -------------------------------------------------------------------

step "Starting 3 demo backends (hab-backend) on 127.0.0.1"
for n in "${NAMES[@]}"; do
    PORT[$n]=$(free_port)
    start_backend "$n" "${PORT[$n]}"
    say "   $n  http://127.0.0.1:${PORT[$n]}/  answers \"$n\""
done

if [[ -n ${HAB_DEMO_PORT:-} ]]; then
    NGINX_PORT=$HAB_DEMO_PORT
    port_taken "$NGINX_PORT" && die "port $NGINX_PORT (HAB_DEMO_PORT) is taken"
elif ! port_taken 8080; then
    NGINX_PORT=8080
else
    NGINX_PORT=$(free_port)
fi
# Pauses for a person watching the page; none without a terminal.
if [[ -t 0 && -t 1 ]]; then WAIT=${HAB_DEMO_WAIT:-1}; else WAIT=${HAB_DEMO_WAIT:-0}; fi
cat >"$RUN/nginx.conf" <<EOF
load_module $MODULE;
worker_processes $WORKERS;
error_log $RUN/logs/error.log info;
pid $RUN/nginx.pid;
events { worker_connections 1024; }
http {
    access_log $RUN/logs/access.log;
    client_body_temp_path $RUN/tmp/body;
    proxy_temp_path $RUN/tmp/proxy;
    fastcgi_temp_path $RUN/tmp/fastcgi;
    uwsgi_temp_path $RUN/tmp/uwsgi;
    scgi_temp_path $RUN/tmp/scgi;

    upstream app {
        ha_balance least_conn;
        ha_check interval=1s timeout=500ms fails=2 passes=2 uri=/healthz;
        ha_slow_start ${SLOW_START}s;
        server 127.0.0.1:${PORT[app1]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
        server 127.0.0.1:${PORT[app2]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
        server 127.0.0.1:${PORT[app3]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
        }
        location /api/ {
            ha_api write=on;
            allow 127.0.0.1;
            deny all;
        }
    }
}
EOF

step "Starting nginx ($WORKERS worker processes) with the ha module"
say "${D}$(sed -n '/upstream app/,/^    }/p' "$RUN/nginx.conf")${N}"
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf" -t -q 9>&- 2>&1 || die "nginx -t failed"
"$NGINX" -p "$RUN" -c "$RUN/nginx.conf" 9>&- || die "nginx failed: $(tail -5 "$RUN/logs/error.log")"
for _ in $(seq 100); do
    [[ -s $RUN/nginx.pid ]] && port_taken "$NGINX_PORT" && break
    sleep 0.05
done
NGINX_MASTER=$(cat "$RUN/nginx.pid" 2>/dev/null || true)
[[ -n $NGINX_MASTER ]] && port_taken "$NGINX_PORT" || die "nginx did not come up"
say "   nginx listening on http://127.0.0.1:$NGINX_PORT/ (master pid $NGINX_MASTER)"
say ""
say "   ${B}${C}Live status page: http://127.0.0.1:$NGINX_PORT/api/${N}"
say "   ${D}(open it in a browser: it refreshes every second and shows the failover below;"
say "   metrics for Prometheus: http://127.0.0.1:$NGINX_PORT/api/metrics)${N}"
if ((WAIT)); then
    say "   ${Y}press Enter to start the traffic (starting by itself in 15 s)${N}"
    read -r -t 15 || true
fi

step "Traffic: $CLIENTS clients x $PER_CLIENT requests per second"
say "   ${D}share of requests per backend; 'errors' = non-200 answers seen by clients;"
say "   'retried' = attempts nginx found failed and retried on another backend${N}"
t=0
for _ in 1 2 3 4 5; do t=$((t + 1)); tick "$t"; done

step "Killing app2 (SIGKILL) while traffic flows"
kill -KILL "${PID[app2]}"
wait "${PID[app2]}" 2>/dev/null || true
unset 'PID[app2]'
t=$((t + 1)); tick "$t" "app2 killed: its requests are retried on app1 and app3"
for _ in 1 2 3 4 5; do
    t=$((t + 1))
    tick "$t" "app2 down: all workers skip it; one probe every ${FAIL_TIMEOUT}s (fail_timeout)"
done

step "Bringing app2 back on the same port (nginx probes it once fail_timeout has passed)"
start_backend app2 "${PORT[app2]}"
back=0
for _ in $(seq 8); do
    t=$((t + 1))
    tick "$t" ""
    if ((!back)); then
        if ((LAST_COUNT > 0)); then
            back=1
            say "   ${G}app2 passed its probe and is back in rotation${N}"
        fi
    fi
done

API=http://127.0.0.1:$NGINX_PORT/api
APP3=127.0.0.1:${PORT[app3]}
step "Draining app3 through the API, no reload: hab drain $API app $APP3"
"$HAB" drain "$API" app "$APP3" >/dev/null || die "hab drain failed"
for _ in 1 2 3; do
    t=$((t + 1))
    tick "$t" "app3 draining: requests in flight finish, every worker stops sending it new ones"
done
say "${D}$("$HAB" status "$API")${N}"
step "Back in rotation: hab undrain $API app $APP3"
"$HAB" undrain "$API" app "$APP3" >/dev/null || die "hab undrain failed"
for _ in 1 2 3; do t=$((t + 1)); tick "$t" ""; done

APP1=127.0.0.1:${PORT[app1]}
step "app1's health check starts failing (its traffic still works): curl $APP1/_ctl/health?set=fail"
curl -fsS "http://$APP1/_ctl/health?set=fail" >/dev/null || die "cannot set app1's health"
for _ in 1 2 3 4; do
    t=$((t + 1))
    tick "$t" "2 failed checks (ha_check fails=2, every 1s) take app1 out before a request fails on it"
done
state=$(curl -fsS "$API/upstreams/app/servers/0" | grep -o '"state":"[a-z]*"' || true)
say "   ${D}the API: app1 $state${N}"
step "app1's checks pass again: curl $APP1/_ctl/health?set=ok"
curl -fsS "http://$APP1/_ctl/health?set=ok" >/dev/null || die "cannot set app1's health"
for _ in $(seq $((SLOW_START + 3))); do
    t=$((t + 1))
    tick "$t" "2 passed checks, then ha_slow_start: app1's share ramps from 10% to all of it over ${SLOW_START}s"
done

step "Summary"
say "   requests sent:       $TOTAL_REQ"
for n in "${NAMES[@]}"; do
    say "   answered by $n:   ${TOTAL[$n]}"
done
if ((TOTAL_ERR == 0)); then
    say "   ${G}errors seen by clients: 0${N}  (app2's failure was absorbed by retries, app1's by its checks)"
else
    say "   ${R}errors seen by clients: $TOTAL_ERR${N}"
fi
((TOTAL_ERR == 0)) || die "clients saw errors"
say "   upstream attempts that failed: $(connect_failures) (nginx's error log: connect() failed)"
say "   ${D}each failure marks app2 down in shared memory, for all $WORKERS workers at once,"
say "   until fail_timeout (${FAIL_TIMEOUT}s) passes and one request probes it again${N}"
say "   the error log's transitions (one line each, whichever worker saw it):"
grep -E 'unavailable for|is back after|is unhealthy|is healthy again' "$RUN/logs/error.log" \
    | sed -E 's/^[0-9/]+ ([0-9:]+) \[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/     \1 [\2] /; s/, client:.*//' || true
say ""
say "${D}$("$HAB" status "$API")${N}"
say "   ${D}the same figures as Prometheus metrics:${N}"
curl -fsS "$API/metrics" | grep -E '^ha_upstream_server_(requests_total|state)\{' | sed 's/^/     /' || true
if ((WAIT)); then
    step "nginx stays up 20 s more for the status page (Ctrl-C to stop now)"
    say "   ${C}http://127.0.0.1:$NGINX_PORT/api/${N}"
    sleep 20 || true
fi
