# scripts/lib/common.sh — shared by scripts/run-demo, scripts/run-tests and
# bench/run: install what is missing (Debian 12, apt, sudo when not root) and
# build baton with CMake. Sourced, not run.

BATON_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages baton needs to build and test. (gunicorn, nginx, haproxy,
# lighttpd, php-fpm, wrk: the real peers of spec/upgrade_peers_spec.lua.
# Installing them does not start the system's daemons where
# /usr/sbin/policy-rc.d forbids it, as in containers; where they start,
# nginx and lighttpd want port 80 (one of them fails to start, which the
# packages tolerate), php-fpm a socket in /run/php, Debian's haproxy.cfg
# binds nothing: no port a test uses, as the tests bind port 0.)
BATON_PACKAGES=(gcc libc6-dev make cmake pkg-config liblua5.4-dev lua5.4 libuv1-dev libedit-dev
                lua-busted lua-filesystem tmux procps clang-format lua-check systemd python3
                ruby-foreman gzip zstd libsystemd-dev luarocks lua-luv lua-luv-dev git gunicorn nginx wrk
                haproxy lighttpd php-fpm)

baton_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Install the packages given (and BATON_PACKAGES) that are not installed yet.
baton_ensure_packages() {
  local missing=() p
  for p in "${BATON_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  baton_say "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# baton_build DIR [cmake options…]: configure (once) and build into DIR.
baton_build() {
  local dir=$1; shift
  baton_say "building in $dir"
  cmake -S "$BATON_ROOT" -B "$BATON_ROOT/$dir" -DBATON_WERROR=ON "$@" >/dev/null
  cmake --build "$BATON_ROOT/$dir" -j "$(nproc)"
}
