#!/usr/bin/env bash
# Backend churn under load (issue 9), the long run: the reliability test
# `backend_churn_under_load` with 60 s of churn (a manifest write every
# 10 ms adding, removing and re-weighting backends 3 and 4 and re-weighting
# 1 and 2, while new connections run on ClusterIP and NodePort). Root only.
#
#   examples/lb-agent/churn.sh          # 60 s
#   LB_CHURN_SECS=300 examples/lb-agent/churn.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
LB_CHURN_SECS="${LB_CHURN_SECS:-60}" exec cargo test -p lb-agent --test reliability \
    backend_churn_under_load -- --nocapture
