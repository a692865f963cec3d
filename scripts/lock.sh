#!/usr/bin/env bash
# Re-pin requirements.lock from pyproject.toml in a throw-away environment.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3.11 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --disable-pip-version-check -q -e '.[dev]'
{
  echo "# Every package of the project's .venv, pinned (runtime and dev tools). Regenerate with"
  echo "# scripts/lock.sh after changing pyproject.toml. torch==2.13.0 takes the CPU wheel on disk."
  "$tmp/venv/bin/pip" freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > requirements.lock
