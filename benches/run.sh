#!/usr/bin/env bash
# `make bench`: every benchmark, each against peers measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAMINA_BIN="${LAMINA_BIN:-$PWD/target/release/lamina}"
python3 benches/coldstart.py
python3 benches/invoke.py
# Per-runtime cold/warm invokes need boto3 (the venv) and the runtime layers (`make runtimes`).
"${VENV_PYTHON:-.venv/bin/python}" benches/runtimes.py
