#!/usr/bin/env bash
# Compiles every header under include/netpasst alone (public, impl/ and
# detail/ alike), so that each stays self-contained.
#   check_headers.sh COMPILER INCLUDE_DIR [FLAGS...]
set -euo pipefail
compiler=$1 include=$2
shift 2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
check() {
  local header=$1 source
  source=$scratch/$(echo "$header" | tr / _).cpp
  echo "#include <$header>" > "$source"
  "$compiler" -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -I"$include" "${@:2}" "$source" \
    || { echo "not self-contained: $header"; return 1; }
}
export -f check
export compiler include scratch
cd "$include"
find netpasst -name '*.hpp' | sort | xargs -P 2 -I{} bash -c 'check "$@"' _ {} "$@"
echo "every header compiles alone"
