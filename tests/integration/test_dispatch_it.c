/*
 * Integration tests of `kinfer dispatch` (consumers/kf_dispatch.h) on the real local stack:
 * Kafka (KINFER_KAFKA_BROKERS) and PostgreSQL (KINFER_PG_DSN, a scratch database migrated
 * with sql/migrate.sh and dropped afterwards). Topics and consumer groups are unique per run.
 *
 * Callbacks go to a receiver built here on libmicrohttpd (127.0.0.1, ephemeral port) that
 * VERIFIES every signature itself with OpenSSL's HMAC (not with the code under test) and
 * behaves per path: /ok 200, /fail3 503 three times per webhook-id then 200, /fail2 twice,
 * /down always 503, /bad 400, /gone 410, /redirect 302 to /ok, /ra 429 with Retry-After: 1
 * once then 200.
 *
 * Scenarios (argv[1]): basic, retry, guard, restart. `restart` runs the dispatcher as a child
 * process (this binary with --child CONF) and SIGKILLs it while retries are pending.
 * Exit 77 (SKIP) when KINFER_KAFKA_BROKERS or KINFER_PG_DSN is missing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_dispatch.h"
#include "kf_kafka.h"

#ifndef KF_SOURCE_DIR
#error "KF_SOURCE_DIR must point at the source tree"
#endif

static int g_failures;
#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            g_failures++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)
#define DIE(...)                                \
    do {                                        \
        fprintf(stderr, "FATAL: " __VA_ARGS__); \
        fprintf(stderr, "\n");                  \
        exit(1);                                \
    } while (0)

static int64_t
now_ms(void)
{
    return kf_now_ms();
}

/* ---- receiver ---------------------------------------------------------------------------- */

typedef struct hit {
    char path[64];
    char wid[256];
    char ts[32];
    int sig_ok;
    int64_t at_ms;
    char *body;
} hit_t;

static struct {
    pthread_mutex_t mu;
    hit_t hits[4096];
    int n;
    unsigned char key[64];
    size_t key_len;
    int port;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct upload {
    char *data;
    size_t len;
} upload_t;

/* Independent verification: HMAC-SHA256 over "id.ts.body" with the raw key, base64, compare
 * with each "v1," entry of the header. */
static int
verify_sig(const char *wid, const char *ts, const char *body, size_t len, const char *hdr)
{
    if (!wid || !ts || !hdr)
        return 0;
    size_t n = strlen(wid) + strlen(ts) + len + 3;
    char *msg = malloc(n);
    int m = snprintf(msg, n, "%s.%s.", wid, ts);
    memcpy(msg + m, body, len);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), R.key, (int)R.key_len, (unsigned char *)msg, (size_t)m + len, mac, &maclen);
    free(msg);
    char b64[64] = "v1,";
    EVP_EncodeBlock((unsigned char *)b64 + 3, mac, 32);
    /* The dispatcher sends exactly one signature. */
    return strcmp(hdr, b64) == 0;
}

static int
count_for_wid(const char *path, const char *wid)
{
    int c = 0;
    for (int i = 0; i < R.n; i++)
        if (!strcmp(R.hits[i].path, path) && !strcmp(R.hits[i].wid, wid))
            c++;
    return c;
}

static enum MHD_Result
respond(struct MHD_Connection *c, unsigned status, const char *hname, const char *hval)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    if (hname)
        MHD_add_response_header(r, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls,
           struct MHD_Connection *c,
           const char *url,
           const char *method,
           const char *version,
           const char *upload_data,
           size_t *upload_size,
           void **con_cls)
{
    (void)cls;
    (void)version;
    if (!*con_cls) {
        *con_cls = calloc(1, sizeof(upload_t));
        return MHD_YES;
    }
    upload_t *up = *con_cls;
    if (*upload_size) {
        up->data = realloc(up->data, up->len + *upload_size + 1);
        memcpy(up->data + up->len, upload_data, *upload_size);
        up->len += *upload_size;
        up->data[up->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    const char *wid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
    pthread_mutex_lock(&R.mu);
    hit_t *h = R.n < 4096 ? &R.hits[R.n++] : NULL;
    int prior = 0;
    if (h) {
        memset(h, 0, sizeof(*h));
        snprintf(h->path, sizeof(h->path), "%s", url);
        snprintf(h->wid, sizeof(h->wid), "%s", wid ? wid : "");
        snprintf(h->ts, sizeof(h->ts), "%s", ts ? ts : "");
        h->sig_ok = strcmp(method, "POST") == 0 &&
                    verify_sig(wid, ts, up->data ? up->data : "", up->len, sig);
        h->at_ms = now_ms();
        h->body = strdup(up->data ? up->data : "");
        prior = count_for_wid(url, h->wid) - 1;
    }
    pthread_mutex_unlock(&R.mu);
    if (!strcmp(url, "/ok"))
        return respond(c, 200, NULL, NULL);
    if (!strcmp(url, "/fail3"))
        return respond(c, prior < 3 ? 503 : 200, NULL, NULL);
    if (!strcmp(url, "/fail2"))
        return respond(c, prior < 2 ? 503 : 200, NULL, NULL);
    if (!strcmp(url, "/down"))
        return respond(c, 503, NULL, NULL);
    if (!strcmp(url, "/bad"))
        return respond(c, 400, NULL, NULL);
    if (!strcmp(url, "/gone"))
        return respond(c, 410, NULL, NULL);
    if (!strcmp(url, "/ra"))
        return prior < 1 ? respond(c, 429, "Retry-After", "1") : respond(c, 200, NULL, NULL);
    if (!strcmp(url, "/redirect")) {
        char loc[96];
        snprintf(loc, sizeof(loc), "http://127.0.0.1:%d/ok", R.port);
        return respond(c, 302, "Location", loc);
    }
    return respond(c, 404, NULL, NULL);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    upload_t *up = *con_cls;
    if (up) {
        free(up->data);
        free(up);
    }
    *con_cls = NULL;
}

static struct MHD_Daemon *
receiver_start(void)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &sin,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!d)
        DIE("cannot start the receiver");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    R.port = info->port;
    return d;
}

static int
hits_for(const char *path, const char *wid)
{
    pthread_mutex_lock(&R.mu);
    int c = wid ? count_for_wid(path, wid) : 0;
    if (!wid)
        for (int i = 0; i < R.n; i++)
            c += !strcmp(R.hits[i].path, path);
    pthread_mutex_unlock(&R.mu);
    return c;
}

static int
hits_total(void)
{
    pthread_mutex_lock(&R.mu);
    int n = R.n;
    pthread_mutex_unlock(&R.mu);
    return n;
}

/* Every hit for `wid` on `path` has a valid signature; returns how many. */
static int
check_hits(const char *path, const char *wid, const char *status)
{
    int n = 0;
    pthread_mutex_lock(&R.mu);
    for (int i = 0; i < R.n; i++) {
        hit_t *h = &R.hits[i];
        if (strcmp(h->path, path) || strcmp(h->wid, wid))
            continue;
        n++;
        CHECK(h->sig_ok, "bad signature on %s for %s", path, wid);
        json_error_t jerr;
        json_t *b = json_loads(h->body, 0, &jerr);
        CHECK(b != NULL, "body not JSON: %s", h->body);
        if (b && status) {
            char type[64];
            snprintf(type, sizeof(type), "inference.%s", status);
            CHECK(!strcmp(json_string_value(json_object_get(b, "type")) ?: "", type),
                  "type %s, want %s", json_string_value(json_object_get(b, "type")), type);
            json_t *data = json_object_get(b, "data");
            char want_wid[160];
            snprintf(want_wid, sizeof(want_wid), "msg_%s",
                     json_string_value(json_object_get(data, "request_id")) ?: "");
            CHECK(!strcmp(want_wid, wid), "webhook-id %s is not msg_<request_id>", wid);
            CHECK(!strcmp(json_string_value(json_object_get(data, "status")) ?: "", status),
                  "data.status");
            CHECK(json_object_get(json_object_get(data, "result"), "usage") != NULL, "usage");
        }
        json_decref(b);
        /* Timestamp is recent (seconds). */
        long long ts = atoll(h->ts);
        CHECK(llabs(ts - now_ms() / 1000) < 600, "timestamp %lld is not now", ts);
    }
    pthread_mutex_unlock(&R.mu);
    return n;
}

/* ---- PostgreSQL -------------------------------------------------------------------------- */

static char g_db[64];
static char g_dsn[1024];

static PGconn *
pg_connect(const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        DIE("postgres: %s", PQerrorMessage(c));
    return c;
}

static void pg_exec(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *pg_value(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wait_value(PGconn *c, const char *want, int timeout_s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
pg_exec(PGconn *c, const char *fmt, ...)
{
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        DIE("postgres: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* One value as text (malloc'd, "" for NULL, "<none>" when no row). */
static char *
pg_value(PGconn *c, const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        DIE("postgres: %s: %s", sql, PQerrorMessage(c));
    char *v = strdup(PQntuples(r) == 0 ? "<none>" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void
scratch_db_create(void)
{
    const char *base = getenv("KINFER_PG_DSN");
    snprintf(g_db, sizeof(g_db), "kf_test_dq_%d_%lld", (int)getpid(),
             (long long)(now_ms() % 100000));
    PGconn *c = pg_connect(base);
    pg_exec(c, "CREATE DATABASE %s", g_db);
    PQfinish(c);
    snprintf(g_dsn, sizeof(g_dsn), "%s dbname=%s", base, g_db);
    char cmd[2048];
    /* KF_TEST_MIGRATIONS_DIR (optional) points migrate.sh at another folder. */
    const char *dir = getenv("KF_TEST_MIGRATIONS_DIR");
    snprintf(cmd, sizeof(cmd), "'%s/sql/migrate.sh' --quiet %s%s%s '%s'", KF_SOURCE_DIR,
             dir ? "--dir '" : "", dir ? dir : "", dir ? "'" : "", g_dsn);
    if (system(cmd) != 0)
        DIE("migrate.sh failed");
}

static void
scratch_db_drop(void)
{
    if (!g_db[0])
        return;
    PGconn *c = pg_connect(getenv("KINFER_PG_DSN"));
    pg_exec(c, "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_db);
    PQfinish(c);
}

static void
add_tenant(PGconn *c, const char *tenant)
{
    /* A fresh random key per run; the receiver verifies with the same raw bytes. */
    R.key_len = 32;
    RAND_bytes(R.key, 32);
    char b64[64];
    EVP_EncodeBlock((unsigned char *)b64, R.key, 32);
    pg_exec(
        c,
        "INSERT INTO tenants (tenant_id, name, webhook_secret) VALUES ('%s', 'test', 'whsec_%s')",
        tenant, b64);
}

/* ---- Kafka ------------------------------------------------------------------------------- */

static char g_prefix[96];
static kf_producer_t *g_prod;

static void
producer_start(void)
{
    char err[512];
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", getenv("KINFER_KAFKA_BROKERS")}};
    if (kf_producer_new(kv, 1, &g_prod, err, sizeof(err)) != KF_OK)
        DIE("producer: %s", err);
}

static void
produce_raw(const char *topic, const char *key, const void *val, size_t len)
{
    char err[512];
    kf_kafka_msg_t m = {.topic = topic,
                        .partition = KF_KAFKA_PARTITION_ANY,
                        .key = key,
                        .key_len = key ? strlen(key) : 0,
                        .value = val,
                        .value_len = len};
    if (kf_producer_send(g_prod, &m, NULL, err, sizeof(err)) != KF_OK)
        DIE("produce: %s", err);
}

static void
produce_result(
    const char *topic, const char *rid, const char *tenant, const char *status, const char *url)
{
    json_t *js = json_pack(
        "{ss ss ss ss sI ss s[] so ss sI si}", "request_id", rid, "tenant_id", tenant, "status",
        status, "text", !strcmp(status, "completed") ? "forty-two" : "", "produced_at",
        (json_int_t)now_ms(), "model", "tiny", "lineage", "callback_url",
        url ? json_string(url) : json_null(), "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736",
        "completion_tokens", (json_int_t)3, "prompt_tokens", 5);
    if (!js)
        DIE("json_pack");
    if (strcmp(status, "completed"))
        json_object_set_new(js, "error", json_string("it did not work"));
    unsigned char *buf;
    size_t len;
    char err[512];
    if (kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_INFERENCE_RESULT), js, &buf, &len, err,
                            sizeof(err)) != KF_OK)
        DIE("encode result: %s", err);
    produce_raw(topic, rid, buf, len);
    free(buf);
    json_decref(js);
}

/* Reads every record of a topic (all partitions, from the start) until idle for 2 s and
 * decodes each with `schema`; returns a JSON array. */
static json_t *
read_topic(const char *topic, const char *schema)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", getenv("KINFER_KAFKA_BROKERS"), err, sizeof(err));
    char gid[160];
    snprintf(gid, sizeof(gid), "%sreader-%lld", g_prefix, (long long)now_ms());
    rd_kafka_conf_set(conf, "group.id", gid, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        DIE("reader: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    json_t *out = json_array();
    int64_t idle_since = now_ms();
    while (now_ms() - idle_since < 2000) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err) {
            json_t *js = NULL;
            if (kf_avro_decode_json(NULL, m->payload, m->len, kf_avro_schema_get(schema), &js, NULL,
                                    err, sizeof(err)) == KF_OK)
                json_array_append_new(out, js);
            else
                json_array_append_new(out, json_pack("{ss}", "undecodable", err));
            idle_since = now_ms();
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

static int
count_audit(json_t *events, const char *action, const char *rid, const char *outcome)
{
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        const char *a = json_string_value(json_object_get(e, "action"));
        const char *r = json_string_value(json_object_get(e, "request_id"));
        const char *o = json_string_value(json_object_get(e, "outcome"));
        if (a && !strcmp(a, action) && r && !strcmp(r, rid) &&
            (!outcome || (o && !strcmp(o, outcome))))
            n++;
    }
    return n;
}

/* ---- the dispatcher under test ----------------------------------------------------------- */

typedef struct topics {
    char results[160], retry[160], dlq[160], audit[160], group[160];
} topics_t;

static void
topics_init(topics_t *t, const char *tag)
{
    snprintf(t->results, sizeof(t->results), "%s%s.results", g_prefix, tag);
    snprintf(t->retry, sizeof(t->retry), "%s%s.retry", g_prefix, tag);
    snprintf(t->dlq, sizeof(t->dlq), "%s%s.cbdlq", g_prefix, tag);
    snprintf(t->audit, sizeof(t->audit), "%s%s.audit", g_prefix, tag);
    snprintf(t->group, sizeof(t->group), "%s%s.group", g_prefix, tag);
}

static kf_conf_t *
dispatch_conf(const topics_t *t, const char *schedule, const char *allow)
{
    char err[512];
    kf_conf_t *conf = kf_conf_new();
    if (kf_dispatch_conf_register(conf, err, sizeof(err)) != KF_OK)
        DIE("register: %s", err);
    const char *sets[][2] = {
        {"pg.dsn", g_dsn},
        {"topics.results", t->results},
        {"topics.callbacks.retry", t->retry},
        {"topics.callbacks.dlq", t->dlq},
        {"topics.audit", t->audit},
        {"dispatch.group.id", t->group},
        {"dispatch.retry.schedule", schedule},
        {"dispatch.retry.jitter", "0"},
        {"dispatch.allow.cidrs", allow},
        {"dispatch.timeout", "5s"},
        {"dispatch.commit.interval", "200ms"},
        {"dispatch.shutdown.timeout", "5s"},
        {"kafka.bootstrap.servers", getenv("KINFER_KAFKA_BROKERS")},
        {"kafka.session.timeout.ms", "6000"},
        {"kafka.heartbeat.interval.ms", "1000"},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        if (kf_conf_set(conf, sets[i][0], sets[i][1], err, sizeof(err)) != KF_OK)
            DIE("set %s: %s", sets[i][0], err);
    return conf;
}

typedef struct runner {
    kf_dispatch_t *d;
    pthread_t th;
    volatile int stop;
    kf_err_t err;
} runner_t;

static void *
runner_main(void *arg)
{
    runner_t *r = arg;
    char err[512];
    while (!r->stop) {
        r->err = kf_dispatch_poll(r->d, 100, err, sizeof(err));
        if (r->err != KF_OK) {
            fprintf(stderr, "dispatch poll: %s\n", err);
            break;
        }
    }
    return NULL;
}

static void
runner_start(runner_t *r, kf_conf_t *conf)
{
    char err[512];
    memset(r, 0, sizeof(*r));
    if (kf_dispatch_new(conf, NULL, &r->d, err, sizeof(err)) != KF_OK)
        DIE("dispatch_new: %s", err);
    pthread_create(&r->th, NULL, runner_main, r);
}

static void
runner_stop(runner_t *r)
{
    r->stop = 1;
    pthread_join(r->th, NULL);
    kf_dispatch_destroy(r->d);
    r->d = NULL;
}

/* Waits (generously) until the SQL returns `want`; returns whether it did. */
static int
wait_value(PGconn *c, const char *want, int timeout_s, const char *fmt, ...)
{
    char sql[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    int64_t end = now_ms() + (int64_t)timeout_s * 1000;
    char *v = NULL;
    while (now_ms() < end) {
        free(v);
        v = pg_value(c, "%s", sql);
        if (!strcmp(v, want)) {
            free(v);
            return 1;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "timeout: %s -> '%s', want '%s'\n", sql, v, want);
    free(v);
    return 0;
}

static void
new_id(char out[37])
{
    kf_uuid4(out);
}

static char *
url_for(const char *path)
{
    static char buf[16][128];
    static int i;
    char *b = buf[i++ % 16];
    snprintf(b, 128, "http://127.0.0.1:%d%s", R.port, path);
    return b;
}

/* ---- scenarios ---------------------------------------------------------------------------- */

static void
scenario_basic(PGconn *pg)
{
    topics_t t;
    topics_init(&t, "basic");
    kf_conf_t *conf = dispatch_conf(&t, "200ms,400ms", "127.0.0.1/32");
    runner_t r;
    runner_start(&r, conf);

    char ok[3][37], none[37], bad[37], gone1[37], gone2[37], redir[37], ra[37];
    const char *st[3] = {"completed", "failed", "expired"};
    for (int i = 0; i < 3; i++) {
        new_id(ok[i]);
        produce_result(t.results, ok[i], "t1", st[i], url_for("/ok"));
    }
    new_id(none);
    produce_result(t.results, none, "t1", "completed", NULL);
    new_id(bad);
    produce_result(t.results, bad, "t1", "completed", url_for("/bad"));
    new_id(gone1);
    produce_result(t.results, gone1, "t1", "completed", url_for("/gone"));
    new_id(redir);
    produce_result(t.results, redir, "t1", "completed", url_for("/redirect"));
    new_id(ra);
    produce_result(t.results, ra, "t1", "completed", url_for("/ra"));
    /* A poison record goes to the results dead-letter topic, and the rest still flows. */
    produce_raw(t.results, "poison", "not avro at all", 15);

    for (int i = 0; i < 3; i++)
        CHECK(wait_value(pg, "delivered", 60,
                         "SELECT callback_status FROM requests WHERE request_id='%s'", ok[i]),
              "ok[%d] delivered", i);
    CHECK(wait_value(pg, "delivery_failed", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", bad),
          "bad");
    CHECK(wait_value(pg, "delivery_failed", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", gone1),
          "gone");
    CHECK(wait_value(pg, "delivery_failed", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", redir),
          "redirect");
    CHECK(wait_value(pg, "delivered", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", ra),
          "ra");
    CHECK(
        wait_value(pg, "completed", 60, "SELECT status FROM requests WHERE request_id='%s'", none),
        "no-url row");

    /* A later request to the endpoint that answered 410 fails without any request. */
    CHECK(wait_value(pg, "1", 30,
                     "SELECT count(*) FROM disabled_endpoints WHERE tenant_id='t1' AND url='%s'",
                     url_for("/gone")),
          "endpoint disabled");
    int gone_hits_before = hits_for("/gone", NULL);
    new_id(gone2);
    produce_result(t.results, gone2, "t1", "completed", url_for("/gone"));
    CHECK(wait_value(pg, "delivery_failed", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", gone2),
          "gone2");

    /* Redelivery of a finished result: nothing is sent again; a final status never regresses. */
    produce_result(t.results, ok[0], "t1", "completed", url_for("/ok"));
    produce_result(t.results, ok[0], "t1", "failed", url_for("/ok"));
    kf_dispatch_stats_t s;
    int64_t end = now_ms() + 30000;
    do {
        usleep(100 * 1000);
        kf_dispatch_get_stats(r.d, &s);
    } while (s.skipped < 2 && now_ms() < end);
    CHECK(s.skipped >= 2, "skipped %llu", (unsigned long long)s.skipped);
    CHECK(s.dead_lettered >= 1, "poison record dead-lettered");

    /* Receiver side. */
    char wid[256];
    for (int i = 0; i < 3; i++) {
        snprintf(wid, sizeof(wid), "msg_%s", ok[i]);
        CHECK(check_hits("/ok", wid, st[i]) == 1, "ok[%d]: exactly one POST", i);
    }
    snprintf(wid, sizeof(wid), "msg_%s", bad);
    CHECK(check_hits("/bad", wid, "completed") == 1, "4xx: exactly one attempt");
    snprintf(wid, sizeof(wid), "msg_%s", gone1);
    CHECK(check_hits("/gone", wid, "completed") == 1, "410: one attempt");
    CHECK(hits_for("/gone", NULL) == gone_hits_before, "disabled endpoint got no request");
    snprintf(wid, sizeof(wid), "msg_%s", redir);
    CHECK(check_hits("/redirect", wid, "completed") == 1, "3xx: one attempt");
    CHECK(hits_for("/ok", wid) == 0, "redirect not followed");
    snprintf(wid, sizeof(wid), "msg_%s", ra);
    CHECK(check_hits("/ra", wid, "completed") == 2, "429 then 200: two attempts");
    pthread_mutex_lock(&R.mu);
    int64_t t1 = -1, t2 = -1;
    for (int i = 0; i < R.n; i++)
        if (!strcmp(R.hits[i].wid, wid))
            (t1 < 0 ? (t1 = R.hits[i].at_ms) : (t2 = R.hits[i].at_ms));
    pthread_mutex_unlock(&R.mu);
    /* Retry-After: 1 is a floor over the 200 ms schedule (lower bound, not a speed check). */
    CHECK(t2 - t1 >= 900, "Retry-After honoured: second attempt %lld ms after the first",
          (long long)(t2 - t1));

    /* PostgreSQL rows. */
    for (int i = 0; i < 3; i++) {
        char *v = pg_value(pg,
                           "SELECT status || '|' || callback_attempts || '|' || (delivered_at IS "
                           "NOT NULL) || '|' || (completed_at IS NOT NULL) || '|' || "
                           "(result->>'request_id') FROM requests WHERE request_id='%s'",
                           ok[i]);
        char want[128];
        snprintf(want, sizeof(want), "%s|1|true|true|%s", st[i], ok[i]);
        CHECK(!strcmp(v, want), "row %s, want %s", v, want);
        free(v);
    }
    char *v = pg_value(pg, "SELECT callback_status FROM requests WHERE request_id='%s'", none);
    CHECK(!strcmp(v, "none"), "no-url callback_status %s", v);
    free(v);
    v = pg_value(pg, "SELECT callback_attempts FROM requests WHERE request_id='%s'", bad);
    CHECK(!strcmp(v, "1"), "4xx attempts %s", v);
    free(v);
    v = pg_value(pg, "SELECT callback_attempts FROM requests WHERE request_id='%s'", ra);
    CHECK(!strcmp(v, "2"), "ra attempts %s", v);
    free(v);
    v = pg_value(pg, "SELECT status FROM requests WHERE request_id='%s'", ok[0]);
    CHECK(!strcmp(v, "completed"), "final status regressed to %s", v);
    free(v);

    runner_stop(&r);
    kf_conf_destroy(conf);

    /* Audit trail. */
    json_t *ev = read_topic(t.audit, KF_AVRO_AUDIT_EVENT);
    for (int i = 0; i < 3; i++) {
        CHECK(count_audit(ev, "callback.delivered", ok[i], "success") == 1, "delivered audit");
        CHECK(count_audit(ev, "callback.attempted", ok[i], "success") == 1, "attempted audit");
    }
    CHECK(count_audit(ev, "callback.failed", bad, "failure") == 1, "failed audit (4xx)");
    CHECK(count_audit(ev, "callback.attempted", ra, "retry") == 1, "retry audit");
    CHECK(count_audit(ev, "callback.delivered", ra, NULL) == 1, "delivered audit (ra)");
    CHECK(count_audit(ev, "callback.failed", gone2, NULL) == 1, "failed audit (disabled)");
    json_decref(ev);
    json_t *dl = read_topic(t.dlq, KF_AVRO_CALLBACK_ATTEMPT);
    CHECK(json_array_size(dl) == 4, "4 final failures dead-lettered, got %zu", json_array_size(dl));
    json_decref(dl);
}

static void
scenario_retry(PGconn *pg)
{
    topics_t t;
    topics_init(&t, "retry");
    kf_conf_t *conf = dispatch_conf(&t, "200ms,400ms,600ms,800ms", "127.0.0.1/32");
    runner_t r;
    runner_start(&r, conf);
    char a[37], b[37], down[37];
    new_id(a);
    new_id(b);
    new_id(down);
    produce_result(t.results, a, "t1", "completed", url_for("/fail3"));
    produce_result(t.results, b, "t1", "completed", url_for("/fail3"));
    produce_result(t.results, down, "t1", "completed", url_for("/down"));
    CHECK(wait_value(pg, "delivered|4", 60,
                     "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                     "request_id='%s'",
                     a),
          "a delivered after 4 attempts");
    CHECK(wait_value(pg, "delivered|4", 60,
                     "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                     "request_id='%s'",
                     b),
          "b delivered after 4 attempts");
    CHECK(wait_value(pg, "delivery_failed|5", 60,
                     "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                     "request_id='%s'",
                     down),
          "down failed after 5 attempts");
    runner_stop(&r);
    kf_conf_destroy(conf);
    char wid[256];
    snprintf(wid, sizeof(wid), "msg_%s", a);
    /* Exactly 4 POSTs, every one with the same webhook-id (counted by id) and a valid
     * signature. */
    CHECK(check_hits("/fail3", wid, "completed") == 4, "a: 4 POSTs with the same webhook-id");
    snprintf(wid, sizeof(wid), "msg_%s", b);
    CHECK(check_hits("/fail3", wid, "completed") == 4, "b: 4 POSTs");
    snprintf(wid, sizeof(wid), "msg_%s", down);
    CHECK(check_hits("/down", wid, "completed") == 5, "down: 5 POSTs (1 + 4 retries)");

    json_t *dl = read_topic(t.dlq, KF_AVRO_CALLBACK_ATTEMPT);
    CHECK(json_array_size(dl) == 1, "one dead letter, got %zu", json_array_size(dl));
    json_t *d0 = json_array_get(dl, 0);
    CHECK(!strcmp(json_string_value(json_object_get(d0, "request_id")) ?: "", down), "dlq id");
    CHECK(json_integer_value(json_object_get(d0, "attempt")) == 5, "dlq attempt");
    CHECK(json_integer_value(json_object_get(d0, "last_status")) == 503, "dlq last_status");
    json_decref(dl);
    json_t *rt = read_topic(t.retry, KF_AVRO_CALLBACK_ATTEMPT);
    /* 3 retries each for a and b, 4 for down. */
    CHECK(json_array_size(rt) == 10, "retry records %zu, want 10", json_array_size(rt));
    json_decref(rt);
    json_t *ev = read_topic(t.audit, KF_AVRO_AUDIT_EVENT);
    CHECK(count_audit(ev, "callback.attempted", a, "retry") == 3, "3 retry audits");
    CHECK(count_audit(ev, "callback.attempted", a, "success") == 1, "1 success audit");
    CHECK(count_audit(ev, "callback.delivered", a, NULL) == 1, "delivered audit");
    CHECK(count_audit(ev, "callback.failed", down, "failure") == 1, "failed audit");
    json_decref(ev);
}

static void
scenario_guard(PGconn *pg)
{
    /* 1: 127.0.0.1/32 allowlisted; 127.0.0.2, [::1] and ftp:// are refused at once. */
    topics_t t;
    topics_init(&t, "guard");
    kf_conf_t *conf = dispatch_conf(&t, "200ms,400ms", "127.0.0.1/32");
    runner_t r;
    runner_start(&r, conf);
    char lo2[37], v6[37], ftp[37], okid[37];
    char u[128];
    new_id(lo2);
    snprintf(u, sizeof(u), "http://127.0.0.2:%d/ok", R.port);
    produce_result(t.results, lo2, "t1", "completed", u);
    new_id(v6);
    snprintf(u, sizeof(u), "http://[::1]:%d/ok", R.port);
    produce_result(t.results, v6, "t1", "completed", u);
    new_id(ftp);
    snprintf(u, sizeof(u), "ftp://127.0.0.1:%d/ok", R.port);
    produce_result(t.results, ftp, "t1", "completed", u);
    new_id(okid);
    produce_result(t.results, okid, "t1", "completed", url_for("/ok"));
    const char *ids[] = {lo2, v6, ftp};
    for (int i = 0; i < 3; i++)
        CHECK(wait_value(pg, "delivery_failed|1", 60,
                         "SELECT callback_status || '|' || callback_attempts FROM requests "
                         "WHERE request_id='%s'",
                         ids[i]),
              "refused %d: final after one attempt", i);
    CHECK(wait_value(pg, "delivered", 60,
                     "SELECT callback_status FROM requests WHERE request_id='%s'", okid),
          "allowlisted delivered");
    kf_dispatch_stats_t s;
    kf_dispatch_get_stats(r.d, &s);
    CHECK(s.blocked == 3, "blocked %llu, want 3", (unsigned long long)s.blocked);
    runner_stop(&r);
    kf_conf_destroy(conf);
    json_t *ev = read_topic(t.audit, KF_AVRO_AUDIT_EVENT);
    CHECK(count_audit(ev, "callback.attempted", lo2, "rejected") == 1, "rejected audit");
    json_decref(ev);

    /* 2: empty allowlist; the receiver on 127.0.0.1 must not see a single request, proving the
     * refusal happens before connect(). */
    topics_t t2;
    topics_init(&t2, "guard2");
    conf = dispatch_conf(&t2, "200ms,400ms", "");
    runner_start(&r, conf);
    int before = hits_total();
    char loc[37], host[37];
    new_id(loc);
    produce_result(t2.results, loc, "t1", "completed", url_for("/ok"));
    new_id(host);
    snprintf(u, sizeof(u), "http://localhost:%d/ok", R.port);
    produce_result(t2.results, host, "t1", "completed", u);
    CHECK(wait_value(pg, "delivery_failed|1", 60,
                     "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                     "request_id='%s'",
                     loc),
          "127.0.0.1 refused without allowlist");
    CHECK(wait_value(pg, "delivery_failed|1", 60,
                     "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                     "request_id='%s'",
                     host),
          "localhost refused without allowlist");
    CHECK(hits_total() == before, "receiver got %d requests, want 0", hits_total() - before);
    runner_stop(&r);
    kf_conf_destroy(conf);
}

/* The child: a dispatcher process driven by a config file. */
static int
child_main(const char *conf_file)
{
    char err[512];
    kf_conf_t *conf = kf_conf_new();
    if (kf_dispatch_conf_register(conf, err, sizeof(err)) != KF_OK ||
        kf_conf_load_file(conf, conf_file, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "child: %s\n", err);
        return 1;
    }
    kf_kafka_install_signal_handlers();
    kf_err_t e = kf_dispatch_run(conf, &kf_kafka_stop, err, sizeof(err));
    kf_conf_destroy(conf);
    if (e != KF_OK)
        fprintf(stderr, "child: %s\n", err);
    return e == KF_OK ? 0 : 1;
}

static pid_t
spawn_child(const char *self, const char *conf_file)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, "--child", conf_file, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void
scenario_restart(PGconn *pg, const char *self)
{
    topics_t t;
    topics_init(&t, "restart");
    char conf_file[256];
    snprintf(conf_file, sizeof(conf_file), "/tmp/%sdispatch.conf", g_prefix);
    FILE *fp = fopen(conf_file, "w");
    if (!fp)
        DIE("cannot write %s", conf_file);
    fprintf(fp,
            "pg.dsn = \"%s\"\ntopics.results = %s\ntopics.callbacks.retry = %s\n"
            "topics.callbacks.dlq = %s\ntopics.audit = %s\ndispatch.group.id = %s\n"
            "dispatch.retry.schedule = \"3s,3s,3s\"\ndispatch.retry.jitter = 0\n"
            "dispatch.allow.cidrs = 127.0.0.1/32\ndispatch.commit.interval = 100ms\n"
            "kafka.bootstrap.servers = %s\nkafka.session.timeout.ms = 6000\n"
            "kafka.heartbeat.interval.ms = 1000\n",
            g_dsn, t.results, t.retry, t.dlq, t.audit, t.group, getenv("KINFER_KAFKA_BROKERS"));
    fclose(fp);

    enum { N = 5 };
    char ids[N][37];
    pid_t c1 = spawn_child(self, conf_file);
    for (int i = 0; i < N; i++) {
        new_id(ids[i]);
        produce_result(t.results, ids[i], "t1", "completed", url_for("/fail2"));
    }
    /* Kill the first dispatcher once every request failed its first attempt and is waiting
     * for its retry (held in memory, offset uncommitted). */
    CHECK(wait_value(pg, "5", 60,
                     "SELECT count(*) FROM requests WHERE callback_attempts >= 1 AND "
                     "request_id IN ('%s','%s','%s','%s','%s')",
                     ids[0], ids[1], ids[2], ids[3], ids[4]),
          "first attempts done");
    kill(c1, SIGKILL);
    waitpid(c1, NULL, 0);
    char *pend = pg_value(pg,
                          "SELECT count(*) FROM requests WHERE callback_status = 'pending' AND "
                          "request_id IN ('%s','%s','%s','%s','%s')",
                          ids[0], ids[1], ids[2], ids[3], ids[4]);
    CHECK(!strcmp(pend, "5"), "%s of 5 pending at the kill", pend);
    free(pend);

    pid_t c2 = spawn_child(self, conf_file);
    for (int i = 0; i < N; i++)
        CHECK(wait_value(pg, "delivered|3", 90,
                         "SELECT callback_status || '|' || callback_attempts FROM requests WHERE "
                         "request_id='%s'",
                         ids[i]),
              "request %d delivered after the restart", i);
    kill(c2, SIGTERM);
    int wst = 0;
    waitpid(c2, &wst, 0);
    CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "second dispatcher exit status %d", wst);
    for (int i = 0; i < N; i++) {
        char wid[256];
        snprintf(wid, sizeof(wid), "msg_%s", ids[i]);
        /* At least the 3 attempts (a crash may repeat one, with the same id). */
        int n = check_hits("/fail2", wid, "completed");
        CHECK(n >= 3 && n <= 4, "request %d: %d POSTs", i, n);
    }
    unlink(conf_file);
}

int
main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child"))
        return child_main(argv[2]);
    const char *scen = argc > 1 ? argv[1] : "basic";
    if (!getenv("KINFER_KAFKA_BROKERS") || !*getenv("KINFER_KAFKA_BROKERS")) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set\n");
        return 77;
    }
    if (!getenv("KINFER_PG_DSN") || !*getenv("KINFER_PG_DSN")) {
        printf("SKIP: KINFER_PG_DSN is not set\n");
        return 77;
    }
    snprintf(g_prefix, sizeof(g_prefix), "kf-it-dq-%d-%lld.", (int)getpid(),
             (long long)(now_ms() % 1000000));
    struct MHD_Daemon *mhd = receiver_start();
    /* Registered first so a failing migration still drops the scratch database. */
    atexit(scratch_db_drop);
    scratch_db_create();
    PGconn *pg = pg_connect(g_dsn);
    add_tenant(pg, "t1");
    producer_start();
    if (!strcmp(scen, "basic"))
        scenario_basic(pg);
    else if (!strcmp(scen, "retry"))
        scenario_retry(pg);
    else if (!strcmp(scen, "guard"))
        scenario_guard(pg);
    else if (!strcmp(scen, "restart"))
        scenario_restart(pg, argv[0]);
    else
        DIE("unknown scenario %s", scen);
    kf_producer_destroy(g_prod);
    PQfinish(pg);
    MHD_stop_daemon(mhd);
    printf("%s: %s (%d failures)\n", scen, g_failures ? "FAILED" : "ok", g_failures);
    return g_failures ? 1 : 0;
}
