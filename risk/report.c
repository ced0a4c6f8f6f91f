/*
 * report.c: the report document (kf_report_build), its canonical JSON form and digest, the
 * InferenceResult -> meta mapping, and the locale-free number formatting every renderer uses.
 * Markdown and HTML live in report_md.c and report_html.c, the Kafka batch in report_run.c.
 */
#include "report_int.h"

#include "kf_json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- number formatting ------------------------------------------------------------------ */

char *
kf_report_fmt_num(double v, char *buf, size_t size)
{
    if (!isfinite(v)) {
        snprintf(buf, size, "null");
        return buf;
    }
    /* The shortest precision that reads back to the same double: stable, and the short
     * form keeps 0.94 from printing as 0.93999999999999995. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

char *
kf_report_fmt_fixed(double v, int decimals, char *buf, size_t size)
{
    if (!isfinite(v)) {
        snprintf(buf, size, "n/a");
        return buf;
    }
    /* kinfer never calls setlocale(), so printf's decimal point is '.'; grouping is done
     * here rather than with the locale-dependent ' flag. -0.00 prints as 0.00. */
    char raw[64];
    snprintf(raw, sizeof(raw), "%.*f", decimals, fabs(v));
    int neg = v < 0 && strspn(raw, "0.") != strlen(raw);
    const char *dot = strchr(raw, '.');
    size_t ilen = dot ? (size_t)(dot - raw) : strlen(raw);
    char out[96];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    for (size_t i = 0; i < ilen; i++) {
        if (i > 0 && (ilen - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = raw[i];
    }
    if (dot)
        for (const char *p = dot; *p && o + 1 < sizeof(out); p++)
            out[o++] = *p;
    out[o] = '\0';
    snprintf(buf, size, "%s", out);
    return buf;
}

char *
kf_report_fmt_pct(double frac, int decimals, char *buf, size_t size)
{
    if (!isfinite(frac)) {
        snprintf(buf, size, "n/a");
        return buf;
    }
    char num[80];
    kf_report_fmt_fixed(frac * 100.0, decimals, num, sizeof(num));
    snprintf(buf, size, "%s%%", num);
    return buf;
}

char *
kf_report_fmt_time(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int milli = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, size, "n/a");
        return buf;
    }
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, milli);
    return buf;
}

/* ---- tolerant getters ------------------------------------------------------------------- */

double
kf_report_num(const json_t *doc, const char *path)
{
    const json_t *v = kf_json_path(doc, path);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

const char *
kf_report_str(const json_t *doc, const char *path, const char *fallback)
{
    const json_t *v = kf_json_path(doc, path);
    return json_is_string(v) ? json_string_value(v) : fallback;
}

const json_t *
kf_report_arr(const json_t *doc, const char *path)
{
    const json_t *v = kf_json_path(doc, path);
    return json_is_array(v) ? v : NULL;
}

/* ---- UTF-8 repair ----------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid (overlongs,
 * surrogates and code points past U+10FFFF included). */
static size_t
kf_report_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

char *
kf_report_utf8_fix(const char *text)
{
    if (!text)
        return strdup("");
    size_t n = strlen(text);
    /* Worst case: every byte becomes the 3-byte replacement character. */
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = kf_report_utf8_len(s + i, n - i);
        if (len) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- canonical JSON --------------------------------------------------------------------- */

static kf_err_t
kf_report_json_string(kf_buf_t *out, const char *s, size_t len)
{
    kf_err_t err = kf_buf_append(out, "\"", 1);
    size_t run = 0; /* bytes copied verbatim in one append */
    for (size_t i = 0; !err && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        err = kf_buf_append(out, s + run, i - run);
        run = i + 1;
        if (err)
            break;
        switch (c) {
        case '"':
            err = kf_buf_append(out, "\\\"", 2);
            break;
        case '\\':
            err = kf_buf_append(out, "\\\\", 2);
            break;
        case '\n':
            err = kf_buf_append(out, "\\n", 2);
            break;
        case '\t':
            err = kf_buf_append(out, "\\t", 2);
            break;
        case '\r':
            err = kf_buf_append(out, "\\r", 2);
            break;
        default:
            err = kf_buf_appendf(out, "\\u%04x", c);
        }
    }
    if (!err)
        err = kf_buf_append(out, s + run, len - run);
    return err ? err : kf_buf_append(out, "\"", 1);
}

static int
kf_report_key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
kf_report_is_scalar(const json_t *v)
{
    return !json_is_object(v) && !json_is_array(v);
}

static kf_err_t kf_report_json_value(kf_buf_t *out, const json_t *v, int depth);

static kf_err_t
kf_report_json_indent(kf_buf_t *out, int depth)
{
    kf_err_t err = kf_buf_append(out, "\n", 1);
    for (int i = 0; !err && i < depth; i++)
        err = kf_buf_append(out, "  ", 2);
    return err;
}

static kf_err_t
kf_report_json_object(kf_buf_t *out, const json_t *v, int depth)
{
    size_t n = json_object_size(v);
    if (n == 0)
        return kf_buf_append(out, "{}", 2);
    const char **keys = malloc(n * sizeof(*keys));
    if (!keys)
        return KF_ERR_NOMEM;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        keys[i++] = key;
    }
    /* Sorted keys make the bytes independent of insertion order and jansson's version. */
    qsort(keys, n, sizeof(*keys), kf_report_key_cmp);
    kf_err_t err = kf_buf_append(out, "{", 1);
    for (i = 0; !err && i < n; i++) {
        err = kf_report_json_indent(out, depth + 1);
        if (!err)
            err = kf_report_json_string(out, keys[i], strlen(keys[i]));
        if (!err)
            err = kf_buf_append(out, ": ", 2);
        if (!err)
            err = kf_report_json_value(out, json_object_get(v, keys[i]), depth + 1);
        if (!err && i + 1 < n)
            err = kf_buf_append(out, ",", 1);
    }
    free(keys);
    if (!err)
        err = kf_report_json_indent(out, depth);
    return err ? err : kf_buf_append(out, "}", 1);
}

static kf_err_t
kf_report_json_array(kf_buf_t *out, const json_t *v, int depth)
{
    size_t n = json_array_size(v);
    if (n == 0)
        return kf_buf_append(out, "[]", 2);
    /* Series of numbers stay on one line: 500 P&L values would otherwise be 500 lines. */
    int flat = 1;
    for (size_t i = 0; flat && i < n; i++)
        flat = kf_report_is_scalar(json_array_get(v, i));
    kf_err_t err = kf_buf_append(out, "[", 1);
    for (size_t i = 0; !err && i < n; i++) {
        if (flat)
            err = i ? kf_buf_append(out, ", ", 2) : KF_OK;
        else
            err = kf_report_json_indent(out, depth + 1);
        if (!err)
            err = kf_report_json_value(out, json_array_get(v, i), depth + 1);
        if (!err && !flat && i + 1 < n)
            err = kf_buf_append(out, ",", 1);
    }
    if (!err && !flat)
        err = kf_report_json_indent(out, depth);
    return err ? err : kf_buf_append(out, "]", 1);
}

static kf_err_t
kf_report_json_value(kf_buf_t *out, const json_t *v, int depth)
{
    char num[40];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return kf_report_json_object(out, v, depth);
    case JSON_ARRAY:
        return kf_report_json_array(out, v, depth);
    case JSON_STRING:
        return kf_report_json_string(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return kf_buf_appendf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return kf_buf_append_str(out, kf_report_fmt_num(json_real_value(v), num, sizeof(num)));
    case JSON_TRUE:
        return kf_buf_append_str(out, "true");
    case JSON_FALSE:
        return kf_buf_append_str(out, "false");
    case JSON_NULL:
    default:
        return kf_buf_append_str(out, "null");
    }
}

kf_err_t
kf_report_canonical_json(const json_t *json, kf_buf_t *out)
{
    KF_ASSERT(json && out);
    kf_err_t err = kf_report_json_value(out, json, 0);
    return err ? err : kf_buf_append(out, "\n", 1);
}

/* ---- headline tail ---------------------------------------------------------------------- */

static int
kf_report_dbl_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

kf_err_t
kf_report_tail(const double *pnl,
               size_t n,
               double confidence,
               int horizon_days,
               double *out_var,
               double *out_es,
               int *out_k)
{
    if (!pnl || n == 0 || !(confidence > 0 && confidence < 1) || horizon_days < 1)
        return KF_ERR_INVALID_ARG;
    double *loss = malloc(n * sizeof(*loss));
    if (!loss)
        return KF_ERR_NOMEM;
    for (size_t t = 0; t < n; t++)
        loss[t] = -pnl[t];
    qsort(loss, n, sizeof(*loss), kf_report_dbl_desc);
    /* Same rule and epsilon as kf_risk_compute (docs/risk-metrics.md), so the headline at
     * 99%/1d is the metrics' own hist.99.var_1d, bit for bit. */
    int k = (int)ceil((double)n * (1 - confidence) - 1e-9);
    k = k < 1 ? 1 : k > (int)n ? (int)n : k;
    double s = 0;
    for (int j = 0; j < k; j++)
        s += loss[j];
    double var = loss[k - 1], es = s / k;
    free(loss);
    /* Square-root-of-time; multiplying by sqrt(1) keeps the 1-day figure exact. */
    double scale = horizon_days == 1 ? 1.0 : sqrt((double)horizon_days);
    *out_var = var * scale;
    *out_es = es * scale;
    if (out_k)
        *out_k = k;
    return KF_OK;
}

/* ---- meta from an InferenceResult -------------------------------------------------------- */

static const char *
kf_report_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t
kf_report_jint(const json_t *o, const char *key, int64_t def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

char *
kf_report_sampling_json(const kf_report_sampling_t *s)
{
    json_t *o =
        json_pack("{s:I, s:f, s:f, s:I, s:f, s:f}", "max_tokens", (json_int_t)s->max_tokens,
                  "temperature", s->temperature, "top_p", s->top_p, "top_k", (json_int_t)s->top_k,
                  "min_p", s->min_p, "repetition_penalty", s->repetition_penalty);
    if (!o)
        return NULL;
    if (json_object_set_new(o, "seed", s->has_seed ? json_integer(s->seed) : json_null())) {
        json_decref(o);
        return NULL;
    }
    /* Compact with sorted keys: a metadata value is one short line, the same for the same
     * parameters. */
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

static kf_err_t
kf_report_sampling_parse(const char *text,
                         kf_report_sampling_t *s,
                         char *errstr,
                         size_t errstr_size)
{
    json_t *o = NULL;
    kf_err_t err = kf_json_parse_object(text, strlen(text), NULL, &o, errstr, errstr_size);
    if (err) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", errstr);
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "metadata %s: %s",
                          KF_REPORT_MD_SAMPLING, tmp);
    }
    int64_t mt = s->max_tokens, tk = s->top_k;
    json_t *seed = json_object_get(o, "seed");
    int seed_bad = seed && !json_is_null(seed) && !json_is_integer(seed);
    if (seed_bad)
        snprintf(errstr, errstr_size, "field 'seed' must be an integer or null");
    if (seed_bad || kf_json_opt_int(o, "max_tokens", 1, INT32_MAX, &mt, errstr, errstr_size) ||
        kf_json_opt_int(o, "top_k", 0, INT32_MAX, &tk, errstr, errstr_size) ||
        kf_json_opt_number(o, "temperature", 0, 1e9, &s->temperature, errstr, errstr_size) ||
        kf_json_opt_number(o, "top_p", 0, 1, &s->top_p, errstr, errstr_size) ||
        kf_json_opt_number(o, "min_p", 0, 1, &s->min_p, errstr, errstr_size) ||
        kf_json_opt_number(o, "repetition_penalty", 0, 1e9, &s->repetition_penalty, errstr,
                           errstr_size)) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", errstr);
        json_decref(o);
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "metadata %s: %s",
                          KF_REPORT_MD_SAMPLING, tmp);
    }
    s->max_tokens = (int)mt;
    s->top_k = (int)tk;
    s->has_seed = json_is_integer(seed);
    s->seed = s->has_seed ? (int64_t)json_integer_value(seed) : 0;
    json_decref(o);
    return KF_OK;
}

kf_err_t
kf_report_meta_from_result(const json_t *result,
                           kf_report_meta_t *meta,
                           char *errstr,
                           size_t errstr_size)
{
    KF_ASSERT(meta);
    *meta = (kf_report_meta_t)KF_REPORT_META_INIT;
    if (!json_is_object(result))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "result must be an object");
    meta->request_id = kf_report_jstr(result, "request_id");
    meta->status = kf_report_jstr(result, "status");
    if (!meta->request_id)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "result field 'request_id' is missing or not a string");
    if (!meta->status)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "result field 'status' is missing or not a string");
    meta->tenant_id = kf_report_jstr(result, "tenant_id");
    meta->trace_id = kf_report_jstr(result, "trace_id");
    meta->narrative = kf_report_jstr(result, "text");
    meta->finish_reason = kf_report_jstr(result, "finish_reason");
    meta->error = kf_report_jstr(result, "error");
    meta->model = kf_report_jstr(result, "model");
    meta->model_sha256 = kf_report_jstr(result, "model_sha256");
    meta->prompt_tokens = kf_report_jint(result, "prompt_tokens", 0);
    meta->completion_tokens = kf_report_jint(result, "completion_tokens", 0);
    meta->produced_at_ms = kf_report_jint(result, "produced_at", 0);

    /* Report parameters travel in the request's metadata, which every stage copies. */
    const json_t *md = json_object_get(result, "metadata");
    const char *v;
    if ((v = kf_report_jstr(md, KF_REPORT_MD_CONFIDENCE))) {
        char *end;
        double c = strtod(v, &end);
        if (*end || !(c > 0 && c < 1))
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "metadata %s must be a number in (0, 1), got '%.40s'",
                              KF_REPORT_MD_CONFIDENCE, v);
        meta->confidence = c;
    }
    if ((v = kf_report_jstr(md, KF_REPORT_MD_HORIZON))) {
        char *end;
        long h = strtol(v, &end, 10);
        if (*end || h < 1 || h > 1000)
            return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                              "metadata %s must be an integer 1..1000, got '%.40s'",
                              KF_REPORT_MD_HORIZON, v);
        meta->horizon_days = (int)h;
    }
    if ((v = kf_report_jstr(md, KF_REPORT_MD_SAMPLING))) {
        kf_err_t err = kf_report_sampling_parse(v, &meta->sampling, errstr, errstr_size);
        if (err)
            return err;
        meta->has_sampling = 1;
    }

    const json_t *lin = json_object_get(result, "lineage");
    size_t n = json_array_size(lin);
    if (n) {
        kf_report_tick_t *ticks = calloc(n, sizeof(*ticks));
        if (!ticks)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const json_t *t = json_array_get(lin, i);
            if (!json_is_object(t))
                continue;
            ticks[k].symbol = kf_report_jstr(t, "symbol");
            ticks[k].topic = kf_report_jstr(t, "topic");
            ticks[k].partition = (int32_t)kf_report_jint(t, "partition", -1);
            ticks[k].offset = kf_report_jint(t, "offset", -1);
            ticks[k].event_time_ms = kf_report_jint(t, "event_time", 0);
            k++;
        }
        meta->ticks = ticks;
        meta->nticks = k;
    }
    return KF_OK;
}

void
kf_report_meta_free(kf_report_meta_t *meta)
{
    if (!meta)
        return;
    free((void *)meta->ticks);
    meta->ticks = NULL;
    meta->nticks = 0;
}

/* ---- the document ----------------------------------------------------------------------- */

/* json_object_set_new that turns a NULL value (out of memory) into a failure flag. */
static int
kf_report_set(json_t *obj, const char *key, json_t *val)
{
    return (obj && val) ? json_object_set_new(obj, key, val) : (json_decref(val), -1);
}

static json_t *
kf_report_str_or_null(const char *s)
{
    if (!s)
        return json_null();
    char *fixed = kf_report_utf8_fix(s);
    json_t *j = fixed ? json_string(fixed) : NULL;
    free(fixed);
    return j;
}

static json_t *
kf_report_date_json(int32_t days)
{
    char buf[11];
    return json_string(kf_risk_date_format(days, buf));
}

static json_t *
kf_report_series(const kf_risk_report_t *rep)
{
    json_t *s = json_object(), *dates = json_array(), *values = json_array(), *pnl = json_array();
    int bad = kf_report_set(s, "dates", dates) | kf_report_set(s, "values", values) |
              kf_report_set(s, "pnl", pnl);
    for (int t = 0; !bad && t <= rep->n_returns; t++) {
        bad |= json_array_append_new(dates, kf_report_date_json(rep->dates[t]));
        bad |= json_array_append_new(values, json_real(rep->values[t]));
        if (t < rep->n_returns)
            bad |= json_array_append_new(pnl, json_real(rep->pnl[t]));
    }
    if (bad) {
        json_decref(s);
        return NULL;
    }
    return s;
}

static json_t *
kf_report_lineage(const kf_risk_report_t *rep, const kf_report_meta_t *meta)
{
    json_t *l = json_object();
    int bad = !l;
    bad |= kf_report_set(l, "portfolio_id", json_string(rep->portfolio_id));
    bad |= kf_report_set(l, "as_of", kf_report_date_json(rep->as_of));
    bad |= kf_report_set(l, "model",
                         json_pack("{s:o, s:o}", "name", kf_report_str_or_null(meta->model),
                                   "sha256", kf_report_str_or_null(meta->model_sha256)));
    if (meta->has_sampling) {
        const kf_report_sampling_t *s = &meta->sampling;
        bad |= kf_report_set(l, "sampling",
                             json_pack("{s:I, s:f, s:f, s:I, s:f, s:f, s:o}", "max_tokens",
                                       (json_int_t)s->max_tokens, "temperature", s->temperature,
                                       "top_p", s->top_p, "top_k", (json_int_t)s->top_k, "min_p",
                                       s->min_p, "repetition_penalty", s->repetition_penalty,
                                       "seed", s->has_seed ? json_integer(s->seed) : json_null()));
    } else {
        bad |= kf_report_set(l, "sampling", json_null());
    }
    json_t *market = json_array();
    bad |= kf_report_set(l, "market", market);
    for (size_t i = 0; !bad && i < meta->nticks; i++) {
        const kf_report_tick_t *t = &meta->ticks[i];
        char when[40];
        bad |= json_array_append_new(
            market,
            json_pack("{s:o, s:o, s:i, s:I, s:s}", "symbol", kf_report_str_or_null(t->symbol),
                      "topic", kf_report_str_or_null(t->topic), "partition", (int)t->partition,
                      "offset", (json_int_t)t->offset, "event_time",
                      kf_report_fmt_time(t->event_time_ms, when, sizeof(when))));
    }
    bad |= kf_report_set(
        l, "metrics",
        json_pack("{s:s, s:i, s:o, s:o}", "engine", "kf_risk_compute (docs/risk-metrics.md)",
                  "n_returns", rep->n_returns, "first_date", kf_report_date_json(rep->first_date),
                  "last_date", kf_report_date_json(rep->last_date)));
    if (bad) {
        json_decref(l);
        return NULL;
    }
    return l;
}

/* SHA-256 (hex) of the canonical JSON of doc without "run" and "digest". */
static kf_err_t
kf_report_digest(const json_t *doc, char out[65])
{
    json_t *copy = json_copy((json_t *)doc);
    if (!copy)
        return KF_ERR_NOMEM;
    json_object_del(copy, "run");
    json_object_del(copy, "digest");
    kf_buf_t b;
    kf_buf_init(&b, 0);
    kf_err_t err = kf_report_canonical_json(copy, &b);
    json_decref(copy);
    if (err) {
        kf_buf_free(&b);
        return err;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = EVP_Digest(b.data, b.len, md, &mdlen, EVP_sha256(), NULL);
    kf_buf_free(&b);
    if (!ok || mdlen != 32)
        return KF_ERR_INTERNAL;
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return KF_OK;
}

kf_err_t
kf_report_build(const kf_risk_report_t *rep,
                const kf_report_meta_t *meta,
                json_t **out_doc,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(rep && meta && out_doc);
    *out_doc = NULL;
    double conf = meta->confidence == 0 ? 0.99 : meta->confidence;
    int horizon = meta->horizon_days == 0 ? 1 : meta->horizon_days;
    if (!(conf > 0 && conf < 1))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "confidence must be in (0, 1), got %g", conf);
    if (horizon < 1)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "horizon_days must be >= 1, got %d", horizon);
    if (rep->n_returns < 1 || !rep->pnl || !rep->values || !rep->dates)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "risk report of '%s' has no P&L series", rep->portfolio_id);
    /* The headline at the requested horizon, and its 1-day figures, which the P&L histogram
     * marks (the histogram is of daily P&L). */
    double var = 0, es = 0, var_1d = 0, es_1d = 0;
    int k = 0;
    kf_err_t err = kf_report_tail(rep->pnl, (size_t)rep->n_returns, conf, horizon, &var, &es, &k);
    if (!err)
        err = kf_report_tail(rep->pnl, (size_t)rep->n_returns, conf, 1, &var_1d, &es_1d, NULL);
    if (err)
        return kf_err_set(errstr, errstr_size, err, "headline VaR: %s", kf_err_str(err));

    json_t *doc = json_object();
    int bad = !doc;
    const char *status = meta->status ? meta->status : "completed";
    bad |= kf_report_set(doc, "format", json_string(KF_REPORT_FORMAT_ID));
    bad |= kf_report_set(doc, "portfolio_id", json_string(rep->portfolio_id));
    bad |= kf_report_set(doc, "as_of", kf_report_date_json(rep->as_of));
    bad |= kf_report_set(doc, "base_currency", json_string(rep->base_currency));
    bad |= kf_report_set(doc, "status", kf_report_str_or_null(status));
    bad |= kf_report_set(doc, "headline",
                         json_pack("{s:f, s:i, s:f, s:f, s:f, s:f, s:i, s:i, s:f, s:f, s:f}",
                                   "confidence", conf, "horizon_days", horizon, "var", var, "es",
                                   es, "var_1d", var_1d, "es_1d", es_1d, "k", k, "n_scenarios",
                                   rep->n_returns, "value", rep->value, "var_pct",
                                   rep->value > 0 ? var / rep->value : 0.0, "es_pct",
                                   rep->value > 0 ? es / rep->value : 0.0));
    bad |= kf_report_set(doc, "metrics", kf_risk_report_to_json(rep, 0));
    bad |= kf_report_set(doc, "series", kf_report_series(rep));
    bad |= kf_report_set(doc, "narrative",
                         json_pack("{s:o, s:o, s:o, s:I, s:I}", "text",
                                   kf_report_str_or_null(meta->narrative), "finish_reason",
                                   kf_report_str_or_null(meta->finish_reason), "error",
                                   kf_report_str_or_null(meta->error), "prompt_tokens",
                                   (json_int_t)meta->prompt_tokens, "completion_tokens",
                                   (json_int_t)meta->completion_tokens));
    bad |= kf_report_set(doc, "lineage", kf_report_lineage(rep, meta));
    char when[40];
    bad |= kf_report_set(
        doc, "run",
        json_pack("{s:o, s:o, s:o, s:o}", "request_id", kf_report_str_or_null(meta->request_id),
                  "trace_id", kf_report_str_or_null(meta->trace_id), "tenant_id",
                  kf_report_str_or_null(meta->tenant_id), "produced_at",
                  meta->produced_at_ms
                      ? json_string(kf_report_fmt_time(meta->produced_at_ms, when, sizeof(when)))
                      : json_null()));
    char digest[65];
    if (!bad && kf_report_digest(doc, digest) == KF_OK)
        bad |= kf_report_set(doc, "digest", json_string(digest));
    else
        bad = 1;
    if (bad) {
        json_decref(doc);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory building the report");
    }
    *out_doc = doc;
    return KF_OK;
}

/* ---- formats ---------------------------------------------------------------------------- */

kf_err_t
kf_report_format_parse(const char *name,
                       kf_report_format_t *out_fmt,
                       char *errstr,
                       size_t errstr_size)
{
    if (name && !strcmp(name, "json"))
        *out_fmt = KF_REPORT_JSON;
    else if (name && (!strcmp(name, "md") || !strcmp(name, "markdown")))
        *out_fmt = KF_REPORT_MD;
    else if (name && !strcmp(name, "html"))
        *out_fmt = KF_REPORT_HTML;
    else
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "unknown report format '%.40s' (json, md, html)", name ? name : "");
    return KF_OK;
}

const char *
kf_report_format_ext(kf_report_format_t fmt)
{
    return fmt == KF_REPORT_MD ? "md" : fmt == KF_REPORT_HTML ? "html" : "json";
}

kf_err_t
kf_report_render(
    const json_t *doc, kf_report_format_t fmt, kf_buf_t *out, char *errstr, size_t errstr_size)
{
    if (!json_is_object(doc))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "report must be a JSON object");
    kf_err_t err;
    switch (fmt) {
    case KF_REPORT_MD:
        err = kf_report_render_md(doc, out);
        break;
    case KF_REPORT_HTML:
        err = kf_report_render_html(doc, out);
        break;
    case KF_REPORT_JSON:
    default:
        err = kf_report_canonical_json(doc, out);
    }
    if (err)
        return kf_err_set(errstr, errstr_size, err, "rendering the %s report: %s",
                          kf_report_format_ext(fmt), kf_err_str(err));
    return KF_OK;
}

/* ---- files ------------------------------------------------------------------------------ */

kf_err_t
kf_report_write_file(
    const char *path, const char *data, size_t len, char *errstr, size_t errstr_size)
{
    /* Temporary file + rename: a reader never sees half a report, and a crash leaves the
     * previous version in place. */
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot create '%s': %s", tmp,
                          strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot write '%s': %s", tmp,
                              strerror(e));
        }
        done += (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "cannot write '%s': %s", path,
                          strerror(e));
    }
    return KF_OK;
}
