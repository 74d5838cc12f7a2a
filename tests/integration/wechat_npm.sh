#!/usr/bin/env bash
# The official account's safe mode (AES) against an independent implementation,
# the npm package wechat-crypto@0.0.2 (tests/fakes/wxcrypt.js); see
# wechat_npm.py for what is checked. Exit 77 (skipped) without npm or a registry.
set -euo pipefail
exec python3 "$2/tests/integration/wechat_npm.py" "$1" "$2"
