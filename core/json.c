/*
 * Strict JSON parsing and field getters. jansson does the grammar and UTF-8 checking; this
 * file adds the size and depth limits jansson lacks at run time (its depth cap is a
 * compile-time 2048) and turns lookups into messages that name the field path.
 */
#include "kf_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Returns the nesting depth reached by [data, data+len), stopping early at max+1. Strings are
 * skipped so brackets inside them do not count; malformed input is left to jansson. */
static int
kf_json_depth_scan(const unsigned char *p, size_t len, int max, size_t *out_at)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                *out_at = i;
                return depth;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}

kf_err_t
kf_json_parse(const void *data,
              size_t len,
              const kf_json_limits_t *limits,
              json_t **out_json,
              char *errstr,
              size_t errstr_size)
{
    if (!out_json || (!data && len))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_json_parse: NULL argument");
    *out_json = NULL;
    size_t max_bytes = limits && limits->max_bytes ? limits->max_bytes : KF_JSON_DEFAULT_MAX_BYTES;
    int max_depth = limits && limits->max_depth > 0 ? limits->max_depth : KF_JSON_DEFAULT_MAX_DEPTH;
    if (len > max_bytes)
        return kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                          "JSON document of %zu bytes exceeds the limit of %zu bytes", len,
                          max_bytes);
    if (len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "invalid JSON: empty input");
    size_t at = 0;
    if (kf_json_depth_scan(data, len, max_depth, &at))
        return kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                          "JSON nesting deeper than %d at byte %zu", max_depth, at);
    json_error_t jerr;
    /* jansson already rejects invalid UTF-8, lone surrogates and \u0000 (no JSON_ALLOW_NUL). */
    json_t *json = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!json)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                          "invalid JSON at line %d, column %d (byte %d): %s", jerr.line,
                          jerr.column, jerr.position, jerr.text);
    *out_json = json;
    return KF_OK;
}

kf_err_t
kf_json_parse_object(const void *data,
                     size_t len,
                     const kf_json_limits_t *limits,
                     json_t **out_json,
                     char *errstr,
                     size_t errstr_size)
{
    kf_err_t err = kf_json_parse(data, len, limits, out_json, errstr, errstr_size);
    if (err)
        return err;
    if (!json_is_object(*out_json)) {
        json_decref(*out_json);
        *out_json = NULL;
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "JSON body must be an object");
    }
    return KF_OK;
}

json_t *
kf_json_path(const json_t *root, const char *path)
{
    if (!root || !path)
        return NULL;
    json_t *cur = (json_t *)root;
    const char *p = path;
    while (*p && cur) {
        if (*p == '[') {
            /* [N]: array index, decimal digits only. */
            char *end;
            if (p[1] < '0' || p[1] > '9')
                return NULL;
            unsigned long long idx = strtoull(p + 1, &end, 10);
            if (*end != ']' || !json_is_array(cur) || idx >= json_array_size(cur))
                return NULL;
            cur = json_array_get(cur, (size_t)idx);
            p = end + 1;
        } else {
            size_t n = strcspn(p, ".[");
            if (n == 0 || !json_is_object(cur))
                return NULL;
            char key[256];
            if (n >= sizeof(key))
                return NULL;
            memcpy(key, p, n);
            key[n] = '\0';
            cur = json_object_get(cur, key);
            p += n;
        }
        if (*p == '.') {
            p++;
            if (*p == '\0' || *p == '.' || *p == '[')
                return NULL;
        }
    }
    return cur;
}

/* Looks up `path`; returns 1 when present and not null. When absent: required -> error,
 * optional -> 0 with *err = KF_OK. */
static int
kf_json_lookup(const json_t *root,
               const char *path,
               int required,
               json_t **out,
               kf_err_t *err,
               char *errstr,
               size_t errstr_size)
{
    KF_ASSERT(path);
    *err = KF_OK;
    *out = kf_json_path(root, path);
    if (*out && !json_is_null(*out))
        return 1;
    if (required)
        *err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "field '%s' is required", path);
    return 0;
}

static kf_err_t
kf_json_str(const json_t *root,
            const char *path,
            int required,
            size_t max_len,
            const char **out,
            char *errstr,
            size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, required, &v, &err, errstr, errstr_size))
        return err;
    if (!json_is_string(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "field '%s' must be a string",
                          path);
    if (max_len && json_string_length(v) > max_len)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "field '%s' must be a string of at most %zu bytes", path, max_len);
    *out = json_string_value(v);
    return KF_OK;
}

kf_err_t
kf_json_get_str(const json_t *root,
                const char *path,
                size_t max_len,
                const char **out,
                char *errstr,
                size_t errstr_size)
{
    return kf_json_str(root, path, 1, max_len, out, errstr, errstr_size);
}

kf_err_t
kf_json_opt_str(const json_t *root,
                const char *path,
                size_t max_len,
                const char **out,
                char *errstr,
                size_t errstr_size)
{
    return kf_json_str(root, path, 0, max_len, out, errstr, errstr_size);
}

static kf_err_t
kf_json_int(const json_t *root,
            const char *path,
            int required,
            int64_t min,
            int64_t max,
            int64_t *out,
            char *errstr,
            size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, required, &v, &err, errstr, errstr_size))
        return err;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        if (min == INT64_MIN && max == INT64_MAX)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "field '%s' must be an integer", path);
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "field '%s' must be an integer between %" PRId64 " and %" PRId64, path,
                          min, max);
    }
    *out = json_integer_value(v);
    return KF_OK;
}

kf_err_t
kf_json_get_int(const json_t *root,
                const char *path,
                int64_t min,
                int64_t max,
                int64_t *out,
                char *errstr,
                size_t errstr_size)
{
    return kf_json_int(root, path, 1, min, max, out, errstr, errstr_size);
}

kf_err_t
kf_json_opt_int(const json_t *root,
                const char *path,
                int64_t min,
                int64_t max,
                int64_t *out,
                char *errstr,
                size_t errstr_size)
{
    return kf_json_int(root, path, 0, min, max, out, errstr, errstr_size);
}

static kf_err_t
kf_json_number(const json_t *root,
               const char *path,
               int required,
               double min,
               double max,
               double *out,
               char *errstr,
               size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, required, &v, &err, errstr, errstr_size))
        return err;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    /* NaN fails both comparisons' negation, so non-numbers land here too. */
    if (!(d >= min && d <= max))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "field '%s' must be a number between %g and %g", path, min, max);
    *out = d;
    return KF_OK;
}

kf_err_t
kf_json_get_number(const json_t *root,
                   const char *path,
                   double min,
                   double max,
                   double *out,
                   char *errstr,
                   size_t errstr_size)
{
    return kf_json_number(root, path, 1, min, max, out, errstr, errstr_size);
}

kf_err_t
kf_json_opt_number(const json_t *root,
                   const char *path,
                   double min,
                   double max,
                   double *out,
                   char *errstr,
                   size_t errstr_size)
{
    return kf_json_number(root, path, 0, min, max, out, errstr, errstr_size);
}

static kf_err_t
kf_json_bool(
    const json_t *root, const char *path, int required, int *out, char *errstr, size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, required, &v, &err, errstr, errstr_size))
        return err;
    if (!json_is_boolean(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "field '%s' must be true or false", path);
    *out = json_is_true(v);
    return KF_OK;
}

kf_err_t
kf_json_get_bool(const json_t *root, const char *path, int *out, char *errstr, size_t errstr_size)
{
    return kf_json_bool(root, path, 1, out, errstr, errstr_size);
}

kf_err_t
kf_json_opt_bool(const json_t *root, const char *path, int *out, char *errstr, size_t errstr_size)
{
    return kf_json_bool(root, path, 0, out, errstr, errstr_size);
}

kf_err_t
kf_json_get_array(const json_t *root,
                  const char *path,
                  size_t max_items,
                  json_t **out,
                  char *errstr,
                  size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, 1, &v, &err, errstr, errstr_size))
        return err;
    if (!json_is_array(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "field '%s' must be an array",
                          path);
    if (max_items && json_array_size(v) > max_items)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "field '%s' must be an array of at most %zu items", path, max_items);
    *out = v;
    return KF_OK;
}

kf_err_t
kf_json_get_object(
    const json_t *root, const char *path, json_t **out, char *errstr, size_t errstr_size)
{
    json_t *v;
    kf_err_t err;
    if (!kf_json_lookup(root, path, 1, &v, &err, errstr, errstr_size))
        return err;
    if (!json_is_object(v))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "field '%s' must be an object",
                          path);
    *out = v;
    return KF_OK;
}

/* json_dump_callback sink: remembers why it stopped so kf_json_dump can report it. */
typedef struct kf_json_sink {
    kf_buf_t *buf;
    kf_err_t err;
} kf_json_sink_t;

static int
kf_json_sink_cb(const char *data, size_t size, void *opaque)
{
    kf_json_sink_t *sink = opaque;
    sink->err = kf_buf_append(sink->buf, data, size);
    return sink->err ? -1 : 0;
}

kf_err_t
kf_json_dump(const json_t *json, kf_buf_t *buf)
{
    KF_ASSERT(json && buf);
    size_t before = buf->len;
    kf_json_sink_t sink = {.buf = buf, .err = KF_OK};
    if (json_dump_callback(json, kf_json_sink_cb, &sink, JSON_COMPACT | JSON_ENCODE_ANY) != 0) {
        /* Leave the buffer as it was: a half-written document is worse than none. */
        buf->len = before;
        if (buf->data)
            buf->data[before] = '\0';
        return sink.err ? sink.err : KF_ERR_INVALID_ARG;
    }
    return KF_OK;
}
