#!/usr/bin/env bash
# clang-format every C file we own. --check: change nothing, fail on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | sort)
[ ${#files[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
    if ! clang-format --dry-run --Werror "${files[@]}"; then
        echo "format: files above are not clang-formatted; run 'make format'" >&2
        exit 1
    fi
else
    clang-format -i "${files[@]}"
fi
