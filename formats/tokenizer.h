/* Hugging Face tokenizer.json, model type BPE, both families llmq meets:
 *  - byte-level BPE with a regex pre-tokenizer (GPT-2, Llama-3, Qwen2,
 *    SmolLM): bytes mapped to printable unicode, merges by rank;
 *  - SentencePiece-style BPE (Llama-2, Mistral, TinyLlama, stories260K):
 *    normalizer replaces " " with "▁" and prepends "▁", merges by rank,
 *    unknown pieces fall back to <0xNN> byte tokens; the decoder undoes it.
 * Added tokens (special or not) are matched literally before the model.
 * BOS/EOS handling follows tokenizer_config.json (add_bos_token, bos_token). */
#ifndef LLMQ_TOKENIZER_H
#define LLMQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct llmq_tokenizer llmq_tokenizer;

/* Load DIR/tokenizer.json and DIR/tokenizer_config.json (the latter
 * optional). Unsupported tokenizer types or options are refused by name. */
int tok_load(llmq_tokenizer **out, const char *dir);
void tok_free(llmq_tokenizer *t);

int tok_vocab_size(const llmq_tokenizer *t);
int tok_bos_id(const llmq_tokenizer *t); /* -1 if none */
int tok_eos_id(const llmq_tokenizer *t); /* -1 if none */
/* Whether tokenizer_config.json asks for a BOS at the start (default per
 * family: SentencePiece yes, byte-level no). */
int tok_add_bos(const llmq_tokenizer *t);

/* Encode len bytes of UTF-8 text. If add_bos, the BOS id is prepended.
 * *ids is malloc'd (caller frees), *n its length. Invalid UTF-8 is
 * encoded byte-wise (byte fallback / byte-level), never rejected. */
int tok_encode(const llmq_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
               size_t *n);

/* Decode ids to text as HF tokenizers' decode(skip_special_tokens=False)
 * does, except that BOS/EOS are skipped. *text is malloc'd and
 * NUL-terminated, *len its byte length. */
int tok_decode(const llmq_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len);

#endif
