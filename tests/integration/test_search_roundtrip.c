/*
 * Integration test of kf_search against the real search engine of the local stack
 * (OpenSearch 2.x; the same calls serve Elasticsearch 7.10+/8.x): composable index template,
 * bulk `create` with ids (a redelivered document stays single, 409 counts as success), a
 * mapping failure reported per item, refresh, count, term and full-text search with exact hit
 * counts and ids, then deletion of the index and template.
 *
 * Needs KINFER_SEARCH_URL (exit 77 otherwise). Uses a unique index name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kf_http.h"
#include "kf_search.h"

static int failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static char errstr[1024];

/* Sorted, comma-joined _id list of a hits array, for exact comparisons. */
static void
ids_of(json_t *hits, char *out, size_t size)
{
    const char *ids[64];
    size_t n = 0;
    size_t i;
    json_t *hit;
    json_array_foreach(hits, i, hit)
    {
        if (n < 64)
            ids[n++] = json_string_value(json_object_get(hit, "_id"));
    }
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++)
            if (strcmp(ids[b], ids[a]) < 0) {
                const char *t = ids[a];
                ids[a] = ids[b];
                ids[b] = t;
            }
    out[0] = '\0';
    for (size_t a = 0; a < n; a++) {
        strncat(out, ids[a], size - strlen(out) - 1);
        if (a + 1 < n)
            strncat(out, ",", size - strlen(out) - 1);
    }
}

static void
search_ids(kf_search_t *s,
           const char *index,
           json_t *query,
           int64_t want_total,
           const char *want_ids,
           const char *what)
{
    json_t *body = json_pack("{s:o, s:i}", "query", query, "size", 50);
    int64_t total = -2;
    json_t *hits = NULL;
    kf_err_t err = kf_search_search(s, index, body, &total, &hits, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "%s: %s", what, errstr);
    CHECK(total == want_total, "%s: total=%lld want %lld", what, (long long)total,
          (long long)want_total);
    char ids[512];
    ids_of(hits, ids, sizeof(ids));
    CHECK(strcmp(ids, want_ids) == 0, "%s: ids=%s want %s", what, ids, want_ids);
    json_decref(hits);
    json_decref(body);
}

int
main(void)
{
    const char *url = getenv("KINFER_SEARCH_URL");
    if (!url || !*url) {
        printf("SKIP: KINFER_SEARCH_URL is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    char index[96], tpl[112];
    snprintf(index, sizeof(index), "kf-it-search-%d-%ld", (int)getpid(), (long)time(NULL));
    snprintf(tpl, sizeof(tpl), "%s-tpl", index);

    kf_search_opts_t opts = {.url = url, .timeout_ms = 30000};
    kf_search_t *s = NULL;
    kf_err_t err = kf_search_new(&opts, &s, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "FAIL: %s\n", errstr);
        return 1;
    }

    /* Template first: the index is created by the first bulk and must pick it up. */
    json_t *tbody = json_pack(
        "{s:[s], s:i, s:{s:{s:i, s:i}, s:{s:s, s:{s:{s:s}, s:{s:s}, s:{s:s}, s:{s:s}}}}}",
        "index_patterns", index, "priority", 500, "template", "settings", "number_of_shards", 1,
        "number_of_replicas", 0, "mappings", "dynamic", "strict", "properties", "status", "type",
        "keyword", "text", "type", "text", "n", "type", "integer", "request_id", "type", "keyword");
    err = kf_search_put_template(s, tpl, tbody, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "put template: %s", errstr);
    json_decref(tbody);

    static const struct {
        const char *id, *status, *text;
        int n;
    } rows[] = {
        {"r1", "ok", "the quick brown fox", 1},
        {"r2", "ok", "a lazy dog sleeps", 2},
        {"r3", "failed", "quick thinking saves the day", 3},
        {"r4", "ok", "brown bread and butter", 4},
        {"r5", "failed", "fox hunting is banned", 5},
    };
    kf_search_doc_t docs[5];
    json_t *src[5];
    for (int i = 0; i < 5; i++) {
        src[i] = json_pack("{s:s, s:s, s:s, s:i}", "request_id", rows[i].id, "status",
                           rows[i].status, "text", rows[i].text, "n", rows[i].n);
        docs[i] = (kf_search_doc_t){.id = rows[i].id, .source = src[i]};
    }
    kf_search_item_t items[5];
    kf_search_bulk_stats_t st;
    err = kf_search_bulk_create(s, index, docs, 5, items, &st, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "bulk: %s", errstr);
    CHECK(st.created == 5 && st.exists == 0 && st.retry == 0 && st.failed == 0,
          "stats %zu/%zu/%zu/%zu", st.created, st.exists, st.retry, st.failed);
    for (int i = 0; i < 5; i++)
        CHECK(items[i].status == KF_SEARCH_ITEM_CREATED && items[i].http_status == 201,
              "item %d: %d %d", i, items[i].status, items[i].http_status);

    /* Redelivery: r3 again (same id) plus a new r6 and a document the strict mapping refuses. */
    json_t *r6 = json_pack("{s:s, s:s, s:s, s:i}", "request_id", "r6", "status", "ok", "text",
                           "quick quick quick", "n", 6);
    json_t *bad = json_pack("{s:s, s:s}", "request_id", "r7", "unknown_field", "x");
    kf_search_doc_t again[3] = {
        {.id = "r3", .source = src[2]}, {.id = "r6", .source = r6}, {.id = "r7", .source = bad}};
    kf_search_item_t items2[3];
    err = kf_search_bulk_create(s, index, again, 3, items2, &st, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "bulk again: %s", errstr);
    CHECK(st.created == 1 && st.exists == 1 && st.retry == 0 && st.failed == 1,
          "stats %zu/%zu/%zu/%zu", st.created, st.exists, st.retry, st.failed);
    CHECK(items2[0].status == KF_SEARCH_ITEM_EXISTS && items2[0].http_status == 409, "r3: %d %d",
          items2[0].status, items2[0].http_status);
    CHECK(items2[1].status == KF_SEARCH_ITEM_CREATED, "r6: %d", items2[1].status);
    CHECK(items2[2].status == KF_SEARCH_ITEM_FAILED && items2[2].http_status == 400 &&
              strstr(items2[2].error, "strict_dynamic_mapping_exception") != NULL,
          "r7: %d %d %s", items2[2].status, items2[2].http_status, items2[2].error);
    printf("mapping failure reported as: %s\n", items2[2].error);

    err = kf_search_refresh(s, index, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "refresh: %s", errstr);

    int64_t count = -1;
    err = kf_search_count(s, index, NULL, &count, errstr, sizeof(errstr));
    CHECK(err == KF_OK && count == 6, "count all: %lld %s", (long long)count, errstr);
    json_t *q = json_pack("{s:{s:s}}", "term", "status", "failed");
    err = kf_search_count(s, index, q, &count, errstr, sizeof(errstr));
    CHECK(err == KF_OK && count == 2, "count failed: %lld %s", (long long)count, errstr);
    json_decref(q);

    search_ids(s, index, json_pack("{s:{s:s}}", "term", "status", "ok"), 4, "r1,r2,r4,r6",
               "term status=ok");
    search_ids(s, index, json_pack("{s:{s:s}}", "match", "text", "quick fox"), 4, "r1,r3,r5,r6",
               "match 'quick fox'");
    search_ids(
        s, index,
        json_pack("{s:{s:{s:s, s:s}}}", "match", "text", "query", "quick fox", "operator", "and"),
        1, "r1", "match 'quick fox' (and)");
    search_ids(s, index, json_pack("{s:{s:s}}", "term", "request_id", "r3"), 1, "r3",
               "term request_id=r3 (single copy after redelivery)");

    /* The template was applied: settings from it, not the engine's defaults. */
    {
        kf_http_t *http = NULL;
        kf_http_new(NULL, &http, errstr, sizeof(errstr));
        char u[512];
        snprintf(u, sizeof(u), "%s/%s/_settings", url, index);
        json_t *set = NULL;
        long status = 0;
        err = kf_http_json(http, "GET", u, NULL, &status, &set, errstr, sizeof(errstr));
        CHECK(err == KF_OK && status == 200, "settings: %s", errstr);
        json_t *idx =
            json_object_get(json_object_get(json_object_get(set, index), "settings"), "index");
        CHECK(json_is_string(json_object_get(idx, "number_of_replicas")) &&
                  strcmp(json_string_value(json_object_get(idx, "number_of_replicas")), "0") == 0,
              "template not applied");
        json_decref(set);
        kf_http_destroy(http);
    }

    /* Bad input is refused before any request. */
    CHECK(kf_search_refresh(s, "Bad Index", errstr, sizeof(errstr)) == KF_ERR_INVALID_ARG,
          "bad index name");
    CHECK(strcmp(errstr, "invalid index name 'Bad Index'") == 0, "%s", errstr);

    err = kf_search_delete_index(s, index, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "delete: %s", errstr);
    err = kf_search_count(s, index, NULL, &count, errstr, sizeof(errstr));
    CHECK(err == KF_ERR_NOT_FOUND && strstr(errstr, "index_not_found_exception") != NULL,
          "count after delete: %d %s", err, errstr);
    err = kf_search_delete_template(s, tpl, errstr, sizeof(errstr));
    CHECK(err == KF_OK, "delete template: %s", errstr);
    err = kf_search_delete_template(s, tpl, errstr, sizeof(errstr));
    CHECK(err == KF_ERR_NOT_FOUND, "delete template twice: %d %s", err, errstr);

    for (int i = 0; i < 5; i++)
        json_decref(src[i]);
    json_decref(r6);
    json_decref(bad);
    kf_search_destroy(s);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
