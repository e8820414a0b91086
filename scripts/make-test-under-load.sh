#!/usr/bin/env bash
# make test, N times in a row (default 3), each from a fresh clean clone of
# COMMIT, while stress-ng keeps both cores busy (`stress-ng --cpu 2`): the
# test suite must hold on a loaded machine (docs/under-load.md).
#
#   scripts/make-test-under-load.sh [COMMIT] [N] [DIR]
#
# DIR (default /tmp/hab-under-load) receives the clone, run<i>.log and a
# summary line per run; the first failing run stops the loop.
set -u
commit=${1:-HEAD}
n=${2:-3}
dir=${3:-/tmp/hab-under-load}
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse "$commit")
command -v stress-ng >/dev/null || {
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y stress-ng
}
mkdir -p "$dir"
for i in $(seq 1 "$n"); do
    rm -rf "$dir/clone"
    git clone -q "$repo" "$dir/clone" && git -C "$dir/clone" checkout -q "$commit"
    stress-ng --cpu 2 --timeout 4h >/dev/null 2>&1 &
    sp=$!
    start=$(date +%s)
    echo "run $i start $(date -u +%FT%TZ) commit $commit" >> "$dir/summary"
    (cd "$dir/clone" && make test) > "$dir/run$i.log" 2>&1
    rc=$?
    kill "$sp"; wait "$sp" 2>/dev/null
    echo "run $i rc=$rc $(( $(date +%s) - start ))s" >> "$dir/summary"
    [ "$rc" -eq 0 ] || exit "$rc"
done
