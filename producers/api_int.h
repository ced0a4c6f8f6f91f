/*
 * api_int.h: internals of the HTTP API (producers/api*.c), shared between its files and its
 * unit tests. Nothing here is part of kf_api.h's contract.
 *
 * The pieces that need no server are pure functions so the unit tests can drive them:
 *   - request validation: client JSON -> InferenceRequest JSON (Avro JSON mapping), or an
 *     error naming the field (kf_api_request_build);
 *   - the token bucket arithmetic (kf_api_bucket_take);
 *   - routing of (method, path) onto a route, 404 or 405 (kf_api_route_match);
 *   - API key hashing (kf_api_key_sha256_hex, in kf_api.h) and error bodies.
 */
#ifndef KF_API_INT_H
#define KF_API_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kf_api.h"
#include "kf_buf.h"
#include "kf_err.h"

/* ---- errors ------------------------------------------------------------------------------ */

/* What a handler answers when it fails: HTTP status, a stable machine code, the field at
 * fault ("" when none) and a message for humans. Rendered as
 * {"error": {"code": ..., "message": ..., "field": ...}}. */
typedef struct kf_api_error {
    int status;
    char code[40];
    char field[128];
    char message[512];
    int retry_after_s; /* > 0: Retry-After header (429, 503, 409 in progress) */
    long line;         /* > 0: the JSONL line at fault (batches), rendered as "line" */
} kf_api_error_t;

/* Fills err and returns KF_ERR_INVALID_ARG (400-class) or the given kf code. */
void kf_api_error_set(
    kf_api_error_t *err, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Renders err as the JSON body (NUL-terminated, malloc'd; NULL when out of memory). */
char *kf_api_error_body(const kf_api_error_t *err);

/* ---- validation -------------------------------------------------------------------------- */

typedef struct kf_api_limits {
    int64_t max_tokens;      /* largest sampling.max_tokens */
    size_t max_prompt_bytes; /* prompt, and each message's content */
    size_t max_messages;     /* messages[] length */
    int64_t now_ms;          /* for deadline checks; 0: kf_now_ms() */
} kf_api_limits_t;

/* Identity of the request being built (the server's part, not the client's). */
typedef struct kf_api_req_ids {
    const char *request_id; /* UUID */
    const char *tenant_id;
    const char *idempotency_key; /* NULL: none */
    const char *trace_id;        /* 32 hex digits */
    int64_t accepted_at_ms;
    const char *batch_id; /* NULL outside batches; then custom_id is rejected as unknown */
} kf_api_req_ids_t;

/* Validates one client request object and builds the InferenceRequest JSON (every field of
 * schemas/InferenceRequest.avsc present, ready for kf_avro_encode_json). Unknown keys, wrong
 * types, out-of-range values, prompt and messages together (or neither, for completion) are
 * errors naming the field (status 400, code "invalid_request"). For batch lines (ids->batch_id
 * set) custom_id is required and copied. On KF_OK *out_ir is a new reference. */
kf_err_t kf_api_request_build(const json_t *body,
                              const kf_api_req_ids_t *ids,
                              const kf_api_limits_t *limits,
                              json_t **out_ir,
                              kf_api_error_t *out_err);

/* Parses a deadline: RFC 3339 ("2030-01-02T03:04:05Z", "...05.250+02:00") or epoch
 * milliseconds. KF_ERR_INVALID_ARG when malformed. */
kf_err_t kf_api_parse_rfc3339(const char *s, int64_t *out_ms);

/* Non-zero when s is a canonical lower- or upper-case UUID (8-4-4-4-12 hex). */
int kf_api_is_uuid(const char *s);

/* ---- token bucket ------------------------------------------------------------------------ */

typedef struct kf_api_bucket {
    double tokens;
    int64_t last_us; /* 0: never used (starts full) */
} kf_api_bucket_t;

/* Refills at `rate` tokens per second up to `burst`, then takes one token. Returns 1 when
 * taken; 0 when empty, with *out_retry_after_s the whole seconds until a token is there
 * (at least 1). */
int kf_api_bucket_take(
    kf_api_bucket_t *b, double rate, double burst, int64_t now_us, int *out_retry_after_s);

/* ---- routing ----------------------------------------------------------------------------- */

typedef enum kf_api_route_id {
    KF_API_ROUTE_NONE = 0, /* 404 */
    KF_API_ROUTE_METHOD,   /* path known, method not: 405 */
    KF_API_ROUTE_REQ_CREATE,
    KF_API_ROUTE_REQ_GET,
    KF_API_ROUTE_REQ_CANCEL,
    KF_API_ROUTE_BATCH_CREATE,
    KF_API_ROUTE_BATCH_GET,
    KF_API_ROUTE_BATCH_RESULTS,
    KF_API_ROUTE_HEALTHZ,
    KF_API_ROUTE_READYZ,
    KF_API_ROUTE_METRICS,
} kf_api_route_id_t;

/* One served route, as documented in docs/openapi.json ({id} is a path parameter). */
typedef struct kf_api_route {
    const char *method;
    const char *path; /* OpenAPI template, e.g. "/v1/requests/{id}" */
    kf_api_route_id_t id;
    const char *label; /* metrics label */
} kf_api_route_t;

/* Every route the server answers, NULL-method terminated. */
extern const kf_api_route_t kf_api_routes[];

/* Matches a request. out_param (>= 64 bytes) receives the {id} segment when the template has
 * one. For KF_API_ROUTE_METHOD, out_allow (>= 64 bytes) gets the Allow header value. The
 * matched route's table entry goes to *out_route (NULL for NONE/METHOD). */
kf_api_route_id_t kf_api_route_match(const char *method,
                                     const char *path,
                                     char *out_param,
                                     size_t param_size,
                                     char *out_allow,
                                     size_t allow_size,
                                     const kf_api_route_t **out_route);

#endif /* KF_API_INT_H */
