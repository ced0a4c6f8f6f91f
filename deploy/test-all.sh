#!/usr/bin/env bash
# Sets up a fresh Debian bookworm machine and runs every kinfer test:
#   1. installs packages (deploy/setup-debian.sh),
#   2. builds with -Werror and checks formatting,
#   3. starts a private local stack (Kafka, PostgreSQL, search engine) on free ports,
#   4. runs the whole ctest suite against it (unit, integration, e2e; gpu tests SKIP without a GPU),
#   5. builds and runs the unit tests under ASan+UBSan,
#   6. builds the libFuzzer targets with clang and runs each for a bounded time.
# Exits non-zero when any step fails. Run as root (apt-get). Usage: bash deploy/test-all.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
jobs=$(nproc)
step() { printf '\n==== %s ====\n' "$*" >&2; }
t0=$(date +%s)

step "setup: Debian packages and Maven artifacts"
bash deploy/setup-debian.sh

step "build (Release with debug info, -Werror)"
cmake -S . -B build-ci -DKF_WERROR=ON >/dev/null
cmake --build build-ci -j"$jobs"

step "format check (clang-format --dry-run --Werror)"
cmake --build build-ci --target format-check

step "local stack up"
# The state dir must be readable by the postgres OS user, so it lives under /tmp, not the clone.
export KINFER_STACK_DIR=$(mktemp -d /tmp/kinfer-ci-stack.XXXXXX)
chmod 755 "$KINFER_STACK_DIR"
trap 'deploy/local/stack down --purge >&2 || true' EXIT
eval "$(deploy/local/stack up)"
env | grep '^KINFER_' | grep -v -i secret >&2

step "ctest: unit, integration, e2e, gpu (gpu skips without a device)"
(cd build-ci && ctest --output-on-failure -j1 -LE fuzz)

step "sanitizers: unit tests under ASan+UBSan"
cmake -S . -B build-asan -DKF_WERROR=ON -DKF_SANITIZE=address,undefined -DKF_CUDA=OFF >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -L unit)

step "fuzz: libFuzzer targets under ASan+UBSan, bounded runs"
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DKF_FUZZ=ON -DKF_SANITIZE=address,undefined \
    -DKF_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$jobs"
(cd build-fuzz && ctest --output-on-failure -L fuzz)

step "all tests passed in $(( $(date +%s) - t0 )) s"
