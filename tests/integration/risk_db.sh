#!/usr/bin/env bash
# risk_db.sh: the risk data path through a real PostgreSQL (the local stack's).
#
# In a scratch database: apply the migrations, load the sample set with `kinfer sample-data
# --dsn` (COPY, one transaction), check the row counts against the same set written as CSV,
# load it again (idempotent: same counts, a non-sample row survives, a different seed replaces
# the set), and check that `kinfer risk --dsn` (prepared statements, as-of in SQL) prints the same
# report as `kinfer risk --csv` for every portfolio and two as-of dates.
#
# usage: risk_db.sh KINFER PYTHON RISK_REF_PY MIGRATE_SH WORKDIR
# Exit 77 (SKIP) when KINFER_PG_DSN is not set.
set -euo pipefail

if [ -z "${KINFER_PG_DSN:-}" ]; then
	echo "SKIP: KINFER_PG_DSN is not set (eval \"\$(deploy/local/stack env)\")"
	exit 77
fi
kinfer=$1 py=$2 ref=$3 migrate=$4 work=$5
db="kf_risk_it_$$_${RANDOM}"
dsn="$KINFER_PG_DSN dbname=$db"
psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$KINFER_PG_DSN" "$@"; }
psql_db() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$dsn" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }

rm -rf "$work" && mkdir -p "$work"
psql_admin -c "CREATE DATABASE $db"
trap 'psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
# Only the ledger bootstrap and this area's migrations: other areas' files are tested by their
# own suites, and a half-written one elsewhere must not fail this test.
mkdir -p "$work/migrations"
cp "$(dirname "$migrate")/migrations/0001_init.sql" "$(dirname "$migrate")/migrations/0002_market_data.sql" \
	"$work/migrations/"
"$migrate" --quiet --dir "$work/migrations" "$dsn"

counts() {
	psql_db -c "SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM instruments)
		|| ' ' || (SELECT count(*) FROM portfolios) || ' ' || (SELECT count(*) FROM positions)
		|| ' ' || (SELECT count(*) FROM price_history) || ' ' || (SELECT count(*) FROM fx_rates)
		|| ' ' || (SELECT count(*) FROM risk_limits) || ' ' || (SELECT count(*) FROM stress_scenarios)
		|| ' ' || (SELECT count(*) FROM stress_shocks)"
}
csv_counts() {
	local out="" t
	for t in customers instruments portfolios positions price_history fx_rates risk_limits \
		stress_scenarios stress_shocks; do
		out="$out $(($(wc -l <"$1/$t.csv") - 1))"
	done
	echo "${out# }"
}

# 1. Load, and compare with the CSV rendering of the same seed.
"$kinfer" sample-data --dsn "$dsn" --seed 42
"$kinfer" sample-data --csv "$work/csv42" --seed 42 --quiet
want=$(csv_counts "$work/csv42")
got=$(counts)
echo "rows after load:   $got"
[ "$got" = "$want" ] || fail "database rows '$got' differ from CSV rows '$want'"
[ "$(echo "$got" | cut -d' ' -f5)" -ge 39000 ] || fail "too few price rows: $got"

# 2. Idempotent: a second load replaces the set; a manual (non-sample) row survives.
psql_db -c "INSERT INTO instruments (symbol, name, asset_class, currency) VALUES ('MANUAL1', 'kept', 'equity', 'USD');
	INSERT INTO price_history VALUES ('MANUAL1', '2026-10-30', 10)"
"$kinfer" sample-data --dsn "$dsn" --seed 42 --quiet
got=$(counts)
echo "rows after reload: $got"
want_plus=$(echo "$want" | awk '{ $2 += 1; $5 += 1; print }')
[ "$got" = "$want_plus" ] || fail "reload changed counts: '$got', want '$want_plus'"
[ "$(psql_db -c "SELECT count(*) FROM instruments WHERE symbol = 'MANUAL1'")" = 1 ] ||
	fail "the manual instrument did not survive the reload"
# A different generation replaces everything tagged 'sample'.
"$kinfer" sample-data --dsn "$dsn" --seed 7 --instruments 55 --portfolios 3 --years 1 --quiet
"$kinfer" sample-data --csv "$work/csv7" --seed 7 --instruments 55 --portfolios 3 --years 1 --quiet
got=$(counts)
want7=$(csv_counts "$work/csv7" | awk '{ $2 += 1; $5 += 1; print }')
[ "$got" = "$want7" ] || fail "replacement load: '$got', want '$want7'"
# A failing load (a sample instrument held by a manual portfolio blocks the delete) changes
# nothing: one transaction.
psql_db -c "INSERT INTO customers (customer_id, tenant_id, name, risk_profile) VALUES ('CM', 't', 'm', 'balanced');
	INSERT INTO portfolios (portfolio_id, name, base_currency, customer_id, tenant_id) VALUES ('PM', 'm', 'USD', 'CM', 't');
	INSERT INTO positions (portfolio_id, symbol, quantity, cost_basis)
	  SELECT 'PM', symbol, 1, 1 FROM instruments WHERE data_source = 'sample' LIMIT 1"
if "$kinfer" sample-data --dsn "$dsn" --seed 42 --quiet 2>"$work/err.txt"; then
	fail "the load should fail while a manual portfolio holds a sample instrument"
fi
grep -q "violates foreign key constraint" "$work/err.txt" || fail "unexpected error: $(cat "$work/err.txt")"
got=$(counts)
want7m=$(echo "$want7" | awk '{ $1 += 1; $3 += 1; $4 += 1; print }')
[ "$got" = "$want7m" ] || fail "failed load left '$got', want '$want7m'"
psql_db -c "DELETE FROM portfolios WHERE portfolio_id = 'PM'"

# 3. Reports from the database equal the reports from CSV (seed 42 again).
"$kinfer" sample-data --dsn "$dsn" --seed 42 --quiet
n=0
for as_of in 2026-10-30 2025-08-16; do
	for p in P001 P002 P003 P004 P005; do
		"$kinfer" risk --dsn "$dsn" --portfolio "$p" --as-of "$as_of" --json >"$work/db_$p.json"
		"$kinfer" risk --csv "$work/csv42" --portfolio "$p" --as-of "$as_of" --json >"$work/csv_$p.json"
		"$py" "$ref" compare "$work/db_$p.json" "$work/csv_$p.json" --tol 1e-12 |
			tee "$work/cmp.txt" | sed "s/^/$p $as_of: /"
		grep -q -- "-> PASS" "$work/cmp.txt" || fail "$p as of $as_of: database and CSV reports differ"
		n=$((n + 1))
	done
done
# Window option and a missing portfolio through the database path.
"$kinfer" risk --dsn "$dsn" --portfolio P003 --as-of 2026-01-15 --window 60 --json >"$work/w60.json"
grep -q '"n_returns": 60' "$work/w60.json" || fail "--window 60 did not give 60 returns"
if "$kinfer" risk --dsn "$dsn" --portfolio NOPE --as-of 2026-01-15 2>"$work/err.txt"; then
	fail "unknown portfolio accepted"
fi
grep -q "portfolio NOPE not found" "$work/err.txt" || fail "unexpected error: $(cat "$work/err.txt")"
echo "PASS: counts, idempotent reload, rollback on failure, $n database/CSV report pairs equal"
