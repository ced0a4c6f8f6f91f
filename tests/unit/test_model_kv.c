/*
 * Unit tests of the paged KV cache allocator: geometry from the budget, block tables growing
 * with the sequence, all-or-nothing reservation on exhaustion, truncate and free returning
 * blocks, slot reuse, and no block ever owned by two sequences.
 */
#include "kf_kv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void
test_kv_geometry(void **state)
{
    (void)state;
    char err[256];
    kf_kv_t *kv = NULL;
    /* 2 layers, 2 kv heads, head_dim 8, 16 tokens, f16: 2*2*16*2*8*2 = 2048 bytes per block. */
    kf_kv_conf_t conf = {.budget_bytes = 2048 * 10 + 100, .dtype = KF_KV_F16};
    assert_int_equal(kf_kv_new_dims(2, 2, 8, &conf, &kv, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_kv_block_bytes(kv), 2048);
    assert_int_equal(kf_kv_n_blocks(kv), 10);
    assert_int_equal(kf_kv_block_tokens(kv), 16);
    assert_int_equal(kf_kv_max_seqs(kv), 256);
    assert_int_equal(kf_kv_n_free_blocks(kv), 10);
    assert_int_equal(kf_kv_blocks_for(kv, 0), 0);
    assert_int_equal(kf_kv_blocks_for(kv, 16), 1);
    assert_int_equal(kf_kv_blocks_for(kv, 17), 2);
    kf_kv_destroy(kv);
    /* F32 doubles the block: the same budget holds half the blocks. */
    conf.dtype = KF_KV_F32;
    assert_int_equal(kf_kv_new_dims(2, 2, 8, &conf, &kv, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_kv_n_blocks(kv), 5);
    kf_kv_destroy(kv);
    /* A budget below one block is an error that says so. */
    conf.budget_bytes = 100;
    assert_int_equal(kf_kv_new_dims(2, 2, 8, &conf, &kv, err, sizeof(err)), KF_ERR_LIMIT);
    assert_null(kv);
    assert_non_null(strstr(err, "does not hold one block"));
    conf.budget_bytes = 1 << 20;
    assert_int_equal(kf_kv_new_dims(0, 2, 8, &conf, &kv, err, sizeof(err)), KF_ERR_INVALID_ARG);
    kf_kv_destroy(NULL);
}

static void
test_kv_alloc_free(void **state)
{
    (void)state;
    char err[256];
    kf_kv_t *kv = NULL;
    kf_kv_conf_t conf = {
        .budget_bytes = 4 * 8 * 4 * 6, .block_tokens = 4, .max_seqs = 3, .dtype = KF_KV_F32};
    /* 1 layer, 1 head, dim 4, 4 tokens, f32: 2*4*4*4 = 128 bytes; budget holds 6 blocks. */
    assert_int_equal(kf_kv_new_dims(1, 1, 4, &conf, &kv, err, sizeof(err)), KF_OK);
    assert_int_equal(kf_kv_n_blocks(kv), 6);

    int32_t a, b, c, d;
    assert_int_equal(kf_kv_seq_new(kv, &a), KF_OK);
    assert_int_equal(kf_kv_seq_new(kv, &b), KF_OK);
    assert_int_equal(kf_kv_seq_new(kv, &c), KF_OK);
    assert_int_equal(kf_kv_seq_new(kv, &d), KF_ERR_LIMIT); /* only 3 slots */
    assert_int_equal(d, -1);
    assert_true(a != b && b != c && a != c);
    assert_int_equal(kf_kv_seq_capacity(kv, a), 0);

    assert_int_equal(kf_kv_seq_reserve(kv, a, 5), KF_OK); /* 2 blocks */
    assert_int_equal(kf_kv_seq_capacity(kv, a), 8);
    assert_int_equal(kf_kv_seq_reserve(kv, a, 8), KF_OK); /* still 2 */
    assert_int_equal(kf_kv_n_free_blocks(kv), 4);
    assert_int_equal(kf_kv_seq_reserve(kv, b, 12), KF_OK); /* 3 blocks */
    assert_int_equal(kf_kv_n_free_blocks(kv), 1);
    /* Exhaustion: c wants 2, only 1 free: nothing changes. */
    assert_int_equal(kf_kv_seq_reserve(kv, c, 8), KF_ERR_LIMIT);
    assert_int_equal(kf_kv_seq_capacity(kv, c), 0);
    assert_int_equal(kf_kv_n_free_blocks(kv), 1);
    assert_int_equal(kf_kv_seq_reserve(kv, c, 1), KF_OK);
    assert_int_equal(kf_kv_n_free_blocks(kv), 0);

    /* Every block is owned exactly once. */
    int owner[6];
    memset(owner, 0, sizeof(owner));
    int32_t seqs[3] = {a, b, c};
    for (int s = 0; s < 3; s++) {
        uint32_t n = 0;
        const uint32_t *bl = kf_kv_seq_blocks(kv, seqs[s], &n);
        for (uint32_t i = 0; i < n; i++) {
            assert_true(bl[i] < 6);
            owner[bl[i]]++;
        }
    }
    for (int i = 0; i < 6; i++)
        assert_int_equal(owner[i], 1);

    /* Truncate keeps the blocks covering the kept positions. */
    uint32_t nb = 0;
    const uint32_t *bl = kf_kv_seq_blocks(kv, b, &nb);
    uint32_t first = bl[0];
    assert_int_equal(kf_kv_seq_truncate(kv, b, 3), KF_OK);
    bl = kf_kv_seq_blocks(kv, b, &nb);
    assert_int_equal(nb, 1);
    assert_int_equal(bl[0], first);
    assert_int_equal(kf_kv_n_free_blocks(kv), 2);

    /* Free returns everything and the slot; freeing twice or a bad slot is harmless. */
    kf_kv_seq_free(kv, a);
    kf_kv_seq_free(kv, a);
    kf_kv_seq_free(kv, 99);
    kf_kv_seq_free(kv, -1);
    assert_false(kf_kv_seq_valid(kv, a));
    assert_int_equal(kf_kv_n_free_blocks(kv), 4);
    assert_int_equal(kf_kv_seq_reserve(kv, a, 1), KF_ERR_INVALID_ARG);
    assert_null(kf_kv_seq_blocks(kv, a, &nb));
    assert_int_equal(nb, 0);
    assert_int_equal(kf_kv_seq_new(kv, &d), KF_OK);
    assert_int_equal(d, a); /* slot reused */
    assert_int_equal(kf_kv_seq_reserve(kv, d, 16), KF_OK);
    assert_int_equal(kf_kv_n_free_blocks(kv), 0);
    kf_kv_seq_free(kv, b);
    kf_kv_seq_free(kv, c);
    kf_kv_seq_free(kv, d);
    assert_int_equal(kf_kv_n_free_blocks(kv), 6);
    kf_kv_destroy(kv);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_geometry),
        cmocka_unit_test(test_kv_alloc_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
