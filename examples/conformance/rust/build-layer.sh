#!/usr/bin/env bash
exec env LAYER_RUNTIME=rust "$(dirname "$0")/../go/build-layer.sh" "$@"
