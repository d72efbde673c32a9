#!/usr/bin/env bash
# The privileged integration tests (supervisor/tests/*.rs) as prebuilt binaries, so that the same
# binaries run on this host and inside the cgroup v2 guest (tests/vm/run.sh), which has no cargo.
#   tests/privileged.sh build   compile them and list them in target/privileged-tests.list
#   tests/privileged.sh run     run every listed binary, one test at a time
set -euo pipefail
cd "$(dirname "$0")/.."
list=target/privileged-tests.list
# The suites that need root and real kernel features (the rest run in `make unit`).
suites='["env", "limits", "hostile", "leaks", "runtime_api"]'
case "${1:-}" in
build)
  cargo test --release --locked -p lamina --tests --no-run --message-format=json 2>/dev/null |
    jq -r --argjson suites "$suites" 'select(.reason == "compiler-artifact" and .profile.test == true
      and .target.kind == ["test"] and (.target.name as $n | $suites | index($n))) | .executable' >"$list"
  echo "privileged test binaries: $(wc -l <"$list")"
  ;;
run)
  [ "$(id -u)" = 0 ] || { echo "privileged tests need root" >&2; exit 1; }
  : "${LAMINA_BIN:=$PWD/target/release/lamina}" "${LAMINA_PROBE:=$PWD/target/$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')/release/lamina-probe}"
  export LAMINA_BIN LAMINA_PROBE
  failed=0 passed=0
  while read -r bin; do
    echo "== $(basename "$bin") (cgroup layout: ${LAMINA_CGROUP_LAYOUT:-host})"
    if "$bin" --test-threads=1; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done <"$list"
  echo "privileged suites: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  ;;
*) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
