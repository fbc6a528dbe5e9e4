#!/usr/bin/env bash
# Runs a streamgate broker on 127.0.0.1:50051 against Redis on 127.0.0.1:6379, starting a local
# Redis there first if none answers. Extra arguments go to `streamgate serve`
# (see `cargo run -- serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_toolchain_and_redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting redis-server on 127.0.0.1:6379 (append-only file in ./.redis-data)"
  mkdir -p .redis-data
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$PWD/.redis-data" \
    --appendonly yes --logfile "$PWD/.redis-data/redis.log"
fi
exec cargo run --release --quiet -- serve "$@"
