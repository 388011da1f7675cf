#!/usr/bin/env bash
# Installs the Debian packages orch needs to build and test, if missing.
# Runs `apt-get update` once, and only when something is missing.
set -euo pipefail
packages=(
  gcc make cmake pkg-config
  liblua5.4-dev lua-cjson libcurl4-openssl-dev libsqlite3-dev
  libcsv-dev libxxhash-dev libzstd-dev
  lua-busted python3 sqlite3 curl clang-format
  postgresql libpq-dev
  redis-server libhiredis-dev redis-tools
  libmicrohttpd-dev chromium
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(hyperfine time apache2-utils gnuplot-nox python3-aiohttp nodejs)
fi
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0
echo "orch: installing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "orch: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
