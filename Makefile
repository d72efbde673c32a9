# lamina — build, demo, tests and benchmarks. Run as root on a Debian/Ubuntu host.
SHELL := /bin/bash
CARGO ?= cargo
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
LAMINA := $(CURDIR)/target/release/lamina
PROBE := $(CURDIR)/target/$(HOST)/release/lamina-probe
export LAMINA_BIN := $(LAMINA)
export LAMINA_PROBE := $(PROBE)

.PHONY: all build demo demo-run venv test deps lint unit test-runtimes test-conformance runtimes test-api coverage test-durability test-privileged test-v2 leak-check bench bench-runtimes clean examples

all: build

## build: the lamina binary (release) and the static hostile probe.
build:
	$(CARGO) build --release --locked --workspace
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked -p lamina-probe --target $(HOST)

VENV := $(CURDIR)/.venv

## demo: the main job: lamina serve on its defaults, a Python function deployed and invoked with
## the AWS CLI.
demo: build venv
	@examples/demo.sh

## demo-run: one command in a fresh execution environment (`lamina run`).
demo-run: build
	@echo '$$ lamina run --code examples/hello --memory 256 --env NAME=lamina -- python3 /var/task/hello.py'
	@$(LAMINA) run --code examples/hello --memory 256 --env NAME=lamina -- python3 /var/task/hello.py

## venv: the Python clients the tests and the demo use (boto3, the AWS CLI v1, pytest).
venv: $(VENV)/.done
$(VENV)/.done: tests/requirements.txt
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

## deps: Debian packages the tests and benchmarks need (openjdk-17-jdk-headless + maven: the java17
## runtime layer and Java examples; mono-devel: the dotnet runtime layer, C# on Mono).
deps:
	@missing=""; for p in gcc libc6-dev python3 python3-venv jq bubblewrap crun hyperfine qemu-system-x86 busybox-static cpio ruby autoconf automake libtool openjdk-17-jdk-headless maven mono-devel; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

## test: the whole suite (unit, privileged on this host's cgroup layout, privileged in a pure
## cgroup v2 guest, leak check).
test: deps build venv lint unit test-runtimes test-privileged test-api test-durability test-conformance test-v2 leak-check
	@echo "make test: all suites passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --release --locked --workspace --lib --bins
	$(CARGO) test --release --locked -p lamina --test sigv4_vectors --test sigv4_errors --test sigv4_fuzz

## test-runtimes: the language bootstraps against a fake Runtime API.
test-runtimes: venv
	$(VENV)/bin/python -m pytest -q tests/runtimes --ignore=tests/runtimes/test_conformance.py \
	  --ignore=tests/runtimes/test_jvm_dotnet.py

## runtimes: every runtime layer lamina knows (rootfs/runtimes/*), built with `lamina runtime
## build` into a state dir the conformance suite and the benchmark import from (downloads cached
## there, so rebuilds work offline).
RUNTIMES_STATE := $(CURDIR)/target/runtime-state
export LAMINA_RUNTIMES_STATE := $(RUNTIMES_STATE)
runtimes: build
	$(LAMINA) runtime build all --state-dir $(RUNTIMES_STATE)

## test-conformance: one conformance function per runtime (examples/conformance/*) through the
## Invoke API of a real lamina serve (root); then what java17 and dotnet have beyond the contract.
test-conformance: build venv examples runtimes
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/python -m pytest -q tests/runtimes/test_conformance.py \
	  tests/runtimes/test_jvm_dotnet.py

## examples: function code the tests deploy: a static `bootstrap` built with AWS's lambda_runtime
## crate (examples/rust-lambda, its own Cargo project and lock file; output under target/examples).
examples:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$(CURDIR)/target/examples $(CARGO) build --release --locked \
	  --manifest-path examples/rust-lambda/Cargo.toml --target x86_64-unknown-linux-gnu

## test-api: Lambda's API through boto3 and the AWS CLI against a real lamina serve (root); fails
## when the README's coverage table differs from what this run produced.
test-api: build venv examples
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/python -m pytest -q tests/api
	$(VENV)/bin/python tests/tools/coverage_table.py --check

## coverage: run the API tests and rewrite the README's Lambda API coverage table from their results.
coverage: build venv examples
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/python -m pytest -q tests/api
	$(VENV)/bin/python tests/tools/coverage_table.py --write

## test-durability: lamina serve SIGKILLed 50 times at random moments of a mixed workload; after
## each restart: no partial function or version, no lost async event, no orphan env, cgroup or
## mount (root). LAMINA_DURABILITY_SEED=<n> replays a run's random choices.
test-durability: build venv
	AWS_EC2_METADATA_DISABLED=true $(VENV)/bin/python -m pytest -q -s tests/durability

## test-privileged: envs, limits, hostile functions and leaks on this host (needs root).
test-privileged: build
	tests/privileged.sh build
	tests/privileged.sh run

## test-v2: the same privileged tests inside a qemu guest with a pure cgroup v2 hierarchy (about
## 200 s; up to 600 s allowed: under qemu's emulation the memory hog's last MBs before its OOM kill
## thrash the guest's page cache for 30-250 s, measured).
test-v2: build
	tests/privileged.sh build
	LAMINA_VM_TIMEOUT=$${LAMINA_VM_TIMEOUT:-600} LAMINA_LEAK_ENVS=$${LAMINA_LEAK_ENVS:-10} LAMINA_PROBE_WALK_LIMIT=$${LAMINA_PROBE_WALK_LIMIT:-3000} bash tests/vm/run.sh -- tests/privileged.sh run

leak-check:
	tests/leak-check.sh

bench: deps build venv examples runtimes
	benches/run.sh

## bench-runtimes: cold and warm invoke per runtime (benches/results/runtimes.md).
bench-runtimes: build venv examples runtimes
	$(VENV)/bin/python benches/runtimes.py

clean:
	$(CARGO) clean
