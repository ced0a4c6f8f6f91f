/*
 * Unit tests of the risk CSV loader (risk/risk_csv.c): RFC 4180 quoting, CRLF, columns found by
 * header name, point-in-time filtering, and errors that name file, line and field for every
 * kind of malformed input; plus the sample generator's determinism and shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "kf_buf.h"
#include "kf_risk.h"

/* A valid set of tables for portfolio P1 (base EUR, one USD stock, one EUR bond). */
static const char *const good[KF_RISK_CSV__COUNT] = {
    "portfolio_id,name,base_currency\r\nP0,\"Other, Inc\",USD\r\nP1,\"Mine \"\"A\"\"\",EUR\r\n",
    "symbol,name,asset_class,sector,currency,country\n"
    "AAA,\"A, the company\",equity,Technology,USD,US\nBND,Bund,bond,Government,EUR,DE\n"
    "ZZZ,Unheld,equity,Energy,USD,US\n",
    "cost_basis,quantity,symbol,portfolio_id\n90,10,AAA,P1\n101.5,5,BND,P1\n1,1,ZZZ,P0\n",
    "symbol,price_date,close\nAAA,2024-10-01,100\nAAA,2024-10-02,101\nAAA,2024-10-03,99\n"
    "AAA,2024-10-04,5000\nBND,2024-10-01,100\nBND,2024-10-02,100.5\nBND,2024-10-03,100.25\n"
    "ZZZ,2024-10-01,7\n\n",
    "currency,rate_date,usd_per_unit\nEUR,2024-10-01,1.1\nEUR,2024-10-02,1.11\n"
    "EUR,2024-10-03,1.1\nGBP,2024-10-01,1.3\n",
    "portfolio_id,metric,threshold\nP1,hhi,0.5\nP0,hhi,0.1\n",
    "scenario_id,dimension,key,shock\ncrash,asset_class,equity,-0.3\n"
    "crash,currency,EUR,0.05\n",
};

static kf_err_t
load(const char *const *tables, int32_t as_of, kf_risk_input_t **out, char *errstr, size_t size)
{
    kf_risk_csv_state_t *st;
    kf_err_t err = kf_risk_csv_state_new("P1", as_of, &st, errstr, size);
    assert_int_equal(err, KF_OK);
    static const char *const names[] = {"portfolios.csv",    "instruments.csv", "positions.csv",
                                        "price_history.csv", "fx_rates.csv",    "risk_limits.csv",
                                        "stress_shocks.csv"};
    for (int t = 0; t < KF_RISK_CSV__COUNT && !err; t++)
        err = kf_risk_csv_parse(st, (kf_risk_csv_table_t)t, names[t], tables[t], strlen(tables[t]),
                                errstr, size);
    if (!err)
        err = kf_risk_csv_finish(st, out, errstr, size);
    kf_risk_csv_state_destroy(st);
    return err;
}

static void
test_csv_good(void **state)
{
    (void)state;
    char errstr[256] = "";
    int32_t asof;
    kf_risk_input_t *in = NULL;
    assert_int_equal(kf_risk_date_parse("2024-10-03", &asof, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(load(good, asof, &in, errstr, sizeof(errstr)), KF_OK);
    assert_string_equal(kf_risk_input_base_currency(in), "EUR");
    assert_int_equal(kf_risk_input_npositions(in), 2);
    kf_risk_opts_t o = KF_RISK_OPTS_INIT;
    o.as_of = asof;
    kf_risk_report_t *rep;
    assert_int_equal(kf_risk_compute(in, &o, &rep, errstr, sizeof(errstr)), KF_OK);
    /* The 2024-10-04 price of 5000 is after the as-of date and must not count. */
    assert_int_equal(rep->n_returns, 2);
    assert_true(fabs(rep->value - (10 * 99 / 1.1 + 5 * 100.25)) < 1e-9);
    assert_int_equal(rep->nlimits, 1);
    assert_string_equal(rep->positions[0].sector, "Technology");
    assert_int_equal(rep->nstress, 1);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
}

/* Replaces table t of the good set with text and expects err and a message fragment. */
static void
expect_bad(int t, const char *text, kf_err_t want, const char *fragment)
{
    const char *tables[KF_RISK_CSV__COUNT];
    memcpy(tables, good, sizeof(tables));
    tables[t] = text;
    char errstr[512] = "";
    kf_risk_input_t *in = NULL;
    kf_err_t err = load(tables, 20000, &in, errstr, sizeof(errstr));
    if (err != want || !strstr(errstr, fragment))
        fail_msg("table %d: got %s '%s', want %s with '%s'", t, kf_err_str(err), errstr,
                 kf_err_str(want), fragment);
    assert_null(in);
}

static void
test_csv_errors(void **state)
{
    (void)state;
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "", KF_ERR_PARSE, "portfolios.csv: empty");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base\nP1,EUR\n", KF_ERR_PARSE,
               "header lacks column 'base_currency'");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP2,EUR\n", KF_ERR_NOT_FOUND,
               "portfolio P1 not found");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP1,EURO\n", KF_ERR_PARSE,
               "portfolios.csv line 2: base currency");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP1,\"EUR\n", KF_ERR_PARSE,
               "unterminated quoted field");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP1,E\"UR\n", KF_ERR_PARSE,
               "line 2: stray '\"'");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP1,\"EUR\"x\n", KF_ERR_PARSE,
               "stray 'x'");
    expect_bad(KF_RISK_CSV_PORTFOLIOS, "portfolio_id,base_currency\nP1\n", KF_ERR_PARSE,
               "line 2: 1 fields, the header has 2");
    expect_bad(KF_RISK_CSV_INSTRUMENTS,
               "symbol,asset_class,sector,currency\nA,equity,x,USD\nA,equity,x,USD\n", KF_ERR_PARSE,
               "instruments.csv line 3: symbol A repeated");
    expect_bad(KF_RISK_CSV_POSITIONS, "portfolio_id,symbol,quantity,cost_basis\nP1,NOPE,1,1\n",
               KF_ERR_PARSE, "symbol NOPE is not in instruments.csv");
    expect_bad(KF_RISK_CSV_POSITIONS, "portfolio_id,symbol,quantity,cost_basis\nP1,AAA,1e999,1\n",
               KF_ERR_PARSE, "positions.csv line 2: field 'quantity' is not a finite number");
    expect_bad(KF_RISK_CSV_POSITIONS, "portfolio_id,symbol,quantity,cost_basis\nP1,AAA,0,1\n",
               KF_ERR_PARSE, "quantity must be finite and non-zero");
    expect_bad(KF_RISK_CSV_PRICES, "symbol,price_date,close\nAAA,2024-13-01,1\n", KF_ERR_PARSE,
               "price_history.csv line 2: field 'price_date' is not a date");
    expect_bad(KF_RISK_CSV_PRICES, "symbol,price_date,close\nAAA,2024-10-01,abc\n", KF_ERR_PARSE,
               "field 'close' is not a finite number: 'abc'");
    expect_bad(KF_RISK_CSV_PRICES, "symbol,price_date,close\nAAA,2024-10-01,-5\n", KF_ERR_PARSE,
               "line 2: price of AAA: close must be finite and positive");
    expect_bad(KF_RISK_CSV_PRICES, "symbol,price_date,close\nAAA,2024-10-01,1\nAAA,2024-10-01,2\n",
               KF_ERR_PARSE, "line 3: price of AAA on 2024-10-01 given twice");
    expect_bad(KF_RISK_CSV_FX, "currency,rate_date,usd_per_unit\nUSD,2024-10-01,1\n", KF_ERR_PARSE,
               "fx_rates.csv line 2: FX currency 'USD'");
    expect_bad(KF_RISK_CSV_LIMITS, "portfolio_id,metric,threshold\nP1,var_50_1d,1\n", KF_ERR_PARSE,
               "unknown limit metric 'var_50_1d'");
    expect_bad(KF_RISK_CSV_SHOCKS, "scenario_id,dimension,key,shock\ns,planet,Mars,0.1\n",
               KF_ERR_PARSE, "unknown shock dimension 'planet'");
    /* A NUL byte inside a record. */
    static const char nul[] = "symbol,price_date,close\nAAA,2024-10-01,1\0\n";
    const char *tables[KF_RISK_CSV__COUNT];
    memcpy(tables, good, sizeof(tables));
    kf_risk_csv_state_t *st;
    char errstr[256];
    assert_int_equal(kf_risk_csv_state_new("P1", 20000, &st, errstr, sizeof(errstr)), KF_OK);
    for (int t = 0; t < KF_RISK_CSV_PRICES; t++)
        assert_int_equal(kf_risk_csv_parse(st, (kf_risk_csv_table_t)t, "x.csv", tables[t],
                                           strlen(tables[t]), errstr, sizeof(errstr)),
                         KF_OK);
    assert_int_equal(kf_risk_csv_parse(st, KF_RISK_CSV_PRICES, "p.csv", nul, sizeof(nul) - 1,
                                       errstr, sizeof(errstr)),
                     KF_ERR_PARSE);
    assert_non_null(strstr(errstr, "p.csv line 2: NUL byte"));
    /* Out of order: the prices table failed, so FX may not come next. */
    assert_int_equal(kf_risk_csv_parse(st, KF_RISK_CSV_FX, "fx.csv", tables[KF_RISK_CSV_FX],
                                       strlen(tables[KF_RISK_CSV_FX]), errstr, sizeof(errstr)),
                     KF_ERR_STATE);
    kf_risk_csv_state_destroy(st);
}

static void
test_csv_missing_dir(void **state)
{
    (void)state;
    char errstr[256];
    kf_risk_input_t *in = NULL;
    assert_int_equal(
        kf_risk_csv_load("/nonexistent/kf_risk", "P1", 20000, &in, errstr, sizeof(errstr)),
        KF_ERR_NOT_FOUND);
    assert_non_null(strstr(errstr, "/nonexistent/kf_risk/portfolios.csv"));
}

/* The generator: same seed, same bytes; another seed, other prices; shape as promised. */
static void
test_sample_generate(void **state)
{
    (void)state;
    kf_buf_t a[KF_RISK_SAMPLE_NTABLES], b[KF_RISK_SAMPLE_NTABLES];
    char errstr[256];
    kf_risk_sample_opts_t o = {.seed = 7, .years = 1};
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
        kf_buf_init(&a[t], 0);
        kf_buf_init(&b[t], 0);
    }
    assert_int_equal(kf_risk_sample_generate(&o, a, errstr, sizeof(errstr)), KF_OK);
    assert_int_equal(kf_risk_sample_generate(&o, b, errstr, sizeof(errstr)), KF_OK);
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
        assert_int_equal(a[t].len, b[t].len);
        assert_memory_equal(a[t].data, b[t].data, a[t].len);
    }
    size_t lines[KF_RISK_SAMPLE_NTABLES];
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
        lines[t] = 0;
        for (size_t j = 0; j < a[t].len; j++)
            lines[t] += a[t].data[j] == '\n';
    }
    assert_string_equal(kf_risk_sample_tables[1], "instruments");
    assert_int_equal(lines[1], 60 + 1);                      /* instruments + header */
    assert_int_equal(lines[2], 5 + 1);                       /* portfolios */
    assert_int_equal(lines[4] - 1, 60 * (lines[5] - 1) / 4); /* every symbol every FX day */
    assert_true(lines[4] - 1 >= 60 * 260);                   /* a year of business days */
    for (const char *c = "equity\0bond\0etf\0commodity\0crypto\0fx\0"; *c; c += strlen(c) + 1) {
        char pat[32];
        snprintf(pat, sizeof(pat), ",%s,", c);
        assert_non_null(strstr(a[1].data, pat));
    }
    for (const char *c = "USD\0EUR\0GBP\0JPY\0CHF\0"; *c; c += strlen(c) + 1)
        assert_non_null(strstr(a[1].data, c));
    /* Another seed gives other prices. */
    o.seed = 8;
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++)
        kf_buf_reset(&b[t]);
    assert_int_equal(kf_risk_sample_generate(&o, b, errstr, sizeof(errstr)), KF_OK);
    assert_true(a[4].len != b[4].len || memcmp(a[4].data, b[4].data, a[4].len));
    o.ninstruments = 10;
    assert_int_equal(kf_risk_sample_generate(&o, b, errstr, sizeof(errstr)), KF_ERR_INVALID_ARG);
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
        kf_buf_free(&a[t]);
        kf_buf_free(&b[t]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_good),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_missing_dir),
        cmocka_unit_test(test_sample_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
