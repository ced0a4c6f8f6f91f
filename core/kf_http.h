/*
 * kf_http: a small HTTP client on a libcurl easy handle.
 *
 *   kf_http_t *http;
 *   kf_http_new(NULL, &http, errstr, sizeof(errstr));
 *   kf_http_resp_t resp;
 *   kf_http_resp_init(&resp);
 *   kf_http_req_t req = {.method = "POST", .url = url, .body = data, .body_len = n,
 *                        .headers = (const char *[]){"Content-Type: text/plain", NULL}};
 *   err = kf_http_do(http, &req, &resp, errstr, sizeof(errstr));
 *   ... resp.status, resp.body.data / resp.body.len, kf_http_resp_header(&resp, "etag", ...)
 *   kf_http_resp_free(&resp);
 *   kf_http_destroy(http);
 *
 * kf_http_do returns KF_OK whenever a response arrived, whatever its status; the status is
 * the caller's business (kf_http_status_err() maps it when wanted). Transport failures map
 * to KF_ERR_TIMEOUT (timed out), KF_ERR_UNAVAILABLE (cannot resolve/connect, connection reset,
 * empty reply: all retriable), KF_ERR_LIMIT (response larger than max_body_bytes) or
 * KF_ERR_HTTP (anything else), with curl's message in errstr.
 * Redirects are not followed. Connections are kept alive between calls on the same client.
 *
 * Thread-safety: a kf_http_t is used by one thread at a time (it wraps one CURL easy handle);
 * create one per thread. kf_http_new() may be called from any thread.
 */
#ifndef KF_HTTP_H
#define KF_HTTP_H

#include <stddef.h>

#include <jansson.h>

#include "kf_buf.h"
#include "kf_err.h"

typedef struct kf_http kf_http_t;

typedef struct kf_http_opts {
    long timeout_ms;         /* whole request; 0: 30000 */
    long connect_timeout_ms; /* 0: 5000 */
    size_t max_body_bytes;   /* largest response body kept; 0: 64 MiB */
    const char *user_agent;  /* NULL: "kinfer/<version>" */
    const char *username;    /* basic auth, with password; NULL: none. Copied. */
    const char *password;
    const char *ca_file; /* PEM bundle to verify servers with; NULL: system default */
    int insecure;        /* non-zero: skip TLS verification (local dev clusters only) */
} kf_http_opts_t;

typedef struct kf_http_req {
    const char *method; /* "GET", "POST", "PUT", "DELETE" or "HEAD" */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    const void *body;           /* request body (POST/PUT, optional for DELETE) */
    size_t body_len;
    long timeout_ms; /* 0: the client's default */
} kf_http_req_t;

typedef struct kf_http_resp {
    long status;      /* HTTP status of the final response; 0 when none arrived */
    kf_buf_t body;    /* response body, NUL-terminated */
    kf_buf_t headers; /* raw header block of the final response ("Name: value\r\n" lines) */
} kf_http_resp_t;

/* opts may be NULL (defaults); strings in it are copied. Errors: KF_ERR_NOMEM/KF_ERR_HTTP when
 * curl cannot be initialised. */
kf_err_t
kf_http_new(const kf_http_opts_t *opts, kf_http_t **out_http, char *errstr, size_t errstr_size);
void kf_http_destroy(kf_http_t *http);

/* A response is reusable: kf_http_do empties it before filling it. */
void kf_http_resp_init(kf_http_resp_t *resp);
void kf_http_resp_free(kf_http_resp_t *resp);

kf_err_t kf_http_do(kf_http_t *http,
                    const kf_http_req_t *req,
                    kf_http_resp_t *resp,
                    char *errstr,
                    size_t errstr_size);

/* Copies the value of the first header named `name` (case-insensitive), trimmed, into out
 * (truncated to out_size-1). KF_ERR_NOT_FOUND when absent. */
kf_err_t
kf_http_resp_header(const kf_http_resp_t *resp, const char *name, char *out, size_t out_size);

/* Maps an HTTP status to kf_err_t: 2xx/3xx KF_OK, 404 KF_ERR_NOT_FOUND, 409 KF_ERR_EXISTS,
 * 408 KF_ERR_TIMEOUT, 429 and 5xx KF_ERR_UNAVAILABLE (retriable), 413 KF_ERR_LIMIT, other 4xx
 * KF_ERR_INVALID_ARG. */
kf_err_t kf_http_status_err(long status);

/* JSON round trip: sends `body` (NULL: no body) with Content-Type: application/json, and parses
 * a non-empty response body into *out_json (new reference, or NULL when the body was empty).
 * *out_status gets the HTTP status. Returns KF_OK for any status when the body parses; a body
 * that is not JSON yields kf_http_status_err(status) for non-2xx statuses (a proxy's HTML error
 * page) or KF_ERR_PARSE for 2xx, with a short excerpt in errstr. */
kf_err_t kf_http_json(kf_http_t *http,
                      const char *method,
                      const char *url,
                      const json_t *body,
                      long *out_status,
                      json_t **out_json,
                      char *errstr,
                      size_t errstr_size);

#endif /* KF_HTTP_H */
