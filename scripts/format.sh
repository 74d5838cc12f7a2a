#!/usr/bin/env bash
# clang-format every C file we own. --check: change nothing, fail on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' | sort)
else # an unpacked tarball: every C file outside build/
    mapfile -t files < <(find . -path ./build -prune -o -name '*.[ch]' -print | sort)
fi
[ ${#files[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
    if ! clang-format --dry-run --Werror "${files[@]}"; then
        echo "format: files above are not clang-formatted; run 'make format'" >&2
        exit 1
    fi
else
    clang-format -i "${files[@]}"
fi
