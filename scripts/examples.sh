#!/usr/bin/env bash
# Runs the polyglot examples (examples/python, examples/node) against a live broker: the
# streamgate binary on the embedded store, on a free loopback port. Installs what they need:
# grpcio-tools into ./.venv, @grpc/grpc-js and @grpc/proto-loader into examples/node.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_build_tools
ensure_rust
command -v node >/dev/null || apt_install nodejs npm
if ! .venv/bin/python -c "import grpc_tools" >/dev/null 2>&1; then
  say "installing the Python example's packages into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; python3 -m venv .venv; }
  .venv/bin/pip install --quiet --disable-pip-version-check -r examples/python/requirements.txt
fi
say "installing the Node example's packages (npm ci)"
npm ci --prefix examples/node --no-audit --no-fund --loglevel=error

cargo build --quiet --bin streamgate
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
target/debug/streamgate serve --listen "127.0.0.1:$port" >"$log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  target/debug/streamgate health --server "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.1
done
target/debug/streamgate health --server "127.0.0.1:$port" >/dev/null || { cat "$log"; exit 1; }

say "python example"
.venv/bin/python examples/python/client.py "127.0.0.1:$port"
.venv/bin/python examples/python/publisher.py "127.0.0.1:$port"
say "node example"
node examples/node/client.js "127.0.0.1:$port"
