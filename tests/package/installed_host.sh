#!/usr/bin/env bash
# An installed snakepit, used from outside this tree (docs/install.md): installs the
# build into a temporary prefix, checks what landed there, builds examples/hello as a
# project of its own with find_package(snakepit CONFIG REQUIRED), then runs it and the
# installed `snakepit` command from a temporary working directory with a bare
# environment. Where user namespaces are allowed, the source and build trees are hidden
# (an empty tmpfs over each) while they run, so nothing can come from them; the doctor's
# output must name the prefix either way. The prefix is removed at the end.
#
# Usage: installed_host.sh SOURCE_DIR BUILD_DIR CMAKE_GENERATOR CXX_COMPILER
set -euo pipefail
src="$1" build="$2" generator="$3" cxx="$4"

tmp="$(mktemp -d /tmp/snakepit-package-test.XXXXXX)"
san_logs="" # where a sanitized build wants its reports (scripts/sanitize)
keep_reports() {
  if [ -n "$san_logs" ] && compgen -G "$tmp/san/logs/*" >/dev/null; then
    mkdir -p "$san_logs" && cp "$tmp"/san/logs/* "$san_logs/"
  fi
}
trap 'keep_reports; rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
expect() { # expect WHAT TEXT PATTERN
  grep -qF -- "$3" <<<"$2" || fail "$1: expected '$3' in:"$'\n'"$2"
}

echo "== install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
  fail "cmake --install: $(tail -5 "$tmp/install.log")"
for f in bin/snakepit lib/cmake/snakepit/snakepitConfig.cmake \
  lib/cmake/snakepit/snakepitConfigVersion.cmake lib/cmake/snakepit/FindCAF.cmake \
  include/snakepit/actors/snakepit.hpp share/snakepit/python/snakepit_bridge/__init__.py \
  share/snakepit/python/snakepit_bridge_pb2.py share/snakepit/python/snakepit_bridge_pb2_grpc.py \
  share/snakepit/node/bridge.js; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
strays="$(cd "$prefix" && find . \( -iname '*test*' -o -name '*.pb.h' -o -name doctest* \) -print)"
[ -z "$strays" ] || fail "installed what a host does not need: $strays"

echo "== the installed headers compile together, from the prefix alone"
{
  cd "$prefix/include/snakepit"
  find . -name '*.hpp' | sort | sed 's|^\./\(.*\)$|#include "\1"|'
} >"$tmp/all_headers.cpp"
"$cxx" -std=c++17 -fsyntax-only -I"$prefix/include/snakepit" "$tmp/all_headers.cpp" ||
  fail "the installed headers do not compile on their own"

echo "== build examples/hello out of tree against the prefix"
cp -r "$src/examples/hello" "$tmp/hello-src"
# The consumer uses the CAF the build used: Debian's, or the one a sanitized build
# was given (scripts/sanitize thread builds CAF instrumented and passes its prefix).
caf_prefix="$(sed -n 's/^CMAKE_PREFIX_PATH:[A-Z]*=//p' "$build/CMakeCache.txt")"
cmake -S "$tmp/hello-src" -B "$tmp/hello-build" -G "$generator" \
  -DCMAKE_PREFIX_PATH="$prefix${caf_prefix:+;$caf_prefix}" \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$tmp/hello.log" ||
  fail "configuring the consumer: $(tail -20 "$tmp/hello.log")"
cmake --build "$tmp/hello-build" >>"$tmp/hello.log" 2>&1 ||
  fail "building the consumer: $(tail -20 "$tmp/hello.log")"
grep -qF "\"$prefix\"" "$tmp/hello-build/snakepit_installed_prefix.cpp" ||
  fail "the consumer was not told the prefix: $(cat "$tmp/hello-build/snakepit_installed_prefix.cpp")"
flags="$(cat "$tmp/hello-build/compile_commands.json")"
for leak in -Werror -Wpedantic "$src" "$build"; do
  if grep -qF -- "$leak" <<<"$flags"; then
    fail "the consumer's compile commands carry '$leak' (a build-only requirement leaked)"
  fi
done

# A sanitized build's options travel into the bare environment: their suppression
# files are copied beside it (the trees are hidden) and their reports go to a
# directory of this run, copied back to the caller's at the end.
san_env=()
mkdir -p "$tmp/san/logs"
for var in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS; do
  [ -n "${!var:-}" ] || continue
  IFS=: read -ra parts <<<"${!var}"
  for i in "${!parts[@]}"; do
    case "${parts[$i]}" in
      suppressions=*)
        cp "${parts[$i]#suppressions=}" "$tmp/san/$var.supp"
        parts[$i]="suppressions=$tmp/san/$var.supp" ;;
      log_path=*)
        san_logs="$(dirname "${parts[$i]#log_path=}")"
        parts[$i]="log_path=$tmp/san/logs/$(basename "${parts[$i]#log_path=}")" ;;
    esac
  done
  san_env+=("$var=$(IFS=:; echo "${parts[*]}")")
done

# Runs "$@" in an empty working directory with a bare environment, the source and build
# trees hidden when user namespaces allow it.
mkdir -p "$tmp/cwd" "$tmp/home" "$tmp/state"
hide=""
if unshare -rm true 2>/dev/null; then
  hide="mount -t tmpfs none '$src'"
  case "$build/" in "$src"/*) ;; *) hide="$hide && mount -t tmpfs none '$build'" ;; esac
  hide="$hide && test ! -e '$src/CMakeLists.txt' && test ! -e '$build/CMakeCache.txt'"
else
  echo "(user namespaces not available: the source and build trees stay visible)"
fi
run_outside() {
  local cmd
  cmd="$(printf '%q ' "$@")"
  (cd "$tmp/cwd" && env -i PATH=/usr/bin:/bin HOME="$tmp/home" XDG_STATE_HOME="$tmp/state" \
    "${san_env[@]}" ${hide:+unshare -rm} sh -c "${hide:+$hide && }exec timeout -k 5 120 $cmd") \
    2>"$tmp/stderr.txt"
}
stderr_of() { echo "(stderr: $(tail -20 "$tmp/stderr.txt"))"; }

echo "== run hello"
out="$(run_outside "$tmp/hello-build/hello")" || fail "hello: $out $(stderr_of)"
[ "$out" = $'42\nValueError: no' ] || fail "hello printed: $out $(stderr_of)"

echo "== run the installed snakepit command"
out="$(run_outside "$prefix/bin/snakepit" exec echo '{"message":"hi"}')" ||
  fail "snakepit exec: $out $(stderr_of)"
[ "$out" = '{"message":"hi"}' ] || fail "snakepit exec printed: $out $(stderr_of)"
out="$(run_outside "$prefix/bin/snakepit" doctor)" || fail "snakepit doctor: $out"
expect "doctor" "$out" "[ OK ] worker package: $prefix/share/snakepit/python (installed)"
expect "doctor" "$out" "[ OK ] snakepit_bridge package: $prefix/share/snakepit/python/snakepit_bridge"
expect "doctor" "$out" "[ OK ] node bridge: $prefix/share/snakepit/node/bridge.js (installed)"
if command -v node >/dev/null; then
  printf '[[pools]]\nname = "node"\nkind = "stdio"\ncommand = ["node", "%s"]\npool_size = 1\n' \
    "$prefix/share/snakepit/node/bridge.js" >"$tmp/cwd/node.toml"
  out="$(run_outside "$prefix/bin/snakepit" exec --config node.toml echo '{"value":42}')" ||
    fail "snakepit exec with the installed node bridge: $out $(stderr_of)"
  [ "$out" = '{"value":42}' ] || fail "node bridge exec printed: $out $(stderr_of)"
fi
if [ -n "$hide" ]; then
  echo "== a program that finds no worker package says so; SNAKEPIT_PYTHON_PACKAGE_DIR helps it"
  mkdir -p "$tmp/lone"
  cp "$build/cli/snakepit" "$tmp/lone/snakepit" # not under a prefix, its tree hidden
  rc=0
  out="$(run_outside "$tmp/lone/snakepit" exec echo '{"message":"hi"}')" || rc=$?
  [ "$rc" = 3 ] || fail "without a worker package: exit $rc (expected 3, invalid configuration): $out $(stderr_of)"
  expect "the error without a package" "$(cat "$tmp/stderr.txt")" "SNAKEPIT_PYTHON_PACKAGE_DIR"
  out="$(run_outside env SNAKEPIT_PYTHON_PACKAGE_DIR="$prefix/share/snakepit/python" \
    "$tmp/lone/snakepit" exec echo '{"message":"hi"}')" ||
    fail "SNAKEPIT_PYTHON_PACKAGE_DIR: $out $(stderr_of)"
  [ "$out" = '{"message":"hi"}' ] || fail "with SNAKEPIT_PYTHON_PACKAGE_DIR: $out $(stderr_of)"
fi
echo "ok"
