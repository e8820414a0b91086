# ha-balancer demos: the code scripts/demo.sh and scripts/demo-dns.sh share
# (messages, the run directory, the cleanup, the backends, the traffic and
# its one-line-a-second ticks, nginx's configuration and start, the summary).
# Each demo keeps its own scenario; this file only provides the pieces.
#
# Sourced, not run: `source "$ROOT/scripts/demo-lib.sh"`. Before sourcing,
# a demo sets:
#   set -euo pipefail
#   ROOT          the repository
#   DEMO          its name (demo, demo-dns): the prefix of die's messages,
#                 the make target named when a binary is missing, and the
#                 folder of its runs, target/$DEMO/run-PID
# Sourcing sets, at the top level (globals):
#   NGINX MODULE  nginx and the module (HAB_NGINX_BIN, HAB_MODULE_SO)
#   BACKEND HAB   target/debug/hab-backend, target/debug/hab
#   B D R G Y C N colours (none unless stdout is a terminal)
#   WAIT          1 to pause for a person watching the status page (by
#                 default only on a terminal; HAB_DEMO_WAIT overrides)
#   PID PORT      (associative) each backend's pid and port, by name
#   TOTAL COUNT SHARE  (associative) per backend: 200s over the whole run;
#                 200s and share (%) in the last tick
#   TOTAL_REQ TOTAL_ERR  requests sent, non-200 answers, over the whole run
#   STOPPED       what cleanup's last line says it stopped (a demo may change
#                 it after sourcing)
#   OTHER_PIDS    background jobs besides the backends that the traffic does
#                 not wait for (cleanup does); empty, a demo may add to it
# Before calling the functions, a demo sets:
#   WORKERS FAIL_TIMEOUT  nginx's worker processes, the servers' fail_timeout
#   CLIENTS PER_CLIENT    parallel curl clients a tick, requests each
#   NAMES                 the backends' names (array), in the order shown
# and may define cleanup_more, which cleanup calls after stopping nginx and
# before stopping the backends (for other daemons the demo started).
# The functions set RUN (demo_init), NGINX_PORT (pick_nginx_port),
# NGINX_MASTER and API (start_nginx).

NGINX=${HAB_NGINX_BIN:-$ROOT/target/nginx/sbin/nginx}
MODULE=${HAB_MODULE_SO:-$ROOT/target/nginx/modules/ngx_http_upstream_ha_module.so}
BACKEND=$ROOT/target/debug/hab-backend
HAB=$ROOT/target/debug/hab

if [[ -t 1 ]]; then
    B=$'\e[1m' D=$'\e[2m' R=$'\e[31m' G=$'\e[32m' Y=$'\e[33m' C=$'\e[36m' N=$'\e[0m'
else
    B= D= R= G= Y= C= N=
fi

# Pauses for a person watching the page; none without a terminal.
if [[ -t 0 && -t 1 ]]; then WAIT=${HAB_DEMO_WAIT:-1}; else WAIT=${HAB_DEMO_WAIT:-0}; fi

say()  { printf '%s\n' "$*"; }
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die()  { printf '%s%s: %s%s\n' "$R" "$DEMO" "$*" "$N" >&2; exit 1; }

# Dies unless every file given exists (built by `make $DEMO`).
need_built() {   # file...
    local f
    for f in "$@"; do
        [[ -x $f || -f $f ]] || die "missing $f (run: make $DEMO)"
    done
}

need_curl() { command -v curl >/dev/null || die "curl is needed (apt-get install curl)"; }

# --- run directory, cleanup ------------------------------------------------

declare -A PID PORT
NGINX_MASTER=
STOPPED="nginx and the backends"
OTHER_PIDS=

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
    if declare -F cleanup_more >/dev/null; then cleanup_more; fi
    for n in "${!PID[@]}"; do
        kill "${PID[$n]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exec 9>&- 2>/dev/null || true
    printf '\n%sstopped %s; logs kept in %s%s\n' "$D" "$STOPPED" "$RUN" "$N"
    exit "$rc"
}

# A fresh run directory (the logs of earlier runs removed), the cleanup on
# exit, and the FIFO that keeps the backends alive.
#
# Backends read this FIFO with --exit-on-eof: if the demo dies without
# cleaning up, the FIFO closes and they exit by themselves. Every child is
# started with 9>&-, so that only the demo holds the FIFO's write end (a
# child holding it would keep every backend's input open).
demo_init() {
    RUN=$ROOT/target/$DEMO/run-$$
    rm -rf "$ROOT/target/$DEMO"/run-*   # logs of earlier runs
    mkdir -p "$RUN/logs" "$RUN/tmp"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkfifo "$RUN/alive"
    exec 9<>"$RUN/alive"
}

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

# One backend for each of NAMES, each on a free port.
start_backends() {
    local n
    step "Starting 3 demo backends (hab-backend) on 127.0.0.1"
    for n in "${NAMES[@]}"; do
        PORT[$n]=$(free_port)
        start_backend "$n" "${PORT[$n]}"
        say "   $n  http://127.0.0.1:${PORT[$n]}/  answers \"$n\""
    done
}

# One second of traffic: CLIENTS curls in parallel, each PER_CLIENT requests
# on one keep-alive connection. Writes "status backend" lines to $1.
traffic() {
    local out=$1 url="http://127.0.0.1:$NGINX_PORT/" i args=()
    for _ in $(seq "$PER_CLIENT"); do args+=(-o /dev/null "$url"); done
    for i in $(seq "$CLIENTS"); do
        curl -s --max-time 5 -w '%{http_code} %header{x-backend}\n' "${args[@]}" \
            >"$out.$i" 2>/dev/null 9>&- &
    done
    wait_jobs_curl
    cat "$out".* >"$out"
    rm -f "$out".*
}

wait_jobs_curl() {
    local j
    for j in $(jobs -p); do
        # Only curl jobs; backends and OTHER_PIDS are waited for in cleanup.
        [[ " ${PID[*]} $OTHER_PIDS " == *" $j "* ]] || wait "$j" 2>/dev/null || true
    done
}

declare -A TOTAL COUNT SHARE
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
LAST_NOTE=

# One line per second: time, requests/s, share of each backend, client
# errors, and upstream attempts that failed and were retried elsewhere.
# Sets COUNT[name] and SHARE[name] to the tick's figures.
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
        share=$((total > 0 ? c * 100 / total : 0))
        COUNT[$n]=$c SHARE[$n]=$share
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

# --- nginx -------------------------------------------------------------------

# NGINX_PORT: HAB_DEMO_PORT, else 8080 if free, else any free port.
pick_nginx_port() {
    if [[ -n ${HAB_DEMO_PORT:-} ]]; then
        NGINX_PORT=$HAB_DEMO_PORT
        ! port_taken "$NGINX_PORT" || die "port $NGINX_PORT (HAB_DEMO_PORT) is taken"
    elif ! port_taken 8080; then
        NGINX_PORT=8080
    else
        NGINX_PORT=$(free_port)
    fi
}

# Writes $RUN/nginx.conf: upstream $1, whose directives are read from stdin
# (indented by 8), proxied to on / with retries, and the API on /api/.
write_nginx_conf() {   # upstream <directives
    local name=$1 body
    body=$(cat)
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

    upstream $name {
$body
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://$name;
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
}

# Starts nginx on $RUN/nginx.conf (showing upstream $1's block) and waits
# until it listens; sets NGINX_MASTER and API.
start_nginx() {   # upstream
    step "Starting nginx ($WORKERS worker processes) with the ha module"
    say "${D}$(sed -n "/upstream $1/,/^    }/p" "$RUN/nginx.conf")${N}"
    "$NGINX" -p "$RUN" -c "$RUN/nginx.conf" -t -q 9>&- 2>&1 || die "nginx -t failed"
    "$NGINX" -p "$RUN" -c "$RUN/nginx.conf" 9>&- || die "nginx failed: $(tail -5 "$RUN/logs/error.log")"
    for _ in $(seq 100); do
        [[ -s $RUN/nginx.pid ]] && port_taken "$NGINX_PORT" && break
        sleep 0.05
    done
    NGINX_MASTER=$(cat "$RUN/nginx.pid" 2>/dev/null || true)
    [[ -n $NGINX_MASTER ]] && port_taken "$NGINX_PORT" || die "nginx did not come up"
    say "   nginx listening on http://127.0.0.1:$NGINX_PORT/ (master pid $NGINX_MASTER)"
    API=http://127.0.0.1:$NGINX_PORT/api
}

# The status page's address, the lines given (what it shows), and with
# WAIT a pause (up to 15 s, Enter to go on) to open it.
status_page() {   # line...
    local l
    say ""
    say "   ${B}${C}Live status page: http://127.0.0.1:$NGINX_PORT/api/${N}"
    for l in "$@"; do say "$l"; done
    if ((WAIT)); then
        say "   ${Y}press Enter to start the traffic (starting by itself in 15 s)${N}"
        read -r -t 15 || true
    fi
}

traffic_intro() {
    step "Traffic: $CLIENTS clients x $PER_CLIENT requests per second"
    say "   ${D}share of requests per backend; 'errors' = non-200 answers seen by clients;"
    say "   'retried' = attempts nginx found failed and retried on another backend${N}"
}

show_status() { say "${D}$("$HAB" status "$API")${N}"; }

# Error log lines (stdin) as "     time [level] message".
log_lines() {
    sed -E 's/^[0-9/]+ ([0-9:]+) \[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/     \1 [\2] /; s/, client:.*//'
}

# --- summary -----------------------------------------------------------------

summary_totals() {
    local n
    step "Summary"
    say "   requests sent:       $TOTAL_REQ"
    for n in "${NAMES[@]}"; do
        say "   answered by $n:   ${TOTAL[$n]}"
    done
}

# Client errors (with $1, why there were none), dying if there were any.
summary_errors() {   # why-none
    if ((TOTAL_ERR == 0)); then
        say "   ${G}errors seen by clients: 0${N}  ($1)"
    else
        say "   ${R}errors seen by clients: $TOTAL_ERR${N}"
    fi
    ((TOTAL_ERR == 0)) || die "clients saw errors"
}

summary_failed_attempts() {
    say "   upstream attempts that failed: $(connect_failures) (nginx's error log: connect() failed)"
}

# The API's status and metrics; with WAIT, nginx kept up 20 s more.
summary_end() {
    show_status
    say "   ${D}the same figures as Prometheus metrics:${N}"
    curl -fsS "$API/metrics" | grep -E '^ha_upstream_server_(requests_total|state)\{' | sed 's/^/     /' || true
    if ((WAIT)); then
        step "nginx stays up 20 s more for the status page (Ctrl-C to stop now)"
        say "   ${C}http://127.0.0.1:$NGINX_PORT/api/${N}"
        sleep 20 || true
    fi
}
