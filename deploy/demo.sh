#!/usr/bin/env bash
# kinfer's main job on a fresh Debian bookworm machine: installs what it needs, builds,
# starts the local stack (real Kafka, PostgreSQL and search engine on free ports), runs the
# demo flow and prints what it saw. The stack is stopped at the end unless --keep is given.
# Usage: bash deploy/demo.sh [--keep]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
keep=0
for a in "$@"; do
    case "$a" in
    --keep) keep=1 ;;
    -h | --help)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown option '$a' (try --help)" >&2
        exit 2
        ;;
    esac
done
step() { printf '\n==== %s ====\n' "$*" >&2; }

step "setup"
bash deploy/setup-debian.sh
step "build"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)"

step "local stack"
# State under /tmp: the postgres OS user must be able to reach it.
export KINFER_STACK_DIR="${KINFER_STACK_DIR:-/tmp/kinfer-demo-stack}"
mkdir -p "$KINFER_STACK_DIR" && chmod 755 "$KINFER_STACK_DIR"
if [ "$keep" = 0 ]; then
    trap 'deploy/local/stack down >&2 || true' EXIT
fi
eval "$(deploy/local/stack up)"

step "smoke flow: Avro MarketTick records through Kafka"
./build/cli/kinfer smoke -n 10
