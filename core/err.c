/*
 * Error names and the retriable/fatal split for kf_err_t.
 */
#include "kf_err.h"

#include <stdarg.h>

static const char *const kf_err_names[KF_ERR__COUNT] = {
    [KF_OK] = "success",
    [KF_ERR_INVALID_ARG] = "invalid argument",
    [KF_ERR_NOMEM] = "out of memory",
    [KF_ERR_IO] = "I/O error",
    [KF_ERR_NOT_FOUND] = "not found",
    [KF_ERR_EXISTS] = "already exists",
    [KF_ERR_PARSE] = "malformed input",
    [KF_ERR_FORMAT] = "unsupported or inconsistent format",
    [KF_ERR_TRUNCATED] = "truncated input",
    [KF_ERR_UNKNOWN_SCHEMA] = "unknown schema fingerprint",
    [KF_ERR_CONFIG] = "configuration error",
    [KF_ERR_TIMEOUT] = "timed out",
    [KF_ERR_UNAVAILABLE] = "service unavailable",
    [KF_ERR_KAFKA] = "Kafka error",
    [KF_ERR_DB] = "database error",
    [KF_ERR_HTTP] = "HTTP error",
    [KF_ERR_CANCELLED] = "cancelled",
    [KF_ERR_LIMIT] = "limit exceeded",
    [KF_ERR_UNSUPPORTED] = "unsupported",
    [KF_ERR_STATE] = "invalid state",
    [KF_ERR_INTERNAL] = "internal error",
};

const char *
kf_err_str(kf_err_t err)
{
    if ((int)err < 0 || err >= KF_ERR__COUNT || !kf_err_names[err])
        return "unknown error";
    return kf_err_names[err];
}

int
kf_err_is_retriable(kf_err_t err)
{
    /* Only transient conditions: a poison record must never loop forever. */
    return err == KF_ERR_TIMEOUT || err == KF_ERR_UNAVAILABLE;
}

kf_err_t
kf_err_set(char *errstr, size_t errstr_size, kf_err_t err, const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
