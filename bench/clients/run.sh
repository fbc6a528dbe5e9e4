#!/usr/bin/env bash
# The client-language comparison: installs its Python client libraries into bench/clients/.venv
# (grpcio, nats-py, aio-pika, google-cloud-pubsub), nats-server and rabbitmq-server from Debian's packages when
# missing, and the Node example's packages (for the Node rows); then runs compare.py with the
# arguments given (first: the streamgate binary).
#   cargo build --release --bins && bench/clients/run.sh target/release/streamgate
#   bench/clients/run.sh --pubsub target/release/streamgate   # the official Pub/Sub client
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

ensure_toolchain_and_redis
command -v nats-server >/dev/null || apt_install nats-server
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || apt_install rabbitmq-server
venv=bench/clients/.venv
if ! "$venv/bin/python" -c "import grpc_tools, nats, aio_pika, google.cloud.pubsub_v1" >/dev/null 2>&1; then
  say "installing the comparison's Python client libraries into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/clients/requirements.txt
fi
command -v node >/dev/null || apt_install nodejs npm
[ -d examples/node/node_modules/@grpc/grpc-js ] || npm ci --prefix examples/node --no-audit --no-fund --loglevel=error
# `--pubsub` first: Google's Python Pub/Sub client beside ours (pubsub_bench.py) instead.
if [ "${1:-}" = "--pubsub" ]; then
  shift
  exec "$venv/bin/python" bench/clients/pubsub_bench.py "$@"
fi
exec "$venv/bin/python" bench/clients/compare.py "$@"
