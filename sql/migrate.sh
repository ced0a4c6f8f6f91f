#!/usr/bin/env bash
# migrate.sh: apply sql/migrations/*.sql to one PostgreSQL database.
#
# Every file is applied at most once, in lexical order, recorded in the
# schema_migrations table (see migrations/0001_init.sql). Each file runs in a
# single transaction together with the insert of its ledger row, under a
# transaction-scoped advisory lock, so two concurrent runs against the same
# database apply each file exactly once and a failing file leaves no trace.
# The local stack (deploy/local/stack up) calls this for database `kinfer`;
# integration tests call it for their own scratch databases, e.g.
#   sql/migrate.sh "$KINFER_PG_DSN dbname=kf_test_1234"
# (libpq takes the last value of a repeated keyword).
set -euo pipefail

usage() {
	cat <<'USAGE'
usage: sql/migrate.sh [--dir DIR] [--quiet] CONNINFO

Apply every DIR/*.sql (default: the migrations/ folder beside this script)
not yet recorded in the database's schema_migrations table, in lexical order.
CONNINFO is a libpq connection string, e.g.
  'host=127.0.0.1 port=5433 dbname=kinfer user=kinfer'
Exit status: 0 on success (also when nothing was pending), 1 on a failed
migration or bad usage; psql's error names the file and line.
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir="$here/migrations"
quiet=0
conninfo=""
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--dir) [ $# -ge 2 ] || { usage >&2; exit 1; }; dir=$2; shift 2 ;;
	--quiet | -q) quiet=1; shift ;;
	-*) echo "migrate.sh: unknown option '$1'" >&2; usage >&2; exit 1 ;;
	*) [ -z "$conninfo" ] || { echo "migrate.sh: more than one CONNINFO" >&2; exit 1; }
	   conninfo=$1; shift ;;
	esac
done
[ -n "$conninfo" ] || { echo "migrate.sh: CONNINFO is required" >&2; usage >&2; exit 1; }
[ -d "$dir" ] || { echo "migrate.sh: no migrations folder '$dir'" >&2; exit 1; }
bootstrap="$dir/0001_init.sql"
[ -f "$bootstrap" ] || { echo "migrate.sh: '$bootstrap' (the ledger bootstrap) is missing" >&2; exit 1; }

say() { [ "$quiet" = 1 ] || echo "migrate: $*" >&2; }
# -X: ignore ~/.psqlrc, whose settings would change what we parse.
run_psql() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d "$conninfo" "$@"; }

# Any constant works as the lock key as long as every runner uses the same one.
lock_key=7461735
# The ledger must exist before it can be read; creating it under the lock
# stops two first-time runs from racing on CREATE TABLE IF NOT EXISTS.
run_psql -1 -c "SELECT pg_advisory_xact_lock($lock_key)" -f "$bootstrap" >/dev/null

declare -A applied=()
while IFS='|' read -r version checksum; do
	[ -n "$version" ] && applied["$version"]=$checksum
done < <(run_psql -At -F '|' -c 'SELECT version, checksum FROM schema_migrations')

shopt -s nullglob
files=("$dir"/*.sql)
# Globs already sort, but by the locale's collation; migrations are ordered
# by byte value so the order is the same on every machine.
mapfile -t files < <(printf '%s\n' "${files[@]}" | LC_ALL=C sort)

n_applied=0
for file in "${files[@]}"; do
	version=$(basename "$file")
	sum=$(sha256sum "$file" | cut -d' ' -f1)
	if [ -n "${applied[$version]+x}" ]; then
		if [ "${applied[$version]}" != "$sum" ]; then
			echo "migrate.sh: warning: $version changed after it was applied" \
				"(recorded sha256 ${applied[$version]:0:12}, now ${sum:0:12});" \
				"add a new migration instead of editing it" >&2
		fi
		continue
	fi
	# The ledger is checked again inside the transaction, under the lock: a
	# concurrent runner may have applied the file since we read the ledger.
	out=$(run_psql -At -v lock="$lock_key" -v version="$version" \
		-v checksum="$sum" -v file="$file" <<'SQL'
BEGIN;
SELECT pg_advisory_xact_lock(:lock);
SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = :'version') AS todo \gset
\if :todo
\i :file
INSERT INTO schema_migrations (version, checksum) VALUES (:'version', :'checksum');
\echo applied
\endif
COMMIT;
SQL
	) || { echo "migrate.sh: $version failed; nothing of it was kept" >&2; exit 1; }
	case "$out" in
	*applied*) say "applied $version"; n_applied=$((n_applied + 1)) ;;
	esac
done
say "$n_applied migration(s) applied, ${#files[@]} known"
