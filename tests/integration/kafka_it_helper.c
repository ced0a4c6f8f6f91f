/*
 * kafka_it_helper: the "other process" of the Kafka integration tests (test_kafka_it.c).
 *
 *   kafka_it_helper consume BROKERS TOPIC GROUP MAX IDLE_MS OUTFILE
 *       Group consumer of Avro MarketTick records: appends each record's id (the `volume`
 *       field) to OUTFILE, one per line, flushed before the handler returns. Stops after
 *       MAX records (0: no limit) or IDLE_MS without records, or on SIGTERM; exits 0 after
 *       committing.
 *   kafka_it_helper txn BROKERS IN OUT GROUP TXNID SLOW_MS
 *       Exactly-once stage: copies every input to OUT ("out:" + input value) inside
 *       transactions, sleeping SLOW_MS per record, and prints "committed <total>" to stdout
 *       after each transaction. Runs until SIGTERM (or is killed).
 */
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct consume_state {
    FILE *out;
    long max;
    long handled;
    kf_consumer_t *consumer;
} consume_state_t;

static kf_err_t
consume_handler(const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    consume_state_t *cs = opaque;
    avro_value_t v;
    kf_err_t err =
        kf_avro_decode(NULL, rec->value, rec->value_len, NULL, &v, NULL, errstr, errstr_size);
    if (err)
        return err;
    double id = -1;
    kf_avro_get_double(&v, "volume", &id);
    avro_value_decref(&v);
    /* Written and flushed before the offset is stored: what the file says was processed. */
    fprintf(cs->out, "%ld\n", (long)id);
    fflush(cs->out);
    cs->handled++;
    if (cs->max > 0 && cs->handled >= cs->max)
        kf_consumer_stop(cs->consumer);
    return KF_OK;
}

static int
run_consume(char **argv)
{
    char errstr[512];
    consume_state_t cs = {.max = atol(argv[4])};
    long idle_ms = atol(argv[5]);
    cs.out = fopen(argv[6], "a");
    if (!cs.out) {
        perror(argv[6]);
        return 1;
    }
    kf_kafka_kv_t conf[] = {
        {"kafka.bootstrap.servers", argv[1]}, {"kafka.group.id", argv[3]},
        {"kafka.session.timeout.ms", "6000"}, {"kafka.heartbeat.interval.ms", "1000"},
        {"consumer.topics", argv[2]},
    };
    if (kf_consumer_new(conf, sizeof(conf) / sizeof(conf[0]), &cs.consumer, errstr,
                        sizeof(errstr))) {
        fprintf(stderr, "helper: %s\n", errstr);
        return 1;
    }
    time_t last = time(NULL);
    long before = 0;
    int rc = 0;
    while (!kf_kafka_stop && !(cs.max > 0 && cs.handled >= cs.max)) {
        if (kf_consumer_poll(cs.consumer, consume_handler, &cs, 100, NULL, errstr,
                             sizeof(errstr)) == KF_ERR_KAFKA) {
            fprintf(stderr, "helper: %s\n", errstr);
            rc = 1;
            break;
        }
        if (cs.handled != before) {
            before = cs.handled;
            last = time(NULL);
        } else if ((time(NULL) - last) * 1000 >= idle_ms) {
            break;
        }
    }
    if (kf_consumer_commit(cs.consumer, errstr, sizeof(errstr))) {
        fprintf(stderr, "helper: commit: %s\n", errstr);
        rc = 1;
    }
    kf_consumer_destroy(cs.consumer);
    fclose(cs.out);
    return rc;
}

typedef struct txn_state {
    const char *out_topic;
    long slow_ms;
} txn_state_t;

static kf_err_t
copy_transform(
    kf_txn_t *txn, const kf_kafka_record_t *rec, void *opaque, char *errstr, size_t errstr_size)
{
    txn_state_t *ts = opaque;
    if (ts->slow_ms > 0) {
        struct timespec d = {ts->slow_ms / 1000, (ts->slow_ms % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
    char out[128];
    int n = snprintf(out, sizeof(out), "out:%.*s",
                     (int)(rec->value_len < 100 ? rec->value_len : 100), (const char *)rec->value);
    kf_kafka_msg_t msg = {.topic = ts->out_topic,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .key = rec->key,
                          .key_len = rec->key_len,
                          .value = out,
                          .value_len = (size_t)n};
    return kf_txn_produce(txn, &msg, errstr, errstr_size);
}

static int
run_txn(char **argv)
{
    char errstr[512];
    kf_kafka_kv_t conf[] = {
        {"kafka.bootstrap.servers", argv[1]},
        {"kafka.group.id", argv[4]},
        {"kafka.transactional.id", argv[5]},
        {"kafka.session.timeout.ms", "6000"},
        {"kafka.heartbeat.interval.ms", "1000"},
        {"kafka.transaction.timeout.ms", "30000"},
        {"txn.topics", argv[2]},
        {"txn.batch.max", "10"},
        {"txn.batch.timeout.ms", "100"},
    };
    txn_state_t ts = {.out_topic = argv[3], .slow_ms = atol(argv[6])};
    kf_txn_t *txn = NULL;
    if (kf_txn_new(conf, sizeof(conf) / sizeof(conf[0]), &txn, errstr, sizeof(errstr))) {
        fprintf(stderr, "helper: %s\n", errstr);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    size_t total = 0;
    int rc = 0;
    while (!kf_kafka_stop) {
        size_t n = 0;
        if (kf_txn_poll(txn, copy_transform, &ts, 100, &n, errstr, sizeof(errstr))) {
            fprintf(stderr, "helper: %s\n", errstr);
            rc = 1;
            break;
        }
        if (n) {
            total += n;
            printf("committed %zu\n", total);
            fflush(stdout);
        }
    }
    kf_txn_destroy(txn);
    return rc;
}

int
main(int argc, char **argv)
{
    if (!getenv("KINFER_LOG_LEVEL"))
        kf_log_set_level(KF_LOG_WARN);
    kf_kafka_install_signal_handlers();
    if (argc == 8 && !strcmp(argv[1], "consume"))
        return run_consume(argv + 1);
    if (argc == 8 && !strcmp(argv[1], "txn"))
        return run_txn(argv + 1);
    fprintf(stderr, "usage: kafka_it_helper consume BROKERS TOPIC GROUP MAX IDLE_MS OUTFILE\n"
                    "       kafka_it_helper txn BROKERS IN OUT GROUP TXNID SLOW_MS\n");
    return 2;
}
