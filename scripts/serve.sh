#!/usr/bin/env bash
# The README's first command: all set-up, then the service on 127.0.0.1:8000
# (ASSISTANT_SERVICE__HOST / ASSISTANT_SERVICE__PORT change that).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/assistant serve "$@"
