/*
 * cmd_risk.c: `kinfer risk`, the risk metrics of one portfolio as of a date, from PostgreSQL
 * (--dsn) or from the CSV files of `kinfer sample-data --csv` (--csv). Prints a short summary,
 * or with --json the whole report (the document the report generator hands to the model and
 * tests/reference/risk_ref.py checks against numpy).
 */
#include "kf_risk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
kf_risk_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer risk (--dsn DSN | --csv DIR) --portfolio ID [options]\n\n"
            "Computes a portfolio's risk metrics as of a date: value, historical and parametric\n"
            "VaR/ES (95%%, 99%%; 1 and 10 days), EWMA volatility, component VaR, exposures,\n"
            "concentration, limit breaches, stress P&L and maximum drawdown.\n"
            "Definitions: docs/risk-metrics.md.\n\n"
            "Options:\n"
            "  --dsn DSN        libpq connection string (default: $KINFER_PG_DSN)\n"
            "  --csv DIR        read DIR/*.csv written by `kinfer sample-data --csv`\n"
            "  --portfolio ID   portfolio id, e.g. P001 (required)\n"
            "  --as-of DATE     YYYY-MM-DD; only data dated on or before it is used\n"
            "                   (default: today, UTC)\n"
            "  --window N       daily returns used, 2..100000 (default 500)\n"
            "  --lambda L       EWMA decay, 0 < L < 1 (default 0.94)\n"
            "  --json           print the full report as JSON\n"
            "  --series         with --json: add the P&L, value and date series\n");
    return fp == stdout ? 0 : 2;
}

static void
kf_risk_summary(const kf_risk_report_t *r)
{
    char d0[11], d1[11];
    const char *c = r->base_currency;
    printf("portfolio %s as of %s (data %s..%s, %d returns)\n", r->portfolio_id,
           kf_risk_date_format(r->as_of, d0), kf_risk_date_format(r->first_date, d1),
           kf_risk_date_format(r->last_date, d0), r->n_returns);
    printf("  value            %16.2f %s (unrealized P&L %.2f)\n", r->value, c, r->unrealized_pnl);
    for (int l = 0; l < KF_RISK_NCONF; l++)
        printf("  VaR %2.0f%% 1d      %16.2f %s hist, %.2f param; ES %.2f hist\n",
               kf_risk_confidence[l] * 100, r->hist[l].var_1d, c, r->param[l].var_1d,
               r->hist[l].es_1d);
    printf("  EWMA vol 1d      %15.4f%% (annual %.2f%%)\n", r->ewma_vol_1d * 100,
           r->ewma_vol_annual * 100);
    printf("  max drawdown     %15.4f%%\n", r->max_drawdown * 100);
    printf("  HHI %.4f, top-5 weight %.4f, largest %s %.4f\n", r->hhi, r->top5_weight,
           r->max_weight_symbol, r->max_weight);
    for (size_t i = 0; i < r->nlimits; i++)
        if (r->limits[i].breached)
            printf("  BREACH %-22s observed %.6f > %.6f\n", r->limits[i].metric,
                   r->limits[i].observed, r->limits[i].threshold);
    for (size_t i = 0; i < r->nstress; i++)
        printf("  stress %-22s %16.2f %s (%.2f%%)\n", r->stress[i].scenario, r->stress[i].pnl, c,
               r->stress[i].pnl_pct * 100);
}

int
kf_cmd_risk(int argc, char **argv)
{
    const char *dsn = NULL, *csv = NULL, *portfolio = NULL;
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    int json = 0, series = 0, have_asof = 0;
    char errstr[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return kf_risk_usage(stdout);
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--series")) {
            series = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kinfer risk: unknown option or missing value: %s\n", a);
            return kf_risk_usage(stderr);
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (!strcmp(a, "--dsn")) {
            dsn = v;
        } else if (!strcmp(a, "--csv")) {
            csv = v;
        } else if (!strcmp(a, "--portfolio")) {
            portfolio = v;
        } else if (!strcmp(a, "--as-of")) {
            if (kf_risk_date_parse(v, &opts.as_of, errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer risk: --as-of: %s\n", errstr);
                return 2;
            }
            have_asof = 1;
        } else if (!strcmp(a, "--window")) {
            long n = strtol(v, &end, 10);
            if (!*v || *end || errno || n < 2 || n > 100000) {
                fprintf(stderr, "kinfer risk: --window must be an integer in 2..100000\n");
                return 2;
            }
            opts.window = (int)n;
        } else if (!strcmp(a, "--lambda")) {
            double l = strtod(v, &end);
            if (!*v || *end || errno || !(l > 0 && l < 1)) {
                fprintf(stderr, "kinfer risk: --lambda must be a number in (0, 1)\n");
                return 2;
            }
            opts.ewma_lambda = l;
        } else {
            fprintf(stderr, "kinfer risk: unknown option %s\n", a);
            return kf_risk_usage(stderr);
        }
    }
    if (!portfolio) {
        fprintf(stderr, "kinfer risk: --portfolio is required\n");
        return 2;
    }
    if (!csv && !dsn)
        dsn = getenv("KINFER_PG_DSN");
    if ((!csv && !dsn) || (csv && dsn)) {
        fprintf(stderr, "kinfer risk: give exactly one of --dsn DSN or --csv DIR "
                        "(KINFER_PG_DSN is not set)\n");
        return 2;
    }
    if (!have_asof)
        opts.as_of = (int32_t)(time(NULL) / 86400);

    kf_risk_input_t *in = NULL;
    kf_risk_report_t *rep = NULL;
    kf_err_t err;
    if (csv) {
        err = kf_risk_csv_load(csv, portfolio, opts.as_of, &in, errstr, sizeof(errstr));
    } else {
        kf_pg_opts_t po = {.dsn = dsn, .statement_timeout_ms = 60000, .retry_deadline_ms = 10000};
        kf_pg_t *pg = NULL;
        err = kf_pg_new(&po, &pg, errstr, sizeof(errstr));
        if (!err)
            err = kf_risk_db_load(pg, portfolio, opts.as_of, opts.window, &in, errstr,
                                  sizeof(errstr));
        kf_pg_destroy(pg);
    }
    if (!err)
        err = kf_risk_compute(in, &opts, &rep, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "kinfer risk: %s\n", errstr);
        kf_risk_input_destroy(in);
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *doc = kf_risk_report_to_json(rep, series);
        if (!doc || json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) ||
            fputc('\n', stdout) == EOF) {
            fprintf(stderr, "kinfer risk: could not write the JSON report\n");
            rc = 1;
        }
        json_decref(doc);
    } else {
        kf_risk_summary(rep);
    }
    kf_risk_report_destroy(rep);
    kf_risk_input_destroy(in);
    return rc;
}
