/*
 * kf_gguf: a validating, mmap-based reader for GGUF model files (versions 2 and 3).
 *
 * Every count, length, offset, alignment, dimension and type in the file is checked
 * against the file size before it is used; a bad file gives KF_ERR_FORMAT or
 * KF_ERR_TRUNCATED with an errstr that names the problem, never a crash.
 *   KF_ERR_TRUNCATED: the file ends before something it declares (an empty file, a count,
 *     string or array that cannot fit in the bytes left, tensor data past the end).
 *     Every proper prefix of a valid file up to the end of its last tensor gives this.
 *   KF_ERR_FORMAT: bad magic, version other than 2/3, unknown value or tensor type, nested
 *     array, empty key or tensor name or one containing NUL, duplicate key or tensor name,
 *     general.alignment not an integer power of two in 1..2^30, n_dims outside 1..4, a zero
 *     or > INT64_MAX dimension, element or byte count overflowing int64, ne[0] not a multiple
 *     of the type's block size, tensor offset not a multiple of the alignment, overlapping
 *     tensor data.
 *   kf_gguf_open() adds KF_ERR_NOT_FOUND / KF_ERR_IO for a missing or unreadable path and
 *   prefixes errstr with the path. Allocation is bounded by what was actually parsed.
 *
 * Thread-safety: a kf_gguf_t is immutable after kf_gguf_open() and may be read from many
 * threads. Returned pointers borrow from the mapping and live until kf_gguf_close().
 */
#ifndef KF_GGUF_H
#define KF_GGUF_H

#include "kf_err.h"

#include <stddef.h>
#include <stdint.h>

/* GGUF metadata value types (numbering as in the GGUF spec). */
typedef enum kf_gguf_type {
    KF_GGUF_TYPE_UINT8 = 0,
    KF_GGUF_TYPE_INT8 = 1,
    KF_GGUF_TYPE_UINT16 = 2,
    KF_GGUF_TYPE_INT16 = 3,
    KF_GGUF_TYPE_UINT32 = 4,
    KF_GGUF_TYPE_INT32 = 5,
    KF_GGUF_TYPE_FLOAT32 = 6,
    KF_GGUF_TYPE_BOOL = 7,
    KF_GGUF_TYPE_STRING = 8,
    KF_GGUF_TYPE_ARRAY = 9,
    KF_GGUF_TYPE_UINT64 = 10,
    KF_GGUF_TYPE_INT64 = 11,
    KF_GGUF_TYPE_FLOAT64 = 12,
} kf_gguf_type_t;

/* Tensor element types (ggml numbering). Only these are accepted. */
typedef enum kf_tensor_type {
    KF_TT_F32 = 0,
    KF_TT_F16 = 1,
    KF_TT_Q4_0 = 2,
    KF_TT_Q8_0 = 8,
    KF_TT_Q4_K = 12,
    KF_TT_Q6_K = 14,
    KF_TT_BF16 = 30,
} kf_tensor_type_t;

#define KF_GGUF_MAX_DIMS 4

typedef struct kf_gguf kf_gguf_t;

/* A string inside the file: not NUL-terminated. */
typedef struct kf_gguf_str {
    const char *ptr;
    uint64_t len;
} kf_gguf_str_t;

/* Tensor data is borrowed from the mapping; `data` is aligned to general.alignment relative to
 * the start of the file (so to the page for kf_gguf_open). Validated: the extent
 * [data, data + n_bytes) lies inside the file and overlaps no other tensor. */
typedef struct kf_gguf_tensor {
    kf_gguf_str_t name;
    kf_tensor_type_t type;
    uint32_t n_dims;
    uint64_t ne[KF_GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused = 1 */
    uint64_t n_elements;
    uint64_t n_bytes;
    const void *data; /* inside the mapping, aligned to general.alignment */
} kf_gguf_tensor_t;

/* Opens and validates `path`. On failure *out is NULL and errstr names the problem. */
kf_err_t kf_gguf_open(const char *path, kf_gguf_t **out, char *errstr, size_t errstr_size);
/* Same, over a caller-owned buffer that must outlive the handle (fuzzers, tests). */
kf_err_t
kf_gguf_open_mem(const void *buf, size_t size, kf_gguf_t **out, char *errstr, size_t errstr_size);
void kf_gguf_close(kf_gguf_t *gf);

uint32_t kf_gguf_version(const kf_gguf_t *gf);
uint64_t kf_gguf_n_kv(const kf_gguf_t *gf);
uint64_t kf_gguf_n_tensors(const kf_gguf_t *gf);

/* Metadata lookup by key; -1 when absent. */
int64_t kf_gguf_find_key(const kf_gguf_t *gf, const char *key);
kf_gguf_str_t kf_gguf_key_name(const kf_gguf_t *gf, int64_t idx);
kf_gguf_type_t kf_gguf_kv_type(const kf_gguf_t *gf, int64_t idx);

/* Typed getters: KF_ERR_NOT_FOUND when absent, KF_ERR_FORMAT when the stored type does not
 * convert (any integer type converts to the integer getters if the value fits). */
kf_err_t kf_gguf_get_u32(const kf_gguf_t *gf, const char *key, uint32_t *out);
kf_err_t kf_gguf_get_u64(const kf_gguf_t *gf, const char *key, uint64_t *out);
kf_err_t kf_gguf_get_f32(const kf_gguf_t *gf, const char *key, float *out);
kf_err_t kf_gguf_get_bool(const kf_gguf_t *gf, const char *key, int *out);
kf_err_t kf_gguf_get_str(const kf_gguf_t *gf, const char *key, kf_gguf_str_t *out);

/* Arrays: element type and count; element access by index (bounds-checked). */
kf_err_t kf_gguf_get_arr(const kf_gguf_t *gf,
                         const char *key,
                         kf_gguf_type_t *out_elem_type,
                         uint64_t *out_n);
kf_err_t kf_gguf_arr_str(const kf_gguf_t *gf, const char *key, uint64_t i, kf_gguf_str_t *out);
/* Numeric arrays: element i converted to double/int64 (any numeric element type). */
kf_err_t kf_gguf_arr_f64(const kf_gguf_t *gf, const char *key, uint64_t i, double *out);
kf_err_t kf_gguf_arr_i64(const kf_gguf_t *gf, const char *key, uint64_t i, int64_t *out);

/* Signed integer getter: any integer type (and bool) whose value fits in int64. */
kf_err_t kf_gguf_get_i64(const kf_gguf_t *gf, const char *key, int64_t *out);
/* Floating getter: FLOAT32, FLOAT64 or any integer type, converted to double. */
kf_err_t kf_gguf_get_f64(const kf_gguf_t *gf, const char *key, double *out);

/* Packed element data of a numeric (non-string) array: *out_data points at n elements of
 * kf_gguf_type_size(*out_elem_type) bytes each, little-endian and possibly unaligned (copy
 * with memcpy, never cast). KF_ERR_FORMAT for string arrays or non-arrays. */
kf_err_t kf_gguf_arr_raw(const kf_gguf_t *gf,
                         const char *key,
                         kf_gguf_type_t *out_elem_type,
                         uint64_t *out_n,
                         const void **out_data);

/* The encoded value bytes of kv `idx` exactly as stored after its u32 type (for arrays:
 * the element type, the count and the elements). Lets a writer copy a kv verbatim. */
kf_err_t kf_gguf_kv_raw(const kf_gguf_t *gf, int64_t idx, const void **out_ptr, uint64_t *out_len);

/* Size in bytes of one scalar value of a fixed-size type; 0 for STRING, ARRAY, unknown. */
size_t kf_gguf_type_size(kf_gguf_type_t t);
/* Static name of a metadata type ("u32", "string", ...); "?" for unknown values. */
const char *kf_gguf_type_name(kf_gguf_type_t t);

/* general.alignment in effect (default 32) and the absolute file offset of the data section. */
uint32_t kf_gguf_alignment(const kf_gguf_t *gf);
uint64_t kf_gguf_data_offset(const kf_gguf_t *gf);
/* Size of the file (or buffer) the handle reads. */
uint64_t kf_gguf_file_size(const kf_gguf_t *gf);
/* 1 when the data is a read-only file mapping (kf_gguf_open), 0 for a caller's buffer. */
int kf_gguf_is_mapped(const kf_gguf_t *gf);

/* 1 when s holds exactly the bytes of the NUL-terminated cstr. */
int kf_gguf_str_eq(kf_gguf_str_t s, const char *cstr);

/* Tensors. idx out of range gives NULL. */
const kf_gguf_tensor_t *kf_gguf_tensor(const kf_gguf_t *gf, uint64_t idx);
/* NULL when no tensor has that name. */
const kf_gguf_tensor_t *kf_gguf_find_tensor(const kf_gguf_t *gf, const char *name);

/* Block size in elements and bytes per block of a tensor type; 0 for unknown types. */
uint32_t kf_tensor_type_block(kf_tensor_type_t t);
uint32_t kf_tensor_type_block_bytes(kf_tensor_type_t t);
const char *kf_tensor_type_name(kf_tensor_type_t t);

#endif /* KF_GGUF_H */
