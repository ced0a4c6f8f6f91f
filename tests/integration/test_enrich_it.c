/*
 * Integration test of `kinfer enrich` (consumers/kf_enrich.h) on the real stack: Kafka
 * (KINFER_KAFKA_BROKERS) and PostgreSQL (KINFER_PG_DSN); exit 77 when either is unset. Every
 * run uses its own topics and a scratch database migrated with sql/migrate.sh.
 *
 *   test_enrich_it flow MIGRATE_SH
 *       Ticks (one late, out of order) go to the market topic first; then requests: raw
 *       prompt, raw prompt with symbols, raw chat with symbols, customer+portfolio question,
 *       unknown customer, unknown symbol, foreign tenant's portfolio, a poison record, a
 *       risk_report (hook faked) and one whose hook says not found; later a risk_report with
 *       no hook. Checked for a read_committed reader: exactly one job per good request with
 *       the exact rendered prompt and lineage offsets, exactly one failed result per bad one
 *       with the reason, the poison record in the DLQ, requests.status, the audit events.
 *   test_enrich_it pg_outage MIGRATE_SH STACK_SCRIPT
 *       40 requests, PostgreSQL stopped for about 3 s after the first transaction committed
 *       (stack stop/start postgres: keep it short, the stack is shared), then every request
 *       must come out as exactly one job.
 */
#include "kf_avro.h"
#include "kf_enrich.h"
#include "kf_feed.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct it_rec {
    int32_t partition;
    int64_t offset;
    char *key;
    unsigned char *value;
    size_t value_len;
    int has_value;
    int64_t timestamp;
} it_rec_t;
int it_read_topic(const char *brokers, const char *topic, it_rec_t **out, char *err, size_t errsz);
void it_recs_free(it_rec_t *r, int n);
int it_produce_json(kf_producer_t *p,
                    const char *topic,
                    const char *schema,
                    const char *key,
                    const char *json,
                    char *err,
                    size_t errsz);

static int failures = 0;
#define CHECK(cond, ...)                                \
    do {                                                \
        if (!(cond)) {                                  \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                        \
            printf("\n");                               \
            failures++;                                 \
        }                                               \
    } while (0)

static const char *brokers, *dsn;
static char dbname[64], scratch_dsn[1024], prefix[96];
static char t_requests[160], t_market[160], t_jobs[160], t_results[160], t_audit[160], t_dlq[160];

static int
sql(PGconn *c, const char *q)
{
    PGresult *r = PQexec(c, q);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        printf("SQL failed: %s: %s\n", q, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static int
setup_db(const char *migrate)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        printf("FAIL: cannot connect: %s\n", PQerrorMessage(c));
        PQfinish(c);
        return 0;
    }
    char q[256];
    snprintf(q, sizeof(q), "CREATE DATABASE %s", dbname);
    int ok = sql(c, q);
    PQfinish(c);
    if (!ok)
        return 0;
    snprintf(scratch_dsn, sizeof(scratch_dsn), "%s dbname=%s", dsn, dbname);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s --quiet '%s'", migrate, scratch_dsn);
    if (system(cmd) != 0) {
        printf("FAIL: %s\n", cmd);
        return 0;
    }
    c = PQconnectdb(scratch_dsn);
    ok = PQstatus(c) == CONNECTION_OK &&
         sql(c, "INSERT INTO tenants (tenant_id, name, webhook_secret) VALUES "
                "('t1', 'Tenant One', 'whsec_dGVzdA=='), ('t2', 'Tenant Two', 'whsec_dGVzdA==')") &&
         sql(c, "INSERT INTO customers (customer_id, tenant_id, name, risk_profile) VALUES "
                "('C1', 't1', 'Alice Example', 'balanced'), ('C2', 't2', 'Bob Other', 'growth')") &&
         sql(c, "INSERT INTO instruments (symbol, name, asset_class, currency) VALUES "
                "('AAA', 'Alpha Corp', 'equity', 'USD'), ('BBB', 'Beta Bond', 'bond', 'EUR'), "
                "('CCC', 'Gamma Gold', 'commodity', 'USD')") &&
         sql(c, "INSERT INTO portfolios (portfolio_id, name, base_currency, customer_id, "
                "tenant_id) VALUES ('P1', 'Main', 'USD', 'C1', 't1'), "
                "('P2', 'Other', 'USD', 'C2', 't2')") &&
         sql(c, "INSERT INTO positions (portfolio_id, symbol, quantity, cost_basis) VALUES "
                "('P1', 'BBB', 20.25, 99), ('P1', 'AAA', 100, 10.5), ('P2', 'CCC', 1, 1)") &&
         sql(c, "INSERT INTO risk_limits (portfolio_id, metric, threshold) VALUES "
                "('P1', 'var_99_1d', 0.02), ('P1', 'max_weight_single', 0.25)");
    PQfinish(c);
    return ok;
}

static void
drop_db(void)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) == CONNECTION_OK) {
        char q[256];
        snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
        sql(c, q);
    }
    PQfinish(c);
}

/* Inserts the requests row the API would have written (status accepted). */
static void
insert_request(const char *rid, const char *tenant)
{
    PGconn *c = PQconnectdb(scratch_dsn);
    char q[512];
    snprintf(q, sizeof(q),
             "INSERT INTO requests (request_id, tenant_id, request) VALUES ('%s', '%s', '{}')", rid,
             tenant);
    sql(c, q);
    PQfinish(c);
}

static char *
request_status(const char *rid)
{
    static char status[32];
    PGconn *c = PQconnectdb(scratch_dsn);
    const char *params[] = {rid};
    PGresult *r = PQexecParams(c, "SELECT status FROM requests WHERE request_id = $1", 1, NULL,
                               params, NULL, NULL, 0);
    snprintf(status, sizeof(status), "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "(no row)");
    PQclear(r);
    PQfinish(c);
    return status;
}

static kf_err_t
enrich_new(kf_enrich_t **out, int batch_max, const char *extra_key, const char *extra_val)
{
    kf_conf_t *conf = kf_conf_new();
    char err[1024], tid[160];
    kf_err_t e = kf_enrich_conf_register(conf, err, sizeof(err));
    snprintf(tid, sizeof(tid), "%s.enrich", prefix);
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", batch_max);
    const char *kv[][2] = {
        {"kafka.bootstrap.servers", brokers},
        {"pg.dsn", scratch_dsn},
        {"topics.requests", t_requests},
        {"topics.market", t_market},
        {"topics.jobs", t_jobs},
        {"topics.results", t_results},
        {"topics.audit", t_audit},
        {"enrich.group.id", tid},
        {"enrich.transactional.id", tid},
        {"enrich.batch.max", batch},
        {"pg.retry.deadline", "1s"},
        {"pg.reconnect.backoff.max", "500ms"},
        {"pg.connect.timeout", "2s"},
        {extra_key, extra_val},
    };
    for (size_t i = 0; !e && i < sizeof(kv) / sizeof(kv[0]); i++)
        if (kv[i][0])
            e = kf_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err));
    if (!e)
        e = kf_enrich_new(conf, out, err, sizeof(err));
    if (e)
        printf("enrich_new: %s\n", err);
    kf_conf_destroy(conf);
    return e;
}

/* Polls until `want` requests have been committed (jobs + failed + dead letters). */
static void
poll_until(kf_enrich_t *en, uint64_t want, int max_polls)
{
    char err[1024];
    for (int i = 0; i < max_polls; i++) {
        kf_enrich_stats_t st;
        kf_enrich_get_stats(en, &st);
        if (st.jobs + st.failed + st.dead_letter >= want)
            return;
        kf_err_t e = kf_enrich_poll(en, 500, NULL, err, sizeof(err));
        CHECK(e == KF_OK, "kf_enrich_poll: %s", err);
        if (e)
            return;
    }
}

/* Fake risk hook: metrics for as_of 2026-10-30, "not found" for 1999-01-01. */
static kf_err_t
fake_risk(void *opaque,
          kf_pg_t *pg,
          const char *portfolio_id,
          const char *as_of,
          json_t **out,
          char *errstr,
          size_t errstr_size)
{
    (void)opaque;
    (void)pg;
    if (!strcmp(as_of, "1999-01-01"))
        return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                          "no prices for portfolio %s as of %s", portfolio_id, as_of);
    *out = json_pack("{s:s, s:f}", "portfolio_id", portfolio_id, "value", 1234.5);
    return KF_OK;
}

/* Decoded records of a topic as JSON, by key. */
typedef struct it_json {
    char *key;
    json_t *json;
    int32_t partition;
    int64_t offset;
} it_json_t;

static int
read_json(const char *topic, const char *schema, it_json_t **out)
{
    it_rec_t *recs = NULL;
    char err[512];
    int n = it_read_topic(brokers, topic, &recs, err, sizeof(err));
    CHECK(n >= 0, "read %s: %s", topic, err);
    if (n < 0)
        return 0;
    it_json_t *js = calloc((size_t)n + 1, sizeof(*js));
    for (int i = 0; i < n; i++) {
        js[i].key = recs[i].key ? strdup(recs[i].key) : NULL;
        js[i].partition = recs[i].partition;
        js[i].offset = recs[i].offset;
        if (schema &&
            kf_avro_decode_json(NULL, recs[i].value, recs[i].value_len, kf_avro_schema_get(schema),
                                &js[i].json, NULL, err, sizeof(err)))
            CHECK(0, "%s record %d undecodable: %s", topic, i, err);
    }
    it_recs_free(recs, n);
    *out = js;
    return n;
}

static void
free_json(it_json_t *js, int n)
{
    for (int i = 0; i < n; i++) {
        free(js[i].key);
        json_decref(js[i].json);
    }
    free(js);
}

static json_t *
find_one(it_json_t *js, int n, const char *key, int *out_count)
{
    json_t *found = NULL;
    int count = 0;
    for (int i = 0; i < n; i++)
        if (js[i].key && !strcmp(js[i].key, key)) {
            count++;
            found = js[i].json;
        }
    *out_count = count;
    return found;
}

static const char *
str(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "(null)";
}

/* ---- flow ------------------------------------------------------------------------------- */

#define T0 1793370600000LL /* 2026-10-30T14:30:00Z */

/* Request JSON with the required fields; `extra` is spliced in (starting with a comma). */
static void
req_json(char *buf, size_t size, const char *rid, const char *tenant, const char *extra)
{
    snprintf(buf, size,
             "{\"request_id\":\"%s\",\"tenant_id\":\"%s\",\"model\":\"tiny\","
             "\"accepted_at\":%lld,\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\"%s}",
             rid, tenant, (long long)T0, extra);
}

static int
run_flow(void)
{
    char err[1024], buf[2048];
    /* Market first: AAA twice plus a late tick (older event time, written last), BBB once
     * without quotes. The late AAA tick must not win. */
    char path[] = "/tmp/kf_enrich_itXXXXXX.csv";
    int fd = mkstemps(path, 4);
    FILE *fp = fdopen(fd, "w");
    fprintf(fp, "symbol,price,bid,ask,volume,event_time,source\n"
                "AAA,12,11.99,12.01,100,2026-10-30T14:30:00Z,it\n"
                "BBB,98.75,,,,2026-10-30T14:30:30Z,it\n"
                "AAA,12.5,12.49,12.51,300,2026-10-30T14:31:00Z,it\n"
                "AAA,11,10.99,11.01,50,2026-10-30T14:30:45Z,it\n");
    fclose(fp);
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", brokers}};
    kf_feed_opts_t fo = {.kafka = kv, .kafka_count = 1, .topic = t_market, .quiet = 1};
    FILE *in = fopen(path, "r");
    kf_feed_stats_t fst;
    CHECK(kf_feed_run(&fo, in, &fst, err, sizeof(err)) == KF_OK, "feed: %s", err);
    fclose(in);
    unlink(path);
    CHECK(fst.published == 4, "feed published %llu", (unsigned long long)fst.published);

    /* Where the winning ticks landed (independently of the enricher). */
    it_json_t *mk = NULL;
    int nm = read_json(t_market, KF_AVRO_MARKET_TICK, &mk);
    int aaa_part = -1, bbb_part = -1;
    long long aaa_off = -1, bbb_off = -1;
    for (int i = 0; i < nm; i++) {
        if (!strcmp(mk[i].key, "AAA") &&
            json_real_value(json_object_get(mk[i].json, "price")) == 12.5) {
            aaa_part = mk[i].partition;
            aaa_off = mk[i].offset;
        }
        if (!strcmp(mk[i].key, "BBB")) {
            bbb_part = mk[i].partition;
            bbb_off = mk[i].offset;
        }
    }
    free_json(mk, nm);
    CHECK(nm == 4 && aaa_off >= 0 && bbb_off >= 0, "market topic: %d records", nm);

    kf_enrich_t *en = NULL;
    if (enrich_new(&en, 4, NULL, NULL)) {
        failures++;
        return 1;
    }
    kf_enrich_set_risk_fn(en, fake_risk, NULL);
    kf_market_entry_t m;
    CHECK(kf_market_state_count(kf_enrich_market(en)) == 2, "market state holds %zu symbols",
          kf_market_state_count(kf_enrich_market(en)));
    CHECK(kf_market_state_get(kf_enrich_market(en), "AAA", &m) == KF_OK && m.price == 12.5 &&
              m.offset == aaa_off,
          "AAA in state: price %g offset %lld", m.price, (long long)m.offset);

    kf_producer_t *prod = NULL;
    CHECK(kf_producer_new(kv, 1, &prod, err, sizeof(err)) == KF_OK, "producer: %s", err);
    struct {
        const char *rid, *tenant, *extra;
    } reqs[] = {
        {"r-raw", "t1", ",\"prompt\":\"Say {{hello}} as is.\""},
        {"r-raw-sym", "t1", ",\"prompt\":\"Price?\",\"symbols\":[\"AAA\",\"CCC\"]"},
        {"r-chat", "t1",
         ",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
         "{\"role\":\"user\",\"content\":\"And BBB?\"},"
         "{\"role\":\"assistant\",\"content\":\"Which one?\"}],\"symbols\":[\"BBB\"]"},
        {"r-ctx", "t1",
         ",\"prompt\":\"How exposed am I?\",\"customer_id\":\"C1\",\"portfolio_id\":\"P1\","
         "\"symbols\":[\"CCC\"],\"metadata\":{\"k\":\"v\"},"
         "\"callback_url\":\"https://example.test/cb\""},
        {"r-nocust", "t1", ",\"prompt\":\"x\",\"customer_id\":\"NOPE\""},
        {"r-nosym", "t1", ",\"prompt\":\"x\",\"symbols\":[\"AAA\",\"ZZZ\",\"YYY\"]"},
        {"r-foreign", "t1", ",\"prompt\":\"x\",\"portfolio_id\":\"P2\""},
        {"r-risk", "t1",
         ",\"task\":\"risk_report\",\"risk\":{\"portfolio_id\":\"P1\",\"as_of\":\"2026-10-30\"}"},
        {"r-risk-nf", "t1",
         ",\"task\":\"risk_report\",\"risk\":{\"portfolio_id\":\"P1\",\"as_of\":\"1999-01-01\"}"},
        {"r-tenant", "t9", ",\"prompt\":\"x\""},
    };
    size_t nreq = sizeof(reqs) / sizeof(reqs[0]);
    for (size_t i = 0; i < nreq; i++) {
        insert_request(reqs[i].rid, strcmp(reqs[i].tenant, "t9") ? reqs[i].tenant : "t1");
        req_json(buf, sizeof(buf), reqs[i].rid, reqs[i].tenant, reqs[i].extra);
        CHECK(it_produce_json(prod, t_requests, KF_AVRO_INFERENCE_REQUEST, reqs[i].rid, buf, err,
                              sizeof(err)) == 0,
              "produce %s: %s", reqs[i].rid, err);
        if (i == 4) {
            /* A poison record in the middle of the stream. */
            kf_kafka_msg_t poison = {.topic = t_requests,
                                     .partition = KF_KAFKA_PARTITION_ANY,
                                     .key = "r-poison",
                                     .key_len = 8,
                                     .value = "not avro at all",
                                     .value_len = 15};
            CHECK(kf_producer_send(prod, &poison, NULL, err, sizeof(err)) == KF_OK, "poison: %s",
                  err);
        }
    }
    poll_until(en, nreq + 1, 200);
    kf_enrich_stats_t st;
    kf_enrich_get_stats(en, &st);
    CHECK(st.jobs == 5 && st.failed == 5 && st.dead_letter == 1,
          "stats: jobs %llu failed %llu dlq %llu", (unsigned long long)st.jobs,
          (unsigned long long)st.failed, (unsigned long long)st.dead_letter);

    /* Later: risk_report without a hook. */
    kf_enrich_set_risk_fn(en, NULL, NULL);
    req_json(buf, sizeof(buf), "r-risk-na", "t1",
             ",\"task\":\"risk_report\",\"risk\":{\"portfolio_id\":\"P1\"}");
    CHECK(it_produce_json(prod, t_requests, KF_AVRO_INFERENCE_REQUEST, "r-risk-na", buf, err,
                          sizeof(err)) == 0,
          "produce: %s", err);
    poll_until(en, nreq + 2, 100);
    kf_producer_destroy(prod);
    kf_enrich_destroy(en); /* flushes the audit events */

    /* Jobs, read_committed: exactly one per good request. */
    it_json_t *jobs = NULL;
    int nj = read_json(t_jobs, KF_AVRO_INFERENCE_JOB, &jobs);
    CHECK(nj == 5, "jobs topic holds %d records, want 5", nj);
    int cnt = 0;
    char want[2048];
    json_t *j = find_one(jobs, nj, "r-raw", &cnt);
    CHECK(cnt == 1 && j, "r-raw: %d jobs", cnt);
    if (j) {
        CHECK(!strcmp(str(j, "prompt_text"), "Say {{hello}} as is."), "r-raw prompt '%s'",
              str(j, "prompt_text"));
        CHECK(json_array_size(json_object_get(j, "lineage")) == 0, "r-raw lineage not empty");
        CHECK(json_array_size(json_object_get(j, "messages")) == 0, "r-raw messages");
        CHECK(!strcmp(str(j, "trace_id"), "0af7651916cd43dd8448eb211c80319c"), "trace_id");
        CHECK(json_integer_value(json_object_get(j, "accepted_at")) == T0, "accepted_at");
        CHECK(json_integer_value(json_object_get(j, "enriched_at")) > T0, "enriched_at");
    }
    char aaa_line[256];
    snprintf(aaa_line, sizeof(aaa_line),
             "- AAA: price 12.5, bid 12.49, ask 12.51, volume 300 at 2026-10-30T14:31:00.000Z");
    const char *bbb_line =
        "- BBB: price 98.75, bid n/a, ask n/a, volume 0 at 2026-10-30T14:30:30.000Z";
    j = find_one(jobs, nj, "r-raw-sym", &cnt);
    CHECK(cnt == 1 && j, "r-raw-sym: %d jobs", cnt);
    if (j) {
        snprintf(want, sizeof(want), "Price?\n\nLatest market data:\n%s\n- CCC: no market data",
                 aaa_line);
        CHECK(!strcmp(str(j, "prompt_text"), want), "r-raw-sym prompt:\n%s\nwant:\n%s",
              str(j, "prompt_text"), want);
        json_t *lin = json_object_get(j, "lineage");
        CHECK(json_array_size(lin) == 1, "r-raw-sym lineage size %zu", json_array_size(lin));
        json_t *l0 = json_array_get(lin, 0);
        CHECK(l0 && !strcmp(str(l0, "symbol"), "AAA") && !strcmp(str(l0, "topic"), t_market) &&
                  json_integer_value(json_object_get(l0, "partition")) == aaa_part &&
                  json_integer_value(json_object_get(l0, "offset")) == aaa_off &&
                  json_integer_value(json_object_get(l0, "event_time")) == T0 + 60000,
              "r-raw-sym lineage entry wrong");
    }
    j = find_one(jobs, nj, "r-chat", &cnt);
    CHECK(cnt == 1 && j, "r-chat: %d jobs", cnt);
    if (j) {
        json_t *msgs = json_object_get(j, "messages");
        CHECK(!strcmp(str(j, "prompt_text"), ""), "r-chat prompt_text not empty");
        CHECK(json_array_size(msgs) == 3, "r-chat has %zu messages", json_array_size(msgs));
        snprintf(want, sizeof(want), "And BBB?\n\nLatest market data:\n%s", bbb_line);
        CHECK(!strcmp(str(json_array_get(msgs, 1), "content"), want), "r-chat user content '%s'",
              str(json_array_get(msgs, 1), "content"));
        CHECK(!strcmp(str(json_array_get(msgs, 0), "content"), "Be brief.") &&
                  !strcmp(str(json_array_get(msgs, 2), "content"), "Which one?"),
              "r-chat other messages changed");
        json_t *l0 = json_array_get(json_object_get(j, "lineage"), 0);
        CHECK(l0 && json_integer_value(json_object_get(l0, "offset")) == bbb_off &&
                  json_integer_value(json_object_get(l0, "partition")) == bbb_part,
              "r-chat lineage");
    }
    j = find_one(jobs, nj, "r-ctx", &cnt);
    CHECK(cnt == 1 && j, "r-ctx: %d jobs", cnt);
    if (j) {
        snprintf(want, sizeof(want),
                 "You are a financial assistant for Tenant One. Answer using only the client "
                 "context below.\n"
                 "\n"
                 "Customer: Alice Example (C1), risk profile balanced\n"
                 "Portfolio: Main (P1), base currency USD\n"
                 "Positions:\n"
                 "- AAA (Alpha Corp, equity, USD): quantity 100, cost basis 10.5\n"
                 "- BBB (Beta Bond, bond, EUR): quantity 20.25, cost basis 99\n"
                 "Risk limits:\n"
                 "- max_weight_single: 0.25\n"
                 "- var_99_1d: 0.02\n"
                 "Latest market data:\n"
                 "- CCC: no market data\n"
                 "%s\n"
                 "%s\n"
                 "\n"
                 "Question: How exposed am I?",
                 aaa_line, bbb_line);
        CHECK(!strcmp(str(j, "prompt_text"), want), "r-ctx prompt:\n%s\nwant:\n%s",
              str(j, "prompt_text"), want);
        json_t *lin = json_object_get(j, "lineage");
        CHECK(json_array_size(lin) == 2, "r-ctx lineage size %zu", json_array_size(lin));
        CHECK(!strcmp(str(json_array_get(lin, 0), "symbol"), "AAA") &&
                  json_integer_value(json_object_get(json_array_get(lin, 0), "offset")) ==
                      aaa_off &&
                  !strcmp(str(json_array_get(lin, 1), "symbol"), "BBB") &&
                  json_integer_value(json_object_get(json_array_get(lin, 1), "offset")) == bbb_off,
              "r-ctx lineage entries");
        CHECK(!strcmp(str(json_object_get(j, "metadata"), "k"), "v"), "metadata not copied");
        CHECK(!strcmp(str(j, "callback_url"), "https://example.test/cb"), "callback_url");
        CHECK(!strcmp(str(j, "customer_id"), "C1") && !strcmp(str(j, "portfolio_id"), "P1"),
              "context ids");
    }
    j = find_one(jobs, nj, "r-risk", &cnt);
    CHECK(cnt == 1 && j, "r-risk: %d jobs", cnt);
    if (j) {
        const char *p = str(j, "prompt_text");
        CHECK(strstr(p, "You are a risk analyst for Tenant One.") == p, "r-risk start: %s", p);
        CHECK(strstr(p, "As of 2026-10-30; requested VaR confidence 0.99, horizon 1 day(s)\n"),
              "r-risk as-of line missing:\n%s", p);
        CHECK(strstr(p, "Risk metrics (JSON):\n{\n  \"portfolio_id\": \"P1\",\n  \"value\": "
                        "1234.5\n}\n\n"),
              "r-risk metrics missing:\n%s", p);
        CHECK(!strcmp(str(j, "task"), "risk_report"), "task");
    }
    free_json(jobs, nj);

    /* Failed results, one each, naming what is missing. */
    it_json_t *res = NULL;
    int nr = read_json(t_results, KF_AVRO_INFERENCE_RESULT, &res);
    CHECK(nr == 6, "results topic holds %d records, want 6", nr);
    struct {
        const char *rid, *error;
    } fails[] = {
        {"r-nocust", "unknown customer 'NOPE'"},
        {"r-nosym", "unknown symbols 'ZZZ', 'YYY'"},
        {"r-foreign", "unknown portfolio 'P2'"},
        {"r-risk-nf", "no prices for portfolio P1 as of 1999-01-01"},
        {"r-tenant", "unknown tenant 't9'"},
        {"r-risk-na", "risk_report not available in this build (risk module not linked)"},
    };
    for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++) {
        j = find_one(res, nr, fails[i].rid, &cnt);
        CHECK(cnt == 1 && j, "%s: %d results", fails[i].rid, cnt);
        if (!j)
            continue;
        CHECK(!strcmp(str(j, "status"), "failed"), "%s status %s", fails[i].rid, str(j, "status"));
        CHECK(!strcmp(str(j, "error"), fails[i].error), "%s error '%s', want '%s'", fails[i].rid,
              str(j, "error"), fails[i].error);
        CHECK(!strcmp(str(j, "model"), "tiny"), "%s model", fails[i].rid);
    }
    free_json(res, nr);

    /* The poison record, dead-lettered with its reason. */
    it_rec_t *dl = NULL;
    int nd = it_read_topic(brokers, t_dlq, &dl, err, sizeof(err));
    CHECK(nd == 1, "dlq holds %d records, want 1 (%s)", nd, nd < 0 ? err : "");
    if (nd == 1)
        CHECK(dl[0].key && !strcmp(dl[0].key, "r-poison") && dl[0].value_len == 15 &&
                  !memcmp(dl[0].value, "not avro at all", 15),
              "dlq record is not the poison record");
    if (nd > 0)
        it_recs_free(dl, nd);

    /* PostgreSQL status: enriched for jobs, untouched for failures. */
    const char *enriched[] = {"r-raw", "r-raw-sym", "r-chat", "r-ctx", "r-risk"};
    for (size_t i = 0; i < 5; i++)
        CHECK(!strcmp(request_status(enriched[i]), "enriched"), "%s status %s", enriched[i],
              request_status(enriched[i]));
    CHECK(!strcmp(request_status("r-nocust"), "accepted"), "r-nocust status %s",
          request_status("r-nocust"));

    /* Audit: one enrich.completed per job, one enrich.failed per failure, with durations. */
    it_json_t *au = NULL;
    int na = read_json(t_audit, KF_AVRO_AUDIT_EVENT, &au);
    int completed = 0, failed = 0, with_duration = 0;
    for (int i = 0; i < na; i++) {
        const char *action = str(au[i].json, "action");
        completed += !strcmp(action, "enrich.completed");
        failed += !strcmp(action, "enrich.failed");
        with_duration += json_is_number(json_object_get(au[i].json, "duration_ms"));
    }
    CHECK(completed == 5 && failed == 6 && na == 11, "audit: %d completed, %d failed, %d events",
          completed, failed, na);
    CHECK(with_duration == na, "audit events without duration: %d", na - with_duration);
    free_json(au, na);
    return failures ? 1 : 0;
}

/* ---- PostgreSQL outage ------------------------------------------------------------------ */

static int
stack(const char *script, const char *verb)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "'%s' %s postgres >/dev/null 2>&1", script, verb);
    int st = system(cmd);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int
run_outage(const char *script)
{
    enum { N = 40 };
    char err[1024], buf[1024], rid[64];
    kf_enrich_t *en = NULL;
    if (enrich_new(&en, 5, NULL, NULL)) {
        failures++;
        return 1;
    }
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", brokers}};
    kf_producer_t *prod = NULL;
    CHECK(kf_producer_new(kv, 1, &prod, err, sizeof(err)) == KF_OK, "producer: %s", err);
    for (int i = 0; i < N; i++) {
        snprintf(rid, sizeof(rid), "o-%03d", i);
        req_json(buf, sizeof(buf), rid, "t1", ",\"prompt\":\"hello\"");
        CHECK(it_produce_json(prod, t_requests, KF_AVRO_INFERENCE_REQUEST, rid, buf, err,
                              sizeof(err)) == 0,
              "produce: %s", err);
    }
    kf_producer_destroy(prod);

    /* One committed transaction first, so the outage hits mid-stream. */
    size_t committed = 0;
    for (int i = 0; i < 100 && committed == 0; i++)
        CHECK(kf_enrich_poll(en, 500, &committed, err, sizeof(err)) == KF_OK, "poll: %s", err);
    CHECK(committed > 0 && committed < N, "first transaction committed %zu", committed);
    if (!stack(script, "stop")) {
        printf("FAIL: stack stop postgres\n");
        kf_enrich_destroy(en);
        stack(script, "start");
        return 1;
    }
    time_t stopped = time(NULL);
    /* Keep polling while it is down: transactions abort and nothing is committed. */
    kf_enrich_stats_t before, after;
    kf_enrich_get_stats(en, &before);
    while (time(NULL) - stopped < 3) {
        size_t c = 0;
        CHECK(kf_enrich_poll(en, 200, &c, err, sizeof(err)) == KF_OK, "poll: %s", err);
    }
    int started = stack(script, "start");
    CHECK(started, "stack start postgres failed: RESTART IT BY HAND");
    kf_enrich_get_stats(en, &after);
    CHECK(after.retries > before.retries, "no batch was retried during the outage");
    CHECK(after.jobs == before.jobs, "jobs committed while PostgreSQL was down: %llu -> %llu",
          (unsigned long long)before.jobs, (unsigned long long)after.jobs);
    poll_until(en, N, 400);
    kf_enrich_get_stats(en, &after);
    CHECK(after.jobs == N && after.failed == 0 && after.dead_letter == 0,
          "after the outage: jobs %llu failed %llu dlq %llu", (unsigned long long)after.jobs,
          (unsigned long long)after.failed, (unsigned long long)after.dead_letter);
    printf("outage: %llu batch retries while PostgreSQL was down\n",
           (unsigned long long)(after.retries - before.retries));
    kf_enrich_destroy(en);

    /* Exactly once for a read_committed reader: N distinct ids, each once. */
    it_json_t *jobs = NULL;
    int nj = read_json(t_jobs, KF_AVRO_INFERENCE_JOB, &jobs);
    CHECK(nj == N, "jobs topic holds %d records, want %d", nj, N);
    for (int i = 0; i < N; i++) {
        snprintf(rid, sizeof(rid), "o-%03d", i);
        int cnt = 0;
        json_t *j = find_one(jobs, nj, rid, &cnt);
        CHECK(cnt == 1, "%s appears %d times", rid, cnt);
        if (j)
            CHECK(!strcmp(str(j, "prompt_text"), "hello"), "%s prompt", rid);
    }
    free_json(jobs, nj);
    for (int i = 0; i < N; i++) {
        snprintf(rid, sizeof(rid), "o-%03d", i);
        CHECK(!strcmp(request_status(rid), "(no row)"), "%s has a row", rid);
    }
    return failures ? 1 : 0;
}

int
main(int argc, char **argv)
{
    brokers = getenv("KINFER_KAFKA_BROKERS");
    dsn = getenv("KINFER_PG_DSN");
    if (!brokers || !*brokers || !dsn || !*dsn) {
        printf("SKIP: %s is not set (eval \"$(deploy/local/stack env)\")\n",
               !brokers || !*brokers ? "KINFER_KAFKA_BROKERS" : "KINFER_PG_DSN");
        return 77;
    }
    if (argc < 3) {
        printf("usage: test_enrich_it flow|pg_outage MIGRATE_SH [STACK_SCRIPT]\n");
        return 2;
    }
    const char *mode = argv[1];
    const char *script = argc > 3 ? argv[3] : NULL;
    if (!strcmp(mode, "pg_outage") && (!script || access(script, X_OK) != 0)) {
        printf("SKIP: no executable stack script to stop/start postgres\n");
        return 77;
    }
    long tag = (long)getpid() * 1000 + (long)(time(NULL) % 1000);
    snprintf(dbname, sizeof(dbname), "kf_test_enrich_%ld", tag);
    snprintf(prefix, sizeof(prefix), "kf.it.enrich.%s.%ld", mode, tag);
    snprintf(t_requests, sizeof(t_requests), "%s.requests", prefix);
    snprintf(t_market, sizeof(t_market), "%s.market", prefix);
    snprintf(t_jobs, sizeof(t_jobs), "%s.jobs", prefix);
    snprintf(t_results, sizeof(t_results), "%s.results", prefix);
    snprintf(t_audit, sizeof(t_audit), "%s.audit", prefix);
    snprintf(t_dlq, sizeof(t_dlq), "%s.requests.dlq", prefix);
    if (!setup_db(argv[2])) {
        drop_db();
        return 1;
    }
    int rc = !strcmp(mode, "flow") ? run_flow() : run_outage(script);
    drop_db();
    if (rc || failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("OK: %s\n", mode);
    return 0;
}
