#!/bin/sh
# HAB_NGINX_BIN for `make asan` (docs/sanitizers.md): runs the ASan build of
# nginx, with LeakSanitizer off for `nginx -t` and `nginx -s SIGNAL` only.
#
# Those processes return from main() without freeing the configuration
# cycle they parsed (its pool, and the pool of main's init_cycle): memory
# nginx leaves to the OS at exit, reported as leaked on every run.  The
# master and worker processes free their cycle when they exit, so leak
# detection stays on for them (and for a binary upgrade's new master, which
# nginx execs with the real binary, not with this script).
#
# HAB_ASAN_NGINX: the binary (default: target/asan/nginx/sbin/nginx).

nginx=${HAB_ASAN_NGINX:-$(dirname "$0")/../target/asan/nginx/sbin/nginx}

for arg; do
    case $arg in
    -t | -T | -s)
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
        export ASAN_OPTIONS
        break
        ;;
    esac
done

exec "$nginx" "$@"
