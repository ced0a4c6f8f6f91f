/*
 * Unit tests of kf_risk's analytics on portfolios small enough to work out on paper: 1-3
 * positions, 3-60 returns. Expected values are written from the definitions in
 * docs/risk-metrics.md (k-th largest loss with k = ceil(n (1 - c)), ES the mean of the k largest,
 * sample covariance, EWMA started at the first squared return, Euler components, HHI, drawdown
 * against the running peak, most-specific stress shock), not from the implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "kf_risk.h"

#define D0 20000 /* 2024-10-04, a Friday; the tests use consecutive days from here */

static void
assert_close(double got, double want, double rel)
{
    double err = fabs(got - want) / (fabs(want) > 1e-300 ? fabs(want) : 1);
    if (!(err <= rel))
        fail_msg("got %.17g, want %.17g (rel err %.3g > %.3g)", got, want, err, rel);
}

static kf_risk_input_t *
new_input(const char *base)
{
    kf_risk_input_t *in = NULL;
    char errstr[256];
    assert_int_equal(kf_risk_input_new("T1", base, &in, errstr, sizeof(errstr)), KF_OK);
    return in;
}

static void
add_pos(kf_risk_input_t *in,
        const char *sym,
        double qty,
        const char *cls,
        const char *sector,
        const char *ccy)
{
    char errstr[256];
    kf_risk_position_t p = {.symbol = sym,
                            .quantity = qty,
                            .cost_basis = 1.0,
                            .asset_class = cls,
                            .sector = sector,
                            .currency = ccy};
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, sizeof(errstr)), KF_OK);
}

/* Adds prices p0 * prod(1 + r) for returns r[0..n-1] on days D0 .. D0 + n; returns the last. */
static double
add_path(kf_risk_input_t *in, const char *sym, double p0, const double *r, int n)
{
    char errstr[256];
    double p = p0;
    assert_int_equal(kf_risk_input_add_price(in, sym, D0, p, errstr, sizeof(errstr)), KF_OK);
    for (int t = 0; t < n; t++) {
        p *= 1 + r[t];
        assert_int_equal(kf_risk_input_add_price(in, sym, D0 + 1 + t, p, errstr, sizeof(errstr)),
                         KF_OK);
    }
    return p;
}

static kf_risk_report_t *
compute(kf_risk_input_t *in, int32_t as_of, int window)
{
    kf_risk_opts_t o = KF_RISK_OPTS_INIT;
    o.as_of = as_of;
    o.window = window;
    kf_risk_report_t *rep = NULL;
    char errstr[256] = "";
    kf_err_t err = kf_risk_compute(in, &o, &rep, errstr, sizeof(errstr));
    if (err)
        fail_msg("compute: %s", errstr);
    return rep;
}

static void
test_dates(void **state)
{
    (void)state;
    int32_t d;
    char buf[11], errstr[128];
    assert_int_equal(kf_risk_date_parse("1970-01-01", &d, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(d, 0);
    assert_int_equal(kf_risk_date_parse("2024-10-04", &d, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(d, D0);
    assert_int_equal(kf_risk_date_weekday(d), 4); /* Friday */
    assert_int_equal(kf_risk_date_parse("2024-02-29", &d, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(kf_risk_date_format(d, buf), "2024-02-29");
    assert_string_equal(kf_risk_date_format(d + 1, buf), "2024-03-01");
    assert_int_equal(kf_risk_date_parse("2000-02-29", &d, errstr, sizeof(errstr)), KF_OK);
    static const char *const bad[] = {"2023-02-29", "1900-02-29", "2026-1-30",  "2026-01-30x",
                                      "2026/01/30", "",           "1899-12-31", "2026-13-01",
                                      "2026-04-31", " 2026-01-01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(kf_risk_date_parse(bad[i], &d, errstr, sizeof(errstr)), KF_ERR_PARSE);
        assert_non_null(strstr(errstr, "invalid date"));
    }
}

static void
test_norm_inv(void **state)
{
    (void)state;
    /* Reference quantiles to 16 digits. */
    assert_close(kf_risk_norm_inv(0.99), 2.3263478740408408, 1e-14);
    assert_close(kf_risk_norm_inv(0.95), 1.6448536269514722, 1e-14);
    assert_close(kf_risk_norm_inv(0.975), 1.959963984540054, 1e-14);
    assert_close(kf_risk_norm_inv(0.5) + 1, 1, 1e-15);
    assert_close(kf_risk_norm_inv(0.001), -3.090232306167813, 1e-13);
}

/* One position, ten returns: with n = 10 both levels take the single worst loss (k = 1). */
static void
test_single_position_tail_and_drawdown(void **state)
{
    (void)state;
    static const double r[10] = {0.02, -0.01, -0.03, 0.01, -0.02, 0.04, -0.05, 0.03, 0.0, -0.04};
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "AAA", 10, "equity", "Technology", "USD");
    double pT = add_path(in, "AAA", 100, r, 10);
    char errstr[256];
    /* One position: HHI and top-5 weight are exactly 1; equal to the threshold is no breach. */
    assert_int_equal(kf_risk_input_add_limit(in, "hhi", 1.0, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "top5_weight", 0.99, errstr, 256), KF_OK);
    kf_risk_report_t *rep = compute(in, D0 + 10, 0);
    assert_false(rep->limits[0].breached);
    assert_true(rep->limits[1].breached);
    assert_int_equal(rep->nbreaches, 1);
    double V = 10 * pT;
    assert_int_equal(rep->n_returns, 10);
    assert_int_equal(rep->first_date, D0);
    assert_int_equal(rep->last_date, D0 + 10);
    assert_close(rep->value, V, 1e-15);
    /* Losses are -V r: the worst is 0.05 V. */
    for (int l = 0; l < KF_RISK_NCONF; l++) {
        assert_int_equal(rep->hist[l].k, 1);
        assert_close(rep->hist[l].var_1d, 0.05 * V, 1e-12);
        assert_close(rep->hist[l].es_1d, 0.05 * V, 1e-12);
        assert_close(rep->hist[l].var_10d, 0.05 * V * sqrt(10), 1e-12);
    }
    /* Prices 100, 102 (peak, day 1), ..., 94.7152... (day 10, the lowest after the peak). */
    double p[11] = {100};
    for (int t = 0; t < 10; t++)
        p[t + 1] = p[t] * (1 + r[t]);
    assert_close(rep->max_drawdown, 1 - p[10] / p[1], 1e-12);
    assert_close(rep->max_drawdown_amount, 10 * (p[1] - p[10]), 1e-12);
    assert_int_equal(rep->drawdown_peak, D0 + 1);
    assert_int_equal(rep->drawdown_trough, D0 + 10);
    /* Parametric: sample variance of r (mean 0.005 - ... computed here), zero-mean VaR. */
    double mean = 0, var = 0;
    for (int t = 0; t < 10; t++)
        mean += r[t] / 10;
    for (int t = 0; t < 10; t++)
        var += (r[t] - mean) * (r[t] - mean) / 9;
    assert_close(rep->param_sigma_1d, V * sqrt(var), 1e-10);
    assert_close(rep->param[KF_RISK_C99].var_1d, 2.3263478740408408 * V * sqrt(var), 1e-10);
    /* ES normal: sigma * phi(z) / (1 - c); phi(1.6448536269514722) = 0.10313564037537128. */
    assert_close(rep->param[KF_RISK_C95].es_1d, V * sqrt(var) * 0.10313564037537128 / 0.05, 1e-10);
    /* One position carries all the VaR. */
    assert_close(rep->positions[0].component_var_99, rep->param[KF_RISK_C99].var_1d, 1e-12);
    assert_close(rep->positions[0].component_var_99_pct, 1, 1e-12);
    assert_close(rep->hhi, 1, 1e-15);
    assert_close(rep->top5_weight, 1, 1e-15);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* 60 returns ramping from -3.0% to +2.9%: 95% takes k = 3, 99% k = 1. */
static void
test_quantile_rule(void **state)
{
    (void)state;
    double r[60];
    for (int t = 0; t < 60; t++)
        r[(t * 7) % 60] = (t - 30) / 1000.0; /* shuffled order: the rule must sort */
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "AAA", 1, "equity", "Technology", "USD");
    double V = add_path(in, "AAA", 100, r, 60);
    kf_risk_report_t *rep = compute(in, D0 + 60, 0);
    assert_int_equal(rep->n_returns, 60);
    assert_int_equal(rep->hist[KF_RISK_C95].k, 3);
    assert_close(rep->hist[KF_RISK_C95].var_1d, 0.028 * V, 1e-12);
    assert_close(rep->hist[KF_RISK_C95].es_1d, 0.029 * V, 1e-12);
    assert_int_equal(rep->hist[KF_RISK_C99].k, 1);
    assert_close(rep->hist[KF_RISK_C99].var_1d, 0.030 * V, 1e-12);
    assert_close(rep->hist[KF_RISK_C99].es_1d, 0.030 * V, 1e-12);
    kf_risk_report_destroy(rep);

    /* The window keeps the most recent returns only: the last 20 of the path. */
    rep = compute(in, D0 + 60, 20);
    assert_int_equal(rep->n_returns, 20);
    assert_int_equal(rep->first_date, D0 + 40);
    double worst = 0;
    for (int t = 40; t < 60; t++)
        worst = -r[t] > worst ? -r[t] : worst;
    assert_close(rep->hist[KF_RISK_C95].var_1d, worst * V, 1e-12); /* k = ceil(1.0) = 1 */
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* n = 500 at 99%: 500 * (1 - 0.99) is 5.000000000000004 in binary; k must still be 5. */
static void
test_quantile_k_exact(void **state)
{
    (void)state;
    double r[500];
    for (int t = 0; t < 500; t++)
        r[t] = ((t * 37) % 500 - 250) / 100000.0;
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "AAA", 1, "equity", "Technology", "USD");
    double V = add_path(in, "AAA", 100, r, 500);
    kf_risk_report_t *rep = compute(in, D0 + 500, 500);
    assert_int_equal(rep->hist[KF_RISK_C99].k, 5);
    assert_int_equal(rep->hist[KF_RISK_C95].k, 25);
    /* Losses 0.00250, 0.00249, ...: the 5th largest is 0.00246, ES the mean of 0.00250..0.00246. */
    assert_close(rep->hist[KF_RISK_C99].var_1d, 0.00246 * V, 1e-11);
    assert_close(rep->hist[KF_RISK_C99].es_1d, 0.00248 * V, 1e-11);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* Two assets with known covariance: components follow v_i (S v)_i / sigma * z and add up. */
static void
test_component_var(void **state)
{
    (void)state;
    static const double x[4] = {0.01, -0.01, 0.02, -0.02}, y[4] = {0.01, -0.01, -0.02, 0.02};
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "XXX", 20, "equity", "Energy", "USD");
    add_pos(in, "YYY", 10, "bond", "Government", "USD");
    double v1 = 20 * add_path(in, "XXX", 100, x, 4), v2 = 10 * add_path(in, "YYY", 100, y, 4);
    kf_risk_report_t *rep = compute(in, D0 + 4, 0);
    /* Means are 0; var = (1 + 1 + 4 + 4)e-4 / 3, cov = (1 + 1 - 4 - 4)e-4 / 3. */
    double vx = 1e-3 / 3, cxy = -6e-4 / 3, z = 2.3263478740408408;
    double sigma = sqrt(v1 * v1 * vx + v2 * v2 * vx + 2 * v1 * v2 * cxy);
    assert_close(rep->param_sigma_1d, sigma, 1e-10);
    assert_close(rep->positions[0].component_var_99, z * v1 * (v1 * vx + v2 * cxy) / sigma, 1e-9);
    assert_close(rep->positions[1].component_var_99, z * v2 * (v2 * vx + v1 * cxy) / sigma, 1e-9);
    assert_close(rep->positions[0].component_var_99 + rep->positions[1].component_var_99,
                 rep->param[KF_RISK_C99].var_1d, 1e-12);
    assert_close(rep->positions[0].component_var_99_pct + rep->positions[1].component_var_99_pct, 1,
                 1e-12);
    /* Historical P&L: v1 x_t + v2 y_t = (v1 + v2) 0.01, ... the worst of 4 is day 3 or 4. */
    double worst = fmax(-(v1 * 0.02 - v2 * 0.02), -(-v1 * 0.02 + v2 * 0.02));
    worst = fmax(worst, (v1 + v2) * 0.01);
    assert_close(rep->hist[KF_RISK_C99].var_1d, worst, 1e-10);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* EWMA with lambda 0.94 on returns 2%, -1%, 3%: s = 4e-4, 3.82e-4, 4.1308e-4. */
static void
test_ewma(void **state)
{
    (void)state;
    static const double r[3] = {0.02, -0.01, 0.03};
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "AAA", 5, "equity", "Technology", "USD");
    add_path(in, "AAA", 50, r, 3);
    kf_risk_report_t *rep = compute(in, D0 + 3, 0);
    assert_close(rep->ewma_lambda, 0.94, 0);
    assert_close(rep->ewma_vol_1d, sqrt(4.1308e-4), 1e-12);
    assert_close(rep->positions[0].ewma_vol_1d, sqrt(4.1308e-4), 1e-12);
    assert_close(rep->ewma_vol_annual, sqrt(4.1308e-4 * 252), 1e-12);
    assert_close(rep->ewma_var_99_1d, 2.3263478740408408 * sqrt(4.1308e-4) * rep->value, 1e-12);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* Base EUR; USD and GBP holdings converted at USD-per-unit rates; FX moves make returns. */
static void
test_fx_conversion(void **state)
{
    (void)state;
    char errstr[256];
    kf_risk_input_t *in = new_input("EUR");
    add_pos(in, "USSTK", 3, "equity", "Industrials", "USD");
    add_pos(in, "GBSTK", 4, "equity", "Financials", "GBP");
    /* Prices constant; EUR goes 1.10 -> 1.21 (+10%), GBP stays 1.25. */
    for (int t = 0; t <= 2; t++) {
        assert_int_equal(kf_risk_input_add_price(in, "USSTK", D0 + t, 100, errstr, 256), KF_OK);
        assert_int_equal(kf_risk_input_add_price(in, "GBSTK", D0 + t, 10, errstr, 256), KF_OK);
        assert_int_equal(kf_risk_input_add_fx(in, "GBP", D0 + t, 1.25, errstr, 256), KF_OK);
    }
    assert_int_equal(kf_risk_input_add_fx(in, "EUR", D0, 1.10, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_fx(in, "EUR", D0 + 1, 1.21, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_fx(in, "EUR", D0 + 2, 1.21, errstr, 256), KF_OK);
    /* USD is implicitly 1 and may not be given. */
    assert_int_equal(kf_risk_input_add_fx(in, "USD", D0, 1, errstr, 256), KF_ERR_INVALID_ARG);
    kf_risk_report_t *rep = compute(in, D0 + 2, 0);
    double vus = 3 * 100 / 1.21, vgb = 4 * 10 * 1.25 / 1.21;
    assert_close(rep->positions[0].value, vus, 1e-15);
    assert_close(rep->positions[0].fx, 1 / 1.21, 1e-15);
    assert_close(rep->positions[1].value, vgb, 1e-15);
    assert_close(rep->value, vus + vgb, 1e-15);
    /* Day 1: both holdings lose 1/1.1 of their EUR value: return 1.10/1.21 - 1 = -1/11. */
    assert_close(rep->pnl[0], (vus + vgb) * (1.10 / 1.21 - 1), 1e-12);
    assert_close(rep->pnl[1] + 1, 1, 1e-15);
    assert_string_equal(rep->base_currency, "EUR");
    /* Exposures by currency, largest first. */
    assert_int_equal(rep->ncurrency, 2);
    assert_string_equal(rep->by_currency[0].key, "USD");
    assert_close(rep->by_currency[0].weight, vus / (vus + vgb), 1e-15);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* Calendar = union of dates; a symbol missing a day carries its last close forward. */
static void
test_alignment_and_point_in_time(void **state)
{
    (void)state;
    char errstr[256];
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "AAA", 1, "equity", "Technology", "USD");
    add_pos(in, "BBB", 1, "equity", "Energy", "USD");
    static const double a[5] = {10, 11, 12, 13, 14}, b[3] = {20, 22, 18};
    /* Given out of order on purpose: compute sorts. */
    for (int t = 4; t >= 0; t--)
        assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + t, a[t], errstr, 256), KF_OK);
    for (int t = 0; t < 3; t++)
        assert_int_equal(kf_risk_input_add_price(in, "BBB", D0 + 2 * t, b[t], errstr, 256), KF_OK);
    /* Data after the as-of date must not count. */
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + 5, 1000, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_price(in, "BBB", D0 + 7, 1, errstr, 256), KF_OK);
    kf_risk_report_t *rep = compute(in, D0 + 4, 0);
    assert_int_equal(rep->n_returns, 4);
    assert_int_equal(rep->last_date, D0 + 4);
    assert_close(rep->value, 14 + 18, 1e-15);
    /* Values: 30, 31 (BBB carried at 20), 34, 35 (BBB carried at 22), 32. */
    static const double vals[5] = {30, 31, 34, 35, 32};
    for (int t = 0; t < 5; t++)
        assert_close(rep->values[t], vals[t], 1e-15);
    /* P&L day 2 (t = 1): today's values times returns: 14 * (1/10) + 18 * 0. */
    assert_close(rep->pnl[0], 14 * 0.1, 1e-12);
    assert_close(rep->pnl[1], 14 * (12.0 / 11 - 1) + 18 * 0.1, 1e-12);
    assert_close(rep->max_drawdown, 1 - 32.0 / 35, 1e-15);
    assert_int_equal(rep->drawdown_peak, D0 + 3);
    kf_risk_report_destroy(rep);

    /* An as-of on a weekend-like gap uses the last date before it. */
    rep = compute(in, D0 + 6, 0);
    assert_int_equal(rep->last_date, D0 + 5);
    assert_int_equal(rep->as_of, D0 + 6);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* Weights 0.5 / 0.3 / 0.2: HHI 0.38, top-5 1, largest A; limits and stress by hand. */
static void
test_concentration_limits_stress(void **state)
{
    (void)state;
    char errstr[256];
    kf_risk_input_t *in = new_input("USD");
    add_pos(in, "A", 50, "equity", "Technology", "USD");
    add_pos(in, "B", 30, "equity", "Energy", "USD");
    add_pos(in, "C", 2, "bond", "Government", "EUR");
    static const double ra[2] = {0.01, -0.02}, rb[2] = {-0.01, 0.03}, rc[2] = {0.0, 0.001};
    assert_close(add_path(in, "A", 1 / (1.01 * 0.98), ra, 2), 1, 1e-15);
    assert_close(add_path(in, "B", 1 / (0.99 * 1.03), rb, 2), 1, 1e-15);
    add_path(in, "C", 10 / 1.001, rc, 2); /* 2 x 10 EUR at 1 USD per EUR = 20 USD */
    for (int t = 0; t <= 2; t++)
        assert_int_equal(kf_risk_input_add_fx(in, "EUR", D0 + t, 1.0, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "max_weight_single", 0.4, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "hhi", 0.5, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "max_sector_weight", 0.55, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "max_currency_weight", 0.79, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_limit(in, "hhi", 0.6, errstr, 256), KF_ERR_EXISTS);
    assert_int_equal(kf_risk_input_add_limit(in, "var_98_1d", 0.1, errstr, 256),
                     KF_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "var_98_1d"));
    /* Scenario 1: sector beats asset class, EUR -10%, bonds +5%.
     * A: -30% (Technology), B: -20% (equity), C: 20 * (1.05 * 0.9 - 1) = -1.1. */
    assert_int_equal(kf_risk_input_add_shock(in, "s1", "asset_class", "equity", -0.2, errstr, 256),
                     KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s1", "sector", "Technology", -0.3, errstr, 256),
                     KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s1", "currency", "EUR", -0.1, errstr, 256),
                     KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s1", "asset_class", "bond", 0.05, errstr, 256),
                     KF_OK);
    /* Scenario 2: symbol beats sector; USD rising 25% against every currency: it cancels for
     * USD holdings in a USD book (A, B keep only their price shocks), EUR ones lose 1 - 1/1.25. */
    assert_int_equal(kf_risk_input_add_shock(in, "s2", "symbol", "A", -0.5, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s2", "sector", "Technology", 0.5, errstr, 256),
                     KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s2", "currency", "USD", 0.25, errstr, 256),
                     KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s2", "region", "EU", 0.1, errstr, 256),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_risk_input_add_shock(in, "s2", "symbol", "B", -1.0, errstr, 256),
                     KF_ERR_INVALID_ARG);

    kf_risk_report_t *rep = compute(in, D0 + 2, 0);
    assert_close(rep->value, 100, 1e-14);
    assert_close(rep->hhi, 0.38, 1e-14);
    assert_close(rep->top5_weight, 1, 1e-14);
    assert_close(rep->max_weight, 0.5, 1e-14);
    assert_string_equal(rep->max_weight_symbol, "A");
    assert_int_equal(rep->nlimits, 4);
    assert_string_equal(rep->limits[0].metric, "max_weight_single");
    assert_true(rep->limits[0].breached);
    assert_false(rep->limits[1].breached); /* hhi 0.38 <= 0.5 */
    assert_close(rep->limits[2].observed, 0.5, 1e-14);
    assert_false(rep->limits[2].breached);
    assert_close(rep->limits[3].observed, 0.8, 1e-14);
    assert_true(rep->limits[3].breached);
    assert_int_equal(rep->nbreaches, 2);
    assert_int_equal(rep->nasset_class, 2);
    assert_string_equal(rep->by_asset_class[0].key, "equity");
    assert_close(rep->by_asset_class[0].weight, 0.8, 1e-14);
    assert_string_equal(rep->by_sector[0].key, "Technology");
    assert_string_equal(rep->by_sector[2].key, "Government");

    assert_int_equal(rep->nstress, 2);
    assert_string_equal(rep->stress[0].scenario, "s1");
    assert_close(rep->stress[0].pnl, -15 - 6 - 1.1, 1e-12);
    assert_close(rep->stress[0].pnl_pct, -0.221, 1e-12);
    assert_close(rep->stress[1].pnl, 50 * -0.5 + 30 * 0 + 20 * (1 / 1.25 - 1), 1e-12);
    /* The JSON form carries the same numbers. */
    json_t *doc = kf_risk_report_to_json(rep, 1);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "as_of")), "2024-10-06");
    assert_int_equal(json_integer_value(json_object_get(doc, "n_breaches")), 2);
    assert_true(json_real_value(json_object_get(json_object_get(doc, "concentration"), "hhi")) ==
                rep->hhi);
    assert_int_equal(json_array_size(json_object_get(doc, "values")), 3);
    json_decref(doc);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

static void
test_errors(void **state)
{
    (void)state;
    char errstr[256];
    kf_risk_opts_t o = KF_RISK_OPTS_INIT;
    kf_risk_report_t *rep = NULL;
    kf_risk_input_t *in = NULL;
    assert_int_equal(kf_risk_input_new("X", "EURO", &in, errstr, 256), KF_ERR_INVALID_ARG);
    assert_null(in);

    in = new_input("USD");
    o.as_of = D0 + 10;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "no positions"));
    add_pos(in, "AAA", 1, "equity", "Technology", "USD");
    kf_risk_position_t p = {
        .symbol = "AAA", .quantity = 1, .asset_class = "equity", .currency = "USD"};
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_EXISTS);
    p.symbol = "ZZZ";
    p.quantity = 0;
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_INVALID_ARG);
    p.quantity = NAN;
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_INVALID_ARG);
    /* Regression (fuzz_risk_csv): names go into JSON, so invalid UTF-8 is refused up front. */
    p.quantity = 1;
    p.sector = "Gov\x90t";
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "valid UTF-8"));
    p.sector = "\xed\xa0\x80"; /* a UTF-16 surrogate encoded in UTF-8 */
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_INVALID_ARG);
    p.sector = "R\xc3\xa9gion \xe2\x82\xac"; /* "Région €" is fine */
    p.currency = "usd";
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_ERR_INVALID_ARG);
    p.currency = "USD";
    assert_int_equal(kf_risk_input_add_position(in, &p, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_shock(in, "s\xff", "symbol", "AAA", 0.1, errstr, 256),
                     KF_ERR_INVALID_ARG);

    /* Prices: bad values, a repeat right after, a repeat out of order (found by compute). */
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0, -1, errstr, 256), KF_ERR_INVALID_ARG);
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0, INFINITY, errstr, 256),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_risk_input_add_price(in, "AAA", 999999, 1, errstr, 256),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_risk_input_add_price(in, "NOTHELD", D0, 1, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + 1, 10, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + 1, 10, errstr, 256), KF_ERR_EXISTS);
    /* One return only: fewer than the minimum of 2. */
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0, 10, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_NOT_FOUND);
    assert_non_null(strstr(errstr, "only 1 daily returns"));
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + 2, 10, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_input_add_price(in, "AAA", D0, 11, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_EXISTS);
    assert_non_null(strstr(errstr, "AAA on 2024-10-04"));
    assert_null(rep);
    kf_risk_input_destroy(in);

    /* Missing data at the window start names the symbol; a missing FX series the currency. */
    in = new_input("USD");
    add_pos(in, "AAA", 1, "equity", "Technology", "USD");
    add_pos(in, "LATE", 1, "equity", "Technology", "JPY");
    for (int t = 0; t < 5; t++)
        assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + t, 10, errstr, 256), KF_OK);
    for (int t = 2; t < 5; t++)
        assert_int_equal(kf_risk_input_add_price(in, "LATE", D0 + t, 10, errstr, 256), KF_OK);
    o.as_of = D0 + 4;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_NOT_FOUND);
    assert_non_null(strstr(errstr, "no FX rate for JPY"));
    for (int t = 0; t < 5; t++)
        assert_int_equal(kf_risk_input_add_fx(in, "JPY", D0 + t, 0.007, errstr, 256), KF_OK);
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_NOT_FOUND);
    assert_non_null(strstr(errstr, "no price for LATE on or before 2024-10-04"));
    /* A window that starts after LATE's first price works. */
    o.window = 2;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_OK);
    assert_int_equal(rep->n_returns, 2);
    kf_risk_report_destroy(rep);
    o.window = 1;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_INVALID_ARG);
    kf_risk_input_destroy(in);

    /* A net short book has no positive value: weights are undefined. */
    in = new_input("USD");
    add_pos(in, "AAA", -1, "equity", "Technology", "USD");
    for (int t = 0; t < 5; t++)
        assert_int_equal(kf_risk_input_add_price(in, "AAA", D0 + t, 10, errstr, 256), KF_OK);
    o.window = 0;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, 256), KF_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "not positive"));
    kf_risk_input_destroy(in);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_norm_inv),
        cmocka_unit_test(test_single_position_tail_and_drawdown),
        cmocka_unit_test(test_quantile_rule),
        cmocka_unit_test(test_quantile_k_exact),
        cmocka_unit_test(test_component_var),
        cmocka_unit_test(test_ewma),
        cmocka_unit_test(test_fx_conversion),
        cmocka_unit_test(test_alignment_and_point_in_time),
        cmocka_unit_test(test_concentration_limits_stress),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
