/*
 * HTTP client on one libcurl easy handle per kf_http_t. The handle is reset before every
 * request (so no option leaks from one call to the next) but its connection cache survives
 * the reset, which is what keeps connections alive across calls.
 */
#include "kf_http.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "kf_json.h"

struct kf_http {
    CURL *curl;
    long timeout_ms;
    long connect_timeout_ms;
    size_t max_body_bytes;
    char *user_agent;
    char *username;
    char *password;
    char *ca_file;
    int insecure;
};

static pthread_once_t kf_http_once = PTHREAD_ONCE_INIT;
static CURLcode kf_http_global_rc;

/* curl_global_init is not thread-safe on older curls: run it exactly once. */
static void
kf_http_global_init(void)
{
    kf_http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *
kf_http_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

kf_err_t
kf_http_new(const kf_http_opts_t *opts, kf_http_t **out_http, char *errstr, size_t errstr_size)
{
    if (!out_http)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_http_new: NULL out_http");
    *out_http = NULL;
    pthread_once(&kf_http_once, kf_http_global_init);
    if (kf_http_global_rc != CURLE_OK)
        return kf_err_set(errstr, errstr_size, KF_ERR_HTTP, "curl_global_init: %s",
                          curl_easy_strerror(kf_http_global_rc));
    kf_http_opts_t def = {0};
    if (!opts)
        opts = &def;
    kf_http_t *http = calloc(1, sizeof(*http));
    if (!http)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_http_new: out of memory");
    http->curl = curl_easy_init();
    http->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
    http->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
    http->max_body_bytes = opts->max_body_bytes ? opts->max_body_bytes : (64u << 20);
    http->user_agent = kf_http_dup(opts->user_agent ? opts->user_agent : "kinfer/0.1");
    http->username = kf_http_dup(opts->username);
    http->password = kf_http_dup(opts->password);
    http->ca_file = kf_http_dup(opts->ca_file);
    http->insecure = opts->insecure;
    if (!http->curl || !http->user_agent || (opts->username && !http->username) ||
        (opts->password && !http->password) || (opts->ca_file && !http->ca_file)) {
        kf_http_destroy(http);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_http_new: out of memory");
    }
    *out_http = http;
    return KF_OK;
}

void
kf_http_destroy(kf_http_t *http)
{
    if (!http)
        return;
    if (http->curl)
        curl_easy_cleanup(http->curl);
    free(http->user_agent);
    free(http->username);
    if (http->password) {
        /* Do not leave the secret lying in freed heap memory. */
        volatile char *p = http->password;
        while (*p)
            *p++ = 0;
    }
    free(http->password);
    free(http->ca_file);
    free(http);
}

void
kf_http_resp_init(kf_http_resp_t *resp)
{
    KF_ASSERT(resp);
    resp->status = 0;
    kf_buf_init(&resp->body, 0);
    kf_buf_init(&resp->headers, 1 << 20);
}

void
kf_http_resp_free(kf_http_resp_t *resp)
{
    if (!resp)
        return;
    kf_buf_free(&resp->body);
    kf_buf_free(&resp->headers);
    resp->status = 0;
}

/* Write callback state: the response plus whether we stopped on purpose (size limit). */
typedef struct kf_http_sink {
    kf_http_resp_t *resp;
    int over_limit;
} kf_http_sink_t;

static size_t
kf_http_body_cb(char *data, size_t size, size_t nmemb, void *opaque)
{
    kf_http_sink_t *sink = opaque;
    size_t n = size * nmemb;
    if (kf_buf_append(&sink->resp->body, data, n) != KF_OK) {
        sink->over_limit = 1;
        return 0; /* makes curl abort with CURLE_WRITE_ERROR */
    }
    return n;
}

static size_t
kf_http_header_cb(char *data, size_t size, size_t nmemb, void *opaque)
{
    kf_http_sink_t *sink = opaque;
    size_t n = size * nmemb;
    /* A new status line starts a new header block (1xx interim responses): keep only the
     * final response's headers. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        kf_buf_reset(&sink->resp->headers);
    if (kf_buf_append(&sink->resp->headers, data, n) != KF_OK) {
        sink->over_limit = 1;
        return 0;
    }
    return n;
}

static kf_err_t
kf_http_curl_err(CURLcode rc,
                 const char *detail,
                 const char *method,
                 const char *url,
                 char *errstr,
                 size_t errstr_size)
{
    kf_err_t err;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        err = KF_ERR_TIMEOUT;
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        err = KF_ERR_UNAVAILABLE;
        break;
    default:
        err = KF_ERR_HTTP;
    }
    return kf_err_set(errstr, errstr_size, err, "%s %s: %s%s%s", method, url,
                      curl_easy_strerror(rc), detail[0] ? ": " : "", detail);
}

kf_err_t
kf_http_do(kf_http_t *http,
           const kf_http_req_t *req,
           kf_http_resp_t *resp,
           char *errstr,
           size_t errstr_size)
{
    if (!http || !req || !resp || !req->method || !req->url || (!req->body && req->body_len))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_http_do: bad argument");
    const char *m = req->method;
    int is_get = strcmp(m, "GET") == 0, is_head = strcmp(m, "HEAD") == 0;
    if (!is_get && !is_head && strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "DELETE"))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "kf_http_do: unsupported method '%s'", m);
    resp->status = 0;
    resp->body.max = http->max_body_bytes;
    kf_buf_reset(&resp->body);
    kf_buf_reset(&resp->headers);

    CURL *curl = http->curl;
    struct curl_slist *hdrs = NULL;
    kf_err_t err = KF_OK;
    char curl_msg[CURL_ERROR_SIZE] = "";
    kf_http_sink_t sink = {.resp = resp, .over_limit = 0};

    curl_easy_reset(curl);
    for (const char *const *h = req->headers; h && *h; h++) {
        struct curl_slist *n = curl_slist_append(hdrs, *h);
        if (!n) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_http_do: out of memory");
            goto out;
        }
        hdrs = n;
    }
    if (req->body) {
        /* Without this curl waits for "100 Continue" on large bodies: one extra round trip. */
        struct curl_slist *n = curl_slist_append(hdrs, "Expect:");
        if (!n) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_http_do: out of memory");
            goto out;
        }
        hdrs = n;
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* safe in threaded programs */
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, http->user_agent);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                     req->timeout_ms > 0 ? req->timeout_ms : http->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, http->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, kf_http_body_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, kf_http_header_cb);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &sink);
    if (hdrs)
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (http->username) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, http->username);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, http->password ? http->password : "");
    }
    if (http->ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, http->ca_file);
    if (http->insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (is_get) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else if (is_head) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(m, "POST") != 0)
            curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, m);
        if (req->body || strcmp(m, "DELETE") != 0) {
            /* POSTFIELDS with an explicit size sends binary bodies (NDJSON, Avro) as they are. */
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        }
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        if (sink.over_limit)
            err = kf_err_set(errstr, errstr_size, KF_ERR_LIMIT,
                             "%s %s: response larger than %zu bytes", m, req->url,
                             http->max_body_bytes);
        else
            err = kf_http_curl_err(rc, curl_msg, m, req->url, errstr, errstr_size);
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
out:
    curl_slist_free_all(hdrs);
    /* The error buffer is on our stack: detach it before returning. */
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    return err;
}

kf_err_t
kf_http_resp_header(const kf_http_resp_t *resp, const char *name, char *out, size_t out_size)
{
    KF_ASSERT(resp && name);
    size_t nlen = strlen(name);
    const char *p = resp->headers.data;
    const char *end = p ? p + resp->headers.len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && isspace((unsigned char)*v))
                v++;
            while (ve > v && isspace((unsigned char)ve[-1]))
                ve--;
            if (out && out_size) {
                size_t n = (size_t)(ve - v);
                if (n >= out_size)
                    n = out_size - 1;
                memcpy(out, v, n);
                out[n] = '\0';
            }
            return KF_OK;
        }
        p = eol + 1;
    }
    return KF_ERR_NOT_FOUND;
}

kf_err_t
kf_http_status_err(long status)
{
    if (status >= 200 && status < 400)
        return KF_OK;
    switch (status) {
    case 404:
        return KF_ERR_NOT_FOUND;
    case 408:
        return KF_ERR_TIMEOUT;
    case 409:
        return KF_ERR_EXISTS;
    case 413:
        return KF_ERR_LIMIT;
    case 429:
        return KF_ERR_UNAVAILABLE;
    }
    if (status >= 500)
        return KF_ERR_UNAVAILABLE;
    if (status >= 400)
        return KF_ERR_INVALID_ARG;
    return KF_ERR_HTTP; /* 0 or 1xx: no usable response */
}

kf_err_t
kf_http_json(kf_http_t *http,
             const char *method,
             const char *url,
             const json_t *body,
             long *out_status,
             json_t **out_json,
             char *errstr,
             size_t errstr_size)
{
    if (!out_json)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "kf_http_json: NULL out_json");
    *out_json = NULL;
    if (out_status)
        *out_status = 0;
    kf_buf_t reqbody;
    kf_buf_init(&reqbody, 0);
    kf_http_resp_t resp;
    kf_http_resp_init(&resp);
    kf_err_t err = KF_OK;
    if (body && (err = kf_json_dump(body, &reqbody)) != KF_OK) {
        kf_err_set(errstr, errstr_size, err, "%s %s: cannot encode the JSON body", method, url);
        goto out;
    }
    static const char *const hdrs[] = {"Content-Type: application/json", "Accept: application/json",
                                       NULL};
    kf_http_req_t req = {.method = method,
                         .url = url,
                         .headers = hdrs,
                         .body = body ? reqbody.data : NULL,
                         .body_len = body ? reqbody.len : 0};
    err = kf_http_do(http, &req, &resp, errstr, errstr_size);
    if (err)
        goto out;
    if (out_status)
        *out_status = resp.status;
    if (resp.body.len == 0)
        goto out;
    /* Responses are trusted more than requests but still bounded: cap at the body limit. */
    kf_json_limits_t lim = {.max_bytes = resp.body.len, .max_depth = 512};
    char jmsg[256];
    err = kf_json_parse(resp.body.data, resp.body.len, &lim, out_json, jmsg, sizeof(jmsg));
    if (err) {
        kf_err_t serr = kf_http_status_err(resp.status);
        err = serr ? serr : KF_ERR_PARSE;
        kf_err_set(errstr, errstr_size, err, "%s %s: HTTP %ld, body is not JSON (%s): %.120s",
                   method, url, resp.status, jmsg, resp.body.data);
    }
out:
    kf_buf_free(&reqbody);
    kf_http_resp_free(&resp);
    return err;
}
