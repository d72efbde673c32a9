#!/bin/bash
# The java17-stream conformance function uses the java17 conformance layer.
exec bash "$(cd "$(dirname "$0")" && pwd)/../java17/build-layer.sh" "$@"
