/*
 * `kinfer smoke`: an end-to-end check of a Kafka cluster through kinfer's own clients.
 * Produces N Avro MarketTick records with the idempotent producer, reads them back with a
 * consumer group, decodes and prints each one, and exits non-zero unless every record came
 * back exactly once.
 */
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void
kf_smoke_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer smoke [--brokers HOST:PORT] [--topic NAME] [-n N] [--timeout-ms MS]\n"
            "\n"
            "Produces N Avro MarketTick records to a topic, consumes them back with a consumer\n"
            "group, prints each decoded record and a summary. Exit status 0 only when every\n"
            "record produced was consumed exactly once.\n"
            "\n"
            "  --brokers HOST:PORT  bootstrap servers (default: $KINFER_KAFKA_BROKERS)\n"
            "  --topic NAME         topic to use (default: kinfer.smoke.<pid>, created with\n"
            "                       3 partitions)\n"
            "  -n N                 number of records (default 10, at most 100000)\n"
            "  --timeout-ms MS      how long each phase (create, produce, consume) may take\n"
            "                       (default 30000)\n"
            "  -h, --help           this help\n");
}

typedef struct kf_smoke {
    long n;
    long consumed;
    long duplicates;
    long bad;
    unsigned char *seen; /* per sequence number */
    kf_consumer_t *consumer;
} kf_smoke_t;

static const char *const kf_smoke_symbols[] = {"AAPL", "MSFT", "GOOG", "AMZN", "NVDA"};

/* Encodes tick number i. */
static kf_err_t
kf_smoke_encode(long i, unsigned char **out_buf, size_t *out_len, char *errstr, size_t errstr_size)
{
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_MARKET_TICK);
    if (!schema)
        return kf_err_set(errstr, errstr_size, KF_ERR_UNKNOWN_SCHEMA, "no schema %s",
                          KF_AVRO_MARKET_TICK);
    avro_value_t v;
    kf_err_t err = kf_avro_value_new(schema, &v, errstr, errstr_size);
    if (err)
        return err;
    double price = 100.0 + (double)i * 1.25;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (!err)
        err = kf_avro_set_string(&v, "symbol", kf_smoke_symbols[i % 5]);
    if (!err)
        err = kf_avro_set_double(&v, "price", price);
    if (!err)
        err = kf_avro_set_double(&v, "bid", price - 0.01);
    if (!err)
        err = kf_avro_set_double(&v, "ask", price + 0.01);
    if (!err)
        err = kf_avro_set_double(&v, "volume", (double)(100 * (i + 1)));
    if (!err)
        err = kf_avro_set_long(&v, "event_time", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    if (!err)
        err = kf_avro_set_string(&v, "source", "kinfer-smoke");
    if (err)
        kf_err_set(errstr, errstr_size, err, "building MarketTick: %s", kf_err_str(err));
    else
        err = kf_avro_encode(schema, &v, out_buf, out_len, errstr, errstr_size);
    avro_value_decref(&v);
    return err;
}

static kf_err_t
kf_smoke_handle(const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    kf_smoke_t *sm = opaque;
    const void *hv = NULL;
    size_t hlen = 0;
    char seqbuf[24] = "";
    if (kf_kafka_record_header(rec, "kf.smoke.seq", &hv, &hlen) == KF_OK && hlen < sizeof(seqbuf))
        memcpy(seqbuf, hv, hlen);
    char *end = NULL;
    long seq = strtol(seqbuf, &end, 10);
    if (!seqbuf[0] || *end || seq < 0 || seq >= sm->n) {
        sm->bad++;
        return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "missing or bad kf.smoke.seq header");
    }

    avro_value_t v;
    const kf_avro_schema_t *writer = NULL;
    kf_err_t err =
        kf_avro_decode(NULL, rec->value, rec->value_len, NULL, &v, &writer, errstr, errstr_size);
    if (err) {
        sm->bad++;
        return err; /* fatal: the record is dead-lettered */
    }
    const char *symbol = "?";
    double price = 0, bid = 0, ask = 0, volume = 0;
    kf_avro_get_string(&v, "symbol", &symbol);
    kf_avro_get_double(&v, "price", &price);
    kf_avro_get_double(&v, "bid", &bid);
    kf_avro_get_double(&v, "ask", &ask);
    kf_avro_get_double(&v, "volume", &volume);
    printf("tick %ld: %s %.2f bid %.2f ask %.2f volume %.0f (partition %d offset %lld)\n", seq,
           symbol, price, bid, ask, volume, (int)rec->partition, (long long)rec->offset);
    avro_value_decref(&v);

    if (sm->seen[seq])
        sm->duplicates++;
    else
        sm->consumed++;
    sm->seen[seq] = 1;
    if (sm->consumed == sm->n)
        kf_consumer_stop(sm->consumer);
    return KF_OK;
}

static void
kf_smoke_dr(const kf_kafka_delivery_t *dr, void *msg_opaque)
{
    long *failed = msg_opaque;
    if (dr->err) {
        (*failed)++;
        fprintf(stderr, "kinfer smoke: delivery failed: %s\n", dr->errmsg);
    }
}

int
kf_cmd_smoke(int argc, char **argv)
{
    const char *brokers = getenv("KINFER_KAFKA_BROKERS");
    const char *topic_arg = NULL;
    long n = 10, timeout_ms = 30000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            kf_smoke_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--brokers") && has_val) {
            brokers = argv[++i];
        } else if (!strcmp(a, "--topic") && has_val) {
            topic_arg = argv[++i];
        } else if ((!strcmp(a, "-n") || !strcmp(a, "--count")) && has_val) {
            char *end = NULL;
            n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 100000) {
                fprintf(stderr, "kinfer smoke: -n must be an integer in [1, 100000]\n");
                return 2;
            }
        } else if (!strcmp(a, "--timeout-ms") && has_val) {
            char *end = NULL;
            timeout_ms = strtol(argv[++i], &end, 10);
            if (*end || timeout_ms < 1) {
                fprintf(stderr, "kinfer smoke: --timeout-ms must be a positive integer\n");
                return 2;
            }
        } else {
            fprintf(stderr, "kinfer smoke: unknown or incomplete option '%s'\n\n", a);
            kf_smoke_usage(stderr);
            return 2;
        }
    }
    if (!brokers || !*brokers) {
        fprintf(stderr, "kinfer smoke: no brokers: pass --brokers or set KINFER_KAFKA_BROKERS\n");
        return 2;
    }
    char topic[256], group[300], errstr[512];
    if (topic_arg)
        snprintf(topic, sizeof(topic), "%s", topic_arg);
    else
        snprintf(topic, sizeof(topic), "kinfer.smoke.%d", (int)getpid());
    snprintf(group, sizeof(group), "kinfer.smoke.%d.%ld", (int)getpid(), (long)time(NULL));
    kf_kafka_install_signal_handlers();

    int rc = 1;
    kf_producer_t *producer = NULL;
    kf_smoke_t sm = {.n = n};
    sm.seen = calloc((size_t)n, 1);
    if (!sm.seen) {
        fprintf(stderr, "kinfer smoke: out of memory\n");
        return 1;
    }

    /* The explicit flush below waits for the reports; destroy need not wait again. */
    kf_kafka_kv_t pconf[] = {{"kafka.bootstrap.servers", brokers},
                             {"kafka.linger.ms", "5"},
                             {"producer.flush.timeout.ms", "1000"}};
    const char *topics[] = {topic};
    /* An existing topic is fine (--topic); creation failure is reported but auto-creation
     * may still make the run work. */
    int admin_ms = timeout_ms < 10000 ? (int)timeout_ms : 10000;
    if (kf_kafka_create_topics(pconf, 1, topics, 1, 3, -1, admin_ms, errstr, sizeof(errstr)))
        fprintf(stderr, "kinfer smoke: creating %s: %s (continuing)\n", topic, errstr);

    if (kf_producer_new(pconf, 3, &producer, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer smoke: producer: %s\n", errstr);
        goto out;
    }
    long produced = 0, failed = 0;
    for (long i = 0; i < n; i++) {
        unsigned char *buf = NULL;
        size_t len = 0;
        if (kf_smoke_encode(i, &buf, &len, errstr, sizeof(errstr))) {
            fprintf(stderr, "kinfer smoke: encode: %s\n", errstr);
            goto out;
        }
        char seq[24];
        snprintf(seq, sizeof(seq), "%ld", i);
        const char *sym = kf_smoke_symbols[i % 5];
        kf_kafka_header_t hdrs[] = {{"kf.smoke.seq", seq, strlen(seq)}};
        kf_kafka_msg_t msg = {.topic = topic,
                              .partition = KF_KAFKA_PARTITION_ANY,
                              .key = sym,
                              .key_len = strlen(sym),
                              .value = buf,
                              .value_len = len,
                              .headers = hdrs,
                              .header_count = 1};
        kf_err_t err =
            kf_producer_send_async(producer, &msg, kf_smoke_dr, &failed, errstr, sizeof(errstr));
        free(buf);
        if (err) {
            fprintf(stderr, "kinfer smoke: produce: %s\n", errstr);
            goto out;
        }
    }
    /* --timeout-ms bounds each phase, so an unreachable cluster fails in bounded time. */
    if (kf_producer_flush(producer, (int)timeout_ms, errstr, sizeof(errstr)))
        fprintf(stderr, "kinfer smoke: %s\n", errstr);
    produced = n - failed - kf_producer_outq_len(producer);

    kf_kafka_kv_t cconf[] = {
        {"kafka.bootstrap.servers", brokers}, {"kafka.group.id", group},
        {"kafka.session.timeout.ms", "6000"}, {"kafka.heartbeat.interval.ms", "1000"},
        {"consumer.topics", topic},
    };
    if (kf_consumer_new(cconf, sizeof(cconf) / sizeof(cconf[0]), &sm.consumer, errstr,
                        sizeof(errstr))) {
        fprintf(stderr, "kinfer smoke: consumer: %s\n", errstr);
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long elapsed = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (sm.consumed >= n || elapsed >= timeout_ms || kf_kafka_stop)
            break;
        if (kf_consumer_poll(sm.consumer, kf_smoke_handle, &sm, 100, NULL, errstr,
                             sizeof(errstr)) == KF_ERR_KAFKA) {
            fprintf(stderr, "kinfer smoke: consumer: %s\n", errstr);
            break;
        }
    }
    if (kf_consumer_commit(sm.consumer, errstr, sizeof(errstr)))
        fprintf(stderr, "kinfer smoke: commit: %s\n", errstr);
    printf("produced %ld, consumed %ld", produced, sm.consumed);
    if (sm.duplicates || sm.bad)
        printf(" (%ld duplicates, %ld undecodable)", sm.duplicates, sm.bad);
    printf(" on topic %s\n", topic);
    rc = produced == n && sm.consumed == n && !sm.duplicates && !sm.bad ? 0 : 1;

out:
    kf_consumer_destroy(sm.consumer);
    kf_producer_destroy(producer);
    free(sm.seen);
    return rc;
}
