/*
 * api_validate.c: turns a client's request object (POST /v1/requests, or one JSONL line of
 * POST /v1/batches) into the InferenceRequest JSON the pipeline carries, or into a 400 error
 * naming the field at fault.
 *
 * Validation is strict on purpose: unknown keys are errors (a typo such as "temprature" would
 * otherwise be silently ignored and the client would never know), every range is checked
 * here rather than by the workers, and the built record sets every schema field explicitly so
 * the Avro defaults never hide a mistake. The body itself was already parsed by kf_json with
 * size, depth and UTF-8 limits.
 */
#include "api_int.h"

#include "kf_audit.h"
#include "kf_json.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
kf_api_error_set(
    kf_api_error_t *err, int status, const char *code, const char *field, const char *fmt, ...)
{
    err->status = status;
    snprintf(err->code, sizeof(err->code), "%s", code);
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

char *
kf_api_error_body(const kf_api_error_t *err)
{
    json_t *e = json_pack("{s:s, s:s}", "code", err->code, "message", err->message);
    if (!e)
        return NULL;
    if (err->field[0])
        json_object_set_new(e, "field", json_string(err->field));
    if (err->line > 0)
        json_object_set_new(e, "line", json_integer(err->line));
    /* json_pack's "o" steals e, also on failure. */
    json_t *root = json_pack("{s:o}", "error", e);
    if (!root)
        return NULL;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

int
kf_api_is_uuid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = (i == 8 || i == 13 || i == 18 || i == 23);
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    }
    return s[36] == '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil),
 * so no timegm()/TZ dependence. */
static int64_t
kf_api_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
kf_api_days_in_month(int y, int m)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 ? 28 + leap : mdays[m - 1];
}

/* Reads exactly n decimal digits. */
static int
kf_api_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* YYYY-MM-DD with a real calendar date; *p advances past it. */
static int
kf_api_parse_date(const char **p, int *y, int *m, int *d)
{
    if (kf_api_digits(p, 4, y) || **p != '-')
        return -1;
    (*p)++;
    if (kf_api_digits(p, 2, m) || **p != '-')
        return -1;
    (*p)++;
    if (kf_api_digits(p, 2, d))
        return -1;
    if (*y < 1970 || *m < 1 || *m > 12 || *d < 1 || *d > kf_api_days_in_month(*y, *m))
        return -1;
    return 0;
}

kf_err_t
kf_api_parse_rfc3339(const char *s, int64_t *out_ms)
{
    const char *p = s;
    int y, mo, d, h, mi, sec;
    if (kf_api_parse_date(&p, &y, &mo, &d))
        return KF_ERR_INVALID_ARG;
    if (*p != 'T' && *p != 't')
        return KF_ERR_INVALID_ARG;
    p++;
    if (kf_api_digits(&p, 2, &h) || *p++ != ':' || kf_api_digits(&p, 2, &mi) || *p++ != ':' ||
        kf_api_digits(&p, 2, &sec))
        return KF_ERR_INVALID_ARG;
    /* 60 is a leap second; it is folded into the next second below. */
    if (h > 23 || mi > 59 || sec > 60)
        return KF_ERR_INVALID_ARG;
    int64_t ms = 0;
    if (*p == '.') {
        p++;
        int n = 0, scale = 100;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                ms += (*p - '0') * scale;
            scale /= 10;
            n++;
            p++;
        }
        if (n == 0)
            return KF_ERR_INVALID_ARG;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (kf_api_digits(&p, 2, &oh) || *p++ != ':' || kf_api_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return KF_ERR_INVALID_ARG;
        offset_min = sign * (oh * 60 + om);
    } else {
        return KF_ERR_INVALID_ARG;
    }
    if (*p)
        return KF_ERR_INVALID_ARG;
    int64_t secs = kf_api_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    *out_ms = (secs - offset_min * 60) * 1000 + ms;
    return KF_OK;
}

/* The client keys accepted at the top level and inside "sampling" and "risk". */
static const char *const kf_api_top_keys[] = {
    "model",    "prompt",      "messages",     "sampling",  "task",
    "risk",     "customer_id", "portfolio_id", "symbols",   "callback_url",
    "metadata", "priority",    "deadline",     "custom_id", NULL};
static const char *const kf_api_sampling_keys[] = {
    "max_tokens",         "temperature", "top_p", "top_k", "min_p",
    "repetition_penalty", "seed",        "stop",  NULL};
static const char *const kf_api_risk_keys[] = {"portfolio_id", "as_of", "confidence",
                                               "horizon_days", NULL};

#define KF_API_MAX_ID_LEN       64
#define KF_API_MAX_SYMBOLS      64
#define KF_API_MAX_SYMBOL_LEN   32
#define KF_API_MAX_STOP         8
#define KF_API_MAX_STOP_LEN     128
#define KF_API_MAX_META_KEYS    16
#define KF_API_MAX_META_KEY_LEN 64
#define KF_API_MAX_META_VAL_LEN 512
#define KF_API_MAX_URL_LEN      2048
#define KF_API_MAX_MODEL_LEN    128
#define KF_API_PRIORITY_MAX     100

/* Rejects keys of obj not in `allowed`; `prefix` ("" or "sampling.") builds the field. */
static kf_err_t
kf_api_check_keys(const json_t *obj,
                  const char *const *allowed,
                  const char *prefix,
                  kf_api_error_t *err)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(*a, key);
        if (!ok) {
            char field[128];
            snprintf(field, sizeof(field), "%s%s", prefix, key);
            kf_api_error_set(err, 400, "invalid_request", field, "unknown field '%s'", field);
            return KF_ERR_INVALID_ARG;
        }
    }
    return KF_OK;
}

/* Turns a kf_json getter failure into a 400 naming `field`. */
static kf_err_t
kf_api_field_err(kf_api_error_t *err, const char *field, const char *msg)
{
    kf_api_error_set(err, 400, "invalid_request", field, "%s", msg);
    return KF_ERR_INVALID_ARG;
}

/* Optional string that must be non-empty when present. */
static kf_err_t
kf_api_opt_nonempty(
    const json_t *body, const char *field, size_t max, const char **out, kf_api_error_t *err)
{
    char es[256];
    if (kf_json_opt_str(body, field, max, out, es, sizeof(es)))
        return kf_api_field_err(err, field, es);
    if (*out && !**out) {
        kf_api_error_set(err, 400, "invalid_request", field, "field '%s' must not be empty", field);
        return KF_ERR_INVALID_ARG;
    }
    return KF_OK;
}

/* http(s)://host[...] without whitespace or control characters. */
static int
kf_api_url_ok(const char *u)
{
    size_t skip;
    if (!strncasecmp(u, "https://", 8))
        skip = 8;
    else if (!strncasecmp(u, "http://", 7))
        skip = 7;
    else
        return 0;
    if (!u[skip] || u[skip] == '/' || u[skip] == ':' || u[skip] == '?' || u[skip] == '#')
        return 0;
    for (const unsigned char *c = (const unsigned char *)u; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return 0;
    return 1;
}

static int
kf_api_symbol_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-:^/=", *s))
            return 0;
    return 1;
}

/* messages: 1..max_messages objects {role: system|user|assistant, content: string}. */
static kf_err_t
kf_api_build_messages(const json_t *arr,
                      const kf_api_limits_t *lim,
                      json_t *out_msgs,
                      kf_api_error_t *err)
{
    char es[256], field[64];
    if (json_array_size(arr) == 0)
        return kf_api_field_err(err, "messages", "field 'messages' must not be empty");
    if (json_array_size(arr) > lim->max_messages) {
        kf_api_error_set(err, 400, "invalid_request", "messages",
                         "field 'messages' must be an array of at most %zu items",
                         lim->max_messages);
        return KF_ERR_INVALID_ARG;
    }
    size_t i;
    json_t *m;
    json_array_foreach(arr, i, m)
    {
        snprintf(field, sizeof(field), "messages[%zu]", i);
        if (!json_is_object(m)) {
            kf_api_error_set(err, 400, "invalid_request", field, "field '%s' must be an object",
                             field);
            return KF_ERR_INVALID_ARG;
        }
        char prefix[72];
        snprintf(prefix, sizeof(prefix), "%s.", field);
        static const char *const msg_keys[] = {"role", "content", NULL};
        if (kf_api_check_keys(m, msg_keys, prefix, err))
            return KF_ERR_INVALID_ARG;
        const char *role = NULL, *content = NULL;
        snprintf(field, sizeof(field), "messages[%zu].role", i);
        if (kf_json_get_str(m, "role", 16, &role, es, sizeof(es)) ||
            (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))) {
            kf_api_error_set(err, 400, "invalid_request", field,
                             "field '%s' must be one of system, user, assistant", field);
            return KF_ERR_INVALID_ARG;
        }
        snprintf(field, sizeof(field), "messages[%zu].content", i);
        if (kf_json_get_str(m, "content", lim->max_prompt_bytes, &content, es, sizeof(es))) {
            /* The getter names the relative key; say the full path. */
            if (!kf_json_path(m, "content"))
                kf_api_error_set(err, 400, "invalid_request", field, "field '%s' is required",
                                 field);
            else
                kf_api_error_set(err, 400, "invalid_request", field,
                                 "field '%s' must be a string of at most %zu bytes", field,
                                 lim->max_prompt_bytes);
            return KF_ERR_INVALID_ARG;
        }
        json_array_append_new(out_msgs, json_pack("{s:s, s:s}", "role", role, "content", content));
    }
    return KF_OK;
}

/* sampling: every parameter with its range; absent ones take the API defaults (the schema's
 * defaults). */
static kf_err_t
kf_api_build_sampling(const json_t *body,
                      const kf_api_limits_t *lim,
                      json_t **out_sampling,
                      kf_api_error_t *err)
{
    char es[256];
    json_t *s = kf_json_path(body, "sampling");
    if (s && !json_is_null(s)) {
        if (!json_is_object(s))
            return kf_api_field_err(err, "sampling", "field 'sampling' must be an object");
        if (kf_api_check_keys(s, kf_api_sampling_keys, "sampling.", err))
            return KF_ERR_INVALID_ARG;
    }
    int64_t max_tokens = 256, top_k = 0, seed = -1;
    double temperature = 1.0, top_p = 1.0, min_p = 0.0, rep = 1.0;
    if (kf_json_opt_int(body, "sampling.max_tokens", 1, lim->max_tokens, &max_tokens, es,
                        sizeof(es)))
        return kf_api_field_err(err, "sampling.max_tokens", es);
    if (kf_json_opt_number(body, "sampling.temperature", 0, 2, &temperature, es, sizeof(es)))
        return kf_api_field_err(err, "sampling.temperature", es);
    if (kf_json_opt_number(body, "sampling.top_p", 0, 1, &top_p, es, sizeof(es)) || top_p <= 0)
        return kf_api_field_err(err, "sampling.top_p",
                                "field 'sampling.top_p' must be a number greater than 0 and at "
                                "most 1");
    if (kf_json_opt_int(body, "sampling.top_k", 0, 100000, &top_k, es, sizeof(es)))
        return kf_api_field_err(err, "sampling.top_k", es);
    if (kf_json_opt_number(body, "sampling.min_p", 0, 1, &min_p, es, sizeof(es)))
        return kf_api_field_err(err, "sampling.min_p", es);
    if (kf_json_opt_number(body, "sampling.repetition_penalty", 0, 10, &rep, es, sizeof(es)) ||
        rep <= 0)
        return kf_api_field_err(err, "sampling.repetition_penalty",
                                "field 'sampling.repetition_penalty' must be a number greater "
                                "than 0 and at most 10");
    if (kf_json_opt_int(body, "sampling.seed", 0, INT64_MAX, &seed, es, sizeof(es)))
        return kf_api_field_err(err, "sampling.seed", es);
    json_t *stop = json_array();
    json_t *st = kf_json_path(body, "sampling.stop");
    if (st && !json_is_null(st)) {
        json_t *arr;
        if (kf_json_get_array(body, "sampling.stop", KF_API_MAX_STOP, &arr, es, sizeof(es))) {
            json_decref(stop);
            return kf_api_field_err(err, "sampling.stop", es);
        }
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v)
        {
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) > KF_API_MAX_STOP_LEN) {
                char field[48];
                snprintf(field, sizeof(field), "sampling.stop[%zu]", i);
                kf_api_error_set(err, 400, "invalid_request", field,
                                 "field '%s' must be a non-empty string of at most %d bytes", field,
                                 KF_API_MAX_STOP_LEN);
                json_decref(stop);
                return KF_ERR_INVALID_ARG;
            }
            json_array_append(stop, v);
        }
    }
    json_t *out = json_pack("{s:I, s:f, s:f, s:I, s:f, s:f, s:o, s:o}", "max_tokens",
                            (json_int_t)max_tokens, "temperature", temperature, "top_p", top_p,
                            "top_k", (json_int_t)top_k, "min_p", min_p, "repetition_penalty", rep,
                            "seed", seed < 0 ? json_null() : json_integer(seed), "stop", stop);
    if (!out) {
        kf_api_error_set(err, 500, "internal", NULL, "out of memory");
        return KF_ERR_NOMEM;
    }
    *out_sampling = out;
    return KF_OK;
}

/* risk: required for task risk_report (portfolio_id may come from the top level). */
static kf_err_t
kf_api_build_risk(const json_t *body,
                  const char *ctx_portfolio,
                  json_t **out_risk,
                  kf_api_error_t *err)
{
    char es[256];
    json_t *r = kf_json_path(body, "risk");
    if (r && !json_is_null(r)) {
        if (!json_is_object(r))
            return kf_api_field_err(err, "risk", "field 'risk' must be an object");
        if (kf_api_check_keys(r, kf_api_risk_keys, "risk.", err))
            return KF_ERR_INVALID_ARG;
    }
    const char *portfolio = NULL, *as_of = NULL;
    if (kf_api_opt_nonempty(body, "risk.portfolio_id", KF_API_MAX_ID_LEN, &portfolio, err))
        return KF_ERR_INVALID_ARG;
    if (!portfolio)
        portfolio = ctx_portfolio;
    if (!portfolio)
        return kf_api_field_err(err, "risk.portfolio_id",
                                "field 'risk.portfolio_id' is required when task is "
                                "'risk_report'");
    if (kf_json_opt_str(body, "risk.as_of", 10, &as_of, es, sizeof(es)))
        return kf_api_field_err(err, "risk.as_of", "field 'risk.as_of' must be a date YYYY-MM-DD");
    if (as_of) {
        const char *p = as_of;
        int y, m, d;
        if (kf_api_parse_date(&p, &y, &m, &d) || *p)
            return kf_api_field_err(err, "risk.as_of",
                                    "field 'risk.as_of' must be a date YYYY-MM-DD");
    }
    double confidence = 0.99;
    if (kf_json_opt_number(body, "risk.confidence", 0, 1, &confidence, es, sizeof(es)) ||
        (confidence != 0.95 && confidence != 0.99))
        return kf_api_field_err(err, "risk.confidence",
                                "field 'risk.confidence' must be 0.95 or 0.99");
    int64_t horizon = 1;
    if (kf_json_opt_int(body, "risk.horizon_days", 1, 10, &horizon, es, sizeof(es)) ||
        (horizon != 1 && horizon != 10))
        return kf_api_field_err(err, "risk.horizon_days",
                                "field 'risk.horizon_days' must be 1 or 10");
    *out_risk = json_pack("{s:s, s:o, s:f, s:I}", "portfolio_id", portfolio, "as_of",
                          as_of ? json_string(as_of) : json_null(), "confidence", confidence,
                          "horizon_days", (json_int_t)horizon);
    return *out_risk ? KF_OK : KF_ERR_NOMEM;
}

static kf_err_t
kf_api_build_symbols(const json_t *body, json_t *out_syms, kf_api_error_t *err)
{
    char es[256];
    json_t *v = kf_json_path(body, "symbols");
    if (!v || json_is_null(v))
        return KF_OK;
    json_t *arr;
    if (kf_json_get_array(body, "symbols", KF_API_MAX_SYMBOLS, &arr, es, sizeof(es)))
        return kf_api_field_err(err, "symbols", es);
    size_t i;
    json_t *s;
    json_array_foreach(arr, i, s)
    {
        if (!json_is_string(s) || json_string_length(s) > KF_API_MAX_SYMBOL_LEN ||
            !kf_api_symbol_ok(json_string_value(s))) {
            char field[32];
            snprintf(field, sizeof(field), "symbols[%zu]", i);
            kf_api_error_set(err, 400, "invalid_request", field,
                             "field '%s' must be a symbol of 1 to %d letters, digits or ._-:^/=",
                             field, KF_API_MAX_SYMBOL_LEN);
            return KF_ERR_INVALID_ARG;
        }
        json_array_append(out_syms, s);
    }
    return KF_OK;
}

static kf_err_t
kf_api_build_metadata(const json_t *body, json_t *out_meta, kf_api_error_t *err)
{
    json_t *m = json_object_get(body, "metadata");
    if (!m || json_is_null(m))
        return KF_OK;
    if (!json_is_object(m))
        return kf_api_field_err(err, "metadata", "field 'metadata' must be an object");
    if (json_object_size(m) > KF_API_MAX_META_KEYS) {
        kf_api_error_set(err, 400, "invalid_request", "metadata",
                         "field 'metadata' must have at most %d keys", KF_API_MAX_META_KEYS);
        return KF_ERR_INVALID_ARG;
    }
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val)
    {
        char field[128];
        snprintf(field, sizeof(field), "metadata.%.*s", KF_API_MAX_META_KEY_LEN, key);
        size_t klen = strlen(key);
        if (klen == 0 || klen > KF_API_MAX_META_KEY_LEN) {
            kf_api_error_set(err, 400, "invalid_request", "metadata",
                             "keys of field 'metadata' must be 1 to %d bytes",
                             KF_API_MAX_META_KEY_LEN);
            return KF_ERR_INVALID_ARG;
        }
        if (!json_is_string(val) || json_string_length(val) > KF_API_MAX_META_VAL_LEN) {
            kf_api_error_set(err, 400, "invalid_request", field,
                             "field '%s' must be a string of at most %d bytes", field,
                             KF_API_MAX_META_VAL_LEN);
            return KF_ERR_INVALID_ARG;
        }
        json_object_set(out_meta, key, val);
    }
    return KF_OK;
}

/* deadline: RFC 3339 text or epoch milliseconds, in the future. */
static kf_err_t
kf_api_build_deadline(const json_t *body, int64_t now_ms, json_t **out, kf_api_error_t *err)
{
    json_t *v = json_object_get(body, "deadline");
    *out = json_null();
    if (!v || json_is_null(v))
        return KF_OK;
    int64_t ms;
    if (json_is_integer(v)) {
        ms = json_integer_value(v);
    } else if (!json_is_string(v) || json_string_length(v) > 64 ||
               kf_api_parse_rfc3339(json_string_value(v), &ms)) {
        return kf_api_field_err(err, "deadline",
                                "field 'deadline' must be an RFC 3339 timestamp "
                                "(2030-01-02T03:04:05Z) or epoch milliseconds");
    }
    if (ms <= now_ms)
        return kf_api_field_err(err, "deadline", "field 'deadline' must be in the future");
    *out = json_integer(ms);
    return KF_OK;
}

kf_err_t
kf_api_request_build(const json_t *body,
                     const kf_api_req_ids_t *ids,
                     const kf_api_limits_t *limits,
                     json_t **out_ir,
                     kf_api_error_t *out_err)
{
    KF_ASSERT(ids && limits && out_ir && out_err);
    *out_ir = NULL;
    char es[256];
    kf_api_error_t *err = out_err;
    if (!json_is_object(body))
        return kf_api_field_err(err, "", "request must be a JSON object");
    if (kf_api_check_keys(body, kf_api_top_keys, "", err))
        return KF_ERR_INVALID_ARG;

    const char *custom_id = NULL;
    if (ids->batch_id) {
        if (kf_json_get_str(body, "custom_id", KF_API_MAX_ID_LEN, &custom_id, es, sizeof(es)))
            return kf_api_field_err(err, "custom_id", es);
        if (!*custom_id)
            return kf_api_field_err(err, "custom_id", "field 'custom_id' must not be empty");
    } else if (json_object_get(body, "custom_id")) {
        return kf_api_field_err(err, "custom_id",
                                "unknown field 'custom_id' (only allowed in batches)");
    }

    const char *model = NULL, *task = "completion", *prompt = NULL;
    if (kf_json_get_str(body, "model", KF_API_MAX_MODEL_LEN, &model, es, sizeof(es)))
        return kf_api_field_err(err, "model", es);
    if (!*model)
        return kf_api_field_err(err, "model", "field 'model' must not be empty");
    if (kf_json_opt_str(body, "task", 32, &task, es, sizeof(es)) ||
        (strcmp(task, "completion") && strcmp(task, "risk_report")))
        return kf_api_field_err(err, "task", "field 'task' must be 'completion' or 'risk_report'");
    int risk_task = !strcmp(task, "risk_report");

    /* prompt or messages: exactly one for a completion; at most one for a risk report, whose
     * prompt the enricher renders from market data. */
    if (kf_json_opt_str(body, "prompt", limits->max_prompt_bytes, &prompt, es, sizeof(es)))
        return kf_api_field_err(err, "prompt", es);
    json_t *msgs_in = json_object_get(body, "messages");
    if (msgs_in && json_is_null(msgs_in))
        msgs_in = NULL;
    if (prompt && msgs_in)
        return kf_api_field_err(err, "messages",
                                "fields 'prompt' and 'messages' are mutually exclusive");
    if (!prompt && !msgs_in && !risk_task)
        return kf_api_field_err(err, "prompt", "field 'prompt' or 'messages' is required");
    if (prompt && !*prompt)
        return kf_api_field_err(err, "prompt", "field 'prompt' must not be empty");
    if (msgs_in && !json_is_array(msgs_in))
        return kf_api_field_err(err, "messages", "field 'messages' must be an array");
    if (!risk_task && json_object_get(body, "risk") && !json_is_null(json_object_get(body, "risk")))
        return kf_api_field_err(err, "risk",
                                "field 'risk' is only allowed when task is 'risk_report'");

    const char *customer = NULL, *portfolio = NULL, *callback = NULL;
    if (kf_api_opt_nonempty(body, "customer_id", KF_API_MAX_ID_LEN, &customer, err) ||
        kf_api_opt_nonempty(body, "portfolio_id", KF_API_MAX_ID_LEN, &portfolio, err))
        return KF_ERR_INVALID_ARG;
    if (kf_json_opt_str(body, "callback_url", KF_API_MAX_URL_LEN, &callback, es, sizeof(es)))
        return kf_api_field_err(err, "callback_url", es);
    if (callback && !kf_api_url_ok(callback))
        return kf_api_field_err(err, "callback_url",
                                "field 'callback_url' must be an http:// or https:// URL with a "
                                "host");
    int64_t priority = 0;
    if (kf_json_opt_int(body, "priority", -KF_API_PRIORITY_MAX, KF_API_PRIORITY_MAX, &priority, es,
                        sizeof(es)))
        return kf_api_field_err(err, "priority", es);
    if (ids->batch_id && !json_object_get(body, "priority"))
        priority = -1; /* batch work yields to interactive requests unless told otherwise */

    /* The parts built as JSON values; every error path below frees what exists. */
    json_t *messages = json_array(), *symbols = json_array(), *meta = json_object();
    json_t *sampling = NULL, *risk = json_null(), *deadline = NULL;
    kf_err_t e = KF_OK;
    if (msgs_in)
        e = kf_api_build_messages(msgs_in, limits, messages, err);
    if (!e)
        e = kf_api_build_sampling(body, limits, &sampling, err);
    if (!e && risk_task) {
        json_decref(risk);
        risk = NULL;
        e = kf_api_build_risk(body, portfolio, &risk, err);
        if (e && !risk)
            risk = json_null();
    }
    if (!e)
        e = kf_api_build_symbols(body, symbols, err);
    if (!e)
        e = kf_api_build_metadata(body, meta, err);
    if (!e)
        e = kf_api_build_deadline(body, limits->now_ms ? limits->now_ms : kf_now_ms(), &deadline,
                                  err);
    if (e) {
        json_decref(messages);
        json_decref(symbols);
        json_decref(meta);
        json_decref(sampling);
        json_decref(risk);
        json_decref(deadline);
        return e;
    }
#define KF_API_OPT(s) ((s) ? json_string(s) : json_null())
    json_t *ir = json_pack(
        "{s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:I, "
        "s:s, s:o, s:o}",
        "request_id", ids->request_id, "tenant_id", ids->tenant_id, "idempotency_key",
        KF_API_OPT(ids->idempotency_key), "model", model, "task", task, "prompt",
        KF_API_OPT(prompt), "messages", messages, "sampling", sampling, "risk", risk, "customer_id",
        KF_API_OPT(customer), "portfolio_id", KF_API_OPT(portfolio), "symbols", symbols,
        "callback_url", KF_API_OPT(callback), "metadata", meta, "priority", (json_int_t)priority,
        "deadline", deadline, "accepted_at", (json_int_t)ids->accepted_at_ms, "trace_id",
        ids->trace_id ? ids->trace_id : "", "batch_id", KF_API_OPT(ids->batch_id), "custom_id",
        KF_API_OPT(custom_id));
#undef KF_API_OPT
    if (!ir) {
        kf_api_error_set(err, 500, "internal", NULL, "out of memory building the request");
        return KF_ERR_NOMEM;
    }
    *out_ir = ir;
    return KF_OK;
}
