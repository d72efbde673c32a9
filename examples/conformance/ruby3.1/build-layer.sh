#!/usr/bin/env bash
# A layer as Lambda lays out Ruby's: /opt/ruby/lib (on RUBYLIB; gems would go in /opt/ruby/gems).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/ruby/lib"
printf 'module LaminaLayer\n  def self.hello\n    "layer:ruby3.1"\n  end\nend\n' >"$t/ruby/lib/lamina_layer.rb"
python3 "$here/../lib/zipdir.py" "${1:?usage: build-layer.sh OUT_ZIP}" "$t"
