#!/usr/bin/env bash
# ha-balancer DNS demo: nginx + ngx_http_upstream_ha_module following DNS SRV
# records, Consul style (`server service.consul service=web resolve`, which
# asks for _web._tcp.service.consul). A local DNS server (hab-dns: BIND's
# named, TTL 0, changed at run time by nsupdate) first names web1 and web2;
# while traffic flows web3 joins through DNS, web1 leaves through DNS, and
# an SRV weight changes, with no reload and no error seen by clients.
#
# Run by `make demo-dns` (which builds nginx, the module, hab-backend and
# hab-dns first). Needs BIND (`make deps` installs bind9 and bind9-dnsutils).
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
HABDNS=$ROOT/target/debug/hab-dns
HAB=$ROOT/target/debug/hab
NAMED=${HAB_NAMED:-/usr/sbin/named}
NSUPDATE=${HAB_NSUPDATE:-/usr/bin/nsupdate}

WORKERS=4
FAIL_TIMEOUT=3
CLIENTS=4          # parallel curl clients per second
PER_CLIENT=50      # requests per client per second (keep-alive to nginx)
NAMES=(web1 web2 web3)
SRV_NAME=_web._tcp.service.consul

if [[ -t 1 ]]; then
    B=$'\e[1m' D=$'\e[2m' R=$'\e[31m' G=$'\e[32m' Y=$'\e[33m' C=$'\e[36m' N=$'\e[0m'
else
    B= D= R= G= Y= C= N=
fi

say()  { printf '%s\n' "$*"; }
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
die()  { printf '%sdemo-dns: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

for f in "$NGINX" "$MODULE" "$BACKEND" "$HABDNS" "$HAB"; do
    [[ -x $f || -f $f ]] || die "missing $f (run: make demo-dns)"
done
for f in "$NAMED" "$NSUPDATE"; do
    [[ -x $f ]] || die "missing $f: the demo's DNS server is BIND's named, changed with nsupdate;
  install them with: make deps   (packages bind9 and bind9-dnsutils;
  or: apt-get install bind9 bind9-dnsutils)"
done
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

RUN=$ROOT/target/demo-dns/run-$$
rm -rf "$ROOT"/target/demo-dns/run-*   # logs of earlier runs
mkdir -p "$RUN/logs" "$RUN/tmp"

# --- cleanup ---------------------------------------------------------------

declare -A PID PORT
NGINX_MASTER=
DNS_PID= DNS_IN= DNS_OUT=

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
    # hab-dns stops named at the end of its input; SIGTERM if it lingers
    if [[ -n $DNS_PID ]]; then
        [[ -z $DNS_IN ]] || exec {DNS_IN}>&- 2>/dev/null || true
        for _ in $(seq 60); do
            kill -0 "$DNS_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$DNS_PID" 2>/dev/null || true
    fi
    for n in "${!PID[@]}"; do
        kill "${PID[$n]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    exec 9>&- 2>/dev/null || true
    printf '\n%sstopped nginx, the DNS server and the backends; logs kept in %s%s\n' "$D" "$RUN" "$N"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Backends read this FIFO with --exit-on-eof: if this script dies without
# cleaning up, the FIFO closes and they exit by themselves. Every child is
# started with 9>&-, so that only this script holds the FIFO's write end
# (a child holding it would keep every backend's input open). hab-dns
# reads its commands from a coprocess pipe, which closes the same way.
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

# The SRV data of backend $1 with weight $2 (priority 1 for all).
srv() { printf '1 %s %s %s.node.consul' "$2" "${PORT[$1]}" "$1"; }

# One command to hab-dns (one DNS update); dies unless it answers ok.
dns() {
    local answer
    kill -0 "$DNS_PID" 2>/dev/null || die "hab-dns is not running: $(cat "$RUN/logs/dns.err")"
    printf '%s\n' "$*" >&"$DNS_IN"
    read -r -t 20 answer <&"$DNS_OUT" || die "hab-dns did not answer: $*"
    [[ $answer == ok ]] || die "hab-dns: $*: $answer"
    printf '%s %s\n' "$(date +%T.%N | cut -c1-12)" "$*" >>"$RUN/logs/dns-changes.log"
}

# What the DNS server answers for the SRV name now, one line per record.
show_dns() {
    local line
    if command -v dig >/dev/null; then
        while read -r line; do
            [[ -z $line ]] || say "   ${D}$SRV_NAME SRV $line${N}"
        done < <(dig @127.0.0.1 -p "$DNS_PORT" +short +time=2 +tries=1 SRV "$SRV_NAME" | sort -k4)
    fi
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
        # Only curl jobs; backends and hab-dns are waited for in cleanup.
        [[ " ${PID[*]} $DNS_PID " == *" $j "* ]] || wait "$j" 2>/dev/null || true
    done
}

declare -A TOTAL COUNT
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
declare -A SHARE

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

since() { echo $((($(date +%s%N) - $1) / 100000000)) | sed -E 's/(.)$/.\1/; s/^\./0./'; }

# The API's server object whose name is backend $1's SRV target, on one line
# (empty when the upstream does not list it).
api_server() {
    curl -fsS --max-time 3 "$API/upstreams/web/servers" 2>/dev/null \
        | sed 's/},{"id"/}\n{"id"/g' | grep -F "\"$1.node.consul" | head -1 || true
}

field() {   # json-line key
    sed -nE "s/.*\"$2\":(\"[^\"]*\"|[0-9]+|true|false).*/\1/p" <<<"$1" | tr -d '"'
}

# The API's view of backend $1, in words.
describe() {   # name
    local j
    j=$(api_server "$1")
    if [[ -z $j ]]; then
        echo "not listed"
    else
        echo "id $(field "$j" id), name $(field "$j" name), server $(field "$j" server)," \
            "state $(field "$j" state), weight $(field "$j" weight), requests $(field "$j" requests)"
    fi
}

# --- start -------------------------------------------------------------------

step "Starting 3 demo backends (hab-backend) on 127.0.0.1"
for n in "${NAMES[@]}"; do
    PORT[$n]=$(free_port)
    start_backend "$n" "${PORT[$n]}"
    say "   $n  http://127.0.0.1:${PORT[$n]}/  answers \"$n\""
done

step "Starting a DNS server (hab-dns: BIND's named on 127.0.0.1, records with TTL 0)"
coproc DNSC { exec "$HABDNS" --zone consul --hosts 3 \
    --srv "$SRV_NAME $(srv web1 1) $(srv web2 1)" 2>"$RUN/logs/dns.err" 9>&-; }
# the pipe's ends (close-on-exec: no other child holds them); saved
# because bash unsets DNSC when hab-dns exits
DNS_PID=$DNSC_PID DNS_OUT=${DNSC[0]} DNS_IN=${DNSC[1]}
ready=
read -r -t 20 ready <&"$DNS_OUT" || true
[[ $ready == "ready "* ]] || die "hab-dns did not start: $(cat "$RUN/logs/dns.err")"
DNS_PORT=${ready#ready }
say "   DNS on 127.0.0.1:$DNS_PORT (UDP and TCP), zone consul:"
say "   ${D}web1.node.consul, web2.node.consul, web3.node.consul  A  127.0.0.1${N}"
show_dns

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

    upstream web {
        ha_balance least_conn;
        zone web 1m;
        resolver 127.0.0.1:$DNS_PORT valid=1s;
        resolver_timeout 2s;
        server service.consul service=web resolve max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://web;
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
say "${D}$(sed -n '/upstream web/,/^    }/p' "$RUN/nginx.conf")${N}"
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

# nginx resolves a `resolve` server in its first worker shortly after
# start; until then the upstream has no server (502). Not counted.
say "   ${D}waiting for nginx's first resolution of $SRV_NAME (worker 0, right after start)${N}"
t0=$(date +%s%N) seen=
for _ in $(seq 100); do
    b=$(curl -s --max-time 2 -o /dev/null -w '%{http_code} %header{x-backend}' \
        "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || true)
    [[ $b != "200 "* || " $seen " == *" ${b#200 } "* ]] || seen+=" ${b#200 }"
    [[ $seen == *web1* && $seen == *web2* ]] && break
    sleep 0.1
done
[[ $seen == *web1* && $seen == *web2* ]] \
    || die "nginx did not reach web1 and web2 from DNS within 10 s (reached:${seen:- none}); $(tail -5 "$RUN/logs/error.log")"
say "   resolved after $(since "$t0") s: web1 and web2 answer"
say ""
say "   ${B}${C}Live status page: http://127.0.0.1:$NGINX_PORT/api/${N}"
say "   ${D}(open it in a browser: it refreshes every second and shows servers joining and leaving)${N}"
if ((WAIT)); then
    say "   ${Y}press Enter to start the traffic (starting by itself in 15 s)${N}"
    read -r -t 15 || true
fi

step "Traffic: $CLIENTS clients x $PER_CLIENT requests per second"
say "   ${D}share of requests per backend; 'errors' = non-200 answers seen by clients;"
say "   'retried' = attempts nginx found failed and retried on another backend${N}"
say "   ${D}nginx re-resolves $SRV_NAME about every 2 s (valid=1s, then 1 s more);"
say "   each answer that differs becomes a new peer list, which the balancer follows${N}"
t=0
for _ in 1 2 3 4; do t=$((t + 1)); tick "$t" "in DNS: web1, web2 (weight 1 each)"; done

WEB2_BEFORE=$(api_server web2)
step "web3 joins through DNS: SRV records web1, web2, web3 (no reload, no nginx.conf change)"
dns srv "$SRV_NAME" "$(srv web1 1)" "$(srv web2 1)" "$(srv web3 1)"
show_dns
t0=$(date +%s%N) joined= after=0
for _ in $(seq 10); do
    t=$((t + 1))
    tick "$t" "waiting for nginx's next resolution; web1 and web2 keep their state (counters, fails)"
    if [[ -z $joined ]] && ((COUNT[web3] > 0)); then
        joined=$(since "$t0")
        say "   ${G}web3 got its first requests within ${joined} s of the DNS change${N}"
    fi
    if [[ -n $joined ]]; then after=$((after + 1)); ((after < 4)) || break; fi
done
[[ -n $joined ]] || die "web3 got no request within 10 s of joining DNS"
say "   ${D}the API, web3: $(describe web3)${N}"

step "web1 leaves through DNS: SRV records web2, web3 (web1 keeps running)"
dns srv "$SRV_NAME" "$(srv web2 1)" "$(srv web3 1)"
show_dns
t0=$(date +%s%N) left= zero=0
for _ in $(seq 12); do
    t=$((t + 1))
    tick "$t" "until nginx re-resolves, web1 still gets requests; then requests in flight finish on it"
    if ((COUNT[web1] == 0)); then
        if [[ -z $left ]]; then
            left=$(since "$t0")
            say "   ${G}web1 got its last requests within ${left} s of the DNS change${N}"
            # from here on, its own counter says whether any worker still sends it any
            curl -fsS "http://127.0.0.1:${PORT[web1]}/_ctl/reset" >/dev/null
        fi
        zero=$((zero + 1))
        ((zero < 4)) || break
    elif [[ -n $left ]]; then
        die "web1 got requests again $(since "$t0") s after leaving DNS"
    fi
done
[[ -n $left ]] || die "web1 still got requests 12 s after leaving DNS"
say "   ${D}the API, web1: $(describe web1)${N}"

step "web2's SRV weight goes to 3: SRV records web2 (weight 3), web3 (weight 1)"
dns srv "$SRV_NAME" "$(srv web2 3)" "$(srv web3 1)"
show_dns
t0=$(date +%s%N) weighed= after=0
for _ in $(seq 10); do
    t=$((t + 1))
    tick "$t" "least_conn picks the fewest requests in flight per weight: web2 takes the larger share (3:1 on ties)"
    if [[ -z $weighed ]] && ((SHARE[web2] >= 60)); then
        weighed=$(since "$t0")
        say "   ${G}web2's share follows its SRV weight within ${weighed} s of the DNS change${N}"
    fi
    if [[ -n $weighed ]]; then after=$((after + 1)); ((after < 4)) || break; fi
done
[[ -n $weighed ]] || die "web2's share did not reach 60% within 10 s of its SRV weight going to 3"
WEB2_AFTER=$(api_server web2)
id0=$(field "$WEB2_BEFORE" id) id1=$(field "$WEB2_AFTER" id)
req0=$(field "$WEB2_BEFORE" requests) req1=$(field "$WEB2_AFTER" requests)
say "   web2 in the API before the three changes and now: id $id0 -> $id1," \
    "weight $(field "$WEB2_BEFORE" weight) -> $(field "$WEB2_AFTER" weight), requests $req0 -> $req1"
if [[ -n $id0 && $id0 == "$id1" ]] && ((${req1:-0} >= ${req0:-1})); then
    say "   ${D}(the balancer matches servers by SRV target and address: web2 kept its id, its"
    say "   statistics and its state through each new peer list; stock nginx makes an SRV weight"
    say "   change a new peer, with fresh counters)${N}"
else
    say "   ${Y}web2 did not keep its id or its statistics through the DNS changes${N}"
fi

web1_after=$(curl -fsS "http://127.0.0.1:${PORT[web1]}/_ctl/stats" | sed -nE 's/^requests=([0-9]+).*/\1/p')

step "Summary"
say "   requests sent:       $TOTAL_REQ"
for n in "${NAMES[@]}"; do
    say "   answered by $n:   ${TOTAL[$n]}"
done
say "   web3 joined:  first requests within ${joined} s of its SRV record"
say "   web1 left:    last requests within ${left} s of its SRV record's removal;"
say "                 requests web1 itself counted since (every worker): ${web1_after:-?}"
say "   web2 weight:  share above 60% within ${weighed} s of its SRV weight going to 3"
if ((TOTAL_ERR == 0)); then
    say "   ${G}errors seen by clients: 0${N}  (no reload; every worker followed each new peer list)"
else
    say "   ${R}errors seen by clients: $TOTAL_ERR${N}"
fi
((TOTAL_ERR == 0)) || die "clients saw errors"
[[ ${web1_after:-x} == 0 ]] || die "web1 got ${web1_after:-?} requests after it had left DNS"
say "   upstream attempts that failed: $(connect_failures) (nginx's error log: connect() failed)"
say "   ${D}the DNS changes (logs/dns-changes.log):${N}"
sed 's/^/     /' "$RUN/logs/dns-changes.log"
say "   ${D}the balancer following them (error log; one line per new peer list, whichever worker saw it):${N}"
grep -E 'servers changed: ' "$RUN/logs/error.log" | grep -v ' 0 kept, 0 back, 0 new, 0 draining' \
    | sed -E 's/^[0-9/]+ ([0-9:]+) \[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/     \1 [\2] /; s/, client:.*//' || true
say ""
say "   ${D}resolved servers show their SRV target as their name:${N}"
say "${D}$("$HAB" status "$API")${N}"
say "   ${D}the same figures as Prometheus metrics:${N}"
curl -fsS "$API/metrics" | grep -E '^ha_upstream_server_(requests_total|state)\{' | sed 's/^/     /' || true
if ((WAIT)); then
    step "nginx stays up 20 s more for the status page (Ctrl-C to stop now)"
    say "   ${C}http://127.0.0.1:$NGINX_PORT/api/${N}"
    sleep 20 || true
fi
