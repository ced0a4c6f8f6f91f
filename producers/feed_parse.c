/*
 * feed_parse.c: the line parsers of `kinfer feed` (CSV with a header, JSON lines), the event
 * time parser (RFC 3339 or epoch ms) and the MarketTick encoder. Everything here handles
 * outside bytes, so every field is checked and every failure names the field and the reason;
 * tests/fuzz/fuzz_feed.c drives kf_feed_parser_line with arbitrary input.
 */
#include "kf_feed.h"

#include "kf_avro.h"
#include "kf_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CSV columns, in the canonical header order. */
enum { COL_SYMBOL, COL_PRICE, COL_BID, COL_ASK, COL_VOLUME, COL_EVENT_TIME, COL_SOURCE, COL__N };
static const char *const kf_feed_cols[COL__N] = {"symbol", "price",      "bid",   "ask",
                                                 "volume", "event_time", "source"};
#define KF_FEED_MAX_FIELDS 16

struct kf_feed_parser {
    kf_feed_format_t format;
    int have_header;
    int ncols;                      /* columns in the header */
    int col_of[KF_FEED_MAX_FIELDS]; /* header position -> COL_* */
};

kf_err_t
kf_feed_format_from_name(const char *name, kf_feed_format_t *out_format)
{
    if (!strcmp(name, "csv"))
        *out_format = KF_FEED_CSV;
    else if (!strcmp(name, "jsonl") || !strcmp(name, "json") || !strcmp(name, "ndjson"))
        *out_format = KF_FEED_JSONL;
    else
        return KF_ERR_INVALID_ARG;
    return KF_OK;
}

kf_err_t
kf_feed_format_from_path(const char *path, kf_feed_format_t *out_format)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && slash > dot))
        return KF_ERR_NOT_FOUND;
    if (!strcmp(dot, ".csv"))
        *out_format = KF_FEED_CSV;
    else if (!strcmp(dot, ".jsonl") || !strcmp(dot, ".ndjson") || !strcmp(dot, ".json"))
        *out_format = KF_FEED_JSONL;
    else
        return KF_ERR_NOT_FOUND;
    return KF_OK;
}

/* ---- time ------------------------------------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t
kf_feed_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
kf_feed_days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

/* Reads exactly n digits at s[*i]; -1 when one is missing. */
static int
kf_feed_digits(const char *s, size_t len, size_t *i, int n)
{
    int v = 0;
    for (int k = 0; k < n; k++, (*i)++) {
        if (*i >= len || s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (s[*i] - '0');
    }
    return v;
}

/* Largest accepted instant: 9999-12-31T23:59:59.999Z. */
#define KF_FEED_MAX_MS 253402300799999LL

kf_err_t
kf_feed_parse_time(const char *s, size_t len, int64_t *out_ms, char *errstr, size_t errstr_size)
{
    if (len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "event_time is empty");
    size_t i = 0;
    /* Epoch milliseconds: only digits. */
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == len) {
        if (len > 15)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "event_time: epoch milliseconds out of range (year > 9999)");
        int64_t v = 0;
        for (size_t k = 0; k < len; k++)
            v = v * 10 + (s[k] - '0');
        if (v > KF_FEED_MAX_MS)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "event_time: epoch milliseconds out of range (year > 9999)");
        *out_ms = v;
        return KF_OK;
    }
    i = 0;
    int y = kf_feed_digits(s, len, &i, 4);
    int ok = y >= 0 && i < len && s[i++] == '-';
    int mo = ok ? kf_feed_digits(s, len, &i, 2) : -1;
    ok = ok && mo >= 0 && i < len && s[i++] == '-';
    int d = ok ? kf_feed_digits(s, len, &i, 2) : -1;
    ok = ok && d >= 0 && i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ');
    i++;
    int h = ok ? kf_feed_digits(s, len, &i, 2) : -1;
    ok = ok && h >= 0 && i < len && s[i++] == ':';
    int mi = ok ? kf_feed_digits(s, len, &i, 2) : -1;
    ok = ok && mi >= 0 && i < len && s[i++] == ':';
    int sec = ok ? kf_feed_digits(s, len, &i, 2) : -1;
    ok = ok && sec >= 0;
    if (!ok)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "event_time: expected RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)) "
                          "or epoch milliseconds");
    int ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        int nd = 0;
        /* Fractions beyond milliseconds are truncated, not rounded: a tick never moves later. */
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (nd < 3)
                ms = ms * 10 + (s[i] - '0');
            nd++;
            i++;
        }
        if (nd == 0 || nd > 9)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "event_time: fraction of a second needs 1 to 9 digits");
        for (int k = nd; k < 3; k++)
            ms *= 10;
    }
    int offset_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int sign = s[i++] == '-' ? -1 : 1;
        int oh = kf_feed_digits(s, len, &i, 2);
        int om = oh >= 0 && i < len && s[i++] == ':' ? kf_feed_digits(s, len, &i, 2) : -1;
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "event_time: bad UTC offset (expected +HH:MM or -HH:MM)");
        offset_min = sign * (oh * 60 + om);
    } else {
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "event_time: missing time zone (Z or +HH:MM)");
    }
    if (i != len)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "event_time: unexpected text after the time zone");
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > kf_feed_days_in_month(y, mo) || h > 23 ||
        mi > 59 || sec > 59)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "event_time: %.*s is not a valid date and time (years 1970..9999, no "
                          "leap seconds)",
                          (int)(len > 40 ? 40 : len), s);
    int64_t t = kf_feed_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    t = (t - (int64_t)offset_min * 60) * 1000 + ms;
    if (t < 0 || t > KF_FEED_MAX_MS)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "event_time: out of range (1970..9999 UTC)");
    *out_ms = t;
    return KF_OK;
}

char *
kf_feed_format_time(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return buf;
}

/* ---- field checks ---------------------------------------------------------------------- */

static int
kf_feed_symbol_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr(".-_/:^=", c) != NULL;
}

static kf_err_t
kf_feed_set_symbol(kf_feed_tick_t *t, const char *s, size_t len, char *errstr, size_t errstr_size)
{
    if (len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "symbol is empty");
    if (len > KF_FEED_SYMBOL_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "symbol is longer than %d characters",
                          KF_FEED_SYMBOL_MAX);
    for (size_t i = 0; i < len; i++) {
        /* '\0' would pass strchr's test (it finds the terminator), so check it first. */
        if (s[i] == '\0' || !kf_feed_symbol_char(s[i]))
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "symbol: character %zu is not one of A-Z 0-9 . - _ / : ^ =%s", i + 1,
                              s[i] >= 'a' && s[i] <= 'z' ? " (symbols are upper case)" : "");
    }
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9') || s[0] == '^'))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "symbol must start with a letter, a digit or '^'");
    memcpy(t->symbol, s, len);
    t->symbol[len] = '\0';
    return KF_OK;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF) without NUL. */
static int
kf_feed_utf8_ok(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned min;
        if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (i + n >= len) /* the continuation bytes run past the end */
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

static kf_err_t
kf_feed_set_source(kf_feed_tick_t *t, const char *s, size_t len, char *errstr, size_t errstr_size)
{
    if (len > KF_FEED_SOURCE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "source is longer than %d bytes",
                          KF_FEED_SOURCE_MAX);
    if (!kf_feed_utf8_ok((const unsigned char *)s, len))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "source is not valid UTF-8");
    memcpy(t->source, s, len);
    t->source[len] = '\0';
    return KF_OK;
}

/* A plain decimal: [+-]digits[.digits][(e|E)[+-]digits], at least one digit in the mantissa.
 * strtod alone would also take "inf", "nan", hex floats and leading spaces. */
static kf_err_t
kf_feed_number(
    const char *field, const char *s, size_t len, double *out, char *errstr, size_t errstr_size)
{
    char tmp[64];
    size_t i = 0, nd = 0;
    if (len == 0 || len >= sizeof(tmp))
        goto bad;
    if (s[i] == '+' || s[i] == '-')
        i++;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, nd++;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, nd++;
    }
    if (nd == 0)
        goto bad;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t ne = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, ne++;
        if (ne == 0)
            goto bad;
    }
    if (i != len)
        goto bad;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double v = strtod(tmp, NULL);
    if (!isfinite(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s is out of range", field);
    *out = v;
    return KF_OK;
bad:
    return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s is not a decimal number: '%.*s'",
                      field, (int)(len > 32 ? 32 : len), s);
}

/* Cross-field rules, after every field is set. */
static kf_err_t
kf_feed_check_tick(const kf_feed_tick_t *t, char *errstr, size_t errstr_size)
{
    if (!(t->price > 0))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "price must be > 0");
    if (t->has_bid && t->bid < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "bid must be >= 0");
    if (t->has_ask && t->ask < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "ask must be >= 0");
    if (t->has_bid && t->has_ask && t->bid > t->ask)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "bid %g is above ask %g", t->bid,
                          t->ask);
    if (t->volume < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "volume must be >= 0");
    return KF_OK;
}

/* ---- CSV ------------------------------------------------------------------------------- */

typedef struct kf_feed_field {
    const char *s;
    size_t len;
    int quoted;
} kf_feed_field_t;

/* Splits a CSV line into fields. Quoted fields are unescaped into `scratch` (at least len
 * bytes), unquoted ones point into the line and are trimmed of spaces and tabs. */
static kf_err_t
kf_feed_csv_split(const char *line,
                  size_t len,
                  char *scratch,
                  kf_feed_field_t *fields,
                  int *out_n,
                  char *errstr,
                  size_t errstr_size)
{
    int n = 0;
    size_t i = 0, w = 0;
    for (;;) {
        if (n == KF_FEED_MAX_FIELDS)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "more than %d fields",
                              KF_FEED_MAX_FIELDS);
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        kf_feed_field_t *f = &fields[n++];
        if (i < len && line[i] == '"') {
            /* Quoted: "" is a quote, the field ends at the closing quote. */
            i++;
            f->s = scratch + w;
            f->quoted = 1;
            size_t start = w;
            for (;;) {
                if (i >= len)
                    return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                                      "field %d: unterminated quoted field", n);
                if (line[i] == '"') {
                    if (i + 1 < len && line[i + 1] == '"') {
                        scratch[w++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                scratch[w++] = line[i++];
            }
            f->len = w - start;
            while (i < len && (line[i] == ' ' || line[i] == '\t'))
                i++;
            if (i < len && line[i] != ',')
                return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                                  "field %d: text after the closing quote", n);
        } else {
            size_t start = i;
            while (i < len && line[i] != ',') {
                if (line[i] == '"')
                    return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                                      "field %d: quote inside an unquoted field", n);
                i++;
            }
            size_t end = i;
            while (end > start && (line[end - 1] == ' ' || line[end - 1] == '\t'))
                end--;
            f->s = line + start;
            f->len = end - start;
            f->quoted = 0;
        }
        if (i >= len)
            break;
        i++; /* the comma */
    }
    *out_n = n;
    return KF_OK;
}

static kf_err_t
kf_feed_csv_header(
    kf_feed_parser_t *p, const kf_feed_field_t *fields, int n, char *errstr, size_t errstr_size)
{
    int seen[COL__N] = {0};
    for (int k = 0; k < n; k++) {
        int col = -1;
        for (int c = 0; c < COL__N; c++)
            if (fields[k].len == strlen(kf_feed_cols[c]) &&
                !memcmp(fields[k].s, kf_feed_cols[c], fields[k].len))
                col = c;
        if (col < 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "header: unknown column '%.*s' (expected "
                              "symbol,price,bid,ask,volume,event_time,source)",
                              (int)(fields[k].len > 32 ? 32 : fields[k].len), fields[k].s);
        if (seen[col]++)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "header: column '%s' repeated",
                              kf_feed_cols[col]);
        p->col_of[k] = col;
    }
    static const int required[] = {COL_SYMBOL, COL_PRICE, COL_EVENT_TIME};
    for (size_t r = 0; r < sizeof(required) / sizeof(required[0]); r++)
        if (!seen[required[r]])
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "header: required column '%s' is missing", kf_feed_cols[required[r]]);
    p->ncols = n;
    p->have_header = 1;
    return KF_OK;
}

static kf_err_t
kf_feed_csv_line(kf_feed_parser_t *p,
                 const char *line,
                 size_t len,
                 kf_feed_tick_t *t,
                 int *out_is_tick,
                 char *errstr,
                 size_t errstr_size)
{
    kf_feed_field_t fields[KF_FEED_MAX_FIELDS];
    int n = 0;
    char *scratch = malloc(len + 1);
    if (!scratch)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    kf_err_t err = kf_feed_csv_split(line, len, scratch, fields, &n, errstr, errstr_size);
    if (err) {
        if (!p->have_header)
            err = KF_ERR_FORMAT;
        goto out;
    }
    if (!p->have_header) {
        /* The first data-bearing line must be the header: a file without one would have its
         * first tick silently taken for column names. */
        err = kf_feed_csv_header(p, fields, n, errstr, errstr_size);
        goto out;
    }
    if (n != p->ncols) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%d fields, the header has %d", n,
                         p->ncols);
        goto out;
    }
    memset(t, 0, sizeof(*t));
    for (int k = 0; k < n && !err; k++) {
        const char *s = fields[k].s;
        size_t l = fields[k].len;
        switch (p->col_of[k]) {
        case COL_SYMBOL:
            err = kf_feed_set_symbol(t, s, l, errstr, errstr_size);
            break;
        case COL_PRICE:
            err = l ? kf_feed_number("price", s, l, &t->price, errstr, errstr_size)
                    : kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "price is empty");
            break;
        case COL_BID:
            t->has_bid = l > 0;
            err = l ? kf_feed_number("bid", s, l, &t->bid, errstr, errstr_size) : KF_OK;
            break;
        case COL_ASK:
            t->has_ask = l > 0;
            err = l ? kf_feed_number("ask", s, l, &t->ask, errstr, errstr_size) : KF_OK;
            break;
        case COL_VOLUME:
            err = l ? kf_feed_number("volume", s, l, &t->volume, errstr, errstr_size) : KF_OK;
            break;
        case COL_EVENT_TIME:
            err = kf_feed_parse_time(s, l, &t->event_time_ms, errstr, errstr_size);
            break;
        default: /* COL_SOURCE */
            err = kf_feed_set_source(t, s, l, errstr, errstr_size);
            break;
        }
    }
    if (!err)
        err = kf_feed_check_tick(t, errstr, errstr_size);
    if (!err)
        *out_is_tick = 1;
out:
    free(scratch);
    return err;
}

/* ---- JSON lines ------------------------------------------------------------------------ */

static kf_err_t
kf_feed_json_number(json_t *v, const char *field, double *out, char *errstr, size_t errstr_size)
{
    if (!json_is_number(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s must be a number", field);
    *out = json_number_value(v);
    if (!isfinite(*out))
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s is out of range", field);
    return KF_OK;
}

static kf_err_t
kf_feed_jsonl_line(const char *line,
                   size_t len,
                   kf_feed_tick_t *t,
                   int *out_is_tick,
                   char *errstr,
                   size_t errstr_size)
{
    json_t *obj = NULL;
    kf_json_limits_t lim = {.max_bytes = KF_FEED_LINE_MAX, .max_depth = 4};
    kf_err_t err = kf_json_parse_object(line, len, &lim, &obj, errstr, errstr_size);
    if (err)
        return err == KF_ERR_LIMIT || err == KF_ERR_NOMEM ? err : KF_ERR_PARSE;
    memset(t, 0, sizeof(*t));
    int seen[COL__N] = {0};
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int col = -1;
        for (int c = 0; c < COL__N; c++)
            if (!strcmp(key, kf_feed_cols[c]))
                col = c;
        if (col < 0) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "unknown key '%.32s'", key);
            break;
        }
        seen[col] = 1;
        switch (col) {
        case COL_SYMBOL:
            err = json_is_string(v)
                      ? kf_feed_set_symbol(t, json_string_value(v), json_string_length(v), errstr,
                                           errstr_size)
                      : kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "symbol must be a string");
            break;
        case COL_PRICE:
            err = kf_feed_json_number(v, "price", &t->price, errstr, errstr_size);
            break;
        case COL_BID:
            t->has_bid = !json_is_null(v);
            err = t->has_bid ? kf_feed_json_number(v, "bid", &t->bid, errstr, errstr_size) : KF_OK;
            break;
        case COL_ASK:
            t->has_ask = !json_is_null(v);
            err = t->has_ask ? kf_feed_json_number(v, "ask", &t->ask, errstr, errstr_size) : KF_OK;
            break;
        case COL_VOLUME:
            err = json_is_null(v)
                      ? KF_OK
                      : kf_feed_json_number(v, "volume", &t->volume, errstr, errstr_size);
            break;
        case COL_EVENT_TIME:
            if (json_is_string(v)) {
                err = kf_feed_parse_time(json_string_value(v), json_string_length(v),
                                         &t->event_time_ms, errstr, errstr_size);
            } else if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                       json_integer_value(v) <= KF_FEED_MAX_MS) {
                t->event_time_ms = json_integer_value(v);
            } else {
                err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                                 "event_time must be an RFC 3339 string or epoch milliseconds "
                                 "(0..%lld)",
                                 (long long)KF_FEED_MAX_MS);
            }
            break;
        default: /* COL_SOURCE */
            err = json_is_null(v) ? KF_OK
                  : json_is_string(v)
                      ? kf_feed_set_source(t, json_string_value(v), json_string_length(v), errstr,
                                           errstr_size)
                      : kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "source must be a string");
            break;
        }
        if (err)
            break;
    }
    if (!err) {
        static const int required[] = {COL_SYMBOL, COL_PRICE, COL_EVENT_TIME};
        for (size_t r = 0; r < 3 && !err; r++)
            if (!seen[required[r]])
                err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s is required",
                                 kf_feed_cols[required[r]]);
    }
    if (!err)
        err = kf_feed_check_tick(t, errstr, errstr_size);
    if (!err)
        *out_is_tick = 1;
    json_decref(obj);
    return err;
}

/* ---- parser ---------------------------------------------------------------------------- */

kf_err_t
kf_feed_parser_new(kf_feed_format_t format,
                   kf_feed_parser_t **out_parser,
                   char *errstr,
                   size_t errstr_size)
{
    KF_ASSERT(out_parser);
    if (format != KF_FEED_CSV && format != KF_FEED_JSONL)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "unknown feed format %d",
                          (int)format);
    kf_feed_parser_t *p = calloc(1, sizeof(*p));
    if (!p)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    p->format = format;
    *out_parser = p;
    return KF_OK;
}

void
kf_feed_parser_destroy(kf_feed_parser_t *parser)
{
    free(parser);
}

kf_err_t
kf_feed_parser_line(kf_feed_parser_t *p,
                    const char *line,
                    size_t len,
                    kf_feed_tick_t *out_tick,
                    int *out_is_tick,
                    char *errstr,
                    size_t errstr_size)
{
    KF_ASSERT(p && (line || !len) && out_tick && out_is_tick);
    *out_is_tick = 0;
    if (len > KF_FEED_LINE_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_LIMIT, "line longer than %d bytes",
                          KF_FEED_LINE_MAX);
    if (len > 0 && line[len - 1] == '\r')
        len--;
    /* Blank lines and '#' comments are skipped in both formats. */
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len || line[i] == '#')
        return KF_OK;
    if (memchr(line, '\0', len))
        return kf_err_set(errstr, errstr_size,
                          p->have_header || p->format == KF_FEED_JSONL ? KF_ERR_PARSE
                                                                       : KF_ERR_FORMAT,
                          "NUL byte in line");
    if (p->format == KF_FEED_CSV)
        return kf_feed_csv_line(p, line, len, out_tick, out_is_tick, errstr, errstr_size);
    return kf_feed_jsonl_line(line, len, out_tick, out_is_tick, errstr, errstr_size);
}

/* ---- encoding -------------------------------------------------------------------------- */

kf_err_t
kf_feed_tick_encode(const kf_feed_tick_t *t,
                    const char *default_source,
                    unsigned char **out_buf,
                    size_t *out_len,
                    char *errstr,
                    size_t errstr_size)
{
    KF_ASSERT(t && out_buf && out_len);
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_MARKET_TICK);
    avro_value_t v;
    kf_err_t err = kf_avro_value_new(schema, &v, errstr, errstr_size);
    if (err)
        return err;
    const char *source = t->source[0] ? t->source : default_source ? default_source : "";
    err = kf_avro_set_string(&v, "symbol", t->symbol);
    err = err ? err : kf_avro_set_double(&v, "price", t->price);
    err = err          ? err
          : t->has_bid ? kf_avro_set_double(&v, "bid", t->bid)
                       : kf_avro_set_null(&v, "bid");
    err = err          ? err
          : t->has_ask ? kf_avro_set_double(&v, "ask", t->ask)
                       : kf_avro_set_null(&v, "ask");
    err = err ? err : kf_avro_set_double(&v, "volume", t->volume);
    err = err ? err : kf_avro_set_long(&v, "event_time", t->event_time_ms);
    err = err ? err : kf_avro_set_string(&v, "source", source);
    if (err)
        err = kf_err_set(errstr, errstr_size, err, "MarketTick: cannot set a field (%s)",
                         kf_err_str(err));
    else
        err = kf_avro_encode(schema, &v, out_buf, out_len, errstr, errstr_size);
    avro_value_decref(&v);
    return err;
}
