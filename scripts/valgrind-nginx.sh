#!/bin/sh
# HAB_NGINX_BIN for scripts/valgrind-e2e.sh (docs/sanitizers.md): nginx
# under valgrind memcheck, one log per process in $HAB_VALGRIND_LOGS:
# vg.RUN.PID, RUN one per invocation of this script (pids are reused within
# a suite), so the daemon, its master, workers and a binary upgrade's
# processes share one RUN.
#
# --vgdb=no: no gdbserver FIFOs in /tmp, which root creates and the
# workers (user nobody) cannot remove.  --keep-debuginfo: nginx dlcloses the module before the process exits,
# when memcheck reports the leaks; without it the module's frames are ???.
#
# Forked processes (the daemon, the master's workers) stay under valgrind;
# --trace-children follows the exec of a binary upgrade (USR2).  The pid
# nginx writes is its own (valgrind runs it in the same process), so the
# tests' signals reach it.
#
# /proc/PID/cmdline of a process under valgrind is valgrind's command line,
# not the title nginx sets ("nginx: worker process"), and the tests find
# the workers by that title among the master's children: the comment below
# (an option valgrind ignores without --xml) puts the words in.  Workers
# shutting down after a reload are then not told apart from new ones.
#
# HAB_VALGRIND_NGINX: the binary (default: target/nginx/sbin/nginx, the
# normal build); HAB_VALGRIND_OPTS: more valgrind options.

: "${HAB_VALGRIND_LOGS:?set HAB_VALGRIND_LOGS to a directory}"
nginx=${HAB_VALGRIND_NGINX:-$(dirname "$0")/../target/nginx/sbin/nginx}
run=$(date +%s%N)

# shellcheck disable=SC2086 # HAB_VALGRIND_OPTS is a list of options
exec valgrind --tool=memcheck --trace-children=yes --vgdb=no \
    --num-callers=40 --keep-debuginfo=yes \
    --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=none \
    --log-file="$HAB_VALGRIND_LOGS/vg.$run.%p" \
    --xml-user-comment="nginx: master or worker process" \
    $HAB_VALGRIND_OPTS "$nginx" "$@"
