/*
 * risk_csv.c: reads one portfolio's risk inputs from the CSV files `kinfer sample-data --csv`
 * writes (the same tables and columns as the database), so the analytics and their numpy
 * reference can run on identical data without PostgreSQL.
 *
 * The files come from outside the process, so the parser checks every byte: RFC 4180 records
 * (quoted fields with "" escapes, CRLF or LF), a header naming the columns (found by name, so
 * column order and extra columns do not matter), no NUL bytes, numbers and dates that parse
 * completely. Errors name the file, line and field. tests/fuzz/fuzz_risk_csv.c drives it.
 */
#include "kf_risk.h"
#include "risk_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KF_RISK_CSV_MAX_FIELDS 64
#define KF_RISK_CSV_MAX_FILE   (512u << 20) /* a price file for thousands of symbols fits */

typedef struct kf_risk_instr {
    char *symbol, *asset_class, *sector, *currency;
} kf_risk_instr_t;

struct kf_risk_csv_state {
    char *portfolio;
    int32_t as_of;
    char *base; /* set when the portfolio row was seen */
    kf_risk_instr_t *instr;
    size_t ninstr, capinstr;
    kf_risk_map_t instr_map;
    kf_risk_input_t *in;
    int next; /* next table expected */
};

/* Columns each table needs, by name. */
static const char *const kf_risk_csv_cols[KF_RISK_CSV__COUNT][5] = {
    [KF_RISK_CSV_PORTFOLIOS] = {"portfolio_id", "base_currency", NULL},
    [KF_RISK_CSV_INSTRUMENTS] = {"symbol", "asset_class", "sector", "currency", NULL},
    [KF_RISK_CSV_POSITIONS] = {"portfolio_id", "symbol", "quantity", "cost_basis", NULL},
    [KF_RISK_CSV_PRICES] = {"symbol", "price_date", "close", NULL},
    [KF_RISK_CSV_FX] = {"currency", "rate_date", "usd_per_unit", NULL},
    [KF_RISK_CSV_LIMITS] = {"portfolio_id", "metric", "threshold", NULL},
    [KF_RISK_CSV_SHOCKS] = {"scenario_id", "dimension", "key", "shock", NULL},
};

static const char *const kf_risk_csv_files[KF_RISK_CSV__COUNT] = {
    "portfolios.csv", "instruments.csv", "positions.csv",    "price_history.csv",
    "fx_rates.csv",   "risk_limits.csv", "stress_shocks.csv"};

kf_err_t
kf_risk_csv_state_new(const char *portfolio_id,
                      int32_t as_of,
                      kf_risk_csv_state_t **out_st,
                      char *errstr,
                      size_t errstr_size)
{
    KF_ASSERT(out_st);
    *out_st = NULL;
    if (!portfolio_id || !*portfolio_id)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "portfolio id is required");
    kf_risk_csv_state_t *st = calloc(1, sizeof(*st));
    if (!st || !(st->portfolio = strdup(portfolio_id))) {
        free(st);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    st->as_of = as_of;
    *out_st = st;
    return KF_OK;
}

void
kf_risk_csv_state_destroy(kf_risk_csv_state_t *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->ninstr; i++) {
        free(st->instr[i].symbol);
        free(st->instr[i].asset_class);
        free(st->instr[i].sector);
        free(st->instr[i].currency);
    }
    free(st->instr);
    kf_risk_map_free(&st->instr_map);
    kf_risk_input_destroy(st->in);
    free(st->portfolio);
    free(st->base);
    free(st);
}

/* A record reader over one buffer. Fields are unescaped into `buf` as NUL-terminated strings. */
typedef struct kf_risk_csv_rd {
    const char *p, *end;
    int line; /* line where the current record starts, 1-based */
    int next_line;
    char *buf;
    size_t cap;
    const char *f[KF_RISK_CSV_MAX_FIELDS];
    int nf;
} kf_risk_csv_rd_t;

/* Reads the next record. Returns 1 with fields set, 0 at the end, -1 on error (errstr). */
static int
kf_risk_csv_next(kf_risk_csv_rd_t *rd, const char *name, char *errstr, size_t errstr_size)
{
    /* Skip empty lines so a trailing newline or blank separator is harmless. */
    while (rd->p < rd->end && (*rd->p == '\n' || *rd->p == '\r')) {
        if (*rd->p == '\n')
            rd->next_line++;
        rd->p++;
    }
    if (rd->p >= rd->end)
        return 0;
    rd->line = rd->next_line;
    /* The record is at most as long as the rest of the buffer, plus one NUL per field. */
    size_t need = (size_t)(rd->end - rd->p) + KF_RISK_CSV_MAX_FIELDS + 1;
    if (need > rd->cap) {
        /* The first record sizes the scratch for the whole buffer; later ones reuse it. */
        char *nb = realloc(rd->buf, need);
        if (!nb) {
            kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
            return -1;
        }
        rd->buf = nb;
        rd->cap = need;
    }
    size_t o = 0;
    rd->nf = 0;
    int quoted = 0, in_quotes = 0, field_start = 1;
    rd->f[rd->nf++] = rd->buf;
    for (;;) {
        if (rd->p >= rd->end) {
            if (in_quotes) {
                kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                           "%s line %d: unterminated quoted field", name, rd->line);
                return -1;
            }
            break;
        }
        char c = *rd->p++;
        if (c == '\0') {
            kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s line %d: NUL byte", name,
                       rd->next_line);
            return -1;
        }
        if (in_quotes) {
            if (c == '"') {
                if (rd->p < rd->end && *rd->p == '"') {
                    rd->buf[o++] = '"';
                    rd->p++;
                } else {
                    in_quotes = 0;
                }
            } else {
                if (c == '\n')
                    rd->next_line++;
                rd->buf[o++] = c;
            }
            continue;
        }
        if (c == '"' && field_start) {
            in_quotes = quoted = 1;
            field_start = 0;
            continue;
        }
        if (c == ',') {
            rd->buf[o++] = '\0';
            if (rd->nf == KF_RISK_CSV_MAX_FIELDS) {
                kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s line %d: more than %d fields",
                           name, rd->line, KF_RISK_CSV_MAX_FIELDS);
                return -1;
            }
            rd->f[rd->nf++] = rd->buf + o;
            quoted = 0;
            field_start = 1;
            continue;
        }
        if (c == '\n') {
            rd->next_line++;
            break;
        }
        if (c == '\r' && (rd->p >= rd->end || *rd->p == '\n'))
            continue;
        if (quoted || c == '"') {
            kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                       "%s line %d: stray '%c' in field %d (quote the whole field)", name, rd->line,
                       c, rd->nf);
            return -1;
        }
        rd->buf[o++] = c;
        field_start = 0;
    }
    rd->buf[o] = '\0';
    return 1;
}

static kf_err_t
kf_risk_csv_num(const char *s,
                const char *name,
                int line,
                const char *col,
                double *out,
                char *errstr,
                size_t errstr_size)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "%s line %d: field '%s' is not a finite number: '%.40s'", name, line, col,
                          s);
    *out = v;
    return KF_OK;
}

static kf_err_t
kf_risk_csv_date(const char *s,
                 const char *name,
                 int line,
                 const char *col,
                 int32_t *out,
                 char *errstr,
                 size_t errstr_size)
{
    if (kf_risk_date_parse(s, out, NULL, 0) != KF_OK)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "%s line %d: field '%s' is not a date YYYY-MM-DD: '%.40s'", name, line,
                          col, s);
    return KF_OK;
}

/* Adds an instrument row to the state (metadata of every symbol, held or not). */
static kf_err_t
kf_risk_csv_instr(kf_risk_csv_state_t *st,
                  const char *const *v,
                  const char *name,
                  int line,
                  char *errstr,
                  size_t errstr_size)
{
    if (!*v[0])
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s line %d: empty symbol", name,
                          line);
    if (kf_risk_map_get(&st->instr_map, v[0]) >= 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s line %d: symbol %.64s repeated",
                          name, line, v[0]);
    if (st->ninstr == st->capinstr) {
        size_t ncap = st->capinstr ? st->capinstr * 2 : 64;
        kf_risk_instr_t *ni = realloc(st->instr, ncap * sizeof(*ni));
        if (!ni)
            goto nomem;
        st->instr = ni;
        st->capinstr = ncap;
    }
    kf_risk_instr_t *it = &st->instr[st->ninstr];
    memset(it, 0, sizeof(*it));
    if (!(it->symbol = strdup(v[0])) || !(it->asset_class = strdup(v[1])) ||
        !(it->sector = strdup(v[2])) || !(it->currency = strdup(v[3])) ||
        kf_risk_map_put(&st->instr_map, it->symbol, (int)st->ninstr)) {
        free(it->symbol);
        free(it->asset_class);
        free(it->sector);
        free(it->currency);
        goto nomem;
    }
    st->ninstr++;
    return KF_OK;
nomem:
    return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
}

/* Prefixes a kf_risk error with file and line so every message says where. */
static kf_err_t
kf_risk_csv_wrap(kf_err_t err, const char *name, int line, char *errstr, size_t errstr_size)
{
    if (err == KF_OK || !errstr || !errstr_size)
        return err;
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", errstr);
    return kf_err_set(errstr, errstr_size, err == KF_ERR_NOMEM ? err : KF_ERR_PARSE,
                      "%s line %d: %s", name, line, tmp);
}

/* One data row of table t, fields already picked by column (v[0..]). */
static kf_err_t
kf_risk_csv_row(kf_risk_csv_state_t *st,
                kf_risk_csv_table_t t,
                const char *const *v,
                const char *name,
                int line,
                char *errstr,
                size_t errstr_size)
{
    kf_err_t err = KF_OK;
    double x = 0.0;
    int32_t d;
    switch (t) {
    case KF_RISK_CSV_PORTFOLIOS:
        if (strcmp(v[0], st->portfolio))
            return KF_OK;
        if (st->base)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "%s line %d: portfolio %.64s repeated", name, line, v[0]);
        if (!(st->base = strdup(v[1])))
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        err = kf_risk_input_new(st->portfolio, st->base, &st->in, errstr, errstr_size);
        return kf_risk_csv_wrap(err, name, line, errstr, errstr_size);
    case KF_RISK_CSV_INSTRUMENTS:
        return kf_risk_csv_instr(st, v, name, line, errstr, errstr_size);
    case KF_RISK_CSV_POSITIONS: {
        if (strcmp(v[0], st->portfolio) || !st->in)
            return KF_OK;
        int k = kf_risk_map_get(&st->instr_map, v[1]);
        if (k < 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "%s line %d: symbol %.64s is not in instruments.csv", name, line,
                              v[1]);
        kf_risk_position_t pos = {.symbol = v[1],
                                  .asset_class = st->instr[k].asset_class,
                                  .sector = st->instr[k].sector,
                                  .currency = st->instr[k].currency};
        if ((err = kf_risk_csv_num(v[2], name, line, "quantity", &pos.quantity, errstr,
                                   errstr_size)) ||
            (err = kf_risk_csv_num(v[3], name, line, "cost_basis", &pos.cost_basis, errstr,
                                   errstr_size)))
            return err;
        err = kf_risk_input_add_position(st->in, &pos, errstr, errstr_size);
        return kf_risk_csv_wrap(err, name, line, errstr, errstr_size);
    }
    case KF_RISK_CSV_PRICES:
    case KF_RISK_CSV_FX: {
        const char *c1 = t == KF_RISK_CSV_PRICES ? "price_date" : "rate_date";
        const char *c2 = t == KF_RISK_CSV_PRICES ? "close" : "usd_per_unit";
        if ((err = kf_risk_csv_date(v[1], name, line, c1, &d, errstr, errstr_size)) ||
            (err = kf_risk_csv_num(v[2], name, line, c2, &x, errstr, errstr_size)))
            return err;
        /* Point in time: later observations do not exist as of the report date. */
        if (d > st->as_of || !st->in)
            return KF_OK;
        if (t == KF_RISK_CSV_PRICES)
            err = kf_risk_input_add_price(st->in, v[0], d, x, errstr, errstr_size);
        else
            err = kf_risk_input_add_fx(st->in, v[0], d, x, errstr, errstr_size);
        return kf_risk_csv_wrap(err, name, line, errstr, errstr_size);
    }
    case KF_RISK_CSV_LIMITS:
        if (strcmp(v[0], st->portfolio) || !st->in)
            return KF_OK;
        if ((err = kf_risk_csv_num(v[2], name, line, "threshold", &x, errstr, errstr_size)))
            return err;
        err = kf_risk_input_add_limit(st->in, v[1], x, errstr, errstr_size);
        return kf_risk_csv_wrap(err, name, line, errstr, errstr_size);
    case KF_RISK_CSV_SHOCKS:
        if (!st->in)
            return KF_OK;
        if ((err = kf_risk_csv_num(v[3], name, line, "shock", &x, errstr, errstr_size)))
            return err;
        err = kf_risk_input_add_shock(st->in, v[0], v[1], v[2], x, errstr, errstr_size);
        return kf_risk_csv_wrap(err, name, line, errstr, errstr_size);
    default:
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "unknown CSV table %d", (int)t);
    }
}

kf_err_t
kf_risk_csv_parse(kf_risk_csv_state_t *st,
                  kf_risk_csv_table_t table,
                  const char *name,
                  const char *data,
                  size_t len,
                  char *errstr,
                  size_t errstr_size)
{
    KF_ASSERT(st && name && (data || !len));
    if ((int)table < 0 || table >= KF_RISK_CSV__COUNT)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "unknown CSV table %d",
                          (int)table);
    /* Each table depends on the ones before it (positions need the portfolio's currency and
     * the instruments, prices need the positions), so they are read in a fixed order. */
    if ((int)table != st->next)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE,
                          "%s read out of order: expected %s next", name,
                          st->next < KF_RISK_CSV__COUNT ? kf_risk_csv_files[st->next] : "nothing");
    if (table == KF_RISK_CSV_POSITIONS && !st->in)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                          "portfolio %.64s not found in portfolios.csv", st->portfolio);

    kf_risk_csv_rd_t rd = {.p = data, .end = data + len, .line = 1, .next_line = 1};
    kf_err_t err = KF_OK;
    int col[5];
    const char *const *want = kf_risk_csv_cols[table];
    int r = kf_risk_csv_next(&rd, name, errstr, errstr_size);
    if (r <= 0) {
        err = r < 0 ? KF_ERR_PARSE
                    : kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s: empty (no header)", name);
        goto out;
    }
    /* Header: find every needed column by name. */
    int ncol = 0;
    for (; want[ncol]; ncol++) {
        col[ncol] = -1;
        for (int j = 0; j < rd.nf; j++)
            if (!strcmp(rd.f[j], want[ncol]))
                col[ncol] = j;
        if (col[ncol] < 0) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s: header lacks column '%s'",
                             name, want[ncol]);
            goto out;
        }
    }
    int nheader = rd.nf;
    while ((r = kf_risk_csv_next(&rd, name, errstr, errstr_size)) > 0) {
        if (rd.nf != nheader) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                             "%s line %d: %d fields, the header has %d", name, rd.line, rd.nf,
                             nheader);
            goto out;
        }
        const char *v[5];
        for (int k = 0; k < ncol; k++)
            v[k] = rd.f[col[k]];
        if ((err = kf_risk_csv_row(st, table, v, name, rd.line, errstr, errstr_size)))
            goto out;
    }
    if (r < 0)
        err = KF_ERR_PARSE;
out:
    free(rd.buf);
    if (err == KF_OK)
        st->next++;
    return err;
}

kf_err_t
kf_risk_csv_finish(kf_risk_csv_state_t *st,
                   kf_risk_input_t **out_in,
                   char *errstr,
                   size_t errstr_size)
{
    KF_ASSERT(st && out_in);
    *out_in = NULL;
    if (!st->in)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND, "portfolio %.64s not found",
                          st->portfolio);
    *out_in = st->in;
    st->in = NULL;
    return KF_OK;
}

/* Reads a whole file; KF_ERR_NOT_FOUND when it does not exist. */
static kf_err_t
kf_risk_csv_slurp(const char *path, char **out, size_t *out_len, char *errstr, size_t errstr_size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kf_err_set(errstr, errstr_size, errno == ENOENT ? KF_ERR_NOT_FOUND : KF_ERR_IO,
                          "cannot open %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    kf_err_t err = KF_OK;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 1 << 20;
            if (cap > KF_RISK_CSV_MAX_FILE) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_LIMIT, "%s is larger than %u bytes",
                                 path, KF_RISK_CSV_MAX_FILE);
                break;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp))
                err = kf_err_set(errstr, errstr_size, KF_ERR_IO, "read %s failed", path);
            break;
        }
    }
    fclose(fp);
    if (err) {
        free(buf);
        return err;
    }
    *out = buf;
    *out_len = len;
    return KF_OK;
}

kf_err_t
kf_risk_csv_load(const char *dir,
                 const char *portfolio_id,
                 int32_t as_of,
                 kf_risk_input_t **out_in,
                 char *errstr,
                 size_t errstr_size)
{
    KF_ASSERT(dir && out_in);
    *out_in = NULL;
    kf_risk_csv_state_t *st;
    kf_err_t err = kf_risk_csv_state_new(portfolio_id, as_of, &st, errstr, errstr_size);
    if (err)
        return err;
    for (int t = 0; t < KF_RISK_CSV__COUNT && !err; t++) {
        char path[4096];
        char *data = NULL;
        size_t len = 0;
        snprintf(path, sizeof(path), "%s/%s", dir, kf_risk_csv_files[t]);
        err = kf_risk_csv_slurp(path, &data, &len, errstr, errstr_size);
        if (!err)
            err = kf_risk_csv_parse(st, (kf_risk_csv_table_t)t, kf_risk_csv_files[t], data, len,
                                    errstr, errstr_size);
        free(data);
    }
    if (!err)
        err = kf_risk_csv_finish(st, out_in, errstr, errstr_size);
    kf_risk_csv_state_destroy(st);
    return err;
}
