/*
 * kf_risk: market risk analytics for one portfolio, computed exactly in C.
 *
 * The numbers of a risk report (value, VaR, ES, volatility, exposures, concentration, limit
 * breaches, stress P&L, drawdown) come from here; the narrative around them comes later from
 * the model. The math is pure: no database, no files. Inputs are collected in a
 * kf_risk_input_t (from the database with kf_risk_db_load, from the CSV files written by
 * `kinfer sample-data --csv` with kf_risk_csv_load, or by hand in tests), then
 *
 *   kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
 *   opts.as_of = date;
 *   kf_risk_report_t *rep;
 *   if (kf_risk_compute(in, &opts, &rep, errstr, sizeof(errstr)) == KF_OK) {
 *       printf("VaR 99%% 1d %.2f %s\n", rep->hist[KF_RISK_C99].var_1d, rep->base_currency);
 *       kf_risk_report_destroy(rep);
 *   }
 *
 * Every definition (loss sign, quantile rule, 10-day scaling, FX conversion, EWMA start,
 * component VaR, HHI, drawdown, stress shocks) is in docs/risk-metrics.md; the short version:
 * losses are positive numbers in the portfolio's base currency; VaR at confidence c over n
 * daily scenarios is the k-th largest loss with k = ceil(n * (1 - c)), ES the mean of the k
 * largest losses; 10-day figures are the 1-day ones times sqrt(10).
 *
 * Dates are days since 1970-01-01 (proleptic Gregorian), as int32_t.
 * Thread-safety: an input or report is used by one thread at a time; distinct objects are
 * independent, so portfolios may be computed in parallel.
 */
#ifndef KF_RISK_H
#define KF_RISK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kf_err.h"
#include "kf_pg.h"

/* ---- dates ---------------------------------------------------------------------------- */

/* Parses exactly "YYYY-MM-DD" (a real calendar day, years 1900..2999) into days since
 * 1970-01-01. KF_ERR_PARSE naming the text otherwise. */
kf_err_t kf_risk_date_parse(const char *text, int32_t *out_days, char *errstr, size_t errstr_size);
/* Writes "YYYY-MM-DD" and a NUL into buf (at least 11 bytes); returns buf. */
char *kf_risk_date_format(int32_t days, char *buf);
/* 0 = Monday .. 6 = Sunday. */
int kf_risk_date_weekday(int32_t days);

/* ---- inputs --------------------------------------------------------------------------- */

typedef struct kf_risk_input kf_risk_input_t;

/* One holding. Strings are copied. asset_class, sector and currency are free text (the
 * database restricts asset_class); currency is an ISO code, "USD" needs no FX series. */
typedef struct kf_risk_position {
    const char *symbol;
    double quantity;   /* units held; negative for a short; non-zero and finite */
    double cost_basis; /* average cost per unit in the instrument's currency */
    const char *asset_class;
    const char *sector; /* NULL or "" groups under "" */
    const char *currency;
} kf_risk_position_t;

/* Limit metrics (names used in the risk_limits table and in the JSON report). Breach means
 * observed > threshold. VaR/ES/volatility/drawdown observations are fractions of the
 * portfolio value; weights are fractions; hhi is the Herfindahl index of weights. */
#define KF_RISK_LIMIT_METRICS                                                                  \
    "var_95_1d, var_99_1d, var_95_10d, var_99_10d, es_95_1d, es_99_1d, es_95_10d, es_99_10d, " \
    "param_var_99_1d, param_var_99_10d, ewma_vol_1d, max_drawdown, max_weight_single, "        \
    "max_sector_weight, max_asset_class_weight, max_currency_weight, top5_weight, hhi"

/* New empty input for a portfolio (id may be NULL: "") valued in base_currency. */
kf_err_t kf_risk_input_new(const char *portfolio_id,
                           const char *base_currency,
                           kf_risk_input_t **out_in,
                           char *errstr,
                           size_t errstr_size);
void kf_risk_input_destroy(kf_risk_input_t *in);

/* Adds a position. KF_ERR_EXISTS for a symbol already held, KF_ERR_INVALID_ARG for an empty
 * symbol/currency/asset class or a zero or non-finite quantity. */
kf_err_t kf_risk_input_add_position(kf_risk_input_t *in,
                                    const kf_risk_position_t *pos,
                                    char *errstr,
                                    size_t errstr_size);
/* Adds one daily close (instrument currency) of a symbol. Prices of symbols not held (not yet
 * added as positions) are ignored (KF_OK), so a loader may pass a whole price file. Dates must
 * lie in 1900..2999; close must be finite and > 0. Observations may come in any order; a
 * repeated (symbol, date) is KF_ERR_EXISTS, reported here when it follows the previous date of
 * that symbol, else by kf_risk_compute. */
kf_err_t kf_risk_input_add_price(kf_risk_input_t *in,
                                 const char *symbol,
                                 int32_t date,
                                 double close,
                                 char *errstr,
                                 size_t errstr_size);
/* Adds one FX fixing: USD value of one unit of `currency` on `date` (finite, > 0). USD itself
 * is always 1 and must not be added (KF_ERR_INVALID_ARG). Any currency may be added (unused
 * ones cost memory only); ordering and repeats as for prices. */
kf_err_t kf_risk_input_add_fx(kf_risk_input_t *in,
                              const char *currency,
                              int32_t date,
                              double usd_per_unit,
                              char *errstr,
                              size_t errstr_size);
/* Adds a limit; metric must be one of KF_RISK_LIMIT_METRICS (KF_ERR_INVALID_ARG naming it),
 * threshold finite. A repeated metric is KF_ERR_EXISTS. */
kf_err_t kf_risk_input_add_limit(
    kf_risk_input_t *in, const char *metric, double threshold, char *errstr, size_t errstr_size);
/* Adds one shock of a stress scenario (scenarios are created on first mention, reported in
 * that order). dimension: "asset_class", "sector", "currency" or "symbol"; shock is a relative
 * change (-0.3 = minus 30%), finite and > -1. For prices the most specific shock applies
 * (symbol, else sector, else asset class); currency shocks change the currency's USD value. */
kf_err_t kf_risk_input_add_shock(kf_risk_input_t *in,
                                 const char *scenario,
                                 const char *dimension,
                                 const char *key,
                                 double shock,
                                 char *errstr,
                                 size_t errstr_size);

/* Read-only views, for loaders and tests. */
const char *kf_risk_input_portfolio(const kf_risk_input_t *in);
const char *kf_risk_input_base_currency(const kf_risk_input_t *in);
size_t kf_risk_input_npositions(const kf_risk_input_t *in);
/* NULL-terminated list of the currencies that need an FX series (held + base, minus USD);
 * borrowed, valid until the next add_position. */
const char *const *kf_risk_input_currencies(const kf_risk_input_t *in);

/* ---- computation ---------------------------------------------------------------------- */

typedef struct kf_risk_opts {
    int32_t as_of;      /* point in time: only data dated <= as_of is used (required) */
    int window;         /* daily returns used, the most recent ones; 0: 500 */
    int min_returns;    /* fewer available is KF_ERR_NOT_FOUND; 0: 2 */
    double ewma_lambda; /* 0: 0.94 (RiskMetrics) */
} kf_risk_opts_t;

#define KF_RISK_OPTS_INIT \
    {                     \
        0, 0, 0, 0.0      \
    }

/* Confidence levels, indexes into the hist[] and param[] arrays. */
enum { KF_RISK_C95 = 0, KF_RISK_C99 = 1, KF_RISK_NCONF = 2 };
extern const double kf_risk_confidence[KF_RISK_NCONF]; /* {0.95, 0.99} */

typedef struct kf_risk_tail {
    double var_1d, es_1d;   /* losses, base currency, positive = loss */
    double var_10d, es_10d; /* 1-day figures times sqrt(10) */
    int k;                  /* historical: number of tail scenarios; parametric: 0 */
} kf_risk_tail_t;

typedef struct kf_risk_pos_result {
    const char *symbol, *asset_class, *sector, *currency;
    double quantity;
    double price;                /* local close on the last date */
    double fx;                   /* base-currency value of one unit of the instrument currency */
    double value;                /* quantity * price * fx */
    double weight;               /* value / portfolio value */
    double unrealized_pnl;       /* quantity * (price - cost_basis) * fx */
    double ewma_vol_1d;          /* EWMA volatility of the position's base-currency return */
    double component_var_99;     /* Euler share of parametric 1-day VaR 99% */
    double component_var_99_pct; /* component / total parametric VaR 99% (0 when it is 0) */
} kf_risk_pos_result_t;

typedef struct kf_risk_exposure {
    const char *key;
    double value, weight;
} kf_risk_exposure_t;

typedef struct kf_risk_limit_result {
    const char *metric;
    double threshold, observed;
    int breached; /* observed > threshold */
} kf_risk_limit_result_t;

typedef struct kf_risk_stress_result {
    const char *scenario;
    double pnl;     /* shocked value - current value; negative = loss */
    double pnl_pct; /* pnl / portfolio value */
} kf_risk_stress_result_t;

typedef struct kf_risk_report {
    const char *portfolio_id, *base_currency;
    int32_t as_of, first_date, last_date; /* window: first_date (value only) .. last_date */
    int n_returns;
    double value;          /* portfolio value on last_date, base currency */
    double unrealized_pnl; /* against cost basis */

    kf_risk_tail_t hist[KF_RISK_NCONF];  /* historical simulation */
    kf_risk_tail_t param[KF_RISK_NCONF]; /* variance-covariance, zero mean */
    double param_sigma_1d;               /* sqrt(v' S v), base currency */
    double ewma_lambda, ewma_vol_1d;     /* portfolio return volatility (fraction) */
    double ewma_vol_annual;              /* ewma_vol_1d * sqrt(252) */
    double ewma_var_99_1d;               /* z_99 * ewma_vol_1d * value */

    double max_drawdown;                    /* fraction of the running peak, >= 0 */
    double max_drawdown_amount;             /* peak value - trough value at that drawdown */
    int32_t drawdown_peak, drawdown_trough; /* dates (equal when there is no drawdown) */

    double hhi, top5_weight, max_weight;
    const char *max_weight_symbol;

    kf_risk_pos_result_t *positions; /* in the order added */
    size_t npositions;
    kf_risk_exposure_t *by_asset_class, *by_sector, *by_currency; /* value desc, then key */
    size_t nasset_class, nsector, ncurrency;
    kf_risk_limit_result_t *limits; /* in the order added */
    size_t nlimits, nbreaches;
    kf_risk_stress_result_t *stress; /* in the order first mentioned */
    size_t nstress;

    double *pnl;    /* n_returns historical P&L scenarios, oldest first */
    double *values; /* n_returns + 1 portfolio values, first_date .. last_date */
    int32_t *dates; /* n_returns + 1 dates of `values` */
} kf_risk_report_t;

/* Computes every metric. The report borrows nothing from `in` (strings are copied) and is
 * freed with kf_risk_report_destroy.
 * Data use: the calendar is the union of the held symbols' price dates <= as_of; the last
 * window + 1 calendar dates are used; prices and FX are carried forward over gaps. Errors:
 * KF_ERR_INVALID_ARG (no positions, bad opts, portfolio value <= 0), KF_ERR_NOT_FOUND (a symbol
 * or currency without data at the window's start, or fewer than min_returns returns), each
 * naming the symbol, currency or count. */
kf_err_t kf_risk_compute(const kf_risk_input_t *in,
                         const kf_risk_opts_t *opts,
                         kf_risk_report_t **out_rep,
                         char *errstr,
                         size_t errstr_size);
void kf_risk_report_destroy(kf_risk_report_t *rep);

/* The report as a new JSON object (json_decref it); with_series adds the pnl/values/dates
 * arrays. Layout in docs/risk-metrics.md. NULL only when out of memory. */
json_t *kf_risk_report_to_json(const kf_risk_report_t *rep, int with_series);

/* Inverse standard normal CDF for 0 < p < 1 (relative error below 1e-14). */
double kf_risk_norm_inv(double p);

/* ---- loaders -------------------------------------------------------------------------- */

/* Reads a portfolio's inputs from the CSV files of `kinfer sample-data --csv` in dir
 * (portfolios, instruments, positions, price_history, fx_rates, risk_limits, stress_shocks
 * .csv).
 * Only data dated <= as_of is kept. KF_ERR_NOT_FOUND for an unknown portfolio or a missing file,
 * KF_ERR_PARSE naming file, line and field for malformed content. */
kf_err_t kf_risk_csv_load(const char *dir,
                          const char *portfolio_id,
                          int32_t as_of,
                          kf_risk_input_t **out_in,
                          char *errstr,
                          size_t errstr_size);

/* The CSV tables kf_risk_csv_load reads, in the order it reads them. */
typedef enum kf_risk_csv_table {
    KF_RISK_CSV_PORTFOLIOS,
    KF_RISK_CSV_INSTRUMENTS,
    KF_RISK_CSV_POSITIONS,
    KF_RISK_CSV_PRICES,
    KF_RISK_CSV_FX,
    KF_RISK_CSV_LIMITS,
    KF_RISK_CSV_SHOCKS,
    KF_RISK_CSV__COUNT
} kf_risk_csv_table_t;

/* Parses one table's bytes (len bytes, need not be NUL-terminated; header line first) into
 * the loader state `st` for portfolio_id. Exposed so the fuzz target reaches the parser.
 * Rows of other portfolios are skipped. `name` is used in messages. */
typedef struct kf_risk_csv_state kf_risk_csv_state_t;
kf_err_t kf_risk_csv_state_new(const char *portfolio_id,
                               int32_t as_of,
                               kf_risk_csv_state_t **out_st,
                               char *errstr,
                               size_t errstr_size);
kf_err_t kf_risk_csv_parse(kf_risk_csv_state_t *st,
                           kf_risk_csv_table_t table,
                           const char *name,
                           const char *data,
                           size_t len,
                           char *errstr,
                           size_t errstr_size);
/* Hands over the assembled input (the state keeps nothing). KF_ERR_NOT_FOUND when the
 * portfolio never appeared. */
kf_err_t kf_risk_csv_finish(kf_risk_csv_state_t *st,
                            kf_risk_input_t **out_in,
                            char *errstr,
                            size_t errstr_size);
void kf_risk_csv_state_destroy(kf_risk_csv_state_t *st);

/* Reads a portfolio's inputs from PostgreSQL (tables of sql/migrations/0002_market_data.sql)
 * with prepared statements registered on pg: positions with their instruments, prices and FX
 * rates dated <= as_of within a calendar lookback long enough for `window` business days
 * (0: 500), the portfolio's limits and every stress scenario. KF_ERR_NOT_FOUND for an
 * unknown portfolio; database errors as kf_pg returns them. */
kf_err_t kf_risk_db_load(kf_pg_t *pg,
                         const char *portfolio_id,
                         int32_t as_of,
                         int window,
                         kf_risk_input_t **out_in,
                         char *errstr,
                         size_t errstr_size);

/* ---- sample data ---------------------------------------------------------------------- */

typedef struct kf_risk_sample_opts {
    uint64_t seed;    /* 0: 42 */
    int ninstruments; /* >= 50; 0: 60 */
    int nportfolios;  /* >= 1; 0: 5 */
    int years;        /* 1..30; 0: 3 */
    int32_t end_date; /* last business day of the history; 0: 2026-10-30 */
} kf_risk_sample_opts_t;

/* Generates the sample data set as CSV text, one kf_buf_t per table named by
 * kf_risk_sample_tables[] (same order, same columns as the database tables), deterministic for
 * opts. bufs must hold KF_RISK_SAMPLE_NTABLES initialised buffers; text is appended. */
#define KF_RISK_SAMPLE_NTABLES 9
extern const char *const kf_risk_sample_tables[KF_RISK_SAMPLE_NTABLES];
struct kf_buf;
kf_err_t kf_risk_sample_generate(const kf_risk_sample_opts_t *opts,
                                 struct kf_buf *bufs,
                                 char *errstr,
                                 size_t errstr_size);

/* `kinfer sample-data` and `kinfer risk` (declared for cli/main.c). */
int kf_cmd_sample_data(int argc, char **argv);
int kf_cmd_risk(int argc, char **argv);

#endif /* KF_RISK_H */
