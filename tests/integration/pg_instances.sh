#!/usr/bin/env bash
# Three gateways on one PostgreSQL, and a PostgreSQL restart under load:
# see pg_instances.py. This wrapper only finds the interpreter.
set -euo pipefail
bin=$1
src=$2
exec python3 "$src/tests/integration/pg_instances.py" "$bin" "$src"
