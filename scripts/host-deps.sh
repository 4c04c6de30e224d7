#!/usr/bin/env bash
# Installs the host tools the build and tests need, only those missing.
# Debian's packages are the one source: no binary is downloaded by hand.
# `host-deps.sh images`: only what builds the images (make demo).
set -euo pipefail
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ "${1:-}" != images ]; then
  command -v cc >/dev/null || need+=(gcc libc6-dev)
  command -v clang >/dev/null || need+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
  command -v make >/dev/null || need+=(make)
  command -v shellcheck >/dev/null || need+=(shellcheck)
  command -v readelf >/dev/null || need+=(binutils)
  command -v zstd >/dev/null || need+=(zstd)  # measuring the pack of images (README)
  command -v chromium >/dev/null || need+=(chromium)  # tests/test_serve.py: the page in a real browser
  command -v chromedriver >/dev/null || need+=(chromium-driver)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "host-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "host-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
