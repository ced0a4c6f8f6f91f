/*
 * kf_buf: a growable byte buffer, handle-stable like curl's dynbuf.
 *
 * The struct lives wherever the caller puts it (stack, inside another object); only `data`
 * moves when it grows, so pointers to the kf_buf_t itself stay valid. `data` is always
 * NUL-terminated (when non-NULL) so text can be used as a C string; `len` excludes the NUL.
 * A `max` cap turns runaway input (an HTTP body, a metrics page) into KF_ERR_LIMIT instead of
 * unbounded memory. Not thread-safe.
 *
 *   kf_buf_t b;
 *   kf_buf_init(&b, 1 << 20);
 *   kf_buf_appendf(&b, "%d items\n", n);
 *   use(b.data, b.len);
 *   kf_buf_free(&b);
 */
#ifndef KF_BUF_H
#define KF_BUF_H

#include <stddef.h>

#include "kf_err.h"

typedef struct kf_buf {
    char *data; /* NULL until the first append; NUL-terminated after it */
    size_t len; /* bytes used, excluding the terminating NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* largest len allowed; 0 = unlimited */
} kf_buf_t;

/* Initialises an empty buffer holding at most max bytes (0: unlimited). Allocates nothing. */
void kf_buf_init(kf_buf_t *buf, size_t max);
/* Frees the storage and leaves an empty buffer with the same max (reusable). NULL is fine. */
void kf_buf_free(kf_buf_t *buf);
/* Empties the buffer, keeping its storage. */
void kf_buf_reset(kf_buf_t *buf);

/* Appends n bytes. KF_ERR_LIMIT past max, KF_ERR_NOMEM when allocation fails; on error the
 * buffer is unchanged. */
kf_err_t kf_buf_append(kf_buf_t *buf, const void *data, size_t n);
kf_err_t kf_buf_append_str(kf_buf_t *buf, const char *s);
kf_err_t kf_buf_appendf(kf_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the storage to the caller (free() it) and leaves the buffer empty. Never NULL: an
 * empty buffer yields a fresh "" allocation, or NULL only when that allocation fails. */
char *kf_buf_steal(kf_buf_t *buf, size_t *out_len);

#endif /* KF_BUF_H */
