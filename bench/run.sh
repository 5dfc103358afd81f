#!/usr/bin/env bash
# Benchmark seawall-pgbackup create --type full against pg_dump -Fc (see bench/README.md).
#   bash bench/run.sh                      # full run: pgbench scale 27 (~400 MB), 3 rounds
#   BENCH_SCALE=2 BENCH_ROUNDS=1 bash bench/run.sh   # quick smoke run
# BENCH_PYTHON overrides the Python that runs seawall (default: the repo's .venv from `make setup`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${BENCH_PYTHON:-$repo/.venv/bin/python}"
if [[ ! -x "$py" ]]; then
    echo "bench: $py not found: run 'make setup' first or set BENCH_PYTHON" >&2
    exit 1
fi
export BENCH_PYTHON="$py"
exec "$py" "$here/bench.py" "$@"
