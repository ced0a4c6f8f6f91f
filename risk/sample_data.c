/*
 * sample_data.c: `kinfer sample-data`, a seeded, deterministic market data set for risk
 * reports: customers, instruments across asset classes and currencies, portfolios with
 * positions, limits and stress scenarios, and business-day price and FX histories.
 *
 * Returns follow a factor model (one global market factor, one factor per equity sector and
 * one per other asset class, a US-dollar factor for FX) whose factors and idiosyncratic terms
 * each have GARCH(1,1) variance, so the series show both correlation and volatility clustering.
 * The generator has its own PRNG (xoshiro256** seeded by splitmix64) so a seed gives the same
 * bytes on every machine with the same libm.
 *
 * The data is produced once as CSV text per table (columns = the database columns). `--csv DIR`
 * writes the files; `--dsn` loads them with COPY in one transaction that first deletes the rows
 * tagged data_source = 'sample', so running it again replaces the sample set.
 */
#include "kf_buf.h"
#include "kf_risk.h"
#include "risk_int.h"

#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const char *const kf_risk_sample_tables[KF_RISK_SAMPLE_NTABLES] = {
    "customers", "instruments", "portfolios",       "positions",    "price_history",
    "fx_rates",  "risk_limits", "stress_scenarios", "stress_shocks"};

enum {
    T_CUSTOMERS,
    T_INSTRUMENTS,
    T_PORTFOLIOS,
    T_POSITIONS,
    T_PRICES,
    T_FX,
    T_LIMITS,
    T_SCENARIOS,
    T_SHOCKS
};

/* ---- PRNG ----------------------------------------------------------------------------- */

typedef struct kf_rng {
    uint64_t s[4];
    int have_spare;
    double spare;
} kf_rng_t;

static uint64_t
kf_rng_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
kf_rng_seed(kf_rng_t *rng, uint64_t seed)
{
    memset(rng, 0, sizeof(*rng));
    for (int i = 0; i < 4; i++)
        rng->s[i] = kf_rng_splitmix(&seed);
}

static uint64_t
kf_rng_next(kf_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in (0, 1): 53 random bits, never exactly 0 (log() below needs that). */
static double
kf_rng_unif(kf_rng_t *rng)
{
    return ((double)(kf_rng_next(rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double
kf_rng_range(kf_rng_t *rng, double lo, double hi)
{
    return lo + (hi - lo) * kf_rng_unif(rng);
}

/* Standard normal by Box-Muller, caching the second variate. */
static double
kf_rng_norm(kf_rng_t *rng)
{
    if (rng->have_spare) {
        rng->have_spare = 0;
        return rng->spare;
    }
    double r = sqrt(-2 * log(kf_rng_unif(rng))), th = 2 * M_PI * kf_rng_unif(rng);
    rng->spare = r * sin(th);
    rng->have_spare = 1;
    return r * cos(th);
}

static int
kf_rng_int(kf_rng_t *rng, int n)
{
    return (int)(kf_rng_unif(rng) * n);
}

/* ---- GARCH(1,1) ----------------------------------------------------------------------- */

/* h_t = w + a e_{t-1}^2 + b h_{t-1}, w set so the long-run daily volatility is `vol`. */
typedef struct kf_garch {
    double h, w, a, b;
} kf_garch_t;

static void
kf_garch_init(kf_garch_t *g, double vol, double a, double b)
{
    g->a = a;
    g->b = b;
    g->w = vol * vol * (1 - a - b);
    g->h = vol * vol;
}

static double
kf_garch_step(kf_garch_t *g, kf_rng_t *rng)
{
    double e = sqrt(g->h) * kf_rng_norm(rng);
    g->h = g->w + g->a * e * e + g->b * g->h;
    return e;
}

/* ---- reference data ------------------------------------------------------------------- */

static const char *const kf_sectors[] = {"Technology",
                                         "Financials",
                                         "Health Care",
                                         "Energy",
                                         "Industrials",
                                         "Consumer Discretionary",
                                         "Consumer Staples",
                                         "Utilities",
                                         "Materials",
                                         "Real Estate",
                                         "Communication Services"};
#define KF_NSECTORS 11
static const char *const kf_prefixes[] = {
    "Apex",   "Borealis",  "Cobalt",  "Delta",    "Evergreen", "Fjord",    "Granite",
    "Harbor", "Ionic",     "Juniper", "Keystone", "Lumen",     "Meridian", "Northwind",
    "Orion",  "Pinnacle",  "Quantum", "Redwood",  "Summit",    "Titan",    "Umbra",
    "Vertex", "Westbrook", "Xenon",   "Yarrow",   "Zephyr"};
#define KF_NPREFIXES 26
static const char *const kf_suffixes[] = {"Systems",    "Bancorp", "Therapeutics", "Energy",
                                          "Industries", "Brands",  "Foods",        "Power",
                                          "Minerals",   "Realty",  "Media"};

typedef struct kf_ccy_info {
    const char *code, *country;
    double usd_per_unit, vol, usd_beta;
} kf_ccy_info_t;
/* Start levels near late-2023 fixings; vol is the long-run daily volatility. */
static const kf_ccy_info_t kf_ccys[] = {{"USD", "US", 1.0, 0, 0},
                                        {"EUR", "DE", 1.08, 0.0030, 1.0},
                                        {"GBP", "GB", 1.26, 0.0035, 0.9},
                                        {"JPY", "JP", 0.0068, 0.0045, 0.7},
                                        {"CHF", "CH", 1.13, 0.0032, 0.8}};
#define KF_NCCY 5

enum { AC_EQUITY, AC_ETF, AC_BOND, AC_COMMODITY, AC_CRYPTO, AC_FX, AC__COUNT };
static const char *const kf_ac_names[AC__COUNT] = {"equity",    "etf",    "bond",
                                                   "commodity", "crypto", "fx"};
/* Share of the instrument universe per class (equity takes the rounding remainder). */
static const double kf_ac_share[AC__COUNT] = {0, 0.12, 0.15, 0.10, 0.06, 0.07};

typedef struct kf_instr {
    char symbol[24], name[64], sector[32];
    int ac, ccy, sec_idx;
    double p0, drift, beta_mkt, beta_sec, beta_cls;
    kf_garch_t idio;
    double *px; /* nd closes (rounded as written) */
} kf_instr_t;

/* Factor indexes: 0 market, 1..11 equity sectors, then bond, commodity, crypto, USD. */
enum { F_MKT = 0, F_BOND = 1 + KF_NSECTORS, F_COMM, F_CRYPTO, F_USD, F__COUNT };

static double
kf_round(double x, double scale)
{
    return round(x * scale) / scale;
}

/* Appends a CSV field, quoted when it holds a comma, quote or newline. */
static kf_err_t
kf_csv_str(kf_buf_t *b, const char *s, int last)
{
    kf_err_t err = KF_OK;
    if (strpbrk(s, ",\"\n\r")) {
        err = kf_buf_append(b, "\"", 1);
        for (const char *p = s; !err && *p; p++)
            err = *p == '"' ? kf_buf_append(b, "\"\"", 2) : kf_buf_append(b, p, 1);
        if (!err)
            err = kf_buf_append(b, "\"", 1);
    } else {
        err = kf_buf_append_str(b, s);
    }
    return err ? err : kf_buf_append(b, last ? "\n" : ",", 1);
}

/* Business days (Mon-Fri) in (end - 365 * years, end]. */
static int32_t *
kf_business_days(int32_t end, int years, int *out_n)
{
    int32_t start = end - 365 * years + 1;
    int32_t *d = malloc(((size_t)(end - start) + 1) * sizeof(*d));
    int n = 0;
    if (!d)
        return NULL;
    for (int32_t x = start; x <= end; x++)
        if (kf_risk_date_weekday(x) < 5)
            d[n++] = x;
    *out_n = n;
    return d;
}

/* Portfolio archetypes: name, base currency, risk profile, asset class tilts, a preferred
 * sector and currency, size, and limit thresholds. Beyond five, archetypes repeat. */
typedef struct kf_profile {
    const char *name, *base, *risk;
    double ac_w[AC__COUNT];
    const char *pref_sector, *pref_ccy;
    double notional;
    int npos_lo, npos_hi;
    double var99, es99, max_w, max_sec, mdd, hhi, top5, ewma;
} kf_profile_t;

static const kf_profile_t kf_profiles[] = {
    {"Global Balanced",
     "USD",
     "balanced",
     {1.0, 0.6, 0.8, 0.2, 0.0, 0.1},
     NULL,
     NULL,
     25e6,
     20,
     30,
     0.020,
     0.028,
     0.10,
     0.30,
     0.20,
     0.08,
     0.40,
     0.012},
    {"Euro Income",
     "EUR",
     "conservative",
     {0.4, 0.3, 1.5, 0.1, 0.0, 0.0},
     "Utilities",
     "EUR",
     12e6,
     15,
     22,
     0.012,
     0.016,
     0.10,
     0.35,
     0.10,
     0.10,
     0.45,
     0.008},
    {"Tech Growth",
     "USD",
     "aggressive",
     {1.2, 0.3, 0.0, 0.0, 0.6, 0.0},
     "Technology",
     "USD",
     8e6,
     10,
     15,
     0.035,
     0.045,
     0.12,
     0.40,
     0.30,
     0.12,
     0.55,
     0.025},
    {"UK Multi-Asset",
     "GBP",
     "growth",
     {1.0, 0.5, 0.5, 0.4, 0.1, 0.2},
     "Financials",
     "GBP",
     15e6,
     18,
     26,
     0.022,
     0.030,
     0.10,
     0.30,
     0.20,
     0.08,
     0.40,
     0.014},
    {"Swiss Preservation",
     "CHF",
     "conservative",
     {0.5, 0.4, 1.2, 0.2, 0.0, 0.3},
     "Health Care",
     "CHF",
     20e6,
     14,
     20,
     0.012,
     0.016,
     0.10,
     0.30,
     0.12,
     0.10,
     0.45,
     0.008},
};
#define KF_NPROFILES 5

kf_err_t
kf_risk_sample_generate(const kf_risk_sample_opts_t *opts,
                        kf_buf_t *bufs,
                        char *errstr,
                        size_t errstr_size)
{
    KF_ASSERT(opts && bufs);
    uint64_t seed = opts->seed ? opts->seed : 42;
    int ni = opts->ninstruments ? opts->ninstruments : 60;
    int np = opts->nportfolios ? opts->nportfolios : 5;
    int years = opts->years ? opts->years : 3;
    int32_t end = opts->end_date ? opts->end_date : kf_risk_days_from_civil(2026, 10, 30);
    if (ni < 50 || ni > 5000 || np < 1 || np > 1000 || years < 1 || years > 30 ||
        end < KF_RISK_DATE_MIN + 366 * 31 || end > KF_RISK_DATE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "sample data: instruments %d (50..5000), portfolios %d (1..1000), "
                          "years %d (1..30) or end date out of range",
                          ni, np, years);
    while (kf_risk_date_weekday(end) >= 5)
        end--;

    kf_err_t err = KF_OK;
    kf_rng_t rng;
    kf_rng_seed(&rng, seed);
    int nd = 0;
    int32_t *days = kf_business_days(end, years, &nd);
    kf_instr_t *ins = calloc((size_t)ni, sizeof(*ins));
    double *fx = calloc((size_t)KF_NCCY * (size_t)nd, sizeof(*fx));
    double *pool_w = calloc((size_t)ni, sizeof(*pool_w));
    kf_risk_map_t syms = {0};
    char d1[11];
    if (!days || !ins || !fx || !pool_w)
        goto nomem;

    /* 1. Instruments: class counts by share, equity gets the remainder. */
    int count[AC__COUNT], k = 0;
    count[AC_EQUITY] = ni;
    for (int a = 1; a < AC__COUNT; a++) {
        count[a] = (int)(ni * kf_ac_share[a]);
        count[AC_EQUITY] -= count[a];
    }
    static const char *const comm_names[] = {"GOLD",   "SILVER", "WTI",   "BRENT",
                                             "COPPER", "NATGAS", "WHEAT", "CORN"};
    static const char *const comm_sect[] = {"Precious Metals", "Precious Metals",   "Energy",
                                            "Energy",          "Industrial Metals", "Energy",
                                            "Agriculture",     "Agriculture"};
    static const double comm_p0[] = {1950, 23, 78, 82, 3.8, 2.6, 6.1, 4.8};
    static const char *const crypto_names[] = {"BTC", "ETH", "SOL", "ADA", "DOT", "AVAX"};
    static const double crypto_p0[] = {34000, 1800, 40, 0.35, 4.5, 11};
    static const char *const etf_names[] = {
        "World Equity",          "US Large Cap",      "Europe Equity",       "Emerging Markets",
        "Global Aggregate Bond", "Technology Sector", "Dividend Aristocrats"};
    for (int a = 0; a < AC__COUNT; a++) {
        for (int j = 0; j < count[a]; j++, k++) {
            kf_instr_t *it = &ins[k];
            it->ac = a;
            it->sec_idx = -1;
            double idio_vol = 0.01;
            switch (a) {
            case AC_EQUITY: {
                /* US names dominate, as in a global index; others spread over four markets. */
                int c = kf_rng_unif(&rng) < 0.5 ? 0 : 1 + kf_rng_int(&rng, KF_NCCY - 1);
                int s = kf_rng_int(&rng, KF_NSECTORS), pfx = kf_rng_int(&rng, KF_NPREFIXES);
                it->ccy = c;
                it->sec_idx = s;
                snprintf(it->sector, sizeof(it->sector), "%s", kf_sectors[s]);
                snprintf(it->name, sizeof(it->name), "%s %s", kf_prefixes[pfx], kf_suffixes[s]);
                char tick[8];
                snprintf(tick, sizeof(tick), "%.3s%c", kf_prefixes[pfx], kf_suffixes[s][0]);
                for (char *p = tick; *p; p++)
                    *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
                if (c == 0)
                    snprintf(it->symbol, sizeof(it->symbol), "%s", tick);
                else
                    snprintf(it->symbol, sizeof(it->symbol), "%s.%s", tick, kf_ccys[c].country);
                it->p0 = kf_rng_range(&rng, 20, 400) / (c == 3 ? kf_ccys[3].usd_per_unit : 1);
                it->beta_mkt = kf_rng_range(&rng, 0.6, 1.4);
                it->beta_sec = kf_rng_range(&rng, 0.5, 1.1);
                it->drift = kf_rng_range(&rng, -0.02, 0.14) / 252;
                idio_vol = kf_rng_range(&rng, 0.005, 0.014);
                break;
            }
            case AC_ETF:
                it->ccy = j % 3 == 2 ? 1 : 0;
                snprintf(it->name, sizeof(it->name), "%s ETF", etf_names[j % 7]);
                snprintf(it->symbol, sizeof(it->symbol), "ETF%02d", j + 1);
                snprintf(it->sector, sizeof(it->sector), "%s",
                         j % 7 == 4   ? "Fixed Income"
                         : j % 7 == 5 ? "Technology"
                                      : "Broad Market");
                it->p0 = kf_rng_range(&rng, 40, 450);
                it->beta_mkt = j % 7 == 4 ? 0.1 : kf_rng_range(&rng, 0.9, 1.1);
                it->beta_cls = j % 7 == 4 ? 0.8 : 0;
                if (j % 7 == 5) {
                    it->sec_idx = 0;
                    it->beta_sec = 0.8;
                }
                it->drift = 0.06 / 252;
                idio_vol = 0.002;
                break;
            case AC_BOND: {
                static const int tenors[] = {2, 5, 10, 30};
                int c = j % KF_NCCY, tenor = tenors[(j / KF_NCCY) % 4], corp = (j / 4) % 2;
                it->ccy = c;
                snprintf(it->sector, sizeof(it->sector), "%s", corp ? "Corporate" : "Government");
                snprintf(it->name, sizeof(it->name), "%s %s %dY Bond", kf_ccys[c].code,
                         corp ? "Corporate" : "Government", tenor);
                snprintf(it->symbol, sizeof(it->symbol), "%s-%s-%dY", corp ? "CORP" : "GOVT",
                         kf_ccys[c].code, tenor);
                it->p0 = kf_rng_range(&rng, 92, 104);
                /* Duration-like loading on the rates factor. */
                it->beta_cls = tenor / 10.0;
                it->beta_mkt = corp ? 0.05 : -0.05;
                it->drift = 0.03 / 252;
                idio_vol = corp ? 0.0015 : 0.0006;
                break;
            }
            case AC_COMMODITY:
                it->ccy = 0;
                snprintf(it->symbol, sizeof(it->symbol), "%s%s", comm_names[j % 8],
                         j >= 8 ? "2" : "");
                snprintf(it->name, sizeof(it->name), "%s front-month", comm_names[j % 8]);
                snprintf(it->sector, sizeof(it->sector), "%s", comm_sect[j % 8]);
                it->p0 = comm_p0[j % 8];
                it->beta_cls = kf_rng_range(&rng, 0.6, 1.2);
                it->beta_mkt = 0.3;
                it->drift = 0.02 / 252;
                idio_vol = 0.012;
                break;
            case AC_CRYPTO:
                it->ccy = 0;
                snprintf(it->symbol, sizeof(it->symbol), "%s%s", crypto_names[j % 6],
                         j >= 6 ? "2" : "");
                snprintf(it->name, sizeof(it->name), "%s spot", crypto_names[j % 6]);
                snprintf(it->sector, sizeof(it->sector), "Crypto");
                it->p0 = crypto_p0[j % 6];
                it->beta_cls = 1.0;
                it->beta_mkt = 0.5;
                it->drift = 0.25 / 252;
                idio_vol = 0.022;
                break;
            default: /* fx: a cash balance in a foreign currency, priced 1 in that currency */
                it->ccy = 1 + j % (KF_NCCY - 1);
                snprintf(it->symbol, sizeof(it->symbol), "CASH-%s%s", kf_ccys[it->ccy].code,
                         j >= KF_NCCY - 1 ? "2" : "");
                snprintf(it->name, sizeof(it->name), "%s cash", kf_ccys[it->ccy].code);
                snprintf(it->sector, sizeof(it->sector), "Cash");
                it->p0 = 1;
                idio_vol = 0;
                break;
            }
            /* Unique symbols: a clash (same ticker drawn twice) gets a numeric suffix. */
            size_t base_len = strlen(it->symbol);
            for (int sfx = 2; kf_risk_map_get(&syms, it->symbol) >= 0; sfx++)
                snprintf(it->symbol + base_len, sizeof(it->symbol) - base_len, "%d", sfx);
            if (kf_risk_map_put(&syms, it->symbol, k))
                goto nomem;
            kf_garch_init(&it->idio, idio_vol, 0.06, 0.92);
            if (!(it->px = malloc((size_t)nd * sizeof(double))))
                goto nomem;
        }
    }

    /* 2. Paths. Factors and idiosyncratic terms burn in for 100 days so the first written
     * day does not start every variance at its long-run level. */
    kf_garch_t fac[F__COUNT], ccy_g[KF_NCCY];
    static const double fvol[F__COUNT] = {0.0080, 0.005, 0.005, 0.005, 0.005,  0.005, 0.005, 0.005,
                                          0.005,  0.005, 0.005, 0.005, 0.0030, 0.012, 0.030, 0.004};
    for (int f = 0; f < F__COUNT; f++)
        kf_garch_init(&fac[f], fvol[f], 0.09, 0.89);
    for (int c = 0; c < KF_NCCY; c++)
        kf_garch_init(&ccy_g[c], kf_ccys[c].vol * 0.6, 0.05, 0.93);
    double logp[5000], logfx[KF_NCCY];
    for (int i = 0; i < ni; i++)
        logp[i] = log(ins[i].p0);
    for (int c = 0; c < KF_NCCY; c++)
        logfx[c] = log(kf_ccys[c].usd_per_unit);
    for (int t = -100; t < nd; t++) {
        double f[F__COUNT];
        for (int q = 0; q < F__COUNT; q++)
            f[q] = kf_garch_step(&fac[q], &rng);
        for (int i = 0; i < ni; i++) {
            kf_instr_t *it = &ins[i];
            double e = kf_garch_step(&it->idio, &rng);
            if (t < 0 || it->ac == AC_FX)
                continue;
            double cls = it->ac == AC_BOND || (it->ac == AC_ETF && it->beta_cls > 0) ? f[F_BOND]
                         : it->ac == AC_COMMODITY                                    ? f[F_COMM]
                         : it->ac == AC_CRYPTO                                       ? f[F_CRYPTO]
                                                                                     : 0;
            double sec = it->sec_idx >= 0 ? f[1 + it->sec_idx] : 0;
            double rt =
                it->drift + it->beta_mkt * f[F_MKT] + it->beta_sec * sec + it->beta_cls * cls + e;
            /* Keep a bad draw from running a price to zero or infinity. */
            rt = rt > 0.5 ? 0.5 : rt < -0.5 ? -0.5 : rt;
            logp[i] += rt;
        }
        for (int c = 1; c < KF_NCCY; c++) {
            double e = kf_garch_step(&ccy_g[c], &rng);
            if (t < 0)
                continue;
            /* A strong dollar (positive USD factor) lowers every currency's USD value. */
            logfx[c] += -kf_ccys[c].usd_beta * f[F_USD] + e + 0.1 * f[F_MKT];
        }
        if (t < 0)
            continue;
        for (int i = 0; i < ni; i++) {
            double p = exp(logp[i]);
            ins[i].px[t] = ins[i].ac == AC_FX ? 1.0 : kf_round(p, p < 1 ? 1e6 : 1e4);
        }
        fx[t] = 1.0;
        for (int c = 1; c < KF_NCCY; c++) {
            double x = exp(logfx[c]);
            /* 6 significant digits, as fixings are quoted. */
            double mag = pow(10.0, 5 - floor(log10(x)));
            fx[(size_t)c * nd + t] = round(x * mag) / mag;
        }
    }

    /* 3. Tables. Reference data first. */
    kf_buf_t *b = bufs;
    err =
        kf_buf_append_str(&b[T_CUSTOMERS], "customer_id,tenant_id,name,risk_profile,data_source\n");
    err = err ? err
              : kf_buf_append_str(&b[T_INSTRUMENTS],
                                  "symbol,name,asset_class,sector,currency,country,data_source\n");
    err = err ? err
              : kf_buf_append_str(&b[T_PORTFOLIOS], "portfolio_id,name,base_currency,customer_id,"
                                                    "tenant_id,data_source\n");
    err =
        err ? err : kf_buf_append_str(&b[T_POSITIONS], "portfolio_id,symbol,quantity,cost_basis\n");
    err = err ? err : kf_buf_append_str(&b[T_PRICES], "symbol,price_date,close\n");
    err = err ? err : kf_buf_append_str(&b[T_FX], "currency,rate_date,usd_per_unit,data_source\n");
    err = err ? err : kf_buf_append_str(&b[T_LIMITS], "portfolio_id,metric,threshold\n");
    err = err ? err
              : kf_buf_append_str(&b[T_SCENARIOS], "scenario_id,name,description,data_source\n");
    err = err ? err : kf_buf_append_str(&b[T_SHOCKS], "scenario_id,dimension,key,shock\n");
    for (int i = 0; !err && i < ni; i++) {
        const kf_instr_t *it = &ins[i];
        const char *country =
            it->ac == AC_EQUITY || it->ac == AC_BOND ? kf_ccys[it->ccy].country : "";
        if (it->ac == AC_EQUITY && it->ccy == 1 && (i % 2))
            country = "FR";
        err = kf_buf_appendf(&b[T_INSTRUMENTS], "%s,%s,%s,%s,%s,%s,sample\n", it->symbol, it->name,
                             kf_ac_names[it->ac], it->sector, kf_ccys[it->ccy].code, country);
    }
    for (int i = 0; !err && i < ni; i++)
        for (int t = 0; !err && t < nd; t++)
            err = kf_buf_appendf(&b[T_PRICES], "%s,%s,%.6f\n", ins[i].symbol,
                                 kf_risk_date_format(days[t], d1), ins[i].px[t]);
    for (int c = 1; !err && c < KF_NCCY; c++)
        for (int t = 0; !err && t < nd; t++)
            err = kf_buf_appendf(&b[T_FX], "%s,%s,%.10g,sample\n", kf_ccys[c].code,
                                 kf_risk_date_format(days[t], d1), fx[(size_t)c * nd + t]);

    /* 4. Customers and portfolios. Two sample tenants, a customer per two portfolios. */
    int ncust = (np + 1) / 2;
    for (int c = 0; !err && c < ncust; c++) {
        static const char *const cnames[] = {"Aldridge Family Office", "Brightwater Pension Fund",
                                             "Carrow Private Clients", "Dunmore Endowment"};
        const kf_profile_t *pf = &kf_profiles[(2 * c) % KF_NPROFILES];
        char name[64];
        snprintf(name, sizeof(name), "%s%s", cnames[c % 4], c >= 4 ? " II" : "");
        err = kf_buf_appendf(&b[T_CUSTOMERS], "C%03d,sample-tenant-%c,%s,%s,sample\n", c + 1,
                             'a' + c % 2, name, pf->risk);
    }
    for (int p = 0; !err && p < np; p++) {
        const kf_profile_t *pf = &kf_profiles[p % KF_NPROFILES];
        int cust = p / 2;
        char pid[16];
        snprintf(pid, sizeof(pid), "P%03d", p + 1);
        err = kf_buf_appendf(&b[T_PORTFOLIOS], "%s,%s%s,%s,C%03d,sample-tenant-%c,sample\n", pid,
                             pf->name, p >= KF_NPROFILES ? " (2)" : "", pf->base, cust + 1,
                             'a' + cust % 2);
        /* Positions: weighted draw without replacement, tilted by the profile. */
        int npos = pf->npos_lo + kf_rng_int(&rng, pf->npos_hi - pf->npos_lo + 1);
        double tot = 0;
        for (int i = 0; i < ni; i++) {
            const kf_instr_t *it = &ins[i];
            double wgt = pf->ac_w[it->ac];
            if (pf->pref_sector && !strcmp(it->sector, pf->pref_sector))
                wgt *= 4;
            if (pf->pref_ccy && !strcmp(kf_ccys[it->ccy].code, pf->pref_ccy))
                wgt *= 2.5;
            /* No cash position in the base currency itself: it would carry no risk at all. */
            if (it->ac == AC_FX && !strcmp(kf_ccys[it->ccy].code, pf->base))
                wgt = 0;
            pool_w[i] = wgt;
            tot += wgt;
        }
        double fx_base = 1;
        for (int c = 0; c < KF_NCCY; c++)
            if (!strcmp(kf_ccys[c].code, pf->base))
                fx_base = fx[(size_t)c * nd + nd - 1];
        for (int j = 0; !err && j < npos && tot > 0; j++) {
            double x = kf_rng_unif(&rng) * tot;
            int i = 0;
            while (i < ni - 1 && (x -= pool_w[i]) > 0)
                i++;
            while (pool_w[i] == 0) /* rounding landed on a spent slot: take the next live one */
                i = (i + 1) % ni;
            tot -= pool_w[i];
            pool_w[i] = 0;
            const kf_instr_t *it = &ins[i];
            /* Value target: exponential weights make a few positions large, as in real books. */
            double target = pf->notional / npos * -log(kf_rng_unif(&rng)) * 1.0;
            double unit = it->px[nd - 1] * fx[(size_t)it->ccy * nd + nd - 1] / fx_base;
            double qty = target / unit;
            qty = it->ac == AC_CRYPTO ? kf_round(qty, 1e4)
                  : it->ac == AC_FX   ? round(qty)
                                      : round(qty);
            if (qty < 1 && it->ac != AC_CRYPTO)
                qty = 1;
            if (qty <= 0)
                qty = 0.0001;
            int tb = kf_rng_int(&rng, nd);
            double cost = kf_round(it->px[tb] * (1 + 0.02 * kf_rng_norm(&rng)), 1e4);
            if (cost <= 0)
                cost = it->px[tb];
            err = kf_buf_appendf(&b[T_POSITIONS], "%s,%s,%.4f,%.6f\n", pid, it->symbol, qty, cost);
        }
        /* Limits as fractions of portfolio value (weights for concentration). */
        struct {
            const char *m;
            double v;
        } lim[] = {{"var_99_1d", pf->var99},
                   {"es_99_1d", pf->es99},
                   {"var_99_10d", pf->var99 * 3.2},
                   {"max_weight_single", pf->max_w},
                   {"max_sector_weight", pf->max_sec},
                   {"max_drawdown", pf->mdd},
                   {"hhi", pf->hhi},
                   {"top5_weight", pf->top5},
                   {"ewma_vol_1d", pf->ewma}};
        for (size_t l = 0; !err && l < sizeof(lim) / sizeof(lim[0]); l++)
            err = kf_buf_appendf(&b[T_LIMITS], "%s,%s,%.4f\n", pid, lim[l].m, lim[l].v);
    }

    /* 5. Stress scenarios. The single-name one hits the first Financials equity generated. */
    const char *victim = NULL;
    for (int i = 0; i < ni && !victim; i++)
        if (ins[i].ac == AC_EQUITY && !strcmp(ins[i].sector, "Financials"))
            victim = ins[i].symbol;
    static const struct {
        const char *id, *name, *desc;
    } scen[] = {
        {"gfc_2008", "Global financial crisis replay",
         "Equities -40%, financials -55%, credit spreads wide, flight to JPY and CHF"},
        {"rates_up_200bp", "Rates +200bp", "Parallel yield shift up 200bp; duration assets fall"},
        {"usd_rally_10", "USD rally 10%", "Every currency loses 8-10% against the US dollar"},
        {"tech_selloff", "Technology sell-off", "Technology -30%, communication -20%, crypto -40%"},
        {"oil_shock", "Oil supply shock", "Crude +45%, energy equities +20%, broad equities -8%"},
        {"crypto_winter", "Crypto winter", "Crypto assets -65%"},
        {"single_name_default", "Single-name default", "The largest financials name loses 90%"},
    };
    for (size_t s = 0; !err && s < sizeof(scen) / sizeof(scen[0]); s++) {
        err = kf_csv_str(&b[T_SCENARIOS], scen[s].id, 0);
        err = err ? err : kf_csv_str(&b[T_SCENARIOS], scen[s].name, 0);
        err = err ? err : kf_csv_str(&b[T_SCENARIOS], scen[s].desc, 0);
        err = err ? err : kf_csv_str(&b[T_SCENARIOS], "sample", 1);
    }
    static const struct {
        const char *id, *dim, *key;
        double shock;
    } shocks[] = {
        {"gfc_2008", "asset_class", "equity", -0.40},
        {"gfc_2008", "asset_class", "etf", -0.35},
        {"gfc_2008", "asset_class", "commodity", -0.30},
        {"gfc_2008", "asset_class", "crypto", -0.60},
        {"gfc_2008", "asset_class", "bond", 0.04},
        {"gfc_2008", "sector", "Corporate", -0.08},
        {"gfc_2008", "sector", "Financials", -0.55},
        {"gfc_2008", "sector", "Real Estate", -0.45},
        {"gfc_2008", "sector", "Fixed Income", 0.02},
        {"gfc_2008", "currency", "GBP", -0.20},
        {"gfc_2008", "currency", "EUR", -0.12},
        {"gfc_2008", "currency", "JPY", 0.10},
        {"gfc_2008", "currency", "CHF", 0.05},
        {"rates_up_200bp", "asset_class", "bond", -0.10},
        {"rates_up_200bp", "sector", "Government", -0.12},
        {"rates_up_200bp", "sector", "Fixed Income", -0.09},
        {"rates_up_200bp", "sector", "Utilities", -0.08},
        {"rates_up_200bp", "sector", "Real Estate", -0.10},
        {"rates_up_200bp", "sector", "Technology", -0.06},
        {"rates_up_200bp", "sector", "Financials", 0.03},
        {"usd_rally_10", "currency", "EUR", -0.10},
        {"usd_rally_10", "currency", "GBP", -0.10},
        {"usd_rally_10", "currency", "JPY", -0.10},
        {"usd_rally_10", "currency", "CHF", -0.08},
        {"tech_selloff", "sector", "Technology", -0.30},
        {"tech_selloff", "sector", "Communication Services", -0.20},
        {"tech_selloff", "asset_class", "crypto", -0.40},
        {"oil_shock", "asset_class", "equity", -0.08},
        {"oil_shock", "sector", "Energy", 0.20},
        {"oil_shock", "symbol", "WTI", 0.45},
        {"oil_shock", "symbol", "BRENT", 0.45},
        {"crypto_winter", "asset_class", "crypto", -0.65},
    };
    for (size_t s = 0; !err && s < sizeof(shocks) / sizeof(shocks[0]); s++) {
        err = kf_buf_appendf(&b[T_SHOCKS], "%s,%s,", shocks[s].id, shocks[s].dim);
        err = err ? err : kf_csv_str(&b[T_SHOCKS], shocks[s].key, 0);
        err = err ? err : kf_buf_appendf(&b[T_SHOCKS], "%.4f\n", shocks[s].shock);
    }
    if (!err && victim)
        err = kf_buf_appendf(&b[T_SHOCKS], "single_name_default,symbol,%s,-0.9000\n", victim);
    if (err)
        err = kf_err_set(errstr, errstr_size, err, "sample data: %s building CSV", kf_err_str(err));
    goto out;
nomem:
    err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
out:
    if (ins)
        for (int i = 0; i < ni; i++)
            free(ins[i].px);
    free(ins);
    free(fx);
    free(pool_w);
    free(days);
    kf_risk_map_free(&syms);
    return err;
}

/* ---- loading -------------------------------------------------------------------------- */

/* Runs one statement; KF_ERR_DB with the server's message on failure. */
static kf_err_t
kf_sample_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    kf_err_t err = KF_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        err = kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: %.60s...: %s", sql,
                         PQresultErrorMessage(res));
    PQclear(res);
    return err;
}

/* COPY table (columns of the CSV header) FROM STDIN, streaming the CSV text. */
static kf_err_t
kf_sample_copy(PGconn *conn, const char *table, const kf_buf_t *b, char *errstr, size_t errstr_size)
{
    const char *nl = memchr(b->data, '\n', b->len);
    char sql[512];
    snprintf(sql, sizeof(sql), "COPY %s (%.*s) FROM STDIN WITH (FORMAT csv, HEADER true)", table,
             (int)(nl - b->data), b->data);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        kf_err_t err = kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: COPY %s: %s", table,
                                  PQresultErrorMessage(res));
        PQclear(res);
        return err;
    }
    PQclear(res);
    /* Chunks keep each CopyData message moderate; libpq buffers them in its output queue. */
    for (size_t off = 0; off < b->len;) {
        int n = (int)(b->len - off > (1 << 20) ? (1 << 20) : b->len - off);
        if (PQputCopyData(conn, b->data + off, n) != 1)
            return kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: COPY %s: %s", table,
                              PQerrorMessage(conn));
        off += (size_t)n;
    }
    if (PQputCopyEnd(conn, NULL) != 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: COPY %s: %s", table,
                          PQerrorMessage(conn));
    kf_err_t err = KF_OK;
    while ((res = PQgetResult(conn))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && !err)
            err = kf_err_set(errstr, errstr_size, KF_ERR_DB, "postgres: COPY %s: %s", table,
                             PQresultErrorMessage(res));
        PQclear(res);
    }
    return err;
}

static kf_err_t
kf_sample_load(const char *dsn, kf_buf_t *bufs, char *errstr, size_t errstr_size)
{
    PGconn *conn = PQconnectdb(dsn);
    kf_err_t err = KF_OK;
    if (PQstatus(conn) != CONNECTION_OK) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_UNAVAILABLE, "postgres: connect: %s",
                         PQerrorMessage(conn));
        PQfinish(conn);
        return err;
    }
    /* One transaction: readers see the old sample set or the new one, never a mix. The
     * deletes cascade to positions, limits, prices and shocks; a non-sample portfolio holding
     * a sample instrument makes the delete fail and nothing changes. */
    static const char *const pre[] = {
        "BEGIN",
        "SET LOCAL client_min_messages = warning",
        "DELETE FROM portfolios WHERE data_source = 'sample'",
        "DELETE FROM customers WHERE data_source = 'sample'",
        "DELETE FROM stress_scenarios WHERE data_source = 'sample'",
        "DELETE FROM instruments WHERE data_source = 'sample'",
        "DELETE FROM fx_rates WHERE data_source = 'sample'",
    };
    for (size_t i = 0; !err && i < sizeof(pre) / sizeof(pre[0]); i++)
        err = kf_sample_exec(conn, pre[i], errstr, errstr_size);
    for (int t = 0; !err && t < KF_RISK_SAMPLE_NTABLES; t++)
        err = kf_sample_copy(conn, kf_risk_sample_tables[t], &bufs[t], errstr, errstr_size);
    if (!err)
        err = kf_sample_exec(conn, "COMMIT", errstr, errstr_size);
    PQfinish(conn); /* closing without COMMIT rolls back */
    return err;
}

/* mkdir -p: creates dir and any missing parents. */
static kf_err_t
kf_sample_mkdirs(const char *dir, char *errstr, size_t errstr_size)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "path too long: %.64s...", dir);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) && errno != EEXIST)
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "mkdir %s: %s", path,
                              strerror(errno));
        if (!c)
            return KF_OK;
        *p = c;
    }
}

static kf_err_t
kf_sample_write(const char *dir, kf_buf_t *bufs, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_sample_mkdirs(dir, errstr, errstr_size);
    if (err)
        return err;
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s.csv", dir, kf_risk_sample_tables[t]);
        FILE *fp = fopen(path, "wb");
        if (!fp)
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "open %s: %s", path, strerror(errno));
        size_t n = fwrite(bufs[t].data, 1, bufs[t].len, fp);
        if (fclose(fp) || n != bufs[t].len)
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "write %s failed", path);
    }
    return KF_OK;
}

static int
kf_sample_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer sample-data (--dsn DSN | --csv DIR) [options]\n\n"
            "Generates a deterministic market data set for risk reports (customers, instruments,\n"
            "portfolios, positions, daily prices and FX rates, limits, stress scenarios) and\n"
            "loads it into PostgreSQL with COPY in one transaction (replacing the rows tagged\n"
            "data_source='sample'), or writes one CSV file per table.\n\n"
            "Options:\n"
            "  --dsn DSN          libpq connection string (default: $KINFER_PG_DSN)\n"
            "  --csv DIR          write DIR/<table>.csv instead of loading\n"
            "  --seed N           PRNG seed (default 42)\n"
            "  --instruments N    instruments, 50..5000 (default 60)\n"
            "  --portfolios N     portfolios, 1..1000 (default 5)\n"
            "  --years N          years of business-day history, 1..30 (default 3)\n"
            "  --end-date DATE    last day of history, YYYY-MM-DD (default 2026-10-30)\n"
            "  --quiet            no summary line\n");
    return fp == stdout ? 0 : 2;
}

/* Parses an integer option value in [lo, hi]; prints the error and returns -1 otherwise. */
static int
kf_sample_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "kinfer sample-data: %s must be an integer in %lld..%lld, got '%s'\n", opt,
                lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int
kf_cmd_sample_data(int argc, char **argv)
{
    const char *dsn = NULL, *csv = NULL;
    kf_risk_sample_opts_t opts = {0};
    int quiet = 0;
    char errstr[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return kf_sample_usage(stdout);
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kinfer sample-data: unknown option or missing value: %s\n", a);
            return kf_sample_usage(stderr);
        }
        const char *v = argv[++i];
        long long x;
        if (!strcmp(a, "--dsn"))
            dsn = v;
        else if (!strcmp(a, "--csv"))
            csv = v;
        else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            opts.seed = strtoull(v, &end, 10);
            if (!*v || *end || errno || *v == '-') {
                fprintf(stderr, "kinfer sample-data: --seed must be an unsigned integer\n");
                return 2;
            }
        } else if (!strcmp(a, "--instruments")) {
            if (kf_sample_int(a, v, 50, 5000, &x))
                return 2;
            opts.ninstruments = (int)x;
        } else if (!strcmp(a, "--portfolios")) {
            if (kf_sample_int(a, v, 1, 1000, &x))
                return 2;
            opts.nportfolios = (int)x;
        } else if (!strcmp(a, "--years")) {
            if (kf_sample_int(a, v, 1, 30, &x))
                return 2;
            opts.years = (int)x;
        } else if (!strcmp(a, "--end-date")) {
            if (kf_risk_date_parse(v, &opts.end_date, errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer sample-data: --end-date: %s\n", errstr);
                return 2;
            }
        } else {
            fprintf(stderr, "kinfer sample-data: unknown option %s\n", a);
            return kf_sample_usage(stderr);
        }
    }
    if (!csv && !dsn)
        dsn = getenv("KINFER_PG_DSN");
    if ((!csv && !dsn) || (csv && dsn)) {
        fprintf(stderr, "kinfer sample-data: give exactly one of --dsn DSN or --csv DIR "
                        "(KINFER_PG_DSN is not set)\n");
        return 2;
    }

    kf_buf_t bufs[KF_RISK_SAMPLE_NTABLES];
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++)
        kf_buf_init(&bufs[t], 0);
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kf_err_t err = kf_risk_sample_generate(&opts, bufs, errstr, sizeof(errstr));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!err)
        err = csv ? kf_sample_write(csv, bufs, errstr, sizeof(errstr))
                  : kf_sample_load(dsn, bufs, errstr, sizeof(errstr));
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (err) {
        fprintf(stderr, "kinfer sample-data: %s\n", errstr);
    } else if (!quiet) {
        /* Row counts: lines minus the header. */
        fprintf(stderr, "sample-data: ");
        for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++) {
            size_t rows = 0;
            for (size_t j = 0; j < bufs[t].len; j++)
                rows += bufs[t].data[j] == '\n';
            fprintf(stderr, "%s%s=%zu", t ? " " : "", kf_risk_sample_tables[t], rows - 1);
        }
        fprintf(stderr, "; generated in %.0f ms, %s in %.0f ms\n",
                (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
                csv ? "written" : "loaded with COPY",
                (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6);
    }
    for (int t = 0; t < KF_RISK_SAMPLE_NTABLES; t++)
        kf_buf_free(&bufs[t]);
    return err ? 1 : 0;
}
