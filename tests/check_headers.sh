#!/usr/bin/env bash
# Compiles every header under include/netpasst alone (public, impl/ and
# detail/ alike), so that each stays self-contained. An impl/ header whose
# first include is its public header, which includes it back, compiles to
# the same text as that header: it is checked through it.
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
# covered_by_public HEADER: HEADER is impl/X.hpp, its first include is X.hpp,
# and X.hpp includes it.
covered_by_public() {
  local header=$1 public=${1/impl\//}
  [ "$public" != "$header" ] && [ -f "$public" ] &&
    [ "$(grep -m1 '^#include' "$header")" = "#include <$public>" ] &&
    grep -q "^#include <$header>" "$public"
}
export -f check
export compiler include scratch
cd "$include"
find netpasst -name '*.hpp' | sort | while read -r header; do
  covered_by_public "$header" || echo "$header"
done | xargs -P 2 -I{} bash -c 'check "$@"' _ {} "$@"
echo "every header compiles alone"
