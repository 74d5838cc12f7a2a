#!/usr/bin/env bash
# The WeChat channels end to end: the real server against the fake WeChat
# API (tests/fakes/wechat_fake.py); see wechat_api.py for what is checked.
set -euo pipefail
exec python3 "$2/tests/integration/wechat_api.py" "$1" "$2"
