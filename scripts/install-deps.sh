#!/usr/bin/env bash
# Installs the Debian packages pointsgw needs to build and run it (make run),
# and with `test` also what only its tests need (make test), and only the
# ones that are missing, so a second run costs one dpkg query.
#   install-deps.sh [test]
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libssl-dev        # SHA-256 for the hash chain, HMAC, AES
    libjansson-dev    # JSON: configuration, HTTP bodies
    libsqlite3-dev    # the embedded transfer log
    libpq-dev         # the PostgreSQL backend
    libcmocka-dev     # unit tests (built with everything else)
    libwebsockets-dev # the HTTP server
    libcurl4-openssl-dev # outbound calls to WeChat and the SMS providers
    libexpat1-dev     # the official account's XML messages
    curl              # make run prints curl commands to try the API with
)
if [ "${1:-}" = test ]; then
    packages+=(
        clang-format # make test checks the formatting
        postgresql   # tests run the PostgreSQL backend on a throwaway cluster
        python3      # integration tests: fake WeChat and SMS servers, HTTP clients
        openssl      # integration tests make a throwaway TLS certificate
        nodejs       # integration tests run the dashboard's script (dashboard.js)
    )
elif [ -n "${1:-}" ]; then
    echo "usage: install-deps.sh [test]" >&2
    exit 2
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo for apt-get" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
