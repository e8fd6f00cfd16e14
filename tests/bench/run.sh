#!/usr/bin/env bash
# `make bench`: every benchmark in tests/bench/, one after the other (never in CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq wrk; else echo "install wrk" >&2; exit 2; fi
fi
export PYTHONPATH="$PWD"
for bench in tests/bench/bench_*.py; do
  echo "== $bench"
  "$PY" "$bench"
done
