/*
 * risk.c: the input builder and every metric of kf_risk.h.
 *
 * The work is organised so that a 500-position portfolio with 3 years of history stays far
 * below a millisecond budget per metric: the aligned base-currency returns are held per
 * position (column-major, so each asset's loop is contiguous), and the variance-covariance
 * figures use the identity S v = R_c' (R_c v) / (n - 1) (R_c: centred returns, v: position
 * values) instead of forming the n x n covariance matrix: the same numbers in O(n T) instead of
 * O(n^2 T). tests/reference/risk_ref.py computes them the long way (np.cov) as a cross-check.
 * Definitions are in docs/risk-metrics.md; comments here only say how and why.
 */
#include "kf_risk.h"
#include "risk_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double kf_risk_confidence[KF_RISK_NCONF] = {0.95, 0.99};

/* ---- dates ---------------------------------------------------------------------------- */

/* Howard Hinnant's days_from_civil: exact for the proleptic Gregorian calendar. */
int32_t
kf_risk_days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + doe - 719468);
}

static void
kf_risk_civil_from_days(int32_t z, int *y, int *m, int *d)
{
    z += 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

kf_err_t
kf_risk_date_parse(const char *text, int32_t *out_days, char *errstr, size_t errstr_size)
{
    KF_ASSERT(out_days);
    int v[3] = {0, 0, 0};
    static const int width[3] = {4, 2, 2};
    const char *p = text;
    if (!text)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "date is missing");
    /* Exactly YYYY-MM-DD: sscanf would accept signs, spaces and short fields. */
    for (int f = 0; f < 3; f++) {
        for (int i = 0; i < width[f]; i++, p++) {
            if (*p < '0' || *p > '9')
                goto bad;
            v[f] = v[f] * 10 + (*p - '0');
        }
        if (f < 2 && *p++ != '-')
            goto bad;
    }
    if (*p)
        goto bad;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (v[0] < 1900 || v[0] > 2999 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1])
        goto bad;
    int leap = (v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0;
    if (v[1] == 2 && v[2] == 29 && !leap)
        goto bad;
    *out_days = kf_risk_days_from_civil(v[0], v[1], v[2]);
    return KF_OK;
bad:
    return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                      "invalid date '%.40s' (want YYYY-MM-DD, years 1900-2999)", text);
}

char *
kf_risk_date_format(int32_t days, char *buf)
{
    int y, m, d;
    kf_risk_civil_from_days(days, &y, &m, &d);
    /* Years outside 0..9999 never come from the parser; clamping keeps the 11-byte contract.
     * Digits are written by hand: snprintf's truncation warning cannot see the ranges. */
    if (y < 0 || y > 9999)
        y = 0;
    const int v[3] = {y, m, d}, w[3] = {4, 2, 2};
    char *p = buf;
    for (int f = 0; f < 3; f++) {
        for (int i = w[f] - 1, x = v[f]; i >= 0; i--, x /= 10)
            p[i] = (char)('0' + x % 10);
        p += w[f];
        *p++ = f < 2 ? '-' : '\0';
    }
    return buf;
}

int
kf_risk_date_weekday(int32_t days)
{
    /* 1970-01-01 was a Thursday (3 when Monday is 0). */
    int w = (int)((days % 7 + 7) % 7);
    return (w + 3) % 7;
}

/* ---- string map ----------------------------------------------------------------------- */

static uint64_t
kf_risk_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void
kf_risk_map_free(kf_risk_map_t *map)
{
    free(map->keys);
    free(map->vals);
    memset(map, 0, sizeof(*map));
}

int
kf_risk_map_get(const kf_risk_map_t *map, const char *key)
{
    if (!map->cap)
        return -1;
    for (size_t i = kf_risk_hash(key) & (map->cap - 1);; i = (i + 1) & (map->cap - 1)) {
        if (!map->keys[i])
            return -1;
        if (!strcmp(map->keys[i], key))
            return map->vals[i];
    }
}

int
kf_risk_map_put(kf_risk_map_t *map, const char *key, int val)
{
    if ((map->n + 1) * 2 > map->cap) {
        /* Grow and rehash: the table stays at most half full so probes stay short. */
        size_t ncap = map->cap ? map->cap * 2 : 16;
        const char **nkeys = calloc(ncap, sizeof(*nkeys));
        int *nvals = calloc(ncap, sizeof(*nvals));
        if (!nkeys || !nvals) {
            free(nkeys);
            free(nvals);
            return -1;
        }
        for (size_t j = 0; j < map->cap; j++) {
            if (!map->keys[j])
                continue;
            size_t i = kf_risk_hash(map->keys[j]) & (ncap - 1);
            while (nkeys[i])
                i = (i + 1) & (ncap - 1);
            nkeys[i] = map->keys[j];
            nvals[i] = map->vals[j];
        }
        free(map->keys);
        free(map->vals);
        map->keys = nkeys;
        map->vals = nvals;
        map->cap = ncap;
    }
    size_t i = kf_risk_hash(key) & (map->cap - 1);
    while (map->keys[i] && strcmp(map->keys[i], key))
        i = (i + 1) & (map->cap - 1);
    if (!map->keys[i])
        map->n++;
    map->keys[i] = key;
    map->vals[i] = val;
    return 0;
}

/* ---- inputs --------------------------------------------------------------------------- */

typedef struct kf_risk_obs {
    int32_t date;
    double v;
} kf_risk_obs_t;

/* A dated series. `sorted` stays 1 while observations arrive in increasing date order, the
 * loaders' case, so compute only sorts what came out of order. */
typedef struct kf_risk_series {
    kf_risk_obs_t *obs;
    size_t n, cap;
    int sorted;
} kf_risk_series_t;

typedef struct kf_risk_pos {
    char *symbol, *asset_class, *sector, *currency;
    double quantity, cost_basis;
    kf_risk_series_t px;
} kf_risk_pos_t;

typedef struct kf_risk_ccy {
    char *code;
    kf_risk_series_t fx;
} kf_risk_ccy_t;

typedef struct kf_risk_shock {
    int dim; /* KF_RISK_DIM_* */
    char *key;
    double shock;
} kf_risk_shock_t;

typedef struct kf_risk_scenario {
    char *name;
    kf_risk_shock_t *shocks;
    size_t n, cap;
} kf_risk_scenario_t;

typedef struct kf_risk_limit {
    int metric; /* index into kf_risk_metric_names */
    double threshold;
} kf_risk_limit_t;

enum { KF_RISK_DIM_ASSET_CLASS, KF_RISK_DIM_SECTOR, KF_RISK_DIM_CURRENCY, KF_RISK_DIM_SYMBOL };
static const char *const kf_risk_dim_names[] = {"asset_class", "sector", "currency", "symbol"};

struct kf_risk_input {
    char *portfolio, *base;
    kf_risk_pos_t *pos;
    size_t npos, cappos;
    kf_risk_map_t pos_map;
    kf_risk_ccy_t *ccy; /* every currency with FX data, plus held/base ones */
    size_t nccy, capccy;
    const char **needed; /* held + base currencies except USD, NULL-terminated */
    size_t nneeded;
    kf_risk_limit_t *limits;
    size_t nlimits, caplimits;
    kf_risk_scenario_t *scen;
    size_t nscen, capscen;
};

/* Grows *arr (element size sz) to hold at least want elements. */
static int
kf_risk_grow(void *arr, size_t *cap, size_t want, size_t sz)
{
    if (want <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < want)
        ncap *= 2;
    void *p = realloc(*(void **)arr, ncap * sz);
    if (!p)
        return -1;
    *(void **)arr = p;
    *cap = ncap;
    return 0;
}

static char *
kf_risk_strdup(const char *s)
{
    return strdup(s ? s : "");
}

/* Names end up in JSON reports, which must be valid UTF-8: reject anything else (overlong
 * forms, surrogates and code points above U+10FFFF included) and names over 256 bytes. */
static int
kf_risk_name_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t len = strlen((const char *)p);
    if (len > 256)
        return 0;
    while (*p) {
        unsigned c = *p;
        int n = c < 0x80             ? 0
                : (c & 0xe0) == 0xc0 ? 1
                : (c & 0xf0) == 0xe0 ? 2
                : (c & 0xf8) == 0xf0 ? 3
                                     : -1;
        if (n < 0)
            return 0;
        unsigned cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const unsigned min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* ISO 4217 shape: three upper-case ASCII letters (the database checks the same). */
static int
kf_risk_ccy_ok(const char *s)
{
    return s && strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
           s[2] >= 'A' && s[2] <= 'Z';
}

kf_err_t
kf_risk_input_new(const char *portfolio_id,
                  const char *base_currency,
                  kf_risk_input_t **out_in,
                  char *errstr,
                  size_t errstr_size)
{
    KF_ASSERT(out_in);
    *out_in = NULL;
    if (!kf_risk_ccy_ok(base_currency))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "base currency must be a 3-letter code");
    if (!kf_risk_name_ok(portfolio_id))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "portfolio id must be valid UTF-8 of at most 256 bytes");
    kf_risk_input_t *in = calloc(1, sizeof(*in));
    if (!in || !(in->portfolio = kf_risk_strdup(portfolio_id)) ||
        !(in->base = kf_risk_strdup(base_currency)) || !(in->needed = calloc(1, sizeof(char *)))) {
        kf_risk_input_destroy(in);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    *out_in = in;
    return KF_OK;
}

void
kf_risk_input_destroy(kf_risk_input_t *in)
{
    if (!in)
        return;
    for (size_t i = 0; i < in->npos; i++) {
        kf_risk_pos_t *p = &in->pos[i];
        free(p->symbol);
        free(p->asset_class);
        free(p->sector);
        free(p->currency);
        free(p->px.obs);
    }
    for (size_t i = 0; i < in->nccy; i++) {
        free(in->ccy[i].code);
        free(in->ccy[i].fx.obs);
    }
    for (size_t i = 0; i < in->nscen; i++) {
        for (size_t j = 0; j < in->scen[i].n; j++)
            free(in->scen[i].shocks[j].key);
        free(in->scen[i].shocks);
        free(in->scen[i].name);
    }
    free(in->scen);
    free(in->limits);
    free(in->needed);
    free(in->ccy);
    free(in->pos);
    kf_risk_map_free(&in->pos_map);
    free(in->portfolio);
    free(in->base);
    free(in);
}

/* Index of currency code in in->ccy, creating it when create is set; -1 if absent or OOM. */
static int
kf_risk_ccy_find(kf_risk_input_t *in, const char *code, int create)
{
    for (size_t i = 0; i < in->nccy; i++)
        if (!strcmp(in->ccy[i].code, code))
            return (int)i;
    if (!create || kf_risk_grow(&in->ccy, &in->capccy, in->nccy + 1, sizeof(*in->ccy)))
        return -1;
    kf_risk_ccy_t *c = &in->ccy[in->nccy];
    memset(c, 0, sizeof(*c));
    c->fx.sorted = 1;
    if (!(c->code = strdup(code)))
        return -1;
    return (int)in->nccy++;
}

/* Records that `code` needs an FX series (held or base, not USD). */
static int
kf_risk_need_ccy(kf_risk_input_t *in, const char *code)
{
    if (!strcmp(code, "USD"))
        return 0;
    for (size_t i = 0; i < in->nneeded; i++)
        if (!strcmp(in->needed[i], code))
            return 0;
    int c = kf_risk_ccy_find(in, code, 1);
    if (c < 0)
        return -1;
    const char **n = realloc(in->needed, (in->nneeded + 2) * sizeof(*n));
    if (!n)
        return -1;
    in->needed = n;
    n[in->nneeded++] = in->ccy[c].code;
    n[in->nneeded] = NULL;
    return 0;
}

kf_err_t
kf_risk_input_add_position(kf_risk_input_t *in,
                           const kf_risk_position_t *pos,
                           char *errstr,
                           size_t errstr_size)
{
    KF_ASSERT(in && pos);
    if (!pos->symbol || !*pos->symbol)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "position without a symbol");
    if (!kf_risk_name_ok(pos->symbol) || !kf_risk_name_ok(pos->asset_class) ||
        !kf_risk_name_ok(pos->sector))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "position: symbol, asset class and sector must be valid UTF-8 of at "
                          "most 256 bytes");
    if (!kf_risk_ccy_ok(pos->currency))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "position %s: currency must be a 3-letter code", pos->symbol);
    if (!pos->asset_class || !*pos->asset_class)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "position %s: asset class is required", pos->symbol);
    if (!isfinite(pos->quantity) || pos->quantity == 0 || !isfinite(pos->cost_basis))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "position %s: quantity must be finite and non-zero, cost basis finite",
                          pos->symbol);
    if (kf_risk_map_get(&in->pos_map, pos->symbol) >= 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "position %s added twice",
                          pos->symbol);
    if (kf_risk_grow(&in->pos, &in->cappos, in->npos + 1, sizeof(*in->pos)))
        goto nomem;
    kf_risk_pos_t *p = &in->pos[in->npos];
    memset(p, 0, sizeof(*p));
    p->px.sorted = 1;
    p->quantity = pos->quantity;
    p->cost_basis = pos->cost_basis;
    if (!(p->symbol = strdup(pos->symbol)) || !(p->asset_class = strdup(pos->asset_class)) ||
        !(p->sector = kf_risk_strdup(pos->sector)) || !(p->currency = strdup(pos->currency)) ||
        kf_risk_need_ccy(in, p->currency) || kf_risk_need_ccy(in, in->base) ||
        kf_risk_map_put(&in->pos_map, p->symbol, (int)in->npos)) {
        free(p->symbol);
        free(p->asset_class);
        free(p->sector);
        free(p->currency);
        goto nomem;
    }
    in->npos++;
    return KF_OK;
nomem:
    return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
}

/* Appends an observation, keeping track of ordering; -1 OOM, -2 duplicate of the last date. */
static int
kf_risk_series_add(kf_risk_series_t *s, int32_t date, double v)
{
    if (s->n && s->sorted) {
        int32_t last = s->obs[s->n - 1].date;
        if (date == last)
            return -2;
        if (date < last)
            s->sorted = 0;
    }
    if (kf_risk_grow(&s->obs, &s->cap, s->n + 1, sizeof(*s->obs)))
        return -1;
    s->obs[s->n].date = date;
    s->obs[s->n].v = v;
    s->n++;
    return 0;
}

kf_err_t
kf_risk_input_add_price(kf_risk_input_t *in,
                        const char *symbol,
                        int32_t date,
                        double close,
                        char *errstr,
                        size_t errstr_size)
{
    KF_ASSERT(in && symbol);
    int i = kf_risk_map_get(&in->pos_map, symbol);
    if (i < 0)
        return KF_OK;
    if (date < KF_RISK_DATE_MIN || date > KF_RISK_DATE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "price of %s: date %d outside 1900-2999", symbol, (int)date);
    if (!isfinite(close) || close <= 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "price of %s: close must be finite and positive", symbol);
    int rc = kf_risk_series_add(&in->pos[i].px, date, close);
    if (rc == -2) {
        char d[11];
        return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "price of %s on %s given twice",
                          symbol, kf_risk_date_format(date, d));
    }
    return rc ? kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory") : KF_OK;
}

kf_err_t
kf_risk_input_add_fx(kf_risk_input_t *in,
                     const char *currency,
                     int32_t date,
                     double usd_per_unit,
                     char *errstr,
                     size_t errstr_size)
{
    KF_ASSERT(in && currency);
    if (!kf_risk_ccy_ok(currency) || !strcmp(currency, "USD"))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "FX currency '%.16s' must be a 3-letter code other than USD", currency);
    if (date < KF_RISK_DATE_MIN || date > KF_RISK_DATE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "FX rate of %s: date %d outside 1900-2999", currency, (int)date);
    if (!isfinite(usd_per_unit) || usd_per_unit <= 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "FX rate of %s must be finite and positive", currency);
    int c = kf_risk_ccy_find(in, currency, 1);
    if (c < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    int rc = kf_risk_series_add(&in->ccy[c].fx, date, usd_per_unit);
    if (rc == -2) {
        char d[11];
        return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "FX rate of %s on %s given twice",
                          currency, kf_risk_date_format(date, d));
    }
    return rc ? kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory") : KF_OK;
}

/* Limit metrics, in the order of KF_RISK_LIMIT_METRICS. */
enum {
    KF_RISK_M_VAR95_1D,
    KF_RISK_M_VAR99_1D,
    KF_RISK_M_VAR95_10D,
    KF_RISK_M_VAR99_10D,
    KF_RISK_M_ES95_1D,
    KF_RISK_M_ES99_1D,
    KF_RISK_M_ES95_10D,
    KF_RISK_M_ES99_10D,
    KF_RISK_M_PVAR99_1D,
    KF_RISK_M_PVAR99_10D,
    KF_RISK_M_EWMA_VOL,
    KF_RISK_M_MDD,
    KF_RISK_M_MAX_W,
    KF_RISK_M_MAX_SECTOR,
    KF_RISK_M_MAX_CLASS,
    KF_RISK_M_MAX_CCY,
    KF_RISK_M_TOP5,
    KF_RISK_M_HHI,
    KF_RISK_M__COUNT
};
static const char *const kf_risk_metric_names[KF_RISK_M__COUNT] = {
    "var_95_1d",           "var_99_1d",         "var_95_10d",
    "var_99_10d",          "es_95_1d",          "es_99_1d",
    "es_95_10d",           "es_99_10d",         "param_var_99_1d",
    "param_var_99_10d",    "ewma_vol_1d",       "max_drawdown",
    "max_weight_single",   "max_sector_weight", "max_asset_class_weight",
    "max_currency_weight", "top5_weight",       "hhi"};

kf_err_t
kf_risk_input_add_limit(
    kf_risk_input_t *in, const char *metric, double threshold, char *errstr, size_t errstr_size)
{
    KF_ASSERT(in && metric);
    int m = -1;
    for (int i = 0; i < KF_RISK_M__COUNT; i++)
        if (!strcmp(kf_risk_metric_names[i], metric))
            m = i;
    if (m < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "unknown limit metric '%.64s' (known: " KF_RISK_LIMIT_METRICS ")",
                          metric);
    if (!isfinite(threshold))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "limit %s: threshold must be finite", metric);
    for (size_t i = 0; i < in->nlimits; i++)
        if (in->limits[i].metric == m)
            return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "limit %s given twice", metric);
    if (kf_risk_grow(&in->limits, &in->caplimits, in->nlimits + 1, sizeof(*in->limits)))
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    in->limits[in->nlimits].metric = m;
    in->limits[in->nlimits].threshold = threshold;
    in->nlimits++;
    return KF_OK;
}

kf_err_t
kf_risk_input_add_shock(kf_risk_input_t *in,
                        const char *scenario,
                        const char *dimension,
                        const char *key,
                        double shock,
                        char *errstr,
                        size_t errstr_size)
{
    KF_ASSERT(in && scenario && dimension && key);
    int dim = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(kf_risk_dim_names[i], dimension))
            dim = i;
    if (dim < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "scenario %.64s: unknown shock dimension '%.32s' (asset_class, sector, "
                          "currency, symbol)",
                          scenario, dimension);
    if (!kf_risk_name_ok(scenario) || !kf_risk_name_ok(key))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "scenario and shock key must be valid UTF-8 of at most 256 bytes");
    if (!*scenario || !isfinite(shock) || shock <= -1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "scenario '%.64s': shock of %s %.64s must be finite and > -1", scenario,
                          dimension, key);
    size_t s = 0;
    while (s < in->nscen && strcmp(in->scen[s].name, scenario))
        s++;
    if (s == in->nscen) {
        if (kf_risk_grow(&in->scen, &in->capscen, in->nscen + 1, sizeof(*in->scen)))
            goto nomem;
        memset(&in->scen[s], 0, sizeof(in->scen[s]));
        if (!(in->scen[s].name = strdup(scenario)))
            goto nomem;
        in->nscen++;
    }
    kf_risk_scenario_t *sc = &in->scen[s];
    for (size_t j = 0; j < sc->n; j++)
        if (sc->shocks[j].dim == dim && !strcmp(sc->shocks[j].key, key))
            return kf_err_set(errstr, errstr_size, KF_ERR_EXISTS,
                              "scenario %.64s: shock of %s %.64s given twice", scenario, dimension,
                              key);
    if (kf_risk_grow(&sc->shocks, &sc->cap, sc->n + 1, sizeof(*sc->shocks)))
        goto nomem;
    if (!(sc->shocks[sc->n].key = strdup(key)))
        goto nomem;
    sc->shocks[sc->n].dim = dim;
    sc->shocks[sc->n].shock = shock;
    sc->n++;
    return KF_OK;
nomem:
    return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
}

const char *
kf_risk_input_portfolio(const kf_risk_input_t *in)
{
    return in->portfolio;
}

const char *
kf_risk_input_base_currency(const kf_risk_input_t *in)
{
    return in->base;
}

size_t
kf_risk_input_npositions(const kf_risk_input_t *in)
{
    return in->npos;
}

const char *const *
kf_risk_input_currencies(const kf_risk_input_t *in)
{
    return in->needed;
}

/* ---- normal distribution -------------------------------------------------------------- */

double
kf_risk_norm_inv(double p)
{
    KF_ASSERT(p > 0 && p < 1);
    /* Acklam's rational approximation (relative error 1.15e-9), then one Halley step on
     * Phi(x) - p using erfc, which brings it to machine precision. */
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                               -2.759285104469687e+02, 1.383577518672690e+02,
                               -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                               -1.556989798598866e+02, 6.680131188771972e+01,
                               -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                               -2.400758277161838e+00, -2.549732539343734e+00,
                               4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x, q, r;
    if (p < 0.02425) {
        q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p <= 1 - 0.02425) {
        q = p - 0.5;
        r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    } else {
        q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double e = 0.5 * erfc(-x / sqrt(2.0)) - p;
    double u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

static double
kf_risk_norm_pdf(double x)
{
    return exp(-0.5 * x * x) / sqrt(2 * M_PI);
}

/* ---- computation ---------------------------------------------------------------------- */

static int
kf_risk_obs_cmp(const void *a, const void *b)
{
    int32_t x = ((const kf_risk_obs_t *)a)->date, y = ((const kf_risk_obs_t *)b)->date;
    return (x > y) - (x < y);
}

static int
kf_risk_dbl_desc(const void *a, const void *b)
{
    /* Total order even with NaN (first): qsort needs a consistent comparator. */
    double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x) || isnan(y))
        return isnan(y) - isnan(x);
    return (x < y) - (x > y);
}

/* Sorts a series copy by date; returns the first duplicated date's index or -1. The input
 * stays const: compute may run on several threads over one input only if nothing mutates it,
 * so out-of-order series are sorted into scratch storage. */
static const kf_risk_obs_t *
kf_risk_sorted(const kf_risk_series_t *s, kf_risk_obs_t **scratch, int32_t *dup)
{
    static const kf_risk_obs_t none[1];
    *dup = INT32_MIN;
    if (s->n == 0)
        return none; /* an empty series is not an allocation failure */
    if (s->sorted)
        return s->obs;
    kf_risk_obs_t *c = malloc(s->n * sizeof(*c));
    if (!c)
        return NULL;
    memcpy(c, s->obs, s->n * sizeof(*c));
    qsort(c, s->n, sizeof(*c), kf_risk_obs_cmp);
    for (size_t i = 1; i < s->n; i++)
        if (c[i].date == c[i - 1].date) {
            *dup = c[i].date;
            break;
        }
    *scratch = c;
    return c;
}

/* Carries a sorted series forward onto the calendar cal[0..T]: out[t] = last value dated
 * <= cal[t]. Returns 0, or -1 when there is no value on or before cal[0]. */
static int
kf_risk_align(const kf_risk_obs_t *obs, size_t n, const int32_t *cal, int T, double *out)
{
    size_t j = 0;
    double last = NAN;
    for (int t = 0; t <= T; t++) {
        while (j < n && obs[j].date <= cal[t])
            last = obs[j++].v;
        if (isnan(last))
            return -1;
        out[t] = last;
    }
    return 0;
}

/* Report strings live in one pool freed with the report. */
typedef struct kf_risk_report_int {
    kf_risk_report_t pub;
    char **strs;
    size_t nstrs, capstrs;
} kf_risk_report_int_t;

static const char *
kf_risk_keep(kf_risk_report_int_t *ri, const char *s)
{
    if (kf_risk_grow(&ri->strs, &ri->capstrs, ri->nstrs + 1, sizeof(*ri->strs)))
        return NULL;
    char *c = strdup(s);
    if (c)
        ri->strs[ri->nstrs++] = c;
    return c;
}

void
kf_risk_report_destroy(kf_risk_report_t *rep)
{
    if (!rep)
        return;
    kf_risk_report_int_t *ri = (kf_risk_report_int_t *)rep;
    for (size_t i = 0; i < ri->nstrs; i++)
        free(ri->strs[i]);
    free(ri->strs);
    free(rep->positions);
    free(rep->by_asset_class);
    free(rep->by_sector);
    free(rep->by_currency);
    free(rep->limits);
    free(rep->stress);
    free(rep->pnl);
    free(rep->values);
    free(rep->dates);
    free(ri);
}

static int
kf_risk_expo_cmp(const void *a, const void *b)
{
    const kf_risk_exposure_t *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? 1 : -1;
    return strcmp(x->key, y->key);
}

/* Groups position values by one attribute (field offset into kf_risk_pos_result_t). */
static int
kf_risk_group(kf_risk_report_t *rep, size_t field, kf_risk_exposure_t **out, size_t *out_n)
{
    kf_risk_exposure_t *g = calloc(rep->npositions ? rep->npositions : 1, sizeof(*g));
    size_t n = 0;
    if (!g)
        return -1;
    for (size_t i = 0; i < rep->npositions; i++) {
        const kf_risk_pos_result_t *p = &rep->positions[i];
        const char *key = *(const char *const *)((const char *)p + field);
        size_t j = 0;
        while (j < n && strcmp(g[j].key, key))
            j++;
        if (j == n)
            g[n++].key = key;
        g[j].value += p->value;
    }
    for (size_t j = 0; j < n; j++)
        g[j].weight = g[j].value / rep->value;
    qsort(g, n, sizeof(*g), kf_risk_expo_cmp);
    *out = g;
    *out_n = n;
    return 0;
}

static double
kf_risk_max_weight(const kf_risk_exposure_t *g, size_t n)
{
    double m = -INFINITY;
    for (size_t i = 0; i < n; i++)
        m = g[i].weight > m ? g[i].weight : m;
    return n ? m : 0;
}

/* Observed value of a limit metric, as documented in kf_risk.h. */
static double
kf_risk_observe(const kf_risk_report_t *r, int m)
{
    double v = r->value;
    switch (m) {
    case KF_RISK_M_VAR95_1D:
        return r->hist[KF_RISK_C95].var_1d / v;
    case KF_RISK_M_VAR99_1D:
        return r->hist[KF_RISK_C99].var_1d / v;
    case KF_RISK_M_VAR95_10D:
        return r->hist[KF_RISK_C95].var_10d / v;
    case KF_RISK_M_VAR99_10D:
        return r->hist[KF_RISK_C99].var_10d / v;
    case KF_RISK_M_ES95_1D:
        return r->hist[KF_RISK_C95].es_1d / v;
    case KF_RISK_M_ES99_1D:
        return r->hist[KF_RISK_C99].es_1d / v;
    case KF_RISK_M_ES95_10D:
        return r->hist[KF_RISK_C95].es_10d / v;
    case KF_RISK_M_ES99_10D:
        return r->hist[KF_RISK_C99].es_10d / v;
    case KF_RISK_M_PVAR99_1D:
        return r->param[KF_RISK_C99].var_1d / v;
    case KF_RISK_M_PVAR99_10D:
        return r->param[KF_RISK_C99].var_10d / v;
    case KF_RISK_M_EWMA_VOL:
        return r->ewma_vol_1d;
    case KF_RISK_M_MDD:
        return r->max_drawdown;
    case KF_RISK_M_MAX_W:
        return r->max_weight;
    case KF_RISK_M_MAX_SECTOR:
        return kf_risk_max_weight(r->by_sector, r->nsector);
    case KF_RISK_M_MAX_CLASS:
        return kf_risk_max_weight(r->by_asset_class, r->nasset_class);
    case KF_RISK_M_MAX_CCY:
        return kf_risk_max_weight(r->by_currency, r->ncurrency);
    case KF_RISK_M_TOP5:
        return r->top5_weight;
    default:
        return r->hhi;
    }
}

/* Relative price shock of position p in scenario sc: symbol, else sector, else asset class. */
static double
kf_risk_price_shock(const kf_risk_scenario_t *sc, const kf_risk_pos_t *p)
{
    double by_dim[3] = {0, 0, 0};
    int have[3] = {0, 0, 0};
    for (size_t j = 0; j < sc->n; j++) {
        const kf_risk_shock_t *s = &sc->shocks[j];
        int slot = s->dim == KF_RISK_DIM_SYMBOL        ? 0
                   : s->dim == KF_RISK_DIM_SECTOR      ? 1
                   : s->dim == KF_RISK_DIM_ASSET_CLASS ? 2
                                                       : -1;
        const char *attr = slot == 0 ? p->symbol : slot == 1 ? p->sector : p->asset_class;
        if (slot >= 0 && !strcmp(s->key, attr)) {
            by_dim[slot] = s->shock;
            have[slot] = 1;
        }
    }
    for (int k = 0; k < 3; k++)
        if (have[k])
            return by_dim[k];
    return 0;
}

static double
kf_risk_ccy_shock(const kf_risk_scenario_t *sc, const char *ccy)
{
    for (size_t j = 0; j < sc->n; j++)
        if (sc->shocks[j].dim == KF_RISK_DIM_CURRENCY && !strcmp(sc->shocks[j].key, ccy))
            return sc->shocks[j].shock;
    return 0;
}

kf_err_t
kf_risk_compute(const kf_risk_input_t *in,
                const kf_risk_opts_t *opts,
                kf_risk_report_t **out_rep,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(in && opts && out_rep);
    *out_rep = NULL;
    kf_err_t err = KF_OK;
    char d1[11];
    int window = opts->window ? opts->window : 500;
    int min_returns = opts->min_returns > 2 ? opts->min_returns : 2;
    double lambda = opts->ewma_lambda != 0 ? opts->ewma_lambda : 0.94;
    if (window < 2 || window > 100000 || !(lambda > 0 && lambda < 1) ||
        opts->as_of < KF_RISK_DATE_MIN || opts->as_of > KF_RISK_DATE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "bad options: window %d (2..100000), EWMA lambda %g (0..1), as-of %d",
                          window, lambda, (int)opts->as_of);
    if (in->npos == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "portfolio %s has no positions",
                          in->portfolio);

    size_t n = in->npos;
    const kf_risk_obs_t **px = calloc(n, sizeof(*px));
    kf_risk_obs_t **scratch = calloc(n + in->nccy, sizeof(*scratch));
    size_t *npx = calloc(n, sizeof(*npx));
    unsigned char *seen = NULL;
    int32_t *cal = NULL;
    double *u = NULL, *r = NULL, *xrate = NULL, *loss = NULL, *sv = NULL, *w = NULL;
    kf_risk_report_int_t *ri = calloc(1, sizeof(*ri));
    kf_risk_report_t *rep = &ri->pub;
    if (!px || !scratch || !npx || !ri)
        goto nomem;

    /* 1. Sorted views of the price series, cut at as_of, and the calendar span. */
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        int32_t dup;
        px[i] = kf_risk_sorted(&in->pos[i].px, &scratch[i], &dup);
        if (!px[i])
            goto nomem;
        if (dup != INT32_MIN) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "price of %s on %s given twice",
                             in->pos[i].symbol, kf_risk_date_format(dup, d1));
            goto out;
        }
        size_t m = in->pos[i].px.n;
        while (m > 0 && px[i][m - 1].date > opts->as_of)
            m--;
        npx[i] = m;
        if (m) {
            lo = px[i][0].date < lo ? px[i][0].date : lo;
            hi = px[i][m - 1].date > hi ? px[i][m - 1].date : hi;
        }
    }
    /* 2. Calendar: union of the held symbols' price dates (a bitmap over the span, O(obs)). */
    int ncal = 0;
    if (lo <= hi) {
        size_t span = (size_t)(hi - lo) + 1;
        if (!(seen = calloc(span, 1)))
            goto nomem;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < npx[i]; j++)
                seen[px[i][j].date - lo] = 1;
        /* Only the last window + 1 dates are needed: walk back from the end. */
        if (!(cal = malloc(((size_t)window + 1) * sizeof(*cal))))
            goto nomem;
        for (int64_t dd = (int64_t)span - 1; dd >= 0 && ncal <= window; dd--)
            if (seen[dd])
                cal[ncal++] = lo + (int32_t)dd;
        for (int a = 0, b = ncal - 1; a < b; a++, b--) {
            int32_t t = cal[a];
            cal[a] = cal[b];
            cal[b] = t;
        }
    }
    int T = ncal - 1; /* number of returns */
    if (T < min_returns) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                         "portfolio %s: only %d daily returns up to %s, need at least %d",
                         in->portfolio, T < 0 ? 0 : T, kf_risk_date_format(opts->as_of, d1),
                         min_returns);
        goto out;
    }
    size_t T1 = (size_t)T + 1;

    /* 3. FX per needed currency on the calendar, as USD per unit; USD is 1. */
    size_t nc = in->nccy;
    if (!(xrate = malloc((nc + 1) * T1 * sizeof(*xrate))))
        goto nomem;
    double *usd = xrate + nc * T1;
    for (size_t t = 0; t < T1; t++)
        usd[t] = 1.0;
    for (size_t c = 0; c < nc; c++) {
        int needed = 0;
        for (size_t k = 0; k < in->nneeded; k++)
            needed |= !strcmp(in->needed[k], in->ccy[c].code);
        if (!needed)
            continue;
        int32_t dup;
        const kf_risk_obs_t *fx = kf_risk_sorted(&in->ccy[c].fx, &scratch[n + c], &dup);
        if (!fx)
            goto nomem;
        if (dup != INT32_MIN) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_EXISTS, "FX rate of %s on %s given twice",
                             in->ccy[c].code, kf_risk_date_format(dup, d1));
            goto out;
        }
        if (kf_risk_align(fx, in->ccy[c].fx.n, cal, T, xrate + c * T1)) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                             "no FX rate for %s on or before %s", in->ccy[c].code,
                             kf_risk_date_format(cal[0], d1));
            goto out;
        }
    }
    const double *xbase = usd;
    for (size_t c = 0; c < nc; c++)
        if (!strcmp(in->ccy[c].code, in->base))
            xbase = xrate + c * T1;

    /* 4. Base-currency value per unit u[i][t] = price * (X_ccy / X_base); returns r[i][t-1]. */
    if (!(u = malloc(n * T1 * sizeof(*u))) || !(r = malloc(n * (size_t)T * sizeof(*r))) ||
        !(rep->positions = calloc(n, sizeof(*rep->positions))))
        goto nomem;
    rep->npositions = n;
    double value = 0;
    for (size_t i = 0; i < n; i++) {
        const kf_risk_pos_t *p = &in->pos[i];
        double *ui = u + i * T1;
        if (kf_risk_align(px[i], npx[i], cal, T, ui)) {
            err =
                kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "no price for %s on or before %s",
                           p->symbol, kf_risk_date_format(cal[0], d1));
            goto out;
        }
        const double *xc = usd;
        for (size_t c = 0; c < nc; c++)
            if (!strcmp(in->ccy[c].code, p->currency))
                xc = xrate + c * T1;
        kf_risk_pos_result_t *pr = &rep->positions[i];
        pr->price = ui[T];
        for (size_t t = 0; t < T1; t++)
            ui[t] *= xc[t] / xbase[t];
        pr->fx = xc[T] / xbase[T];
        pr->quantity = p->quantity;
        pr->value = p->quantity * ui[T];
        pr->unrealized_pnl = p->quantity * (pr->price - p->cost_basis) * pr->fx;
        double *ri_ = r + i * (size_t)T;
        for (int t = 1; t <= T; t++)
            ri_[t - 1] = ui[t] / ui[t - 1] - 1;
        if (!(pr->symbol = kf_risk_keep(ri, p->symbol)) ||
            !(pr->asset_class = kf_risk_keep(ri, p->asset_class)) ||
            !(pr->sector = kf_risk_keep(ri, p->sector)) ||
            !(pr->currency = kf_risk_keep(ri, p->currency)))
            goto nomem;
        value += pr->value;
        rep->unrealized_pnl += pr->unrealized_pnl;
    }
    if (!(value > 0) || !isfinite(value)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                         "portfolio %s: value %g on %s is not positive; weights and relative "
                         "metrics are undefined",
                         in->portfolio, value, kf_risk_date_format(cal[T], d1));
        goto out;
    }
    rep->value = value;
    rep->n_returns = T;
    rep->as_of = opts->as_of;
    rep->first_date = cal[0];
    rep->last_date = cal[T];
    rep->ewma_lambda = lambda;
    if (!(rep->portfolio_id = kf_risk_keep(ri, in->portfolio)) ||
        !(rep->base_currency = kf_risk_keep(ri, in->base)))
        goto nomem;

    /* 5. Historical P&L scenarios: today's position values times each day's returns; the
     * value series: today's quantities at each day's prices. */
    if (!(rep->pnl = calloc((size_t)T, sizeof(double))) ||
        !(rep->values = calloc(T1, sizeof(double))) ||
        !(rep->dates = malloc(T1 * sizeof(int32_t))) ||
        !(loss = malloc((size_t)T * sizeof(double))))
        goto nomem;
    memcpy(rep->dates, cal, T1 * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        double vi = rep->positions[i].value, q = in->pos[i].quantity;
        const double *ri_ = r + i * (size_t)T, *ui = u + i * T1;
        for (int t = 0; t < T; t++)
            rep->pnl[t] += vi * ri_[t];
        for (size_t t = 0; t < T1; t++)
            rep->values[t] += q * ui[t];
    }

    /* Extreme but finite inputs (1e300 prices next to 1e-300 ones) can overflow; every later
     * number derives from these two series, so refusing here keeps NaN out of reports. */
    for (size_t t = 0; t < T1; t++)
        if (!isfinite(rep->values[t]) || (t < (size_t)T && !isfinite(rep->pnl[t])))
            goto out_of_range;

    /* 6. Historical VaR/ES: k-th largest loss, k = ceil(T (1 - c)); ES: mean of the k largest.
     * The epsilon keeps T (1 - c) = 5.000000000000004 (500 * 0.01 in binary) at k = 5. */
    for (int t = 0; t < T; t++)
        loss[t] = -rep->pnl[t];
    qsort(loss, (size_t)T, sizeof(double), kf_risk_dbl_desc);
    for (int l = 0; l < KF_RISK_NCONF; l++) {
        int k = (int)ceil(T * (1 - kf_risk_confidence[l]) - 1e-9);
        k = k < 1 ? 1 : k > T ? T : k;
        double s = 0;
        for (int j = 0; j < k; j++)
            s += loss[j];
        kf_risk_tail_t *tl = &rep->hist[l];
        tl->k = k;
        tl->var_1d = loss[k - 1];
        tl->es_1d = s / k;
        tl->var_10d = tl->var_1d * sqrt(10.0);
        tl->es_10d = tl->es_1d * sqrt(10.0);
    }

    /* 7. Parametric: sigma^2 = v' S v with S the sample covariance (T - 1) of asset returns.
     * v' S v is the sample variance of the P&L series; S v = R_c' y / (T - 1), y = R_c v. */
    double mean_pnl = 0;
    for (int t = 0; t < T; t++)
        mean_pnl += rep->pnl[t];
    mean_pnl /= T;
    double var_p = 0;
    for (int t = 0; t < T; t++)
        var_p += (rep->pnl[t] - mean_pnl) * (rep->pnl[t] - mean_pnl);
    var_p /= (T - 1);
    double sigma = sqrt(var_p);
    rep->param_sigma_1d = sigma;
    for (int l = 0; l < KF_RISK_NCONF; l++) {
        double c = kf_risk_confidence[l], z = kf_risk_norm_inv(c);
        kf_risk_tail_t *tl = &rep->param[l];
        tl->var_1d = z * sigma;
        tl->es_1d = sigma * kf_risk_norm_pdf(z) / (1 - c);
        tl->var_10d = tl->var_1d * sqrt(10.0);
        tl->es_10d = tl->es_1d * sqrt(10.0);
    }
    /* Component VaR (Euler): v_i (S v)_i / sigma * z; they sum to z * sigma. */
    double z99 = kf_risk_norm_inv(kf_risk_confidence[KF_RISK_C99]);
    for (size_t i = 0; i < n; i++) {
        const double *ri_ = r + i * (size_t)T;
        double mean = 0, cov = 0;
        for (int t = 0; t < T; t++)
            mean += ri_[t];
        mean /= T;
        for (int t = 0; t < T; t++)
            cov += (ri_[t] - mean) * (rep->pnl[t] - mean_pnl);
        cov /= (T - 1);
        kf_risk_pos_result_t *pr = &rep->positions[i];
        pr->component_var_99 = sigma > 0 ? z99 * pr->value * cov / sigma : 0;
        pr->component_var_99_pct = sigma > 0 ? pr->component_var_99 / (z99 * sigma) : 0;

        /* EWMA of the position's returns: s_1 = r_1^2, s_t = l s_{t-1} + (1 - l) r_t^2. */
        double s = ri_[0] * ri_[0];
        for (int t = 1; t < T; t++)
            s = lambda * s + (1 - lambda) * ri_[t] * ri_[t];
        pr->ewma_vol_1d = sqrt(s);
        pr->weight = pr->value / value;
    }
    /* Portfolio EWMA on returns relative to today's value. */
    double s = (rep->pnl[0] / value) * (rep->pnl[0] / value);
    for (int t = 1; t < T; t++) {
        double x = rep->pnl[t] / value;
        s = lambda * s + (1 - lambda) * x * x;
    }
    rep->ewma_vol_1d = sqrt(s);
    rep->ewma_vol_annual = rep->ewma_vol_1d * sqrt(252.0);
    rep->ewma_var_99_1d = z99 * rep->ewma_vol_1d * value;

    /* 8. Maximum drawdown of the value series against its running peak. */
    double peak = rep->values[0];
    size_t ipeak = 0;
    rep->drawdown_peak = rep->drawdown_trough = cal[0];
    for (size_t t = 1; t < T1; t++) {
        if (rep->values[t] > peak) {
            peak = rep->values[t];
            ipeak = t;
        }
        double dd = peak > 0 ? 1 - rep->values[t] / peak : 0;
        if (dd > rep->max_drawdown) {
            rep->max_drawdown = dd;
            rep->max_drawdown_amount = peak - rep->values[t];
            rep->drawdown_peak = cal[ipeak];
            rep->drawdown_trough = cal[t];
        }
    }

    /* 9. Exposures and concentration (weights relative to the net portfolio value). */
    if (kf_risk_group(rep, offsetof(kf_risk_pos_result_t, asset_class), &rep->by_asset_class,
                      &rep->nasset_class) ||
        kf_risk_group(rep, offsetof(kf_risk_pos_result_t, sector), &rep->by_sector,
                      &rep->nsector) ||
        kf_risk_group(rep, offsetof(kf_risk_pos_result_t, currency), &rep->by_currency,
                      &rep->ncurrency) ||
        !(w = malloc(n * sizeof(*w))))
        goto nomem;
    rep->max_weight = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        w[i] = rep->positions[i].weight;
        rep->hhi += w[i] * w[i];
        if (w[i] > rep->max_weight) {
            rep->max_weight = w[i];
            rep->max_weight_symbol = rep->positions[i].symbol;
        }
    }
    qsort(w, n, sizeof(*w), kf_risk_dbl_desc);
    for (size_t i = 0; i < n && i < 5; i++)
        rep->top5_weight += w[i];

    if (!isfinite(sigma) || !isfinite(rep->ewma_vol_1d) || !isfinite(rep->max_drawdown_amount) ||
        !isfinite(rep->unrealized_pnl))
        goto out_of_range;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(rep->positions[i].component_var_99) ||
            !isfinite(rep->positions[i].ewma_vol_1d) || !isfinite(rep->positions[i].unrealized_pnl))
            goto out_of_range;

    /* 10. Limits. */
    if (in->nlimits && !(rep->limits = calloc(in->nlimits, sizeof(*rep->limits))))
        goto nomem;
    for (size_t j = 0; j < in->nlimits; j++) {
        kf_risk_limit_result_t *lr = &rep->limits[j];
        lr->metric = kf_risk_metric_names[in->limits[j].metric];
        lr->threshold = in->limits[j].threshold;
        lr->observed = kf_risk_observe(rep, in->limits[j].metric);
        lr->breached = lr->observed > lr->threshold;
        rep->nbreaches += (size_t)lr->breached;
    }
    rep->nlimits = in->nlimits;

    /* 11. Stress: each position revalued with its price shock and the FX shocks of its
     * currency and of the base currency. */
    if (in->nscen && !(rep->stress = calloc(in->nscen, sizeof(*rep->stress))))
        goto nomem;
    for (size_t k = 0; k < in->nscen; k++) {
        const kf_risk_scenario_t *sc = &in->scen[k];
        double fb = kf_risk_ccy_shock(sc, in->base), pnl = 0;
        for (size_t i = 0; i < n; i++) {
            double sp = kf_risk_price_shock(sc, &in->pos[i]);
            double fc = kf_risk_ccy_shock(sc, in->pos[i].currency);
            pnl += rep->positions[i].value * ((1 + sp) * (1 + fc) / (1 + fb) - 1);
        }
        if (!(rep->stress[k].scenario = kf_risk_keep(ri, sc->name)))
            goto nomem;
        rep->stress[k].pnl = pnl;
        rep->stress[k].pnl_pct = pnl / value;
        if (!isfinite(pnl))
            goto out_of_range;
    }
    rep->nstress = in->nscen;

    *out_rep = rep;
    rep = NULL;
    goto out;
out_of_range:
    err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                     "portfolio %s: numbers overflow double precision (prices, rates, quantities "
                     "or shocks out of any realistic range)",
                     in->portfolio);
    goto out;
nomem:
    err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
out:
    if (scratch)
        for (size_t i = 0; i < n + in->nccy; i++)
            free(scratch[i]);
    free(scratch);
    free(px);
    free(npx);
    free(seen);
    free(cal);
    free(xrate);
    free(u);
    free(r);
    free(loss);
    free(sv);
    free(w);
    if (rep)
        kf_risk_report_destroy(rep);
    return err;
}
