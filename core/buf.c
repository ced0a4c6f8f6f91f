/*
 * Growable byte buffer. Capacity doubles so appends are amortised O(1); the cap check comes
 * before any allocation so an over-limit append never changes the buffer.
 */
#include "kf_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
kf_buf_init(kf_buf_t *buf, size_t max)
{
    KF_ASSERT(buf);
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->max = max;
}

void
kf_buf_free(kf_buf_t *buf)
{
    if (!buf)
        return;
    free(buf->data);
    kf_buf_init(buf, buf->max);
}

void
kf_buf_reset(kf_buf_t *buf)
{
    KF_ASSERT(buf);
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

/* Makes room for `extra` more bytes plus the NUL. */
static kf_err_t
kf_buf_reserve(kf_buf_t *buf, size_t extra)
{
    if (extra > (size_t)-1 / 2 - buf->len)
        return KF_ERR_LIMIT;
    size_t need = buf->len + extra;
    if (buf->max && need > buf->max)
        return KF_ERR_LIMIT;
    if (need + 1 <= buf->cap)
        return KF_OK;
    size_t ncap = buf->cap ? buf->cap : 256;
    while (ncap < need + 1)
        ncap *= 2;
    char *p = realloc(buf->data, ncap);
    if (!p)
        return KF_ERR_NOMEM;
    buf->data = p;
    buf->cap = ncap;
    return KF_OK;
}

kf_err_t
kf_buf_append(kf_buf_t *buf, const void *data, size_t n)
{
    KF_ASSERT(buf && (data || n == 0));
    kf_err_t err = kf_buf_reserve(buf, n);
    if (err)
        return err;
    if (n)
        memcpy(buf->data + buf->len, data, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return KF_OK;
}

kf_err_t
kf_buf_append_str(kf_buf_t *buf, const char *s)
{
    KF_ASSERT(s);
    return kf_buf_append(buf, s, strlen(s));
}

kf_err_t
kf_buf_appendf(kf_buf_t *buf, const char *fmt, ...)
{
    KF_ASSERT(buf && fmt);
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return KF_ERR_INVALID_ARG;
    if ((size_t)n < sizeof(small))
        return kf_buf_append(buf, small, (size_t)n);
    /* Long output: format straight into the buffer's tail. */
    kf_err_t err = kf_buf_reserve(buf, (size_t)n);
    if (err)
        return err;
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return KF_OK;
}

char *
kf_buf_steal(kf_buf_t *buf, size_t *out_len)
{
    KF_ASSERT(buf);
    char *p = buf->data;
    size_t len = buf->len;
    if (!p)
        p = calloc(1, 1);
    kf_buf_init(buf, buf->max);
    if (out_len)
        *out_len = p ? len : 0;
    return p;
}
