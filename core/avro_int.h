/*
 * Internals of the kf_avro codec shared by core/avro.c (catalog, framing, canonical form),
 * core/avro_wire.c (bounded validation of outside bytes, schema resolution) and
 * core/avro_json.c (JSON mapping, field setters and getters). Never included outside core/.
 */
#ifndef KF_AVRO_INT_H
#define KF_AVRO_INT_H

#include "kf_avro.h"

struct kf_avro_schema {
    char *name;                /* full name, or the PCF for unnamed top-level schemas */
    uint64_t fingerprint;      /* CRC-64-AVRO of pcf */
    char *pcf;                 /* Parsing Canonical Form */
    char *json;                /* source text */
    avro_schema_t avro;        /* parsed by avro-c */
    avro_value_iface_t *iface; /* generic class for values of `avro` */
    json_t *defaults;          /* "Record.full.name/field" -> default; "Enum.full.name" -> symbol */
};

/* A dotted path of the field being processed, for error messages ("Req.sampling.top_p"). */
struct kf_avro_path {
    char buf[384];
    size_t len;
};

/* Appends ".name" (or the formatted text) to the path; returns the length to restore. */
size_t kf_avro_path_push(struct kf_avro_path *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kf_avro_path_pop(struct kf_avro_path *path, size_t len);

/* Follows avro-c links (named type references) to the definition. */
avro_schema_t kf_avro_deref(avro_schema_t schema);

/* Full name of a named avro-c schema into buf ("kinfer.TaskType"). */
const char *kf_avro_fullname(avro_schema_t schema, char *buf, size_t size);

/* Default value of `field` of the record `rec` as written in the reader's source schema, or
 * NULL when it has none. Borrowed. */
json_t *kf_avro_field_default(const kf_avro_schema_t *ks, avro_schema_t rec, const char *field);

/* Checks that `body` is exactly one well-formed value of `writer`: every length, count and
 * index within bounds, strings valid UTF-8 without NUL, no trailing bytes. Returns
 * KF_ERR_TRUNCATED or KF_ERR_PARSE with the field path. Only then may avro-c read it. */
kf_err_t kf_avro_wire_validate(
    avro_schema_t writer, const unsigned char *body, size_t len, char *errstr, size_t errstr_size);

/* Copies a value of the writer schema into a value of the reader schema following the Avro
 * resolution rules; reader fields absent from the writer take defaults from `reader`. */
kf_err_t kf_avro_resolve(const kf_avro_schema_t *reader,
                         avro_value_t *wval,
                         avro_value_t *rval,
                         char *errstr,
                         size_t errstr_size);

/* Fills `value` (of schema `schema`, a node inside `ks`) from JSON; used for from_json and to
 * apply defaults during resolution. */
kf_err_t kf_avro_json_fill(const kf_avro_schema_t *ks,
                           avro_schema_t schema,
                           const json_t *json,
                           avro_value_t *value,
                           struct kf_avro_path *path,
                           char *errstr,
                           size_t errstr_size);

/* Checks a value before encoding: every union has a branch and every string is valid UTF-8
 * without NUL, so kinfer never produces a record its own decoder rejects. */
kf_err_t kf_avro_value_check(avro_value_t *value,
                             struct kf_avro_path *path,
                             char *errstr,
                             size_t errstr_size);

/* 1 when s[0..len) is valid UTF-8 without NUL bytes. */
int kf_avro_utf8_ok(const char *s, size_t len);

#endif /* KF_AVRO_INT_H */
