#!/usr/bin/env bash
# All set-up, idempotent: the .venv, the pinned packages, the project itself, the
# offline data and the literature index. Safe to run again: it reinstalls only when the
# pins change, fetches only what is missing or changed, and keeps an up-to-date index.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null 2>&1; then PYTHON=python3; fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.assistant-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing pinned packages into .venv (requirements.lock)"
  .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.lock
  .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps -e .
  echo "$want" > "$stamp"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
if [ -n "${CI:-}" ]; then quiet=-q; else quiet=; fi
.venv/bin/assistant data fetch $quiet
# The literature index, from the committed seed of its vectors (indexes/literature.seed):
# minutes, no embedding. Nothing to do when it is up to date; a warning (and the service
# reporting retrieval unavailable) when the seed does not match the corpus.
.venv/bin/assistant index ensure
