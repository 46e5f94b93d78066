/* Perplexity with the protocol of the GPTQ / AWQ / SmoothQuant papers:
 * rows = each line of the text with its "\n" (a blank line, i.e. one of
 * only whitespace such as WikiText's " \n", is an empty row, as the
 * Hugging Face text loader yields it), text = "\n\n".join(rows), tokenized once with BOS at the start,
 * cut into floor(T / ctx) non-overlapping windows of ctx tokens, NLL summed
 * over the ctx - 1 predicted tokens of every window, PPL = exp(NLL / count). */
#ifndef LLMQ_PERPLEXITY_H
#define LLMQ_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "../formats/tokenizer.h"
#include "model.h"

/* Rows of path (text or JSONL, see corpus.h) joined by "\n\n" and
 * tokenized with the tokenizer's BOS. */
int ppl_tokenize(const llmq_tokenizer *tok, const char *path, const char *field, int32_t **ids, size_t *n);

typedef struct {
    int ctx;         /* window length */
    long max_windows; /* 0 = all */
    int batch;       /* windows per forward */
    int quiet;
} ppl_opts;

typedef struct {
    double ppl, nll;
    long windows, tokens; /* tokens = scored predictions */
    double seconds, tokens_per_s;
} ppl_result;

int ppl_run(llmq_model *m, const int32_t *ids, size_t n, const ppl_opts *o, ppl_result *r);

#endif
