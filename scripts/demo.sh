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
# The code both demos share is in scripts/demo-lib.sh.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=demo
# shellcheck source=demo-lib.sh
source "$ROOT/scripts/demo-lib.sh"

WORKERS=4
FAIL_TIMEOUT=3
SLOW_START=8       # seconds
CLIENTS=4          # parallel curl clients per second
PER_CLIENT=50      # requests per client per second (keep-alive to nginx)
NAMES=(app1 app2 app3)

need_built "$NGINX" "$MODULE" "$BACKEND" "$HAB"
need_curl
demo_init

# --- start -------------------------------------------------------------------

start_backends
pick_nginx_port
write_nginx_conf app <<EOF
        ha_balance least_conn;
        ha_check interval=1s timeout=500ms fails=2 passes=2 uri=/healthz;
        ha_slow_start ${SLOW_START}s;
        server 127.0.0.1:${PORT[app1]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
        server 127.0.0.1:${PORT[app2]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
        server 127.0.0.1:${PORT[app3]} max_fails=1 fail_timeout=${FAIL_TIMEOUT}s;
EOF
start_nginx app
status_page "   ${D}(open it in a browser: it refreshes every second and shows the failover below;" \
    "   metrics for Prometheus: http://127.0.0.1:$NGINX_PORT/api/metrics)${N}"

traffic_intro
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
        if ((COUNT[app2] > 0)); then
            back=1
            say "   ${G}app2 passed its probe and is back in rotation${N}"
        fi
    fi
done

APP3=127.0.0.1:${PORT[app3]}
step "Draining app3 through the API, no reload: hab drain $API app $APP3"
"$HAB" drain "$API" app "$APP3" >/dev/null || die "hab drain failed"
for _ in 1 2 3; do
    t=$((t + 1))
    tick "$t" "app3 draining: requests in flight finish, every worker stops sending it new ones"
done
show_status
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

summary_totals
summary_errors "app2's failure was absorbed by retries, app1's by its checks"
summary_failed_attempts
say "   ${D}each failure marks app2 down in shared memory, for all $WORKERS workers at once,"
say "   until fail_timeout (${FAIL_TIMEOUT}s) passes and one request probes it again${N}"
say "   the error log's transitions (one line each, whichever worker saw it):"
grep -E 'unavailable for|is back after|is unhealthy|is healthy again' "$RUN/logs/error.log" \
    | log_lines || true
say ""
summary_end
