/*
 * Integration test of `kinfer audit` (consumers/kf_auditor.h) on the real local stack: Kafka
 * (KINFER_KAFKA_BROKERS) and the search engine (KINFER_SEARCH_URL). Everything is unique per
 * run (topic, group, index prefix, template) and removed at the end.
 *
 *   - N AuditEvents over two UTC days -> exactly N documents in two daily indexes;
 *   - the same N records produced again -> still N (409s counted as duplicates);
 *   - a poison record -> one record on <topic>.dlq, and the others are unaffected;
 *   - search by request id, action, tenant, free text and time range -> exact counts, both
 *     through kf_auditor_search and through `kinfer audit search --json` (kf_cmd_audit).
 * With argv[1] = "partial", the engine is a fake built here on libmicrohttpd that answers the
 * first _bulk with 429 for one item and 400 for another: only the 429 item may be sent again,
 * the 400 one must be dead-lettered, and the offsets must be committed only once the retried
 * item is in.
 * Exit 77 (SKIP) when KINFER_KAFKA_BROKERS or KINFER_SEARCH_URL is missing.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kf_audit.h"
#include "kf_auditor.h"
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_search.h"

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

enum { N = 120 };

typedef struct runner {
    kf_auditor_t *a;
    pthread_t th;
    volatile sig_atomic_t stop;
} runner_t;

static void *
runner_main(void *arg)
{
    runner_t *r = arg;
    char err[512];
    while (!r->stop) {
        kf_err_t e = kf_auditor_poll(r->a, 100, &r->stop, err, sizeof(err));
        if (e != KF_OK && e != KF_ERR_CANCELLED) {
            fprintf(stderr, "auditor poll: %s\n", err);
            break;
        }
    }
    return NULL;
}

static int64_t
count_all(kf_search_t *s, const char *pattern)
{
    char err[512];
    int64_t n = -1;
    if (kf_search_refresh(s, pattern, err, sizeof(err)) != KF_OK)
        return -1;
    if (kf_search_count(s, pattern, NULL, &n, err, sizeof(err)) != KF_OK)
        return -1;
    return n;
}

static int64_t
search_total(kf_search_t *s, const char *pattern, const kf_audit_query_t *q)
{
    char err[512];
    int64_t total = -1;
    json_t *hits = NULL;
    if (kf_auditor_search(s, pattern, q, &total, &hits, err, sizeof(err)) != KF_OK) {
        fprintf(stderr, "search: %s\n", err);
        return -1;
    }
    /* Every hit matches what was asked for. */
    size_t i;
    json_t *h;
    json_array_foreach(hits, i, h)
    {
        json_t *src = json_object_get(h, "_source");
        if (q->request_id)
            CHECK(!strcmp(json_string_value(
                              json_object_get(json_object_get(src, "labels"), "request_id"))
                              ?: "",
                          q->request_id),
                  "hit of another request");
        if (q->action)
            CHECK(
                !strcmp(json_string_value(json_object_get(json_object_get(src, "event"), "action"))
                            ?: "",
                        q->action),
                "hit of another action");
    }
    json_decref(hits);
    return total;
}

/* Runs `kinfer audit search ARGS --json` in a child with stdout on a pipe; returns the number
 * of JSON lines printed (-1 on failure). */
static int
cli_search_lines(const char *const *args, size_t nargs)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        char *argv[32];
        size_t n = 0;
        argv[n++] = "audit";
        argv[n++] = "search";
        for (size_t i = 0; i < nargs && n < 30; i++)
            argv[n++] = (char *)args[i];
        argv[n++] = "--json";
        argv[n] = NULL;
        fflush(stdout);
        int rc = kf_cmd_audit((int)n, argv);
        fflush(stdout);
        _exit(rc);
    }
    close(fds[1]);
    FILE *fp = fdopen(fds[0], "r");
    char line[8192];
    int lines = 0;
    while (fgets(line, sizeof(line), fp)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        CHECK(j != NULL, "CLI printed a non-JSON line: %s", line);
        json_decref(j);
        lines++;
    }
    fclose(fp);
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    return lines;
}

/* ---- fake engine for the partial-failure scenario ----------------------------------------- */

static struct {
    pthread_mutex_t mu;
    json_t *bulks;              /* array of arrays of _id, one per _bulk request */
    int committed_before_retry; /* group offsets seen committed when the retry arrived */
} F = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct fbody {
    char *data;
    size_t len;
} fbody_t;

static enum MHD_Result
fake_reply(struct MHD_Connection *c, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
fake_request(void *cls,
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
        *con_cls = calloc(1, sizeof(fbody_t));
        return MHD_YES;
    }
    fbody_t *b = *con_cls;
    if (*upload_size) {
        b->data = realloc(b->data, b->len + *upload_size + 1);
        memcpy(b->data + b->len, upload_data, *upload_size);
        b->len += *upload_size;
        b->data[b->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(method, "PUT") && strstr(url, "/_index_template/"))
        return fake_reply(c, 200, json_pack("{sb}", "acknowledged", 1));
    if (!strcmp(method, "POST") && strstr(url, "/_bulk")) {
        /* NDJSON: action line, source line, ... */
        json_t *ids = json_array();
        json_t *items = json_array();
        pthread_mutex_lock(&F.mu);
        int first = json_array_size(F.bulks) == 0;
        char *save = NULL;
        int line = 0;
        for (char *l = strtok_r(b->data ? b->data : "", "\n", &save); l;
             l = strtok_r(NULL, "\n", &save), line++) {
            if (line % 2)
                continue;
            json_t *a = json_loads(l, 0, NULL);
            const char *id =
                json_string_value(json_object_get(json_object_get(a, "create"), "_id"));
            size_t k = json_array_size(ids);
            json_array_append_new(ids, json_string(id ? id : ""));
            int status = first && k == 0 ? 429 : first && k == 1 ? 400 : 201;
            json_t *res =
                json_pack("{ss ss si}", "_index", "x", "_id", id ? id : "", "status", status);
            if (status == 429)
                json_object_set_new(res, "error",
                                    json_pack("{ss ss}", "type", "es_rejected_execution_exception",
                                              "reason", "queue full"));
            if (status == 400)
                json_object_set_new(res, "error",
                                    json_pack("{ss ss}", "type", "mapper_parsing_exception",
                                              "reason", "bad field"));
            json_array_append_new(items, json_pack("{so}", "create", res));
            json_decref(a);
        }
        json_array_append_new(F.bulks, ids);
        pthread_mutex_unlock(&F.mu);
        return fake_reply(c, 200,
                          json_pack("{si sb so}", "took", 1, "errors", first, "items", items));
    }
    return fake_reply(c, 404, json_pack("{s{ss ss}}", "error", "type", "not_found", "reason", url));
}

static void
fake_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    fbody_t *b = *con_cls;
    if (b) {
        free(b->data);
        free(b);
    }
    *con_cls = NULL;
}

/* Sum of the group's committed offsets on `topic` (partitions 0..2); -1 on error. */
static int64_t
committed_sum(const char *brokers, const char *group, const char *topic)
{
    char err[256];
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    rd_kafka_conf_set(rc, "bootstrap.servers", brokers, err, sizeof(err));
    rd_kafka_conf_set(rc, "group.id", group, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, err, sizeof(err));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    int64_t sum = -1;
    if (rd_kafka_committed(rk, l, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        sum = 0;
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].offset > 0)
                sum += l->elems[i].offset;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return sum;
}

static int
scenario_partial(const char *brokers)
{
    enum { M = 10 };
    char err[512];
    F.bulks = json_array();
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *mhd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, fake_request, NULL, MHD_OPTION_SOCK_ADDR, &sin,
                         MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL, MHD_OPTION_END);
    if (!mhd)
        DIE("fake engine");
    char surl[64];
    snprintf(surl, sizeof(surl), "http://127.0.0.1:%d",
             MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT)->port);
    char tag[64], topic[128], group[128];
    snprintf(tag, sizeof(tag), "%d-%lld", (int)getpid(), (long long)(kf_now_ms() % 1000000));
    snprintf(topic, sizeof(topic), "kf-it-au-%s.partial", tag);
    snprintf(group, sizeof(group), "kf-it-au-%s.pgroup", tag);
    kf_conf_t *conf = kf_conf_new();
    if (kf_auditor_conf_register(conf, err, sizeof(err)) != KF_OK)
        DIE("register: %s", err);
    const char *sets[][2] = {
        {"search.url", surl},
        {"topics.audit", topic},
        {"audit.group.id", group},
        {"audit.bulk.max", "50"},
        {"audit.bulk.linger", "1s"},
        {"audit.retry.backoff", "1500ms"},
        {"kafka.bootstrap.servers", brokers},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        if (kf_conf_set(conf, sets[i][0], sets[i][1], err, sizeof(err)) != KF_OK)
            DIE("set %s: %s", sets[i][0], err);
    runner_t r = {0};
    if (kf_auditor_new(conf, &r.a, err, sizeof(err)) != KF_OK)
        DIE("auditor: %s", err);
    kf_producer_t *prod;
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", brokers}};
    if (kf_producer_new(kv, 1, &prod, err, sizeof(err)) != KF_OK)
        DIE("producer: %s", err);
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_AUDIT_EVENT);
    /* One partition (fixed key) so the bulk order is the produce order. */
    for (int i = 0; i < M; i++) {
        char id[37];
        kf_uuid4(id);
        json_t *ev = json_pack("{ss sI ss ss ss}", "event_id", id, "ts", (json_int_t)kf_now_ms(),
                               "action", "request.accepted", "outcome", "success", "stage", "api");
        unsigned char *buf;
        size_t len;
        if (kf_avro_encode_json(schema, ev, &buf, &len, err, sizeof(err)) != KF_OK)
            DIE("encode: %s", err);
        kf_kafka_msg_t m = {.topic = topic,
                            .partition = 0,
                            .key = "k",
                            .key_len = 1,
                            .value = buf,
                            .value_len = len};
        if (kf_producer_send(prod, &m, NULL, err, sizeof(err)) != KF_OK)
            DIE("produce: %s", err);
        free(buf);
        json_decref(ev);
    }
    pthread_create(&r.th, NULL, runner_main, &r);
    /* While the 429 item waits for its retry (backoff 1.5 s), nothing may be committed. */
    int64_t end = kf_now_ms() + 60000;
    kf_auditor_stats_t st;
    do {
        usleep(50 * 1000);
        kf_auditor_get_stats(r.a, &st);
    } while (st.retried < 1 && kf_now_ms() < end);
    int64_t mid = st.bulks == 0 ? committed_sum(brokers, group, topic) : -2;
    do {
        usleep(100 * 1000);
        kf_auditor_get_stats(r.a, &st);
    } while (st.bulks < 1 && kf_now_ms() < end);
    r.stop = 1;
    pthread_join(r.th, NULL);
    kf_auditor_destroy(r.a);
    int64_t after = committed_sum(brokers, group, topic);

    pthread_mutex_lock(&F.mu);
    size_t nb = json_array_size(F.bulks);
    json_t *b0 = json_array_get(F.bulks, 0), *b1 = json_array_get(F.bulks, 1);
    CHECK(nb == 2, "%zu bulk requests, want 2", nb);
    CHECK(json_array_size(b0) == M, "first bulk %zu items", json_array_size(b0));
    CHECK(json_array_size(b1) == 1, "second bulk %zu items, want only the 429 one",
          json_array_size(b1));
    CHECK(json_equal(json_array_get(b1, 0), json_array_get(b0, 0)), "the retried item");
    pthread_mutex_unlock(&F.mu);
    CHECK(st.indexed == M - 1, "indexed %llu", (unsigned long long)st.indexed);
    CHECK(st.retried == 1, "retried %llu", (unsigned long long)st.retried);
    CHECK(st.dead_lettered == 1, "dead-lettered %llu (the 400 item)",
          (unsigned long long)st.dead_lettered);
    CHECK(mid == 0, "offsets committed before the bulk finished: %lld", (long long)mid);
    CHECK(after == M, "committed %lld after the bulk, want %d", (long long)after, M);
    kf_producer_destroy(prod);
    kf_conf_destroy(conf);
    MHD_stop_daemon(mhd);
    json_decref(F.bulks);
    printf("partial: %s (%d failures)\n", g_failures ? "FAILED" : "ok", g_failures);
    return g_failures ? 1 : 0;
}

int
main(int argc, char **argv)
{
    const char *brokers = getenv("KINFER_KAFKA_BROKERS");
    const char *surl = getenv("KINFER_SEARCH_URL");
    if (!brokers || !*brokers) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set\n");
        return 77;
    }
    if (argc > 1 && !strcmp(argv[1], "partial"))
        return scenario_partial(brokers);
    if (!surl || !*surl) {
        printf("SKIP: KINFER_SEARCH_URL is not set\n");
        return 77;
    }
    char err[512];
    int64_t now = kf_now_ms();
    char tag[64], topic[128], dlq[140], group[128], prefix[128], pattern[140], tpl[128];
    snprintf(tag, sizeof(tag), "%d-%lld", (int)getpid(), (long long)(now % 1000000));
    snprintf(topic, sizeof(topic), "kf-it-au-%s.audit", tag);
    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    snprintf(group, sizeof(group), "kf-it-au-%s.group", tag);
    snprintf(prefix, sizeof(prefix), "kf-it-audit-%s-", tag);
    snprintf(pattern, sizeof(pattern), "%s*", prefix);
    snprintf(tpl, sizeof(tpl), "kf-it-audit-%s", tag);

    kf_conf_t *conf = kf_conf_new();
    if (kf_auditor_conf_register(conf, err, sizeof(err)) != KF_OK)
        DIE("register: %s", err);
    const char *sets[][2] = {
        {"search.url", surl},           {"topics.audit", topic},
        {"audit.group.id", group},      {"audit.index.prefix", prefix},
        {"audit.template.name", tpl},   {"audit.bulk.max", "50"},
        {"audit.bulk.linger", "200ms"}, {"kafka.bootstrap.servers", brokers},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        if (kf_conf_set(conf, sets[i][0], sets[i][1], err, sizeof(err)) != KF_OK)
            DIE("set %s: %s", sets[i][0], err);

    runner_t r = {0};
    if (kf_auditor_new(conf, &r.a, err, sizeof(err)) != KF_OK)
        DIE("auditor: %s", err);
    pthread_create(&r.th, NULL, runner_main, &r);

    kf_producer_t *prod;
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", brokers}};
    if (kf_producer_new(kv, 1, &prod, err, sizeof(err)) != KF_OK)
        DIE("producer: %s", err);

    /* N events: request r<i%3>, action a<i%2>, half yesterday; every 4th mentions "bravo". */
    static unsigned char *bufs[N];
    static size_t lens[N];
    char rids[3][37];
    for (int i = 0; i < 3; i++)
        kf_uuid4(rids[i]);
    const char *actions[2] = {"callback.delivered", "inference.completed"};
    int per_rid[3] = {0}, per_action[2] = {0}, bravo = 0, yesterday = 0, r0_a0 = 0;
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_AUDIT_EVENT);
    for (int i = 0; i < N; i++) {
        char id[37];
        kf_uuid4(id);
        int old = i % 2 == 1;
        int has_bravo = i % 4 == 0;
        json_t *ev = json_pack(
            "{ss sI ss ss ss ss ss sf ss s{ss}}", "event_id", id, "ts",
            (json_int_t)(now - (old ? 86400000 : 0) - i), "action", actions[(i / 2) % 2], "outcome",
            "success", "request_id", rids[i % 3], "tenant_id", "tenant-a", "stage", "dispatch",
            "duration_ms", 1.5, "message", has_bravo ? "alpha bravo delivered" : "alpha charlie",
            "attributes", "attempt", "1");
        if (kf_avro_encode_json(schema, ev, &bufs[i], &lens[i], err, sizeof(err)) != KF_OK)
            DIE("encode: %s", err);
        json_decref(ev);
        per_rid[i % 3]++;
        per_action[(i / 2) % 2]++;
        bravo += has_bravo;
        yesterday += old;
        r0_a0 += i % 3 == 0 && (i / 2) % 2 == 0;
        kf_kafka_msg_t m = {.topic = topic,
                            .partition = KF_KAFKA_PARTITION_ANY,
                            .key = rids[i % 3],
                            .key_len = 36,
                            .value = bufs[i],
                            .value_len = lens[i]};
        if (kf_producer_send_async(prod, &m, NULL, NULL, err, sizeof(err)) != KF_OK)
            DIE("produce: %s", err);
    }
    kf_kafka_msg_t poison = {.topic = topic,
                             .partition = KF_KAFKA_PARTITION_ANY,
                             .value = "\xc3\x01garbage",
                             .value_len = 9};
    if (kf_producer_send(prod, &poison, NULL, err, sizeof(err)) != KF_OK)
        DIE("produce poison: %s", err);
    kf_producer_flush(prod, 10000, err, sizeof(err));

    kf_search_opts_t so;
    kf_search_opts_from_conf(conf, &so);
    kf_search_t *s;
    if (kf_search_new(&so, &s, err, sizeof(err)) != KF_OK)
        DIE("search: %s", err);
    kf_auditor_stats_t st;
    int64_t end = kf_now_ms() + 90000;
    do {
        usleep(200 * 1000);
        kf_auditor_get_stats(r.a, &st);
    } while (st.indexed + st.duplicates < N && kf_now_ms() < end);
    CHECK(st.indexed == N, "indexed %llu, want %d", (unsigned long long)st.indexed, N);
    int64_t c = count_all(s, pattern);
    CHECK(c == N, "documents %lld, want %d", (long long)c, N);

    /* Redelivery: the very same records again. */
    for (int i = 0; i < N; i++) {
        kf_kafka_msg_t m = {.topic = topic,
                            .partition = KF_KAFKA_PARTITION_ANY,
                            .key = rids[i % 3],
                            .key_len = 36,
                            .value = bufs[i],
                            .value_len = lens[i]};
        if (kf_producer_send_async(prod, &m, NULL, NULL, err, sizeof(err)) != KF_OK)
            DIE("produce: %s", err);
    }
    kf_producer_flush(prod, 10000, err, sizeof(err));
    end = kf_now_ms() + 90000;
    do {
        usleep(200 * 1000);
        kf_auditor_get_stats(r.a, &st);
    } while (st.duplicates < N && kf_now_ms() < end);
    CHECK(st.duplicates == N, "duplicates %llu, want %d", (unsigned long long)st.duplicates, N);
    c = count_all(s, pattern);
    CHECK(c == N, "after redelivery: documents %lld, want %d", (long long)c, N);
    CHECK(st.dead_lettered == 1, "dead-lettered %llu, want 1",
          (unsigned long long)st.dead_lettered);

    r.stop = 1;
    pthread_join(r.th, NULL);
    kf_auditor_destroy(r.a);

    /* Two daily indexes. */
    char day[2][256];
    for (int k = 0; k < 2; k++) {
        json_t *ev = json_pack("{ss sI ss ss}", "event_id", "x", "ts",
                               (json_int_t)(now - (k ? 86400000 : 0)), "action", "a", "stage", "s");
        json_t *doc = NULL;
        kf_auditor_event_to_doc(ev, prefix, &doc, day[k], err, sizeof(err));
        json_decref(doc);
        json_decref(ev);
    }
    int64_t today_n = count_all(s, day[0]);
    CHECK(today_n == N - yesterday || strcmp(day[0], day[1]) == 0, "today's index has %lld",
          (long long)today_n);

    /* Searches with exact counts. */
    for (int i = 0; i < 3; i++) {
        kf_audit_query_t q = {.request_id = rids[i], .limit = 1000};
        CHECK(search_total(s, pattern, &q) == per_rid[i], "by request id %d", i);
    }
    for (int i = 0; i < 2; i++) {
        kf_audit_query_t q = {.action = actions[i], .limit = 1000};
        CHECK(search_total(s, pattern, &q) == per_action[i], "by action %s", actions[i]);
    }
    kf_audit_query_t qt = {.text = "bravo", .limit = 1000};
    CHECK(search_total(s, pattern, &qt) == bravo, "by text");
    kf_audit_query_t qt2 = {.text = "alpha bravo", .tenant_id = "tenant-a", .limit = 1000};
    CHECK(search_total(s, pattern, &qt2) == bravo, "by text, all words");
    kf_audit_query_t qt3 = {.text = "bravo charlie", .limit = 1000};
    CHECK(search_total(s, pattern, &qt3) == 0, "no event has both words");
    kf_audit_query_t qn = {.tenant_id = "tenant-b", .limit = 1000};
    CHECK(search_total(s, pattern, &qn) == 0, "other tenant");
    kf_audit_query_t qc = {.request_id = rids[0], .action = actions[0], .limit = 1000};
    CHECK(search_total(s, pattern, &qc) == r0_a0, "request and action");
    char since[32];
    snprintf(since, sizeof(since), "%lld", (long long)(now - 3600000));
    kf_audit_query_t qs = {.since = since, .limit = 1000};
    CHECK(search_total(s, pattern, &qs) == N - yesterday, "since an hour ago");
    kf_audit_query_t ql = {.limit = 7};
    char e2[256];
    int64_t total = -1;
    json_t *hits = NULL;
    CHECK(kf_auditor_search(s, pattern, &ql, &total, &hits, e2, sizeof(e2)) == KF_OK, "limit");
    CHECK(total == N && json_array_size(hits) == 7, "limit: total %lld, hits %zu", (long long)total,
          json_array_size(hits));
    json_decref(hits);

    /* The CLI, through its own configuration path (environment). */
    setenv("KINFER_AUDIT_INDEX_PREFIX", prefix, 1);
    const char *a1[] = {"--request-id", rids[1]};
    CHECK(cli_search_lines(a1, 2) == per_rid[1], "CLI by request id");
    const char *a2[] = {"--action", actions[1], "--limit", "5"};
    CHECK(cli_search_lines(a2, 4) == 5, "CLI limit");
    const char *a3[] = {"--text", "bravo"};
    CHECK(cli_search_lines(a3, 2) == bravo, "CLI text");

    /* The poison record is on the dead-letter topic with its reason. */
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    rd_kafka_conf_set(rc, "bootstrap.servers", brokers, err, sizeof(err));
    rd_kafka_conf_set(rc, "group.id", group, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, err, sizeof(err));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int p = 0; p < 3; p++)
        rd_kafka_topic_partition_list_add(l, dlq, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int ndlq = 0, has_reason = 0;
    int64_t idle = kf_now_ms();
    while (kf_now_ms() - idle < 2000) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err) {
            ndlq++;
            rd_kafka_headers_t *h = NULL;
            const void *v;
            size_t vs;
            if (rd_kafka_message_headers(m, &h) == 0 &&
                rd_kafka_header_get_last(h, "kf.error", &v, &vs) == 0 && vs > 0)
                has_reason = 1;
            idle = kf_now_ms();
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    CHECK(ndlq == 1 && has_reason, "dead letters %d (reason %d)", ndlq, has_reason);

    /* Clean up what this run created in the engine. */
    kf_search_delete_index(s, day[0], err, sizeof(err));
    if (strcmp(day[0], day[1]))
        kf_search_delete_index(s, day[1], err, sizeof(err));
    kf_search_delete_template(s, tpl, err, sizeof(err));
    kf_search_destroy(s);
    for (int i = 0; i < N; i++)
        free(bufs[i]);
    kf_producer_destroy(prod);
    kf_conf_destroy(conf);
    printf("audit: %s (%d failures)\n", g_failures ? "FAILED" : "ok", g_failures);
    return g_failures ? 1 : 0;
}
