#!/usr/bin/env bash
# The SMS signatures against the providers' own Node SDKs (tencentcloud-sdk-
# nodejs-sms, @alicloud/pop-core; tests/fakes/smssdk.js); see sms_npm.py.
# Exit 77 (skipped) without npm or a registry.
set -euo pipefail
exec python3 "$2/tests/integration/sms_npm.py" "$1" "$2"
