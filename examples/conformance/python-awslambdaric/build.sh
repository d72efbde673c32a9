#!/usr/bin/env bash
# AWS's Python runtime interface client (PyPI awslambdaric, prebuilt manylinux wheel) as function
# code on provided.al2023: the ZIP holds the wheel's files, python3.11's conformance app.py and a
# `bootstrap` that runs `python3 -m awslambdaric <handler>`. pip's cache keeps the download.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
"$py" -m pip install -q --disable-pip-version-check --target "$t" --python-version 3.11 \
  --only-binary=:all: --platform manylinux2014_x86_64 awslambdaric==4.2.2
cp "$here/../python3.11/app.py" "$t/"
cat >"$t/bootstrap" <<'SH'
#!/bin/sh
# Layers' Python code is in /opt/python, as Lambda's python runtimes put it on the path.
export PYTHONPATH=/var/task:/opt/python
exec /usr/bin/python3 -m awslambdaric "$_HANDLER"
SH
chmod 755 "$t/bootstrap"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
