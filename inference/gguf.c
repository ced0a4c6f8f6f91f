/*
 * gguf.c: the validating GGUF reader behind kf_gguf.h.
 *
 * The file is mapped read-only (or read from a caller's buffer) and parsed once by a
 * bounds-checked cursor. Every count read from the file is checked against the bytes that
 * remain before anything is allocated from it, and tables grow only as entries are actually
 * parsed, so a hostile header can neither overrun the buffer nor make us allocate gigabytes.
 * After parsing, keys and tensor names go into open-addressing hash indexes (which is also
 * how duplicates are found), and tensor extents are sorted to reject overlaps.
 *
 * Layout (GGUF v2/v3, little-endian): "GGUF" u32 version, u64 n_tensors, u64 n_kv,
 * n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims, u64 ne[n_dims],
 * u32 type, u64 offset), padding to general.alignment, data section.
 * A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
 */
#include "kf_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define KF_GGUF_MAGIC             0x46554747u /* "GGUF" read as a little-endian u32 */
#define KF_GGUF_DEFAULT_ALIGNMENT 32u
/* Smallest possible encodings, used to bound counts by the bytes left in the file. */
#define KF_GGUF_MIN_KV_BYTES     13u /* u64 key length + 1-byte key + u32 type; value >= 0 */
#define KF_GGUF_MIN_TENSOR_BYTES 32u /* u64 name length + u32 n_dims + 1 dim + type + offset */

typedef struct kf_gguf_kv {
    kf_gguf_str_t key;
    kf_gguf_type_t type;
    kf_gguf_type_t elem_type; /* arrays only */
    uint64_t n;               /* arrays only: element count */
    const uint8_t *raw;       /* the value as encoded after the u32 type */
    uint64_t raw_len;
    const uint8_t *val;  /* scalars: the value; arrays: first element */
    kf_gguf_str_t str;   /* STRING scalars */
    kf_gguf_str_t *strs; /* string arrays: one entry per element (owned) */
} kf_gguf_kv_t;

struct kf_gguf {
    const uint8_t *base;
    size_t size;
    int mapped; /* base came from mmap() and must be unmapped */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_off;
    kf_gguf_kv_t *kvs;
    uint64_t n_kv;
    kf_gguf_tensor_t *tensors;
    uint64_t n_tensors;
    /* Hash indexes: slot holds entry index + 1, 0 = empty; size is a power of two. */
    uint64_t *kv_index;
    uint64_t *tensor_index;
    uint64_t kv_index_mask;
    uint64_t tensor_index_mask;
};

/* Bounds-checked little-endian cursor over the file bytes. */
typedef struct kf_gguf_cur {
    const uint8_t *p;
    size_t size;
    size_t pos;
} kf_gguf_cur_t;

static size_t
cur_left(const kf_gguf_cur_t *c)
{
    return c->size - c->pos;
}

/* Reads n bytes into out (may be NULL to skip); 0 when the file ends first. */
static int
cur_take(kf_gguf_cur_t *c, void *out, size_t n)
{
    if (n > cur_left(c))
        return 0;
    if (out)
        memcpy(out, c->p + c->pos, n);
    c->pos += n;
    return 1;
}

static uint32_t
rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
rd_u64(const uint8_t *p)
{
    return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

static int
cur_u32(kf_gguf_cur_t *c, uint32_t *out)
{
    if (cur_left(c) < 4)
        return 0;
    *out = rd_u32(c->p + c->pos);
    c->pos += 4;
    return 1;
}

static int
cur_u64(kf_gguf_cur_t *c, uint64_t *out)
{
    if (cur_left(c) < 8)
        return 0;
    *out = rd_u64(c->p + c->pos);
    c->pos += 8;
    return 1;
}

size_t
kf_gguf_type_size(kf_gguf_type_t t)
{
    switch (t) {
    case KF_GGUF_TYPE_UINT8:
    case KF_GGUF_TYPE_INT8:
    case KF_GGUF_TYPE_BOOL:
        return 1;
    case KF_GGUF_TYPE_UINT16:
    case KF_GGUF_TYPE_INT16:
        return 2;
    case KF_GGUF_TYPE_UINT32:
    case KF_GGUF_TYPE_INT32:
    case KF_GGUF_TYPE_FLOAT32:
        return 4;
    case KF_GGUF_TYPE_UINT64:
    case KF_GGUF_TYPE_INT64:
    case KF_GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

const char *
kf_gguf_type_name(kf_gguf_type_t t)
{
    static const char *const names[] = {
        [KF_GGUF_TYPE_UINT8] = "u8",      [KF_GGUF_TYPE_INT8] = "i8",
        [KF_GGUF_TYPE_UINT16] = "u16",    [KF_GGUF_TYPE_INT16] = "i16",
        [KF_GGUF_TYPE_UINT32] = "u32",    [KF_GGUF_TYPE_INT32] = "i32",
        [KF_GGUF_TYPE_FLOAT32] = "f32",   [KF_GGUF_TYPE_BOOL] = "bool",
        [KF_GGUF_TYPE_STRING] = "string", [KF_GGUF_TYPE_ARRAY] = "array",
        [KF_GGUF_TYPE_UINT64] = "u64",    [KF_GGUF_TYPE_INT64] = "i64",
        [KF_GGUF_TYPE_FLOAT64] = "f64",
    };
    if ((unsigned)t >= sizeof(names) / sizeof(names[0]))
        return "?";
    return names[t];
}

uint32_t
kf_tensor_type_block(kf_tensor_type_t t)
{
    switch (t) {
    case KF_TT_F32:
    case KF_TT_F16:
    case KF_TT_BF16:
        return 1;
    case KF_TT_Q4_0:
    case KF_TT_Q8_0:
        return 32;
    case KF_TT_Q4_K:
    case KF_TT_Q6_K:
        return 256;
    }
    return 0;
}

uint32_t
kf_tensor_type_block_bytes(kf_tensor_type_t t)
{
    /* Byte sizes of one block as ggml lays them out (see kf_quant.h for the fields). */
    switch (t) {
    case KF_TT_F32:
        return 4;
    case KF_TT_F16:
    case KF_TT_BF16:
        return 2;
    case KF_TT_Q4_0:
        return 18;
    case KF_TT_Q8_0:
        return 34;
    case KF_TT_Q4_K:
        return 144;
    case KF_TT_Q6_K:
        return 210;
    }
    return 0;
}

const char *
kf_tensor_type_name(kf_tensor_type_t t)
{
    switch (t) {
    case KF_TT_F32:
        return "F32";
    case KF_TT_F16:
        return "F16";
    case KF_TT_BF16:
        return "BF16";
    case KF_TT_Q4_0:
        return "Q4_0";
    case KF_TT_Q8_0:
        return "Q8_0";
    case KF_TT_Q4_K:
        return "Q4_K";
    case KF_TT_Q6_K:
        return "Q6_K";
    }
    return "?";
}

/* FNV-1a: tiny, good enough for a few hundred keys or tensor names. */
static uint64_t
hash_bytes(const char *s, uint64_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int
str_eq_bytes(kf_gguf_str_t a, const char *s, uint64_t len)
{
    return a.len == len && (len == 0 || memcmp(a.ptr, s, len) == 0);
}

int
kf_gguf_str_eq(kf_gguf_str_t s, const char *cstr)
{
    return cstr && str_eq_bytes(s, cstr, strlen(cstr));
}

/* Prints a key or name for an error message, clipped so one bad length cannot flood errstr. */
#define CLIP(s) (int)((s).len > 64 ? 64 : (s).len), (s).ptr

/* Reads a string header and borrows its bytes from the mapping. */
static kf_err_t
cur_str(kf_gguf_cur_t *c, kf_gguf_str_t *out, const char *what, char *errstr, size_t errstr_size)
{
    size_t at = c->pos;
    uint64_t len;
    if (!cur_u64(c, &len))
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "%s: string length at offset %zu is past end of file (size %zu)", what,
                          at, c->size);
    if (len > cur_left(c))
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "%s: string length %llu at offset %zu exceeds the %zu bytes left in "
                          "file",
                          what, (unsigned long long)len, at, cur_left(c));
    out->ptr = (const char *)c->p + c->pos;
    out->len = len;
    c->pos += (size_t)len;
    return KF_OK;
}

/* Parses one kv value of type `type` starting at the cursor. `kvi` is for messages. */
static kf_err_t
parse_value(kf_gguf_cur_t *c, kf_gguf_kv_t *kv, char *errstr, size_t errstr_size)
{
    char what[128];
    snprintf(what, sizeof(what), "key '%.*s'", CLIP(kv->key));
    kv->raw = c->p + c->pos;
    size_t start = c->pos;
    size_t esz;
    kf_err_t err;

    if (kv->type == KF_GGUF_TYPE_STRING) {
        err = cur_str(c, &kv->str, what, errstr, errstr_size);
        if (err)
            return err;
    } else if (kv->type == KF_GGUF_TYPE_ARRAY) {
        uint32_t et;
        if (!cur_u32(c, &et) || !cur_u64(c, &kv->n))
            return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                              "%s: array header at offset %zu is past end of file (size %zu)", what,
                              start, c->size);
        kv->elem_type = (kf_gguf_type_t)et;
        if (et == KF_GGUF_TYPE_ARRAY)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "%s: nested arrays are not supported", what);
        kv->val = c->p + c->pos;
        if (et == KF_GGUF_TYPE_STRING) {
            /* Each element needs at least its 8-byte length: bound n before allocating. */
            if (kv->n > cur_left(c) / 8)
                return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                                  "%s: string array count %llu cannot fit in the %zu bytes left "
                                  "in file",
                                  what, (unsigned long long)kv->n, cur_left(c));
            kv->strs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof(*kv->strs));
            if (!kv->strs)
                return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM,
                                  "%s: cannot allocate %llu string entries", what,
                                  (unsigned long long)kv->n);
            for (uint64_t i = 0; i < kv->n; i++) {
                char ewhat[160];
                snprintf(ewhat, sizeof(ewhat), "%s element %llu", what, (unsigned long long)i);
                err = cur_str(c, &kv->strs[i], ewhat, errstr, errstr_size);
                if (err)
                    return err;
            }
        } else {
            esz = kf_gguf_type_size(kv->elem_type);
            if (!esz)
                return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                                  "%s: unknown array element type %u", what, et);
            if (kv->n > cur_left(c) / esz)
                return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                                  "%s: array of %llu x %zu-byte elements exceeds the %zu bytes "
                                  "left in file",
                                  what, (unsigned long long)kv->n, esz, cur_left(c));
            c->pos += (size_t)kv->n * esz;
        }
    } else {
        esz = kf_gguf_type_size(kv->type);
        if (!esz)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "%s: unknown value type %u", what,
                              (unsigned)kv->type);
        kv->val = c->p + c->pos;
        if (!cur_take(c, NULL, esz))
            return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                              "%s: %s value at offset %zu is past end of file (size %zu)", what,
                              kf_gguf_type_name(kv->type), start, c->size);
    }
    kv->raw_len = c->pos - start;
    return KF_OK;
}

/* Grows *arr (of elem-size bytes) so that index `need` fits; doubling keeps it amortised. */
static int
grow(void **arr, uint64_t *cap, uint64_t need, size_t elem)
{
    if (need < *cap)
        return 1;
    uint64_t ncap = *cap ? *cap * 2 : 16;
    while (ncap <= need)
        ncap *= 2;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p)
        return 0;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *arr = p;
    *cap = ncap;
    return 1;
}

/* Builds a hash index over n names; returns the index of a duplicate's first copy via
 * *out_dup (entry index of the second copy in *out_dup2), or UINT64_MAX when all unique. */
static kf_err_t
build_index(uint64_t n,
            kf_gguf_str_t (*name_of)(const kf_gguf_t *, uint64_t),
            const kf_gguf_t *gf,
            uint64_t **out_index,
            uint64_t *out_mask,
            uint64_t *out_dup)
{
    uint64_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    uint64_t *idx = calloc((size_t)cap, sizeof(*idx));
    if (!idx)
        return KF_ERR_NOMEM;
    *out_dup = UINT64_MAX;
    for (uint64_t i = 0; i < n; i++) {
        kf_gguf_str_t s = name_of(gf, i);
        uint64_t h = hash_bytes(s.ptr, s.len) & (cap - 1);
        while (idx[h]) {
            if (str_eq_bytes(name_of(gf, idx[h] - 1), s.ptr, s.len)) {
                *out_dup = i;
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        if (*out_dup != UINT64_MAX)
            break;
        idx[h] = i + 1;
    }
    *out_index = idx;
    *out_mask = cap - 1;
    return KF_OK;
}

static kf_gguf_str_t
kv_name(const kf_gguf_t *gf, uint64_t i)
{
    return gf->kvs[i].key;
}

static kf_gguf_str_t
tensor_name(const kf_gguf_t *gf, uint64_t i)
{
    return gf->tensors[i].name;
}

static uint64_t
index_find(const uint64_t *idx,
           uint64_t mask,
           kf_gguf_str_t (*name_of)(const kf_gguf_t *, uint64_t),
           const kf_gguf_t *gf,
           const char *s)
{
    if (!idx || !s)
        return UINT64_MAX;
    size_t len = strlen(s);
    uint64_t h = hash_bytes(s, len) & mask;
    while (idx[h]) {
        if (str_eq_bytes(name_of(gf, idx[h] - 1), s, len))
            return idx[h] - 1;
        h = (h + 1) & mask;
    }
    return UINT64_MAX;
}

/* Integer value of a scalar kv as a sign flag + magnitude; 0 when not an integer type. */
static int
kv_int(const kf_gguf_type_t t, const uint8_t *v, int *neg, uint64_t *mag)
{
    int64_t s;
    *neg = 0;
    switch (t) {
    case KF_GGUF_TYPE_UINT8:
    case KF_GGUF_TYPE_BOOL:
        *mag = v[0];
        return 1;
    case KF_GGUF_TYPE_UINT16:
        *mag = (uint64_t)v[0] | (uint64_t)v[1] << 8;
        return 1;
    case KF_GGUF_TYPE_UINT32:
        *mag = rd_u32(v);
        return 1;
    case KF_GGUF_TYPE_UINT64:
        *mag = rd_u64(v);
        return 1;
    case KF_GGUF_TYPE_INT8:
        s = (int8_t)v[0];
        break;
    case KF_GGUF_TYPE_INT16:
        s = (int16_t)(uint16_t)((unsigned)v[0] | (unsigned)v[1] << 8);
        break;
    case KF_GGUF_TYPE_INT32:
        s = (int32_t)rd_u32(v);
        break;
    case KF_GGUF_TYPE_INT64:
        s = (int64_t)rd_u64(v);
        break;
    default:
        return 0;
    }
    *neg = s < 0;
    /* Negating INT64_MIN in uint64 arithmetic is well defined. */
    *mag = *neg ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 1;
}

static int
kv_float(kf_gguf_type_t t, const uint8_t *v, double *out)
{
    if (t == KF_GGUF_TYPE_FLOAT32) {
        uint32_t b = rd_u32(v);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return 1;
    }
    if (t == KF_GGUF_TYPE_FLOAT64) {
        uint64_t b = rd_u64(v);
        memcpy(out, &b, 8);
        return 1;
    }
    int neg;
    uint64_t mag;
    if (t == KF_GGUF_TYPE_BOOL || !kv_int(t, v, &neg, &mag))
        return 0;
    *out = neg ? -(double)mag : (double)mag;
    return 1;
}

static int
cmp_tensor_off(const void *a, const void *b)
{
    const kf_gguf_tensor_t *x = *(const kf_gguf_tensor_t *const *)a;
    const kf_gguf_tensor_t *y = *(const kf_gguf_tensor_t *const *)b;
    const uint8_t *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* Parses one tensor info at the cursor into *t (offset relative to the data section goes
 * in t->data temporarily as an integer, resolved once the data section start is known). */
static kf_err_t
parse_tensor_info(kf_gguf_cur_t *c,
                  uint64_t ti,
                  kf_gguf_tensor_t *t,
                  uint64_t *out_rel_off,
                  char *errstr,
                  size_t errstr_size)
{
    char what[64];
    snprintf(what, sizeof(what), "tensor %llu name", (unsigned long long)ti);
    kf_err_t err = cur_str(c, &t->name, what, errstr, errstr_size);
    if (err)
        return err;
    if (t->name.len == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "tensor %llu has an empty name",
                          (unsigned long long)ti);
    if (memchr(t->name.ptr, 0, t->name.len))
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "tensor %llu: name contains a NUL byte", (unsigned long long)ti);
    uint32_t n_dims, type;
    if (!cur_u32(c, &n_dims))
        goto trunc;
    if (n_dims == 0 || n_dims > KF_GGUF_MAX_DIMS)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "tensor '%.*s': n_dims %u out of range 1..%d", CLIP(t->name), n_dims,
                          KF_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    for (int d = 0; d < KF_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (!cur_u64(c, &t->ne[d]))
            goto trunc;
        if (t->ne[d] == 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "tensor '%.*s': dimension %u is zero", CLIP(t->name), d);
        if (t->ne[d] > (uint64_t)INT64_MAX)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "tensor '%.*s': dimension %u = %llu exceeds INT64_MAX", CLIP(t->name),
                              d, (unsigned long long)t->ne[d]);
    }
    if (!cur_u32(c, &type) || !cur_u64(c, out_rel_off))
        goto trunc;
    t->type = (kf_tensor_type_t)type;
    uint32_t blk = kf_tensor_type_block(t->type);
    if (!blk)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "tensor '%.*s': unsupported tensor type %u", CLIP(t->name), type);
    if (t->ne[0] % blk)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "tensor '%.*s': ne[0] = %llu is not a multiple of the %s block size %u",
                          CLIP(t->name), (unsigned long long)t->ne[0], kf_tensor_type_name(t->type),
                          blk);
    /* Element count and byte size, each product checked for overflow. */
    uint64_t nel = 1, nbytes;
    int ovf = __builtin_mul_overflow(t->ne[0] / blk, kf_tensor_type_block_bytes(t->type), &nbytes);
    for (int d = 0; d < KF_GGUF_MAX_DIMS; d++) {
        if (ovf || __builtin_mul_overflow(nel, t->ne[d], &nel) ||
            (d > 0 && __builtin_mul_overflow(nbytes, t->ne[d], &nbytes)) ||
            nel > (uint64_t)INT64_MAX || nbytes > (uint64_t)INT64_MAX)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "tensor '%.*s': shape [%llu, %llu, %llu, %llu] overflows the element "
                              "or byte count",
                              CLIP(t->name), (unsigned long long)t->ne[0],
                              (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                              (unsigned long long)t->ne[3]);
    }
    t->n_elements = nel;
    t->n_bytes = nbytes;
    return KF_OK;
trunc:
    return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                      "tensor '%.*s': tensor info is past end of file (size %zu)", CLIP(t->name),
                      c->size);
}

static kf_err_t
parse(kf_gguf_t *gf, char *errstr, size_t errstr_size)
{
    kf_gguf_cur_t c = {.p = gf->base, .size = gf->size, .pos = 0};
    uint32_t magic = 0;
    uint64_t n_tensors, n_kv, cap;
    kf_err_t err;

    if (gf->size == 0)
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED, "file is empty");
    if (gf->size < 4) {
        /* A prefix of the magic is a truncated file, anything else is not GGUF at all. */
        if (memcmp(gf->base, "GGUF", gf->size) == 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                              "file of %zu bytes is too short for the GGUF header", gf->size);
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "bad magic: not a GGUF file");
    }
    cur_u32(&c, &magic);
    if (magic != KF_GGUF_MAGIC)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "bad magic 0x%08x: not a GGUF file (want \"GGUF\")", magic);
    if (!cur_u32(&c, &gf->version))
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "file of %zu bytes is too short for the GGUF header", gf->size);
    if (gf->version != 2 && gf->version != 3)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "unsupported GGUF version %u (supported: 2, 3%s)", gf->version,
                          (gf->version & 0xffff) == 0 ? "; big-endian file?" : "");
    if (!cur_u64(&c, &n_tensors) || !cur_u64(&c, &n_kv))
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "file of %zu bytes is too short for the GGUF header", gf->size);
    /* Bound both counts by what the remaining bytes could possibly hold. */
    if (n_kv > cur_left(&c) / KF_GGUF_MIN_KV_BYTES)
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "n_kv %llu cannot fit in the %zu bytes left in file",
                          (unsigned long long)n_kv, cur_left(&c));
    if (n_tensors > cur_left(&c) / KF_GGUF_MIN_TENSOR_BYTES)
        return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                          "n_tensors %llu cannot fit in the %zu bytes left in file",
                          (unsigned long long)n_tensors, cur_left(&c));

    gf->alignment = KF_GGUF_DEFAULT_ALIGNMENT;
    cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (!grow((void **)&gf->kvs, &cap, i, sizeof(*gf->kvs)))
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory reading kv %llu",
                              (unsigned long long)i);
        gf->n_kv = i + 1; /* count it now so close() frees a half-parsed entry */
        kf_gguf_kv_t *kv = &gf->kvs[i];
        char what[48];
        snprintf(what, sizeof(what), "kv %llu key", (unsigned long long)i);
        err = cur_str(&c, &kv->key, what, errstr, errstr_size);
        if (err)
            return err;
        if (kv->key.len == 0)
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "kv %llu has an empty key",
                              (unsigned long long)i);
        /* Keys are looked up as C strings: one with a NUL inside could never be found. */
        if (memchr(kv->key.ptr, 0, kv->key.len))
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "kv %llu: key contains a NUL byte", (unsigned long long)i);
        uint32_t type;
        if (!cur_u32(&c, &type))
            return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                              "key '%.*s': value type is past end of file (size %zu)",
                              CLIP(kv->key), gf->size);
        kv->type = (kf_gguf_type_t)type;
        err = parse_value(&c, kv, errstr, errstr_size);
        if (err)
            return err;
    }

    uint64_t dup;
    err = build_index(gf->n_kv, kv_name, gf, &gf->kv_index, &gf->kv_index_mask, &dup);
    if (err)
        return kf_err_set(errstr, errstr_size, err, "out of memory indexing keys");
    if (dup != UINT64_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT, "duplicate key '%.*s' (kv %llu)",
                          CLIP(gf->kvs[dup].key), (unsigned long long)dup);

    /* general.alignment: any unsigned integer type holding a non-zero power of two. */
    uint64_t ai = index_find(gf->kv_index, gf->kv_index_mask, kv_name, gf, "general.alignment");
    if (ai != UINT64_MAX) {
        const kf_gguf_kv_t *kv = &gf->kvs[ai];
        int neg;
        uint64_t a;
        if (kv->type == KF_GGUF_TYPE_BOOL || !kv_int(kv->type, kv->val, &neg, &a))
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "general.alignment has type %s, want an integer",
                              kf_gguf_type_name(kv->type));
        if (neg || a == 0 || (a & (a - 1)) || a > (1u << 30))
            return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                              "invalid general.alignment %s%llu: must be a power of two in "
                              "1..2^30",
                              neg ? "-" : "", (unsigned long long)a);
        gf->alignment = (uint32_t)a;
    }

    uint64_t *rel = NULL;
    cap = 0;
    uint64_t rcap = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (!grow((void **)&gf->tensors, &cap, i, sizeof(*gf->tensors)) ||
            !grow((void **)&rel, &rcap, i, sizeof(*rel))) {
            free(rel);
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM,
                              "out of memory reading tensor info %llu", (unsigned long long)i);
        }
        gf->n_tensors = i + 1;
        err = parse_tensor_info(&c, i, &gf->tensors[i], &rel[i], errstr, errstr_size);
        if (!err && rel[i] % gf->alignment)
            err = kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                             "tensor '%.*s': offset %llu is not a multiple of alignment %u",
                             CLIP(gf->tensors[i].name), (unsigned long long)rel[i], gf->alignment);
        if (err) {
            free(rel);
            return err;
        }
    }

    /* The data section starts at the next multiple of the alignment. */
    gf->data_off = ((uint64_t)c.pos + gf->alignment - 1) / gf->alignment * gf->alignment;
    for (uint64_t i = 0; i < gf->n_tensors; i++) {
        kf_gguf_tensor_t *t = &gf->tensors[i];
        uint64_t start, end;
        if (__builtin_add_overflow(gf->data_off, rel[i], &start) ||
            __builtin_add_overflow(start, t->n_bytes, &end) || end > gf->size) {
            uint64_t off = gf->data_off + rel[i]; /* for the message only; may wrap */
            free(rel);
            return kf_err_set(errstr, errstr_size, KF_ERR_TRUNCATED,
                              "tensor '%.*s': data [%llu, %llu) exceeds file size %zu",
                              CLIP(t->name), (unsigned long long)off,
                              (unsigned long long)(off + t->n_bytes), gf->size);
        }
        t->data = gf->base + start;
    }
    free(rel);

    err = build_index(gf->n_tensors, tensor_name, gf, &gf->tensor_index, &gf->tensor_index_mask,
                      &dup);
    if (err)
        return kf_err_set(errstr, errstr_size, err, "out of memory indexing tensors");
    if (dup != UINT64_MAX)
        return kf_err_set(errstr, errstr_size, KF_ERR_FORMAT,
                          "duplicate tensor name '%.*s' (tensor %llu)", CLIP(gf->tensors[dup].name),
                          (unsigned long long)dup);

    /* Overlap check: sort by start, each tensor must end before the next begins. */
    if (gf->n_tensors > 1) {
        kf_gguf_tensor_t **order = malloc((size_t)gf->n_tensors * sizeof(*order));
        if (!order)
            return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < gf->n_tensors; i++)
            order[i] = &gf->tensors[i];
        qsort(order, (size_t)gf->n_tensors, sizeof(*order), cmp_tensor_off);
        for (uint64_t i = 1; i < gf->n_tensors; i++) {
            const kf_gguf_tensor_t *a = order[i - 1], *b = order[i];
            if ((const uint8_t *)a->data + a->n_bytes > (const uint8_t *)b->data) {
                err = kf_err_set(
                    errstr, errstr_size, KF_ERR_FORMAT,
                    "tensor '%.*s' data [%llu, %llu) overlaps tensor '%.*s' starting at %llu",
                    CLIP(a->name), (unsigned long long)((const uint8_t *)a->data - gf->base),
                    (unsigned long long)((const uint8_t *)a->data - gf->base + a->n_bytes),
                    CLIP(b->name), (unsigned long long)((const uint8_t *)b->data - gf->base));
                break;
            }
        }
        free(order);
        if (err)
            return err;
    }
    return KF_OK;
}

static kf_err_t
open_common(kf_gguf_t *gf, kf_gguf_t **out, char *errstr, size_t errstr_size)
{
    kf_err_t err = parse(gf, errstr, errstr_size);
    if (err) {
        kf_gguf_close(gf);
        return err;
    }
    *out = gf;
    return KF_OK;
}

kf_err_t
kf_gguf_open_mem(const void *buf, size_t size, kf_gguf_t **out, char *errstr, size_t errstr_size)
{
    if (!out)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "out is NULL");
    *out = NULL;
    if (!buf && size)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "buf is NULL");
    kf_gguf_t *gf = calloc(1, sizeof(*gf));
    if (!gf)
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    static const uint8_t empty[1];
    gf->base = buf ? buf : empty;
    gf->size = size;
    return open_common(gf, out, errstr, errstr_size);
}

kf_err_t
kf_gguf_open(const char *path, kf_gguf_t **out, char *errstr, size_t errstr_size)
{
    if (!out || !path)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "path or out is NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kf_err_set(errstr, errstr_size, errno == ENOENT ? KF_ERR_NOT_FOUND : KF_ERR_IO,
                          "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: %s", path,
                          S_ISREG(st.st_mode) ? strerror(e) : "not a regular file");
    }
    kf_gguf_t *gf = calloc(1, sizeof(*gf));
    if (!gf) {
        close(fd);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "out of memory");
    }
    gf->size = (size_t)st.st_size;
    if (gf->size > 0) {
        void *p = mmap(NULL, gf->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(gf);
            return kf_err_set(errstr, errstr_size, KF_ERR_IO, "%s: mmap: %s", path, strerror(e));
        }
        gf->base = p;
        gf->mapped = 1;
    } else {
        static const uint8_t empty[1];
        gf->base = empty;
    }
    close(fd); /* the mapping keeps the file alive */
    kf_err_t err = parse(gf, errstr, errstr_size);
    if (err) {
        /* Prefix the path so a log line says which file was bad. */
        if (errstr && errstr_size) {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", errstr);
            snprintf(errstr, errstr_size, "%s: %s", path, msg);
        }
        kf_gguf_close(gf);
        return err;
    }
    *out = gf;
    return KF_OK;
}

void
kf_gguf_close(kf_gguf_t *gf)
{
    if (!gf)
        return;
    for (uint64_t i = 0; i < gf->n_kv; i++)
        free(gf->kvs[i].strs);
    free(gf->kvs);
    free(gf->tensors);
    free(gf->kv_index);
    free(gf->tensor_index);
    if (gf->mapped)
        munmap((void *)gf->base, gf->size);
    free(gf);
}

uint32_t
kf_gguf_version(const kf_gguf_t *gf)
{
    return gf->version;
}

uint64_t
kf_gguf_n_kv(const kf_gguf_t *gf)
{
    return gf->n_kv;
}

uint64_t
kf_gguf_n_tensors(const kf_gguf_t *gf)
{
    return gf->n_tensors;
}

uint32_t
kf_gguf_alignment(const kf_gguf_t *gf)
{
    return gf->alignment;
}

uint64_t
kf_gguf_data_offset(const kf_gguf_t *gf)
{
    return gf->data_off;
}

uint64_t
kf_gguf_file_size(const kf_gguf_t *gf)
{
    return gf->size;
}

int
kf_gguf_is_mapped(const kf_gguf_t *gf)
{
    return gf->mapped;
}

int64_t
kf_gguf_find_key(const kf_gguf_t *gf, const char *key)
{
    uint64_t i = index_find(gf->kv_index, gf->kv_index_mask, kv_name, gf, key);
    return i == UINT64_MAX ? -1 : (int64_t)i;
}

kf_gguf_str_t
kf_gguf_key_name(const kf_gguf_t *gf, int64_t idx)
{
    kf_gguf_str_t none = {"", 0};
    if (idx < 0 || (uint64_t)idx >= gf->n_kv)
        return none;
    return gf->kvs[idx].key;
}

kf_gguf_type_t
kf_gguf_kv_type(const kf_gguf_t *gf, int64_t idx)
{
    if (idx < 0 || (uint64_t)idx >= gf->n_kv)
        return (kf_gguf_type_t)-1;
    return gf->kvs[idx].type;
}

kf_err_t
kf_gguf_kv_raw(const kf_gguf_t *gf, int64_t idx, const void **out_ptr, uint64_t *out_len)
{
    if (idx < 0 || (uint64_t)idx >= gf->n_kv)
        return KF_ERR_NOT_FOUND;
    *out_ptr = gf->kvs[idx].raw;
    *out_len = gf->kvs[idx].raw_len;
    return KF_OK;
}

static const kf_gguf_kv_t *
find_kv(const kf_gguf_t *gf, const char *key)
{
    uint64_t i = index_find(gf->kv_index, gf->kv_index_mask, kv_name, gf, key);
    return i == UINT64_MAX ? NULL : &gf->kvs[i];
}

kf_err_t
kf_gguf_get_u64(const kf_gguf_t *gf, const char *key, uint64_t *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    int neg;
    uint64_t v;
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type == KF_GGUF_TYPE_BOOL || !kv_int(kv->type, kv->val, &neg, &v) || neg)
        return KF_ERR_FORMAT;
    *out = v;
    return KF_OK;
}

kf_err_t
kf_gguf_get_u32(const kf_gguf_t *gf, const char *key, uint32_t *out)
{
    uint64_t v;
    kf_err_t err = kf_gguf_get_u64(gf, key, &v);
    if (err)
        return err;
    if (v > UINT32_MAX)
        return KF_ERR_FORMAT;
    *out = (uint32_t)v;
    return KF_OK;
}

kf_err_t
kf_gguf_get_i64(const kf_gguf_t *gf, const char *key, int64_t *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    int neg;
    uint64_t v;
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (!kv_int(kv->type, kv->val, &neg, &v))
        return KF_ERR_FORMAT;
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return KF_ERR_FORMAT;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return KF_OK;
}

kf_err_t
kf_gguf_get_f64(const kf_gguf_t *gf, const char *key, double *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type == KF_GGUF_TYPE_STRING || kv->type == KF_GGUF_TYPE_ARRAY ||
        !kv_float(kv->type, kv->val, out))
        return KF_ERR_FORMAT;
    return KF_OK;
}

kf_err_t
kf_gguf_get_f32(const kf_gguf_t *gf, const char *key, float *out)
{
    double d;
    kf_err_t err = kf_gguf_get_f64(gf, key, &d);
    if (err)
        return err;
    *out = (float)d;
    return KF_OK;
}

kf_err_t
kf_gguf_get_bool(const kf_gguf_t *gf, const char *key, int *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type != KF_GGUF_TYPE_BOOL)
        return KF_ERR_FORMAT;
    *out = kv->val[0] != 0;
    return KF_OK;
}

kf_err_t
kf_gguf_get_str(const kf_gguf_t *gf, const char *key, kf_gguf_str_t *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type != KF_GGUF_TYPE_STRING)
        return KF_ERR_FORMAT;
    *out = kv->str;
    return KF_OK;
}

kf_err_t
kf_gguf_get_arr(const kf_gguf_t *gf,
                const char *key,
                kf_gguf_type_t *out_elem_type,
                uint64_t *out_n)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type != KF_GGUF_TYPE_ARRAY)
        return KF_ERR_FORMAT;
    if (out_elem_type)
        *out_elem_type = kv->elem_type;
    if (out_n)
        *out_n = kv->n;
    return KF_OK;
}

kf_err_t
kf_gguf_arr_raw(const kf_gguf_t *gf,
                const char *key,
                kf_gguf_type_t *out_elem_type,
                uint64_t *out_n,
                const void **out_data)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type != KF_GGUF_TYPE_ARRAY || kv->elem_type == KF_GGUF_TYPE_STRING)
        return KF_ERR_FORMAT;
    *out_elem_type = kv->elem_type;
    *out_n = kv->n;
    *out_data = kv->val;
    return KF_OK;
}

kf_err_t
kf_gguf_arr_str(const kf_gguf_t *gf, const char *key, uint64_t i, kf_gguf_str_t *out)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv)
        return KF_ERR_NOT_FOUND;
    if (kv->type != KF_GGUF_TYPE_ARRAY || kv->elem_type != KF_GGUF_TYPE_STRING)
        return KF_ERR_FORMAT;
    if (i >= kv->n)
        return KF_ERR_INVALID_ARG;
    *out = kv->strs[i];
    return KF_OK;
}

/* Locates element i of a numeric array; NULL (with *err set) when not applicable. */
static const uint8_t *
arr_elem(const kf_gguf_t *gf, const char *key, uint64_t i, kf_gguf_type_t *et, kf_err_t *err)
{
    const kf_gguf_kv_t *kv = find_kv(gf, key);
    if (!kv) {
        *err = KF_ERR_NOT_FOUND;
        return NULL;
    }
    size_t esz = kf_gguf_type_size(kv->elem_type);
    if (kv->type != KF_GGUF_TYPE_ARRAY || !esz) {
        *err = KF_ERR_FORMAT;
        return NULL;
    }
    if (i >= kv->n) {
        *err = KF_ERR_INVALID_ARG;
        return NULL;
    }
    *et = kv->elem_type;
    return kv->val + i * esz;
}

kf_err_t
kf_gguf_arr_f64(const kf_gguf_t *gf, const char *key, uint64_t i, double *out)
{
    kf_err_t err = KF_OK;
    kf_gguf_type_t et;
    const uint8_t *v = arr_elem(gf, key, i, &et, &err);
    if (!v)
        return err;
    int neg;
    uint64_t mag;
    if (et == KF_GGUF_TYPE_BOOL) {
        kv_int(et, v, &neg, &mag);
        *out = (double)mag;
        return KF_OK;
    }
    return kv_float(et, v, out) ? KF_OK : KF_ERR_FORMAT;
}

kf_err_t
kf_gguf_arr_i64(const kf_gguf_t *gf, const char *key, uint64_t i, int64_t *out)
{
    kf_err_t err = KF_OK;
    kf_gguf_type_t et;
    const uint8_t *v = arr_elem(gf, key, i, &et, &err);
    if (!v)
        return err;
    int neg;
    uint64_t mag;
    if (!kv_int(et, v, &neg, &mag))
        return KF_ERR_FORMAT;
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return KF_ERR_FORMAT;
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return KF_OK;
}

const kf_gguf_tensor_t *
kf_gguf_tensor(const kf_gguf_t *gf, uint64_t idx)
{
    if (idx >= gf->n_tensors)
        return NULL;
    return &gf->tensors[idx];
}

const kf_gguf_tensor_t *
kf_gguf_find_tensor(const kf_gguf_t *gf, const char *name)
{
    uint64_t i = index_find(gf->tensor_index, gf->tensor_index_mask, tensor_name, gf, name);
    return i == UINT64_MAX ? NULL : &gf->tensors[i];
}
