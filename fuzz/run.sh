#!/usr/bin/env bash
# Runs every fuzz target for a fixed budget (seconds, default 60) on nightly.
# Usage: fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for t in $(cargo +nightly fuzz list); do
    echo "== $t ($secs s)"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs" 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|==[0-9]+== ERROR)|stat::number_of_executed_units" || true
done
