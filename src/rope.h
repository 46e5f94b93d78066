/* Rotary position embedding tables, computed as Hugging Face does
 * (fp32 inv_freq, Llama-3.1 "llama3" frequency scaling). */
#ifndef LLMQ_ROPE_H
#define LLMQ_ROPE_H

#include "../formats/config.h"

/* Fill table [seq][head_dim]: cos(p * f_i) for i < head_dim/2, then
 * sin(p * f_i), for positions p = 0..seq-1. */
void rope_table(const llmq_config *c, int seq, float *table);

#endif
