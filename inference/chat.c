/*
 * Chat templates (kf_chat.h): the published Jinja templates of ChatML/Qwen2/Qwen2.5, Llama 3
 * and DeepSeek-R1-Distill re-implemented as plain string building, plus detection of which one
 * a GGUF model uses from its tokenizer metadata.
 */
#include "kf_chat.h"

#include <stdlib.h>
#include <string.h>

/* Growable string; `failed` latches the first allocation failure so callers check once. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf_t;

static void
sb_addn(sbuf_t *sb, const char *s, size_t n)
{
    if (sb->failed)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        if (!p) {
            sb->failed = 1;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void
sb_add(sbuf_t *sb, const char *s)
{
    sb_addn(sb, s ? s : "", s ? strlen(s) : 0);
}

static const char *const tmpl_names[KF_CHAT_TMPL__COUNT] = {
    [KF_CHAT_TMPL_CHATML] = "chatml",           [KF_CHAT_TMPL_QWEN2] = "qwen2",
    [KF_CHAT_TMPL_QWEN25] = "qwen2.5",          [KF_CHAT_TMPL_LLAMA3] = "llama3",
    [KF_CHAT_TMPL_DEEPSEEK_R1] = "deepseek-r1",
};

const char *
kf_chat_tmpl_name(kf_chat_tmpl_t tmpl)
{
    if ((int)tmpl < 0 || tmpl >= KF_CHAT_TMPL__COUNT)
        return "unknown";
    return tmpl_names[tmpl];
}

kf_err_t
kf_chat_tmpl_from_name(const char *name, kf_chat_tmpl_t *out)
{
    for (int i = 0; name && i < KF_CHAT_TMPL__COUNT; i++) {
        if (!strcmp(name, tmpl_names[i])) {
            *out = (kf_chat_tmpl_t)i;
            return KF_OK;
        }
    }
    return KF_ERR_NOT_FOUND;
}

/* memmem over a buffer that is not NUL-terminated. */
static int
contains(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (!hay || m > n)
        return 0;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m))
            return 1;
    return 0;
}

kf_err_t
kf_chat_detect(const char *chat_template,
               size_t chat_template_len,
               const char *pre,
               const char *arch,
               kf_chat_tmpl_t *out,
               char *errstr,
               size_t errstr_size)
{
    const char *t = chat_template;
    size_t n = chat_template ? chat_template_len : 0;
    /* Markers, most specific first: R1-Distill-Llama also mentions llama-ish things, and Qwen
     * variants differ only in their default system prompt. */
    if (contains(t, n,
                 "<\xEF\xBD\x9C"
                 "Assistant\xEF\xBD\x9C>") ||
        contains(t, n,
                 "<\xEF\xBD\x9C"
                 "User\xEF\xBD\x9C>")) {
        *out = KF_CHAT_TMPL_DEEPSEEK_R1;
        return KF_OK;
    }
    if (contains(t, n, "<|start_header_id|>")) {
        *out = KF_CHAT_TMPL_LLAMA3;
        return KF_OK;
    }
    if (contains(t, n, "<|im_start|>")) {
        if (contains(t, n, "You are Qwen, created by Alibaba Cloud."))
            *out = KF_CHAT_TMPL_QWEN25;
        else if (contains(t, n, "You are a helpful assistant."))
            *out = KF_CHAT_TMPL_QWEN2;
        else
            *out = KF_CHAT_TMPL_CHATML;
        return KF_OK;
    }
    /* No (recognised) template: fall back on what the tokenizer and architecture say. */
    if (pre && !strcmp(pre, "deepseek-r1-qwen")) {
        *out = KF_CHAT_TMPL_DEEPSEEK_R1;
        return KF_OK;
    }
    if (pre && (!strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe"))) {
        *out = KF_CHAT_TMPL_LLAMA3;
        return KF_OK;
    }
    if (pre && !strcmp(pre, "qwen2")) {
        *out = KF_CHAT_TMPL_QWEN25;
        return KF_OK;
    }
    if (arch && !strcmp(arch, "qwen2")) {
        *out = KF_CHAT_TMPL_QWEN25;
        return KF_OK;
    }
    if (arch && !strcmp(arch, "llama")) {
        *out = KF_CHAT_TMPL_LLAMA3;
        return KF_OK;
    }
    return kf_err_set(errstr, errstr_size, KF_ERR_NOT_FOUND,
                      "no supported chat template: template %s, pre '%s', arch '%s'",
                      chat_template ? "unrecognised" : "absent", pre ? pre : "", arch ? arch : "");
}

static int
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's `trim` (Python str.strip() on ASCII whitespace). */
static void
sb_add_trimmed(sbuf_t *sb, const char *s)
{
    if (!s)
        return;
    size_t b = 0, e = strlen(s);
    while (b < e && is_space(s[b]))
        b++;
    while (e > b && is_space(s[e - 1]))
        e--;
    sb_addn(sb, s + b, e - b);
}

static const char *
last_after(const char *s, const char *sep)
{
    const char *r = s, *p = s;
    size_t m = strlen(sep);
    while ((p = strstr(p, sep)) != NULL) {
        p += m;
        r = p;
    }
    return r;
}

#define R1_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define R1_ASSISTANT \
    "<\xEF\xBD\x9C"  \
    "Assistant\xEF\xBD\x9C>"
#define R1_EOS      \
    "<\xEF\xBD\x9C" \
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"

static void
render_chatml(sbuf_t *sb, kf_chat_tmpl_t tmpl, const kf_chat_msg_t *msgs, size_t n, int gen)
{
    size_t first = 0;
    if (tmpl == KF_CHAT_TMPL_QWEN25) {
        /* Qwen2.5 prints the first system message (or its default) before the loop and skips
         * it inside the loop; later system messages render in place. */
        if (n > 0 && !strcmp(msgs[0].role, "system")) {
            sb_add(sb, "<|im_start|>system\n");
            sb_add(sb, msgs[0].content);
            sb_add(sb, "<|im_end|>\n");
            first = 1;
        } else {
            sb_add(sb, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                       "helpful assistant.<|im_end|>\n");
        }
    } else if (tmpl == KF_CHAT_TMPL_QWEN2 && (n == 0 || strcmp(msgs[0].role, "system") != 0)) {
        sb_add(sb, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
    }
    for (size_t i = first; i < n; i++) {
        sb_add(sb, "<|im_start|>");
        sb_add(sb, msgs[i].role);
        sb_add(sb, "\n");
        sb_add(sb, msgs[i].content);
        sb_add(sb, "<|im_end|>\n");
    }
    if (gen)
        sb_add(sb, "<|im_start|>assistant\n");
}

static void
render_llama3(sbuf_t *sb, const kf_chat_msg_t *msgs, size_t n, int gen, const char *bos)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0)
            sb_add(sb, bos);
        sb_add(sb, "<|start_header_id|>");
        sb_add(sb, msgs[i].role);
        sb_add(sb, "<|end_header_id|>\n\n");
        sb_add_trimmed(sb, msgs[i].content);
        sb_add(sb, "<|eot_id|>");
    }
    if (gen)
        sb_add(sb, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void
render_r1(sbuf_t *sb, const kf_chat_msg_t *msgs, size_t n, int gen, const char *bos)
{
    /* The template collects the LAST system message and prints it right after BOS. */
    const char *system = "";
    for (size_t i = 0; i < n; i++)
        if (!strcmp(msgs[i].role, "system"))
            system = msgs[i].content ? msgs[i].content : "";
    sb_add(sb, bos);
    sb_add(sb, system);
    for (size_t i = 0; i < n; i++) {
        const char *c = msgs[i].content ? msgs[i].content : "";
        if (!strcmp(msgs[i].role, "user")) {
            sb_add(sb, R1_USER);
            sb_add(sb, c);
        } else if (!strcmp(msgs[i].role, "assistant")) {
            sb_add(sb, R1_ASSISTANT);
            sb_add(sb, last_after(c, "</think>"));
            sb_add(sb, R1_EOS);
        }
    }
    if (gen)
        sb_add(sb, R1_ASSISTANT "<think>\n");
}

kf_err_t
kf_chat_apply(kf_chat_tmpl_t tmpl,
              const kf_chat_msg_t *msgs,
              size_t n_msgs,
              int add_generation_prompt,
              const char *bos_text,
              char **out_text,
              char *errstr,
              size_t errstr_size)
{
    if (!out_text)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "out_text is NULL");
    *out_text = NULL;
    if ((int)tmpl < 0 || tmpl >= KF_CHAT_TMPL__COUNT)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "unknown chat template %d",
                          (int)tmpl);
    if (n_msgs && !msgs)
        return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG, "messages are NULL");
    for (size_t i = 0; i < n_msgs; i++) {
        const char *r = msgs[i].role;
        if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")))
            return kf_err_set(errstr, errstr_size, KF_ERR_INVALID_ARG,
                              "message %zu: unsupported role '%s' (system, user, assistant)", i,
                              r ? r : "(null)");
    }
    sbuf_t sb = {0};
    sb_add(&sb, ""); /* an empty conversation still yields a string */
    switch (tmpl) {
    case KF_CHAT_TMPL_LLAMA3:
        render_llama3(&sb, msgs, n_msgs, add_generation_prompt, bos_text);
        break;
    case KF_CHAT_TMPL_DEEPSEEK_R1:
        render_r1(&sb, msgs, n_msgs, add_generation_prompt, bos_text);
        break;
    default:
        render_chatml(&sb, tmpl, msgs, n_msgs, add_generation_prompt);
        break;
    }
    if (sb.failed) {
        free(sb.p);
        return kf_err_set(errstr, errstr_size, KF_ERR_NOMEM, "chat template: out of memory");
    }
    *out_text = sb.p;
    return KF_OK;
}

int
kf_chat_split_think(const char *text,
                    size_t len,
                    size_t *out_think_start,
                    size_t *out_think_end,
                    size_t *out_answer_start)
{
    static const char close[] = "</think>", open[] = "<think>";
    size_t cl = sizeof(close) - 1, ol = sizeof(open) - 1;
    size_t at = len;
    for (size_t i = 0; i + cl <= len; i++) {
        if (!memcmp(text + i, close, cl)) {
            at = i;
            break;
        }
    }
    if (at == len) {
        *out_think_start = *out_think_end = 0;
        *out_answer_start = 0;
        return 0;
    }
    /* The R1 prompt already opened <think>, so the model's text usually starts inside it; skip
     * an explicit opening tag when the model repeats it. */
    size_t b = 0;
    while (b < at && is_space(text[b]))
        b++;
    if (at - b >= ol && !memcmp(text + b, open, ol))
        b += ol;
    while (b < at && is_space(text[b]))
        b++;
    size_t e = at;
    while (e > b && is_space(text[e - 1]))
        e--;
    size_t a = at + cl;
    while (a < len && is_space(text[a]))
        a++;
    *out_think_start = b;
    *out_think_end = e;
    *out_answer_start = a;
    return 1;
}
