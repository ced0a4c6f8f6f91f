/*
 * kf_search: an Elasticsearch / OpenSearch client on kf_http (libcurl).
 *
 * Uses only APIs common to Elasticsearch 7.10+, 8.x and OpenSearch 2.x: composable index
 * templates (PUT _index_template/<name>), _bulk with NDJSON, _refresh, _search, _count and
 * index deletion.
 *
 * Bulk indexing uses the `create` action with an explicit _id, so redelivering a message (Kafka
 * at-least-once) never makes a second document: the engine answers 409 for an _id that is
 * already there, which kf_search_bulk_create counts as success (KF_SEARCH_ITEM_EXISTS).
 * Per-item outcomes tell the caller what to retry (429, 5xx: KF_SEARCH_ITEM_RETRY) and what is
 * final (mapping errors and other 4xx: KF_SEARCH_ITEM_FAILED, dead-letter material).
 *
 * Errors: KF_ERR_UNAVAILABLE / KF_ERR_TIMEOUT (retriable: engine down, 429, 5xx),
 * KF_ERR_NOT_FOUND (index or template missing), KF_ERR_INVALID_ARG (bad index name or a 4xx with
 * the engine's error type and reason in errstr), KF_ERR_PARSE (unexpected response shape).
 * Thread-safety: one kf_search_t per thread (it owns one kf_http_t).
 */
#ifndef KF_SEARCH_H
#define KF_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kf_conf.h"
#include "kf_err.h"

typedef struct kf_search kf_search_t;

typedef struct kf_search_opts {
    const char *url;      /* base URL, e.g. "http://127.0.0.1:9200" (no trailing path needed) */
    const char *username; /* basic auth; NULL: none */
    const char *password;
    const char *ca_file; /* PEM bundle for https; NULL: system default */
    int insecure;        /* skip TLS verification (dev clusters with self-signed certs) */
    long timeout_ms;     /* per request; 0: 30000 */
} kf_search_opts_t;

/* search.* keys (search.url, search.username, search.password, search.timeout,
 * search.tls.insecure, search.tls.ca.file). Register with kf_conf_add_table(conf, "search", ...)
 * and fill options with kf_search_opts_from_conf(). */
extern const kf_conf_prop_t kf_search_conf_props[];
/* Fills opts from conf; strings are borrowed from conf. */
void kf_search_opts_from_conf(const kf_conf_t *conf, kf_search_opts_t *opts);

/* Creates a client; contacts nobody yet. opts->url is required. */
kf_err_t kf_search_new(const kf_search_opts_t *opts,
                       kf_search_t **out_search,
                       char *errstr,
                       size_t errstr_size);
void kf_search_destroy(kf_search_t *search);

/* PUT _index_template/<name> with `body` ({"index_patterns": [...], "template": {...}}). */
kf_err_t kf_search_put_template(
    kf_search_t *search, const char *name, const json_t *body, char *errstr, size_t errstr_size);

/* DELETE _index_template/<name>. KF_ERR_NOT_FOUND when it does not exist. */
kf_err_t
kf_search_delete_template(kf_search_t *search, const char *name, char *errstr, size_t errstr_size);

/* Deletes an index. KF_ERR_NOT_FOUND when it does not exist. */
kf_err_t
kf_search_delete_index(kf_search_t *search, const char *index, char *errstr, size_t errstr_size);

/* Makes everything indexed so far visible to search. */
kf_err_t
kf_search_refresh(kf_search_t *search, const char *index, char *errstr, size_t errstr_size);

typedef struct kf_search_doc {
    const char *id;       /* document _id: the idempotency key (e.g. request id) */
    const json_t *source; /* document body, serialised compactly (borrowed) */
} kf_search_doc_t;

typedef enum kf_search_item_status {
    KF_SEARCH_ITEM_CREATED, /* 201: indexed now */
    KF_SEARCH_ITEM_EXISTS,  /* 409: this _id was already indexed (a redelivery): success */
    KF_SEARCH_ITEM_RETRY,   /* 429 or 5xx, or the whole request failed retriably */
    KF_SEARCH_ITEM_FAILED,  /* any other error (mapping, bad document): retrying will not help */
} kf_search_item_status_t;

typedef struct kf_search_item {
    kf_search_item_status_t status;
    int http_status; /* per-item status from the engine; 0 when the request itself failed */
    char error[256]; /* engine's "type: reason" for RETRY/FAILED items, else "" */
} kf_search_item_t;

typedef struct kf_search_bulk_stats {
    size_t created, exists, retry, failed;
} kf_search_bulk_stats_t;

/* Indexes ndocs documents into `index` with one _bulk request of `create` actions.
 * out_items (ndocs entries, may be NULL) receives each document's outcome, in order;
 * out_stats (may be NULL) the counts. Returns KF_OK when the engine answered with per-item
 * results, even if some items failed (look at the items); a retriable error (KF_ERR_UNAVAILABLE,
 * KF_ERR_TIMEOUT) when the request as a whole failed, in which case every item is marked
 * KF_SEARCH_ITEM_RETRY; KF_ERR_INVALID_ARG for a bad index name, a missing id or source. */
kf_err_t kf_search_bulk_create(kf_search_t *search,
                               const char *index,
                               const kf_search_doc_t *docs,
                               size_t ndocs,
                               kf_search_item_t *out_items,
                               kf_search_bulk_stats_t *out_stats,
                               char *errstr,
                               size_t errstr_size);

/* POST <index>/_search with `body` (e.g. {"query": {"term": {"status": "ok"}}}; NULL: match
 * all). *out_total gets hits.total (ES 7+/OpenSearch object form or a plain number; -1 when
 * absent), *out_hits a new reference to the hits.hits array (json_decref it); either may be
 * NULL. */
kf_err_t kf_search_search(kf_search_t *search,
                          const char *index,
                          const json_t *body,
                          int64_t *out_total,
                          json_t **out_hits,
                          char *errstr,
                          size_t errstr_size);

/* POST <index>/_count with {"query": query} (query NULL: all documents). */
kf_err_t kf_search_count(kf_search_t *search,
                         const char *index,
                         const json_t *query,
                         int64_t *out_count,
                         char *errstr,
                         size_t errstr_size);

/* Non-zero when `index` is a valid index (or index pattern, when allow_wildcard) name:
 * lowercase letters, digits, '-', '_', '.', not starting with '-', '_' or '+'. */
int kf_search_valid_index(const char *index, int allow_wildcard);

#endif /* KF_SEARCH_H */
