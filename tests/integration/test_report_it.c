/*
 * test_report_it.c: `kinfer report` end to end on the local stack's real Kafka and
 * PostgreSQL, and its reproducibility.
 *
 * Setup: a scratch database (sql/migrate.sh + `kinfer sample-data`, tenants added), unique
 * topics, three market ticks for symbols of P001, a tiny generated qwen2 model. Stages: the
 * enricher in-process (kf_enrich_new with the risk hook set to kf_risk_db_load +
 * kf_risk_compute, exactly what consumers/enrich_risk.c does when the risk module is linked
 * in), the dispatcher in-process (kf_dispatch_run), one `kinfer infer` worker subprocess.
 *
 * Checks:
 *   1. kf_report_run for P001, P002 and NOPE: two reports written (json, md, html), NOPE fails
 *      as an unknown portfolio; documents carry the narrative, model SHA-256, seed, the market
 *      lineage with the offsets the ticks were written at; headline = metrics hist 99 1d.
 *   2. The same batch again (same as-of, model, seed, greedy): byte-identical metrics and
 *      narrative, equal digests, different request ids.
 *   3. `kinfer report get <request id>` re-renders the stored result (dispatcher -> PostgreSQL)
 *      with the same digest; the CLI `report run` exits 1 when a portfolio fails.
 *
 * Exit 77 (SKIP) without KINFER_KAFKA_BROKERS / KINFER_PG_DSN or the tokenizer vocabulary.
 */
#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_dispatch.h"
#include "kf_enrich.h"
#include "kf_json.h"
#include "kf_kafka.h"
#include "kf_report.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

int kf_cmd_sample_data(int argc, char **argv);

static char g_prefix[96], g_db[64], g_dsn[1024], g_model[256], g_wconf[256];
static const char *g_brokers, *g_base_dsn, *g_kinfer;
static pid_t g_worker;
static int g_db_created;

/* ---- PostgreSQL ------------------------------------------------------------------------- */

static void
sql(const char *dsn, const char *q)
{
    PGconn *c = PQconnectdb(dsn);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, q);
    REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s",
            q, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* First column of the rows of q, joined by ','. */
static void
sql_list(const char *q, char *out, size_t size)
{
    PGconn *c = PQconnectdb(g_dsn);
    REQUIRE(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, q);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", q, PQerrorMessage(c));
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
    PQclear(r);
    PQfinish(c);
}

static void
drop_db(void)
{
    char q[256];
    snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_db);
    sql(g_base_dsn, q);
    g_db_created = 0;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- stages ----------------------------------------------------------------------------- */

/* The risk hook, as consumers/enrich_risk.c builds it when linked with the risk module. */
static kf_err_t
risk_hook(void *opaque,
          kf_pg_t *pg,
          const char *portfolio_id,
          const char *as_of,
          json_t **out_metrics,
          char *errstr,
          size_t errstr_size)
{
    (void)opaque;
    int32_t day;
    kf_risk_input_t *in = NULL;
    kf_risk_report_t *rep = NULL;
    if (kf_risk_date_parse(as_of, &day, errstr, errstr_size))
        return KF_ERR_INVALID_ARG;
    kf_risk_opts_t opts = KF_RISK_OPTS_INIT;
    opts.as_of = day;
    kf_err_t err = kf_risk_db_load(pg, portfolio_id, day, 0, &in, errstr, errstr_size);
    if (!err)
        err = kf_risk_compute(in, &opts, &rep, errstr, errstr_size);
    kf_risk_input_destroy(in);
    if (!err && !(*out_metrics = kf_risk_report_to_json(rep, 0)))
        err = KF_ERR_NOMEM;
    kf_risk_report_destroy(rep);
    return err;
}

static kf_conf_t *
stage_conf(kf_err_t (*reg)(kf_conf_t *, char *, size_t), const char *const *kv)
{
    char e[512];
    kf_conf_t *conf = kf_conf_new();
    REQUIRE(reg(conf, e, sizeof(e)) == KF_OK, "%s", e);
    for (size_t i = 0; kv[i]; i += 2)
        REQUIRE(kf_conf_set(conf, kv[i], kv[i + 1], e, sizeof(e)) == KF_OK, "%s", e);
    return conf;
}

static void *
enrich_thread(void *arg)
{
    char e[512];
    kf_err_t err = kf_enrich_run(arg, e, sizeof(e));
    if (err)
        fprintf(stderr, "enrich stopped: %s\n", e);
    return NULL;
}

static volatile sig_atomic_t g_dispatch_stop;

static void *
dispatch_thread(void *arg)
{
    char e[512];
    kf_err_t err = kf_dispatch_run(arg, &g_dispatch_stop, e, sizeof(e));
    if (err)
        fprintf(stderr, "dispatch stopped: %s\n", e);
    return NULL;
}

static pid_t
start_worker(void)
{
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        execl(g_kinfer, g_kinfer, "infer", "--config", g_wconf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void
stop_worker(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 600; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* On a failed REQUIRE (exit 1): no worker process or scratch database is left behind. */
static void
cleanup_at_exit(void)
{
    if (g_worker > 0)
        stop_worker(g_worker);
    g_worker = 0;
    if (g_db_created) {
        char q[256];
        snprintf(q, sizeof(q), "DROP DATABASE IF EXISTS %s WITH (FORCE)", g_db);
        PGconn *c = PQconnectdb(g_base_dsn);
        if (PQstatus(c) == CONNECTION_OK)
            PQclear(PQexec(c, q));
        PQfinish(c);
    }
}

/* ---- helpers ---------------------------------------------------------------------------- */

static json_t *
load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    REQUIRE(j, "%s: %s", path, je.text);
    return j;
}

static char *
canon(const json_t *j)
{
    kf_buf_t b;
    kf_buf_init(&b, 0);
    REQUIRE(kf_report_canonical_json(j, &b) == KF_OK, "canonical json");
    return kf_buf_steal(&b, NULL);
}

static char *
slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    REQUIRE(fp, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    REQUIRE(s && fread(s, 1, (size_t)n, fp) == (size_t)n, "read %s", path);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static void
run_batch(const char *const *pids, size_t n, const char *out_dir, kf_report_outcome_t **outs)
{
    const char *kv[] = {"topics.requests",
                        NULL,
                        "topics.results",
                        NULL,
                        "pg.dsn",
                        g_dsn,
                        "kafka.bootstrap.servers",
                        g_brokers,
                        "report.seed",
                        "7",
                        "report.max.tokens",
                        "16",
                        "report.model",
                        "tiny",
                        "report.timeout",
                        "240s",
                        NULL};
    char req[128], res[128];
    snprintf(req, sizeof(req), "%s.requests", g_prefix);
    snprintf(res, sizeof(res), "%s.results", g_prefix);
    kv[1] = req;
    kv[3] = res;
    kf_conf_t *conf = stage_conf(kf_report_conf_register, kv);
    kf_report_batch_t b = {
        .as_of = "2026-10-30", .portfolios = pids, .nportfolios = n, .out_dir = out_dir};
    size_t got = 0;
    char e[1024];
    kf_err_t err = kf_report_run(conf, &b, outs, &got, e, sizeof(e));
    REQUIRE(err == KF_OK, "kf_report_run: %s", e);
    REQUIRE(got == n, "outcomes %zu != %zu", got, n);
    kf_conf_destroy(conf);
}

int
main(int argc, char **argv)
{
    REQUIRE(argc == 4, "usage: test_report_it KINFER MIGRATE_SH VOCAB");
    g_kinfer = argv[1];
    g_brokers = getenv("KINFER_KAFKA_BROKERS");
    g_base_dsn = getenv("KINFER_PG_DSN");
    if (!g_brokers || !*g_brokers || !g_base_dsn || !*g_base_dsn) {
        printf("SKIP: needs KINFER_KAFKA_BROKERS and KINFER_PG_DSN (eval \"$(deploy/local/stack "
               "env)\")\n");
        return 77;
    }
    if (access(argv[3], R_OK) != 0) {
        printf("SKIP: no tokenizer vocabulary %s\n", argv[3]);
        return 77;
    }
    long tag = (long)getpid() * 1000 + (long)(time(NULL) % 1000);
    snprintf(g_prefix, sizeof(g_prefix), "kf-report-it-%ld", tag);
    snprintf(g_db, sizeof(g_db), "kf_test_report_%ld", tag);
    snprintf(g_dsn, sizeof(g_dsn), "%s dbname=%s", g_base_dsn, g_db);

    /* 1. Database: schema, sample data (seed 42), the two sample tenants. */
    char cmd[2048], q[512];
    snprintf(q, sizeof(q), "CREATE DATABASE %s", g_db);
    sql(g_base_dsn, q);
    g_db_created = 1;
    atexit(cleanup_at_exit);
    snprintf(cmd, sizeof(cmd), "%s --quiet '%s'", argv[2], g_dsn);
    REQUIRE(system(cmd) == 0, "%s failed", cmd);
    char *sd[] = {"sample-data", "--dsn", g_dsn, "--quiet", NULL};
    REQUIRE(kf_cmd_sample_data(4, sd) == 0, "sample-data failed");
    sql(g_dsn, "INSERT INTO tenants (tenant_id, name, webhook_secret) VALUES "
               "('sample-tenant-a', 'Sample A', 'whsec_dGVzdA=='), "
               "('sample-tenant-b', 'Sample B', 'whsec_dGVzdA==')");

    /* 2. Model: tiny, random, with a context that holds the risk prompt (~4k tokens). */
    snprintf(g_model, sizeof(g_model), "/tmp/%s.gguf", g_prefix);
    snprintf(cmd, sizeof(cmd),
             "%s model-gen --arch qwen2 --type q8_0 --vocab %s --out %s --n-embd 64 --n-layer 2 "
             "--n-head 4 --n-head-kv 2 --n-ff 128 --ctx 16384 --std 0.15 --seed 11 --quiet",
             g_kinfer, argv[3], g_model);
    REQUIRE(system(cmd) == 0, "%s failed", cmd);

    /* 3. Topics and three market ticks for P001's first symbols. */
    char t_req[128], t_market[128], t_jobs[128], t_res[128], t_audit[128], t_control[128],
        t_retry[128], t_cbdlq[128];
    snprintf(t_req, sizeof(t_req), "%s.requests", g_prefix);
    snprintf(t_market, sizeof(t_market), "%s.market", g_prefix);
    snprintf(t_jobs, sizeof(t_jobs), "%s.jobs", g_prefix);
    snprintf(t_res, sizeof(t_res), "%s.results", g_prefix);
    snprintf(t_audit, sizeof(t_audit), "%s.audit", g_prefix);
    snprintf(t_control, sizeof(t_control), "%s.control", g_prefix);
    snprintf(t_retry, sizeof(t_retry), "%s.retry", g_prefix);
    snprintf(t_cbdlq, sizeof(t_cbdlq), "%s.cbdlq", g_prefix);
    char e[1024];
    kf_kafka_kv_t pkv[] = {{"kafka.bootstrap.servers", g_brokers}};
    const char *mt[] = {t_market};
    REQUIRE(kf_kafka_create_topics(pkv, 1, mt, 1, 1, -1, 15000, e, sizeof(e)) == KF_OK, "%s", e);
    char syms[512];
    sql_list("SELECT symbol FROM positions WHERE portfolio_id = 'P001' ORDER BY symbol LIMIT 3",
             syms, sizeof(syms));
    kf_producer_t *producer = NULL;
    REQUIRE(kf_producer_new(pkv, 1, &producer, e, sizeof(e)) == KF_OK, "%s", e);
    int64_t tick_offsets[3] = {-1, -1, -1};
    char sym[3][40];
    int nsym = 0;
    for (char *s = strtok(syms, ","); s && nsym < 3; s = strtok(NULL, ","), nsym++) {
        snprintf(sym[nsym], sizeof(sym[nsym]), "%s", s);
        json_t *tick =
            json_pack("{s:s, s:f, s:I, s:s}", "symbol", s, "price", 100.0 + nsym, "event_time",
                      (json_int_t)1793370600000 + nsym * 1000, "source", "test");
        unsigned char *buf = NULL;
        size_t len = 0;
        REQUIRE(kf_avro_encode_json(kf_avro_schema_get(KF_AVRO_MARKET_TICK), tick, &buf, &len, e,
                                    sizeof(e)) == KF_OK,
                "%s", e);
        kf_kafka_msg_t msg = {.topic = t_market,
                              .partition = 0,
                              .key = s,
                              .key_len = strlen(s),
                              .value = buf,
                              .value_len = len};
        kf_kafka_delivery_t dr;
        REQUIRE(kf_producer_send(producer, &msg, &dr, e, sizeof(e)) == KF_OK, "%s", e);
        tick_offsets[nsym] = dr.offset;
        free(buf);
        json_decref(tick);
    }
    REQUIRE(nsym == 3, "P001 holds %d symbols", nsym);
    kf_producer_destroy(producer);

    /* 4. Stages. */
    char group[160], txn[160];
    snprintf(group, sizeof(group), "%s-enrich", g_prefix);
    snprintf(txn, sizeof(txn), "%s-enrich-txn", g_prefix);
    const char *ekv[] = {"topics.requests",
                         t_req,
                         "topics.market",
                         t_market,
                         "topics.jobs",
                         t_jobs,
                         "topics.results",
                         t_res,
                         "topics.audit",
                         t_audit,
                         "enrich.group.id",
                         group,
                         "enrich.transactional.id",
                         txn,
                         "pg.dsn",
                         g_dsn,
                         "kafka.bootstrap.servers",
                         g_brokers,
                         NULL};
    kf_conf_t *econf = stage_conf(kf_enrich_conf_register, ekv);
    kf_enrich_t *enr = NULL;
    REQUIRE(kf_enrich_new(econf, &enr, e, sizeof(e)) == KF_OK, "enrich: %s", e);
    kf_enrich_set_risk_fn(enr, risk_hook, NULL);
    pthread_t et, dt;
    REQUIRE(pthread_create(&et, NULL, enrich_thread, enr) == 0, "thread");

    char dgroup[160];
    snprintf(dgroup, sizeof(dgroup), "%s-dispatch", g_prefix);
    const char *dkv[] = {"topics.results",
                         t_res,
                         "topics.audit",
                         t_audit,
                         "topics.callbacks.retry",
                         t_retry,
                         "topics.callbacks.dlq",
                         t_cbdlq,
                         "dispatch.group.id",
                         dgroup,
                         "pg.dsn",
                         g_dsn,
                         "kafka.bootstrap.servers",
                         g_brokers,
                         NULL};
    kf_conf_t *dconf = stage_conf(kf_dispatch_conf_register, dkv);
    REQUIRE(pthread_create(&dt, NULL, dispatch_thread, dconf) == 0, "thread");

    snprintf(g_wconf, sizeof(g_wconf), "/tmp/%s.conf", g_prefix);
    FILE *fp = fopen(g_wconf, "w");
    REQUIRE(fp, "cannot write %s", g_wconf);
    fprintf(fp,
            "worker.model = %s\nworker.model.name = tiny\nworker.device = cpu\n"
            "worker.threads = 2\nworker.group.id = %s-g\nworker.transactional.id = %s-t\n"
            "worker.kv.mib = 64\nworker.commit.interval = 50ms\nworker.pg.status = false\n"
            "worker.shutdown.grace = 1s\ntopics.jobs = %s\ntopics.results = %s\n"
            "topics.control = %s\ntopics.audit = %s\nkafka.bootstrap.servers = %s\n"
            "log.level = warn\n",
            g_model, g_prefix, g_prefix, t_jobs, t_res, t_control, t_audit, g_brokers);
    fclose(fp);
    g_worker = start_worker();

    /* 5. Two batches: run1 with an unknown portfolio, run2 the same two again. */
    char out1[256], out2[256], out3[256];
    snprintf(out1, sizeof(out1), "/tmp/%s/run1", g_prefix);
    snprintf(out2, sizeof(out2), "/tmp/%s/run2", g_prefix);
    snprintf(out3, sizeof(out3), "/tmp/%s/run3", g_prefix);
    const char *p3[] = {"P001", "P002", "NOPE"};
    kf_report_outcome_t *o1 = NULL, *o2 = NULL;
    double t0 = now_s();
    run_batch(p3, 3, out1, &o1);
    fprintf(stderr, "run1: %.1f s\n", now_s() - t0);
    for (int i = 0; i < 3; i++)
        fprintf(stderr, "run1 %s ok=%d %s %s\n", o1[i].portfolio_id, o1[i].ok, o1[i].digest,
                o1[i].error);
    REQUIRE(o1[0].ok && o1[1].ok, "P001/P002 failed: %s / %s", o1[0].error, o1[1].error);
    REQUIRE(!o1[2].ok && strstr(o1[2].error, "unknown portfolio 'NOPE'"), "NOPE: %s", o1[2].error);
    t0 = now_s();
    run_batch(p3, 2, out2, &o2);
    fprintf(stderr, "run2: %.1f s\n", now_s() - t0);
    REQUIRE(o2[0].ok && o2[1].ok, "run2 failed: %s / %s", o2[0].error, o2[1].error);

    for (int i = 0; i < 2; i++) {
        const char *pid = p3[i];
        char path[512];
        snprintf(path, sizeof(path), "%s/%s-2026-10-30.json", out1, pid);
        json_t *a = load_json(path);
        snprintf(path, sizeof(path), "%s/%s-2026-10-30.json", out2, pid);
        json_t *b = load_json(path);
        /* Content checks on the first run. */
        REQUIRE(!strcmp(json_string_value(json_object_get(a, "status")), "completed"), "status");
        const char *text = json_string_value(kf_json_path(a, "narrative.text"));
        REQUIRE(text && *text, "%s: empty narrative", pid);
        REQUIRE(json_integer_value(kf_json_path(a, "narrative.completion_tokens")) >= 1,
                "no tokens");
        fprintf(stderr, "%s: prompt %lld tokens, completion %lld, digest %.16s\n", pid,
                (long long)json_integer_value(kf_json_path(a, "narrative.prompt_tokens")),
                (long long)json_integer_value(kf_json_path(a, "narrative.completion_tokens")),
                o1[i].digest);
        const char *sha = json_string_value(kf_json_path(a, "lineage.model.sha256"));
        REQUIRE(sha && strlen(sha) == 64 && strspn(sha, "0123456789abcdef") == 64, "sha %s",
                sha ? sha : "(null)");
        REQUIRE(json_integer_value(kf_json_path(a, "lineage.sampling.seed")) == 7, "seed");
        REQUIRE(json_real_value(kf_json_path(a, "lineage.sampling.temperature")) == 0 ||
                    json_integer_value(kf_json_path(a, "lineage.sampling.temperature")) == 0,
                "temperature");
        REQUIRE(json_number_value(kf_json_path(a, "headline.var")) ==
                    json_number_value(kf_json_path(a, "metrics.historical.99.var_1d")),
                "headline != hist 99");
        REQUIRE(!strcmp(json_string_value(kf_json_path(a, "lineage.model.name")), "tiny"),
                "model name");
        if (i == 0) {
            /* P001's prompt used the three ticks: lineage names them with their offsets. */
            const json_t *mk = kf_json_path(a, "lineage.market");
            REQUIRE(json_array_size(mk) == 3, "P001 lineage has %zu ticks", json_array_size(mk));
            for (int k = 0; k < 3; k++) {
                int found = 0;
                for (size_t j = 0; j < 3; j++) {
                    const json_t *t = json_array_get(mk, j);
                    if (!strcmp(json_string_value(json_object_get(t, "symbol")), sym[k])) {
                        found = 1;
                        REQUIRE(json_integer_value(json_object_get(t, "offset")) == tick_offsets[k],
                                "offset of %s", sym[k]);
                        REQUIRE(!strcmp(json_string_value(json_object_get(t, "topic")), t_market),
                                "topic");
                    }
                }
                REQUIRE(found, "tick %s missing from the lineage", sym[k]);
            }
        }
        /* Reproducibility: metrics and narrative byte-identical, equal digests. */
        char *ma = canon(json_object_get(a, "metrics")), *mb = canon(json_object_get(b, "metrics"));
        REQUIRE(!strcmp(ma, mb), "%s: metrics differ between runs", pid);
        REQUIRE(!strcmp(text, json_string_value(kf_json_path(b, "narrative.text"))),
                "%s: narrative differs between runs", pid);
        REQUIRE(!strcmp(o1[i].digest, o2[i].digest), "%s: digests differ", pid);
        REQUIRE(strcmp(o1[i].request_id, o2[i].request_id), "request ids should differ");
        /* The whole file minus "run" is byte-identical too. */
        json_object_del(a, "run");
        json_object_del(b, "run");
        char *ca = canon(a), *cb = canon(b);
        REQUIRE(!strcmp(ca, cb), "%s: documents differ beyond run", pid);
        /* Markdown and HTML exist, the HTML holds the escaped narrative. */
        snprintf(path, sizeof(path), "%s/%s-2026-10-30.html", out1, pid);
        char *html = slurp(path);
        /* The longest narrative line must appear escaped in the page. */
        const char *best = text;
        size_t best_len = 0;
        for (const char *p = text; *p;) {
            size_t l = strcspn(p, "\n");
            if (l > best_len) {
                best = p;
                best_len = l;
            }
            p += l + (p[l] == '\n');
        }
        char *line = strndup(best, best_len);
        kf_buf_t esc;
        kf_buf_init(&esc, 0);
        REQUIRE(line && kf_report_html_escape(&esc, line) == KF_OK, "escape");
        REQUIRE(best_len == 0 || strstr(html, esc.data), "%s: narrative not in the HTML", pid);
        free(line);
        REQUIRE(strstr(html, "id=\"pnl-hist\"") && strstr(html, "id=\"drawdown\""), "charts");
        kf_buf_free(&esc);
        snprintf(path, sizeof(path), "%s/%s-2026-10-30.md", out1, pid);
        char *md = slurp(path);
        REQUIRE(strstr(md, "## Narrative") && strstr(md, "| historical | 99% |"), "markdown");
        free(md);
        free(html);
        free(ma);
        free(mb);
        free(ca);
        free(cb);
        json_decref(a);
        json_decref(b);
    }

    /* 6. `kinfer report get` of run1's P001: the dispatcher stored the result; the re-render has
     * the same digest. The dispatcher may lag a little behind the results topic: retry. */
    char getout[512];
    snprintf(getout, sizeof(getout), "/tmp/%s/get.json", g_prefix);
    snprintf(cmd, sizeof(cmd), "%s report get %s --dsn '%s' --format json --out %s", g_kinfer,
             o1[0].request_id, g_dsn, getout);
    int rc = -1;
    for (int attempt = 0; attempt < 60 && rc != 0; attempt++) {
        rc = system(cmd);
        if (rc != 0)
            sleep(1);
    }
    REQUIRE(rc == 0, "%s failed", cmd);
    json_t *g = load_json(getout);
    REQUIRE(!strcmp(json_string_value(json_object_get(g, "digest")), o1[0].digest),
            "report get digest %s != %s", json_string_value(json_object_get(g, "digest")),
            o1[0].digest);
    json_decref(g);
    snprintf(cmd, sizeof(cmd), "%s report get no-such-id --dsn '%s' 2>/dev/null", g_kinfer, g_dsn);
    rc = system(cmd);
    REQUIRE(WIFEXITED(rc) && WEXITSTATUS(rc) == 3, "get of an unknown id: %d", rc);

    /* 7. The CLI: a failing portfolio makes the exit status 1, the good one is still written. */
    snprintf(cmd, sizeof(cmd),
             "%s report run --as-of 2026-10-30 --portfolio P003,NOPE --out %s --seed 7 --model "
             "tiny --max-tokens 8 --dsn '%s' --brokers %s --set topics.requests=%s --set "
             "topics.results=%s --timeout 240s --quiet > /tmp/%s/cli.txt",
             g_kinfer, out3, g_dsn, g_brokers, t_req, t_res, g_prefix);
    rc = system(cmd);
    REQUIRE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "report run exit %d", rc);
    char path[512];
    snprintf(path, sizeof(path), "/tmp/%s/cli.txt", g_prefix);
    char *summary = slurp(path);
    fprintf(stderr, "%s", summary);
    REQUIRE(strstr(summary, "P003-2026-10-30.{json,md,html}") &&
                strstr(summary, "FAILED  unknown portfolio 'NOPE'") &&
                strstr(summary, "2 portfolios, 1 written, 1 failed"),
            "summary: %s", summary);
    free(summary);
    snprintf(path, sizeof(path), "%s/P003-2026-10-30.html", out3);
    REQUIRE(access(path, R_OK) == 0, "%s missing", path);

    /* Teardown. */
    stop_worker(g_worker);
    g_worker = 0;
    kf_enrich_stop(enr);
    g_dispatch_stop = 1;
    pthread_join(et, NULL);
    pthread_join(dt, NULL);
    kf_enrich_destroy(enr);
    kf_conf_destroy(econf);
    kf_conf_destroy(dconf);
    drop_db();
    unlink(g_model);
    unlink(g_wconf);
    snprintf(cmd, sizeof(cmd), "rm -rf /tmp/%s", g_prefix);
    REQUIRE(system(cmd) == 0, "cleanup");
    free(o1);
    free(o2);
    printf("OK: report run/get on the real stack; P001 and P002 reproducible\n");
    return 0;
}
