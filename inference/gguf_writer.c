/*
 * gguf_writer.c: serialises GGUF files for model-gen and tests (see kf_gguf_writer.h).
 *
 * Key/value pairs are encoded into one growable byte buffer as they are added, so the
 * header can be written in one go and memory stays proportional to the metadata (a copied
 * vocabulary is a few MB). Tensors are kept as descriptions plus borrowed data pointers;
 * their offsets are assigned at add time so the header is final before any data is written,
 * which is what makes streaming possible.
 */
#include "kf_gguf_writer.h"
#include "kf_quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kf_gguf_writer writes host-order numbers and assumes a little-endian host"
#endif

typedef struct kf_gguf_wtensor {
    char *name;
    kf_tensor_type_t type;
    uint32_t n_dims;
    uint64_t ne[KF_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    uint64_t offset; /* relative to the data section, aligned */
    const void *data;
} kf_gguf_wtensor_t;

struct kf_gguf_writer {
    uint32_t version;
    uint32_t alignment;
    uint8_t *kv;   /* encoded kv pairs */
    size_t kv_len; /* bytes used */
    size_t kv_cap;
    uint64_t n_kv;
    kf_gguf_wtensor_t *tensors;
    uint64_t n_tensors;
    uint64_t tensors_cap;
    uint64_t data_size; /* aligned end of the last tensor */
    /* Streaming state. */
    FILE *fp;
    uint64_t cur;         /* tensor being written */
    uint64_t cur_written; /* bytes of it written so far */
};

kf_err_t
kf_gguf_writer_new(kf_gguf_writer_t **out, char *errstr, size_t errstr_size)
{
    KF_ASSERT(out);
    kf_gguf_writer_t *w = calloc(1, sizeof(*w));
    if (!w)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    w->version = 3;
    w->alignment = 32;
    *out = w;
    return KF_OK;
}

void
kf_gguf_writer_destroy(kf_gguf_writer_t *w)
{
    if (!w)
        return;
    if (w->fp)
        fclose(w->fp);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->kv);
    free(w);
}

void
kf_gguf_writer_set_version(kf_gguf_writer_t *w, uint32_t version)
{
    w->version = version;
}

/* Appends raw bytes to the kv buffer, growing it geometrically. */
static kf_err_t
kv_put(kf_gguf_writer_t *w, const void *p, size_t n)
{
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *nb = realloc(w->kv, cap);
        if (!nb)
            return KF_ERR_NOMEM;
        w->kv = nb;
        w->kv_cap = cap;
    }
    if (n)
        memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return KF_OK;
}

static kf_err_t
kv_put_u32(kf_gguf_writer_t *w, uint32_t v)
{
    return kv_put(w, &v, 4);
}

static kf_err_t
kv_put_str(kf_gguf_writer_t *w, const char *s, uint64_t len)
{
    kf_err_t err = kv_put(w, &len, 8);
    return err ? err : kv_put(w, s, (size_t)len);
}

/* Starts a kv entry: key string and type. On any later failure the buffer is rolled back. */
static kf_err_t
kv_begin(kf_gguf_writer_t *w, const char *key, uint32_t type, size_t *mark)
{
    if (w->fp)
        return KF_ERR_STATE;
    KF_ASSERT(key);
    *mark = w->kv_len;
    kf_err_t err = kv_put_str(w, key, strlen(key));
    if (!err)
        err = kv_put_u32(w, type);
    if (err)
        w->kv_len = *mark;
    return err;
}

static kf_err_t
kv_end(kf_gguf_writer_t *w, kf_err_t err, size_t mark)
{
    if (err)
        w->kv_len = mark;
    else
        w->n_kv++;
    return err;
}

static kf_err_t
add_scalar(kf_gguf_writer_t *w, const char *key, kf_gguf_type_t t, const void *v)
{
    size_t mark;
    kf_err_t err = kv_begin(w, key, t, &mark);
    if (err)
        return err;
    return kv_end(w, kv_put(w, v, kf_gguf_type_size(t)), mark);
}

kf_err_t
kf_gguf_writer_add_u8(kf_gguf_writer_t *w, const char *key, uint8_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_UINT8, &v);
}

kf_err_t
kf_gguf_writer_add_i8(kf_gguf_writer_t *w, const char *key, int8_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_INT8, &v);
}

kf_err_t
kf_gguf_writer_add_u16(kf_gguf_writer_t *w, const char *key, uint16_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_UINT16, &v);
}

kf_err_t
kf_gguf_writer_add_i16(kf_gguf_writer_t *w, const char *key, int16_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_INT16, &v);
}

kf_err_t
kf_gguf_writer_add_u32(kf_gguf_writer_t *w, const char *key, uint32_t v)
{
    /* The reader lays data out by general.alignment, so the writer must follow it too. */
    if (key && !strcmp(key, "general.alignment") && v && !(v & (v - 1)) && v <= (1u << 30))
        w->alignment = v;
    return add_scalar(w, key, KF_GGUF_TYPE_UINT32, &v);
}

kf_err_t
kf_gguf_writer_add_i32(kf_gguf_writer_t *w, const char *key, int32_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_INT32, &v);
}

kf_err_t
kf_gguf_writer_add_u64(kf_gguf_writer_t *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_UINT64, &v);
}

kf_err_t
kf_gguf_writer_add_i64(kf_gguf_writer_t *w, const char *key, int64_t v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_INT64, &v);
}

kf_err_t
kf_gguf_writer_add_f32(kf_gguf_writer_t *w, const char *key, float v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_FLOAT32, &v);
}

kf_err_t
kf_gguf_writer_add_f64(kf_gguf_writer_t *w, const char *key, double v)
{
    return add_scalar(w, key, KF_GGUF_TYPE_FLOAT64, &v);
}

kf_err_t
kf_gguf_writer_add_bool(kf_gguf_writer_t *w, const char *key, int v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, KF_GGUF_TYPE_BOOL, &b);
}

kf_err_t
kf_gguf_writer_add_strn(kf_gguf_writer_t *w, const char *key, const char *v, uint64_t len)
{
    size_t mark;
    kf_err_t err = kv_begin(w, key, KF_GGUF_TYPE_STRING, &mark);
    if (err)
        return err;
    return kv_end(w, kv_put_str(w, v, len), mark);
}

kf_err_t
kf_gguf_writer_add_str(kf_gguf_writer_t *w, const char *key, const char *v)
{
    KF_ASSERT(v);
    return kf_gguf_writer_add_strn(w, key, v, strlen(v));
}

kf_err_t
kf_gguf_writer_set_alignment(kf_gguf_writer_t *w, uint32_t alignment)
{
    if (!alignment || (alignment & (alignment - 1)) || alignment > (1u << 30))
        return KF_ERR_INVALID_ARG;
    return kf_gguf_writer_add_u32(w, "general.alignment", alignment);
}

kf_err_t
kf_gguf_writer_add_arr(
    kf_gguf_writer_t *w, const char *key, kf_gguf_type_t elem_type, const void *data, uint64_t n)
{
    size_t esz = kf_gguf_type_size(elem_type);
    if (!esz || (n && !data) || n > SIZE_MAX / esz)
        return KF_ERR_INVALID_ARG;
    size_t mark;
    kf_err_t err = kv_begin(w, key, KF_GGUF_TYPE_ARRAY, &mark);
    if (err)
        return err;
    err = kv_put_u32(w, elem_type);
    if (!err)
        err = kv_put(w, &n, 8);
    if (!err)
        err = kv_put(w, data, (size_t)n * esz);
    return kv_end(w, err, mark);
}

kf_err_t
kf_gguf_writer_add_arr_strn(kf_gguf_writer_t *w,
                            const char *key,
                            const kf_gguf_str_t *strs,
                            uint64_t n)
{
    size_t mark;
    kf_err_t err = kv_begin(w, key, KF_GGUF_TYPE_ARRAY, &mark);
    if (err)
        return err;
    err = kv_put_u32(w, KF_GGUF_TYPE_STRING);
    if (!err)
        err = kv_put(w, &n, 8);
    for (uint64_t i = 0; i < n && !err; i++)
        err = kv_put_str(w, strs[i].ptr, strs[i].len);
    return kv_end(w, err, mark);
}

kf_err_t
kf_gguf_writer_add_arr_str(kf_gguf_writer_t *w,
                           const char *key,
                           const char *const *strs,
                           uint64_t n)
{
    size_t mark;
    kf_err_t err = kv_begin(w, key, KF_GGUF_TYPE_ARRAY, &mark);
    if (err)
        return err;
    err = kv_put_u32(w, KF_GGUF_TYPE_STRING);
    if (!err)
        err = kv_put(w, &n, 8);
    for (uint64_t i = 0; i < n && !err; i++)
        err = kv_put_str(w, strs[i], strlen(strs[i]));
    return kv_end(w, err, mark);
}

kf_err_t
kf_gguf_writer_add_raw(
    kf_gguf_writer_t *w, const char *key, uint32_t type, const void *raw, size_t len)
{
    size_t mark;
    kf_err_t err = kv_begin(w, key, type, &mark);
    if (err)
        return err;
    return kv_end(w, kv_put(w, raw, len), mark);
}

kf_err_t
kf_gguf_writer_copy_kv(kf_gguf_writer_t *w, const kf_gguf_t *gf, int64_t idx)
{
    const void *raw;
    uint64_t len;
    if (kf_gguf_kv_raw(gf, idx, &raw, &len) != KF_OK)
        return KF_ERR_INVALID_ARG;
    kf_gguf_str_t key = kf_gguf_key_name(gf, idx);
    /* Keys in the file are not NUL-terminated, so encode the entry by hand. */
    if (w->fp)
        return KF_ERR_STATE;
    size_t mark = w->kv_len;
    kf_err_t err = kv_put_str(w, key.ptr, key.len);
    if (!err)
        err = kv_put_u32(w, (uint32_t)kf_gguf_kv_type(gf, idx));
    if (!err)
        err = kv_put(w, raw, (size_t)len);
    return kv_end(w, err, mark);
}

static uint64_t
align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

kf_err_t
kf_gguf_writer_add_tensor(kf_gguf_writer_t *w,
                          const char *name,
                          kf_tensor_type_t type,
                          uint32_t n_dims,
                          const uint64_t *ne,
                          const void *data)
{
    if (w->fp)
        return KF_ERR_STATE;
    uint32_t blk = kf_tensor_type_block(type);
    if (!name || !*name || !blk || n_dims < 1 || n_dims > KF_GGUF_MAX_DIMS || !ne || ne[0] % blk)
        return KF_ERR_INVALID_ARG;
    uint64_t nbytes;
    if (__builtin_mul_overflow(ne[0] / blk, (uint64_t)kf_tensor_type_block_bytes(type), &nbytes))
        return KF_ERR_INVALID_ARG;
    for (uint32_t d = 1; d < n_dims; d++)
        if (!ne[d] || __builtin_mul_overflow(nbytes, ne[d], &nbytes))
            return KF_ERR_INVALID_ARG;
    if (!ne[0])
        return KF_ERR_INVALID_ARG;
    if (w->n_tensors == w->tensors_cap) {
        uint64_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        kf_gguf_wtensor_t *nt = realloc(w->tensors, (size_t)cap * sizeof(*nt));
        if (!nt)
            return KF_ERR_NOMEM;
        w->tensors = nt;
        w->tensors_cap = cap;
    }
    kf_gguf_wtensor_t *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (!t->name)
        return KF_ERR_NOMEM;
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims; d++)
        t->ne[d] = ne[d];
    t->n_bytes = nbytes;
    t->data = data;
    /* Offsets use the alignment in effect now: set general.alignment before tensors. */
    t->offset = align_up(w->data_size, w->alignment);
    w->data_size = align_up(t->offset + nbytes, w->alignment);
    w->n_tensors++;
    return KF_OK;
}

/* Size of header + kv + tensor infos, before the padding to the data section. */
static uint64_t
header_size(const kf_gguf_writer_t *w)
{
    uint64_t n = 4 + 4 + 8 + 8 + w->kv_len;
    for (uint64_t i = 0; i < w->n_tensors; i++)
        n += 8 + strlen(w->tensors[i].name) + 4 + 8ull * w->tensors[i].n_dims + 4 + 8;
    return n;
}

uint64_t
kf_gguf_writer_file_size(const kf_gguf_writer_t *w)
{
    uint64_t h = header_size(w);
    return w->n_tensors ? align_up(h, w->alignment) + w->data_size : h;
}

static int
put(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n;
}

static int
put_zeros(FILE *fp, uint64_t n)
{
    static const uint8_t zeros[256];
    while (n) {
        size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
        if (!put(fp, zeros, k))
            return 0;
        n -= k;
    }
    return 1;
}

/* Writes everything before the data section to w->fp. */
static int
write_header(kf_gguf_writer_t *w)
{
    uint32_t magic_version[2] = {0x46554747u, w->version};
    uint64_t counts[2] = {w->n_tensors, w->n_kv};
    int ok = put(w->fp, magic_version, 8) && put(w->fp, counts, 16) && put(w->fp, w->kv, w->kv_len);
    for (uint64_t i = 0; ok && i < w->n_tensors; i++) {
        const kf_gguf_wtensor_t *t = &w->tensors[i];
        uint64_t len = strlen(t->name);
        uint32_t type = (uint32_t)t->type;
        ok = put(w->fp, &len, 8) && put(w->fp, t->name, (size_t)len) && put(w->fp, &t->n_dims, 4) &&
             put(w->fp, t->ne, 8ull * t->n_dims) && put(w->fp, &type, 4) &&
             put(w->fp, &t->offset, 8);
    }
    /* With no tensors there is no data section and hence nothing to pad to. */
    if (ok && w->n_tensors) {
        uint64_t h = header_size(w);
        ok = put_zeros(w->fp, align_up(h, w->alignment) - h);
    }
    return ok;
}

static kf_err_t
begin_fp(kf_gguf_writer_t *w, FILE *fp, const char *what, char *errstr, size_t errstr_size)
{
    w->fp = fp;
    w->cur = 0;
    w->cur_written = 0;
    if (!write_header(w))
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: write failed: %s", what,
                          strerror(errno));
    return KF_OK;
}

kf_err_t
kf_gguf_writer_begin_file(kf_gguf_writer_t *w, const char *path, char *errstr, size_t errstr_size)
{
    if (w->fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE, "writer already started");
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: %s", path, strerror(errno));
    return begin_fp(w, fp, path, errstr, errstr_size);
}

kf_err_t
kf_gguf_writer_put_data(
    kf_gguf_writer_t *w, const void *data, size_t n, char *errstr, size_t errstr_size)
{
    if (!w->fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE, "put_data before begin");
    if (w->cur >= w->n_tensors)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE, "put_data after the last tensor");
    kf_gguf_wtensor_t *t = &w->tensors[w->cur];
    if (n > t->n_bytes - w->cur_written)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                          "tensor '%s': %zu bytes would exceed its size %llu (%llu written)",
                          t->name, n, (unsigned long long)t->n_bytes,
                          (unsigned long long)w->cur_written);
    if (!put(w->fp, data, n))
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "tensor '%s': write failed: %s", t->name,
                          strerror(errno));
    w->cur_written += n;
    if (w->cur_written == t->n_bytes) {
        /* Pad to where the next tensor (or the aligned end of data) begins. */
        uint64_t end = t->offset + t->n_bytes;
        uint64_t next = w->cur + 1 < w->n_tensors ? w->tensors[w->cur + 1].offset : w->data_size;
        if (!put_zeros(w->fp, next - end))
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "padding write failed: %s",
                              strerror(errno));
        w->cur++;
        w->cur_written = 0;
    }
    return KF_OK;
}

kf_err_t
kf_gguf_writer_finish(kf_gguf_writer_t *w, char *errstr, size_t errstr_size)
{
    if (!w->fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE, "finish before begin");
    kf_err_t err = KF_OK;
    if (w->cur < w->n_tensors)
        err = kf_err_set(errstr, errstr_size, KF_ERR_STATE,
                         "tensor '%s' and %llu after it were not fully written",
                         w->tensors[w->cur].name, (unsigned long long)(w->n_tensors - w->cur - 1));
    if (fclose(w->fp) != 0 && !err)
        err = kf_err_set(errstr, errstr_size, KF_ERR_IO, "close failed: %s", strerror(errno));
    w->fp = NULL;
    return err;
}

/* Writes all tensors from their data pointers after begin. */
static kf_err_t
write_all(kf_gguf_writer_t *w, char *errstr, size_t errstr_size)
{
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        if (!w->tensors[i].data)
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "tensor '%s' has no data (use the streaming API)",
                              w->tensors[i].name);
    }
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        kf_err_t err = kf_gguf_writer_put_data(w, w->tensors[i].data, (size_t)w->tensors[i].n_bytes,
                                               errstr, errstr_size);
        if (err)
            return err;
    }
    return KF_OK;
}

kf_err_t
kf_gguf_writer_write_file(kf_gguf_writer_t *w, const char *path, char *errstr, size_t errstr_size)
{
    kf_err_t err = kf_gguf_writer_begin_file(w, path, errstr, errstr_size);
    if (!err)
        err = write_all(w, errstr, errstr_size);
    if (err) {
        fclose(w->fp);
        w->fp = NULL;
        return err;
    }
    return kf_gguf_writer_finish(w, errstr, errstr_size);
}

kf_err_t
kf_gguf_writer_write_mem(
    kf_gguf_writer_t *w, void **out_buf, size_t *out_size, char *errstr, size_t errstr_size)
{
    if (w->fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_STATE, "writer already started");
    char *buf = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&buf, &size);
    if (!fp)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "open_memstream: %s", strerror(errno));
    kf_err_t err = begin_fp(w, fp, "memory", errstr, errstr_size);
    if (!err)
        err = write_all(w, errstr, errstr_size);
    if (!err)
        err = kf_gguf_writer_finish(w, errstr, errstr_size);
    else {
        fclose(w->fp);
        w->fp = NULL;
    }
    if (err) {
        free(buf);
        return err;
    }
    *out_buf = buf;
    *out_size = size;
    return KF_OK;
}
