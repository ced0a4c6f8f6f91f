/*
 * Integration tests of core/kf_kafka.h against the REAL broker of the local stack
 * (KINFER_KAFKA_BROKERS; exit 77 = SKIP when it is unset). One mode per ctest:
 *
 *   resume   Avro records consumed by a consumer group in another process (kafka_it_helper)
 *            that stops after 25 and commits; a restarted helper resumes after the committed
 *            offsets: every id seen exactly once, none missing.
 *   txn_kill Exactly-once stage in another process, SIGKILLed mid-way and restarted; a
 *            read_committed reader of the output sees every input exactly once.
 *   txn_abort In-process exactly-once stage whose transform fails retriably once (abort,
 *            rewind, re-read) and fatally after producing (abort, then dead-letter): the
 *            read_committed output holds each accepted input once, the DLQ the poison one.
 *   dlq      A poison record (garbage bytes) goes to <topic>.dlq with its original bytes and
 *            the kf.* error headers; the consumer processes the valid records around it and
 *            a restarted group resumes after all of them.
 *
 * Usage: test_kafka_it MODE HELPER_PATH
 */
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_log.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *brokers;
static const char *helper;
static int failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            failures++;                                                     \
            return;                                                         \
        }                                                                   \
    } while (0)

static void
unique_name(char *buf, size_t size, const char *what)
{
    snprintf(buf, size, "kinfer.it.%s.%d.%ld", what, (int)getpid(), (long)time(NULL));
}

static int
create_topics(const char *a, const char *b, int partitions)
{
    char errstr[512];
    kf_kafka_kv_t conf[] = {{"kafka.bootstrap.servers", brokers}};
    const char *topics[] = {a, b};
    if (kf_kafka_create_topics(conf, 1, topics, b ? 2 : 1, partitions, -1, 15000, errstr,
                               sizeof(errstr))) {
        fprintf(stderr, "create topics: %s\n", errstr);
        return -1;
    }
    return 0;
}

static kf_producer_t *
make_producer(void)
{
    char errstr[512];
    kf_kafka_kv_t conf[] = {{"kafka.bootstrap.servers", brokers}, {"kafka.linger.ms", "5"}};
    kf_producer_t *p = NULL;
    if (kf_producer_new(conf, 2, &p, errstr, sizeof(errstr)))
        fprintf(stderr, "producer: %s\n", errstr);
    return p;
}

/* Sends MarketTick id (carried in `volume`) to `topic`; sync. */
static kf_err_t
send_tick(kf_producer_t *p, const char *topic, int32_t partition, long id)
{
    char errstr[512];
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_MARKET_TICK);
    avro_value_t v;
    kf_err_t err = kf_avro_value_new(schema, &v, errstr, sizeof(errstr));
    if (err)
        return err;
    char sym[16];
    snprintf(sym, sizeof(sym), "S%ld", id % 7);
    kf_avro_set_string(&v, "symbol", sym);
    kf_avro_set_double(&v, "price", 10.0 + (double)id);
    kf_avro_set_null(&v, "bid");
    kf_avro_set_null(&v, "ask");
    kf_avro_set_double(&v, "volume", (double)id);
    kf_avro_set_long(&v, "event_time", 1700000000000LL + id);
    kf_avro_set_string(&v, "source", "it");
    unsigned char *buf = NULL;
    size_t len = 0;
    err = kf_avro_encode(schema, &v, &buf, &len, errstr, sizeof(errstr));
    avro_value_decref(&v);
    if (err) {
        fprintf(stderr, "encode: %s\n", errstr);
        return err;
    }
    kf_kafka_msg_t msg = {.topic = topic,
                          .partition = partition,
                          .key = sym,
                          .key_len = strlen(sym),
                          .value = buf,
                          .value_len = len};
    err = kf_producer_send(p, &msg, NULL, errstr, sizeof(errstr));
    free(buf);
    if (err)
        fprintf(stderr, "send: %s\n", errstr);
    return err;
}

static pid_t
spawn(char *const argv[], int *out_stdout_fd)
{
    int fds[2] = {-1, -1};
    if (out_stdout_fd && pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        if (out_stdout_fd) {
            dup2(fds[1], STDOUT_FILENO);
            close(fds[0]);
            close(fds[1]);
        }
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    if (out_stdout_fd) {
        close(fds[1]);
        *out_stdout_fd = fds[0];
    }
    return pid;
}

static int
wait_exit(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Reads lines from fd until one "committed N" with N >= want, or timeout. Returns the last
 * N seen (0 if none). */
static long
read_committed_until(int fd, long want, int timeout_s)
{
    static char buf[4096];
    static size_t len;
    long last = 0;
    time_t deadline = time(NULL) + timeout_s;
    while (time(NULL) < deadline && last < want) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = '\0';
            long v;
            if (sscanf(buf, "committed %ld", &v) == 1)
                last = v;
            memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf) + 1);
            len -= (size_t)(nl + 1 - buf);
        }
    }
    len = 0;
    return last;
}

/* ---- resume: another process, commit, restart --------------------------------------------- */

static int
read_ids(const char *path, int *counts, int max_id)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    long id;
    int n = 0;
    while (fscanf(fp, "%ld", &id) == 1) {
        if (id >= 0 && id < max_id)
            counts[id]++;
        else
            counts[max_id]++; /* out of range bucket */
        n++;
    }
    fclose(fp);
    return n;
}

static void
test_resume(void)
{
    enum { N = 60, FIRST = 25 };
    char topic[200], group[220], out[256];
    unique_name(topic, sizeof(topic), "resume");
    snprintf(group, sizeof(group), "%s.g", topic);
    snprintf(out, sizeof(out), "/tmp/%s.ids", topic);
    unlink(out);
    CHECK(create_topics(topic, NULL, 3) == 0, "topic");
    kf_producer_t *p = make_producer();
    CHECK(p, "producer");
    for (long i = 0; i < N; i++)
        CHECK(send_tick(p, topic, KF_KAFKA_PARTITION_ANY, i) == KF_OK, "send %ld", i);
    kf_producer_destroy(p);

    char max1[16], max2[16];
    snprintf(max1, sizeof(max1), "%d", FIRST);
    snprintf(max2, sizeof(max2), "0");
    char *argv1[] = {
        (char *)helper, "consume", (char *)brokers, topic, group, max1, "20000", out, NULL};
    CHECK(wait_exit(spawn(argv1, NULL)) == 0, "first consumer process failed");
    int counts[N + 1] = {0};
    int n1 = read_ids(out, counts, N);
    CHECK(n1 == FIRST, "first run handled %d records, want %d", n1, FIRST);
    for (int i = 0; i <= N; i++)
        CHECK(counts[i] <= 1, "id %d seen %d times in the first run", i, counts[i]);

    /* Restart: must resume after the committed offsets. */
    char *argv2[] = {
        (char *)helper, "consume", (char *)brokers, topic, group, max2, "8000", out, NULL};
    CHECK(wait_exit(spawn(argv2, NULL)) == 0, "second consumer process failed");
    memset(counts, 0, sizeof(counts));
    int n2 = read_ids(out, counts, N);
    CHECK(n2 == N, "both runs handled %d records, want %d", n2, N);
    for (int i = 0; i < N; i++)
        CHECK(counts[i] == 1, "id %d seen %d times", i, counts[i]);
    CHECK(counts[N] == 0, "%d unexpected ids", counts[N]);
    unlink(out);
    printf("resume: %d ids in run 1, %d in run 2, each of %d exactly once\n", n1, n2 - n1, N);
}

/* ---- txn_kill: exactly once across a SIGKILL ---------------------------------------------- */

typedef struct out_seen {
    int counts[1000];
    int other;
    long total;
} out_seen_t;

static kf_err_t
out_handler(const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    out_seen_t *os = opaque;
    char val[64];
    size_t n = rec->value_len < sizeof(val) - 1 ? rec->value_len : sizeof(val) - 1;
    memcpy(val, rec->value, n);
    val[n] = '\0';
    int id;
    if (sscanf(val, "out:v%d", &id) == 1 && id >= 0 && id < 1000)
        os->counts[id]++;
    else
        os->other++;
    os->total++;
    return KF_OK;
}

static void
test_txn_kill(void)
{
    enum { N = 150 };
    char in[200], outt[200], group[220], txnid[220], rgroup[220], errstr[512];
    unique_name(in, sizeof(in), "txin");
    unique_name(outt, sizeof(outt), "txout");
    snprintf(group, sizeof(group), "%s.g", in);
    snprintf(txnid, sizeof(txnid), "%s.tx", in);
    snprintf(rgroup, sizeof(rgroup), "%s.reader", outt);
    CHECK(create_topics(in, outt, 3) == 0, "topics");
    kf_producer_t *p = make_producer();
    CHECK(p, "producer");
    for (int i = 0; i < N; i++) {
        char v[16], k[8];
        snprintf(v, sizeof(v), "v%d", i);
        snprintf(k, sizeof(k), "k%d", i % 5);
        kf_kafka_msg_t msg = {.topic = in,
                              .partition = KF_KAFKA_PARTITION_ANY,
                              .key = k,
                              .key_len = strlen(k),
                              .value = v,
                              .value_len = strlen(v)};
        CHECK(kf_producer_send_async(p, &msg, NULL, NULL, errstr, sizeof(errstr)) == KF_OK, "%s",
              errstr);
    }
    CHECK(kf_producer_flush(p, 30000, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    kf_producer_destroy(p);

    /* 20 ms per record: the 150 inputs take ~3 s, so the kill lands mid-way. */
    char *argv[] = {(char *)helper, "txn", (char *)brokers, in, outt, group, txnid, "20", NULL};
    int fd = -1;
    pid_t pid = spawn(argv, &fd);
    CHECK(pid > 0, "spawn");
    long before_kill = read_committed_until(fd, 40, 40);
    kill(pid, SIGKILL);
    int st = wait_exit(pid);
    close(fd);
    CHECK(st == 128 + SIGKILL, "helper exit %d, want killed", st);
    CHECK(before_kill >= 40 && before_kill < N, "killed after %ld committed, want mid-way",
          before_kill);

    /* Restart with the same transactional.id: fences the zombie's open transaction. */
    pid = spawn(argv, &fd);
    CHECK(pid > 0, "respawn");

    kf_kafka_kv_t rconf[] = {
        {"kafka.bootstrap.servers", brokers},
        {"kafka.group.id", rgroup},
        {"kafka.isolation.level", "read_committed"},
        {"kafka.session.timeout.ms", "6000"},
        {"consumer.topics", outt},
    };
    kf_consumer_t *c = NULL;
    CHECK(kf_consumer_new(rconf, 5, &c, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    out_seen_t *os = calloc(1, sizeof(*os));
    time_t deadline = time(NULL) + 45;
    while (os->total < N && time(NULL) < deadline)
        kf_consumer_poll(c, out_handler, os, 100, NULL, errstr, sizeof(errstr));
    /* Keep reading a while: a duplicate would show up now. */
    time_t extra = time(NULL) + 3;
    while (time(NULL) < extra)
        kf_consumer_poll(c, out_handler, os, 100, NULL, errstr, sizeof(errstr));
    kf_consumer_destroy(c);
    long after = read_committed_until(fd, N, 1);
    kill(pid, SIGTERM);
    st = wait_exit(pid);
    close(fd);
    CHECK(st == 0, "restarted helper exit %d", st);
    int missing = 0, dups = 0;
    for (int i = 0; i < N; i++) {
        if (os->counts[i] == 0)
            missing++;
        if (os->counts[i] > 1)
            dups++;
    }
    long total = os->total;
    int other = os->other;
    free(os);
    CHECK(missing == 0 && dups == 0 && other == 0 && total == N,
          "read_committed output: %ld records, %d missing, %d duplicated, %d unexpected", total,
          missing, dups, other);
    printf("txn_kill: killed after %ld committed; restart committed %ld more (at least); "
           "output has each of %d inputs exactly once\n",
           before_kill, after, N);
}

/* ---- dlq: poison record ------------------------------------------------------------------- */

typedef struct dlq_seen {
    long ids[32];
    int n;
    /* the DLQ record */
    unsigned char raw[64];
    size_t raw_len;
    char key[32];
    char hdr[12][2][128];
    int nhdr;
} dlq_seen_t;

static kf_err_t
tick_handler(const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    dlq_seen_t *ds = opaque;
    avro_value_t v;
    kf_err_t err =
        kf_avro_decode(NULL, rec->value, rec->value_len, NULL, &v, NULL, errstr, errstr_size);
    if (err)
        return err;
    double id = -1;
    kf_avro_get_double(&v, "volume", &id);
    avro_value_decref(&v);
    if (ds->n < 32)
        ds->ids[ds->n] = (long)id;
    ds->n++;
    return KF_OK;
}

static kf_err_t
raw_handler(const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    dlq_seen_t *ds = opaque;
    ds->n++;
    ds->raw_len = rec->value_len < sizeof(ds->raw) ? rec->value_len : sizeof(ds->raw);
    memcpy(ds->raw, rec->value, ds->raw_len);
    snprintf(ds->key, sizeof(ds->key), "%.*s", (int)rec->key_len, (const char *)rec->key);
    ds->nhdr = 0;
    size_t nh = kf_kafka_record_header_count(rec);
    for (size_t i = 0; i < nh && ds->nhdr < 12; i++) {
        const char *name;
        const void *val;
        size_t sz;
        if (kf_kafka_record_header_at(rec, i, &name, &val, &sz) == KF_OK) {
            snprintf(ds->hdr[ds->nhdr][0], 128, "%s", name);
            snprintf(ds->hdr[ds->nhdr][1], 128, "%.*s", (int)sz, val ? (const char *)val : "");
            ds->nhdr++;
        }
    }
    return KF_OK;
}

static const char *
dlq_hdr(const dlq_seen_t *ds, const char *name)
{
    for (int i = 0; i < ds->nhdr; i++)
        if (!strcmp(ds->hdr[i][0], name))
            return ds->hdr[i][1];
    return "(absent)";
}

static kf_consumer_t *
tick_consumer(const char *topic, const char *group)
{
    char errstr[512];
    kf_kafka_kv_t conf[] = {
        {"kafka.bootstrap.servers", brokers}, {"kafka.group.id", group},
        {"kafka.session.timeout.ms", "6000"}, {"kafka.heartbeat.interval.ms", "1000"},
        {"consumer.topics", topic},           {"consumer.stage", "it-dlq"},
        {"consumer.commit.interval.ms", "0"},
    };
    kf_consumer_t *c = NULL;
    if (kf_consumer_new(conf, 7, &c, errstr, sizeof(errstr)))
        fprintf(stderr, "consumer: %s\n", errstr);
    return c;
}

static void
poll_until(kf_consumer_t *c, kf_consumer_handler h, dlq_seen_t *ds, int want, int timeout_s)
{
    char errstr[512];
    time_t deadline = time(NULL) + timeout_s;
    while (ds->n < want && time(NULL) < deadline)
        kf_consumer_poll(c, h, ds, 100, NULL, errstr, sizeof(errstr));
    time_t extra = time(NULL) + 2;
    while (time(NULL) < extra)
        kf_consumer_poll(c, h, ds, 100, NULL, errstr, sizeof(errstr));
}

static void
test_dlq(void)
{
    char topic[200], dlq[220], group[220], dgroup[240], errstr[512];
    unique_name(topic, sizeof(topic), "dlq");
    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    snprintf(group, sizeof(group), "%s.g", topic);
    snprintf(dgroup, sizeof(dgroup), "%s.g", dlq);
    CHECK(create_topics(topic, dlq, 1) == 0, "topics");
    kf_producer_t *p = make_producer();
    CHECK(p, "producer");
    for (long i = 0; i < 3; i++)
        CHECK(send_tick(p, topic, 0, i) == KF_OK, "send");
    static const unsigned char garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x00, 'j', 'u', 'n', 'k'};
    kf_kafka_header_t hdrs[] = {{"x-origin", "it", 2}};
    kf_kafka_msg_t msg = {.topic = topic,
                          .partition = 0,
                          .key = "poison",
                          .key_len = 6,
                          .value = garbage,
                          .value_len = sizeof(garbage),
                          .headers = hdrs,
                          .header_count = 1};
    CHECK(kf_producer_send(p, &msg, NULL, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    for (long i = 3; i < 6; i++)
        CHECK(send_tick(p, topic, 0, i) == KF_OK, "send");

    kf_consumer_t *c = tick_consumer(topic, group);
    CHECK(c, "consumer");
    dlq_seen_t ds = {0};
    poll_until(c, tick_handler, &ds, 6, 30);
    kf_consumer_stats_t st;
    kf_consumer_get_stats(c, &st);
    kf_consumer_destroy(c);
    CHECK(ds.n == 6, "processed %d valid records, want 6", ds.n);
    for (int i = 0; i < 6; i++)
        CHECK(ds.ids[i] == i, "record %d has id %ld", i, ds.ids[i]);
    CHECK(st.processed == 6 && st.dead_lettered == 1 && st.retried == 0,
          "stats processed=%llu dead_lettered=%llu retried=%llu", (unsigned long long)st.processed,
          (unsigned long long)st.dead_lettered, (unsigned long long)st.retried);

    kf_kafka_kv_t rconf[] = {
        {"kafka.bootstrap.servers", brokers}, {"kafka.group.id", dgroup}, {"consumer.topics", dlq}};
    kf_consumer_t *dc = NULL;
    CHECK(kf_consumer_new(rconf, 3, &dc, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    dlq_seen_t dd = {0};
    poll_until(dc, raw_handler, &dd, 1, 30);
    kf_consumer_destroy(dc);
    CHECK(dd.n == 1, "dead-letter topic has %d records, want 1", dd.n);
    CHECK(dd.raw_len == sizeof(garbage) && !memcmp(dd.raw, garbage, sizeof(garbage)),
          "dead-letter value differs from the original bytes");
    CHECK(!strcmp(dd.key, "poison"), "key '%s'", dd.key);
    CHECK(!strcmp(dlq_hdr(&dd, "x-origin"), "it"), "original header lost");
    CHECK(strlen(dlq_hdr(&dd, "kf.error")) > 0 && strcmp(dlq_hdr(&dd, "kf.error"), "(absent)"),
          "no kf.error");
    CHECK(!strcmp(dlq_hdr(&dd, "kf.error.code"), kf_err_str(KF_ERR_PARSE)), "kf.error.code '%s'",
          dlq_hdr(&dd, "kf.error.code"));
    CHECK(!strcmp(dlq_hdr(&dd, "kf.original.topic"), topic), "kf.original.topic");
    CHECK(!strcmp(dlq_hdr(&dd, "kf.original.partition"), "0"), "kf.original.partition");
    CHECK(!strcmp(dlq_hdr(&dd, "kf.original.offset"), "3"), "kf.original.offset '%s'",
          dlq_hdr(&dd, "kf.original.offset"));
    CHECK(!strcmp(dlq_hdr(&dd, "kf.stage"), "it-dlq"), "kf.stage '%s'", dlq_hdr(&dd, "kf.stage"));
    printf("dlq: kf.error = \"%s\"\n", dlq_hdr(&dd, "kf.error"));

    /* The group committed past the poison record: a restart sees only the new record. */
    CHECK(send_tick(p, topic, 0, 6) == KF_OK, "send");
    kf_producer_destroy(p);
    c = tick_consumer(topic, group);
    CHECK(c, "consumer");
    memset(&ds, 0, sizeof(ds));
    poll_until(c, tick_handler, &ds, 1, 30);
    kf_consumer_destroy(c);
    CHECK(ds.n == 1 && ds.ids[0] == 6, "restart saw %d records (first id %ld), want only id 6",
          ds.n, ds.ids[0]);
    printf("dlq: 6 valid processed, 1 dead-lettered with original bytes and headers\n");
}

/* ---- txn_abort: abort, rewind and poison inside transactions ----------------------------- */

typedef struct abort_state {
    const char *out_topic;
    int failed_once;
    int calls[64];
} abort_state_t;

/* v12 fails retriably once (the batch is aborted and re-read); v20 produces its output and
 * THEN fails fatally (the batch is aborted so that output never shows; v20 is dead-lettered
 * on the next attempt). */
static kf_err_t
abort_transform(
    kf_txn_t *txn, const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    abort_state_t *as = opaque;
    char val[32];
    snprintf(val, sizeof(val), "%.*s", (int)rec->value_len, (const char *)rec->value);
    int id = atoi(val + 1);
    if (id >= 0 && id < 64)
        as->calls[id]++;
    if (id == 12 && !as->failed_once) {
        as->failed_once = 1;
        return kf_err_set(errstr, errstr_size, KF_ERR_UNAVAILABLE, "downstream busy");
    }
    char out[48];
    int n = snprintf(out, sizeof(out), "out:%s", val);
    kf_kafka_msg_t msg = {.topic = as->out_topic,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .value = out,
                          .value_len = (size_t)n};
    kf_err_t err = kf_txn_produce(txn, &msg, errstr, errstr_size);
    if (err)
        return err;
    if (id == 20)
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "v20 is poison");
    return KF_OK;
}

static void
test_txn_abort(void)
{
    enum { N = 30 };
    char in[200], outt[200], dlq[220], group[220], txnid[220], rgroup[240], errstr[512];
    unique_name(in, sizeof(in), "txabin");
    unique_name(outt, sizeof(outt), "txabout");
    snprintf(dlq, sizeof(dlq), "%s.dlq", in);
    snprintf(group, sizeof(group), "%s.g", in);
    snprintf(txnid, sizeof(txnid), "%s.tx", in);
    CHECK(create_topics(in, outt, 1) == 0 && create_topics(dlq, NULL, 1) == 0, "topics");
    kf_producer_t *p = make_producer();
    CHECK(p, "producer");
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        kf_kafka_msg_t msg = {.topic = in, .partition = 0, .value = v, .value_len = strlen(v)};
        CHECK(kf_producer_send(p, &msg, NULL, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    }
    kf_producer_destroy(p);

    kf_kafka_kv_t conf[] = {
        {"kafka.bootstrap.servers", brokers},
        {"kafka.group.id", group},
        {"kafka.transactional.id", txnid},
        {"kafka.session.timeout.ms", "6000"},
        {"txn.topics", in},
        {"txn.batch.max", "8"},
        {"txn.batch.timeout.ms", "100"},
        {"txn.stage", "it-txn"},
        {"txn.retry.backoff.ms", "10"},
    };
    kf_txn_t *txn = NULL;
    CHECK(kf_txn_new(conf, sizeof(conf) / sizeof(conf[0]), &txn, errstr, sizeof(errstr)) == KF_OK,
          "%s", errstr);
    abort_state_t as = {.out_topic = outt};
    size_t total = 0;
    time_t deadline = time(NULL) + 40;
    while (total < N && time(NULL) < deadline) {
        size_t n = 0;
        kf_err_t err = kf_txn_poll(txn, abort_transform, &as, 200, &n, errstr, sizeof(errstr));
        if (err) {
            kf_txn_destroy(txn);
            CHECK(0, "kf_txn_poll: %s", errstr);
        }
        total += n;
    }
    kf_txn_destroy(txn);
    CHECK(total == N, "committed %zu inputs, want %d", total, N);
    /* v12's batch ran twice; v20 was transformed once (then dead-lettered without a call). */
    CHECK(as.calls[12] == 2, "v12 transformed %d times", as.calls[12]);
    CHECK(as.calls[20] == 1, "v20 transformed %d times", as.calls[20]);

    snprintf(rgroup, sizeof(rgroup), "%s.reader", outt);
    kf_kafka_kv_t rconf[] = {
        {"kafka.bootstrap.servers", brokers},
        {"kafka.group.id", rgroup},
        {"kafka.isolation.level", "read_committed"},
        {"consumer.topics", outt},
    };
    kf_consumer_t *c = NULL;
    CHECK(kf_consumer_new(rconf, 4, &c, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    out_seen_t *os = calloc(1, sizeof(*os));
    deadline = time(NULL) + 30;
    while (os->total < N - 1 && time(NULL) < deadline)
        kf_consumer_poll(c, out_handler, os, 100, NULL, errstr, sizeof(errstr));
    time_t extra = time(NULL) + 2;
    while (time(NULL) < extra)
        kf_consumer_poll(c, out_handler, os, 100, NULL, errstr, sizeof(errstr));
    kf_consumer_destroy(c);
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (os->counts[i] != (i == 20 ? 0 : 1))
            bad++;
    long got = os->total;
    free(os);
    CHECK(bad == 0 && got == N - 1, "read_committed output has %ld records, %d ids wrong", got,
          bad);

    dlq_seen_t dd = {0};
    snprintf(rgroup, sizeof(rgroup), "%s.reader", dlq);
    kf_kafka_kv_t dconf[] = {
        {"kafka.bootstrap.servers", brokers},
        {"kafka.group.id", rgroup},
        {"kafka.isolation.level", "read_committed"},
        {"consumer.topics", dlq},
    };
    CHECK(kf_consumer_new(dconf, 4, &c, errstr, sizeof(errstr)) == KF_OK, "%s", errstr);
    poll_until(c, raw_handler, &dd, 1, 30);
    kf_consumer_destroy(c);
    CHECK(dd.n == 1 && dd.raw_len == 3 && !memcmp(dd.raw, "v20", 3), "dlq has %d records", dd.n);
    CHECK(!strcmp(dlq_hdr(&dd, "kf.stage"), "it-txn"), "kf.stage");
    CHECK(!strcmp(dlq_hdr(&dd, "kf.original.offset"), "20"), "kf.original.offset");
    CHECK(!strcmp(dlq_hdr(&dd, "kf.error"), "v20 is poison"), "kf.error '%s'",
          dlq_hdr(&dd, "kf.error"));
    CHECK(!strcmp(dlq_hdr(&dd, "kf.error.code"), kf_err_str(KF_ERR_PARSE)), "kf.error.code");
    printf("txn_abort: %d inputs, retriable abort re-read, poison aborted then dead-lettered; "
           "output exactly once\n",
           N);
}

int
main(int argc, char **argv)
{
    brokers = getenv("KINFER_KAFKA_BROKERS");
    if (!brokers || !*brokers) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: test_kafka_it resume|txn_kill|txn_abort|dlq HELPER\n");
        return 2;
    }
    helper = argv[2];
    if (!getenv("KINFER_LOG_LEVEL"))
        kf_log_set_level(KF_LOG_WARN);
    if (!strcmp(argv[1], "resume"))
        test_resume();
    else if (!strcmp(argv[1], "txn_kill"))
        test_txn_kill();
    else if (!strcmp(argv[1], "dlq"))
        test_dlq();
    else if (!strcmp(argv[1], "txn_abort"))
        test_txn_abort();
    else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    if (failures) {
        fprintf(stderr, "%s: FAILED\n", argv[1]);
        return 1;
    }
    printf("%s: PASSED\n", argv[1]);
    return 0;
}
