#!/usr/bin/env bash
# The Rust conformance function: examples/rust-lambda (AWS's lambda_runtime crate from crates.io,
# pinned by its Cargo.lock), a static `bootstrap`, built into target/examples as `make examples`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
triple=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$repo/target/examples" \
  cargo build -q --release --locked --manifest-path "$repo/examples/rust-lambda/Cargo.toml" --target $triple
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
cp "$repo/target/examples/$triple/release/bootstrap" "$t/bootstrap"
python3 "$here/../lib/zipdir.py" "${1:?usage: build.sh OUT_ZIP}" "$t"
