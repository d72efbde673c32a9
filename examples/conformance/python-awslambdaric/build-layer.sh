#!/usr/bin/env bash
exec "$(dirname "$0")/../python3.11/build-layer.sh" "$@"
