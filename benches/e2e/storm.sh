#!/usr/bin/env bash
# Short-connection storm (issue 9): wrk with `Connection: close` against a
# pod IP, then lb-ebpf's ClusterIP, then its NodePort, 60 s each by default,
# with the TCP counters (nstat's TcpExtTCPSynRetrans, TcpOutRsts,
# TcpExtTCPAbortOn*, ...) of the client and backend namespaces per phase.
# Root only: builds its own namespaces and bpffs, and removes them.
#
#   benches/e2e/storm.sh                      # 60 s per phase
#   benches/e2e/storm.sh --phase 10 --connections 32
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p lb-benches --bin storm
args=("$@")
[[ " ${args[*]-} " == *" --phase "* ]] || args+=(--phase 60)
exec "${CARGO_TARGET_DIR:-target}/release/storm" "${args[@]}"
