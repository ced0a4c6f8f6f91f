/*
 * risk_db.c: loads one portfolio's risk inputs from PostgreSQL as of a date.
 *
 * Six named statements (registered once per connection through kf_pg, prepared lazily and
 * retried after a reconnect since they only read) fetch the portfolio's base currency, its
 * positions joined to the instruments, the held symbols' closes and the needed FX fixings dated
 * <= as_of within a calendar lookback, its limits and the stress shocks. The point-in-time cut
 * is in SQL, so nothing after as_of leaves the database; kf_risk_compute applies it again.
 */
#include "kf_risk.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name, *sql;
    int nparams;
} kf_risk_db_stmts[] = {
    {"kf_risk_portfolio", "SELECT base_currency FROM portfolios WHERE portfolio_id = $1", 1},
    {"kf_risk_positions",
     "SELECT p.symbol, p.quantity, p.cost_basis, i.asset_class, coalesce(i.sector, ''), "
     "i.currency FROM positions p JOIN instruments i USING (symbol) "
     "WHERE p.portfolio_id = $1 ORDER BY p.symbol",
     1},
    {"kf_risk_prices",
     "SELECT h.symbol, h.price_date, h.close FROM price_history h "
     "JOIN positions p ON p.symbol = h.symbol AND p.portfolio_id = $1 "
     "WHERE h.price_date <= $2::date AND h.price_date > $2::date - $3::int "
     "ORDER BY h.symbol, h.price_date",
     3},
    {"kf_risk_fx",
     "SELECT currency, rate_date, usd_per_unit FROM fx_rates "
     "WHERE currency = ANY ($1::text[]) AND rate_date <= $2::date "
     "AND rate_date > $2::date - $3::int ORDER BY currency, rate_date",
     3},
    {"kf_risk_limits",
     "SELECT metric, threshold FROM risk_limits WHERE portfolio_id = $1 ORDER BY metric", 1},
    {"kf_risk_shocks",
     "SELECT scenario_id, dimension, key, shock FROM stress_shocks "
     "ORDER BY scenario_id, dimension, key",
     0},
};

/* Parses a float8 column; the schema forbids NULL and NaN, so anything else is corruption. */
static kf_err_t
kf_risk_db_num(const char *s, const char *what, double *out, char *errstr, size_t errstr_size)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || !*s || *end || errno || !isfinite(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: bad %s value '%.40s'", what,
                          s ? s : "NULL");
    *out = v;
    return KF_OK;
}

static const char *
kf_risk_db_str(const kf_pg_result_t *res, int row, int col)
{
    const char *v = kf_pg_result_value(res, row, col);
    return v ? v : "";
}

kf_err_t
kf_risk_db_load(kf_pg_t *pg,
                const char *portfolio_id,
                int32_t as_of,
                int window,
                kf_risk_input_t **out_in,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(pg && out_in);
    *out_in = NULL;
    if (!portfolio_id || !*portfolio_id)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "portfolio id is required");
    if (window <= 0)
        window = 500;
    kf_err_t err = KF_OK;
    for (size_t i = 0; !err && i < sizeof(kf_risk_db_stmts) / sizeof(kf_risk_db_stmts[0]); i++)
        err = kf_pg_register(pg, kf_risk_db_stmts[i].name, kf_risk_db_stmts[i].sql,
                             kf_risk_db_stmts[i].nparams, KF_PG_IDEMPOTENT, errstr, errstr_size);
    if (err)
        return err;

    char asof[11], lookback[16];
    kf_risk_date_format(as_of, asof);
    /* window business days need about window * 7/5 calendar days; 30 more cover holidays. */
    snprintf(lookback, sizeof(lookback), "%d", window * 7 / 5 + 30);
    kf_risk_input_t *in = NULL;
    kf_pg_result_t *res = NULL;
    char *ccy_array = NULL;

    const char *p1[] = {portfolio_id};
    if ((err = kf_pg_exec_prepared(pg, "kf_risk_portfolio", p1, 1, &res, errstr, errstr_size)))
        goto out;
    if (kf_pg_result_ntuples(res) != 1) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "portfolio %.64s not found",
                         portfolio_id);
        goto out;
    }
    if ((err =
             kf_risk_input_new(portfolio_id, kf_risk_db_str(res, 0, 0), &in, errstr, errstr_size)))
        goto out;
    kf_pg_result_destroy(res);
    res = NULL;

    if ((err = kf_pg_exec_prepared(pg, "kf_risk_positions", p1, 1, &res, errstr, errstr_size)))
        goto out;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        kf_risk_position_t pos = {.symbol = kf_risk_db_str(res, r, 0),
                                  .asset_class = kf_risk_db_str(res, r, 3),
                                  .sector = kf_risk_db_str(res, r, 4),
                                  .currency = kf_risk_db_str(res, r, 5)};
        if ((err = kf_risk_db_num(kf_pg_result_value(res, r, 1), "quantity", &pos.quantity, errstr,
                                  errstr_size)) ||
            (err = kf_risk_db_num(kf_pg_result_value(res, r, 2), "cost_basis", &pos.cost_basis,
                                  errstr, errstr_size)) ||
            (err = kf_risk_input_add_position(in, &pos, errstr, errstr_size)))
            goto out;
    }
    kf_pg_result_destroy(res);
    res = NULL;

    const char *p3[] = {portfolio_id, asof, lookback};
    if ((err = kf_pg_exec_prepared(pg, "kf_risk_prices", p3, 3, &res, errstr, errstr_size)))
        goto out;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        int32_t d;
        double v = 0.0;
        if ((err = kf_risk_date_parse(kf_pg_result_value(res, r, 1), &d, errstr, errstr_size)) ||
            (err =
                 kf_risk_db_num(kf_pg_result_value(res, r, 2), "close", &v, errstr, errstr_size)) ||
            (err =
                 kf_risk_input_add_price(in, kf_risk_db_str(res, r, 0), d, v, errstr, errstr_size)))
            goto out;
    }
    kf_pg_result_destroy(res);
    res = NULL;

    /* Needed currencies as a text[] literal: codes are 3 letters, validated on add. */
    const char *const *ccys = kf_risk_input_currencies(in);
    size_t nccy = 0;
    while (ccys[nccy])
        nccy++;
    if (!(ccy_array = malloc(nccy * 4 + 3))) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto out;
    }
    char *w = ccy_array;
    *w++ = '{';
    for (size_t i = 0; i < nccy; i++)
        w += sprintf(w, "%s%.3s", i ? "," : "", ccys[i]);
    *w++ = '}';
    *w = '\0';
    const char *pf[] = {ccy_array, asof, lookback};
    if ((err = kf_pg_exec_prepared(pg, "kf_risk_fx", pf, 3, &res, errstr, errstr_size)))
        goto out;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        int32_t d;
        double v = 0.0;
        if ((err = kf_risk_date_parse(kf_pg_result_value(res, r, 1), &d, errstr, errstr_size)) ||
            (err = kf_risk_db_num(kf_pg_result_value(res, r, 2), "usd_per_unit", &v, errstr,
                                  errstr_size)) ||
            (err = kf_risk_input_add_fx(in, kf_risk_db_str(res, r, 0), d, v, errstr, errstr_size)))
            goto out;
    }
    kf_pg_result_destroy(res);
    res = NULL;

    if ((err = kf_pg_exec_prepared(pg, "kf_risk_limits", p1, 1, &res, errstr, errstr_size)))
        goto out;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        double v = 0.0;
        if ((err = kf_risk_db_num(kf_pg_result_value(res, r, 1), "threshold", &v, errstr,
                                  errstr_size)) ||
            (err = kf_risk_input_add_limit(in, kf_risk_db_str(res, r, 0), v, errstr, errstr_size)))
            goto out;
    }
    kf_pg_result_destroy(res);
    res = NULL;

    if ((err = kf_pg_exec_prepared(pg, "kf_risk_shocks", NULL, 0, &res, errstr, errstr_size)))
        goto out;
    for (int r = 0; r < kf_pg_result_ntuples(res); r++) {
        double v = 0.0;
        if ((err =
                 kf_risk_db_num(kf_pg_result_value(res, r, 3), "shock", &v, errstr, errstr_size)) ||
            (err = kf_risk_input_add_shock(in, kf_risk_db_str(res, r, 0), kf_risk_db_str(res, r, 1),
                                           kf_risk_db_str(res, r, 2), v, errstr, errstr_size)))
            goto out;
    }
    *out_in = in;
    in = NULL;
out:
    kf_pg_result_destroy(res);
    kf_risk_input_destroy(in);
    free(ccy_array);
    return err;
}
