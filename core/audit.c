/*
 * AuditEvent emitter: JSON -> Avro single-object bytes -> async send on the audit topic.
 * Building the record through kf_avro_encode_json keeps the schema the only definition of
 * the event's shape: a field added there with a default needs no change here.
 */
#include "kf_audit.h"

#include "kf_avro.h"
#include "kf_log.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kf_audit {
    kf_producer_t *producer;
    const kf_avro_schema_t *schema;
    char *topic;
    atomic_uint_least64_t sent;
    atomic_uint_least64_t failed;
};

static const char *const kf_audit_outcomes[] = {"success", "failure", "rejected", "retry"};

int64_t
kf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

kf_err_t
kf_uuid4(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return KF_ERR_INTERNAL;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return KF_OK;
}

kf_err_t
kf_audit_new(
    kf_producer_t *producer, const char *topic, kf_audit_t **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (!producer)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "audit: no producer");
    const kf_avro_schema_t *schema = kf_avro_schema_get(KF_AVRO_AUDIT_EVENT);
    if (!schema)
        return kf_err_set(errstr, errstr_size, KF_ERR_INTERNAL,
                          "audit: schema %s missing from the catalog", KF_AVRO_AUDIT_EVENT);
    kf_audit_t *audit = calloc(1, sizeof(*audit));
    if (!audit || !(audit->topic = strdup(topic ? topic : KF_AUDIT_TOPIC_DEFAULT))) {
        free(audit);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "audit: out of memory");
    }
    audit->producer = producer;
    audit->schema = schema;
    *out = audit;
    return KF_OK;
}

void
kf_audit_destroy(kf_audit_t *audit)
{
    if (!audit)
        return;
    free(audit->topic);
    free(audit);
}

uint64_t
kf_audit_sent(const kf_audit_t *audit)
{
    return audit ? atomic_load(&audit->sent) : 0;
}

uint64_t
kf_audit_failed(const kf_audit_t *audit)
{
    return audit ? atomic_load(&audit->failed) : 0;
}

static void
kf_audit_delivered(const kf_kafka_delivery_t *dr, void *opaque)
{
    kf_audit_t *audit = opaque;
    if (dr->err != KF_OK) {
        atomic_fetch_add(&audit->failed, 1);
        kf_log(KF_LOG_WARN, "audit", "audit event not delivered to %s: %s", dr->topic, dr->errmsg);
    }
}

/* Sets obj[key] to a string, or to null when s is NULL. */
static void
kf_audit_set_str(json_t *obj, const char *key, const char *s)
{
    json_object_set_new(obj, key, s ? json_string(s) : json_null());
}

kf_err_t
kf_audit_emit(kf_audit_t *audit, const kf_audit_event_t *ev)
{
    char errstr[256], event_id[37];
    unsigned char *buf = NULL;
    size_t len = 0;
    kf_err_t err;

    if (!audit)
        return KF_OK;
    if (!ev || !ev->action || !ev->stage || (unsigned)ev->outcome > KF_AUDIT_RETRY)
        return KF_ERR_INVALID_ARG;
    if ((err = kf_uuid4(event_id)) != KF_OK)
        return err;

    json_t *obj = json_object();
    json_t *attrs = json_object();
    if (!obj || !attrs) {
        json_decref(obj);
        json_decref(attrs);
        return KF_ERR_NOMEM;
    }
    json_object_set_new(obj, "event_id", json_string(event_id));
    json_object_set_new(obj, "ts", json_integer(kf_now_ms()));
    /* json_string() returns NULL for invalid UTF-8; the encoder then reports the field. */
    json_object_set_new(obj, "action", json_string(ev->action));
    json_object_set_new(obj, "outcome", json_string(kf_audit_outcomes[ev->outcome]));
    kf_audit_set_str(obj, "request_id", ev->request_id);
    kf_audit_set_str(obj, "tenant_id", ev->tenant_id);
    kf_audit_set_str(obj, "trace_id", ev->trace_id);
    json_object_set_new(obj, "stage", json_string(ev->stage));
    json_object_set_new(obj, "duration_ms",
                        ev->duration_ms >= 0 ? json_real(ev->duration_ms) : json_null());
    kf_audit_set_str(obj, "model", ev->model);
    json_object_set_new(obj, "tokens", ev->tokens >= 0 ? json_integer(ev->tokens) : json_null());
    json_object_set_new(obj, "message", json_string(ev->message ? ev->message : ""));
    for (size_t i = 0; i < ev->attr_count; i++)
        if (ev->attrs[i].key && ev->attrs[i].value)
            json_object_set_new(attrs, ev->attrs[i].key, json_string(ev->attrs[i].value));
    json_object_set_new(obj, "attributes", attrs);

    err = kf_avro_encode_json(audit->schema, obj, &buf, &len, errstr, sizeof(errstr));
    json_decref(obj);
    if (err != KF_OK) {
        kf_log(KF_LOG_ERROR, "audit", "cannot encode audit event %s: %s", ev->action, errstr);
        return KF_ERR_INVALID_ARG;
    }

    const char *key = ev->request_id ? ev->request_id : event_id;
    kf_kafka_msg_t msg = {
        .topic = audit->topic,
        .partition = KF_KAFKA_PARTITION_ANY,
        .key = key,
        .key_len = strlen(key),
        .value = buf,
        .value_len = len,
    };
    err = kf_producer_send_async(audit->producer, &msg, kf_audit_delivered, audit, errstr,
                                 sizeof(errstr));
    free(buf);
    if (err != KF_OK) {
        atomic_fetch_add(&audit->failed, 1);
        kf_log(KF_LOG_WARN, "audit", "cannot queue audit event %s: %s", ev->action, errstr);
        return err;
    }
    atomic_fetch_add(&audit->sent, 1);
    return KF_OK;
}
