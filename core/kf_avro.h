/*
 * kf_avro: the Avro codec every Kafka message of kinfer goes through.
 *
 * Wire format: Avro single-object encoding,
 *     0xC3 0x01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
 *     Parsing Canonical Form | Avro binary body
 * so a reader finds the writer schema in the catalog by fingerprint, with no registry
 * service. The catalog is built from schemas/<Name>.avsc (embedded at build time); tests and
 * tools may add older or newer versions of a record with kf_avro_catalog_add_json().
 *
 * Values are avro-c `avro_value_t`s (generic class). Decoding validates every byte against
 * the writer schema BEFORE avro-c sees it (lengths, counts, union and enum indexes, UTF-8,
 * trailing bytes), so no input can make the decoder read out of bounds or allocate without
 * bound. Schema evolution (reader schema != writer schema) follows the Avro resolution rules,
 * including reader fields that are missing in the writer and take their default; avro-c's
 * own resolvers cannot fill defaults, so kf_avro resolves itself.
 *
 * JSON mapping (kf_avro_to_json / kf_avro_from_json), chosen for the pipeline rather than
 * Avro's JSON encoding: records are objects; a union is written as its plain branch value
 * (null, or the value of the one branch whose type fits); enums are their symbol; maps are
 * objects; bytes and fixed are strings whose code points 0-255 are the bytes (as Avro's
 * default values); timestamp-millis are integers; int/long are JSON integers; float/double
 * accept integers too.
 *
 * Thread-safety: a catalog is immutable after construction except for
 * kf_avro_catalog_add_json(), which must not run concurrently with other calls on the same
 * catalog. kf_avro_catalog_default() is built once (thread-safe) and never changes. Encode,
 * decode and JSON conversion are safe from any thread on distinct values.
 */
#ifndef KF_AVRO_H
#define KF_AVRO_H

#include <avro.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "kf_err.h"

/* Full names of the records in schemas/<Name>.avsc (the names Kafka topics carry). */
#define KF_AVRO_INFERENCE_REQUEST "kinfer.InferenceRequest"
#define KF_AVRO_INFERENCE_JOB     "kinfer.InferenceJob"
#define KF_AVRO_INFERENCE_RESULT  "kinfer.InferenceResult"
#define KF_AVRO_MARKET_TICK       "kinfer.MarketTick"
#define KF_AVRO_AUDIT_EVENT       "kinfer.AuditEvent"
#define KF_AVRO_CALLBACK_ATTEMPT  "kinfer.CallbackAttempt"

/* Single-object encoding header: 2 magic bytes + 8 fingerprint bytes. */
#define KF_AVRO_MAGIC0      0xC3
#define KF_AVRO_MAGIC1      0x01
#define KF_AVRO_HEADER_SIZE 10

typedef struct kf_avro_catalog kf_avro_catalog_t;
/* One parsed schema, owned by its catalog (borrowed by every caller). */
typedef struct kf_avro_schema kf_avro_schema_t;

/* ---- fingerprints and canonical form ------------------------------------------------- */

/* CRC-64-AVRO (Rabin) fingerprint of `len` bytes, as in the Avro specification
 * (empty input -> 0xc15d213aa4d7a795). */
uint64_t kf_avro_crc64(const void *data, size_t len);

/* Parsing Canonical Form of the schema JSON text `json` (full names, only the attributes
 * name,type,fields,symbols,items,values,size in that order, no whitespace). On KF_OK
 * *out_pcf is a malloc'd NUL-terminated string the caller frees. KF_ERR_PARSE names the
 * problem for invalid JSON or schemas. */
kf_err_t kf_avro_pcf(const char *json, char **out_pcf, char *errstr, size_t errstr_size);

/* ---- catalog ------------------------------------------------------------------------- */

/* Builds a catalog from the embedded schemas/<Name>.avsc (kf_schema_sources[]). */
kf_err_t kf_avro_catalog_new(kf_avro_catalog_t **out_cat, char *errstr, size_t errstr_size);
/* Builds an empty catalog (for tests and tools). */
kf_err_t kf_avro_catalog_new_empty(kf_avro_catalog_t **out_cat, char *errstr, size_t errstr_size);
void kf_avro_catalog_destroy(kf_avro_catalog_t *cat);

/* The process-wide catalog of the embedded schemas, built on first use and never freed.
 * The embedded schemas are part of the program, so a failure here is a build bug and
 * aborts with a message (the unit tests check every embedded schema parses). */
const kf_avro_catalog_t *kf_avro_catalog_default(void);

/* Parses `json` and adds it. If a schema with the same fingerprint is already present,
 * returns that one. A different version of an existing name is added too; lookups by name
 * then return the most recently added version. *out_schema (optional) is borrowed from
 * the catalog. */
kf_err_t kf_avro_catalog_add_json(kf_avro_catalog_t *cat,
                                  const char *json,
                                  const kf_avro_schema_t **out_schema,
                                  char *errstr,
                                  size_t errstr_size);

/* Lookup by full name ("kinfer.InferenceRequest") or by fingerprint; NULL when absent. */
const kf_avro_schema_t *kf_avro_catalog_get(const kf_avro_catalog_t *cat, const char *name);
const kf_avro_schema_t *kf_avro_catalog_find(const kf_avro_catalog_t *cat, uint64_t fingerprint);
/* Iteration in insertion order: index 0 .. count-1. */
size_t kf_avro_catalog_count(const kf_avro_catalog_t *cat);
const kf_avro_schema_t *kf_avro_catalog_at(const kf_avro_catalog_t *cat, size_t idx);

/* Shorthand for kf_avro_catalog_get(kf_avro_catalog_default(), name). */
const kf_avro_schema_t *kf_avro_schema_get(const char *name);

/* Accessors; strings are borrowed for the catalog's lifetime. */
const char *kf_avro_schema_name(const kf_avro_schema_t *schema); /* full name */
uint64_t kf_avro_schema_fingerprint(const kf_avro_schema_t *schema);
const char *kf_avro_schema_pcf(const kf_avro_schema_t *schema);
const char *kf_avro_schema_json(const kf_avro_schema_t *schema);   /* source text */
avro_schema_t kf_avro_schema_avro(const kf_avro_schema_t *schema); /* borrowed */

/* ---- values -------------------------------------------------------------------------- */

/* A fresh, zeroed generic value of `schema` (nullable unions start with no branch set).
 * The caller releases it with avro_value_decref(). */
kf_err_t kf_avro_value_new(const kf_avro_schema_t *schema,
                           avro_value_t *out_value,
                           char *errstr,
                           size_t errstr_size);

/* Record field setters: `field` names a field of the record `rec`; when that field is a
 * union (e.g. ["null","string"]), the branch of the right type is selected (a NULL string
 * selects null). Returns KF_ERR_NOT_FOUND (no such field) or KF_ERR_INVALID_ARG (the field
 * has no branch of that type, value out of range for an int, unknown enum symbol). */
kf_err_t kf_avro_set_string(avro_value_t *rec, const char *field, const char *s);
kf_err_t kf_avro_set_long(avro_value_t *rec, const char *field, int64_t v);  /* int or long */
kf_err_t kf_avro_set_double(avro_value_t *rec, const char *field, double v); /* float/double */
kf_err_t kf_avro_set_bool(avro_value_t *rec, const char *field, int v);
kf_err_t kf_avro_set_null(avro_value_t *rec, const char *field);
kf_err_t kf_avro_set_enum(avro_value_t *rec, const char *field, const char *symbol);

/* Record field getters, looking through nullable unions. KF_ERR_NOT_FOUND when the field is
 * absent or holds null; *out_s is borrowed from the value. */
kf_err_t kf_avro_get_string(avro_value_t *rec, const char *field, const char **out_s);
kf_err_t kf_avro_get_long(avro_value_t *rec, const char *field, int64_t *out_v);
kf_err_t kf_avro_get_double(avro_value_t *rec, const char *field, double *out_v);
kf_err_t kf_avro_get_enum(avro_value_t *rec, const char *field, const char **out_symbol);

/* ---- encode / decode ----------------------------------------------------------------- */

/* Encodes `value` (an instance of `schema`) as a single object. On KF_OK *out_buf is
 * malloc'd (caller frees) and *out_len its size. KF_ERR_INVALID_ARG if the value's schema
 * is not `schema` or a value is unset (e.g. union without branch); the message names it. */
kf_err_t kf_avro_encode(const kf_avro_schema_t *schema,
                        avro_value_t *value,
                        unsigned char **out_buf,
                        size_t *out_len,
                        char *errstr,
                        size_t errstr_size);

/* Same, looking the schema up by full name in the default catalog (KF_ERR_UNKNOWN_SCHEMA
 * when absent). */
kf_err_t kf_avro_encode_name(const char *name,
                             avro_value_t *value,
                             unsigned char **out_buf,
                             size_t *out_len,
                             char *errstr,
                             size_t errstr_size);

/* Reads the header only. KF_ERR_TRUNCATED when len < 10, KF_ERR_PARSE on bad magic. */
kf_err_t kf_avro_peek_fingerprint(const void *buf, size_t len, uint64_t *out_fingerprint);

/* Decodes a single object from `buf` (outside bytes, fully validated).
 *   cat:       catalog to find the writer schema in (NULL = default catalog)
 *   reader:    schema to decode into (NULL = the writer schema itself); when it differs
 *              from the writer, Avro schema resolution applies (defaults, promotions,
 *              removed fields, enum/union matching by name).
 *   out_value: on KF_OK, a new value of the reader schema; caller avro_value_decref()s it.
 *   out_writer (optional): the writer schema found by fingerprint.
 * Errors (never a crash, on any input): KF_ERR_TRUNCATED (header or body ends early),
 * KF_ERR_PARSE (bad magic, bad varint, length/index out of range, invalid UTF-8, trailing
 * bytes), KF_ERR_UNKNOWN_SCHEMA (fingerprint not in the catalog), KF_ERR_FORMAT (reader
 * schema cannot resolve the writer's: message names the field). */
kf_err_t kf_avro_decode(const kf_avro_catalog_t *cat,
                        const void *buf,
                        size_t len,
                        const kf_avro_schema_t *reader,
                        avro_value_t *out_value,
                        const kf_avro_schema_t **out_writer,
                        char *errstr,
                        size_t errstr_size);

/* ---- JSON ---------------------------------------------------------------------------- */

/* Converts a value to JSON (mapping in the file comment). On KF_OK *out_json is a new
 * reference. KF_ERR_FORMAT for unconvertible values (NaN/Inf, unset union); message names
 * the field path. */
kf_err_t kf_avro_to_json(avro_value_t *value, json_t **out_json, char *errstr, size_t errstr_size);

/* Builds a new value of `schema` from JSON. Missing record fields take their schema default
 * (if any); unknown keys, missing fields without default and mistyped values are
 * KF_ERR_INVALID_ARG with the field path in the message ("InferenceRequest.sampling.top_p:
 * expected number"). On KF_OK the caller avro_value_decref()s *out_value. */
kf_err_t kf_avro_from_json(const kf_avro_schema_t *schema,
                           const json_t *json,
                           avro_value_t *out_value,
                           char *errstr,
                           size_t errstr_size);

/* JSON -> single-object bytes in one step (kf_avro_from_json + kf_avro_encode). */
kf_err_t kf_avro_encode_json(const kf_avro_schema_t *schema,
                             const json_t *json,
                             unsigned char **out_buf,
                             size_t *out_len,
                             char *errstr,
                             size_t errstr_size);

/* Single-object bytes -> JSON in one step (kf_avro_decode + kf_avro_to_json); arguments as
 * kf_avro_decode. */
kf_err_t kf_avro_decode_json(const kf_avro_catalog_t *cat,
                             const void *buf,
                             size_t len,
                             const kf_avro_schema_t *reader,
                             json_t **out_json,
                             const kf_avro_schema_t **out_writer,
                             char *errstr,
                             size_t errstr_size);

#endif /* KF_AVRO_H */
