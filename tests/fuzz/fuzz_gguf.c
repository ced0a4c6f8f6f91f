/*
 * libFuzzer target for the GGUF reader: kf_gguf_open_mem() over arbitrary bytes must either
 * fail with a message or return a handle whose every getter, array element and tensor row can
 * be read without leaving the buffer (ASan checks the reads; libFuzzer's buffer is exactly
 * sized). Accepted files are also copied kv by kv through the writer and must reopen with the
 * same keys, which checks that raw value spans are exact.
 */
#include "kf_gguf.h"
#include "kf_gguf_writer.h"
#include "kf_quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads kv `i` through every getter; results are ignored, only the accesses matter. */
static void
touch_kv(const kf_gguf_t *gf, int64_t i)
{
    kf_gguf_str_t k = kf_gguf_key_name(gf, i);
    char key[256];
    if (k.len >= sizeof(key))
        return;
    memcpy(key, k.ptr, k.len);
    key[k.len] = 0;
    if (kf_gguf_find_key(gf, key) != i) /* keys are unique, so lookup finds this one */
        __builtin_trap();
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    double d;
    int b;
    kf_gguf_str_t s;
    kf_gguf_type_t et;
    uint64_t n;
    const void *raw;
    (void)kf_gguf_get_u32(gf, key, &u32);
    (void)kf_gguf_get_u64(gf, key, &u64);
    (void)kf_gguf_get_i64(gf, key, &i64);
    (void)kf_gguf_get_f32(gf, key, &f);
    (void)kf_gguf_get_f64(gf, key, &d);
    (void)kf_gguf_get_bool(gf, key, &b);
    if (kf_gguf_get_str(gf, key, &s) == KF_OK && s.len)
        (void)((volatile const char *)s.ptr)[s.len - 1];
    if (kf_gguf_get_arr(gf, key, &et, &n) == KF_OK) {
        uint64_t lim = n < 64 ? n : 64;
        for (uint64_t j = 0; j <= lim; j++) { /* one past the end on purpose */
            if (kf_gguf_arr_str(gf, key, j, &s) == KF_OK && s.len)
                (void)((volatile const char *)s.ptr)[s.len - 1];
            (void)kf_gguf_arr_f64(gf, key, j, &d);
            (void)kf_gguf_arr_i64(gf, key, j, &i64);
        }
        if (n && kf_gguf_arr_str(gf, key, n - 1, &s) == KF_OK && s.len)
            (void)((volatile const char *)s.ptr)[s.len - 1];
        if (kf_gguf_arr_raw(gf, key, &et, &n, &raw) == KF_OK && n)
            (void)((volatile const uint8_t *)raw)[n * kf_gguf_type_size(et) - 1];
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kf_gguf_t *gf = NULL;
    char errstr[256];
    errstr[0] = 0;
    kf_err_t err = kf_gguf_open_mem(data, size, &gf, errstr, sizeof(errstr));
    if (err) {
        if (gf || !errstr[0]) /* failures leave no handle and always explain themselves */
            __builtin_trap();
        return 0;
    }
    for (int64_t i = 0; i < (int64_t)kf_gguf_n_kv(gf); i++)
        touch_kv(gf, i);
    static float row[4096];
    for (uint64_t i = 0; i < kf_gguf_n_tensors(gf); i++) {
        const kf_gguf_tensor_t *t = kf_gguf_tensor(gf, i);
        const uint8_t *p = t->data;
        /* First and last byte of the extent, and the first row when it is small. */
        (void)((volatile const uint8_t *)p)[0];
        (void)((volatile const uint8_t *)p)[t->n_bytes - 1];
        if (t->ne[0] <= 4096)
            (void)kf_dequant_row(t->type, t->data, row, (int64_t)t->ne[0]);
    }
    /* Copy every kv through the writer: the result must reopen with the same count. */
    kf_gguf_writer_t *w;
    if (kf_gguf_writer_new(&w, errstr, sizeof(errstr)) == KF_OK) {
        for (int64_t i = 0; i < (int64_t)kf_gguf_n_kv(gf); i++)
            if (kf_gguf_writer_copy_kv(w, gf, i) != KF_OK)
                __builtin_trap();
        void *buf;
        size_t n;
        if (kf_gguf_writer_write_mem(w, &buf, &n, errstr, sizeof(errstr)) == KF_OK) {
            kf_gguf_t *copy;
            /* general.alignment rules are the same, so the copy must be accepted. */
            if (kf_gguf_open_mem(buf, n, &copy, errstr, sizeof(errstr)) != KF_OK ||
                kf_gguf_n_kv(copy) != kf_gguf_n_kv(gf))
                __builtin_trap();
            kf_gguf_close(copy);
            free(buf);
        }
        kf_gguf_writer_destroy(w);
    }
    kf_gguf_close(gf);
    return 0;
}
