#!/usr/bin/env bash
# ruby3.1: lamina's own Ruby runtime loop (runtime/bootstrap.rb, stdlib only) on Debian's Ruby
# (bookworm: 3.1; `make deps` installs the `ruby` package). The interpreter and its stdlib are
# the host's /usr, which every env sees read-only; the layer is the loop and the manifest.
# (Lambda has ruby3.2/3.3: the name carries the version really installed.)
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
ruby=/usr/bin/ruby3.1
[ -x "$ruby" ] || { echo "ruby3.1: $ruby missing (apt-get install ruby, or make deps)" >&2; exit 1; }
ver=$("$ruby" -e 'print RUBY_VERSION')
echo "==> Ruby $ver ($ruby)"
"$ruby" -c "$src/runtime/bootstrap.rb" >/dev/null
mkdir -p "$out/runtime"
cp "$src/runtime/bootstrap.rb" "$out/runtime/bootstrap.rb"
cat >"$out/manifest.json" <<JSON
{
  "name": "ruby3.1",
  "argv": ["$ruby", "/var/runtime/bootstrap.rb"],
  "env": {
    "RUBYLIB": "/var/task:/var/runtime/lib:/opt/ruby/lib",
    "GEM_HOME": "/var/task/vendor/bundle/ruby/3.1.0",
    "GEM_PATH": "/var/task/vendor/bundle/ruby/3.1.0:/opt/ruby/gems/3.1.0:/var/lib/gems/3.1.0:/usr/share/rubygems-integration/all"
  },
  "description": "Ruby $ver (Debian's, host /usr) with lamina's runtime loop (handler(event:, context:))"
}
JSON
echo "==> done"
