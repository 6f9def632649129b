#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a fixed budget each on nightly,
# then prints one line per target: executions, corpus size and crashes.
# libFuzzer stops a target at its first crash; the input is saved under
# fuzz/artifacts/TARGET/ and the script exits non-zero.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_TARGET_DIR=DIR  build into DIR (default fuzz/target)
# Seeds in fuzz/seeds/TARGET/ (committed) join fuzz/corpus/TARGET/ (not committed).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
tdir=()
[ -n "${FUZZ_TARGET_DIR:-}" ] && tdir=(--target-dir "$FUZZ_TARGET_DIR")
cargo +nightly fuzz build "${tdir[@]}" >/dev/null
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log=$(mktemp)
    before=$(find "artifacts/$t" -type f | wc -l)
    echo "== $t ($secs s)"
    rc=0
    cargo +nightly fuzz run "${tdir[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ -z "$execs" ]; then
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    units=$(find "corpus/$t" -type f | wc -l)
    crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
    if [ "$rc" != 0 ]; then
        failed=1
        grep -E "^==[0-9]+== ERROR|panicked at|^SUMMARY|Test unit written" "$log" | head -8 || true
        [ "$crashes" -gt 0 ] || crashes="exit $rc (see $log)"
    else
        rm -f "$log"
    fi
    summary+=("$(printf '%-18s %6ss  execs %10s  corpus %6s  crashes %s' "$t" "$secs" "${execs:-?}" "$units" "$crashes")")
done
echo
printf '%s\n' "${summary[@]}"
exit $failed
