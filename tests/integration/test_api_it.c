/*
 * Integration test of `kinfer api` (producers/kf_api.h) against the real local stack: a
 * scratch PostgreSQL database migrated with sql/migrate.sh, per-run Kafka topics, and
 * several API servers in this process on ephemeral loopback ports.
 *
 * Checks: 202 only with the record already in Kafka (read back up to the high watermark and
 * compared field by field); Idempotency-Key replays across two servers sharing the database
 * and across a restart (same id, exactly one record); 400/401/404/405/409/413/415/429 status
 * codes and bodies; tenant scoping; DELETE with its control record; batches (all-or-nothing
 * validation, counts, results in line order); a dead broker -> 503 and no row left; audit
 * events; metrics; every docs/openapi.json operation served and nothing else.
 *
 * Needs KINFER_PG_DSN and KINFER_KAFKA_BROKERS (exit 77 naming the missing one).
 */
#include "kf_api.h"
#include "kf_avro.h"
#include "kf_http.h"
#include "kf_json.h"
#include "kf_log.h"
#include "kf_pg.h"

#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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
static const char *brokers;
static char base_dsn[512], test_dsn[640], dbname[64];
static char topic_req[128], topic_ctl[128], topic_audit[128];
static kf_http_t *http;

/* ---- HTTP ---------------------------------------------------------------------------------- */

typedef struct resp {
    long status;
    json_t *json; /* parsed body when it is JSON */
    kf_http_resp_t raw;
} resp_t;

static void
resp_free(resp_t *r)
{
    json_decref(r->json);
    kf_http_resp_free(&r->raw);
    memset(r, 0, sizeof(*r));
}

static resp_t
call(int port,
     const char *method,
     const char *path,
     const char *key,
     const char *ctype,
     const char *body,
     const char *extra_header)
{
    resp_t r;
    memset(&r, 0, sizeof(r));
    kf_http_resp_init(&r.raw);
    char url[512], auth[256], ct[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    const char *hdrs[5];
    int n = 0;
    if (key) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        hdrs[n++] = auth;
    }
    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        hdrs[n++] = ct;
    }
    if (extra_header)
        hdrs[n++] = extra_header;
    hdrs[n] = NULL;
    kf_http_req_t req = {.method = method,
                         .url = url,
                         .headers = hdrs,
                         .body = body,
                         .body_len = body ? strlen(body) : 0};
    if (kf_http_do(http, &req, &r.raw, errstr, sizeof(errstr)) != KF_OK) {
        fprintf(stderr, "HTTP %s %s failed: %s\n", method, path, errstr);
        return r;
    }
    r.status = r.raw.status;
    if (r.raw.body.len)
        r.json = json_loadb(r.raw.body.data, r.raw.body.len, 0, NULL);
    return r;
}

static resp_t
post(int port, const char *key, const char *body, const char *extra_header)
{
    return call(port, "POST", "/v1/requests", key, "application/json", body, extra_header);
}

/* The string at path, or "" when absent (so a failed check never dereferences NULL). */
static const char *
jstr(const json_t *j, const char *path)
{
    const char *s = json_string_value(kf_json_path(j, path));
    return s ? s : "";
}

static int
header_is(const resp_t *r, const char *name, const char *want)
{
    char v[256];
    return kf_http_resp_header(&r->raw, name, v, sizeof(v)) == KF_OK && !strcmp(v, want);
}

/* Posts with an Idempotency-Key, following 409 + Retry-After as a client would. */
static resp_t
post_idem(int port, const char *key, const char *body, const char *idem)
{
    char h[300];
    snprintf(h, sizeof(h), "Idempotency-Key: %s", idem);
    for (int attempt = 0;; attempt++) {
        resp_t r = post(port, key, body, h);
        if (r.status != 409 || attempt == 50)
            return r;
        resp_free(&r);
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* ---- Kafka: read a topic up to its high watermarks ---------------------------------------- */

/* Returns an array of {"key", "value"} for every record now in `topic`; value is the decoded
 * Avro record (avro != 0) or the parsed JSON value. */
static json_t *
read_topic(const char *topic, int avro)
{
    json_t *out = json_array();
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "kf-test-api-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "consumer: %s\n", err);
        return out;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR || !md ||
        md->topic_cnt != 1) {
        fprintf(stderr, "metadata for %s failed\n", topic);
        goto out;
    }
    int np = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(np);
    int64_t *high = calloc((size_t)np, sizeof(int64_t));
    int64_t remaining = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        high[p] = hi;
        remaining += hi - lo;
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
    }
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    int idle = 0;
    while (remaining > 0 && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++;
            continue;
        }
        if (!m->err && m->offset < high[m->partition]) {
            remaining--;
            json_t *val = NULL;
            if (avro)
                kf_avro_decode_json(NULL, m->payload, m->len, NULL, &val, NULL, err, sizeof(err));
            else
                val = json_loadb(m->payload, m->len, 0, NULL);
            json_array_append_new(out, json_pack("{s:s%, s:o}", "key", m->key ? m->key : "",
                                                 m->key ? m->key_len : 0, "value",
                                                 val ? val : json_null()));
        }
        rd_kafka_message_destroy(m);
    }
    free(high);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

static size_t
count_key(const json_t *records, const char *key, json_t **out_value)
{
    size_t n = 0, i;
    json_t *r;
    json_array_foreach(records, i, r)
    {
        if (!strcmp(jstr(r, "key"), key)) {
            n++;
            if (out_value)
                *out_value = json_object_get(r, "value");
        }
    }
    return n;
}

/* ---- servers -------------------------------------------------------------------------------- */

static kf_api_t *
start_api(const char *bootstrap, int topics_create, const char *produce_timeout)
{
    kf_conf_t *conf = kf_conf_new();
    kf_api_t *api = NULL;
    struct {
        const char *k, *v;
    } kv[] = {
        {"api.listen.port", "0"},
        {"api.workers", "3"},
        {"api.body.max", "4096"},
        {"api.batch.body.max", "65536"},
        {"api.batch.max.lines", "50"},
        {"pg.dsn", test_dsn},
        {"topics.requests", topic_req},
        {"topics.control", topic_ctl},
        {"topics.audit", topic_audit},
        {"kafka.bootstrap.servers", bootstrap},
        {"api.topics.create", topics_create ? "true" : "false"},
        {"api.produce.timeout", produce_timeout},
        {"api.ready.probe.interval", "0"},
        {"api.shutdown.timeout", "5s"},
    };
    kf_err_t err = kf_api_conf_register(conf, errstr, sizeof(errstr));
    for (size_t i = 0; !err && i < sizeof(kv) / sizeof(kv[0]); i++)
        err = kf_conf_set(conf, kv[i].k, kv[i].v, errstr, sizeof(errstr));
    if (!err)
        err = kf_api_new(conf, &api, errstr, sizeof(errstr));
    kf_conf_destroy(conf);
    if (err) {
        fprintf(stderr, "kf_api_new: %s\n", errstr);
        return NULL;
    }
    return api;
}

/* A loopback port nothing listens on. */
static int
dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static long
sql_count(kf_pg_t *pg, const char *sql)
{
    kf_pg_result_t *res = NULL;
    /* Idempotent: retried through a server restart (other tests restart the shared server). */
    if (kf_pg_exec(pg, sql, KF_PG_IDEMPOTENT, &res, errstr, sizeof(errstr))) {
        fprintf(stderr, "sql '%s': %s\n", sql, errstr);
        return -1;
    }
    long n = atol(kf_pg_result_value(res, 0, 0));
    kf_pg_result_destroy(res);
    return n;
}

/* Raw HTTP/1.1 with a chunked body of `total` bytes; returns the status code. */
static int
chunked_post(int port, const char *key, size_t total)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                     "Connection: close\r\n\r\n",
                     key);
    if (write(fd, head, (size_t)n) != n)
        return -1;
    char chunk[1100];
    memset(chunk, ' ', sizeof(chunk));
    for (size_t sent = 0; sent < total; sent += 1000) {
        int h = snprintf(head, sizeof(head), "3e8\r\n");
        if (write(fd, head, (size_t)h) != h || write(fd, chunk, 1000) != 1000 ||
            write(fd, "\r\n", 2) != 2)
            break;
    }
    if (write(fd, "0\r\n\r\n", 5) != 5) {
        close(fd);
        return -1;
    }
    char buf[256] = "";
    ssize_t got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    int status = -1;
    if (got > 12)
        sscanf(buf, "HTTP/1.1 %d", &status);
    return status;
}

/* ---- graceful shutdown: clients posting while the server stops ---------------------------- */

typedef struct shooter {
    int port;
    const char *key;
    int n202, nother, nfail;
    char ids[32][40];
} shooter_t;

static void *
shooter_main(void *arg)
{
    shooter_t *sh = arg;
    kf_http_t *h = NULL;
    char es[256], url[128], auth[200];
    kf_http_new(NULL, &h, es, sizeof(es));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/requests", sh->port);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", sh->key);
    const char *hdrs[] = {auth, "Content-Type: application/json", NULL};
    const char *body = "{\"model\":\"m\",\"prompt\":\"during shutdown\"}";
    for (int i = 0; i < 32; i++) {
        kf_http_resp_t resp;
        kf_http_resp_init(&resp);
        kf_http_req_t req = {
            .method = "POST", .url = url, .headers = hdrs, .body = body, .body_len = strlen(body)};
        if (kf_http_do(h, &req, &resp, es, sizeof(es)) != KF_OK) {
            sh->nfail++; /* refused or closed: the client knows it was not accepted */
        } else if (resp.status == 202) {
            json_t *j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
            snprintf(sh->ids[sh->n202++], 40, "%s", jstr(j, "id"));
            json_decref(j);
        } else {
            sh->nother++;
        }
        kf_http_resp_free(&resp);
    }
    kf_http_destroy(h);
    return NULL;
}

/* ---- the test ------------------------------------------------------------------------------- */

int
main(void)
{
    const char *dsn = getenv("KINFER_PG_DSN");
    brokers = getenv("KINFER_KAFKA_BROKERS");
    if (!dsn || !*dsn) {
        printf("SKIP: KINFER_PG_DSN is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    if (!brokers || !*brokers) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    kf_log_set_level(KF_LOG_WARN);
    snprintf(base_dsn, sizeof(base_dsn), "%s", dsn);
    long run = (long)getpid() * 1000 + (long)(time(NULL) % 1000);
    snprintf(dbname, sizeof(dbname), "kf_test_api_%ld", run);
    snprintf(test_dsn, sizeof(test_dsn), "%s dbname=%s", base_dsn, dbname);
    snprintf(topic_req, sizeof(topic_req), "kf.test.api.%ld.requests", run);
    snprintf(topic_ctl, sizeof(topic_ctl), "kf.test.api.%ld.control", run);
    snprintf(topic_audit, sizeof(topic_audit), "kf.test.api.%ld.audit", run);

    /* Scratch database, migrated by the project's runner. */
    kf_pg_t *admin_pg = NULL, *pg = NULL;
    kf_pg_opts_t o = {.dsn = base_dsn};
    if (kf_pg_new(&o, &admin_pg, errstr, sizeof(errstr))) {
        fprintf(stderr, "FAIL: connect: %s\n", errstr);
        return 1;
    }
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    if (kf_pg_exec(admin_pg, sql, 0, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "FAIL: %s\n", errstr);
        return 1;
    }
    char cmd[1024];
    /* KF_TEST_MIGRATIONS_DIR (optional) points migrate.sh at another folder, e.g. to bisect. */
    const char *mdir = getenv("KF_TEST_MIGRATIONS_DIR");
    snprintf(cmd, sizeof(cmd), "'%s/sql/migrate.sh' --quiet %s%s%s '%s'", KF_SOURCE_DIR,
             mdir ? "--dir '" : "", mdir ? mdir : "", mdir ? "'" : "", test_dsn);
    if (system(cmd) != 0) {
        fprintf(stderr, "FAIL: migrate.sh failed\n");
        failures++;
        goto drop;
    }
    o.dsn = test_dsn;
    if (kf_pg_new(&o, &pg, errstr, sizeof(errstr))) {
        fprintf(stderr, "FAIL: connect scratch: %s\n", errstr);
        failures++;
        goto drop;
    }
    kf_http_new(NULL, &http, errstr, sizeof(errstr));

    /* Tenants and keys through the admin functions (what `kinfer admin` runs). */
    char secret[128], key_a[128], key_b[128], key_c[128], key_rev[128];
    CHECK(kf_api_admin_create_tenant(pg, "ta", "Tenant A", 1000, 1000, secret, sizeof(secret),
                                     errstr, sizeof(errstr)) == KF_OK,
          "%s", errstr);
    CHECK(!strncmp(secret, "whsec_", 6) && strlen(secret) == 50, "secret %s", secret);
    CHECK(kf_api_admin_create_tenant(pg, "ta", "again", 0, 0, secret, sizeof(secret), errstr,
                                     sizeof(errstr)) == KF_ERR_EXISTS,
          "duplicate tenant");
    kf_api_admin_create_tenant(pg, "tb", "Tenant B", 0, 0, secret, sizeof(secret), errstr,
                               sizeof(errstr));
    kf_api_admin_create_tenant(pg, "tc", "Tenant C", 0.001, 2, secret, sizeof(secret), errstr,
                               sizeof(errstr));
    CHECK(kf_api_admin_create_key(pg, "ta", "test", key_a, sizeof(key_a), errstr, sizeof(errstr)) ==
              KF_OK,
          "%s", errstr);
    kf_api_admin_create_key(pg, "tb", NULL, key_b, sizeof(key_b), errstr, sizeof(errstr));
    kf_api_admin_create_key(pg, "tc", NULL, key_c, sizeof(key_c), errstr, sizeof(errstr));
    kf_api_admin_create_key(pg, "ta", "revoked", key_rev, sizeof(key_rev), errstr, sizeof(errstr));
    CHECK(kf_api_admin_revoke_key(pg, key_rev, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    CHECK(kf_api_admin_create_key(pg, "nobody", NULL, key_rev + 100, 28, errstr, sizeof(errstr)) !=
              KF_OK,
          "key for missing tenant");
    CHECK(sql_count(pg, "SELECT count(*) FROM api_keys WHERE key_sha256 LIKE 'kf_%'") == 0,
          "keys stored in clear");

    kf_api_t *api1 = start_api(brokers, 1, "5s");
    kf_api_t *api2 = start_api(brokers, 1, "5s");
    if (!api1 || !api2) {
        failures++;
        goto out;
    }
    int p1 = kf_api_port(api1), p2 = kf_api_port(api2);
    CHECK(p1 > 0 && p2 > 0 && p1 != p2, "ports %d %d", p1, p2);

    /* health and readiness */
    resp_t r = call(p1, "GET", "/healthz", NULL, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "status"), "ok"), "healthz %ld", r.status);
    resp_free(&r);
    r = call(p1, "GET", "/readyz", NULL, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "status"), "ready"), "readyz %ld %s", r.status,
          r.raw.body.data);
    resp_free(&r);

    /* ---- 202 only with the record in Kafka --------------------------------------------- */
    const char *body1 =
        "{\"model\":\"tiny\",\"prompt\":\"What is VaR?\",\"sampling\":{\"temperature\":0.25,"
        "\"max_tokens\":32,\"seed\":7,\"stop\":[\"END\"]},\"symbols\":[\"AAPL\"],"
        "\"callback_url\":\"https://example.com/cb\",\"metadata\":{\"ticket\":\"T-1\"},"
        "\"customer_id\":\"C9\",\"priority\":3}";
    r = post(p1, key_a, body1,
             "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    CHECK(r.status == 202, "POST status %ld: %s", r.status, r.raw.body.data);
    char id1[64] = "";
    snprintf(id1, sizeof(id1), "%s", jstr(r.json, "id") ? jstr(r.json, "id") : "");
    CHECK(!strcmp(jstr(r.json, "status") ? jstr(r.json, "status") : "", "accepted"), "status");
    char want_url[128];
    snprintf(want_url, sizeof(want_url), "/v1/requests/%s", id1);
    CHECK(jstr(r.json, "status_url") && !strcmp(jstr(r.json, "status_url"), want_url),
          "status_url");
    CHECK(header_is(&r, "Location", want_url), "Location header");
    resp_free(&r);
    /* Read right after the 202, without waiting: the record must already be there. */
    json_t *recs = read_topic(topic_req, 1);
    json_t *rec = NULL;
    CHECK(count_key(recs, id1, &rec) == 1, "record for %s in %s", id1, topic_req);
    if (rec) {
        CHECK(!strcmp(jstr(rec, "request_id"), id1), "request_id");
        CHECK(!strcmp(jstr(rec, "tenant_id"), "ta"), "tenant_id");
        CHECK(!strcmp(jstr(rec, "model"), "tiny"), "model");
        CHECK(!strcmp(jstr(rec, "prompt"), "What is VaR?"), "prompt");
        CHECK(!strcmp(jstr(rec, "task"), "completion"), "task");
        CHECK(json_real_value(kf_json_path(rec, "sampling.temperature")) == 0.25, "temperature");
        CHECK(json_integer_value(kf_json_path(rec, "sampling.max_tokens")) == 32, "max_tokens");
        CHECK(json_integer_value(kf_json_path(rec, "sampling.seed")) == 7, "seed");
        CHECK(!strcmp(jstr(rec, "sampling.stop[0]"), "END"), "stop");
        CHECK(!strcmp(jstr(rec, "symbols[0]"), "AAPL"), "symbols");
        CHECK(!strcmp(jstr(rec, "metadata.ticket"), "T-1"), "metadata");
        CHECK(!strcmp(jstr(rec, "customer_id"), "C9"), "customer_id");
        CHECK(!strcmp(jstr(rec, "callback_url"), "https://example.com/cb"), "callback_url");
        CHECK(json_integer_value(json_object_get(rec, "priority")) == 3, "priority");
        CHECK(!strcmp(jstr(rec, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736"), "trace_id");
        CHECK(json_integer_value(json_object_get(rec, "accepted_at")) > 1600000000000LL,
              "accepted_at");
    }
    json_decref(recs);

    /* GET: own tenant sees it, the other gets 404 */
    char path[256];
    snprintf(path, sizeof(path), "/v1/requests/%s", id1);
    r = call(p2, "GET", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "id"), id1) &&
              !strcmp(jstr(r.json, "status"), "accepted") &&
              !strcmp(jstr(r.json, "callback_status"), "pending") &&
              json_is_null(json_object_get(r.json, "result")),
          "GET own: %ld %s", r.status, r.raw.body.data);
    resp_free(&r);
    r = call(p1, "GET", path, key_b, NULL, NULL, NULL);
    CHECK(r.status == 404 && !strcmp(jstr(r.json, "error.code"), "not_found"), "GET other: %ld",
          r.status);
    resp_free(&r);
    /* the dispatcher's result shows up once written */
    snprintf(sql, sizeof(sql),
             "UPDATE requests SET status = 'completed', result = '{\"text\":\"42\"}' WHERE "
             "request_id = '%s'",
             id1);
    kf_pg_exec(pg, sql, 0, NULL, errstr, sizeof(errstr));
    r = call(p1, "GET", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "status"), "completed") &&
              jstr(r.json, "result.text") && !strcmp(jstr(r.json, "result.text"), "42"),
          "GET result: %s", r.raw.body.data);
    resp_free(&r);

    /* ---- idempotency across two servers and a restart ----------------------------------- */
    const char *body2 = "{\"model\":\"tiny\",\"prompt\":\"once\"}";
    r = post_idem(p1, key_a, body2, "idem-1");
    CHECK(r.status == 202, "first idempotent POST %ld", r.status);
    char idk[64] = "";
    snprintf(idk, sizeof(idk), "%s", jstr(r.json, "id") ? jstr(r.json, "id") : "?");
    resp_free(&r);
    r = post_idem(p2, key_a, body2, "idem-1");
    CHECK(r.status == 200 && jstr(r.json, "id") && !strcmp(jstr(r.json, "id"), idk),
          "replay on the other server: %ld %s", r.status, r.raw.body.data);
    CHECK(header_is(&r, "Idempotent-Replayed", "true"), "Idempotent-Replayed header");
    resp_free(&r);
    /* same key, another tenant: a different request */
    r = post_idem(p2, key_b, body2, "idem-1");
    CHECK(r.status == 202 && strcmp(jstr(r.json, "id"), idk) != 0, "other tenant same key %ld",
          r.status);
    resp_free(&r);
    kf_api_destroy(api1);
    api1 = start_api(brokers, 0, "5s");
    if (!api1) {
        failures++;
        goto out;
    }
    p1 = kf_api_port(api1);
    r = post_idem(p1, key_a, body2, "idem-1");
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "id"), idk), "replay after restart %ld",
          r.status);
    resp_free(&r);
    recs = read_topic(topic_req, 1);
    CHECK(count_key(recs, idk, NULL) == 1, "idempotent request produced %zu times",
          count_key(recs, idk, NULL));
    json_decref(recs);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM requests WHERE idempotency_key = 'idem-1' AND tenant_id = 'ta' "
             "AND enqueued_at IS NOT NULL");
    CHECK(sql_count(pg, sql) == 1, "one enqueued row for the key");

    /* ---- 401 ---------------------------------------------------------------------------- */
    const char *bad_keys[] = {NULL, "nonsense-key", key_rev};
    for (int i = 0; i < 3; i++) {
        r = post(p1, bad_keys[i], body2, NULL);
        CHECK(r.status == 401 && !strcmp(jstr(r.json, "error.code"), "unauthorized") &&
                  header_is(&r, "WWW-Authenticate", "Bearer"),
              "401 case %d: %ld %s", i, r.status, r.raw.body.data);
        resp_free(&r);
    }
    r = post(p1, NULL, body2, "Authorization: Basic dXNlcjpwYXNz");
    CHECK(r.status == 401, "Basic auth: %ld", r.status);
    resp_free(&r);
    r = call(p1, "GET", path, NULL, NULL, NULL, NULL);
    CHECK(r.status == 401, "GET without key: %ld", r.status);
    resp_free(&r);

    /* ---- 404 / 405 ---------------------------------------------------------------------- */
    r = call(p1, "GET", "/v1/nothing", key_a, NULL, NULL, NULL);
    CHECK(r.status == 404 && !strcmp(jstr(r.json, "error.code"), "not_found"), "route 404");
    resp_free(&r);
    r = call(p1, "GET", "/v1/requests/00000000-0000-4000-8000-000000000000", key_a, NULL, NULL,
             NULL);
    CHECK(r.status == 404, "unknown id: %ld", r.status);
    resp_free(&r);
    r = call(p1, "GET", "/v1/requests/not-a-uuid", key_a, NULL, NULL, NULL);
    CHECK(r.status == 404, "non-uuid id: %ld", r.status);
    resp_free(&r);
    r = call(p1, "PUT", "/v1/requests", key_a, "application/json", "{}", NULL);
    CHECK(r.status == 405 && header_is(&r, "Allow", "POST") &&
              !strcmp(jstr(r.json, "error.code"), "method_not_allowed"),
          "405: %ld", r.status);
    resp_free(&r);

    /* ---- 413 / 415 ---------------------------------------------------------------------- */
    char *big = malloc(6000);
    memset(big, ' ', 5999);
    big[5999] = '\0';
    memcpy(big, "{\"model\":\"m\",\"prompt\":\"x\"}", 26);
    r = post(p1, key_a, big, NULL);
    CHECK(r.status == 413 && !strcmp(jstr(r.json, "error.code"), "payload_too_large"), "413: %ld",
          r.status);
    resp_free(&r);
    free(big);
    CHECK(chunked_post(p1, key_a, 5000) == 413, "chunked 413");
    CHECK(chunked_post(p1, key_a, 20000) != 202, "long chunked body is not accepted");
    r = call(p1, "POST", "/v1/requests", key_a, "text/plain", body2, NULL);
    CHECK(r.status == 415 && !strcmp(jstr(r.json, "error.code"), "unsupported_media_type"),
          "415: %ld", r.status);
    resp_free(&r);
    r = call(p1, "POST", "/v1/requests", key_a, "application/json; charset=utf-8", body2, NULL);
    CHECK(r.status == 202, "json with charset: %ld", r.status);
    resp_free(&r);
    r = call(p1, "POST", "/v1/batches", key_a, "application/json", body2, NULL);
    CHECK(r.status == 415, "batch with application/json: %ld", r.status);
    resp_free(&r);

    /* ---- 400 ---------------------------------------------------------------------------- */
    struct {
        const char *body, *code, *field;
    } bad[] = {
        {"{\"model\":\"m\",", "invalid_json", NULL},
        {"[1,2]", "invalid_json", NULL},
        {"{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}", "invalid_json", NULL},
        {"{\"model\":\"m\",\"prompt\":\"x\",\"model\":\"n\"}", "invalid_json", NULL},
        {"{\"model\":\"m\",\"prompt\":\"x\",\"sampling\":{\"top_p\":2}}", "invalid_request",
         "sampling.top_p"},
        {"{\"model\":\"m\",\"prompt\":\"x\",\"callback_url\":\"gopher://x\"}", "invalid_request",
         "callback_url"},
        {"{\"model\":\"m\",\"prompt\":\"x\",\"extra\":1}", "invalid_request", "extra"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = post(p1, key_a, bad[i].body, NULL);
        CHECK(r.status == 400 && jstr(r.json, "error.code") &&
                  !strcmp(jstr(r.json, "error.code"), bad[i].code) &&
                  jstr(r.json, "error.message") && *jstr(r.json, "error.message"),
              "400 case %zu: %ld %s", i, r.status, r.raw.body.data);
        if (bad[i].field)
            CHECK(jstr(r.json, "error.field") && !strcmp(jstr(r.json, "error.field"), bad[i].field),
                  "400 field case %zu: %s", i, r.raw.body.data);
        resp_free(&r);
    }
    char deep[200] = "{\"model\":\"m\",\"prompt\":\"x\",\"metadata\":";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    for (int i = 0; i < 40; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    r = post(p1, key_a, deep, NULL);
    CHECK(r.status == 400 && strstr(r.raw.body.data, "deeper"), "deep JSON: %ld %s", r.status,
          r.raw.body.data);
    resp_free(&r);

    /* ---- 429 ---------------------------------------------------------------------------- */
    int ok = 0, limited = 0;
    for (int i = 0; i < 4; i++) {
        r = post(p1, key_c, body2, NULL);
        if (r.status == 202)
            ok++;
        if (r.status == 429) {
            limited++;
            char ra[16] = "";
            kf_http_resp_header(&r.raw, "Retry-After", ra, sizeof(ra));
            CHECK(atoi(ra) >= 1 && !strcmp(jstr(r.json, "error.code"), "rate_limited"),
                  "429 body/header: %s %s", ra, r.raw.body.data);
        }
        resp_free(&r);
    }
    CHECK(ok == 2 && limited == 2, "burst 2: %d accepted, %d limited", ok, limited);

    /* ---- DELETE -------------------------------------------------------------------------- */
    r = post(p1, key_a, body2, NULL);
    char idc[64];
    snprintf(idc, sizeof(idc), "%s", jstr(r.json, "id") ? jstr(r.json, "id") : "?");
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/requests/%s", idc);
    r = call(p1, "DELETE", path, key_b, NULL, NULL, NULL);
    CHECK(r.status == 404, "DELETE other tenant: %ld", r.status);
    resp_free(&r);
    r = call(p1, "DELETE", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "status"), "cancelled"), "DELETE: %ld %s",
          r.status, r.raw.body.data);
    resp_free(&r);
    r = call(p2, "GET", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200 && !strcmp(jstr(r.json, "status"), "cancelled") &&
              json_is_true(json_object_get(r.json, "cancel_requested")),
          "GET after DELETE: %s", r.raw.body.data);
    resp_free(&r);
    r = call(p1, "DELETE", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 409 && !strcmp(jstr(r.json, "error.code"), "conflict"), "second DELETE %ld",
          r.status);
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/requests/%s", id1); /* completed above */
    r = call(p1, "DELETE", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 409, "DELETE completed: %ld", r.status);
    resp_free(&r);
    recs = read_topic(topic_ctl, 0);
    json_t *ctl = NULL;
    CHECK(count_key(recs, idc, &ctl) == 1, "one control record for %s", idc);
    if (ctl)
        CHECK(!strcmp(jstr(ctl, "request_id"), idc) && !strcmp(jstr(ctl, "tenant_id"), "ta") &&
                  json_integer_value(json_object_get(ctl, "ts")) > 1600000000000LL,
              "control value");
    CHECK(json_array_size(recs) == 1, "control records: %zu", json_array_size(recs));
    json_decref(recs);

    /* ---- batches ------------------------------------------------------------------------- */
    long before_batches = sql_count(pg, "SELECT count(*) FROM batches");
    long before_rows = sql_count(pg, "SELECT count(*) FROM requests");
    r = call(p1, "POST", "/v1/batches", key_a, "application/x-ndjson",
             "{\"custom_id\":\"a\",\"model\":\"m\",\"prompt\":\"1\"}\n"
             "{\"custom_id\":\"b\",\"model\":\"m\",\"prompt\":\"2\",\"sampling\":{\"top_k\":-3}}\n",
             NULL);
    CHECK(r.status == 400 && json_integer_value(kf_json_path(r.json, "error.line")) == 2 &&
              !strcmp(jstr(r.json, "error.field"), "sampling.top_k") &&
              strstr(jstr(r.json, "error.message"), "line 2"),
          "bad batch line: %s", r.raw.body.data);
    resp_free(&r);
    r = call(p1, "POST", "/v1/batches", key_a, "application/jsonl",
             "{\"custom_id\":\"a\",\"model\":\"m\",\"prompt\":\"1\"}\n\n"
             "{\"custom_id\":\"a\",\"model\":\"m\",\"prompt\":\"2\"}\n",
             NULL);
    CHECK(r.status == 400 && json_integer_value(kf_json_path(r.json, "error.line")) == 3,
          "duplicate custom_id: %s", r.raw.body.data);
    resp_free(&r);
    r = call(p1, "POST", "/v1/batches", key_a, "application/x-ndjson", "\n\n", NULL);
    CHECK(r.status == 400, "empty batch: %ld", r.status);
    resp_free(&r);
    CHECK(sql_count(pg, "SELECT count(*) FROM batches") == before_batches &&
              sql_count(pg, "SELECT count(*) FROM requests") == before_rows,
          "rejected batches stored nothing");
    r = call(p1, "POST", "/v1/batches", key_a, "application/x-ndjson",
             "{\"custom_id\":\"first\",\"model\":\"m\",\"prompt\":\"1\"}\r\n"
             "{\"custom_id\":\"second\",\"model\":\"m\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"2\"}]}\n"
             "{\"custom_id\":\"third\",\"model\":\"m\",\"task\":\"risk_report\",\"risk\":{"
             "\"portfolio_id\":\"P1\"}}",
             NULL);
    CHECK(r.status == 202 && json_integer_value(json_object_get(r.json, "n")) == 3, "batch: %ld %s",
          r.status, r.raw.body.data);
    char bid[64];
    snprintf(bid, sizeof(bid), "%s", jstr(r.json, "batch_id") ? jstr(r.json, "batch_id") : "?");
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/batches/%s", bid);
    r = call(p2, "GET", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200 && json_integer_value(kf_json_path(r.json, "counts.accepted")) == 3 &&
              json_integer_value(kf_json_path(r.json, "counts.completed")) == 0 &&
              json_integer_value(json_object_get(r.json, "n")) == 3,
          "batch status: %s", r.raw.body.data);
    resp_free(&r);
    r = call(p1, "GET", path, key_b, NULL, NULL, NULL);
    CHECK(r.status == 404, "batch other tenant: %ld", r.status);
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/batches/%s/results", bid);
    r = call(p1, "GET", path, key_a, NULL, NULL, NULL);
    CHECK(r.status == 200, "results: %ld", r.status);
    {
        const char *want[] = {"first", "second", "third"};
        char *save = NULL, *text = strdup(r.raw.body.data ? r.raw.body.data : "");
        int nlines = 0;
        for (char *ln = strtok_r(text, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
            json_t *j = json_loads(ln, 0, NULL);
            CHECK(j && nlines < 3 && !strcmp(jstr(j, "custom_id"), want[nlines]) &&
                      !strcmp(jstr(j, "status"), "accepted") && jstr(j, "request_id"),
                  "result line %d: %s", nlines + 1, ln);
            json_decref(j);
            nlines++;
        }
        CHECK(nlines == 3, "result lines %d", nlines);
        free(text);
    }
    resp_free(&r);
    r = call(p1, "GET", path, key_b, NULL, NULL, NULL);
    CHECK(r.status == 404, "results other tenant: %ld", r.status);
    resp_free(&r);
    recs = read_topic(topic_req, 1);
    {
        size_t in_batch = 0, i;
        json_t *x;
        json_array_foreach(recs, i, x)
        {
            const char *b = jstr(x, "value.batch_id");
            if (b && !strcmp(b, bid)) {
                in_batch++;
                CHECK(jstr(x, "value.custom_id") &&
                          json_integer_value(kf_json_path(x, "value.priority")) == -1,
                      "batch record fields");
            }
        }
        CHECK(in_batch == 3, "batch records in Kafka: %zu", in_batch);
    }
    json_decref(recs);

    /* ---- audit events ------------------------------------------------------------------- */
    kf_api_destroy(api2); /* flushes its producer */
    api2 = NULL;
    kf_api_destroy(api1);
    api1 = NULL;
    recs = read_topic(topic_audit, 1);
    {
        int accepted = 0, rejected = 0;
        size_t i;
        json_t *x;
        json_array_foreach(recs, i, x)
        {
            const char *a = jstr(x, "value.action");
            const char *rid = jstr(x, "value.request_id");
            if (a && !strcmp(a, "request.accepted") && rid && !strcmp(rid, id1))
                accepted++;
            if (a && !strcmp(a, "request.rejected"))
                rejected++;
        }
        CHECK(accepted == 1, "request.accepted events for %s: %d", id1, accepted);
        CHECK(rejected >= 8, "request.rejected events: %d", rejected);
    }
    json_decref(recs);

    /* ---- dead broker -> 503 and no row ----------------------------------------------------- */
    {
        char dead[64];
        snprintf(dead, sizeof(dead), "127.0.0.1:%d", dead_port());
        kf_api_t *api3 = start_api(dead, 0, "1500ms");
        CHECK(api3 != NULL, "server with a dead broker starts");
        if (api3) {
            int p3 = kf_api_port(api3);
            long rows = sql_count(pg, "SELECT count(*) FROM requests");
            r = post(p3, key_a, "{\"model\":\"m\",\"prompt\":\"lost?\"}",
                     "Idempotency-Key: dead-1");
            char ra[16] = "";
            kf_http_resp_header(&r.raw, "Retry-After", ra, sizeof(ra));
            CHECK(r.status == 503 && !strcmp(jstr(r.json, "error.code"), "unavailable") &&
                      atoi(ra) >= 1,
                  "dead broker: %ld %s", r.status, r.raw.body.data);
            resp_free(&r);
            CHECK(sql_count(pg, "SELECT count(*) FROM requests") == rows, "row left behind");
            CHECK(sql_count(pg, "SELECT count(*) FROM requests WHERE idempotency_key = "
                                "'dead-1'") == 0,
                  "idempotency row left behind");
            r = call(p3, "POST", "/v1/batches", key_a, "application/x-ndjson",
                     "{\"custom_id\":\"x\",\"model\":\"m\",\"prompt\":\"1\"}\n", NULL);
            CHECK(r.status == 503, "dead broker batch: %ld %s", r.status, r.raw.body.data);
            resp_free(&r);
            CHECK(sql_count(pg, "SELECT count(*) FROM requests WHERE custom_id = 'x' AND "
                                "status = 'accepted'") == 0,
                  "batch line still claims accepted");
            r = call(p3, "GET", "/readyz", NULL, NULL, NULL, NULL);
            CHECK(r.status == 503 && !strcmp(jstr(r.json, "kafka"), "unreachable"),
                  "readyz with dead broker: %ld %s", r.status, r.raw.body.data);
            resp_free(&r);
            kf_api_destroy(api3);
        }
    }

    /* ---- metrics and OpenAPI against a running server -------------------------------------- */
    api1 = start_api(brokers, 0, "5s");
    if (!api1) {
        failures++;
        goto out;
    }
    p1 = kf_api_port(api1);
    {
        /* fresh ids for the {id} routes */
        r = post(p1, key_a, body2, NULL);
        char rid[64];
        snprintf(rid, sizeof(rid), "%s", jstr(r.json, "id") ? jstr(r.json, "id") : "?");
        resp_free(&r);
        json_error_t jerr;
        json_t *doc = json_load_file(KF_SOURCE_DIR "/docs/openapi.json", 0, &jerr);
        CHECK(doc != NULL, "openapi.json: %s", jerr.text);
        const char *tmpl;
        json_t *item;
        int checked = 0;
        json_object_foreach(json_object_get(doc, "paths"), tmpl, item)
        {
            const char *m;
            json_t *op;
            json_object_foreach(item, m, op)
            {
                char method[8], p[256];
                size_t k = 0;
                for (; m[k] && k < 7; k++)
                    method[k] = (char)(m[k] - 'a' + 'A');
                method[k] = '\0';
                const char *brace = strstr(tmpl, "{id}");
                if (brace)
                    snprintf(p, sizeof(p), "%.*s%s%s", (int)(brace - tmpl), tmpl,
                             strstr(tmpl, "batches") ? bid : rid, brace + 4);
                else
                    snprintf(p, sizeof(p), "%s", tmpl);
                int batch = strstr(p, "batches") != NULL;
                const char *body = !strcmp(method, "POST")
                                       ? (batch ? "{\"custom_id\":\"z\",\"model\":\"m\","
                                                  "\"prompt\":\"1\"}\n"
                                                : body2)
                                       : NULL;
                r = call(p1, method, p, key_a,
                         body ? (batch ? "application/x-ndjson" : "application/json") : NULL, body,
                         NULL);
                CHECK(r.status >= 200 && r.status < 300, "documented %s %s answered %ld: %s",
                      method, p, r.status, r.raw.body.data);
                resp_free(&r);
                checked++;
            }
        }
        CHECK(checked == 9, "documented operations %d", checked);
        json_decref(doc);
        /* and nothing undocumented is served */
        struct {
            const char *m, *p;
        } extra[] = {{"GET", "/"},           {"GET", "/v1"},
                     {"GET", "/v1/models"},  {"GET", "/openapi.json"},
                     {"PUT", "/v1/batches"}, {"DELETE", "/v1/batches"},
                     {"HEAD", "/healthz"},   {"POST", "/metrics"},
                     {"GET", "/v1/requests"}};
        for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
            r = call(p1, extra[i].m, extra[i].p, key_a, NULL, NULL, NULL);
            CHECK(r.status == 404 || r.status == 405, "undocumented %s %s answered %ld", extra[i].m,
                  extra[i].p, r.status);
            resp_free(&r);
        }
    }
    r = call(p1, "GET", "/metrics", NULL, NULL, NULL, NULL);
    CHECK(r.status == 200 &&
              strstr(r.raw.body.data,
                     "kinfer_api_http_requests_total{route=\"requests_create\",code=\"202\"}") &&
              strstr(r.raw.body.data, "kinfer_api_kafka_produce_duration_seconds_count") &&
              strstr(r.raw.body.data, "kinfer_api_http_request_duration_seconds_bucket"),
          "metrics page: %.300s", r.raw.body.data);
    resp_free(&r);

    /* ---- graceful shutdown: every 202 given while stopping is in Kafka ------------------ */
    {
        shooter_t sh[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            memset(&sh[i], 0, sizeof(sh[i]));
            sh[i].port = p1;
            sh[i].key = key_a;
            pthread_create(&th[i], NULL, shooter_main, &sh[i]);
        }
        struct timespec ts = {0, 30 * 1000000};
        nanosleep(&ts, NULL);
        kf_api_shutdown(api1); /* while the clients are posting */
        int n202 = 0, nother = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            n202 += sh[i].n202;
            nother += sh[i].nother;
        }
        CHECK(nother == 0, "answers other than 202 during shutdown: %d", nother);
        recs = read_topic(topic_req, 1);
        int missing = 0;
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < sh[i].n202; k++)
                missing += count_key(recs, sh[i].ids[k], NULL) != 1;
        CHECK(missing == 0, "%d of %d requests accepted during shutdown are not in Kafka", missing,
              n202);
        json_decref(recs);
        printf("shutdown: %d accepted while stopping, all in Kafka\n", n202);
    }

out:
    kf_api_destroy(api1);
    kf_api_destroy(api2);
    kf_http_destroy(http);
    kf_pg_destroy(pg);
drop:
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    if (kf_pg_exec(admin_pg, sql, 0, NULL, errstr, sizeof(errstr)))
        fprintf(stderr, "warning: %s\n", errstr);
    kf_pg_destroy(admin_pg);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("api integration: all checks passed\n");
    return 0;
}
