/* Decoding benchmark: batches of sequences prefilled with a prompt, then
 * advanced one token per step through the KV cache, as a server decodes.
 * Tokens come from a text (teacher forcing: step inputs are the text's next
 * tokens, not samples), so the same run also scores them: the perplexity
 * over each sequence's P + S predictions must equal the windowed
 * perplexity of llmq-eval at ctx = P + S + 1 over the same windows, which
 * checks the cache path against the full forward. */
#ifndef LLMQ_DECODE_H
#define LLMQ_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    int batch;            /* sequences decoded together */
    int prompt, steps;    /* P prompt tokens, then S single-token steps */
    double prefill_s;     /* seconds of the prefill step */
    double decode_s;      /* seconds of the S steps */
    double tokens_per_s;  /* batch * S / decode_s */
    double ms_per_step;
    size_t cache_bytes;   /* the KV cache as allocated (batch x (P + S)) */
    size_t weight_bytes;  /* read once per step */
    size_t kv_read_bytes; /* cache bytes the S steps read in total */
    double ppl;           /* over the batch * (P + S) predictions */
    double roofline_fraction; /* (weights + cache read) / bandwidth over the measured time; 0 without bandwidth */
} decode_result;

/* Decode `batch` sequences of P + S + 1 tokens taken from ids (sequence s
 * at offset s * (P + S + 1); n must cover them). bandwidth_gbs > 0 adds
 * the roofline fraction. The model must have been opened with max_rows >=
 * batch * P. */
int decode_run(llmq_model *m, const int32_t *ids, size_t n, int batch, int prompt, int steps, double bandwidth_gbs,
               decode_result *r);

/* Device-to-device copy bandwidth of b in GB/s (bytes read + written over
 * time, median of several 1 GiB copies); 0 on backends without a device. */
double decode_copy_bandwidth(llmq_backend *b);

#endif
