/*
 * kf_json: strict JSON for untrusted bytes, and typed getters whose errors name the field.
 *
 * Parsing (jansson underneath) rejects: invalid UTF-8 and lone surrogates, \u0000, duplicate
 * object keys, trailing garbage, input larger than max_bytes and nesting deeper than
 * max_depth (checked by a pre-scan before jansson builds anything, so a hostile
 * "[[[[..." costs no memory). Errors say what and where:
 *   "JSON nesting deeper than 64 at byte 65"
 *   "invalid JSON at line 1, column 12 (byte 11): duplicate object key near '"a"'"
 *
 * Getters resolve a path of object keys and array indexes, "sampling.top_p",
 * "messages[2].content", and fail with messages a client can act on:
 *   "field 'sampling.top_p' must be a number between 0 and 1"
 *   "field 'prompt' is required"
 * kf_json_get_* require the field; kf_json_opt_* return KF_OK and leave *out untouched when
 * the field is absent or null (pre-set *out to the default).
 * Errors: KF_ERR_PARSE (syntax), KF_ERR_LIMIT (size, depth), KF_ERR_INVALID_ARG (a getter's
 * field missing, of the wrong type or out of range).
 * Thread-safety: functions hold no state; jansson values must not be shared across threads
 * while being modified.
 */
#ifndef KF_JSON_H
#define KF_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kf_buf.h"
#include "kf_err.h"

typedef struct kf_json_limits {
    size_t max_bytes; /* 0: KF_JSON_DEFAULT_MAX_BYTES */
    int max_depth;    /* 0: KF_JSON_DEFAULT_MAX_DEPTH; counts arrays and objects */
} kf_json_limits_t;

#define KF_JSON_DEFAULT_MAX_BYTES (1u << 20)
#define KF_JSON_DEFAULT_MAX_DEPTH 64

/* Parses len bytes (need not be NUL-terminated) into a new reference (*out_json, release with
 * json_decref). Any JSON value is accepted at the top level. limits may be NULL. */
kf_err_t kf_json_parse(const void *data,
                       size_t len,
                       const kf_json_limits_t *limits,
                       json_t **out_json,
                       char *errstr,
                       size_t errstr_size);
/* Same, but the top level must be an object ("JSON body must be an object"). */
kf_err_t kf_json_parse_object(const void *data,
                              size_t len,
                              const kf_json_limits_t *limits,
                              json_t **out_json,
                              char *errstr,
                              size_t errstr_size);

/* Borrowed value at `path` (NULL when absent or when the path does not fit the document). */
json_t *kf_json_path(const json_t *root, const char *path);

kf_err_t kf_json_get_str(const json_t *root,
                         const char *path,
                         size_t max_len,
                         const char **out,
                         char *errstr,
                         size_t errstr_size);
kf_err_t kf_json_opt_str(const json_t *root,
                         const char *path,
                         size_t max_len,
                         const char **out,
                         char *errstr,
                         size_t errstr_size);
/* Integer in [min, max]; a JSON real such as 3.0 is rejected. */
kf_err_t kf_json_get_int(const json_t *root,
                         const char *path,
                         int64_t min,
                         int64_t max,
                         int64_t *out,
                         char *errstr,
                         size_t errstr_size);
kf_err_t kf_json_opt_int(const json_t *root,
                         const char *path,
                         int64_t min,
                         int64_t max,
                         int64_t *out,
                         char *errstr,
                         size_t errstr_size);
/* Integer or real in [min, max]. */
kf_err_t kf_json_get_number(const json_t *root,
                            const char *path,
                            double min,
                            double max,
                            double *out,
                            char *errstr,
                            size_t errstr_size);
kf_err_t kf_json_opt_number(const json_t *root,
                            const char *path,
                            double min,
                            double max,
                            double *out,
                            char *errstr,
                            size_t errstr_size);
kf_err_t
kf_json_get_bool(const json_t *root, const char *path, int *out, char *errstr, size_t errstr_size);
kf_err_t
kf_json_opt_bool(const json_t *root, const char *path, int *out, char *errstr, size_t errstr_size);
/* Borrowed array with at most max_items elements (0: unlimited). */
kf_err_t kf_json_get_array(const json_t *root,
                           const char *path,
                           size_t max_items,
                           json_t **out,
                           char *errstr,
                           size_t errstr_size);
/* Borrowed object. */
kf_err_t kf_json_get_object(
    const json_t *root, const char *path, json_t **out, char *errstr, size_t errstr_size);

/* Appends the compact encoding of json to buf (keys in insertion order). KF_ERR_LIMIT when buf's
 * max is hit, KF_ERR_INVALID_ARG when jansson cannot encode the value. */
kf_err_t kf_json_dump(const json_t *json, kf_buf_t *buf);

#endif /* KF_JSON_H */
