#!/usr/bin/env bash
# `make bench`: every benchmark, each against peers measured in the same run, then one table of
# all their figures (benches/results/summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export LAMINA_BIN="${LAMINA_BIN:-$PWD/target/release/lamina}"
python3 benches/coldstart.py
python3 benches/invoke.py
# Per-runtime cold/warm invokes need boto3 (the venv) and the runtime layers (`make runtimes`).
"${VENV_PYTHON:-.venv/bin/python}" benches/runtimes.py
# High density: idle envs' memory, start rate, bursts, warm latency at 2,000 envs.
python3 benches/density.py
python3 benches/summary.py
