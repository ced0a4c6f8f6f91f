/*
 * Elasticsearch / OpenSearch client. Every call is one JSON request through kf_http; the
 * engine's error object ({"error": {"type", "reason"}}) is turned into errstr text so an
 * operator sees "mapper_parsing_exception: failed to parse field [x]" rather than a status.
 */
#include "kf_search.h"

#include <string.h>

#include "kf_buf.h"
#include "kf_http.h"
#include "kf_json.h"

struct kf_search {
    kf_http_t *http;
    char *url; /* base URL without trailing '/' */
};

const kf_conf_prop_t kf_search_conf_props[] = {
    {.name = "search.url",
     .type = KF_CONF_STRING,
     .def = "http://127.0.0.1:9200",
     .desc = "Base URL of the Elasticsearch or OpenSearch cluster."},
    {.name = "search.username",
     .type = KF_CONF_STRING,
     .desc = "Basic-auth user for the search cluster; unset: no authentication."},
    {.name = "search.password",
     .type = KF_CONF_STRING,
     .flags = KF_CONF_F_SECRET,
     .desc = "Basic-auth password for the search cluster."},
    {.name = "search.timeout",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 100,
     .max = 600000,
     .desc = "Timeout of one search-cluster request."},
    {.name = "search.tls.ca.file",
     .type = KF_CONF_STRING,
     .desc = "PEM CA bundle used to verify an https search cluster; unset: system CAs."},
    {.name = "search.tls.insecure",
     .type = KF_CONF_BOOL,
     .def = "false",
     .desc = "Skip TLS certificate verification (local development only)."},
    {.name = NULL},
};

void
kf_search_opts_from_conf(const kf_conf_t *conf, kf_search_opts_t *opts)
{
    KF_ASSERT(conf && opts);
    memset(opts, 0, sizeof(*opts));
    opts->url = kf_conf_get_str(conf, "search.url");
    opts->username = kf_conf_get_str(conf, "search.username");
    opts->password = kf_conf_get_str(conf, "search.password");
    opts->ca_file = kf_conf_get_str(conf, "search.tls.ca.file");
    opts->insecure = kf_conf_get_bool(conf, "search.tls.insecure");
    opts->timeout_ms = (long)kf_conf_get_duration_ms(conf, "search.timeout");
}

int
kf_search_valid_index(const char *index, int allow_wildcard)
{
    if (!index || !*index || strlen(index) > 255)
        return 0;
    if (index[0] == '-' || index[0] == '_' || index[0] == '+')
        return 0;
    if (strcmp(index, ".") == 0 || strcmp(index, "..") == 0)
        return 0;
    for (const char *p = index; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 c == '.' || (allow_wildcard && (c == '*' || c == ','));
        if (!ok)
            return 0;
    }
    return 1;
}

kf_err_t
kf_search_new(const kf_search_opts_t *opts,
              kf_search_t **out_search,
              char *errstr,
              size_t errstr_size)
{
    if (!opts || !out_search || !opts->url || !*opts->url)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "kf_search_new: a search URL is required");
    *out_search = NULL;
    if (strncmp(opts->url, "http://", 7) != 0 && strncmp(opts->url, "https://", 8) != 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "search URL '%s' must start with http:// or https://", opts->url);
    kf_search_t *search = calloc(1, sizeof(*search));
    if (!search)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_search_new: out of memory");
    kf_http_opts_t hopts = {.timeout_ms = opts->timeout_ms,
                            .username = opts->username,
                            .password = opts->password,
                            .ca_file = opts->ca_file,
                            .insecure = opts->insecure};
    kf_err_t err = kf_http_new(&hopts, &search->http, errstr, errstr_size);
    if (err) {
        free(search);
        return err;
    }
    search->url = strdup(opts->url);
    if (!search->url) {
        kf_search_destroy(search);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "kf_search_new: out of memory");
    }
    size_t n = strlen(search->url);
    while (n > 0 && search->url[n - 1] == '/')
        search->url[--n] = '\0';
    *out_search = search;
    return KF_OK;
}

void
kf_search_destroy(kf_search_t *search)
{
    if (!search)
        return;
    kf_http_destroy(search->http);
    free(search->url);
    free(search);
}

/* Writes "type: reason" of an engine error object (or of a bulk item's error) into out. */
static void
kf_search_reason(const json_t *err, char *out, size_t size)
{
    const json_t *type = json_object_get(err, "type");
    const json_t *reason = json_object_get(err, "reason");
    if (json_is_string(type) || json_is_string(reason))
        snprintf(out, size, "%s: %s", json_is_string(type) ? json_string_value(type) : "error",
                 json_is_string(reason) ? json_string_value(reason) : "(no reason)");
    else if (json_is_string(err))
        snprintf(out, size, "%s", json_string_value(err));
    else
        snprintf(out, size, "(no error detail)");
}

/* One JSON call: builds the URL from path parts, maps a non-2xx status to kf_err_t with the
 * engine's reason. On KF_OK *out_json (if requested) holds the parsed response. */
static kf_err_t
kf_search_call(kf_search_t *search,
               const char *method,
               const char *path,
               const json_t *body,
               json_t **out_json,
               char *errstr,
               size_t errstr_size)
{
    kf_buf_t url;
    kf_buf_init(&url, 0);
    kf_err_t err = kf_buf_appendf(&url, "%s/%s", search->url, path);
    if (err) {
        kf_buf_free(&url);
        return kf_err_set(errstr, errstr_size, err, "kf_search: URL too long");
    }
    long status = 0;
    json_t *resp = NULL;
    err = kf_http_json(search->http, method, url.data, body, &status, &resp, errstr, errstr_size);
    if (!err && (status < 200 || status >= 300)) {
        err = kf_http_status_err(status);
        char why[512];
        kf_search_reason(json_object_get(resp, "error"), why, sizeof(why));
        if (!json_is_object(json_object_get(resp, "error")) &&
            !json_is_string(json_object_get(resp, "error")))
            snprintf(why, sizeof(why), "(no error detail)");
        kf_err_set(errstr, errstr_size, err ? err : KF_ERR_HTTP, "%s %s: HTTP %ld: %s", method,
                   url.data, status, why);
        if (!err)
            err = KF_ERR_HTTP;
    }
    kf_buf_free(&url);
    if (err || !out_json)
        json_decref(resp);
    else
        *out_json = resp;
    return err;
}

static kf_err_t
kf_search_check_index(const char *index, int allow_wildcard, char *errstr, size_t errstr_size)
{
    if (!kf_search_valid_index(index, allow_wildcard))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "invalid index name '%s'",
                          index ? index : "(null)");
    return KF_OK;
}

kf_err_t
kf_search_put_template(
    kf_search_t *search, const char *name, const json_t *body, char *errstr, size_t errstr_size)
{
    KF_ASSERT(search);
    if (!body || !json_is_object(body))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "index template body must be a JSON object");
    kf_err_t err = kf_search_check_index(name, 0, errstr, errstr_size);
    if (err)
        return err;
    char path[300];
    snprintf(path, sizeof(path), "_index_template/%s", name);
    return kf_search_call(search, "PUT", path, body, NULL, errstr, errstr_size);
}

kf_err_t
kf_search_delete_template(kf_search_t *search, const char *name, char *errstr, size_t errstr_size)
{
    KF_ASSERT(search);
    kf_err_t err = kf_search_check_index(name, 0, errstr, errstr_size);
    if (err)
        return err;
    char path[300];
    snprintf(path, sizeof(path), "_index_template/%s", name);
    return kf_search_call(search, "DELETE", path, NULL, NULL, errstr, errstr_size);
}

kf_err_t
kf_search_delete_index(kf_search_t *search, const char *index, char *errstr, size_t errstr_size)
{
    KF_ASSERT(search);
    /* Wildcards are refused here: deleting "kinfer-*" by accident would be expensive. */
    kf_err_t err = kf_search_check_index(index, 0, errstr, errstr_size);
    if (err)
        return err;
    return kf_search_call(search, "DELETE", index, NULL, NULL, errstr, errstr_size);
}

kf_err_t
kf_search_refresh(kf_search_t *search, const char *index, char *errstr, size_t errstr_size)
{
    KF_ASSERT(search);
    kf_err_t err = kf_search_check_index(index, 1, errstr, errstr_size);
    if (err)
        return err;
    char path[300];
    snprintf(path, sizeof(path), "%s/_refresh", index);
    return kf_search_call(search, "POST", path, NULL, NULL, errstr, errstr_size);
}

/* Marks every item as retriable after a whole-request failure. */
static void
kf_search_all_retry(kf_search_item_t *items, size_t n, const char *why, kf_search_bulk_stats_t *st)
{
    for (size_t i = 0; items && i < n; i++) {
        items[i].status = KF_SEARCH_ITEM_RETRY;
        items[i].http_status = 0;
        snprintf(items[i].error, sizeof(items[i].error), "%s", why);
    }
    st->retry = n;
}

kf_err_t
kf_search_bulk_create(kf_search_t *search,
                      const char *index,
                      const kf_search_doc_t *docs,
                      size_t ndocs,
                      kf_search_item_t *out_items,
                      kf_search_bulk_stats_t *out_stats,
                      char *errstr,
                      size_t errstr_size)
{
    KF_ASSERT(search);
    kf_search_bulk_stats_t st = {0};
    if (out_stats)
        *out_stats = st;
    kf_err_t err = kf_search_check_index(index, 0, errstr, errstr_size);
    if (err)
        return err;
    if (ndocs == 0)
        return KF_OK;
    if (!docs)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "bulk: NULL docs");
    for (size_t i = 0; i < ndocs; i++)
        if (!docs[i].id || !*docs[i].id || !json_is_object(docs[i].source))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "bulk: document %zu needs a non-empty id and an object source", i);

    kf_buf_t body, url;
    kf_buf_init(&body, 0);
    kf_buf_init(&url, 0);
    kf_http_resp_t resp;
    kf_http_resp_init(&resp);
    json_t *action = NULL, *rj = NULL;

    /* NDJSON: an action line then the source line per document; both encoded by jansson in
     * compact form, which never contains a raw newline, so ids and strings cannot break the
     * framing. */
    for (size_t i = 0; i < ndocs && !err; i++) {
        action = json_pack("{s:{s:s}}", "create", "_id", docs[i].id);
        if (!action) {
            err = kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                             "bulk: document %zu id is not valid UTF-8", i);
            break;
        }
        err = kf_json_dump(action, &body);
        json_decref(action);
        action = NULL;
        if (!err)
            err = kf_buf_append(&body, "\n", 1);
        if (!err)
            err = kf_json_dump(docs[i].source, &body);
        if (!err)
            err = kf_buf_append(&body, "\n", 1);
        if (err)
            kf_err_set(errstr, errstr_size, err, "bulk: cannot encode document %zu", i);
    }
    if (err)
        goto out;
    err = kf_buf_appendf(&url, "%s/%s/_bulk", search->url, index);
    if (err)
        goto out;

    static const char *const hdrs[] = {"Content-Type: application/x-ndjson",
                                       "Accept: application/json", NULL};
    kf_http_req_t req = {.method = "POST",
                         .url = url.data,
                         .headers = hdrs,
                         .body = body.data,
                         .body_len = body.len};
    err = kf_http_do(search->http, &req, &resp, errstr, errstr_size);
    if (err) {
        kf_search_all_retry(out_items, ndocs, "bulk request failed", &st);
        goto out;
    }
    char jmsg[256];
    kf_err_t perr =
        kf_json_parse(resp.body.data, resp.body.len,
                      &(kf_json_limits_t){.max_bytes = resp.body.len + 1, .max_depth = 512}, &rj,
                      jmsg, sizeof(jmsg));
    if (resp.status < 200 || resp.status >= 300) {
        /* The whole request was refused: 429/5xx are worth retrying, 4xx are not. */
        err = kf_http_status_err(resp.status);
        char why[256];
        kf_search_reason(json_object_get(rj, "error"), why, sizeof(why));
        kf_err_set(errstr, errstr_size, err, "POST %s: HTTP %ld: %s", url.data, resp.status, why);
        if (kf_err_is_retriable(err)) {
            kf_search_all_retry(out_items, ndocs, why, &st);
        } else {
            for (size_t i = 0; out_items && i < ndocs; i++) {
                out_items[i].status = KF_SEARCH_ITEM_FAILED;
                out_items[i].http_status = (int)resp.status;
                snprintf(out_items[i].error, sizeof(out_items[i].error), "%s", why);
            }
            st.failed = ndocs;
        }
        goto out;
    }
    json_t *items = json_object_get(rj, "items");
    if (perr || !json_is_array(items) || json_array_size(items) != ndocs) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_PARSE,
                         "POST %s: unexpected bulk response (%s): %.200s", url.data,
                         perr ? jmsg : "items missing or of the wrong length",
                         resp.body.data ? resp.body.data : "");
        /* We cannot tell what happened: retrying is safe because create is idempotent. */
        kf_search_all_retry(out_items, ndocs, "unexpected bulk response", &st);
        goto out;
    }
    for (size_t i = 0; i < ndocs; i++) {
        json_t *res = json_object_get(json_array_get(items, i), "create");
        json_t *js = json_object_get(res, "status");
        int status = json_is_integer(js) ? (int)json_integer_value(js) : 0;
        kf_search_item_status_t is;
        if (status >= 200 && status < 300)
            is = KF_SEARCH_ITEM_CREATED;
        else if (status == 409)
            is = KF_SEARCH_ITEM_EXISTS;
        else if (status == 429 || status >= 500 || status == 0)
            is = KF_SEARCH_ITEM_RETRY;
        else
            is = KF_SEARCH_ITEM_FAILED;
        switch (is) {
        case KF_SEARCH_ITEM_CREATED:
            st.created++;
            break;
        case KF_SEARCH_ITEM_EXISTS:
            st.exists++;
            break;
        case KF_SEARCH_ITEM_RETRY:
            st.retry++;
            break;
        case KF_SEARCH_ITEM_FAILED:
            st.failed++;
            break;
        }
        if (out_items) {
            out_items[i].status = is;
            out_items[i].http_status = status;
            out_items[i].error[0] = '\0';
            if (is == KF_SEARCH_ITEM_RETRY || is == KF_SEARCH_ITEM_FAILED)
                kf_search_reason(json_object_get(res, "error"), out_items[i].error,
                                 sizeof(out_items[i].error));
        }
    }
out:
    if (out_stats)
        *out_stats = st;
    json_decref(rj);
    kf_http_resp_free(&resp);
    kf_buf_free(&body);
    kf_buf_free(&url);
    return err;
}

kf_err_t
kf_search_search(kf_search_t *search,
                 const char *index,
                 const json_t *body,
                 int64_t *out_total,
                 json_t **out_hits,
                 char *errstr,
                 size_t errstr_size)
{
    KF_ASSERT(search);
    if (out_total)
        *out_total = -1;
    if (out_hits)
        *out_hits = NULL;
    kf_err_t err = kf_search_check_index(index, 1, errstr, errstr_size);
    if (err)
        return err;
    char path[300];
    snprintf(path, sizeof(path), "%s/_search", index);
    json_t *all = NULL;
    if (!body)
        body = all = json_pack("{s:{s:{}}}", "query", "match_all");
    json_t *resp = NULL;
    err = kf_search_call(search, "POST", path, body, &resp, errstr, errstr_size);
    json_decref(all);
    if (err)
        return err;
    json_t *hits = json_object_get(json_object_get(resp, "hits"), "hits");
    if (!json_is_array(hits)) {
        json_decref(resp);
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s: response has no hits.hits", path);
    }
    /* ES 7+ and OpenSearch: {"value": N, "relation": "eq"}; ES 6 style: a bare number. */
    json_t *total = json_object_get(json_object_get(resp, "hits"), "total");
    if (json_is_object(total))
        total = json_object_get(total, "value");
    if (out_total && json_is_integer(total))
        *out_total = json_integer_value(total);
    if (out_hits)
        *out_hits = json_incref(hits);
    json_decref(resp);
    return KF_OK;
}

kf_err_t
kf_search_count(kf_search_t *search,
                const char *index,
                const json_t *query,
                int64_t *out_count,
                char *errstr,
                size_t errstr_size)
{
    KF_ASSERT(search && out_count);
    *out_count = -1;
    kf_err_t err = kf_search_check_index(index, 1, errstr, errstr_size);
    if (err)
        return err;
    char path[300];
    snprintf(path, sizeof(path), "%s/_count", index);
    json_t *body = query ? json_pack("{s:O}", "query", query) : NULL;
    json_t *resp = NULL;
    err = kf_search_call(search, "POST", path, body, &resp, errstr, errstr_size);
    json_decref(body);
    if (err)
        return err;
    json_t *count = json_object_get(resp, "count");
    if (!json_is_integer(count)) {
        json_decref(resp);
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "%s: response has no count", path);
    }
    *out_count = json_integer_value(count);
    json_decref(resp);
    return KF_OK;
}
