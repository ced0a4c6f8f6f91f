/*
 * kf_err: the one error type of kinfer.
 *
 * Every fallible function returns kf_err_t (KF_OK == 0). kf_err_is_retriable() is the
 * split that decides "back off and try again" versus "dead-letter / fail the request",
 * in the spirit of rd_kafka_error_is_retriable(). Foreign error codes (librdkafka,
 * libpq, libcurl, avro) are translated at the module boundary; the original text goes
 * into the caller's errstr buffer.
 */
#ifndef KF_ERR_H
#define KF_ERR_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum kf_err {
    KF_OK = 0,
    KF_ERR_INVALID_ARG,    /* caller passed a bad argument or value */
    KF_ERR_NOMEM,          /* allocation failed */
    KF_ERR_IO,             /* file or socket I/O failed */
    KF_ERR_NOT_FOUND,      /* key, file, record or route does not exist */
    KF_ERR_EXISTS,         /* already exists (idempotency, duplicate key) */
    KF_ERR_PARSE,          /* malformed outside bytes: JSON, Avro, CSV, config */
    KF_ERR_FORMAT,         /* well-formed but unsupported or inconsistent content (GGUF) */
    KF_ERR_TRUNCATED,      /* input ended early */
    KF_ERR_UNKNOWN_SCHEMA, /* Avro fingerprint not in the catalog */
    KF_ERR_CONFIG,         /* bad configuration key or value */
    KF_ERR_TIMEOUT,        /* an operation timed out (retriable) */
    KF_ERR_UNAVAILABLE,    /* a service is unreachable or refused (retriable) */
    KF_ERR_KAFKA,          /* fatal Kafka error */
    KF_ERR_DB,             /* fatal database error (e.g. constraint, syntax) */
    KF_ERR_HTTP,           /* HTTP transport or protocol error */
    KF_ERR_CANCELLED,      /* cancelled by request or shutdown */
    KF_ERR_LIMIT,          /* a configured limit was hit (body size, batch, memory budget) */
    KF_ERR_UNSUPPORTED,    /* feature not available in this build or on this device */
    KF_ERR_STATE,          /* operation not allowed in the object's current state */
    KF_ERR_INTERNAL,       /* a bug: should never happen */
    KF_ERR__COUNT
} kf_err_t;

/* Static, human-readable name of an error code; never NULL. */
const char *kf_err_str(kf_err_t err);

/* Non-zero when the failure is transient and the operation may succeed on retry
 * (timeouts, unavailable services). Everything else is final for that input. */
int kf_err_is_retriable(kf_err_t err);

/* Formats into errstr (if non-NULL) and returns err, so error paths read
 *     return kf_err_set(errstr, errstr_size, KF_ERR_PARSE, "bad field %s", name);  */
kf_err_t kf_err_set(char *errstr, size_t errstr_size, kf_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Programmer errors: active in every build, never for runtime input. */
#define KF_ASSERT(cond)                                                                           \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "kinfer: assertion failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

#endif /* KF_ERR_H */
