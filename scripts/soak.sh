#!/usr/bin/env bash
# ha-balancer soak: reloads, worker kills and failing backends under load,
# run side by side on nginx with the module ("ours": ha_balance, 4 workers)
# and on the same nginx binary without it ("stock": zone + least_conn or
# round robin, 4 workers), on the same scenario. Run by `make soak` (full)
# and `make soak-short` (part of `make test`); results in docs/soak.md.
#
# For each side, while wrk sends GETs (every request on a fresh connection)
# through nginx to an upstream of hab-backend listeners
#   good1, good2   answering 200 after HAB_SOAK_BACKEND_MS,
#   one1           the same, max_conns=1,
#   flap           the same, stopped and started again every HAB_SOAK_FLAP/2 s,
#   hang           accepts and answers after 60 s (proxy_read_timeout 1s),
#   reset          closes every connection without answering,
#   extra          as good1, added and removed by reloads,
# with `proxy_next_upstream error timeout`, max_fails=1 fail_timeout=2s,
# for HAB_SOAK_SECONDS:
#   - HAB_SOAK_RELOADS `nginx -s reload`, evenly spread, every other one
#     adding or removing `extra`, the others unchanged;
#   - HAB_SOAK_KILLS kill -9 of a random worker, one every
#     HAB_SOAK_KILL_EVERY seconds at the end of the window, the second half
#     of them after the last reload (stock nginx starts a fresh zone at each
#     reload: only then can it carry a leak to the idle checks). Each worker
#     is stopped (SIGSTOP) first and the client connections it holds are
#     counted: the kill cuts them, so they are the socket errors a kill
#     explains;
# then, at idle, every backend answering at once again: sequential requests
# (HAB_SOAK_IDLE_PER_SERVER per server) show the balance (least_conn with
# a leaked in-flight count avoids that server; a leaked max_conns=1 slot
# shuts one1 out), and for ours the API shows what is in flight (`active`,
# must be 0 everywhere).
#
# Prints one table and exits non-zero if, for ours: a client saw a
# non-2xx, a socket error not explained by the kills (more errors than
# connections the killed workers held, or any connect error or timeout),
# an [alert] or [crit] (or [emerg]) other than the master's report of the workers
# killed here, a worker died of a signal not sent here, something is left
# in flight at idle, the max_conns=1 server admits nothing, the balance at
# idle is uneven (a server off the even share by more than 20%), or not
# every reload and kill was done. Stock's figures are reported, not judged.
#
# Exits 2 when it cannot run (no wrk, nginx or free port).
#
# Environment (defaults: the full soak, about 4.5 min for both sides):
#   HAB_SOAK_RELOADS=100 HAB_SOAK_KILLS=15 HAB_SOAK_KILL_EVERY=2
#   HAB_SOAK_SECONDS=120       fault phase per side (load runs through it)
#   HAB_SOAK_FLAP=5            flap's stop/start cycle, seconds
#   HAB_SOAK_POLICY=least_conn or round_robin
#   HAB_SOAK_SIDES="ours stock"
#   HAB_SOAK_CONNS=16 HAB_SOAK_PACE_MS=0     wrk connections, pause per request
#   HAB_SOAK_BACKEND_MS=20     latency of the answering backends
#   HAB_SOAK_CLIENT_KEEPALIVE=1   wrk keeps its connections alive (then every
#                              reload's old workers close some under a request
#                              the client already sent: nginx's keep-alive
#                              race, which fails ours; for investigation)
#   HAB_SOAK_IDLE_PER_SERVER=50
#   HAB_NGINX_BIN, HAB_MODULE_SO   another nginx / module (as the e2e tests)
#   HAB_SOAK_DIR                   where runs are kept (target/soak)
# Everything listens on 127.0.0.1, on ports from 20000 to 31999; every loop
# is bounded in count and time; everything started here is stopped on exit.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=${HAB_NGINX_BIN:-$ROOT/target/nginx/sbin/nginx}
MODULE=${HAB_MODULE_SO:-$ROOT/target/nginx/modules/ngx_http_upstream_ha_module.so}
BACKEND=$ROOT/target/debug/hab-backend
LUA=$ROOT/scripts/soak.lua

RELOADS=${HAB_SOAK_RELOADS:-100}
KILLS=${HAB_SOAK_KILLS:-15}
KILL_EVERY=${HAB_SOAK_KILL_EVERY:-2}
DURATION=${HAB_SOAK_SECONDS:-120}
FLAP=${HAB_SOAK_FLAP:-5}
POLICY=${HAB_SOAK_POLICY:-least_conn}
SIDES=${HAB_SOAK_SIDES:-ours stock}
CONNS=${HAB_SOAK_CONNS:-16}
PACE_MS=${HAB_SOAK_PACE_MS:-0}
BACKEND_MS=${HAB_SOAK_BACKEND_MS:-20}
CLIENT_KEEPALIVE=${HAB_SOAK_CLIENT_KEEPALIVE:-0}
PER_SERVER=${HAB_SOAK_IDLE_PER_SERVER:-50}
WORKERS=4
FAIL_TIMEOUT=2
CONN_MODE=close
[[ $CLIENT_KEEPALIVE == 0 ]] || CONN_MODE=keepalive

die() { printf 'soak: %s\n' "$*" >&2; exit 2; }
say() { printf 'soak: %s\n' "$*" >&2; }

for v in RELOADS KILLS KILL_EVERY DURATION FLAP CONNS PACE_MS BACKEND_MS PER_SERVER; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "HAB_SOAK_$v must be a whole number, not '${!v}'"
done
((DURATION >= 4 && FLAP >= 2 && CONNS >= 1 && PER_SERVER >= 1)) || die "numbers too small"
case $POLICY in least_conn | round_robin) ;; *) die "HAB_SOAK_POLICY: least_conn or round_robin" ;; esac
for s in $SIDES; do
    case $s in ours | stock) ;; *) die "HAB_SOAK_SIDES: ours and/or stock, not '$s'" ;; esac
done
command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk; make deps installs it)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
[[ -x $NGINX ]] || die "no nginx at $NGINX (make nginx)"
[[ -x $BACKEND ]] || die "no $BACKEND (cargo build --workspace --bins)"
[[ $SIDES != *ours* || -f $MODULE ]] || die "no module at $MODULE (make nginx)"

BASE=${HAB_SOAK_DIR:-$ROOT/target/soak}
RUNS=$BASE/run-$$
mkdir -p "$RUNS"
# Keep the last 3 runs' logs.
for old in $(ls -dt "$BASE"/run-* 2>/dev/null | tail -n +4); do rm -rf "$old"; done

# --- processes started here, and their cleanup ---------------------------------

MASTER=           # nginx master of the running side
STOPPED_PID=      # a worker between SIGSTOP and SIGKILL
NGINX_CMD=()      # nginx -p ... -c ... -e ...
WRK_PID=
STATIC_PID=       # hab-backend with the steady listeners
FLAP_PID=
ALIVE_FD_OPEN=0

# Live children of $1 (from /proc/PID/task/PID/children, else a /proc scan).
children_of() {
    local ppid=$1 f s rest p
    if [[ -r /proc/$ppid/task/$ppid/children ]]; then
        # shellcheck disable=SC2005
        echo $(</proc/"$ppid"/task/"$ppid"/children)
        return 0
    fi
    for f in /proc/[0-9]*/stat; do
        read -r s <"$f" 2>/dev/null || continue
        rest=${s##*) }
        read -r -a s <<<"$rest"
        [[ ${s[1]} == "$ppid" ]] || continue
        p=${f#/proc/}
        printf '%s ' "${p%/stat}"
    done
    echo
}

alive() {   # pid: running and not a zombie
    local s
    [[ -r /proc/$1/stat ]] || return 1
    read -r s <"/proc/$1/stat" 2>/dev/null || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z && ${s:0:1} != X ]]
}

# Stops nginx: QUIT (or $1), up to 10 s, then KILL of the master and its
# children.
stop_nginx() {
    [[ -n $MASTER ]] || return 0
    local kids i
    kids=$(children_of "$MASTER")
    kill "-${1:-QUIT}" "$MASTER" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$MASTER" || break
        sleep 0.1
    done
    kids="$kids $(children_of "$MASTER" 2>/dev/null || true)"
    if alive "$MASTER"; then
        say "nginx $MASTER did not quit within 10 s; killing it"
        kill -KILL "$MASTER" 2>/dev/null || true
    fi
    for i in $kids; do
        alive "$i" && kill -KILL "$i" 2>/dev/null || true
    done
    MASTER=
}

stop_pid() {   # pid: TERM, up to 2 s, then KILL, and reap
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    if [[ -n $WRK_PID ]]; then stop_pid "$WRK_PID"; WRK_PID=; fi
    # a worker stopped on its way to kill -9
    if [[ -n $STOPPED_PID ]]; then kill -KILL "$STOPPED_PID" 2>/dev/null || true; fi
    stop_nginx TERM
    if [[ -n $FLAP_PID ]]; then stop_pid "$FLAP_PID"; FLAP_PID=; fi
    if [[ -n $STATIC_PID ]]; then stop_pid "$STATIC_PID"; STATIC_PID=; fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    ((ALIVE_FD_OPEN)) && exec 9>&- 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Backends read this FIFO with --exit-on-eof: should this script die without
# its cleanup, the FIFO closes and they exit by themselves.
mkfifo "$RUNS/alive"
exec 9<>"$RUNS/alive"
ALIVE_FD_OPEN=1

# --- helpers ------------------------------------------------------------------

now_ms() { local t=${EPOCHREALTIME/./}; NOW=$((t / 1000)); }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

declare -A USED_PORT
free_port() {   # sets PORT_OUT
    local p i
    for ((i = 0; i < 500; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ -z ${USED_PORT[$p]:-} ]] || continue
        port_taken "$p" && continue
        USED_PORT[$p]=1
        PORT_OUT=$p
        return 0
    done
    die "no free port on 127.0.0.1 in 20000..31999"
}

# hab-backend with listeners "name:port ..."; sets BACKEND_PID_OUT. Fails
# (returns 1) if it does not print its ready lines within 5 s.
spawn_backend() {   # out-file mode name:port...
    local out=$1 mode=$2 args=() np want i
    shift 2
    for np in "$@"; do args+=(--listen "127.0.0.1:${np#*:}" --name "${np%%:*}"); done
    : >"$out"
    "$BACKEND" "${args[@]}" --mode "$mode" --exit-on-eof <"$RUNS/alive" >"$out" 2>&1 &
    BACKEND_PID_OUT=$!
    want=$#
    for ((i = 0; i < 100; i++)); do
        (($(grep -c '^ready ' "$out" || true) >= want)) && return 0
        alive "$BACKEND_PID_OUT" || break
        sleep 0.05
    done
    stop_pid "$BACKEND_PID_OUT"
    BACKEND_PID_OUT=
    return 1
}

ctl() {   # port path: a backend's control endpoint
    curl -fsS --max-time 5 "http://127.0.0.1:$1$2"
}

# the mode of the backends that answer: with some latency, so that a
# worker killed under load has requests in flight to them
OK_MODE=ok
((BACKEND_MS == 0)) || OK_MODE=delay:$BACKEND_MS
STATIC_NAMES=(good1 good2 one1 hang reset extra)
declare -A BPORT

start_backends() {   # dir
    local dir=$1 try n specs
    for ((try = 0; try < 5; try++)); do
        specs=()
        for n in "${STATIC_NAMES[@]}"; do
            free_port
            BPORT[$n]=$PORT_OUT
            specs+=("$n:$PORT_OUT")
        done
        if spawn_backend "$dir/backends.out" ok "${specs[@]}"; then
            STATIC_PID=$BACKEND_PID_OUT
            break
        fi
    done
    [[ -n $STATIC_PID ]] || die "backends did not start: $(cat "$dir/backends.out")"
    for n in good1 good2 one1 extra; do ctl "${BPORT[$n]}" "/_ctl/mode?set=$OK_MODE" >/dev/null; done
    ctl "${BPORT[hang]}" "/_ctl/mode?set=delay:60000" >/dev/null
    ctl "${BPORT[reset]}" "/_ctl/mode?set=close" >/dev/null
    for ((try = 0; try < 5; try++)); do
        free_port
        BPORT[flap]=$PORT_OUT
        if spawn_backend "$dir/flap.out" "$OK_MODE" "flap:${BPORT[flap]}"; then
            FLAP_PID=$BACKEND_PID_OUT
            break
        fi
    done
    [[ -n $FLAP_PID ]] || die "backend flap did not start: $(cat "$dir/flap.out")"
}

FLAP_FAILS=0
flap_down() {
    [[ -n $FLAP_PID ]] || return 0
    kill -KILL "$FLAP_PID" 2>/dev/null || true
    wait "$FLAP_PID" 2>/dev/null || true
    FLAP_PID=
}
flap_up() {   # dir; same port (retried by the next cycle if still busy)
    [[ -z $FLAP_PID ]] || return 0
    if spawn_backend "$1/flap.out" "$OK_MODE" "flap:${BPORT[flap]}"; then
        FLAP_PID=$BACKEND_PID_OUT
    else
        FLAP_FAILS=$((FLAP_FAILS + 1))
    fi
}

# nginx.conf for a side, with or without `extra`.
write_conf() {   # side dir with_extra
    local side=$1 dir=$2 extra=$3 n balance load api
    local srv="max_fails=1 fail_timeout=${FAIL_TIMEOUT}s"
    if [[ $side == ours ]]; then
        load="load_module $MODULE;"
        balance="ha_balance $POLICY;"
        api="location /api/ { ha_api; allow 127.0.0.1; deny all; }"
    else
        load=
        balance="zone app 64k;"
        [[ $POLICY != least_conn ]] || balance+=" least_conn;"
        api=
    fi
    {
        printf '%s\n' "$load"
        cat <<EOF
worker_processes $WORKERS;
error_log $dir/error.log notice;
pid $dir/nginx.pid;
events { worker_connections 4096; }
http {
    log_format soak '\$msec \$pid \$status "\$request_uri" "\$upstream_addr" "\$upstream_status" \$request_time';
    access_log $dir/access.log soak;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

    upstream app {
        $balance
        server 127.0.0.1:${BPORT[good1]} $srv;
        server 127.0.0.1:${BPORT[good2]} $srv;
        server 127.0.0.1:${BPORT[one1]} max_conns=1 $srv;
        server 127.0.0.1:${BPORT[flap]} $srv;
        server 127.0.0.1:${BPORT[hang]} $srv;
        server 127.0.0.1:${BPORT[reset]} $srv;
EOF
        if ((extra)); then
            printf '        server 127.0.0.1:%s %s;\n' "${BPORT[extra]}" "$srv"
        fi
        cat <<EOF
    }

    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
            proxy_read_timeout 1s;
        }
        $api
    }
}
EOF
    } >"$dir/nginx.conf.new"
    mv "$dir/nginx.conf.new" "$dir/nginx.conf"
}

# Worker pids of $MASTER that are not shutting down; sets WORKERS_NOW.
current_workers() {
    local p cmd
    WORKERS_NOW=()
    for p in $(children_of "$MASTER"); do
        cmd=$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
        [[ $cmd == *"worker process"* && $cmd != *"shutting down"* ]] || continue
        WORKERS_NOW+=("$p")
    done
}

# Waits (up to $2 s) for $WORKERS current workers none of which is in $1.
wait_workers() {   # "old pids" seconds
    local old=" $1 " limit=$(($2 * 20)) i p fresh
    for ((i = 0; i < limit; i++)); do
        current_workers
        fresh=0
        for p in "${WORKERS_NOW[@]}"; do [[ $old == *" $p "* ]] || fresh=$((fresh + 1)); done
        ((fresh == WORKERS)) && return 0
        sleep 0.05
    done
    return 1
}

start_nginx() {   # side dir
    local side=$1 dir=$2 try i
    mkdir -p "$dir/tmp" "$dir/logs"
    for ((try = 0; try < 3; try++)); do
        free_port
        NGX_PORT=$PORT_OUT
        write_conf "$side" "$dir" 0
        NGINX_CMD=("$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/startup.log")
        if "${NGINX_CMD[@]}" 2>>"$dir/start.err"; then
            for ((i = 0; i < 100; i++)); do
                [[ -s $dir/nginx.pid ]] && break
                sleep 0.05
            done
            MASTER=$(cat "$dir/nginx.pid" 2>/dev/null || true)
            [[ -n $MASTER ]] || die "$side: nginx wrote no pid file"
            wait_workers "" 15 || die "$side: nginx has no $WORKERS workers: $(tail -5 "$dir/error.log")"
            for ((i = 0; i < 100; i++)); do
                port_taken "$NGX_PORT" && return 0
                sleep 0.05
            done
            die "$side: nginx does not answer on $NGX_PORT"
        fi
        # the port may have been taken meanwhile: try another
    done
    die "$side: nginx did not start: $(tail -5 "$dir/start.err")"
}

# `nginx -s reload`, then waits for a new set of workers. Returns 1 if the
# signal could not be sent or no new workers came within 10 s.
reload() {   # dir
    local old
    current_workers
    old="${WORKERS_NOW[*]}"
    "${NGINX_CMD[@]}" -s reload 2>>"$1/reload.err" || return 1
    wait_workers "$old" 10
}

# Client connections (on nginx's port) that worker $1 holds.
client_conns() {
    local pid=$1 hex inodes
    hex=$(printf '%04X' "$NGX_PORT")
    inodes=" $(find "/proc/$pid/fd" -lname 'socket:*' -printf '%l ' 2>/dev/null \
        | sed 's/socket:\[\([0-9]*\)\]/\1/g') "
    awk -v hex="$hex" -v inodes="$inodes" '
        NR > 1 && $4 != "0A" && substr($2, length($2) - 3) == hex && index(inodes, " " $10 " ") { n++ }
        END { print n + 0 }' /proc/net/tcp
}

# kill -9 of a random current worker (stopped first, so that the count of
# the client connections it cuts is exact). Sets KILLED_PID, CUT.
kill_worker() {
    local n
    KILLED_PID= CUT=0
    current_workers
    n=${#WORKERS_NOW[@]}
    ((n > 0)) || return 1
    KILLED_PID=${WORKERS_NOW[RANDOM % n]}
    STOPPED_PID=$KILLED_PID
    kill -STOP "$KILLED_PID" 2>/dev/null || { STOPPED_PID=; return 1; }
    CUT=$(client_conns "$KILLED_PID")
    kill -KILL "$KILLED_PID" 2>/dev/null || { STOPPED_PID=; return 1; }
    STOPPED_PID=
    # the master starts a new worker in its place
    wait_workers "$KILLED_PID" 5 || true
}

# Parses wrk's report: sets W_REQ W_NON2XX W_CONNECT W_READ W_WRITE W_TIMEOUT.
parse_wrk() {
    local f=$1 line
    W_REQ=0 W_NON2XX=0 W_CONNECT=0 W_READ=0 W_WRITE=0 W_TIMEOUT=0
    line=$(grep -E '^ *[0-9]+ requests in' "$f" || true)
    [[ -n $line ]] || return 1
    W_REQ=$(awk '{ print $1 }' <<<"$line")
    line=$(grep -E 'Non-2xx or 3xx responses:' "$f" || true)
    [[ -z $line ]] || W_NON2XX=$(awk '{ print $NF }' <<<"$line")
    line=$(grep -E 'Socket errors:' "$f" || true)
    if [[ -n $line ]]; then
        read -r W_CONNECT W_READ W_WRITE W_TIMEOUT < <(sed -E \
            's/.*connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+).*/\1 \2 \3 \4/' <<<"$line")
    fi
}

declare -A R   # results: R[side:key]

# --- one side -----------------------------------------------------------------

run_side() {
    local side=$1 dir=$RUNS/$side
    local t0 tend tcap next_reload=0 reloads=0 changing=0 extra=0 reload_fails=0
    local kills=0 next_kill cut=0 killed=" " next_flap flap_is_up=1 i step kill_start reload_span
    mkdir -p "$dir"
    say "$side: starting backends and nginx ($("$NGINX" -v 2>&1 | sed 's/.*: //'), $WORKERS workers, $POLICY)"
    start_backends "$dir"
    start_nginx "$side" "$dir"

    wrk -t1 -c"$CONNS" -d$((DURATION * 2 + 120))s --timeout 10s -s "$LUA" \
        "http://127.0.0.1:$NGX_PORT/" -- "$PACE_MS" "$CONN_MODE" >"$dir/wrk.out" 2>&1 &
    WRK_PID=$!
    sleep 1

    now_ms
    t0=$NOW
    tend=$((t0 + DURATION * 1000))
    tcap=$((t0 + DURATION * 2000 + 60000))   # hard bound of the fault phase
    # kills take the end of the window, reloads all of it but the last half
    # of the kills: stock nginx makes a fresh zone at every reload, so only
    # kills after the last reload can leave it anything to leak at idle
    kill_start=$((DURATION * 1000 - KILLS * KILL_EVERY * 1000))
    ((kill_start > 0)) || kill_start=0
    reload_span=$((kill_start + (DURATION * 1000 - kill_start) / 2))
    step=$((reload_span / (RELOADS > 0 ? RELOADS : 1)))
    next_reload=$((t0 + step / 2))
    next_kill=$((t0 + kill_start + KILL_EVERY * 500))
    next_flap=$((t0 + FLAP * 500))
    say "$side: ${DURATION}s: $RELOADS reloads in the first $((reload_span / 1000))s, $KILLS kills every ${KILL_EVERY}s from $((kill_start / 1000))s, flap down/up every $((FLAP * 500)) ms"
    for ((i = 0; i < 1000000; i++)); do
        now_ms
        ((NOW < tcap)) || break
        if ((reloads >= RELOADS && kills >= KILLS && NOW >= tend)); then break; fi
        if ((NOW >= next_flap && NOW < tend)); then
            if ((flap_is_up)); then flap_down; flap_is_up=0; else flap_up "$dir"; flap_is_up=1; fi
            next_flap=$((next_flap + FLAP * 500))
        fi
        if ((kills < KILLS && NOW >= next_kill)); then
            if kill_worker; then
                kills=$((kills + 1))
                cut=$((cut + CUT))
                killed+="$KILLED_PID "
                printf '%s kill %s cut %s\n' "$NOW" "$KILLED_PID" "$CUT" >>"$dir/events.log"
            fi
            next_kill=$((next_kill + KILL_EVERY * 1000))
            continue
        fi
        if ((reloads < RELOADS && NOW >= next_reload)); then
            if ((reloads % 2 == 1)); then
                extra=$((1 - extra))
                changing=$((changing + 1))
            fi
            write_conf "$side" "$dir" "$extra"
            if reload "$dir"; then
                printf '%s reload %s extra=%s\n' "$NOW" "$reloads" "$extra" >>"$dir/events.log"
            else
                reload_fails=$((reload_fails + 1))
                printf '%s reload %s FAILED\n' "$NOW" "$reloads" >>"$dir/events.log"
            fi
            reloads=$((reloads + 1))
            next_reload=$((next_reload + step))
            continue
        fi
        sleep 0.05
    done
    # every backend answers again; the load runs on 2 s more
    flap_up "$dir"
    sleep 2
    kill -INT "$WRK_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$WRK_PID" || break
        sleep 0.1
    done
    stop_pid "$WRK_PID"
    WRK_PID=
    parse_wrk "$dir/wrk.out" || say "$side: no wrk report: $(tail -3 "$dir/wrk.out")"

    # --- idle: balance, and what is left in flight
    for n in good1 good2 one1 hang reset extra flap; do
        ctl "${BPORT[$n]}" "/_ctl/mode?set=ok" >/dev/null || say "$side: cannot set $n to ok"
    done
    sleep $((FAIL_TIMEOUT + 1))
    local names=(good1 good2 one1 flap hang reset) n urls=() codes idle_bad counts=() min max sum
    ((extra)) && names+=(extra)
    n=${#names[@]}
    # warm-up: each server disabled during the faults is probed back
    for ((i = 0; i < 3 * n; i++)); do urls+=(-o /dev/null "http://127.0.0.1:$NGX_PORT/"); done
    curl -s --max-time 30 -w '%{http_code}\n' "${urls[@]}" >"$dir/idle-warmup.out" || true
    for b in "${names[@]}"; do ctl "${BPORT[$b]}" /_ctl/reset >/dev/null || say "$side: cannot reset $b"; done
    urls=()
    for ((i = 0; i < PER_SERVER * n; i++)); do urls+=(-o /dev/null "http://127.0.0.1:$NGX_PORT/"); done
    curl -s --max-time 60 -w '%{http_code}\n' "${urls[@]}" >"$dir/idle.out" || true
    idle_bad=$(grep -vc '^200$' "$dir/idle.out" || true)
    min=999999999 max=0 sum=0
    for b in "${names[@]}"; do
        local c
        c=$(ctl "${BPORT[$b]}" /_ctl/stats | sed -E 's/.*requests=([0-9]+).*/\1/' || true)
        [[ $c =~ ^[0-9]+$ ]] || c=0
        counts+=("$b=$c")
        ((c < min)) && min=$c
        ((c > max)) && max=$c
        sum=$((sum + c))
        [[ $b != one1 ]] || R[$side:one1]=$c
    done
    printf '%s\n' "${counts[@]}" >"$dir/idle-counts.out"
    R[$side:balance]="$min-$max of $((PER_SERVER * n)) on $n"
    R[$side:idle_total]=$((PER_SERVER * n))
    R[$side:balance_ok]=1
    if ((min * 10 < PER_SERVER * 8 || max * 10 > PER_SERVER * 12 || idle_bad > 0)); then
        R[$side:balance_ok]=0
    fi
    ((idle_bad == 0)) || R[$side:balance]+=" ($idle_bad not 200)"
    if [[ $side == ours ]]; then
        local api active
        api=$(curl -fsS --max-time 5 "http://127.0.0.1:$NGX_PORT/api/upstreams/app" || true)
        printf '%s\n' "$api" >"$dir/api-idle.json"
        # every "active" of the peers and the totals
        active=$(grep -o '"active":[0-9]*' <<<"$api" | awk -F: '{ s += $2; n++ } END { printf "%d %d", s, n }')
        R[$side:active]=${active% *}
        R[$side:active_n]=${active#* }
        R[$side:retiring]=$(grep -o '"retiring":\[[^]]*\]' <<<"$api" || true)
    fi
    stop_nginx
    stop_pid "$FLAP_PID"; FLAP_PID=
    stop_pid "$STATIC_PID"; STATIC_PID=

    # --- the error log
    local log=$dir/error.log alerts crits crashes p pat
    pat=
    for p in $killed; do pat+="${pat:+|} $p exited on signal 9\$"; done
    [[ -n $pat ]] || pat='^$'
    cat "$dir/logs/startup.log" >>"$log" 2>/dev/null || true
    alerts=$(grep '\[alert\]' "$log" | grep -Ev "$pat" || true)
    crits=$(grep '\[crit\]' "$log" || true)
    crashes=$(grep 'exited on signal' "$log" | grep -Ev "$pat" || true)
    printf '%s\n' "$alerts" >"$dir/alerts.out"
    printf '%s\n' "$crits" >"$dir/crits.out"
    R[$side:alerts]=$(grep -c . <<<"$alerts" || true)
    R[$side:crits]=$(grep -c . <<<"$crits" || true)
    R[$side:crashes]=$(grep -c . <<<"$crashes" || true)
    R[$side:emerg]=$(grep -c '\[emerg\]' "$log" || true)
    R[$side:requests]=$W_REQ
    R[$side:non2xx]=$W_NON2XX
    R[$side:sockerr]=$((W_CONNECT + W_READ + W_WRITE + W_TIMEOUT))
    R[$side:sockdetail]="c$W_CONNECT r$W_READ w$W_WRITE t$W_TIMEOUT"
    R[$side:connect_timeout]=$((W_CONNECT + W_TIMEOUT))
    R[$side:cut]=$cut
    R[$side:reloads]=$((reloads - reload_fails))
    R[$side:changing]=$changing
    R[$side:kills]=$kills
    R[$side:flapfails]=$FLAP_FAILS
    # statuses as nginx logged them (the requests of killed workers are not
    # logged): for the record
    awk '{ n[$3]++ } END { for (s in n) printf "%s=%d ", s, n[s]; print "" }' "$dir/access.log" \
        >"$dir/statuses.out" 2>/dev/null || true
    R[$side:logged]=$(cat "$dir/statuses.out")
    # requests nginx passed on to another server, and those that first
    # waited for the hung one (proxy_read_timeout 1s)
    R[$side:retried]=$(awk -F'"' '
        { n = split($4, a, ", "); if (n > 1) r++; split($7, t, " "); if (n > 1 && t[1] >= 0.9) s++ }
        END { printf "%d (%d waited >= 1 s)", r, s }' "$dir/access.log" 2>/dev/null || echo '?')
    say "$side: done (${R[$side:requests]} requests; logs in $dir)"
}

# --- run ----------------------------------------------------------------------

now_ms
START=$NOW
for side in $SIDES; do
    FLAP_FAILS=0
    run_side "$side"
done
now_ms
ELAPSED=$(((NOW - START) / 1000))

# --- the table ----------------------------------------------------------------

cell() {   # side key
    if [[ $SIDES == *$1* ]]; then printf '%s' "${R[$1:$2]:-?}"; else printf -- '-'; fi
}
row() {   # label ours stock
    printf '| %-28s | %-30s | %-30s |\n' "$1" "$2" "$3"
}
sock_cell() {
    [[ $SIDES == *$1* ]] || { printf -- '-'; return; }
    printf '%s (%s cut by kills)' "${R[$1:sockerr]}" "${R[$1:cut]}"
}
active_cell() {
    [[ $SIDES == *$1* ]] || { printf -- '-'; return; }
    local adm=no
    ((${R[$1:one1]:-0} > 0)) && adm=yes
    if [[ $1 == ours ]]; then
        printf '%s (%s servers and totals); max_conns=1 admits: %s' "${R[$1:active]}" "$((R[$1:active_n] - 1))" "$adm"
    else
        printf 'no API; max_conns=1 admits: %s (%s of %s)' "$adm" "${R[$1:one1]:-0}" "${R[$1:idle_total]:-?}"
    fi
}
VERSION=$("$NGINX" -v 2>&1 | sed 's/.*version: //')
printf '\nsoak: %s, %s, %s workers, %s s of faults per side, wrk %s connections (%s, %s ms pause), backends %s ms, %s s in all\n\n' \
    "$VERSION" "$POLICY" "$WORKERS" "$DURATION" "$CONNS" "$([[ $CONN_MODE == close ]] && echo 'Connection: close' || echo keep-alive)" "$PACE_MS" "$BACKEND_MS" "$ELAPSED"
row "" "ours (ha_balance $POLICY)" "stock (zone$([[ $POLICY == least_conn ]] && echo ' + least_conn'))"
row "----------------------------" "------------------------------" "------------------------------"
row "reloads (changing) / kills" "$(cell ours reloads) ($(cell ours changing)) / $(cell ours kills)" \
    "$(cell stock reloads) ($(cell stock changing)) / $(cell stock kills)"
row "requests" "$(cell ours requests)" "$(cell stock requests)"
row "non-2xx" "$(cell ours non2xx)" "$(cell stock non2xx)"
row "retried on another server" "$(cell ours retried)" "$(cell stock retried)"
row "socket errors" "$(sock_cell ours)" "$(sock_cell stock)"
row "[alert]s" "$(cell ours alerts)" "$(cell stock alerts)"
row "[crit]s" "$(cell ours crits)" "$(cell stock crits)"
row "worker crashes" "$(cell ours crashes)" "$(cell stock crashes)"
row "balance at idle (min-max)" "$(cell ours balance)" "$(cell stock balance)"
row "active at idle" "$(active_cell ours)" "$(active_cell stock)"
echo
for side in $SIDES; do
    printf '%s: socket errors %s; nginx logged statuses %s; logs in %s\n' \
        "$side" "${R[$side:sockdetail]}" "${R[$side:logged]}" "$RUNS/$side"
done

# --- verdict (ours only) ------------------------------------------------------

FAIL=()
if [[ $SIDES == *ours* ]]; then
    ((R[ours:reloads] == RELOADS)) || FAIL+=("reloads done: ${R[ours:reloads]} of $RELOADS")
    ((R[ours:kills] == KILLS)) || FAIL+=("kills done: ${R[ours:kills]} of $KILLS")
    ((R[ours:requests] > 0)) || FAIL+=("no requests counted by wrk")
    ((R[ours:non2xx] == 0)) || FAIL+=("${R[ours:non2xx]} non-2xx responses")
    ((R[ours:connect_timeout] == 0)) || FAIL+=("socket errors not from kills: ${R[ours:sockdetail]}")
    ((R[ours:sockerr] <= R[ours:cut])) ||
        FAIL+=("${R[ours:sockerr]} socket errors, more than the ${R[ours:cut]} client connections the kills cut")
    ((R[ours:alerts] == 0)) || FAIL+=("[alert]s: $(head -3 "$RUNS/ours/alerts.out")")
    ((R[ours:crits] == 0)) || FAIL+=("[crit]s: $(head -3 "$RUNS/ours/crits.out")")
    ((R[ours:emerg] == 0)) || FAIL+=("[emerg]s in the error log")
    ((R[ours:crashes] == 0)) || FAIL+=("worker crashes")
    ((R[ours:active_n] > 0 && R[ours:active] == 0)) || FAIL+=("in flight at idle: ${R[ours:active]} (API: $RUNS/ours/api-idle.json)")
    [[ ${R[ours:retiring]} == '"retiring":[]' ]] || FAIL+=("retiring generations at idle: ${R[ours:retiring]}")
    ((R[ours:one1] > 0)) || FAIL+=("the max_conns=1 server admits nothing at idle")
    ((R[ours:balance_ok])) || FAIL+=("uneven balance at idle: $(tr '\n' ' ' <"$RUNS/ours/idle-counts.out")")
fi
if ((${#FAIL[@]})); then
    printf '\nsoak: FAILED (ours):\n' >&2
    printf '  - %s\n' "${FAIL[@]}" >&2
    exit 1
fi
printf '\nsoak: ok\n'
