#!/usr/bin/env bash
exec env LAYER_RUNTIME=nodejs20.x "$(dirname "$0")/../nodejs20.x/build-layer.sh" "$@"
