#!/usr/bin/env bash
# The README's second command: all set-up, then lint, type checks and the whole test
# suite. Exits non-zero on any failure, including pytest's "no tests collected" (5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
echo "== ruff"
.venv/bin/ruff check assistant tests scripts
echo "== mypy"
.venv/bin/mypy assistant
echo "== pytest"
.venv/bin/python -m pytest "$@"
