/*
 * audit.c: `kinfer audit` (AuditEvent -> search engine) and `kinfer audit search` (see
 * kf_auditor.h for the contract).
 *
 * A bulk is the unit of progress: its records are read, mapped, indexed until every item is
 * either in the index (created or already there) or dead-lettered, and only then are the
 * offsets committed. A crash anywhere before the commit re-reads the bulk, and the `create`
 * action with the event id as _id turns the repeat into 409s: exactly one document per event.
 */
#include "kf_auditor.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch_int.h"
#include "kf_audit.h"
#include "kf_avro.h"
#include "kf_kafka.h"
#include "kf_log.h"

const kf_conf_prop_t kf_auditor_conf_props[] = {
    {.name = "audit.group.id",
     .type = KF_CONF_STRING,
     .def = "kinfer-audit",
     .desc = "Kafka consumer group of the audit indexer."},
    {.name = "audit.index.prefix",
     .type = KF_CONF_STRING,
     .def = "kinfer-audit-",
     .desc = "Audit events go to daily indexes named prefix + YYYY.MM.DD."},
    {.name = "audit.template.name",
     .type = KF_CONF_STRING,
     .def = "kinfer-audit",
     .desc = "Name of the composable index template installed at start."},
    {.name = "audit.template.install",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Install (or update) the index template at start."},
    {.name = "audit.bulk.max",
     .type = KF_CONF_INT,
     .def = "500",
     .min = 1,
     .max = 10000,
     .desc = "Most events per _bulk request."},
    {.name = "audit.bulk.linger",
     .type = KF_CONF_DURATION,
     .def = "1s",
     .min = 0,
     .max = 60000,
     .desc = "How long a bulk gathers events after its first one."},
    {.name = "audit.retry.backoff",
     .type = KF_CONF_DURATION,
     .def = "500ms",
     .min = 10,
     .max = 60000,
     .desc = "First wait before re-sending items the engine refused retriably (429, 5xx)."},
    {.name = "audit.retry.backoff.max",
     .type = KF_CONF_DURATION,
     .def = "30s",
     .min = 10,
     .max = 600000,
     .desc = "Longest wait between re-sends (the backoff doubles up to it)."},
    {.name = "audit.topics.create",
     .type = KF_CONF_BOOL,
     .def = "true",
     .desc = "Create the audit topic and its dead-letter topic at start (idempotent)."},
    {.name = "audit.topics.partitions",
     .type = KF_CONF_INT,
     .def = "3",
     .min = 1,
     .max = 1000,
     .desc = "Partitions of topics the auditor creates."},
    {.name = NULL}};

kf_err_t
kf_auditor_conf_register(kf_conf_t *conf, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_conf_add_table(conf, "audit", kf_auditor_conf_props, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_conf_add_table(conf, "search", kf_search_conf_props, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_register_topics(conf, errstr, errstr_size);
    return err;
}

/* ---- template and mapping ----------------------------------------------------------------- */

static json_t *
kf_au_kw(void)
{
    return json_pack("{ss}", "type", "keyword");
}

json_t *
kf_auditor_template(const char *index_prefix)
{
    char pattern[256];
    snprintf(pattern, sizeof(pattern), "%s*", index_prefix);
    /* Every field the mapping produces is typed here, so the first document of a day cannot
     * guess a wrong type (a request id that looks like a date, a duration as float). */
    json_t *props = json_pack(
        "{s{ss} s{ss} "
        "s{s{so so so so so so so}} "
        "s{s{so}} s{s{so}} s{s{so so}} "
        "s{s{so so so s{ss} s{ss sb}}}}",
        "@timestamp", "type", "date", "message", "type", "text",
        /* event */
        "event", "properties", "id", kf_au_kw(), "action", kf_au_kw(), "outcome", kf_au_kw(),
        "kind", kf_au_kw(), "dataset", kf_au_kw(), "provider", kf_au_kw(), "duration",
        json_pack("{ss}", "type", "long"),
        /* trace, service, labels */
        "trace", "properties", "id", kf_au_kw(), "service", "properties", "name", kf_au_kw(),
        "labels", "properties", "tenant_id", kf_au_kw(), "request_id", kf_au_kw(),
        /* kinfer */
        "kinfer", "properties", "stage", kf_au_kw(), "outcome", kf_au_kw(), "model", kf_au_kw(),
        "tokens", "type", "long", "attributes", "type", "object", "dynamic", 1);
    json_t *dyn = json_pack("[{s{ss s{ss si}}}]", "attributes_as_keywords", "match_mapping_type",
                            "string", "mapping", "type", "keyword", "ignore_above", 1024);
    return json_pack(
        "{s[s] si s{s{si si ss} s{so so}} s{ss ss}}", "index_patterns", pattern, "priority", 100,
        "template", "settings", "number_of_shards", 1, "number_of_replicas", 0, "refresh_interval",
        "1s", "mappings", "dynamic_templates", dyn, "properties", props, "_meta", "description",
        "kinfer audit events (AuditEvent.avsc), ECS-style fields", "managed_by", "kinfer audit");
}

static const char *
kf_au_str(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ECS event.outcome allows success, failure and unknown only. */
static const char *
kf_au_ecs_outcome(const char *o)
{
    if (!o)
        return "unknown";
    if (!strcmp(o, "success"))
        return "success";
    if (!strcmp(o, "failure") || !strcmp(o, "rejected"))
        return "failure";
    return "unknown";
}

kf_err_t
kf_auditor_event_to_doc(const json_t *ev,
                        const char *index_prefix,
                        json_t **out_doc,
                        char out_index[256],
                        char *errstr,
                        size_t errstr_size)
{
    const char *id = kf_au_str(ev, "event_id");
    const char *action = kf_au_str(ev, "action");
    const char *stage = kf_au_str(ev, "stage");
    json_t *ts = json_object_get(ev, "ts");
    if (!id || !*id || !action || !*action || !stage || !json_is_integer(ts))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "AuditEvent needs event_id, ts, action and stage");
    if (strlen(id) > 512)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "event_id longer than 512");
    int64_t ms = json_integer_value(ts);
    char iso[32];
    kf_dq_iso8601(ms, iso);
    /* The day of the index comes from the same UTC time as @timestamp. */
    int n = snprintf(out_index, 256, "%s%.4s.%.2s.%.2s", index_prefix, iso, iso + 5, iso + 8);
    if (n < 0 || n >= 256 || !kf_search_valid_index(out_index, 0))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "index name '%.200s' is not valid", out_index);

    json_t *event = json_pack("{ss ss ss ss ss ss}", "id", id, "action", action, "outcome",
                              kf_au_ecs_outcome(kf_au_str(ev, "outcome")), "kind", "event",
                              "dataset", "kinfer.audit", "provider", stage);
    json_t *dur = json_object_get(ev, "duration_ms");
    if (json_is_number(dur) && json_number_value(dur) >= 0)
        json_object_set_new(event, "duration",
                            json_integer((json_int_t)(json_number_value(dur) * 1e6)));
    json_t *kinfer = json_pack("{ss ss}", "stage", stage, "outcome",
                               kf_au_str(ev, "outcome") ? kf_au_str(ev, "outcome") : "success");
    if (kf_au_str(ev, "model"))
        json_object_set_new(kinfer, "model", json_string(kf_au_str(ev, "model")));
    json_t *tok = json_object_get(ev, "tokens");
    if (json_is_integer(tok))
        json_object_set(kinfer, "tokens", tok);
    json_t *attrs = json_object_get(ev, "attributes");
    if (json_is_object(attrs) && json_object_size(attrs) > 0)
        json_object_set(kinfer, "attributes", attrs);
    json_t *labels = json_object();
    if (kf_au_str(ev, "tenant_id"))
        json_object_set_new(labels, "tenant_id", json_string(kf_au_str(ev, "tenant_id")));
    if (kf_au_str(ev, "request_id"))
        json_object_set_new(labels, "request_id", json_string(kf_au_str(ev, "request_id")));
    const char *msg = kf_au_str(ev, "message");
    json_t *doc =
        json_pack("{ss ss so s{ss} so so}", "@timestamp", iso, "message", msg ? msg : "", "event",
                  event, "service", "name", "kinfer", "labels", labels, "kinfer", kinfer);
    if (!doc)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "cannot build document");
    if (kf_au_str(ev, "trace_id") && *kf_au_str(ev, "trace_id"))
        json_object_set_new(doc, "trace", json_pack("{ss}", "id", kf_au_str(ev, "trace_id")));
    *out_doc = doc;
    return KF_OK;
}

/* ---- search ------------------------------------------------------------------------------- */

/* Non-zero when a search value is unusable: over 512 bytes or not valid UTF-8. */
static int
kf_au_bad_value(const char *s)
{
    if (!s)
        return 0;
    if (strlen(s) > 512)
        return 1;
    json_t *probe = json_string(s); /* jansson refuses invalid UTF-8 */
    json_decref(probe);
    return probe == NULL;
}

kf_err_t
kf_auditor_query_body(const kf_audit_query_t *q,
                      json_t **out_body,
                      char *errstr,
                      size_t errstr_size)
{
    int limit = q->limit ? q->limit : 100;
    if (limit < 1 || limit > 10000)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "limit must be between 1 and 10000");
    if (kf_au_bad_value(q->request_id) || kf_au_bad_value(q->tenant_id) ||
        kf_au_bad_value(q->action) || kf_au_bad_value(q->since) || kf_au_bad_value(q->until) ||
        kf_au_bad_value(q->text))
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "a search value is longer than 512 bytes or not valid UTF-8");
    json_t *filter = json_array();
    struct {
        const char *field, *value;
    } terms[] = {
        {"labels.request_id", q->request_id},
        {"labels.tenant_id", q->tenant_id},
        {"event.action", q->action},
    };
    for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++)
        if (terms[i].value)
            json_array_append_new(filter,
                                  json_pack("{s{ss}}", "term", terms[i].field, terms[i].value));
    if (q->since || q->until) {
        json_t *range = json_object();
        if (q->since)
            json_object_set_new(range, "gte", json_string(q->since));
        if (q->until)
            json_object_set_new(range, "lte", json_string(q->until));
        json_array_append_new(filter, json_pack("{s{so}}", "range", "@timestamp", range));
    }
    json_t *bool_q = json_pack("{so}", "filter", filter);
    if (q->text)
        json_object_set_new(
            bool_q, "must",
            json_pack("[{s{s{ss ss}}}]", "match", "message", "query", q->text, "operator", "and"));
    json_t *body =
        json_pack("{si sb s[{ss}{ss}] s{so}}", "size", limit, "track_total_hits", 1, "sort",
                  "@timestamp", "asc", "event.id", "asc", "query", "bool", bool_q);
    if (!body)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "search values must be valid UTF-8");
    *out_body = body;
    return KF_OK;
}

kf_err_t
kf_auditor_search(kf_search_t *search,
                  const char *index_pattern,
                  const kf_audit_query_t *q,
                  int64_t *out_total,
                  json_t **out_hits,
                  char *errstr,
                  size_t errstr_size)
{
    json_t *body = NULL;
    kf_err_t err = kf_auditor_query_body(q, &body, errstr, errstr_size);
    if (err != KF_OK)
        return err;
    err = kf_search_search(search, index_pattern, body, out_total, out_hits, errstr, errstr_size);
    json_decref(body);
    return err;
}

/* ---- the indexer -------------------------------------------------------------------------- */

struct kf_auditor {
    rd_kafka_t *rk;
    kf_producer_t *producer; /* dead letters */
    kf_search_t *search;
    char *topic, *dlq_topic, *prefix;
    int64_t bulk_max, linger_ms, backoff_ms, backoff_max_ms;
    rd_kafka_message_t **carry; /* read while a bulk was paused; first in the next bulk */
    size_t ncarry, cap_carry;
    struct {
        _Atomic uint64_t records, indexed, duplicates, retried, dead_lettered, bulks;
    } st;
};

#define KF_AU_ADD(a, f, n) atomic_fetch_add_explicit(&(a)->st.f, (n), memory_order_relaxed)

/* One record of a bulk and what became of it. */
typedef struct kf_au_item {
    rd_kafka_message_t *rkm;
    json_t *doc; /* NULL when the record was dead-lettered or is done */
    char index[256];
    char id[520];
    int done;
} kf_au_item_t;

static void
kf_au_dead_letter(kf_auditor_t *a, const rd_kafka_message_t *rkm, kf_err_t why_err, const char *why)
{
    char perr[256];
    kf_err_t err = kf_dq_dead_letter(a->producer, a->dlq_topic, rkm, "audit", why_err, why, perr,
                                     sizeof(perr));
    if (err != KF_OK)
        kf_log(KF_LOG_ERROR, "audit", "dead letter to %s failed: %s", a->dlq_topic, perr);
    else
        KF_AU_ADD(a, dead_lettered, 1);
    kf_log(KF_LOG_WARN, "audit", "record %s[%d]@%lld dead-lettered: %s",
           rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, (long long)rkm->offset, why);
}

/* Waits `ms` with every assigned partition paused, still polling so the group membership and
 * max.poll.interval.ms hold. Anything a poll returns is carried to the next bulk. */
static void
kf_au_pause_wait(kf_auditor_t *a, int64_t ms, volatile sig_atomic_t *stop)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(a->rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts)
        rd_kafka_pause_partitions(a->rk, parts);
    int64_t end = kf_dq_mono_ms() + ms;
    while (!(stop && *stop) && !kf_kafka_stop) {
        int64_t left = end - kf_dq_mono_ms();
        if (left <= 0)
            break;
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(a->rk, (int)(left < 100 ? left : 100));
        if (!rkm)
            continue;
        if (rkm->err || a->ncarry == a->cap_carry) {
            size_t ncap = a->cap_carry ? a->cap_carry * 2 : 64;
            rd_kafka_message_t **nc = rkm->err ? NULL : realloc(a->carry, ncap * sizeof(*nc));
            if (!nc) {
                rd_kafka_message_destroy(rkm);
                continue;
            }
            a->carry = nc;
            a->cap_carry = ncap;
        }
        a->carry[a->ncarry++] = rkm;
    }
    if (parts) {
        rd_kafka_resume_partitions(a->rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
    }
}

/* Indexes the mapped items of a bulk until none is left to retry: each round sends every
 * pending item once (one _bulk per index: a bulk almost always spans one day), then waits out
 * a growing backoff if some were refused retriably. KF_ERR_CANCELLED when stopped first. */
static kf_err_t
kf_au_index(kf_auditor_t *a, kf_au_item_t *items, size_t n, volatile sig_atomic_t *stop)
{
    kf_search_doc_t *docs = calloc(n ? n : 1, sizeof(*docs));
    kf_search_item_t *res = calloc(n ? n : 1, sizeof(*res));
    size_t *which = calloc(n ? n : 1, sizeof(*which));
    unsigned char *sent = calloc(n ? n : 1, 1);
    kf_err_t ret = KF_OK;
    if (!docs || !res || !which || !sent) {
        ret = KF_ERR_NOMEM;
        goto out;
    }
    int64_t backoff = a->backoff_ms;
    for (;;) {
        int retry_left = 0;
        memset(sent, 0, n);
        for (size_t i = 0; i < n; i++) {
            if (items[i].done || !items[i].doc || sent[i])
                continue;
            const char *index = items[i].index;
            size_t nd = 0;
            for (size_t j = i; j < n; j++) {
                if (items[j].done || !items[j].doc || sent[j] || strcmp(items[j].index, index))
                    continue;
                sent[j] = 1;
                docs[nd].id = items[j].id;
                docs[nd].source = items[j].doc;
                which[nd++] = j;
            }
            char errstr[512];
            kf_search_bulk_stats_t bs = {0};
            kf_err_t err =
                kf_search_bulk_create(a->search, index, docs, nd, res, &bs, errstr, sizeof(errstr));
            if (err != KF_OK && !kf_err_is_retriable(err)) {
                /* The request itself was refused (bad index name...): no item can succeed. */
                for (size_t k = 0; k < nd; k++) {
                    kf_au_dead_letter(a, items[which[k]].rkm, err, errstr);
                    items[which[k]].done = 1;
                }
                continue;
            }
            if (err != KF_OK)
                kf_log(KF_LOG_WARN, "audit", "bulk to %s failed, will retry: %s", index, errstr);
            for (size_t k = 0; k < nd; k++) {
                kf_au_item_t *it = &items[which[k]];
                switch (res[k].status) {
                case KF_SEARCH_ITEM_CREATED:
                    KF_AU_ADD(a, indexed, 1);
                    it->done = 1;
                    break;
                case KF_SEARCH_ITEM_EXISTS:
                    KF_AU_ADD(a, duplicates, 1);
                    it->done = 1;
                    break;
                case KF_SEARCH_ITEM_FAILED:
                    kf_au_dead_letter(a, it->rkm, KF_ERR_INVALID_ARG, res[k].error);
                    it->done = 1;
                    break;
                case KF_SEARCH_ITEM_RETRY:
                    /* Only this item goes again; the others of the bulk are done. */
                    KF_AU_ADD(a, retried, 1);
                    retry_left = 1;
                    break;
                }
            }
        }
        if (!retry_left)
            break;
        if ((stop && *stop) || kf_kafka_stop) {
            ret = KF_ERR_CANCELLED;
            break;
        }
        kf_au_pause_wait(a, backoff, stop);
        backoff = backoff * 2 > a->backoff_max_ms ? a->backoff_max_ms : backoff * 2;
    }
out:
    free(docs);
    free(res);
    free(which);
    free(sent);
    return ret;
}

kf_err_t
kf_auditor_poll(
    kf_auditor_t *a, int timeout_ms, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    size_t cap = (size_t)a->bulk_max;
    kf_au_item_t *items = calloc(cap, sizeof(*items));
    if (!items)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    size_t n = 0;
    kf_err_t ret = KF_OK;
    /* Gather: carried records first, then up to bulk.max or until the linger ends. */
    while (n < cap && a->ncarry > 0) {
        items[n++].rkm = a->carry[0];
        memmove(a->carry, a->carry + 1, (a->ncarry - 1) * sizeof(*a->carry));
        a->ncarry--;
    }
    int64_t deadline = -1;
    while (n < cap) {
        int wait;
        if (n == 0) {
            wait = timeout_ms;
        } else {
            if (deadline < 0)
                deadline = kf_dq_mono_ms() + a->linger_ms;
            int64_t left = deadline - kf_dq_mono_ms();
            if (left <= 0)
                break;
            wait = (int)left;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(a->rk, wait);
        if (!rkm) {
            if (n == 0)
                break;
            continue;
        }
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kf_log(KF_LOG_WARN, "audit", "consumer: %s", rd_kafka_message_errstr(rkm));
            int fatal = rd_kafka_fatal_error(a->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR;
            rd_kafka_message_destroy(rkm);
            if (fatal) {
                ret = kf_err_set(errstr, errstr_size, KF_ERR_KAFKA, "fatal consumer error");
                goto out;
            }
            if (n == 0)
                break;
            continue;
        }
        items[n++].rkm = rkm;
        if (n == 1 && deadline < 0)
            deadline = kf_dq_mono_ms() + a->linger_ms;
    }
    if (n == 0)
        goto out;
    KF_AU_ADD(a, records, n);

    /* Map: poison records go to the dead-letter topic right away. */
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *rkm = items[i].rkm;
        json_t *ev = NULL;
        char why[512];
        kf_err_t err = rkm->len == 0 ? kf_err_set(why, sizeof(why), KF_ERR_PARSE, "empty record")
                                     : kf_avro_decode_json(NULL, rkm->payload, rkm->len,
                                                           kf_avro_schema_get(KF_AVRO_AUDIT_EVENT),
                                                           &ev, NULL, why, sizeof(why));
        if (err == KF_OK)
            err = kf_auditor_event_to_doc(ev, a->prefix, &items[i].doc, items[i].index, why,
                                          sizeof(why));
        if (err == KF_OK) {
            const char *id = kf_au_str(ev, "event_id");
            snprintf(items[i].id, sizeof(items[i].id), "%s", id);
        } else {
            kf_au_dead_letter(a, rkm, err, why);
            items[i].done = 1;
        }
        json_decref(ev);
    }

    ret = kf_au_index(a, items, n, stop);
    if (ret != KF_OK) {
        kf_err_set(errstr, errstr_size, ret, "stopped before the bulk was indexed");
        goto out;
    }

    /* Every item is in the index or dead-lettered: commit the bulk. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *rkm = items[i].rkm;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, rd_kafka_topic_name(rkm->rkt), rkm->partition);
        if (!tp)
            tp =
                rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(rkm->rkt), rkm->partition);
        if (rkm->offset + 1 > tp->offset)
            tp->offset = rkm->offset + 1;
    }
    rd_kafka_resp_err_t rerr = rd_kafka_commit(a->rk, l, 0);
    rd_kafka_topic_partition_list_destroy(l);
    if (rerr)
        kf_log(KF_LOG_WARN, "audit", "commit failed (the bulk will be re-read, harmlessly): %s",
               rd_kafka_err2str(rerr));
    else
        KF_AU_ADD(a, bulks, 1);
out:
    for (size_t i = 0; i < n; i++) {
        json_decref(items[i].doc);
        rd_kafka_message_destroy(items[i].rkm);
    }
    free(items);
    return ret;
}

void
kf_auditor_get_stats(const kf_auditor_t *a, kf_auditor_stats_t *o)
{
    kf_auditor_t *m = (kf_auditor_t *)a;
    o->records = atomic_load(&m->st.records);
    o->indexed = atomic_load(&m->st.indexed);
    o->duplicates = atomic_load(&m->st.duplicates);
    o->retried = atomic_load(&m->st.retried);
    o->dead_lettered = atomic_load(&m->st.dead_lettered);
    o->bulks = atomic_load(&m->st.bulks);
}

kf_err_t
kf_auditor_new(const kf_conf_t *conf, kf_auditor_t **out, char *errstr, size_t errstr_size)
{
    kf_dq_kv_t kv = {0};
    kf_err_t err;
    kf_auditor_t *a = calloc(1, sizeof(*a));
    if (!a)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    a->topic = strdup(kf_dq_topic(conf, "topics.audit", KF_AUDIT_TOPIC_DEFAULT));
    a->prefix = strdup(kf_conf_get_str(conf, "audit.index.prefix"));
    size_t dlq_size = a->topic ? strlen(a->topic) + 5 : 0;
    a->dlq_topic = a->topic ? malloc(dlq_size) : NULL;
    if (!a->topic || !a->prefix || !a->dlq_topic) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        goto fail;
    }
    snprintf(a->dlq_topic, dlq_size, "%s.dlq", a->topic);
    a->bulk_max = kf_conf_get_int(conf, "audit.bulk.max");
    a->linger_ms = kf_conf_get_duration_ms(conf, "audit.bulk.linger");
    a->backoff_ms = kf_conf_get_duration_ms(conf, "audit.retry.backoff");
    a->backoff_max_ms = kf_conf_get_duration_ms(conf, "audit.retry.backoff.max");
    char probe[256];
    snprintf(probe, sizeof(probe), "%s2000.01.01", a->prefix);
    if (!kf_search_valid_index(probe, 0)) {
        err = kf_err_set(errstr, errstr_size, KF_ERR_CONFIG,
                         "audit.index.prefix '%s' does not make valid index names", a->prefix);
        goto fail;
    }

    kf_search_opts_t so;
    kf_search_opts_from_conf(conf, &so);
    err = kf_search_new(&so, &a->search, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    if (kf_conf_get_bool(conf, "audit.template.install")) {
        json_t *tpl = kf_auditor_template(a->prefix);
        err = kf_search_put_template(a->search, kf_conf_get_str(conf, "audit.template.name"), tpl,
                                     errstr, errstr_size);
        json_decref(tpl);
        if (err != KF_OK)
            goto fail;
    }
    err = kf_dq_kv_build(conf, &kv, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    if (kf_conf_get_bool(conf, "audit.topics.create")) {
        const char *topics[] = {a->topic, a->dlq_topic};
        err = kf_kafka_create_topics(kv.kv, kv.n, topics, 2,
                                     (int)kf_conf_get_int(conf, "audit.topics.partitions"), -1,
                                     15000, errstr, errstr_size);
        if (err != KF_OK)
            goto fail;
    }
    err = kf_producer_new(kv.kv, kv.n, &a->producer, errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_consumer_new(&kv, kf_conf_get_str(conf, "audit.group.id"), NULL, a, &a->rk,
                                 errstr, errstr_size);
    if (err == KF_OK)
        err = kf_dq_subscribe(a->rk, (const char *const *)&a->topic, 1, errstr, errstr_size);
    if (err != KF_OK)
        goto fail;
    kf_dq_kv_free(&kv);
    kf_log(KF_LOG_INFO, "audit", "indexing %s into %s* (bulks of %lld)", a->topic, a->prefix,
           (long long)a->bulk_max);
    *out = a;
    return KF_OK;
fail:
    kf_dq_kv_free(&kv);
    kf_auditor_destroy(a);
    return err;
}

void
kf_auditor_destroy(kf_auditor_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->ncarry; i++)
        rd_kafka_message_destroy(a->carry[i]);
    free(a->carry);
    if (a->rk) {
        rd_kafka_consumer_close(a->rk);
        rd_kafka_destroy(a->rk);
    }
    kf_producer_destroy(a->producer);
    kf_search_destroy(a->search);
    free(a->topic);
    free(a->dlq_topic);
    free(a->prefix);
    free(a);
}

kf_err_t
kf_auditor_run(const kf_conf_t *conf, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    kf_auditor_t *a;
    kf_err_t err = kf_auditor_new(conf, &a, errstr, errstr_size);
    if (err != KF_OK)
        return err;
    while (!*stop && !kf_kafka_stop) {
        err = kf_auditor_poll(a, 200, stop, errstr, errstr_size);
        if (err == KF_ERR_CANCELLED) {
            err = KF_OK;
            break;
        }
        if (err != KF_OK)
            break;
    }
    kf_auditor_destroy(a);
    return err;
}

/* ---- `kinfer audit` ----------------------------------------------------------------------- */

static void
kf_au_usage(FILE *fp)
{
    fprintf(
        fp,
        "Usage: kinfer audit [--config FILE] [--set KEY=VALUE]... [--dump-config]\n"
        "       kinfer audit search [--request-id ID] [--tenant T] [--action A]\n"
        "                           [--since TS] [--until TS] [--text \"words\"]\n"
        "                           [--limit N] [--json] [--config FILE]\n\n"
        "The first form indexes AuditEvent records from topics.audit into the search\n"
        "engine (daily indexes audit.index.prefix + YYYY.MM.DD) until SIGTERM/SIGINT.\n"
        "The second finds events, oldest first, and prints a table (or one JSON document\n"
        "per line with --json) followed by the total number of matches.\n"
        "TS is ISO 8601 (2026-01-02T03:04:05Z), epoch milliseconds or date math (now-1h).\n\n"
        "Environment: KINFER_SEARCH_URL, KINFER_KAFKA_BROKERS, KINFER_<KEY>. See docs/audit.md.\n");
}

/* Loads conf from --config / environment / --set; argv entries it consumed are set to NULL. */
static kf_err_t
kf_au_load_conf(kf_conf_t *conf, int argc, char **argv, int *dump, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_auditor_conf_register(conf, errstr, errstr_size);
    for (int i = 1; err == KF_OK && i < argc; i++)
        if (argv[i] && !strcmp(argv[i], "--config") && i + 1 < argc) {
            err = kf_conf_load_file(conf, argv[i + 1], errstr, errstr_size);
            argv[i] = argv[i + 1] = NULL;
            i++;
        }
    if (err == KF_OK)
        err = kf_conf_load_env(conf, NULL, errstr, errstr_size);
    for (int i = 1; err == KF_OK && i < argc; i++) {
        if (!argv[i])
            continue;
        if (!strcmp(argv[i], "--dump-config")) {
            *dump = 1;
            argv[i] = NULL;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            err = kf_conf_set_assignment(conf, argv[i + 1], errstr, errstr_size);
            argv[i] = argv[i + 1] = NULL;
            i++;
        }
    }
    if (err == KF_OK)
        kf_conf_apply_core(conf);
    return err;
}

static void
kf_au_print_row(json_t *src)
{
    json_t *ev = json_object_get(src, "event");
    json_t *lab = json_object_get(src, "labels");
    json_t *kin = json_object_get(src, "kinfer");
    const char *ts = kf_au_str(src, "@timestamp");
    const char *action = kf_au_str(ev, "action");
    const char *outcome = kf_au_str(kin, "outcome");
    const char *stage = kf_au_str(kin, "stage");
    const char *rid = kf_au_str(lab, "request_id");
    const char *msg = kf_au_str(src, "message");
    printf("%-24s  %-22s  %-8s  %-9s  %-36s  %s\n", ts ? ts : "-", action ? action : "-",
           outcome ? outcome : "-", stage ? stage : "-", rid ? rid : "-", msg ? msg : "");
}

static int
kf_au_cmd_search(int argc, char **argv)
{
    char errstr[512];
    kf_audit_query_t q = {0};
    int json_out = 0, dump = 0;
    kf_conf_t *conf = kf_conf_new();
    kf_err_t err = kf_au_load_conf(conf, argc, argv, &dump, errstr, sizeof(errstr));
    for (int i = 1; err == KF_OK && i < argc; i++) {
        if (!argv[i])
            continue;
        const char *o = argv[i];
        const char **slot = NULL;
        if (!strcmp(o, "--json")) {
            json_out = 1;
            continue;
        }
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            kf_au_usage(stdout);
            kf_conf_destroy(conf);
            return 0;
        }
        if (!strcmp(o, "--request-id"))
            slot = &q.request_id;
        else if (!strcmp(o, "--tenant"))
            slot = &q.tenant_id;
        else if (!strcmp(o, "--action"))
            slot = &q.action;
        else if (!strcmp(o, "--since"))
            slot = &q.since;
        else if (!strcmp(o, "--until"))
            slot = &q.until;
        else if (!strcmp(o, "--text"))
            slot = &q.text;
        if ((slot || !strcmp(o, "--limit")) && i + 1 < argc && argv[i + 1]) {
            if (slot) {
                *slot = argv[++i];
                continue;
            }
            char *end = NULL;
            long v = strtol(argv[++i], &end, 10);
            if (!*argv[i] || *end || v < 1 || v > 10000) {
                err = kf_err_set(errstr, sizeof(errstr), KF_ERR_INVALID_ARG,
                                 "--limit '%s' must be a number from 1 to 10000", argv[i]);
                break;
            }
            q.limit = (int)v;
            continue;
        }
        err = kf_err_set(errstr, sizeof(errstr), KF_ERR_INVALID_ARG,
                         "unknown or incomplete option '%s'", o);
    }
    if (err != KF_OK) {
        fprintf(stderr, "kinfer audit search: %s\n", errstr);
        kf_conf_destroy(conf);
        return 2;
    }
    kf_search_opts_t so;
    kf_search_opts_from_conf(conf, &so);
    kf_search_t *search = NULL;
    char pattern[256];
    snprintf(pattern, sizeof(pattern), "%s*", kf_conf_get_str(conf, "audit.index.prefix"));
    int64_t total = 0;
    json_t *hits = NULL;
    err = kf_search_new(&so, &search, errstr, sizeof(errstr));
    if (err == KF_OK)
        err = kf_auditor_search(search, pattern, &q, &total, &hits, errstr, sizeof(errstr));
    kf_search_destroy(search);
    kf_conf_destroy(conf);
    if (err == KF_ERR_NOT_FOUND) {
        /* No audit index yet: nothing matches. */
        total = 0;
        hits = json_array();
        err = KF_OK;
    }
    if (err != KF_OK) {
        fprintf(stderr, "kinfer audit search: %s\n", errstr);
        return 1;
    }
    if (!json_out)
        printf("%-24s  %-22s  %-8s  %-9s  %-36s  %s\n", "TIME", "ACTION", "OUTCOME", "STAGE",
               "REQUEST", "MESSAGE");
    size_t i;
    json_t *hit;
    json_array_foreach(hits, i, hit)
    {
        json_t *src = json_object_get(hit, "_source");
        if (!json_is_object(src))
            continue;
        if (json_out) {
            char *line = json_dumps(src, JSON_COMPACT);
            if (line)
                printf("%s\n", line);
            free(line);
        } else {
            kf_au_print_row(src);
        }
    }
    if (!json_out)
        printf("%zu of %lld events\n", json_array_size(hits), (long long)total);
    json_decref(hits);
    return 0;
}

int
kf_cmd_audit(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "search"))
        return kf_au_cmd_search(argc - 1, argv + 1);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            kf_au_usage(stdout);
            return 0;
        }
    char errstr[512];
    int dump = 0;
    kf_conf_t *conf = kf_conf_new();
    kf_err_t err = kf_au_load_conf(conf, argc, argv, &dump, errstr, sizeof(errstr));
    for (int i = 1; err == KF_OK && i < argc; i++)
        if (argv[i])
            err = kf_err_set(errstr, sizeof(errstr), KF_ERR_INVALID_ARG,
                             "unknown or incomplete option '%s'", argv[i]);
    if (err != KF_OK) {
        fprintf(stderr, "kinfer audit: %s\n", errstr);
        kf_conf_destroy(conf);
        return 2;
    }
    if (dump) {
        kf_conf_dump(conf, stdout);
        kf_conf_destroy(conf);
        return 0;
    }
    kf_kafka_install_signal_handlers();
    err = kf_auditor_run(conf, &kf_kafka_stop, errstr, sizeof(errstr));
    kf_conf_destroy(conf);
    if (err != KF_OK) {
        fprintf(stderr, "kinfer audit: %s\n", errstr);
        return 1;
    }
    return 0;
}
