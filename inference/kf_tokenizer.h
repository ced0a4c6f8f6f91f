/*
 * kf_tokenizer: text <-> token ids for the models kinfer runs, built from the tokenizer
 * metadata of a GGUF file (tokenizer.ggml.*), with llama.cpp-compatible results.
 *
 * Two tokenizer models are supported:
 *   - "llama": SentencePiece BPE (Llama 2, Phi-3, Mistral): spaces become U+2581, a space is
 *     prefixed to the text (tokenizer.ggml.add_space_prefix, default on), pieces are merged
 *     by score, and bytes with no piece fall back to <0xNN> tokens.
 *   - "gpt2": byte-level BPE (Llama 3, Qwen2, DeepSeek, GPT-2, Falcon): the text is split by
 *     the pre-tokenizer named in tokenizer.ggml.pre (llama-bpe, qwen2, deepseek-r1-qwen,
 *     deepseek-llm, deepseek-coder, gpt-2, falcon, ...; unknown names use llama.cpp's
 *     "default" split), each piece is byte-mapped and merged by rank (tokenizer.ggml.merges).
 *
 * Special tokens: control tokens in the text ("<|im_end|>", "<|eot_id|>") become their ids
 * only when parse_special is set; user-defined tokens ("<think>") are always matched, as in
 * HuggingFace and llama.cpp. Matching is longest token first and never splits a token.
 *
 * Thread-safety: a kf_tokenizer_t is immutable after kf_tokenizer_new(); every function
 * below may be called from many threads at once on the same tokenizer.
 */
#ifndef KF_TOKENIZER_H
#define KF_TOKENIZER_H

#include "kf_err.h"
#include "kf_gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kf_tokenizer kf_tokenizer_t;

/* Builds a tokenizer from the metadata of `gf`. The tokenizer copies what it needs: `gf` may
 * be closed afterwards. Errors: KF_ERR_NOT_FOUND when a required key (tokenizer.ggml.model,
 * .tokens, .merges for gpt2) is missing, KF_ERR_UNSUPPORTED for an unknown tokenizer model,
 * KF_ERR_FORMAT for inconsistent metadata (array length mismatch, bad types), KF_ERR_NOMEM.
 * On failure *out is NULL and errstr names the problem. */
kf_err_t
kf_tokenizer_new(const kf_gguf_t *gf, kf_tokenizer_t **out, char *errstr, size_t errstr_size);
/* Accepts NULL. */
void kf_tokenizer_destroy(kf_tokenizer_t *tok);

/* Tokenizes text[0..len) (any bytes; invalid UTF-8 is kept byte for byte where the
 * vocabulary allows). add_special: prepend BOS / append EOS as the metadata says
 * (tokenizer.ggml.add_bos_token / add_eos_token). parse_special: turn control-token text into
 * control tokens. On success *out_ids is a malloc'd array the caller frees with free(), and
 * *out_n its length (*out_ids may be NULL when *out_n is 0). Errors: KF_ERR_INVALID_ARG,
 * KF_ERR_LIMIT when len exceeds 256 MiB, KF_ERR_NOMEM. */
kf_err_t kf_tokenizer_encode(const kf_tokenizer_t *tok,
                             const char *text,
                             size_t len,
                             int add_special,
                             int parse_special,
                             int32_t **out_ids,
                             size_t *out_n);

/* Same, into the caller's buffer ids[0..cap). *out_n is always set to the number of tokens
 * the text needs; KF_ERR_LIMIT when that exceeds cap (ids then holds the first cap). */
kf_err_t kf_tokenizer_encode_buf(const kf_tokenizer_t *tok,
                                 const char *text,
                                 size_t len,
                                 int add_special,
                                 int parse_special,
                                 int32_t *ids,
                                 size_t cap,
                                 size_t *out_n);

/* The bytes token `id` stands for in output text (byte-level decoded for gpt2, U+2581 -> ' '
 * and <0xNN> -> byte for llama). Control and unknown tokens give "" unless `special` is set,
 * then their text. Borrowed, valid until kf_tokenizer_destroy(); not NUL-terminated within
 * pieces, so use *out_len. NULL (and *out_len 0) when id is out of range. Note that one piece
 * may hold an incomplete UTF-8 sequence that the next piece finishes. */
const char *
kf_tokenizer_token_to_piece(const kf_tokenizer_t *tok, int32_t id, int special, size_t *out_len);

/* Detokenizes ids[0..n) into a malloc'd, NUL-terminated string (*out_text, caller frees) of
 * *out_len bytes. With a space-prefixing (llama) vocabulary the leading space of the first
 * piece that prints anything is dropped (as sentencepiece does; llama.cpp keeps it after a
 * removed BOS). remove_special drops a leading BOS and trailing EOS when the vocabulary adds
 * them; unparse_special renders control tokens as their text. No clean-up of spaces before
 * punctuation is done (HF's clean_up_tokenization_spaces), so decode(encode(x)) == x. Errors:
 * KF_ERR_INVALID_ARG (an id out of range, named in errstr), KF_ERR_NOMEM. */
kf_err_t kf_tokenizer_decode(const kf_tokenizer_t *tok,
                             const int32_t *ids,
                             size_t n,
                             int remove_special,
                             int unparse_special,
                             char **out_text,
                             size_t *out_len,
                             char *errstr,
                             size_t errstr_size);

/* Number of tokens in the vocabulary (ids are 0..n_vocab-1). */
uint32_t kf_tokenizer_n_vocab(const kf_tokenizer_t *tok);

/* Special token ids; -1 when the vocabulary has none. */
int32_t kf_tokenizer_bos(const kf_tokenizer_t *tok);
int32_t kf_tokenizer_eos(const kf_tokenizer_t *tok);
int32_t kf_tokenizer_eot(const kf_tokenizer_t *tok);
int32_t kf_tokenizer_eom(const kf_tokenizer_t *tok);
int32_t kf_tokenizer_pad(const kf_tokenizer_t *tok);
int32_t kf_tokenizer_unk(const kf_tokenizer_t *tok);
/* Whether encode(add_special=1) prepends BOS / appends EOS. */
int kf_tokenizer_add_bos(const kf_tokenizer_t *tok);
int kf_tokenizer_add_eos(const kf_tokenizer_t *tok);

/* Non-zero when generating `id` ends a sequence: EOS, EOT, EOM and the end-of-turn tokens
 * found by text (<|eot_id|>, <|eom_id|>, <|im_end|>, <|end|>, <|endoftext|>,
 * <|end_of_text|>, <end_of_turn>, <｜end▁of▁sentence｜>, <EOT>, ...) plus the FIM pad /
 * repo / file-separator tokens, as llama.cpp does. 0 for out-of-range ids. */
int kf_tokenizer_is_eog(const kf_tokenizer_t *tok, int32_t id);

/* Non-zero for control, unknown and unused tokens: ids a sampler may want to mask and that
 * decode to "" by default. */
int kf_tokenizer_is_special(const kf_tokenizer_t *tok, int32_t id);

/* Id of the token whose vocabulary text is exactly text[0..len) (raw form: "Ġhello" for
 * gpt2, "▁hello" for llama, "<|im_end|>"), or -1. */
int32_t kf_tokenizer_find_token(const kf_tokenizer_t *tok, const char *text, size_t len);

/* Raw vocabulary text of `id` (borrowed, NUL-terminated), or NULL when out of range. */
const char *kf_tokenizer_token_text(const kf_tokenizer_t *tok, int32_t id, size_t *out_len);

/* "llama" or "gpt2", and the pre-tokenizer in use ("llama3", "qwen2", "default", ...). */
const char *kf_tokenizer_model(const kf_tokenizer_t *tok);
const char *kf_tokenizer_pre(const kf_tokenizer_t *tok);

#endif /* KF_TOKENIZER_H */
