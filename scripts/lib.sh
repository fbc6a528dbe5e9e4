# Shared by scripts/run.sh and scripts/test.sh: install what streamgate needs, and nothing else.
# Each step checks first, so a machine that has everything is left alone.

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; return 1; fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || { say "no apt-get: install $* with your package manager"; return 1; }
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
  say "installing the Rust toolchain with rustup"
  command -v curl >/dev/null || apt_install curl ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
}

ensure_build_tools() {
  command -v cc >/dev/null || apt_install build-essential
}

ensure_redis() {
  command -v redis-server >/dev/null && return 0
  say "installing redis-server"
  apt_install redis-server
}

ensure_nginx() {
  command -v nginx >/dev/null && return 0
  [ -x /usr/sbin/nginx ] && return 0
  say "installing nginx (the proxy tests run gRPC through it)"
  apt_install nginx-light || apt_install nginx
}

ensure_chromium() {
  command -v chromium >/dev/null && return 0
  [ -x /usr/bin/chromium ] && return 0
  say "installing Debian's chromium (the console tests drive it headless with playwright-core)"
  apt_install chromium
}

# What both scripts need before cargo runs: a compiler, Rust, and redis-server.
ensure_toolchain_and_redis() {
  ensure_build_tools
  ensure_rust
  ensure_redis
}
