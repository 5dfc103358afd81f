#!/usr/bin/env bash
# Benchmarks (see bench/README.md): create --type full against pg_dump -Fc (bench.py), then physical base,
# incremental and restore + start against pgBackRest (physical_bench.py; BENCH_SUITES=logical or physical for one).
#   bash bench/run.sh                      # full run: pgbench scale 27 (~400 MB), 3 rounds
#   BENCH_SCALE=2 BENCH_ROUNDS=1 bash bench/run.sh   # quick smoke run
#   BENCH_SUITES=physical BENCH_PG_BIN=wheel bash bench/run.sh   # physical on PostgreSQL 18 (make bench-18)
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
suites="${BENCH_SUITES:-logical,physical}"
if [[ ",$suites," == *,logical,* ]]; then "$py" "$here/bench.py" "$@"; fi
if [[ ",$suites," == *,physical,* ]]; then "$py" "$here/physical_bench.py" "$@"; fi
