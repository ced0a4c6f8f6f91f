/*
 * api_route.c: the route table of the HTTP API, its matcher, the token bucket arithmetic and
 * API key hashing: the small pure pieces the server is assembled from.
 *
 * The route table is the single list of what the server answers; docs/openapi.json must list
 * the same (method, path) pairs, and a unit test compares the two both ways.
 */
#include "api_int.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

const kf_api_route_t kf_api_routes[] = {
    {"POST", "/v1/requests", KF_API_ROUTE_REQ_CREATE, "requests_create"},
    {"GET", "/v1/requests/{id}", KF_API_ROUTE_REQ_GET, "requests_get"},
    {"DELETE", "/v1/requests/{id}", KF_API_ROUTE_REQ_CANCEL, "requests_cancel"},
    {"POST", "/v1/batches", KF_API_ROUTE_BATCH_CREATE, "batches_create"},
    {"GET", "/v1/batches/{id}", KF_API_ROUTE_BATCH_GET, "batches_get"},
    {"GET", "/v1/batches/{id}/results", KF_API_ROUTE_BATCH_RESULTS, "batches_results"},
    {"GET", "/healthz", KF_API_ROUTE_HEALTHZ, "healthz"},
    {"GET", "/readyz", KF_API_ROUTE_READYZ, "readyz"},
    {"GET", "/metrics", KF_API_ROUTE_METRICS, "metrics"},
    {NULL, NULL, KF_API_ROUTE_NONE, NULL},
};

/* Matches one path against a template; "{id}" takes one non-empty segment of at most
 * param_size-1 bytes. */
static int
kf_api_path_match(const char *tmpl, const char *path, char *out_param, size_t param_size)
{
    while (*tmpl) {
        if (*tmpl == '{') {
            const char *close = strchr(tmpl, '}');
            size_t n = strcspn(path, "/");
            if (!close || n == 0 || n >= param_size)
                return 0;
            memcpy(out_param, path, n);
            out_param[n] = '\0';
            path += n;
            tmpl = close + 1;
            continue;
        }
        if (*tmpl++ != *path++)
            return 0;
    }
    return *path == '\0';
}

kf_api_route_id_t
kf_api_route_match(const char *method,
                   const char *path,
                   char *out_param,
                   size_t param_size,
                   char *out_allow,
                   size_t allow_size,
                   const kf_api_route_t **out_route)
{
    char param[128];
    size_t allow_len = 0;
    int path_known = 0;
    if (out_allow && allow_size)
        out_allow[0] = '\0';
    if (out_route)
        *out_route = NULL;
    if (out_param && param_size)
        out_param[0] = '\0';
    /* HEAD is answered like GET by most servers; this API keeps it simple and says 405. */
    for (const kf_api_route_t *r = kf_api_routes; r->method; r++) {
        /* The id must fit the caller's buffer whole: a truncated id would name another. */
        size_t psz =
            out_param && param_size && param_size < sizeof(param) ? param_size : sizeof(param);
        if (!kf_api_path_match(r->path, path, param, psz))
            continue;
        if (!strcmp(r->method, method)) {
            if (out_param && param_size)
                snprintf(out_param, param_size, "%s", param);
            if (out_route)
                *out_route = r;
            return r->id;
        }
        path_known = 1;
        if (out_allow && allow_len + strlen(r->method) + 3 < allow_size)
            allow_len += (size_t)snprintf(out_allow + allow_len, allow_size - allow_len, "%s%s",
                                          allow_len ? ", " : "", r->method);
    }
    return path_known ? KF_API_ROUTE_METHOD : KF_API_ROUTE_NONE;
}

int
kf_api_bucket_take(
    kf_api_bucket_t *b, double rate, double burst, int64_t now_us, int *out_retry_after_s)
{
    if (b->last_us == 0) {
        b->tokens = burst; /* a new bucket starts full: the burst is available at once */
    } else if (now_us > b->last_us) {
        b->tokens += (double)(now_us - b->last_us) * rate / 1e6;
        if (b->tokens > burst)
            b->tokens = burst;
    }
    /* A clock that went backwards refills nothing but does not move last_us back either. */
    if (now_us > b->last_us)
        b->last_us = now_us;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    if (out_retry_after_s) {
        double wait_s = (1.0 - b->tokens) / rate;
        int secs = (int)wait_s;
        /* Round up (retrying after Retry-After must find a token), ignoring float noise such
         * as 0.3 / 0.1 = 3.0000000000000004. */
        if ((double)secs < wait_s - 1e-9)
            secs++;
        *out_retry_after_s = secs < 1 ? 1 : secs;
    }
    return 0;
}

kf_err_t
kf_api_key_sha256_hex(const char *key, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(key, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return KF_ERR_INTERNAL;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return KF_OK;
}
