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
# The code both demos share is in scripts/demo-lib.sh.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=demo-dns
# shellcheck source=demo-lib.sh
source "$ROOT/scripts/demo-lib.sh"
HABDNS=$ROOT/target/debug/hab-dns
NAMED=${HAB_NAMED:-/usr/sbin/named}
NSUPDATE=${HAB_NSUPDATE:-/usr/bin/nsupdate}

WORKERS=4
FAIL_TIMEOUT=3
CLIENTS=4          # parallel curl clients per second
PER_CLIENT=50      # requests per client per second (keep-alive to nginx)
NAMES=(web1 web2 web3)
SRV_NAME=_web._tcp.service.consul

need_built "$NGINX" "$MODULE" "$BACKEND" "$HABDNS" "$HAB"
for f in "$NAMED" "$NSUPDATE"; do
    [[ -x $f ]] || die "missing $f: the demo's DNS server is BIND's named, changed with nsupdate;
  install them with: make deps   (packages bind9 and bind9-dnsutils;
  or: apt-get install bind9 bind9-dnsutils)"
done
need_curl

# hab-dns reads its commands from a coprocess pipe: if this script dies
# without cleaning up, the pipe closes and hab-dns stops named and exits,
# as the backends do when the FIFO of demo-lib.sh closes.
DNS_PID= DNS_IN= DNS_OUT=
STOPPED="nginx, the DNS server and the backends"

# Called by cleanup after nginx is stopped, before the backends.
cleanup_more() {
    # hab-dns stops named at the end of its input; SIGTERM if it lingers
    if [[ -n $DNS_PID ]]; then
        [[ -z $DNS_IN ]] || exec {DNS_IN}>&- 2>/dev/null || true
        for _ in $(seq 60); do
            kill -0 "$DNS_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill "$DNS_PID" 2>/dev/null || true
    fi
}

demo_init

# --- helpers -----------------------------------------------------------------

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

start_backends

step "Starting a DNS server (hab-dns: BIND's named on 127.0.0.1, records with TTL 0)"
coproc DNSC { exec "$HABDNS" --zone consul --hosts 3 \
    --srv "$SRV_NAME $(srv web1 1) $(srv web2 1)" 2>"$RUN/logs/dns.err" 9>&-; }
# the pipe's ends (close-on-exec: no other child holds them); saved
# because bash unsets DNSC when hab-dns exits
DNS_PID=$DNSC_PID DNS_OUT=${DNSC[0]} DNS_IN=${DNSC[1]}
OTHER_PIDS+=" $DNS_PID"
ready=
read -r -t 20 ready <&"$DNS_OUT" || true
[[ $ready == "ready "* ]] || die "hab-dns did not start: $(cat "$RUN/logs/dns.err")"
DNS_PORT=${ready#ready }
say "   DNS on 127.0.0.1:$DNS_PORT (UDP and TCP), zone consul:"
say "   ${D}web1.node.consul, web2.node.consul, web3.node.consul  A  127.0.0.1${N}"
show_dns

pick_nginx_port
write_nginx_conf web <<EOF
        ha_balance least_conn;
        zone web 1m;
        resolver 127.0.0.1:$DNS_PORT valid=1s;
        resolver_timeout 2s;
        server service.consul service=web resolve max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
EOF
start_nginx web

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
status_page "   ${D}(open it in a browser: it refreshes every second and shows servers joining and leaving)${N}"

traffic_intro
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

summary_totals
say "   web3 joined:  first requests within ${joined} s of its SRV record"
say "   web1 left:    last requests within ${left} s of its SRV record's removal;"
say "                 requests web1 itself counted since (every worker): ${web1_after:-?}"
say "   web2 weight:  share above 60% within ${weighed} s of its SRV weight going to 3"
summary_errors "no reload; every worker followed each new peer list"
[[ ${web1_after:-x} == 0 ]] || die "web1 got ${web1_after:-?} requests after it had left DNS"
summary_failed_attempts
say "   ${D}the DNS changes (logs/dns-changes.log):${N}"
sed 's/^/     /' "$RUN/logs/dns-changes.log"
say "   ${D}the balancer following them (error log; one line per new peer list, whichever worker saw it):${N}"
grep -E 'servers changed: ' "$RUN/logs/error.log" | grep -v ' 0 kept, 0 back, 0 new, 0 draining' \
    | log_lines || true
say ""
say "   ${D}resolved servers show their SRV target as their name:${N}"
summary_end
