#!/usr/bin/env bash
# The real server over HTTP on a throwaway SQLite file: see http_api.py for
# what is checked. This wrapper only finds the interpreter.
set -euo pipefail
bin=$1
src=$2
exec python3 "$src/tests/integration/http_api.py" "$bin" "$src"
