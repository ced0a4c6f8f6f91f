/*
 * Unit tests for kf_chat: exact renderings of each family's published template for a fixed
 * conversation (the one llama.cpp's template tests use), default system prompts, the R1
 * "</think>" stripping, detection from metadata, and bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "kf_chat.h"

#include <stdlib.h>
#include <string.h>

#define BOS_L3 "<|begin_of_text|>"
#define BOS_R1      \
    "<\xEF\xBD\x9C" \
    "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define R1_U "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define R1_A        \
    "<\xEF\xBD\x9C" \
    "Assistant\xEF\xBD\x9C>"
#define R1_E        \
    "<\xEF\xBD\x9C" \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"

static const kf_chat_msg_t conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
#define N_CONV (sizeof(conv) / sizeof(conv[0]))

static void
expect(kf_chat_tmpl_t t,
       const kf_chat_msg_t *msgs,
       size_t n,
       int gen,
       const char *bos,
       const char *want)
{
    char err[256] = "";
    char *out = NULL;
    assert_int_equal(kf_chat_apply(t, msgs, n, gen, bos, &out, err, sizeof(err)), KF_OK);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
}

static void
test_chatml_qwen(void **state)
{
    (void)state;
    const char *body = "<|im_start|>user\nHello<|im_end|>\n"
                       "<|im_start|>assistant\nHi there<|im_end|>\n"
                       "<|im_start|>user\nWho are you<|im_end|>\n"
                       "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n"
                       "<|im_start|>user\nAnother question<|im_end|>\n"
                       "<|im_start|>assistant\n";
    char want[1024];
    snprintf(want, sizeof(want), "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n%s",
             body);
    /* With an explicit system message all three ChatML variants agree. */
    expect(KF_CHAT_TMPL_CHATML, conv, N_CONV, 1, NULL, want);
    expect(KF_CHAT_TMPL_QWEN2, conv, N_CONV, 1, NULL, want);
    expect(KF_CHAT_TMPL_QWEN25, conv, N_CONV, 1, "<ignored>", want);

    /* Without one they differ only in the default system prompt. */
    expect(KF_CHAT_TMPL_CHATML, conv + 1, N_CONV - 1, 1, NULL, body);
    snprintf(want, sizeof(want),
             "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
             "assistant.<|im_end|>\n%s",
             body);
    expect(KF_CHAT_TMPL_QWEN25, conv + 1, N_CONV - 1, 1, NULL, want);
    snprintf(want, sizeof(want), "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n%s",
             body);
    expect(KF_CHAT_TMPL_QWEN2, conv + 1, N_CONV - 1, 1, NULL, want);

    /* No generation prompt; a later system message renders in place (Qwen2.5). */
    const kf_chat_msg_t m[] = {{"user", "a"}, {"system", "b"}};
    expect(KF_CHAT_TMPL_QWEN25, m, 2, 0, NULL,
           "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
           "assistant.<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>system\nb<|im_end|>"
           "\n");
}

static void
test_llama3(void **state)
{
    (void)state;
    const char *body = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
                       "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|"
                       "eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_"
                       "id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|"
                       "start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|"
                       "><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|"
                       "start_header_id|>assistant<|end_header_id|>\n\n";
    /* Expected text as in llama.cpp's test for Meta-Llama-3-Instruct (content is trimmed). */
    expect(KF_CHAT_TMPL_LLAMA3, conv, N_CONV, 1, NULL, body);
    char want[2048];
    snprintf(want, sizeof(want), "%s%s", BOS_L3, body);
    expect(KF_CHAT_TMPL_LLAMA3, conv, N_CONV, 1, BOS_L3, want);
    const kf_chat_msg_t m[] = {{"user", "\n hi \t"}};
    expect(KF_CHAT_TMPL_LLAMA3, m, 1, 0, BOS_L3,
           BOS_L3 "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
}

static void
test_deepseek_r1(void **state)
{
    (void)state;
    expect(KF_CHAT_TMPL_DEEPSEEK_R1, conv, N_CONV, 1, BOS_R1,
           BOS_R1 "You are a helpful assistant" R1_U "Hello" R1_A "Hi there" R1_E R1_U
                  "Who are you" R1_A "   I am an assistant   " R1_E R1_U "Another question" R1_A
                  "<think>\n");
    /* Earlier reasoning is dropped: only the text after the last </think> is replayed. The
     * last system message wins and sits right after BOS. */
    const kf_chat_msg_t m[] = {
        {"system", "first"},
        {"user", "2+2?"},
        {"assistant", "<think>\nadd them\n</think>\n\n4"},
        {"system", "second"},
        {"user", "and 3+3?"},
    };
    expect(KF_CHAT_TMPL_DEEPSEEK_R1, m, 5, 1, BOS_R1,
           BOS_R1 "second" R1_U "2+2?" R1_A "\n\n4" R1_E R1_U "and 3+3?" R1_A "<think>\n");
    /* No BOS text, no generation prompt, no system. */
    expect(KF_CHAT_TMPL_DEEPSEEK_R1, m + 1, 1, 0, NULL, R1_U "2+2?");
}

static void
test_detect(void **state)
{
    (void)state;
    char err[256];
    kf_chat_tmpl_t t = KF_CHAT_TMPL__COUNT;
    const char *r1 = "{{bos_token}}{{ns.system_prompt}}{{'" R1_U "' + message['content']}}";
    assert_int_equal(kf_chat_detect(r1, strlen(r1), "qwen2", "qwen2", &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_DEEPSEEK_R1);
    const char *l3 = "{% set content = '<|start_header_id|>' + message['role'] %}";
    assert_int_equal(kf_chat_detect(l3, strlen(l3), NULL, "llama", &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_LLAMA3);
    const char *q25 = "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
                      "a helpful assistant.<|im_end|>\\n' }}";
    assert_int_equal(kf_chat_detect(q25, strlen(q25), NULL, NULL, &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_QWEN25);
    const char *q2 = "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}";
    assert_int_equal(kf_chat_detect(q2, strlen(q2), NULL, NULL, &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_QWEN2);
    const char *cm = "{{'<|im_start|>' + message['role']}}";
    assert_int_equal(kf_chat_detect(cm, strlen(cm), NULL, "llama", &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_CHATML);
    /* The length bounds the search: a marker past it is not seen. */
    assert_int_equal(kf_chat_detect(cm, 3, NULL, "qwen2", &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_QWEN25);

    /* Fallbacks: pre, then arch. */
    assert_int_equal(kf_chat_detect(NULL, 0, "deepseek-r1-qwen", "qwen2", &t, err, sizeof(err)),
                     KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_DEEPSEEK_R1);
    assert_int_equal(kf_chat_detect(NULL, 0, "llama-bpe", NULL, &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_LLAMA3);
    assert_int_equal(kf_chat_detect(NULL, 0, NULL, "qwen2", &t, err, sizeof(err)), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_QWEN25);
    assert_int_equal(kf_chat_detect(NULL, 0, "gpt2", "gptneox", &t, err, sizeof(err)),
                     KF_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "gptneox"));

    assert_int_equal(kf_chat_tmpl_from_name("deepseek-r1", &t), KF_OK);
    assert_int_equal(t, KF_CHAT_TMPL_DEEPSEEK_R1);
    assert_string_equal(kf_chat_tmpl_name(KF_CHAT_TMPL_QWEN25), "qwen2.5");
    assert_int_equal(kf_chat_tmpl_from_name("nope", &t), KF_ERR_NOT_FOUND);
    assert_string_equal(kf_chat_tmpl_name((kf_chat_tmpl_t)77), "unknown");
}

static void
test_bad_input(void **state)
{
    (void)state;
    char err[256];
    char *out = (char *)1;
    const kf_chat_msg_t bad[] = {{"user", "x"}, {"tool", "y"}};
    assert_int_equal(kf_chat_apply(KF_CHAT_TMPL_QWEN25, bad, 2, 1, NULL, &out, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_null(out);
    assert_non_null(strstr(err, "message 1"));
    const kf_chat_msg_t nul[] = {{NULL, "x"}};
    assert_int_equal(kf_chat_apply(KF_CHAT_TMPL_LLAMA3, nul, 1, 1, NULL, &out, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    assert_int_equal(kf_chat_apply((kf_chat_tmpl_t)42, conv, 1, 1, NULL, &out, err, sizeof(err)),
                     KF_ERR_INVALID_ARG);
    /* NULL content renders as empty. */
    const kf_chat_msg_t empty[] = {{"user", NULL}};
    expect(KF_CHAT_TMPL_CHATML, empty, 1, 0, NULL, "<|im_start|>user\n<|im_end|>\n");
    expect(KF_CHAT_TMPL_CHATML, NULL, 0, 0, NULL, "");
}

static void
test_split_think(void **state)
{
    (void)state;
    size_t ts, te, as;
    const char *t = "Let me add.\n</think>\n\nThe answer is 4.";
    assert_int_equal(kf_chat_split_think(t, strlen(t), &ts, &te, &as), 1);
    assert_int_equal(te - ts, strlen("Let me add."));
    assert_memory_equal(t + ts, "Let me add.", te - ts);
    assert_string_equal(t + as, "The answer is 4.");
    const char *t2 = "<think> x </think>y";
    assert_int_equal(kf_chat_split_think(t2, strlen(t2), &ts, &te, &as), 1);
    assert_int_equal(te - ts, 1);
    assert_int_equal(t2[ts], 'x');
    assert_string_equal(t2 + as, "y");
    assert_int_equal(kf_chat_split_think("plain", 5, &ts, &te, &as), 0);
    assert_int_equal(as, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_qwen), cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_deepseek_r1), cmocka_unit_test(test_detect),
        cmocka_unit_test(test_bad_input),   cmocka_unit_test(test_split_think),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
