#!/usr/bin/env bash
# Installs a build into a temporary prefix and builds the README's example
# against it twice: through pkg-config and through find_package(kiln).
set -euo pipefail
build=${1:-build}
prefix=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$prefix" "$work"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
cp "$build/examples/readme_example.c" "$work/first.c"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/$(gcc -print-multiarch)/pkgconfig"
cc -std=c11 -Wall -Wextra -Werror "$work/first.c" -o "$work/first_pc" $(pkg-config --cflags --libs kiln)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir kiln)" "$work/first_pc" >/dev/null
cc -std=c11 "$work/first.c" -o "$work/first_static" -DKILN_STATIC_DEFINE $(pkg-config --cflags kiln) \
  "$(pkg-config --variable=libdir kiln)/libkiln.a" $(pkg-config --libs --static kiln | sed 's/-lkiln//')
"$work/first_static" >/dev/null

mkdir -p "$work/cm"
cat > "$work/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(first C)
find_package(kiln REQUIRED)
add_executable(first ../first.c)
target_link_libraries(first PRIVATE kiln::kiln)
CM
cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
LD_LIBRARY_PATH="$(pkg-config --variable=libdir kiln)" "$work/cm/build/first" >/dev/null
echo "install check: pkg-config (shared, static) and find_package(kiln) builds run"
