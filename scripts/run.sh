#!/usr/bin/env bash
# Runs a streamgate broker on 127.0.0.1:50051. Without --redis-url it runs on the embedded
# in-memory store: nothing else to install, nothing durable (it says so in its log). With
# `--redis-url redis://host:6379` it runs on Redis. Extra arguments go to `streamgate serve`
# (see `cargo run -- serve --help`). The web console is on at http://127.0.0.1:8080/ unless
# STREAMGATE_CONSOLE_ADDR says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_tools
ensure_rust
export STREAMGATE_CONSOLE_ADDR="${STREAMGATE_CONSOLE_ADDR:-127.0.0.1:8080}"
exec cargo run --release --quiet -- serve "$@"
