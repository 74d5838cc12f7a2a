#!/usr/bin/env bash
# Notifications by SMS end to end: the real server against the fake SMS
# providers (tests/fakes/sms_fake.py); see sms_notify.py.
set -euo pipefail
exec python3 "$2/tests/integration/sms_notify.py" "$1" "$2"
