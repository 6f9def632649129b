#!/usr/bin/env bash
# End-to-end benchmark of kube-proxy replacements (issue 8, items 2 and 3).
# Root only: builds its own namespaces, cgroup and bpffs, and removes them.
#
#   benches/e2e/run.sh                 # e2e: 10, 1k, 10k services, 3 rounds x 5 s
#   benches/e2e/run.sh --services 10 --duration 1 --rounds 1   # quick look
#   benches/e2e/run.sh sync            # kube-proxy sync times, 10k x 10
#
# Results: benches/e2e/results/{results.md,samples.csv,e2e.png,sync.md}.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p lb-benches --bin e2e
exec "${CARGO_TARGET_DIR:-target}/release/e2e" "$@"
