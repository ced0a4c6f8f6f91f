/*
 * kf_chat: renders a list of chat messages into the prompt text a model was trained on.
 *
 * There is no Jinja interpreter: each supported family's published template is implemented
 * in C, byte for byte, for the system / user / assistant roles (tool roles are rejected).
 *
 *   chatml       <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
 *   qwen2        ChatML; "You are a helpful assistant." as system when the first message is not
 *                a system one (Qwen2-Instruct)
 *   qwen2.5      ChatML; "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
 *                as default system (Qwen2.5-Instruct)
 *   llama3       {bos}<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|> ...
 *                <|start_header_id|>assistant<|end_header_id|>\n\n (Meta-Llama-3-Instruct)
 *   deepseek-r1  {bos}{last system content}<｜User｜>{u}<｜Assistant｜>{a}<｜end▁of▁sentence｜>
 *                ... <｜Assistant｜><think>\n (DeepSeek-R1-Distill); an assistant message keeps
 *                only the text after its last "</think>", so earlier reasoning is not replayed.
 *
 * {bos} is the tokenizer's BOS token text; the caller tokenizes the result with special tokens
 * parsed and without adding another BOS.
 *
 * Thread-safety: all functions are pure.
 */
#ifndef KF_CHAT_H
#define KF_CHAT_H

#include "kf_err.h"

#include <stddef.h>

typedef enum kf_chat_tmpl {
    KF_CHAT_TMPL_CHATML = 0,
    KF_CHAT_TMPL_QWEN2,
    KF_CHAT_TMPL_QWEN25,
    KF_CHAT_TMPL_LLAMA3,
    KF_CHAT_TMPL_DEEPSEEK_R1,
    KF_CHAT_TMPL__COUNT
} kf_chat_tmpl_t;

typedef struct kf_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8; NULL is treated as "" */
} kf_chat_msg_t;

/* "chatml", "qwen2", "qwen2.5", "llama3", "deepseek-r1"; "unknown" for other values. */
const char *kf_chat_tmpl_name(kf_chat_tmpl_t tmpl);
/* Inverse of kf_chat_tmpl_name(); KF_ERR_NOT_FOUND for other names. */
kf_err_t kf_chat_tmpl_from_name(const char *name, kf_chat_tmpl_t *out);

/* Chooses the template for a model. `chat_template` (the tokenizer.chat_template metadata, not
 * NUL-terminated, may be NULL) is searched for distinctive markers first; without a match the
 * pre-tokenizer name (tokenizer.ggml.pre) and then the architecture decide:
 *   pre "deepseek-r1-qwen" -> deepseek-r1; pre "llama3"/"llama-bpe" or arch "llama" -> llama3;
 *   pre "qwen2" or arch "qwen2" -> qwen2.5.
 * KF_ERR_NOT_FOUND (errstr says why) when nothing identifies a supported family. */
kf_err_t kf_chat_detect(const char *chat_template,
                        size_t chat_template_len,
                        const char *pre,
                        const char *arch,
                        kf_chat_tmpl_t *out,
                        char *errstr,
                        size_t errstr_size);

/* Renders msgs[0, n_msgs) and, when add_generation_prompt is set, the opening of the assistant
 * turn. `bos_text` may be NULL (no BOS is written). On success *out_text is a NUL-terminated
 * string the caller frees with free(). KF_ERR_INVALID_ARG naming the message for a NULL or
 * unsupported role. */
kf_err_t kf_chat_apply(kf_chat_tmpl_t tmpl,
                       const kf_chat_msg_t *msgs,
                       size_t n_msgs,
                       int add_generation_prompt,
                       const char *bos_text,
                       char **out_text,
                       char *errstr,
                       size_t errstr_size);

/* For reasoning models: splits generated `text` at the first "</think>". Returns 1 when found,
 * with the reasoning in text[*out_think_start, *out_think_end) (an opening "<think>" and
 * surrounding whitespace excluded) and the answer from *out_answer_start (leading whitespace
 * skipped). Returns 0 (all outputs set to describe "no reasoning, answer = whole text") when the
 * text has no "</think>". */
int kf_chat_split_think(const char *text,
                        size_t len,
                        size_t *out_think_start,
                        size_t *out_think_end,
                        size_t *out_answer_start);

#endif /* KF_CHAT_H */
