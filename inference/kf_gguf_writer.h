/*
 * kf_gguf_writer: builds GGUF files (version 3 by default) for model-gen, tests and fixtures.
 *
 * Usage: kf_gguf_writer_new(), add key/values and tensor descriptions in the order they
 * should appear, then either write everything at once (kf_gguf_writer_write_file / _mem,
 * which need every tensor's data pointer) or stream: kf_gguf_writer_begin_file() writes the
 * header, kv pairs and tensor infos, then kf_gguf_writer_put_data() appends each tensor's
 * bytes in the order the tensors were added, and kf_gguf_writer_finish() closes the file.
 * Streaming lets a large model be written one tensor (or one row chunk) at a time.
 *
 * The writer checks its arguments but deliberately does NOT validate the file as a whole:
 * duplicate keys, raw values of any type and any version number can be written, so tests can
 * build the corrupt files the reader must reject. Tensor data is padded to the alignment
 * (general.alignment when added, else 32) exactly as the reader expects.
 *
 * Ownership: strings and arrays passed to add_* are copied; tensor data pointers passed to
 * kf_gguf_writer_add_tensor() are borrowed until the file is written.
 * Thread-safety: a writer is used by one thread at a time.
 */
#ifndef KF_GGUF_WRITER_H
#define KF_GGUF_WRITER_H

#include "kf_err.h"
#include "kf_gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_gguf_writer kf_gguf_writer_t;

kf_err_t kf_gguf_writer_new(kf_gguf_writer_t **out, char *errstr, size_t errstr_size);
/* Closes a stream begun with begin_file (leaving a partial file) and frees everything. */
void kf_gguf_writer_destroy(kf_gguf_writer_t *w);

/* Header version written (default 3). Any value is accepted, for tests. */
void kf_gguf_writer_set_version(kf_gguf_writer_t *w, uint32_t version);
/* Adds general.alignment (u32) and lays tensor data out with it. KF_ERR_INVALID_ARG unless a
 * power of two in 1..2^30. (Adding "general.alignment" with add_u32 does the same.) */
kf_err_t kf_gguf_writer_set_alignment(kf_gguf_writer_t *w, uint32_t alignment);

/* Scalar key/values. Keys are copied; all return KF_ERR_NOMEM or KF_ERR_STATE (after begin)
 * on failure. */
kf_err_t kf_gguf_writer_add_u8(kf_gguf_writer_t *w, const char *key, uint8_t v);
kf_err_t kf_gguf_writer_add_i8(kf_gguf_writer_t *w, const char *key, int8_t v);
kf_err_t kf_gguf_writer_add_u16(kf_gguf_writer_t *w, const char *key, uint16_t v);
kf_err_t kf_gguf_writer_add_i16(kf_gguf_writer_t *w, const char *key, int16_t v);
kf_err_t kf_gguf_writer_add_u32(kf_gguf_writer_t *w, const char *key, uint32_t v);
kf_err_t kf_gguf_writer_add_i32(kf_gguf_writer_t *w, const char *key, int32_t v);
kf_err_t kf_gguf_writer_add_u64(kf_gguf_writer_t *w, const char *key, uint64_t v);
kf_err_t kf_gguf_writer_add_i64(kf_gguf_writer_t *w, const char *key, int64_t v);
kf_err_t kf_gguf_writer_add_f32(kf_gguf_writer_t *w, const char *key, float v);
kf_err_t kf_gguf_writer_add_f64(kf_gguf_writer_t *w, const char *key, double v);
kf_err_t kf_gguf_writer_add_bool(kf_gguf_writer_t *w, const char *key, int v);
kf_err_t kf_gguf_writer_add_str(kf_gguf_writer_t *w, const char *key, const char *v);
/* String of explicit length (may contain NUL bytes). */
kf_err_t kf_gguf_writer_add_strn(kf_gguf_writer_t *w, const char *key, const char *v, uint64_t len);

/* Numeric array: n host-order elements of elem_type (a fixed-size type, not STRING/ARRAY). */
kf_err_t kf_gguf_writer_add_arr(
    kf_gguf_writer_t *w, const char *key, kf_gguf_type_t elem_type, const void *data, uint64_t n);
/* String arrays from NUL-terminated strings or from (ptr, len) pairs. */
kf_err_t kf_gguf_writer_add_arr_str(kf_gguf_writer_t *w,
                                    const char *key,
                                    const char *const *strs,
                                    uint64_t n);
kf_err_t kf_gguf_writer_add_arr_strn(kf_gguf_writer_t *w,
                                     const char *key,
                                     const kf_gguf_str_t *strs,
                                     uint64_t n);
/* A key with type `type` (any u32, even invalid) followed by `len` raw value bytes, for
 * crafting unusual or corrupt files. */
kf_err_t kf_gguf_writer_add_raw(
    kf_gguf_writer_t *w, const char *key, uint32_t type, const void *raw, size_t len);
/* Copies kv `idx` of an open reader verbatim (same key, type and value). */
kf_err_t kf_gguf_writer_copy_kv(kf_gguf_writer_t *w, const kf_gguf_t *gf, int64_t idx);

/* Describes a tensor (n_dims 1..4, ne[0] a multiple of the type's block size). `data`
 * (kf_quant_row_size bytes for the whole tensor) is borrowed until written; pass NULL when
 * streaming with put_data. KF_ERR_INVALID_ARG for a bad shape or type. */
kf_err_t kf_gguf_writer_add_tensor(kf_gguf_writer_t *w,
                                   const char *name,
                                   kf_tensor_type_t type,
                                   uint32_t n_dims,
                                   const uint64_t *ne,
                                   const void *data);

/* Writes the whole file (every tensor needs a data pointer). */
kf_err_t
kf_gguf_writer_write_file(kf_gguf_writer_t *w, const char *path, char *errstr, size_t errstr_size);
/* Same into a malloc()ed buffer the caller frees. */
kf_err_t kf_gguf_writer_write_mem(
    kf_gguf_writer_t *w, void **out_buf, size_t *out_size, char *errstr, size_t errstr_size);

/* Streaming: writes header, kv pairs, tensor infos and padding to `path`. */
kf_err_t
kf_gguf_writer_begin_file(kf_gguf_writer_t *w, const char *path, char *errstr, size_t errstr_size);
/* Appends bytes of the current tensor (tensors in the order added; a call may not cross a
 * tensor boundary). Padding is inserted automatically when a tensor is complete. */
kf_err_t kf_gguf_writer_put_data(
    kf_gguf_writer_t *w, const void *data, size_t n, char *errstr, size_t errstr_size);
/* Checks every tensor was fully written, flushes and closes. */
kf_err_t kf_gguf_writer_finish(kf_gguf_writer_t *w, char *errstr, size_t errstr_size);

/* Total size the file will have (valid once all tensors are added). */
uint64_t kf_gguf_writer_file_size(const kf_gguf_writer_t *w);

#endif /* KF_GGUF_WRITER_H */
