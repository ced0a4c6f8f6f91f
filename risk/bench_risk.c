/*
 * bench_risk.c: how long every metric of kf_risk takes for a large portfolio, and how many
 * portfolios a batch gets through per second, on one thread (docs/benchmarks.md records the
 * figures with the machine).
 *
 *   bench_risk [--positions 500] [--years 3] [--runs 21] [--batch 100] [--batch-positions 500]
 *
 * Data is synthetic (geometric random walks with a common factor, five currencies, limits and
 * stress scenarios like the sample set) and built through the public input API, so the timing
 * covers exactly what `kinfer risk` does after loading: alignment, returns, every metric.
 */
#include "kf_risk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t kf_bench_state = 0x9e3779b97f4a7c15ull;

static double
kf_bench_unif(void)
{
    /* xorshift64*: plenty for synthetic prices. */
    kf_bench_state ^= kf_bench_state >> 12;
    kf_bench_state ^= kf_bench_state << 25;
    kf_bench_state ^= kf_bench_state >> 27;
    return ((kf_bench_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
}

static double
kf_bench_norm(void)
{
    return sqrt(-2 * log(kf_bench_unif())) * cos(2 * M_PI * kf_bench_unif());
}

static double
kf_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
kf_bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *const kf_bench_ccy[] = {"USD", "EUR", "GBP", "JPY", "CHF"};
static const char *const kf_bench_cls[] = {"equity", "bond", "etf", "commodity", "crypto"};
static const char *const kf_bench_sec[] = {"Technology",  "Financials", "Energy",   "Health Care",
                                           "Industrials", "Utilities",  "Materials"};

/* Builds one portfolio of npos positions with nd business days ending at end. */
static kf_risk_input_t *
kf_bench_input(int id, int npos, int nd, int32_t end, int32_t **out_days)
{
    char errstr[256], pid[16];
    snprintf(pid, sizeof(pid), "B%04d", id);
    kf_risk_input_t *in;
    if (kf_risk_input_new(pid, id % 3 ? "USD" : "EUR", &in, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench_risk: %s\n", errstr);
        exit(1);
    }
    int32_t *days = *out_days;
    if (!days) {
        days = malloc((size_t)nd * sizeof(*days));
        int n = nd;
        for (int32_t d = end; n > 0; d--)
            if (kf_risk_date_weekday(d) < 5)
                days[--n] = d;
        *out_days = days;
    }
    double *mkt = malloc((size_t)nd * sizeof(double));
    for (int t = 0; t < nd; t++)
        mkt[t] = 0.01 * kf_bench_norm();
    kf_err_t err = KF_OK;
    for (int i = 0; i < npos && !err; i++) {
        char sym[16];
        snprintf(sym, sizeof(sym), "S%05d", i);
        kf_risk_position_t pos = {.symbol = sym,
                                  .quantity = 10 + (double)(i % 97) * 13,
                                  .cost_basis = 50,
                                  .asset_class = kf_bench_cls[i % 5],
                                  .sector = kf_bench_sec[i % 7],
                                  .currency = kf_bench_ccy[i % 5]};
        err = kf_risk_input_add_position(in, &pos, errstr, sizeof(errstr));
        double lp = log(20 + 80 * kf_bench_unif()), beta = 0.5 + kf_bench_unif();
        for (int t = 0; t < nd && !err; t++) {
            lp += beta * mkt[t] + 0.012 * kf_bench_norm();
            err = kf_risk_input_add_price(in, sym, days[t], exp(lp), errstr, sizeof(errstr));
        }
    }
    for (int c = 1; c < 5 && !err; c++) {
        double lx = log(c == 3 ? 0.007 : 1.1);
        for (int t = 0; t < nd && !err; t++) {
            lx += 0.004 * kf_bench_norm();
            err =
                kf_risk_input_add_fx(in, kf_bench_ccy[c], days[t], exp(lx), errstr, sizeof(errstr));
        }
    }
    static const char *const lim[] = {"var_99_1d",         "es_99_1d",     "max_weight_single",
                                      "max_sector_weight", "max_drawdown", "hhi"};
    for (int l = 0; l < 6 && !err; l++)
        err = kf_risk_input_add_limit(in, lim[l], 0.05, errstr, sizeof(errstr));
    for (int s = 0; s < 7 && !err; s++) {
        char sc[16];
        snprintf(sc, sizeof(sc), "scen%d", s);
        err =
            kf_risk_input_add_shock(in, sc, "asset_class", "equity", -0.3, errstr, sizeof(errstr));
        if (!err)
            err = kf_risk_input_add_shock(in, sc, "sector", kf_bench_sec[s], -0.1, errstr,
                                          sizeof(errstr));
        if (!err)
            err = kf_risk_input_add_shock(in, sc, "currency", "EUR", -0.05, errstr, sizeof(errstr));
    }
    free(mkt);
    if (err) {
        fprintf(stderr, "bench_risk: %s\n", errstr);
        exit(1);
    }
    return in;
}

static int
kf_bench_arg(int argc, char **argv, const char *name, int def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return atoi(argv[i + 1]);
    return def;
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help")) {
            printf("Usage: bench_risk [--positions 500] [--years 3] [--runs 21] [--batch 100] "
                   "[--batch-positions 500]\n");
            return 0;
        }
    int npos = kf_bench_arg(argc, argv, "--positions", 500);
    int years = kf_bench_arg(argc, argv, "--years", 3);
    int runs = kf_bench_arg(argc, argv, "--runs", 21);
    int nbatch = kf_bench_arg(argc, argv, "--batch", 100);
    int bpos = kf_bench_arg(argc, argv, "--batch-positions", 500);
    if (npos < 1 || years < 1 || runs < 1 || nbatch < 1 || bpos < 1) {
        fprintf(stderr, "bench_risk: arguments must be positive\n");
        return 2;
    }
    int nd = years * 261;
    int32_t end = 0, *days = NULL;
    char errstr[256];
    if (kf_risk_date_parse("2026-10-30", &end, errstr, sizeof(errstr)))
        return 1;
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    opts.as_of = end;
    opts.window = nd - 1; /* all of the history */

    /* 1. One large portfolio, median of `runs` computations. */
    double t0 = kf_bench_now();
    kf_risk_input_t *in = kf_bench_input(0, npos, nd, end, &days);
    double build_ms = (kf_bench_now() - t0) * 1e3;
    double *ms = malloc((size_t)runs * sizeof(double));
    double checksum = 0;
    for (int r = 0; r < runs; r++) {
        kf_risk_report_t *rep;
        double a = kf_bench_now();
        if (kf_risk_compute(in, &opts, &rep, errstr, sizeof(errstr))) {
            fprintf(stderr, "bench_risk: %s\n", errstr);
            return 1;
        }
        ms[r] = (kf_bench_now() - a) * 1e3;
        checksum += rep->hist[KF_RISK_C99].var_1d;
        kf_risk_report_destroy(rep);
    }
    qsort(ms, (size_t)runs, sizeof(double), kf_bench_cmp);
    /* JSON rendering is part of what `kinfer risk --json` pays. */
    kf_risk_report_t *rep;
    kf_risk_compute(in, &opts, &rep, errstr, sizeof(errstr));
    double a = kf_bench_now();
    json_t *doc = kf_risk_report_to_json(rep, 0);
    char *text = json_dumps(doc, JSON_REAL_PRECISION(17));
    double json_ms = (kf_bench_now() - a) * 1e3;
    printf("single portfolio: %d positions, %d returns\n", npos, rep->n_returns);
    printf("  compute all metrics: median %.3f ms, min %.3f ms, max %.3f ms over %d runs\n",
           ms[runs / 2], ms[0], ms[runs - 1], runs);
    printf("  input build (add_position/add_price/add_fx): %.3f ms; JSON render: %.3f ms "
           "(%zu bytes)\n",
           build_ms, json_ms, text ? strlen(text) : 0);
    free(text);
    json_decref(doc);
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);

    /* 2. A batch of portfolios computed one after the other on this thread. */
    kf_risk_input_t **batch = malloc((size_t)nbatch * sizeof(*batch));
    for (int b = 0; b < nbatch; b++)
        batch[b] = kf_bench_input(b + 1, bpos, nd, end, &days);
    a = kf_bench_now();
    for (int b = 0; b < nbatch; b++) {
        if (kf_risk_compute(batch[b], &opts, &rep, errstr, sizeof(errstr))) {
            fprintf(stderr, "bench_risk: %s\n", errstr);
            return 1;
        }
        checksum += rep->hist[KF_RISK_C99].var_1d;
        kf_risk_report_destroy(rep);
    }
    double batch_s = kf_bench_now() - a;
    printf("batch: %d portfolios x %d positions: %.1f ms total, %.1f portfolios/s "
           "(%.0f position-days/s)\n",
           nbatch, bpos, batch_s * 1e3, nbatch / batch_s, (double)nbatch * bpos * nd / batch_s);
    printf("(checksum %.6g)\n", checksum);
    for (int b = 0; b < nbatch; b++)
        kf_risk_input_destroy(batch[b]);
    free(batch);
    free(ms);
    free(days);
    return 0;
}
