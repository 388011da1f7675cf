#!/usr/bin/env bash
# Every C file of the tree matches .clang-format (clang-format --dry-run
# -Werror), so a formatting change fails the test command, and with it CI.
# Generated files live in the build directories and are not checked.
# Fix with: clang-format -i $(git ls-files '*.c' '*.h')
set -uo pipefail
cd "$(dirname "$0")/../.."
command -v clang-format >/dev/null || { echo "FAIL clang-format is not installed: run bash tests/deps.sh" >&2; exit 1; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find common core storage tests/c bench -name '*.[ch]')
[ "${#files[@]}" -gt 20 ] || { echo "FAIL found only ${#files[@]} C files to check" >&2; exit 1; }
fail=0
# the check itself catches a misformatted file
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int  f( void ){return 1;}\n' >"$tmp/bad.c"
cp .clang-format "$tmp/"
if clang-format --dry-run -Werror "$tmp/bad.c" 2>/dev/null; then
  echo "FAIL clang-format --dry-run -Werror accepts a misformatted file"; fail=1
else
  echo "ok   a misformatted file is caught"
fi
if clang-format --dry-run -Werror "${files[@]}"; then
  echo "ok   ${#files[@]} C files match .clang-format"
else
  echo "FAIL the files above do not match .clang-format; run: clang-format -i \$(git ls-files '*.c' '*.h')"; fail=1
fi
exit "$fail"
