/*
 * test_enrich_common.c: helpers shared by the feed and enrich integration tests: read a
 * whole topic as a read_committed reader (every partition from the beginning until EOF), and
 * produce Avro records from JSON. Linked into test_feed_it and test_enrich_it.
 */
#include "kf_avro.h"
#include "kf_kafka.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct it_rec {
    int32_t partition;
    int64_t offset;
    char *key; /* NUL-terminated copy, NULL when absent */
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

static int64_t
it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the number of records, or -1 with err set. Records come partition by partition in
 * offset order (sorted after reading). */
static int
it_cmp(const void *a, const void *b)
{
    const it_rec_t *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int
it_read_topic(const char *brokers, const char *topic, it_rec_t **out, char *err, size_t errsz)
{
    char rderr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, NULL, 0);
    /* librdkafka's consumer queue needs a group id even for assign(); it is never joined. */
    rd_kafka_conf_set(conf, "group.id", "kf-it-reader", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "isolation.level", "read_committed", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
    if (!rk) {
        snprintf(err, errsz, "consumer: %s", rderr);
        return -1;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int n = -1, cap = 0, npart = 0;
    it_rec_t *recs = NULL;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(err, errsz, "no metadata for %s", topic);
        goto out;
    }
    npart = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(npart);
    for (int p = 0; p < npart; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    int *eof = calloc((size_t)npart, sizeof(*eof));
    int neof = 0;
    n = 0;
    int64_t deadline = it_now_ms() + 30000;
    while (neof < npart && it_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->partition >= 0 && m->partition < npart && !eof[m->partition]) {
                eof[m->partition] = 1;
                neof++;
            }
        } else if (!m->err) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                recs = realloc(recs, (size_t)cap * sizeof(*recs));
            }
            it_rec_t *r = &recs[n++];
            memset(r, 0, sizeof(*r));
            r->partition = m->partition;
            r->offset = m->offset;
            if (m->key) {
                r->key = malloc(m->key_len + 1);
                memcpy(r->key, m->key, m->key_len);
                r->key[m->key_len] = '\0';
            }
            r->has_value = m->payload != NULL;
            if (m->payload) {
                r->value = malloc(m->len + 1);
                memcpy(r->value, m->payload, m->len);
                r->value_len = m->len;
            }
            rd_kafka_timestamp_type_t tt;
            r->timestamp = rd_kafka_message_timestamp(m, &tt);
        }
        rd_kafka_message_destroy(m);
    }
    free(eof);
    if (neof < npart) {
        snprintf(err, errsz, "%s: only %d of %d partitions reached EOF in 30 s", topic, neof,
                 npart);
        it_recs_free(recs, n);
        recs = NULL;
        n = -1;
        goto out;
    }
    if (n > 1)
        qsort(recs, (size_t)n, sizeof(*recs), it_cmp);
    *out = recs;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

void
it_recs_free(it_rec_t *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].key);
        free(r[i].value);
    }
    free(r);
}

int
it_produce_json(kf_producer_t *p,
                const char *topic,
                const char *schema,
                const char *key,
                const char *json,
                char *err,
                size_t errsz)
{
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    if (!j) {
        snprintf(err, errsz, "bad JSON in test: %s", jerr.text);
        return -1;
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    kf_err_t e = kf_avro_encode_json(kf_avro_schema_get(schema), j, &buf, &len, err, errsz);
    json_decref(j);
    if (e)
        return -1;
    kf_kafka_msg_t msg = {.topic = topic,
                          .partition = KF_KAFKA_PARTITION_ANY,
                          .key = key,
                          .key_len = strlen(key),
                          .value = buf,
                          .value_len = len};
    e = kf_producer_send(p, &msg, NULL, err, errsz);
    free(buf);
    return e ? -1 : 0;
}

/* Sum of the high watermarks of a topic's partitions (records written, for a topic without
 * transactions), or -1. Cheap enough to poll. */
long it_topic_count(const char *brokers, const char *topic);

long
it_topic_count(const char *brokers, const char *topic)
{
    char rderr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, rderr, sizeof(rderr));
    if (!rk)
        return -1;
    long total = -1;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rd_kafka_metadata(rk, 0, rkt, &md, 5000) && md->topic_cnt == 1 && !md->topics[0].err) {
        total = 0;
        for (int p = 0; p < md->topics[0].partition_cnt; p++) {
            int64_t lo = 0, hi = 0;
            if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000)) {
                total = -1;
                break;
            }
            total += (long)hi;
        }
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return total;
}
