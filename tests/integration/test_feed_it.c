/*
 * Integration test of `kinfer feed` against the local stack's Kafka (KINFER_KAFKA_BROKERS;
 * exit 77 when unset). Unique topics per run.
 *
 *   1. kf_feed_run over a CSV of 200 good ticks (20 symbols x 10) and 3 bad lines: stats say
 *      published 200, bad 3 at the exact line numbers; the topic holds exactly 200 records,
 *      keyed by symbol, 10 per symbol, each value a MarketTick of its key's symbol.
 *   2. The CLI on the same file: exit status 1 and the summary line; --allow-bad exits 0.
 *   3. --loop: replays with event times shifted by (span + 1 s) per pass; checked on the
 *      first three passes of every symbol.
 *
 * Usage: test_feed_it KINFER_BINARY
 */
#include "kf_avro.h"
#include "kf_feed.h"

#include <signal.h>
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
long it_topic_count(const char *brokers, const char *topic);

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

#define NSYM 20
#define PER  10
static const int64_t T0 = 1793370600000LL; /* 2026-10-30T14:30:00Z */

/* Writes the test file; returns the path (static buffer). Bad lines: 5, 60, 200. */
static const char *
write_feed(void)
{
    static char path[] = "/tmp/kf_feed_itXXXXXX.csv";
    int fd = mkstemps(path, 4);
    if (fd < 0)
        return NULL;
    FILE *fp = fdopen(fd, "w");
    fprintf(fp, "symbol,price,bid,ask,volume,event_time,source\n"); /* line 1 */
    int line = 1, tick = 0;
    while (tick < NSYM * PER) {
        line++;
        if (line == 5 || line == 60 || line == 200) {
            fprintf(fp, line == 5    ? "BAD SYMBOL,1,,,,0,x\n"
                        : line == 60 ? "SYM01,-1,,,,0,x\n"
                                     : "SYM02,1,,,,yesterday,x\n");
            continue;
        }
        int s = tick % NSYM, k = tick / NSYM;
        fprintf(fp, "SYM%02d,%d.5,,,%d,%lld,it\n", s, 100 + k, tick,
                (long long)(T0 + (int64_t)tick * 100));
        tick++;
    }
    fclose(fp);
    return path;
}

static void
check_topic(const char *brokers, const char *topic, int passes_min)
{
    it_rec_t *recs = NULL;
    char err[512];
    int n = it_read_topic(brokers, topic, &recs, err, sizeof(err));
    CHECK(n >= 0, "read %s: %s", topic, err);
    if (n < 0)
        return;
    if (passes_min == 1)
        CHECK(n == NSYM * PER, "topic %s holds %d records, want exactly %d", topic, n, NSYM * PER);
    else
        CHECK(n >= NSYM * PER * passes_min, "topic %s holds %d records, want >= %d", topic, n,
              NSYM * PER * passes_min);
    int count[NSYM] = {0};
    /* Loop shift: span of the first pass (first to last tick) plus one second. */
    int64_t shift = (int64_t)(NSYM * PER - 1) * 100 + 1000;
    for (int i = 0; i < n; i++) {
        json_t *j = NULL;
        kf_err_t e = kf_avro_decode_json(NULL, recs[i].value, recs[i].value_len,
                                         kf_avro_schema_get(KF_AVRO_MARKET_TICK), &j, NULL, err,
                                         sizeof(err));
        CHECK(e == KF_OK, "record %d: %s", i, err);
        if (e)
            continue;
        const char *sym = json_string_value(json_object_get(j, "symbol"));
        CHECK(recs[i].key && !strcmp(recs[i].key, sym), "key %s != symbol %s",
              recs[i].key ? recs[i].key : "(null)", sym);
        int s = atoi(sym + 3);
        CHECK(s >= 0 && s < NSYM, "unexpected symbol %s", sym);
        if (s < 0 || s >= NSYM) {
            json_decref(j);
            continue;
        }
        /* Within a partition a symbol's records keep their order: the c-th record of symbol s
         * is tick k = c % PER of pass c / PER. */
        int c = count[s]++;
        int k = c % PER, pass = c / PER;
        if (pass < 3) {
            int64_t want = T0 + (int64_t)(k * NSYM + s) * 100 + pass * shift;
            int64_t got = json_integer_value(json_object_get(j, "event_time"));
            CHECK(got == want, "%s record %d: event_time %lld, want %lld", sym, c, (long long)got,
                  (long long)want);
            CHECK(json_real_value(json_object_get(j, "price")) == 100 + k + 0.5,
                  "%s record %d: price", sym, c);
            CHECK(!strcmp(json_string_value(json_object_get(j, "source")), "it"), "source");
        }
        json_decref(j);
    }
    for (int s = 0; s < NSYM; s++)
        if (passes_min == 1)
            CHECK(count[s] == PER, "SYM%02d has %d records, want %d", s, count[s], PER);
    it_recs_free(recs, n);
}

static int
run_cli(const char *cmd, const char *errfile, char *out, size_t outsz)
{
    char full[2048];
    snprintf(full, sizeof(full), "%s 2>%s", cmd, errfile);
    int st = system(full);
    FILE *fp = fopen(errfile, "r");
    size_t r = fp ? fread(out, 1, outsz - 1, fp) : 0;
    out[r] = '\0';
    if (fp)
        fclose(fp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int
main(int argc, char **argv)
{
    const char *brokers = getenv("KINFER_KAFKA_BROKERS");
    if (!brokers || !*brokers) {
        printf("SKIP: KINFER_KAFKA_BROKERS is not set (eval \"$(deploy/local/stack env)\")\n");
        return 77;
    }
    if (argc < 2) {
        printf("usage: test_feed_it KINFER_BINARY\n");
        return 2;
    }
    const char *kinfer = argv[1];
    char topic[128], topic2[128], topic3[128], err[1024];
    long tag = (long)getpid() * 1000 + (long)(time(NULL) % 1000);
    snprintf(topic, sizeof(topic), "kf.it.feed.%ld.market", tag);
    snprintf(topic2, sizeof(topic2), "kf.it.feed.%ld.cli", tag);
    snprintf(topic3, sizeof(topic3), "kf.it.feed.%ld.loop", tag);
    const char *path = write_feed();
    if (!path) {
        printf("FAIL: cannot write the feed file\n");
        return 1;
    }

    /* 1. The library. */
    kf_kafka_kv_t kv[] = {{"kafka.bootstrap.servers", brokers}};
    kf_feed_opts_t opts = {.kafka = kv,
                           .kafka_count = 1,
                           .topic = topic,
                           .format = KF_FEED_CSV,
                           .speed = 0,
                           .name = path,
                           .source = "unused-default",
                           .quiet = 1};
    FILE *in = fopen(path, "r");
    kf_feed_stats_t st;
    kf_err_t e = kf_feed_run(&opts, in, &st, err, sizeof(err));
    fclose(in);
    CHECK(e == KF_OK, "kf_feed_run: %s", err);
    CHECK(st.published == NSYM * PER, "published %llu", (unsigned long long)st.published);
    CHECK(st.bad == 3, "bad %llu", (unsigned long long)st.bad);
    CHECK(st.nbad_listed == 3 && st.bad_lines[0] == 5 && st.bad_lines[1] == 60 &&
              st.bad_lines[2] == 200,
          "bad lines listed %zu", st.nbad_listed);
    CHECK(st.lines == NSYM * PER + 3 + 1, "lines %llu", (unsigned long long)st.lines);
    CHECK(st.delivery_failed == 0, "delivery failed %llu", (unsigned long long)st.delivery_failed);
    char summary[256];
    kf_feed_summary(&st, summary, sizeof(summary));
    CHECK(!strcmp(summary, "published 200, bad 3 (lines 5, 60, 200)"), "summary '%s'", summary);
    check_topic(brokers, topic, 1);

    /* 2. The command line. */
    char cmd[1024], out[8192], errfile[64];
    snprintf(errfile, sizeof(errfile), "/tmp/kf_feed_it_%ld.err", tag);
    snprintf(cmd, sizeof(cmd), "KINFER_KAFKA_BROKERS=%s %s feed --speed max --topic %s %s", brokers,
             kinfer, topic2, path);
    int rc = run_cli(cmd, errfile, out, sizeof(out));
    CHECK(rc == 1, "kinfer feed with bad lines exited %d, want 1", rc);
    CHECK(strstr(out, "kinfer feed: published 200, bad 3 (lines 5, 60, 200)") != NULL,
          "summary missing from stderr:\n%s", out);
    CHECK(strstr(out, ":60: bad line: price must be > 0") != NULL, "line 60 reason missing");
    snprintf(cmd, sizeof(cmd),
             "KINFER_KAFKA_BROKERS=%s %s feed --speed max --allow-bad --quiet --topic %s %s",
             brokers, kinfer, topic2, path);
    rc = run_cli(cmd, errfile, out, sizeof(out));
    CHECK(rc == 0, "kinfer feed --allow-bad exited %d, want 0", rc);
    CHECK(strstr(out, "bad line") == NULL, "--quiet still printed per-line reports");

    /* 3. --loop, stopped with SIGTERM once three passes are on the topic. Paced at 50x (a
     * pass spans 20.9 s of event time, so about 0.4 s), never --speed max: an unpaced loop
     * floods the shared broker faster than this test can stop it. */
    pid_t pid = fork();
    if (pid == 0) {
        setenv("KINFER_KAFKA_BROKERS", brokers, 1);
        execl(kinfer, kinfer, "feed", "--speed", "50", "--loop", "--quiet", "--topic", topic3, path,
              (char *)NULL);
        _exit(127);
    }
    long have = 0;
    for (int tries = 0; tries < 300 && have < 3 * NSYM * PER; tries++) {
        usleep(100000);
        have = it_topic_count(brokers, topic3);
    }
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1,
          "looping feed: exit status %d (want 1: bad lines)", status);
    CHECK(have >= 3 * NSYM * PER, "looping feed produced %ld records", have);
    check_topic(brokers, topic3, 3);

    unlink(path);
    unlink(errfile);
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("OK: feed published exactly %d ticks keyed by symbol, CLI exit codes and loop shifts "
           "checked\n",
           NSYM * PER);
    return 0;
}
