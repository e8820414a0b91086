#!/bin/bash
# The end-to-end tests with nginx under valgrind memcheck (docs/sanitizers.md).
#
#   scripts/valgrind-e2e.sh                  every tests/e2e_*.rs
#   scripts/valgrind-e2e.sh --test e2e_api   some (any `cargo test` arguments)
#
# nginx is the normal build (make nginx), run through
# scripts/valgrind-nginx.sh; each nginx process (nginx -t, -s, the daemon,
# master, workers) writes target/valgrind/logs/vg.RUN.PID.  Afterwards one line
# per process: its role, memcheck's error count and the bytes definitely
# lost at its exit.  Fails if a test failed, if memcheck reported an error
# in any process, or if a definite leak has a frame of the module.
#
# --no-fail-fast: a test that fails from slowness (the suite takes about
# 4 times as long) does not keep the later test binaries from running.
#
# Environment: CARGO (default cargo), HAB_VALGRIND_NGINX (the nginx
# binary), HAB_VALGRIND_OPTS (more valgrind options).

set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
logs=$root/target/valgrind/logs
cargo=${CARGO:-cargo}

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -x "${HAB_VALGRIND_NGINX:-$root/target/nginx/sbin/nginx}" ] \
    || { echo "no nginx: run make nginx" >&2; exit 1; }

if [ $# -eq 0 ]; then
    for t in "$root"/tests/e2e_*.rs; do
        t=${t##*/}
        set -- "$@" --test "${t%.rs}"
    done
fi

rm -rf "$logs"
# (a worker writes the log valgrind opened, as root, when the master forked it)
mkdir -p "$logs"

cd "$root" || exit 1
"$cargo" build --workspace --bins || exit 1
started=$(date +%s)
HAB_REQUIRE_NGINX=1 HAB_NGINX_BIN=$root/scripts/valgrind-nginx.sh \
HAB_VALGRIND_LOGS=$logs \
    "$cargo" test --no-fail-fast "$@"
tests=$?
echo "tests: exit $tests after $(( $(date +%s) - started )) s"

# One line per process.  Role: from the command line (-t, -s) or from the
# parent within the same RUN: the process whose parent wrote no log started
# nginx (the daemon's parent), its child is the master, the master's
# children its workers, or a binary upgrade's new master (which has workers
# of its own).  Then the definite leaks by where they were allocated (the
# first frame that is not an allocator).
awk '
    FNR == 1 {
        f = FILENAME; sub(/.*\/vg\./, "", f)
        split(f, part, "."); run = part[1]; pid = part[2]
        k = run SUBSEP pid; keys[++n] = k; inleak = 0
    }
    /== Command: / { c = $0; sub(/.*== Command: /, "", c); cmd[k] = c }
    /== Parent PID: / { ppid[k] = run SUBSEP $NF }
    /== ERROR SUMMARY: / { errs[k] = $4 }
    /== *definitely lost: / { c = $4; gsub(",", "", c); lost[k] = c }
    /are definitely lost in loss record/ {
        inleak = 1; origin = ""; bytes = $2; gsub(",", "", bytes); next
    }
    inleak && /== $/ {
        inleak = 0
        if (origin == "") origin = "?"
        if (mod) origin = origin "  MODULE"
        leaks[origin] += bytes; nleaks[origin]++; mod = 0
    }
    inleak && /(ngx_http_upstream_(init_|get_|free_)?ha[_ ]|upstream_ha_module|hab_)/ {
        mod = 1; modleak[k] = 1
    }
    inleak && origin == "" && / (at|by) 0x/ {
        fn = $4
        if (fn !~ /^(malloc|calloc|realloc|posix_memalign|memalign|ngx_alloc|ngx_calloc|ngx_memalign|ngx_palloc.*|ngx_pcalloc|ngx_pnalloc|ngx_create_pool|\?\?\?)$/) {
            origin = fn
            if ($0 ~ /\(in /) { l = $0; sub(/.*\(in /, "", l); sub(/\).*/, "", l); sub(/.*\//, "", l); origin = origin " (" l ")" }
        }
    }
    END {
        for (i = 1; i <= n; i++) { k = keys[i]; kids[ppid[k]]++; have[k] = 1 }
        bad = 0
        printf "%-26s %-24s %7s %14s\n", "log", "process", "errors", "lost (bytes)"
        for (i = 1; i <= n; i++) {
            k = keys[i]; c = cmd[k]; p = ppid[k]
            if (c ~ / -t( |$)/) role = "nginx -t"
            else if (c ~ / -s /) { role = c; sub(/.* -s /, "nginx -s ", role) }
            else if (!(p in have)) role = "start (daemonizes)"
            else if (!(ppid[p] in have)) role = "master"
            else if (kids[k] > 0) role = "master (binary upgrade)"
            else role = "worker"
            e = (k in errs) ? errs[k] : "-"
            l = (k in lost) ? lost[k] : ((k in errs) ? 0 : "-")
            note = (k in errs) ? "" : "  (no summary: killed)"
            if (modleak[k]) note = note "  MODULE LEAK"
            split(k, part, SUBSEP)
            printf "vg.%-23s %-24s %7s %14s%s\n", part[1] "." part[2], role, e, l, note
            roles[role]++; rerr[role] += (e == "-" ? 0 : e)
            if (e != "-" && e > 0) bad = 1
            if (modleak[k]) bad = 1
        }
        print ""
        for (r in roles) printf "%-24s %4d processes, %d errors\n", r, roles[r], rerr[r]
        print ""
        print "definitely lost, by allocation site:"
        for (o in leaks) printf "%10d bytes in %4d records  %s\n", leaks[o], nleaks[o], o
        exit bad
    }
' "$logs"/vg.* > "$logs/summary.txt"
memcheck=$?
cat "$logs/summary.txt"

for f in "$logs"/vg.*; do
    if grep -q '== ERROR SUMMARY: [1-9]' "$f"; then
        echo "=== $f"
        cat "$f"
    fi
done

if [ $memcheck -ne 0 ]; then
    echo "valgrind: memcheck errors or a leak in the module (logs in $logs)" >&2
    exit 1
fi
echo "valgrind: no memcheck error (logs in $logs)"
exit $tests
